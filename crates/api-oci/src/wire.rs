//! OCI Load Balancing wire shapes (camelCase JSON) and their translation onto the model.
//! Pure: no I/O. Request fields are read as options so a missing one is reported with
//! OCI's own field name (`MissingParameter`), and wrong types with the field's path.
//!
//! Mapping: load balancer = load balancer; backend set (by name) = pool; backend
//! (`ip:port`) = member; listener (by name) = listener; health checker = the pool's
//! health monitor; policy ROUND_ROBIN / LEAST_CONNECTIONS / IP_HASH = algorithm
//! ROUND_ROBIN / LEAST_CONNECTIONS / SOURCE_IP.

use std::collections::BTreeMap;

use fulcrum_control::{ControlPlane, Versioned};
use fulcrum_model::{
    Algorithm, HealthMonitor, HealthMonitorSpec, HealthMonitorType, Listener, ListenerProtocol,
    LoadBalancer, LoadBalancerId, LockKind, Member, MemberSpec, PersistenceType, Pool, PoolId,
    PoolProtocol, PoolSpec, ProvisioningStatus, SessionPersistence, WorkRequest, WorkRequestId,
    WorkRequestStatus,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::OciError;

// ---- identifiers ---------------------------------------------------------------------

/// OCIDs are fulcrum ids behind a fixed prefix; a bare fulcrum id is accepted too.
const LB_PREFIX: &str = "ocid1.loadbalancer.oc1.fulcrum.";
const WR_PREFIX: &str = "ocid1.loadbalancerworkrequest.oc1.fulcrum.";

/// Labels that keep OCI-only load balancer fields.
pub(crate) const LABEL_COMPARTMENT: &str = "oci.compartmentId";
const LABEL_SHAPE: &str = "oci.shapeName";
const LABEL_SUBNETS: &str = "oci.subnetIds";
const LABEL_PRIVATE: &str = "oci.isPrivate";

pub(crate) fn lb_ocid(id: &LoadBalancerId) -> String {
    format!("{LB_PREFIX}{id}")
}

pub(crate) fn lb_id(ocid: &str) -> LoadBalancerId {
    LoadBalancerId(ocid.strip_prefix(LB_PREFIX).unwrap_or(ocid).to_owned())
}

pub(crate) fn wr_ocid(id: &WorkRequestId) -> String {
    format!("{WR_PREFIX}{id}")
}

pub(crate) fn wr_id(ocid: &str) -> WorkRequestId {
    WorkRequestId(ocid.strip_prefix(WR_PREFIX).unwrap_or(ocid).to_owned())
}

/// A pool's backend set name: its name, or its id when it has none (made natively).
pub(crate) fn pool_name(p: &Pool) -> String {
    if p.spec.name.is_empty() {
        p.id.to_string()
    } else {
        p.spec.name.clone()
    }
}

pub(crate) fn listener_name(l: &Listener) -> String {
    if l.spec.name.is_empty() {
        l.id.to_string()
    } else {
        l.spec.name.clone()
    }
}

// ---- reading requests ----------------------------------------------------------------

/// Reads a JSON body, naming the field at fault.
pub(crate) fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, OciError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(OciError::invalid(
            "the request body is empty; expected JSON",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let what = crate::decode::describe(&inner);
        if inner.is_syntax() || inner.is_eof() || path == "." {
            OciError::invalid(format!("malformed request body: {what}"))
        } else {
            OciError::invalid(format!("{path}: {what}"))
        }
    })
}

fn required<T>(v: Option<T>, field: &str) -> Result<T, OciError> {
    v.ok_or_else(|| OciError::missing(field))
}

fn int_in(v: i64, field: &str, min: i64, max: i64) -> Result<u32, OciError> {
    if v < min || v > max {
        return Err(OciError::invalid(format!(
            "{field} must be between {min} and {max} (got {v})"
        )));
    }
    u32::try_from(v).map_err(|_| OciError::invalid(format!("{field} is out of range")))
}

/// Refuses a feature fulcrum does not have rather than dropping it silently.
fn unsupported(present: bool, field: &str) -> Result<(), OciError> {
    if present {
        return Err(OciError::invalid(format!(
            "{field} is not supported by fulcrum"
        )));
    }
    Ok(())
}

fn is_set(v: &Option<Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Object(m)) => !m.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BackendIn {
    pub ip_address: Option<String>,
    pub port: Option<i64>,
    pub weight: Option<i64>,
    pub max_connections: Option<i64>,
    pub backup: Option<bool>,
    pub drain: Option<bool>,
    pub offline: Option<bool>,
}

/// `weight` is OCI's int32; `maxConnections` absent or 0 means unlimited.
fn weight(v: i64, field: &str) -> Result<u32, OciError> {
    int_in(v, field, 0, i64::from(i32::MAX))
}

fn max_connections(v: Option<i64>, field: &str) -> Result<Option<u32>, OciError> {
    match v {
        None | Some(0) => Ok(None),
        Some(n) => int_in(n, field, 1, i64::from(i32::MAX)).map(Some),
    }
}

impl BackendIn {
    pub fn to_spec(&self, prefix: &str) -> Result<MemberSpec, OciError> {
        let ip = required(self.ip_address.clone(), &format!("{prefix}ipAddress"))?;
        let port = int_in(
            required(self.port, &format!("{prefix}port"))?,
            &format!("{prefix}port"),
            1,
            65535,
        )?;
        let mut spec = MemberSpec::new(ip, u16::try_from(port).unwrap_or_default());
        spec.weight = weight(self.weight.unwrap_or(1), &format!("{prefix}weight"))?;
        spec.max_connections =
            max_connections(self.max_connections, &format!("{prefix}maxConnections"))?;
        spec.backup = self.backup.unwrap_or(false);
        spec.drain = self.drain.unwrap_or(false);
        spec.offline = self.offline.unwrap_or(false);
        Ok(spec)
    }
}

/// UpdateBackendDetails (seed 000): weight, backup, drain and offline are required.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UpdateBackendIn {
    pub weight: Option<i64>,
    pub max_connections: Option<i64>,
    pub backup: Option<bool>,
    pub drain: Option<bool>,
    pub offline: Option<bool>,
}

impl UpdateBackendIn {
    /// The merge patch of the member's spec.
    pub fn to_patch(&self) -> Result<Value, OciError> {
        let weight = weight(required(self.weight, "weight")?, "weight")?;
        let backup = required(self.backup, "backup")?;
        let drain = required(self.drain, "drain")?;
        let offline = required(self.offline, "offline")?;
        let max = max_connections(self.max_connections, "maxConnections")?;
        Ok(serde_json::json!({
            "weight": weight,
            "backup": backup,
            "drain": drain,
            "offline": offline,
            "max_connections": max,
        }))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HealthCheckerIn {
    pub protocol: Option<String>,
    pub url_path: Option<String>,
    pub port: Option<i64>,
    pub return_code: Option<i64>,
    pub retries: Option<i64>,
    pub timeout_in_millis: Option<i64>,
    pub interval_in_millis: Option<i64>,
    pub response_body_regex: Option<String>,
}

impl HealthCheckerIn {
    pub fn to_spec(&self, pool_id: PoolId, prefix: &str) -> Result<HealthMonitorSpec, OciError> {
        let f = |name: &str| format!("{prefix}{name}");
        let protocol = required(self.protocol.as_deref(), &f("protocol"))?;
        let kind = match protocol {
            "HTTP" => HealthMonitorType::Http,
            "TCP" => HealthMonitorType::Tcp,
            other => {
                return Err(OciError::invalid(format!(
                    "{} must be HTTP or TCP (got {other:?})",
                    f("protocol")
                )));
            }
        };
        unsupported(
            self.response_body_regex
                .as_deref()
                .is_some_and(|r| !r.is_empty()),
            &f("responseBodyRegex"),
        )?;
        let mut spec = HealthMonitorSpec::new(pool_id, kind);
        if let Some(path) = &self.url_path {
            spec.url_path = path.clone();
        }
        spec.port = match self.port {
            None | Some(0) => None,
            Some(p) => Some(u16::try_from(int_in(p, &f("port"), 1, 65535)?).unwrap_or_default()),
        };
        if let Some(code) = self.return_code {
            spec.expected_codes = int_in(code, &f("returnCode"), 100, 599)?.to_string();
        }
        spec.unhealthy_threshold =
            u8::try_from(int_in(self.retries.unwrap_or(3), &f("retries"), 1, 10)?).unwrap_or(3);
        spec.interval_ms = int_in(
            self.interval_in_millis.unwrap_or(10_000),
            &f("intervalInMillis"),
            1_000,
            1_800_000,
        )?;
        spec.timeout_ms = int_in(
            self.timeout_in_millis.unwrap_or(3_000),
            &f("timeoutInMillis"),
            1,
            600_000,
        )?;
        if spec.timeout_ms > spec.interval_ms {
            return Err(OciError::invalid(format!(
                "{} must not exceed {}",
                f("timeoutInMillis"),
                f("intervalInMillis")
            )));
        }
        Ok(spec)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionPersistenceIn {
    pub cookie_name: Option<String>,
}

/// CreateBackendSetDetails, and the value of `backendSets` in CreateLoadBalancerDetails
/// (whose name is the map key).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BackendSetIn {
    pub name: Option<String>,
    pub policy: Option<String>,
    pub backends: Option<Vec<BackendIn>>,
    pub backend_max_connections: Option<i64>,
    pub health_checker: Option<HealthCheckerIn>,
    pub ssl_configuration: Option<Value>,
    pub session_persistence_configuration: Option<SessionPersistenceIn>,
    pub lb_cookie_session_persistence_configuration: Option<Value>,
}

/// What a backend set becomes: a pool, its members and its health monitor.
pub(crate) struct BackendSetParts {
    pub spec: PoolSpec,
    pub members: Vec<MemberSpec>,
    pub monitor: HealthMonitorSpec,
}

pub(crate) fn check_name(name: &str, field: &str) -> Result<(), OciError> {
    if name.is_empty() || name.len() > 32 || name.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(OciError::invalid(format!(
            "{field} must be 1 to 32 characters without spaces or '/' (got {name:?})"
        )));
    }
    Ok(())
}

impl BackendSetIn {
    /// `protocol` is the pool's: OCI backend sets have none; they serve HTTP unless a
    /// TCP listener created with them routes to them. The caller checks the name.
    pub fn to_parts(
        &self,
        name: &str,
        pool_id: &PoolId,
        protocol: PoolProtocol,
        prefix: &str,
    ) -> Result<BackendSetParts, OciError> {
        let f = |n: &str| format!("{prefix}{n}");
        let mut spec = PoolSpec::new(name, protocol);
        spec.algorithm = policy(
            required(self.policy.as_deref(), &f("policy"))?,
            &f("policy"),
        )?;
        spec.max_connections_per_member =
            max_connections(self.backend_max_connections, &f("backendMaxConnections"))?;
        unsupported(is_set(&self.ssl_configuration), &f("sslConfiguration"))?;
        let lb_cookie = is_set(&self.lb_cookie_session_persistence_configuration);
        spec.session_persistence = match (&self.session_persistence_configuration, lb_cookie) {
            (Some(_), true) => {
                return Err(OciError::invalid(format!(
                    "{} and {} cannot both be set",
                    f("sessionPersistenceConfiguration"),
                    f("lbCookieSessionPersistenceConfiguration")
                )));
            }
            (Some(sp), false) => {
                let cookie = required(
                    sp.cookie_name.clone(),
                    &f("sessionPersistenceConfiguration.cookieName"),
                )?;
                if cookie == "*" {
                    return Err(OciError::invalid(format!(
                        "{}: \"*\" (any cookie) is not supported; name the application's cookie",
                        f("sessionPersistenceConfiguration.cookieName")
                    )));
                }
                Some(SessionPersistence {
                    kind: PersistenceType::AppCookie,
                    cookie_name: Some(cookie),
                    persistence_timeout: None,
                })
            }
            (None, true) => Some(SessionPersistence {
                kind: PersistenceType::HttpCookie,
                cookie_name: None,
                persistence_timeout: None,
            }),
            (None, false) => None,
        };
        let members = self
            .backends
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, b)| b.to_spec(&f(&format!("backends[{i}]."))))
            .collect::<Result<Vec<_>, _>>()?;
        let checker = required(self.health_checker.as_ref(), &f("healthChecker"))?;
        let monitor = checker.to_spec(pool_id.clone(), &f("healthChecker."))?;
        Ok(BackendSetParts {
            spec,
            members,
            monitor,
        })
    }
}

fn policy(p: &str, field: &str) -> Result<Algorithm, OciError> {
    match p {
        "ROUND_ROBIN" => Ok(Algorithm::RoundRobin),
        "LEAST_CONNECTIONS" => Ok(Algorithm::LeastConnections),
        "IP_HASH" => Ok(Algorithm::SourceIp),
        other => Err(OciError::invalid(format!(
            "{field} must be ROUND_ROBIN, LEAST_CONNECTIONS or IP_HASH (got {other:?})"
        ))),
    }
}

fn policy_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::RoundRobin => "ROUND_ROBIN",
        Algorithm::LeastConnections => "LEAST_CONNECTIONS",
        Algorithm::SourceIp => "IP_HASH",
        Algorithm::QuicCid => "QUIC_CID",
    }
}

impl BackendSetParts {
    /// The merge patch of an existing pool's spec: the fields a backend set sets.
    pub fn pool_patch(&self) -> Value {
        serde_json::json!({
            "algorithm": self.spec.algorithm,
            "max_connections_per_member": self.spec.max_connections_per_member,
            "session_persistence": self.spec.session_persistence,
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConnectionConfigurationIn {
    pub idle_timeout: Option<i64>,
    pub backend_tcp_proxy_protocol_version: Option<i64>,
}

/// CreateListenerDetails, UpdateListenerDetails and the values of `listeners` in
/// CreateLoadBalancerDetails.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListenerIn {
    pub name: Option<String>,
    pub default_backend_set_name: Option<String>,
    pub port: Option<i64>,
    pub protocol: Option<String>,
    pub hostname_names: Option<Vec<String>>,
    pub path_route_set_name: Option<String>,
    pub ssl_configuration: Option<super::certificates::SslIn>,
    pub connection_configuration: Option<ConnectionConfigurationIn>,
    pub routing_policy_name: Option<String>,
    pub rule_set_names: Option<Value>,
}

/// The listener fields OCI sets, resolved against the load balancer's backend sets.
pub(crate) struct ListenerParts {
    pub protocol: ListenerProtocol,
    pub port: u16,
    pub default_backend_set: String,
    pub idle_ms: Option<u32>,
    /// `pathRouteSetName`: a route set of the load balancer (the model's `route_set`).
    pub path_route_set: Option<String>,
    /// `routingPolicyName`: also a route set of the load balancer (its `route_set`).
    pub routing_policy: Option<String>,
    /// `hostnameNames`: hostnames of the load balancer (the model's `hostnames`).
    pub hostname_names: Vec<String>,
    /// With `sslConfiguration`: the certificate the listener terminates TLS with.
    pub certificate_name: Option<String>,
}

impl ListenerIn {
    pub fn to_parts(&self, prefix: &str) -> Result<ListenerParts, OciError> {
        let f = |n: &str| format!("{prefix}{n}");
        let protocol = match required(self.protocol.as_deref(), &f("protocol"))? {
            "HTTP" => ListenerProtocol::Http,
            "TCP" => ListenerProtocol::Tcp,
            other => {
                return Err(OciError::invalid(format!(
                    "{} must be HTTP or TCP (got {other:?})",
                    f("protocol")
                )));
            }
        };
        let port = int_in(required(self.port, &f("port"))?, &f("port"), 1, 65535)?;
        let default_backend_set = required(
            self.default_backend_set_name.clone(),
            &f("defaultBackendSetName"),
        )?;
        unsupported(is_set(&self.rule_set_names), &f("ruleSetNames"))?;
        let path_route_set = self.path_route_set_name.clone().filter(|n| !n.is_empty());
        let routing_policy = self.routing_policy_name.clone().filter(|n| !n.is_empty());
        if path_route_set.is_some() && routing_policy.is_some() {
            return Err(OciError::invalid(format!(
                "{} and {} exclude each other",
                f("pathRouteSetName"),
                f("routingPolicyName")
            )));
        }
        let hostname_names = self.hostname_names.clone().unwrap_or_default();
        if !hostname_names.is_empty() && protocol != ListenerProtocol::Http {
            return Err(OciError::invalid(format!(
                "{} need an HTTP listener",
                f("hostnameNames")
            )));
        }
        let certificate_name = self
            .ssl_configuration
            .as_ref()
            .map(|ssl| ssl.check(prefix))
            .transpose()?;
        let protocol = match (protocol, &certificate_name) {
            (ListenerProtocol::Http, Some(_)) => ListenerProtocol::TerminatedHttps,
            (ListenerProtocol::Tcp, Some(_)) => {
                return Err(OciError::invalid(format!(
                    "{} on a TCP listener (TLS to TCP backends) is not supported by fulcrum; use HTTP",
                    f("sslConfiguration")
                )));
            }
            (p, _) => p,
        };
        let mut idle_ms = None;
        if let Some(cc) = &self.connection_configuration {
            unsupported(
                cc.backend_tcp_proxy_protocol_version.is_some(),
                &f("connectionConfiguration.backendTcpProxyProtocolVersion"),
            )?;
            if let Some(secs) = cc.idle_timeout {
                idle_ms =
                    Some(int_in(secs, &f("connectionConfiguration.idleTimeout"), 1, 3600)? * 1000);
            }
        }
        Ok(ListenerParts {
            protocol,
            port: u16::try_from(port).unwrap_or_default(),
            default_backend_set,
            idle_ms,
            path_route_set,
            routing_policy,
            hostname_names,
            certificate_name,
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateLoadBalancerIn {
    pub compartment_id: Option<String>,
    pub display_name: Option<String>,
    pub shape_name: Option<String>,
    pub is_private: Option<bool>,
    pub is_delete_protection_enabled: Option<bool>,
    pub subnet_ids: Option<Vec<String>>,
    pub listeners: Option<BTreeMap<String, ListenerIn>>,
    pub backend_sets: Option<BTreeMap<String, BackendSetIn>>,
    pub hostnames: Option<BTreeMap<String, super::routing::HostnameIn>>,
    pub certificates: Option<Value>,
    pub ssl_cipher_suites: Option<Value>,
    pub path_route_sets: Option<Value>,
    pub rule_sets: Option<Value>,
    pub reserved_ips: Option<Value>,
    pub freeform_tags: Option<BTreeMap<String, String>>,
}

impl CreateLoadBalancerIn {
    pub fn check_unsupported(&self) -> Result<(), OciError> {
        unsupported(is_set(&self.certificates), "certificates")?;
        unsupported(is_set(&self.ssl_cipher_suites), "sslCipherSuites")?;
        unsupported(is_set(&self.path_route_sets), "pathRouteSets")?;
        unsupported(is_set(&self.rule_sets), "ruleSets")?;
        unsupported(is_set(&self.reserved_ips), "reservedIps")
    }

    /// The labels that keep what OCI reads back and the model has no field for.
    pub fn labels(&self) -> Result<BTreeMap<String, String>, OciError> {
        let mut labels = BTreeMap::new();
        labels.insert(
            LABEL_COMPARTMENT.to_owned(),
            required(self.compartment_id.clone(), "compartmentId")?,
        );
        labels.insert(
            LABEL_SHAPE.to_owned(),
            required(self.shape_name.clone(), "shapeName")?,
        );
        let subnets = required(self.subnet_ids.clone(), "subnetIds")?;
        labels.insert(LABEL_SUBNETS.to_owned(), subnets.join(","));
        labels.insert(
            LABEL_PRIVATE.to_owned(),
            self.is_private.unwrap_or(false).to_string(),
        );
        for (k, v) in self.freeform_tags.iter().flatten() {
            labels.insert(format!("oci.tag.{k}"), v.clone());
        }
        Ok(labels)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UpdateLoadBalancerIn {
    pub display_name: Option<String>,
    pub is_delete_protection_enabled: Option<bool>,
    pub freeform_tags: Option<BTreeMap<String, String>>,
    pub defined_tags: Option<Value>,
    pub security_attributes: Option<Value>,
    pub reserved_ips: Option<Value>,
    pub ip_mode: Option<String>,
    pub ipv6_subnet_cidr: Option<String>,
    pub is_request_id_enabled: Option<bool>,
    pub request_id_header: Option<String>,
}

impl UpdateLoadBalancerIn {
    /// The merge patch of the load balancer's spec, given its current state.
    pub fn to_patch(&self, lb: &LoadBalancer) -> Result<Value, OciError> {
        unsupported(is_set(&self.defined_tags), "definedTags")?;
        unsupported(is_set(&self.security_attributes), "securityAttributes")?;
        unsupported(is_set(&self.reserved_ips), "reservedIps")?;
        unsupported(self.ipv6_subnet_cidr.is_some(), "ipv6SubnetCidr")?;
        unsupported(
            self.is_request_id_enabled == Some(true),
            "isRequestIdEnabled",
        )?;
        unsupported(self.request_id_header.is_some(), "requestIdHeader")?;
        if let Some(mode) = &self.ip_mode
            && mode != "IPV4"
        {
            return Err(OciError::invalid(format!(
                "ipMode {mode:?} is not supported by fulcrum"
            )));
        }
        let mut patch = serde_json::Map::new();
        if let Some(name) = &self.display_name {
            if name.trim().is_empty() {
                return Err(OciError::invalid("displayName must not be empty"));
            }
            patch.insert("name".into(), Value::from(name.clone()));
        }
        if let Some(protect) = self.is_delete_protection_enabled {
            let mut locks: Vec<_> = lb
                .spec
                .locks
                .iter()
                .filter(|l| l.kind != LockKind::Delete)
                .cloned()
                .collect();
            if protect {
                locks.push(fulcrum_model::ResourceLock {
                    kind: LockKind::Delete,
                    message: "delete protection".into(),
                });
            }
            patch.insert(
                "locks".into(),
                serde_json::to_value(locks).unwrap_or_default(),
            );
        }
        if let Some(tags) = &self.freeform_tags {
            // Tags are replaced as a whole, as OCI does.
            let mut labels = serde_json::Map::new();
            for k in lb.spec.labels.keys().filter(|k| k.starts_with("oci.tag.")) {
                labels.insert(k.clone(), Value::Null);
            }
            for (k, v) in tags {
                labels.insert(format!("oci.tag.{k}"), Value::from(v.clone()));
            }
            patch.insert("labels".into(), Value::Object(labels));
        }
        Ok(Value::Object(patch))
    }
}

// ---- rendering -----------------------------------------------------------------------

fn time(t: fulcrum_model::Timestamp) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BackendView {
    name: String,
    ip_address: String,
    port: u16,
    weight: u32,
    max_connections: Option<u32>,
    drain: bool,
    backup: bool,
    offline: bool,
}

pub(crate) fn backend(m: &Member) -> BackendView {
    let s = &m.spec;
    BackendView {
        name: s.endpoint(),
        ip_address: s.address.clone(),
        port: s.port,
        weight: s.weight,
        max_connections: s.max_connections,
        drain: s.drain,
        backup: s.backup,
        offline: s.offline,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HealthCheckerView {
    protocol: &'static str,
    url_path: Option<String>,
    port: u16,
    return_code: Option<u16>,
    retries: u8,
    timeout_in_millis: u32,
    interval_in_millis: u32,
    response_body_regex: String,
    is_force_plain_text: bool,
}

pub(crate) fn health_checker(m: &HealthMonitor) -> HealthCheckerView {
    let s = &m.spec;
    let http = s.kind.is_http();
    HealthCheckerView {
        protocol: if http { "HTTP" } else { "TCP" },
        url_path: http.then(|| s.url_path.clone()),
        port: s.port.unwrap_or(0),
        return_code: http
            .then(|| fulcrum_model::parse_expected_codes(&s.expected_codes))
            .flatten()
            .and_then(|ranges| ranges.first().map(|r| r.0)),
        retries: s.unhealthy_threshold,
        timeout_in_millis: s.timeout_ms,
        interval_in_millis: s.interval_ms,
        response_body_regex: String::new(),
        is_force_plain_text: false,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BackendSetView {
    name: String,
    policy: &'static str,
    backends: Vec<BackendView>,
    backend_max_connections: Option<u32>,
    health_checker: Option<HealthCheckerView>,
    ssl_configuration: Option<Value>,
    session_persistence_configuration: Option<Value>,
    lb_cookie_session_persistence_configuration: Option<Value>,
}

pub(crate) fn backend_set(cfg: &fulcrum_control::Config, p: &Pool) -> BackendSetView {
    let (app, lb_cookie) = match &p.spec.session_persistence {
        Some(sp) if sp.kind == PersistenceType::AppCookie => (
            Some(serde_json::json!({"cookieName": sp.cookie_name, "disableFallback": false})),
            None,
        ),
        Some(sp) if sp.kind == PersistenceType::HttpCookie => (
            None,
            // The cookie fulcrum's data plane sets for HTTP_COOKIE persistence.
            Some(serde_json::json!({"cookieName": "fulcrum_sticky", "disableFallback": false})),
        ),
        _ => (None, None),
    };
    BackendSetView {
        name: pool_name(p),
        policy: policy_name(p.spec.algorithm),
        backends: cfg.members_of(&p.id).map(|m| backend(&m.value)).collect(),
        backend_max_connections: p.spec.max_connections_per_member,
        health_checker: cfg.monitor_of(&p.id).map(|m| health_checker(&m.value)),
        ssl_configuration: None,
        session_persistence_configuration: app,
        lb_cookie_session_persistence_configuration: lb_cookie,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListenerView {
    name: String,
    default_backend_set_name: Option<String>,
    port: u16,
    protocol: &'static str,
    hostname_names: Vec<String>,
    path_route_set_name: Option<String>,
    ssl_configuration: Option<Value>,
    connection_configuration: Value,
    rule_set_names: Vec<String>,
    routing_policy_name: Option<String>,
}

fn listener_protocol(p: ListenerProtocol) -> &'static str {
    match p {
        ListenerProtocol::Http | ListenerProtocol::TerminatedHttps => "HTTP",
        ListenerProtocol::Tcp | ListenerProtocol::Https => "TCP",
        ListenerProtocol::Udp => "UDP",
        ListenerProtocol::Quic => "QUIC",
    }
}

pub(crate) fn listener(cfg: &fulcrum_control::Config, l: &Listener) -> ListenerView {
    // The route set it names is a routing policy or a path route set.
    let policy = l.spec.route_set.as_deref().is_some_and(|name| {
        cfg.loadbalancers
            .get(&l.loadbalancer_id)
            .and_then(|lb| lb.value.spec.route_set(name))
            .is_some_and(super::routing::is_policy)
    });
    let (routing_policy_name, path_route_set_name) = match policy {
        true => (l.spec.route_set.clone(), None),
        false => (None, l.spec.route_set.clone()),
    };
    ListenerView {
        name: listener_name(l),
        default_backend_set_name: l
            .spec
            .default_pool_id
            .as_ref()
            .and_then(|id| cfg.pools.get(id))
            .map(|p| pool_name(&p.value)),
        port: l.spec.port,
        protocol: listener_protocol(l.spec.protocol),
        hostname_names: l.spec.hostnames.clone(),
        path_route_set_name,
        ssl_configuration: super::certificates::ssl_view(cfg, l),
        connection_configuration: serde_json::json!({
            "idleTimeout": l.spec.timeouts.idle_ms / 1000,
        }),
        rule_set_names: Vec::new(),
        routing_policy_name,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LoadBalancerView {
    id: String,
    compartment_id: String,
    pub display_name: String,
    pub lifecycle_state: &'static str,
    time_created: String,
    ip_addresses: Vec<Value>,
    shape_name: String,
    is_private: bool,
    is_delete_protection_enabled: bool,
    subnet_ids: Vec<String>,
    network_security_group_ids: Vec<String>,
    listeners: BTreeMap<String, ListenerView>,
    backend_sets: BTreeMap<String, BackendSetView>,
    hostnames: BTreeMap<String, super::routing::HostnameView>,
    certificates: BTreeMap<String, super::certificates::CertificateView>,
    ssl_cipher_suites: BTreeMap<String, Value>,
    path_route_sets: BTreeMap<String, PathRouteSetView>,
    rule_sets: BTreeMap<String, Value>,
    routing_policies: BTreeMap<String, super::routing::RoutingPolicyView>,
    freeform_tags: BTreeMap<String, String>,
    defined_tags: BTreeMap<String, Value>,
    system_tags: BTreeMap<String, Value>,
}

pub(crate) fn compartment(lb: &LoadBalancer) -> String {
    lb.spec
        .labels
        .get(LABEL_COMPARTMENT)
        .cloned()
        .unwrap_or_default()
}

pub(crate) fn load_balancer(
    cp: &ControlPlane,
    cfg: &fulcrum_control::Config,
    v: &Versioned<LoadBalancer>,
) -> LoadBalancerView {
    let lb = &v.value;
    let label = |k: &str| lb.spec.labels.get(k).cloned().unwrap_or_default();
    let is_private = label(LABEL_PRIVATE) == "true";
    let lifecycle_state = match cp.load_balancer_status(cfg, v) {
        ProvisioningStatus::PendingCreate => "CREATING",
        ProvisioningStatus::PendingDelete => "DELETING",
        ProvisioningStatus::Error => "FAILED",
        ProvisioningStatus::Active | ProvisioningStatus::PendingUpdate => "ACTIVE",
    };
    let shape = label(LABEL_SHAPE);
    LoadBalancerView {
        id: lb_ocid(&lb.id),
        compartment_id: compartment(lb),
        display_name: lb.spec.name.clone(),
        lifecycle_state,
        time_created: time(lb.created_at),
        ip_addresses: vec![serde_json::json!({
            "ipAddress": lb.spec.vip_address.to_string(),
            "isPublic": !is_private,
        })],
        shape_name: if shape.is_empty() {
            "flexible".into()
        } else {
            shape
        },
        is_private,
        is_delete_protection_enabled: lb.spec.has_lock(LockKind::Delete),
        subnet_ids: label(LABEL_SUBNETS)
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        network_security_group_ids: Vec::new(),
        listeners: cfg
            .listeners_of(&lb.id)
            .map(|l| (listener_name(&l.value), listener(cfg, &l.value)))
            .collect(),
        backend_sets: cfg
            .pools_of(&lb.id)
            .map(|p| (pool_name(&p.value), backend_set(cfg, &p.value)))
            .collect(),
        hostnames: lb
            .spec
            .hostnames
            .iter()
            .map(|h| (h.name.clone(), super::routing::hostname_view(h)))
            .collect(),
        certificates: super::certificates::of_lb(cfg, &lb.id)
            .map(|c| (c.spec.name.clone(), super::certificates::view(c)))
            .collect(),
        ssl_cipher_suites: BTreeMap::new(),
        path_route_sets: lb
            .spec
            .route_sets
            .iter()
            .filter(|set| !super::routing::is_policy(set))
            .map(|set| (set.name.clone(), path_route_set(cfg, set)))
            .collect(),
        rule_sets: BTreeMap::new(),
        routing_policies: lb
            .spec
            .route_sets
            .iter()
            .filter(|set| super::routing::is_policy(set))
            .map(|set| (set.name.clone(), super::routing::policy_view(set)))
            .collect(),
        freeform_tags: lb
            .spec
            .labels
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("oci.tag.")?.to_owned(), v.clone())))
            .collect(),
        defined_tags: BTreeMap::new(),
        system_tags: BTreeMap::new(),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WorkRequestView {
    id: String,
    load_balancer_id: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    compartment_id: String,
    lifecycle_state: &'static str,
    message: String,
    time_accepted: String,
    time_finished: Option<String>,
    error_details: Vec<Value>,
}

/// The OCI name of what a work request did.
fn operation_name(op: &str) -> &str {
    match op {
        "CreatePool" => "CreateBackendSet",
        "UpdatePool" | "BatchMembers" => "UpdateBackendSet",
        "DeletePool" => "DeleteBackendSet",
        "CreateMember" => "CreateBackend",
        "UpdateMember" => "UpdateBackend",
        "DeleteMember" => "DeleteBackend",
        "CreateHealthMonitor" | "UpdateHealthMonitor" => "UpdateHealthChecker",
        "DeleteHealthMonitor" => "DeleteHealthChecker",
        other => other,
    }
}

pub(crate) fn work_request(wr: &WorkRequest, compartment_id: String) -> WorkRequestView {
    let lifecycle_state = match wr.status {
        WorkRequestStatus::Accepted => "ACCEPTED",
        WorkRequestStatus::InProgress => "IN_PROGRESS",
        WorkRequestStatus::Succeeded => "SUCCEEDED",
        WorkRequestStatus::Failed => "FAILED",
    };
    let message = if wr.message.is_empty() {
        format!(
            "{} {}",
            operation_name(&wr.operation),
            lifecycle_state.to_lowercase()
        )
    } else {
        wr.message.clone()
    };
    WorkRequestView {
        id: wr_ocid(&wr.id),
        load_balancer_id: wr.loadbalancer_id.as_ref().map(lb_ocid),
        kind: operation_name(&wr.operation).to_owned(),
        compartment_id,
        lifecycle_state,
        message,
        time_accepted: time(wr.accepted_at),
        time_finished: wr.finished_at.map(time),
        // OCI knows two error codes: the change asked for something that cannot be served
        // (an address in use, a certificate that does not load), or fulcrum failed.
        error_details: wr
            .error
            .iter()
            .map(|e| {
                let code = match e.code.as_str() {
                    fulcrum_control::NOT_SERVED => "BAD_INPUT",
                    _ => "INTERNAL_ERROR",
                };
                serde_json::json!({"errorCode": code, "message": e.message})
            })
            .collect(),
    }
}

// ---- path route sets -----------------------------------------------------------------

/// CreatePathRouteSetDetails and UpdatePathRouteSetDetails.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PathRouteSetIn {
    pub name: Option<String>,
    pub path_routes: Option<Vec<PathRouteIn>>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PathRouteIn {
    pub path: Option<String>,
    pub path_match_type: Option<PathMatchTypeIn>,
    pub backend_set_name: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PathMatchTypeIn {
    pub match_type: Option<String>,
}

/// OCI's limit of path routes in one set.
const MAX_PATH_ROUTES: usize = 20;

/// OCI's match types, in the order OCI evaluates them: every `EXACT_MATCH` first, then
/// the longest matching `FORCE_LONGEST_PREFIX_MATCH`, then the first `PREFIX_MATCH` or
/// `SUFFIX_MATCH` in the set's order.
const MATCH_TYPES: [&str; 4] = [
    "EXACT_MATCH",
    "FORCE_LONGEST_PREFIX_MATCH",
    "PREFIX_MATCH",
    "SUFFIX_MATCH",
];

/// A path route, checked, before its backend set is resolved.
pub(crate) struct PathRoute {
    pub path: String,
    pub match_type: &'static str,
    pub backend_set_name: String,
}

/// Checks the path routes of a set (`pathRoutes` is required, at most 20).
pub(crate) fn path_routes(routes: Option<&[PathRouteIn]>) -> Result<Vec<PathRoute>, OciError> {
    let routes = required(routes, "pathRoutes")?;
    if routes.len() > MAX_PATH_ROUTES {
        return Err(OciError::invalid(format!(
            "pathRoutes may hold at most {MAX_PATH_ROUTES} path routes (got {})",
            routes.len()
        )));
    }
    routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let f = |n: &str| format!("pathRoutes[{i}].{n}");
            let path = required(r.path.clone(), &f("path"))?;
            let kind = required(
                r.path_match_type
                    .as_ref()
                    .and_then(|t| t.match_type.as_deref()),
                &f("pathMatchType.matchType"),
            )?;
            let match_type = MATCH_TYPES
                .iter()
                .find(|t| **t == kind)
                .copied()
                .ok_or_else(|| {
                    OciError::invalid(format!(
                        "{} must be one of {} (got {kind:?})",
                        f("pathMatchType.matchType"),
                        MATCH_TYPES.join(", ")
                    ))
                })?;
            let ok = !path.is_empty()
                && path.len() <= fulcrum_model::MAX_ROUTE_PATH
                && !path.contains('*')
                && !path.bytes().any(|b| b <= b' ' || b == 0x7f)
                && (match_type == "SUFFIX_MATCH" || path.starts_with('/'));
            if !ok {
                return Err(OciError::invalid(format!(
                    "{} must be a path without asterisks, spaces or control characters, at most {} characters, starting with '/' unless matched as a suffix (got {path:?})",
                    f("path"),
                    fulcrum_model::MAX_ROUTE_PATH
                )));
            }
            Ok(PathRoute {
                path,
                match_type,
                backend_set_name: required(r.backend_set_name.clone(), &f("backendSetName"))?,
            })
        })
        .collect()
}

/// The model's routes for a path route set, in the order OCI evaluates them (the model
/// takes the first match). Each route's `id` is its place in the set as given and its
/// `name` its match type, so the set reads back as it was written. Matching ignores case,
/// as OCI's does. `pool` resolves a backend set name.
pub(crate) fn path_routes_to_model(
    routes: &[PathRoute],
    pool: impl Fn(&str) -> Option<fulcrum_model::PoolId>,
) -> Result<Vec<fulcrum_model::L7Route>, fulcrum_control::ControlError> {
    let mut out = Vec::with_capacity(routes.len());
    for (i, r) in routes.iter().enumerate() {
        let pool_id = pool(&r.backend_set_name).ok_or_else(|| {
            fulcrum_control::ControlError::invalid(
                format!("pathRoutes[{i}].backendSetName"),
                format!(
                    "pathRoutes[{i}].backendSetName: the load balancer has no backend set {:?}",
                    r.backend_set_name
                ),
            )
        })?;
        let mut route = fulcrum_model::L7Route {
            id: i.to_string(),
            name: r.match_type.to_owned(),
            path_ignore_case: true,
            ..fulcrum_model::L7Route::to_pool(pool_id)
        };
        match r.match_type {
            "EXACT_MATCH" => route.path_exact = Some(r.path.clone()),
            "SUFFIX_MATCH" => route.path_suffix = Some(r.path.clone()),
            _ => route.path_prefix = Some(r.path.clone()),
        }
        out.push(route);
    }
    let rank = |r: &fulcrum_model::L7Route| match r.name.as_str() {
        "EXACT_MATCH" => (0, 0),
        // The longest forced prefix first: the first match is then the longest.
        "FORCE_LONGEST_PREFIX_MATCH" => (
            1,
            usize::MAX - r.path_prefix.as_ref().map_or(0, String::len),
        ),
        _ => (2, 0),
    };
    // A stable sort: within a rank, the set's own order.
    out.sort_by_key(rank);
    Ok(out)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PathRouteSetView {
    name: String,
    path_routes: Vec<Value>,
}

pub(crate) fn path_route_set(
    cfg: &fulcrum_control::Config,
    set: &fulcrum_model::RouteSet,
) -> PathRouteSetView {
    let mut routes: Vec<&fulcrum_model::L7Route> = set.routes.iter().collect();
    routes.sort_by_key(|r| r.id.parse::<usize>().unwrap_or(usize::MAX));
    PathRouteSetView {
        name: set.name.clone(),
        path_routes: routes
            .into_iter()
            .map(|r| {
                let (match_type, path) = match (&r.path_exact, &r.path_suffix, &r.path_prefix) {
                    (Some(p), _, _) => ("EXACT_MATCH", p.clone()),
                    (None, Some(p), _) => ("SUFFIX_MATCH", p.clone()),
                    (None, None, p) => (
                        if r.name == "FORCE_LONGEST_PREFIX_MATCH" {
                            "FORCE_LONGEST_PREFIX_MATCH"
                        } else {
                            "PREFIX_MATCH"
                        },
                        p.clone().unwrap_or_else(|| "/".into()),
                    ),
                };
                serde_json::json!({
                    "path": path,
                    "pathMatchType": {"matchType": match_type},
                    "backendSetName": cfg.pools.get(&r.pool_id).map(|p| pool_name(&p.value)),
                })
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn ids_round_trip_with_or_without_the_prefix() {
        let id = LoadBalancerId::from("3f2a");
        assert_eq!(lb_id(&lb_ocid(&id)), id);
        assert_eq!(lb_id("3f2a"), id);
        let w = WorkRequestId::from("w1");
        assert_eq!(wr_id(&wr_ocid(&w)), w);
    }

    #[test]
    fn update_backend_needs_the_four_fields_of_seed_000() {
        let full: UpdateBackendIn = parse_body(
            br#"{"weight": 5, "maxConnections": 100, "backup": false, "drain": true, "offline": false}"#,
        )
        .unwrap();
        assert_eq!(
            full.to_patch().unwrap(),
            serde_json::json!({"weight": 5, "backup": false, "drain": true, "offline": false, "max_connections": 100})
        );
        for missing in ["weight", "backup", "drain", "offline"] {
            let mut v =
                serde_json::json!({"weight": 1, "backup": false, "drain": false, "offline": false});
            v.as_object_mut().unwrap().remove(missing);
            let body: UpdateBackendIn = parse_body(v.to_string().as_bytes()).unwrap();
            let err = body.to_patch().unwrap_err();
            assert_eq!(err.code, "MissingParameter");
            assert!(err.message.contains(missing));
        }
        let neg: UpdateBackendIn =
            parse_body(br#"{"weight": -1, "backup": false, "drain": false, "offline": false}"#)
                .unwrap();
        assert_eq!(neg.to_patch().unwrap_err().code, "InvalidParameter");
        let err = parse_body::<UpdateBackendIn>(br#"{"weight": "x"}"#)
            .err()
            .unwrap();
        assert!(err.message.contains("weight"), "{}", err.message);
        // maxConnections 0 means unlimited, as in OCI.
        let zero: UpdateBackendIn = parse_body(
            br#"{"weight": 1, "maxConnections": 0, "backup": false, "drain": false, "offline": false}"#,
        )
        .unwrap();
        assert_eq!(zero.to_patch().unwrap()["max_connections"], Value::Null);
    }

    #[test]
    fn backend_sets_translate_policy_checker_and_persistence() {
        let body: BackendSetIn = parse_body(
            br#"{"name": "bs", "policy": "IP_HASH", "backends": [{"ipAddress": "10.0.0.1", "port": 80, "weight": 3}],
                "healthChecker": {"protocol": "HTTP", "urlPath": "/health", "returnCode": 204, "retries": 2,
                                  "intervalInMillis": 5000, "timeoutInMillis": 1000},
                "sessionPersistenceConfiguration": {"cookieName": "JSESSIONID"}}"#,
        )
        .unwrap();
        let pool = PoolId::from("p");
        let parts = body.to_parts("bs", &pool, PoolProtocol::Http, "").unwrap();
        assert_eq!(parts.spec.algorithm, Algorithm::SourceIp);
        assert_eq!(parts.members[0].weight, 3);
        assert_eq!(parts.monitor.expected_codes, "204");
        assert_eq!(parts.monitor.unhealthy_threshold, 2);
        assert_eq!(parts.monitor.url_path, "/health");
        assert_eq!(
            parts
                .spec
                .session_persistence
                .unwrap()
                .cookie_name
                .as_deref(),
            Some("JSESSIONID")
        );

        let bad: BackendSetIn =
            parse_body(br#"{"policy": "WEIGHTED", "healthChecker": {"protocol": "TCP"}}"#).unwrap();
        let err = bad
            .to_parts("bs", &pool, PoolProtocol::Http, "")
            .err()
            .unwrap();
        assert!(err.message.contains("policy"), "{}", err.message);
        let no_checker: BackendSetIn = parse_body(br#"{"policy": "ROUND_ROBIN"}"#).unwrap();
        let err = no_checker
            .to_parts("bs", &pool, PoolProtocol::Http, "backendSets.bs.")
            .err()
            .unwrap();
        assert_eq!(err.code, "MissingParameter");
        assert!(err.message.contains("backendSets.bs.healthChecker"));
    }

    #[test]
    fn path_routes_follow_oci_evaluation_order_and_read_back_as_written() {
        let given: Vec<PathRouteIn> = serde_json::from_value(serde_json::json!([
            {"path": "/a", "pathMatchType": {"matchType": "PREFIX_MATCH"}, "backendSetName": "p1"},
            {"path": ".png", "pathMatchType": {"matchType": "SUFFIX_MATCH"}, "backendSetName": "p2"},
            {"path": "/a", "pathMatchType": {"matchType": "FORCE_LONGEST_PREFIX_MATCH"}, "backendSetName": "p3"},
            {"path": "/a/b", "pathMatchType": {"matchType": "FORCE_LONGEST_PREFIX_MATCH"}, "backendSetName": "p4"},
            {"path": "/a/x", "pathMatchType": {"matchType": "EXACT_MATCH"}, "backendSetName": "p5"},
        ]))
        .unwrap();
        let routes = path_routes(Some(&given)).unwrap();
        let model =
            path_routes_to_model(&routes, |name| Some(fulcrum_model::PoolId::from(name))).unwrap();
        let order: Vec<&str> = model.iter().map(|r| r.pool_id.as_str()).collect();
        // Exact, the longest forced prefix first, then prefix and suffix as listed.
        assert_eq!(order, ["p5", "p4", "p3", "p1", "p2"]);
        assert!(model.iter().all(|r| r.path_ignore_case));
        let pick = |path: &str| {
            model
                .iter()
                .find(|r| r.matches(None, path.as_bytes()))
                .map(|r| r.pool_id.as_str())
        };
        assert_eq!(pick("/A/X"), Some("p5"));
        assert_eq!(pick("/a/b/c"), Some("p4"));
        assert_eq!(pick("/a/c.png"), Some("p3"));
        assert_eq!(pick("/z.png"), Some("p2"));
        assert_eq!(pick("/z"), None);
        // The ids keep the set's own order.
        let ids: Vec<&str> = model.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["4", "3", "2", "0", "1"]);
    }

    #[test]
    fn bad_path_routes_are_refused_by_field() {
        for (routes, field) in [
            (
                serde_json::json!([{"path": "a", "pathMatchType": {"matchType": "PREFIX_MATCH"}, "backendSetName": "p"}]),
                "pathRoutes[0].path",
            ),
            (
                serde_json::json!([{"path": "/a*", "pathMatchType": {"matchType": "PREFIX_MATCH"}, "backendSetName": "p"}]),
                "pathRoutes[0].path",
            ),
            (
                serde_json::json!([{"path": "/a", "pathMatchType": {"matchType": "REGEX"}, "backendSetName": "p"}]),
                "matchType",
            ),
            (
                serde_json::json!([{"path": "/a", "backendSetName": "p"}]),
                "matchType",
            ),
            (
                serde_json::json!([{"path": "/a", "pathMatchType": {"matchType": "EXACT_MATCH"}}]),
                "backendSetName",
            ),
        ] {
            let given: Vec<PathRouteIn> = serde_json::from_value(routes).unwrap();
            let e = path_routes(Some(&given)).err().unwrap();
            assert_eq!(e.status, http::StatusCode::BAD_REQUEST);
            assert!(e.message.contains(field), "{field}: {}", e.message);
        }
        let many: Vec<PathRouteIn> = (0..21)
            .map(|_| PathRouteIn {
                path: Some("/a".into()),
                path_match_type: Some(PathMatchTypeIn {
                    match_type: Some("PREFIX_MATCH".into()),
                }),
                backend_set_name: Some("p".into()),
            })
            .collect();
        assert!(path_routes(Some(&many)).is_err(), "at most 20");
        assert!(path_routes(None).is_err(), "pathRoutes is required");
    }
}
