//! The native REST API under `/v1`.
//!
//! Mutations answer with the resource as it now stands, an `ETag`, and the work request
//! that tracks the change in `X-Work-Request-Id`. `Idempotency-Key` makes a retry safe,
//! `If-Match` makes an update conditional, `X-Lock-Override: true` overrides locks.
//! Updates are JSON merge patches (RFC 7396) of the resource's fields.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use fulcrum_control::{BatchMembers, ControlPlane, Outcome, etag};
use fulcrum_model::{
    CertificateId, CertificateSpec, HealthMonitorId, HealthMonitorSpec, ListenerId, ListenerSpec,
    LoadBalancerId, LoadBalancerSpec, MemberId, MemberSpec, PoolId, PoolSpec, SubnetId, SubnetSpec,
    Vpc, VpcId, VpcSpec, WorkRequest, WorkRequestId,
};
use http::{HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

// The shared pieces (`fulcrum-api-core`), at the paths this crate's modules name them by
// (`crate::auth`, `crate::body`, `crate::request`, ...).
#[cfg(feature = "fuzzing")]
use fulcrum_api_core::fuzzing;
use fulcrum_api_core::{AppState, UNAVAILABLE_RETRY_SECS, auth, body, decode, request};

mod error;
mod extract;
/// Entry points for `fulcrum_api::fuzzing` (feature `fuzzing`).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
mod oci_keys;
mod openapi;
mod stats;
mod views;

use error::{ErrorBody, NativeError};
use extract::{Caller, Ctx, JsonBody, JsonPatch, PathParams, QueryParams};
use stats::*;
use views::*;

type ApiResult = Result<Response, NativeError>;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "fulcrum native API",
        description = "Manage load balancers, listeners, pools, members, health monitors, subnets, VPCs, certificates and OCI API keys. Every change is tracked by a work request.",
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        openapi
            .components
            .get_or_insert_default()
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
    }
}

fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(list_nodes))
        .routes(routes!(get_stats))
        .routes(routes!(list_loadbalancers, create_loadbalancer))
        .routes(routes!(
            get_loadbalancer,
            update_loadbalancer,
            delete_loadbalancer
        ))
        .routes(routes!(list_lb_listeners, create_listener))
        .routes(routes!(list_lb_pools, create_pool))
        .routes(routes!(list_listeners))
        .routes(routes!(get_listener, update_listener, delete_listener))
        .routes(routes!(list_pools))
        .routes(routes!(get_pool, update_pool, delete_pool))
        .routes(routes!(list_members, create_member))
        .routes(routes!(batch_members))
        .routes(routes!(get_member, update_member, delete_member))
        .routes(routes!(list_monitors, create_monitor))
        .routes(routes!(get_monitor, update_monitor, delete_monitor))
        .routes(routes!(list_subnets, create_subnet))
        .routes(routes!(get_subnet, update_subnet, delete_subnet))
        .routes(routes!(apply_document))
        .routes(routes!(list_vpcs, create_vpc))
        .routes(routes!(get_vpc, update_vpc, delete_vpc))
        .routes(routes!(list_certificates, create_certificate))
        .routes(routes!(
            get_certificate,
            update_certificate,
            delete_certificate
        ))
        .routes(routes!(
            oci_keys::list_oci_api_keys,
            oci_keys::create_oci_api_key
        ))
        .routes(routes!(
            oci_keys::get_oci_api_key,
            oci_keys::delete_oci_api_key
        ))
        .routes(routes!(list_work_requests))
        .routes(routes!(get_work_request))
        .routes(routes!(wait_work_request))
}

/// The OpenAPI 3.1 document of the native API, as served at `/v1/openapi.json`.
pub fn openapi_document() -> Value {
    openapi::complete(&with_forbidden(api().split_for_parts().1))
}

/// Every authenticated operation may answer 403: a token's role or scope does not allow it
/// (`auth::Role`, `Scope`). Added once the routes are in the document.
fn with_forbidden(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let forbidden = ResponseBuilder::new()
        .description("The token's role or load balancers do not allow this call")
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    for (path, item) in doc.paths.paths.iter_mut() {
        if path == "/v1/health" {
            continue;
        }
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
        ]
        .into_iter()
        .flatten()
        {
            op.responses
                .responses
                .entry("403".to_owned())
                .or_insert_with(|| forbidden.clone().into());
        }
    }
    doc
}

pub fn router(state: AppState) -> axum::Router {
    let (router, doc) = api().split_for_parts();
    let doc = std::sync::Arc::new(openapi::complete(&with_forbidden(doc)));
    router
        .route(
            "/v1/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .fallback(|| async { NativeError::not_found("no such endpoint") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            extract::require_token,
        ))
        .with_state(state)
}

// ---- shared pieces -------------------------------------------------------------------

/// `?limit=&page_token=`: items come in id order; the token is the last id of a page.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct PageQuery {
    /// At most this many items (1..1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `next_page_token` of the previous page.
    page_token: Option<String>,
    /// Only resources of this load balancer (listeners, pools, monitors, work requests).
    loadbalancer_id: Option<String>,
    /// Only the health monitor of this pool.
    pool_id: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Page<T> {
    items: Vec<T>,
    /// Pass as `page_token` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

fn paginate<T, V>(
    q: &PageQuery,
    items: impl Iterator<Item = T>,
    id: impl Fn(&T) -> String,
    render: impl Fn(T) -> V,
) -> Result<Page<V>, NativeError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(NativeError::invalid(
            "limit",
            format!("limit must be between 1 and 1000 (got {limit})"),
        ));
    }
    let mut selected: Vec<T> = items
        .filter(|t| q.page_token.as_ref().is_none_or(|after| id(t) > *after))
        .take(limit + 1)
        .collect();
    let next_page_token = if selected.len() > limit {
        selected.truncate(limit);
        selected.last().map(&id)
    } else {
        None
    };
    Ok(Page {
        items: selected.into_iter().map(render).collect(),
        next_page_token,
    })
}

fn respond<T: Serialize>(
    status: StatusCode,
    etag_rev: Option<i64>,
    wr: Option<&WorkRequest>,
    body: &T,
) -> Response {
    let mut resp = (status, Json(body)).into_response();
    let headers = resp.headers_mut();
    if let Some(rev) = etag_rev
        && let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", etag(rev)))
    {
        headers.insert(http::header::ETAG, v);
    }
    if let Some(wr) = wr
        && let Ok(v) = HeaderValue::from_str(wr.id.as_str())
    {
        headers.insert("x-work-request-id", v);
    }
    resp
}

fn result_id(outcome: &Outcome) -> Result<String, NativeError> {
    outcome
        .result
        .as_ref()
        .map(|r| r.id.clone())
        .ok_or_else(|| NativeError::not_found("the resource is gone"))
}

/// A load balancer whose resources a path lists must be one the caller sees: an absent
/// one (or another tenant's) is not found, not an empty list.
fn visible_lb(s: &AppState, caller: &Caller, id: &str) -> Result<(), NativeError> {
    let full = s.control.view();
    if caller
        .view(&full)
        .loadbalancers
        .contains_key(&LoadBalancerId(id.to_owned()))
    {
        Ok(())
    } else {
        Err(gone("load balancer", id))
    }
}

fn gone(kind: &str, id: &str) -> NativeError {
    NativeError::not_found(format!("{kind} {id} not found"))
}

/// Answers a deletion: 202 with the work request.
fn accepted(outcome: &Outcome) -> Response {
    respond(
        StatusCode::ACCEPTED,
        None,
        Some(&outcome.work_request),
        &outcome.work_request,
    )
}

fn created_or_ok(outcome: &Outcome, created: bool) -> StatusCode {
    if created && !outcome.replayed {
        StatusCode::CREATED
    } else if created {
        // A replayed creation answers as the first call did.
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

// ---- health --------------------------------------------------------------------------

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    status: &'static str,
    /// The store revision this node's view holds.
    revision: i64,
    /// The store revision this node's data plane serves (also when it started from its
    /// saved snapshot while the store was away).
    applied_revision: i64,
    /// The revision that counts as applied for work requests: in a fleet, the newest every
    /// live node serves; on one node, `applied_revision`.
    fleet_applied_revision: i64,
    /// False while the store cannot be reached: reads show the last state this node knew
    /// (responses carry `x-fulcrum-stale: true`) and changes answer 503.
    store_reachable: bool,
    /// False while the store cannot take writes (the embedded store after a disk error:
    /// changes answer 503 until it recovers by itself); `store_error` says why.
    store_writable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    store_error: Option<String>,
}

/// Liveness and how current this node is. No authentication.
#[utoipa::path(get, path = "/v1/health", tag = "meta", security(()),
    responses((status = 200, body = Health)))]
pub async fn health(State(s): State<AppState>) -> Json<Health> {
    let store_error = s.control.store().check().await.err().map(|e| e.to_string());
    let store_reachable = s.control.store_reachable();
    // Traffic is served either way: a store that is away only stops changes.
    let healthy = store_reachable && store_error.is_none();
    Json(Health {
        status: if healthy { "ok" } else { "degraded" },
        revision: s.control.view().revision,
        applied_revision: s.control.served_revision(),
        fleet_applied_revision: s.control.applied_revision(),
        store_reachable,
        store_writable: store_error.is_none(),
        store_error,
    })
}

/// A fleet node as the fleet sees it.
#[derive(Serialize, utoipa::ToSchema)]
struct NodeView {
    id: String,
    /// `all` or `data-plane`.
    role: String,
    /// The configuration revision its data plane serves.
    applied_revision: i64,
    updated_at: chrono::DateTime<chrono::Utc>,
}

/// The live nodes sharing this configuration (fleet mode; one node has none listed).
#[utoipa::path(get, path = "/v1/nodes", tag = "meta",
    responses((status = 200, body = Page<NodeView>), (status = 401, body = ErrorBody)))]
async fn list_nodes(State(s): State<AppState>) -> Json<Page<NodeView>> {
    let items = s
        .control
        .nodes()
        .into_iter()
        .map(|n| NodeView {
            id: n.id,
            role: n.role,
            applied_revision: n.applied,
            updated_at: n.updated_at,
        })
        .collect();
    Json(Page {
        items,
        next_page_token: None,
    })
}

// ---- load balancers ------------------------------------------------------------------

#[utoipa::path(get, path = "/v1/loadbalancers", tag = "load balancers", params(PageQuery),
    responses((status = 200, body = Page<LoadBalancerView>), (status = 401, body = ErrorBody)))]
async fn list_loadbalancers(
    State(s): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<PageQuery>,
) -> ApiResult {
    let full = s.control.view();
    let cfg = caller.view(&full);
    let page = paginate(
        &q,
        cfg.loadbalancers.values(),
        |v| v.value.id.to_string(),
        |v| lb(&s.control, &cfg, v),
    )?;
    Ok(Json(page).into_response())
}

#[utoipa::path(post, path = "/v1/loadbalancers", tag = "load balancers", request_body = LoadBalancerSpec,
    responses((status = 201, body = LoadBalancerView), (status = 400, body = ErrorBody)))]
async fn create_loadbalancer(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    JsonBody(spec): JsonBody<LoadBalancerSpec>,
) -> ApiResult {
    let outcome = s.control.create_loadbalancer(&ctx, spec).await?;
    render_lb(&s.control, &outcome, created_or_ok(&outcome, true))
}

fn render_lb(cp: &ControlPlane, outcome: &Outcome, status: StatusCode) -> ApiResult {
    let id = LoadBalancerId(result_id(outcome)?);
    let cfg = cp.view();
    let v = cfg
        .loadbalancers
        .get(&id)
        .ok_or_else(|| gone("load balancer", id.as_str()))?;
    Ok(respond(
        status,
        Some(v.mod_revision),
        Some(&outcome.work_request),
        &lb(cp, &cfg, v),
    ))
}

#[utoipa::path(get, path = "/v1/loadbalancers/{id}", tag = "load balancers",
    responses((status = 200, body = LoadBalancerView), (status = 404, body = ErrorBody)))]
async fn get_loadbalancer(
    State(s): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> ApiResult {
    let full = s.control.view();
    let cfg = caller.view(&full);
    let v = cfg
        .loadbalancers
        .get(&LoadBalancerId(id.clone()))
        .ok_or_else(|| gone("load balancer", &id))?;
    Ok(respond(
        StatusCode::OK,
        Some(v.mod_revision),
        None,
        &lb(&s.control, &cfg, v),
    ))
}

#[utoipa::path(patch, path = "/v1/loadbalancers/{id}", tag = "load balancers", request_body = Object,
    responses((status = 200, body = LoadBalancerView), (status = 412, body = ErrorBody)))]
async fn update_loadbalancer(
    State(s): State<AppState>,
    PathParams(id): PathParams<String>,
    Ctx(ctx): Ctx,
    JsonPatch(patch): JsonPatch,
) -> ApiResult {
    let outcome = s
        .control
        .update_loadbalancer(&ctx, &LoadBalancerId(id), &patch)
        .await?;
    render_lb(&s.control, &outcome, StatusCode::OK)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeleteQuery {
    /// Delete everything beneath the load balancer too.
    cascade: Option<bool>,
}

#[utoipa::path(delete, path = "/v1/loadbalancers/{id}", tag = "load balancers", params(DeleteQuery),
    responses((status = 202, body = WorkRequest), (status = 409, body = ErrorBody)))]
async fn delete_loadbalancer(
    State(s): State<AppState>,
    PathParams(id): PathParams<String>,
    Ctx(ctx): Ctx,
    QueryParams(q): QueryParams<DeleteQuery>,
) -> ApiResult {
    let outcome = s
        .control
        .delete_loadbalancer(&ctx, &LoadBalancerId(id), q.cascade.unwrap_or(false))
        .await?;
    Ok(accepted(&outcome))
}

// ---- listeners -----------------------------------------------------------------------

#[utoipa::path(get, path = "/v1/loadbalancers/{id}/listeners", tag = "listeners", params(PageQuery),
    responses((status = 200, body = Page<ListenerView>)))]
async fn list_lb_listeners(
    State(s): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    QueryParams(mut q): QueryParams<PageQuery>,
) -> ApiResult {
    visible_lb(&s, &caller, &id)?;
    q.loadbalancer_id = Some(id);
    list_listeners(State(s), caller, QueryParams(q)).await
}

#[utoipa::path(get, path = "/v1/listeners", tag = "listeners", params(PageQuery),
    responses((status = 200, body = Page<ListenerView>)))]
async fn list_listeners(
    State(s): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<PageQuery>,
) -> ApiResult {
    let full = s.control.view();
    let cfg = caller.view(&full);
    let items = cfg.listeners.values().filter(|l| {
        q.loadbalancer_id
            .as_ref()
            .is_none_or(|lb| l.value.loadbalancer_id.as_str() == lb)
    });
    let page = paginate(
        &q,
        items,
        |v| v.value.id.to_string(),
        |v| listener(&s.control, v),
    )?;
    Ok(Json(page).into_response())
}

#[utoipa::path(post, path = "/v1/loadbalancers/{id}/listeners", tag = "listeners", request_body = ListenerSpec,
    responses((status = 201, body = ListenerView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_listener(
    State(s): State<AppState>,
    PathParams(id): PathParams<String>,
    Ctx(ctx): Ctx,
    JsonBody(spec): JsonBody<ListenerSpec>,
) -> ApiResult {
    let outcome = s
        .control
        .create_listener(&ctx, &LoadBalancerId(id), spec)
        .await?;
    render_listener(&s.control, &outcome, created_or_ok(&outcome, true))
}

fn render_listener(cp: &ControlPlane, outcome: &Outcome, status: StatusCode) -> ApiResult {
    let id = ListenerId(result_id(outcome)?);
    let cfg = cp.view();
    let v = cfg
        .listeners
        .get(&id)
        .ok_or_else(|| gone("listener", id.as_str()))?;
    Ok(respond(
        status,
        Some(v.mod_revision),
        Some(&outcome.work_request),
        &listener(cp, v),
    ))
}

#[utoipa::path(get, path = "/v1/listeners/{id}", tag = "listeners",
    responses((status = 200, body = ListenerView), (status = 404, body = ErrorBody)))]
async fn get_listener(
    State(s): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> ApiResult {
    let full = s.control.view();
    let cfg = caller.view(&full);
    let v = cfg
        .listeners
        .get(&ListenerId(id.clone()))
        .ok_or_else(|| gone("listener", &id))?;
    Ok(respond(
        StatusCode::OK,
        Some(v.mod_revision),
        None,
        &listener(&s.control, v),
    ))
}

#[utoipa::path(patch, path = "/v1/listeners/{id}", tag = "listeners", request_body = Object,
    responses((status = 200, body = ListenerView)))]
async fn update_listener(
    State(s): State<AppState>,
    PathParams(id): PathParams<String>,
    Ctx(ctx): Ctx,
    JsonPatch(patch): JsonPatch,
) -> ApiResult {
    let outcome = s
        .control
        .update_listener(&ctx, &ListenerId(id), &patch)
        .await?;
    render_listener(&s.control, &outcome, StatusCode::OK)
}

#[utoipa::path(delete, path = "/v1/listeners/{id}", tag = "listeners",
    responses((status = 202, body = WorkRequest)))]
async fn delete_listener(
    State(s): State<AppState>,
    PathParams(id): PathParams<String>,
    Ctx(ctx): Ctx,
) -> ApiResult {
    let outcome = s.control.delete_listener(&ctx, &ListenerId(id)).await?;
    Ok(accepted(&outcome))
}

// ---- pools ---------------------------------------------------------------------------

#[utoipa::path(get, path = "/v1/loadbalancers/{id}/pools", tag = "pools", params(PageQuery),
    responses((status = 200, body = Page<PoolView>)))]
async fn list_lb_pools(
    State(s): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    QueryParams(mut q): QueryParams<PageQuery>,
) -> ApiResult {
    visible_lb(&s, &caller, &id)?;
    q.loadbalancer_id = Some(id);
    list_pools(State(s), caller, QueryParams(q)).await
}

#[utoipa::path(get, path = "/v1/pools", tag = "pools", params(PageQuery),
    responses((status = 200, body = Page<PoolView>)))]
async fn list_pools(
    State(s): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<PageQuery>,
) -> ApiResult {
    let full = s.control.view();
    let cfg = caller.view(&full);
    let items = cfg.pools.values().filter(|p| {
        q.loadbalancer_id
            .as_ref()
            .is_none_or(|lb| p.value.loadbalancer_id.as_str() == lb)
    });
    let page = paginate(
        &q,
        items,
        |v| v.value.id.to_string(),
        |v| pool(&s.control, &cfg, v),
    )?;
    Ok(Json(page).into_response())
}

#[utoipa::path(post, path = "/v1/loadbalancers/{id}/pools", tag = "pools", request_body = PoolSpec,
    responses((status = 201, body = PoolView), (status = 400, body = ErrorBody)))]
async fn create_pool(
    State(s): State<AppState>,
    PathParams(id): PathParams<String>,
    Ctx(ctx): Ctx,
    JsonBody(spec): JsonBody<PoolSpec>,
) -> ApiResult {
    let outcome = s
        .control
        .create_pool(&ctx, &LoadBalancerId(id), spec)
        .await?;
    render_pool(&s.control, &outcome, created_or_ok(&outcome, true))
}

fn render_pool(cp: &ControlPlane, outcome: &Outcome, status: StatusCode) -> ApiResult {
    let id = PoolId(result_id(outcome)?);
    let cfg = cp.view();
    let v = cfg
        .pools
        .get(&id)
        .ok_or_else(|| gone("pool", id.as_str()))?;
    Ok(respond(
        status,
        Some(v.mod_revision),
        Some(&outcome.work_request),
        &pool(cp, &cfg, v),
    ))
}

#[utoipa::path(get, path = "/v1/pools/{id}", tag = "pools",
    responses((status = 200, body = PoolView), (status = 404, body = ErrorBody)))]
async fn get_pool(
    State(s): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> ApiResult {
    let full = s.control.view();
    let cfg = caller.view(&full);
    let v = cfg
        .pools
        .get(&PoolId(id.clone()))
        .ok_or_else(|| gone("pool", &id))?;
    Ok(respond(
        StatusCode::OK,
        Some(v.mod_revision),
        None,
        &pool(&s.control, &cfg, v),
    ))
}

#[utoipa::path(patch, path = "/v1/pools/{id}", tag = "pools", request_body = Object,
    responses((status = 200, body = PoolView), (status = 412, body = ErrorBody)))]
async fn update_pool(
    State(s): State<AppState>,
    PathParams(id): PathParams<String>,
    Ctx(ctx): Ctx,
    JsonPatch(patch): JsonPatch,
) -> ApiResult {
    let outcome = s.control.update_pool(&ctx, &PoolId(id), &patch).await?;
    render_pool(&s.control, &outcome, StatusCode::OK)
}

#[utoipa::path(delete, path = "/v1/pools/{id}", tag = "pools",
    responses((status = 202, body = WorkRequest), (status = 409, body = ErrorBody)))]
async fn delete_pool(
    State(s): State<AppState>,
    PathParams(id): PathParams<String>,
    Ctx(ctx): Ctx,
) -> ApiResult {
    let outcome = s.control.delete_pool(&ctx, &PoolId(id)).await?;
    Ok(accepted(&outcome))
}

// ---- members -------------------------------------------------------------------------

#[utoipa::path(get, path = "/v1/pools/{id}/members", tag = "members", params(PageQuery),
    responses((status = 200, body = Page<MemberView>), (status = 404, body = ErrorBody)))]
async fn list_members(
    State(s): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    QueryParams(q): QueryParams<PageQuery>,
) -> ApiResult {
    let full = s.control.view();
    let cfg = caller.view(&full);
    let pool_id = PoolId(id.clone());
    if !cfg.pools.contains_key(&pool_id) {
        return Err(gone("pool", &id));
    }
    let page = paginate(
        &q,
        cfg.members_of(&pool_id),
        |v| v.value.id.to_string(),
        |v| member(&s.control, &cfg, v),
    )?;
    Ok(Json(page).into_response())
}

#[utoipa::path(post, path = "/v1/pools/{id}/members", tag = "members", request_body = MemberSpec,
    responses((status = 201, body = MemberView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_member(
    State(s): State<AppState>,
    PathParams(id): PathParams<String>,
    Ctx(ctx): Ctx,
    JsonBody(spec): JsonBody<MemberSpec>,
) -> ApiResult {
    let pool_id = PoolId(id);
    let outcome = s.control.create_member(&ctx, &pool_id, spec).await?;
    render_member(
        &s.control,
        &pool_id,
        &outcome,
        created_or_ok(&outcome, true),
    )
}

fn render_member(
    cp: &ControlPlane,
    pool_id: &PoolId,
    outcome: &Outcome,
    status: StatusCode,
) -> ApiResult {
    let id = MemberId(result_id(outcome)?);
    let cfg = cp.view();
    let v = cfg
        .member(pool_id, &id)
        .ok_or_else(|| gone("member", id.as_str()))?;
    Ok(respond(
        status,
        Some(v.mod_revision),
        Some(&outcome.work_request),
        &member(cp, &cfg, v),
    ))
}

/// `{action: add|replace|delete, members}`: up to 200 members, all or nothing.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    /// `add`, `replace` (the pool's members become exactly the list) or `delete`.
    action: BatchAction,
    /// Member specs for add and replace; `{"id": …}` objects for delete.
    #[schema(value_type = Vec<Object>)]
    members: Vec<Value>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum BatchAction {
    Add,
    Replace,
    Delete,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberRef {
    id: MemberId,
}

#[derive(Serialize, utoipa::ToSchema)]
struct BatchResult {
    work_request: WorkRequest,
    /// The pool's members after the change.
    members: Vec<MemberView>,
}

#[utoipa::path(post, path = "/v1/pools/{id}/members/batch", tag = "members", request_body = BatchRequest,
    responses((status = 200, body = BatchResult), (status = 400, body = ErrorBody)))]
async fn batch_members(
    State(s): State<AppState>,
    PathParams(id): PathParams<String>,
    Ctx(ctx): Ctx,
    JsonBody(req): JsonBody<BatchRequest>,
) -> ApiResult {
    fn each<T: serde::de::DeserializeOwned>(members: Vec<Value>) -> Result<Vec<T>, NativeError> {
        members
            .into_iter()
            .enumerate()
            .map(|(i, mut m)| {
                extract::integral_numbers(&mut m);
                fulcrum_control::decode_spec::<T>(m).map_err(|e| {
                    let mut e = NativeError::from(e);
                    let field = match e.field.take() {
                        Some(f) => format!("members[{i}].{f}"),
                        None => format!("members[{i}]"),
                    };
                    e.message = format!("members[{i}]: {}", e.message);
                    e.field = Some(field);
                    e
                })
            })
            .collect()
    }
    let batch = match req.action {
        BatchAction::Add => BatchMembers::Add(each(req.members)?),
        BatchAction::Replace => BatchMembers::Replace(each(req.members)?),
        BatchAction::Delete => BatchMembers::Delete(
            each::<MemberRef>(req.members)?
                .into_iter()
                .map(|r| r.id)
                .collect(),
        ),
    };
    let pool_id = PoolId(id);
    let outcome = s.control.batch_members(&ctx, &pool_id, batch).await?;
    let cfg = s.control.view();
    let etag_rev = cfg.pools.get(&pool_id).map(|p| p.mod_revision);
    let members = cfg
        .members_of(&pool_id)
        .map(|m| member(&s.control, &cfg, m))
        .collect();
    Ok(respond(
        StatusCode::OK,
        etag_rev,
        Some(&outcome.work_request),
        &BatchResult {
            work_request: outcome.work_request.clone(),
            members,
        },
    ))
}

#[utoipa::path(get, path = "/v1/pools/{id}/members/{member_id}", tag = "members",
    responses((status = 200, body = MemberView), (status = 404, body = ErrorBody)))]
async fn get_member(
    State(s): State<AppState>,
    caller: Caller,
    PathParams((id, member_id)): PathParams<(String, String)>,
) -> ApiResult {
    let full = s.control.view();
    let cfg = caller.view(&full);
    let v = cfg
        .member(&PoolId(id), &MemberId(member_id.clone()))
        .ok_or_else(|| gone("member", &member_id))?;
    Ok(respond(
        StatusCode::OK,
        Some(v.mod_revision),
        None,
        &member(&s.control, &cfg, v),
    ))
}

#[utoipa::path(patch, path = "/v1/pools/{id}/members/{member_id}", tag = "members", request_body = Object,
    responses((status = 200, body = MemberView), (status = 412, body = ErrorBody)))]
async fn update_member(
    State(s): State<AppState>,
    PathParams((id, member_id)): PathParams<(String, String)>,
    Ctx(ctx): Ctx,
    JsonPatch(patch): JsonPatch,
) -> ApiResult {
    let pool_id = PoolId(id);
    let outcome = s
        .control
        .update_member(&ctx, &pool_id, &MemberId(member_id), &patch)
        .await?;
    render_member(&s.control, &pool_id, &outcome, StatusCode::OK)
}

#[utoipa::path(delete, path = "/v1/pools/{id}/members/{member_id}", tag = "members",
    responses((status = 202, body = WorkRequest), (status = 409, body = ErrorBody)))]
async fn delete_member(
    State(s): State<AppState>,
    PathParams((id, member_id)): PathParams<(String, String)>,
    Ctx(ctx): Ctx,
) -> ApiResult {
    let outcome = s
        .control
        .delete_member(&ctx, &PoolId(id), &MemberId(member_id))
        .await?;
    Ok(accepted(&outcome))
}

// ---- health monitors -----------------------------------------------------------------

#[utoipa::path(get, path = "/v1/healthmonitors", tag = "health monitors", params(PageQuery),
    responses((status = 200, body = Page<HealthMonitorView>)))]
async fn list_monitors(
    State(s): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<PageQuery>,
) -> ApiResult {
    let full = s.control.view();
    let cfg = caller.view(&full);
    let items = cfg.monitors.values().filter(|m| {
        q.loadbalancer_id
            .as_ref()
            .is_none_or(|lb| m.value.loadbalancer_id.as_str() == lb)
            && q.pool_id
                .as_ref()
                .is_none_or(|p| m.value.spec.pool_id.as_str() == p)
    });
    let page = paginate(
        &q,
        items,
        |v| v.value.id.to_string(),
        |v| monitor(&s.control, v),
    )?;
    Ok(Json(page).into_response())
}

#[utoipa::path(post, path = "/v1/healthmonitors", tag = "health monitors", request_body = HealthMonitorSpec,
    responses((status = 201, body = HealthMonitorView), (status = 400, body = ErrorBody)))]
async fn create_monitor(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    JsonBody(spec): JsonBody<HealthMonitorSpec>,
) -> ApiResult {
    let outcome = s.control.create_monitor(&ctx, spec).await?;
    render_monitor(&s.control, &outcome, created_or_ok(&outcome, true))
}

fn render_monitor(cp: &ControlPlane, outcome: &Outcome, status: StatusCode) -> ApiResult {
    let id = HealthMonitorId(result_id(outcome)?);
    let cfg = cp.view();
    let v = cfg
        .monitors
        .get(&id)
        .ok_or_else(|| gone("health monitor", id.as_str()))?;
    Ok(respond(
        status,
        Some(v.mod_revision),
        Some(&outcome.work_request),
        &monitor(cp, v),
    ))
}

#[utoipa::path(get, path = "/v1/healthmonitors/{id}", tag = "health monitors",
    responses((status = 200, body = HealthMonitorView), (status = 404, body = ErrorBody)))]
async fn get_monitor(
    State(s): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> ApiResult {
    let full = s.control.view();
    let cfg = caller.view(&full);
    let v = cfg
        .monitors
        .get(&HealthMonitorId(id.clone()))
        .ok_or_else(|| gone("health monitor", &id))?;
    Ok(respond(
        StatusCode::OK,
        Some(v.mod_revision),
        None,
        &monitor(&s.control, v),
    ))
}

#[utoipa::path(patch, path = "/v1/healthmonitors/{id}", tag = "health monitors", request_body = Object,
    responses((status = 200, body = HealthMonitorView)))]
async fn update_monitor(
    State(s): State<AppState>,
    PathParams(id): PathParams<String>,
    Ctx(ctx): Ctx,
    JsonPatch(patch): JsonPatch,
) -> ApiResult {
    let outcome = s
        .control
        .update_monitor(&ctx, &HealthMonitorId(id), &patch)
        .await?;
    render_monitor(&s.control, &outcome, StatusCode::OK)
}

#[utoipa::path(delete, path = "/v1/healthmonitors/{id}", tag = "health monitors",
    responses((status = 202, body = WorkRequest)))]
async fn delete_monitor(
    State(s): State<AppState>,
    PathParams(id): PathParams<String>,
    Ctx(ctx): Ctx,
) -> ApiResult {
    let outcome = s.control.delete_monitor(&ctx, &HealthMonitorId(id)).await?;
    Ok(accepted(&outcome))
}

// ---- subnets -------------------------------------------------------------------------

#[utoipa::path(get, path = "/v1/subnets", tag = "subnets", params(PageQuery),
    responses((status = 200, body = Page<SubnetView>)))]
async fn list_subnets(
    State(s): State<AppState>,
    QueryParams(q): QueryParams<PageQuery>,
) -> ApiResult {
    let cfg = s.control.view();
    let page = paginate(&q, cfg.subnets.values(), |v| v.value.id.to_string(), subnet)?;
    Ok(Json(page).into_response())
}

#[utoipa::path(post, path = "/v1/subnets", tag = "subnets", request_body = SubnetSpec,
    responses((status = 201, body = SubnetView), (status = 400, body = ErrorBody)))]
async fn create_subnet(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    JsonBody(spec): JsonBody<SubnetSpec>,
) -> ApiResult {
    let outcome = s.control.create_subnet(&ctx, spec, false).await?;
    render_subnet(&s.control, &outcome, created_or_ok(&outcome, true))
}

fn render_subnet(cp: &ControlPlane, outcome: &Outcome, status: StatusCode) -> ApiResult {
    let id = SubnetId(result_id(outcome)?);
    let cfg = cp.view();
    let v = cfg
        .subnets
        .get(&id)
        .ok_or_else(|| gone("subnet", id.as_str()))?;
    Ok(respond(
        status,
        Some(v.mod_revision),
        Some(&outcome.work_request),
        &subnet(v),
    ))
}

#[utoipa::path(get, path = "/v1/subnets/{id}", tag = "subnets",
    responses((status = 200, body = SubnetView), (status = 404, body = ErrorBody)))]
async fn get_subnet(State(s): State<AppState>, PathParams(id): PathParams<String>) -> ApiResult {
    let cfg = s.control.view();
    let v = cfg
        .subnets
        .get(&SubnetId(id.clone()))
        .ok_or_else(|| gone("subnet", &id))?;
    Ok(respond(
        StatusCode::OK,
        Some(v.mod_revision),
        None,
        &subnet(v),
    ))
}

#[utoipa::path(patch, path = "/v1/subnets/{id}", tag = "subnets", request_body = Object,
    responses((status = 200, body = SubnetView)))]
async fn update_subnet(
    State(s): State<AppState>,
    PathParams(id): PathParams<String>,
    Ctx(ctx): Ctx,
    JsonPatch(patch): JsonPatch,
) -> ApiResult {
    let outcome = s.control.update_subnet(&ctx, &SubnetId(id), &patch).await?;
    render_subnet(&s.control, &outcome, StatusCode::OK)
}

#[utoipa::path(delete, path = "/v1/subnets/{id}", tag = "subnets",
    responses((status = 202, body = WorkRequest), (status = 409, body = ErrorBody)))]
async fn delete_subnet(
    State(s): State<AppState>,
    PathParams(id): PathParams<String>,
    Ctx(ctx): Ctx,
) -> ApiResult {
    let outcome = s.control.delete_subnet(&ctx, &SubnetId(id)).await?;
    Ok(accepted(&outcome))
}

// ---- apply ---------------------------------------------------------------------------

/// A declarative document to make true, in one change.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ApplyRequest {
    /// `subnets` and `loadbalancers`, in the format `fulcrum apply -f` reads: resources
    /// matched by name, pools and listeners within their load balancer, a listener's
    /// `default_pool` and `routes[].pool` and a member's `subnet` by name.
    #[schema(value_type = Object)]
    document: Value,
    /// Also delete the listeners and pools of the document's load balancers that it does
    /// not name, and the health monitor of a pool that names none.
    #[serde(default)]
    prune: bool,
    /// Only plan: answer what would change, and change nothing.
    #[serde(default)]
    dry_run: bool,
}

/// What an apply did (or, planning only, would do).
#[derive(Serialize, utoipa::ToSchema)]
struct ApplyResult {
    created: usize,
    updated: usize,
    unchanged: usize,
    deleted: usize,
    /// Whether anything changes (or would).
    changes: bool,
    /// Every resource of the document (and every one pruned), in order.
    plan: Vec<ApplyStepView>,
    /// The change's work request; absent when only planned or when nothing changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    work_request: Option<WorkRequest>,
}

/// One resource's step.
#[derive(Serialize, utoipa::ToSchema)]
struct ApplyStepView {
    /// `create`, `update`, `delete` or `unchanged`.
    action: &'static str,
    /// `subnet`, `loadbalancer`, `pool`, `members`, `healthmonitor` or `listener`.
    kind: &'static str,
    /// By name: `web`, `web/app` (pool app of load balancer web).
    name: String,
    /// For an update: the fields that change.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    fields: Vec<String>,
}

/// Makes the configuration match a document: everything in one transaction, so a
/// document that fails anywhere (a port taken, a name two resources share, an invalid
/// field) changes nothing.
#[utoipa::path(post, path = "/v1/apply", tag = "apply", request_body = ApplyRequest,
    responses((status = 200, body = ApplyResult), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn apply_document(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    JsonBody(req): JsonBody<ApplyRequest>,
) -> ApiResult {
    let applied = s
        .control
        .apply(&ctx, &req.document, req.prune, req.dry_run)
        .await?;
    let summary = applied.summary;
    let work_request = applied.outcome.map(|o| o.work_request);
    let body = ApplyResult {
        created: summary.created,
        updated: summary.updated,
        unchanged: summary.unchanged,
        deleted: summary.deleted,
        changes: summary.changes,
        plan: summary
            .plan
            .into_iter()
            .map(|s| ApplyStepView {
                action: s.action,
                kind: s.kind,
                name: s.name,
                fields: s.fields,
            })
            .collect(),
        work_request,
    };
    Ok(respond(
        StatusCode::OK,
        None,
        body.work_request.as_ref(),
        &body,
    ))
}

// ---- VPCs ----------------------------------------------------------------------------

#[utoipa::path(get, path = "/v1/vpcs", tag = "vpcs", params(PageQuery),
    responses((status = 200, body = Page<Vpc>)))]
async fn list_vpcs(State(s): State<AppState>, QueryParams(q): QueryParams<PageQuery>) -> ApiResult {
    let cfg = s.control.view();
    let page = paginate(
        &q,
        cfg.vpcs.values(),
        |v| v.value.id.to_string(),
        |v| v.value.clone(),
    )?;
    Ok(Json(page).into_response())
}

#[utoipa::path(post, path = "/v1/vpcs", tag = "vpcs", request_body = VpcSpec,
    responses((status = 201, body = Vpc), (status = 400, body = ErrorBody)))]
async fn create_vpc(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    JsonBody(spec): JsonBody<VpcSpec>,
) -> ApiResult {
    let outcome = s.control.create_vpc(&ctx, spec).await?;
    render_vpc(&s.control, &outcome, created_or_ok(&outcome, true))
}

fn render_vpc(cp: &ControlPlane, outcome: &Outcome, status: StatusCode) -> ApiResult {
    let id = VpcId(result_id(outcome)?);
    let cfg = cp.view();
    let v = cfg.vpcs.get(&id).ok_or_else(|| gone("VPC", id.as_str()))?;
    Ok(respond(
        status,
        Some(v.mod_revision),
        Some(&outcome.work_request),
        &v.value,
    ))
}

#[utoipa::path(get, path = "/v1/vpcs/{id}", tag = "vpcs",
    responses((status = 200, body = Vpc), (status = 404, body = ErrorBody)))]
async fn get_vpc(State(s): State<AppState>, PathParams(id): PathParams<String>) -> ApiResult {
    let cfg = s.control.view();
    let v = cfg
        .vpcs
        .get(&VpcId(id.clone()))
        .ok_or_else(|| gone("VPC", &id))?;
    Ok(respond(
        StatusCode::OK,
        Some(v.mod_revision),
        None,
        &v.value,
    ))
}

#[utoipa::path(patch, path = "/v1/vpcs/{id}", tag = "vpcs", request_body = Object,
    responses((status = 200, body = Vpc)))]
async fn update_vpc(
    State(s): State<AppState>,
    PathParams(id): PathParams<String>,
    Ctx(ctx): Ctx,
    JsonPatch(patch): JsonPatch,
) -> ApiResult {
    let outcome = s.control.update_vpc(&ctx, &VpcId(id), &patch).await?;
    render_vpc(&s.control, &outcome, StatusCode::OK)
}

#[utoipa::path(delete, path = "/v1/vpcs/{id}", tag = "vpcs",
    responses((status = 202, body = WorkRequest), (status = 409, body = ErrorBody)))]
async fn delete_vpc(
    State(s): State<AppState>,
    PathParams(id): PathParams<String>,
    Ctx(ctx): Ctx,
) -> ApiResult {
    let outcome = s.control.delete_vpc(&ctx, &VpcId(id)).await?;
    Ok(accepted(&outcome))
}

// ---- certificates --------------------------------------------------------------------

#[utoipa::path(get, path = "/v1/certificates", tag = "certificates", params(PageQuery),
    responses((status = 200, body = Page<CertificateView>)))]
async fn list_certificates(
    State(s): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<PageQuery>,
) -> ApiResult {
    let full = s.control.view();
    let cfg = caller.view(&full);
    let items = cfg.certificates.values().filter(|c| {
        q.loadbalancer_id
            .as_ref()
            .is_none_or(|lb| c.value.loadbalancer_id.as_ref().map(|l| l.as_str()) == Some(lb))
    });
    let page = paginate(&q, items, |v| v.value.id.to_string(), certificate)?;
    Ok(Json(page).into_response())
}

/// Certificates made here belong to no load balancer (OCI's belong to theirs).
#[utoipa::path(post, path = "/v1/certificates", tag = "certificates", request_body = CertificateSpec,
    responses((status = 201, body = CertificateView), (status = 400, body = ErrorBody)))]
async fn create_certificate(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    JsonBody(spec): JsonBody<CertificateSpec>,
) -> ApiResult {
    let outcome = s.control.create_certificate(&ctx, None, spec).await?;
    render_certificate(&s.control, &outcome, created_or_ok(&outcome, true))
}

fn render_certificate(cp: &ControlPlane, outcome: &Outcome, status: StatusCode) -> ApiResult {
    let id = CertificateId(result_id(outcome)?);
    let cfg = cp.view();
    let v = cfg
        .certificates
        .get(&id)
        .ok_or_else(|| gone("certificate", id.as_str()))?;
    Ok(respond(
        status,
        Some(v.mod_revision),
        Some(&outcome.work_request),
        &certificate(v),
    ))
}

#[utoipa::path(get, path = "/v1/certificates/{id}", tag = "certificates",
    responses((status = 200, body = CertificateView), (status = 404, body = ErrorBody)))]
async fn get_certificate(
    State(s): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> ApiResult {
    let full = s.control.view();
    let cfg = caller.view(&full);
    let v = cfg
        .certificates
        .get(&CertificateId(id.clone()))
        .ok_or_else(|| gone("certificate", &id))?;
    Ok(respond(
        StatusCode::OK,
        Some(v.mod_revision),
        None,
        &certificate(v),
    ))
}

/// A merge patch of the certificate; every listener naming it serves the new one.
#[utoipa::path(patch, path = "/v1/certificates/{id}", tag = "certificates", request_body = Object,
    responses((status = 200, body = CertificateView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn update_certificate(
    State(s): State<AppState>,
    PathParams(id): PathParams<String>,
    Ctx(ctx): Ctx,
    JsonPatch(patch): JsonPatch,
) -> ApiResult {
    let outcome = s
        .control
        .update_certificate(&ctx, &CertificateId(id), &patch)
        .await?;
    render_certificate(&s.control, &outcome, StatusCode::OK)
}

/// Refused with 409 while a listener names it.
#[utoipa::path(delete, path = "/v1/certificates/{id}", tag = "certificates",
    responses((status = 202, body = WorkRequest), (status = 409, body = ErrorBody)))]
async fn delete_certificate(
    State(s): State<AppState>,
    PathParams(id): PathParams<String>,
    Ctx(ctx): Ctx,
) -> ApiResult {
    let outcome = s
        .control
        .delete_certificate(&ctx, &CertificateId(id))
        .await?;
    Ok(accepted(&outcome))
}

// ---- work requests -------------------------------------------------------------------

#[utoipa::path(get, path = "/v1/work-requests", tag = "work requests", params(PageQuery),
    responses((status = 200, body = Page<WorkRequest>)))]
async fn list_work_requests(
    State(s): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<PageQuery>,
) -> ApiResult {
    let lb = q.loadbalancer_id.clone().map(LoadBalancerId);
    let mut all = s
        .control
        .list_work_requests(lb.as_ref(), caller.reader())
        .await?;
    // Newest first; the page token is the last revision seen, as a string.
    all.sort_by_key(|w| std::cmp::Reverse(w.revision));
    let after: Option<i64> = match &q.page_token {
        Some(t) => Some(t.parse().map_err(|_| {
            NativeError::invalid("page_token", "page_token is not one this API issued")
        })?),
        None => None,
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(NativeError::invalid(
            "limit",
            format!("limit must be between 1 and 1000 (got {limit})"),
        ));
    }
    let mut items: Vec<WorkRequest> = all
        .into_iter()
        .filter(|w| after.is_none_or(|a| w.revision < a))
        .take(limit + 1)
        .collect();
    let next_page_token = (items.len() > limit).then(|| {
        items.truncate(limit);
        items
            .last()
            .map(|w| w.revision.to_string())
            .unwrap_or_default()
    });
    Ok(Json(Page {
        items,
        next_page_token,
    })
    .into_response())
}

#[utoipa::path(get, path = "/v1/work-requests/{id}", tag = "work requests",
    responses((status = 200, body = WorkRequest), (status = 404, body = ErrorBody)))]
async fn get_work_request(
    State(s): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> ApiResult {
    let wr = s
        .control
        .read_work_request(&WorkRequestId(id.clone()), caller.reader())
        .await?
        .ok_or_else(|| gone("work request", &id))?;
    Ok(Json(wr).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct WaitQuery {
    /// Longest wait in milliseconds (default 30000, at most 120000).
    timeout_ms: Option<u64>,
}

/// Waits until the work request succeeds or fails, or the timeout passes, and returns it.
#[utoipa::path(get, path = "/v1/work-requests/{id}/wait", tag = "work requests", params(WaitQuery),
    responses((status = 200, body = WorkRequest), (status = 404, body = ErrorBody)))]
async fn wait_work_request(
    State(s): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    QueryParams(q): QueryParams<WaitQuery>,
) -> ApiResult {
    let timeout = Duration::from_millis(q.timeout_ms.unwrap_or(30_000).min(120_000));
    let wr = s
        .control
        .wait_work_request(&WorkRequestId(id.clone()), timeout, caller.reader())
        .await?
        .ok_or_else(|| gone("work request", &id))?;
    Ok(Json(wr).into_response())
}
