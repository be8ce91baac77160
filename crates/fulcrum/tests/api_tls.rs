//! The API over TLS, as clients meet it on real sockets: the native API over https with a
//! bearer token, plain HTTP to the TLS port told to use https, a rotated certificate
//! served without a restart (a bad pair on the way ignored), client certificates (mTLS)
//! as principals, the connection limits on TLS connections, and the CLI with `--ca`.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::stack::wait_until;
use common::tls::{Ca, Cert};
use common::{Api, Server, TOKEN};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The token of the principal `ops`, which client certificates are mapped to.
const OPS_TOKEN: &str = "ops-token-0123456789";

/// A TLS test setup: a CA, the server's certificate and key files, and the config.
struct Setup {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Setup {
    /// Writes the server's certificate (for 127.0.0.1, from a new CA) and `fulcrum.toml`
    /// with `extra` in its `[api]` section (and whatever follows it).
    fn new(extra: &str) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("fulcrum test CA");
        let setup = Setup { dir, ca };
        setup.install(&setup.ca.server(&["127.0.0.1", "localhost"]));
        let config = format!(
            "{}tls_cert = {:?}\ntls_key = {:?}\n{extra}\n[[api.tokens]]\nname = \"ops\"\ntoken = \"{OPS_TOKEN}\"\n",
            common::UNLIMITED_API,
            setup.path("api.crt"),
            setup.path("api.key"),
        );
        std::fs::write(setup.path("fulcrum.toml"), config).expect("write config");
        std::fs::write(setup.path("ca.pem"), &setup.ca.pem).expect("write CA");
        setup
    }

    fn path(&self, name: &str) -> String {
        self.dir
            .path()
            .join(name)
            .to_str()
            .expect("utf-8 path")
            .to_owned()
    }

    /// Puts `cert` in place as the API's certificate and key (each file replaced whole).
    fn install(&self, cert: &Cert) {
        self.replace("api.crt", &cert.pem);
        self.replace("api.key", &cert.key);
    }

    fn replace(&self, name: &str, contents: &str) {
        let temp = self.path(&format!("{name}.new"));
        std::fs::write(&temp, contents).expect("write");
        std::fs::rename(&temp, self.path(name)).expect("rename");
    }

    fn start(&self) -> Server {
        let server = Server::start_with(
            &self.dir.path().join("data"),
            &["--config", &self.path("fulcrum.toml")],
        );
        assert!(server.base.starts_with("https://"), "{}", server.base);
        server
    }

    /// A TLS client config trusting this CA, with `identity` as its client certificate.
    fn client_tls(&self, identity: Option<&Cert>) -> rustls::ClientConfig {
        client_tls(
            &self.ca.der(),
            identity,
            &[&rustls::version::TLS13, &rustls::version::TLS12],
        )
    }

    /// The API over https (one connection per request), trusting this CA.
    fn api(&self, server: &Server, identity: Option<&Cert>, token: Option<&str>) -> Api {
        Api {
            base: server.base.clone(),
            http: common::http_builder()
                .tls_backend_preconfigured(self.client_tls(identity))
                .pool_max_idle_per_host(0)
                .build()
                .expect("client"),
            token: token.map(str::to_owned),
        }
    }
}

fn client_tls(
    trust: &CertificateDer<'static>,
    identity: Option<&Cert>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trust.clone()).expect("trust the CA");
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .expect("versions")
    .with_root_certificates(roots);
    match identity {
        None => builder.with_no_client_auth(),
        Some(c) => builder
            .with_client_auth_cert(
                vec![c.der.clone()],
                PrivateKeyDer::from_pem_slice(c.key.as_bytes()).expect("client key"),
            )
            .expect("client certificate"),
    }
}

fn port_of(server: &Server) -> u16 {
    server
        .base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port in base")
}

/// A TLS connection to the API with `config`: its certificate and ALPN protocol.
async fn handshake(
    port: u16,
    config: rustls::ClientConfig,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").expect("name"), tcp)
        .await
}

/// The certificate the API serves to a new connection now.
async fn served_certificate(setup: &Setup, port: u16) -> CertificateDer<'static> {
    let mut config = setup.client_tls(None);
    config.resumption = rustls::client::Resumption::disabled();
    let tls = handshake(port, config).await.expect("TLS handshake");
    tls.get_ref().1.peer_certificates().expect("a certificate")[0].clone()
}

#[tokio::test]
async fn the_native_api_over_https_with_a_bearer_token() {
    let setup = Setup::new("");
    let server = setup.start();
    let api = setup.api(&server, None, Some(TOKEN));
    let lb = api
        .ok("POST", "/v1/loadbalancers", Some(json!({"name": "web"})))
        .await;
    api.applied(&lb).await;
    let read = api.read(&format!("/v1/loadbalancers/{}", lb.id())).await;
    assert_eq!(read["name"], "web", "{read}");
    let anonymous = api.anonymous().call("GET", "/v1/loadbalancers", None).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    let wrong = Api {
        token: Some("not-a-token".into()),
        ..api.clone()
    };
    assert_eq!(
        wrong.call("GET", "/v1/loadbalancers", None).await.status,
        401
    );

    // HTTP/2 and HTTP/1.1 are offered by ALPN, over TLS 1.3 and 1.2 alike.
    let port = port_of(&server);
    for (version, alpn) in [
        (&rustls::version::TLS13, &b"h2"[..]),
        (&rustls::version::TLS12, &b"http/1.1"[..]),
    ] {
        let mut config = client_tls(&setup.ca.der(), None, &[version]);
        config.alpn_protocols = vec![alpn.to_vec()];
        let tls = handshake(port, config).await.expect("handshake");
        let (_, conn) = tls.get_ref();
        assert_eq!(conn.alpn_protocol(), Some(alpn));
        assert_eq!(conn.protocol_version(), Some(version.version));
    }
}

#[tokio::test]
async fn plain_http_to_the_tls_port_is_told_to_use_https() {
    let setup = Setup::new("");
    let server = setup.start();
    let plain = format!("http://127.0.0.1:{}/v1/loadbalancers", port_of(&server));
    let resp = common::http_client()
        .get(&plain)
        .bearer_auth(TOKEN)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("an answer, not a reset");
    assert_eq!(resp.status().as_u16(), 400);
    let text = resp.text().await.expect("body");
    assert!(text.contains("HTTPS only"), "{text}");
    // Nothing else changed: https goes on.
    let api = setup.api(&server, None, Some(TOKEN));
    api.ok("GET", "/v1/loadbalancers", None).await;
}

#[tokio::test]
async fn a_rotated_certificate_is_served_to_new_connections_and_a_bad_pair_is_ignored() {
    let setup = Setup::new("");
    let first = setup.ca.server(&["127.0.0.1"]);
    setup.install(&first);
    let server = setup.start();
    let port = port_of(&server);
    assert_eq!(served_certificate(&setup, port).await, first.der);
    let api = setup.api(&server, None, Some(TOKEN));
    api.ok("GET", "/v1/loadbalancers", None).await;

    // Half a rotation: a new certificate beside the old key is not a pair. The API goes
    // on with the old one (checked after more than one look at the files).
    let second = setup.ca.server(&["127.0.0.1"]);
    setup.replace("api.crt", &second.pem);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(served_certificate(&setup, port).await, first.der);
    api.ok("GET", "/v1/loadbalancers", None).await;

    // The key follows: new connections get the new certificate, with no restart.
    setup.replace("api.key", &second.key);
    let served = || served_certificate(&setup, port);
    let what = "the new certificate is served";
    wait_until(Duration::from_secs(15), what, served, |c| *c == second.der).await;
    api.ok("GET", "/v1/loadbalancers", None).await;
    assert!(
        server_alive(&server),
        "the server kept running through the rotation"
    );
}

fn server_alive(server: &Server) -> bool {
    Path::new(&format!("/proc/{}", server.child.id())).exists()
}

/// The mTLS setup: client certificates required, from `clients`, the CN `ops.example`
/// being the principal `ops` and `watcher.example` the token `watcher` (which may only read
/// the load balancer `by-cert`).
fn mtls_setup(clients: &Ca) -> Setup {
    let setup = Setup::new(
        "tls_client_ca = \"CLIENT_CA\"\ntls_client_auth = \"required\"\n[[api.client_certs]]\nname = \"ops\"\nsubject_cn = \"ops.example\"\n\
         [[api.client_certs]]\nname = \"watcher\"\nsubject_cn = \"watcher.example\"\n\
         [[api.tokens]]\nname = \"watcher\"\ntoken = \"watcher-token-0123456789\"\nrole = \"read\"\nloadbalancers = [\"by-cert\"]\n",
    );
    std::fs::write(setup.path("clients.pem"), &clients.pem).expect("write client CA");
    let config = std::fs::read_to_string(setup.path("fulcrum.toml")).expect("read config");
    std::fs::write(
        setup.path("fulcrum.toml"),
        config.replace("CLIENT_CA", &setup.path("clients.pem")),
    )
    .expect("write config");
    setup
}

#[tokio::test]
async fn mtls_required_a_trusted_certificate_is_its_mapped_principal() {
    let clients = Ca::new("fulcrum test clients");
    let setup = mtls_setup(&clients);
    let log = setup.dir.path().join("fulcrum.log");
    let server = Server::start_logging(
        &setup.dir.path().join("data"),
        &[
            "--config",
            &setup.path("fulcrum.toml"),
            "--log-format",
            "json",
        ],
        &log,
        "info",
    );

    // No certificate: the handshake fails, whatever the token.
    let no_cert = setup.api(&server, None, Some(TOKEN));
    let refused = no_cert
        .http
        .get(format!("{}/v1/loadbalancers", server.base))
        .bearer_auth(TOKEN)
        .send()
        .await;
    assert!(refused.is_err(), "served without a client certificate");

    // A certificate from a CA the API does not trust: the same.
    let stranger = Ca::new("someone else").client("ops.example");
    let untrusted = setup.api(&server, Some(&stranger), None);
    let refused = untrusted
        .http
        .get(format!("{}/v1/loadbalancers", server.base))
        .send()
        .await;
    assert!(refused.is_err(), "served an untrusted client certificate");

    // A trusted certificate mapped to `ops`, and no token: authorized as `ops`.
    let ops = setup.api(&server, Some(&clients.client("ops.example")), None);
    let created = ops
        .ok(
            "POST",
            "/v1/loadbalancers",
            Some(json!({"name": "by-cert"})),
        )
        .await;
    ops.applied(&created).await;
    let request_id = created.header("x-request-id").expect("x-request-id");

    // A certificate mapped to a token has that token's role and scope.
    let other = ops
        .ok("POST", "/v1/loadbalancers", Some(json!({"name": "other"})))
        .await
        .id();
    let watcher = setup.api(&server, Some(&clients.client("watcher.example")), None);
    let seen: Vec<Value> = watcher.items("/v1/loadbalancers").await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["name"], "by-cert");
    let r = watcher
        .call("GET", &format!("/v1/loadbalancers/{other}"), None)
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = watcher
        .call("POST", "/v1/loadbalancers", Some(json!({"name": "x"})))
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (403, Some("forbidden"))
    );

    // A trusted certificate that maps to no principal authenticates no one.
    let unmapped = setup.api(&server, Some(&clients.client("nobody.example")), None);
    let who = unmapped.call("GET", "/v1/loadbalancers", None).await;
    assert_eq!(who.status, 401, "{}", who.body);
    // ...unless it also sends a token.
    let with_token = Api {
        token: Some(TOKEN.into()),
        ..unmapped.clone()
    };
    with_token.ok("GET", "/v1/loadbalancers", None).await;

    // Both refused handshakes were the server's doing, counted as such.
    let metrics = ops.call("GET", "/metrics", None).await;
    let text = metrics.body.as_str().unwrap_or_default().to_owned();
    let failed: f64 = text
        .lines()
        .find(|l| l.starts_with("fulcrum_api_connections_closed_total{reason=\"tls_handshake\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no tls_handshake count:\n{text}"));
    assert!(failed >= 2.0, "{failed} handshakes counted as failed");

    let records: Vec<Value> = std::fs::read_to_string(&log)
        .expect("read the log")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "fulcrum::audit" && l["request_id"] == request_id.as_str())
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["principal"], "ops", "{}", records[0]);
}

#[tokio::test]
async fn tls_connections_keep_the_header_and_idle_timeouts() {
    let setup = Setup::new("header_timeout_secs = 2\nidle_timeout_secs = 3\n");
    let server = setup.start();
    let port = port_of(&server);

    // TCP opened, no ClientHello: closed at the header timeout.
    let started = Instant::now();
    let mut silent = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    silent.set_nodelay(true).expect("nodelay");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(8), silent.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a silent connection was not closed: {read:?}"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );

    // Handshake done, no request: closed by the same deadline, counted from accept.
    let started = Instant::now();
    let mut quiet = handshake(port, setup.client_tls(None))
        .await
        .expect("handshake");
    let read = tokio::time::timeout(Duration::from_secs(8), quiet.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );

    // One request served, then nothing: closed at the idle timeout.
    let mut config = setup.client_tls(None);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut idle = handshake(port, config).await.expect("handshake");
    idle.write_all(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("send");
    let mut answer = Vec::new();
    while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
        let n = idle.read(&mut buf).await.expect("read the answer");
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    let served = Instant::now();
    // The rest of the answer, if any, then the close.
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match idle.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "an idle TLS connection stayed open");
    let took = served.elapsed();
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(6),
        "closed {took:?} after its answer"
    );
}

#[tokio::test]
async fn a_startup_with_an_unusable_certificate_file_names_it() {
    let setup = Setup::new("");
    setup.replace("api.crt", "not a certificate\n");
    let out = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(setup.dir.path().join("data"))
        .args(["--config", &setup.path("fulcrum.toml")])
        .output()
        .expect("run fulcrum serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&setup.path("api.crt")), "{err}");

    setup.install(&setup.ca.server(&["127.0.0.1"]));
    std::fs::remove_file(setup.path("api.key")).expect("remove the key");
    let out = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["validate", "--config", &setup.path("fulcrum.toml")])
        .output()
        .expect("run fulcrum validate");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&setup.path("api.key")) && err.contains("cannot read"),
        "{err}"
    );
}

#[tokio::test]
async fn the_cli_reaches_an_https_api_with_its_ca() {
    let setup = Setup::new("");
    let server = setup.start();
    let cli = |extra: &[&str], env: &[(&str, &str)]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fulcrum"));
        command
            .args(["lb", "create", "--name", "from-cli", "-o", "id"])
            .args(["--server", &server.base, "--token", TOKEN])
            .args(extra)
            .env_remove("FULCRUM_DATA_DIR")
            .env_remove("FULCRUM_CA");
        for (k, v) in env {
            command.env(k, v);
        }
        let out = command.output().expect("run fulcrum");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Not trusted by the system: refused, with the reason.
    let (ok, _, err) = cli(&[], &[]);
    assert!(!ok, "an unknown CA was trusted");
    assert!(err.contains("cannot reach fulcrum"), "{err}");
    let (ok, out, err) = cli(&["--ca", &setup.path("ca.pem")], &[]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = cli(&[], &[("FULCRUM_CA", &setup.path("ca.pem"))]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = cli(&["--insecure"], &[]);
    assert!(ok, "{out}{err}");
    // A CA that did not issue the API's certificate is no help.
    std::fs::write(setup.path("other.pem"), Ca::new("other").pem).expect("write");
    let (ok, _, err) = cli(&["--ca", &setup.path("other.pem")], &[]);
    assert!(!ok, "a CA that did not sign the certificate was enough");
    assert!(err.contains("cannot reach fulcrum"), "{err}");

    let api = setup.api(&server, None, Some(TOKEN));
    let made = api.items("/v1/loadbalancers").await;
    assert_eq!(
        made.iter().filter(|lb| lb["name"] == "from-cli").count(),
        3,
        "{made:?}"
    );
}

#[tokio::test]
async fn serve_applies_a_file_through_its_own_https_api() {
    let setup = Setup::new("");
    std::fs::write(
        setup.path("stack.yaml"),
        "loadbalancers:\n  - name: applied\n",
    )
    .expect("write stack.yaml");
    let server = Server::start_with(
        &setup.dir.path().join("data"),
        &[
            "--config",
            &setup.path("fulcrum.toml"),
            "--apply",
            &setup.path("stack.yaml"),
        ],
    );
    let api = setup.api(&server, None, Some(TOKEN));
    let lbs = || api.items("/v1/loadbalancers");
    let applied = |lbs: &Vec<serde_json::Value>| lbs.iter().any(|lb| lb["name"] == "applied");
    wait_until(Duration::from_secs(15), "the file is applied", lbs, applied).await;
}
