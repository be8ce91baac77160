//! The API server's limits against a real `fulcrum serve`, over real sockets: slow heads
//! are closed at the header timeout while other clients and the data plane are served,
//! stalled unauthenticated uploads are refused before their bodies, the total and
//! per-address connection caps hold, and failed authentication is throttled per address
//! in each front door's own error shape.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use common::raw::RawConn;
use common::stack::metric;
use common::{Api, Server, TOKEN};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const AZURE_TOKEN: &str = "azure-token-0123456789";
const HUAWEI_TOKEN: &str = "huawei-token-0123456789";
const HUAWEI_AK: &str = "AKLIMITS";
const HUAWEI_SK: &str = "SKLIMITS";
const PROJECT: &str = "0123456789abcdef0123456789abcdef";
const OCI_KEY_ID: &str = "ocid1.tenancy.oc1..aaaatenancy/ocid1.user.oc1..aaaauser/a8:34:00:8e:6f:5c:62:0a:63:e5:63:93:3f:29:7b:24";
const OCI_PUBLIC_KEY: &str = include_str!("../../api-oci/src/testdata/test_key.pub.pem");
const AZURE_BACKEND: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.ApiManagement/service/apim/backends/b1?api-version=2024-05-01";

/// A server whose `[api]` section is `api` (rate limits lifted), with a credential for
/// every front door.
fn start(dir: &Path, api: &str) -> Server {
    let config = dir.join("fulcrum.toml");
    let text = format!(
        "[api]\nrate_per_second = 1000000.0\nrate_burst = 1000000\n{api}\n\
         [[azure.tokens]]\nname = \"ci\"\ntoken = \"{AZURE_TOKEN}\"\n\n\
         [[huawei.credentials]]\nak = \"{HUAWEI_AK}\"\nsk = \"{HUAWEI_SK}\"\nproject_id = \"{PROJECT}\"\n\n\
         [[huawei.tokens]]\nname = \"ci\"\ntoken = \"{HUAWEI_TOKEN}\"\n\n\
         [[oci.keys]]\nkey_id = \"{OCI_KEY_ID}\"\npublic_key_pem = \"\"\"\n{OCI_PUBLIC_KEY}\"\"\"\n"
    );
    std::fs::write(&config, text).expect("write config");
    Server::start_with(
        &dir.join("data"),
        &["--config", config.to_str().expect("utf-8 path")],
    )
}

fn api_addr(server: &Server) -> SocketAddr {
    server
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("the API's address")
}

/// A connection to `to` from the loopback address 127.0.0.`last` (a client address of
/// its own: the whole of 127.0.0.0/8 is local).
async fn connect_from(last: u8, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, last], 0)))
        .expect("bind a loopback address");
    let stream = socket.connect(to).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// A client of the API from 127.0.0.`last`, with the native token.
fn api_from(server: &Server, last: u8) -> Api {
    Api {
        base: server.base.clone(),
        http: common::http_builder()
            .no_proxy()
            .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
            .pool_max_idle_per_host(1)
            .build()
            .expect("client"),
        token: Some(TOKEN.to_owned()),
    }
}

/// Resident memory of a process, in bytes (`VmRSS` of `/proc/<pid>/status`).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb * 1024
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

const MB: u64 = 1024 * 1024;

/// Lets this test process open `needed` descriptors, raising its soft limit (up to the
/// hard one) if it must.
fn allow_fds(needed: u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|c| c < needed) {
        let raised = limit.maximum.unwrap_or(needed);
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(raised),
                maximum: limit.maximum,
            },
        )
        .expect("raise the open-file limit");
    }
    let now = getrlimit(Resource::Nofile).current;
    assert!(
        now.is_none_or(|c| c >= needed),
        "this test needs {needed} open files, the limit is {now:?}"
    );
}

/// Waits until `stream` is closed (or reset) by the server; when, or `None` if it sent
/// bytes instead or `within` passed.
async fn closed_at(mut stream: TcpStream, within: Duration) -> Option<Instant> {
    let mut buf = [0u8; 512];
    match tokio::time::timeout(within, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => Some(Instant::now()),
        Ok(Ok(_)) | Err(_) => None,
    }
}

/// One kept-alive connection to the API with the native token: exactly one connection,
/// where a pooling client may race a second one for a request (and take or free a slot a
/// test counts).
struct Keepalive(RawConn);

impl Keepalive {
    async fn get(&mut self, path: &str) -> String {
        self.0
            .send(
                format!(
                    "GET {path} HTTP/1.1\r\nHost: fulcrum\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .expect("send on the kept-alive connection");
        let r = self
            .0
            .response_within(Duration::from_secs(5))
            .await
            .expect("a response on the kept-alive connection");
        assert_eq!(r.status, 200, "GET {path}: {}", r.body_text());
        r.body_text()
    }

    /// `fulcrum_api_connections`, from `/metrics`.
    async fn open_connections(&mut self) -> Option<f64> {
        metric(&self.get("/metrics").await, "fulcrum_api_connections ")
    }

    /// Polls `fulcrum_api_connections` until it is `n`, for at most `within`.
    async fn wait_open(&mut self, n: usize, within: Duration) -> bool {
        // A loop of its own: the scrape needs `&mut self`, which a polling closure
        // cannot lend to each future it makes.
        let deadline = Instant::now() + within;
        loop {
            if self.open_connections().await == Some(n as f64) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_are_closed_while_clients_and_the_data_plane_are_served() {
    const ATTACK: usize = 1000;
    // Long enough that a busy 2-core machine opens all 1,000 connections well before the
    // first of them times out: the cap must be reached with every one still open (3 s
    // failed once, the suite running beside a fuzzer).
    const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
    const SLACK: Duration = Duration::from_millis(1500);
    allow_fds(ATTACK as u64 + 512);
    let dir = tempfile::tempdir().expect("tempdir");
    // Room for exactly the attack (one address) and one legitimate client (another).
    let server = start(
        dir.path(),
        &format!(
            "header_timeout_secs = {}\nmax_connections = {}\nmax_connections_per_ip = {ATTACK}\n",
            HEADER_TIMEOUT.as_secs(),
            ATTACK + 1
        ),
    );
    let pid = server.child.id();
    let addr = api_addr(&server);

    // The data plane: a listener on a member, set up with connections that do not stay.
    let setup = server.client().unpooled();
    let member = common::backend::Backend::start("member").await;
    let lb = setup.loadbalancer().await;
    let pool = setup.pool(&lb, "HTTP", "ROUND_ROBIN").await;
    setup.member(&pool, member.port(), json!({})).await;
    let port = common::free_port();
    setup.listener(&lb, "HTTP", port, Some(&pool)).await;
    let through_data_plane = format!("http://127.0.0.1:{port}/");
    let data_plane = common::http_builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");

    // A legitimate client from 127.0.0.2, its connection open before the attack.
    let mut legit = Keepalive(RawConn::new(connect_from(2, addr).await));
    legit.get("/v1/loadbalancers").await;
    assert!(
        legit.wait_open(1, Duration::from_secs(5)).await,
        "only the legitimate client's connection is open before the attack"
    );
    let rss_before = rss(pid);
    let fds_before = open_fds(pid);

    // The attack: every connection sends part of a head, then nothing.
    let started = Instant::now();
    let mut attackers = Vec::with_capacity(ATTACK);
    for _ in 0..ATTACK {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /v1/loadbalancers HTTP/1.1\r\nHost: fulcrum\r\nX-Slow: a")
            .await
            .expect("write a partial head");
        let sent = Instant::now();
        attackers.push(tokio::spawn(async move {
            closed_at(s, HEADER_TIMEOUT + SLACK + Duration::from_secs(5))
                .await
                .map(|at| (sent, at))
        }));
    }
    let established = started.elapsed();

    // At the cap: the attack and the legitimate client hold every connection.
    assert!(
        legit.wait_open(ATTACK + 1, HEADER_TIMEOUT).await,
        "the API reaches its cap of {}",
        ATTACK + 1
    );
    let fds_at_cap = open_fds(pid);
    let rss_at_cap = rss(pid);
    // One connection more (another address) is not served until one of them closes.
    let probe = tokio::spawn(async move {
        let stream = connect_from(3, addr).await;
        let mut conn = RawConn::new(stream);
        conn.send(b"GET /v1/health HTTP/1.1\r\nHost: fulcrum\r\n\r\n")
            .await
            .expect("send");
        let r = conn
            .response_within(HEADER_TIMEOUT + SLACK + Duration::from_secs(5))
            .await;
        (r.map(|r| r.status), Instant::now())
    });

    // Meanwhile the legitimate client and the data plane are served, at the cap and after.
    let mut legit_ok = 0;
    let mut data_plane_ok = 0;
    let mut data_plane_ok_at_cap = 0;
    let give_up = Instant::now() + HEADER_TIMEOUT + SLACK + Duration::from_secs(5);
    while !attackers.iter().all(|a| a.is_finished()) && Instant::now() < give_up {
        legit.get("/v1/loadbalancers").await;
        legit_ok += 1;
        let at_cap_now = legit.open_connections().await == Some((ATTACK + 1) as f64);
        let r = data_plane
            .get(&through_data_plane)
            .send()
            .await
            .expect("a request through the data plane");
        assert_eq!(r.status(), 200, "the data plane serves during the attack");
        data_plane_ok += 1;
        if at_cap_now {
            data_plane_ok_at_cap += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut lifetimes = Vec::with_capacity(ATTACK);
    let mut first_close = None::<Instant>;
    for a in attackers {
        let (sent, at) = a
            .await
            .expect("join")
            .expect("every slow connection is closed by the server, with nothing sent");
        first_close = Some(first_close.map_or(at, |f| f.min(at)));
        lifetimes.push(at - sent);
    }
    lifetimes.sort();
    let (min, median, max) = (
        lifetimes[0],
        lifetimes[lifetimes.len() / 2],
        lifetimes[lifetimes.len() - 1],
    );
    let (probe_status, probe_at) = probe.await.expect("join");
    eprintln!(
        "slowloris: {ATTACK} connections established in {established:?}; closed after \
         min {min:?}, median {median:?}, max {max:?} (header timeout {HEADER_TIMEOUT:?}); \
         fds {fds_before} -> {fds_at_cap} at the cap; RSS {} -> {} MB at the cap; \
         {legit_ok} legitimate requests and {data_plane_ok} through the data plane served \
         ({data_plane_ok_at_cap} with the API at its cap)",
        rss_before / MB,
        rss_at_cap / MB,
    );
    assert!(
        min >= HEADER_TIMEOUT - Duration::from_millis(250),
        "closed before the header timeout: {min:?}"
    );
    assert!(
        max <= HEADER_TIMEOUT + SLACK,
        "closed {max:?} after its head began (timeout {HEADER_TIMEOUT:?})"
    );
    assert!(
        data_plane_ok_at_cap >= 1,
        "the data plane served while the API was at its cap"
    );
    assert_eq!(
        probe_status,
        Ok(200),
        "the connection over the cap is served later"
    );
    let first_close = first_close.expect("a close");
    assert!(
        probe_at + Duration::from_millis(200) >= first_close,
        "the connection over the cap was served {:?} before any other closed",
        first_close - probe_at
    );
    let closed = metric(
        &legit.get("/metrics").await,
        "fulcrum_api_connections_closed_total{reason=\"header_timeout\"}",
    )
    .unwrap_or(0.0);
    assert!(
        closed >= ATTACK as f64,
        "{closed} closed at the header timeout"
    );
    legit.get("/v1/loadbalancers").await;
}

/// A request head with a body of `length` bytes declared, and the first bytes of it.
fn upload(method: &str, target: &str, headers: &[(&str, String)], length: usize) -> Vec<u8> {
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nhost: fulcrum.test\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n"
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n{\"backends\": [");
    head.into_bytes()
}

/// `X-Sdk-Date` for now: `20240501T100000Z`, rebuilt from the HTTP date.
fn sdk_date_now() -> String {
    let http = httpdate::fmt_http_date(std::time::SystemTime::now());
    // "Sun, 06 Nov 1994 08:49:37 GMT"
    let parts: Vec<&str> = http.split([' ', ':']).collect();
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == parts[2])
    .expect("month")
        + 1;
    format!(
        "{}{month:02}{}T{}{}{}Z",
        parts[3], parts[1], parts[4], parts[5], parts[6]
    )
}

/// Sends `n` uploads of `request` from 127.0.0.1 at once and returns what each was
/// answered before the client sent more than the first bytes of its body, and whether
/// the server then closed the connection.
async fn stalled_uploads(addr: SocketAddr, n: usize, request: Vec<u8>) -> Vec<(u16, bool)> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let request = request.clone();
            tokio::spawn(async move {
                let mut conn = RawConn::connect(addr.port()).await;
                conn.send(&request).await.expect("send the head");
                let status = match conn.response_within(Duration::from_secs(5)).await {
                    Ok(r) => r.status,
                    Err(e) => panic!("no answer before the body: {e}"),
                };
                (status, conn.closed_within(Duration::from_secs(2)).await)
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.expect("join"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_unauthenticated_uploads_are_refused_before_their_bodies() {
    const PER_DOOR: usize = 300;
    const DECLARED: usize = 10_000_000;
    allow_fds(PER_DOOR as u64 + 512);
    let dir = tempfile::tempdir().expect("tempdir");
    // The caps and the throttle have their own tests: here every upload gets through.
    let server = start(
        dir.path(),
        "max_connections = 4096\nmax_connections_per_ip = 4096\nbody_timeout_secs = 4\nauth_failure_limit = 0\n",
    );
    let pid = server.child.id();
    let addr = api_addr(&server);
    let api = server.client();
    api.ok("GET", "/v1/loadbalancers", None).await;

    let oci_target =
        "/20170115/loadBalancers/ocid1.loadbalancer.oc1..x/backendSets/bs/backends/10.0.0.1:80";
    let oci_headers = vec![
        (
            "date",
            httpdate::fmt_http_date(std::time::SystemTime::now()),
        ),
        (
            "x-content-sha256",
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=".to_owned(),
        ),
        (
            "authorization",
            format!(
                "Signature version=\"1\",headers=\"date (request-target) host content-length content-type x-content-sha256\",keyId=\"{OCI_KEY_ID}\",algorithm=\"rsa-sha256\",signature=\"{}QQ==\"",
                // With the padding, 256 bytes: the size of an RSA-2048 signature.
                "QUJD".repeat(85)
            ),
        ),
    ];
    let doors: Vec<(&str, Vec<u8>)> = vec![
        (
            "native",
            upload(
                "POST",
                "/v1/loadbalancers",
                &[("authorization", "Bearer not-the-token".to_owned())],
                DECLARED,
            ),
        ),
        // A registered key, a fresh date, every header signed, a signature that does not
        // verify: refused on the head alone.
        ("oci", upload("PUT", oci_target, &oci_headers, DECLARED)),
        (
            "huawei",
            upload(
                "PUT",
                &format!("/v3/{PROJECT}/elb/pools/p1"),
                &[
                    ("x-sdk-date", sdk_date_now()),
                    (
                        "authorization",
                        "SDK-HMAC-SHA256 Access=AKUNKNOWN, SignedHeaders=host;x-sdk-date, Signature=00".to_owned(),
                    ),
                ],
                DECLARED,
            ),
        ),
        (
            "huawei (known key, stale date)",
            upload(
                "PUT",
                &format!("/v3/{PROJECT}/elb/pools/p1"),
                &[
                    ("x-sdk-date", "20200101T000000Z".to_owned()),
                    (
                        "authorization",
                        format!("SDK-HMAC-SHA256 Access={HUAWEI_AK}, SignedHeaders=host;x-sdk-date, Signature=00"),
                    ),
                ],
                DECLARED,
            ),
        ),
        (
            "azure",
            upload(
                "PUT",
                AZURE_BACKEND,
                &[("authorization", "Bearer not-the-azure-token".to_owned())],
                DECLARED,
            ),
        ),
    ];

    // Warm up: one of each, so what a first request allocates is in the baseline.
    for (_, request) in &doors {
        stalled_uploads(addr, 1, request.clone()).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = rss(pid);
    let started = Instant::now();
    for (door, request) in &doors {
        let answers = stalled_uploads(addr, PER_DOOR, request.clone()).await;
        let unexpected: Vec<_> = answers.iter().filter(|a| **a != (401, true)).collect();
        assert!(
            unexpected.is_empty(),
            "{door}: every stalled upload is answered 401 before its body and closed; \
             {} of {PER_DOOR} not so, such as {:?}",
            unexpected.len(),
            &unexpected[..unexpected.len().min(3)]
        );
    }
    let elapsed = started.elapsed();
    let rss_after = rss(pid);
    eprintln!(
        "stalled unauthenticated uploads: {} × {PER_DOOR} answered 401 in {elapsed:?}; \
         RSS {} -> {} MB",
        doors.len(),
        rss_before / MB,
        rss_after / MB
    );
    assert!(
        rss_after <= rss_before + 50 * MB,
        "RSS grew from {} to {} MB",
        rss_before / MB,
        rss_after / MB
    );

    // A known access key with a fresh date and its headers signed: the body has to be
    // read to check the signature. Only so many bytes of such bodies are read at once;
    // the rest are refused (429) before theirs, and a stalled one ends at the body
    // deadline (408).
    const DECLARED_SIGNED: usize = 1 << 20;
    const SENT: usize = 256 * 1024;
    let signed = upload(
        "PUT",
        &format!("/v3/{PROJECT}/elb/pools/p1"),
        &[
            ("x-sdk-date", sdk_date_now()),
            (
                "authorization",
                format!(
                    "SDK-HMAC-SHA256 Access={HUAWEI_AK}, SignedHeaders=host;x-sdk-date, Signature=00"
                ),
            ),
        ],
        DECLARED_SIGNED,
    );
    let rss_before_signed = rss(pid);
    let tasks: Vec<_> = (0..PER_DOOR)
        .map(|_| {
            let signed = signed.clone();
            tokio::spawn(async move {
                let mut conn = RawConn::connect(addr.port()).await;
                conn.send(&signed).await.expect("send the head");
                if let Ok(r) = conn.response_within(Duration::from_secs(1)).await {
                    return (r.status, None);
                }
                // Being read: send a good part of the body, then stall.
                let _ = conn.send(&vec![b' '; SENT]).await;
                (0, Some(conn))
            })
        })
        .collect();
    let mut refused = 0;
    let mut reading = Vec::new();
    for t in tasks {
        match t.await.expect("join") {
            (429, None) => refused += 1,
            (0, Some(conn)) => reading.push(conn),
            (status, _) => panic!("a signed upload answered {status} before its body"),
        }
    }
    // Let the server read what was sent.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_reading = rss(pid);
    let being_read = reading.len();
    let mut timed_out = 0;
    for mut conn in reading {
        let r = conn
            .response_within(Duration::from_secs(6))
            .await
            .expect("an answer at the body deadline");
        assert_eq!(r.status, 408, "{}", r.body_text());
        assert!(conn.closed_within(Duration::from_secs(2)).await);
        timed_out += 1;
    }
    eprintln!(
        "stalled signed uploads (known access key): {refused} refused at once, {being_read} \
         read until the body deadline ({timed_out} answered 408); RSS {} -> {} MB while read",
        rss_before_signed / MB,
        rss_reading / MB
    );
    assert!(
        being_read >= 1 && refused >= PER_DOOR / 2,
        "{being_read} read, {refused} refused"
    );
    assert!(
        rss_reading <= rss_before_signed + 50 * MB,
        "RSS grew from {} to {} MB",
        rss_before_signed / MB,
        rss_reading / MB
    );
}

/// Whether `conn` gets no answer to what it sent within `within`.
async fn unanswered(conn: &mut RawConn, within: Duration) -> bool {
    conn.response_within(within).await.is_err()
}

async fn health_from(last: u8, addr: SocketAddr) -> RawConn {
    let mut conn = RawConn::new(connect_from(last, addr).await);
    conn.send(b"GET /v1/health HTTP/1.1\r\nHost: fulcrum\r\n\r\n")
        .await
        .expect("send");
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_a_cap_wait_until_one_closes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(
        dir.path(),
        "max_connections = 8\nmax_connections_per_ip = 3\nheader_timeout_secs = 30\n",
    );
    let addr = api_addr(&server);
    // Nothing of the harness's own stays open.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let wait = Duration::from_millis(700);

    // Per address: three connections from 127.0.0.1 (quiet, so they stay)...
    let mut ones = Vec::new();
    for _ in 0..3 {
        ones.push(connect_from(1, addr).await);
    }
    // ...so a fourth is not served, while another address is.
    let mut fourth = health_from(1, addr).await;
    assert!(
        unanswered(&mut fourth, wait).await,
        "the address's fourth connection is served at once"
    );
    let mut other = health_from(2, addr).await;
    assert_eq!(
        other.response_within(wait).await.map(|r| r.status),
        Ok(200),
        "another address is served"
    );
    drop(ones.pop());
    let served = fourth.response_within(Duration::from_secs(2)).await;
    assert_eq!(
        served.map(|r| r.status),
        Ok(200),
        "served once one of its address's connections closed"
    );

    // In all: 127.0.0.1 holds 3, 127.0.0.2 holds 1; four more reach the cap of 8.
    let mut others = Vec::new();
    for last in [3, 3, 4, 4] {
        others.push(connect_from(last, addr).await);
    }
    let mut ninth = health_from(5, addr).await;
    assert!(
        unanswered(&mut ninth, wait).await,
        "the ninth connection is served at once"
    );
    drop(others.pop());
    let served = ninth.response_within(Duration::from_secs(2)).await;
    assert_eq!(
        served.map(|r| r.status),
        Ok(200),
        "served once a connection closed"
    );
    drop((ones, others, fourth, other));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_heads_and_bodies_have_deadlines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(
        dir.path(),
        "header_timeout_secs = 1\nidle_timeout_secs = 3\nbody_timeout_secs = 2\n",
    );
    let addr = api_addr(&server);

    // Kept alive after a request, closed once idle for the idle timeout (not the header
    // timeout).
    let mut conn = health_from(1, addr).await;
    conn.response().await.expect("a response");
    let idle_from = Instant::now();
    assert!(conn.closed_within(Duration::from_secs(6)).await);
    let idle = idle_from.elapsed();
    assert!(
        idle >= Duration::from_millis(2800) && idle <= Duration::from_millis(4500),
        "closed after {idle:?} idle"
    );

    // A second head begun on a kept-alive connection must be done within the header
    // timeout of its first byte.
    let mut conn = health_from(1, addr).await;
    conn.response().await.expect("a response");
    conn.send(b"GET /v1/health HTTP/1.1\r\nHost: ")
        .await
        .expect("send");
    let begun = Instant::now();
    assert!(conn.closed_within(Duration::from_secs(5)).await);
    let head = begun.elapsed();
    assert!(
        head >= Duration::from_millis(900) && head <= Duration::from_millis(2500),
        "closed {head:?} into its head"
    );

    // An authenticated body that stalls is answered 408 at the body deadline.
    let mut conn = RawConn::new(connect_from(1, addr).await);
    conn.send(
        format!(
            "POST /v1/loadbalancers HTTP/1.1\r\nHost: fulcrum\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\""
        )
        .as_bytes(),
    )
    .await
    .expect("send");
    let begun = Instant::now();
    let r = conn
        .response_within(Duration::from_secs(5))
        .await
        .expect("a response");
    let waited = begun.elapsed();
    assert_eq!(r.status, 408, "{}", r.body_text());
    let body: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
    assert_eq!(body["code"], "request_timeout", "{body}");
    assert!(
        waited >= Duration::from_millis(1800) && waited <= Duration::from_millis(3500),
        "answered after {waited:?}"
    );
    assert!(conn.closed_within(Duration::from_secs(2)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentication_is_throttled_per_address_in_each_dialect() {
    const LIMIT: usize = 5;
    const WINDOW_SECS: u64 = 3;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(
        dir.path(),
        &format!("auth_failure_limit = {LIMIT}\nauth_failure_window_secs = {WINDOW_SECS}\n"),
    );
    let azure_get = |api: &Api, token: &str| {
        let url = format!("{}{AZURE_BACKEND}", api.base);
        api.http.get(url).bearer_auth(token).send()
    };

    // Native, from 127.0.0.1.
    let native = Api {
        token: Some("not-the-token".into()),
        ..api_from(&server, 1)
    };
    for _ in 0..LIMIT {
        assert_eq!(
            native.call("GET", "/v1/loadbalancers", None).await.status,
            401
        );
    }
    let r = native.call("GET", "/v1/loadbalancers", None).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.body["code"], "rate_limited", "{}", r.body);
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=WINDOW_SECS).contains(&retry), "Retry-After {retry}");
    // The address is refused whatever it presents...
    let right_from_1 = api_from(&server, 1);
    assert_eq!(
        right_from_1
            .call("GET", "/v1/loadbalancers", None)
            .await
            .status,
        429
    );
    // ...while the right token from another address works.
    let right = api_from(&server, 2);
    right.ok("GET", "/v1/loadbalancers", None).await;

    // OCI, from 127.0.0.3: unsigned requests.
    let oci = api_from(&server, 3).anonymous();
    let oci_path = "/20170115/loadBalancers?compartmentId=ocid1.compartment.oc1..x";
    for _ in 0..LIMIT {
        let r = oci.call("GET", oci_path, None).await;
        assert_eq!(
            (r.status, r.body["code"].as_str()),
            (401, Some("NotAuthenticated"))
        );
    }
    let r = oci.call("GET", oci_path, None).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.body["code"], "TooManyRequests", "{}", r.body);
    assert!(r.body["message"].as_str().is_some(), "{}", r.body);
    assert!(r.header("retry-after").is_some());
    assert!(r.header("opc-request-id").is_some());

    // Huawei, from 127.0.0.4: a wrong X-Auth-Token.
    let huawei = api_from(&server, 4).anonymous();
    let huawei_path = format!("/v3/{PROJECT}/elb/loadbalancers");
    for _ in 0..LIMIT {
        let r = huawei
            .raw("GET", &huawei_path, None, &[("x-auth-token", "wrong")])
            .await;
        assert_eq!(
            (r.status, r.body["error_code"].as_str()),
            (401, Some("APIGW.0301"))
        );
    }
    let r = huawei
        .raw("GET", &huawei_path, None, &[("x-auth-token", "wrong")])
        .await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.body["error_code"], "APIGW.0308", "{}", r.body);
    assert!(r.body["error_msg"].as_str().is_some(), "{}", r.body);
    assert!(r.header("retry-after").is_some());
    let ok = api_from(&server, 2)
        .anonymous()
        .raw("GET", &huawei_path, None, &[("x-auth-token", HUAWEI_TOKEN)])
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);

    // Azure, from 127.0.0.5: a wrong bearer token.
    let azure = api_from(&server, 5);
    for _ in 0..LIMIT {
        let r = azure_get(&azure, "wrong").await.expect("request");
        assert_eq!(r.status(), 401);
    }
    let r = azure_get(&azure, "wrong").await.expect("request");
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let body: serde_json::Value = r.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "TooManyRequests", "{body}");
    let ok = azure_get(&right, AZURE_TOKEN).await.expect("request");
    assert_eq!(
        ok.status(),
        404,
        "authenticated: the backend does not exist"
    );

    // Once the window has passed, the first address is served again.
    tokio::time::sleep(Duration::from_secs(retry) + Duration::from_millis(200)).await;
    right_from_1.ok("GET", "/v1/loadbalancers", None).await;
}
