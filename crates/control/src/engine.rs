//! The mutation engine: plan against the view, commit with compare-and-swap, retry on
//! conflict; plus the tasks that keep the view current and finish work requests.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::Utc;
use fulcrum_model::{
    LoadBalancerId, PoolId, ResourceKind, ResourceRef, Secrets, Timestamp, WorkRequest,
    WorkRequestError, WorkRequestId, WorkRequestStatus,
};
use fulcrum_store::{Compare, KeyValue, Op, Revision, Store, StoreError, Txn};
use futures::{FutureExt, StreamExt};
use parking_lot::{RwLock, RwLockReadGuard};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::config::decode_work_request;
use crate::fleet::{self, FleetView, NodeOptions};
use crate::records;
use crate::secret_key::SecretKey;
use crate::{
    Config, ControlError, EtagScope, RequestContext, Scope, Versioned, etag, etag_matches, keys,
};

#[derive(Clone, Debug)]
pub struct Options {
    /// With no data plane attached, count a revision as applied as soon as this node's
    /// view holds it. The data plane turns this off and reports what it serves instead.
    pub self_apply: bool,
    /// How long a retry token is remembered.
    pub retry_token_ttl: Duration,
    /// Finished work requests kept in the store: housekeeping deletes the oldest beyond
    /// this many, and those that ended more than [`Options::work_requests_kept_for`] ago,
    /// except one a live retry token still answers with.
    pub work_requests_kept: usize,
    /// How long a finished work request is kept at most.
    pub work_requests_kept_for: Duration,
    /// How long a mutation waits for an earlier change of the same load balancer to be
    /// served before answering `Busy`.
    pub busy_wait: Duration,
    /// How many revisions of change history to keep before compacting.
    pub history_revisions: i64,
    /// How often expired retry tokens are forgotten and history is compacted (first at
    /// start).
    pub housekeeping_every: Duration,
    /// Fleet mode (several nodes on one shared store): this node's identity.
    pub node: Option<NodeOptions>,
    /// Seals secret fields at rest (in the store and the snapshot file). The default is
    /// a new random key, fit only for a store that lives no longer than this process.
    pub secret_key: Arc<SecretKey>,
    /// The ranges load balancers created without an address are given one from
    /// (`[proxy] vip_ranges`); the default is loopback only.
    pub vip_ranges: Vec<ipnet::IpNet>,
}

/// Finished work requests kept by default: a few days of an operator's changes, a few
/// seconds of a benchmark's; listing them all stays quick.
const DEFAULT_WORK_REQUESTS_KEPT: usize = 10_000;
/// How long a finished work request is kept by default.
const DEFAULT_WORK_REQUESTS_KEPT_FOR: Duration = Duration::from_secs(7 * 24 * 3600);

/// `[proxy] vip_ranges` by default: loopback only, which every node can bind.
pub fn default_vip_ranges() -> Vec<ipnet::IpNet> {
    vec![ipnet::IpNet::V4(
        ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(127, 0, 0, 0), 8)
            .expect("8 is a valid IPv4 prefix length"),
    )]
}

impl Default for Options {
    fn default() -> Self {
        Self {
            self_apply: true,
            retry_token_ttl: Duration::from_secs(24 * 3600),
            work_requests_kept: DEFAULT_WORK_REQUESTS_KEPT,
            work_requests_kept_for: DEFAULT_WORK_REQUESTS_KEPT_FOR,
            busy_wait: Duration::from_secs(2),
            history_revisions: 10_000,
            housekeeping_every: Duration::from_secs(300),
            node: None,
            secret_key: Arc::new(
                SecretKey::generate()
                    .map(|(key, _)| key)
                    .expect("the system's random number generator works"),
            ),
            vip_ranges: default_vip_ranges(),
        }
    }
}

/// Who reads work requests: its scope, and the principal and front door (it may read the
/// ones it made).
#[derive(Clone, Copy, Debug)]
pub struct Reader<'a> {
    pub scope: &'a Scope,
    pub principal: &'a str,
    pub front_door: &'static str,
}

impl Reader<'_> {
    fn admits(&self, cfg: &Config, wr: &WorkRequest) -> bool {
        let who = maker(self.front_door, self.principal);
        self.scope.admits_work_request(cfg, &who, wr)
    }
}

/// Who made a change, as its work request records it: principals are named per front door
/// (an OCI key and a native token may share a name), so the front door is part of it.
fn maker(front_door: &str, principal: &str) -> String {
    format!("{front_door}:{principal}")
}

/// What a successful mutation returns.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub work_request: WorkRequest,
    /// The resource the operation created or changed, for the response body.
    pub result: Option<ResourceRef>,
    /// The store revision holding the change.
    pub revision: Revision,
    /// True when a retry token matched an earlier identical request: nothing was done again.
    pub replayed: bool,
}

/// What an operation wants to commit, computed from one view of the configuration.
pub(crate) struct Plan {
    pub operation: &'static str,
    /// The load balancer the change lies under: its key is rewritten (its ETag moves)
    /// and compared, which serialises changes within one load balancer.
    pub lb: Option<LoadBalancerId>,
    /// Pools whose ETag moves (a member or health monitor changed beneath them).
    pub touch_pools: Vec<PoolId>,
    /// Further load balancers guarded and rewritten like `lb` (a batch spanning several).
    pub touch_lbs: Vec<LoadBalancerId>,
    pub compares: Vec<Compare>,
    pub(crate) writes: Vec<Write>,
    pub resources: Vec<ResourceRef>,
    pub result: Option<ResourceRef>,
    /// The mod revision of the resource acted on, for `If-Match` in resource scope
    /// (`None` when it does not exist yet).
    pub target_revision: Option<Revision>,
    /// The change depends on nothing under its load balancer but the keys it compares
    /// itself and the specs of the load balancer and touched pools (a member's weight, not
    /// its endpoint, which siblings must not share). Such changes do not serialise on the
    /// load balancer: concurrent ones commit together (see `build_txn`).
    pub shareable: bool,
    /// The load balancer record the plan writes, if it writes one: a caller's scope must
    /// admit it ([`crate::Scope`]).
    pub(crate) lb_written: Option<fulcrum_model::LoadBalancer>,
    /// The labels of each resource of no load balancer the plan writes (certificates): a
    /// caller's scope must own them ([`crate::Scope::owns`]).
    pub(crate) owned_labels_written: Vec<std::collections::BTreeMap<String, String>>,
    /// Every step of a batch was checked against the caller's scope as it was planned.
    pub(crate) scope_checked: bool,
}

impl Plan {
    pub fn new(operation: &'static str) -> Self {
        Plan {
            operation,
            lb: None,
            touch_pools: Vec::new(),
            touch_lbs: Vec::new(),
            compares: Vec::new(),
            writes: Vec::new(),
            resources: Vec::new(),
            result: None,
            target_revision: None,
            shareable: false,
            lb_written: None,
            owned_labels_written: Vec::new(),
            scope_checked: false,
        }
    }

    pub fn put<T: Serialize + Secrets + Clone + Send + Sync + 'static>(
        &mut self,
        key: String,
        value: &T,
    ) -> Result<(), ControlError> {
        if let Some(lb) =
            (value as &dyn std::any::Any).downcast_ref::<fulcrum_model::LoadBalancer>()
        {
            self.lb_written = Some(lb.clone());
        }
        if let Some(cert) =
            (value as &dyn std::any::Any).downcast_ref::<fulcrum_model::Certificate>()
            && cert.loadbalancer_id.is_none()
        {
            self.owned_labels_written.push(cert.spec.labels.clone());
        }
        self.writes.push(Write::Put {
            key,
            record: Box::new(value.clone()),
        });
        Ok(())
    }

    pub fn delete(&mut self, key: String) {
        self.writes.push(Write::Delete { key });
    }

    pub fn touched(&mut self, kind: ResourceKind, id: impl std::fmt::Display) {
        self.resources.push(ResourceRef {
            kind,
            id: id.to_string(),
        });
    }

    pub(crate) fn writes_key(&self, key: &str) -> bool {
        self.writes.iter().any(|w| w.key() == key)
    }
}

/// A write a plan makes. Records are encoded (their secrets sealed) only when the
/// transaction is built: sealing needs the key, which plans never see.
pub(crate) enum Write {
    Put {
        key: String,
        record: Box<dyn records::Record>,
    },
    Delete {
        key: String,
    },
}

impl Write {
    pub(crate) fn key(&self) -> &str {
        match self {
            Write::Put { key, .. } | Write::Delete { key } => key,
        }
    }

    pub(crate) fn to_op(&self, secret_key: &SecretKey) -> Result<Op, ControlError> {
        Ok(match self {
            Write::Put { key, record } => Op::Put {
                key: key.clone(),
                value: record.encode(secret_key)?,
            },
            Write::Delete { key } => Op::Delete { key: key.clone() },
        })
    }
}

/// What a change's input tells the engine besides its fingerprint (its serialisation):
/// the operation's name. The operations pass `(name, arguments…)`.
pub(crate) trait ChangeInput: Serialize {
    fn operation(&self) -> &'static str;
}

impl<A: Serialize> ChangeInput for (&'static str, A) {
    fn operation(&self) -> &'static str {
        self.0
    }
}

impl<A: Serialize, B: Serialize> ChangeInput for (&'static str, A, B) {
    fn operation(&self) -> &'static str {
        self.0
    }
}

impl<A: Serialize, B: Serialize, C: Serialize> ChangeInput for (&'static str, A, B, C) {
    fn operation(&self) -> &'static str {
        self.0
    }
}

/// An input whose fingerprint is a caller's value as it is, with the operation beside it.
pub(crate) struct Named<'a, I>(pub &'static str, pub &'a I);

impl<I: Serialize> Serialize for Named<'_, I> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.1.serialize(s)
    }
}

impl<I: Serialize> ChangeInput for Named<'_, I> {
    fn operation(&self) -> &'static str {
        self.0
    }
}

/// What a retry token remembers.
#[derive(Serialize, Deserialize)]
struct RetryRecord {
    fingerprint: String,
    work_request_id: WorkRequestId,
    result: Option<ResourceRef>,
    expires_at: Timestamp,
}

/// What a retry token says about a request.
enum TokenState {
    /// Seen with the same request: this is the first outcome.
    Replay(Box<Outcome>),
    /// Not remembered; `stale` is the mod revision of an expired record to overwrite.
    Fresh { stale: Option<Revision> },
}

/// A retry token's place in the store and the request it must match.
struct RetrySlot {
    key: String,
    fingerprint: String,
    stale: Option<Revision>,
}

/// What the data plane observes about members, for reads through any API.
pub trait Observer: Send + Sync {
    /// The observed status of a member, or None when there is no evidence either way.
    fn member_status(&self, id: &fulcrum_model::MemberId)
    -> Option<fulcrum_model::OperatingStatus>;

    /// Recent traffic through everything served.
    fn traffic(&self) -> crate::Traffic {
        crate::Traffic::default()
    }
}

/// The data plane, told of each new view where the view is kept, so a change reaches the
/// traffic without waking another thread: it compiles what it serves and reports it through
/// [`ControlPlane::report_applied`].
pub trait Follower: Send + Sync {
    /// Called on the control plane's runtime once a burst of revisions is in the view (one
    /// call for the burst); it must not block.
    fn view_changed(&self, control: &ControlPlane);
}

/// Something in the configuration the data plane was given and cannot serve: a listener
/// whose address is taken or whose certificate does not load, a pool whose TLS settings
/// are invalid. Reported with every applied revision; a work request that changed it fails.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub resource: ResourceRef,
    pub reason: String,
}

/// The code of a work request that failed because the data plane refused what it changed.
pub const NOT_SERVED: &str = "NotServed";

/// Told of each work request this node records as finished (SUCCEEDED or FAILED).
pub type FinishedHook = Arc<dyn Fn(&WorkRequest) + Send + Sync>;

pub struct ControlPlane {
    store: Arc<dyn Store>,
    observer: RwLock<Option<Arc<dyn Observer>>>,
    follower: RwLock<Option<Arc<dyn Follower>>>,
    finished_hook: RwLock<Option<FinishedHook>>,
    config: RwLock<Config>,
    /// The revision the view holds.
    seen: watch::Sender<Revision>,
    /// The revision this node's data plane serves.
    pub(crate) local_applied: watch::Sender<Revision>,
    /// What this node's data plane refused with it.
    pub(crate) local_refused: watch::Sender<Arc<Vec<Refusal>>>,
    /// The revision that counts as applied: this node's alone, or in fleet mode the newest
    /// one every live node serves.
    pub(crate) applied: watch::Sender<Revision>,
    pub(crate) fleet_view: RwLock<FleetView>,
    /// False while the store cannot be reached (the view may be behind).
    store_reachable: AtomicBool,
    pub(crate) opts: Options,
}

/// Commit attempts per mutation. Every change to a load balancer compares its key, so with
/// many writers at once a writer may lose several races before its turn comes.
const MAX_ATTEMPTS: usize = 64;
/// How long a change may take, store retries included, before it is answered anyway.
const WRITE_DEADLINE: Duration = Duration::from_secs(3);
/// How long a read of the store may take before it is answered from the view, or refused.
const READ_DEADLINE: Duration = Duration::from_secs(1);
/// Attempts a shareable change makes shared before it plans exclusively (it may lose a few
/// to changes of the same member).
const SHARED_TRIES: usize = 8;

impl ControlPlane {
    /// Loads the configuration and starts the tasks that keep the view current.
    ///
    /// In fleet mode with a snapshot cache, a store that cannot be reached is not fatal: the
    /// node starts from the configuration it saved last and catches up when the store returns.
    ///
    /// A key that cannot open the store's (or the snapshot's) secrets is an error
    /// ([`ControlError::SecretKey`]): the node never serves without them.
    pub async fn start(store: Arc<dyn Store>, opts: Options) -> Result<Arc<Self>, ControlError> {
        let cache = opts.node.as_ref().and_then(|n| n.snapshot_cache.clone());
        let key = &opts.secret_key;
        let listed = match check_secret_key(&*store, key).await {
            Ok(()) => store.range(keys::ROOT).await.map_err(ControlError::from),
            Err(e) => Err(e),
        };
        let (config, reachable) = match listed {
            Ok(range) => (Config::from_kvs(&range.kvs, range.revision, key), true),
            Err(e @ ControlError::SecretKey(_)) => return Err(e),
            Err(e) => match cache
                .as_deref()
                .map(|path| fleet::load_snapshot(path, key))
                .transpose()?
                .flatten()
            {
                Some(saved) => {
                    tracing::warn!(error = %e, revision = saved.revision,
                        "the store is unreachable; serving the configuration saved last");
                    (saved, false)
                }
                None => return Err(e),
            },
        };
        let revision = config.revision;
        let initial_applied = if opts.self_apply { revision } else { 0 };
        let fleet = opts.node.is_some();
        let cp = Arc::new(ControlPlane {
            store,
            observer: RwLock::new(None),
            follower: RwLock::new(None),
            finished_hook: RwLock::new(None),
            seen: watch::Sender::new(revision),
            local_applied: watch::Sender::new(initial_applied),
            local_refused: watch::Sender::new(Arc::new(Vec::new())),
            applied: watch::Sender::new(initial_applied),
            fleet_view: RwLock::new(FleetView::default()),
            store_reachable: AtomicBool::new(reachable),
            config: RwLock::new(config),
            opts,
        });
        tokio::spawn(watch_config(Arc::downgrade(&cp), revision + 1));
        tokio::spawn(finish_work_requests(Arc::downgrade(&cp)));
        if fleet {
            tokio::spawn(fleet::publish_applied(Arc::downgrade(&cp)));
            tokio::spawn(fleet::watch_nodes(Arc::downgrade(&cp)));
        }
        if let Some(path) = cache {
            tokio::spawn(fleet::keep_snapshot(Arc::downgrade(&cp), path));
        }
        Ok(cp)
    }

    /// Lets go of the store for a process taking over from this one (a hitless restart):
    /// this node's view stays as it is, its data plane serves it, changes are refused.
    pub async fn release_store(&self) -> Result<(), ControlError> {
        self.store.release().await.map_err(ControlError::from)
    }

    /// Takes the store back when the process that was to take over did not.
    pub async fn reacquire_store(&self) -> Result<(), ControlError> {
        self.store.reacquire().await.map_err(ControlError::from)
    }

    /// Whether the store answered last time this node asked (false: the view may be
    /// behind, and changes are refused).
    pub fn store_reachable(&self) -> bool {
        self.store_reachable.load(Ordering::Relaxed)
    }

    fn set_store_reachable(&self, reachable: bool) {
        if self.store_reachable.swap(reachable, Ordering::Relaxed) != reachable {
            if reachable {
                tracing::info!("the store is reachable again");
            } else {
                tracing::warn!("the store is unreachable; serving the last configuration");
            }
        }
    }

    /// The current view. Do not hold it across an `.await`.
    pub fn view(&self) -> RwLockReadGuard<'_, Config> {
        self.config.read()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The data plane registers what it observes (health) for reads.
    pub fn set_observer(&self, observer: Arc<dyn Observer>) {
        *self.observer.write() = Some(observer);
    }

    /// The data plane registers itself to be told of each new view (see [`Follower`]).
    pub fn set_follower(&self, follower: Arc<dyn Follower>) {
        *self.follower.write() = Some(follower);
    }

    /// Stops telling `follower` of new views, if it is the one registered.
    pub fn unset_follower(&self, follower: &Arc<dyn Follower>) {
        let mut current = self.follower.write();
        let ours = current
            .as_ref()
            .is_some_and(|f| std::ptr::addr_eq(Arc::as_ptr(f), Arc::as_ptr(follower)));
        if ours {
            *current = None;
        }
    }

    /// Tells the data plane (if one follows) that the view moved.
    fn follow_view(&self) {
        let follower = self.follower.read().clone();
        if let Some(follower) = follower {
            follower.view_changed(self);
        }
    }

    /// Registers what is told of each work request once its final status is recorded (by
    /// this node: in a fleet, the node whose transaction records it), e.g. to measure
    /// how long changes take.
    pub fn on_work_request_finished(&self, hook: FinishedHook) {
        *self.finished_hook.write() = Some(hook);
    }

    pub fn observed_member_status(
        &self,
        id: &fulcrum_model::MemberId,
    ) -> Option<fulcrum_model::OperatingStatus> {
        self.observer.read().as_ref()?.member_status(id)
    }

    /// Recent traffic as this node's data plane measured it (empty without one).
    pub fn traffic(&self) -> crate::Traffic {
        self.observer
            .read()
            .as_ref()
            .map(|o| o.traffic())
            .unwrap_or_default()
    }

    /// A member's operating status, the same in every dialect: its admin state first
    /// (offline, draining), then what the data plane observes (health checks, failed
    /// connects), else online or no monitor.
    pub fn member_status(
        &self,
        cfg: &Config,
        m: &fulcrum_model::Member,
    ) -> fulcrum_model::OperatingStatus {
        use fulcrum_model::OperatingStatus;
        if !m.spec.accepts_bound_requests() {
            OperatingStatus::Offline
        } else if m.spec.drain {
            OperatingStatus::Draining
        } else if let Some(observed) = self.observed_member_status(&m.id) {
            observed
        } else if cfg.monitor_of(&m.pool_id).is_some() {
            OperatingStatus::Online
        } else {
            OperatingStatus::NoMonitor
        }
    }

    /// Why the data plane does not serve a resource (this node's, or in fleet mode any live
    /// node's), if it does not.
    pub fn refusal(&self, kind: ResourceKind, id: &str) -> Option<String> {
        let wanted = |r: &&Refusal| r.resource.kind == kind && r.resource.id == id;
        if let Some(r) = self.local_refused.borrow().iter().find(wanted) {
            // In a fleet, say which node: any node may be the one that reports it.
            return Some(match &self.opts.node {
                Some(node) => format!("node {}: {}", node.id, r.reason),
                None => r.reason.clone(),
            });
        }
        let node = self.opts.node.as_ref()?;
        let fleet = self.fleet_view.read();
        fleet
            .nodes
            .values()
            .filter(|n| n.id != node.id)
            .find_map(|n| {
                let r = n.refused.iter().find(wanted)?;
                Some(format!("node {}: {}", n.id, r.reason))
            })
    }

    /// Whether the data plane refuses any listener of a load balancer.
    pub fn refuses_any_listener_of(&self, cfg: &Config, lb: &LoadBalancerId) -> bool {
        cfg.listeners_of(lb).any(|l| {
            self.refusal(ResourceKind::Listener, l.value.id.as_str())
                .is_some()
        })
    }

    /// The data plane reports the revision it now serves, and what in it it cannot serve.
    pub fn report_applied(&self, revision: Revision, refused: Vec<Refusal>) {
        self.local_refused.send_if_modified(|r| {
            let changed = **r != refused;
            if changed {
                *r = Arc::new(refused);
            }
            changed
        });
        let newer = self.local_applied.send_if_modified(|r| {
            let newer = revision > *r;
            if newer {
                *r = revision;
            }
            newer
        });
        if !newer {
            return;
        }
        if self.opts.node.is_some() {
            // Counts once this node's record says so (and every other live node's).
            self.refresh_common_applied();
        } else {
            self.applied.send_replace(revision);
        }
    }

    /// The revision that counts as applied (work requests succeed at it): this node's data
    /// plane's, or in fleet mode the newest one every live node serves.
    pub fn applied_revision(&self) -> Revision {
        *self.applied.borrow()
    }

    /// The revision this node's data plane serves.
    pub fn served_revision(&self) -> Revision {
        *self.local_applied.borrow()
    }

    /// Subscribes to the revision the view holds (a fleet node saves its snapshot on change).
    pub fn subscribe_seen(&self) -> watch::Receiver<Revision> {
        self.seen.subscribe()
    }

    /// Waits until the data plane serves `revision`, up to `timeout`. True if it does.
    pub async fn wait_applied(&self, revision: Revision, timeout: Duration) -> bool {
        wait_for(&self.applied, revision, timeout).await
    }

    async fn wait_seen(&self, revision: Revision, timeout: Duration) -> bool {
        wait_for(&self.seen, revision, timeout).await
    }

    /// Whether a resource last changed at `mod_revision` is still being applied.
    pub fn is_pending(&self, mod_revision: Revision) -> bool {
        mod_revision > self.applied_revision()
    }

    /// Runs one mutation and writes its audit record: every change passes here, whichever
    /// API it came through. `input` names the operation (what its plans name) and
    /// identifies the request for retry tokens.
    pub(crate) async fn mutate<I: ChangeInput>(
        &self,
        ctx: &RequestContext,
        input: &I,
        plan_fn: impl Fn(&Config, Timestamp) -> Result<Plan, ControlError>,
    ) -> Result<Outcome, ControlError> {
        let operation = input.operation();
        // Within a batch (`apply`), the change is planned on the batch's view and kept
        // there; the batch commits everything at the end as one change.
        if let Some(batch) = &ctx.batch {
            return batch.add(operation, &ctx.scope, &plan_fn);
        }
        let result = self
            .commit_change(ctx, input, |cfg, now| {
                let plan = plan_fn(cfg, now)?;
                debug_assert_eq!(plan.operation, operation, "a plan names its operation");
                Ok(plan)
            })
            .await;
        audit(ctx, operation, &result);
        result
    }

    /// Runs one mutation: idempotency, preconditions, locks, CAS commit with retries.
    async fn commit_change<I: Serialize>(
        &self,
        ctx: &RequestContext,
        input: &I,
        plan_fn: impl Fn(&Config, Timestamp) -> Result<Plan, ControlError>,
    ) -> Result<Outcome, ControlError> {
        let mut retry = match &ctx.retry_token {
            Some(token) => Some(self.retry_slot(ctx, token, input)?),
            None => None,
        };
        if let Some(slot) = &mut retry {
            match self.replay(&slot.key, &slot.fingerprint).await? {
                TokenState::Replay(outcome) => return Ok(*outcome),
                TokenState::Fresh { stale } => slot.stale = stale,
            }
        }

        if self.opts.node.is_some() && !self.store_reachable() {
            return Err(ControlError::Unavailable(
                "the configuration store (etcd) is unreachable: this node keeps serving its \
                 last configuration, but changes cannot be made until the store is back"
                    .into(),
            ));
        }
        // With one change at a time, each waits until the one before it is served, for
        // `busy_wait` in all, before answering Busy.
        let busy_deadline = tokio::time::Instant::now() + self.opts.busy_wait;
        // No change waits past this, whatever the store's own retries beneath.
        let deadline = tokio::time::Instant::now() + WRITE_DEADLINE;
        let late = || {
            ControlError::Unavailable(format!(
                "the configuration store did not answer within {}s; nothing was changed",
                WRITE_DEADLINE.as_secs()
            ))
        };
        // A shareable change that keeps losing is planned the exclusive way instead.
        let mut shared_losses = 0;
        for _ in 0..MAX_ATTEMPTS {
            let now = Utc::now();
            // Time-ordered (UUIDv7): each new work request's key lands next to the last
            // one in the store's B-tree instead of on a random page of it. With random ids
            // acknowledged writes/s fell by a third as work requests piled up.
            let wr_id = WorkRequestId(uuid::Uuid::now_v7().to_string());
            // Plan, check the precondition and take the compares from one view: a compare
            // read from a fresher view than the plan could let a stale plan commit.
            let (plan, planned_at, lb_revision, wr, txn, shared) = {
                let cfg = self.config.read();
                if !ctx.scope.is_all() {
                    // Planned first on what the caller may see, so a resource outside its
                    // scope is refused exactly as one that does not exist (and no other
                    // refusal tells it apart); then for real, on the whole view.
                    plan_fn(&cfg.scoped(&ctx.scope), now)?;
                }
                let plan = plan_fn(&cfg, now)?;
                if !plan.scope_checked {
                    ctx.scope.check_change(
                        plan.lb.as_ref(),
                        plan.lb
                            .as_ref()
                            .and_then(|id| cfg.loadbalancers.get(id))
                            .map(|v| &v.value),
                        plan.lb_written.as_ref(),
                    )?;
                    ctx.scope.check_owned(&plan.owned_labels_written)?;
                }
                let lb_revision = plan
                    .lb
                    .as_ref()
                    .and_then(|id| cfg.loadbalancers.get(id))
                    .map(|lb| lb.mod_revision);
                check_precondition(ctx, &plan, lb_revision)?;
                // An If-Match on the load balancer's ETag needs nothing under it to move.
                let lb_etag = ctx
                    .if_match
                    .as_ref()
                    .is_some_and(|m| m.scope == EtagScope::LoadBalancer);
                let shared = plan.shareable && !lb_etag && shared_losses < SHARED_TRIES;
                let wr = WorkRequest {
                    id: wr_id,
                    operation: plan.operation.to_owned(),
                    loadbalancer_id: plan.lb.clone(),
                    resources: plan.resources.clone(),
                    status: WorkRequestStatus::Accepted,
                    revision: 0,
                    request_id: ctx.request_id.clone(),
                    principal: maker(ctx.front_door, &ctx.principal),
                    message: String::new(),
                    error: None,
                    accepted_at: now,
                    finished_at: None,
                };
                let txn = self.build_txn(&cfg, &plan, shared, &wr, retry.as_ref(), now)?;
                (plan, cfg.revision, lb_revision, wr, txn, shared)
            };
            if let Some(rev) = lb_revision
                && ctx.one_change_at_a_time
                && self.is_pending(rev)
            {
                let left = busy_deadline.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() || !self.wait_applied(rev, left).await {
                    let id = plan.lb.map(|l| l.0).unwrap_or_default();
                    return Err(ControlError::Busy {
                        kind: ResourceKind::LoadBalancer,
                        id,
                    });
                }
                continue;
            }

            let wr_id = wr.id.0.clone();
            let resp = match tokio::time::timeout_at(deadline, self.store.txn(txn)).await {
                Ok(Err(StoreError::Indeterminate(why))) => {
                    tracing::warn!(work_request = %wr_id, "write of unknown outcome: {why}");
                    return Err(ControlError::OutcomeUnknown {
                        work_request_id: wr_id,
                    });
                }
                Ok(resp) => resp?,
                Err(_) => {
                    return Err(ControlError::OutcomeUnknown {
                        work_request_id: wr_id,
                    });
                }
            };
            if resp.succeeded {
                // Read-your-writes: the next request on this node sees the change.
                // Committed: answer by the deadline even if the change feed lags.
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if !self
                    .wait_seen(resp.revision, left.max(Duration::from_millis(100)))
                    .await
                {
                    tracing::warn!(revision = resp.revision, "view is slow to catch up");
                }
                let mut work_request = wr;
                work_request.revision = resp.revision;
                self.settle(&mut work_request);
                return Ok(Outcome {
                    work_request,
                    result: plan.result,
                    revision: resp.revision,
                    replayed: false,
                });
            }
            // Someone else wrote first: a concurrent request with our token, or a change
            // to what we planned on. Replay or re-plan on a fresher view.
            shared_losses += usize::from(shared);
            if let Some(slot) = &mut retry {
                match self.replay(&slot.key, &slot.fingerprint).await? {
                    TokenState::Replay(outcome) => return Ok(*outcome),
                    TokenState::Fresh { stale } => slot.stale = stale,
                }
            }
            let current = tokio::time::timeout_at(deadline, self.store.revision())
                .await
                .map_err(|_| late())??;
            let target = current.max(planned_at + 1);
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !self
                .wait_seen(target, left.min(Duration::from_secs(2)))
                .await
                && left.is_zero()
            {
                return Err(late());
            }
        }
        Err(ControlError::Conflict(
            "too many concurrent changes; retry".into(),
        ))
    }

    fn retry_slot<I: Serialize>(
        &self,
        ctx: &RequestContext,
        token: &str,
        input: &I,
    ) -> Result<RetrySlot, ControlError> {
        if token.is_empty() || token.chars().count() > 64 {
            return Err(ControlError::invalid(
                "retry_token",
                "the retry token must be 1 to 64 characters",
            ));
        }
        let mut h = Sha256::new();
        h.update(ctx.principal.as_bytes());
        h.update([0]);
        h.update(token.as_bytes());
        let key = keys::idempotency(&hex(&h.finalize()));
        let body = serde_json::to_vec(input).map_err(|e| ControlError::Internal(e.to_string()))?;
        let fingerprint = hex(&Sha256::digest(&body));
        Ok(RetrySlot {
            key,
            fingerprint,
            stale: None,
        })
    }

    /// The earlier outcome for a retry token, if it is still remembered.
    async fn replay(&self, key: &str, fingerprint: &str) -> Result<TokenState, ControlError> {
        let read = tokio::time::timeout(READ_DEADLINE, self.store.get(key));
        let Some(kv) = read.await.map_err(|_| slow_store())?? else {
            return Ok(TokenState::Fresh { stale: None });
        };
        let stale = TokenState::Fresh {
            stale: Some(kv.mod_revision),
        };
        let Ok(record) = serde_json::from_slice::<RetryRecord>(&kv.value) else {
            return Ok(stale);
        };
        if record.expires_at <= Utc::now() {
            return Ok(stale);
        }
        if record.fingerprint != fingerprint {
            return Err(ControlError::RetryTokenReused);
        }
        // The record was written by the transaction that made the change.
        let revision = kv.mod_revision;
        self.wait_seen(revision, Duration::from_secs(10)).await;
        let work_request = self
            .get_work_request(&record.work_request_id)
            .await?
            .ok_or_else(|| {
                ControlError::Internal("work request of a retry token is gone".into())
            })?;
        Ok(TokenState::Replay(Box::new(Outcome {
            work_request,
            result: record.result,
            revision,
            replayed: true,
        })))
    }

    /// The transaction for a plan, with compares from `cfg`, the view it was planned on.
    ///
    /// Every change moves the ETags of its load balancer and touched pools by writing their
    /// keys. Exclusively, it compares their mod revisions (nothing under the load balancer
    /// changed since the plan) and rewrites them. Shared, it compares their values (their
    /// specs did not change) and touches them (etcd's `ignore_value`), so concurrent shared
    /// changes of one load balancer neither conflict nor undo each other, and a group
    /// commit takes them all at once.
    fn build_txn(
        &self,
        cfg: &Config,
        plan: &Plan,
        shared: bool,
        wr: &WorkRequest,
        retry: Option<&RetrySlot>,
        now: Timestamp,
    ) -> Result<Txn, ControlError> {
        let mut compares = plan.compares.clone();
        let mut writes = plan
            .writes
            .iter()
            .map(|w| w.to_op(&self.opts.secret_key))
            .collect::<Result<Vec<_>, _>>()?;
        let guard = |compares: &mut Vec<Compare>,
                     writes: &mut Vec<Op>,
                     key: String,
                     value: Vec<u8>,
                     mod_revision: Revision| {
            if shared {
                compares.push(Compare::value(key.clone(), value));
                writes.push(Op::Touch { key });
            } else {
                compares.push(Compare::unchanged(key.clone(), mod_revision));
                writes.push(Op::Put { key, value });
            }
        };
        for lb_id in plan.lb.iter().chain(&plan.touch_lbs) {
            let Some(lb) = cfg.loadbalancers.get(lb_id) else {
                continue;
            };
            let key = keys::lb(lb_id);
            if plan.writes_key(&key) {
                compares.push(Compare::unchanged(key, lb.mod_revision));
            } else {
                let value = self.guard_value(lb, shared)?;
                guard(&mut compares, &mut writes, key, value, lb.mod_revision);
            }
        }
        for pool_id in &plan.touch_pools {
            let key = keys::pool(pool_id);
            if let Some(pool) = cfg.pools.get(pool_id)
                && !plan.writes_key(&key)
            {
                let value = self.guard_value(pool, shared)?;
                guard(&mut compares, &mut writes, key, value, pool.mod_revision);
            }
        }
        writes.push(Op::Put {
            key: keys::work_request(&wr.id),
            value: to_json(wr)?,
        });
        if let Some(RetrySlot {
            key,
            fingerprint,
            stale,
        }) = retry
        {
            // Absent, or present but expired (then overwritten, guarded by its revision).
            compares.push(match stale {
                Some(rev) => Compare::unchanged(key.clone(), *rev),
                None => Compare::absent(key.clone()),
            });
            let expires_at = now
                + chrono::Duration::from_std(self.opts.retry_token_ttl)
                    .map_err(|e| ControlError::Internal(e.to_string()))?;
            writes.push(Op::Put {
                key: key.clone(),
                value: to_json(&RetryRecord {
                    fingerprint: fingerprint.clone(),
                    work_request_id: wr.id.clone(),
                    result: plan.result.clone(),
                    expires_at,
                })?,
            });
        }
        Ok(Txn {
            compares,
            success: writes,
            failure: Vec::new(),
        })
    }

    /// What `build_txn` guards a load balancer or pool key with. Shared: the bytes the
    /// store holds, to compare (encoding the entry again seals its secrets with new nonces,
    /// which never compares equal; an entry loaded from a snapshot has no bytes, and such a
    /// change goes exclusive after a few tries). Exclusive: the entry encoded afresh, to
    /// write, which also seals secrets an older version stored in clear.
    fn guard_value<T: Serialize + Secrets + Clone>(
        &self,
        v: &Versioned<T>,
        shared: bool,
    ) -> Result<Vec<u8>, ControlError> {
        match (&v.stored, shared) {
            (Some(bytes), true) => Ok(bytes.to_vec()),
            _ => records::encode(&self.opts.secret_key, &v.value),
        }
    }

    fn derive_status(&self, stored: WorkRequestStatus, revision: Revision) -> WorkRequestStatus {
        if stored.is_final() {
            stored
        } else if *self.applied.borrow() >= revision {
            WorkRequestStatus::Succeeded
        } else if *self.seen.borrow() >= revision {
            WorkRequestStatus::InProgress
        } else {
            WorkRequestStatus::Accepted
        }
    }

    /// Why a work request failed, if the data plane refuses something it changed.
    fn failure_of(&self, wr: &WorkRequest) -> Option<WorkRequestError> {
        wr.resources.iter().find_map(|r| {
            let reason = self.refusal(r.kind, &r.id)?;
            Some(WorkRequestError {
                code: NOT_SERVED.into(),
                message: format!("{} {} is not served: {reason}", r.kind.as_str(), r.id),
            })
        })
    }

    /// Derives a work request's status from what is applied and what is refused.
    fn settle(&self, wr: &mut WorkRequest) {
        if wr.status.is_final() {
            return;
        }
        wr.status = self.derive_status(wr.status, wr.revision);
        if wr.status == WorkRequestStatus::Succeeded
            && let Some(error) = self.failure_of(wr)
        {
            wr.status = WorkRequestStatus::Failed;
            wr.error = Some(error);
        }
    }

    /// Derives a stored work request's status; in fleet mode a pending one also says how
    /// far it has spread.
    fn annotate(&self, wr: &mut WorkRequest) {
        let stored_final = wr.status.is_final();
        self.settle(wr);
        if !stored_final
            && wr.message.is_empty()
            && let Some(spread) = self.spread(wr.revision)
        {
            wr.message = spread.to_string();
        }
    }

    /// A work request. Pending and recently finished ones are answered from the view (at
    /// once, whatever the store does); others from the store, within [`READ_DEADLINE`].
    pub async fn get_work_request(
        &self,
        id: &WorkRequestId,
    ) -> Result<Option<WorkRequest>, ControlError> {
        let pending = {
            let cfg = self.config.read();
            cfg.pending_work_requests
                .get(id)
                .map(|v| v.value.clone())
                .or_else(|| cfg.finished_work_requests.get(id).cloned())
        };
        if let Some(mut wr) = pending {
            self.annotate(&mut wr);
            return Ok(Some(wr));
        }
        let key = keys::work_request(id);
        let read = tokio::time::timeout(READ_DEADLINE, self.store.get(&key));
        let Some(kv) = read.await.map_err(|_| slow_store())?? else {
            return Ok(None);
        };
        Ok(decode_work_request(&kv).map(|mut wr| {
            self.annotate(&mut wr);
            wr
        }))
    }

    /// The work request `id` if `who` may read it ([`Scope::admits_work_request`]): one
    /// it may not answers as absent.
    pub async fn read_work_request(
        &self,
        id: &WorkRequestId,
        who: Reader<'_>,
    ) -> Result<Option<WorkRequest>, ControlError> {
        Ok(self
            .get_work_request(id)
            .await?
            .filter(|wr| who.admits(&self.config.read(), wr)))
    }

    /// Work requests `who` may read, newest first, optionally of one load balancer.
    pub async fn list_work_requests(
        &self,
        lb: Option<&LoadBalancerId>,
        who: Reader<'_>,
    ) -> Result<Vec<WorkRequest>, ControlError> {
        let read = tokio::time::timeout(READ_DEADLINE, self.store.range(keys::WORK_REQUESTS));
        let range = read.await.map_err(|_| slow_store())??;
        let visible: Vec<WorkRequest> = {
            let cfg = self.config.read();
            range
                .kvs
                .iter()
                .filter_map(decode_work_request)
                .filter(|wr| lb.is_none() || wr.loadbalancer_id.as_ref() == lb)
                .filter(|wr| who.admits(&cfg, wr))
                .collect()
        };
        let mut out: Vec<WorkRequest> = visible
            .into_iter()
            .map(|mut wr| {
                self.annotate(&mut wr);
                wr
            })
            .collect();
        out.sort_by_key(|wr| std::cmp::Reverse(wr.revision));
        Ok(out)
    }

    /// Waits until the work request is final or `timeout` passes; returns its state then.
    /// Never takes much longer than `timeout`, whatever the store does.
    pub async fn wait_work_request(
        &self,
        id: &WorkRequestId,
        timeout: Duration,
        who: Reader<'_>,
    ) -> Result<Option<WorkRequest>, ControlError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let Some(wr) = self.read_work_request(id, who).await? else {
            return Ok(None);
        };
        if wr.status.is_final() {
            return Ok(Some(wr));
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.wait_applied(wr.revision, left).await;
        // Still in the view unless the finisher recorded it meanwhile.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(
            left.max(Duration::from_millis(100)),
            self.get_work_request(id),
        )
        .await
        {
            Ok(found) => found,
            Err(_) => {
                let mut wr = wr;
                self.annotate(&mut wr);
                Ok(Some(wr))
            }
        }
    }
}

/// The audit record of one change: INFO under the target `fulcrum::audit` (so it can be
/// filtered or routed on its own), with who asked, through which API, what changed and the
/// outcome. Never the request's values: a spec may hold upstream credentials, and an
/// error message may quote what it refuses; a refusal names its code (and for invalid
/// input the field) instead.
fn audit(ctx: &RequestContext, operation: &'static str, result: &Result<Outcome, ControlError>) {
    const TARGET: &str = "fulcrum::audit";
    match result {
        Ok(outcome) => {
            let wr = &outcome.work_request;
            tracing::info!(
                target: TARGET,
                principal = %ctx.principal,
                front_door = ctx.front_door,
                operation,
                outcome = "accepted",
                loadbalancer = wr.loadbalancer_id.as_ref().map_or("", |id| id.as_str()),
                resources = %ResourceList(&wr.resources),
                work_request = %wr.id,
                request_id = %ctx.request_id,
                replayed = outcome.replayed,
                "change accepted"
            );
        }
        Err(e) => {
            let work_request = match e {
                ControlError::OutcomeUnknown { work_request_id } => work_request_id.as_str(),
                _ => "",
            };
            let field = match e {
                ControlError::Invalid(v) => v.first().field.as_str(),
                _ => "",
            };
            tracing::info!(
                target: TARGET,
                principal = %ctx.principal,
                front_door = ctx.front_door,
                operation,
                outcome = "refused",
                error_code = e.code(),
                field,
                work_request,
                request_id = %ctx.request_id,
                "change refused"
            );
        }
    }
}

/// `pool/ID,member/ID`: the resources a change named, for the audit record.
struct ResourceList<'a>(&'a [ResourceRef]);

impl std::fmt::Display for ResourceList<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(&r.kind.as_str().replace(' ', "_"))?;
            write!(f, "/{}", r.id)?;
        }
        Ok(())
    }
}

fn check_precondition(
    ctx: &RequestContext,
    plan: &Plan,
    lb_revision: Option<Revision>,
) -> Result<(), ControlError> {
    let Some(im) = &ctx.if_match else {
        return Ok(());
    };
    let current = match im.scope {
        EtagScope::Resource => plan.target_revision,
        EtagScope::LoadBalancer => lb_revision,
    };
    match current {
        Some(rev) if etag_matches(&im.value, &etag(rev)) => Ok(()),
        Some(rev) => Err(ControlError::PreconditionFailed { current: etag(rev) }),
        None => Err(ControlError::PreconditionFailed {
            current: String::new(),
        }),
    }
}

fn slow_store() -> ControlError {
    ControlError::Unavailable(format!(
        "the configuration store did not answer within {}s",
        READ_DEADLINE.as_secs()
    ))
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, ControlError> {
    serde_json::to_vec(v).map_err(|e| ControlError::Internal(e.to_string()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

async fn wait_for(tx: &watch::Sender<Revision>, revision: Revision, timeout: Duration) -> bool {
    let mut rx = tx.subscribe();
    tokio::time::timeout(timeout, rx.wait_for(|r| *r >= revision))
        .await
        .is_ok_and(|r| r.is_ok())
}

/// Keeps the view current: list, then watch from the next revision; re-list when the
/// history was compacted or the store failed.
async fn watch_config(cp: Weak<ControlPlane>, mut from: Revision) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let Some(this) = cp.upgrade() else { return };
        let store = this.store.clone();
        drop(this);
        let mut stream = match store.watch(keys::ROOT, from).await {
            Ok(s) => s.peekable(),
            Err(e) => {
                if let Some(this) = cp.upgrade() {
                    this.set_store_reachable(false);
                }
                tracing::warn!(error = %e, "config watch failed to start");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                from = match relist(&cp, &store).await {
                    Some(rev) => rev + 1,
                    None => return,
                };
                continue;
            }
        };
        while let Some(item) = stream.next().await {
            let Some(this) = cp.upgrade() else { return };
            match item {
                Ok(batch) => {
                    backoff = Duration::from_millis(50);
                    this.set_store_reachable(true);
                    this.config.write().apply(&batch, &this.opts.secret_key);
                    from = batch.revision + 1;
                    this.seen.send_replace(batch.revision);
                    if this.opts.self_apply {
                        this.report_applied(batch.revision, Vec::new());
                    }
                    // A burst of revisions is served as one: the data plane is told once
                    // the feed has nothing more at hand.
                    if std::pin::Pin::new(&mut stream)
                        .peek()
                        .now_or_never()
                        .is_none()
                    {
                        this.follow_view();
                    }
                }
                Err(e) => {
                    if let StoreError::Compacted {
                        requested,
                        compacted,
                    } = &e
                    {
                        // A node that fell behind (paused, slow) while history was
                        // compacted: the events it missed are gone, the state is not.
                        tracing::info!(
                            requested = *requested,
                            compacted = *compacted,
                            "the configuration's history was compacted past this node's \
                             watch; listing it whole"
                        );
                    } else {
                        this.set_store_reachable(false);
                        tracing::warn!(error = %e, "config watch broke");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                    drop(this);
                    from = match relist(&cp, &store).await {
                        Some(rev) => rev + 1,
                        None => return,
                    };
                    break;
                }
            }
        }
    }
}

/// Makes sure this node's secret key is the one the store's secrets are sealed with: the
/// store keeps a value sealed by the first node that started on it, and every later node
/// must open it. A store from before sealing gets one now.
async fn check_secret_key(store: &dyn Store, key: &SecretKey) -> Result<(), ControlError> {
    let mismatch = || {
        ControlError::SecretKey(
            "this node's secret key is not the one the store's secrets were sealed with: \
             every node sharing a store needs the same key"
                .into(),
        )
    };
    for _ in 0..3 {
        if let Some(kv) = store.get(keys::SECRET_KEY_CHECK).await? {
            let text = std::str::from_utf8(&kv.value).map_err(|_| mismatch())?;
            return match key.open(text) {
                Ok(check)
                    if SecretKey::is_sealed(text) && check == records::KEY_CHECK_PLAINTEXT =>
                {
                    Ok(())
                }
                _ => Err(mismatch()),
            };
        }
        let sealed = key
            .seal(records::KEY_CHECK_PLAINTEXT)
            .map_err(|e| ControlError::SecretKey(e.to_string()))?;
        let created = store
            .txn(Txn {
                compares: vec![Compare::absent(keys::SECRET_KEY_CHECK.to_owned())],
                success: vec![Op::Put {
                    key: keys::SECRET_KEY_CHECK.to_owned(),
                    value: sealed.into_bytes(),
                }],
                failure: Vec::new(),
            })
            .await?;
        if created.succeeded {
            return Ok(());
        }
        // Another node wrote it first: check against theirs.
    }
    Err(ControlError::Unavailable(
        "cannot settle the secret key check in the store".into(),
    ))
}

async fn relist(cp: &Weak<ControlPlane>, store: &Arc<dyn Store>) -> Option<Revision> {
    loop {
        match store.range(keys::ROOT).await {
            Ok(range) => {
                let this = cp.upgrade()?;
                this.set_store_reachable(true);
                *this.config.write() =
                    Config::from_kvs(&range.kvs, range.revision, &this.opts.secret_key);
                this.seen.send_replace(range.revision);
                if this.opts.self_apply {
                    this.report_applied(range.revision, Vec::new());
                }
                this.follow_view();
                return Some(range.revision);
            }
            Err(e) => {
                if let Some(this) = cp.upgrade() {
                    this.set_store_reachable(false);
                }
                tracing::warn!(error = %e, "config re-list failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                cp.upgrade()?;
            }
        }
    }
}

/// The finisher records finished work requests at most this often (readers derive the
/// status meanwhile), so that a stream of changes shares its commits.
const FINISH_EVERY: Duration = Duration::from_millis(20);
/// Work requests recorded, or old work requests and expired retry tokens deleted, per
/// transaction (etcd takes at most 128 operations in one by default).
const OPS_PER_TXN: usize = 128;

/// What housekeeping read of the retry tokens: the work requests they name, and the
/// revision they were read at.
struct TokensRead {
    work_requests: HashSet<WorkRequestId>,
    revision: Revision,
}

/// Marks work requests SUCCEEDED once the data plane serves them; housekeeping forgets
/// expired retry tokens, deletes old work requests and compacts old history.
async fn finish_work_requests(cp: Weak<ControlPlane>) {
    let mut applied = match cp.upgrade() {
        Some(this) => this.applied.subscribe(),
        None => return,
    };
    let mut housekeeping = match cp.upgrade() {
        Some(this) => tokio::time::interval(this.opts.housekeeping_every),
        None => return,
    };
    let mut last_round = tokio::time::Instant::now();
    let mut last_trim: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            _ = housekeeping.tick() => {
                let Some(this) = cp.upgrade() else { return };
                this.housekeeping().await;
                continue;
            }
        }
        // Readers already see SUCCEEDED (the status is derived from what is applied), so
        // recording it can wait a little: under a stream of changes one commit then records
        // many work requests, instead of every change costing a second commit.
        tokio::time::sleep_until(last_round + FINISH_EVERY).await;
        last_round = tokio::time::Instant::now();
        let Some(this) = cp.upgrade() else { return };
        let done: Vec<Versioned<WorkRequest>> = {
            let applied = *applied.borrow_and_update();
            this.config
                .read()
                .pending_work_requests
                .values()
                .filter(|wr| wr.create_revision <= applied)
                .cloned()
                .collect()
        };
        // In bounded transactions, one after another: a huge one would hold up the changes
        // that share its group commit.
        for chunk in done.chunks(OPS_PER_TXN) {
            if let Err(e) = this.persist_finished(chunk).await {
                tracing::warn!(error = %e, "could not record finished work requests");
                break;
            }
        }
        // A stream of changes outgrows retention well before the next housekeeping: trim
        // then too, so the store (and every list of work requests) stays near its bound.
        if this.config.read().kept_work_requests.len()
            > this.opts.work_requests_kept + retention_slack(this.opts.work_requests_kept)
            && last_trim.is_none_or(|t| t.elapsed() >= TRIM_EVERY)
        {
            last_trim = Some(tokio::time::Instant::now());
            this.trim_work_requests().await;
        }
    }
}

/// Between housekeeping rounds, old work requests are deleted at most this often…
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// …once there are this many more than retention keeps.
fn retention_slack(kept: usize) -> usize {
    (kept / 10).max(100)
}

impl ControlPlane {
    async fn persist_finished(&self, done: &[Versioned<WorkRequest>]) -> Result<(), ControlError> {
        let now = Utc::now();
        let mut compares = Vec::new();
        let mut writes = Vec::new();
        let mut finished = Vec::new();
        for pending in done {
            let mut wr = pending.value.clone();
            self.settle(&mut wr);
            if !wr.status.is_final() {
                continue;
            }
            wr.finished_at = Some(now);
            if let Some(spread) = self.spread(wr.revision) {
                wr.message = spread.to_string();
            }
            let key = keys::work_request(&wr.id);
            compares.push(Compare::unchanged(key.clone(), pending.mod_revision));
            writes.push(Op::Put {
                key,
                value: to_json(&wr)?,
            });
            finished.push(wr);
        }
        if writes.is_empty() {
            return Ok(());
        }
        // A concurrent finisher (another node) may have won; then there is nothing to do.
        let resp = self
            .store
            .txn(Txn {
                compares,
                success: writes,
                failure: Vec::new(),
            })
            .await?;
        let hook = self.finished_hook.read().clone();
        if resp.succeeded
            && let Some(hook) = hook
        {
            finished.iter().for_each(|wr| hook(wr));
        }
        Ok(())
    }

    async fn housekeeping(&self) {
        self.trim_work_requests().await;
        let keep_from = self.applied_revision() - self.opts.history_revisions;
        if keep_from > 1
            && let Err(e) = self.store.compact(keep_from).await
        {
            tracing::warn!(error = %e, "could not compact history");
        }
    }

    /// Forgets expired retry tokens, then deletes the work requests retention no longer
    /// keeps.
    async fn trim_work_requests(&self) {
        match self.forget_expired_tokens().await {
            Ok(tokens) => {
                if let Err(e) = self.forget_old_work_requests(&tokens).await {
                    tracing::warn!(error = %e, "could not delete old work requests");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not forget expired retry tokens"),
        }
    }

    /// Deletes the finished work requests retention no longer keeps (see
    /// [`Options::work_requests_kept`]), a bounded transaction at a time. A work request a
    /// retry token may still replay stays, and so does any newer than the tokens read.
    async fn forget_old_work_requests(&self, tokens: &TokensRead) -> Result<(), ControlError> {
        let ended_before = Utc::now()
            - chrono::Duration::from_std(self.opts.work_requests_kept_for)
                .unwrap_or(chrono::Duration::MAX);
        let old = self.config.read().kept_work_requests.to_forget(
            self.opts.work_requests_kept,
            ended_before,
            |id, revision| revision <= tokens.revision && !tokens.work_requests.contains(id),
        );
        if !old.is_empty() {
            tracing::debug!(count = old.len(), "deleting old work requests");
        }
        for chunk in old.chunks(OPS_PER_TXN) {
            // Final work requests never change again: nothing to compare.
            self.store
                .txn(Txn {
                    compares: Vec::new(),
                    success: chunk
                        .iter()
                        .map(|id| Op::Delete {
                            key: keys::work_request(id),
                        })
                        .collect(),
                    failure: Vec::new(),
                })
                .await?;
        }
        Ok(())
    }

    /// Deletes expired retry tokens, a bounded transaction at a time; returns the work
    /// requests of every token it read (an expired one too: a replay may have read it just
    /// before), which retention keeps for now.
    async fn forget_expired_tokens(&self) -> Result<TokensRead, ControlError> {
        let now = Utc::now();
        let range = self.store.range(keys::IDEMPOTENCY).await?;
        let mut work_requests = HashSet::new();
        let mut expired = Vec::new();
        for kv in range.kvs {
            match serde_json::from_slice::<RetryRecord>(&kv.value) {
                Ok(record) => {
                    work_requests.insert(record.work_request_id);
                    if record.expires_at <= now {
                        expired.push(kv);
                    }
                }
                Err(_) => expired.push(kv),
            }
        }
        for chunk in expired.chunks(OPS_PER_TXN) {
            // Each only if unchanged: a token used again meanwhile holds a new record.
            let txn = |kvs: &[KeyValue]| Txn {
                compares: kvs
                    .iter()
                    .map(|kv| Compare::unchanged(kv.key.clone(), kv.mod_revision))
                    .collect(),
                success: kvs
                    .iter()
                    .map(|kv| Op::Delete {
                        key: kv.key.clone(),
                    })
                    .collect(),
                failure: Vec::new(),
            };
            if !self.store.txn(txn(chunk)).await?.succeeded {
                for kv in chunk {
                    self.store.txn(txn(std::slice::from_ref(kv))).await?;
                }
            }
        }
        Ok(TokensRead {
            work_requests,
            revision: range.revision,
        })
    }
}
