//! Session persistence for one HTTP request: which member the client is bound to, and what
//! to remember once a member answered. Works on raw header values, so the HTTP/1.1 path
//! reads them straight from its buffer and the HTTP/2 path from hyper's map.

use std::net::IpAddr;
use std::time::Duration;

use fulcrum_model::EffectivePersistence;

use crate::snapshot::PoolRt;
use crate::sticky::StickyKey;

/// The name of the cookie fulcrum inserts for HTTP_COOKIE persistence.
pub(crate) const STICKY_COOKIE: &str = "fulcrum_sticky";

/// Application cookies carry no timeout of their own (seed 002): bindings idle out after a day.
const APP_COOKIE_TTL: Duration = Duration::from_secs(24 * 3600);

pub(crate) struct Session {
    /// The member the client is bound to, if it may still serve it.
    pub bound: Option<usize>,
    /// The binding key this request carried (source address or application cookie value).
    key: Option<StickyKey>,
    ttl: Duration,
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| *b != b' ').unwrap_or(v.len());
    let end = v.iter().rposition(|b| *b != b' ').map_or(start, |e| e + 1);
    &v[start..end.max(start)]
}

/// The value of cookie `name` in `Cookie` header values.
pub(crate) fn cookie_value<'a>(
    cookie_headers: impl Iterator<Item = &'a [u8]>,
    name: &str,
) -> Option<&'a str> {
    cookie_headers
        .flat_map(|v| v.split(|b| *b == b';'))
        .filter_map(|pair| {
            let pair = trim(pair);
            let eq = pair.iter().position(|b| *b == b'=')?;
            (trim(&pair[..eq]) == name.as_bytes()).then(|| trim(&pair[eq + 1..]))
        })
        .find_map(|v| std::str::from_utf8(v).ok())
}

fn minutes(m: u32) -> Duration {
    Duration::from_secs(u64::from(m) * 60)
}

fn bound_by_id(pool: &PoolRt, id: &fulcrum_model::MemberId) -> Option<usize> {
    pool.by_id.get(id).and_then(|&i| pool.bound(i))
}

impl Session {
    /// `cookies`: the request's `Cookie` header values (read only by cookie persistence).
    pub fn of<'a>(
        pool: &PoolRt,
        client: IpAddr,
        cookies: impl Iterator<Item = &'a [u8]>,
    ) -> Session {
        let none = |ttl| Session {
            bound: None,
            key: None,
            ttl,
        };
        match &pool.persistence {
            EffectivePersistence::None => none(Duration::ZERO),
            EffectivePersistence::SourceIp { timeout_minutes } => {
                let ttl = minutes(*timeout_minutes);
                let key = StickyKey::Addr(client);
                Session {
                    bound: pool
                        .sticky
                        .get(&key, ttl)
                        .and_then(|id| bound_by_id(pool, &id)),
                    key: Some(key),
                    ttl,
                }
            }
            EffectivePersistence::HttpCookie { timeout_minutes } => Session {
                bound: cookie_value(cookies, STICKY_COOKIE)
                    .and_then(|v| pool.by_cookie.get(v))
                    .and_then(|&i| pool.bound(i)),
                key: None,
                ttl: minutes(*timeout_minutes),
            },
            EffectivePersistence::AppCookie { cookie_name } => {
                let key =
                    cookie_value(cookies, cookie_name).map(|v| StickyKey::Cookie(v.to_owned()));
                Session {
                    bound: key
                        .as_ref()
                        .and_then(|k| pool.sticky.get(k, APP_COOKIE_TTL))
                        .and_then(|id| bound_by_id(pool, &id)),
                    key,
                    ttl: APP_COOKIE_TTL,
                }
            }
        }
    }

    /// Records the member that answered: binds (or rebinds) the client to it.
    /// `set_cookies`: the response's `Set-Cookie` values. Returns a `Set-Cookie` value to
    /// add to the response (HTTP_COOKIE, when the client is not bound to this member yet).
    pub fn remember<'a>(
        &self,
        pool: &PoolRt,
        idx: usize,
        set_cookies: impl Iterator<Item = &'a [u8]>,
    ) -> Option<String> {
        let member = &pool.members[idx];
        match &pool.persistence {
            EffectivePersistence::None => None,
            EffectivePersistence::SourceIp { .. } => {
                if let Some(k) = &self.key {
                    pool.sticky.bind(k.clone(), &member.id, self.ttl);
                }
                None
            }
            EffectivePersistence::HttpCookie { .. } => (self.bound != Some(idx)).then(|| {
                format!(
                    "{STICKY_COOKIE}={}; Path=/; Max-Age={}; HttpOnly",
                    member.cookie,
                    self.ttl.as_secs()
                )
            }),
            EffectivePersistence::AppCookie { cookie_name } => {
                // The application sets (or renews) its cookie: bind that value to the member.
                let issued = set_cookies
                    .filter_map(|v| {
                        let first = trim(v.split(|b| *b == b';').next()?);
                        let eq = first.iter().position(|b| *b == b'=')?;
                        (trim(&first[..eq]) == cookie_name.as_bytes())
                            .then(|| std::str::from_utf8(trim(&first[eq + 1..])).ok())
                            .flatten()
                    })
                    .next()
                    .map(|v| StickyKey::Cookie(v.to_owned()));
                // A client whose member went away is rebound to the one that served it.
                for key in issued.iter().chain(self.key.iter()) {
                    pool.sticky.bind(key.clone(), &member.id, self.ttl);
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::cookie_value;

    #[test]
    fn finds_a_cookie_among_several_headers() {
        let headers: [&[u8]; 2] = [b"a=1; b = 2", b"c=3;fulcrum_sticky=abc"];
        assert_eq!(cookie_value(headers.into_iter(), "b"), Some("2"));
        assert_eq!(
            cookie_value(headers.into_iter(), "fulcrum_sticky"),
            Some("abc")
        );
        assert_eq!(cookie_value(headers.into_iter(), "d"), None);
    }
}
