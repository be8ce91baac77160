//! `fulcrum serve`: the store, the control plane and the API in one process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
pub use fulcrum::config::{AccessLogFormat, FileConfig, LogFormat, SHUTDOWN_GRACE};
use fulcrum_api::{ApiConfig, ApiTls, ApiToken};
use fulcrum_control::{ControlError, ControlPlane, NodeOptions, Options, SecretKey};

use crate::paths;

/// Reads `fulcrum.toml`, or gives the defaults when no file is named.
pub fn read_config(path: Option<&Path>) -> anyhow::Result<FileConfig> {
    let Some(path) = path else {
        return Ok(FileConfig::default());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    fulcrum::config::parse(&text).with_context(|| format!("invalid config {}", path.display()))
}

pub struct ServeArgs {
    /// The config file's contents (`read_config`).
    pub file: FileConfig,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub apply: Option<PathBuf>,
    pub demo: bool,
    pub store: Option<String>,
    pub role: Role,
    pub node_id: Option<String>,
    pub access_log: Option<String>,
    pub access_log_format: Option<AccessLogFormat>,
}

/// What a node runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The API and the data plane.
    All,
    /// Only the data plane (fleet mode): it follows the shared configuration and proxies.
    DataPlane,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9000";

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let file = args.file;
    // The demo runs in a throwaway directory unless told otherwise, so it never mixes
    // with a real configuration.
    let demo_dir = match (args.demo, &args.data_dir) {
        (true, None) => Some(tempfile::tempdir().context("cannot create a demo directory")?),
        _ => None,
    };
    let data_dir = args
        .data_dir
        .or(demo_dir.as_ref().map(|d| d.path().to_owned()))
        .or(file.data_dir)
        .unwrap_or_else(paths::default_data_dir);
    create_data_dir(&data_dir)?;
    let (secret_key, key_origin) = secret_key(&data_dir)?;
    let listen = match args.listen.or(file.api.listen) {
        Some(a) => a,
        None => DEFAULT_LISTEN.parse()?,
    };
    let mut limits = file.api.server_limits()?;
    let vip_ranges = file.proxy.vip_ranges()?;
    let auth_throttle = file.api.auth_throttle()?;
    let client_certs = file.api.client_cert_principals()?;
    let tls = match file.api.tls_files()? {
        Some(files) => Some(ApiTls::load(files).context("cannot serve the API over TLS")?),
        None => None,
    };
    if tls.as_ref().is_some_and(|t| t.client_auth_required()) && (args.apply.is_some() || args.demo)
    {
        bail!(
            "--apply and --demo call the API without a client certificate, which [api] tls_client_auth = \"required\" refuses"
        );
    }
    // The API and the data plane share the process's file descriptors: take all the
    // system allows, and keep the API to its budget within them.
    let fd_limit = fulcrum_api::raise_fd_limit();
    limits.fit_fd_limit(fd_limit);
    tracing::info!(
        fd_limit = fd_limit.map_or_else(|| "unlimited".to_owned(), |n| n.to_string()),
        max_connections = limits.max_connections,
        max_connections_per_ip = limits.max_connections_per_ip,
        header_timeout_secs = limits.header_timeout.as_secs(),
        idle_timeout_secs = limits.idle_timeout.as_secs(),
        body_timeout_secs = limits.body_timeout.as_secs(),
        "API connection budget: {} of the process's {} file descriptors",
        limits.max_connections,
        fd_limit.map_or_else(|| "unlimited".to_owned(), |n| n.to_string()),
    );

    let mut tokens = file.api.api_tokens()?;
    if let Ok(t) = std::env::var("FULCRUM_API_TOKEN")
        && !t.is_empty()
    {
        tokens.push(ApiToken::admin("env", t));
    }
    if tokens.is_empty() {
        tokens.push(ApiToken::admin("local", local_token(&data_dir)?));
    }
    // A certificate stands for a token's principal (and whatever that principal may do).
    if let Some(c) = client_certs
        .iter()
        .find(|c| !tokens.iter().any(|t| t.name == c.name))
    {
        bail!(
            "[[api.client_certs]] name {:?} is not the name of an [[api.tokens]] entry",
            c.name
        );
    }
    // `--apply` and the demo change everything: they need an administrator's token.
    let token_for_apply = tokens
        .iter()
        .find(|t| t.role == fulcrum_api::Role::Admin && t.loadbalancers.is_empty())
        .unwrap_or(&tokens[0])
        .token
        .clone();
    let defaults = ApiConfig::default();
    let api_config = ApiConfig {
        tokens,
        client_certs,
        rate_per_second: file.api.rate_per_second.unwrap_or(defaults.rate_per_second),
        rate_burst: file.api.rate_burst.unwrap_or(defaults.rate_burst),
        oci: file.oci,
        huawei: file.huawei,
        azure: fulcrum_api::AzureConfig {
            bind_address: file.proxy.bind_address,
            ..file.azure
        },
        auth_failure_interval: file
            .log
            .auth_failure_interval_secs
            .map_or(defaults.auth_failure_interval, |s| {
                std::time::Duration::from_secs(s.max(1))
            }),
        auth_throttle,
    };

    // A fulcrum already serving this data directory hands over its sockets and its store
    // (a hitless restart or upgrade); the demo's throwaway directory has none.
    let embedded = args.store.is_none() && file.store.url.is_none();
    let mut taking = match (embedded, demo_dir.is_none()) {
        (true, true) => {
            let dir = data_dir.clone();
            tokio::task::spawn_blocking(move || {
                crate::handover::take_over(&dir, TAKEOVER_OFFER_WAIT)
            })
            .await??
        }
        _ => None,
    };
    if let Some(t) = &taking {
        tracing::info!(
            listeners = t.offer.listeners.len(),
            members = t.offer.members.len(),
            "taking over from the fulcrum serving this data directory"
        );
    }
    let opened = crate::store::open(&file.store, args.store.as_deref(), &data_dir).await;
    let (store, shared) = match opened {
        Ok(o) => o,
        Err(e) => {
            give_up(taking.take(), &e);
            return Err(e);
        }
    };
    if args.role == Role::DataPlane && !shared {
        bail!("--role data-plane needs a shared store (--store etcd://…) to follow");
    }
    // In a fleet each node publishes what it serves, and saves its configuration so a
    // restart while etcd is unreachable serves traffic at once.
    let node = match shared {
        true => Some(NodeOptions {
            id: match args.node_id {
                Some(id) => id,
                None => node_id(&data_dir)?,
            },
            role: match args.role {
                Role::All => "all".into(),
                Role::DataPlane => "data-plane".into(),
            },
            snapshot_cache: Some(paths::snapshot_file(&data_dir)),
        }),
        false => None,
    };
    // The data plane reports what it serves; work requests succeed only then.
    let defaults = Options::default();
    let options = Options {
        self_apply: false,
        node,
        secret_key: Arc::new(secret_key),
        vip_ranges,
        work_requests_kept: file
            .store
            .work_requests_kept
            .unwrap_or(defaults.work_requests_kept),
        work_requests_kept_for: file
            .store
            .work_requests_kept_hours
            .map(|h| std::time::Duration::from_secs(h.saturating_mul(3600)))
            .unwrap_or(defaults.work_requests_kept_for),
        ..defaults
    };
    let control = match ControlPlane::start(store, options).await {
        Ok(c) => c,
        Err(e) => {
            let e = match e {
                ControlError::SecretKey(_) => anyhow::Error::new(e).context(format!(
                    "cannot load the configuration with the secret key from {key_origin}: a fleet's nodes \
                     all need the same key (set {SECRET_KEY_ENV} on each, or copy secret.key from one \
                     node's data directory to the others); a single node needs the secret.key it \
                     was started with (restore it from a backup of the data directory)"
                )),
                e => anyhow::Error::new(e).context("cannot load the configuration"),
            };
            give_up(taking.take(), &e);
            return Err(e);
        }
    };
    let mut dp_options = fulcrum_proxy::DataPlaneOptions::default();
    if let Some(secs) = file.proxy.max_retry_after_secs {
        dp_options.max_retry_after = std::time::Duration::from_secs(secs);
    }
    dp_options.bind_address = file.proxy.bind_address;
    dp_options.workers = worker_count(file.proxy.workers);
    dp_options.access_log =
        args.access_log
            .or(file.access_log.path)
            .map(|path| fulcrum_proxy::AccessLogOptions {
                format: match args.access_log_format.or(file.access_log.format) {
                    Some(AccessLogFormat::Text) => fulcrum_proxy::AccessLogFormat::Text,
                    Some(AccessLogFormat::Json) | None => fulcrum_proxy::AccessLogFormat::Json,
                },
                path: (path != "-").then(|| PathBuf::from(path)),
            });
    let (taken_api, handed) = match taking.as_mut() {
        Some(t) => (
            t.offer.api.take(),
            Some(fulcrum_proxy::Handover {
                sockets: std::mem::take(&mut t.offer.listeners),
                members: std::mem::take(&mut t.offer.members),
            }),
        ),
        None => (None, None),
    };
    let data_plane =
        match fulcrum_proxy::DataPlane::start_taking_over(control.clone(), dp_options, handed) {
            Ok(dp) => Arc::new(dp),
            Err(e) => {
                let e = anyhow::Error::new(e)
                    .context("cannot start the data plane (workers, access log)");
                // The store closes with the control plane, before the old process takes it
                // back.
                drop(control);
                give_up(taking.take(), &e);
                return Err(e);
            }
        };
    on_sighup(data_plane.clone(), tls.clone())?;
    if let Some(tls) = &tls {
        tls.watch(fulcrum_api::RELOAD_CHECK_INTERVAL);
    }
    let scheme = match tls {
        Some(_) => "https",
        None => "http",
    };
    // How `serve` reaches its own API (`--apply`, the demo): exactly the certificate it serves.
    let own_api_trust = match &tls {
        Some(tls) => crate::client::Trust::Pinned(tls.certificate()),
        None => crate::client::Trust::System,
    };

    // The API's socket: the one taken over (whatever address it has), or a new one.
    // The demo takes any free port when the default one is taken.
    let demo_port_free = args.demo && args.listen.is_none() && file.api.listen.is_none();
    let api_socket = match taken_api {
        Some(socket) => socket,
        None => match std::net::TcpListener::bind(listen).or_else(|e| match demo_port_free {
            true => std::net::TcpListener::bind((listen.ip(), 0)),
            false => Err(e),
        }) {
            Ok(socket) => socket,
            Err(e) => {
                let e = anyhow::Error::new(e).context(format!("cannot listen on {listen}"));
                drop(data_plane);
                drop(control);
                give_up(taking.take(), &e);
                return Err(e);
            }
        },
    };
    api_socket.set_nonblocking(true)?;
    let local = api_socket.local_addr()?;
    // One registry for /metrics: the API's families, process metrics and the data plane's.
    let mut metrics = fulcrum_api::Metrics::new();
    metrics.register_collector(data_plane.collector());
    let connection_stats = metrics.connection_stats();
    if args.role == Role::DataPlane {
        // No API on this node; probes and scrapers still find /v1/health and /metrics.
        let app = fulcrum_api::probe_router(control.clone(), Some(metrics));
        tracing::info!(data_dir = %data_dir.display(), "fulcrum data-plane node is serving");
        println!(
            "fulcrum: data-plane node following the shared configuration; health and metrics on {scheme}://{local} (data in {})",
            data_dir.display()
        );
        let listener = tokio::net::TcpListener::from_std(api_socket)?;
        let api = ApiServer {
            app,
            limits,
            tls,
            stats: connection_stats,
        };
        serve_api(listener, &api, shutdown_signal()).await;
        data_plane.shutdown(SHUTDOWN_GRACE).await;
        return Ok(());
    }
    let app = fulcrum_api::router(control.clone(), &api_config, Some(metrics));
    tracing::info!(api = %local, data_dir = %data_dir.display(), "fulcrum is serving");
    // One line a script can wait for (tests read it to learn the port).
    println!(
        "fulcrum: API listening on {scheme}://{local} (data in {})",
        data_dir.display()
    );
    println!("fulcrum: dashboard on {scheme}://{local}/ui (sign in with an API token)");

    // Serving now: the process this one took over from may stop.
    if let Some(t) = taking.take() {
        let revision = control.view().revision;
        let outcome = if control.wait_applied(revision, TAKEOVER_SERVE_WAIT).await {
            crate::handover::Outcome::Serving
        } else {
            crate::handover::Outcome::Failed(format!(
                "the configuration (revision {revision}) was not served within {TAKEOVER_SERVE_WAIT:?}"
            ))
        };
        tracing::info!(?outcome, "takeover finished");
        if let Err(e) = tokio::task::spawn_blocking(move || t.finish(&outcome)).await? {
            tracing::warn!(error = %e, "cannot tell the process taken over from");
        }
    }
    let takeovers = match (embedded && !args.demo).then(|| crate::handover::listen(&data_dir)) {
        Some(Ok(listener)) => Some(listener),
        Some(Err(e)) => {
            // A data directory whose path is too long for a Unix socket, say.
            tracing::warn!(error = %format!("{e:#}"), "no hitless takeover for this process");
            None
        }
        None => None,
    };
    if takeovers.is_some() {
        restart_on_sigusr2()?;
    }
    // Under systemd (`Type=notify`): ready, and this process is now the service's main one
    // (after a takeover, in place of the process it took over from).
    sd_notify(&format!("READY=1\nMAINPID={}", std::process::id()));
    let api = ApiServer {
        app,
        limits,
        tls,
        stats: connection_stats,
    };
    let server = tokio::spawn(serve_until_stopped(
        api_socket,
        api,
        control.clone(),
        data_plane.clone(),
        takeovers,
    ));
    if args.demo {
        let ports = crate::demo::start_backends().await?;
        let port = crate::demo::listener_port().await?;
        let client = crate::client::Client::new(
            format!("{scheme}://{local}"),
            token_for_apply.clone(),
            &own_api_trust,
        )?;
        crate::apply::apply_document(&client, crate::demo::document(&ports, port), false)
            .await
            .context("cannot set up the demo")?;
        let backends: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        println!(
            "fulcrum demo: http://127.0.0.1:{port}/ balances over 3 backends ({}). Try:\n  for i in 1 2 3 4 5 6; do curl -s http://127.0.0.1:{port}/; done",
            backends.join(", "),
        );
        // The CLI finds the demo with no flags through this file (the owner's only).
        let handoff = crate::paths::demo_file();
        let about = serde_json::json!({
            "pid": std::process::id(),
            "server": format!("{scheme}://{local}"),
            "token": token_for_apply,
        });
        match write_private(&handoff, &about.to_string()) {
            Ok(()) => println!(
                "fulcrum demo: the CLI on this machine finds it by itself (e.g. fulcrum status); elsewhere --server {scheme}://{local} --data-dir {}",
                data_dir.display()
            ),
            Err(_) => println!(
                "fulcrum demo: the CLI reaches it with --server {scheme}://{local} --data-dir {}",
                data_dir.display()
            ),
        }
    }
    if let Some(file) = args.apply {
        let client = crate::client::Client::new(
            format!("{scheme}://{local}"),
            token_for_apply,
            &own_api_trust,
        )?;
        crate::apply::apply_file(&client, &file, false)
            .await
            .with_context(|| format!("cannot apply {}", file.display()))?;
    }
    server.await??;
    if args.demo {
        let _ = std::fs::remove_file(crate::paths::demo_file());
    }
    data_plane.shutdown(SHUTDOWN_GRACE).await;
    tracing::info!("fulcrum stopped");
    Ok(())
}

/// How long a process taking over waits for the running one's offer (it finishes the
/// API requests it has first).
const TAKEOVER_OFFER_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
/// How long a process taking over may take to serve before the old one carries on.
const TAKEOVER_SERVE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A process taking over could not start: the one it took over from carries on.
fn give_up(taking: Option<crate::handover::Taking>, why: &anyhow::Error) {
    if let Some(t) = taking {
        let _ = t.finish(&crate::handover::Outcome::Failed(format!("{why:#}")));
    }
}

/// SIGUSR2 starts a new `fulcrum serve` with this one's arguments, from the binary this one
/// was started as (a binary replaced on disk: an upgrade), which takes over from this one.
/// systemd's `ExecReload` sends it (see `contrib/fulcrum.service`).
fn restart_on_sigusr2() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut usr2 = signal(SignalKind::user_defined2()).context("cannot handle SIGUSR2")?;
    tokio::spawn(async move {
        while usr2.recv().await.is_some() {
            let binary = binary_path();
            tracing::info!(binary = %binary.display(), "SIGUSR2: starting a new fulcrum to take over");
            let started = std::process::Command::new(&binary)
                .args(std::env::args_os().skip(1))
                .stdin(std::process::Stdio::null())
                .spawn();
            match started {
                // Reaped by whoever inherits it; this process exits once it took over.
                Ok(child) => tracing::info!(pid = child.id(), "the new fulcrum is starting"),
                Err(e) => {
                    tracing::error!(binary = %binary.display(), error = %e, "cannot start a new fulcrum");
                }
            }
        }
    });
    Ok(())
}

/// The binary as started: the path in `argv[0]` when it is absolute (it names the new file
/// after an upgrade replaced it), else what the kernel says this process runs.
fn binary_path() -> PathBuf {
    let argv0 = std::env::args_os().next().map(PathBuf::from);
    match argv0 {
        Some(p) if p.is_absolute() => p,
        _ => std::env::current_exe()
            .map(|p| {
                let text = p.to_string_lossy();
                match text.strip_suffix(" (deleted)") {
                    Some(live) => PathBuf::from(live),
                    None => p,
                }
            })
            .unwrap_or_else(|_| PathBuf::from("fulcrum")),
    }
}

/// Tells systemd (`$NOTIFY_SOCKET`, when set) about this service's state.
fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let socket = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot notify systemd");
            return;
        }
    };
    let sent = match path.to_string_lossy().strip_prefix('@') {
        // An abstract socket name.
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
        }
        None => socket.send_to(state.as_bytes(), &path),
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Why the API stopped.
enum Stop {
    Signal,
    Takeover(std::os::unix::net::UnixStream),
}

/// Serves the API until a signal stops the process, or another process takes over from
/// this one: then hands over the API's and the listeners' sockets, the members' state
/// and the store, and returns once the new process serves (its connections finish on the
/// way out). A takeover that fails gives the store back and serves on.
async fn serve_until_stopped(
    api_socket: std::net::TcpListener,
    api: ApiServer,
    control: Arc<ControlPlane>,
    data_plane: Arc<fulcrum_proxy::DataPlane>,
    takeovers: Option<std::os::unix::net::UnixListener>,
) -> anyhow::Result<()> {
    // Takeover requests, read on a thread of their own (the socket is blocking).
    let (requests_tx, mut requests) = tokio::sync::mpsc::channel(1);
    if let Some(listener) = takeovers {
        std::thread::Builder::new()
            .name("fulcrum-takeover".into())
            .spawn(move || {
                while let Ok((stream, request)) = crate::handover::accept(&listener) {
                    tracing::info!(pid = request.pid, "a new fulcrum asks to take over");
                    if requests_tx.blocking_send(stream).is_err() {
                        return;
                    }
                }
            })?;
    }
    let mut signal = std::pin::pin!(shutdown_signal());
    loop {
        let listener = tokio::net::TcpListener::from_std(api_socket.try_clone()?)?;
        let stopped = Arc::new(tokio::sync::Notify::new());
        let stop = {
            let stopped = stopped.clone();
            let (signal, requests) = (signal.as_mut(), &mut requests);
            async move {
                let reason = tokio::select! {
                    () = signal => Stop::Signal,
                    Some(stream) = requests.recv() => Stop::Takeover(stream),
                };
                stopped.notify_one();
                reason
            }
        };
        let wait = async move { stopped.notified().await };
        let served = serve_api(listener, &api, wait);
        let ((), why) = tokio::join!(served, stop);
        let Stop::Takeover(stream) = why else {
            return Ok(());
        };
        if hand_over(stream, &api_socket, &control, &data_plane).await {
            tracing::info!("the new fulcrum serves: finishing the connections left, then stopping");
            return Ok(());
        }
        tracing::warn!("the takeover failed: serving on");
        // The other process may still be closing the file: try for a few seconds.
        let mut tries = 0;
        while let Err(e) = control.reacquire_store().await {
            tries += 1;
            if tries == 50 {
                tracing::error!(error = %e, "cannot take the store back; changes answer unavailable until it can");
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// What the API is served with, on whichever socket it has.
struct ApiServer {
    app: axum::Router,
    limits: fulcrum_api::ServerLimits,
    tls: Option<Arc<ApiTls>>,
    stats: fulcrum_api::ConnectionStats,
}

/// The API on `listener` until `stop` resolves; in-flight requests finish first.
async fn serve_api(
    listener: tokio::net::TcpListener,
    api: &ApiServer,
    stop: impl std::future::Future<Output = ()>,
) {
    // Connection limits and deadlines, and the caller's address on every request (failed
    // authentication is summarised and throttled per source).
    fulcrum_api::serve(
        listener,
        api.app.clone(),
        api.limits.clone(),
        api.tls.clone(),
        api.stats.clone(),
        stop,
    )
    .await;
}

/// Hands this process's sockets, members' state and store to the process on `stream`;
/// true once it serves (this one should stop), false if it failed or went away.
async fn hand_over(
    mut stream: std::os::unix::net::UnixStream,
    api_socket: &std::net::TcpListener,
    control: &Arc<ControlPlane>,
    data_plane: &Arc<fulcrum_proxy::DataPlane>,
) -> bool {
    if let Err(e) = control.release_store().await {
        tracing::warn!(error = %e, "cannot let go of the store: no takeover");
        return false;
    }
    let offer = match (api_socket.try_clone(), data_plane.handover()) {
        (Ok(api), Ok(h)) => crate::handover::Offer {
            api: Some(api),
            listeners: h.sockets,
            members: h.members,
        },
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot copy the sockets: no takeover");
            return false;
        }
    };
    let outcome = tokio::task::spawn_blocking(move || {
        crate::handover::offer(&mut stream, &offer)?;
        Ok::<_, anyhow::Error>(crate::handover::outcome(
            &mut stream,
            TAKEOVER_OFFER_WAIT + TAKEOVER_SERVE_WAIT,
        ))
    })
    .await;
    match outcome {
        Ok(Ok(crate::handover::Outcome::Serving)) => true,
        Ok(Ok(crate::handover::Outcome::Failed(why))) => {
            tracing::warn!(reason = why, "the new fulcrum could not take over");
            false
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot hand over");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot hand over");
            false
        }
    }
}

/// Traffic workers: the config's `[proxy] workers`, overridden by `FULCRUM_WORKERS` (or
/// `TOKIO_WORKER_THREADS`, which sized the data plane's runtime before it had workers of
/// its own); 0 means one per CPU.
fn worker_count(configured: Option<usize>) -> usize {
    ["FULCRUM_WORKERS", "TOKIO_WORKER_THREADS"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.trim().parse().ok())
        .or(configured)
        .unwrap_or(0)
}

/// A fleet node's name when none is given: generated once, kept in the data directory.
fn node_id(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => bail!("cannot read {}: {e}", path.display()),
    }
    let id = format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    write_private(&path, &id)?;
    Ok(id)
}

/// The token of a node with none configured: generated once, kept in the data directory
/// (readable only by its owner) so the CLI on the same machine finds it.
fn local_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = paths::token_file(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => bail!("cannot read {}: {e}", path.display()),
    }
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    write_private(&path, &token)?;
    eprintln!(
        "fulcrum: generated an API token in {} (the CLI reads it from there)",
        path.display()
    );
    Ok(token)
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// The data directory holds the store, the secret key and the API token: the owner's only
/// (0700) from its creation on. One that others may enter (made by an older version, or by
/// hand) is tightened, with a warning; one the process does not own stays as it is.
fn create_data_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => bail!("cannot create data directory {}: {e}", dir.display()),
    }
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("cannot read data directory {}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), mode = format!("{:o}", mode & 0o777),
            "the data directory was open to others; making it the owner's only (0700)");
        if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot make the data directory private");
        }
    }
    Ok(())
}

/// The environment variable that gives the secret key (base64 of 32 bytes).
const SECRET_KEY_ENV: &str = "FULCRUM_SECRET_KEY";

/// The key that seals secrets at rest, and where it came from: `FULCRUM_SECRET_KEY`, else
/// `secret.key` in the data directory (created on first start).
fn secret_key(data_dir: &Path) -> anyhow::Result<(SecretKey, String)> {
    if let Ok(text) = std::env::var(SECRET_KEY_ENV)
        && !text.trim().is_empty()
    {
        return Ok((
            SecretKey::from_base64(&text, SECRET_KEY_ENV)?,
            SECRET_KEY_ENV.to_owned(),
        ));
    }
    let path = paths::secret_key_file(data_dir);
    let key = SecretKey::load_or_create(&path)?;
    Ok((key, path.display().to_string()))
}

/// SIGHUP: the access log opens its path anew (logrotate moved the file), and the API's
/// TLS files are read again whether or not their times changed.
fn on_sighup(
    data_plane: Arc<fulcrum_proxy::DataPlane>,
    tls: Option<Arc<ApiTls>>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reopening the access log");
            data_plane.reopen_access_log();
            if let Some(tls) = &tls {
                tls.reload(true);
            }
        }
    });
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
