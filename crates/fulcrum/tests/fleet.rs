//! Fleet mode end to end: a real 3-member etcd cluster (Debian's etcd-server) and three
//! real `fulcrum serve` nodes sharing it, each binding its listeners on its own loopback
//! address. Fails when etcd is not installed (`scripts/test` installs it): a skipped fleet
//! test would prove nothing.

#![cfg(feature = "etcd")]
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::backend::Backend;
use common::stack::wait_until;
use common::{Api, Resp, Server, free_port};
use fulcrum_store_etcd::testing::{EtcdCluster, require_etcd};
use serde_json::{Value, json};

/// The secret key every node of a test fleet shares (base64 of 32 bytes), as an operator
/// gives it through the environment.
const FLEET_KEY: &str = "ZmxlZXQta2V5LWZvci10ZXN0cy0wMTIzNDU2Nzg5YWI=";

/// One fulcrum node of the fleet.
struct Node {
    server: Option<Server>,
    dir: tempfile::TempDir,
    id: String,
    role: &'static str,
    address: String,
    endpoints: String,
    /// `[store] session_ttl_secs` (None: the default).
    session_ttl_secs: Option<u64>,
    secret_key: &'static str,
    /// Where its logs go (None: the test's own stderr), with `FULCRUM_LOG=info`.
    log: Option<std::path::PathBuf>,
}

/// A Huawei `X-Auth-Token` every node accepts, for the dialects' own refusals.
const HUAWEI_TOKEN: &str = "fleet-huawei-token-0123456789";
const HUAWEI_PROJECT: &str = "0123456789abcdef0123456789abcdef";
/// The OCI caller's key id (signing with the harness's test key).
const OCI_KEY_ID: &str =
    "ocid1.tenancy.oc1..t/ocid1.user.oc1..fleet/00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:03";

impl Node {
    fn start(id: &str, role: &'static str, address: &str, endpoints: &str) -> Node {
        Node::unstarted(id, role, address, endpoints).started()
    }

    /// With an etcd session of `secs` (the node's default otherwise).
    fn with_session_ttl(mut self, secs: u64) -> Node {
        self.session_ttl_secs = Some(secs);
        self
    }

    /// With its logs (`info` and up) kept in a file, read by [`Node::log_text`].
    fn logged(mut self) -> Node {
        self.log = Some(self.dir.path().join("fulcrum.log"));
        self
    }

    fn started(mut self) -> Node {
        self.restart();
        self
    }

    fn unstarted(id: &str, role: &'static str, address: &str, endpoints: &str) -> Node {
        Node {
            server: None,
            dir: tempfile::tempdir().unwrap(),
            id: id.into(),
            role,
            address: address.into(),
            endpoints: endpoints.into(),
            session_ttl_secs: None,
            secret_key: FLEET_KEY,
            log: None,
        }
    }

    fn log_text(&self) -> String {
        self.log
            .as_ref()
            .map(|path| std::fs::read_to_string(path).unwrap_or_default())
            .unwrap_or_default()
    }

    /// `fulcrum serve` as this node runs it.
    fn command(&self) -> (std::process::Command, Vec<String>) {
        let config = self.dir.path().join("fulcrum.toml");
        std::fs::write(
            &config,
            format!(
                "{}[proxy]\nbind_address = \"{}\"\n{}\
                 [[huawei.tokens]]\nname = \"fleet\"\ntoken = \"{HUAWEI_TOKEN}\"\n\
                 [[oci.keys]]\nkey_id = \"{OCI_KEY_ID}\"\nname = \"fleet\"\n\
                 public_key_pem = \"\"\"\n{}\"\"\"\n",
                common::UNLIMITED_API,
                self.address,
                self.session_ttl_secs
                    .map(|s| format!("[store]\nsession_ttl_secs = {s}\n"))
                    .unwrap_or_default(),
                common::oci::public_key_pem(),
            ),
        )
        .unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_fulcrum"));
        command.env("FULCRUM_SECRET_KEY", self.secret_key);
        let args = [
            "--config",
            config.to_str().unwrap(),
            "--store",
            &self.endpoints,
            "--node-id",
            &self.id,
            "--role",
            self.role,
        ];
        (command, args.iter().map(|a| (*a).to_owned()).collect())
    }

    fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// (Re)starts the node on the same data directory (its snapshot cache survives).
    fn restart(&mut self) {
        self.server = None;
        let (command, args) = self.command();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.server = Some(match &self.log {
            Some(log) => {
                Server::start_through_logging(command, &self.data_dir(), &args, log, "info")
            }
            None => Server::start_through(command, &self.data_dir(), &args),
        });
    }

    /// The node's API (a data-plane node's: only `/v1/health` and `/metrics`).
    fn api(&self) -> Api {
        self.server.as_ref().unwrap().client()
    }

    /// Sends the node's process a signal (`STOP`, `CONT`…).
    fn signal(&self, name: &str) {
        let pid = self.server.as_ref().unwrap().child.id().to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}");
    }

    fn url(&self, port: u16) -> String {
        format!("http://{}:{port}/", self.address)
    }
}

fn client() -> reqwest::Client {
    common::http_builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn body_of(c: &reqwest::Client, url: &str) -> String {
    match c.get(url).send().await {
        Ok(r) if r.status() == 200 => r.text().await.unwrap_or_default(),
        Ok(r) => format!("status {}", r.status()),
        Err(e) => format!("error {e}"),
    }
}

/// Waits for a work request through `api`; returns it.
async fn wait_wr(api: &Api, r: &Resp) -> Value {
    let wr = r.header("x-work-request-id").expect("work request id");
    api.ok(
        "GET",
        &format!("/v1/work-requests/{wr}/wait?timeout_ms=15000"),
        None,
    )
    .await
    .body
}

/// Retries a write through `api` until it is accepted (after an election, or etcd's return).
async fn write_until_accepted(api: &Api, method: &str, path: &str, body: Value) -> Resp {
    write_until_accepted_with(api, method, path, body, &[]).await
}

/// The same, with request headers (a retry token).
async fn write_until_accepted_with(
    api: &Api,
    method: &str,
    path: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> Resp {
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = body.to_string();
    loop {
        let r = api.raw(method, path, Some(&body), headers).await;
        if (200..300).contains(&r.status) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{method} {path} still refused: {} {}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `--store` for the cluster: `etcd://host:port,host:port,…`.
fn store_url(etcd: &EtcdCluster) -> String {
    let endpoints = etcd.endpoints();
    let hosts: Vec<&str> = endpoints
        .iter()
        .map(|e| e.trim_start_matches("http://"))
        .collect();
    format!("etcd://{}", hosts.join(","))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_shares_one_configuration_and_survives_etcd_outages() {
    require_etcd();
    let mut etcd = EtcdCluster::start(3).await;
    let endpoints = store_url(&etcd);
    let a = Node::start("node-a", "all", "127.0.0.2", &endpoints);
    let mut b = Node::start("node-b", "all", "127.0.0.3", &endpoints);
    let c = Node::start("node-c", "data-plane", "127.0.0.4", &endpoints);
    let api_a = a.api().unpooled();
    let api_b = b.api().unpooled();
    let http = client();

    let backends = [
        Backend::start("b1").await,
        Backend::start("b2").await,
        Backend::start("b3").await,
    ];

    // ---- configuration through node A, served by all three nodes ----------------------
    let lb = api_a
        .ok("POST", "/v1/loadbalancers", Some(json!({"name": "fleet"})))
        .await
        .id();
    let pool = api_a
        .ok(
            "POST",
            &format!("/v1/loadbalancers/{lb}/pools"),
            Some(json!({"name": "web", "protocol": "HTTP", "algorithm": "ROUND_ROBIN"})),
        )
        .await
        .id();
    let r = api_a
        .ok(
            "POST",
            &format!("/v1/pools/{pool}/members/batch"),
            Some(json!({"action": "replace", "members": [
                {"address": "127.0.0.1", "port": backends[0].port()},
                {"address": "127.0.0.1", "port": backends[1].port()},
            ]})),
        )
        .await;
    wait_wr(&api_a, &r).await;
    let port = free_port();
    let r = api_a
        .ok(
            "POST",
            &format!("/v1/loadbalancers/{lb}/listeners"),
            Some(json!({"protocol": "HTTP", "port": port, "default_pool_id": pool})),
        )
        .await;
    let wr = wait_wr(&api_a, &r).await;
    assert_eq!(wr["status"], "SUCCEEDED", "{wr}");
    assert_eq!(wr["message"], "served by all 3 nodes", "{wr}");
    for node in [&a, &b, &c] {
        let body = body_of(&http, &node.url(port)).await;
        assert!(body == "b1" || body == "b2", "{}: {body}", node.id);
    }

    // A listener that one node cannot bind fails its work request, naming that node, and
    // reads ERROR through every node's API until that node binds it.
    let held = std::net::TcpListener::bind((c.address.as_str(), 0)).unwrap();
    let taken = held.local_addr().unwrap().port();
    let r = api_a
        .ok(
            "POST",
            &format!("/v1/loadbalancers/{lb}/listeners"),
            Some(json!({"protocol": "HTTP", "port": taken, "default_pool_id": pool})),
        )
        .await;
    let taken_listener = r.id();
    let wr = wait_wr(&api_a, &r).await;
    assert_eq!(wr["status"], "FAILED", "{wr}");
    let why = wr["error"]["message"].as_str().unwrap();
    assert!(why.contains("node node-c: cannot bind"), "{why}");
    let path = format!("/v1/listeners/{taken_listener}");
    // Node B reads ERROR once its own fleet view has the revision served everywhere.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = api_b.ok("GET", &path, None).await.body["provisioning_status"].clone();
        if status == "ERROR" {
            break;
        }
        assert!(
            status == "PENDING_CREATE" && Instant::now() < deadline,
            "node B reads {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(held);
    wait_until(
        Duration::from_secs(15),
        "node C binds the freed port",
        || async { api_b.ok("GET", &path, None).await.body["provisioning_status"].clone() },
        |status| status == "ACTIVE",
    )
    .await;
    let body = body_of(&http, &c.url(taken)).await;
    assert!(body == "b1" || body == "b2", "node C serves it: {body}");
    let r = api_a.ok("DELETE", &path, None).await;
    wait_wr(&api_a, &r).await;

    // The data-plane node has no API, but answers probes and scrapers.
    let probe = c.api();
    assert_eq!(
        probe.call("GET", "/v1/loadbalancers", None).await.status,
        404
    );
    let health = probe.ok("GET", "/v1/health", None).await;
    assert_eq!(health.body["store_reachable"], true, "{}", health.body);
    let metrics = probe.ok("GET", "/metrics", None).await;
    assert!(metrics.body.as_str().unwrap_or("").contains("fulcrum_"));

    // ---- propagation: API write acknowledged -> every node serves it -------------------
    let members = api_a.items(&format!("/v1/pools/{pool}/members")).await;
    let m1 = members[0]["id"].as_str().unwrap().to_owned();
    let mut acks = Vec::new();
    let mut spreads = Vec::new();
    for i in 0..40u32 {
        let t0 = Instant::now();
        let r = api_a
            .ok(
                "PATCH",
                &format!("/v1/pools/{pool}/members/{m1}"),
                Some(json!({"weight": 1 + i % 5})),
            )
            .await;
        acks.push(t0.elapsed());
        let wr = wait_wr(&api_a, &r).await;
        assert_eq!(wr["status"], "SUCCEEDED", "{wr}");
        spreads.push(t0.elapsed());
    }
    acks.sort();
    spreads.sort();
    println!(
        "fleet propagation over 40 writes: ack p50 {:?} p99 {:?}; ack -> all 3 nodes serving p50 {:?} p99 {:?}",
        percentile(&acks, 0.5),
        percentile(&acks, 0.99),
        percentile(&spreads, 0.5),
        percentile(&spreads, 0.99)
    );

    // A change through A is served by B and C as soon as its work request succeeded.
    let r = api_a
        .ok(
            "POST",
            &format!("/v1/pools/{pool}/members/batch"),
            Some(json!({"action": "replace", "members": [
                {"address": "127.0.0.1", "port": backends[2].port()},
            ]})),
        )
        .await;
    assert_eq!(wait_wr(&api_a, &r).await["status"], "SUCCEEDED");
    for node in [&a, &b, &c] {
        for _ in 0..5 {
            assert_eq!(body_of(&http, &node.url(port)).await, "b3", "{}", node.id);
        }
    }
    // B reads what A wrote.
    let via_b = api_b.items(&format!("/v1/pools/{pool}/members")).await;
    assert_eq!(via_b.len(), 1);

    // ---- concurrent conditional updates through two nodes: one winner ----------------
    let member = via_b[0]["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/pools/{pool}/members/{member}");
    for round in 0..5 {
        let etag = api_b.ok("GET", &path, None).await.header("etag").unwrap();
        let body = json!({"weight": 10 + round}).to_string();
        let if_match = [("if-match", etag.as_str())];
        let (ra, rb) = tokio::join!(
            api_a.raw("PATCH", &path, Some(&body), &if_match),
            api_b.raw("PATCH", &path, Some(&body), &if_match),
        );
        let mut statuses = [ra.status, rb.status];
        statuses.sort();
        assert!(
            statuses == [200, 412] || statuses == [202, 412],
            "round {round}: exactly one conditional update wins: {statuses:?} {} {}",
            ra.body,
            rb.body
        );
    }

    // ---- one retry token through two nodes at once: one effect ------------------------
    let body = json!({"weight": 42}).to_string();
    let key = [("idempotency-key", "fleet-retry-1")];
    let (ra, rb) = tokio::join!(
        api_a.raw("PATCH", &path, Some(&body), &key),
        api_b.raw("PATCH", &path, Some(&body), &key),
    );
    assert!(
        ra.status < 300 && rb.status < 300,
        "{} {}",
        ra.body,
        rb.body
    );
    assert_eq!(
        ra.header("x-work-request-id"),
        rb.header("x-work-request-id"),
        "a replayed token answers with the first work request"
    );

    // ---- kill the etcd leader: writes continue after the election --------------------
    let leader = etcd.leader().await.expect("a leader");
    etcd.kill(leader);
    let t0 = Instant::now();
    let r = write_until_accepted(&api_a, "PATCH", &path, json!({"weight": 7})).await;
    println!(
        "write accepted {:?} after SIGKILL of the etcd leader",
        t0.elapsed()
    );
    assert_eq!(wait_wr(&api_a, &r).await["status"], "SUCCEEDED");
    etcd.restart(leader).await;

    // ---- all of etcd stops: traffic goes on, writes answer 503 -----------------------
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for node in [&a, &c] {
        let url = node.url(port);
        let (stop, served, failed, http) =
            (stop.clone(), served.clone(), failed.clone(), http.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let body = body_of(&http, &url).await;
                // b1 once the final change (after etcd's return) is served.
                if body == "b3" || body == "b1" {
                    served.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    etcd.stop_all();
    // The first write may wait out a call timeout; either way it is refused with 503.
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        let r = api_a.call("PATCH", &path, Some(json!({"weight": 9}))).await;
        if r.status == 503 && r.body["message"].as_str().unwrap_or("").contains("etcd") {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "writes must answer 503 while etcd is down: {} {}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(refused.body["code"], "unavailable");
    // Reads serve the last known state, marked stale.
    let read = api_a.ok("GET", &format!("/v1/pools/{pool}"), None).await;
    assert_eq!(read.header("x-fulcrum-stale").as_deref(), Some("true"));

    // A node restarted while etcd is down serves its saved configuration at once.
    b.restart();
    for _ in 0..5 {
        assert_eq!(body_of(&http, &b.url(port)).await, "b3");
    }
    // And says what it serves, and that the store is away.
    let health = wait_until(
        Duration::from_secs(5),
        "node B reports what it serves",
        || async { b.api().ok("GET", "/v1/health", None).await.body },
        |health| health["applied_revision"].as_i64().unwrap_or(0) > 0,
    )
    .await;
    assert_eq!(health["store_reachable"], false, "{health}");
    assert_eq!(health["status"], "degraded", "{health}");

    // ---- etcd returns: every node catches up ------------------------------------------
    etcd.restart_all().await;
    let api_b = b.api().unpooled();
    let r = write_until_accepted(
        &api_b,
        "POST",
        &format!("/v1/pools/{pool}/members/batch"),
        json!({"action": "replace", "members": [
            {"address": "127.0.0.1", "port": backends[0].port()},
        ]}),
    )
    .await;
    let wr = wait_wr(&api_b, &r).await;
    let nodes = api_b.ok("GET", "/v1/nodes", None).await.body;
    assert_eq!(wr["status"], "SUCCEEDED", "{wr}\nnodes: {nodes}");
    // Every node is back in the list, serving at least that change.
    let mut listed: Vec<(String, i64)> = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap().to_owned(),
                n["applied_revision"].as_i64().unwrap(),
            )
        })
        .collect();
    listed.sort();
    let ids: Vec<&str> = listed.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["node-a", "node-b", "node-c"], "{nodes}");
    let revision = wr["revision"].as_i64().unwrap();
    assert!(listed.iter().all(|(_, r)| *r >= revision), "{nodes}");
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    for node in [&a, &b, &c] {
        assert_eq!(body_of(&http, &node.url(port)).await, "b1", "{}", node.id);
    }
    let (served, failed) = (
        served.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    println!("during the etcd outage: {served} requests served, {failed} failed");
    assert!(served > 100, "traffic ran during the outage: {served}");
    assert_eq!(failed, 0, "no request may fail while etcd is down");

    // ---- etcd frozen (accepts connections, never answers): nothing waits for it -------
    let m1 = api_b.items(&format!("/v1/pools/{pool}/members")).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let pending = api_b
        .ok(
            "PATCH",
            &format!("/v1/pools/{pool}/members/{m1}"),
            Some(json!({"weight": 3})),
        )
        .await;
    let pending_wr = pending.header("x-work-request-id").unwrap();
    let done_wr = r.header("x-work-request-id").unwrap();
    etcd.freeze_all(true);
    let timed = |what: &'static str, limit: Duration| {
        let started = Instant::now();
        move || {
            let took = started.elapsed();
            assert!(took < limit, "{what} took {took:?}");
        }
    };
    // A write is answered within its deadline (3 s) with 503: refused, or of unknown outcome
    // with the work request to look up.
    // A create with a retry token, so that retrying it after an unknown outcome is safe.
    let check = timed("a write", Duration::from_secs(5));
    let create_path = format!("/v1/pools/{pool}/members");
    let create = json!({"address": "127.0.0.1", "port": 65000}).to_string();
    let token = [("idempotency-key", "frozen-create-1")];
    let w = api_b.raw("POST", &create_path, Some(&create), &token).await;
    check();
    assert_eq!(w.status, 503, "{}", w.body);
    assert!(
        w.header("retry-after").is_some(),
        "503 without Retry-After: {}",
        w.body
    );
    let code = w.body["code"].as_str().unwrap_or_default().to_owned();
    assert!(
        code == "unavailable" || code == "outcome_unknown",
        "{}",
        w.body
    );
    println!("etcd frozen: the create answered {code}");
    let unknown_wr = (code == "outcome_unknown").then(|| {
        w.body["work_request_id"]
            .as_str()
            .unwrap_or_else(|| panic!("an unknown outcome names its work request: {}", w.body))
            .to_owned()
    });
    // Work-request reads answer at once from the view, pending or lately finished, whatever
    // the store does; /wait keeps its timeout.
    for wr in [&pending_wr, &done_wr] {
        let check = timed("reading a work request", Duration::from_secs(1));
        let read = api_b
            .call("GET", &format!("/v1/work-requests/{wr}"), None)
            .await;
        check();
        assert_eq!(read.status, 200, "{}", read.body);
        assert_eq!(read.body["id"], wr.as_str());
    }
    let check = timed("/wait?timeout_ms=500", Duration::from_secs(3));
    api_b
        .call(
            "GET",
            &format!("/v1/work-requests/{done_wr}/wait?timeout_ms=500"),
            None,
        )
        .await;
    check();
    etcd.freeze_all(false);

    // Retried with the same token until accepted: one member, whatever became of the first
    // attempt; if its outcome was unknown and it committed, the retry names its work request.
    let accepted = write_until_accepted_with(
        &api_b,
        "POST",
        &create_path,
        json!({"address": "127.0.0.1", "port": 65000}),
        &token,
    )
    .await;
    let members = api_b.items(&create_path).await;
    assert_eq!(
        members.iter().filter(|m| m["port"] == 65000).count(),
        1,
        "no duplicate: {members:?}"
    );
    if let Some(wr) = unknown_wr {
        let first = api_b
            .call("GET", &format!("/v1/work-requests/{wr}"), None)
            .await;
        if first.status == 200 {
            assert_eq!(
                accepted.header("x-work-request-id").as_deref(),
                Some(wr.as_str()),
                "the committed first attempt is what the retry answers with"
            );
        } else {
            assert_eq!(first.status, 404, "{}", first.body);
        }
    }
}

/// A node that stops answering (SIGSTOP: its session is not renewed, its data plane applies
/// nothing) holds work requests back, which say "served by 2 of 3 nodes", until its session
/// expires; then they succeed without it. Meanwhile the cloud dialects that take one change
/// at a time per load balancer refuse the next one: Huawei as not ACTIVE (409 ELB.8906),
/// OCI as IncorrectState (409, which its SDKs retry).
/// Woken, the node comes back into the fleet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_holds_changes_back_only_until_its_session_expires() {
    require_etcd();
    let etcd = EtcdCluster::start(1).await;
    let endpoints = store_url(&etcd);
    // Sessions of 10 s: a held-back change stays held back well past the 2 s a dialect
    // waits before answering "not ACTIVE".
    let node = |id, role, address| {
        Node::unstarted(id, role, address, &endpoints)
            .with_session_ttl(10)
            .started()
    };
    let a = node("node-a", "all", "127.0.0.5");
    let _b = node("node-b", "data-plane", "127.0.0.6");
    let c = node("node-c", "data-plane", "127.0.0.7");
    let api = a.api().unpooled();
    let live = || async {
        api.ok("GET", "/v1/nodes", None).await.body["items"]
            .as_array()
            .map_or(0, Vec::len)
    };
    wait_until(Duration::from_secs(20), "three nodes register", live, |n| {
        *n == 3
    })
    .await;
    let lb = api
        .ok("POST", "/v1/loadbalancers", Some(json!({"name": "fleet"})))
        .await
        .id();
    let r = api
        .ok(
            "POST",
            &format!("/v1/loadbalancers/{lb}/pools"),
            Some(json!({"name": "web", "protocol": "HTTP"})),
        )
        .await;
    let pool = r.id();
    let wr = wait_wr(&api, &r).await;
    assert_eq!(wr["message"], "served by all 3 nodes", "{wr}");

    c.signal("STOP");
    let r = api
        .ok(
            "PATCH",
            &format!("/v1/pools/{pool}"),
            Some(json!({"description": "changed while node-c sleeps"})),
        )
        .await;
    let id = r.header("x-work-request-id").unwrap();
    let huawei = api.anonymous();
    let refused = huawei
        .raw(
            "PUT",
            &format!("/v3/{HUAWEI_PROJECT}/elb/pools/{pool}"),
            Some(&json!({"pool": {"description": "from Huawei"}}).to_string()),
            &[("x-auth-token", HUAWEI_TOKEN)],
        )
        .await;
    assert_eq!(
        (refused.status, refused.body["error_code"].as_str()),
        (409, Some("ELB.8906")),
        "a Huawei change while the last one is held back: {}",
        refused.body
    );
    // OCI's SDKs retry IncorrectState (409) with backoff: the same held-back load
    // balancer, through the OCI dialect.
    let oci = common::oci::Oci::new(&api, OCI_KEY_ID);
    let refused = oci
        .call(
            "POST",
            &format!("/20170115/loadBalancers/{lb}/backendSets/web/backends"),
            Some(json!({"ipAddress": "127.0.0.1", "port": 9})),
        )
        .await;
    assert_eq!(
        (refused.status, refused.body["code"].as_str()),
        (409, Some("IncorrectState")),
        "an OCI change while the last one is held back: {}",
        refused.body
    );
    let pending = api
        .ok("GET", &format!("/v1/work-requests/{id}"), None)
        .await
        .body;
    assert_ne!(
        pending["status"], "SUCCEEDED",
        "the refusals came while the change was held back: {pending}"
    );
    let backends = api
        .ok("GET", &format!("/v1/pools/{pool}/members"), None)
        .await
        .body;
    assert_eq!(
        backends["items"].as_array().map(Vec::len),
        Some(0),
        "a refused OCI change added nothing: {backends}"
    );
    let mut held_back = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = loop {
        let wr = api
            .ok("GET", &format!("/v1/work-requests/{id}"), None)
            .await
            .body;
        if wr["status"] == "SUCCEEDED" {
            break wr;
        }
        assert_ne!(wr["status"], "FAILED", "{wr}");
        if wr["message"] == "served by 2 of 3 nodes" {
            held_back = Some(wr.clone());
        }
        assert!(Instant::now() < deadline, "never succeeded: {wr}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        held_back.is_some(),
        "while node-c's session lived, the change waited for it"
    );
    assert_eq!(done["message"], "served by all 2 nodes", "{done}");

    c.signal("CONT");
    wait_until(Duration::from_secs(20), "node-c comes back", live, |n| {
        *n == 3
    })
    .await;
}

/// Secrets at rest in a fleet: the values in etcd and every node's snapshot file hold
/// upstream credentials sealed (never in clear nor in base64), nodes sharing the key serve
/// them, and a node given another key refuses to start instead of serving without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_keeps_secrets_sealed_in_etcd_and_snapshots() {
    use base64::Engine as _;
    use fulcrum_store::Store as _;
    const SECRET: &str = "pl4nted-fleet-s3cret-a9d2";
    require_etcd();
    let etcd = EtcdCluster::start(1).await;
    let endpoints = store_url(&etcd);
    let a = Node::start("node-a", "all", "127.0.0.2", &endpoints);
    let b = Node::start("node-b", "data-plane", "127.0.0.3", &endpoints);
    let api = a.api().unpooled();
    let backend = Backend::start("m").await;
    let lb = api
        .ok("POST", "/v1/loadbalancers", Some(json!({"name": "sealed"})))
        .await
        .id();
    let pool = api
        .ok(
            "POST",
            &format!("/v1/loadbalancers/{lb}/pools"),
            Some(
                json!({"name": "p", "protocol": "HTTP", "upstream": {"credentials": {
                    "headers": {"x-api-key": [SECRET]}
                }}}),
            ),
        )
        .await
        .id();
    api.ok(
        "POST",
        &format!("/v1/pools/{pool}/members"),
        Some(json!({"address": "127.0.0.1", "port": backend.port()})),
    )
    .await;
    let port = free_port();
    let r = api
        .ok(
            "POST",
            &format!("/v1/loadbalancers/{lb}/listeners"),
            Some(json!({"protocol": "HTTP", "port": port, "default_pool_id": pool})),
        )
        .await;
    let wr = wait_wr(&api, &r).await;
    assert_eq!(wr["status"], "SUCCEEDED", "{wr}");
    // The data-plane node opened the secret with the shared key.
    let http = client();
    assert_eq!(body_of(&http, &b.url(port)).await, "m");
    let headers = backend.last_headers().unwrap();
    assert_eq!(headers.get("x-api-key").unwrap(), SECRET);

    let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(SECRET);
    let stored = etcd.store().await.range("/").await.unwrap();
    assert!(
        stored
            .kvs
            .iter()
            .any(|kv| kv.key.contains(&format!("pool/{pool}"))),
        "the pool is in etcd"
    );
    for kv in &stored.kvs {
        let value = String::from_utf8_lossy(&kv.value);
        assert!(
            !value.contains(SECRET) && !value.contains(&encoded[..encoded.len() - 2]),
            "{} holds the secret",
            kv.key
        );
    }
    // Each node saves its snapshot after a change (at most every 200 ms).
    for node in [&a, &b] {
        let path = node.data_dir().join("fleet-snapshot.json");
        let mut saved = String::new();
        for _ in 0..100 {
            saved = std::fs::read_to_string(&path).unwrap_or_default();
            if saved.contains(pool.as_str()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(saved.contains(pool.as_str()), "{} saved no pool", node.id);
        assert!(
            !saved.contains(SECRET) && !saved.contains(&encoded[..encoded.len() - 2]),
            "{}'s snapshot holds the secret",
            node.id
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }

    // A node with a key of its own refuses to start, and says why.
    let stranger = Node {
        secret_key: "c3RyYW5nZXIta2V5LW5vdC10aGUtZmxlZXRzLTAxMjM=",
        ..Node::unstarted("node-x", "all", "127.0.0.4", &endpoints)
    };
    let (mut command, args) = stranger.command();
    let out = command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(stranger.data_dir())
        .args(&args)
        .env("FULCRUM_API_TOKEN", common::TOKEN)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("secret key") && stderr.contains("same key"),
        "{stderr}"
    );
    drop((a, b));
}

/// An OCI API key registered through one node's native API signs OCI requests on every
/// node (it lives in etcd, not in a node's configuration), and once removed through
/// another node it is refused everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oci_key_registered_on_one_node_is_accepted_and_removed_on_every_node() {
    require_etcd();
    let etcd = EtcdCluster::start(1).await;
    let endpoints = store_url(&etcd);
    let a = Node::start("node-a", "all", "127.0.0.2", &endpoints);
    let b = Node::start("node-b", "all", "127.0.0.3", &endpoints);
    let (api_a, api_b) = (a.api().unpooled(), b.api().unpooled());
    let r = api_a
        .ok(
            "POST",
            "/v1/oci-api-keys",
            Some(
                json!({"tenancy": "ocid1.tenancy.oc1..fleet", "user": "ocid1.user.oc1..fleet",
                "public_key_pem": common::oci::public_key_pem()}),
            ),
        )
        .await;
    let key = r.body.clone();
    assert_eq!(wait_wr(&api_a, &r).await["status"], "SUCCEEDED");
    let key_id = key["key_id"].as_str().unwrap();
    let list = "/20170115/loadBalancers?compartmentId=ocid1.compartment.oc1..fleet";
    let status_on = |api: &Api| {
        let oci = common::oci::Oci::new(api, key_id);
        async move { oci.call("GET", list, None).await.status }
    };
    // Node B learns of the key from etcd's change feed, within a bounded wait.
    let within = Duration::from_secs(10);
    let accepted = || status_on(&api_b);
    wait_until(within, "node-b accepts the key", accepted, |s| *s == 200).await;
    assert_eq!(status_on(&api_a).await, 200);

    let r = api_b
        .ok(
            "DELETE",
            &format!("/v1/oci-api-keys/{}", key["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(wait_wr(&api_b, &r).await["status"], "SUCCEEDED");
    let refused = || status_on(&api_a);
    wait_until(within, "node-a refuses the removed key", refused, |s| {
        *s == 401
    })
    .await;
    assert_eq!(status_on(&api_b).await, 401);
}

/// A TCP relay in front of etcd that can hold etcd's answers back (while still passing
/// requests on), so that a write reaches etcd, commits, and its answer never comes: the
/// case a leader kill or a partition makes at random, made on purpose.
struct AnswerHoldingRelay {
    port: u16,
    holding: Arc<tokio::sync::watch::Sender<bool>>,
}

impl AnswerHoldingRelay {
    async fn start(upstream: String) -> AnswerHoldingRelay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let holding = Arc::new(tokio::sync::watch::channel(false).0);
        let hold = holding.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (mut client_rx, mut client_tx) = client.into_split();
                let (mut server_rx, mut server_tx) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_rx, &mut server_tx).await;
                });
                let mut held = hold.subscribe();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        // While holding, read nothing: etcd's answers wait in the kernel.
                        if held.wait_for(|h| !*h).await.is_err() {
                            return;
                        }
                        let n = match server_rx.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if held.wait_for(|h| !*h).await.is_err()
                            || client_tx.write_all(&buf[..n]).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        AnswerHoldingRelay { port, holding }
    }

    fn hold(&self, on: bool) {
        self.holding.send_replace(on);
    }
}

/// A write that reached etcd and committed but whose answer never came is answered as of
/// unknown outcome, naming its work request, not as "unavailable" (which a client would
/// take for "not done" and write again); the work request is then found, and the change
/// was made once. (Without a retry token: with one, the token's record is read from etcd
/// first, and that read, unanswered, refuses the write before it is sent.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_committed_without_an_answer_is_reported_as_of_unknown_outcome() {
    use fulcrum_store::Store as _;
    require_etcd();
    let etcd = EtcdCluster::start(1).await;
    let upstream = etcd.endpoints()[0].trim_start_matches("http://").to_owned();
    let relay = AnswerHoldingRelay::start(upstream).await;
    let node = Node::start(
        "node-a",
        "all",
        "127.0.0.2",
        &format!("etcd://127.0.0.1:{}", relay.port),
    );
    let api = node.api().unpooled();
    let lb = api.loadbalancer().await;
    let pool = api.pool(&lb, "HTTP", "ROUND_ROBIN").await;

    relay.hold(true);
    let path = format!("/v1/pools/{pool}/members");
    let body = json!({"address": "127.0.0.1", "port": 65001}).to_string();
    let started = Instant::now();
    let w = api.raw("POST", &path, Some(&body), &[]).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(w.status, 503, "{}", w.body);
    assert_eq!(w.body["code"], "outcome_unknown", "{}", w.body);
    assert!(w.header("retry-after").is_some(), "{}", w.body);
    let wr = w.body["work_request_id"].as_str().unwrap().to_owned();
    // It did commit: its work request is in etcd, written in the same transaction.
    let direct = etcd.store().await;
    let stored = direct.range("/fulcrum/v1/wr/").await.unwrap();
    assert!(
        stored.kvs.iter().any(|kv| kv.key.ends_with(&wr)),
        "the work request {wr} is not in etcd"
    );

    relay.hold(false);
    // Once etcd answers again, the work request is found and succeeds.
    let found = || async {
        let r = api
            .call("GET", &format!("/v1/work-requests/{wr}"), None)
            .await;
        (r.status, r.body)
    };
    let succeeded = |(status, body): &(u16, Value)| *status == 200 && body["status"] == "SUCCEEDED";
    wait_until(
        Duration::from_secs(30),
        "the work request succeeds",
        found,
        succeeded,
    )
    .await;
    // Made once, and served.
    let members = api.items(&path).await;
    assert_eq!(members.len(), 1, "{members:?}");
    assert_eq!(members[0]["port"], 65001);

    // OCI's answer names the work request as OCI does, so GetWorkRequest finds it.
    let oci = common::oci::Oci::new(&api, OCI_KEY_ID);
    relay.hold(true);
    let w = oci
        .call(
            "POST",
            &format!(
                "/20170115/loadBalancers/ocid1.loadbalancer.oc1.fulcrum.{lb}/backendSets/pool/backends"
            ),
            Some(json!({"ipAddress": "127.0.0.1", "port": 65002})),
        )
        .await;
    assert_eq!(w.status, 503, "{}", w.body);
    let ocid = w
        .header("opc-work-request-id")
        .expect("opc-work-request-id");
    assert!(
        ocid.starts_with("ocid1.loadbalancerworkrequest.")
            && w.body["message"]
                .as_str()
                .unwrap_or_default()
                .contains(&ocid),
        "{ocid}: {}",
        w.body
    );
    relay.hold(false);
    let found = || async {
        let path = format!("/20170115/loadBalancerWorkRequests/{ocid}");
        let r = oci.call("GET", &path, None).await;
        (r.status, r.body)
    };
    let succeeded =
        |(status, body): &(u16, Value)| *status == 200 && body["lifecycleState"] == "SUCCEEDED";
    wait_until(
        Duration::from_secs(30),
        "OCI's work request succeeds",
        found,
        succeeded,
    )
    .await;
    assert_eq!(api.items(&path).await.len(), 2);
}

/// A node that fell behind while the configuration's history was compacted (paused here,
/// as a frozen VM or a stalled process would be) cannot catch up from events that are
/// gone: etcd ends its watch as compacted, and the node lists the configuration whole and
/// serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_compacted_history_lists_the_configuration_again() {
    use fulcrum_store::Store as _;
    require_etcd();
    let etcd = EtcdCluster::start(1).await;
    let endpoints = store_url(&etcd);
    let a = Node::start("node-a", "all", "127.0.0.8", &endpoints);
    // A session that outlives the pause, however slow a busy machine makes it: node B
    // stays in the fleet, so the last change waits until B serves it.
    let b = Node::unstarted("node-b", "data-plane", "127.0.0.9", &endpoints)
        .with_session_ttl(120)
        .logged()
        .started();
    let api = a.api().unpooled();
    let nodes = || async { api.items("/v1/nodes").await.len() };
    wait_until(Duration::from_secs(20), "both nodes register", nodes, |n| {
        *n == 2
    })
    .await;
    let (one, two) = (Backend::start("one").await, Backend::start("two").await);
    let lb = api
        .apply("POST", "/v1/loadbalancers", Some(json!({"name": "behind"})))
        .await
        .id();
    let pool = api.pool(&lb, "HTTP", "ROUND_ROBIN").await;
    let first = api.member(&pool, one.port(), json!({})).await;
    let port = free_port();
    api.listener(&lb, "HTTP", port, Some(&pool)).await;
    let c = client();
    assert_eq!(body_of(&c, &b.url(port)).await, "one");

    b.signal("STOP");
    // Node B reads nothing now. etcd sends a watcher at most its HTTP/2 window (2 MiB for
    // fulcrum's client) and queues 128 answers more; past those the watcher falls behind.
    // 40 batches that replace 200 members with 200 others (about 100 KiB each) fill the
    // window, 200 revisions more the queue.
    let batch = format!("/v1/pools/{pool}/members/batch");
    for round in 0..40u16 {
        let members: Vec<Value> = (0..200u16)
            .map(|i| {
                json!({"address": "127.0.0.1", "port": 20_000 + (round % 2) * 1_000 + i,
                       "name": format!("{i}-{}", "m".repeat(200))})
            })
            .collect();
        api.ok(
            "POST",
            &batch,
            Some(json!({"action": "replace", "members": members})),
        )
        .await;
    }
    for i in 0..200 {
        api.ok(
            "PATCH",
            &format!("/v1/pools/{pool}"),
            Some(json!({"description": format!("change {i}")})),
        )
        .await;
    }
    let last = api
        .ok(
            "POST",
            &batch,
            Some(json!({"action": "replace",
                        "members": [{"address": "127.0.0.1", "port": two.port()}]})),
        )
        .await;
    assert_ne!(
        first, "",
        "node B served the first member before it stopped"
    );
    let direct = etcd.store().await;
    let now = direct.range("/fulcrum/").await.unwrap().revision;
    direct.compact(now).await.unwrap();

    b.signal("CONT");
    let url = b.url(port);
    let served = || body_of(&c, &url);
    let what = "node B serves the change made while it was paused";
    wait_until(Duration::from_secs(30), what, served, |body| body == "two").await;
    let wr = wait_wr(&api, &last).await;
    assert_eq!(wr["status"], "SUCCEEDED", "{wr}");
    assert_eq!(wr["message"], "served by all 2 nodes", "{wr}");
    let log = b.log_text();
    assert!(
        log.contains("compacted past this node's watch"),
        "node B caught up by listing, after etcd said its watch was compacted:\n{log}"
    );
}
