//! The in-memory view of the configuration at one store revision, kept current by the
//! store's change feed. Operations plan against it; the data plane compiles its snapshot
//! from it. It is never written directly: only store events change it.

use std::collections::{BTreeMap, HashMap, VecDeque};

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
    /// Work requests that reached their final status lately, so that reading one needs no
    /// store (and answers while it is away). Not saved either.
    #[serde(skip)]
    pub finished_work_requests: RecentWorkRequests,
}

/// The newest [`RecentWorkRequests::CAPACITY`] work requests seen reaching a final status;
/// the oldest go first.
#[derive(Clone, Debug, Default)]
pub struct RecentWorkRequests {
    by_id: HashMap<WorkRequestId, WorkRequest>,
    order: VecDeque<WorkRequestId>,
}

impl RecentWorkRequests {
    pub const CAPACITY: usize = 4096;

    pub fn get(&self, id: &WorkRequestId) -> Option<&WorkRequest> {
        self.by_id.get(id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    fn insert(&mut self, id: WorkRequestId, wr: WorkRequest) {
        if self.by_id.insert(id.clone(), wr).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > Self::CAPACITY {
            if let Some(oldest) = self.order.pop_front() {
                self.by_id.remove(&oldest);
            }
        }
    }

    /// Forgets one (its place in the order goes when it comes up for eviction: a deleted
    /// work request never comes back under the same id).
    fn remove(&mut self, id: &WorkRequestId) {
        self.by_id.remove(id);
    }
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
            ConfigKey::WorkRequest(id) => {
                let id = WorkRequestId::from(id);
                match decode_work_request(kv) {
                    Some(wr) if !wr.status.is_final() => {
                        self.pending_work_requests.insert(
                            id,
                            Versioned {
                                value: wr,
                                create_revision: kv.create_revision,
                                mod_revision: kv.mod_revision,
                            },
                        );
                    }
                    Some(wr) => {
                        self.pending_work_requests.remove(&id);
                        self.finished_work_requests.insert(id, wr);
                    }
                    None => {
                        self.pending_work_requests.remove(&id);
                    }
                }
            }
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
                let id = WorkRequestId::from(id);
                self.pending_work_requests.remove(&id);
                self.finished_work_requests.remove(&id);
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

#[cfg(test)]
mod tests {
    use super::*;
    use fulcrum_model::WorkRequestStatus;

    fn put(c: &mut Config, n: usize, status: WorkRequestStatus) {
        let id = format!("wr-{n:05}");
        let wr = WorkRequest {
            id: WorkRequestId::from(id.clone()),
            operation: "UpdateMember".into(),
            loadbalancer_id: None,
            resources: Vec::new(),
            status,
            revision: n as i64,
            request_id: String::new(),
            message: String::new(),
            error: None,
            accepted_at: chrono::DateTime::UNIX_EPOCH,
            finished_at: None,
        };
        let kv = KeyValue {
            key: keys::work_request(&wr.id),
            value: serde_json::to_vec(&wr).unwrap_or_default(),
            create_revision: n as i64,
            mod_revision: n as i64,
            version: 1,
        };
        c.put(&kv);
    }

    #[test]
    fn finished_work_requests_are_kept_for_reads_newest_first_out_last() {
        let mut c = Config::default();
        put(&mut c, 1, WorkRequestStatus::InProgress);
        let one = WorkRequestId::from("wr-00001".to_owned());
        assert!(c.pending_work_requests.contains_key(&one));
        assert!(c.finished_work_requests.get(&one).is_none());
        put(&mut c, 1, WorkRequestStatus::Succeeded);
        assert!(!c.pending_work_requests.contains_key(&one));
        assert_eq!(
            c.finished_work_requests.get(&one).map(|w| w.status),
            Some(WorkRequestStatus::Succeeded)
        );
        for n in 2..=RecentWorkRequests::CAPACITY + 1 {
            put(&mut c, n, WorkRequestStatus::Failed);
        }
        assert_eq!(c.finished_work_requests.len(), RecentWorkRequests::CAPACITY);
        assert!(
            c.finished_work_requests.get(&one).is_none(),
            "the oldest went first"
        );
        let newest = WorkRequestId::from(format!("wr-{:05}", RecentWorkRequests::CAPACITY + 1));
        assert!(c.finished_work_requests.get(&newest).is_some());
        c.delete(&keys::work_request(&newest));
        assert!(c.finished_work_requests.get(&newest).is_none());
    }
}
