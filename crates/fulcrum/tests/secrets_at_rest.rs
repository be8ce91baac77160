//! Secrets at rest: upstream credentials, a forward proxy's password and a TLS private key
//! given through the API appear nowhere on disk (every file under the data directory) nor
//! in the logs, in clear or in base64; the data directory and its files are the owner's
//! only; and after a restart traffic still carries every secret where it belongs.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use common::backend::Backend;
use common::proxy::ForwardProxy;
use common::stack::{client, eventually};
use common::tls::{cert, listener_tls, tls_connect};
use common::{Api, Server, free_port, unlimited_config};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HEADER_SECRET: &str = "pl4nted-header-s3cret-7f3a";
const QUERY_SECRET: &str = "pl4nted-query-s3cret-91c2";
const AUTH_SECRET: &str = "pl4nted-bearer-s3cret-0d6e";
const MEMBER_SECRET: &str = "pl4nted-member-s3cret-5b8f";
const PROXY_PASSWORD: &str = "pl4nted-proxy-passw0rd-c4e1";

/// What must never be found: each secret, and its base64 at every alignment (inside a
/// longer base64 text a secret's encoding depends on where it starts), in both alphabets.
fn needles(secrets: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for secret in secrets {
        out.push((secret.to_string(), secret.to_string()));
        for shift in 0..3 {
            let mut bytes = vec![0u8; shift];
            bytes.extend_from_slice(secret.as_bytes());
            let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&bytes);
            // Characters that depend on the secret's bytes alone: after the group holding
            // the shift, before the last partial group.
            let start = if shift == 0 { 0 } else { 4 };
            let end = 4 * (bytes.len() / 3);
            let standard = &encoded[start..end];
            out.push((
                format!("base64 of {secret} (shift {shift})"),
                standard.into(),
            ));
            out.push((
                format!("url-safe base64 of {secret} (shift {shift})"),
                standard.replace('+', "-").replace('/', "_"),
            ));
        }
    }
    out
}

/// Every regular file under `dir`, however deep.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            out.extend(files_under(&entry.path()));
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
    out
}

/// Fails naming the file and the needle when any file holds any needle.
fn assert_nowhere(files: &[PathBuf], needles: &[(String, String)]) {
    for file in files {
        let bytes = std::fs::read(file).unwrap();
        for (what, needle) in needles {
            let found = bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
            assert!(!found, "{} holds {what}", file.display());
        }
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

/// Stops the server the way systemd does (SIGTERM), so whatever it writes on the way out
/// is written too.
fn stop(mut server: Server) {
    let pid = server.child.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    for _ in 0..200 {
        if server.child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("fulcrum did not stop within 10 s of SIGTERM");
}

/// GET `path` over TLS through the listener on `port`; the response text.
async fn tls_get(port: u16, trust: &common::tls::Cert, path: &str) -> String {
    let mut s = tls_connect(port, "secrets.test", &trust.der, &[b"http/1.1"]).await;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: secrets.test\r\nconnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks that traffic carries each secret to where it belongs: the pool's credentials to
/// member `a`, over HTTP and TLS; the member's own credentials and the proxy's password to
/// the forward proxy.
async fn check_traffic(
    a: &Backend,
    proxy: &ForwardProxy,
    ports: (u16, u16, u16),
    tls: &common::tls::Cert,
) {
    let (plain, through_proxy, secure) = ports;
    let c = client();
    let r = c
        .get(format!("http://127.0.0.1:{plain}/items"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = a.last_headers().unwrap();
    assert_eq!(h.get("x-api-key").unwrap(), HEADER_SECRET);
    assert_eq!(
        h.get("authorization").unwrap(),
        &format!("Bearer {AUTH_SECRET}")
    );
    assert_eq!(
        a.last_uri().as_deref(),
        Some(format!("/items?code={QUERY_SECRET}").as_str())
    );

    let answer = tls_get(secure, tls, "/over-tls").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(
        a.last_uri().unwrap(),
        format!("/over-tls?code={QUERY_SECRET}")
    );

    proxy.clear();
    let r = c
        .get(format!("http://127.0.0.1:{through_proxy}/via"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "behind-proxy");
    let heads = proxy.heads();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("u:{PROXY_PASSWORD}"));
    let head = heads
        .first()
        .expect("the proxy saw the request")
        .to_lowercase();
    assert!(
        head.contains(&format!(
            "proxy-authorization: basic {}",
            basic.to_lowercase()
        )),
        "{head}"
    );
    assert!(
        head.contains(&format!("x-member-key: {}", MEMBER_SECRET.to_lowercase())),
        "{head}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_sealed_on_disk_absent_from_logs_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = unlimited_config(dir.path());
    let first_log = dir.path().join("first.log");
    let server = Server::start_logging(&data, &["--config", &config], &first_log, "debug");
    let api = server.client();

    let a = Backend::start("a").await;
    let proxy = ForwardProxy::start().await;
    let behind_proxy = Backend::start("behind-proxy").await;
    let tls = cert(&["secrets.test"]);
    let lb = api
        .ok(
            "POST",
            "/v1/loadbalancers",
            Some(json!({"name": "s", "vip_address": "127.0.0.1"})),
        )
        .await
        .id();
    let pool = api
        .ok(
            "POST",
            &format!("/v1/loadbalancers/{lb}/pools"),
            Some(
                json!({"name": "creds", "protocol": "HTTP", "upstream": {"credentials": {
                    "headers": {"x-api-key": [HEADER_SECRET]},
                    "query": {"code": [QUERY_SECRET]},
                    "authorization": {"scheme": "Bearer", "parameter": AUTH_SECRET}
                }}}),
            ),
        )
        .await
        .id();
    api.ok(
        "POST",
        &format!("/v1/pools/{pool}/members"),
        Some(json!({"address": "127.0.0.1", "port": a.port()})),
    )
    .await;
    let proxied = api
        .ok(
            "POST",
            &format!("/v1/loadbalancers/{lb}/pools"),
            Some(json!({"name": "proxied", "protocol": "HTTP"})),
        )
        .await
        .id();
    // The member's own settings: its credentials, through a proxy with a password.
    api.ok(
        "POST",
        &format!("/v1/pools/{proxied}/members"),
        Some(json!({"address": "127.0.0.1", "port": behind_proxy.port(), "upstream": {
            "credentials": {"headers": {"x-member-key": [MEMBER_SECRET]}},
            "proxy": {"url": format!("http://127.0.0.1:{}", proxy.port), "username": "u", "password": PROXY_PASSWORD}
        }})),
    )
    .await;
    let plain = api.http_listener(&lb, &pool).await;
    let through_proxy = api.http_listener(&lb, &proxied).await;
    let secure = free_port();
    let mut body = json!({"name": "tls", "protocol": "TERMINATED_HTTPS", "port": secure, "default_pool_id": pool});
    common::stack::merge(&mut body, listener_tls(&tls));
    let r = api
        .ok(
            "POST",
            &format!("/v1/loadbalancers/{lb}/listeners"),
            Some(body),
        )
        .await;
    api.applied(&r).await;
    let ports = (plain, through_proxy, secure);
    check_traffic(&a, &proxy, ports, &tls).await;
    // A change that keeps the secrets (it rewrites the pool, and the load balancer).
    let r = api
        .ok(
            "PATCH",
            &format!("/v1/pools/{pool}"),
            Some(json!({"description": "renamed"})),
        )
        .await;
    api.applied(&r).await;
    stop(server);

    // The private key's PEM body (its DER in base64) as it would appear, line by line.
    let key_lines: Vec<&str> = tls
        .key
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .collect();
    assert!(!key_lines.is_empty());
    let mut forbidden = needles(&[
        HEADER_SECRET,
        QUERY_SECRET,
        AUTH_SECRET,
        MEMBER_SECRET,
        PROXY_PASSWORD,
    ]);
    forbidden.extend(
        key_lines
            .iter()
            .map(|l| ("a line of the TLS private key".to_owned(), l.to_string())),
    );
    let files = files_under(&data);
    for expected in ["fulcrum.redb", "secret.key"] {
        assert!(
            files.iter().any(|f| f.ends_with(expected)),
            "{expected} in {files:?}"
        );
    }
    assert_nowhere(&files, &forbidden);
    assert_nowhere(std::slice::from_ref(&first_log), &forbidden);
    // The log did record the work (a check of an empty log would prove nothing).
    let logged = std::fs::read_to_string(&first_log).unwrap();
    assert!(logged.contains("fulcrum::audit"), "{logged}");

    assert_eq!(mode(&data), 0o700, "the data directory");
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }

    // A restart reads every secret back: traffic carries them as before.
    let second_log = dir.path().join("second.log");
    let server = Server::start_logging(&data, &["--config", &config], &second_log, "debug");
    let api: Api = server.client();
    let c = client();
    assert!(
        eventually(Duration::from_secs(10), || async {
            c.get(format!("http://127.0.0.1:{plain}/ready"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await,
        "the listeners are served again"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", secure))
                .await
                .is_ok()
        })
        .await
    );
    check_traffic(&a, &proxy, ports, &tls).await;
    let shown = api.read(&format!("/v1/pools/{pool}")).await;
    assert_eq!(shown["description"], "renamed");
    assert_eq!(
        shown["upstream"]["credentials"]["headers"]["x-api-key"][0],
        "***"
    );
    stop(server);
    let files = files_under(&data);
    assert_nowhere(&files, &forbidden);
    assert_nowhere(std::slice::from_ref(&second_log), &forbidden);
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
}

/// A data directory an older version left open to others is made the owner's only, and
/// so is its store file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_left_open_is_tightened() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = data.join("fulcrum.redb");
    std::fs::File::create(&store).unwrap();
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o644)).unwrap();
    let log = dir.path().join("fulcrum.log");
    let server = Server::start_logging(&data, &[], &log, "info");
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&store), 0o600);
    assert_eq!(mode(&data.join("secret.key")), 0o600);
    stop(server);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("making it the owner's only"), "{logged}");
}

/// A node whose key is not the one the store's secrets were sealed with refuses to start,
/// saying why, rather than serving without them (or with garbage in their place).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_key_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data);
    let api = server.client();
    let lb = api
        .ok(
            "POST",
            "/v1/loadbalancers",
            Some(json!({"name": "k", "vip_address": "127.0.0.1"})),
        )
        .await
        .id();
    api.ok(
        "POST",
        &format!("/v1/loadbalancers/{lb}/pools"),
        Some(json!({"name": "p", "protocol": "HTTP", "upstream": {"credentials": {"headers": {"x-k": [HEADER_SECRET]}}}})),
    )
    .await;
    stop(server);

    let other_key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("FULCRUM_API_TOKEN", common::TOKEN)
        .env("FULCRUM_SECRET_KEY", &other_key)
        .env("FULCRUM_LOG", "info")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("API listening"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("secret key") && stderr.contains("FULCRUM_SECRET_KEY"),
        "{stderr}"
    );
    assert!(!stderr.contains(HEADER_SECRET), "{stderr}");

    // A key that is no key at all is refused just as clearly.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("FULCRUM_API_TOKEN", common::TOKEN)
        .env("FULCRUM_SECRET_KEY", "too-short")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("FULCRUM_SECRET_KEY"), "{stderr}");

    // Its own key (the file in the data directory) still opens everything.
    let server = Server::start(&data);
    let pools = server.client().items("/v1/pools").await;
    assert_eq!(pools.len(), 1);
    stop(server);
}
