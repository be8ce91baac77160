//! TLS termination end to end: certificates from the API, ALPN (h2 and http/1.1), SNI.
#![allow(clippy::unwrap_used)] // test helpers may panic

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::backend::Backend;
use common::proxy::ForwardProxy;
use common::stack::eventually;
use common::tls::{cert, tls_connect as connect};
use common::{Server, free_port};
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpStream;

/// The `X-Forwarded-Proto` of the last request `b` answered.
fn forwarded_proto(b: &Backend) -> String {
    b.last_headers()
        .and_then(|h| h.get("x-forwarded-proto")?.to_str().ok().map(str::to_owned))
        .unwrap_or_else(|| "none".into())
}

#[tokio::test]
async fn terminates_tls_with_alpn_and_sni() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let api = server.client();
    let upstream = Backend::start("plain").await;
    let default = cert(&["default.test"]);
    let shop = cert(&["shop.test"]);
    let wild = cert(&["*.api.test"]);

    let lb = api.loadbalancer().await;
    let pool = api.pool(&lb, "HTTP", "ROUND_ROBIN").await;
    api.member(&pool, upstream.port(), json!({})).await;
    let port = free_port();
    let listener = api
        .ok(
            "POST",
            &format!("/v1/loadbalancers/{lb}/listeners"),
            Some(json!({
                "protocol": "TERMINATED_HTTPS", "port": port, "default_pool_id": pool,
                "tls": {
                    "certificate_chain_pem": default.pem, "private_key_pem": default.key,
                    "sni_certificates": [
                        {"server_name": "shop.test", "certificate_chain_pem": shop.pem, "private_key_pem": shop.key},
                        {"server_name": "*.api.test", "certificate_chain_pem": wild.pem, "private_key_pem": wild.key}
                    ]
                }
            })),
        )
        .await;
    assert_eq!(
        listener.body["tls"]["private_key_pem"], "***",
        "keys are write-only"
    );
    assert_eq!(
        listener.body["tls"]["sni_certificates"][0]["private_key_pem"],
        "***"
    );
    api.applied(&listener).await;

    // h2 negotiated by ALPN.
    let tls = connect(port, "default.test", &default.der, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let req = Request::get("https://default.test/")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"plain");
        assert_eq!(forwarded_proto(&upstream), "https");
    }

    // HTTP/1.1 over TLS.
    let tls = connect(port, "default.test", &default.der, &[b"http/1.1"]).await;
    assert_eq!(get_over(tls, "default.test").await, 200);

    // SNI picks the certificate: each name verifies only against its own certificate.
    for (name, c) in [
        ("shop.test", &shop),
        ("x.api.test", &wild),
        ("other.test", &default),
    ] {
        let tls = connect(
            port,
            if name == "other.test" {
                "default.test"
            } else {
                name
            },
            &c.der,
            &[b"http/1.1"],
        )
        .await;
        let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        assert_eq!(presented, c.der, "{name}");
    }

    // A certificate whose key does not match is refused by the data plane, and the
    // listener stays unbound rather than serving something else.
    let bad_port = free_port();
    let r = api
        .call(
            "POST",
            &format!("/v1/loadbalancers/{lb}/listeners"),
            Some(json!({
                "protocol": "TERMINATED_HTTPS", "port": bad_port, "default_pool_id": pool,
                "tls": {"certificate_chain_pem": shop.pem, "private_key_pem": default.key}
            })),
        )
        .await;
    assert_eq!(r.status, 201);
    // The change's work request fails, and the API says why.
    let wr = api.settled(&r).await;
    assert_eq!(wr["status"], "FAILED", "{wr}");
    let why = wr["error"]["message"].as_str().unwrap();
    assert!(why.contains("KeyMismatch"), "{why}");
    assert!(TcpStream::connect(("127.0.0.1", bad_port)).await.is_err());
    let bad = api
        .ok("GET", &format!("/v1/listeners/{}", r.id()), None)
        .await;
    assert_eq!(bad.body["operating_status"], "ERROR", "{}", bad.body);
    assert_eq!(bad.body["provisioning_status"], "ERROR", "{}", bad.body);
    let reason = bad.body["status_reason"].as_str().unwrap();
    assert!(
        reason.contains("tls") && reason.contains("KeyMismatch"),
        "{reason}"
    );
    // The good listener keeps serving: a request over it is answered.
    let tls = connect(port, "shop.test", &shop.der, &[b"http/1.1"]).await;
    assert_eq!(get_over(tls, "shop.test").await, 200);
}

/// The status of `GET /` for `host`, over an HTTP/1.1 connection already open.
async fn get_over<T>(io: T, host: &str) -> u16
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/")
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    sender.send_request(req).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn https_health_checks_speak_tls() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let api = server.client();
    let c = cert(&["member.test"]);
    let member_backend = Backend::start_tls("tls backend", &c, None).await;
    member_backend.set_health(503);
    let port = member_backend.port();

    let lb = api.loadbalancer().await;
    let pool = api.pool(&lb, "HTTPS", "ROUND_ROBIN").await;
    let member = api.member(&pool, port, json!({})).await;
    api.monitor(
        &pool,
        json!({"type": "HTTPS", "interval_ms": 300, "timeout_ms": 300, "healthy_threshold": 1,
               "unhealthy_threshold": 1, "domain_name": "member.test"}),
    )
    .await;
    let status = || api.member_status(&pool, &member);
    let within = std::time::Duration::from_secs(10);
    assert!(
        eventually(within, || async { status().await == "ERROR" }).await,
        "503 on /health over TLS marks the member down"
    );
    member_backend.set_health(200);
    assert!(
        eventually(within, || async { status().await == "ONLINE" }).await,
        "200 over TLS brings it back"
    );
}

/// TLS to members: chain and name checked by default against the configured CA; a wrong
/// name fails (502) until name checking is turned off; without the CA the chain fails
/// until chain checking is turned off.
#[tokio::test]
async fn upstream_tls_validation_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let api = server.client();
    let good = cert(&["127.0.0.1"]);
    let wrong_name = cert(&["elsewhere.test"]);
    let good_backend = Backend::start_tls("good", &good, None).await;
    let wrong_backend = Backend::start_tls("wrong", &wrong_name, None).await;
    let (good_port, wrong_port) = (good_backend.port(), wrong_backend.port());

    let lb = api.loadbalancer().await;
    let mut urls = Vec::new();
    let mut pools = Vec::new();
    for (name, port, ca) in [
        ("good", good_port, &good.pem),
        ("wrong", wrong_port, &wrong_name.pem),
    ] {
        let pool = api
            .ok(
                "POST",
                &format!("/v1/loadbalancers/{lb}/pools"),
                Some(json!({"name": name, "protocol": "HTTP", "upstream": {
                    "scheme": "https", "tls": {"ca_certificates_pem": ca}
                }})),
            )
            .await
            .id();
        api.ok(
            "POST",
            &format!("/v1/pools/{pool}/members"),
            Some(json!({"address": "127.0.0.1", "port": port})),
        )
        .await;
        let lport = api.http_listener(&lb, &pool).await;
        urls.push(format!("http://127.0.0.1:{lport}/"));
        pools.push(pool);
    }
    let http = common::http_client();
    let status = |url: String| {
        let http = http.clone();
        async move { http.get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(urls[0].clone()).await, 200, "valid chain and name");
    assert_eq!(
        status(urls[1].clone()).await,
        502,
        "the name does not match"
    );

    let patch = |pool: String, body: serde_json::Value| {
        let api = api.clone();
        async move {
            let r = api
                .ok("PATCH", &format!("/v1/pools/{pool}"), Some(body))
                .await;
            api.applied(&r).await;
        }
    };
    patch(
        pools[1].clone(),
        json!({"upstream": {"tls": {"validate_certificate_name": false}}}),
    )
    .await;
    assert_eq!(status(urls[1].clone()).await, 200, "name checks off");

    // Without the CA the chain is unknown: refused until chain checks are off.
    patch(
        pools[0].clone(),
        json!({"upstream": {"tls": {"ca_certificates_pem": null}}}),
    )
    .await;
    assert_eq!(status(urls[0].clone()).await, 502, "unknown issuer");
    patch(
        pools[0].clone(),
        json!({"upstream": {"tls": {"validate_certificate_chain": false}}}),
    )
    .await;
    assert_eq!(
        status(urls[0].clone()).await,
        200,
        "chain checks off, name still right"
    );
}

/// Members reached through a forward proxy: absolute-form for http members, CONNECT for
/// https ones, with basic proxy credentials.
#[tokio::test]
async fn members_behind_a_forward_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let api = server.client();
    let forward_proxy = ForwardProxy::start().await;
    let proxy = forward_proxy.port;
    let plain_backend = Backend::start("plain").await;
    let plain = plain_backend.port();
    let good = cert(&["127.0.0.1"]);
    let secure_backend = Backend::start_tls("tls backend", &good, None).await;
    let secure = secure_backend.port();
    let lb = api.loadbalancer().await;
    let mut urls = Vec::new();
    for (name, port, upstream) in [
        (
            "plain",
            plain,
            json!({"proxy": {"url": format!("http://127.0.0.1:{proxy}"), "username": "u", "password": "p"}}),
        ),
        (
            "secure",
            secure,
            json!({"scheme": "https", "tls": {"ca_certificates_pem": good.pem},
                                   "proxy": {"url": format!("http://127.0.0.1:{proxy}"), "username": "u", "password": "p"}}),
        ),
    ] {
        let pool = api
            .ok(
                "POST",
                &format!("/v1/loadbalancers/{lb}/pools"),
                Some(json!({"name": name, "protocol": "HTTP", "upstream": upstream})),
            )
            .await
            .id();
        api.ok(
            "POST",
            &format!("/v1/pools/{pool}/members"),
            Some(json!({"address": "127.0.0.1", "port": port})),
        )
        .await;
        let lport = api.http_listener(&lb, &pool).await;
        urls.push(format!("http://127.0.0.1:{lport}/path?q=1"));
    }
    let http = common::http_client();
    let r = http.get(&urls[0]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "plain");
    assert_eq!(forwarded_proto(&plain_backend), "http");
    let r = http.get(&urls[1]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "tls backend");
    let seen = forward_proxy.requests();
    let basic = Some("Basic dTpw".to_owned()); // base64("u:p")
    assert!(
        seen.contains(&(
            format!("GET http://127.0.0.1:{plain}/path?q=1 HTTP/1.1"),
            basic.clone()
        )),
        "{seen:?}"
    );
    assert!(
        seen.contains(&(format!("CONNECT 127.0.0.1:{secure} HTTP/1.1"), basic)),
        "{seen:?}"
    );
    // Credentials are write-only.
    let pools = api.items("/v1/pools").await;
    assert!(
        pools
            .iter()
            .all(|p| p["upstream"]["proxy"]["password"] == "***"),
        "{pools:?}"
    );
}

/// An `HTTPS` listener passes TLS through at L4: the client's handshake reaches the member,
/// which answers with its own certificate (fulcrum holds none), and the request inside is
/// the member's to read.
#[tokio::test]
async fn https_listeners_pass_tls_through_to_the_member() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let api = server.client();
    let member_cert = cert(&["member.test"]);
    let member = Backend::start_tls("member", &member_cert, None).await;
    let member_port = member.port();
    let lb = api.loadbalancer().await;
    let pool = api.pool(&lb, "HTTPS", "ROUND_ROBIN").await;
    api.member(&pool, member_port, json!({})).await;
    let port = free_port();
    api.listener(&lb, "HTTPS", port, Some(&pool)).await;
    // Trusting only the member's certificate: the handshake succeeds only if it is the
    // member that answers it.
    let tls = connect(port, "member.test", &member_cert.der, &[b"http/1.1"]).await;
    let (_, conn) = tls.get_ref();
    assert_eq!(
        conn.peer_certificates().and_then(|c| c.first().cloned()),
        Some(member_cert.der.clone()),
        "the member's own certificate"
    );
    assert_eq!(get_over(tls, "member.test").await, 200);
}

/// `credentials.client_certificate_pem`: a member that requires a client certificate refuses
/// fulcrum's handshake (502) until the pool presents one it trusts.
#[tokio::test]
async fn upstream_client_certificates_are_presented() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let api = server.client();
    let member_cert = cert(&["127.0.0.1"]);
    let client_cert = cert(&["fulcrum.client.test"]);
    let member = Backend::start_tls("member", &member_cert, Some(&client_cert)).await;
    let member_port = member.port();
    let lb = api.loadbalancer().await;
    let pool = api.pool(&lb, "HTTP", "ROUND_ROBIN").await;
    let upstream = |credentials: serde_json::Value| {
        json!({"upstream": {
            "scheme": "https",
            "tls": {"ca_certificates_pem": member_cert.pem},
            "credentials": credentials,
        }})
    };
    api.apply(
        "PATCH",
        &format!("/v1/pools/{pool}"),
        Some(upstream(json!({}))),
    )
    .await;
    api.member(&pool, member_port, json!({})).await;
    let port = free_port();
    api.listener(&lb, "HTTP", port, Some(&pool)).await;
    let url = format!("http://127.0.0.1:{port}/");
    let http = common::http_client();
    let status = || async { http.get(&url).send().await.unwrap().status().as_u16() };
    assert_eq!(
        status().await,
        502,
        "no client certificate: the member refuses"
    );

    let pem = format!("{}{}", client_cert.pem, client_cert.key);
    api.apply(
        "PATCH",
        &format!("/v1/pools/{pool}"),
        Some(upstream(json!({"client_certificate_pem": pem}))),
    )
    .await;
    assert_eq!(
        status().await,
        200,
        "with the client certificate the member answers"
    );
}

/// A client that remembers sessions, for TLS `version`, resuming TLS 1.2 sessions with
/// `tls12` (session IDs only, or tickets too).
fn resuming_client(
    trust: &rustls::pki_types::CertificateDer<'static>,
    version: &'static rustls::SupportedProtocolVersion,
    tls12: rustls::client::Tls12Resumption,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trust.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[version])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::in_memory_sessions(16).tls12_resumption(tls12);
    Arc::new(config)
}

/// Connects with `config` and sends one request; returns how the handshake went.
async fn handshake_and_get(config: &Arc<rustls::ClientConfig>, port: u16) -> rustls::HandshakeKind {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(
            rustls::pki_types::ServerName::try_from("resume.test").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let kind = tls.get_ref().1.handshake_kind().unwrap();
    // Reading the answer also reads the TLS 1.3 tickets sent after the handshake.
    assert_eq!(get_over(tls, "resume.test").await, 200);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    kind
}

/// Clients resume their sessions: by ticket (TLS 1.3 and 1.2) and by session ID (TLS 1.2),
/// also after the listener changed (its ticket keys and session cache are passed on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_resume_by_ticket_and_by_id() {
    use rustls::HandshakeKind::{Full, Resumed};
    use rustls::client::Tls12Resumption;
    let b = common::backend::Backend::start("b").await;
    let c = cert(&["resume.test"]);
    let s = common::stack::Stack::with(
        "ROUND_ROBIN",
        &[(b.port(), json!({}))],
        "TERMINATED_HTTPS",
        common::tls::listener_tls(&c),
    )
    .await;
    let clients = [
        (
            "TLS 1.3 tickets",
            resuming_client(&c.der, &rustls::version::TLS13, Tls12Resumption::Disabled),
        ),
        (
            "TLS 1.2 tickets",
            resuming_client(
                &c.der,
                &rustls::version::TLS12,
                Tls12Resumption::SessionIdOrTickets,
            ),
        ),
        (
            "TLS 1.2 session IDs",
            resuming_client(
                &c.der,
                &rustls::version::TLS12,
                Tls12Resumption::SessionIdOnly,
            ),
        ),
    ];
    for (what, client) in &clients {
        assert_eq!(
            handshake_and_get(client, s.port).await,
            Full,
            "{what}: first"
        );
        assert_eq!(
            handshake_and_get(client, s.port).await,
            Resumed,
            "{what}: again"
        );
    }
    // A TLS 1.2 session resumed above may have used its ID: OpenSSL shows the ticket itself
    // (a server without ticket keys sends none in TLS 1.2).
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-tls1_2",
            "-servername",
            "resume.test",
            "-connect",
        ])
        .arg(format!("127.0.0.1:{}", s.port))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl s_client (scripts/test installs openssl)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("TLS session ticket lifetime hint"),
        "no session ticket in TLS 1.2:\n{text}"
    );
    let listeners =
        s.f.items(&format!("/v1/loadbalancers/{}/listeners", s.lb))
            .await;
    let id = listeners[0]["id"].as_str().unwrap().to_owned();
    s.f.apply(
        "PATCH",
        &format!("/v1/listeners/{id}"),
        Some(json!({"timeouts": {"idle_ms": 30_000}})),
    )
    .await;
    for (what, client) in &clients {
        assert_eq!(
            handshake_and_get(client, s.port).await,
            Resumed,
            "{what}: after the listener changed"
        );
    }
}

/// Accepts any certificate and keeps the OCSP response the server stapled.
#[derive(Debug, Default)]
struct StapleCatcher(parking_lot::Mutex<Option<Vec<u8>>>);

impl rustls::client::danger::ServerCertVerifier for StapleCatcher {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        *self.0.lock() = Some(ocsp_response.to_vec());
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// What `sni` gets stapled by the listener on `port`.
async fn stapled(port: u16, sni: &str) -> Vec<u8> {
    let catcher = Arc::new(StapleCatcher::default());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(catcher.clone())
    .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let _tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from(sni.to_owned()).unwrap(),
            tcp,
        )
        .await
        .unwrap();
    catcher.0.lock().clone().unwrap_or_default()
}

/// An OCSP response given with a certificate is stapled to handshakes that ask for one,
/// per certificate, and replaced through the API without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ocsp_responses_are_stapled() {
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let b = common::backend::Backend::start("b").await;
    let (main, shop) = (cert(&["main.test"]), cert(&["shop.test"]));
    let mut tls = common::tls::listener_tls(&main);
    tls["tls"]["ocsp_response_base64"] = json!(b64(b"staple for main"));
    tls["tls"]["sni_certificates"] = json!([{
        "server_name": "shop.test", "certificate_chain_pem": shop.pem,
        "private_key_pem": shop.key, "ocsp_response_base64": b64(b"staple for shop")
    }]);
    let s = common::stack::Stack::with(
        "ROUND_ROBIN",
        &[(b.port(), json!({}))],
        "TERMINATED_HTTPS",
        tls.clone(),
    )
    .await;
    assert_eq!(stapled(s.port, "main.test").await, b"staple for main");
    assert_eq!(stapled(s.port, "shop.test").await, b"staple for shop");

    let listeners =
        s.f.items(&format!("/v1/loadbalancers/{}/listeners", s.lb))
            .await;
    let id = listeners[0]["id"].as_str().unwrap().to_owned();
    let r =
        s.f.call(
            "PATCH",
            &format!("/v1/listeners/{id}"),
            Some(json!({"tls": {"ocsp_response_base64": "not base64!"}})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.to_string().contains("tls.ocsp_response_base64"),
        "{}",
        r.body
    );
    let mut renewed = tls["tls"].clone();
    renewed["ocsp_response_base64"] = json!(b64(b"renewed staple"));
    s.f.apply(
        "PATCH",
        &format!("/v1/listeners/{id}"),
        Some(json!({"tls": renewed})),
    )
    .await;
    assert_eq!(stapled(s.port, "main.test").await, b"renewed staple");
}
