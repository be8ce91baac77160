//! The in-memory view of the configuration at one store revision, kept current by the
//! store's change feed. Operations plan against it; the data plane compiles its snapshot
//! from it. It is never written directly: only store events change it.

use std::collections::BTreeMap;

use fulcrum_model::{
    HealthMonitor, HealthMonitorId, Listener, ListenerId, LoadBalancer, LoadBalancerId, Member,
    MemberId, Pool, PoolId, Subnet, SubnetId, WorkRequest, WorkRequestId,
};
use fulcrum_store::{Event, EventKind, KeyValue, Revision, WatchBatch};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::keys::{self, ConfigKey};

/// A stored value with the revisions that version it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned<T> {
    pub value: T,
    pub create_revision: Revision,
    pub mod_revision: Revision,
}

/// Serialisable so a fleet node can save it and serve it after a restart without the store.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Config {
    /// The store revision this view reflects.
    pub revision: Revision,
    /// The newest revision that changed what the data plane serves: anything but work
    /// requests. A data plane that compiled this revision serves `revision` as well.
    #[serde(default)]
    pub traffic_revision: Revision,
    pub loadbalancers: BTreeMap<LoadBalancerId, Versioned<LoadBalancer>>,
    pub listeners: BTreeMap<ListenerId, Versioned<Listener>>,
    pub pools: BTreeMap<PoolId, Versioned<Pool>>,
    /// Members by pool, then by id.
    pub members: BTreeMap<PoolId, BTreeMap<MemberId, Versioned<Member>>>,
    pub monitors: BTreeMap<HealthMonitorId, Versioned<HealthMonitor>>,
    pub subnets: BTreeMap<SubnetId, Versioned<Subnet>>,
    /// Work requests not yet final (their create revision is the change's), for the
    /// finisher to record without reading them back. Not saved with a fleet node's
    /// snapshot: finishing needs the store anyway, and re-listing it fills this again.
    #[serde(skip)]
    pub pending_work_requests: BTreeMap<WorkRequestId, Versioned<WorkRequest>>,
}

impl Config {
    pub fn from_kvs(kvs: &[KeyValue], revision: Revision) -> Self {
        let mut c = Config {
            revision,
            traffic_revision: revision,
            ..Default::default()
        };
        for kv in kvs {
            c.put(kv);
        }
        c
    }

    pub fn apply(&mut self, batch: &WatchBatch) {
        for Event { kind, kv } in &batch.events {
            if !matches!(keys::parse(&kv.key), Some(ConfigKey::WorkRequest(_)) | None) {
                self.traffic_revision = batch.revision;
            }
            match kind {
                EventKind::Put => self.put(kv),
                EventKind::Delete => self.delete(&kv.key),
            }
        }
        self.revision = batch.revision;
    }

    fn put(&mut self, kv: &KeyValue) {
        let Some(key) = keys::parse(&kv.key) else {
            return;
        };
        match key {
            ConfigKey::LoadBalancer(_) => insert(&mut self.loadbalancers, kv, |v| v.id.clone()),
            ConfigKey::Listener(_) => insert(&mut self.listeners, kv, |v| v.id.clone()),
            ConfigKey::Pool(_) => insert(&mut self.pools, kv, |v| v.id.clone()),
            ConfigKey::Member { pool, .. } => {
                let members = self.members.entry(PoolId::from(pool)).or_default();
                insert(members, kv, |v: &Member| v.id.clone());
            }
            ConfigKey::Monitor(_) => insert(&mut self.monitors, kv, |v| v.id.clone()),
            ConfigKey::Subnet(_) => insert(&mut self.subnets, kv, |v| v.id.clone()),
            ConfigKey::WorkRequest(id) => match decode_work_request(kv) {
                Some(wr) if !wr.status.is_final() => {
                    self.pending_work_requests.insert(
                        WorkRequestId::from(id),
                        Versioned {
                            value: wr,
                            create_revision: kv.create_revision,
                            mod_revision: kv.mod_revision,
                        },
                    );
                }
                _ => {
                    self.pending_work_requests.remove(&WorkRequestId::from(id));
                }
            },
        }
    }

    fn delete(&mut self, key: &str) {
        let Some(key) = keys::parse(key) else {
            return;
        };
        match key {
            ConfigKey::LoadBalancer(id) => {
                self.loadbalancers.remove(&LoadBalancerId::from(id));
            }
            ConfigKey::Listener(id) => {
                self.listeners.remove(&ListenerId::from(id));
            }
            ConfigKey::Pool(id) => {
                self.pools.remove(&PoolId::from(id));
            }
            ConfigKey::Member { pool, member } => {
                let pool = PoolId::from(pool);
                if let Some(members) = self.members.get_mut(&pool) {
                    members.remove(&MemberId::from(member));
                    if members.is_empty() {
                        self.members.remove(&pool);
                    }
                }
            }
            ConfigKey::Monitor(id) => {
                self.monitors.remove(&HealthMonitorId::from(id));
            }
            ConfigKey::Subnet(id) => {
                self.subnets.remove(&SubnetId::from(id));
            }
            ConfigKey::WorkRequest(id) => {
                self.pending_work_requests.remove(&WorkRequestId::from(id));
            }
        }
    }

    pub fn members_of(&self, pool: &PoolId) -> impl Iterator<Item = &Versioned<Member>> {
        self.members.get(pool).into_iter().flat_map(|m| m.values())
    }

    pub fn member(&self, pool: &PoolId, id: &MemberId) -> Option<&Versioned<Member>> {
        self.members.get(pool)?.get(id)
    }

    /// The listeners that send traffic to `pool` (as default pool or through a route).
    pub fn listeners_using<'a>(
        &'a self,
        pool: &'a PoolId,
    ) -> impl Iterator<Item = &'a Versioned<Listener>> + 'a {
        self.listeners
            .values()
            .filter(move |l| l.value.spec.pool_refs().any(|(_, p)| p == pool))
    }

    pub fn pools_of<'a>(
        &'a self,
        lb: &'a LoadBalancerId,
    ) -> impl Iterator<Item = &'a Versioned<Pool>> + 'a {
        self.pools
            .values()
            .filter(move |p| &p.value.loadbalancer_id == lb)
    }

    pub fn listeners_of<'a>(
        &'a self,
        lb: &'a LoadBalancerId,
    ) -> impl Iterator<Item = &'a Versioned<Listener>> + 'a {
        self.listeners
            .values()
            .filter(move |l| &l.value.loadbalancer_id == lb)
    }

    /// The health monitor of a pool, if it has one.
    pub fn monitor_of(&self, pool: &PoolId) -> Option<&Versioned<HealthMonitor>> {
        self.monitors
            .values()
            .find(|m| &m.value.spec.pool_id == pool)
    }
}

fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Option<T> {
    match serde_json::from_slice(&kv.value) {
        Ok(v) => Some(v),
        Err(e) => {
            // A value this version cannot read (written by a newer one, or damaged) is
            // skipped rather than taking the whole view down.
            tracing::error!(key = %kv.key, error = %e, "skipping unreadable stored value");
            None
        }
    }
}

fn insert<K: Ord, T: DeserializeOwned>(
    map: &mut BTreeMap<K, Versioned<T>>,
    kv: &KeyValue,
    id: impl Fn(&T) -> K,
) {
    if let Some(value) = decode::<T>(kv) {
        map.insert(
            id(&value),
            Versioned {
                value,
                create_revision: kv.create_revision,
                mod_revision: kv.mod_revision,
            },
        );
    }
}

/// Reads a work request with its revision (the transaction that wrote it first).
pub(crate) fn decode_work_request(kv: &KeyValue) -> Option<WorkRequest> {
    let mut wr: WorkRequest = decode(kv)?;
    wr.revision = kv.create_revision;
    Some(wr)
}
