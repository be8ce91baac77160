//! Handlers: parse the Huawei request, translate it into one control-plane operation,
//! render the result in the Huawei shape. v2 and v3 share handlers; [`Api`] picks field
//! names and shapes.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fulcrum_control::{
    BatchMembers, ControlError, EtagScope, IfMatch, Outcome, RequestContext, Vip, etag,
};
use fulcrum_model::{
    Algorithm, CertificateId, HealthMonitorId, HealthMonitorSpec, HealthMonitorType, IpVersion,
    ListenerId, ListenerProtocol, ListenerSpec, ListenerTimeouts, ListenerTls, LoadBalancerId,
    LoadBalancerKind, LoadBalancerSpec, MemberId, MemberSpec, PoolId, PoolProtocol, PoolSpec,
    PoolType, ProtectionStatus, SessionPersistence, SlowStart, SubnetId,
};
use http::StatusCode;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::error::HuaweiError;
use super::views::{self, LABEL_PROJECT, LABEL_VIP_SUBNET, LABEL_ZONES};
use super::{Api, Call, HState};

type HResult = Result<Response, HuaweiError>;

/// Huawei's member weight range, narrower than the model's.
const MAX_WEIGHT: u32 = 100;
/// How long a v3 write waits for the data plane to serve it before answering: v3
/// dedicated load balancers apply changes synchronously.
const V3_SETTLE: Duration = Duration::from_secs(5);

/// Model field names → this API's, for error messages.
const MEMBER_RENAMES_V2: &[(&str, &str)] = &[("port", "protocol_port")];
const MEMBER_RENAMES_V3: &[(&str, &str)] =
    &[("port", "protocol_port"), ("subnet_id", "subnet_cidr_id")];
const POOL_RENAMES: &[(&str, &str)] = &[
    ("algorithm", "lb_algorithm"),
    (
        "member_deletion_protection",
        "member_deletion_protection_enable",
    ),
    ("pool_type", "type"),
    ("Tcp", "TCP"),
    ("Udp", "UDP"),
    ("Http", "HTTP"),
    ("Https", "HTTPS"),
    ("Quic", "QUIC"),
    ("Tcpssl", "TCPSSL"),
];
const LISTENER_RENAMES: &[(&str, &str)] = &[
    ("port", "protocol_port"),
    ("sni_certificate_ids", "sni_container_refs"),
    ("certificate_id", "default_tls_container_ref"),
];

/// A listener change's error in Huawei's words: the model's `tls.certificate_id` is
/// `default_tls_container_ref`, its `tls.sni_certificate_ids` `sni_container_refs`.
fn listener_error(e: ControlError) -> HuaweiError {
    let mut e = HuaweiError::from(e).renamed(LISTENER_RENAMES);
    for field in ["default_tls_container_ref", "sni_container_refs"] {
        e.message = e.message.replace(&format!("tls.{field}"), field);
    }
    e
}
const MONITOR_RENAMES: &[(&str, &str)] = &[
    ("interval_ms", "delay"),
    ("timeout_ms", "timeout"),
    ("healthy_threshold", "max_retries"),
    ("unhealthy_threshold", "max_retries_down"),
    ("port", "monitor_port"),
];

fn member_renames(api: Api) -> &'static [(&'static str, &'static str)] {
    match api {
        Api::V2 => MEMBER_RENAMES_V2,
        Api::V3 => MEMBER_RENAMES_V3,
    }
}

pub(crate) fn routes(api: Api) -> Router<HState> {
    macro_rules! h {
        ($f:ident) => {
            move |State(s): State<HState>, call: Call| async move { $f(api, s, call).await }
        };
    }
    let mut r = Router::new()
        .route("/loadbalancers", get(h!(list_lbs)).post(h!(create_lb)))
        .route(
            "/loadbalancers/{loadbalancer_id}",
            get(h!(show_lb)).put(h!(update_lb)).delete(h!(delete_lb)),
        )
        .route(
            "/listeners",
            get(h!(list_listeners)).post(h!(create_listener)),
        )
        .route(
            "/listeners/{listener_id}",
            get(h!(show_listener))
                .put(h!(update_listener))
                .delete(h!(delete_listener)),
        )
        .route("/pools", get(h!(list_pools)).post(h!(create_pool)))
        .route(
            "/pools/{pool_id}",
            get(h!(show_pool))
                .put(h!(update_pool))
                .delete(h!(delete_pool)),
        )
        .route(
            "/pools/{pool_id}/members/{member_id}",
            get(h!(show_member))
                .put(h!(update_member))
                .delete(h!(delete_member)),
        )
        .route(
            "/healthmonitors",
            get(h!(list_monitors)).post(h!(create_monitor)),
        )
        .route(
            "/healthmonitors/{healthmonitor_id}",
            get(h!(show_monitor))
                .put(h!(update_monitor))
                .delete(h!(delete_monitor)),
        );
    r = match api {
        // Seed 001: PUT on the member collection is the batch call.
        Api::V2 => r.route(
            "/pools/{pool_id}/members",
            get(h!(list_members))
                .post(h!(create_member))
                .put(h!(batch_members)),
        ),
        Api::V3 => r
            .route(
                "/pools/{pool_id}/members",
                get(h!(list_members)).post(h!(create_member)),
            )
            .route(
                "/pools/{pool_id}/members/batch-update",
                post(h!(batch_update_members)),
            )
            .route(
                "/loadbalancers/{loadbalancer_id}/delete-cascade",
                post(h!(delete_lb_cascade)),
            )
            .route(
                "/pools/{pool_id}/delete-cascade",
                axum::routing::delete(h!(delete_pool_cascade)),
            ),
    };
    r.merge(super::l7::routes(api))
}

// ---- shared pieces -------------------------------------------------------------------

pub(crate) fn ctx(call: &Call) -> RequestContext {
    RequestContext {
        request_id: crate::request::current_request_id(),
        principal: call.caller.principal.clone(),
        front_door: "huawei",
        // A load balancer that is not ACTIVE refuses changes (ELB.8906).
        one_change_at_a_time: true,
        scope: call.caller.scope.clone(),
        ..Default::default()
    }
}

/// Reads a JSON body, naming the offending field (`pool.lb_algorithm: unknown variant …`).
pub(crate) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, HuaweiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(HuaweiError::invalid(
            "the request body is empty; expected JSON",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let what = crate::decode::describe(&inner);
        if inner.is_syntax() || inner.is_eof() || path == "." {
            HuaweiError::invalid(format!("malformed request body: {what}"))
        } else {
            HuaweiError::invalid(format!("{path}: {what}"))
        }
    })
}

/// Answers with `body`, adding `request_id` for v3.
pub(crate) fn reply(api: Api, status: StatusCode, mut body: Value) -> Response {
    if api == Api::V3
        && let Value::Object(map) = &mut body
    {
        map.insert(
            "request_id".into(),
            json!(crate::request::current_request_id()),
        );
    }
    (status, axum::Json(body)).into_response()
}

/// Creations answer 201 in both families (the SDKs accept any status below 400).
pub(crate) fn created(_api: Api) -> StatusCode {
    StatusCode::CREATED
}

/// v3 writes answer once the data plane serves the change (bounded); v2 (shared ELB)
/// writes are asynchronous, as on Huawei.
pub(crate) async fn settle(api: Api, s: &HState, outcome: &Outcome) {
    if api == Api::V3 {
        s.app
            .control
            .wait_applied(outcome.revision, V3_SETTLE)
            .await;
    }
}

pub(crate) fn result_id(outcome: &Outcome) -> Result<String, HuaweiError> {
    outcome
        .result
        .as_ref()
        .map(|r| r.id.clone())
        .ok_or_else(|| HuaweiError::not_found("the resource is gone"))
}

fn check_weight(field: &str, weight: Option<u32>) -> Result<(), HuaweiError> {
    match weight {
        Some(w) if w > MAX_WEIGHT => Err(HuaweiError::invalid(format!(
            "{field} must be between 0 and {MAX_WEIGHT} (got {w})"
        ))),
        _ => Ok(()),
    }
}

pub(crate) fn page_body(
    api: Api,
    key: &str,
    query: &[(String, String)],
    items: Vec<Value>,
) -> HResult {
    let page = views::page(items, query)?;
    let count = page.items.len();
    let mut body = json!({ key: page.items });
    if api == Api::V3 {
        body["page_info"] = json!({
            "previous_marker": page.previous_marker,
            "next_marker": page.next_marker,
            "current_count": count,
        });
    }
    Ok(reply(api, StatusCode::OK, body))
}

/// Inserts `key` into a patch when the request set it.
pub(crate) fn set<T: serde::Serialize>(patch: &mut Map<String, Value>, key: &str, v: &Option<T>) {
    if let Some(v) = v {
        patch.insert(key.into(), json!(v));
    }
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn nullable<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

// ---- load balancers ------------------------------------------------------------------

#[derive(Deserialize)]
struct LbBody<T> {
    loadbalancer: T,
}

/// Fields with no local meaning (flavors, EIPs, billing, tags, …) are accepted and ignored.
#[derive(Deserialize)]
struct LbCreate {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    vip_address: Option<String>,
    /// v2
    vip_subnet_id: Option<String>,
    /// v3
    vip_subnet_cidr_id: Option<String>,
    vpc_id: Option<String>,
    admin_state_up: Option<bool>,
    availability_zone_list: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct LbUpdate {
    name: Option<String>,
    description: Option<String>,
    admin_state_up: Option<bool>,
}

async fn list_lbs(api: Api, s: HState, call: Call) -> HResult {
    let items = {
        let full = s.app.control.view();
        let cfg = full.scoped(&call.caller.scope);
        cfg.loadbalancers
            .values()
            .map(|v| views::loadbalancer(api, &s.app.control, &cfg, v, &call.caller.project_id))
            .collect()
    };
    page_body(api, "loadbalancers", &call.query, items)
}

fn render_lb(
    api: Api,
    s: &HState,
    call: &Call,
    id: &LoadBalancerId,
    status: StatusCode,
) -> HResult {
    let full = s.app.control.view();
    let cfg = full.scoped(&call.caller.scope);
    let v = cfg
        .loadbalancers
        .get(id)
        .ok_or_else(|| HuaweiError::not_found(format!("load balancer {id} not found")))?;
    let body = views::loadbalancer(api, &s.app.control, &cfg, v, &call.caller.project_id);
    Ok(reply(api, status, json!({ "loadbalancer": body })))
}

async fn create_lb(api: Api, s: HState, call: Call) -> HResult {
    let LbBody { loadbalancer: req } = parse::<LbBody<LbCreate>>(&call.body)?;
    let (subnet_field, subnet_id) = match api {
        Api::V2 => ("loadbalancer.vip_subnet_id", req.vip_subnet_id),
        Api::V3 => ("loadbalancer.vip_subnet_cidr_id", req.vip_subnet_cidr_id),
    };
    if api == Api::V2 && subnet_id.is_none() {
        return Err(HuaweiError::invalid(format!("{subnet_field} is required")));
    }
    // An address given must be one this node can bind; otherwise one is picked from the
    // subnet (as Huawei assigns one), within the node's VIP ranges.
    let given = req.vip_address.as_deref().filter(|a| !a.is_empty());
    let vip_address = match given {
        None => std::net::IpAddr::from([0, 0, 0, 0]),
        Some(a) => a.parse().map_err(|_| {
            HuaweiError::invalid(format!(
                "loadbalancer.vip_address {a:?} is not an IP address"
            ))
        })?,
    };
    let mut vpc_id = req.vpc_id.clone().unwrap_or_default();
    if let Some(sid) = &subnet_id {
        let full = s.app.control.view();
        let cfg = full.scoped(&call.caller.scope);
        let subnet = cfg.subnets.get(&SubnetId(sid.clone())).ok_or_else(|| {
            HuaweiError::invalid(format!("{subnet_field}: subnet {sid} does not exist"))
        })?;
        let spec = &subnet.value.spec;
        if !vpc_id.is_empty() && vpc_id != spec.vpc_id {
            return Err(HuaweiError::invalid(format!(
                "{subnet_field}: subnet {sid} is in VPC {}, not {vpc_id}",
                spec.vpc_id
            )));
        }
        if given.is_some() && !spec.contains(vip_address) {
            return Err(HuaweiError::invalid(format!(
                "loadbalancer.vip_address {vip_address} is not in subnet {sid} ({})",
                spec.cidr
            )));
        }
        vpc_id = spec.vpc_id.clone();
    }
    let mut spec = LoadBalancerSpec::new(if req.name.is_empty() {
        "elb".to_owned()
    } else {
        req.name
    });
    spec.description = req.description;
    spec.vip_address = vip_address;
    spec.vpc_id = vpc_id;
    spec.kind = match api {
        Api::V2 => LoadBalancerKind::Shared,
        Api::V3 => LoadBalancerKind::Dedicated,
    };
    spec.admin_state_up = req.admin_state_up.unwrap_or(true);
    spec.labels
        .insert(LABEL_PROJECT.into(), call.caller.project_id.clone());
    let vip = match given {
        Some(_) => Vip::InRanges,
        None => Vip::Allocate {
            subnet: subnet_id.clone().map(SubnetId),
        },
    };
    if let Some(sid) = subnet_id {
        spec.labels.insert(LABEL_VIP_SUBNET.into(), sid);
    }
    if let Some(zones) = req.availability_zone_list {
        spec.labels.insert(LABEL_ZONES.into(), zones.join(","));
    }
    let outcome = s
        .app
        .control
        .create_loadbalancer_at(&ctx(&call), spec, vip)
        .await
        .map_err(|e| HuaweiError::from(e).renamed(&[("vip_subnet_id", subnet_field)]))?;
    settle(api, &s, &outcome).await;
    let id = LoadBalancerId(result_id(&outcome)?);
    render_lb(api, &s, &call, &id, created(api))
}

async fn show_lb(api: Api, s: HState, call: Call) -> HResult {
    let id = LoadBalancerId(call.param("loadbalancer_id")?);
    render_lb(api, &s, &call, &id, StatusCode::OK)
}

async fn update_lb(api: Api, s: HState, call: Call) -> HResult {
    let id = LoadBalancerId(call.param("loadbalancer_id")?);
    let LbBody { loadbalancer: req } = parse::<LbBody<LbUpdate>>(&call.body)?;
    let mut patch = Map::new();
    set(&mut patch, "name", &req.name);
    set(&mut patch, "description", &req.description);
    set(&mut patch, "admin_state_up", &req.admin_state_up);
    let outcome = s
        .app
        .control
        .update_loadbalancer(&ctx(&call), &id, &Value::Object(patch))
        .await?;
    settle(api, &s, &outcome).await;
    render_lb(api, &s, &call, &id, StatusCode::OK)
}

/// Refused while listeners or pools remain; LBaaS's `?cascade=true` takes them along.
async fn delete_lb(api: Api, s: HState, call: Call) -> HResult {
    let id = LoadBalancerId(call.param("loadbalancer_id")?);
    let cascade = match call
        .query
        .iter()
        .find(|(k, _)| k == "cascade")
        .map(|(_, v)| v.as_str())
    {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(HuaweiError::invalid(format!(
                "cascade must be true or false (got {other:?})"
            )));
        }
    };
    let outcome = s
        .app
        .control
        .delete_loadbalancer(&ctx(&call), &id, cascade)
        .await?;
    settle(api, &s, &outcome).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_lb_cascade(api: Api, s: HState, call: Call) -> HResult {
    let id = LoadBalancerId(call.param("loadbalancer_id")?);
    let outcome = s
        .app
        .control
        .delete_loadbalancer(&ctx(&call), &id, true)
        .await?;
    settle(api, &s, &outcome).await;
    Ok(reply(api, StatusCode::ACCEPTED, json!({})))
}

// ---- listeners -----------------------------------------------------------------------

#[derive(Deserialize)]
struct ListenerBody<T> {
    listener: T,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenerCreate {
    loadbalancer_id: String,
    protocol: String,
    protocol_port: u16,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    admin_state_up: Option<bool>,
    default_pool_id: Option<String>,
    connection_limit: Option<i64>,
    keepalive_timeout: Option<u32>,
    client_timeout: Option<u32>,
    member_timeout: Option<u32>,
    default_tls_container_ref: Option<String>,
    #[serde(default)]
    sni_container_refs: Vec<String>,
    client_ca_tls_container_ref: Option<String>,
    #[allow(dead_code)]
    tenant_id: Option<String>,
    #[allow(dead_code)]
    project_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenerUpdate {
    name: Option<String>,
    description: Option<String>,
    admin_state_up: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    default_pool_id: Option<Option<String>>,
    connection_limit: Option<i64>,
    keepalive_timeout: Option<u32>,
    client_timeout: Option<u32>,
    member_timeout: Option<u32>,
    #[serde(default, deserialize_with = "nullable")]
    default_tls_container_ref: Option<Option<String>>,
    sni_container_refs: Option<Vec<String>>,
    client_ca_tls_container_ref: Option<String>,
}

/// `keepalive_timeout` of a UDP listener created without one (Huawei's default).
const UDP_KEEPALIVE_DEFAULT_MS: u32 = 300_000;

/// v3 `HTTPS` (terminated on Huawei) and v2 `TERMINATED_HTTPS` terminate TLS with the
/// certificates their `default_tls_container_ref` and `sni_container_refs` name; v2
/// `HTTPS` is LBaaS's TLS pass-through. v3 `TLS` (TCP over terminated TLS) is refused.
fn listener_protocol(api: Api, p: &str) -> Result<ListenerProtocol, HuaweiError> {
    Ok(match (api, p) {
        (_, "TCP") => ListenerProtocol::Tcp,
        (_, "UDP") => ListenerProtocol::Udp,
        (_, "HTTP") => ListenerProtocol::Http,
        (Api::V3, "QUIC") => ListenerProtocol::Quic,
        (Api::V2, "HTTPS") => ListenerProtocol::Https,
        (Api::V3, "HTTPS") | (Api::V2, "TERMINATED_HTTPS") => ListenerProtocol::TerminatedHttps,
        (Api::V3, "TLS") => {
            return Err(HuaweiError::invalid(
                "listener.protocol TLS (TCP over terminated TLS) is not supported; use HTTPS",
            ));
        }
        _ => {
            return Err(HuaweiError::invalid(format!(
                "listener.protocol must be TCP, UDP, HTTP or {} (got {p:?})",
                match api {
                    Api::V2 => "TERMINATED_HTTPS",
                    Api::V3 => "HTTPS",
                }
            )));
        }
    })
}

/// Mutual authentication (a CA certificate checking clients) is not served.
fn refuse_client_ca(client_ca: Option<&String>) -> Result<(), HuaweiError> {
    match client_ca {
        Some(c) if !c.is_empty() => Err(HuaweiError::invalid(
            "listener.client_ca_tls_container_ref: mutual authentication is not supported",
        )),
        _ => Ok(()),
    }
}

/// The TLS settings of a TLS-terminating listener: its certificates by reference.
fn listener_tls(
    protocol: ListenerProtocol,
    default: Option<String>,
    sni: Vec<String>,
) -> Result<Option<ListenerTls>, HuaweiError> {
    match (protocol, default.filter(|d| !d.is_empty())) {
        (ListenerProtocol::TerminatedHttps, Some(d)) => Ok(Some(ListenerTls::by_reference(
            CertificateId(d),
            sni.into_iter().map(CertificateId).collect(),
        ))),
        (ListenerProtocol::TerminatedHttps, None) => Err(HuaweiError::invalid(
            "listener.default_tls_container_ref is required for a listener that terminates TLS",
        )),
        (_, Some(_)) => Err(HuaweiError::invalid(
            "listener.default_tls_container_ref is only valid for a listener that terminates TLS",
        )),
        (_, None) if !sni.is_empty() => Err(HuaweiError::invalid(
            "listener.sni_container_refs is only valid for a listener that terminates TLS",
        )),
        (_, None) => Ok(None),
    }
}

fn connection_limit(v: i64) -> Result<Option<u32>, HuaweiError> {
    match v {
        -1 => Ok(None),
        n if n >= 1 => Ok(Some(u32::try_from(n).unwrap_or(u32::MAX))),
        n => Err(HuaweiError::invalid(format!(
            "listener.connection_limit must be -1 (unlimited) or at least 1 (got {n})"
        ))),
    }
}

/// Seconds (Huawei) → milliseconds (model).
fn secs(v: u32) -> u32 {
    v.saturating_mul(1000)
}

async fn list_listeners(api: Api, s: HState, call: Call) -> HResult {
    let items = {
        let full = s.app.control.view();
        let cfg = full.scoped(&call.caller.scope);
        cfg.listeners
            .values()
            .map(|v| views::listener(api, &cfg, v, &call.caller.project_id))
            .collect()
    };
    page_body(api, "listeners", &call.query, items)
}

fn render_listener(
    api: Api,
    s: &HState,
    call: &Call,
    id: &ListenerId,
    status: StatusCode,
) -> HResult {
    let full = s.app.control.view();
    let cfg = full.scoped(&call.caller.scope);
    let v = cfg
        .listeners
        .get(id)
        .ok_or_else(|| HuaweiError::not_found(format!("listener {id} not found")))?;
    let body = views::listener(api, &cfg, v, &call.caller.project_id);
    Ok(reply(api, status, json!({ "listener": body })))
}

async fn create_listener(api: Api, s: HState, call: Call) -> HResult {
    let ListenerBody { listener: req } = parse::<ListenerBody<ListenerCreate>>(&call.body)?;
    let protocol = listener_protocol(api, &req.protocol)?;
    let mut timeouts = ListenerTimeouts::default();
    if protocol.is_udp() {
        // Huawei's UDP listeners idle out after 300 s unless told (10..4000 s).
        timeouts.idle_ms = UDP_KEEPALIVE_DEFAULT_MS;
    }
    if let Some(t) = req.keepalive_timeout {
        timeouts.idle_ms = secs(t);
    }
    if let Some(t) = req.client_timeout {
        timeouts.client_header_ms = secs(t);
    }
    if let Some(t) = req.member_timeout {
        timeouts.upstream_response_ms = secs(t);
    }
    refuse_client_ca(req.client_ca_tls_container_ref.as_ref())?;
    let protocol = listener_protocol(api, &req.protocol)?;
    let tls = listener_tls(
        protocol,
        req.default_tls_container_ref,
        req.sni_container_refs,
    )?;
    let spec = ListenerSpec {
        name: req.name,
        description: req.description,
        protocol,
        port: req.protocol_port,
        default_pool_id: req.default_pool_id.map(PoolId),
        routes: Vec::new(),
        route_set: None,
        hostnames: Vec::new(),
        admin_state_up: req.admin_state_up.unwrap_or(true),
        tls,
        connection_limit: req
            .connection_limit
            .map(connection_limit)
            .transpose()?
            .flatten(),
        timeouts,
        access_log: Default::default(),
        request_id: true,
    };
    let lb_id = LoadBalancerId(req.loadbalancer_id);
    let outcome = s
        .app
        .control
        .create_listener(&ctx(&call), &lb_id, spec)
        .await
        .map_err(listener_error)?;
    settle(api, &s, &outcome).await;
    render_listener(
        api,
        &s,
        &call,
        &ListenerId(result_id(&outcome)?),
        created(api),
    )
}

async fn show_listener(api: Api, s: HState, call: Call) -> HResult {
    let id = ListenerId(call.param("listener_id")?);
    render_listener(api, &s, &call, &id, StatusCode::OK)
}

async fn update_listener(api: Api, s: HState, call: Call) -> HResult {
    let id = ListenerId(call.param("listener_id")?);
    let ListenerBody { listener: req } = parse::<ListenerBody<ListenerUpdate>>(&call.body)?;
    refuse_client_ca(req.client_ca_tls_container_ref.as_ref())?;
    let mut patch = Map::new();
    let mut tls = Map::new();
    match req.default_tls_container_ref {
        Some(Some(d)) if !d.is_empty() => {
            tls.insert("certificate_id".into(), json!(d));
        }
        Some(_) => {
            return Err(HuaweiError::invalid(
                "listener.default_tls_container_ref cannot be removed from a listener that terminates TLS",
            ));
        }
        None => {}
    }
    set(&mut tls, "sni_certificate_ids", &req.sni_container_refs);
    if !tls.is_empty() {
        patch.insert("tls".into(), Value::Object(tls));
    }
    set(&mut patch, "name", &req.name);
    set(&mut patch, "description", &req.description);
    set(&mut patch, "admin_state_up", &req.admin_state_up);
    if let Some(pool) = req.default_pool_id {
        patch.insert("default_pool_id".into(), json!(pool));
    }
    if let Some(limit) = req.connection_limit {
        patch.insert("connection_limit".into(), json!(connection_limit(limit)?));
    }
    let mut timeouts = Map::new();
    set(&mut timeouts, "idle_ms", &req.keepalive_timeout.map(secs));
    set(
        &mut timeouts,
        "client_header_ms",
        &req.client_timeout.map(secs),
    );
    set(
        &mut timeouts,
        "upstream_response_ms",
        &req.member_timeout.map(secs),
    );
    if !timeouts.is_empty() {
        patch.insert("timeouts".into(), Value::Object(timeouts));
    }
    let outcome = s
        .app
        .control
        .update_listener(&ctx(&call), &id, &Value::Object(patch))
        .await
        .map_err(listener_error)?;
    settle(api, &s, &outcome).await;
    render_listener(api, &s, &call, &id, StatusCode::OK)
}

/// Huawei's order: a listener goes only once no forwarding policy (l7policy) is left on it
/// and no pool is bound to it (delete the pool, or set `default_pool_id` to null, first),
/// unless v2's `cascade=true` takes them along. The listener's state seen here is made a
/// precondition of the deletion, so a policy or pool bound meanwhile cannot slip through.
async fn delete_listener(api: Api, s: HState, call: Call) -> HResult {
    let id = ListenerId(call.param("listener_id")?);
    let cascade = call
        .query
        .iter()
        .any(|(k, v)| k == "cascade" && v.eq_ignore_ascii_case("true"));
    let mut c = ctx(&call);
    if !cascade {
        let full = s.app.control.view();
        let cfg = full.scoped(&call.caller.scope);
        if let Some(l) = cfg.listeners.get(&id) {
            let spec = &l.value.spec;
            if let Some(r) = spec.routes.first() {
                return Err(HuaweiError::conflict(format!(
                    "listener {id} still has l7policy {} (and {} more); delete its l7policies first",
                    if r.id.is_empty() {
                        "(unnamed route)"
                    } else {
                        r.id.as_str()
                    },
                    spec.routes.len() - 1
                )));
            }
            if let Some(pool) = &spec.default_pool_id {
                return Err(HuaweiError::conflict(format!(
                    "listener {id} still has pool {pool} bound (default_pool_id); delete the pool or set default_pool_id to null first"
                )));
            }
            c.if_match = Some(IfMatch {
                scope: EtagScope::Resource,
                value: etag(l.mod_revision),
            });
        }
    }
    let outcome = s
        .app
        .control
        .delete_listener(&c, &id)
        .await
        .map_err(|e| match e {
            ControlError::PreconditionFailed { .. } => HuaweiError::conflict(format!(
                "listener {id} changed while it was being deleted; retry"
            )),
            other => other.into(),
        })?;
    settle(api, &s, &outcome).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- pools ---------------------------------------------------------------------------

#[derive(Deserialize)]
struct PoolBody<T> {
    pool: T,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolCreate {
    protocol: PoolProtocol,
    lb_algorithm: Algorithm,
    loadbalancer_id: Option<String>,
    listener_id: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    admin_state_up: Option<bool>,
    session_persistence: Option<SessionPersistence>,
    slow_start: Option<SlowStart>,
    member_deletion_protection_enable: Option<bool>,
    vpc_id: Option<String>,
    #[serde(rename = "type")]
    pool_type: Option<PoolType>,
    ip_version: Option<IpVersion>,
    protection_status: Option<ProtectionStatus>,
    protection_reason: Option<String>,
    #[allow(dead_code)]
    tenant_id: Option<String>,
    #[allow(dead_code)]
    project_id: Option<String>,
}

/// Seed 002's UpdatePoolOption. `session_persistence` replaces the whole object (`null`
/// turns persistence off); `slow_start` merges.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolUpdate {
    admin_state_up: Option<bool>,
    description: Option<String>,
    lb_algorithm: Option<Algorithm>,
    name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    session_persistence: Option<Option<SessionPersistence>>,
    #[serde(default, deserialize_with = "nullable")]
    slow_start: Option<Option<SlowStartUpdate>>,
    member_deletion_protection_enable: Option<bool>,
    vpc_id: Option<String>,
    #[serde(rename = "type")]
    pool_type: Option<PoolType>,
    protection_status: Option<ProtectionStatus>,
    protection_reason: Option<String>,
}

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct SlowStartUpdate {
    #[serde(skip_serializing_if = "Option::is_none")]
    enable: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<u32>,
}

/// The merge patch (model field names) an UpdatePoolOption stands for.
fn pool_patch(req: PoolUpdate) -> Value {
    let mut patch = Map::new();
    set(&mut patch, "admin_state_up", &req.admin_state_up);
    set(&mut patch, "description", &req.description);
    set(&mut patch, "algorithm", &req.lb_algorithm);
    set(&mut patch, "name", &req.name);
    if let Some(sp) = req.session_persistence {
        // A whole new object: fields it leaves out are cleared, not kept.
        let value = sp.map(|sp| {
            json!({
                "type": sp.kind,
                "cookie_name": sp.cookie_name,
                "persistence_timeout": sp.persistence_timeout,
            })
        });
        patch.insert("session_persistence".into(), json!(value));
    }
    if let Some(ss) = req.slow_start {
        patch.insert("slow_start".into(), json!(ss));
    }
    set(
        &mut patch,
        "member_deletion_protection",
        &req.member_deletion_protection_enable,
    );
    set(&mut patch, "vpc_id", &req.vpc_id);
    set(&mut patch, "type", &req.pool_type);
    set(&mut patch, "protection_status", &req.protection_status);
    set(&mut patch, "protection_reason", &req.protection_reason);
    Value::Object(patch)
}

async fn list_pools(api: Api, s: HState, call: Call) -> HResult {
    let items = {
        let full = s.app.control.view();
        let cfg = full.scoped(&call.caller.scope);
        cfg.pools
            .values()
            .map(|v| views::pool(api, &cfg, v, &call.caller.project_id))
            .collect()
    };
    page_body(api, "pools", &call.query, items)
}

fn render_pool(api: Api, s: &HState, call: &Call, id: &PoolId, status: StatusCode) -> HResult {
    let full = s.app.control.view();
    let cfg = full.scoped(&call.caller.scope);
    let v = cfg
        .pools
        .get(id)
        .ok_or_else(|| HuaweiError::not_found(format!("pool {id} not found")))?;
    let body = views::pool(api, &cfg, v, &call.caller.project_id);
    Ok(reply(api, status, json!({ "pool": body })))
}

async fn create_pool(api: Api, s: HState, call: Call) -> HResult {
    let PoolBody { pool: req } = parse::<PoolBody<PoolCreate>>(&call.body)?;
    // A pool is created for a load balancer, or for a listener (it becomes the listener's
    // default pool, in the same transaction); at least one is required.
    let listener_id = req.listener_id.clone().map(ListenerId);
    if let (Some(l), Some(lb)) = (&listener_id, &req.loadbalancer_id) {
        let full = s.app.control.view();
        let cfg = full.scoped(&call.caller.scope);
        if cfg
            .listeners
            .get(l)
            .is_some_and(|v| v.value.loadbalancer_id.as_str() != lb.as_str())
        {
            return Err(HuaweiError::invalid(format!(
                "listener {l} is not on load balancer {lb}"
            )));
        }
    }
    let lb_id = req.loadbalancer_id.clone().map(LoadBalancerId);
    if listener_id.is_none() && lb_id.is_none() {
        return Err(HuaweiError::invalid(
            "pool.loadbalancer_id or pool.listener_id is required",
        ));
    }
    let spec = pool_spec(api, req);
    let control = &s.app.control;
    let outcome = match (&listener_id, &lb_id) {
        (Some(l), _) => control.create_pool_for_listener(&ctx(&call), l, spec).await,
        (None, Some(lb)) => control.create_pool(&ctx(&call), lb, spec).await,
        (None, None) => return Err(HuaweiError::invalid("pool.loadbalancer_id is required")),
    }
    .map_err(|e| HuaweiError::from(e).renamed(POOL_RENAMES))?;
    settle(api, &s, &outcome).await;
    render_pool(api, &s, &call, &PoolId(result_id(&outcome)?), created(api))
}

/// The pool a creation asks for.
fn pool_spec(api: Api, req: PoolCreate) -> PoolSpec {
    let mut spec = PoolSpec::new(req.name, req.protocol);
    spec.description = req.description;
    spec.algorithm = req.lb_algorithm;
    spec.admin_state_up = req.admin_state_up.unwrap_or(true);
    spec.session_persistence = req.session_persistence;
    spec.slow_start = req.slow_start;
    spec.member_deletion_protection = req.member_deletion_protection_enable.unwrap_or(false);
    spec.vpc_id = req.vpc_id.unwrap_or_default();
    spec.pool_type = req.pool_type.unwrap_or_default();
    spec.ip_version = req.ip_version.unwrap_or(match api {
        Api::V2 => IpVersion::V4,
        Api::V3 => IpVersion::Dualstack,
    });
    spec.protection_status = req.protection_status.unwrap_or_default();
    spec.protection_reason = req.protection_reason.unwrap_or_default();
    spec
}

async fn show_pool(api: Api, s: HState, call: Call) -> HResult {
    let id = PoolId(call.param("pool_id")?);
    render_pool(api, &s, &call, &id, StatusCode::OK)
}

/// Seed 002. Every rule is the model's (`PoolSpec::validate`, `validate_update`); the
/// ACTIVE check is the control plane's: a change under a load balancer whose last change
/// the data plane does not serve yet waits briefly, then is refused (409), decided on the
/// same view the change is planned on.
async fn update_pool(api: Api, s: HState, call: Call) -> HResult {
    let id = PoolId(call.param("pool_id")?);
    let PoolBody { pool: req } = parse::<PoolBody<PoolUpdate>>(&call.body)?;
    let patch = pool_patch(req);
    let outcome = s
        .app
        .control
        .update_pool(&ctx(&call), &id, &patch)
        .await
        .map_err(|e| HuaweiError::from(e).renamed(POOL_RENAMES))?;
    settle(api, &s, &outcome).await;
    render_pool(api, &s, &call, &id, StatusCode::OK)
}

/// Huawei deletes only an empty pool (no members, no health monitor); `delete-cascade`
/// takes them along. The emptiness seen here is made a precondition of the deletion
/// (the pool's ETag moves with every member or monitor change), so it cannot race.
async fn delete_pool(api: Api, s: HState, call: Call) -> HResult {
    let id = PoolId(call.param("pool_id")?);
    let revision = {
        let full = s.app.control.view();
        let cfg = full.scoped(&call.caller.scope);
        let pool = cfg
            .pools
            .get(&id)
            .ok_or_else(|| HuaweiError::not_found(format!("pool {id} not found")))?;
        if cfg.members_of(&id).next().is_some() || cfg.monitor_of(&id).is_some() {
            return Err(HuaweiError::conflict(format!(
                "pool {id} still has members or a health monitor; remove them first or use delete-cascade"
            )));
        }
        pool.mod_revision
    };
    let mut c = ctx(&call);
    c.if_match = Some(IfMatch {
        scope: EtagScope::Resource,
        value: etag(revision),
    });
    let outcome = s
        .app
        .control
        .delete_pool_unbinding(&c, &id)
        .await
        .map_err(|e| match e {
            ControlError::PreconditionFailed { .. } => HuaweiError::conflict(format!(
                "pool {id} changed while it was being deleted; retry"
            )),
            other => other.into(),
        })?;
    settle(api, &s, &outcome).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_pool_cascade(api: Api, s: HState, call: Call) -> HResult {
    let id = PoolId(call.param("pool_id")?);
    let outcome = s
        .app
        .control
        .delete_pool_unbinding(&ctx(&call), &id)
        .await
        .map_err(|e| HuaweiError::from(e).renamed(POOL_RENAMES))?;
    settle(api, &s, &outcome).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- members -------------------------------------------------------------------------

#[derive(Deserialize)]
struct MemberBody<T> {
    member: T,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberCreate {
    address: String,
    protocol_port: u16,
    /// v2
    subnet_id: Option<String>,
    /// v3
    subnet_cidr_id: Option<String>,
    weight: Option<u32>,
    name: Option<String>,
    admin_state_up: Option<bool>,
    #[allow(dead_code)]
    availability_zone: Option<String>,
    #[allow(dead_code)]
    tenant_id: Option<String>,
    #[allow(dead_code)]
    project_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberUpdate {
    name: Option<String>,
    admin_state_up: Option<bool>,
    weight: Option<u32>,
    protocol_port: Option<u16>,
    #[allow(dead_code)]
    availability_zone: Option<String>,
}

fn subnet_field(api: Api) -> &'static str {
    match api {
        Api::V2 => "subnet_id",
        Api::V3 => "subnet_cidr_id",
    }
}

async fn list_members(api: Api, s: HState, call: Call) -> HResult {
    let pool_id = PoolId(call.param("pool_id")?);
    let items = {
        let full = s.app.control.view();
        let cfg = full.scoped(&call.caller.scope);
        if !cfg.pools.contains_key(&pool_id) {
            return Err(HuaweiError::not_found(format!("pool {pool_id} not found")));
        }
        cfg.members_of(&pool_id)
            .map(|v| views::member(api, &s.app.control, &cfg, v, &call.caller.project_id))
            .collect()
    };
    page_body(api, "members", &call.query, items)
}

fn render_member(
    api: Api,
    s: &HState,
    call: &Call,
    pool_id: &PoolId,
    id: &MemberId,
    status: StatusCode,
) -> HResult {
    let full = s.app.control.view();
    let cfg = full.scoped(&call.caller.scope);
    let v = cfg.member(pool_id, id).ok_or_else(|| {
        HuaweiError::not_found(format!("member {id} not found in pool {pool_id}"))
    })?;
    let body = views::member(api, &s.app.control, &cfg, v, &call.caller.project_id);
    Ok(reply(api, status, json!({ "member": body })))
}

async fn create_member(api: Api, s: HState, call: Call) -> HResult {
    let pool_id = PoolId(call.param("pool_id")?);
    let MemberBody { member: req } = parse::<MemberBody<MemberCreate>>(&call.body)?;
    let (subnet, wrong) = match api {
        Api::V2 => (req.subnet_id, req.subnet_cidr_id.map(|_| "subnet_cidr_id")),
        Api::V3 => (req.subnet_cidr_id, req.subnet_id.map(|_| "subnet_id")),
    };
    if let Some(field) = wrong {
        return Err(HuaweiError::invalid(format!(
            "member.{field} is not a field of this API; use member.{}",
            subnet_field(api)
        )));
    }
    check_weight("member.weight", req.weight)?;
    if req.address.chars().count() > 64 {
        return Err(HuaweiError::invalid(
            "member.address must be at most 64 characters",
        ));
    }
    let mut spec = MemberSpec::new(req.address, req.protocol_port);
    spec.subnet_id = subnet.map(SubnetId);
    spec.weight = req.weight.unwrap_or(1);
    spec.name = req.name.unwrap_or_default();
    spec.admin_state_up = req.admin_state_up.unwrap_or(true);
    let outcome = s
        .app
        .control
        .create_member(&ctx(&call), &pool_id, spec)
        .await
        .map_err(|e| HuaweiError::from(e).renamed(member_renames(api)))?;
    settle(api, &s, &outcome).await;
    let id = MemberId(result_id(&outcome)?);
    render_member(api, &s, &call, &pool_id, &id, created(api))
}

async fn show_member(api: Api, s: HState, call: Call) -> HResult {
    let pool_id = PoolId(call.param("pool_id")?);
    let id = MemberId(call.param("member_id")?);
    render_member(api, &s, &call, &pool_id, &id, StatusCode::OK)
}

fn member_patch(req: &MemberUpdate, field: &str) -> Result<Value, HuaweiError> {
    check_weight(&format!("{field}.weight"), req.weight)?;
    let mut patch = Map::new();
    set(&mut patch, "name", &req.name);
    set(&mut patch, "admin_state_up", &req.admin_state_up);
    set(&mut patch, "weight", &req.weight);
    set(&mut patch, "port", &req.protocol_port);
    Ok(Value::Object(patch))
}

async fn update_member(api: Api, s: HState, call: Call) -> HResult {
    let pool_id = PoolId(call.param("pool_id")?);
    let id = MemberId(call.param("member_id")?);
    let MemberBody { member: req } = parse::<MemberBody<MemberUpdate>>(&call.body)?;
    let patch = member_patch(&req, "member")?;
    let outcome = s
        .app
        .control
        .update_member(&ctx(&call), &pool_id, &id, &patch)
        .await
        .map_err(|e| HuaweiError::from(e).renamed(member_renames(api)))?;
    settle(api, &s, &outcome).await;
    render_member(api, &s, &call, &pool_id, &id, StatusCode::OK)
}

async fn delete_member(api: Api, s: HState, call: Call) -> HResult {
    let pool_id = PoolId(call.param("pool_id")?);
    let id = MemberId(call.param("member_id")?);
    let outcome = s
        .app
        .control
        .delete_member(&ctx(&call), &pool_id, &id)
        .await?;
    settle(api, &s, &outcome).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Seed 001's body. `action` defaults to `replace` (so gophercloud's
/// `BatchUpdateMembers`, which sends none, works too).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    members: Vec<Value>,
    action: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchMember {
    #[serde(default)]
    name: String,
    address: String,
    protocol_port: u16,
    subnet_id: String,
    weight: Option<u32>,
    admin_state_up: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchMemberRef {
    id: String,
}

fn batch_item<T: DeserializeOwned>(i: usize, v: Value) -> Result<T, HuaweiError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let what = crate::decode::describe(&e.into_inner());
        if path == "." {
            HuaweiError::invalid(format!("members[{i}]: {what}"))
        } else {
            HuaweiError::invalid(format!("members[{i}].{path}: {what}"))
        }
    })
}

/// Seed 001: `PUT /v2.0/lbaas/pools/{pool_id}/members` `{members, action}`. Everything
/// is checked before anything is written, and the whole batch is one transaction: one
/// bad member changes nothing. Answers 202 with no body.
async fn batch_members(api: Api, s: HState, call: Call) -> HResult {
    let pool_id = PoolId(call.param("pool_id")?);
    let req: BatchBody = parse(&call.body)?;
    let action = req.action.as_deref().unwrap_or("replace");
    if req.members.len() > fulcrum_model::MAX_BATCH_MEMBERS {
        return Err(HuaweiError::invalid(format!(
            "members: at most {} members per call (got {})",
            fulcrum_model::MAX_BATCH_MEMBERS,
            req.members.len()
        )));
    }
    let batch = match action {
        "add" | "replace" => {
            let mut specs = Vec::with_capacity(req.members.len());
            let mut problems = Vec::new();
            {
                let full = s.app.control.view();
                let cfg = full.scoped(&call.caller.scope);
                for (i, v) in req.members.into_iter().enumerate() {
                    let m: BatchMember = batch_item(i, v)?;
                    if let Err(e) = check_weight(&format!("members[{i}].weight"), m.weight) {
                        problems.push(e.message);
                    }
                    if m.address.chars().count() > 64 {
                        problems.push(format!(
                            "members[{i}].address must be at most 64 characters"
                        ));
                    }
                    // The shared ELB takes IPv4 subnets only, whatever the load balancer.
                    let subnet = SubnetId(m.subnet_id);
                    if cfg
                        .subnets
                        .get(&subnet)
                        .is_some_and(|v| v.value.spec.is_ipv6())
                    {
                        problems.push(format!(
                            "members[{i}].subnet_id: IPv6 subnets are not supported"
                        ));
                    }
                    let mut spec = MemberSpec::new(m.address, m.protocol_port);
                    spec.name = m.name;
                    spec.subnet_id = Some(subnet);
                    spec.weight = m.weight.unwrap_or(1);
                    spec.admin_state_up = m.admin_state_up.unwrap_or(true);
                    specs.push(spec);
                }
            }
            if !problems.is_empty() {
                return Err(HuaweiError::invalid(problems.join("; ")));
            }
            if action == "add" {
                BatchMembers::Add(specs)
            } else {
                BatchMembers::Replace(specs)
            }
        }
        "delete" => BatchMembers::Delete(
            req.members
                .into_iter()
                .enumerate()
                .map(|(i, v)| batch_item::<BatchMemberRef>(i, v).map(|r| MemberId(r.id)))
                .collect::<Result<_, _>>()?,
        ),
        other => {
            return Err(HuaweiError::invalid(format!(
                "action must be add, delete or replace (got {other:?})"
            )));
        }
    };
    let outcome = s
        .app
        .control
        .batch_members(&ctx(&call), &pool_id, batch)
        .await
        .map_err(|e| HuaweiError::from(e).renamed(member_renames(api)))?;
    settle(api, &s, &outcome).await;
    Ok(StatusCode::ACCEPTED.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchUpdateBody {
    members: Vec<BatchUpdateItem>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchUpdateItem {
    id: String,
    name: Option<String>,
    admin_state_up: Option<bool>,
    weight: Option<u32>,
    protocol_port: Option<u16>,
    availability_zone: Option<String>,
}

/// v3 `POST /pools/{pool_id}/members/batch-update`: patches existing members by id, in
/// one transaction.
async fn batch_update_members(api: Api, s: HState, call: Call) -> HResult {
    let pool_id = PoolId(call.param("pool_id")?);
    let req: BatchUpdateBody = parse(&call.body)?;
    let mut patches = Vec::with_capacity(req.members.len());
    for (i, m) in req.members.into_iter().enumerate() {
        let update = MemberUpdate {
            name: m.name,
            admin_state_up: m.admin_state_up,
            weight: m.weight,
            protocol_port: m.protocol_port,
            availability_zone: m.availability_zone,
        };
        patches.push((
            MemberId(m.id),
            member_patch(&update, &format!("members[{i}]"))?,
        ));
    }
    let outcome = s
        .app
        .control
        .update_members(&ctx(&call), &pool_id, &patches)
        .await
        .map_err(|e| HuaweiError::from(e).renamed(member_renames(api)))?;
    settle(api, &s, &outcome).await;
    let full = s.app.control.view();
    let cfg = full.scoped(&call.caller.scope);
    let members: Vec<Value> = patches
        .iter()
        .filter_map(|(id, _)| cfg.member(&pool_id, id))
        .map(|v| views::member(api, &s.app.control, &cfg, v, &call.caller.project_id))
        .collect();
    Ok(reply(api, StatusCode::OK, json!({ "members": members })))
}

// ---- health monitors -----------------------------------------------------------------

#[derive(Deserialize)]
struct MonitorBody<T> {
    healthmonitor: T,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MonitorCreate {
    pool_id: String,
    #[serde(rename = "type")]
    kind: String,
    delay: u32,
    timeout: u32,
    max_retries: u8,
    max_retries_down: Option<u8>,
    monitor_port: Option<u16>,
    url_path: Option<String>,
    http_method: Option<String>,
    expected_codes: Option<String>,
    domain_name: Option<String>,
    name: Option<String>,
    admin_state_up: Option<bool>,
    #[allow(dead_code)]
    tenant_id: Option<String>,
    #[allow(dead_code)]
    project_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MonitorUpdate {
    #[serde(rename = "type")]
    kind: Option<String>,
    delay: Option<u32>,
    timeout: Option<u32>,
    max_retries: Option<u8>,
    max_retries_down: Option<u8>,
    #[serde(default, deserialize_with = "nullable")]
    monitor_port: Option<Option<u16>>,
    url_path: Option<String>,
    http_method: Option<String>,
    expected_codes: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    domain_name: Option<Option<String>>,
    name: Option<String>,
    admin_state_up: Option<bool>,
}

/// Huawei's ranges, narrower than the model's: delay and timeout 1..50 s, retries 1..10.
fn check_monitor_ranges(
    delay: Option<u32>,
    timeout: Option<u32>,
    retries: &[(&str, Option<u8>)],
) -> Result<(), HuaweiError> {
    for (field, v) in [("delay", delay), ("timeout", timeout)] {
        if let Some(v) = v
            && !(1..=50).contains(&v)
        {
            return Err(HuaweiError::invalid(format!(
                "healthmonitor.{field} must be between 1 and 50 seconds (got {v})"
            )));
        }
    }
    for (field, v) in retries {
        if let Some(v) = v
            && !(1..=10).contains(v)
        {
            return Err(HuaweiError::invalid(format!(
                "healthmonitor.{field} must be between 1 and 10 (got {v})"
            )));
        }
    }
    Ok(())
}

fn monitor_type(t: &str) -> Result<HealthMonitorType, HuaweiError> {
    Ok(match t {
        "TCP" => HealthMonitorType::Tcp,
        "HTTP" => HealthMonitorType::Http,
        "HTTPS" => HealthMonitorType::Https,
        "UDP_CONNECT" => HealthMonitorType::UdpConnect,
        other => {
            return Err(HuaweiError::invalid(format!(
                "healthmonitor.type must be TCP, HTTP, HTTPS or UDP_CONNECT (got {other:?})"
            )));
        }
    })
}

async fn list_monitors(api: Api, s: HState, call: Call) -> HResult {
    let items = {
        let full = s.app.control.view();
        let cfg = full.scoped(&call.caller.scope);
        cfg.monitors
            .values()
            .map(|v| views::monitor(api, &cfg, v, &call.caller.project_id))
            .collect()
    };
    page_body(api, "healthmonitors", &call.query, items)
}

fn render_monitor(
    api: Api,
    s: &HState,
    call: &Call,
    id: &HealthMonitorId,
    status: StatusCode,
) -> HResult {
    let full = s.app.control.view();
    let cfg = full.scoped(&call.caller.scope);
    let v = cfg
        .monitors
        .get(id)
        .ok_or_else(|| HuaweiError::not_found(format!("health monitor {id} not found")))?;
    let body = views::monitor(api, &cfg, v, &call.caller.project_id);
    Ok(reply(api, status, json!({ "healthmonitor": body })))
}

async fn create_monitor(api: Api, s: HState, call: Call) -> HResult {
    let MonitorBody { healthmonitor: req } = parse::<MonitorBody<MonitorCreate>>(&call.body)?;
    let spec = monitor_spec(req)?;
    let outcome = s
        .app
        .control
        .create_monitor(&ctx(&call), spec)
        .await
        .map_err(|e| HuaweiError::from(e).renamed(MONITOR_RENAMES))?;
    settle(api, &s, &outcome).await;
    render_monitor(
        api,
        &s,
        &call,
        &HealthMonitorId(result_id(&outcome)?),
        created(api),
    )
}

/// The health monitor a creation asks for, in Huawei's ranges.
fn monitor_spec(req: MonitorCreate) -> Result<HealthMonitorSpec, HuaweiError> {
    check_monitor_ranges(
        Some(req.delay),
        Some(req.timeout),
        &[
            ("max_retries", Some(req.max_retries)),
            ("max_retries_down", req.max_retries_down),
        ],
    )?;
    let mut spec = HealthMonitorSpec::new(PoolId(req.pool_id), monitor_type(&req.kind)?);
    spec.interval_ms = secs(req.delay);
    spec.timeout_ms = secs(req.timeout);
    spec.healthy_threshold = req.max_retries;
    if let Some(n) = req.max_retries_down {
        spec.unhealthy_threshold = n;
    }
    spec.port = req.monitor_port;
    if let Some(v) = req.url_path {
        spec.url_path = v;
    }
    if let Some(v) = req.http_method {
        spec.http_method = v;
    }
    if let Some(v) = req.expected_codes {
        spec.expected_codes = v;
    }
    spec.domain_name = req.domain_name.filter(|d| !d.is_empty());
    spec.name = req.name.unwrap_or_default();
    spec.admin_state_up = req.admin_state_up.unwrap_or(true);
    Ok(spec)
}

async fn show_monitor(api: Api, s: HState, call: Call) -> HResult {
    let id = HealthMonitorId(call.param("healthmonitor_id")?);
    render_monitor(api, &s, &call, &id, StatusCode::OK)
}

async fn update_monitor(api: Api, s: HState, call: Call) -> HResult {
    let id = HealthMonitorId(call.param("healthmonitor_id")?);
    let MonitorBody { healthmonitor: req } = parse::<MonitorBody<MonitorUpdate>>(&call.body)?;
    check_monitor_ranges(
        req.delay,
        req.timeout,
        &[
            ("max_retries", req.max_retries),
            ("max_retries_down", req.max_retries_down),
        ],
    )?;
    let mut patch = Map::new();
    if let Some(t) = &req.kind {
        patch.insert("type".into(), json!(monitor_type(t)?));
    }
    set(&mut patch, "interval_ms", &req.delay.map(secs));
    set(&mut patch, "timeout_ms", &req.timeout.map(secs));
    set(&mut patch, "healthy_threshold", &req.max_retries);
    set(&mut patch, "unhealthy_threshold", &req.max_retries_down);
    if let Some(port) = req.monitor_port {
        patch.insert("port".into(), json!(port));
    }
    set(&mut patch, "url_path", &req.url_path);
    set(&mut patch, "http_method", &req.http_method);
    set(&mut patch, "expected_codes", &req.expected_codes);
    if let Some(d) = req.domain_name {
        patch.insert("domain_name".into(), json!(d.filter(|d| !d.is_empty())));
    }
    set(&mut patch, "name", &req.name);
    set(&mut patch, "admin_state_up", &req.admin_state_up);
    let outcome = s
        .app
        .control
        .update_monitor(&ctx(&call), &id, &Value::Object(patch))
        .await
        .map_err(|e| HuaweiError::from(e).renamed(MONITOR_RENAMES))?;
    settle(api, &s, &outcome).await;
    render_monitor(api, &s, &call, &id, StatusCode::OK)
}

async fn delete_monitor(api: Api, s: HState, call: Call) -> HResult {
    let id = HealthMonitorId(call.param("healthmonitor_id")?);
    let outcome = s.app.control.delete_monitor(&ctx(&call), &id).await?;
    settle(api, &s, &outcome).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The request bodies for `fulcrum_api::fuzzing::huawei_body`: the first byte picks the
/// operation. Creations are decoded and their fields checked as the handlers check them;
/// updates become the patches the handlers send, merged and validated as the control
/// plane does; batch items are read one by one.
#[cfg(feature = "fuzzing")]
pub fn fuzz_body(data: &[u8]) {
    use crate::fuzzing::{
        patched, pick, validate_loadbalancer, validate_member, validate_monitor, validate_pool,
    };
    let Some((which, body)) = pick(data) else {
        return;
    };
    match which % 10 {
        0 => {
            if let Ok(LbBody { loadbalancer: req }) = parse::<LbBody<LbCreate>>(body) {
                let mut spec = LoadBalancerSpec::new(req.name);
                spec.description = req.description;
                if let Some(a) = req.vip_address.as_deref().and_then(|a| a.parse().ok()) {
                    spec.vip_address = a;
                }
                spec.vpc_id = req.vpc_id.unwrap_or_default();
                validate_loadbalancer(&spec);
            }
        }
        1 => {
            if let Ok(LbBody { loadbalancer: req }) = parse::<LbBody<LbUpdate>>(body) {
                let mut patch = Map::new();
                set(&mut patch, "name", &req.name);
                set(&mut patch, "description", &req.description);
                set(&mut patch, "admin_state_up", &req.admin_state_up);
                if let Some(spec) = patched(&LoadBalancerSpec::new("lb"), &Value::Object(patch)) {
                    validate_loadbalancer(&spec);
                }
            }
        }
        2 => {
            if let Ok(ListenerBody { listener: req }) = parse::<ListenerBody<ListenerCreate>>(body)
            {
                for api in [Api::V2, Api::V3] {
                    let _ = listener_protocol(api, &req.protocol);
                }
                let _ = req.connection_limit.map(connection_limit);
            }
        }
        3 => {
            let _ = parse::<ListenerBody<ListenerUpdate>>(body);
        }
        4 => {
            if let Ok(PoolBody { pool: req }) = parse::<PoolBody<PoolCreate>>(body) {
                validate_pool(&pool_spec(Api::V3, req));
            }
        }
        5 => {
            if let Ok(PoolBody { pool: req }) = parse::<PoolBody<PoolUpdate>>(body) {
                let current = PoolSpec::new("p", PoolProtocol::Http);
                if let Some(spec) = patched(&current, &pool_patch(req)) {
                    validate_pool(&spec);
                    let _ = spec.validate_update(&current);
                }
            }
        }
        6 => {
            if let Ok(MemberBody { member: req }) = parse::<MemberBody<MemberCreate>>(body) {
                let _ = check_weight("member.weight", req.weight);
            }
        }
        7 => {
            if let Ok(MemberBody { member: req }) = parse::<MemberBody<MemberUpdate>>(body)
                && let Ok(patch) = member_patch(&req, "member")
                && let Some(spec) = patched(&MemberSpec::new("10.0.0.1", 80), &patch)
            {
                validate_member(&spec);
            }
        }
        8 => {
            if let Ok(req) = parse::<BatchBody>(body) {
                for (i, v) in req.members.into_iter().enumerate() {
                    if let Ok(m) = batch_item::<BatchMember>(i, v.clone()) {
                        let _ = check_weight("weight", m.weight);
                        let mut spec = MemberSpec::new(m.address, m.protocol_port);
                        spec.name = m.name;
                        validate_member(&spec);
                    }
                    let _ = batch_item::<BatchMemberRef>(i, v);
                }
            }
            let _ = parse::<BatchUpdateBody>(body);
        }
        _ => {
            if let Ok(MonitorBody { healthmonitor: req }) =
                parse::<MonitorBody<MonitorCreate>>(body)
                && let Ok(spec) = monitor_spec(req)
            {
                validate_monitor(&spec);
            }
            let _ = parse::<MonitorBody<MonitorUpdate>>(body);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn update_pool_option_becomes_a_model_merge_patch() {
        let req: PoolBody<PoolUpdate> = parse(
            br#"{"pool": {"lb_algorithm": "SOURCE_IP", "name": "p",
                "member_deletion_protection_enable": true, "type": "instance",
                "session_persistence": {"type": "HTTP_COOKIE"},
                "slow_start": {"enable": true}}}"#,
        )
        .unwrap();
        assert_eq!(
            pool_patch(req.pool),
            json!({
                "algorithm": "SOURCE_IP", "name": "p", "member_deletion_protection": true,
                "type": "instance",
                "session_persistence": {"type": "HTTP_COOKIE", "cookie_name": null, "persistence_timeout": null},
                "slow_start": {"enable": true},
            })
        );
        let req: PoolBody<PoolUpdate> =
            parse(br#"{"pool": {"session_persistence": null}}"#).unwrap();
        assert_eq!(pool_patch(req.pool), json!({"session_persistence": null}));
    }

    #[test]
    fn bad_update_pool_options_name_the_field() {
        let bad = [
            (
                r#"{"pool": {"lb_algorithm": "RANDOM"}}"#,
                "pool.lb_algorithm",
            ),
            (
                r#"{"pool": {"protection_status": "full"}}"#,
                "pool.protection_status",
            ),
            (r#"{"pool": {"type": "vm"}}"#, "pool.type"),
            (
                r#"{"pool": {"slow_start": {"duration": "x"}}}"#,
                "pool.slow_start.duration",
            ),
            (r#"{"pool": {"colour": 1}}"#, "colour"),
        ];
        for (body, field) in bad {
            let e = parse::<PoolBody<PoolUpdate>>(body.as_bytes())
                .err()
                .unwrap();
            assert!(e.message.contains(field), "{body}: {}", e.message);
        }
    }

    #[test]
    fn batch_bodies_refuse_unknown_fields() {
        assert!(parse::<BatchUpdateBody>(br#"{"members": [{"id": "a", "weight": 2}]}"#).is_ok());
        let e = parse::<BatchUpdateBody>(br#"{"members": [{"id": "a", "colour": 1}]}"#)
            .err()
            .unwrap();
        assert!(e.message.contains("colour"), "{}", e.message);
        let e = parse::<BatchBody>(br#"{"members": [], "actoin": "add"}"#)
            .err()
            .unwrap();
        assert!(e.message.contains("actoin"), "{}", e.message);
        let e = batch_item::<BatchMember>(
            2,
            json!({"address": "10.0.0.1", "protocol_port": 80, "subnet_id": "s", "weigth": 1}),
        )
        .err()
        .unwrap();
        assert!(e.message.starts_with("members[2]"), "{}", e.message);
    }

    #[test]
    fn listener_protocols_by_api() {
        assert_eq!(
            listener_protocol(Api::V2, "HTTPS").unwrap(),
            ListenerProtocol::Https
        );
        for (api, p) in [(Api::V3, "HTTPS"), (Api::V2, "TERMINATED_HTTPS")] {
            assert_eq!(
                listener_protocol(api, p).unwrap(),
                ListenerProtocol::TerminatedHttps
            );
        }
        assert!(listener_protocol(Api::V3, "TLS").is_err());
        assert!(listener_protocol(Api::V2, "TERMINATED_HTTPS").is_ok());
        assert!(listener_tls(ListenerProtocol::TerminatedHttps, None, Vec::new()).is_err());
        assert!(listener_tls(ListenerProtocol::Http, Some("c".into()), Vec::new()).is_err());
        assert!(listener_tls(ListenerProtocol::Http, None, vec!["c".into()]).is_err());
        let tls = listener_tls(
            ListenerProtocol::TerminatedHttps,
            Some("c".into()),
            vec!["s".into()],
        )
        .unwrap()
        .unwrap();
        assert_eq!(tls.certificate_id, Some(CertificateId("c".into())));
        assert_eq!(tls.sni_certificate_ids, [CertificateId("s".into())]);
        assert_eq!(
            listener_protocol(Api::V3, "QUIC").unwrap(),
            ListenerProtocol::Quic
        );
    }
}
