//! fulcrum's data plane.
//!
//! On every change the control plane's view reports, the data plane compiles an immutable
//! [`Snapshot`] (listeners, routes, pools with prebuilt selectors), publishes it through
//! `ArcSwap`, makes its bound sockets and health checks match, and reports the revision
//! it now serves, which is when work requests succeed.
//!
//! Architecture invariants: requests read only the snapshot (one lock-free `load`), never
//! the store or the API. Per-member live state (in-flight leases, health, idle upstream
//! connections) is keyed by member id and survives every swap. Selection does not allocate.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use fulcrum_control::{ControlPlane, Revision};
use fulcrum_model::{ListenerId, MemberId};
use parking_lot::Mutex;

mod breaker;
mod health;
mod http;
mod listener;
mod metrics;
mod select;
mod snapshot;
mod state;
mod sticky;
mod tcp;
mod tls;
mod upstream;
mod weak_map;

pub use health::HealthCounter;
pub use snapshot::Snapshot;
pub use state::Health;

/// Data-plane settings that are not part of the API's configuration.
#[derive(Clone, Debug)]
pub struct DataPlaneOptions {
    /// The longest a `Retry-After` may trip a member (circuit breakers that accept it).
    pub max_retry_after: Duration,
    /// Bind every listener on this address instead of its load balancer's VIP: a
    /// node-local choice, e.g. several fleet nodes on one host, each on its own address.
    pub bind_address: Option<std::net::IpAddr>,
}

impl Default for DataPlaneOptions {
    fn default() -> Self {
        Self {
            max_retry_after: Duration::from_millis(breaker::MAX_RETRY_AFTER_MS),
            bind_address: None,
        }
    }
}

pub(crate) struct DataPlaneInner {
    pub options: DataPlaneOptions,
    pub snapshot: ArcSwap<Snapshot>,
    pub registry: state::Registry,
    listeners: Mutex<HashMap<ListenerId, listener::Running>>,
    checks: Mutex<health::Checks>,
    connections: listener::ConnCounter,
    /// Listeners that could not bind, with why.
    bind_errors: Mutex<HashMap<ListenerId, String>>,
}

/// The running data plane.
pub struct DataPlane {
    inner: Arc<DataPlaneInner>,
    task: tokio::task::JoinHandle<()>,
}

/// How long to wait before trying again to bind listeners whose address was busy.
const REBIND_EVERY: Duration = Duration::from_secs(2);

impl DataPlane {
    /// Starts serving the control plane's configuration, and keeps following it. The
    /// control plane should run with `self_apply` off: the data plane reports what it
    /// serves.
    pub fn start(control: Arc<ControlPlane>, options: DataPlaneOptions) -> DataPlane {
        Self::start_on(&tokio::runtime::Handle::current(), control, options)
    }

    /// Like [`DataPlane::start`], with every data-plane task (listeners, connections, health
    /// checks) on `runtime`: a control plane on another runtime then never holds up traffic,
    /// and traffic never holds up the API.
    pub fn start_on(
        runtime: &tokio::runtime::Handle,
        control: Arc<ControlPlane>,
        options: DataPlaneOptions,
    ) -> DataPlane {
        let inner = Arc::new(DataPlaneInner {
            options,
            snapshot: ArcSwap::from_pointee(Snapshot::empty()),
            registry: state::Registry::default(),
            listeners: Mutex::new(HashMap::new()),
            checks: Mutex::new(health::Checks::default()),
            connections: listener::ConnCounter::default(),
            bind_errors: Mutex::new(HashMap::new()),
        });
        control.set_observer(Arc::new(Observations(inner.clone())));
        let task = runtime.spawn(follow(inner.clone(), control));
        DataPlane { inner, task }
    }

    /// The newest configuration revision compiled into what the data plane serves. Revisions
    /// that only touch work requests need no new snapshot and do not move it.
    pub fn revision(&self) -> i64 {
        self.inner.snapshot.load().revision
    }

    /// What the data plane knows of a member's health (None: not served).
    pub fn member_health(&self, id: &MemberId) -> Option<MemberObservation> {
        self.inner.registry.get(id).map(|s| MemberObservation {
            health: s.health(),
            passively_ejected: s.passively_ejected(),
            in_flight: s.in_flight(),
        })
    }

    /// The data plane's metrics in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        let mut out = String::new();
        if let Err(e) =
            prometheus_client::encoding::text::encode(&mut out, &metrics::registry(&self.inner))
        {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }

    /// Where a listener is bound, if it is.
    pub fn listener_addr(&self, id: &ListenerId) -> Option<std::net::SocketAddr> {
        self.inner.bound_addr(id)
    }

    /// Why a listener is not bound, if it failed to.
    pub fn listener_error(&self, id: &ListenerId) -> Option<String> {
        self.inner.bind_errors.lock().get(id).cloned()
    }

    /// Stops accepting connections, lets in-flight requests finish (up to `grace`).
    pub async fn shutdown(&self, grace: Duration) {
        self.task.abort();
        self.inner.close_all_listeners();
        let deadline = tokio::time::Instant::now() + grace;
        while self.inner.connections.get() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        self.task.abort();
        self.inner.close_all_listeners();
    }
}

#[derive(Clone, Copy, Debug)]
pub struct MemberObservation {
    pub health: Health,
    pub passively_ejected: bool,
    pub in_flight: u64,
}

async fn follow(inner: Arc<DataPlaneInner>, control: Arc<ControlPlane>) {
    let mut seen = control.subscribe_seen();
    // The traffic revision last compiled: changes to work requests alone (the finisher
    // marking them done) need no new snapshot, what is served already reflects them.
    let mut compiled: Option<Revision> = None;
    loop {
        let (revision, fresh) = {
            let cfg = control.view();
            let fresh = (compiled != Some(cfg.traffic_revision)).then(|| {
                Arc::new(snapshot::compile(
                    &cfg,
                    &inner.snapshot.load(),
                    &inner.registry,
                    inner.options.bind_address,
                ))
            });
            compiled = Some(cfg.traffic_revision);
            (cfg.revision, fresh)
        };
        if let Some(snap) = fresh {
            inner.snapshot.store(snap.clone());
            let failed = inner.reconcile_listeners(&snap);
            *inner.bind_errors.lock() = failed.into_iter().collect();
            inner.reconcile_health(&snap);
        }
        control.report_applied(revision);
        let retry_binds = !inner.bind_errors.lock().is_empty();
        tokio::select! {
            changed = seen.changed() => if changed.is_err() { return },
            // Listeners that could not bind are tried again with a fresh compile.
            _ = tokio::time::sleep(REBIND_EVERY), if retry_binds => compiled = None,
        }
    }
}

/// Tells the control plane (and so every API) what the data plane observes.
struct Observations(Arc<DataPlaneInner>);

impl fulcrum_control::Observer for Observations {
    fn member_status(&self, id: &MemberId) -> Option<fulcrum_model::OperatingStatus> {
        let s = self.0.registry.get(id)?;
        match s.health() {
            Health::Unhealthy => Some(fulcrum_model::OperatingStatus::Error),
            _ if s.passively_ejected() || s.breaker_open() => {
                Some(fulcrum_model::OperatingStatus::Error)
            }
            Health::Healthy => Some(fulcrum_model::OperatingStatus::Online),
            Health::Unknown => None,
        }
    }

    fn listener_error(&self, id: &ListenerId) -> Option<String> {
        self.0.bind_errors.lock().get(id).cloned()
    }
}
