//! API Management APIs (`.../service/{svc}/apis/{apiId}`), their policies
//! (`.../apis/{apiId}/policies/policy`), and the service's gateway.
//!
//! Mapping: an API's fields and policy document are labels on the service's load balancer
//! (`azure.api/{apiId}/…`), like a backend's Azure-only fields. What they mean for traffic
//! is the service's **gateway**: one HTTP listener (`azure-gateway`) of the service's load
//! balancer on `[azure] gateway_port`, with one L7 route per API whose calls go somewhere,
//! on the path prefix `/{path}`, stripped (API Management sends `serviceUrl` + the rest of
//! the path). The route goes to the pool of the backend the policy names
//! (`set-backend-service backend-id`), or to a pool of the API's own (`api:{apiId}`, a name
//! no backend can have) for the policy's `base-url` or else the API's `serviceUrl`. Routes
//! are ordered longest path first, as API Management picks the most specific API. Every
//! write recomputes the gateway from the labels and commits it with them in one
//! `change_pools` transaction; the listener goes with the last API.

use std::collections::BTreeMap;

use axum::response::{IntoResponse, Response};
use fulcrum_control::{
    Config, ControlError, ListenerChange, PoolChange, PoolSetChange, RequestContext, Vip,
    merge_patch,
};
use fulcrum_model::{
    HostHeader, L7Route, ListenerProtocol, ListenerSpec, LoadBalancer, MemberSpec, PoolId,
    PoolProtocol, PoolSpec, ResourceKind, UpstreamSettings,
};
use http::{HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::AzureError;
use super::policy::{self, BackendRef};
use super::wire::{self, Service};
use super::{APPLY_WAIT, Azure, find_backend, service_lb, service_lb_id};
use crate::request::current_request_id;

/// The gateway listener's name on a service's load balancer.
pub(crate) const GATEWAY_LISTENER: &str = "azure-gateway";

const API_LABEL_PREFIX: &str = "azure.api/";

/// The pool an API of its own URL (`serviceUrl`, or a policy's `base-url`) goes to. Backend
/// ids cannot hold `:`, so no backend has this name.
fn own_pool(api: &str) -> String {
    format!("api:{api}")
}

/// Longest policy document kept (split over labels of at most `CHUNK` bytes).
const MAX_POLICY: usize = 16 * 1024;
const CHUNK: usize = 1000;

/// `[azure]`'s gateway settings, as the dialect uses them.
#[derive(Clone, Debug)]
pub(crate) struct Gateway {
    pub port: u16,
    /// `[proxy] bind_address`: every listener binds it instead of its load balancer's VIP.
    pub bind_address: Option<std::net::IpAddr>,
}

impl Gateway {
    /// Where a service's gateway listens, as `gatewayUrl` says it.
    pub fn url(&self, lb: &LoadBalancer) -> String {
        let addr = self.bind_address.unwrap_or(lb.spec.vip_address);
        match addr {
            std::net::IpAddr::V6(v6) => format!("http://[{v6}]:{}", self.port),
            v4 => format!("http://{v4}:{}", self.port),
        }
    }
}

// ---- the API's fields -----------------------------------------------------------------

/// `ApiCreateOrUpdateParameter.properties` / `ApiUpdateContract.properties` (camelCase).
/// Read-only fields a client echoes back are ignored; fields fulcrum cannot honour are
/// refused by name in `translate`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ApiProperties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_required: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_key_parameter_names: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terms_of_service_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<Value>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub api_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_current: Option<bool>,
    // Refused when set: what fulcrum does not do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication_settings: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version_set_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version_set: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_api_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wsdl_selector: Option<Value>,
    #[serde(default, rename = "apiType", skip_serializing_if = "Option::is_none")]
    pub soap_api_type: Option<String>,
}

/// An API as fulcrum keeps it: the fields, by label name.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ApiRecord {
    pub fields: BTreeMap<String, String>,
}

impl ApiRecord {
    fn get(&self, f: &str) -> Option<&str> {
        self.fields.get(f).map(String::as_str)
    }

    pub fn path(&self) -> &str {
        self.get("path").unwrap_or_default()
    }

    fn service_url(&self) -> Option<&str> {
        self.get("serviceUrl")
    }

    /// The policy document and its format, if the API has one.
    pub fn policy(&self) -> Option<(String, &str)> {
        let format = self.get("policy.format")?;
        let mut text = String::new();
        for i in 0.. {
            match self.fields.get(&format!("policy.{i}")) {
                Some(part) => text.push_str(part),
                None => break,
            }
        }
        Some((text, format))
    }

    fn set_policy(&mut self, policy: Option<(&str, &str)>) {
        self.fields.retain(|k, _| !k.starts_with("policy."));
        if let Some((text, format)) = policy {
            self.fields.insert("policy.format".into(), format.into());
            let mut rest = text;
            let mut i = 0;
            while !rest.is_empty() {
                let mut end = rest.len().min(CHUNK);
                while !rest.is_char_boundary(end) {
                    end -= 1;
                }
                self.fields
                    .insert(format!("policy.{i}"), rest[..end].to_owned());
                rest = &rest[end..];
                i += 1;
            }
        }
    }

    /// The backend (or URL) the policy sends calls to.
    fn policy_backend(&self) -> Option<BackendRef> {
        self.policy()
            .and_then(|(text, _)| policy::parse(&text).ok())
            .and_then(|p| p.backend)
    }

    /// The ETag of the API's own fields (`policy` false) or of its policy: a digest of
    /// what is kept, so it moves exactly when they change.
    fn etag(&self, policy: bool) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for (k, v) in &self.fields {
            if k.starts_with("policy.") == policy {
                h.update(k.as_bytes());
                h.update([0]);
                h.update(v.as_bytes());
                h.update([0]);
            }
        }
        format!("\"{}\"", hex::encode(&h.finalize()[..8]))
    }
}

fn api_prefix(api: &str) -> String {
    format!("{API_LABEL_PREFIX}{api}/")
}

/// The APIs kept in a load balancer's labels, by id.
pub(crate) fn apis_of(labels: &BTreeMap<String, String>) -> BTreeMap<String, ApiRecord> {
    let mut out: BTreeMap<String, ApiRecord> = BTreeMap::new();
    for (k, v) in labels {
        let Some(rest) = k.strip_prefix(API_LABEL_PREFIX) else {
            continue;
        };
        let Some((id, field)) = rest.split_once('/') else {
            continue;
        };
        out.entry(id.to_owned())
            .or_default()
            .fields
            .insert(field.to_owned(), v.clone());
    }
    // Every API has a path (perhaps empty).
    out.retain(|_, a| a.fields.contains_key("path"));
    out
}

pub(crate) fn set_api(
    labels: &mut BTreeMap<String, String>,
    api: &str,
    record: Option<&ApiRecord>,
) {
    let prefix = api_prefix(api);
    labels.retain(|k, _| !k.starts_with(&prefix));
    if let Some(r) = record {
        for (f, v) in &r.fields {
            labels.insert(format!("{prefix}{f}"), v.clone());
        }
    }
}

/// Validates an API's properties and turns them into its kept fields (the policy is the
/// caller's to carry over).
pub(crate) fn translate(p: &ApiProperties) -> Result<ApiRecord, fulcrum_model::ValidationError> {
    let mut c = fulcrum_model::Checker::new();
    let mut fields = BTreeMap::new();
    let refuse = |c: &mut fulcrum_model::Checker, field: &str, set: bool, why: &str| {
        if set {
            c.fail(format!("properties.{field}"), why.to_owned());
        }
    };
    refuse(
        &mut c,
        "authenticationSettings",
        p.authentication_settings
            .as_ref()
            .is_some_and(|v| !is_empty_json(v)),
        "authenticationSettings (OAuth 2.0 / OpenID Connect validation) is not enforced by fulcrum's gateway; leave it out",
    );
    refuse(
        &mut c,
        "subscriptionRequired",
        p.subscription_required == Some(true),
        "fulcrum's gateway has no subscription keys and would not check them; set subscriptionRequired to false",
    );
    for (field, set) in [
        (
            "apiVersion",
            p.api_version.as_deref().is_some_and(|v| !v.is_empty()),
        ),
        (
            "apiVersionSetId",
            p.api_version_set_id
                .as_deref()
                .is_some_and(|v| !v.is_empty()),
        ),
        (
            "apiVersionSet",
            p.api_version_set
                .as_ref()
                .is_some_and(|v| !is_empty_json(v)),
        ),
    ] {
        refuse(
            &mut c,
            field,
            set,
            "versioned APIs are not supported by fulcrum; give each version its own path",
        );
    }
    for (field, set) in [
        ("value", p.value.is_some()),
        ("format", p.format.is_some()),
        ("wsdlSelector", p.wsdl_selector.is_some()),
        ("sourceApiId", p.source_api_id.is_some()),
    ] {
        refuse(
            &mut c,
            field,
            set,
            "fulcrum does not import or clone API definitions; create the API from displayName, path and serviceUrl",
        );
    }
    if let Some(t) = p.api_type.as_deref().or(p.soap_api_type.as_deref())
        && !t.eq_ignore_ascii_case("http")
    {
        c.fail(
            "properties.type",
            format!("only http APIs are supported (got {t:?})"),
        );
    }
    if let Some(r) = p.api_revision.as_deref()
        && r != "1"
    {
        c.fail(
            "properties.apiRevision",
            "API revisions are not supported; leave apiRevision out (or \"1\")",
        );
    }
    if p.is_current == Some(false) {
        c.fail(
            "properties.isCurrent",
            "API revisions are not supported: an API is always current",
        );
    }

    match p.display_name.as_deref() {
        None | Some("") => c.missing("properties.displayName"),
        Some(n) => {
            c.max_len("properties.displayName", n, 300);
            fields.insert("displayName".into(), n.to_owned());
        }
    }
    if let Some(d) = p.description.as_deref().filter(|d| !d.is_empty()) {
        c.max_len("properties.description", d, 1000);
        fields.insert("description".into(), d.to_owned());
    }
    match p.path.as_deref() {
        None => c.missing("properties.path"),
        Some(raw) => match normalize_path(raw) {
            Ok(path) => {
                fields.insert("path".into(), path);
            }
            Err(m) => c.fail("properties.path", m),
        },
    }
    if let Some(url) = p.service_url.as_deref().filter(|u| !u.is_empty()) {
        match wire::parse_url(url) {
            Ok(_) => {
                fields.insert("serviceUrl".into(), url.trim_end_matches('/').to_owned());
            }
            Err(m) => c.fail(
                "properties.serviceUrl",
                m.replace("url must", "serviceUrl must"),
            ),
        }
    }
    let protocols: Vec<String> = p
        .protocols
        .clone()
        .unwrap_or_else(|| vec!["http".into()])
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    for (i, pr) in protocols.iter().enumerate() {
        if !matches!(pr.as_str(), "http" | "https" | "ws" | "wss") {
            c.fail(
                format!("properties.protocols[{i}]"),
                format!("protocols must be http, https, ws or wss (got {pr:?})"),
            );
        }
    }
    if !protocols.iter().any(|p| p == "http") {
        // Serving an https-only API over plain http would be a silent downgrade.
        c.fail(
            "properties.protocols",
            "fulcrum's gateway serves plain http only; include \"http\" in protocols",
        );
    }
    fields.insert("protocols".into(), json!(protocols).to_string());
    if let Some(u) = p.terms_of_service_url.as_deref().filter(|u| !u.is_empty()) {
        c.max_len("properties.termsOfServiceUrl", u, 1000);
        fields.insert("termsOfServiceUrl".into(), u.to_owned());
    }
    for (name, v) in [
        (
            "subscriptionKeyParameterNames",
            &p.subscription_key_parameter_names,
        ),
        ("contact", &p.contact),
        ("license", &p.license),
    ] {
        if let Some(v) = v.as_ref().filter(|v| !is_empty_json(v)) {
            let text = v.to_string();
            c.max_len(&format!("properties.{name}"), &text, CHUNK);
            fields.insert(name.into(), text);
        }
    }
    c.finish()?;
    Ok(ApiRecord { fields })
}

fn is_empty_json(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.values().all(is_empty_json),
        _ => false,
    }
}

/// An API's path as kept: relative, without leading or trailing `/` ("" for the root).
fn normalize_path(raw: &str) -> Result<String, String> {
    let p = raw.trim_matches('/');
    if p.len() > 400 {
        return Err("path must be at most 400 characters".into());
    }
    if p.chars()
        .any(|c| c.is_whitespace() || c.is_control() || "?#%\\{}".contains(c))
    {
        return Err(format!(
            "path must be a relative URL path without spaces, '?', '#', '%', '\\\\' or braces (got {raw:?})"
        ));
    }
    if !p.is_empty() && p.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(format!(
            "path must not hold empty, '.' or '..' segments (got {raw:?})"
        ));
    }
    Ok(p.to_owned())
}

/// The properties a read shows.
fn render(service: &Service, id: &str, a: &ApiRecord) -> Value {
    let json_field = |f: &str| a.get(f).and_then(|v| serde_json::from_str::<Value>(v).ok());
    let mut props = json!({
        "displayName": a.get("displayName"),
        "path": a.path(),
        "protocols": json_field("protocols").unwrap_or_else(|| json!(["http"])),
        "subscriptionRequired": false,
        "type": "http",
        "apiRevision": "1",
        "isCurrent": true,
        "provisioningState": "Succeeded",
    });
    let obj = props.as_object_mut();
    if let Some(obj) = obj {
        for f in ["description", "serviceUrl", "termsOfServiceUrl"] {
            if let Some(v) = a.get(f) {
                obj.insert(f.into(), json!(v));
            }
        }
        for f in ["subscriptionKeyParameterNames", "contact", "license"] {
            if let Some(v) = json_field(f) {
                obj.insert(f.into(), v);
            }
        }
    }
    json!({
        "id": format!("{}/apis/{id}", service.arm_id()),
        "type": "Microsoft.ApiManagement/service/apis",
        "name": id,
        "properties": props,
    })
}

// ---- the gateway ------------------------------------------------------------------------

/// The change that makes the service's labels `labels` (its APIs among them) true: the
/// load balancer (created at an address of the VIP ranges if the service is new), the
/// APIs' own pools, and the gateway listener with one route per API.
fn plan_gateway(
    cfg: &Config,
    service: &Service,
    gateway: &Gateway,
    lb: Option<&fulcrum_control::Versioned<LoadBalancer>>,
    lb_spec: fulcrum_model::LoadBalancerSpec,
) -> Result<PoolSetChange, ControlError> {
    let apis = apis_of(&lb_spec.labels);
    let mut pools = Vec::new();
    let mut routes: Vec<(String, String, String)> = Vec::new(); // (path, api, pool)
    for (id, a) in &apis {
        let target = match a.policy_backend() {
            Some(BackendRef::Id(b)) => {
                let exists = lb.is_some_and(|lb| find_backend(cfg, lb, &b).is_some());
                if !exists {
                    return Err(backend_not_found(&b));
                }
                Some(b)
            }
            Some(BackendRef::BaseUrl(url)) => {
                pools.push(own_pool_change(id, &url, "set-backend-service")?);
                Some(own_pool(id))
            }
            None => match a.service_url() {
                Some(url) => {
                    pools.push(own_pool_change(id, url, "properties.serviceUrl")?);
                    Some(own_pool(id))
                }
                None => None,
            },
        };
        if let Some(pool) = target {
            routes.push((a.path().to_ascii_lowercase(), id.clone(), pool));
        }
    }
    // API pools no API needs any more go.
    if let Some(lb) = lb {
        for p in cfg.pools_of(&lb.value.id) {
            let name = &p.value.spec.name;
            if name.starts_with("api:")
                && !pools
                    .iter()
                    .any(|c| matches!(c, PoolChange::Put { spec, .. } if spec.name == *name))
            {
                pools.push(PoolChange::Delete { name: name.clone() });
            }
        }
    }
    // The most specific API first: longest path, then by id for a stable order.
    routes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.1.cmp(&b.1)));
    if !apis.is_empty() {
        check_gateway_port(cfg, lb, gateway)?;
    }
    let listener = if apis.is_empty() {
        Some(ListenerChange::Delete {
            name: GATEWAY_LISTENER.into(),
        })
    } else {
        let mut spec = ListenerSpec {
            name: GATEWAY_LISTENER.into(),
            description: format!("API Management gateway of service {}", service.name),
            protocol: ListenerProtocol::Http,
            port: gateway.port,
            default_pool_id: None,
            routes: Vec::new(),
            route_set: None,
            hostnames: Vec::new(),
            admin_state_up: true,
            tls: None,
            connection_limit: None,
            timeouts: Default::default(),
            access_log: Default::default(),
            request_id: true,
        };
        // A gateway the user changed through the native API keeps those settings.
        if let Some(cur) = lb.and_then(|lb| {
            cfg.listeners_of(&lb.value.id)
                .find(|l| l.value.spec.name == GATEWAY_LISTENER)
        }) {
            let cur = &cur.value.spec;
            spec.timeouts = cur.timeouts;
            spec.access_log = cur.access_log;
            spec.connection_limit = cur.connection_limit;
            spec.request_id = cur.request_id;
        }
        spec.routes = routes
            .iter()
            .map(|(path, _, _)| L7Route {
                path_prefix: Some(format!("/{path}")),
                strip_path_prefix: true,
                ..L7Route::to_pool(PoolId(String::new()))
            })
            .collect();
        Some(ListenerChange::Put {
            spec: Box::new(spec),
            route_pools: routes.into_iter().map(|(_, _, pool)| pool).collect(),
        })
    };
    Ok(PoolSetChange {
        loadbalancer: lb
            .map(|l| l.value.id.clone())
            .unwrap_or_else(|| service_lb_id(service)),
        loadbalancer_spec: Some(lb_spec),
        pools,
        target_pool: String::new(),
        vip: Vip::Allocate { subnet: None },
        listener,
    })
}

/// Refuses a gateway port another listener already takes at the service's address, by
/// that listener's name rather than fulcrum's ids (the control plane checks it again).
fn check_gateway_port(
    cfg: &Config,
    lb: Option<&fulcrum_control::Versioned<LoadBalancer>>,
    gateway: &Gateway,
) -> Result<(), ControlError> {
    let vip = lb.map(|l| l.value.spec.vip_address);
    let taken = cfg.listeners.values().find(|l| {
        let o = &l.value;
        if o.spec.port != gateway.port || o.spec.protocol.is_udp() {
            return false;
        }
        if lb.is_some_and(|lb| o.loadbalancer_id == lb.value.id) {
            return o.spec.name != GATEWAY_LISTENER;
        }
        let other = cfg
            .loadbalancers
            .get(&o.loadbalancer_id)
            .map(|x| x.value.spec.vip_address);
        match (vip, other) {
            (Some(a), Some(b)) => a == b || a.is_unspecified() || b.is_unspecified(),
            // A new service's address is not known yet: the control plane decides.
            _ => false,
        }
    });
    match taken {
        Some(l) => Err(ControlError::Conflict(format!(
            "The gateway port {} ([azure] gateway_port) is already taken at this service's address by listener '{}'; free it or configure another gateway port.",
            gateway.port, l.value.spec.name
        ))),
        None => Ok(()),
    }
}

/// The pool of an API's own URL.
fn own_pool_change(api: &str, url: &str, field: &str) -> Result<PoolChange, ControlError> {
    let u = wire::parse_url(url).map_err(|m| ControlError::invalid(field, m))?;
    let mut spec = PoolSpec::new(own_pool(api), PoolProtocol::Http);
    spec.description = format!("serviceUrl of API {api}");
    spec.upstream = UpstreamSettings {
        scheme: u.scheme,
        base_path: u.base_path,
        // APIM sends the service its URL's host, not the caller's.
        host_header: HostHeader::Member,
        ..Default::default()
    };
    let mut m = MemberSpec::new(u.host, u.port);
    m.name = api.to_owned();
    Ok(PoolChange::Put {
        spec: Box::new(spec),
        members: vec![m],
    })
}

fn backend_not_found(b: &str) -> ControlError {
    ControlError::invalid(
        "set-backend-service",
        format!(
            "Error in element 'set-backend-service': Backend with id '{b}' could not be found."
        ),
    )
}

/// The APIs whose policies name backend `id`, as the ARM paths API Management lists.
pub(crate) fn policies_naming(labels: &BTreeMap<String, String>, id: &str) -> Vec<String> {
    apis_of(labels)
        .into_iter()
        .filter(|(_, a)| a.policy_backend() == Some(BackendRef::Id(id.to_owned())))
        .map(|(api, _)| format!("/apis/{api}/policies/policy"))
        .collect()
}

// ---- operations ---------------------------------------------------------------------------

fn api_not_found(service: &Service, id: &str) -> AzureError {
    AzureError::not_found(format!(
        "API '{id}' was not found in service '{}'.",
        service.name
    ))
}

fn policy_not_found(id: &str) -> AzureError {
    AzureError::not_found(format!("API '{id}' has no policy."))
}

fn with_headers(mut resp: Response, etag: Option<&str>) -> Response {
    let h = resp.headers_mut();
    if let Some(e) = etag.and_then(|e| HeaderValue::from_str(e).ok()) {
        h.insert("etag", e);
    }
    if let Ok(v) = HeaderValue::from_str(&current_request_id()) {
        h.insert("x-ms-request-id", v);
    }
    resp
}

fn current_api(cfg: &Config, service: &Service, id: &str) -> Option<ApiRecord> {
    let lb = service_lb(cfg, service)?;
    apis_of(&lb.value.spec.labels).remove(id)
}

pub(crate) fn get_api(
    az: &Azure,
    service: &Service,
    id: &str,
    head: bool,
) -> Result<Response, AzureError> {
    let cfg = az.app.control.view();
    let a = current_api(&cfg, service, id).ok_or_else(|| api_not_found(service, id))?;
    let resp = if head {
        StatusCode::OK.into_response()
    } else {
        axum::Json(render(service, id, &a)).into_response()
    };
    Ok(with_headers(resp, Some(&a.etag(false))))
}

pub(crate) fn list_apis(
    az: &Azure,
    service: &Service,
    top: Option<&str>,
    skip: Option<&str>,
) -> Result<Response, AzureError> {
    let number = |name: &str, v: Option<&str>| -> Result<Option<usize>, AzureError> {
        v.map(|s| {
            s.parse::<usize>().map_err(|_| {
                AzureError::invalid(
                    name,
                    format!("{name} must be a non-negative integer (got {s:?})"),
                )
            })
        })
        .transpose()
    };
    let top = number("$top", top)?.unwrap_or(usize::MAX);
    let skip = number("$skip", skip)?.unwrap_or(0);
    let cfg = az.app.control.view();
    let apis = service_lb(&cfg, service)
        .map(|lb| apis_of(&lb.value.spec.labels))
        .unwrap_or_default();
    let count = apis.len();
    let value: Vec<Value> = apis
        .iter()
        .skip(skip)
        .take(top)
        .map(|(id, a)| render(service, id, a))
        .collect();
    Ok(with_headers(
        axum::Json(json!({"value": value, "count": count})).into_response(),
        None,
    ))
}

/// What an API write does to the API's record (`None`: deletes it).
pub(crate) enum ApiWrite {
    Put(Box<ApiProperties>),
    Patch(Value),
    Delete,
}

fn check_if_match(if_match: Option<&str>, current: Option<&str>) -> Result<(), ControlError> {
    match (if_match, current) {
        (None, _) => Ok(()),
        (Some(_), None) => Err(ControlError::PreconditionFailed {
            current: String::new(),
        }),
        (Some(want), Some(cur)) if fulcrum_control::etag_matches(want, cur.trim_matches('"')) => {
            Ok(())
        }
        (Some(_), Some(cur)) => Err(ControlError::PreconditionFailed {
            current: cur.to_owned(),
        }),
    }
}

pub(crate) async fn write_api(
    az: &Azure,
    ctx: &RequestContext,
    if_match: Option<&str>,
    service: &Service,
    id: &str,
    w: ApiWrite,
) -> Result<Response, AzureError> {
    let operation = match w {
        ApiWrite::Put(_) => "PutApi",
        ApiWrite::Patch(_) => "UpdateApi",
        ApiWrite::Delete => "DeleteApi",
    };
    let input = (service.arm_id().to_lowercase(), id, operation);
    let gateway = &az.gateway;
    let existed = {
        let cfg = az.app.control.view();
        current_api(&cfg, service, id).is_some()
    };
    let result = az
        .app
        .control
        .change_pools(ctx, operation, &input, |cfg| {
            let lb = service_lb(cfg, service);
            let mut lb_spec = match lb {
                Some(lb) => lb.value.spec.clone(),
                None => super::new_service_lb(service),
            };
            let current = apis_of(&lb_spec.labels).remove(id);
            check_if_match(if_match, current.as_ref().map(|a| a.etag(false)).as_deref())?;
            let record = match &w {
                ApiWrite::Delete => {
                    if current.is_none() {
                        return Err(ControlError::not_found(ResourceKind::LoadBalancer, id));
                    }
                    None
                }
                ApiWrite::Put(p) => Some(translate(p)?),
                ApiWrite::Patch(patch) => {
                    let cur = current
                        .as_ref()
                        .ok_or_else(|| ControlError::not_found(ResourceKind::LoadBalancer, id))?;
                    let mut doc = render(service, id, cur)["properties"].clone();
                    merge_patch(&mut doc, patch);
                    Some(translate(&decode(doc)?)?)
                }
            };
            let record = record.map(|mut r| {
                // The policy is a resource of its own: an API write keeps it.
                if let Some(cur) = &current {
                    r.fields.extend(
                        cur.fields
                            .iter()
                            .filter(|(k, _)| k.starts_with("policy."))
                            .map(|(k, v)| (k.clone(), v.clone())),
                    );
                }
                r
            });
            if let Some(r) = &record {
                let taken = apis_of(&lb_spec.labels)
                    .into_iter()
                    .find(|(other, a)| other != id && a.path().eq_ignore_ascii_case(r.path()));
                if let Some((other, _)) = taken {
                    return Err(ControlError::invalid(
                        "properties.path",
                        format!(
                            "Cannot create API '{id}' with the same path '{}' as API '{other}'.",
                            r.path()
                        ),
                    ));
                }
            }
            set_api(&mut lb_spec.labels, id, record.as_ref());
            plan_gateway(cfg, service, gateway, lb, lb_spec)
        })
        .await;
    let outcome = match result {
        Ok(o) => o,
        Err(ControlError::NotFound { .. }) if matches!(w, ApiWrite::Delete) => {
            return Ok(with_headers(StatusCode::NO_CONTENT.into_response(), None));
        }
        Err(ControlError::NotFound { .. }) => return Err(api_not_found(service, id)),
        Err(e) => return Err(e.into()),
    };
    az.app
        .control
        .wait_applied(outcome.revision, APPLY_WAIT)
        .await;
    if matches!(w, ApiWrite::Delete) {
        // The SDK's begin_delete takes 202 or 204.
        return Ok(with_headers(StatusCode::NO_CONTENT.into_response(), None));
    }
    let status = if existed || !matches!(w, ApiWrite::Put(_)) {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let cfg = az.app.control.view();
    let a = current_api(&cfg, service, id).ok_or_else(|| api_not_found(service, id))?;
    Ok(with_headers(
        (status, axum::Json(render(service, id, &a))).into_response(),
        Some(&a.etag(false)),
    ))
}

fn decode(v: Value) -> Result<ApiProperties, ControlError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let field = format!("properties.{path}");
        let what = crate::decode::describe(&e.into_inner());
        ControlError::invalid(field.clone(), format!("{field}: {what}"))
    })
}

/// An API's properties from a request body (`properties` of a JSON object).
pub(crate) fn api_properties(props: Value) -> Result<ApiProperties, AzureError> {
    decode(props).map_err(AzureError::from)
}

// ---- the policy ---------------------------------------------------------------------------

#[derive(Deserialize)]
pub(crate) struct PolicyBody {
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub format: Option<String>,
}

fn policy_contract(service: &Service, id: &str, text: &str, format: &str) -> Value {
    json!({
        "id": format!("{}/apis/{id}/policies/policy", service.arm_id()),
        "type": "Microsoft.ApiManagement/service/apis/policies",
        "name": "policy",
        "properties": {"value": text, "format": format},
    })
}

/// `policyId` must be `policy`, as API Management's.
pub(crate) fn check_policy_id(policy_id: &str) -> Result<(), AzureError> {
    if policy_id == "policy" {
        Ok(())
    } else {
        Err(AzureError::invalid(
            "policyId",
            format!("policyId must be 'policy' (got {policy_id:?})"),
        ))
    }
}

fn format_of(requested: Option<&str>, stored: &str) -> Result<String, AzureError> {
    match requested {
        None => Ok(stored.to_owned()),
        Some(f @ ("xml" | "rawxml")) => Ok(f.to_owned()),
        Some(f) => Err(AzureError::invalid(
            "format",
            format!("format must be xml or rawxml (got {f:?})"),
        )),
    }
}

pub(crate) fn get_policy(
    az: &Azure,
    service: &Service,
    id: &str,
    format: Option<&str>,
    head: bool,
) -> Result<Response, AzureError> {
    let cfg = az.app.control.view();
    let a = current_api(&cfg, service, id).ok_or_else(|| api_not_found(service, id))?;
    let (text, stored) = a.policy().ok_or_else(|| policy_not_found(id))?;
    let format = format_of(format, stored)?;
    let resp = if head {
        StatusCode::OK.into_response()
    } else {
        axum::Json(policy_contract(service, id, &text, &format)).into_response()
    };
    Ok(with_headers(resp, Some(&a.etag(true))))
}

pub(crate) fn list_policies(
    az: &Azure,
    service: &Service,
    id: &str,
) -> Result<Response, AzureError> {
    let cfg = az.app.control.view();
    let a = current_api(&cfg, service, id).ok_or_else(|| api_not_found(service, id))?;
    let value: Vec<Value> = a
        .policy()
        .map(|(text, format)| policy_contract(service, id, &text, format))
        .into_iter()
        .collect();
    let count = value.len();
    Ok(with_headers(
        axum::Json(json!({"value": value, "count": count})).into_response(),
        None,
    ))
}

/// Checks a policy body: the format and the document (APIM's error shape, naming the
/// element and where it is).
pub(crate) fn check_policy(body: &PolicyBody) -> Result<(String, String), AzureError> {
    let format = match body.format.as_deref().unwrap_or("xml") {
        f @ ("xml" | "rawxml") => f.to_owned(),
        f @ ("xml-link" | "rawxml-link") => {
            return Err(AzureError::invalid(
                "properties.format",
                format!(
                    "fulcrum does not fetch policy documents ({f}); send format xml or rawxml with the document in value"
                ),
            ));
        }
        f => {
            return Err(AzureError::invalid(
                "properties.format",
                format!("format must be xml or rawxml (got {f:?})"),
            ));
        }
    };
    let Some(text) = body.value.clone().filter(|v| !v.trim().is_empty()) else {
        return Err(AzureError::invalid(
            "properties.value",
            "properties.value must hold the policy document",
        ));
    };
    if text.len() > MAX_POLICY {
        return Err(AzureError::invalid(
            "properties.value",
            format!("the policy document is longer than {MAX_POLICY} bytes"),
        ));
    }
    policy::parse(&text).map_err(policy_error)?;
    Ok((text, format))
}

fn policy_error(e: policy::PolicyError) -> AzureError {
    let mut err = AzureError::from_validation(fulcrum_model::ValidationError::invalid(
        e.element, e.message,
    ));
    err.message = "One or more fields contain incorrect values:".into();
    err
}

/// Sets (`Some`) or deletes (`None`) an API's policy.
pub(crate) async fn write_policy(
    az: &Azure,
    ctx: &RequestContext,
    if_match: Option<&str>,
    service: &Service,
    id: &str,
    policy: Option<(String, String)>,
) -> Result<Response, AzureError> {
    let operation = if policy.is_some() {
        "PutApiPolicy"
    } else {
        "DeleteApiPolicy"
    };
    let input = (service.arm_id().to_lowercase(), id, operation, &policy);
    let gateway = &az.gateway;
    let had = {
        let cfg = az.app.control.view();
        current_api(&cfg, service, id).and_then(|a| a.policy().map(|_| ()))
    };
    let result = az
        .app
        .control
        .change_pools(ctx, operation, &input, |cfg| {
            let lb = service_lb(cfg, service)
                .ok_or_else(|| ControlError::not_found(ResourceKind::LoadBalancer, id))?;
            let mut lb_spec = lb.value.spec.clone();
            let mut record = apis_of(&lb_spec.labels)
                .remove(id)
                .ok_or_else(|| ControlError::not_found(ResourceKind::LoadBalancer, id))?;
            let has_policy = record.policy().is_some();
            check_if_match(if_match, has_policy.then(|| record.etag(true)).as_deref())?;
            if policy.is_none() && !has_policy {
                return Err(ControlError::not_found(ResourceKind::Pool, id));
            }
            record.set_policy(policy.as_ref().map(|(t, f)| (t.as_str(), f.as_str())));
            set_api(&mut lb_spec.labels, id, Some(&record));
            plan_gateway(cfg, service, gateway, Some(lb), lb_spec)
        })
        .await;
    let outcome = match result {
        Ok(o) => o,
        // No policy to delete: 204, as ARM's DELETE of what is not there.
        Err(ControlError::NotFound {
            kind: ResourceKind::Pool,
            ..
        }) => return Ok(with_headers(StatusCode::NO_CONTENT.into_response(), None)),
        Err(ControlError::NotFound { .. }) => return Err(api_not_found(service, id)),
        Err(e) => return Err(e.into()),
    };
    az.app
        .control
        .wait_applied(outcome.revision, APPLY_WAIT)
        .await;
    let Some((text, format)) = policy else {
        return Ok(with_headers(StatusCode::OK.into_response(), None));
    };
    let cfg = az.app.control.view();
    let etag = current_api(&cfg, service, id).map(|a| a.etag(true));
    let status = if had.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(with_headers(
        (
            status,
            axum::Json(policy_contract(service, id, &text, &format)),
        )
            .into_response(),
        etag.as_deref(),
    ))
}

// ---- the service ----------------------------------------------------------------------------

/// `GET .../service/{svc}`: the service as API Management describes it, with its
/// `gatewayUrl`. A service exists once a backend or API was put in it.
pub(crate) fn get_service(az: &Azure, service: &Service) -> Result<Response, AzureError> {
    let cfg = az.app.control.view();
    let lb = service_lb(&cfg, service).ok_or_else(|| {
        AzureError::not_found(format!(
            "Service '{}' was not found; it is created by the first backend or API put in it.",
            service.name
        ))
    })?;
    let gateway_url = az.gateway.url(&lb.value);
    let body = json!({
        "id": service.arm_id(),
        "type": "Microsoft.ApiManagement/service",
        "name": service.name,
        "location": "fulcrum",
        "etag": format!("\"{}\"", fulcrum_control::etag(lb.mod_revision)),
        "sku": {"name": "Developer", "capacity": 1},
        "properties": {
            "provisioningState": "Succeeded",
            "gatewayUrl": gateway_url,
            "publicIPAddresses": [lb.value.spec.vip_address.to_string()],
            "publisherEmail": "",
            "publisherName": "",
        },
    });
    Ok(with_headers(axum::Json(body).into_response(), None))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn props(v: Value) -> ApiProperties {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn api_fields_translate_and_refuse_what_fulcrum_cannot_honour() {
        let a = translate(&props(json!({
            "displayName": "Orders", "path": "/orders/", "serviceUrl": "http://10.0.0.5:8080/api/",
            "protocols": ["http", "https"], "subscriptionRequired": false,
        })))
        .unwrap();
        assert_eq!(a.path(), "orders");
        assert_eq!(a.service_url(), Some("http://10.0.0.5:8080/api"));
        assert_eq!(a.get("protocols"), Some("[\"http\",\"https\"]"));
        for (body, field) in [
            (json!({"path": "x"}), "properties.displayName"),
            (json!({"displayName": "x"}), "properties.path"),
            (
                json!({"displayName": "x", "path": "a b"}),
                "properties.path",
            ),
            (
                json!({"displayName": "x", "path": "a//b"}),
                "properties.path",
            ),
            (
                json!({"displayName": "x", "path": "a/../b"}),
                "properties.path",
            ),
            (
                json!({"displayName": "x", "path": "a", "serviceUrl": "ftp://h"}),
                "properties.serviceUrl",
            ),
            (
                json!({"displayName": "x", "path": "a", "protocols": ["https"]}),
                "properties.protocols",
            ),
            (
                json!({"displayName": "x", "path": "a", "protocols": ["http", "gopher"]}),
                "properties.protocols[1]",
            ),
            (
                json!({"displayName": "x", "path": "a", "subscriptionRequired": true}),
                "properties.subscriptionRequired",
            ),
            (
                json!({"displayName": "x", "path": "a", "authenticationSettings": {"oAuth2": {"authorizationServerId": "s"}}}),
                "properties.authenticationSettings",
            ),
            (
                json!({"displayName": "x", "path": "a", "apiVersionSetId": "/x"}),
                "properties.apiVersionSetId",
            ),
            (
                json!({"displayName": "x", "path": "a", "format": "openapi", "value": "{}"}),
                "properties.value",
            ),
            (
                json!({"displayName": "x", "path": "a", "type": "soap"}),
                "properties.type",
            ),
            (
                json!({"displayName": "x", "path": "a", "apiRevision": "2"}),
                "properties.apiRevision",
            ),
        ] {
            let e = translate(&props(body.clone())).unwrap_err();
            assert!(
                e.errors.iter().any(|fe| fe.field == field),
                "{body}: expected {field}, got {e:?}"
            );
        }
        // Empty nested objects and read-only fields a client echoes back are fine.
        translate(&props(
            json!({"displayName": "x", "path": "", "authenticationSettings": {},
            "isCurrent": true, "apiRevision": "1", "type": "http"}),
        ))
        .unwrap();
    }

    #[test]
    fn records_round_trip_through_labels_with_long_policies() {
        let mut r = translate(&props(json!({"displayName": "Orders", "path": "orders"}))).unwrap();
        let long = format!(
            "<policies><inbound><base /><set-backend-service backend-id=\"pool\" /></inbound>{}</policies>",
            "<!-- é -->".repeat(400)
        );
        r.set_policy(Some((&long, "rawxml")));
        let mut labels = BTreeMap::new();
        set_api(&mut labels, "orders", Some(&r));
        set_api(&mut labels, "other", Some(&r));
        assert!(labels.values().all(|v| v.len() <= CHUNK));
        let back = apis_of(&labels).remove("orders").unwrap();
        assert_eq!(back, r);
        assert_eq!(back.policy(), Some((long.clone(), "rawxml")));
        assert_eq!(back.policy_backend(), Some(BackendRef::Id("pool".into())));
        assert_eq!(policies_naming(&labels, "pool").len(), 2);
        // The API's ETag ignores its policy, the policy's its fields.
        let mut changed = back.clone();
        changed.set_policy(None);
        assert_eq!(changed.etag(false), back.etag(false));
        assert_ne!(changed.etag(true), back.etag(true));
        set_api(&mut labels, "orders", None);
        assert_eq!(apis_of(&labels).len(), 1);
    }

    #[test]
    fn if_match_compares_quoted_etags_and_star() {
        assert!(check_if_match(None, None).is_ok());
        assert!(check_if_match(Some("*"), Some("\"ab\"")).is_ok());
        assert!(check_if_match(Some("\"ab\""), Some("\"ab\"")).is_ok());
        assert!(check_if_match(Some("\"ac\""), Some("\"ab\"")).is_err());
        assert!(check_if_match(Some("*"), None).is_err());
    }
}
