//! UDP listeners through the real binary: echo members on real sockets (bound to port 0),
//! flows balanced by the pool's algorithm and weights, source-IP persistence, drain, idle
//! expiry, the flow cap, replies to the right client, a datagram near UDP's maximum,
//! metrics and the access-log record of each flow.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::stack::{Fulcrum, access_log_records, eventually, metric};
use serde_json::{Value, json};
use tokio::net::UdpSocket;

/// A UDP member that answers every datagram with `name|datagram`, to its sender.
struct UdpEcho {
    port: u16,
    received: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl UdpEcho {
    async fn start(name: &str) -> UdpEcho {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind echo");
        let port = socket.local_addr().expect("addr").port();
        let received = Arc::new(AtomicU64::new(0));
        let (count, prefix) = (received.clone(), format!("{name}|").into_bytes());
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let mut answer = prefix.clone();
                answer.extend_from_slice(&buf[..n]);
                let _ = socket.send_to(&answer, from).await;
            }
        });
        UdpEcho {
            port,
            received,
            task,
        }
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A client socket of its own (its own port: a flow of its own).
struct Client(UdpSocket);

impl Client {
    async fn new(port: u16) -> Client {
        let s = UdpSocket::bind("127.0.0.1:0").await.expect("bind client");
        s.connect(("127.0.0.1", port)).await.expect("connect");
        Client(s)
    }

    /// Sends `payload` and returns the answer (resending, as UDP clients do, if none comes).
    async fn ask(&self, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; 65536];
        // Loopback loses nothing: a resend only guards against a test paused for long (the
        // exact datagram counts some tests assert would then be off by the resends).
        for _ in 0..3 {
            self.0.send(payload).await.expect("send");
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_secs(10), self.0.recv(&mut buf)).await
            {
                return buf[..n].to_vec();
            }
        }
        panic!("no answer through fulcrum");
    }

    /// The member that answers `payload`, checking the answer carries the payload back.
    async fn member(&self, payload: &str) -> String {
        let answer = String::from_utf8(self.ask(payload.as_bytes()).await).expect("utf-8");
        let (name, echoed) = answer.split_once('|').expect("name|payload");
        assert_eq!(echoed, payload, "the answer of another client's datagram");
        name.to_owned()
    }
}

use common::free_udp_port as udp_port;

/// A UDP pool with one member per echo, behind a UDP listener (`listener` merged into its
/// body); returns the pool, its members and the listener's id and port.
async fn udp_stack(
    f: &Fulcrum,
    pool_extra: Value,
    echoes: &[&UdpEcho],
    listener: Value,
) -> (String, Vec<String>, String, u16) {
    let lb = f.loadbalancer().await;
    let mut body = json!({"name": "udp", "protocol": "UDP", "algorithm": "ROUND_ROBIN"});
    common::stack::merge(&mut body, pool_extra);
    let pool = f
        .apply("POST", &format!("/v1/loadbalancers/{lb}/pools"), Some(body))
        .await
        .id();
    let mut members = Vec::new();
    for e in echoes {
        members.push(f.member(&pool, e.port, json!({})).await);
    }
    let port = udp_port();
    let id = f
        .listener_with(&lb, "UDP", port, Some(&pool), listener)
        .await;
    (pool, members, id, port)
}

async fn metric_of(f: &Fulcrum, name: &str, labels: &str) -> f64 {
    metric(&f.metrics().await, &format!("{name}{{{labels}}}")).unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_round_robin_and_answers_reach_their_client() {
    let f = Fulcrum::start();
    let (a, b) = (UdpEcho::start("a").await, UdpEcho::start("b").await);
    let (_, _, listener, port) = udp_stack(&f, json!({}), &[&a, &b], json!({})).await;

    let l = f.read(&format!("/v1/listeners/{listener}")).await;
    assert_eq!(l["operating_status"], "ONLINE", "{l}");
    assert_eq!(l["provisioning_status"], "ACTIVE", "{l}");

    // Two clients, two flows: round robin by flow puts them on both members.
    let (c1, c2) = (Client::new(port).await, Client::new(port).await);
    let m1 = c1.member("one").await;
    let m2 = c2.member("two").await;
    assert_ne!(m1, m2, "two flows of a round-robin pool went to one member");
    // Every datagram of a flow goes to its member, and each answer to its own client.
    for i in 0..20 {
        assert_eq!(c1.member(&format!("one-{i}")).await, m1);
        assert_eq!(c2.member(&format!("two-{i}")).await, m2);
    }
    assert_eq!(a.received() + b.received(), 42);

    // A datagram near UDP's maximum goes through whole, both ways.
    let big: Vec<u8> = (0..60_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let answer = c1.ask(&big).await;
    assert_eq!(
        answer.len(),
        m1.len() + 1 + big.len(),
        "a large datagram was cut"
    );
    assert_eq!(&answer[m1.len() + 1..], &big[..]);

    let labels = format!("listener=\"{listener}\"");
    assert_eq!(
        metric_of(&f, "fulcrum_listener_udp_flows_open", &labels).await,
        2.0
    );
    assert_eq!(
        metric_of(&f, "fulcrum_listener_udp_flows_total", &labels).await,
        2.0
    );
    let dir_in = format!("{labels},direction=\"in\"");
    assert_eq!(
        metric_of(&f, "fulcrum_listener_udp_datagrams_total", &dir_in).await,
        43.0
    );
    let dir_out = format!("{labels},direction=\"out\"");
    assert_eq!(
        metric_of(&f, "fulcrum_listener_udp_datagrams_total", &dir_out).await,
        43.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_ip_persistence_keeps_new_flows_on_one_member() {
    let f = Fulcrum::start();
    let (a, b) = (UdpEcho::start("a").await, UdpEcho::start("b").await);
    let persistence =
        json!({"session_persistence": {"type": "SOURCE_IP", "persistence_timeout": 1}});
    let (_, _, _, port) = udp_stack(&f, persistence, &[&a, &b], json!({})).await;
    let first = Client::new(port).await.member("x").await;
    // New flows (new ports) from the same address go where the first one went, though
    // round robin would alternate.
    for i in 0..6 {
        let c = Client::new(port).await;
        assert_eq!(c.member(&format!("x{i}")).await, first, "flow {i}");
    }
    let other = if first == "a" { &b } else { &a };
    assert_eq!(other.received(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_member_keeps_its_flow_and_gets_no_new_one() {
    let f = Fulcrum::start();
    let (a, b) = (UdpEcho::start("a").await, UdpEcho::start("b").await);
    let (pool, members, _, port) = udp_stack(&f, json!({}), &[&a, &b], json!({})).await;
    let live = Client::new(port).await;
    let m = live.member("live").await;
    let (idx, other) = if m == "a" { (0, "b") } else { (1, "a") };
    f.patch_member(&pool, &members[idx], json!({"drain": true}))
        .await;
    // The open flow stays on its member…
    for i in 0..5 {
        assert_eq!(live.member(&format!("live-{i}")).await, m);
    }
    // …and every new flow goes to the other one.
    for i in 0..6 {
        let c = Client::new(port).await;
        assert_eq!(c.member(&format!("new-{i}")).await, other, "new flow {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_spread_new_flows_three_to_one() {
    let f = Fulcrum::start();
    let (heavy, light) = (UdpEcho::start("heavy").await, UdpEcho::start("light").await);
    let lb = f.loadbalancer().await;
    let pool = f
        .apply(
            "POST",
            &format!("/v1/loadbalancers/{lb}/pools"),
            Some(json!({"name": "udp", "protocol": "UDP", "algorithm": "ROUND_ROBIN"})),
        )
        .await
        .id();
    f.member(&pool, heavy.port, json!({"weight": 3})).await;
    f.member(&pool, light.port, json!({"weight": 1})).await;
    let port = udp_port();
    f.listener_with(&lb, "UDP", port, Some(&pool), json!({}))
        .await;

    // Each client is a flow of its own; weights share flows, not datagrams.
    const FLOWS: usize = 400;
    let mut on_heavy = 0;
    for i in 0..FLOWS {
        let c = Client::new(port).await;
        if c.member(&format!("flow-{i}")).await == "heavy" {
            on_heavy += 1;
        }
    }
    let share = on_heavy as f64 / FLOWS as f64;
    assert!(
        (0.70..=0.80).contains(&share),
        "weights 3:1 gave the heavy member {on_heavy} of {FLOWS} flows ({:.1} %), not 75 % ± 5",
        share * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_flow_is_forgotten_and_logged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.log");
    let f = Fulcrum::start_with(&["--access-log", log.to_str().unwrap_or_default()]);
    let (a, b) = (UdpEcho::start("a").await, UdpEcho::start("b").await);
    let (pool, members, listener, port) = udp_stack(
        &f,
        json!({}),
        &[&a, &b],
        json!({"timeouts": {"idle_ms": 400}}),
    )
    .await;
    let c = Client::new(port).await;
    let first = c.member("1").await;
    assert_eq!(c.member("2").await, first);
    assert_eq!(c.member("33").await, first);

    let labels = format!("listener=\"{listener}\"");
    let forgotten = eventually(Duration::from_secs(10), || async {
        metric_of(&f, "fulcrum_listener_udp_flows_open", &labels).await == 0.0
    })
    .await;
    assert!(forgotten, "the idle flow is still open");

    // Its record: member, datagrams and bytes each way, how it ended.
    let recs = access_log_records(&log, 1).await;
    let r = &recs[0];
    let idx = if first == "a" { 0 } else { 1 };
    assert_eq!(r["protocol"], "UDP", "{r}");
    assert_eq!(r["listener"], listener.as_str(), "{r}");
    assert_eq!(r["pool"], pool.as_str(), "{r}");
    assert_eq!(r["member"], members[idx].as_str(), "{r}");
    assert_eq!(r["packets_in"], 3, "{r}");
    assert_eq!(r["packets_out"], 3, "{r}");
    assert_eq!(r["bytes_in"], 4, "{r}");
    assert_eq!(r["bytes_out"], 4 + 3 * 2, "{r}");
    assert_eq!(r["termination"], "idle_timeout", "{r}");
    let total = r["timings_ms"]["total"].as_f64().unwrap_or_default();
    assert!(total >= 400.0, "a flow lasts until idle: {r}");
    let client = c.0.local_addr().expect("addr").to_string();
    assert_eq!(r["client"], client.as_str(), "{r}");

    // The same client address and port is a new flow: round robin moves it on.
    let again = c.member("4").await;
    assert_ne!(again, first, "the forgotten flow's member was reused");
    assert_eq!(
        metric_of(&f, "fulcrum_listener_udp_flows_total", &labels).await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_flows_past_the_cap_are_dropped_and_counted() {
    let f = Fulcrum::start();
    let a = UdpEcho::start("a").await;
    let (_, _, listener, port) =
        udp_stack(&f, json!({}), &[&a], json!({"connection_limit": 1})).await;
    let first = Client::new(port).await;
    assert_eq!(first.member("in").await, "a");
    let second = Client::new(port).await;
    second.0.send(b"refused").await.expect("send");
    let labels = format!("listener=\"{listener}\",reason=\"flow_cap\"");
    let counted = eventually(Duration::from_secs(10), || async {
        metric_of(&f, "fulcrum_listener_udp_dropped_total", &labels).await >= 1.0
    })
    .await;
    assert!(counted, "no flow_cap drop counted");
    // The open flow is served on.
    assert_eq!(first.member("still").await, "a");
    assert_eq!(a.received(), 2, "the refused datagram reached the member");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huawei_v2_and_v3_udp_listeners_and_pools_serve() {
    use common::huawei::HUAWEI_CONFIG;
    use common::stack::{huawei_lb, huawei_udp_pool, listener_online};
    let f = Fulcrum::start_configured(HUAWEI_CONFIG, &[]);
    let (a, b) = (UdpEcho::start("a").await, UdpEcho::start("b").await);
    let (h, subnet, lb, vip) = huawei_lb(&f, "udp").await;
    let (_, port, l) = huawei_udp_pool(
        &f,
        &h,
        (&lb, &subnet),
        json!({"protocol": "UDP", "lb_algorithm": "ROUND_ROBIN", "name": "udp",
            "session_persistence": {"type": "SOURCE_IP", "persistence_timeout": 1}}),
        &[a.port, b.port],
    )
    .await;
    assert_eq!(l["listener"]["protocol"], "UDP", "{l}");
    assert_eq!(
        l["listener"]["keepalive_timeout"], 300,
        "Huawei's UDP default: {l}"
    );
    // Traffic to the VIP; source-IP persistence keeps new flows on the first one's member.
    let client = |port| async move {
        let s = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        s.connect((vip, port)).await.expect("connect");
        Client(s)
    };
    let first = client(port).await.member("h1").await;
    for i in 0..4 {
        assert_eq!(client(port).await.member(&format!("h{i}")).await, first);
    }

    // The v2 API takes UDP listeners and pools too.
    let v2_pool = h
        .expect(
            201,
            "POST",
            "/v2/{p}/elb/pools",
            Some(json!({"pool": {"loadbalancer_id": lb, "protocol": "UDP",
                "lb_algorithm": "ROUND_ROBIN", "name": "udp2"}})),
        )
        .await;
    assert_eq!(v2_pool["pool"]["protocol"], "UDP", "{v2_pool}");
    let v2_pool = v2_pool["pool"]["id"].as_str().expect("id").to_owned();
    h.expect(
        201,
        "POST",
        &format!("/v2/{{p}}/elb/pools/{v2_pool}/members"),
        Some(
            json!({"member": {"address": "127.0.0.1", "protocol_port": a.port,
            "subnet_id": subnet}}),
        ),
    )
    .await;
    let port2 = udp_port();
    let l2 = h
        .expect(
            201,
            "POST",
            "/v2/{p}/elb/listeners",
            Some(
                json!({"listener": {"loadbalancer_id": lb, "protocol": "UDP",
                "protocol_port": port2, "default_pool_id": v2_pool}}),
            ),
        )
        .await;
    assert_eq!(l2["listener"]["protocol"], "UDP", "{l2}");
    let listener2 = l2["listener"]["id"].as_str().expect("id").to_owned();
    assert!(
        listener_online(&f, &listener2).await,
        "the v2 UDP listener is not ONLINE"
    );
    assert_eq!(client(port2).await.member("v2").await, "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_connect_checks_take_a_closed_port_out() {
    let f = Fulcrum::start();
    let a = UdpEcho::start("a").await;
    let b = UdpEcho::start("b").await;
    let (pool, members, _, port) = udp_stack(&f, json!({}), &[&a, &b], json!({})).await;
    f.apply(
        "POST",
        "/v1/healthmonitors",
        Some(
            json!({"pool_id": pool, "type": "UDP_CONNECT", "interval_ms": 200,
            "timeout_ms": 100, "unhealthy_threshold": 2, "healthy_threshold": 1}),
        ),
    )
    .await;
    // Both answer (or stay silent to) the probe: both pass.
    let online = eventually(Duration::from_secs(10), || async {
        f.member_status(&pool, &members[0]).await == "ONLINE"
            && f.member_status(&pool, &members[1]).await == "ONLINE"
    })
    .await;
    assert!(
        online,
        "members with open UDP ports did not pass UDP_CONNECT"
    );
    assert!(
        eventually(Duration::from_secs(10), || async { b.received() > 0 }).await,
        "no probe reached the member"
    );

    // b's port closes: the kernel answers probes with ICMP port unreachable.
    drop(b);
    let down = eventually(Duration::from_secs(10), || async {
        f.member_status(&pool, &members[1]).await == "ERROR"
    })
    .await;
    assert!(down, "a closed UDP port still passes UDP_CONNECT");
    assert_eq!(f.member_status(&pool, &members[0]).await, "ONLINE");
    // New flows go to the member that is up.
    for i in 0..4 {
        let c = Client::new(port).await;
        assert_eq!(c.member(&format!("after-{i}")).await, "a", "flow {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_take_new_flows_only_while_no_primary_can() {
    let f = Fulcrum::start();
    let (a, b) = (UdpEcho::start("a").await, UdpEcho::start("b").await);
    let lb = f.loadbalancer().await;
    let pool = f
        .apply(
            "POST",
            &format!("/v1/loadbalancers/{lb}/pools"),
            Some(json!({"name": "udp", "protocol": "UDP", "algorithm": "LEAST_CONNECTIONS"})),
        )
        .await
        .id();
    let primary = f.member(&pool, a.port, json!({})).await;
    f.member(&pool, b.port, json!({"backup": true})).await;
    let port = udp_port();
    f.listener(&lb, "UDP", port, Some(&pool)).await;
    for i in 0..3 {
        let c = Client::new(port).await;
        assert_eq!(c.member(&format!("p{i}")).await, "a", "flow {i}");
    }
    // The primary goes offline: new flows go to the backup.
    f.patch_member(&pool, &primary, json!({"offline": true}))
        .await;
    for i in 0..3 {
        let c = Client::new(port).await;
        assert_eq!(c.member(&format!("b{i}")).await, "b", "flow {i}");
    }
    // Back online: new flows return to it.
    f.patch_member(&pool, &primary, json!({"offline": false}))
        .await;
    let c = Client::new(port).await;
    assert_eq!(c.member("back").await, "a");
}
