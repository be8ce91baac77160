//! The in-memory view of the configuration at one store revision, kept current by the
//! store's change feed. Operations plan against it; the data plane compiles its snapshot
//! from it. It is never written directly: only store events change it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use fulcrum_model::{
    Certificate, CertificateId, HealthMonitor, HealthMonitorId, Listener, ListenerId, LoadBalancer,
    LoadBalancerId, Member, MemberId, OciApiKey, OciApiKeyId, Pool, PoolId, Secrets, Subnet,
    SubnetId, Timestamp, Vpc, VpcId, WorkRequest, WorkRequestId,
};
use fulcrum_store::{Event, EventKind, KeyValue, Revision, WatchBatch};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::keys::{self, ConfigKey};
use crate::records;
use crate::secret_key::SecretKey;

/// A stored value with the revisions that version it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned<T> {
    pub value: T,
    pub create_revision: Revision,
    pub mod_revision: Revision,
    /// The bytes the store holds, for load balancers and pools: a shared change compares
    /// them (encoding the value again would not give them back: sealed secrets take a new
    /// nonce each time). Not saved with a snapshot.
    #[serde(skip)]
    pub stored: Option<Arc<[u8]>>,
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
    #[serde(default)]
    pub vpcs: BTreeMap<VpcId, Versioned<Vpc>>,
    #[serde(default)]
    pub certificates: BTreeMap<CertificateId, Versioned<Certificate>>,
    /// OCI API signing keys registered at run time (the OCI front door's `[oci] keys` are
    /// its configuration, not here).
    #[serde(default)]
    pub oci_api_keys: BTreeMap<OciApiKeyId, Versioned<OciApiKey>>,
    /// Addresses given to load balancers by allocation, with their claim keys' mod
    /// revisions (see `network::plan_vip`).
    #[serde(default)]
    pub vip_claims: BTreeMap<std::net::IpAddr, Revision>,
    /// Work requests not yet final (their create revision is the change's), for the
    /// finisher to record without reading them back. Not saved with a fleet node's
    /// snapshot: finishing needs the store anyway, and re-listing it fills this again.
    #[serde(skip)]
    pub pending_work_requests: BTreeMap<WorkRequestId, Versioned<WorkRequest>>,
    /// Work requests that reached their final status lately, so that reading one needs no
    /// store (and answers while it is away). Not saved either.
    #[serde(skip)]
    pub finished_work_requests: RecentWorkRequests,
    /// Every final work request the store holds, for retention to pick the ones to delete
    /// without reading them back. Not saved either.
    #[serde(skip)]
    pub kept_work_requests: KeptWorkRequests,
}

/// The final work requests in the store: each one's create revision (which orders them by
/// age) and when it ended.
#[derive(Clone, Debug, Default)]
pub struct KeptWorkRequests {
    by_id: HashMap<WorkRequestId, (Revision, Timestamp)>,
}

impl KeptWorkRequests {
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// What retention deletes, oldest first: every work request that ended before
    /// `ended_before`, and the oldest beyond the newest `keep`, but none `may_delete`
    /// refuses (those stay, above `keep` if need be).
    pub fn to_forget(
        &self,
        keep: usize,
        ended_before: Timestamp,
        may_delete: impl Fn(&WorkRequestId, Revision) -> bool,
    ) -> Vec<WorkRequestId> {
        let mut by_age: Vec<(Revision, Timestamp, &WorkRequestId)> = self
            .by_id
            .iter()
            .map(|(id, &(revision, ended))| (revision, ended, id))
            .collect();
        by_age.sort_unstable();
        let beyond = by_age.len().saturating_sub(keep);
        by_age
            .into_iter()
            .enumerate()
            .filter(|&(i, (revision, ended, id))| {
                (i < beyond || ended < ended_before) && may_delete(id, revision)
            })
            .map(|(_, (_, _, id))| id.clone())
            .collect()
    }
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

    /// Those `keep` accepts, in the same order.
    pub(crate) fn filtered(&self, keep: impl Fn(&WorkRequest) -> bool) -> Self {
        let by_id: HashMap<WorkRequestId, WorkRequest> = self
            .by_id
            .iter()
            .filter(|(_, wr)| keep(wr))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let order = self
            .order
            .iter()
            .filter(|id| by_id.contains_key(*id))
            .cloned()
            .collect();
        RecentWorkRequests { by_id, order }
    }

    /// Forgets one (its place in the order goes when it comes up for eviction: a deleted
    /// work request never comes back under the same id).
    fn remove(&mut self, id: &WorkRequestId) {
        self.by_id.remove(id);
    }
}

impl Config {
    /// The view of listed values, their secrets opened with `key`.
    pub(crate) fn from_kvs(kvs: &[KeyValue], revision: Revision, key: &SecretKey) -> Self {
        let mut c = Config {
            revision,
            traffic_revision: revision,
            ..Default::default()
        };
        for kv in kvs {
            c.put(kv, key);
        }
        c
    }

    pub(crate) fn apply(&mut self, batch: &WatchBatch, key: &SecretKey) {
        for Event { kind, kv } in &batch.events {
            // Work requests and OCI API keys are nothing the data plane serves.
            if !matches!(
                keys::parse(&kv.key),
                Some(
                    ConfigKey::WorkRequest(_) | ConfigKey::OciApiKey(_) | ConfigKey::OciKeyIdClaim
                ) | None
            ) {
                self.traffic_revision = batch.revision;
            }
            match kind {
                EventKind::Put => self.put(kv, key),
                EventKind::Delete => self.delete(&kv.key),
            }
        }
        self.revision = batch.revision;
    }

    fn put(&mut self, kv: &KeyValue, secret_key: &SecretKey) {
        let Some(key) = keys::parse(&kv.key) else {
            return;
        };
        let k = secret_key;
        match key {
            ConfigKey::LoadBalancer(id) => {
                if !touched(&mut self.loadbalancers, &LoadBalancerId::from(id), kv) {
                    insert(&mut self.loadbalancers, kv, k, Keep::Stored, |v| {
                        v.id.clone()
                    })
                }
            }
            ConfigKey::Listener(_) => {
                insert(&mut self.listeners, kv, k, Keep::Value, |v| v.id.clone())
            }
            ConfigKey::Pool(id) => {
                if !touched(&mut self.pools, &PoolId::from(id), kv) {
                    insert(&mut self.pools, kv, k, Keep::Stored, |v| v.id.clone())
                }
            }
            ConfigKey::Member { pool, .. } => {
                let members = self.members.entry(PoolId::from(pool)).or_default();
                insert(members, kv, k, Keep::Value, |v: &Member| v.id.clone());
            }
            ConfigKey::Monitor(_) => {
                insert(&mut self.monitors, kv, k, Keep::Value, |v| v.id.clone())
            }
            ConfigKey::Subnet(_) => insert(&mut self.subnets, kv, k, Keep::Value, |v| v.id.clone()),
            ConfigKey::Vpc(_) => insert(&mut self.vpcs, kv, k, Keep::Value, |v| v.id.clone()),
            ConfigKey::Certificate(_) => {
                insert(&mut self.certificates, kv, k, Keep::Value, |v| v.id.clone())
            }
            ConfigKey::OciApiKey(_) => {
                insert(&mut self.oci_api_keys, kv, k, Keep::Value, |v| v.id.clone())
            }
            ConfigKey::OciKeyIdClaim => {}
            ConfigKey::VipClaim(addr) => {
                self.vip_claims.insert(addr, kv.mod_revision);
            }
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
                                stored: None,
                            },
                        );
                    }
                    Some(wr) => {
                        self.pending_work_requests.remove(&id);
                        let ended = wr.finished_at.unwrap_or(wr.accepted_at);
                        self.kept_work_requests
                            .by_id
                            .insert(id.clone(), (kv.create_revision, ended));
                        self.finished_work_requests.insert(id, wr);
                    }
                    None => {
                        self.pending_work_requests.remove(&id);
                        self.kept_work_requests.by_id.remove(&id);
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
            ConfigKey::Vpc(id) => {
                self.vpcs.remove(&VpcId::from(id));
            }
            ConfigKey::Certificate(id) => {
                self.certificates.remove(&CertificateId::from(id));
            }
            ConfigKey::OciApiKey(id) => {
                self.oci_api_keys.remove(&OciApiKeyId::from(id));
            }
            ConfigKey::OciKeyIdClaim => {}
            ConfigKey::VipClaim(addr) => {
                self.vip_claims.remove(&addr);
            }
            ConfigKey::WorkRequest(id) => {
                let id = WorkRequestId::from(id);
                self.pending_work_requests.remove(&id);
                self.finished_work_requests.remove(&id);
                self.kept_work_requests.by_id.remove(&id);
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

fn decode<T: DeserializeOwned + Secrets>(kv: &KeyValue, key: &SecretKey) -> Option<T> {
    match records::decode(key, &kv.value) {
        Ok(v) => Some(v),
        Err(records::DecodeError::Json(e)) => {
            // A value this version cannot read (written by a newer one, or damaged) is
            // skipped rather than taking the whole view down.
            tracing::error!(key = %kv.key, error = %e, "skipping unreadable stored value");
            None
        }
        Err(records::DecodeError::Secret(e)) => {
            // Never served with a secret it cannot open. Start checks every node has the
            // store's key, so only damage (or a key changed under a running node) gets here.
            tracing::error!(key = %kv.key, error = %e,
                "skipping a stored value whose secrets this node cannot open; every node needs the same secret key");
            None
        }
    }
}

/// What a view entry keeps besides its value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    Value,
    /// The stored bytes too (see [`Versioned::stored`]).
    Stored,
}

fn insert<K: Ord, T: DeserializeOwned + Secrets>(
    map: &mut BTreeMap<K, Versioned<T>>,
    kv: &KeyValue,
    key: &SecretKey,
    keep: Keep,
    id: impl Fn(&T) -> K,
) {
    if let Some(value) = decode::<T>(kv, key) {
        map.insert(
            id(&value),
            Versioned {
                value,
                create_revision: kv.create_revision,
                mod_revision: kv.mod_revision,
                stored: (keep == Keep::Stored).then(|| Arc::from(kv.value.as_slice())),
            },
        );
    }
}

/// Whether `kv` only moved the revisions of the entry `id` (a touch, which every shared
/// member change makes to its pool and load balancer): same bytes, so no need to decode
/// them again. If so, the entry now has the new revisions.
fn touched<K: Ord, T>(map: &mut BTreeMap<K, Versioned<T>>, id: &K, kv: &KeyValue) -> bool {
    match map.get_mut(id) {
        Some(v) if v.stored.as_deref() == Some(kv.value.as_slice()) => {
            v.create_revision = kv.create_revision;
            v.mod_revision = kv.mod_revision;
            true
        }
        _ => false,
    }
}

/// Reads a work request with its revision (the transaction that wrote it first).
pub(crate) fn decode_work_request(kv: &KeyValue) -> Option<WorkRequest> {
    // Work requests hold no secret.
    let mut wr: WorkRequest = match serde_json::from_slice(&kv.value) {
        Ok(wr) => wr,
        Err(e) => {
            tracing::error!(key = %kv.key, error = %e, "skipping unreadable stored value");
            return None;
        }
    };
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
            principal: String::new(),
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
        c.put(&kv, &SecretKey::generate().unwrap().0);
    }

    /// A touch moves only the revisions; a write of other bytes is read again.
    #[test]
    fn touches_move_revisions_and_new_bytes_are_read_again() {
        use fulcrum_model::{LoadBalancer, LoadBalancerSpec};
        let secret = SecretKey::generate().unwrap().0;
        let lb = |name: &str| LoadBalancer {
            id: LoadBalancerId("lb-1".into()),
            spec: serde_json::from_value::<LoadBalancerSpec>(serde_json::json!({"name": name}))
                .unwrap(),
            created_at: chrono::DateTime::UNIX_EPOCH,
            updated_at: chrono::DateTime::UNIX_EPOCH,
        };
        let kv = |value: &LoadBalancer, rev: i64| KeyValue {
            key: keys::lb(&value.id),
            value: records::encode(&secret, value).unwrap(),
            create_revision: 1,
            mod_revision: rev,
            version: rev,
        };
        let id = LoadBalancerId("lb-1".into());
        let mut c = Config::default();
        let first = kv(&lb("a"), 1);
        c.put(&first, &secret);
        let touch = KeyValue {
            mod_revision: 5,
            ..first.clone()
        };
        c.put(&touch, &secret);
        let got = &c.loadbalancers[&id];
        assert_eq!((got.mod_revision, got.value.spec.name.as_str()), (5, "a"));
        c.put(&kv(&lb("b"), 6), &secret);
        let got = &c.loadbalancers[&id];
        assert_eq!((got.mod_revision, got.value.spec.name.as_str()), (6, "b"));
        assert_eq!(
            got.stored.as_deref(),
            Some(kv(&lb("b"), 6).value.as_slice())
        );
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

    #[test]
    fn the_view_keeps_an_index_of_final_work_requests_for_retention() {
        let mut c = Config::default();
        put(&mut c, 1, WorkRequestStatus::InProgress);
        assert!(
            c.kept_work_requests.is_empty(),
            "pending ones are never forgotten"
        );
        put(&mut c, 1, WorkRequestStatus::Succeeded);
        put(&mut c, 2, WorkRequestStatus::Failed);
        assert_eq!(c.kept_work_requests.len(), 2);
        c.delete(&keys::work_request(&WorkRequestId::from(
            "wr-00001".to_owned(),
        )));
        assert_eq!(c.kept_work_requests.len(), 1);
    }

    #[test]
    fn retention_forgets_the_oldest_beyond_the_count_and_those_ended_too_long_ago() {
        let at = |secs: i64| chrono::DateTime::from_timestamp(secs, 0).unwrap();
        let id = |n: i64| WorkRequestId::from(format!("wr-{n}"));
        let mut kept = KeptWorkRequests::default();
        // Revisions 1..=6; number 5 ended long ago although it is recent (a slow one).
        for n in 1..=6 {
            let ended = if n == 5 { at(10) } else { at(1000 + n) };
            kept.by_id.insert(id(n), (n, ended));
        }
        let ids = |v: Vec<WorkRequestId>| v.into_iter().map(|i| i.0).collect::<Vec<_>>();
        assert_eq!(
            ids(kept.to_forget(6, at(0), |_, _| true)),
            Vec::<String>::new()
        );
        assert_eq!(ids(kept.to_forget(4, at(0), |_, _| true)), ["wr-1", "wr-2"]);
        assert_eq!(
            ids(kept.to_forget(4, at(100), |_, _| true)),
            ["wr-1", "wr-2", "wr-5"],
            "by age as well as by count"
        );
        assert_eq!(
            ids(kept.to_forget(4, at(1002), |_, _| true)),
            ["wr-1", "wr-2", "wr-5"],
            "an end time exactly at the limit is kept"
        );
        // Refused ones stay (a live retry token, or newer than what was checked).
        assert_eq!(
            ids(kept.to_forget(2, at(0), |i, rev| i.0 != "wr-2" && rev <= 3)),
            ["wr-1", "wr-3"]
        );
        assert_eq!(ids(kept.to_forget(0, at(0), |_, _| true)).len(), 6);
    }
}
