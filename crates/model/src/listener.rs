use serde::{Deserialize, Serialize};

use crate::{
    CertificateId, Checker, ListenerId, LoadBalancerId, MAX_NAME_LEN, PoolId, PoolProtocol,
    Timestamp, ValidationError, is_host_name,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ListenerProtocol {
    Tcp,
    Udp,
    Http,
    /// TLS passed through to HTTPS members (L4 on the wire).
    Https,
    /// TLS terminated here, HTTP to the members.
    TerminatedHttps,
    Quic,
}

impl ListenerProtocol {
    /// Whether the listener binds a UDP socket (else TCP).
    pub fn is_udp(self) -> bool {
        matches!(self, ListenerProtocol::Udp | ListenerProtocol::Quic)
    }

    /// Whether requests are parsed, so L7 routes apply.
    pub fn is_http(self) -> bool {
        matches!(
            self,
            ListenerProtocol::Http | ListenerProtocol::TerminatedHttps
        )
    }

    /// Seed 002: which pool protocols a listener of this protocol may use.
    /// UDP → UDP or QUIC; TCP → TCP (the seed says "must be TCP": no TCPSSL);
    /// HTTP → HTTP; HTTPS → HTTP or HTTPS; TERMINATED_HTTPS → HTTP. The seed names no
    /// QUIC listener; ours takes QUIC pools only.
    pub fn accepts_pool(self, pool: PoolProtocol) -> bool {
        use ListenerProtocol as L;
        use PoolProtocol as P;
        matches!(
            (self, pool),
            (L::Udp, P::Udp | P::Quic)
                | (L::Tcp, P::Tcp)
                | (L::Http, P::Http)
                | (L::Https, P::Http | P::Https)
                | (L::TerminatedHttps, P::Http)
                | (L::Quic, P::Quic)
        )
    }
}

/// An L7 route: requests whose host and path match go to `pool_id`. The first matching
/// route (in list order) wins; requests matching none go to the listener's default pool.
/// A route names at most one way to match the path: a prefix, the exact path, or a suffix
/// (the path is the request target without its query).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct L7Route {
    /// Addresses the route (a Huawei l7policy's id, an OCI path route's place); when set,
    /// unique within the listener. At most 255 characters.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Exact host, or `*.example.com` for any subdomain; absent matches every host.
    #[serde(default)]
    pub host: Option<String>,
    /// Path prefix starting with `/`; absent matches every path.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// The whole path, starting with `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_exact: Option<String>,
    /// The end of the path (e.g. `.jpg`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_suffix: Option<String>,
    /// Compare the path ignoring ASCII case (OCI path routes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub path_ignore_case: bool,
    /// A route that is down matches nothing (a Huawei l7policy with no rules yet).
    #[serde(default = "crate::default_true")]
    pub admin_state_up: bool,
    pub pool_id: PoolId,
    /// Send the path on without `path_prefix` (an API gateway's API path: `/orders/1`
    /// under `/orders` reaches the member as `/1`, after its base path). The prefix then
    /// matches whole path segments only: `/orders` matches `/orders`, `/orders/1` and
    /// `/orders?q`, not `/ordersx`. Needs `path_prefix`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strip_path_prefix: bool,
}

/// The longest path a route matches on.
pub const MAX_ROUTE_PATH: usize = 1024;

impl L7Route {
    /// A route to `pool_id` matching every request, to be narrowed by its fields.
    pub fn to_pool(pool_id: PoolId) -> Self {
        Self {
            id: String::new(),
            name: String::new(),
            description: String::new(),
            host: None,
            path_prefix: None,
            path_exact: None,
            path_suffix: None,
            path_ignore_case: false,
            admin_state_up: true,
            pool_id,
            strip_path_prefix: false,
        }
    }

    /// The prefix as matched: with `strip_path_prefix`, without its trailing `/` (so that
    /// `/orders/` and `/orders` both mean the segment, and `/` every path).
    fn prefix(&self) -> Option<&str> {
        let p = self.path_prefix.as_deref()?;
        Some(match self.strip_path_prefix {
            true => p.trim_end_matches('/'),
            false => p,
        })
    }

    /// How many leading bytes of a matched path the member does not get.
    pub fn stripped_len(&self) -> usize {
        match self.strip_path_prefix {
            true => self.prefix().map_or(0, str::len),
            false => 0,
        }
    }

    /// Whether a request for `host` (without port) and `path` (without query) matches.
    /// Allocation-free: the data plane calls it per request.
    pub fn matches(&self, host: Option<&str>, path: &[u8]) -> bool {
        let eq = |a: &[u8], b: &[u8]| {
            if self.path_ignore_case {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        self.admin_state_up
            && self
                .host
                .as_deref()
                .is_none_or(|want| host_matches(want, host))
            && self.prefix().is_none_or(|p| {
                path.get(..p.len())
                    .is_some_and(|head| eq(head, p.as_bytes()))
                    // A stripped prefix matches whole segments only.
                    && (!self.strip_path_prefix || matches!(path.get(p.len()), None | Some(b'/')))
            })
            && self
                .path_exact
                .as_deref()
                .is_none_or(|p| eq(path, p.as_bytes()))
            && self.path_suffix.as_deref().is_none_or(|p| {
                path.len()
                    .checked_sub(p.len())
                    .is_some_and(|at| eq(&path[at..], p.as_bytes()))
            })
    }

    pub(crate) fn check(&self, c: &mut Checker, at: &str) {
        c.max_len(&format!("{at}.id"), &self.id, MAX_NAME_LEN);
        c.max_len(&format!("{at}.name"), &self.name, MAX_NAME_LEN);
        c.max_len(
            &format!("{at}.description"),
            &self.description,
            MAX_NAME_LEN,
        );
        if let Some(h) = &self.host {
            c.check(is_host_name(h, true), &format!("{at}.host"), || {
                format!("{at}.host {h:?} is not a host name")
            });
        }
        for (field, value) in [
            ("path_prefix", &self.path_prefix),
            ("path_exact", &self.path_exact),
        ] {
            if let Some(p) = value {
                c.check(
                    p.starts_with('/') && p.len() <= MAX_ROUTE_PATH && !has_space(p),
                    &format!("{at}.{field}"),
                    || {
                        format!(
                            "{at}.{field} must start with '/', hold no spaces or control characters and be at most {MAX_ROUTE_PATH} bytes (got {p:?})"
                        )
                    },
                );
            }
        }
        if let Some(p) = &self.path_suffix {
            c.check(
                !p.is_empty() && p.len() <= MAX_ROUTE_PATH && !has_space(p),
                &format!("{at}.path_suffix"),
                || {
                    format!(
                        "{at}.path_suffix must be 1..{MAX_ROUTE_PATH} bytes with no spaces or control characters (got {p:?})"
                    )
                },
            );
        }
        let n_paths = [&self.path_prefix, &self.path_exact, &self.path_suffix]
            .iter()
            .filter(|p| p.is_some())
            .count();
        if n_paths > 1 {
            c.fail(
                at.to_owned(),
                format!("{at} may set only one of path_prefix, path_exact and path_suffix"),
            );
        }
    }
}

fn has_space(p: &str) -> bool {
    p.bytes().any(|b| b <= b' ' || b == 0x7f)
}

/// Whether `host` (as the request names it, without port) is `want`: an exact name
/// (ASCII case-insensitive), `*.example.com` for any name below `example.com`, or
/// `app.example.*` for `app.example` followed by more labels. Allocation-free.
pub fn host_matches(want: &str, host: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    if let Some(suffix) = want.strip_prefix("*.") {
        // `*.example.com` matches `a.example.com`, not `example.com`.
        return host.len().checked_sub(suffix.len() + 1).is_some_and(|dot| {
            host.as_bytes()[dot] == b'.'
                && host
                    .get(dot + 1..)
                    .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
        });
    }
    if let Some(prefix) = want.strip_suffix(".*") {
        // `app.*` matches `app.com` and `app.example.com`, not `app` nor `app.`.
        return host.len() > prefix.len() + 1
            && host.as_bytes()[prefix.len()] == b'.'
            && host
                .get(..prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(prefix));
    }
    host.eq_ignore_ascii_case(want)
}

/// Most hostnames one listener may name.
pub const MAX_LISTENER_HOSTNAMES: usize = 16;

/// Certificates for TLS termination: a default one, and more chosen by the server name the
/// client asks for (SNI). Each is given inline as PEM, or by reference to a stored
/// [`crate::Certificate`] (`certificate_id`, `sni_certificate_ids`), which the data plane
/// reads when it compiles the listener, so replacing the certificate re-keys the listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// The default certificate inline (with `private_key_pem`); empty when
    /// `certificate_id` names it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub certificate_chain_pem: String,
    /// Write-only: reads return it masked; sealed in the store (see `Secrets`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub private_key_pem: String,
    /// The default certificate by reference: a stored server certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_id: Option<CertificateId>,
    #[serde(default)]
    pub sni_certificates: Vec<SniCertificate>,
    /// Further certificates by reference, each served for its server names
    /// (`Certificate::server_names`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni_certificate_ids: Vec<CertificateId>,
    /// An OCSP response for the certificate (DER, base64), stapled to handshakes of clients
    /// that ask for one; replace it through the API before it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ocsp_response_base64: Option<String>,
}

/// Most certificates one listener may name by reference.
pub const MAX_SNI_CERTIFICATES: usize = 50;

impl ListenerTls {
    /// The default certificate by reference, with no PEM inline.
    pub fn by_reference(certificate_id: CertificateId, sni: Vec<CertificateId>) -> Self {
        ListenerTls {
            certificate_chain_pem: String::new(),
            private_key_pem: String::new(),
            certificate_id: Some(certificate_id),
            sni_certificates: Vec::new(),
            sni_certificate_ids: sni,
            ocsp_response_base64: None,
        }
    }

    /// Every stored certificate it names, with the field that names it.
    pub fn certificate_refs(&self) -> impl Iterator<Item = (String, &CertificateId)> {
        self.certificate_id
            .iter()
            .map(|c| ("tls.certificate_id".to_owned(), c))
            .chain(
                self.sni_certificate_ids
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (format!("tls.sni_certificate_ids[{i}]"), c)),
            )
    }

    /// The same certificates all inline: each reference replaced by the PEM of the
    /// certificate `lookup` finds, an SNI one once per server name. What the data plane
    /// builds its TLS config from.
    pub fn resolved<'a>(
        &self,
        lookup: impl Fn(&CertificateId) -> Option<&'a crate::Certificate>,
    ) -> Result<ListenerTls, String> {
        let server = |field: &str, id: &CertificateId| -> Result<&'a crate::Certificate, String> {
            let cert =
                lookup(id).ok_or_else(|| format!("{field}: certificate {id} does not exist"))?;
            if cert.spec.kind != crate::CertificateKind::Server
                || cert.spec.private_key_pem.is_none()
            {
                return Err(format!(
                    "{field}: certificate {id} is not a server certificate"
                ));
            }
            Ok(cert)
        };
        let mut out = self.clone();
        out.certificate_id = None;
        out.sni_certificate_ids = Vec::new();
        if let Some(id) = &self.certificate_id {
            let cert = server("tls.certificate_id", id)?;
            out.certificate_chain_pem = cert.spec.certificate_chain_pem.clone();
            out.private_key_pem = cert.spec.private_key_pem.clone().unwrap_or_default();
        }
        for (i, id) in self.sni_certificate_ids.iter().enumerate() {
            let cert = server(&format!("tls.sni_certificate_ids[{i}]"), id)?;
            for server_name in cert.server_names() {
                out.sni_certificates.push(SniCertificate {
                    server_name,
                    certificate_chain_pem: cert.spec.certificate_chain_pem.clone(),
                    private_key_pem: cert.spec.private_key_pem.clone().unwrap_or_default(),
                    ocsp_response_base64: None,
                });
            }
        }
        Ok(out)
    }
}

/// A certificate served to clients that ask for `server_name` (exact, or `*.example.com`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SniCertificate {
    pub server_name: String,
    pub certificate_chain_pem: String,
    /// Write-only: reads return it masked; sealed in the store (see `Secrets`).
    pub private_key_pem: String,
    /// As `ListenerTls::ocsp_response_base64`, for this certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ocsp_response_base64: Option<String>,
}

/// The largest OCSP response fulcrum staples (real ones are a few KB).
const MAX_OCSP_RESPONSE: usize = 64 * 1024;

/// An OCSP response given as base64, decoded; `None` if it is not valid base64 or too big.
pub fn decode_ocsp_response(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let der = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()?;
    (!der.is_empty() && der.len() <= MAX_OCSP_RESPONSE).then_some(der)
}

fn check_ocsp(c: &mut Checker, prefix: &str, ocsp: Option<&String>) {
    if let Some(text) = ocsp {
        c.check(
            decode_ocsp_response(text).is_some(),
            &format!("{prefix}ocsp_response_base64"),
            || {
                format!(
                    "{prefix}ocsp_response_base64 must be a DER OCSP response in base64, at most {MAX_OCSP_RESPONSE} bytes"
                )
            },
        );
    }
}

fn check_pem_pair(c: &mut Checker, prefix: &str, cert: &str, key: &str) {
    c.check(
        cert.contains("-----BEGIN CERTIFICATE-----"),
        &format!("{prefix}certificate_chain_pem"),
        || format!("{prefix}certificate_chain_pem must hold a PEM certificate"),
    );
    c.check(
        key.contains("PRIVATE KEY-----"),
        &format!("{prefix}private_key_pem"),
        || format!("{prefix}private_key_pem must hold a PEM private key"),
    );
}

/// Timeouts in milliseconds. Defaults follow common proxy practice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerTimeouts {
    pub connect_ms: u32,
    pub client_header_ms: u32,
    pub idle_ms: u32,
    pub upstream_response_ms: u32,
}

impl Default for ListenerTimeouts {
    fn default() -> Self {
        Self {
            connect_ms: 3_000,
            client_header_ms: 10_000,
            idle_ms: 60_000,
            upstream_response_ms: 60_000,
        }
    }
}

/// Whether this listener's traffic goes to the node's access log (when the node keeps one:
/// `[access_log]` in its configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerAccessLog {
    pub enabled: bool,
    /// Log one request (or TCP session) in this many: 1 logs every one. 1..1000000.
    pub sample_one_in: u32,
}

impl Default for ListenerAccessLog {
    fn default() -> Self {
        Self {
            enabled: true,
            sample_one_in: 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerSpec {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub protocol: ListenerProtocol,
    pub port: u16,
    #[serde(default)]
    pub default_pool_id: Option<PoolId>,
    #[serde(default)]
    pub routes: Vec<L7Route>,
    /// A route set of the load balancer (`route_sets`) whose routes apply after `routes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_set: Option<String>,
    /// Names of the load balancer's hostnames (`LoadBalancerSpec::hostnames`): when any
    /// are named, the listener serves only requests whose host matches one of them (and
    /// answers others 404). Empty: every host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    #[serde(default = "crate::default_true")]
    pub admin_state_up: bool,
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    /// Most concurrent client connections; absent = unlimited.
    #[serde(default)]
    pub connection_limit: Option<u32>,
    #[serde(default)]
    pub timeouts: ListenerTimeouts,
    #[serde(default)]
    pub access_log: ListenerAccessLog,
    /// Give each HTTP request an `X-Request-Id` (the client's, or a new UUID) that the member
    /// gets and the client gets back.
    #[serde(default = "crate::default_true")]
    pub request_id: bool,
}

impl ListenerSpec {
    /// Checks the listener on its own. Pool references (existence, same load balancer,
    /// protocol compatibility) need the pools: see [`ListenerSpec::validate_pool`].
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut c = Checker::new();
        c.max_len("name", &self.name, MAX_NAME_LEN);
        c.max_len("description", &self.description, MAX_NAME_LEN);
        c.check(self.port != 0, "port", || {
            "port must be between 1 and 65535 (got 0)".into()
        });
        match (&self.tls, self.protocol) {
            (None, ListenerProtocol::TerminatedHttps) => c.missing("tls"),
            (Some(_), p) if p != ListenerProtocol::TerminatedHttps => c.fail(
                "tls",
                "tls is only valid for TERMINATED_HTTPS listeners".to_string(),
            ),
            (Some(tls), _) => {
                let inline =
                    !tls.certificate_chain_pem.is_empty() || !tls.private_key_pem.is_empty();
                match (inline, &tls.certificate_id) {
                    (true, Some(_)) => c.fail(
                        "tls.certificate_id",
                        "tls.certificate_id and an inline certificate_chain_pem/private_key_pem \
                         exclude each other",
                    ),
                    (true, None) => check_pem_pair(
                        &mut c,
                        "tls.",
                        &tls.certificate_chain_pem,
                        &tls.private_key_pem,
                    ),
                    (false, Some(_)) => {}
                    (false, None) => c.fail(
                        "tls",
                        "tls needs a default certificate: certificate_id, or \
                         certificate_chain_pem and private_key_pem",
                    ),
                }
                c.check(
                    tls.sni_certificate_ids.len() <= MAX_SNI_CERTIFICATES,
                    "tls.sni_certificate_ids",
                    || format!("tls.sni_certificate_ids may name at most {MAX_SNI_CERTIFICATES} certificates"),
                );
                for (i, id) in tls.sni_certificate_ids.iter().enumerate() {
                    c.check(
                        !tls.sni_certificate_ids[..i].contains(id),
                        &format!("tls.sni_certificate_ids[{i}]"),
                        || format!("tls.sni_certificate_ids[{i}]: certificate {id} is named twice"),
                    );
                }
                check_ocsp(&mut c, "tls.", tls.ocsp_response_base64.as_ref());
                for (i, sni) in tls.sni_certificates.iter().enumerate() {
                    let prefix = format!("tls.sni_certificates[{i}].");
                    c.check(
                        is_host_name(&sni.server_name, true),
                        &format!("{prefix}server_name"),
                        || {
                            format!(
                                "{prefix}server_name {:?} is not a host name",
                                sni.server_name
                            )
                        },
                    );
                    check_pem_pair(
                        &mut c,
                        &prefix,
                        &sni.certificate_chain_pem,
                        &sni.private_key_pem,
                    );
                    check_ocsp(&mut c, &prefix, sni.ocsp_response_base64.as_ref());
                }
            }
            (None, _) => {}
        }
        if self.route_set.is_some() && !self.protocol.is_http() {
            c.fail(
                "route_set",
                "route_set is only valid for HTTP and TERMINATED_HTTPS listeners",
            );
        }
        if !self.hostnames.is_empty() && !self.protocol.is_http() {
            c.fail(
                "hostnames",
                "hostnames are only valid for HTTP and TERMINATED_HTTPS listeners",
            );
        }
        c.check(
            self.hostnames.len() <= MAX_LISTENER_HOSTNAMES,
            "hostnames",
            || format!("a listener may name at most {MAX_LISTENER_HOSTNAMES} hostnames"),
        );
        for (i, name) in self.hostnames.iter().enumerate() {
            c.check(
                !self.hostnames[..i].contains(name),
                &format!("hostnames[{i}]"),
                || format!("hostnames[{i}]: hostname {name:?} is named twice"),
            );
        }
        if !self.routes.is_empty() && !self.protocol.is_http() {
            c.fail(
                "routes",
                "routes are only valid for HTTP and TERMINATED_HTTPS listeners",
            );
        }
        for (i, r) in self.routes.iter().enumerate() {
            r.check(&mut c, &format!("routes[{i}]"));
            if !r.id.is_empty() && self.routes[..i].iter().any(|o| o.id == r.id) {
                c.fail(
                    format!("routes[{i}].id"),
                    format!("routes[{i}].id {:?} is taken by another route", r.id),
                );
            }
            if r.strip_path_prefix {
                c.check(
                    r.path_prefix.is_some(),
                    &format!("routes[{i}].strip_path_prefix"),
                    || format!("routes[{i}].strip_path_prefix needs a path_prefix"),
                );
            }
        }
        if let Some(limit) = self.connection_limit {
            c.check(limit > 0, "connection_limit", || {
                "connection_limit must be at least 1".into()
            });
        }
        let t = &self.timeouts;
        for (name, v) in [
            ("timeouts.connect_ms", t.connect_ms),
            ("timeouts.client_header_ms", t.client_header_ms),
            ("timeouts.idle_ms", t.idle_ms),
            ("timeouts.upstream_response_ms", t.upstream_response_ms),
        ] {
            c.range(name, v, 1, 3_600_000);
        }
        c.range(
            "access_log.sample_one_in",
            self.access_log.sample_one_in,
            1,
            1_000_000,
        );
        c.finish()
    }

    /// Every pool this listener sends traffic to, with the field that names it.
    pub fn pool_refs(&self) -> impl Iterator<Item = (String, &PoolId)> {
        self.default_pool_id
            .iter()
            .map(|p| ("default_pool_id".to_owned(), p))
            .chain(
                self.routes
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (format!("routes[{i}].pool_id"), &r.pool_id)),
            )
    }

    /// Checks one referenced pool: same load balancer and a compatible protocol.
    pub fn validate_pool(
        &self,
        field: &str,
        listener_lb: &LoadBalancerId,
        pool_lb: &LoadBalancerId,
        pool_protocol: PoolProtocol,
    ) -> Result<(), ValidationError> {
        if listener_lb != pool_lb {
            return Err(ValidationError::invalid(
                field,
                format!("{field} names a pool of another load balancer"),
            ));
        }
        if !self.protocol.accepts_pool(pool_protocol) {
            return Err(ValidationError::invalid(
                field,
                format!(
                    "a {:?} listener cannot use a {:?} pool",
                    self.protocol, pool_protocol
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Listener {
    pub id: ListenerId,
    pub loadbalancer_id: LoadBalancerId,
    #[serde(flatten)]
    pub spec: ListenerSpec,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_and_quic_listeners_bind_udp() {
        use ListenerProtocol as L;
        for (protocol, udp) in [
            (L::Tcp, false),
            (L::Udp, true),
            (L::Http, false),
            (L::Https, false),
            (L::TerminatedHttps, false),
            (L::Quic, true),
        ] {
            assert_eq!(protocol.is_udp(), udp, "{protocol:?}");
        }
    }

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

    fn spec(v: serde_json::Value) -> ListenerSpec {
        serde_json::from_value(v).unwrap()
    }

    fn first_field(spec: &ListenerSpec) -> String {
        spec.validate().unwrap_err().first().field.clone()
    }

    fn certificate(id: &str, kind: &str, key: Option<&str>) -> crate::Certificate {
        serde_json::from_value(serde_json::json!({
            "id": id, "kind": kind, "certificate_chain_pem": CERT, "private_key_pem": key,
            "domains": [format!("{id}.example.com")],
            "not_before": "2026-01-01T00:00:00Z", "not_after": "2027-01-01T00:00:00Z",
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
        }))
        .unwrap()
    }

    #[test]
    fn certificate_refs_name_the_default_then_each_sni_certificate() {
        let tls = ListenerTls::by_reference("d".into(), vec!["s1".into(), "s2".into()]);
        let refs: Vec<(String, String)> = tls
            .certificate_refs()
            .map(|(field, id)| (field, id.to_string()))
            .collect();
        assert_eq!(
            refs,
            [
                ("tls.certificate_id".to_owned(), "d".to_owned()),
                ("tls.sni_certificate_ids[0]".to_owned(), "s1".to_owned()),
                ("tls.sni_certificate_ids[1]".to_owned(), "s2".to_owned()),
            ]
        );
    }

    #[test]
    fn resolving_takes_server_certificates_with_keys_only() {
        let stored = [
            certificate("d", "server", Some(KEY)),
            certificate("s", "server", Some(KEY)),
            certificate("nokey", "server", None),
            certificate("ca", "ca", None),
        ];
        let lookup = |id: &CertificateId| stored.iter().find(|c| &c.id == id);
        let tls = ListenerTls::by_reference("d".into(), vec!["s".into()]);
        let inline = tls.resolved(lookup).unwrap();
        assert_eq!(inline.certificate_id, None);
        assert_eq!(
            (&*inline.certificate_chain_pem, &*inline.private_key_pem),
            (CERT, KEY)
        );
        assert_eq!(inline.sni_certificates.len(), 1);
        assert_eq!(inline.sni_certificates[0].server_name, "s.example.com");
        for (id, why) in [
            ("nokey", "is not a server certificate"),
            ("ca", "is not a server certificate"),
            ("gone", "does not exist"),
        ] {
            let e = ListenerTls::by_reference(id.into(), Vec::new())
                .resolved(lookup)
                .unwrap_err();
            assert!(
                e.starts_with("tls.certificate_id") && e.contains(why),
                "{id}: {e}"
            );
            let e = ListenerTls::by_reference("d".into(), vec![id.into()])
                .resolved(lookup)
                .unwrap_err();
            assert!(
                e.starts_with("tls.sni_certificate_ids[0]") && e.contains(why),
                "{id}: {e}"
            );
        }
    }

    #[test]
    fn an_inline_key_alone_is_an_inline_certificate() {
        // With a certificate_id too, the two exclude each other...
        let both = spec(
            serde_json::json!({"protocol": "TERMINATED_HTTPS", "port": 443,
            "tls": {"private_key_pem": KEY, "certificate_id": "c"}}),
        );
        assert_eq!(first_field(&both), "tls.certificate_id");
        // ... and without, the certificate it goes with is missing.
        let alone = spec(
            serde_json::json!({"protocol": "TERMINATED_HTTPS", "port": 443,
            "tls": {"private_key_pem": KEY}}),
        );
        assert_eq!(first_field(&alone), "tls.certificate_chain_pem");
        let whole = spec(
            serde_json::json!({"protocol": "TERMINATED_HTTPS", "port": 443,
            "tls": {"certificate_chain_pem": CERT, "private_key_pem": KEY}}),
        );
        whole.validate().unwrap();
    }

    #[test]
    fn route_sets_and_hostnames_are_for_http_listeners_and_hostnames_are_unique() {
        for protocol in ["HTTP", "TERMINATED_HTTPS"] {
            let mut v = serde_json::json!({"protocol": protocol, "port": 443,
                "route_set": "rs", "hostnames": ["a.example.com", "b.example.com"]});
            if protocol == "TERMINATED_HTTPS" {
                v["tls"] =
                    serde_json::json!({"certificate_chain_pem": CERT, "private_key_pem": KEY});
            }
            spec(v).validate().unwrap();
        }
        let tcp = |field: &str, value: serde_json::Value| {
            let mut v = serde_json::json!({"protocol": "TCP", "port": 5432});
            v[field] = value;
            first_field(&spec(v))
        };
        assert_eq!(tcp("route_set", serde_json::json!("rs")), "route_set");
        assert_eq!(
            tcp("hostnames", serde_json::json!(["a.example.com"])),
            "hostnames"
        );
        let twice = spec(serde_json::json!({"protocol": "HTTP", "port": 80,
            "hostnames": ["a.example.com", "b.example.com", "a.example.com"]}));
        assert_eq!(first_field(&twice), "hostnames[2]");
    }

    #[test]
    fn ocsp_responses_are_non_empty_base64_up_to_64_kib() {
        use base64::Engine as _;
        let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![0x30; n]);
        assert_eq!(decode_ocsp_response(&b64(3)), Some(vec![0x30; 3]));
        assert_eq!(
            decode_ocsp_response(&format!(" {}\n", b64(MAX_OCSP_RESPONSE))).map(|d| d.len()),
            Some(64 * 1024)
        );
        assert_eq!(decode_ocsp_response(&b64(MAX_OCSP_RESPONSE + 1)), None);
        assert_eq!(decode_ocsp_response(""), None);
        assert_eq!(decode_ocsp_response("not base64!"), None);
    }
}
