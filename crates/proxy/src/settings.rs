//! A member's upstream settings compiled once per configuration change (credentials as
//! header values, the encoded credential query, base path, breaker rules, TLS client config,
//! forward proxy), so a request only copies them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use fulcrum_model::UpstreamSettings;
use http::{HeaderName, HeaderValue};

/// Where a member is reached.
#[derive(Clone, Debug)]
pub enum Target {
    Addr(SocketAddr),
    /// A DNS name, resolved at connect time.
    Host(String, u16),
}

/// A member's upstream settings, prepared once per compile so a request only copies them.
#[derive(Default)]
pub struct UpstreamRt {
    /// Credential headers (Authorization included), replacing any the client sent.
    pub headers: Vec<(HeaderName, Vec<HeaderValue>)>,
    /// Credential query parameters, already encoded (`k=v&k=v`), or empty.
    pub query: String,
    /// Prefixed to every path, without a trailing `/`.
    pub base_path: String,
    pub breaker_rules: Vec<fulcrum_model::CircuitBreakerRule>,
    /// For https members: the TLS client config, or why it could not be built.
    pub tls: Option<Result<Arc<rustls::ClientConfig>, String>>,
    /// A forward proxy the member is reached through.
    pub proxy: Option<ProxyRt>,
    /// What this was compiled from: idle connections made under other settings (other TLS
    /// checks, say) are not reused.
    pub source: UpstreamSettings,
}

impl UpstreamRt {
    pub fn compile(u: &UpstreamSettings) -> UpstreamRt {
        use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
        // RFC 3986 unreserved characters stay as they are.
        const QUERY: &AsciiSet = &NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'.')
            .remove(b'_')
            .remove(b'~');
        let c = &u.credentials;
        let mut headers: Vec<(HeaderName, Vec<HeaderValue>)> = c
            .headers
            .iter()
            .filter_map(|(name, values)| {
                // The model validated names and values; anything else is skipped, not sent.
                let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
                let values = values
                    .iter()
                    .filter_map(|v| HeaderValue::from_str(v).ok())
                    .collect();
                Some((name, values))
            })
            .collect();
        if let Some(a) = &c.authorization
            && let Ok(v) = HeaderValue::from_str(&format!("{} {}", a.scheme, a.parameter))
        {
            headers.push((http::header::AUTHORIZATION, vec![v]));
        }
        let query = c
            .query
            .iter()
            .flat_map(|(k, values)| {
                values.iter().map(move |v| {
                    format!(
                        "{}={}",
                        utf8_percent_encode(k, QUERY),
                        utf8_percent_encode(v, QUERY)
                    )
                })
            })
            .collect::<Vec<_>>()
            .join("&");
        UpstreamRt {
            headers,
            query,
            base_path: u.base_path.trim_end_matches('/').to_owned(),
            breaker_rules: u.circuit_breaker.clone(),
            source: u.clone(),
            proxy: u.proxy.as_ref().map(ProxyRt::compile),
            tls: (u.scheme == fulcrum_model::UpstreamScheme::Https)
                .then(|| crate::tls::upstream_client(&u.tls, c.client_certificate_pem.as_deref())),
        }
    }

    /// Whether requests need rewriting at all.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.query.is_empty() && self.base_path.is_empty()
    }
}

/// A forward proxy: where it listens and the `Proxy-Authorization` to send it.
pub struct ProxyRt {
    pub target: Target,
    pub authorization: Option<HeaderValue>,
}

impl ProxyRt {
    fn compile(p: &fulcrum_model::ForwardProxy) -> ProxyRt {
        use base64::Engine;
        // The model accepts only `http://host[:port]`.
        let hostport = p.url.trim_start_matches("http://");
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, port)) if !h.ends_with(']') || hostport.starts_with('[') => {
                (h, port.parse().unwrap_or(80))
            }
            _ => (hostport, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let target = match host.parse::<IpAddr>() {
            Ok(ip) => Target::Addr(SocketAddr::new(ip, port)),
            Err(_) => Target::Host(host.to_owned(), port),
        };
        let authorization = p.username.as_ref().and_then(|user| {
            let pass = p.password.as_deref().unwrap_or("");
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            HeaderValue::from_str(&format!("Basic {token}")).ok()
        });
        ProxyRt {
            target,
            authorization,
        }
    }
}
