//! Runs the real `fulcrum` binary on a free port with its own data directory; the
//! submodules hold what data-plane tests build on: [`stack`] (the server driven through
//! the API, one pool behind one listener, waiting helpers), [`backend`] (HTTP and TCP
//! echo members), [`capture`] (a raw member that records exact bytes), [`raw`] (a raw
//! HTTP/1.1 client), [`tls`] (certificates and a TLS client), [`proxy`] (a forward proxy
//! that records what it was sent), and [`oci`] and [`huawei`] (requests signed as those
//! clouds' SDKs sign them).
#![allow(dead_code)]

pub mod backend;
pub mod capture;
pub mod huawei;
pub mod oci;
pub mod proxy;
pub mod raw;
pub mod stack;
pub mod tls;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub const TOKEN: &str = "test-token-0123456789";

pub struct Server {
    pub child: Child,
    pub base: String,
    pub data_dir: PathBuf,
}

impl Server {
    pub fn start(data_dir: &Path) -> Server {
        Self::start_with(data_dir, &[])
    }

    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Server {
        Self::start_through(Command::new(env!("CARGO_BIN_EXE_fulcrum")), data_dir, extra)
    }

    /// Starts `fulcrum serve` with `command`, which runs the binary (directly, or through a
    /// wrapper such as `nsenter`).
    pub fn start_through(command: Command, data_dir: &Path, extra: &[&str]) -> Server {
        Self::spawn(command, data_dir, extra, Stdio::inherit(), "warn")
    }

    /// Starts `fulcrum serve` with its logs (stderr), filtered by `log_filter`
    /// (`FULCRUM_LOG`), written to the file `log` (a file, not a terminal).
    pub fn start_logging(data_dir: &Path, extra: &[&str], log: &Path, log_filter: &str) -> Server {
        Self::start_through_logging(
            Command::new(env!("CARGO_BIN_EXE_fulcrum")),
            data_dir,
            extra,
            log,
            log_filter,
        )
    }

    /// [`Server::start_through`] with its logs in the file `log`, as [`Server::start_logging`].
    pub fn start_through_logging(
        command: Command,
        data_dir: &Path,
        extra: &[&str],
        log: &Path,
        log_filter: &str,
    ) -> Server {
        let file = std::fs::File::create(log).expect("create the log file");
        Self::spawn(command, data_dir, extra, Stdio::from(file), log_filter)
    }

    fn spawn(
        mut command: Command,
        data_dir: &Path,
        extra: &[&str],
        stderr: Stdio,
        log_filter: &str,
    ) -> Server {
        // The test token, unless the caller removed it on purpose (fulcrum then generates
        // one in the data directory).
        let token_removed = command
            .get_envs()
            .any(|(k, v)| k == "FULCRUM_API_TOKEN" && v.is_none());
        if !token_removed {
            command.env("FULCRUM_API_TOKEN", TOKEN);
        }
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("FULCRUM_LOG", log_filter)
            .env_remove("FULCRUM_LOG_FORMAT")
            // Colour must follow whether stderr is a terminal, whatever the environment says.
            .env_remove("NO_COLOR")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn fulcrum serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("fulcrum serve exited before listening")
                .expect("read stdout");
            if let Some(rest) = line.split("API listening on ").nth(1) {
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
            }
            // A data-plane node serves no API, only health and metrics.
            if let Some(rest) = line.split("health and metrics on ").nth(1) {
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            base,
            data_dir: data_dir.to_owned(),
        }
    }

    /// SIGKILL: no chance to flush or shut down cleanly.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    pub fn client(&self) -> Api {
        Api {
            base: self.base.clone(),
            http: http_client(),
            token: Some(TOKEN.to_owned()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    pub token: Option<String>,
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    pub fn id(&self) -> String {
        self.body["id"].as_str().expect("id in body").to_owned()
    }
}

impl Api {
    /// A client that opens a new connection per request: a server may close a connection
    /// whose request body it did not read, and a pooled client would race that close.
    pub fn unpooled(&self) -> Api {
        Api {
            http: http_builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("client"),
            ..self.clone()
        }
    }

    /// The same client without a token: what a browser opening a page, or a probe, sends.
    pub fn anonymous(&self) -> Api {
        Api {
            token: None,
            ..self.clone()
        }
    }

    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = self
            .http
            .request(
                method.parse().expect("method"),
                format!("{}{path}", self.base),
            )
            .timeout(Duration::from_secs(30));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Resp {
            status,
            body,
            headers,
        }
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        let b = body.map(|b| b.to_string());
        self.raw(method, path, b.as_deref(), &[]).await
    }

    pub async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        let r = self.call(method, path, body).await;
        assert!(
            (200..300).contains(&r.status),
            "{method} {path} answered {}: {}",
            r.status,
            r.body
        );
        r
    }

    /// The body of a GET that must succeed.
    pub async fn read(&self, path: &str) -> Value {
        self.ok("GET", path, None).await.body
    }

    pub async fn items(&self, path: &str) -> Vec<Value> {
        let r = self.ok("GET", path, None).await;
        r.body["items"].as_array().expect("items").clone()
    }
}

/// An HTTP client builder. reqwest is built without a crypto provider of its own (as in the
/// binary, it takes the process's): the ring provider is installed first.
pub fn http_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

/// An HTTP client with reqwest's defaults.
/// Runs the `fulcrum` CLI with `args` against `server` (its address and the test token):
/// its exit code, stdout and stderr.
pub fn cli(server: &Server, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(args)
        .args(["--server", &server.base, "--token", TOKEN])
        .env_remove("FULCRUM_DATA_DIR")
        .output()
        .expect("run fulcrum");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn http_client() -> reqwest::Client {
    http_builder().build().expect("HTTP client")
}

/// The API settings of a test that makes thousands of changes: rate limits lifted (the
/// rate limit has its own test), and failed authentication never throttled (so has its
/// throttle, in `api_limits.rs`).
pub const UNLIMITED_API: &str =
    "[api]\nrate_per_second = 1000000.0\nrate_burst = 1000000\nauth_failure_limit = 0\n";

/// Writes `fulcrum.toml` with `UNLIMITED_API` into `dir`; returns its path for `--config`.
pub fn unlimited_config(dir: &Path) -> String {
    unlimited_config_with(dir, "")
}

/// Writes `fulcrum.toml` with `UNLIMITED_API` and then `more` (other sections) into `dir`;
/// returns its path for `--config`.
pub fn unlimited_config_with(dir: &Path, more: &str) -> String {
    let path = dir.join("fulcrum.toml");
    std::fs::write(&path, format!("{UNLIMITED_API}{more}")).expect("write config");
    path.to_str().expect("utf-8 path").to_owned()
}

/// A port free right now on 127.0.0.1 (bound and released).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl Api {
    /// Waits until the change `r` made is served: its work request succeeded.
    pub async fn applied(&self, r: &Resp) {
        let done = self.settled(r).await;
        assert_eq!(done["status"], "SUCCEEDED", "{done}");
    }

    /// Waits (up to 10 s) until the work request of the change `r` made is final, and
    /// returns it.
    pub async fn settled(&self, r: &Resp) -> Value {
        let wr = r
            .header("x-work-request-id")
            .expect("x-work-request-id header");
        self.ok(
            "GET",
            &format!("/v1/work-requests/{wr}/wait?timeout_ms=10000"),
            None,
        )
        .await
        .body
    }

    /// An HTTP listener of `lb` on a free port sending to `pool`, served once this returns.
    pub async fn http_listener(&self, lb: &str, pool: &str) -> u16 {
        let port = free_port();
        let r = self
            .ok(
                "POST",
                &format!("/v1/loadbalancers/{lb}/listeners"),
                Some(
                    serde_json::json!({"protocol": "HTTP", "port": port, "default_pool_id": pool}),
                ),
            )
            .await;
        self.applied(&r).await;
        port
    }
}
