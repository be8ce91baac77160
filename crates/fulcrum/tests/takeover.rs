//! Hitless restarts and upgrades (issue 20): a second `fulcrum serve` on the same data
//! directory takes over the running one's sockets, store and member state while clients
//! keep sending, and the first one finishes its connections and exits. Counted by the
//! clients themselves: no connection refused, no request failed, the API answering
//! throughout, a member its monitor took out kept out.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::backend::Backend;
use common::stack::eventually;
use common::{Server, free_port, unlimited_config};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Whether `server`'s process exits within `within`.
async fn exits_within(server: &mut Server, within: Duration) -> bool {
    eventually(within, || {
        let done = matches!(server.child.try_wait(), Ok(Some(_)));
        async move { done }
    })
    .await
}

/// A server on a fresh data directory (the API rate limit lifted) with one HTTP listener
/// on a free port over a round-robin pool of `backends`: the server, its directory, the
/// config path, the pool, its members and the listener's port.
struct Setup {
    server: Server,
    dir: tempfile::TempDir,
    config: String,
    pool: String,
    members: Vec<String>,
    port: u16,
}

impl Setup {
    async fn new(backends: &[&Backend]) -> Setup {
        Self::with(
            backends,
            std::process::Command::new(env!("CARGO_BIN_EXE_fulcrum")),
        )
        .await
    }

    async fn with(backends: &[&Backend], command: std::process::Command) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = unlimited_config(dir.path());
        let server =
            Server::start_through(command, &dir.path().join("data"), &["--config", &config]);
        let api = server.client();
        let lb = api.loadbalancer().await;
        let pool = api.pool(&lb, "HTTP", "ROUND_ROBIN").await;
        let mut members = Vec::new();
        for b in backends {
            members.push(api.member(&pool, b.port(), json!({})).await);
        }
        let port = free_port();
        api.listener(&lb, "HTTP", port, Some(&pool)).await;
        Setup {
            server,
            dir,
            config,
            pool,
            members,
            port,
        }
    }

    fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
    api_ok: AtomicU64,
    api_failed: AtomicU64,
}

/// Clients that keep sending until `stop`: keep-alive ones (reqwest, one connection
/// each), ones that open a connection per request, and one polling the API.
fn clients(
    port: u16,
    api: common::Api,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let url = format!("http://127.0.0.1:{port}/");
    for _ in 0..4 {
        let (url, counts, stop) = (url.clone(), counts.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let c = common::stack::client();
            while !stop.load(Ordering::SeqCst) {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.bytes().await;
                        counts.ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => {
                        eprintln!("keep-alive client: status {}", r.status());
                        counts.failed.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        eprintln!("keep-alive client: {e:?}");
                        counts.failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    for _ in 0..2 {
        let (counts, stop) = (counts.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let mut s = match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("new connection: {e}");
                        counts.refused.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                };
                let _ = s.set_nodelay(true);
                let sent = s
                    .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    .await;
                let mut answer = Vec::new();
                let read =
                    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
                if sent.is_ok() && matches!(read, Ok(Ok(_))) && answer.starts_with(b"HTTP/1.1 200")
                {
                    counts.ok.fetch_add(1, Ordering::SeqCst);
                } else {
                    eprintln!("new connection: {:?}", String::from_utf8_lossy(&answer));
                    counts.failed.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    tasks.push(tokio::spawn(async move {
        // Keep-alive: an idle API connection of the stopping process still answers a
        // request sent as the stop came.
        let c = common::stack::client();
        while !stop.load(Ordering::SeqCst) {
            let r = c
                .get(format!("{}/v1/loadbalancers", api.base))
                .bearer_auth(common::TOKEN)
                .send()
                .await;
            match r {
                Ok(r) if r.status() == 200 => counts.api_ok.fetch_add(1, Ordering::SeqCst),
                other => {
                    eprintln!("API: {other:?}");
                    counts.api_failed.fetch_add(1, Ordering::SeqCst)
                }
            };
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }));
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_takes_over_without_refusing_or_failing_anything() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    // C answers requests but fails its health checks: its monitor takes it out.
    c.set_health(503);
    let setup = Setup::new(&[&a, &b, &c]).await;
    let (data, config, pool, port) = (
        setup.data(),
        setup.config.clone(),
        setup.pool.clone(),
        setup.port,
    );
    let (members, dir) = (setup.members.clone(), setup.dir);
    let mut old = setup.server;
    let api = old.client();
    api.monitor(
        &pool,
        json!({"interval_ms": 200, "timeout_ms": 200, "healthy_threshold": 1, "unhealthy_threshold": 1}),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            api.member_status(&pool, &members[2]).await == "ERROR"
        })
        .await,
        "C's monitor takes it out"
    );
    // The monitor checks every 200 ms, taking a member out at its first failure. From now
    // on it needs three failures a minute apart: only state carried over can keep C out
    // of the new process's rotation.
    let monitor = api
        .items(&format!("/v1/healthmonitors?pool_id={pool}"))
        .await[0]["id"]
        .as_str()
        .expect("monitor id")
        .to_owned();
    api.apply(
        "PATCH",
        &format!("/v1/healthmonitors/{monitor}"),
        Some(json!({"interval_ms": 60000, "unhealthy_threshold": 3})),
    )
    .await;

    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = clients(port, api.clone(), counts.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c_before = c.requests();

    // An upgrade: the new process runs another binary file.
    let binary = dir.path().join("fulcrum-new");
    // Copied by `cp`, not in this process: a child forked meanwhile by another thread here
    // would inherit our writable descriptor until it execs, and running the copy then
    // fails with ETXTBSY ("Text file busy"; seen once on a busy machine).
    let copied = std::process::Command::new("cp")
        .arg(env!("CARGO_BIN_EXE_fulcrum"))
        .arg(&binary)
        .status()
        .expect("run cp");
    assert!(copied.success(), "copy the binary: {copied}");
    let started = Instant::now();
    let new = tokio::task::spawn_blocking({
        let (data, config) = (data.clone(), config.clone());
        move || {
            Server::start_through(
                std::process::Command::new(binary),
                &data,
                &["--config", &config],
            )
        }
    })
    .await
    .expect("start the new process");
    eprintln!("the new process serves after {:?}", started.elapsed());
    assert_eq!(new.base, old.base, "the API socket was handed over");
    let exited = exits_within(&mut old, Duration::from_secs(15)).await;
    assert!(
        exited,
        "the old process exits once its connections are done"
    );
    let status = old.child.wait().expect("wait");
    assert!(status.success(), "the old process exits cleanly: {status}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.expect("client");
    }

    let ok = counts.ok.load(Ordering::SeqCst);
    assert_eq!(
        counts.refused.load(Ordering::SeqCst),
        0,
        "refused connections"
    );
    assert_eq!(counts.failed.load(Ordering::SeqCst), 0, "failed requests");
    assert_eq!(
        counts.api_failed.load(Ordering::SeqCst),
        0,
        "failed API calls"
    );
    assert!(ok > 100, "traffic flowed: {ok}");
    assert!(counts.api_ok.load(Ordering::SeqCst) > 5);
    assert_eq!(c.requests(), c_before, "C stayed out across the takeover");

    // The new process owns the store: changes are made and served.
    let api = new.client();
    assert_eq!(api.member_status(&pool, &members[2]).await, "ERROR");
    api.patch_member(&pool, &members[0], json!({"weight": 5}))
        .await;
    let r = reqwest::get(format!("http://127.0.0.1:{port}/"))
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
}

/// A process that cannot finish taking over (here: its access log cannot be opened) gives
/// everything back: the old one takes its store back and serves on, changes included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_takeover_leaves_the_old_process_serving() {
    let a = Backend::start("a").await;
    let setup = Setup::new(&[&a]).await;
    let (data, config, pool, port) = (
        setup.data(),
        setup.config.clone(),
        setup.pool.clone(),
        setup.port,
    );
    let member = setup.members[0].clone();
    let mut old = setup.server;
    let api = old.client();

    let failed = std::process::Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config", &config])
        .arg("--data-dir")
        .arg(&data)
        .args(["--access-log", "/nonexistent/dir/access.log"])
        .env("FULCRUM_API_TOKEN", common::TOKEN)
        .output()
        .expect("run the second process");
    assert!(!failed.status.success(), "it cannot open its access log");
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("access log"),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );
    assert!(
        matches!(old.child.try_wait(), Ok(None)),
        "the old process serves on"
    );
    // It has its store back: a change is made and served.
    api.patch_member(&pool, &member, json!({"weight": 7})).await;
    let r = reqwest::get(format!("http://127.0.0.1:{port}/"))
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    // And it can still be taken over afterwards.
    let new =
        tokio::task::spawn_blocking(move || Server::start_with(&data, &["--config", &config]))
            .await
            .expect("start");
    assert_eq!(new.base, old.base);
    assert!(exits_within(&mut old, Duration::from_secs(15)).await);
    let weight = new
        .client()
        .read(&format!("/v1/pools/{pool}/members/{member}"))
        .await["weight"]
        .clone();
    assert_eq!(weight, 7);
}

/// SIGUSR2 (systemd's reload in `contrib/fulcrum.service`) starts the new process itself:
/// it takes over, tells systemd it is the service's main process now, and the old one
/// exits; the API and traffic go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_restarts_in_place_and_tells_systemd() {
    let a = Backend::start("a").await;
    let notify_dir = tempfile::tempdir().expect("tempdir");
    let notify_path = notify_dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("bind notify");
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_fulcrum"));
    command.env("NOTIFY_SOCKET", &notify_path);
    let setup = Setup::with(&[&a], command).await;
    let port = setup.port;
    let mut old = setup.server;
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY from the first process");
    let first = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert_eq!(first, format!("READY=1\nMAINPID={}", old.child.id()));
    let api = old.client();

    let status = std::process::Command::new("kill")
        .args(["-USR2", &old.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let n = notify.recv(&mut buf).expect("READY from the new process");
    let second = String::from_utf8_lossy(&buf[..n]).into_owned();
    let new_pid: u32 = second
        .strip_prefix("READY=1\nMAINPID=")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected notification {second:?}"));
    assert_ne!(new_pid, old.child.id());
    let exited = exits_within(&mut old, Duration::from_secs(15)).await;
    let serves = reqwest::get(format!("http://127.0.0.1:{port}/"))
        .await
        .map(|r| r.status());
    let api_answers = api.raw("GET", "/v1/loadbalancers", None, &[]).await.status;
    // The new process is no child of this test: stop it here.
    let _ = std::process::Command::new("kill")
        .arg(new_pid.to_string())
        .status();
    assert!(exited, "the old process exits");
    assert_eq!(serves.expect("traffic"), 200);
    assert_eq!(api_answers, 200);
}

/// A stopping process (here: SIGTERM; a takeover stops the same way) closes an idle
/// keep-alive connection only after a short wait, and answers a request sent meanwhile
/// (then closes) instead of closing under it: on the API, then on a listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_of_a_stopping_process_answer_a_request_sent_meanwhile() {
    use common::raw::RawConn;
    let a = Backend::start("a").await;
    let setup = Setup::new(&[&a]).await;
    let (server, port) = (&setup.server, setup.port);
    let api = server.client();
    let api_port: u16 = server
        .base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("API port");
    let api_request = format!(
        "GET /v1/loadbalancers HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\n\r\n",
        common::TOKEN
    );
    let proxied = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut to_api = RawConn::connect(api_port).await;
    let mut to_listener = RawConn::connect(port).await;
    for (conn, request) in [
        (&mut to_api, api_request.as_str()),
        (&mut to_listener, proxied),
    ] {
        conn.send(request.as_bytes()).await.expect("send");
        let r = conn.response().await.expect("answered");
        assert_eq!(r.status, 200);
        assert_ne!(r.header("connection"), Some("close"));
    }
    // No other connection keeps the API from stopping (the setup's client closes its own).
    drop(api);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    // Both connections are idle as the stop comes; requests follow a moment later.
    tokio::time::sleep(Duration::from_millis(200)).await;
    to_api.send(api_request.as_bytes()).await.expect("send");
    let r = to_api.response().await.expect("the API still answers");
    assert_eq!(r.status, 200);
    assert!(
        to_api.closed_within(Duration::from_secs(2)).await,
        "then it closes"
    );
    // The data plane stops once the API has; its connection is idle then too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    to_listener.send(proxied.as_bytes()).await.expect("send");
    let r = to_listener
        .response()
        .await
        .expect("the listener still answers");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
}
