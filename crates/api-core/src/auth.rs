//! Authentication for the native API: bearer tokens, and client certificates verified by
//! the API's TLS (mTLS) mapped onto the principals the tokens name.

use subtle::ConstantTimeEq;

/// A named token; the name is the principal that rate limits and retry tokens are
/// scoped to, and what logs show (never the token). `role` and `loadbalancers` limit
/// what its bearer may do ([`Role`], [`native_scope`]).
#[derive(Clone)]
pub struct ApiToken {
    pub name: String,
    pub token: String,
    pub role: Role,
    /// Load balancers (ids or names) the token is limited to; empty: every one.
    pub loadbalancers: Vec<String>,
}

impl ApiToken {
    /// An administrator's token for every load balancer.
    pub fn admin(name: impl Into<String>, token: impl Into<String>) -> Self {
        ApiToken {
            name: name.into(),
            token: token.into(),
            role: Role::Admin,
            loadbalancers: Vec::new(),
        }
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .field("token", &"***")
            .field("role", &self.role)
            .field("loadbalancers", &self.loadbalancers)
            .finish()
    }
}

/// What a native token may do. Each role includes the ones before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads only (`GET`).
    Read,
    /// Reads, and the day-to-day operations on members: create, update (drain, weight,
    /// backup, offline, …), delete, batch.
    Operate,
    /// Everything.
    #[default]
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Operate => "operate",
            Role::Admin => "admin",
        }
    }

    /// The least role a native API call (`method` on `path`, under `/v1`) needs.
    pub fn needed(method: &http::Method, path: &str) -> Role {
        if matches!(*method, http::Method::GET | http::Method::HEAD) {
            return Role::Read;
        }
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let member_op = match segs.as_slice() {
            ["v1", "pools", _, "members"] | ["v1", "pools", _, "members", "batch"] => {
                *method == http::Method::POST
            }
            ["v1", "pools", _, "members", _] => {
                matches!(*method, http::Method::PATCH | http::Method::DELETE)
            }
            _ => false,
        };
        if member_op {
            Role::Operate
        } else {
            Role::Admin
        }
    }
}

/// The scope of a native token: every load balancer, or those it names by id or name.
pub fn native_scope(token: &ApiToken) -> fulcrum_control::Scope {
    if token.loadbalancers.is_empty() {
        return fulcrum_control::Scope::All;
    }
    let names = token.loadbalancers.clone();
    fulcrum_control::Scope::limited(
        format!("the load balancers {}", names.join(", ")),
        move |lb| {
            names
                .iter()
                .any(|n| n == lb.id.as_str() || *n == lb.spec.name)
        },
    )
}

/// The authenticated caller of the native API: its name, role and scope.
#[derive(Clone, Debug)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    pub scope: fulcrum_control::Scope,
}

impl Principal {
    fn of(token: &ApiToken) -> Self {
        Principal {
            name: token.name.clone(),
            role: token.role,
            scope: native_scope(token),
        }
    }
}

/// The principal whose token matches `presented`, comparing in constant time.
pub fn authenticate(tokens: &[ApiToken], presented: &str) -> Option<Principal> {
    let mut found = None;
    for t in tokens {
        if bool::from(t.token.as_bytes().ct_eq(presented.as_bytes())) {
            found = Some(Principal::of(t));
        }
    }
    found
}

/// A client certificate that authenticates as the principal of a token entry (`name`), as
/// if it had presented that token: matched by its subject's common name or by a DNS name
/// among its subject alternative names. Only a certificate the TLS handshake verified
/// against `tls_client_ca` is ever matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertPrincipal {
    pub name: String,
    pub matches: CertMatch,
}

/// Which of a certificate's names a [`ClientCertPrincipal`] matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertMatch {
    /// The subject's common name, exactly.
    SubjectCn(String),
    /// A DNS subject alternative name (ASCII case ignored, as DNS does).
    DnsName(String),
}

/// What a verified client certificate names: a request extension on every request of its
/// connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertificate {
    pub subject_cns: Vec<String>,
    pub dns_names: Vec<String>,
}

/// The principal of the first mapping that `cert` matches: the token entry of that name,
/// with its role and scope.
pub fn authenticate_certificate(
    mappings: &[ClientCertPrincipal],
    tokens: &[ApiToken],
    cert: &ClientCertificate,
) -> Option<Principal> {
    mappings
        .iter()
        .find(|m| match &m.matches {
            CertMatch::SubjectCn(cn) => cert.subject_cns.iter().any(|c| c == cn),
            CertMatch::DnsName(name) => cert.dns_names.iter().any(|d| d.eq_ignore_ascii_case(name)),
        })
        .and_then(|m| tokens.iter().find(|t| t.name == m.name))
        .map(Principal::of)
}

/// The token in an `Authorization: Bearer …` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Why a request was refused as unauthenticated: a dialect's error puts it on its 401
/// response, for [`AuthFailures`]. It never holds a secret, only what the caller was told.
#[derive(Clone, Debug)]
pub struct AuthRefused(pub String);

/// The client address of a request (set by the server; absent in tests that call the
/// router directly).
pub fn client_ip(extensions: &http::Extensions) -> Option<std::net::IpAddr> {
    extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}

/// A `Retry-After` in whole seconds, rounded up (at least 1).
pub fn retry_after_secs(wait: std::time::Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// Sources whose failures are counted (and throttled) one by one; failures from further
/// addresses are counted together, so a spray from many addresses cannot grow the table.
pub(crate) const MAX_SOURCES: usize = 1024;
/// The longest reason kept per source.
const MAX_REASON: usize = 200;

/// The throttling of failed authentication: an address that failed `limit` times within
/// `window` is refused (429, before its credentials are looked at) for `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthThrottle {
    /// 0: never throttle.
    pub limit: u32,
    pub window: std::time::Duration,
}

impl Default for AuthThrottle {
    fn default() -> Self {
        AuthThrottle {
            limit: 20,
            window: std::time::Duration::from_secs(60),
        }
    }
}

impl AuthThrottle {
    pub const OFF: AuthThrottle = AuthThrottle {
        limit: 0,
        window: std::time::Duration::ZERO,
    };
}

/// Failed authentication, summarised and throttled per source address. The first failure
/// from an address is logged at once, later ones are counted and logged as one line per
/// address per interval, so a flood of unauthenticated requests writes a few lines, not one
/// per request; an address with too many failures in a window is refused for a while
/// ([`AuthThrottle`]). Every front door's 401s pass through here (the API's outermost
/// middleware, `request::observe`), and every front door asks [`AuthFailures::throttled`]
/// before it authenticates.
pub struct AuthFailures {
    pub(crate) interval: std::time::Duration,
    throttle: AuthThrottle,
    sources: parking_lot::Mutex<Sources>,
}

#[derive(Default)]
struct Sources {
    by_addr: std::collections::HashMap<Option<std::net::IpAddr>, Source>,
    /// Failures from addresses that found the table full (never throttled: they are not
    /// told apart).
    overflow: Option<Source>,
}

struct Source {
    since: std::time::Instant,
    /// Failures not logged yet.
    count: u64,
    front_door: &'static str,
    addr: Option<std::net::IpAddr>,
    reason: String,
    /// Nothing new for a whole interval: the next failure is logged at once. The source
    /// is forgotten once its throttle has nothing to keep either.
    quiet: bool,
    /// The throttle's window: when it began and the failures since.
    window_start: std::time::Instant,
    window_failures: u32,
    blocked_until: Option<std::time::Instant>,
}

impl Source {
    fn new(
        now: std::time::Instant,
        front_door: &'static str,
        addr: Option<std::net::IpAddr>,
        reason: &str,
    ) -> Self {
        Source {
            since: now,
            count: 0,
            front_door,
            addr,
            reason: reason.to_owned(),
            quiet: false,
            window_start: now,
            window_failures: 0,
            blocked_until: None,
        }
    }
}

/// A line to log about failed authentication.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FailureLine {
    /// The first failure from an address (in a while).
    First {
        addr: Option<std::net::IpAddr>,
        front_door: &'static str,
        reason: String,
    },
    /// The failures from one address (or, `other_addresses`, from addresses beyond the
    /// table) since its last line.
    Summary {
        addr: Option<std::net::IpAddr>,
        other_addresses: bool,
        count: u64,
        secs: u64,
        front_door: &'static str,
        reason: String,
    },
    /// An address reached the throttle's limit: refused for `secs`.
    Throttled {
        addr: std::net::IpAddr,
        failures: u32,
        secs: u64,
    },
}

impl AuthFailures {
    /// How often a source address's failures are logged (`ApiConfig`'s default).
    pub const DEFAULT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

    pub fn new(interval: std::time::Duration, throttle: AuthThrottle) -> Self {
        AuthFailures {
            interval,
            throttle,
            sources: parking_lot::Mutex::new(Sources::default()),
        }
    }

    /// How long `addr` is still refused, if it is.
    pub fn throttled(
        &self,
        addr: Option<std::net::IpAddr>,
        now: std::time::Instant,
    ) -> Option<std::time::Duration> {
        if self.throttle.limit == 0 {
            return None;
        }
        addr?;
        let sources = self.sources.lock();
        let until = sources.by_addr.get(&addr)?.blocked_until?;
        (until > now).then(|| until - now)
    }

    /// Counts one failure; returns the lines to log at once.
    pub(crate) fn record(
        &self,
        addr: Option<std::net::IpAddr>,
        front_door: &'static str,
        reason: &str,
        now: std::time::Instant,
    ) -> Vec<FailureLine> {
        let reason = truncate(reason, MAX_REASON);
        let mut lines = Vec::new();
        let mut sources = self.sources.lock();
        let full = sources.by_addr.len() >= MAX_SOURCES;
        match sources.by_addr.get_mut(&addr) {
            Some(source) if source.quiet => {
                source.quiet = false;
                source.since = now;
                source.count = 0;
                source.front_door = front_door;
                source.reason.clear();
                source.reason.push_str(reason);
                lines.push(FailureLine::First {
                    addr,
                    front_door,
                    reason: reason.to_owned(),
                });
            }
            Some(source) => {
                source.count += 1;
                source.front_door = front_door;
                if source.reason != reason {
                    source.reason.clear();
                    source.reason.push_str(reason);
                }
            }
            None if full => {
                let overflow = sources
                    .overflow
                    .get_or_insert_with(|| Source::new(now, front_door, addr, ""));
                overflow.count += 1;
                overflow.front_door = front_door;
                overflow.addr = addr;
                if overflow.reason != reason {
                    overflow.reason.clear();
                    overflow.reason.push_str(reason);
                }
                return lines;
            }
            None => {
                lines.push(FailureLine::First {
                    addr,
                    front_door,
                    reason: reason.to_owned(),
                });
                sources
                    .by_addr
                    .insert(addr, Source::new(now, front_door, addr, reason));
            }
        }
        let Some(source) = sources.by_addr.get_mut(&addr) else {
            return lines;
        };
        let throttle = self.throttle;
        if let (Some(ip), true) = (addr, throttle.limit > 0) {
            if now.saturating_duration_since(source.window_start) >= throttle.window {
                source.window_start = now;
                source.window_failures = 0;
            }
            source.window_failures = source.window_failures.saturating_add(1);
            let blocked = source.blocked_until.is_some_and(|u| u > now);
            if source.window_failures >= throttle.limit && !blocked {
                source.blocked_until = Some(now + throttle.window);
                lines.push(FailureLine::Throttled {
                    addr: ip,
                    failures: source.window_failures,
                    secs: throttle.window.as_secs(),
                });
            }
        }
        lines
    }

    /// The summaries of sources whose interval has passed. A source with nothing new for
    /// a whole interval is forgotten (its next failure is logged at once again), unless
    /// its throttle still counts or refuses it.
    pub(crate) fn flush(&self, now: std::time::Instant) -> Vec<FailureLine> {
        let mut lines = Vec::new();
        let mut sources = self.sources.lock();
        let due = |s: &Source| now.saturating_duration_since(s.since) >= self.interval;
        let summary = |s: &mut Source, other_addresses: bool| {
            let line = FailureLine::Summary {
                addr: s.addr,
                other_addresses,
                count: s.count,
                secs: now.saturating_duration_since(s.since).as_secs_f64().round() as u64,
                front_door: s.front_door,
                reason: s.reason.clone(),
            };
            s.count = 0;
            s.since = now;
            line
        };
        let window = self.throttle.window;
        let throttle_done = |s: &Source| {
            s.blocked_until.is_none_or(|u| u <= now)
                && (s.window_failures == 0
                    || now.saturating_duration_since(s.window_start) >= window)
        };
        sources.by_addr.retain(|_, s| {
            if !s.quiet && due(s) {
                match s.count {
                    0 => s.quiet = true,
                    _ => lines.push(summary(s, false)),
                }
            }
            !(s.quiet && throttle_done(s))
        });
        if let Some(s) = sources.overflow.as_mut()
            && due(s)
        {
            lines.push(summary(s, true));
            sources.overflow = None;
        }
        lines
    }

    /// Logs a line at WARN.
    pub(crate) fn log(line: &FailureLine) {
        let show = |addr: &Option<std::net::IpAddr>| {
            addr.map_or_else(|| "an unknown address".to_owned(), |a| a.to_string())
        };
        match line {
            FailureLine::First {
                addr,
                front_door,
                reason,
            } => tracing::warn!(
                source = %show(addr),
                front_door,
                reason = %reason,
                "authentication failed from {}: {reason} (further failures from it are counted)",
                show(addr)
            ),
            FailureLine::Summary {
                addr,
                other_addresses,
                count,
                secs,
                front_door,
                reason,
            } => {
                let from = match other_addresses {
                    true => format!(
                        "addresses beyond the {MAX_SOURCES} tracked (last {})",
                        show(addr)
                    ),
                    false => show(addr),
                };
                tracing::warn!(
                    source = %from,
                    failures = count,
                    front_door,
                    reason = %reason,
                    "{count} authentication failures from {from} in the last {secs}s, last reason: {reason}"
                );
            }
            FailureLine::Throttled {
                addr,
                failures,
                secs,
            } => tracing::warn!(
                source = %addr,
                failures,
                "authentication failed {failures} times from {addr}: its requests are refused (429) for {secs}s"
            ),
        }
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::{Duration, Instant};

    use super::*;

    fn ip(n: u32) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)))
    }

    #[test]
    fn a_certificate_is_the_principal_of_the_first_mapping_it_matches() {
        let mappings = [
            ClientCertPrincipal {
                name: "ops".into(),
                matches: CertMatch::SubjectCn("ops.example".into()),
            },
            ClientCertPrincipal {
                name: "deploy".into(),
                matches: CertMatch::DnsName("deploy.example".into()),
            },
        ];
        let cert = |cns: &[&str], dns: &[&str]| ClientCertificate {
            subject_cns: cns.iter().map(|s| (*s).to_owned()).collect(),
            dns_names: dns.iter().map(|s| (*s).to_owned()).collect(),
        };
        let tokens = [
            ApiToken::admin("ops", "t1"),
            ApiToken {
                role: Role::Operate,
                loadbalancers: vec!["web".into()],
                ..ApiToken::admin("deploy", "t2")
            },
        ];
        let who =
            |c: &ClientCertificate| authenticate_certificate(&mappings, &tokens, c).map(|p| p.name);
        let deploy = authenticate_certificate(&mappings, &tokens, &cert(&[], &["deploy.example"]));
        assert!(
            deploy.is_some_and(|p| p.role == Role::Operate && !p.scope.is_all()),
            "a certificate has its token's role and scope"
        );
        assert_eq!(who(&cert(&["ops.example"], &[])), Some("ops".into()));
        assert_eq!(who(&cert(&["OPS.example"], &[])), None, "a CN is exact");
        assert_eq!(
            who(&cert(&["x"], &["Deploy.Example"])),
            Some("deploy".into()),
            "a DNS name ignores case"
        );
        assert_eq!(
            who(&cert(&["ops.example"], &["deploy.example"])),
            Some("ops".into()),
            "the first mapping wins"
        );
        assert_eq!(who(&cert(&["deploy.example"], &["ops.example"])), None);
    }

    #[test]
    fn each_call_needs_its_role() {
        use http::Method;
        let cases = [
            (Method::GET, "/v1/loadbalancers", Role::Read),
            (Method::GET, "/v1/work-requests/x/wait", Role::Read),
            (Method::HEAD, "/v1/pools/p", Role::Read),
            (Method::POST, "/v1/pools/p/members", Role::Operate),
            (Method::POST, "/v1/pools/p/members/batch", Role::Operate),
            (Method::PATCH, "/v1/pools/p/members/m", Role::Operate),
            (Method::DELETE, "/v1/pools/p/members/m", Role::Operate),
            (Method::PUT, "/v1/pools/p/members/m", Role::Admin),
            (Method::PATCH, "/v1/pools/p", Role::Admin),
            (Method::DELETE, "/v1/pools/p", Role::Admin),
            (Method::POST, "/v1/loadbalancers", Role::Admin),
            (Method::PATCH, "/v1/listeners/l", Role::Admin),
            (Method::POST, "/v1/healthmonitors", Role::Admin),
            (Method::POST, "/v1/subnets", Role::Admin),
            (Method::DELETE, "/v1/pools/p/members/m/x", Role::Admin),
            (Method::POST, "/v1/pools/p/members/batch/x", Role::Admin),
            // Route templates, as the router matched them.
            (
                Method::PATCH,
                "/v1/pools/{id}/members/{member_id}",
                Role::Operate,
            ),
            (Method::POST, "/v1/pools/{id}/members/batch", Role::Operate),
            (Method::PATCH, "/v1/pools/{id}", Role::Admin),
        ];
        for (method, path, role) in cases {
            assert_eq!(Role::needed(&method, path), role, "{method} {path}");
        }
        assert!(Role::Read < Role::Operate && Role::Operate < Role::Admin);
        assert_eq!(
            Role::default(),
            Role::Admin,
            "existing tokens stay administrators"
        );
    }

    #[test]
    fn a_token_scope_names_load_balancers_by_id_or_name() {
        let lb = |id: &str, name: &str| fulcrum_model::LoadBalancer {
            id: fulcrum_model::LoadBalancerId(id.into()),
            spec: serde_json::from_value(serde_json::json!({ "name": name })).unwrap(),
            created_at: chrono::DateTime::UNIX_EPOCH,
            updated_at: chrono::DateTime::UNIX_EPOCH,
        };
        let scoped = ApiToken {
            loadbalancers: vec!["web".into(), "id-2".into()],
            ..ApiToken::admin("t", "x")
        };
        let s = native_scope(&scoped);
        assert!(s.admits(&lb("id-1", "web")));
        assert!(s.admits(&lb("id-2", "api")));
        assert!(!s.admits(&lb("id-3", "api")));
        assert!(!s.admits(&lb("web2", "Web")), "exact, case and all");
        assert!(native_scope(&ApiToken::admin("t", "x")).is_all());
    }

    #[test]
    fn a_source_gets_its_first_failure_then_one_count_per_interval() {
        let f = AuthFailures::new(Duration::from_secs(10), AuthThrottle::OFF);
        let t0 = Instant::now();
        let first = f.record(ip(1), "oci", "bad signature", t0);
        assert!(
            matches!(first.as_slice(), [FailureLine::First { .. }]),
            "{first:?}"
        );
        for i in 1..=500u64 {
            let at = t0 + Duration::from_millis(i);
            assert_eq!(f.record(ip(1), "native", "no token", at), Vec::new());
        }
        assert_eq!(f.flush(t0 + Duration::from_secs(9)), Vec::new());
        assert_eq!(
            f.flush(t0 + Duration::from_secs(10)),
            vec![FailureLine::Summary {
                addr: ip(1),
                other_addresses: false,
                count: 500,
                secs: 10,
                front_door: "native",
                reason: "no token".into(),
            }]
        );
        // Nothing new: no line, and after a quiet interval the source is forgotten, so its
        // next failure is logged at once.
        assert_eq!(f.flush(t0 + Duration::from_secs(15)), Vec::new());
        assert_eq!(f.flush(t0 + Duration::from_secs(20)), Vec::new());
        let again = f.record(ip(1), "azure", "expired", t0 + Duration::from_secs(21));
        assert!(
            matches!(again.as_slice(), [FailureLine::First { .. }]),
            "{again:?}"
        );
    }

    #[test]
    fn a_spray_from_many_addresses_is_counted_in_a_bounded_table() {
        let f = AuthFailures::new(Duration::from_secs(10), AuthThrottle::OFF);
        let t0 = Instant::now();
        let firsts = (0..10_000u32)
            .filter(|n| !f.record(ip(*n), "huawei", "unknown key", t0).is_empty())
            .count();
        assert_eq!(firsts, MAX_SOURCES);
        assert_eq!(f.sources.lock().by_addr.len(), MAX_SOURCES);
        let lines = f.flush(t0 + Duration::from_secs(10));
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            matches!(
                &lines[0],
                FailureLine::Summary {
                    other_addresses: true,
                    count,
                    addr,
                    ..
                } if *count == 10_000 - MAX_SOURCES as u64 && *addr == ip(9_999)
            ),
            "{lines:?}"
        );
        // The tracked sources had nothing after their first failure: forgotten.
        assert!(f.sources.lock().by_addr.is_empty());
    }

    #[test]
    fn reasons_are_cut_on_a_character_boundary() {
        let long = "é".repeat(300);
        let f = AuthFailures::new(Duration::from_secs(1), AuthThrottle::OFF);
        match f.record(None, "native", &long, Instant::now()).as_slice() {
            [FailureLine::First { reason, .. }] => {
                assert!(reason.len() <= MAX_REASON && reason.chars().all(|c| c == 'é'));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_address_is_refused_after_its_limit_until_the_window_passes() {
        let throttle = AuthThrottle {
            limit: 3,
            window: Duration::from_secs(60),
        };
        let f = AuthFailures::new(Duration::from_secs(10), throttle);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        f.record(ip(1), "native", "invalid bearer token", at(0));
        f.record(ip(1), "oci", "bad signature", at(1));
        assert_eq!(f.throttled(ip(1), at(1)), None, "below the limit");
        let lines = f.record(ip(1), "huawei", "invalid X-Auth-Token", at(2));
        assert_eq!(
            lines,
            vec![FailureLine::Throttled {
                addr: IpAddr::V4(Ipv4Addr::from(0x0a00_0001)),
                failures: 3,
                secs: 60
            }]
        );
        assert_eq!(f.throttled(ip(1), at(2)), Some(Duration::from_secs(60)));
        assert_eq!(f.throttled(ip(1), at(32)), Some(Duration::from_secs(30)));
        assert_eq!(f.throttled(ip(2), at(32)), None, "other addresses are not");
        assert_eq!(f.throttled(None, at(32)), None);
        // Log summaries come and go; the refusal stays until its window passes.
        for s in 3..62 {
            f.flush(at(s));
        }
        assert_eq!(f.throttled(ip(1), at(61)), Some(Duration::from_secs(1)));
        assert_eq!(f.throttled(ip(1), at(62)), None);
        f.flush(at(200));
        assert!(f.sources.lock().by_addr.is_empty(), "then it is forgotten");
    }

    #[test]
    fn failures_spread_beyond_a_window_are_not_throttled() {
        let throttle = AuthThrottle {
            limit: 3,
            window: Duration::from_secs(10),
        };
        let f = AuthFailures::new(Duration::from_secs(10), throttle);
        let t0 = Instant::now();
        for s in [0, 6, 12, 18, 24] {
            let now = t0 + Duration::from_secs(s);
            f.record(ip(1), "native", "invalid bearer token", now);
            f.flush(now);
            assert_eq!(f.throttled(ip(1), now), None, "at {s}s");
        }
    }

    #[test]
    fn nothing_is_throttled_when_off() {
        let f = AuthFailures::new(Duration::from_secs(10), AuthThrottle::OFF);
        let t0 = Instant::now();
        for _ in 0..1000 {
            f.record(ip(1), "native", "invalid bearer token", t0);
        }
        assert_eq!(f.throttled(ip(1), t0), None);
    }
}
