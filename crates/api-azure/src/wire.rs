//! The BackendContract wire shape and its translation onto the model (pure: no I/O).
//!
//! A backend is a pool named after the backend id. What the data plane uses lives in the
//! model: a Single backend's URL is its one member (host, port) plus the pool's upstream
//! scheme and base path; credentials, TLS checks, proxy and circuit-breaker rules are the
//! pool's `upstream` settings. A Pool backend's members are the backends it references,
//! each named after that backend and carrying its endpoint and upstream settings.
//! Azure-only fields (type, protocol, title, resourceId, certificate thumbprints, Service
//! Fabric properties) are labels on the service's load balancer; the description is the
//! pool's description.

use std::collections::BTreeMap;

use fulcrum_model::{
    Authorization, Checker, CircuitBreakerRule, Credentials, FailureCondition, ForwardProxy,
    HostHeader, Member, MemberSpec, Pool, StatusCodeRange, UpstreamScheme, UpstreamSettings,
    UpstreamTls, ValidationError, is_host_name,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The ARM resource type of a backend.
pub(crate) const RESOURCE_TYPE: &str = "Microsoft.ApiManagement/service/backends";

/// Longest text Azure fields keep here (the label value limit of the model).
const MAX_LABEL_VALUE: usize = 1024;

/// Azure's limit for a title.
const MAX_TITLE: usize = 300;

/// The model's limit for a pool description, which holds the backend's description.
const MAX_DESCRIPTION: usize = fulcrum_model::MAX_NAME_LEN;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BackendProperties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// `{serviceFabricCluster: {...}}`, kept as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreakerWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolWire>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CredentialsWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<AuthorizationWire>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct AuthorizationWire {
    pub scheme: String,
    pub parameter: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct ProxyWire {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TlsWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate_certificate_chain: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate_certificate_name: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct CircuitBreakerWire {
    #[serde(default)]
    pub rules: Vec<RuleWire>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RuleWire {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub failure_condition: Option<FailureConditionWire>,
    #[serde(default)]
    pub trip_duration: Option<String>,
    #[serde(default)]
    pub accept_retry_after: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FailureConditionWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code_ranges: Option<Vec<StatusRangeWire>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reasons: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct StatusRangeWire {
    pub min: i64,
    pub max: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct PoolWire {
    #[serde(default)]
    pub services: Vec<PoolServiceWire>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct PoolServiceWire {
    pub id: String,
    #[serde(default)]
    pub priority: Option<i64>,
    #[serde(default)]
    pub weight: Option<i64>,
}

/// The APIM service a request names: `/subscriptions/{sub}/resourceGroups/{rg}/providers/
/// Microsoft.ApiManagement/service/{svc}`, spelled as the caller spelled it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Service {
    pub subscription: String,
    pub resource_group: String,
    pub name: String,
}

impl Service {
    pub fn arm_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ApiManagement/service/{}",
            self.subscription, self.resource_group, self.name
        )
    }

    pub fn backend_arm_id(&self, backend: &str) -> String {
        format!("{}/backends/{backend}", self.arm_id())
    }

    /// The labels that mark a load balancer as this service's: resource group and service
    /// names compare case-insensitively, so they are kept lower-cased.
    pub fn labels(&self) -> [(&'static str, String); 3] {
        [
            (LABEL_SUBSCRIPTION, self.subscription.to_ascii_lowercase()),
            ("azure.resource_group", self.resource_group.to_lowercase()),
            ("azure.service", self.name.to_ascii_lowercase()),
        ]
    }

    /// The backend id an ARM id in `pool.services[].id` names, if it is one of this
    /// service's backends (a bare backend id is accepted too).
    pub fn backend_of_arm_id<'a>(&self, arm_id: &'a str) -> Option<&'a str> {
        if !arm_id.contains('/') {
            return Some(arm_id);
        }
        let parts: Vec<&str> = arm_id.trim_end_matches('/').split('/').collect();
        let literal =
            |i: usize, want: &str| parts.get(i).is_some_and(|p| p.eq_ignore_ascii_case(want));
        let ok = parts.len() == 11
            && parts[0].is_empty()
            && literal(1, "subscriptions")
            && parts[2].eq_ignore_ascii_case(&self.subscription)
            && literal(3, "resourceGroups")
            && parts[4].to_lowercase() == self.resource_group.to_lowercase()
            && literal(5, "providers")
            && literal(6, "Microsoft.ApiManagement")
            && literal(7, "service")
            && parts[8].eq_ignore_ascii_case(&self.name)
            && literal(9, "backends")
            && !parts[10].is_empty();
        ok.then(|| parts[10])
    }
}

// ---- labels ------------------------------------------------------------------------

const LABEL_PREFIX: &str = "azure.backend/";
/// The subscription of the service a load balancer stands for (lower-cased).
pub(crate) const LABEL_SUBSCRIPTION: &str = "azure.subscription";

/// The label prefix of one backend's Azure-only fields.
pub(crate) fn label_prefix(backend: &str) -> String {
    format!("{LABEL_PREFIX}{backend}/")
}

/// One backend's Azure-only fields, by field name, out of the load balancer's labels.
pub(crate) fn backend_labels(
    labels: &BTreeMap<String, String>,
    backend: &str,
) -> BTreeMap<String, String> {
    let prefix = label_prefix(backend);
    labels
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|f| (f.to_owned(), v.clone())))
        .collect()
}

/// Replaces one backend's labels (`fields` empty: removes them).
pub(crate) fn set_backend_labels(
    labels: &mut BTreeMap<String, String>,
    backend: &str,
    fields: &BTreeMap<String, String>,
) {
    let prefix = label_prefix(backend);
    labels.retain(|k, _| !k.starts_with(&prefix));
    for (f, v) in fields {
        labels.insert(format!("{prefix}{f}"), v.clone());
    }
}

/// Backend ids with labels on this load balancer (every backend has a `type` label).
pub(crate) fn backend_ids(labels: &BTreeMap<String, String>) -> impl Iterator<Item = &str> {
    labels.keys().filter_map(|k| {
        k.strip_prefix(LABEL_PREFIX)?
            .strip_suffix("/type")
            .filter(|id| !id.contains('/'))
    })
}

// ---- from the wire ------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BackendKind {
    Single,
    Pool,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Single => "Single",
            BackendKind::Pool => "Pool",
        }
    }

    pub fn from_label(s: Option<&String>) -> BackendKind {
        match s.map(String::as_str) {
            Some("Pool") => BackendKind::Pool,
            _ => BackendKind::Single,
        }
    }
}

/// A service of a Pool backend, as the request names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServiceRef {
    pub backend: String,
    pub priority: u8,
    pub weight: u32,
}

/// What a backend's properties become in the model.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Translated {
    pub kind: BackendKind,
    /// Single: the one member's address and port.
    pub endpoint: Option<(String, u16)>,
    /// Single: the pool's upstream settings (Pool: the defaults).
    pub upstream: UpstreamSettings,
    /// Pool: the referenced backends, in order.
    pub services: Vec<ServiceRef>,
    pub description: String,
    /// Azure-only fields, by field name (become labels).
    pub labels: BTreeMap<String, String>,
}

/// Validates a backend's properties (Azure's rules and the model's) and translates them.
/// Field paths in errors are Azure's (`properties.circuitBreaker.rules[0].tripDuration`).
pub(crate) fn translate(
    p: &BackendProperties,
    service: &Service,
    self_id: &str,
) -> Result<Translated, ValidationError> {
    let mut c = Checker::new();
    let kind = match p.kind.as_deref() {
        None => BackendKind::Single,
        Some(k) if k.eq_ignore_ascii_case("single") => BackendKind::Single,
        Some(k) if k.eq_ignore_ascii_case("pool") => BackendKind::Pool,
        Some(k) => {
            c.fail(
                "properties.type",
                format!("type must be Single or Pool (got {k:?})"),
            );
            BackendKind::Single
        }
    };
    let mut labels = BTreeMap::new();
    labels.insert("type".to_owned(), kind.as_str().to_owned());
    match p.protocol.as_deref() {
        None => {}
        Some(v) if v.eq_ignore_ascii_case("http") || v.eq_ignore_ascii_case("soap") => {
            labels.insert("protocol".into(), v.to_ascii_lowercase());
        }
        Some(v) => c.fail(
            "properties.protocol",
            format!("protocol must be http or soap (got {v:?})"),
        ),
    }
    for (field, value, max) in [
        ("title", &p.title, MAX_TITLE),
        ("resourceId", &p.resource_id, MAX_LABEL_VALUE),
    ] {
        if let Some(v) = value {
            c.max_len(&format!("properties.{field}"), v, max);
            labels.insert(field.to_owned(), v.clone());
        }
    }
    let description = p.description.clone().unwrap_or_default();
    c.max_len("properties.description", &description, MAX_DESCRIPTION);
    if let Some(v) = p.properties.as_ref().filter(|v| !is_empty_json(v)) {
        keep_json(
            &mut c,
            &mut labels,
            "properties",
            "properties.properties",
            v,
        );
    }

    let mut upstream = UpstreamSettings::default();
    let mut endpoint = None;
    if let Some(cr) = &p.credentials {
        translate_credentials(&mut c, &mut labels, cr, &mut upstream.credentials);
    }
    if let Some(px) = &p.proxy {
        upstream.proxy = Some(ForwardProxy {
            // `http://host:port/` is the same proxy as `http://host:port`.
            url: px.url.strip_suffix('/').unwrap_or(&px.url).to_owned(),
            username: px.username.clone(),
            password: px.password.clone(),
        });
    }
    if let Some(tls) = &p.tls {
        upstream.tls = UpstreamTls {
            validate_certificate_chain: tls.validate_certificate_chain.unwrap_or(true),
            validate_certificate_name: tls.validate_certificate_name.unwrap_or(true),
            ca_certificates_pem: None,
        };
    }
    if let Some(cb) = &p.circuit_breaker {
        for (i, r) in cb.rules.iter().enumerate() {
            if let Some(rule) =
                translate_rule(&mut c, &format!("properties.circuitBreaker.rules[{i}]"), r)
            {
                upstream.circuit_breaker.push(rule);
            }
        }
    }

    let mut services = Vec::new();
    match kind {
        BackendKind::Single => {
            match p.url.as_deref() {
                None => c.missing("properties.url"),
                Some(url) => match parse_url(url) {
                    Ok(u) => {
                        upstream.scheme = u.scheme;
                        upstream.base_path = u.base_path;
                        // APIM sends a backend its URL's host, not the caller's.
                        upstream.host_header = HostHeader::Member;
                        endpoint = Some((u.host, u.port));
                    }
                    Err(m) => c.fail("properties.url", m),
                },
            }
            if p.pool.as_ref().is_some_and(|pl| !pl.services.is_empty()) {
                c.fail(
                    "properties.pool",
                    "pool.services is only allowed when type is Pool",
                );
            }
        }
        BackendKind::Pool => {
            // A Pool's traffic settings are those of the backends it references.
            for (field, set) in [
                ("url", p.url.is_some()),
                (
                    "credentials",
                    upstream.credentials != Credentials::default(),
                ),
                ("proxy", upstream.proxy.is_some()),
                ("tls", upstream.tls != UpstreamTls::default()),
                ("circuitBreaker", !upstream.circuit_breaker.is_empty()),
            ] {
                if set {
                    c.fail(
                        format!("properties.{field}"),
                        format!("{field} belongs on the Single backends a Pool backend references, not on the Pool (set it to null)"),
                    );
                }
            }
            let list = p
                .pool
                .as_ref()
                .map(|pl| pl.services.as_slice())
                .unwrap_or_default();
            if list.is_empty() {
                c.missing("properties.pool.services");
            }
            for (i, s) in list.iter().enumerate() {
                let field = format!("properties.pool.services[{i}]");
                let Some(backend) = service.backend_of_arm_id(&s.id) else {
                    c.fail(
                        format!("{field}.id"),
                        format!("{field}.id must be the ARM id of a backend of this service ({}/backends/{{id}}), got {:?}", service.arm_id(), s.id),
                    );
                    continue;
                };
                if backend == self_id {
                    c.fail(
                        format!("{field}.id"),
                        "a Pool backend cannot reference itself",
                    );
                } else if services.iter().any(|x: &ServiceRef| x.backend == backend) {
                    c.fail(
                        format!("{field}.id"),
                        format!("backend {backend} is listed twice"),
                    );
                }
                let priority = s.priority.unwrap_or(0);
                let weight = s.weight.unwrap_or(1);
                c.range(&format!("{field}.priority"), priority, 0, 100);
                c.range(&format!("{field}.weight"), weight, 0, 100);
                services.push(ServiceRef {
                    backend: backend.to_owned(),
                    priority: u8::try_from(priority.clamp(0, 100)).unwrap_or(0),
                    weight: u32::try_from(weight.clamp(0, 100)).unwrap_or(1),
                });
            }
        }
    }
    if let Err(e) = upstream.validate() {
        for fe in e.errors {
            c.fail(azure_field(&fe.field), azure_text(&fe.message));
        }
    }
    c.finish()?;
    Ok(Translated {
        kind,
        endpoint,
        upstream,
        services,
        description,
        labels,
    })
}

fn is_empty_json(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.values().all(is_empty_json),
        _ => false,
    }
}

/// Keeps a JSON value as a label, within the label size limit.
fn keep_json(
    c: &mut Checker,
    labels: &mut BTreeMap<String, String>,
    label: &str,
    field: &str,
    v: &impl Serialize,
) {
    match serde_json::to_string(v) {
        Ok(s) if s.len() <= MAX_LABEL_VALUE => {
            labels.insert(label.to_owned(), s);
        }
        _ => c.fail(
            field,
            format!("{field} is longer than {MAX_LABEL_VALUE} characters of JSON"),
        ),
    }
}

fn translate_credentials(
    c: &mut Checker,
    labels: &mut BTreeMap<String, String>,
    cr: &CredentialsWire,
    out: &mut Credentials,
) {
    out.headers = cr.header.clone().unwrap_or_default();
    out.query = cr.query.clone().unwrap_or_default();
    if let Some(a) = &cr.authorization {
        out.authorization = Some(Authorization {
            scheme: a.scheme.clone(),
            parameter: a.parameter.clone(),
        });
    }
    // Thumbprints and certificate ids name certificates kept in APIM; fulcrum keeps them
    // as given (client certificates are the native `client_certificate_pem`).
    for (label, list) in [
        ("certificateIds", &cr.certificate_ids),
        ("certificate", &cr.certificate),
    ] {
        if let Some(list) = list.as_ref().filter(|l| !l.is_empty()) {
            keep_json(
                c,
                labels,
                label,
                &format!("properties.credentials.{label}"),
                list,
            );
        }
    }
}

fn translate_rule(c: &mut Checker, field: &str, r: &RuleWire) -> Option<CircuitBreakerRule> {
    let name = r.name.clone().unwrap_or_default();
    let Some(fc) = &r.failure_condition else {
        c.missing(format!("{field}.failureCondition"));
        return None;
    };
    let mut duration = |sub: &str, v: &Option<String>| -> Option<u64> {
        let f = format!("{field}.{sub}");
        match v.as_deref() {
            None => {
                c.missing(f);
                None
            }
            Some(s) => match parse_duration(s) {
                Some(ms) => Some(ms),
                None => {
                    c.fail(
                        &f,
                        format!(
                            "{f} must be an ISO 8601 duration such as PT30S or PT1H (got {s:?})"
                        ),
                    );
                    None
                }
            },
        }
    };
    let interval_ms = duration("failureCondition.interval", &fc.interval);
    let trip_duration_ms = duration("tripDuration", &r.trip_duration);
    let mut number = |sub: &str, v: Option<i64>| -> Option<u32> {
        let f = format!("{field}.failureCondition.{sub}");
        v.and_then(|n| match u32::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => {
                c.fail(&f, format!("{f} must not be negative (got {n})"));
                None
            }
        })
    };
    let count = number("count", fc.count);
    let percentage = number("percentage", fc.percentage);
    let mut ranges = Vec::new();
    for (i, sr) in fc.status_code_ranges.iter().flatten().enumerate() {
        let f = format!("{field}.failureCondition.statusCodeRanges[{i}]");
        match (u16::try_from(sr.min), u16::try_from(sr.max)) {
            (Ok(min), Ok(max)) => ranges.push(StatusCodeRange { min, max }),
            _ => c.fail(
                f.clone(),
                format!("{f}: statuses must be between 100 and 599"),
            ),
        }
    }
    Some(CircuitBreakerRule {
        name,
        failure_condition: FailureCondition {
            count,
            percentage,
            interval_ms: interval_ms?,
            status_code_ranges: ranges,
            error_reasons: fc.error_reasons.clone().unwrap_or_default(),
        },
        trip_duration_ms: trip_duration_ms?,
        accept_retry_after: r.accept_retry_after.unwrap_or(false),
    })
}

/// A model field path (`upstream.circuit_breaker[0].trip_duration_ms`) in Azure's terms.
fn azure_field(model: &str) -> String {
    let rest = model.strip_prefix("upstream.").unwrap_or(model);
    format!("properties.{}", azure_text(rest))
}

/// Model field names in a message, renamed to Azure's.
fn azure_text(s: &str) -> String {
    [
        ("circuit_breaker[", "circuitBreaker.rules["),
        ("failure_condition", "failureCondition"),
        ("status_code_ranges", "statusCodeRanges"),
        ("error_reasons", "errorReasons"),
        ("trip_duration_ms", "tripDuration"),
        ("interval_ms", "interval"),
        ("credentials.headers", "credentials.header"),
        ("base_path", "url path"),
    ]
    .iter()
    .fold(s.to_owned(), |acc, (from, to)| acc.replace(from, to))
}

/// A runtime URL's parts.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ParsedUrl {
    pub scheme: UpstreamScheme,
    pub host: String,
    pub port: u16,
    /// The path without a trailing `/` ("" for none).
    pub base_path: String,
}

/// An absolute http(s) URL with a host, optional port and path; no user info, query or
/// fragment (credentials go in `credentials`).
pub(crate) fn parse_url(url: &str) -> Result<ParsedUrl, String> {
    let bad = |why: &str| format!("url must be an absolute http or https URL ({why}), got {url:?}");
    if url.len() > 2000 {
        return Err(bad("at most 2000 characters"));
    }
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => UpstreamScheme::Http,
        "https" => UpstreamScheme::Https,
        _ => return Err(bad("the scheme must be http or https")),
    };
    if rest.contains(['?', '#']) {
        return Err(bad(
            "no query or fragment; use credentials.query for query parameters",
        ));
    }
    if rest.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
        return Err(bad("no spaces or control characters"));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(bad("no user info; use credentials.authorization"));
    }
    let default_port = if scheme == UpstreamScheme::Https {
        443
    } else {
        80
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("not an IPv6 address in []"));
        }
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(bad("junk after ]")),
        };
        (addr.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (authority.to_owned(), None),
        }
    };
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("the port must be 1..65535"))?,
    };
    if host.is_empty() || !(host.parse::<std::net::IpAddr>().is_ok() || is_host_name(&host, false))
    {
        return Err(bad("no valid host"));
    }
    Ok(ParsedUrl {
        scheme,
        host,
        port,
        base_path: path.trim_end_matches('/').to_owned(),
    })
}

/// The URL a Single backend's member and settings stand for.
pub(crate) fn render_url(upstream: &UpstreamSettings, member: &MemberSpec) -> String {
    let (scheme, default_port) = match upstream.scheme {
        UpstreamScheme::Http => ("http", 80),
        UpstreamScheme::Https => ("https", 443),
    };
    let host = match member.address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => member.address.clone(),
    };
    let port = if member.port == default_port {
        String::new()
    } else {
        format!(":{}", member.port)
    };
    format!("{scheme}://{host}{port}{}", upstream.base_path)
}

/// An ISO 8601 duration (`P1DT2H`, `PT30S`, `PT0.5S`, `P1W`) in milliseconds. Years and
/// months have no fixed length and are refused.
pub(crate) fn parse_duration(s: &str) -> Option<u64> {
    let rest = s.strip_prefix('P').or_else(|| s.strip_prefix('p'))?;
    let (date, time) = match rest.split_once(['T', 't']) {
        Some((d, t)) => {
            if t.is_empty() {
                return None;
            }
            (d, Some(t))
        }
        None => (rest, None),
    };
    let mut total: f64 = 0.0;
    let mut any = false;
    let mut walk = |part: &str, units: &[(char, f64)]| -> Option<()> {
        let mut num = String::new();
        let mut next_unit = 0;
        for ch in part.chars() {
            if ch.is_ascii_digit() || ch == '.' || ch == ',' {
                num.push(if ch == ',' { '.' } else { ch });
                continue;
            }
            let idx = units
                .iter()
                .position(|(u, _)| u.eq_ignore_ascii_case(&ch))?;
            if idx < next_unit || num.is_empty() {
                return None;
            }
            let n: f64 = num.parse().ok()?;
            total += n * units[idx].1;
            any = true;
            next_unit = idx + 1;
            num.clear();
        }
        num.is_empty().then_some(())
    };
    walk(date, &[('W', 604_800_000.0), ('D', 86_400_000.0)])?;
    if let Some(t) = time {
        walk(t, &[('H', 3_600_000.0), ('M', 60_000.0), ('S', 1000.0)])?;
    }
    (any && total.is_finite() && total < 1e15).then(|| total.round() as u64)
}

/// Milliseconds as an ISO 8601 duration (`P1DT2H3M4.5S`, `PT0S`).
pub(crate) fn format_duration(ms: u64) -> String {
    let days = ms / 86_400_000;
    let hours = ms / 3_600_000 % 24;
    let minutes = ms / 60_000 % 60;
    let millis = ms % 60_000;
    let mut s = String::from("P");
    if days > 0 {
        s.push_str(&format!("{days}D"));
    }
    if hours > 0 || minutes > 0 || millis > 0 || days == 0 {
        s.push('T');
        if hours > 0 {
            s.push_str(&format!("{hours}H"));
        }
        if minutes > 0 {
            s.push_str(&format!("{minutes}M"));
        }
        if millis > 0 || (hours == 0 && minutes == 0 && days == 0) {
            if millis.is_multiple_of(1000) {
                s.push_str(&format!("{}S", millis / 1000));
            } else {
                let frac = format!("{:03}", millis % 1000);
                s.push_str(&format!(
                    "{}.{}S",
                    millis / 1000,
                    frac.trim_end_matches('0')
                ));
            }
        }
    }
    s
}

/// What reads show instead of a secret.
pub(crate) const MASK: &str = "***";

/// Puts the current secret back wherever a write sends the mask reads show, so a backend
/// read, changed and written back keeps its secrets. A mask with no secret behind it is
/// refused: it would otherwise become the secret.
pub(crate) fn unmask(
    new: &mut BackendProperties,
    current: Option<&BackendProperties>,
) -> Result<(), ValidationError> {
    let mut c = Checker::new();
    let cur_cr = current.and_then(|p| p.credentials.as_ref());
    let mut restore = |field: String, value: &mut String, old: Option<&String>| {
        if value == MASK {
            match old {
                Some(old) if old != MASK => *value = old.clone(),
                _ => c.fail(
                    field.clone(),
                    format!("{field}: {MASK} is how reads mask secrets; send the secret itself"),
                ),
            }
        }
    };
    if let Some(cr) = new.credentials.as_mut() {
        for (kind, map, old_map) in [
            (
                "header",
                cr.header.as_mut(),
                cur_cr.and_then(|c| c.header.as_ref()),
            ),
            (
                "query",
                cr.query.as_mut(),
                cur_cr.and_then(|c| c.query.as_ref()),
            ),
        ] {
            for (name, values) in map.into_iter().flatten() {
                for (i, v) in values.iter_mut().enumerate() {
                    let old = old_map.and_then(|m| m.get(name)).and_then(|vs| vs.get(i));
                    restore(format!("properties.credentials.{kind}.{name}[{i}]"), v, old);
                }
            }
        }
        if let Some(a) = cr.authorization.as_mut() {
            let old = cur_cr
                .and_then(|c| c.authorization.as_ref())
                .map(|a| &a.parameter);
            restore(
                "properties.credentials.authorization.parameter".into(),
                &mut a.parameter,
                old,
            );
        }
    }
    if let Some(p) = new.proxy.as_mut()
        && let Some(pw) = p.password.as_mut()
    {
        let old = current
            .and_then(|c| c.proxy.as_ref())
            .and_then(|p| p.password.as_ref());
        restore("properties.proxy.password".into(), pw, old);
    }
    c.finish()
}

// ---- to the wire --------------------------------------------------------------------

/// A backend as the model holds it, back in Azure's shape. `masked`: secrets as `***`.
pub(crate) fn render(
    service: &Service,
    pool: &Pool,
    members: &[&Member],
    labels: &BTreeMap<String, String>,
    masked: bool,
) -> BackendProperties {
    let kind = BackendKind::from_label(labels.get("type"));
    let upstream = if masked {
        pool.spec.upstream.masked()
    } else {
        pool.spec.upstream.clone()
    };
    let json_label = |name: &str| -> Option<Value> {
        labels.get(name).and_then(|v| serde_json::from_str(v).ok())
    };
    let list_label = |name: &str| -> Option<Vec<String>> {
        json_label(name).and_then(|v| serde_json::from_value(v).ok())
    };
    let mut p = BackendProperties {
        kind: Some(kind.as_str().to_owned()),
        protocol: Some(
            labels
                .get("protocol")
                .cloned()
                .unwrap_or_else(|| "http".into()),
        ),
        title: labels.get("title").cloned(),
        resource_id: labels.get("resourceId").cloned(),
        description: (!pool.spec.description.is_empty()).then(|| pool.spec.description.clone()),
        properties: json_label("properties"),
        ..Default::default()
    };
    match kind {
        BackendKind::Single => {
            p.url = members.first().map(|m| render_url(&upstream, &m.spec));
            let cr = &upstream.credentials;
            let wire = CredentialsWire {
                certificate_ids: list_label("certificateIds"),
                certificate: list_label("certificate"),
                query: (!cr.query.is_empty()).then(|| cr.query.clone()),
                header: (!cr.headers.is_empty()).then(|| cr.headers.clone()),
                authorization: cr.authorization.as_ref().map(|a| AuthorizationWire {
                    scheme: a.scheme.clone(),
                    parameter: a.parameter.clone(),
                }),
            };
            p.credentials = (wire != CredentialsWire::default()).then_some(wire);
            p.proxy = upstream.proxy.as_ref().map(|px| ProxyWire {
                url: px.url.clone(),
                username: px.username.clone(),
                password: px.password.clone(),
            });
            p.tls = Some(TlsWire {
                validate_certificate_chain: Some(upstream.tls.validate_certificate_chain),
                validate_certificate_name: Some(upstream.tls.validate_certificate_name),
            });
            if !upstream.circuit_breaker.is_empty() {
                p.circuit_breaker = Some(CircuitBreakerWire {
                    rules: upstream.circuit_breaker.iter().map(render_rule).collect(),
                });
            }
        }
        BackendKind::Pool => {
            let mut ordered: Vec<&&Member> = members.iter().collect();
            ordered.sort_by(|a, b| {
                (a.spec.priority, &a.spec.name).cmp(&(b.spec.priority, &b.spec.name))
            });
            p.pool = Some(PoolWire {
                services: ordered
                    .into_iter()
                    .map(|m| PoolServiceWire {
                        id: service.backend_arm_id(&m.spec.name),
                        priority: Some(i64::from(m.spec.priority)),
                        weight: Some(i64::from(m.spec.weight)),
                    })
                    .collect(),
            });
        }
    }
    p
}

fn render_rule(r: &CircuitBreakerRule) -> RuleWire {
    let fc = &r.failure_condition;
    RuleWire {
        name: Some(r.name.clone()),
        failure_condition: Some(FailureConditionWire {
            count: fc.count.map(i64::from),
            percentage: fc.percentage.map(i64::from),
            interval: Some(format_duration(fc.interval_ms)),
            status_code_ranges: (!fc.status_code_ranges.is_empty()).then(|| {
                fc.status_code_ranges
                    .iter()
                    .map(|r| StatusRangeWire {
                        min: i64::from(r.min),
                        max: i64::from(r.max),
                    })
                    .collect()
            }),
            error_reasons: (!fc.error_reasons.is_empty()).then(|| fc.error_reasons.clone()),
        }),
        trip_duration: Some(format_duration(r.trip_duration_ms)),
        accept_retry_after: Some(r.accept_retry_after),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn service() -> Service {
        Service {
            subscription: "00000000-0000-0000-0000-000000000001".into(),
            resource_group: "RG1".into(),
            name: "apim1".into(),
        }
    }

    fn props(v: Value) -> BackendProperties {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn durations_parse_and_format() {
        for (text, ms) in [
            ("PT30S", 30_000),
            ("PT1H", 3_600_000),
            ("P1DT2H3M4.5S", 93_784_500),
            ("P1W", 604_800_000),
            ("PT0.25S", 250),
            ("pt1m", 60_000),
        ] {
            assert_eq!(parse_duration(text), Some(ms), "{text}");
        }
        for bad in [
            "", "P", "PT", "30S", "P1Y", "P1M", "PT1S1H", "PTS", "P1DT", "PT1.5.5S",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        for (ms, text) in [
            (0, "PT0S"),
            (30_000, "PT30S"),
            (93_784_500, "P1DT2H3M4.5S"),
            (86_400_000, "P1D"),
            (250, "PT0.25S"),
        ] {
            assert_eq!(format_duration(ms), text);
            assert_eq!(parse_duration(text), Some(ms));
        }
    }

    #[test]
    fn urls_parse_into_scheme_host_port_and_base_path() {
        let u = parse_url("https://Backend.example:8443/api/v1/").unwrap();
        assert_eq!(
            u,
            ParsedUrl {
                scheme: UpstreamScheme::Https,
                host: "Backend.example".into(),
                port: 8443,
                base_path: "/api/v1".into()
            }
        );
        assert_eq!(parse_url("http://[::1]/").unwrap().port, 80);
        assert_eq!(parse_url("http://10.0.0.5").unwrap().base_path, "");
        for bad in [
            "ftp://x",
            "x",
            "http://",
            "http://a b",
            "http://u:p@h/",
            "http://h/?q=1",
            "http://h:0",
            "http://h:99999",
            "http://[zz]/",
            "/relative",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        let mut m = MemberSpec::new("::1", 8080);
        let up = UpstreamSettings {
            base_path: "/x".into(),
            ..Default::default()
        };
        assert_eq!(render_url(&up, &m), "http://[::1]:8080/x");
        m.port = 80;
        assert_eq!(render_url(&up, &m), "http://[::1]/x");
    }

    #[test]
    fn seed_003_sample_translates_and_renders_back_masked() {
        let p = props(json!({
            "description": "description5308",
            "url": "https://backendname2644/",
            "protocol": "http",
            "credentials": {
                "query": {"sv": ["xx", "bb", "cc"]},
                "header": {"x-my-1": ["val1", "val2"]},
                "authorization": {"scheme": "Basic", "parameter": "opensesma"}
            },
            "proxy": {"url": "http://192.168.1.1:8080", "username": "Contoso\\admin", "password": "pw"},
            "tls": {"validateCertificateChain": false, "validateCertificateName": true},
            "circuitBreaker": {"rules": [{
                "name": "r", "tripDuration": "PT1M", "acceptRetryAfter": true,
                "failureCondition": {"count": 3, "interval": "PT1H",
                    "statusCodeRanges": [{"min": 500, "max": 599}], "errorReasons": ["timeout"]}
            }]}
        }));
        let t = translate(&p, &service(), "b1").unwrap();
        assert_eq!(t.kind, BackendKind::Single);
        assert_eq!(t.endpoint, Some(("backendname2644".into(), 443)));
        assert_eq!(t.upstream.scheme, UpstreamScheme::Https);
        assert!(!t.upstream.tls.validate_certificate_chain);
        assert_eq!(t.upstream.circuit_breaker[0].trip_duration_ms, 60_000);
        assert_eq!(
            t.upstream
                .credentials
                .authorization
                .as_ref()
                .unwrap()
                .parameter,
            "opensesma"
        );

        let mut spec = fulcrum_model::PoolSpec::new("b1", fulcrum_model::PoolProtocol::Http);
        spec.description = t.description.clone();
        spec.upstream = t.upstream.clone();
        let (host, port) = t.endpoint.clone().unwrap();
        let now = chrono::DateTime::<chrono::Utc>::from_timestamp(0, 0).unwrap();
        let pool = Pool {
            id: fulcrum_model::PoolId("p".into()),
            loadbalancer_id: fulcrum_model::LoadBalancerId("l".into()),
            spec,
            created_at: now,
            updated_at: now,
        };
        let member = Member {
            id: fulcrum_model::MemberId("m".into()),
            pool_id: pool.id.clone(),
            spec: MemberSpec::new(host, port),
            created_at: now,
            updated_at: now,
        };
        let back = render(&service(), &pool, &[&member], &t.labels, false);
        assert_eq!(back.url.as_deref(), Some("https://backendname2644"));
        assert_eq!(back.credentials, p.credentials);
        assert_eq!(back.proxy, p.proxy);
        assert_eq!(back.circuit_breaker, p.circuit_breaker);
        // Translating what was rendered gives the same model: PATCH merges onto it.
        assert_eq!(
            translate(&back, &service(), "b1").unwrap().upstream,
            t.upstream
        );

        let masked = render(&service(), &pool, &[&member], &t.labels, true);
        let cr = masked.credentials.unwrap();
        assert_eq!(cr.authorization.unwrap().parameter, "***");
        assert_eq!(cr.header.unwrap()["x-my-1"], vec!["***", "***"]);
        assert_eq!(masked.proxy.unwrap().password.as_deref(), Some("***"));
    }

    #[test]
    fn every_rule_is_refused_with_an_azure_field_path() {
        let cases = [
            (
                json!({"url": "http://h", "type": "Other"}),
                "properties.type",
            ),
            (
                json!({"url": "http://h", "protocol": "grpc"}),
                "properties.protocol",
            ),
            (json!({}), "properties.url"),
            (json!({"url": "mailto:x"}), "properties.url"),
            (json!({"type": "Pool"}), "properties.pool.services"),
            (
                json!({"type": "Pool", "pool": {"services": [{"id": "b1"}]}}),
                "properties.pool.services[0].id",
            ),
            (
                json!({"type": "Pool", "pool": {"services": [{"id": "b2", "priority": 101}]}}),
                "properties.pool.services[0].priority",
            ),
            (
                json!({"type": "Pool", "pool": {"services": [{"id": "b2", "weight": -1}]}}),
                "properties.pool.services[0].weight",
            ),
            (
                json!({"type": "Pool", "pool": {"services": [{"id": "/subscriptions/x/resourceGroups/o/providers/Microsoft.ApiManagement/service/other/backends/b2"}]}}),
                "properties.pool.services[0].id",
            ),
            (
                json!({"type": "Pool", "url": "http://h", "pool": {"services": [{"id": "b2"}]}}),
                "properties.url",
            ),
            (
                json!({"url": "http://h", "pool": {"services": [{"id": "b2"}]}}),
                "properties.pool",
            ),
            (
                json!({"url": "http://h", "circuitBreaker": {"rules": [{"name": "r", "tripDuration": "soon", "failureCondition": {"count": 1, "interval": "PT1M", "statusCodeRanges": [{"min": 500, "max": 599}]}}]}}),
                "properties.circuitBreaker.rules[0].tripDuration",
            ),
            (
                json!({"url": "http://h", "circuitBreaker": {"rules": [{"name": "r", "tripDuration": "PT1M", "failureCondition": {"count": 1, "interval": "PT1M", "statusCodeRanges": [{"min": 600, "max": 700}]}}]}}),
                "properties.circuitBreaker.rules[0].failureCondition.statusCodeRanges[0]",
            ),
            (
                json!({"url": "http://h", "circuitBreaker": {"rules": [{"name": "r", "tripDuration": "PT1M", "failureCondition": {"count": 1, "interval": "PT1M", "statusCodeRanges": [{"min": 599, "max": 500}]}}]}}),
                "properties.circuitBreaker.rules[0].failureCondition.statusCodeRanges[0]",
            ),
            (
                json!({"url": "http://h", "credentials": {"header": {"bad header": ["v"]}}}),
                "properties.credentials.header",
            ),
            (
                json!({"url": "http://h", "proxy": {"url": "socks5://p:1"}}),
                "properties.proxy.url",
            ),
            (
                json!({"url": "http://h", "description": "x".repeat(300)}),
                "properties.description",
            ),
        ];
        for (body, field) in cases {
            let e = translate(&props(body.clone()), &service(), "b1").unwrap_err();
            assert!(
                e.errors.iter().any(|fe| fe.field == field),
                "{body}: expected {field}, got {e:?}"
            );
        }
    }

    #[test]
    fn pool_services_accept_arm_ids_of_the_same_service_case_insensitively() {
        let s = service();
        assert_eq!(
            s.backend_of_arm_id("/subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups/rg1/providers/microsoft.apimanagement/service/APIM1/backends/b2"),
            Some("b2")
        );
        assert_eq!(s.backend_of_arm_id("b2"), Some("b2"));
        assert_eq!(s.backend_of_arm_id("/subscriptions/x/backends/b2"), None);
    }

    #[test]
    fn masks_written_back_keep_the_current_secret() {
        let current = props(json!({"url": "http://h",
            "credentials": {"header": {"k": ["a", "b"]}, "authorization": {"scheme": "Basic", "parameter": "p"}},
            "proxy": {"url": "http://p:1", "username": "u", "password": "pw"}}));
        let mut new = props(json!({"url": "http://h2",
            "credentials": {"header": {"k": ["***", "new"]}, "authorization": {"scheme": "Basic", "parameter": "***"}},
            "proxy": {"url": "http://p:1", "username": "u", "password": "***"}}));
        unmask(&mut new, Some(&current)).unwrap();
        let cr = new.credentials.as_ref().unwrap();
        assert_eq!(cr.header.as_ref().unwrap()["k"], vec!["a", "new"]);
        assert_eq!(cr.authorization.as_ref().unwrap().parameter, "p");
        assert_eq!(new.proxy.as_ref().unwrap().password.as_deref(), Some("pw"));
        let mut orphan =
            props(json!({"url": "http://h", "credentials": {"query": {"q": ["***"]}}}));
        let e = unmask(&mut orphan, Some(&current)).unwrap_err();
        assert_eq!(e.errors[0].field, "properties.credentials.query.q[0]");
    }

    #[test]
    fn labels_are_kept_per_backend() {
        let mut labels = BTreeMap::new();
        labels.insert("azure.service".to_owned(), "s".to_owned());
        let fields: BTreeMap<String, String> = [
            ("type".to_owned(), "Single".to_owned()),
            ("title".to_owned(), "t".to_owned()),
        ]
        .into();
        set_backend_labels(&mut labels, "a", &fields);
        set_backend_labels(&mut labels, "ab", &fields);
        assert_eq!(backend_labels(&labels, "a"), fields);
        assert_eq!(backend_ids(&labels).collect::<Vec<_>>(), vec!["a", "ab"]);
        set_backend_labels(&mut labels, "a", &BTreeMap::new());
        assert_eq!(backend_ids(&labels).collect::<Vec<_>>(), vec!["ab"]);
        assert_eq!(labels.len(), 3);
    }
}
