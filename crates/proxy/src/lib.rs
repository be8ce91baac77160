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

// Bottom to top: buffers and live state, the compiled snapshot and selection, member
// connections, one request's life (h1, h2, tcp), listeners and the data plane itself.
mod breaker;
mod iobuf;
mod stats;
mod sticky;
mod weak_map;

mod state;
mod upstream;

mod select;
mod snapshot;

mod exchange;
mod h1;
mod h2;
mod persistence;
mod tcp;
mod tls;

mod health;
mod listener;
mod metrics;
mod worker;

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
    /// Worker threads serving traffic, each with its own runtime and sockets (0: one per
    /// CPU).
    pub workers: usize,
}

impl Default for DataPlaneOptions {
    fn default() -> Self {
        Self {
            max_retry_after: Duration::from_millis(breaker::MAX_RETRY_AFTER_MS),
            bind_address: None,
            workers: 0,
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
    /// The traffic workers' runtimes (listeners spawn their accept loops there).
    workers: worker::Handles,
}

/// The running data plane.
pub struct DataPlane {
    inner: Arc<DataPlaneInner>,
    task: tokio::task::JoinHandle<()>,
    /// Declared last: dropped after everything above, it stops the worker threads.
    _workers: worker::Workers,
}

/// How long to wait before trying again to bind listeners whose address was busy.
const REBIND_EVERY: Duration = Duration::from_secs(2);

impl DataPlane {
    /// Starts serving the control plane's configuration, and keeps following it, on
    /// threads of its own: `options.workers` traffic workers (thread-per-core, see
    /// `worker.rs`) and one thread for following changes and health checks, so the API's
    /// runtime never holds up traffic and traffic never holds up the API. The control
    /// plane should run with `self_apply` off: the data plane reports what it serves.
    pub fn start(
        control: Arc<ControlPlane>,
        options: DataPlaneOptions,
    ) -> std::io::Result<DataPlane> {
        let count = match options.workers {
            0 => worker::default_count(),
            n => n,
        };
        let workers = worker::Workers::start(count)?;
        let inner = Arc::new(DataPlaneInner {
            options,
            snapshot: ArcSwap::from_pointee(Snapshot::empty()),
            registry: state::Registry::new(workers.count()),
            listeners: Mutex::new(HashMap::new()),
            checks: Mutex::new(health::Checks::default()),
            connections: listener::ConnCounter::default(),
            bind_errors: Mutex::new(HashMap::new()),
            workers: workers.handles(),
        });
        control.set_observer(Arc::new(Observations(inner.clone())));
        let task = workers.control().spawn(follow(inner.clone(), control));
        Ok(DataPlane {
            inner,
            task,
            _workers: workers,
        })
    }

    /// How many workers serve traffic.
    pub fn workers(&self) -> usize {
        self.inner.workers.traffic().len()
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
