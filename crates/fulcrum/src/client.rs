//! A small client of the native API, shared by the CLI commands and `apply`.

use anyhow::{Context, anyhow, bail};
use reqwest::{Method, StatusCode};
use rustls::pki_types::CertificateDer;
use serde_json::Value;

pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

/// What a call returned: the body and the work request that tracks it, if any.
pub struct Reply {
    pub body: Value,
    pub work_request_id: Option<String>,
    pub etag: Option<String>,
}

/// Which server certificates an https API is trusted with.
#[derive(Clone, Debug)]
pub enum Trust {
    /// The system's trust store.
    System,
    /// Only the CAs in this PEM bundle (`--ca`, `FULCRUM_CA`).
    CaFile(std::path::PathBuf),
    /// Any certificate at all (`--insecure`: for testing only).
    Insecure,
    /// Exactly this certificate: `serve` calling its own API.
    Pinned(CertificateDer<'static>),
}

impl Client {
    /// `base` is the API's URL; a bare `host:port` means `http://host:port`. An https
    /// API's certificate is checked as `trust` says.
    pub fn new(base: String, token: String, trust: &Trust) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/');
        let base = if base.contains("://") {
            base.to_owned()
        } else {
            format!("http://{base}")
        };
        let builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(150));
        let builder = match trust {
            Trust::System => builder,
            Trust::CaFile(path) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("cannot read the CA file {}", path.display()))?;
                let cas = reqwest::Certificate::from_pem_bundle(&pem)
                    .ok()
                    .filter(|c| !c.is_empty())
                    .ok_or_else(|| anyhow!("{}: holds no PEM certificate", path.display()))?;
                builder.tls_certs_only(cas)
            }
            Trust::Insecure => builder.tls_danger_accept_invalid_certs(true),
            Trust::Pinned(cert) => builder.tls_backend_preconfigured(pinned_tls(cert.clone())?),
        };
        Ok(Self {
            base,
            token,
            http: builder.build()?,
        })
    }

    /// One call; names in the path's id positions are replaced by the ids they name first
    /// (see [`Client::with_ids`]).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> anyhow::Result<Reply> {
        let path = self.with_ids(path).await?;
        self.send(method, &path, body, if_match).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> anyhow::Result<Reply> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(tag) = if_match {
            req = req.header("if-match", tag);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow!("cannot reach fulcrum at {}: {}", self.base, root_cause(&e)))?;
        let status = resp.status();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let work_request_id = header("x-work-request-id");
        let etag = header("etag");
        let text = resp.text().await.context("reading the response")?;
        let body: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            return Err(api_error(status, &body));
        }
        Ok(Reply {
            body,
            work_request_id,
            etag,
        })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self.call(Method::GET, path, None, None).await?.body)
    }

    /// Every item of a paginated list.
    pub async fn list_all(&self, path: &str) -> anyhow::Result<Vec<Value>> {
        let path = self.with_ids(path).await?;
        self.list_as_is(&path).await
    }

    /// `path` with every name where an id belongs replaced by the id of the one resource of
    /// that name: `/v1/pools/web/members` → `/v1/pools/<id>/members`; a member by its name or
    /// `address:port`. Ids pass as they are; a name nothing has is left for the API to answer
    /// "not found"; a name several resources share is an error that lists their ids.
    pub async fn with_ids(&self, path: &str) -> anyhow::Result<String> {
        let (route, query) = match path.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (path, None),
        };
        let mut segments: Vec<String> = route.split('/').map(str::to_owned).collect();
        // A pool or listener named by its load balancer's name too (`web/app`): two segments
        // where one belongs. A pool's path goes on with `members` or ends; a listener's ends.
        if segments.len() >= 5
            && ((segments[2] == "pools" && segments[4] != "members") || segments[2] == "listeners")
        {
            let name = format!("{}/{}", segments[3], segments[4]);
            segments.splice(3..5, [name]);
        }
        for i in 1..segments.len() {
            let (kind, value) = (segments[i - 1].as_str(), segments[i].as_str());
            let named = !value.is_empty() && !looks_like_id(value) && value != "batch";
            let collection = match kind {
                "loadbalancers" | "listeners" | "pools" | "healthmonitors" | "subnets"
                | "oci-api-keys"
                    if i == 3 =>
                {
                    format!("/v1/{kind}")
                }
                "members" if i == 5 => segments[..i].join("/"),
                _ => continue,
            };
            if named {
                let id = self.resolve(&collection, value).await?;
                segments[i] = id;
            }
        }
        let route = segments.join("/");
        Ok(match query {
            Some(q) => format!("{route}?{q}"),
            None => route,
        })
    }

    /// The id of the pool (or other top-level resource) named `name_or_id`, for fields of a
    /// request body that hold an id (`default_pool_id`, `pool_id`).
    pub async fn id_of(&self, collection: &str, name_or_id: &str) -> anyhow::Result<String> {
        if looks_like_id(name_or_id) {
            return Ok(name_or_id.to_owned());
        }
        self.resolve(&format!("/v1/{collection}"), name_or_id).await
    }

    async fn resolve(&self, collection: &str, name: &str) -> anyhow::Result<String> {
        // `lb/pool`, `lb/listener`: looked up within that load balancer.
        if let Some(kind @ ("pools" | "listeners")) = collection.strip_prefix("/v1/")
            && let Some((lb, within)) = name.split_once('/')
        {
            let lb_id = match looks_like_id(lb) {
                true => lb.to_owned(),
                false => self.resolve_flat("/v1/loadbalancers", lb).await?,
            };
            if !looks_like_id(&lb_id) {
                bail!("no load balancer named {lb:?}");
            }
            let id = self
                .resolve_flat(&format!("/v1/loadbalancers/{lb_id}/{kind}"), within)
                .await?;
            if !looks_like_id(&id) {
                bail!(
                    "load balancer {lb:?} has no {} named {within:?}",
                    kind.trim_end_matches('s')
                );
            }
            return Ok(id);
        }
        self.resolve_flat(collection, name).await
    }

    /// The one id in `collection` named `name` (or `address:port`); `name` itself when none.
    async fn resolve_flat(&self, collection: &str, name: &str) -> anyhow::Result<String> {
        let items = self.list_as_is(collection).await?;
        let ids: Vec<&str> = items
            .iter()
            .filter(|v| {
                v["name"].as_str() == Some(name)
                    || v["address"]
                        .as_str()
                        .zip(v["port"].as_u64())
                        .is_some_and(|(a, p)| format!("{a}:{p}") == name)
            })
            .filter_map(|v| v["id"].as_str())
            .collect();
        match ids.as_slice() {
            [] => Ok(name.to_owned()),
            [one] => Ok((*one).to_owned()),
            many => Err(anyhow!(
                "{} resources in {collection} are named {name:?} ({}): name one by its id{}",
                many.len(),
                many.join(", "),
                if collection == "/v1/pools" || collection == "/v1/listeners" {
                    ", or as <load balancer>/<name>"
                } else {
                    ""
                }
            )),
        }
    }

    /// Every item of a paginated list at `path`, taken as it is.
    async fn list_as_is(&self, path: &str) -> anyhow::Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let url = match &token {
                Some(t) => format!("{path}{sep}limit=1000&page_token={t}"),
                None => format!("{path}{sep}limit=1000"),
            };
            let page = self.send(Method::GET, &url, None, None).await?.body;
            if let Some(list) = page.get("items").and_then(Value::as_array) {
                items.extend(list.iter().cloned());
            }
            match page.get("next_page_token").and_then(Value::as_str) {
                Some(t) => token = Some(t.to_owned()),
                None => return Ok(items),
            }
        }
    }
}

/// fulcrum's ids are UUIDs: `8-4-4-4-12` hex digits.
fn looks_like_id(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        })
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn api_error(status: StatusCode, body: &Value) -> anyhow::Error {
    let message = body
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| body.to_string());
    let code = body.get("code").and_then(Value::as_str).unwrap_or("error");
    anyhow!("{message} ({code}, HTTP {})", status.as_u16())
}

/// A TLS client config that accepts exactly `cert` (any name): how `serve` reaches its own
/// API (for `--apply` and the demo) whatever names its certificate carries.
fn pinned_tls(cert: CertificateDer<'static>) -> anyhow::Result<rustls::ClientConfig> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier = std::sync::Arc::new(Pinned {
        cert,
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
