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
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use context::Shared;
use fulcrum_control::{ControlPlane, Follower, Refusal, Revision};
use fulcrum_model::{ListenerId, MemberId, ResourceKind, ResourceRef};
use parking_lot::Mutex;

// Bottom to top; each module uses only those above it. Pure parts, buffers, counters;
// compiled member settings and member connections; live state; the snapshot and selection;
// what a connection shares; opening member connections; accounting shared by the HTTP
// paths; one connection's life (tcp, h1 which tunnels like tcp after a 101, h2 which reuses
// h1's heads and body copying); the data plane's own bookkeeping (health checks, listeners,
// metrics) and `DataPlane`.
mod access_log;
mod breaker;
mod iobuf;
mod outlier;
mod stats;
mod sticky;
mod tls;
mod weak_map;
mod worker;

mod settings;
mod upstream;

mod state;

mod select;
mod snapshot;

mod connect;
mod context;

mod exchange;
mod persistence;

mod h1;
mod h2;
mod tcp;
mod udp;

mod health;
mod listener;
mod metrics;
mod sweep;
mod traffic;

pub use access_log::{AccessLogFormat, AccessLogOptions};
pub use context::DataPlaneOptions;

pub use health::HealthCounter;
pub use snapshot::Snapshot;
pub use state::{Health, MemberCarry};

/// The data plane's own bookkeeping, around what connections share.
struct DataPlaneInner {
    shared: Arc<Shared>,
    listeners: Mutex<HashMap<ListenerId, listener::Running>>,
    checks: Mutex<health::Checks>,
    /// Listeners that could not bind, with why.
    bind_errors: Mutex<HashMap<ListenerId, String>>,
    /// The traffic workers' runtimes (listeners spawn their accept loops there).
    workers: worker::Handles,
    /// Copies of the counters, for recent traffic figures.
    sampler: Mutex<traffic::Sampler>,
    /// Listening sockets taken over from another process, until listeners claim them.
    inherited: Mutex<listener::Inherited>,
    /// The runtime of the data plane's own tasks (health checks, sampling).
    bookkeeping: tokio::runtime::Handle,
    /// The traffic revision compiled last; its lock makes one `follow_step` at a time.
    compiled: Mutex<Option<Revision>>,
    /// Set once the data plane stops: a view that comes later is not served.
    stopped: AtomicBool,
}

/// What a process hands to the one that takes over from it: its listening sockets, by
/// address, and its members' live state.
pub struct Handover {
    pub sockets: Vec<(std::net::SocketAddr, std::net::TcpListener)>,
    pub members: Vec<MemberCarry>,
}

/// The running data plane.
pub struct DataPlane {
    inner: Arc<DataPlaneInner>,
    control: Arc<ControlPlane>,
    /// What `control` tells of each new view.
    following: Arc<dyn Follower>,
    task: tokio::task::JoinHandle<()>,
    sampling: tokio::task::JoinHandle<()>,
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
        Self::start_taking_over(control, options, None)
    }

    /// As [`DataPlane::start`], taking over from another process: listeners on the
    /// addresses of its sockets accept on them (it may go on accepting on them too until it
    /// stops), and its members' health, ejections and breaker trips carry on here.
    pub fn start_taking_over(
        control: Arc<ControlPlane>,
        options: DataPlaneOptions,
        from: Option<Handover>,
    ) -> std::io::Result<DataPlane> {
        let count = match options.workers {
            0 => worker::default_count(),
            n => n,
        };
        let workers = worker::Workers::start(count)?;
        let access_log = match &options.access_log {
            Some(o) => Some(access_log::Sink::start(o, workers.count())?),
            None => None,
        };
        let inner = Arc::new(DataPlaneInner {
            shared: Arc::new(Shared {
                options,
                snapshot: ArcSwap::from_pointee(Snapshot::empty()),
                registry: state::Registry::new(workers.count()),
                connections: context::ConnCounter::default(),
                access_log,
            }),
            listeners: Mutex::new(HashMap::new()),
            checks: Mutex::new(health::Checks::default()),
            bind_errors: Mutex::new(HashMap::new()),
            workers: workers.handles(),
            sampler: Mutex::default(),
            inherited: Mutex::default(),
            bookkeeping: workers.control().clone(),
            compiled: Mutex::new(None),
            stopped: AtomicBool::new(false),
        });
        if let Some(from) = from {
            let mut inherited = inner.inherited.lock();
            for (addr, socket) in from.sockets {
                inherited.entry(addr).or_default().push(socket);
            }
            inner.shared.registry.carry_in(from.members);
        }
        control.set_observer(Arc::new(Observations(inner.clone())));
        let following: Arc<dyn Follower> = Arc::new(Following(inner.clone()));
        control.set_follower(following.clone());
        let task = workers
            .control()
            .spawn(follow(inner.clone(), control.clone()));
        let sampling = workers.control().spawn(sample_traffic(inner.clone()));
        Ok(DataPlane {
            inner,
            control,
            following,
            task,
            sampling,
            _workers: workers,
        })
    }

    /// The newest configuration revision compiled into what the data plane serves. Revisions
    /// that only touch work requests need no new snapshot and do not move it.
    pub fn revision(&self) -> i64 {
        self.inner.shared.snapshot.load().revision
    }

    /// What the data plane knows of a member's health (None: not served).
    pub fn member_health(&self, id: &MemberId) -> Option<MemberObservation> {
        self.inner
            .shared
            .registry
            .get(id)
            .map(|s| MemberObservation {
                health: s.health(),
                passively_ejected: s.passively_ejected(),
                in_flight: s.in_flight(),
            })
    }

    /// The data plane's metrics as a collector, for the process's one registry (`/metrics`
    /// serves it with the API's and the process's own).
    pub fn collector(&self) -> Box<dyn prometheus_client::collector::Collector> {
        metrics::collector(&self.inner.shared)
    }

    /// Opens the access log file anew (after logrotate moved it: SIGHUP).
    pub fn reopen_access_log(&self) {
        if let Some(log) = &self.inner.shared.access_log {
            log.reopen();
        }
    }

    /// Where a listener is bound, if it is.
    pub fn listener_addr(&self, id: &ListenerId) -> Option<std::net::SocketAddr> {
        listener::bound_addr(&self.inner.listeners.lock(), id)
    }

    /// Why a listener is not bound, if it failed to.
    pub fn listener_error(&self, id: &ListenerId) -> Option<String> {
        self.inner.bind_errors.lock().get(id).cloned()
    }

    /// What a process taking over from this one needs: copies of the listening sockets and
    /// the members' live state. This one goes on serving until [`DataPlane::shutdown`].
    pub fn handover(&self) -> std::io::Result<Handover> {
        Ok(Handover {
            sockets: listener::socket_copies(&self.inner.listeners.lock())?,
            members: self.inner.shared.registry.carry_out(),
        })
    }

    /// Serves no later view: the listeners it closes stay closed.
    fn stop_following(&self) {
        self.control.unset_follower(&self.following);
        self.inner.stopped.store(true, Ordering::Release);
        // Waits for a step under way on another thread to end.
        drop(self.inner.compiled.lock());
        self.task.abort();
    }

    /// Stops accepting connections, lets in-flight requests finish (up to `grace`).
    pub async fn shutdown(&self, grace: Duration) {
        self.stop_following();
        self.sampling.abort();
        listener::close_all(&mut self.inner.listeners.lock());
        let deadline = tokio::time::Instant::now() + grace;
        while self.inner.shared.connections.get() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(log) = self.inner.shared.access_log.clone() {
            let _ = tokio::task::spawn_blocking(move || log.close()).await;
        }
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        self.stop_following();
        self.sampling.abort();
        if let Some(log) = &self.inner.shared.access_log {
            log.close();
        }
        listener::close_all(&mut self.inner.listeners.lock());
    }
}

#[derive(Clone, Copy, Debug)]
pub struct MemberObservation {
    pub health: Health,
    pub passively_ejected: bool,
    pub in_flight: u64,
}

/// Told of each new view on the control plane's runtime, where the view is kept: the
/// change reaches the traffic without a hand-over to another thread.
struct Following(Arc<DataPlaneInner>);

impl Follower for Following {
    fn view_changed(&self, control: &ControlPlane) {
        follow_step(&self.0, control, false);
    }
}

/// Serves the view on the data plane's own thread at start (it may hold revisions the
/// control plane had before `Following` was registered), then retries listeners that could
/// not bind.
async fn follow(inner: Arc<DataPlaneInner>, control: Arc<ControlPlane>) {
    follow_step(&inner, &control, false);
    loop {
        tokio::time::sleep(REBIND_EVERY).await;
        if !inner.bind_errors.lock().is_empty() {
            follow_step(&inner, &control, true);
        }
    }
}

/// Compiles the view when what it serves moved (`again`: also when it did not, so
/// listeners that could not bind are tried once more), swaps it in, reconciles sockets and
/// health checks, and reports the revision served. Runs on whichever thread calls it, one
/// call at a time.
fn follow_step(inner: &DataPlaneInner, control: &ControlPlane, again: bool) {
    let mut compiled = inner.compiled.lock();
    if inner.stopped.load(Ordering::Acquire) {
        return;
    }
    if again {
        *compiled = None;
    }
    // What reconciling starts (health checks, the listeners' own tasks) runs on the data
    // plane's runtime, whichever thread this is.
    let _runtime = inner.bookkeeping.enter();
    let (revision, fresh) = {
        let cfg = control.view();
        // Changes to work requests alone (the finisher marking them done) need no new
        // snapshot: what is served already reflects them.
        let fresh = (*compiled != Some(cfg.traffic_revision)).then(|| {
            let shared = &inner.shared;
            Arc::new(snapshot::compile(
                &cfg,
                &shared.snapshot.load(),
                &shared.registry,
                shared.options.bind_address,
                shared.access_log.is_some(),
            ))
        });
        *compiled = Some(cfg.traffic_revision);
        (cfg.revision, fresh)
    };
    if let Some(snap) = fresh {
        inner.shared.snapshot.store(snap.clone());
        let mut inherited = inner.inherited.lock();
        let failed = listener::reconcile(
            &inner.shared,
            inner.workers.traffic(),
            &mut inner.listeners.lock(),
            &snap,
            &mut inherited,
        );
        // Sockets no listener claimed at the first snapshot are not served here: closed,
        // as the process they came from closes them when it stops.
        for (addr, sockets) in inherited.drain() {
            tracing::info!(%addr, sockets = sockets.len(), "closing sockets taken over that no listener uses");
        }
        drop(inherited);
        inner.shared.registry.carry_in(Vec::new());
        let failed: HashMap<ListenerId, String> = failed.into_iter().collect();
        let mut bind_errors = inner.bind_errors.lock();
        // Binds are retried every few seconds: say so once per listener and reason.
        for (id, reason) in &failed {
            if bind_errors.get(id) != Some(reason) {
                tracing::warn!(listener = %id, reason, "cannot serve the listener");
            }
        }
        *bind_errors = failed;
        drop(bind_errors);
        inner.checks.lock().reconcile(&snap, &inner.shared.registry);
    }
    control.report_applied(revision, refusals(inner));
}

/// Copies the counters every few seconds, for the figures of `/v1/stats`, and runs
/// outlier detection's intervals.
async fn sample_traffic(inner: Arc<DataPlaneInner>) {
    let mut every = tokio::time::interval(traffic::LOOK_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweeper = sweep::Sweeper::default();
    loop {
        every.tick().await;
        let snap = inner.shared.snapshot.load_full();
        let now = std::time::Instant::now();
        inner.sampler.lock().sample(&snap, now);
        sweeper.sweep(&snap, now);
    }
}

/// What the data plane cannot serve of what it was given: listeners that are not bound
/// (and why), and what each compiled pool found it cannot load (no walk over members here).
fn refusals(inner: &DataPlaneInner) -> Vec<Refusal> {
    let mut out: Vec<Refusal> = inner
        .bind_errors
        .lock()
        .iter()
        .map(|(id, reason)| Refusal {
            resource: ResourceRef {
                kind: ResourceKind::Listener,
                id: id.to_string(),
            },
            reason: reason.clone(),
        })
        .collect();
    let snap = inner.shared.snapshot.load();
    for pool in snap.pools.values() {
        out.extend(pool.refused.iter().cloned());
    }
    out.sort_by(|a, b| a.resource.id.cmp(&b.resource.id));
    out
}

/// Tells the control plane (and so every API) what the data plane observes.
struct Observations(Arc<DataPlaneInner>);

impl fulcrum_control::Observer for Observations {
    fn member_status(&self, id: &MemberId) -> Option<fulcrum_model::OperatingStatus> {
        let s = self.0.shared.registry.get(id)?;
        match s.health() {
            Health::Unhealthy => Some(fulcrum_model::OperatingStatus::Error),
            _ if s.passively_ejected() || s.breaker_open() => {
                Some(fulcrum_model::OperatingStatus::Error)
            }
            Health::Healthy => Some(fulcrum_model::OperatingStatus::Online),
            Health::Unknown => None,
        }
    }

    fn traffic(&self) -> fulcrum_control::Traffic {
        let snap = self.0.shared.snapshot.load_full();
        self.0.sampler.lock().read(&snap, std::time::Instant::now())
    }
}
