use serde::{Deserialize, Serialize};

use crate::{
    Checker, HealthMonitorId, LoadBalancerId, MAX_NAME_LEN, PoolId, Timestamp, ValidationError,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HealthMonitorType {
    /// A TCP connect succeeds.
    Tcp,
    /// An HTTP request answers with an expected status.
    Http,
    /// The same over TLS.
    Https,
    /// A UDP probe gets no ICMP unreachable.
    UdpConnect,
}

/// Active health checks for every member of one pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthMonitorSpec {
    #[serde(default)]
    pub name: String,
    pub pool_id: PoolId,
    #[serde(rename = "type")]
    pub kind: HealthMonitorType,
    /// Between checks, milliseconds.
    #[serde(default = "default_interval")]
    pub interval_ms: u32,
    /// One check's deadline, milliseconds; at most the interval.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u32,
    /// Consecutive successes that mark a member healthy (rise).
    #[serde(default = "default_rise")]
    pub healthy_threshold: u8,
    /// Consecutive failures that mark a member unhealthy (fall).
    #[serde(default = "default_fall")]
    pub unhealthy_threshold: u8,
    /// Port to check instead of the member's.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default = "default_method")]
    pub http_method: String,
    #[serde(default = "default_path")]
    pub url_path: String,
    /// `200`, `200-299`, or a list `200,202,204`.
    #[serde(default = "default_codes")]
    pub expected_codes: String,
    /// Host header for HTTP checks.
    #[serde(default)]
    pub domain_name: Option<String>,
    #[serde(default = "crate::default_true")]
    pub admin_state_up: bool,
}

fn default_interval() -> u32 {
    5_000
}
fn default_timeout() -> u32 {
    3_000
}
fn default_rise() -> u8 {
    2
}
fn default_fall() -> u8 {
    3
}
fn default_method() -> String {
    "GET".into()
}
fn default_path() -> String {
    "/".into()
}
fn default_codes() -> String {
    "200".into()
}

/// The methods an HTTP health check may send.
pub const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT",
];

impl HealthMonitorSpec {
    pub fn new(pool_id: PoolId, kind: HealthMonitorType) -> Self {
        Self {
            name: String::new(),
            pool_id,
            kind,
            interval_ms: default_interval(),
            timeout_ms: default_timeout(),
            healthy_threshold: default_rise(),
            unhealthy_threshold: default_fall(),
            port: None,
            http_method: default_method(),
            url_path: default_path(),
            expected_codes: default_codes(),
            domain_name: None,
            admin_state_up: true,
        }
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut c = Checker::new();
        c.max_len("name", &self.name, MAX_NAME_LEN);
        c.range("interval_ms", self.interval_ms, 100, 3_600_000);
        c.range("timeout_ms", self.timeout_ms, 10, 3_600_000);
        c.check(self.timeout_ms <= self.interval_ms, "timeout_ms", || {
            format!(
                "timeout_ms ({}) must not exceed interval_ms ({})",
                self.timeout_ms, self.interval_ms
            )
        });
        c.range("healthy_threshold", self.healthy_threshold, 1, 10);
        c.range("unhealthy_threshold", self.unhealthy_threshold, 1, 10);
        if self.port == Some(0) {
            c.fail("port", "port must be between 1 and 65535 (got 0)");
        }
        c.check(
            HTTP_METHODS.contains(&self.http_method.as_str()),
            "http_method",
            || format!("http_method {:?} is not an HTTP method", self.http_method),
        );
        c.check(
            self.url_path.starts_with('/') && self.url_path.len() <= 1024,
            "url_path",
            || format!("url_path must start with '/' (got {:?})", self.url_path),
        );
        c.check(
            parse_expected_codes(&self.expected_codes).is_some(),
            "expected_codes",
            || {
                format!(
                    "expected_codes must be a status, a range like 200-299 or a list like 200,202 (got {:?})",
                    self.expected_codes
                )
            },
        );
        if let Some(d) = &self.domain_name {
            c.check(crate::is_host_name(d, false), "domain_name", || {
                format!("domain_name {d:?} is not a host name")
            });
        }
        c.finish()
    }

    /// Whether a response status counts as healthy.
    pub fn expects(&self, status: u16) -> bool {
        parse_expected_codes(&self.expected_codes)
            .is_some_and(|ranges| ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status)))
    }
}

/// `200`, `200-204` or `200,202,300-399` → inclusive ranges; None if malformed.
pub fn parse_expected_codes(s: &str) -> Option<Vec<(u16, u16)>> {
    s.split(',')
        .map(|part| {
            let part = part.trim();
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
                None => {
                    let v: u16 = part.parse().ok()?;
                    (v, v)
                }
            };
            ((100..=599).contains(&lo) && (100..=599).contains(&hi) && lo <= hi).then_some((lo, hi))
        })
        .collect()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealthMonitor {
    pub id: HealthMonitorId,
    pub loadbalancer_id: LoadBalancerId,
    #[serde(flatten)]
    pub spec: HealthMonitorSpec,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

impl HealthMonitorType {
    pub fn is_http(self) -> bool {
        matches!(self, HealthMonitorType::Http | HealthMonitorType::Https)
    }
}

/// Rejects a non-TCP check for a UDP pool and vice versa.
pub fn check_monitor_for_pool(
    kind: HealthMonitorType,
    pool_protocol: crate::PoolProtocol,
) -> Result<(), ValidationError> {
    use crate::PoolProtocol as P;
    let udp_pool = matches!(pool_protocol, P::Udp | P::Quic);
    let udp_check = kind == HealthMonitorType::UdpConnect;
    if udp_pool != udp_check && !(udp_pool && kind == HealthMonitorType::Tcp) {
        return Err(ValidationError::invalid(
            "type",
            format!("a {kind:?} health monitor cannot check a {pool_protocol:?} pool"),
        ));
    }
    Ok(())
}
