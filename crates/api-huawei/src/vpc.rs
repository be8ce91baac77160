//! Huawei VPC v1: the VPC and subnet calls of `huaweicloudsdkvpc.v2.VpcClient`, under the
//! same authentication as ELB, mapped onto the model's VPCs and subnets.
//!
//! ```text
//! POST   /v1/{project_id}/vpcs                                   create_vpc
//! GET    /v1/{project_id}/vpcs                                   list_vpcs      ?limit&marker&id
//! GET|PUT|DELETE /v1/{project_id}/vpcs/{vpc_id}                  show/update/delete_vpc
//! POST   /v1/{project_id}/subnets                                create_subnet
//! GET    /v1/{project_id}/subnets                                list_subnets   ?limit&marker&vpc_id
//! GET    /v1/{project_id}/subnets/{subnet_id}                    show_subnet
//! PUT|DELETE /v1/{project_id}/vpcs/{vpc_id}/subnets/{subnet_id}  update/delete_subnet
//! ```
//!
//! A fulcrum subnet has one id. The VPC API returns it as the subnet's `id`, as
//! `neutron_network_id` and as `neutron_subnet_id`, so whichever of them a script passes
//! to ELB (`vip_subnet_cidr_id` and members' `subnet_cidr_id` in v3, `vip_subnet_id` and
//! `subnet_id` in v2, which on Huawei take the `neutron_subnet_id`) names the same subnet.
//! Fields with no local meaning (DHCP, DNS, availability zone, tags) are accepted and
//! ignored, and read back as Huawei's defaults.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fulcrum_control::{Config, Versioned};
use fulcrum_model::{Subnet, SubnetId, SubnetSpec, Vpc, VpcId, VpcSpec};
use http::StatusCode;
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::error::{HuaweiError, VpcModule};
use super::handlers::{ctx, parse, result_id};
use super::views::{LABEL_VIP_SUBNET, page, time};
use super::{Call, HState};

type VResult = Result<Response, HuaweiError>;

/// Huawei's limit on VPC and subnet names.
const MAX_NAME: usize = 64;

pub(crate) fn routes() -> Router<HState> {
    macro_rules! h {
        ($f:ident, $module:expr) => {
            move |State(s): State<HState>, call: Call| async move {
                $f(s, call).await.map_err(|e| e.for_vpc($module))
            }
        };
    }
    use VpcModule::{Subnet as S, Vpc as V};
    Router::new()
        .route(
            "/v1/{project_id}/vpcs",
            get(h!(list_vpcs, V)).post(h!(create_vpc, V)),
        )
        .route(
            "/v1/{project_id}/vpcs/{vpc_id}",
            get(h!(show_vpc, V))
                .put(h!(update_vpc, V))
                .delete(h!(delete_vpc, V)),
        )
        .route(
            "/v1/{project_id}/subnets",
            get(h!(list_subnets, S)).post(h!(create_subnet, S)),
        )
        .route(
            "/v1/{project_id}/subnets/{subnet_id}",
            get(h!(show_subnet, S)),
        )
        .route(
            "/v1/{project_id}/vpcs/{vpc_id}/subnets/{subnet_id}",
            axum::routing::put(h!(update_subnet, S)).delete(h!(delete_subnet, S)),
        )
}

fn vpc_err(e: fulcrum_control::ControlError) -> HuaweiError {
    HuaweiError::from_vpc_call(e, VpcModule::Vpc)
}

fn subnet_err(e: fulcrum_control::ControlError) -> HuaweiError {
    HuaweiError::from_vpc_call(e, VpcModule::Subnet)
}

fn ok(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn check_name(field: &str, name: &str, required: bool) -> Result<(), HuaweiError> {
    let n = name.chars().count();
    if (required && n == 0) || n > MAX_NAME {
        return Err(HuaweiError::invalid(format!(
            "{field} must be {}..{MAX_NAME} characters (got {n})",
            u8::from(required)
        )));
    }
    Ok(())
}

fn parse_cidr(field: &str, text: &str) -> Result<IpNet, HuaweiError> {
    let net: IpNet = text.parse().map_err(|_| {
        HuaweiError::invalid(format!(
            "{field} {text:?} is not a CIDR (like \"192.168.0.0/24\")"
        ))
    })?;
    if !matches!(net, IpNet::V4(_)) {
        return Err(HuaweiError::invalid(format!(
            "{field} must be an IPv4 CIDR (got {text}); IPv6 subnets are not supported"
        )));
    }
    Ok(net)
}

// ---- views ---------------------------------------------------------------------------

fn vpc_view(v: &Vpc, project: &str) -> Value {
    json!({
        "id": v.id,
        "name": v.spec.name,
        "description": v.spec.description,
        "cidr": v.spec.cidr.map(|c| c.to_string()).unwrap_or_default(),
        "status": "OK",
        "routes": [],
        "enterprise_project_id": "0",
        "tenant_id": project,
        "created_at": time(&v.created_at),
        "updated_at": time(&v.updated_at),
    })
}

fn subnet_view(s: &Subnet, project: &str) -> Value {
    json!({
        "id": s.id,
        "name": s.spec.name,
        "description": s.spec.description,
        "cidr": s.spec.cidr.to_string(),
        "gateway_ip": s.spec.gateway_ip.map(|g| g.to_string()).unwrap_or_default(),
        "ipv6_enable": false,
        "cidr_v6": "",
        "gateway_ip_v6": "",
        "dhcp_enable": true,
        "primary_dns": "",
        "secondary_dns": "",
        "dns_list": [],
        "availability_zone": "",
        "vpc_id": s.spec.vpc_id,
        "status": "ACTIVE",
        "neutron_network_id": s.id,
        "neutron_subnet_id": s.id,
        "neutron_subnet_id_v6": "",
        "extra_dhcp_opts": [],
        "scope": "center",
        "tenant_id": project,
        "created_at": time(&s.created_at),
        "updated_at": time(&s.updated_at),
    })
}

fn find_vpc<'a>(cfg: &'a Config, id: &VpcId) -> Result<&'a Versioned<Vpc>, HuaweiError> {
    cfg.vpcs.get(id).ok_or_else(|| {
        HuaweiError::new(
            StatusCode::NOT_FOUND,
            "VPC.0003",
            format!("VPC {id} does not exist"),
        )
    })
}

fn find_subnet<'a>(cfg: &'a Config, id: &SubnetId) -> Result<&'a Versioned<Subnet>, HuaweiError> {
    cfg.subnets
        .get(id)
        .ok_or_else(|| HuaweiError::not_found(format!("subnet {id} does not exist")))
}

// ---- VPCs ----------------------------------------------------------------------------

#[derive(Deserialize)]
struct VpcBody<T> {
    vpc: T,
}

/// Fields with no local meaning (enterprise project, tags, …) are accepted and ignored.
#[derive(Deserialize)]
struct VpcCreate {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    cidr: Option<String>,
}

#[derive(Deserialize)]
struct VpcUpdate {
    name: Option<String>,
    description: Option<String>,
    cidr: Option<String>,
    routes: Option<Vec<Value>>,
}

async fn create_vpc(s: HState, call: Call) -> VResult {
    let VpcBody { vpc: req } = parse::<VpcBody<VpcCreate>>(&call.body)?;
    check_name("vpc.name", &req.name, false)?;
    let cidr = req
        .cidr
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(|c| parse_cidr("vpc.cidr", c))
        .transpose()?;
    let spec = VpcSpec {
        name: req.name,
        description: req.description,
        cidr,
    };
    let outcome = s
        .app
        .control
        .create_vpc(&ctx(&call), spec)
        .await
        .map_err(vpc_err)?;
    let id = VpcId(result_id(&outcome)?);
    render_vpc(&s, &call, &id)
}

fn render_vpc(s: &HState, call: &Call, id: &VpcId) -> VResult {
    let cfg = s.app.control.view();
    let v = find_vpc(&cfg, id)?;
    Ok(ok(
        StatusCode::OK,
        json!({ "vpc": vpc_view(&v.value, &call.caller.project_id) }),
    ))
}

async fn show_vpc(s: HState, call: Call) -> VResult {
    let id = VpcId(call.param("vpc_id")?);
    render_vpc(&s, &call, &id)
}

async fn list_vpcs(s: HState, call: Call) -> VResult {
    let items = {
        let cfg = s.app.control.view();
        cfg.vpcs
            .values()
            .map(|v| vpc_view(&v.value, &call.caller.project_id))
            .collect()
    };
    // `enterprise_project_id` is a filter with no local meaning: every VPC is in "0".
    let query: Vec<(String, String)> = call
        .query
        .iter()
        .filter(|(k, v)| !(k == "enterprise_project_id" && (v == "0" || v == "all_granted_eps")))
        .cloned()
        .collect();
    let page = page(items, &query)?;
    Ok(ok(StatusCode::OK, json!({ "vpcs": page.items })))
}

async fn update_vpc(s: HState, call: Call) -> VResult {
    let id = VpcId(call.param("vpc_id")?);
    let VpcBody { vpc: req } = parse::<VpcBody<VpcUpdate>>(&call.body)?;
    if req.routes.as_ref().is_some_and(|r| !r.is_empty()) {
        return Err(HuaweiError::invalid("vpc.routes are not supported"));
    }
    let mut patch = Map::new();
    if let Some(name) = &req.name {
        check_name("vpc.name", name, false)?;
        patch.insert("name".into(), json!(name));
    }
    if let Some(d) = &req.description {
        patch.insert("description".into(), json!(d));
    }
    if let Some(c) = &req.cidr {
        patch.insert("cidr".into(), json!(parse_cidr("vpc.cidr", c)?.to_string()));
    }
    s.app
        .control
        .update_vpc(&ctx(&call), &id, &Value::Object(patch))
        .await
        .map_err(vpc_err)?;
    render_vpc(&s, &call, &id)
}

async fn delete_vpc(s: HState, call: Call) -> VResult {
    let id = VpcId(call.param("vpc_id")?);
    s.app
        .control
        .delete_vpc(&ctx(&call), &id)
        .await
        .map_err(vpc_err)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- subnets -------------------------------------------------------------------------

#[derive(Deserialize)]
struct SubnetBody<T> {
    subnet: T,
}

/// DHCP, DNS, availability zone and tags are accepted and ignored.
#[derive(Deserialize)]
struct SubnetCreate {
    name: Option<String>,
    #[serde(default)]
    description: String,
    cidr: Option<String>,
    vpc_id: Option<String>,
    gateway_ip: Option<String>,
    ipv6_enable: Option<bool>,
}

#[derive(Deserialize)]
struct SubnetUpdate {
    name: Option<String>,
    description: Option<String>,
    ipv6_enable: Option<bool>,
}

fn required<T>(v: Option<T>, field: &str) -> Result<T, HuaweiError> {
    v.ok_or_else(|| HuaweiError::invalid(format!("{field} is required")))
}

fn no_ipv6(v: Option<bool>) -> Result<(), HuaweiError> {
    if v == Some(true) {
        return Err(HuaweiError::invalid(
            "subnet.ipv6_enable: IPv6 subnets are not supported",
        ));
    }
    Ok(())
}

async fn create_subnet(s: HState, call: Call) -> VResult {
    let SubnetBody { subnet: req } = parse::<SubnetBody<SubnetCreate>>(&call.body)?;
    let name = required(req.name, "subnet.name")?;
    check_name("subnet.name", &name, true)?;
    let cidr = parse_cidr("subnet.cidr", &required(req.cidr, "subnet.cidr")?)?;
    let vpc_id = required(req.vpc_id, "subnet.vpc_id")?;
    let gateway = required(req.gateway_ip, "subnet.gateway_ip")?;
    let gateway_ip = gateway.parse().map_err(|_| {
        HuaweiError::invalid(format!(
            "subnet.gateway_ip {gateway:?} is not an IP address"
        ))
    })?;
    no_ipv6(req.ipv6_enable)?;
    let spec = SubnetSpec {
        name,
        description: req.description,
        cidr,
        vpc_id,
        gateway_ip: Some(gateway_ip),
    };
    let outcome = s
        .app
        .control
        .create_subnet(&ctx(&call), spec, true)
        .await
        .map_err(subnet_err)?;
    let id = SubnetId(result_id(&outcome)?);
    render_subnet(&s, &call, &id)
}

fn render_subnet(s: &HState, call: &Call, id: &SubnetId) -> VResult {
    let cfg = s.app.control.view();
    let v = find_subnet(&cfg, id)?;
    Ok(ok(
        StatusCode::OK,
        json!({ "subnet": subnet_view(&v.value, &call.caller.project_id) }),
    ))
}

async fn show_subnet(s: HState, call: Call) -> VResult {
    let id = SubnetId(call.param("subnet_id")?);
    render_subnet(&s, &call, &id)
}

async fn list_subnets(s: HState, call: Call) -> VResult {
    let items = {
        let cfg = s.app.control.view();
        cfg.subnets
            .values()
            .map(|v| subnet_view(&v.value, &call.caller.project_id))
            .collect()
    };
    let page = page(items, &call.query)?;
    Ok(ok(StatusCode::OK, json!({ "subnets": page.items })))
}

/// The subnet the path names, which must be in the VPC the path names.
fn subnet_in_vpc(s: &HState, call: &Call) -> Result<SubnetId, HuaweiError> {
    let vpc_id = VpcId(call.param("vpc_id")?);
    let id = SubnetId(call.param("subnet_id")?);
    let cfg = s.app.control.view();
    let subnet = find_subnet(&cfg, &id)?;
    if subnet.value.spec.vpc_id != vpc_id.0 {
        find_vpc(&cfg, &vpc_id)?;
        return Err(HuaweiError::not_found(format!(
            "subnet {id} is not in VPC {vpc_id}"
        )));
    }
    Ok(id)
}

async fn update_subnet(s: HState, call: Call) -> VResult {
    let id = subnet_in_vpc(&s, &call)?;
    let SubnetBody { subnet: req } = parse::<SubnetBody<SubnetUpdate>>(&call.body)?;
    no_ipv6(req.ipv6_enable)?;
    let mut patch = Map::new();
    if let Some(name) = &req.name {
        check_name("subnet.name", name, true)?;
        patch.insert("name".into(), json!(name));
    }
    if let Some(d) = &req.description {
        patch.insert("description".into(), json!(d));
    }
    s.app
        .control
        .update_subnet(&ctx(&call), &id, &Value::Object(patch))
        .await
        .map_err(subnet_err)?;
    Ok(ok(
        StatusCode::OK,
        json!({ "subnet": { "id": id, "status": "ACTIVE" } }),
    ))
}

/// Refused while a load balancer has its address in the subnet (Huawei's order: the load
/// balancer goes first); members' subnets are checked by the control plane.
async fn delete_subnet(s: HState, call: Call) -> VResult {
    let id = subnet_in_vpc(&s, &call)?;
    if let Some(lb) = s.app.control.view().loadbalancers.values().find(|lb| {
        lb.value
            .spec
            .labels
            .get(LABEL_VIP_SUBNET)
            .map(String::as_str)
            == Some(id.as_str())
    }) {
        return Err(HuaweiError::conflict(format!(
            "subnet {id} is used by load balancer {}; delete the load balancer first",
            lb.value.id
        )));
    }
    s.app
        .control
        .delete_subnet(&ctx(&call), &id)
        .await
        .map_err(subnet_err)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
