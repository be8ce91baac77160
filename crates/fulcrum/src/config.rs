//! `fulcrum.toml`: its sections, parsed and checked without I/O. Every field is optional;
//! `serve`'s flags and environment variables win.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::bail;
use fulcrum_api::{
    ApiToken, AzureConfig, CertMatch, ClientCertPrincipal, HuaweiConfig, OciConfig, TlsFiles,
};
use serde::Deserialize;

/// How long a stopping fulcrum lets in-flight requests finish.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Parses the text of `fulcrum.toml`.
pub fn parse(text: &str) -> anyhow::Result<FileConfig> {
    Ok(toml::from_str(text)?)
}

impl FileConfig {
    /// Every check that needs no file or socket (`fulcrum validate --config`, `serve`):
    /// the API's limits, throttling and client-certificate principals, its TLS settings
    /// (the files they name, which the caller loads), and the store's URL.
    pub fn check(&self) -> anyhow::Result<Option<TlsFiles>> {
        self.api.server_limits()?;
        self.proxy.vip_ranges()?;
        self.api.auth_throttle()?;
        self.api.api_tokens()?;
        self.api.client_cert_principals()?;
        if let Some(url) = &self.store.url {
            etcd_endpoints(url)?;
        }
        self.api.tls_files()
    }
}

/// `fulcrum.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub api: ApiSection,
    #[serde(default)]
    pub proxy: ProxySection,
    #[serde(default)]
    pub oci: OciConfig,
    #[serde(default)]
    pub huawei: HuaweiConfig,
    #[serde(default)]
    pub azure: AzureConfig,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub access_log: AccessLogSection,
}

/// `[access_log]`: one record per HTTP request and TCP session.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogSection {
    /// A file to append to, or `-` for standard output; absent: no access log.
    pub path: Option<String>,
    pub format: Option<AccessLogFormat>,
}

#[derive(Clone, Copy, Debug, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    /// One JSON object per line.
    Json,
    /// One line per record, like HAProxy's httplog.
    Text,
}

/// `[log]`: how the server writes its own logs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `text` (default) or `json`; `--log-format` and `FULCRUM_LOG_FORMAT` win.
    pub format: Option<LogFormat>,
    /// Failed authentication is logged once per source address per this many seconds,
    /// as a count (default 10).
    pub auth_failure_interval_secs: Option<u64>,
}

/// How the server's logs are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (coloured only on a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySection {
    /// The longest a member's `Retry-After` may trip its circuit breaker (default 300).
    pub max_retry_after_secs: Option<u64>,
    /// Bind listeners on this address instead of each load balancer's VIP (node-local).
    pub bind_address: Option<std::net::IpAddr>,
    /// CIDRs this node can bind, that a load balancer created without an address (Huawei,
    /// OCI) is given one from (default: loopback only, `127.0.0.0/8`).
    pub vip_ranges: Option<Vec<String>>,
    /// Worker threads serving traffic (default: one per CPU; `FULCRUM_WORKERS` or
    /// `TOKIO_WORKER_THREADS` in the environment override it).
    pub workers: Option<usize>,
}

impl ProxySection {
    /// `vip_ranges`, checked: each a CIDR without host bits.
    pub fn vip_ranges(&self) -> anyhow::Result<Vec<ipnet::IpNet>> {
        let Some(ranges) = &self.vip_ranges else {
            return Ok(fulcrum_control::default_vip_ranges());
        };
        ranges
            .iter()
            .map(|r| {
                let net: ipnet::IpNet = r.parse().map_err(|_| {
                    anyhow::anyhow!(
                        "[proxy] vip_ranges: {r:?} is not a CIDR (like \"10.0.0.0/24\")"
                    )
                })?;
                if net.trunc() != net {
                    bail!(
                        "[proxy] vip_ranges: {r} has host bits set; did you mean {}?",
                        net.trunc()
                    );
                }
                Ok(net)
            })
            .collect()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// Address of the management API (default 127.0.0.1:9000).
    pub listen: Option<SocketAddr>,
    #[serde(default)]
    pub tokens: Vec<TokenEntry>,
    pub rate_per_second: Option<f64>,
    pub rate_burst: Option<u32>,
    /// A connection's request head must arrive within this many seconds (default 10).
    pub header_timeout_secs: Option<u64>,
    /// A connection with no request in flight is closed after this many seconds
    /// (default 60).
    pub idle_timeout_secs: Option<u64>,
    /// A request's body must arrive within this many seconds of its head (default 30).
    pub body_timeout_secs: Option<u64>,
    /// API connections open at once (default 1024; at most half the open-file limit).
    pub max_connections: Option<usize>,
    /// API connections open at once from one client address (default 64).
    pub max_connections_per_ip: Option<usize>,
    /// Failed authentications from one address within the window after which it is
    /// refused (429) for the window (default 20; 0: never).
    pub auth_failure_limit: Option<u32>,
    /// The window of `auth_failure_limit`, in seconds (default 60).
    pub auth_failure_window_secs: Option<u64>,
    /// The API's certificate chain (PEM, leaf first): with `tls_key`, the API speaks only
    /// HTTPS. Both are reloaded when they change.
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, RSA or EC).
    pub tls_key: Option<PathBuf>,
    /// CAs (PEM bundle) that client certificates must chain to (mTLS).
    pub tls_client_ca: Option<PathBuf>,
    /// `optional` (default: a client may present a certificate) or `required` (one
    /// without fails the handshake).
    pub tls_client_auth: Option<fulcrum_api::ClientAuth>,
    /// Client certificates that authenticate as a token's principal in the native API.
    #[serde(default)]
    pub client_certs: Vec<ClientCertEntry>,
}

/// `[[api.client_certs]]`: a verified client certificate whose subject CN (or DNS subject
/// alternative name) is this authenticates as the `[[api.tokens]]` entry `name`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCertEntry {
    pub name: String,
    pub subject_cn: Option<String>,
    pub dns_name: Option<String>,
}

impl ApiSection {
    /// The API server's limits, checked: every timeout and cap at least 1.
    pub fn server_limits(&self) -> anyhow::Result<fulcrum_api::ServerLimits> {
        let defaults = fulcrum_api::ServerLimits::default();
        let secs = |name: &str, v: Option<u64>, default: std::time::Duration| match v {
            None => Ok(default),
            Some(0) => bail!("[api] {name} must be at least 1"),
            Some(s) => Ok(std::time::Duration::from_secs(s)),
        };
        let count = |name: &str, v: Option<usize>, default: usize| match v {
            None => Ok(default),
            Some(0) => bail!("[api] {name} must be at least 1"),
            Some(n) if n > 1 << 20 => bail!("[api] {name} must be at most {}", 1 << 20),
            Some(n) => Ok(n),
        };
        Ok(fulcrum_api::ServerLimits {
            header_timeout: secs(
                "header_timeout_secs",
                self.header_timeout_secs,
                defaults.header_timeout,
            )?,
            idle_timeout: secs(
                "idle_timeout_secs",
                self.idle_timeout_secs,
                defaults.idle_timeout,
            )?,
            body_timeout: secs(
                "body_timeout_secs",
                self.body_timeout_secs,
                defaults.body_timeout,
            )?,
            max_connections: count(
                "max_connections",
                self.max_connections,
                defaults.max_connections,
            )?,
            max_connections_per_ip: count(
                "max_connections_per_ip",
                self.max_connections_per_ip,
                defaults.max_connections_per_ip,
            )?,
            shutdown_grace: SHUTDOWN_GRACE,
        })
    }

    /// The API's TLS files, checked: a certificate and its key together, client
    /// certificate settings only with a CA to verify them.
    pub fn tls_files(&self) -> anyhow::Result<Option<TlsFiles>> {
        let (cert, key) = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            (None, None) => {
                if self.tls_client_ca.is_some() || self.tls_client_auth.is_some() {
                    bail!("[api] tls_client_ca and tls_client_auth need tls_cert and tls_key");
                }
                return Ok(None);
            }
            (Some(_), None) => bail!("[api] tls_cert needs tls_key (the certificate's key)"),
            (None, Some(_)) => bail!("[api] tls_key needs tls_cert (the key's certificate)"),
        };
        if self.tls_client_auth.is_some() && self.tls_client_ca.is_none() {
            bail!(
                "[api] tls_client_auth needs tls_client_ca (the CAs client certificates chain to)"
            );
        }
        Ok(Some(TlsFiles {
            cert,
            key,
            client_ca: self.tls_client_ca.clone(),
            client_auth: self
                .tls_client_auth
                .unwrap_or(fulcrum_api::ClientAuth::Optional),
        }))
    }

    /// `[[api.tokens]]`, checked: a list of load balancers, when given, names at least one.
    pub fn api_tokens(&self) -> anyhow::Result<Vec<ApiToken>> {
        self.tokens
            .iter()
            .map(|t| {
                if t.loadbalancers.as_ref().is_some_and(Vec::is_empty) {
                    bail!(
                        "[[api.tokens]] {:?}: loadbalancers = [] would allow none; leave it out for every one",
                        t.name
                    );
                }
                Ok(ApiToken {
                    name: t.name.clone(),
                    token: t.token.clone(),
                    role: t.role,
                    loadbalancers: t.loadbalancers.clone().unwrap_or_default(),
                })
            })
            .collect()
    }

    /// `[[api.client_certs]]`, checked: each matches one name, and there is a CA to verify
    /// the certificates.
    pub fn client_cert_principals(&self) -> anyhow::Result<Vec<ClientCertPrincipal>> {
        if !self.client_certs.is_empty() && self.tls_client_ca.is_none() {
            bail!("[[api.client_certs]] needs [api] tls_client_ca to verify the certificates");
        }
        self.client_certs
            .iter()
            .map(|c| {
                let matches = match (&c.subject_cn, &c.dns_name) {
                    (Some(cn), None) if !cn.is_empty() => CertMatch::SubjectCn(cn.clone()),
                    (None, Some(dns)) if !dns.is_empty() => CertMatch::DnsName(dns.clone()),
                    _ => bail!(
                        "[[api.client_certs]] {:?}: give exactly one of subject_cn and dns_name",
                        c.name
                    ),
                };
                Ok(ClientCertPrincipal {
                    name: c.name.clone(),
                    matches,
                })
            })
            .collect()
    }

    /// The throttling of failed authentication.
    pub fn auth_throttle(&self) -> anyhow::Result<fulcrum_api::AuthThrottle> {
        let defaults = fulcrum_api::AuthThrottle::default();
        let window = match self.auth_failure_window_secs {
            None => defaults.window,
            Some(0) => bail!("[api] auth_failure_window_secs must be at least 1"),
            Some(s) => std::time::Duration::from_secs(s),
        };
        Ok(fulcrum_api::AuthThrottle {
            limit: self.auth_failure_limit.unwrap_or(defaults.limit),
            window,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub name: String,
    pub token: String,
    /// `read`, `operate` or `admin` (the default).
    #[serde(default)]
    pub role: fulcrum_api::Role,
    /// Load balancers (ids or names) the token is limited to; absent: every one.
    #[serde(default)]
    pub loadbalancers: Option<Vec<String>>,
}

/// `[store]` in `fulcrum.toml`. Parsed in every build, so one config file stays valid whether
/// or not this binary has etcd support; only builds with it read the etcd fields.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `etcd://host:port,host:port` (plain) or `etcds://…` (TLS); absent: embedded.
    pub url: Option<String>,
    /// etcd user (with `password`), when etcd has authentication on.
    pub user: Option<String>,
    pub password: Option<String>,
    /// PEM file of the CA that signed etcd's certificates (`etcds://`).
    pub ca_file: Option<String>,
    /// PEM client certificate and key, when etcd asks for client certificates.
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    /// How long a node's record outlives it in etcd (default 5 s): a dead node stops
    /// holding back work requests after this long.
    pub session_ttl_secs: Option<u64>,
    /// Finished work requests kept (default 10,000): older ones are deleted.
    pub work_requests_kept: Option<usize>,
    /// Hours a finished work request is kept at most (default 168, a week).
    pub work_requests_kept_hours: Option<u64>,
}

/// A fleet store's endpoints, parsed from `etcd://a:2379,b:2379` or `etcds://…`.
pub fn etcd_endpoints(url: &str) -> anyhow::Result<Vec<String>> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("etcd://") {
        ("http", rest)
    } else if let Some(rest) = url.strip_prefix("etcds://") {
        ("https", rest)
    } else {
        anyhow::bail!("unknown store {url:?}: use etcd://host:port[,host:port…] or etcds://…");
    };
    let endpoints: Vec<String> = rest
        .trim_end_matches('/')
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| format!("{scheme}://{h}"))
        .collect();
    anyhow::ensure!(
        !endpoints.is_empty(),
        "the store URL {url:?} names no etcd host"
    );
    Ok(endpoints)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_urls_name_every_endpoint() {
        assert_eq!(
            etcd_endpoints("etcd://h1:2379,h2:2379").ok(),
            Some(vec!["http://h1:2379".into(), "http://h2:2379".into()])
        );
        assert_eq!(
            etcd_endpoints("etcds://e:2379/").ok(),
            Some(vec!["https://e:2379".into()])
        );
        assert!(etcd_endpoints("http://h1:2379").is_err());
        assert!(etcd_endpoints("etcd://").is_err());
    }
}
