//! Bearer-token authentication for the native API.

use subtle::ConstantTimeEq;

/// A named token; the name is the principal that rate limits and retry tokens are
/// scoped to, and what logs show (never the token).
#[derive(Clone)]
pub struct ApiToken {
    pub name: String,
    pub token: String,
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .field("token", &"***")
            .finish()
    }
}

/// The authenticated caller.
#[derive(Clone, Debug)]
pub(crate) struct Principal(pub String);

/// The principal whose token matches `presented`, comparing in constant time.
pub(crate) fn authenticate(tokens: &[ApiToken], presented: &str) -> Option<Principal> {
    let mut found = None;
    for t in tokens {
        if bool::from(t.token.as_bytes().ct_eq(presented.as_bytes())) {
            found = Some(Principal(t.name.clone()));
        }
    }
    found
}

/// The token in an `Authorization: Bearer …` header value.
pub(crate) fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Why a request was refused as unauthenticated: a dialect's error puts it on its 401
/// response, for [`AuthFailures`]. It never holds a secret, only what the caller was told.
#[derive(Clone, Debug)]
pub(crate) struct AuthRefused(pub String);

/// Sources whose failures are counted one by one; failures from further addresses are
/// counted together, so a spray from many addresses cannot grow the table.
pub(crate) const MAX_SOURCES: usize = 256;
/// The longest reason kept per source.
const MAX_REASON: usize = 200;

/// Failed authentication, summarised: the first failure from an address is logged at once,
/// later ones are counted and logged as one line per address per interval, so a flood of
/// unauthenticated requests writes a few lines, not one per request. Every front door's
/// 401s pass through here (the API's outermost middleware, `request::observe`).
pub(crate) struct AuthFailures {
    pub interval: std::time::Duration,
    sources: parking_lot::Mutex<Sources>,
}

#[derive(Default)]
struct Sources {
    by_addr: std::collections::HashMap<Option<std::net::IpAddr>, Source>,
    /// Failures from addresses that found the table full.
    overflow: Option<Source>,
}

struct Source {
    since: std::time::Instant,
    /// Failures not logged yet.
    count: u64,
    front_door: &'static str,
    addr: Option<std::net::IpAddr>,
    reason: String,
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
}

impl AuthFailures {
    pub fn new(interval: std::time::Duration) -> Self {
        AuthFailures {
            interval,
            sources: parking_lot::Mutex::new(Sources::default()),
        }
    }

    /// Counts one failure; returns the line to log at once, if any.
    pub fn record(
        &self,
        addr: Option<std::net::IpAddr>,
        front_door: &'static str,
        reason: &str,
        now: std::time::Instant,
    ) -> Option<FailureLine> {
        let reason = truncate(reason, MAX_REASON);
        let mut sources = self.sources.lock();
        let full = sources.by_addr.len() >= MAX_SOURCES;
        let entry = match sources.by_addr.get_mut(&addr) {
            Some(source) => source,
            None if full => sources.overflow.get_or_insert_with(|| Source {
                since: now,
                count: 0,
                front_door,
                addr,
                reason: String::new(),
            }),
            None => {
                sources.by_addr.insert(
                    addr,
                    Source {
                        since: now,
                        count: 0,
                        front_door,
                        addr,
                        reason: reason.to_owned(),
                    },
                );
                return Some(FailureLine::First {
                    addr,
                    front_door,
                    reason: reason.to_owned(),
                });
            }
        };
        entry.count += 1;
        entry.front_door = front_door;
        entry.addr = addr;
        if entry.reason != reason {
            entry.reason.clear();
            entry.reason.push_str(reason);
        }
        None
    }

    /// The summaries of sources whose interval has passed. A source with nothing new for
    /// a whole interval is forgotten (its next failure is logged at once again).
    pub fn flush(&self, now: std::time::Instant) -> Vec<FailureLine> {
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
        sources.by_addr.retain(|_, s| {
            if !due(s) {
                return true;
            }
            if s.count == 0 {
                return false;
            }
            lines.push(summary(s, false));
            true
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
    pub fn log(line: &FailureLine) {
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
    fn a_source_gets_its_first_failure_then_one_count_per_interval() {
        let f = AuthFailures::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let first = f.record(ip(1), "oci", "bad signature", t0);
        assert!(
            matches!(first, Some(FailureLine::First { .. })),
            "{first:?}"
        );
        for i in 1..=500u64 {
            let at = t0 + Duration::from_millis(i);
            assert_eq!(f.record(ip(1), "native", "no token", at), None);
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
            matches!(again, Some(FailureLine::First { .. })),
            "{again:?}"
        );
    }

    #[test]
    fn a_spray_from_many_addresses_is_counted_in_a_bounded_table() {
        let f = AuthFailures::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let firsts = (0..10_000u32)
            .filter(|n| f.record(ip(*n), "huawei", "unknown key", t0).is_some())
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
        let f = AuthFailures::new(Duration::from_secs(1));
        match f.record(None, "native", &long, Instant::now()) {
            Some(FailureLine::First { reason, .. }) => {
                assert!(reason.len() <= MAX_REASON && reason.chars().all(|c| c == 'é'));
            }
            other => panic!("{other:?}"),
        }
    }
}
