//! A fulcrum server driven through the native API, with the helpers every data-plane test
//! uses: [`Fulcrum`] creates a load balancer, pools, members, listeners and monitors and
//! waits until each change is served; [`Stack`] is one pool behind one listener.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::backend::Backend;
use super::{Api, Resp, Server, free_port, unlimited_config_with};

/// A fulcrum server with the API rate limit lifted (some tests make 1,000 changes).
pub struct Fulcrum {
    pub api: Api,
    pub server: Server,
    _dir: tempfile::TempDir,
}

impl Fulcrum {
    pub fn start() -> Fulcrum {
        Self::start_with(&[])
    }

    /// With more `fulcrum serve` arguments.
    pub fn start_with(extra: &[&str]) -> Fulcrum {
        Self::start_configured("", extra)
    }

    /// With `config` appended to `fulcrum.toml` (sections besides `[api]`: `[huawei]`,
    /// `[proxy]`…) and more `fulcrum serve` arguments.
    pub fn start_configured(config: &str, extra: &[&str]) -> Fulcrum {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = unlimited_config_with(dir.path(), config);
        let mut args = vec!["--config", config.as_str()];
        args.extend_from_slice(extra);
        let server = Server::start_with(&dir.path().join("data"), &args);
        Fulcrum {
            api: server.client(),
            server,
            _dir: dir,
        }
    }

    /// Sends the server a signal (`HUP`, `TERM`…).
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.server.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name}");
    }
}

impl std::ops::Deref for Fulcrum {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

/// Building a configuration through the native API, each change waited for until served.
impl Api {
    /// Waits for the work request of a change; the data plane serves it once it succeeded.
    pub async fn wait(&self, r: &Resp) {
        self.applied(r).await;
    }

    /// A change that is waited for.
    pub async fn apply(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        let r = self.ok(method, path, body).await;
        self.wait(&r).await;
        r
    }

    pub async fn loadbalancer(&self) -> String {
        self.apply(
            "POST",
            "/v1/loadbalancers",
            Some(json!({"name": "lb", "vip_address": "127.0.0.1"})),
        )
        .await
        .id()
    }

    pub async fn pool(&self, lb: &str, protocol: &str, algorithm: &str) -> String {
        self.apply(
            "POST",
            &format!("/v1/loadbalancers/{lb}/pools"),
            Some(json!({"name": "pool", "protocol": protocol, "algorithm": algorithm})),
        )
        .await
        .id()
    }

    /// A member on 127.0.0.1:`port`; `extra` is merged in (weight, backup, offline...).
    pub async fn member(&self, pool: &str, port: u16, extra: Value) -> String {
        let mut body = json!({"address": "127.0.0.1", "port": port});
        merge(&mut body, extra);
        self.apply("POST", &format!("/v1/pools/{pool}/members"), Some(body))
            .await
            .id()
    }

    pub async fn patch_member(&self, pool: &str, member: &str, patch: Value) {
        self.apply(
            "PATCH",
            &format!("/v1/pools/{pool}/members/{member}"),
            Some(patch),
        )
        .await;
    }

    pub async fn listener(
        &self,
        lb: &str,
        protocol: &str,
        port: u16,
        pool: Option<&str>,
    ) -> String {
        self.listener_with(lb, protocol, port, pool, json!({}))
            .await
    }

    pub async fn listener_with(
        &self,
        lb: &str,
        protocol: &str,
        port: u16,
        pool: Option<&str>,
        extra: Value,
    ) -> String {
        let mut body = json!({"name": format!("l{port}"), "protocol": protocol, "port": port});
        if let Some(p) = pool {
            body["default_pool_id"] = json!(p);
        }
        merge(&mut body, extra);
        self.apply(
            "POST",
            &format!("/v1/loadbalancers/{lb}/listeners"),
            Some(body),
        )
        .await
        .id()
    }

    pub async fn monitor(&self, pool: &str, extra: Value) {
        let mut body = json!({"pool_id": pool, "type": "HTTP", "url_path": "/health"});
        merge(&mut body, extra);
        self.apply("POST", "/v1/healthmonitors", Some(body)).await;
    }

    pub async fn member_status(&self, pool: &str, member: &str) -> String {
        let r = self
            .ok("GET", &format!("/v1/pools/{pool}/members/{member}"), None)
            .await;
        r.body["operating_status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        match self.raw("GET", "/metrics", None, &[]).await.body {
            Value::String(s) => s,
            other => panic!("/metrics is not text: {other}"),
        }
    }
}

/// Adds the fields of `extra` (an object) to `base`, replacing those it names.
pub fn merge(base: &mut Value, extra: Value) {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
}

/// One pool behind one listener, one member per backend.
pub struct Stack {
    pub f: Fulcrum,
    pub lb: String,
    pub pool: String,
    pub members: Vec<String>,
    /// The listener's port on 127.0.0.1.
    pub port: u16,
    /// `http://127.0.0.1:port` (`https://` for a TERMINATED_HTTPS listener).
    pub url: String,
}

impl Stack {
    /// An HTTP pool behind an HTTP listener.
    pub async fn new(algorithm: &str, backends: &[(&Backend, Value)]) -> Stack {
        let members: Vec<(u16, Value)> = backends
            .iter()
            .map(|(b, extra)| (b.port(), extra.clone()))
            .collect();
        Stack::with(algorithm, &members, "HTTP", json!({})).await
    }

    /// An HTTP pool of members on 127.0.0.1 at the given ports (each with its extra member
    /// fields), behind one listener of `protocol` whose spec gets `listener` merged in
    /// (timeouts, tls...).
    pub async fn with(
        algorithm: &str,
        members: &[(u16, Value)],
        protocol: &str,
        listener: Value,
    ) -> Stack {
        let f = Fulcrum::start();
        let lb = f.loadbalancer().await;
        let pool = f.pool(&lb, "HTTP", algorithm).await;
        let mut ids = Vec::new();
        for (port, extra) in members {
            ids.push(f.member(&pool, *port, extra.clone()).await);
        }
        let port = free_port();
        f.listener_with(&lb, protocol, port, Some(&pool), listener)
            .await;
        let scheme = if protocol == "TERMINATED_HTTPS" {
            "https"
        } else {
            "http"
        };
        Stack {
            f,
            lb,
            pool,
            members: ids,
            port,
            url: format!("{scheme}://127.0.0.1:{port}"),
        }
    }

    /// The listener's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Sets the pool's circuit breaker rules (`upstream.circuit_breaker`), served on return.
    pub async fn circuit_breaker(&self, rules: Value) {
        self.f
            .apply(
                "PATCH",
                &format!("/v1/pools/{}", self.pool),
                Some(json!({"upstream": {"circuit_breaker": rules}})),
            )
            .await;
    }
}

pub fn client() -> reqwest::Client {
    super::http_builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// GET through the proxy: the status and the body (a backend's name when it answered).
pub async fn get(c: &reqwest::Client, url: &str) -> (u16, String) {
    match c.get(url).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(e) => (0, format!("client error: {e}")),
    }
}

/// The backend name that answered, panicking on anything but 200.
pub async fn who(c: &reqwest::Client, url: &str) -> String {
    let (status, body) = get(c, url).await;
    assert_eq!(status, 200, "GET {url}: {body}");
    body
}

/// Polls `cond` every 20 ms until it holds or `within` passes; returns whether it held.
pub async fn eventually<F, Fut>(within: Duration, cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    poll(within, cond, |held| *held).await.is_ok()
}

/// Polls `probe` every 20 ms until `done` holds for its answer, and returns that answer;
/// after `within`, panics saying `what` was awaited and what was seen last.
pub async fn wait_until<T, F, Fut>(
    within: Duration,
    what: &str,
    probe: F,
    done: impl Fn(&T) -> bool,
) -> T
where
    T: std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    match poll(within, probe, done).await {
        Ok(seen) => seen,
        Err(last) => panic!("{what}: not within {within:?}; seen last: {last:?}"),
    }
}

/// The one polling loop: `Ok` with the answer `done` accepted, or `Err` with the last.
async fn poll<T, F, Fut>(within: Duration, mut probe: F, done: impl Fn(&T) -> bool) -> Result<T, T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = Instant::now() + within;
    loop {
        let seen = probe().await;
        if done(&seen) {
            return Ok(seen);
        }
        if Instant::now() >= deadline {
            return Err(seen);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends raw bytes to 127.0.0.1:`port` and reads the answer until the server closes.
pub async fn raw_http(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether nothing listens on 127.0.0.1:`port`.
pub async fn refuses(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).await.is_err()
}

/// The value of the first `/metrics` sample line containing `needle` (`None`: no such line).
pub fn metric(text: &str, needle: &str) -> Option<f64> {
    text.lines()
        .find(|l| !l.starts_with('#') && l.contains(needle))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The JSON records of the access log at `path` once at least `n` are there (the writer
/// flushes every 50 ms); what is there after ten seconds otherwise.
pub async fn access_log_records(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let mut last = Vec::new();
    eventually(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        last = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let enough = last.len() >= n;
        async move { enough }
    })
    .await;
    last
}

/// A Huawei v3 load balancer in VPC `vpc` with a native subnet 127.0.0.0/24 for its members
/// (started with `HUAWEI_CONFIG`): the Huawei caller, the subnet's id, the load balancer's id
/// and its VIP.
pub async fn huawei_lb(f: &Fulcrum, name: &str) -> (super::huawei::Huawei, String, String, IpAddr) {
    let subnet = f
        .ok(
            "POST",
            "/v1/subnets",
            Some(json!({"name": "s", "cidr": "127.0.0.0/24", "vpc_id": "vpc"})),
        )
        .await
        .id();
    let h = super::huawei::Huawei::new(&f.api);
    let lb = h
        .expect(
            201,
            "POST",
            "/v3/{p}/elb/loadbalancers",
            Some(json!({"loadbalancer": {"name": name, "vpc_id": "vpc"}})),
        )
        .await;
    let vip = lb["loadbalancer"]["vip_address"]
        .as_str()
        .expect("vip")
        .parse()
        .expect("vip address");
    let lb = lb["loadbalancer"]["id"].as_str().expect("id").to_owned();
    (h, subnet, lb, vip)
}

/// Whether the listener is ONLINE and ACTIVE within 10 s: Huawei's create may answer before
/// the data plane serves it (a datagram sent earlier would meet a closed port).
pub async fn listener_online(f: &Fulcrum, listener: &str) -> bool {
    eventually(Duration::from_secs(10), || async {
        let l = f.read(&format!("/v1/listeners/{listener}")).await;
        l["operating_status"] == "ONLINE" && l["provisioning_status"] == "ACTIVE"
    })
    .await
}

/// Through Huawei's v3 API on `lb` ([`huawei_lb`]): a pool (`pool`: the create body's fields
/// besides `loadbalancer_id`) with a member on 127.0.0.1 at each of `ports`, behind a UDP
/// listener on a free port, served. Returns the pool's id, the port and the listener as
/// created.
pub async fn huawei_udp_pool(
    f: &Fulcrum,
    h: &super::huawei::Huawei,
    (lb, subnet): (&str, &str),
    mut pool: Value,
    ports: &[u16],
) -> (String, u16, Value) {
    pool["loadbalancer_id"] = json!(lb);
    let created = h
        .expect(
            201,
            "POST",
            "/v3/{p}/elb/pools",
            Some(json!({ "pool": pool })),
        )
        .await;
    assert_eq!(created["pool"]["protocol"], pool["protocol"], "{created}");
    let pool = created["pool"]["id"].as_str().expect("id").to_owned();
    for port in ports {
        h.expect(
            201,
            "POST",
            &format!("/v3/{{p}}/elb/pools/{pool}/members"),
            Some(
                json!({"member": {"address": "127.0.0.1", "protocol_port": port,
                "subnet_cidr_id": subnet}}),
            ),
        )
        .await;
    }
    let port = super::free_udp_port();
    let l = h
        .expect(
            201,
            "POST",
            "/v3/{p}/elb/listeners",
            Some(
                json!({"listener": {"loadbalancer_id": lb, "protocol": "UDP",
                "protocol_port": port, "default_pool_id": pool}}),
            ),
        )
        .await;
    let listener = l["listener"]["id"].as_str().expect("id");
    assert!(
        listener_online(f, listener).await,
        "the Huawei UDP listener is not ONLINE"
    );
    (pool, port, l)
}
