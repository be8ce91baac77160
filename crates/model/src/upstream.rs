//! How the data plane reaches a member: scheme and base path, credentials, TLS checks,
//! a forward proxy and circuit-breaker rules (seed 003).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Checker, ValidationError, is_header_name, is_header_value};

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamScheme {
    #[default]
    Http,
    Https,
}

/// The `Host` a member is sent.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum HostHeader {
    /// The client's own `Host` passes through: virtual hosts behind the load balancer see
    /// the name the client asked for (the default, as HAProxy and cloud load balancers do).
    #[default]
    Client,
    /// The member's own address, with its port unless it is the scheme's default: what a
    /// client calling the member directly would send, and what an API gateway sends to a
    /// backend URL (Azure API Management does). The client's host stays in `Forwarded`.
    Member,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSettings {
    pub scheme: UpstreamScheme,
    /// Prefixed to every request path sent to the member (an Azure backend URL's path).
    pub base_path: String,
    pub host_header: HostHeader,
    pub credentials: Credentials,
    pub tls: UpstreamTls,
    pub proxy: Option<ForwardProxy>,
    pub circuit_breaker: Vec<CircuitBreakerRule>,
}

/// Added to every request sent to the member. Secret: reads return values masked, and
/// the store seals them (see `Secrets`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Credentials {
    pub headers: BTreeMap<String, Vec<String>>,
    pub query: BTreeMap<String, Vec<String>>,
    pub authorization: Option<Authorization>,
    /// Client certificate (PEM chain followed by its key) presented to the member.
    pub client_certificate_pem: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    pub scheme: String,
    pub parameter: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTls {
    pub validate_certificate_chain: bool,
    pub validate_certificate_name: bool,
    /// Extra trusted roots (PEM); the system's are always trusted.
    pub ca_certificates_pem: Option<String>,
}

impl Default for UpstreamTls {
    fn default() -> Self {
        Self {
            validate_certificate_chain: true,
            validate_certificate_name: true,
            ca_certificates_pem: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwardProxy {
    /// `http://host:port` of the proxy.
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    /// Secret: reads return it masked, and the store seals it.
    #[serde(default)]
    pub password: Option<String>,
}

/// A rule that trips a member's breaker (seed 003 `circuitBreaker.rules[]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerRule {
    pub name: String,
    pub failure_condition: FailureCondition,
    /// How long a tripped member gets no new requests, in milliseconds.
    pub trip_duration_ms: u64,
    /// Trip for as long as a 429/503 `Retry-After` asks (bounded by the server maximum).
    #[serde(default)]
    pub accept_retry_after: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailureCondition {
    /// Trip after this many failures within the interval.
    #[serde(default)]
    pub count: Option<u32>,
    /// Trip when this percentage of requests within the interval failed.
    #[serde(default)]
    pub percentage: Option<u32>,
    /// The sliding window, in milliseconds.
    pub interval_ms: u64,
    /// Response statuses that count as failures.
    #[serde(default)]
    pub status_code_ranges: Vec<StatusCodeRange>,
    /// Transport failures that count: `ConnectionFailure`, `Timeout`, `BackendConnectionFailure`…
    #[serde(default)]
    pub error_reasons: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusCodeRange {
    pub min: u16,
    pub max: u16,
}

impl StatusCodeRange {
    pub fn contains(&self, status: u16) -> bool {
        (self.min..=self.max).contains(&status)
    }
}

/// Longest interval or trip duration a rule may name: one day.
const MAX_RULE_DURATION_MS: u64 = 86_400_000;

impl UpstreamSettings {
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut c = Checker::new();
        c.check(
            self.base_path.is_empty() || self.base_path.starts_with('/'),
            "base_path",
            || format!("base_path must start with '/' (got {:?})", self.base_path),
        );
        c.max_len("base_path", &self.base_path, 2048);
        self.validate_credentials(&mut c);
        if let Some(p) = &self.proxy {
            let rest = p.url.strip_prefix("http://");
            if rest.is_some_and(|r| r.contains('@')) {
                // Never echoed: it holds a password.
                c.fail(
                    "proxy.url",
                    "proxy.url must not carry credentials (user:password@); set proxy.username and proxy.password",
                );
            } else {
                let ok = rest.is_some_and(|r| !r.is_empty() && !r.contains(['/', '?', '#']));
                c.check(ok, "proxy.url", || {
                    format!(
                        "proxy.url must be http://host:port (got {:?})",
                        without_userinfo(&p.url)
                    )
                });
            }
            c.check(
                p.password.is_none() || p.username.is_some(),
                "proxy.password",
                || "proxy.password needs proxy.username".into(),
            );
        }
        for (i, rule) in self.circuit_breaker.iter().enumerate() {
            c.nested(&format!("circuit_breaker[{i}]"), rule.validate());
        }
        c.finish()
    }

    fn validate_credentials(&self, c: &mut Checker) {
        let cr = &self.credentials;
        for (name, values) in &cr.headers {
            c.check(is_header_name(name), "credentials.headers", || {
                format!("credentials.headers: {name:?} is not a header name")
            });
            c.check(
                values.iter().all(|v| is_header_value(v)),
                "credentials.headers",
                || format!("credentials.headers: a value of {name:?} holds a line break or control character"),
            );
        }
        for name in cr.query.keys() {
            c.check(!name.is_empty(), "credentials.query", || {
                "credentials.query: parameter names must not be empty".into()
            });
        }
        if let Some(a) = &cr.authorization {
            c.check(
                is_header_name(&a.scheme),
                "credentials.authorization.scheme",
                || "credentials.authorization.scheme must be a single token".into(),
            );
            c.check(
                is_header_value(&a.parameter),
                "credentials.authorization.parameter",
                || {
                    "credentials.authorization.parameter holds a line break or control character"
                        .into()
                },
            );
        }
        if let Some(pem) = &cr.client_certificate_pem {
            c.check(
                pem.contains("-----BEGIN CERTIFICATE-----") && pem.contains("PRIVATE KEY-----"),
                "credentials.client_certificate_pem",
                || "credentials.client_certificate_pem must hold a PEM certificate and its private key".into(),
            );
        }
    }

    /// A copy safe to show: every secret value replaced by `***`.
    pub fn masked(&self) -> Self {
        const MASK: &str = "***";
        let mut m = self.clone();
        for secret in crate::Secrets::secrets_mut(&mut m) {
            *secret = MASK.into();
        }
        if let (Some(shown), Some(p)) = (&mut m.proxy, &self.proxy) {
            // The proxy's address is shown, without credentials (stored before URLs with
            // credentials were refused).
            shown.url = without_userinfo(&p.url);
        }
        m
    }
}

/// `url` with any `user:password@` before its host shown as `***@`.
pub fn without_userinfo(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) if scheme.is_empty() => format!("***{}", &rest[at..]),
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

impl CircuitBreakerRule {
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut c = Checker::new();
        c.check(!self.name.is_empty(), "name", || {
            "name must not be empty".into()
        });
        c.max_len("name", &self.name, MAX_NAME_LEN_RULE);
        let fc = &self.failure_condition;
        c.check(
            fc.count.is_some() || fc.percentage.is_some(),
            "failure_condition",
            || "failure_condition needs count or percentage".into(),
        );
        if let Some(n) = fc.count {
            c.range("failure_condition.count", n, 1, 1_000_000);
        }
        if let Some(p) = fc.percentage {
            c.range("failure_condition.percentage", p, 1, 100);
        }
        c.range(
            "failure_condition.interval_ms",
            fc.interval_ms,
            1,
            MAX_RULE_DURATION_MS,
        );
        c.check(
            !fc.status_code_ranges.is_empty() || !fc.error_reasons.is_empty(),
            "failure_condition",
            || "failure_condition needs status_code_ranges or error_reasons".into(),
        );
        for (i, r) in fc.status_code_ranges.iter().enumerate() {
            let field = format!("failure_condition.status_code_ranges[{i}]");
            c.check(
                (100..=599).contains(&r.min) && (100..=599).contains(&r.max),
                &field,
                || format!("{field}: statuses must be between 100 and 599"),
            );
            c.check(r.min <= r.max, &field, || {
                format!("{field}: min ({}) must not exceed max ({})", r.min, r.max)
            });
        }
        for (i, reason) in fc.error_reasons.iter().enumerate() {
            c.check(
                !reason.is_empty() && reason.len() <= 200,
                &format!("failure_condition.error_reasons[{i}]"),
                || format!("failure_condition.error_reasons[{i}] must be 1..200 characters"),
            );
        }
        c.range(
            "trip_duration_ms",
            self.trip_duration_ms,
            1,
            MAX_RULE_DURATION_MS,
        );
        c.finish()
    }
}

const MAX_NAME_LEN_RULE: usize = 128;

#[cfg(test)]
mod userinfo_tests {
    use super::without_userinfo;

    #[test]
    fn credentials_in_a_url_are_hidden() {
        assert_eq!(
            without_userinfo("http://user:pw@proxy:3128"),
            "http://***@proxy:3128"
        );
        assert_eq!(without_userinfo("http://proxy:3128"), "http://proxy:3128");
        assert_eq!(without_userinfo("user:pw@host/a@b"), "***@host/a@b");
        assert_eq!(
            without_userinfo("http://proxy:3128/p?x=a@b"),
            "http://proxy:3128/p?x=a@b"
        );
    }
}
