//! The Azure API Management dialect: seed 003 (Backend - Update) and the backend
//! operations around it under `/subscriptions/{sub}/resourceGroups/{rg}/providers/
//! Microsoft.ApiManagement/service/{svc}/backends`, the service's APIs and their policies
//! (`.../apis`, `apis.rs`), and a read of the service itself (its `gatewayUrl`).
//!
//! Mapping: an APIM service is one load balancer, found by its labels
//! (`azure.subscription`, `azure.resource_group`, `azure.service`, lower-cased) and created
//! by the first PUT of a backend or API in it, at an address of `[proxy] vip_ranges`. A
//! backend is the pool named after the backend id (see `wire.rs` for the fields). A
//! backend's ETag is its pool's. Every write is one control-plane transaction
//! (`change_pools`), which also rewrites the Pool backends that reference a changed Single
//! backend (and, for an API, the gateway listener); a write answers once the data plane
//! serves it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use fulcrum_control::{
    Config, ControlError, EtagScope, IfMatch, PoolChange, PoolSetChange, RequestContext, Versioned,
    Vip, etag, merge_patch,
};
use fulcrum_model::{
    LoadBalancer, LoadBalancerId, LoadBalancerSpec, Member, MemberSpec, Pool, PoolProtocol,
    PoolSpec,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod apis;
mod auth;
mod error;
mod filter;
/// Entry points for `fulcrum_api::fuzzing` (feature `fuzzing`).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
mod policy;
mod wire;

pub use auth::{AzureToken, JwtConfig};
use error::AzureError;
use wire::{BackendKind, BackendProperties, Service};

// The shared pieces (`fulcrum-api-core`), at the paths this crate's modules name them by
// (`crate::body`, `crate::request`, ...). `auth` is this dialect's own: the shared one is
// named in full.
#[cfg(feature = "fuzzing")]
use fulcrum_api_core::fuzzing;
use fulcrum_api_core::{AppState, UNAVAILABLE_RETRY_SECS, body, decode, request};

use crate::request::current_request_id;

/// `[azure]` in `fulcrum.toml`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureConfig {
    /// Static bearer tokens (`[[azure.tokens]] name = "ci" token = "…"`).
    #[serde(default)]
    pub tokens: Vec<AzureToken>,
    /// JWT bearer tokens verified against a key (`[azure.jwt]`).
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
    /// The port each service's gateway listens on, at the service's address (default
    /// 8080): where calls to its APIs go (`gatewayUrl`).
    #[serde(default)]
    pub gateway_port: Option<u16>,
    /// `[proxy] bind_address`, set by `serve`: listeners bind it instead of their load
    /// balancer's address, and `gatewayUrl` says so.
    #[serde(skip)]
    pub bind_address: Option<std::net::IpAddr>,
}

/// The gateway port when `[azure] gateway_port` is not set.
pub const DEFAULT_GATEWAY_PORT: u16 = 8080;

/// The api-versions whose backend contract this dialect speaks (the SDK sends 2024-05-01).
const API_VERSIONS: &[&str] = &[
    "2022-08-01",
    "2023-03-01-preview",
    "2023-05-01-preview",
    "2023-09-01-preview",
    "2024-05-01",
    "2024-06-01-preview",
];

/// Page size of a list without `$top`, and the largest `$top`.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// How long a write waits for the data plane to serve it before answering anyway.
const APPLY_WAIT: Duration = Duration::from_secs(10);

/// Largest request body.
const MAX_BODY: usize = 1 << 20;

#[derive(Clone)]
struct Azure {
    app: AppState,
    auth: Arc<auth::Authenticator>,
    gateway: apis::Gateway,
}

pub fn router(state: AppState, config: &AzureConfig) -> Router {
    let az = Azure {
        app: state,
        auth: Arc::new(auth::Authenticator::new(
            &config.tokens,
            config.jwt.as_ref(),
        )),
        gateway: apis::Gateway {
            port: config.gateway_port.unwrap_or(DEFAULT_GATEWAY_PORT),
            bind_address: config.bind_address,
        },
    };
    Router::new()
        .route("/subscriptions/{*rest}", axum::routing::any(handle))
        .with_state(az)
}

async fn handle(State(az): State<Azure>, req: Request) -> Response {
    // The route is one catch-all: name the operation for the API's metrics.
    let operation = match parse_path(req.uri().path()) {
        Ok(t) => t.resource.route(),
        Err(_) => "/subscriptions/{*rest}",
    };
    let mut resp = match serve(&az, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    };
    resp.extensions_mut()
        .insert(crate::request::Operation(operation));
    resp
}

/// What the path names.
struct Target {
    service: Service,
    resource: Resource,
}

/// The resource under the service a path names.
#[derive(Debug, PartialEq, Eq)]
enum Resource {
    Service,
    Backends,
    Backend(String),
    Apis,
    Api(String),
    /// `.../apis/{apiId}/policies`
    Policies(String),
    /// `.../apis/{apiId}/policies/{policyId}`
    Policy(String, String),
}

impl Resource {
    /// The route template, for the API's metrics.
    fn route(&self) -> &'static str {
        const S: &str = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.ApiManagement/service/{serviceName}";
        match self {
            Resource::Service => S,
            Resource::Backends => concat!(
                "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.ApiManagement/service/{serviceName}",
                "/backends"
            ),
            Resource::Backend(_) => concat!(
                "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.ApiManagement/service/{serviceName}",
                "/backends/{backendId}"
            ),
            Resource::Apis => concat!(
                "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.ApiManagement/service/{serviceName}",
                "/apis"
            ),
            Resource::Api(_) => concat!(
                "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.ApiManagement/service/{serviceName}",
                "/apis/{apiId}"
            ),
            Resource::Policies(_) => concat!(
                "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.ApiManagement/service/{serviceName}",
                "/apis/{apiId}/policies"
            ),
            Resource::Policy(..) => concat!(
                "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.ApiManagement/service/{serviceName}",
                "/apis/{apiId}/policies/{policyId}"
            ),
        }
    }

    /// The ARM resource type an authorization failure names.
    fn arm_type(&self) -> &'static str {
        match self {
            Resource::Service => "Microsoft.ApiManagement/service",
            Resource::Backends | Resource::Backend(_) => "Microsoft.ApiManagement/service/backends",
            Resource::Apis | Resource::Api(_) => "Microsoft.ApiManagement/service/apis",
            Resource::Policies(_) | Resource::Policy(..) => {
                "Microsoft.ApiManagement/service/apis/policies"
            }
        }
    }
}

async fn serve(az: &Azure, req: Request) -> Result<Response, AzureError> {
    let client = fulcrum_api_core::auth::client_ip(req.extensions());
    if let Some(wait) = az
        .app
        .auth_failures
        .throttled(client, std::time::Instant::now())
    {
        return Err(AzureError::auth_throttled(wait));
    }
    let (parts, body) = req.into_parts();
    // The bearer token is checked from the headers, before any byte of the body is read:
    // an unauthenticated caller cannot make us buffer one.
    let caller = az.auth.authenticate(
        parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )?;
    az.app
        .limiter
        .check(&caller.principal)
        .map_err(|wait| ControlError::RateLimited { retry_after: wait })?;
    // An authenticated caller's body is read before anything else can refuse the request:
    // a response sent over an unread body makes the server close the connection, and a
    // client reusing it (the SDK keeps connections alive) would see its next request fail.
    let body = crate::body::read(body, MAX_BODY).await?;
    let query = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .map_err(|e| AzureError::bad_request("InvalidQueryParameter", e.body_text()))?;
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let api_version = check_api_version(param("api-version"))?;
    let target = parse_path(parts.uri.path())?;
    // A token limited to some subscriptions is refused any other, as ARM refuses a
    // principal without a role assignment there; reads and writes beneath are scoped too.
    if !caller.admits_subscription(&target.service.subscription) {
        return Err(AzureError::authorization_failed(
            &caller.principal,
            &parts.method,
            target.resource.arm_type(),
            &target.service.arm_id(),
        ));
    }
    let if_match = header(&parts.headers, "if-match")?;
    let ctx = RequestContext {
        request_id: current_request_id(),
        principal: caller.principal.clone(),
        scope: caller.scope(),
        front_door: "azure",
        retry_token: None,
        if_match: if_match.clone().map(|value| IfMatch {
            scope: EtagScope::Resource,
            value,
        }),
        lock_override: false,
        // API Management has no provisioning state on backends: ETags order the changes.
        one_change_at_a_time: false,
        ..Default::default()
    };
    let Target { service, resource } = target;
    let id = match resource {
        Resource::Backend(id) => id,
        Resource::Backends => {
            return list_backends(
                az,
                &service,
                &parts,
                ListQuery {
                    filter: param("$filter"),
                    top: param("$top"),
                    skip: param("$skip"),
                    api_version,
                },
            );
        }
        other => {
            // APIs, policies and the service: their If-Match is checked against their own
            // ETags, in the change.
            let plain = RequestContext {
                if_match: None,
                ..ctx
            };
            return serve_apis(
                az,
                &plain,
                if_match.as_deref(),
                &service,
                other,
                &parts,
                &body,
                &query,
            )
            .await;
        }
    };
    match parts.method {
        Method::GET => get(az, &service, &id, false),
        Method::HEAD => get(az, &service, &id, true),
        Method::PUT => {
            let body = parse_json(&parts.headers, &body)?;
            write(az, &ctx, &service, &id, Write::Put(properties_of(body)?)).await
        }
        Method::PATCH => {
            if if_match.is_none() {
                return Err(AzureError::invalid(
                    "If-Match",
                    "The If-Match header is required: send the backend's ETag, or * to update unconditionally.",
                ));
            }
            let body = parse_json(&parts.headers, &body)?;
            write(az, &ctx, &service, &id, Write::Patch(properties_of(body)?)).await
        }
        Method::DELETE => delete(az, &ctx, &service, &id).await,
        ref m => Err(method_not_allowed(m)),
    }
}

/// The APIs, their policies and the service.
#[allow(clippy::too_many_arguments)]
async fn serve_apis(
    az: &Azure,
    ctx: &RequestContext,
    if_match: Option<&str>,
    service: &Service,
    resource: Resource,
    parts: &http::request::Parts,
    body: &[u8],
    query: &[(String, String)],
) -> Result<Response, AzureError> {
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let m = &parts.method;
    let need_if_match = || {
        if if_match.is_none() {
            return Err(AzureError::invalid(
                "If-Match",
                "The If-Match header is required: send the entity's ETag, or * to change it unconditionally.",
            ));
        }
        Ok(())
    };
    match (resource, m.clone()) {
        (Resource::Service, Method::GET) => apis::get_service(az, service),
        (Resource::Apis, Method::GET) => {
            apis::list_apis(az, service, param("$top"), param("$skip"))
        }
        (Resource::Api(id), Method::GET) => apis::get_api(az, service, &id, false),
        (Resource::Api(id), Method::HEAD) => apis::get_api(az, service, &id, true),
        (Resource::Api(id), Method::PUT) => {
            let props = properties_of(parse_json(&parts.headers, body)?)?;
            let p = apis::api_properties(props)?;
            apis::write_api(
                az,
                ctx,
                if_match,
                service,
                &id,
                apis::ApiWrite::Put(Box::new(p)),
            )
            .await
        }
        (Resource::Api(id), Method::PATCH) => {
            need_if_match()?;
            let props = properties_of(parse_json(&parts.headers, body)?)?;
            // Decoded now for its errors; merged into the current API in the change.
            apis::api_properties(props.clone())?;
            apis::write_api(
                az,
                ctx,
                if_match,
                service,
                &id,
                apis::ApiWrite::Patch(props),
            )
            .await
        }
        (Resource::Api(id), Method::DELETE) => {
            need_if_match()?;
            apis::write_api(az, ctx, if_match, service, &id, apis::ApiWrite::Delete).await
        }
        (Resource::Policies(id), Method::GET) => apis::list_policies(az, service, &id),
        (Resource::Policy(id, pid), Method::GET | Method::HEAD) => {
            apis::check_policy_id(&pid)?;
            apis::get_policy(az, service, &id, param("format"), *m == Method::HEAD)
        }
        (Resource::Policy(id, pid), Method::PUT) => {
            apis::check_policy_id(&pid)?;
            let props = properties_of(parse_json(&parts.headers, body)?)?;
            let body: apis::PolicyBody = serde_path_to_error::deserialize(props).map_err(|e| {
                let field = format!("properties.{}", e.path());
                AzureError::invalid(
                    field.clone(),
                    format!("{field}: {}", crate::decode::describe(&e.into_inner())),
                )
            })?;
            let (text, format) = apis::check_policy(&body)?;
            apis::write_policy(az, ctx, if_match, service, &id, Some((text, format))).await
        }
        (Resource::Policy(id, pid), Method::DELETE) => {
            apis::check_policy_id(&pid)?;
            need_if_match()?;
            apis::write_policy(az, ctx, if_match, service, &id, None).await
        }
        (_, m) => Err(method_not_allowed(&m)),
    }
}

fn list_backends(
    az: &Azure,
    service: &Service,
    parts: &http::request::Parts,
    page: ListQuery<'_>,
) -> Result<Response, AzureError> {
    {
        if parts.method != Method::GET {
            return Err(method_not_allowed(&parts.method));
        }
        let over_tls = parts
            .extensions
            .get::<fulcrum_api_core::ServedOverTls>()
            .is_some();
        list(
            az,
            service,
            &page,
            &parts.headers,
            parts.uri.path(),
            over_tls,
        )
    }
}

fn method_not_allowed(m: &Method) -> AzureError {
    AzureError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("The method {m} is not supported here."),
    )
}

fn header(headers: &HeaderMap, name: &str) -> Result<Option<String>, AzureError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str().map(str::to_owned).map_err(|_| {
                AzureError::invalid(name, format!("The {name} header is not valid text."))
            })
        })
        .transpose()
}

fn check_api_version(v: Option<&str>) -> Result<&str, AzureError> {
    match v {
        None | Some("") => Err(AzureError::bad_request(
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )),
        Some(v) if API_VERSIONS.contains(&v) => Ok(v),
        Some(v) => Err(AzureError::bad_request(
            "InvalidApiVersionParameter",
            format!(
                "The api-version '{v}' is invalid. The supported versions are '{}'.",
                API_VERSIONS.join(",")
            ),
        )),
    }
}

/// Parses and validates `/subscriptions/{sub}/resourceGroups/{rg}/providers/
/// Microsoft.ApiManagement/service/{svc}[/backends[/{id}] | /apis[/{id}[/policies[/{id}]]]]`.
/// Literal segments compare case-insensitively, as ARM's do; names are percent-decoded
/// per segment.
fn parse_path(path: &str) -> Result<Target, AzureError> {
    let no_route = || {
        AzureError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!(
                "No HTTP resource was found that matches the request URI {path:?}; this endpoint serves .../providers/Microsoft.ApiManagement/service/{{serviceName}}, its /backends, and its /apis with their /policies."
            ),
        )
    };
    let mut raw: Vec<&str> = path.split('/').skip(1).collect();
    if raw.last() == Some(&"") {
        raw.pop();
    }
    let literals = [
        (0, "subscriptions"),
        (2, "resourceGroups"),
        (4, "providers"),
        (5, "Microsoft.ApiManagement"),
        (6, "service"),
    ];
    let kind = raw.get(8).map(|k| k.to_ascii_lowercase());
    let shape_ok = match (kind.as_deref(), raw.len()) {
        (None, 8) => true,
        (Some("backends"), 9 | 10) => true,
        (Some("apis"), 9 | 10) => true,
        (Some("apis"), 11 | 12) => raw[10].eq_ignore_ascii_case("policies"),
        _ => false,
    };
    if !shape_ok
        || literals
            .iter()
            .any(|(i, want)| !raw[*i].eq_ignore_ascii_case(want))
    {
        return Err(no_route());
    }
    let seg = |i: usize, name: &str| -> Result<String, AzureError> {
        percent_encoding::percent_decode_str(raw[i])
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| AzureError::invalid(name, format!("{name} is not valid UTF-8")))
    };
    let subscription = seg(1, "subscriptionId")?;
    if subscription.len() != 36 || uuid::Uuid::parse_str(&subscription).is_err() {
        return Err(AzureError::bad_request(
            "InvalidSubscriptionId",
            format!(
                "The provided subscription identifier '{subscription}' is malformed or invalid; it must be a UUID."
            ),
        ));
    }
    let resource_group = seg(3, "resourceGroupName")?;
    let rg_ok = (1..=90).contains(&resource_group.chars().count())
        && !resource_group.ends_with('.')
        && resource_group
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')'));
    if !rg_ok {
        return Err(AzureError::invalid(
            "resourceGroupName",
            format!(
                "Resource group name '{resource_group}' is invalid: 1 to 90 letters, digits, '-', '_', '.', '(' or ')', not ending in '.'."
            ),
        ));
    }
    let name = seg(7, "serviceName")?;
    if !is_service_name(&name) {
        return Err(AzureError::invalid(
            "serviceName",
            format!(
                "Service name '{name}' must match ^[a-zA-Z](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?$ (1 to 50 characters)."
            ),
        ));
    }
    let id = |name: &str, what: &str, forbidden: &str| -> Result<String, AzureError> {
        let id = seg(9, name)?;
        let ok = (1..=80).contains(&id.chars().count())
            && !id.chars().any(|c| c.is_control() || forbidden.contains(c));
        if !ok {
            let listed: Vec<String> = forbidden.chars().map(String::from).collect();
            return Err(AzureError::invalid(
                name,
                format!(
                    "{what} id '{id}' is invalid: 1 to 80 characters, none of {} or control characters.",
                    listed.join(" ")
                ),
            ));
        }
        Ok(id)
    };
    let resource = match (kind.as_deref(), raw.len()) {
        (None, _) => Resource::Service,
        (Some("backends"), 9) => Resource::Backends,
        (Some("backends"), _) => Resource::Backend(id("backendId", "Backend", "*#&+:<>?/\\%")?),
        (Some(_), 9) => Resource::Apis,
        // `;rev=n` would name a revision: fulcrum keeps none.
        (Some(_), n) => {
            let api = id("apiId", "API", "*#&+:<>?/\\%;")?;
            match n {
                10 => Resource::Api(api),
                11 => Resource::Policies(api),
                _ => Resource::Policy(api, seg(11, "policyId")?),
            }
        }
    };
    Ok(Target {
        service: Service {
            subscription,
            resource_group,
            name,
        },
        resource,
    })
}

fn is_service_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 50
        && b[0].is_ascii_alphabetic()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

fn parse_json(headers: &HeaderMap, bytes: &[u8]) -> Result<Value, AzureError> {
    if let Some(ct) = headers.get(http::header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default();
        if !ct.contains("json") {
            return Err(AzureError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                format!("The content type '{ct}' is not supported; send application/json."),
            ));
        }
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(AzureError::bad_request(
            "InvalidRequestContent",
            "The request body is empty; expected a JSON object.",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        AzureError::bad_request(
            "InvalidRequestContent",
            format!("The request content is not valid JSON: {e}"),
        )
    })
}

/// The `properties` object of a body (`id`, `name` and `type` are read-only and ignored).
fn properties_of(body: Value) -> Result<Value, AzureError> {
    let Value::Object(mut top) = body else {
        return Err(AzureError::bad_request(
            "InvalidRequestContent",
            "The request body must be a JSON object.",
        ));
    };
    match top.remove("properties") {
        None | Some(Value::Null) => Ok(Value::Object(Default::default())),
        Some(v @ Value::Object(_)) => Ok(v),
        Some(_) => Err(AzureError::invalid(
            "properties",
            "properties must be a JSON object",
        )),
    }
}

fn decode_properties(v: Value) -> Result<BackendProperties, ControlError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "properties".to_owned()
        } else {
            format!("properties.{path}")
        };
        let what = crate::decode::describe(&e.into_inner());
        ControlError::invalid(field.clone(), format!("{field}: {what}"))
    })
}

// ---- reading the model ---------------------------------------------------------------

/// The load balancer of an APIM service, if one was created.
fn service_lb<'a>(cfg: &'a Config, service: &Service) -> Option<&'a Versioned<LoadBalancer>> {
    let want = service.labels();
    cfg.loadbalancers.values().find(|lb| {
        want.iter()
            .all(|(k, v)| lb.value.spec.labels.get(*k) == Some(v))
    })
}

/// The id a service's load balancer gets: derived from the service, so two first PUTs
/// racing for the same service create one load balancer, not two.
fn service_lb_id(service: &Service) -> LoadBalancerId {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for (_, v) in service.labels() {
        h.update(v.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    LoadBalancerId(
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string(),
    )
}

fn new_service_lb(service: &Service) -> LoadBalancerSpec {
    let mut spec = LoadBalancerSpec::new(format!(
        "apim {}/{}",
        service.resource_group.to_lowercase(),
        service.name.to_ascii_lowercase()
    ));
    for (k, v) in service.labels() {
        spec.labels.insert(k.to_owned(), v);
    }
    spec
}

/// A backend as the model holds it.
struct BackendView<'a> {
    lb: &'a Versioned<LoadBalancer>,
    pool: &'a Versioned<Pool>,
    members: Vec<&'a Member>,
    labels: BTreeMap<String, String>,
}

impl BackendView<'_> {
    fn kind(&self) -> BackendKind {
        BackendKind::from_label(self.labels.get("type"))
    }
}

fn find_backend<'a>(
    cfg: &'a Config,
    lb: &'a Versioned<LoadBalancer>,
    id: &str,
) -> Option<BackendView<'a>> {
    let labels = wire::backend_labels(&lb.value.spec.labels, id);
    labels.get("type")?;
    let pool = cfg
        .pools_of(&lb.value.id)
        .find(|p| p.value.spec.name == id)?;
    Some(BackendView {
        lb,
        pool,
        members: cfg.members_of(&pool.value.id).map(|m| &m.value).collect(),
        labels,
    })
}

/// Pool backends that reference backend `id`.
fn dependents_of<'a>(
    cfg: &'a Config,
    lb: &'a Versioned<LoadBalancer>,
    id: &str,
) -> Vec<BackendView<'a>> {
    wire::backend_ids(&lb.value.spec.labels)
        .filter(|other| *other != id)
        .filter_map(|other| find_backend(cfg, lb, other))
        .filter(|b| b.kind() == BackendKind::Pool && b.members.iter().any(|m| m.spec.name == id))
        .collect()
}

#[derive(Serialize)]
struct BackendContract {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    name: String,
    properties: BackendProperties,
}

fn contract(service: &Service, id: &str, b: &BackendView<'_>, masked: bool) -> BackendContract {
    BackendContract {
        id: service.backend_arm_id(id),
        kind: wire::RESOURCE_TYPE,
        name: id.to_owned(),
        properties: wire::render(service, &b.pool.value, &b.members, &b.labels, masked),
    }
}

fn not_found(service: &Service, id: &str) -> AzureError {
    AzureError::not_found(format!(
        "Backend '{id}' was not found in service '{}'.",
        service.name
    ))
}

/// A backend response: the contract with secrets masked, its ETag, and where it lives in
/// the native API (`x-fulcrum-loadbalancer-id`, `x-fulcrum-pool-id`) so a user can bind a
/// listener to it.
fn backend_response(
    status: StatusCode,
    service: &Service,
    id: &str,
    b: &BackendView<'_>,
    head: bool,
) -> Response {
    let mut resp = if head {
        status.into_response()
    } else {
        (status, axum::Json(contract(service, id, b, true))).into_response()
    };
    let h = resp.headers_mut();
    let pairs = [
        ("etag", format!("\"{}\"", etag(b.pool.mod_revision))),
        ("x-ms-request-id", current_request_id()),
        ("x-fulcrum-loadbalancer-id", b.lb.value.id.to_string()),
        ("x-fulcrum-pool-id", b.pool.value.id.to_string()),
    ];
    for (name, value) in pairs {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    resp
}

// ---- operations ----------------------------------------------------------------------

fn get(az: &Azure, service: &Service, id: &str, head: bool) -> Result<Response, AzureError> {
    let cfg = az.app.control.view();
    let b = service_lb(&cfg, service)
        .and_then(|lb| find_backend(&cfg, lb, id))
        .ok_or_else(|| not_found(service, id))?;
    Ok(backend_response(StatusCode::OK, service, id, &b, head))
}

struct ListQuery<'a> {
    filter: Option<&'a str>,
    top: Option<&'a str>,
    skip: Option<&'a str>,
    api_version: &'a str,
}

#[derive(Serialize)]
struct ListPage {
    value: Vec<BackendContract>,
    count: usize,
    #[serde(rename = "nextLink", skip_serializing_if = "Option::is_none")]
    next_link: Option<String>,
}

fn list(
    az: &Azure,
    service: &Service,
    q: &ListQuery<'_>,
    headers: &HeaderMap,
    path: &str,
    over_tls: bool,
) -> Result<Response, AzureError> {
    let number = |name: &str,
                  v: Option<&str>,
                  min: usize,
                  max: usize|
     -> Result<Option<usize>, AzureError> {
        v.map(|s| {
            s.parse::<usize>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| {
                    AzureError::invalid(
                        name,
                        format!("{name} must be an integer between {min} and {max} (got {s:?})"),
                    )
                })
        })
        .transpose()
    };
    let top = number("$top", q.top, 1, MAX_PAGE)?;
    let skip = number("$skip", q.skip, 0, usize::MAX)?.unwrap_or(0);
    let filter = q
        .filter
        .map(|f| {
            filter::Filter::parse(f)
                .map_err(|m| AzureError::invalid("$filter", format!("$filter is invalid: {m}")))
        })
        .transpose()?;
    let cfg = az.app.control.view();
    let mut matched = Vec::new();
    if let Some(lb) = service_lb(&cfg, service) {
        let mut ids: Vec<&str> = wire::backend_ids(&lb.value.spec.labels).collect();
        ids.sort_unstable();
        for id in ids {
            let Some(b) = find_backend(&cfg, lb, id) else {
                continue;
            };
            let c = contract(service, id, &b, true);
            let keep = filter.as_ref().is_none_or(|f| {
                f.matches(|field| match field {
                    filter::Field::Name => c.name.clone(),
                    filter::Field::Title => c.properties.title.clone().unwrap_or_default(),
                    filter::Field::Url => c.properties.url.clone().unwrap_or_default(),
                })
            });
            if keep {
                matched.push(c);
            }
        }
    }
    let count = matched.len();
    let page_size = top.unwrap_or(DEFAULT_PAGE);
    let value: Vec<BackendContract> = matched.into_iter().skip(skip).take(page_size).collect();
    let next_skip = skip.saturating_add(page_size);
    let next_link = (next_skip < count).then(|| {
        use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
        let mut link = format!(
            "{path}?api-version={}&%24top={page_size}&%24skip={next_skip}",
            q.api_version
        );
        if let Some(f) = q.filter {
            link.push_str(&format!(
                "&%24filter={}",
                utf8_percent_encode(f, NON_ALPHANUMERIC)
            ));
        }
        // Absolute, back at this server (as the client reached it), when the Host is known.
        match headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
        {
            Some(host) => {
                let forwarded_https = headers
                    .get("x-forwarded-proto")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|p| p == "https");
                let scheme = match over_tls || forwarded_https {
                    true => "https",
                    false => "http",
                };
                format!("{scheme}://{host}{link}")
            }
            None => link,
        }
    });
    let mut resp = axum::Json(ListPage {
        value,
        count,
        next_link,
    })
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&current_request_id()) {
        resp.headers_mut().insert("x-ms-request-id", v);
    }
    Ok(resp)
}

/// A PUT (the whole backend) or PATCH (merged into the current one, RFC 7396).
#[derive(Serialize)]
enum Write {
    Put(Value),
    Patch(Value),
}

async fn write(
    az: &Azure,
    ctx: &RequestContext,
    service: &Service,
    id: &str,
    w: Write,
) -> Result<Response, AzureError> {
    let is_put = matches!(w, Write::Put(_));
    let operation = if is_put {
        "PutBackend"
    } else {
        "UpdateBackend"
    };
    let input = (service.arm_id().to_lowercase(), id, &w);
    let outcome = az
        .app
        .control
        .change_pools(ctx, operation, &input, |cfg| {
            plan_write(cfg, service, id, &w)
        })
        .await
        .map_err(|e| match e {
            ControlError::NotFound { .. } => not_found(service, id),
            e => e.into(),
        })?;
    az.app
        .control
        .wait_applied(outcome.revision, APPLY_WAIT)
        .await;
    let cfg = az.app.control.view();
    let b = service_lb(&cfg, service)
        .and_then(|lb| find_backend(&cfg, lb, id))
        .ok_or_else(|| not_found(service, id))?;
    let status = if is_put && b.pool.create_revision == outcome.revision {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(backend_response(status, service, id, &b, false))
}

/// The whole change a PUT or PATCH of backend `id` makes, against one view.
fn plan_write(
    cfg: &Config,
    service: &Service,
    id: &str,
    w: &Write,
) -> Result<PoolSetChange, ControlError> {
    let lb = service_lb(cfg, service);
    let current = lb.and_then(|lb| find_backend(cfg, lb, id));
    // The current backend in Azure's shape, secrets included: what a PATCH merges into
    // and where masked secrets written back come from.
    let current_props = current
        .as_ref()
        .map(|cur| wire::render(service, &cur.pool.value, &cur.members, &cur.labels, false));
    let props = match w {
        Write::Put(p) => p.clone(),
        Write::Patch(p) => {
            let cur = current_props
                .as_ref()
                .ok_or_else(|| ControlError::not_found(fulcrum_model::ResourceKind::Pool, id))?;
            let mut doc =
                serde_json::to_value(cur).map_err(|e| ControlError::Internal(e.to_string()))?;
            merge_patch(&mut doc, p);
            doc
        }
    };
    let mut props = decode_properties(props)?;
    wire::unmask(&mut props, current_props.as_ref())?;
    let t = wire::translate(&props, service, id)?;

    // The members: a Single backend's URL, or the backends a Pool references.
    let mut members = Vec::new();
    match t.kind {
        BackendKind::Single => {
            if let Some((host, port)) = &t.endpoint {
                let mut m = MemberSpec::new(host.clone(), *port);
                m.name = id.to_owned();
                members.push(m);
            }
        }
        BackendKind::Pool => {
            for (i, s) in t.services.iter().enumerate() {
                let field = format!("properties.pool.services[{i}].id");
                let referenced = lb.and_then(|lb| find_backend(cfg, lb, &s.backend));
                let Some(r) = referenced else {
                    return Err(ControlError::invalid(
                        field,
                        format!(
                            "backend '{}' does not exist in service '{}'",
                            s.backend, service.name
                        ),
                    ));
                };
                if r.kind() != BackendKind::Single {
                    return Err(ControlError::invalid(
                        field,
                        format!(
                            "backend '{}' is a Pool backend; a pool's services must be Single backends",
                            s.backend
                        ),
                    ));
                }
                let Some(first) = r.members.first() else {
                    return Err(ControlError::invalid(
                        field,
                        format!("backend '{}' has no URL", s.backend),
                    ));
                };
                members.push(service_member(
                    &s.backend,
                    &first.spec,
                    &r.pool.value.spec.upstream,
                    s.priority,
                    s.weight,
                ));
            }
        }
    }

    let mut pools = Vec::new();
    let mut spec = match &current {
        // Native-only pool settings (algorithm, slow start, …) survive Azure writes.
        Some(cur) => cur.pool.value.spec.clone(),
        None => PoolSpec::new(id, PoolProtocol::Http),
    };
    spec.name = id.to_owned();
    spec.description = t.description.clone();
    spec.upstream = t.upstream.clone();
    pools.push(PoolChange::Put {
        spec: Box::new(spec),
        members,
    });

    // Pool backends that reference this one follow it in the same transaction.
    let dependents = lb.map(|lb| dependents_of(cfg, lb, id)).unwrap_or_default();
    if !dependents.is_empty() && t.kind != BackendKind::Single {
        return Err(ControlError::invalid(
            "properties.type",
            format!(
                "backend '{id}' is a service of Pool backend(s) {}; it must stay a Single backend",
                names(&dependents)
            ),
        ));
    }
    for d in &dependents {
        let members = d
            .members
            .iter()
            .map(|m| match &t.endpoint {
                Some((host, port)) if m.spec.name == id => {
                    let mut endpoint = MemberSpec::new(host.clone(), *port);
                    endpoint.name = id.to_owned();
                    service_member(id, &endpoint, &t.upstream, m.spec.priority, m.spec.weight)
                }
                _ => m.spec.clone(),
            })
            .collect();
        pools.push(PoolChange::Put {
            spec: Box::new(d.pool.value.spec.clone()),
            members,
        });
    }

    let mut lb_spec = match lb {
        Some(lb) => lb.value.spec.clone(),
        None => new_service_lb(service),
    };
    wire::set_backend_labels(&mut lb_spec.labels, id, &t.labels);
    Ok(PoolSetChange {
        loadbalancer: lb
            .map(|l| l.value.id.clone())
            .unwrap_or_else(|| service_lb_id(service)),
        loadbalancer_spec: Some(lb_spec),
        pools,
        target_pool: id.to_owned(),
        // A new service gets an address this node can bind, never 0.0.0.0.
        vip: Vip::Allocate { subnet: None },
        listener: None,
    })
}

/// A Pool backend's member for one referenced backend: its endpoint and settings, with
/// the pool's priority and weight for it.
fn service_member(
    backend: &str,
    endpoint: &MemberSpec,
    upstream: &fulcrum_model::UpstreamSettings,
    priority: u8,
    weight: u32,
) -> MemberSpec {
    let mut m = MemberSpec::new(endpoint.address.clone(), endpoint.port);
    m.name = backend.to_owned();
    m.priority = priority;
    m.weight = weight;
    m.upstream = Some(Box::new(upstream.clone()));
    m
}

fn names(backends: &[BackendView<'_>]) -> String {
    backends
        .iter()
        .map(|b| format!("'{}'", b.pool.value.spec.name))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn delete(
    az: &Azure,
    ctx: &RequestContext,
    service: &Service,
    id: &str,
) -> Result<Response, AzureError> {
    let no_content = || {
        let mut resp = StatusCode::NO_CONTENT.into_response();
        if let Ok(v) = HeaderValue::from_str(&current_request_id()) {
            resp.headers_mut().insert("x-ms-request-id", v);
        }
        resp
    };
    let input = (service.arm_id().to_lowercase(), id, "DeleteBackend");
    let result = az
        .app
        .control
        .change_pools(ctx, "DeleteBackend", &input, |cfg| {
            let lb = service_lb(cfg, service).ok_or_else(|| {
                ControlError::not_found(fulcrum_model::ResourceKind::Pool, id)
            })?;
            find_backend(cfg, lb, id).ok_or_else(|| {
                ControlError::not_found(fulcrum_model::ResourceKind::Pool, id)
            })?;
            let dependents = dependents_of(cfg, lb, id);
            if !dependents.is_empty() {
                return Err(ControlError::Conflict(format!(
                    "Backend '{id}' is referenced by Pool backend(s) {}; remove it from their pool.services first.",
                    names(&dependents)
                )));
            }
            // As API Management refuses to delete what a policy still names.
            let policies = apis::policies_naming(&lb.value.spec.labels, id);
            if !policies.is_empty() {
                return Err(ControlError::invalid(
                    "backendId",
                    format!(
                        "The Backend '{id}' is used by the following entities: {}; change or delete those policies (or their APIs) first.",
                        policies.join(", ")
                    ),
                ));
            }
            if let Some(b) = find_backend(cfg, lb, id)
                && let Some(l) = cfg.listeners_using(&b.pool.value.id).next()
            {
                let name = match l.value.spec.name.as_str() {
                    "" => String::new(),
                    n => format!(" '{n}'"),
                };
                return Err(ControlError::Conflict(format!(
                    "Backend '{id}' receives traffic from listener{name} on port {} (bound to it through fulcrum's native API); delete that listener or point it elsewhere first.",
                    l.value.spec.port
                )));
            }
            let mut spec = lb.value.spec.clone();
            wire::set_backend_labels(&mut spec.labels, id, &BTreeMap::new());
            Ok(PoolSetChange {
                loadbalancer: lb.value.id.clone(),
                loadbalancer_spec: Some(spec),
                pools: vec![PoolChange::Delete { name: id.to_owned() }],
                target_pool: id.to_owned(),
                vip: Vip::AsGiven,
                listener: None,
            })
        })
        .await;
    match result {
        Ok(outcome) => {
            az.app
                .control
                .wait_applied(outcome.revision, APPLY_WAIT)
                .await;
            let mut resp = StatusCode::OK.into_response();
            if let Ok(v) = HeaderValue::from_str(&current_request_id()) {
                resp.headers_mut().insert("x-ms-request-id", v);
            }
            Ok(resp)
        }
        // Deleting what is not there succeeds with 204, as ARM's DELETE does.
        Err(ControlError::NotFound { .. }) => Ok(no_content()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const BASE: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.ApiManagement/service/apim1/backends";

    fn code(path: &str) -> &'static str {
        match parse_path(path) {
            Ok(_) => "ok",
            Err(e) => e.code,
        }
    }

    #[test]
    fn paths_are_parsed_and_every_name_rule_applies() {
        let t = parse_path(&format!("{BASE}/a%20b")).unwrap();
        assert_eq!(t.resource, Resource::Backend("a b".into()));
        assert_eq!(t.service.resource_group, "rg1");
        assert_eq!(
            parse_path(&format!("{BASE}/")).unwrap().resource,
            Resource::Backends
        );
        let svc = BASE.strip_suffix("/backends").unwrap();
        assert_eq!(parse_path(svc).unwrap().resource, Resource::Service);
        assert_eq!(
            parse_path(&format!("{svc}/apis")).unwrap().resource,
            Resource::Apis
        );
        assert_eq!(
            parse_path(&format!("{svc}/APIs/orders/Policies/policy"))
                .unwrap()
                .resource,
            Resource::Policy("orders".into(), "policy".into())
        );
        assert_eq!(
            parse_path(&format!("{svc}/apis/orders/policies"))
                .unwrap()
                .resource,
            Resource::Policies("orders".into())
        );
        assert_eq!(code(&format!("{svc}/apis/orders;rev=2")), "ValidationError");
        assert_eq!(code(&format!("{svc}/apis/orders/operations")), "NotFound");
        assert_eq!(
            code(&BASE.to_lowercase()),
            "ok",
            "literal segments ignore case"
        );
        assert_eq!(
            code(&BASE.replace("00000000-0000-0000-0000-000000000001", "not-a-uuid")),
            "InvalidSubscriptionId"
        );
        assert_eq!(code(&BASE.replace("rg1", "rg%21")), "ValidationError");
        assert_eq!(code(&BASE.replace("rg1", "rg.")), "ValidationError");
        assert_eq!(code(&BASE.replace("apim1", "1apim")), "ValidationError");
        assert_eq!(code(&BASE.replace("apim1", "apim-")), "ValidationError");
        assert_eq!(code(&format!("{BASE}/a%2Fb")), "ValidationError");
        assert_eq!(
            code(&format!("{BASE}/{}", "x".repeat(81))),
            "ValidationError"
        );
        assert_eq!(code(&BASE.replace("backends", "products")), "NotFound");
        assert_eq!(code(&format!("{BASE}/a/b")), "NotFound");
    }

    #[test]
    fn api_version_is_required_and_known() {
        assert_eq!(
            check_api_version(None).unwrap_err().code,
            "MissingApiVersionParameter"
        );
        assert_eq!(
            check_api_version(Some("2001-01-01")).unwrap_err().code,
            "InvalidApiVersionParameter"
        );
        assert!(check_api_version(Some("2024-05-01")).is_ok());
    }

    #[test]
    fn a_service_has_one_load_balancer_id_whatever_the_case_of_its_names() {
        let a = Service {
            subscription: "00000000-0000-0000-0000-00000000000A".into(),
            resource_group: "RG1".into(),
            name: "Apim1".into(),
        };
        let b = Service {
            subscription: "00000000-0000-0000-0000-00000000000a".into(),
            resource_group: "rg1".into(),
            name: "apim1".into(),
        };
        assert_eq!(service_lb_id(&a), service_lb_id(&b));
        assert_eq!(new_service_lb(&a).labels, new_service_lb(&b).labels);
    }
}

#[cfg(test)]
mod router_tests {
    #![allow(clippy::unwrap_used)]

    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    const ITEM: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.ApiManagement/service/apim1/backends/one?api-version=2024-05-01";

    async fn call(app: &Router, auth: &str) -> (StatusCode, HeaderMap, Value) {
        let req = Request::builder()
            .uri(ITEM)
            .header("authorization", auth)
            .body(Body::empty())
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            serde_json::from_slice(&bytes).unwrap(),
        )
    }

    #[tokio::test]
    async fn unauthenticated_and_throttled_callers_get_arm_errors() {
        let (_dir, control) = fulcrum_control::testing::control().await;
        let config = AzureConfig {
            tokens: vec![AzureToken {
                name: "t".into(),
                token: "tok".into(),
                subscriptions: None,
            }],
            jwt: None,
            gateway_port: None,
            bind_address: None,
        };
        let app =
            fulcrum_api_core::single_front_door(control, 0.001, 1, |state| router(state, &config));
        let (status, headers, body) = call(&app, "Bearer nope").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
        assert!(headers.contains_key("x-ms-request-id"));
        let (status, _, body) = call(&app, "Bearer tok").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], "ResourceNotFound");
        let (status, headers, body) = call(&app, "Bearer tok").await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(body["error"]["code"], "TooManyRequests");
        assert!(headers.contains_key(http::header::RETRY_AFTER));
    }
}
