//! QUIC pools (`QUIC_CID`) through the real binary, with real QUIC: quinn servers as members
//! and quinn clients, over real loopback sockets. Members that encode their QUIC-LB server
//! ID in the connection IDs they issue keep their connections when clients migrate to
//! another address (quinn's `rebind`, here onto another loopback IP, so neither the client's
//! flow nor its source IP can tell fulcrum where the connection lives); members that do not
//! are still reached, their handshakes routed by the hash of the client's Initial DCID, and
//! the same migration breaks connections there: what the server ID is for.

mod common;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::stack::{Fulcrum, metric};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::rustls;
use quinn::{ConnectionId, ConnectionIdGenerator, Endpoint, EndpointConfig, TokioRuntime};
use serde_json::{Value, json};

/// Bytes of server ID in the tests' QUIC-LB config, and of connection ID the members issue
/// (first octet, server ID, 4 bytes of nonce).
const SERVER_ID_LEN: usize = 3;
const CID_LEN: usize = 1 + SERVER_ID_LEN + 4;

/// Issues QUIC-LB plaintext connection IDs: config 0 and the length self-description in the
/// first octet, the member's server ID, then a random nonce.
struct QuicLbCids {
    server_id: [u8; SERVER_ID_LEN],
}

impl ConnectionIdGenerator for QuicLbCids {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut cid = [0u8; CID_LEN];
        cid[0] = (CID_LEN - 1) as u8; // config ID 0 in bits 7–5
        cid[1..=SERVER_ID_LEN].copy_from_slice(&self.server_id);
        let nonce = RandomState::new().build_hasher().finish().to_be_bytes();
        cid[1 + SERVER_ID_LEN..].copy_from_slice(&nonce[..CID_LEN - 1 - SERVER_ID_LEN]);
        ConnectionId::new(&cid)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    // A connection routed to the wrong member ends within seconds (a stateless reset, or
    // this), not after quinn's default 30 s.
    t.max_idle_timeout(Some(
        Duration::from_secs(3).try_into().expect("idle timeout"),
    ));
    Arc::new(t)
}

/// A QUIC member answering every bidirectional stream with its name; with a server ID, it
/// encodes it in every connection ID it issues.
struct Member {
    endpoint: Endpoint,
    port: u16,
}

impl Member {
    fn start(name: &'static str, server_id: Option<[u8; SERVER_ID_LEN]>) -> (Member, Vec<u8>) {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(c.signing_key.serialize_der()).expect("key");
        let tls = rustls::ServerConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_no_client_auth()
            .with_single_cert(vec![c.cert.der().clone()], key)
            .expect("server config");
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(
            QuicServerConfig::try_from(tls).expect("QUIC server config"),
        ));
        server.transport_config(transport());
        let mut config = EndpointConfig::default();
        if let Some(server_id) = server_id {
            config.cid_generator(move || Box::new(QuicLbCids { server_id }));
        }
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind member");
        let port = socket.local_addr().expect("addr").port();
        let endpoint = Endpoint::new(config, Some(server), socket, Arc::new(TokioRuntime))
            .expect("member endpoint");
        let accepting = endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = accepting.accept().await {
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                        tokio::spawn(async move {
                            let _ = recv.read_to_end(64).await;
                            let _ = send.write_all(name.as_bytes()).await;
                            let _ = send.finish();
                        });
                    }
                });
            }
        });
        (Member { endpoint, port }, c.cert.der().to_vec())
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"done");
    }
}

/// A QUIC client with an endpoint of its own (its own socket: a flow of its own).
struct Client {
    endpoint: Endpoint,
    conn: quinn::Connection,
}

impl Client {
    async fn connect(port: u16, roots: &[Vec<u8>]) -> Client {
        Self::connect_to(SocketAddr::from(([127, 0, 0, 1], port)), roots).await
    }

    async fn connect_to(to: SocketAddr, roots: &[Vec<u8>]) -> Client {
        let mut store = rustls::RootCertStore::empty();
        for der in roots {
            store
                .add(rustls::pki_types::CertificateDer::from(der.clone()))
                .expect("root");
        }
        let tls = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(store)
            .with_no_client_auth();
        let mut config =
            quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).expect("client")));
        config.transport_config(transport());
        let mut endpoint = Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("client");
        endpoint.set_default_client_config(config);
        let conn = tokio::time::timeout(
            Duration::from_secs(10),
            endpoint.connect(to, "localhost").expect("connect"),
        )
        .await
        .expect("handshake in time")
        .expect("handshake through fulcrum");
        Client { endpoint, conn }
    }

    /// The name of the member that answers a new stream, or why none did.
    async fn ask(&self) -> Result<String, String> {
        let exchange = async {
            let (mut send, mut recv) = self.conn.open_bi().await.map_err(|e| e.to_string())?;
            send.write_all(b"who").await.map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            let name = recv.read_to_end(64).await.map_err(|e| e.to_string())?;
            String::from_utf8(name).map_err(|e| e.to_string())
        };
        tokio::time::timeout(Duration::from_secs(8), exchange)
            .await
            .unwrap_or_else(|_| Err("no answer in 8 s".into()))
    }

    /// Moves the client to a new socket on `ip` (a new address and port for fulcrum).
    fn rebind(&self, ip: &str) {
        let socket = std::net::UdpSocket::bind((ip, 0)).expect("bind the new client socket");
        self.endpoint.rebind(socket).expect("rebind");
    }
}

/// A QUIC_CID pool (`quic_lb` merged into it) with one member per port and server ID, behind
/// a `listener_protocol` listener; returns the listener's port, the pool and its members.
async fn quic_stack(
    f: &Fulcrum,
    quic_lb: Option<Value>,
    members: &[(u16, Option<&str>)],
    listener_protocol: &str,
) -> (u16, String, Vec<String>) {
    let lb = f.loadbalancer().await;
    let mut body = json!({"name": "quic", "protocol": "QUIC", "algorithm": "QUIC_CID",
        "session_persistence": {"type": "SOURCE_IP", "persistence_timeout": 1}});
    if let Some(q) = quic_lb {
        body["quic_lb"] = q;
    }
    let pool = f
        .apply("POST", &format!("/v1/loadbalancers/{lb}/pools"), Some(body))
        .await
        .id();
    let mut ids = Vec::new();
    for (port, server_id) in members {
        let extra = server_id.map_or(json!({}), |s| json!({"server_id": s}));
        ids.push(f.member(&pool, *port, extra).await);
    }
    let port = common::free_udp_port();
    f.listener(&lb, listener_protocol, port, Some(&pool)).await;
    (port, pool, ids)
}

/// Clients connected through `port` until each of the two members holds at least two of
/// them (their Initials are hashed, so this takes a handful), with the member each talks to.
async fn clients_on_both(port: u16, roots: &[Vec<u8>]) -> Vec<(Client, String)> {
    let mut clients = Vec::new();
    for _ in 0..40 {
        let c = Client::connect(port, roots).await;
        let name = c.ask().await.expect("a first stream");
        clients.push((c, name));
        let on = |m: &str| clients.iter().filter(|(_, n)| n == m).count();
        if on("a") >= 2 && on("b") >= 2 {
            return clients;
        }
    }
    panic!("40 connections did not spread over both members");
}

async fn quic_flows(f: &Fulcrum, path: &str) -> f64 {
    let text = f.metrics().await;
    text.lines()
        .filter(|l| {
            l.starts_with("fulcrum_listener_quic_flows_total{")
                && l.contains(&format!("path=\"{path}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_follow_their_server_id_across_migration() {
    let f = Fulcrum::start();
    let (a, cert_a) = Member::start("a", Some([0x0a, 0x0a, 0x01]));
    let (b, cert_b) = Member::start("b", Some([0x0b, 0x0b, 0x02]));
    let (port, pool, members) = quic_stack(
        &f,
        Some(json!({"server_id_len": 3})),
        &[(a.port, Some("0a0a01")), (b.port, Some("0B0B02"))],
        "UDP",
    )
    .await;
    let roots = [cert_a, cert_b];
    let clients = clients_on_both(port, &roots).await;

    // Every client moves to a new address on another loopback IP. Source-IP hashing would
    // send them all to one member; their connection IDs send each to its own.
    for (c, _) in &clients {
        c.rebind("127.0.0.2");
    }
    for (i, (c, name)) in clients.iter().enumerate() {
        for round in 0..2 {
            assert_eq!(
                c.ask().await.as_deref(),
                Ok(name.as_str()),
                "client {i}, stream {round} after migrating"
            );
        }
        assert_eq!(
            c.conn.remote_address(),
            SocketAddr::from(([127, 0, 0, 1], port)),
            "the connection still goes through fulcrum"
        );
    }
    assert!(quic_flows(&f, "server_id").await >= clients.len() as f64);
    assert!(quic_flows(&f, "dcid_hash").await >= clients.len() as f64);

    // A drained member keeps its connections, wherever their clients move; new ones avoid it.
    f.patch_member(&pool, &members[0], json!({"drain": true}))
        .await;
    for (c, _) in &clients {
        c.rebind("127.0.0.3");
    }
    for (i, (c, name)) in clients.iter().enumerate() {
        assert_eq!(
            c.ask().await.as_deref(),
            Ok(name.as_str()),
            "client {i} after its second migration, with a drained"
        );
    }
    for _ in 0..4 {
        let c = Client::connect(port, &roots).await;
        assert_eq!(c.ask().await.as_deref(), Ok("b"), "a new connection");
    }
    let open = metric(&f.metrics().await, "fulcrum_listener_udp_flows_open").unwrap_or(0.0);
    assert!(
        open >= 2.0 * clients.len() as f64,
        "a flow per client address, the old ones idling out: {open}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_without_server_ids_get_hashed_initials_and_lose_migrating_clients() {
    let f = Fulcrum::start();
    let (a, cert_a) = Member::start("a", None);
    let (b, cert_b) = Member::start("b", None);
    // A QUIC listener this time, and no quic_lb: nothing in a connection ID names a member.
    let (port, _, _) = quic_stack(&f, None, &[(a.port, None), (b.port, None)], "QUIC").await;
    let roots = [cert_a, cert_b];
    let clients = clients_on_both(port, &roots).await;
    assert!(quic_flows(&f, "dcid_hash").await >= clients.len() as f64);
    assert_eq!(quic_flows(&f, "server_id").await, 0.0);
    // Streams keep working while clients stay where they are.
    for (c, name) in &clients {
        assert_eq!(c.ask().await.as_deref(), Ok(name.as_str()));
    }
    // Migrated, their short-header packets carry no server ID: they follow source-IP
    // persistence and hash, which sends them all to one member, so the connections of the
    // other member's clients break.
    for (c, _) in &clients {
        c.rebind("127.0.0.2");
    }
    let mut kept = Vec::new();
    let mut lost = Vec::new();
    for (c, name) in &clients {
        match c.ask().await {
            Ok(got) => {
                assert_eq!(&got, name, "a connection moved members and still answered?");
                kept.push(name.clone());
            }
            Err(_) => lost.push(name.clone()),
        }
    }
    kept.sort();
    kept.dedup();
    assert!(kept.len() <= 1, "survivors on both members: {kept:?}");
    assert!(
        lost.len() >= 2,
        "the other member's clients break ({kept:?} kept, {lost:?} lost)"
    );
    assert!(quic_flows(&f, "source").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huawei_quic_pools_with_quic_cid_serve_quic() {
    use common::huawei::HUAWEI_CONFIG;
    use common::stack::{eventually, huawei_lb, huawei_udp_pool};
    let f = Fulcrum::start_configured(HUAWEI_CONFIG, &[]);
    let (a, cert_a) = Member::start("a", None);
    let (b, cert_b) = Member::start("b", None);
    let (h, subnet, lb, vip) = huawei_lb(&f, "quic").await;
    // Created with SOURCE_IP, then switched to QUIC_CID with update_pool (seed 002).
    let (pool, port, _) = huawei_udp_pool(
        &f,
        &h,
        (&lb, &subnet),
        json!({"protocol": "QUIC", "lb_algorithm": "SOURCE_IP", "name": "quic",
            "session_persistence": {"type": "SOURCE_IP", "persistence_timeout": 1}}),
        &[a.port, b.port],
    )
    .await;
    let updated = h
        .expect(
            200,
            "PUT",
            &format!("/v3/{{p}}/elb/pools/{pool}"),
            Some(json!({"pool": {"lb_algorithm": "QUIC_CID"}})),
        )
        .await;
    assert_eq!(updated["pool"]["lb_algorithm"], "QUIC_CID", "{updated}");
    let served = eventually(Duration::from_secs(10), || async {
        f.read(&format!("/v1/pools/{pool}")).await["provisioning_status"] == "ACTIVE"
    })
    .await;
    assert!(served, "the pool's update is not served");
    // Huawei members carry no server ID: handshakes are hashed by DCID, over both members.
    let roots = [cert_a, cert_b];
    let mut names = Vec::new();
    for _ in 0..40 {
        let c = Client::connect_to(SocketAddr::new(vip, port), &roots).await;
        let name = c
            .ask()
            .await
            .expect("a stream through the Huawei-made QUIC pool");
        assert_eq!(
            c.ask().await.as_deref(),
            Ok(name.as_str()),
            "a second stream"
        );
        names.push(name);
        if names.iter().any(|n| n == "a") && names.iter().any(|n| n == "b") {
            break;
        }
    }
    assert!(
        names.iter().any(|n| n == "a") && names.iter().any(|n| n == "b"),
        "connections spread over both members: {names:?}"
    );
    assert_eq!(quic_flows(&f, "dcid_hash").await, names.len() as f64);
}

/// The native API refuses bad QUIC-LB settings by field, and shows what it accepted.
#[tokio::test]
async fn quic_lb_and_server_ids_through_the_native_api() {
    let f = Fulcrum::start();
    let lb = f.loadbalancer().await;
    let pool = f
        .apply(
            "POST",
            &format!("/v1/loadbalancers/{lb}/pools"),
            Some(
                json!({"name": "q", "protocol": "QUIC", "algorithm": "QUIC_CID",
                "session_persistence": {"type": "SOURCE_IP"},
                "quic_lb": {"server_id_len": 2, "config_id": 1}}),
            ),
        )
        .await
        .id();
    let p = f.read(&format!("/v1/pools/{pool}")).await;
    assert_eq!(
        p["quic_lb"],
        json!({"config_id": 1, "server_id_len": 2, "nonce_len": 4}),
        "{p}"
    );
    let member = f.member(&pool, 4433, json!({"server_id": "0a0b"})).await;
    let m = f.read(&format!("/v1/pools/{pool}/members/{member}")).await;
    assert_eq!(m["server_id"], "0a0b", "{m}");
    let members = format!("/v1/pools/{pool}/members");
    let cases = [
        (
            members.as_str(),
            "POST",
            json!({"address": "127.0.0.1", "port": 4434, "server_id": "0A0B"}),
            "server_id",
        ),
        (
            &members,
            "POST",
            json!({"address": "127.0.0.1", "port": 4434, "server_id": "0a0b0c"}),
            "server_id",
        ),
        (
            &members,
            "POST",
            json!({"address": "127.0.0.1", "port": 4434, "server_id": "zz"}),
            "server_id",
        ),
    ];
    for (path, method, body, field) in cases {
        let r = f.api.call(method, path, Some(body.clone())).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(
            r.body["field"].as_str().is_some_and(|f| f.ends_with(field)),
            "{body}: {}",
            r.body
        );
    }
    // The pool's server-ID length cannot change under its members' IDs.
    let r = f
        .api
        .call(
            "PATCH",
            &format!("/v1/pools/{pool}"),
            Some(json!({"quic_lb": {"server_id_len": 3}})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["field"], "quic_lb", "{}", r.body);
    // Only QUIC pools take quic_lb.
    let r = f
        .api
        .call(
            "POST",
            &format!("/v1/loadbalancers/{lb}/pools"),
            Some(json!({"protocol": "UDP", "quic_lb": {"server_id_len": 2}})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["field"], "quic_lb", "{}", r.body);
}
