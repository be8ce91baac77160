//! The OCI Load Balancing dialect under `/20170115`: seed 000 (UpdateBackend) and the
//! operations around it, authenticated by OCI request signatures.
//!
//! Every request must carry a valid signature by a key registered in `[oci] keys`
//! (`signature.rs`); the native API's bearer tokens are not accepted here. Mutations
//! answer `204` with `opc-work-request-id`; reads carry the load balancer's ETag, the
//! one ETag every resource of a load balancer shares, and `if-match` on any mutation is
//! checked against it. Shapes and their translation onto the model are in `wire.rs`,
//! errors in `error.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get, post, put};
use bytes::Bytes;
use fulcrum_control::{
    Config, ControlError, ControlPlane, EtagScope, IfMatch, NewPool, NewResources, Outcome, Parent,
    PoolUpdate, RequestContext, Versioned, Vip, etag,
};
use fulcrum_model::{
    ListenerSpec, ListenerTimeouts, LoadBalancerId, LoadBalancerSpec, LockKind, Member, Pool,
    PoolProtocol, ResourceLock,
};
use http::request::Parts;
use http::{HeaderValue, StatusCode};
use serde::Deserialize;

// The shared pieces (`fulcrum-api-core`), at the paths this crate's modules name them by
// (`crate::auth`, `crate::body`, `crate::request`, ...).
#[cfg(feature = "fuzzing")]
use fulcrum_api_core::fuzzing;
use fulcrum_api_core::{AppState, UNAVAILABLE_RETRY_SECS, auth, body, decode, request};

use crate::request::current_request_id;

mod certificates;
pub(crate) mod condition;
mod error;
/// Entry points for `fulcrum_api::fuzzing` (feature `fuzzing`).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
mod parts;
mod registered_keys;
mod routing;
mod signature;
mod wire;

use error::OciError;
use signature::{ApiKey, KeyRing};
use wire::*;

type OciResult = Result<Response, OciError>;

/// `[oci]` in `fulcrum.toml`: the API signing keys OCI callers sign with. Checked when
/// read: every key id has the `tenancy/user/fingerprint` form and appears once.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(try_from = "OciConfigFile")]
pub struct OciConfig {
    pub keys: Vec<OciKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OciConfigFile {
    #[serde(default)]
    keys: Vec<OciKey>,
}

impl TryFrom<OciConfigFile> for OciConfig {
    type Error = String;

    fn try_from(file: OciConfigFile) -> Result<Self, String> {
        let mut seen = std::collections::HashSet::new();
        for k in &file.keys {
            if k.key_id.split('/').filter(|p| !p.is_empty()).count() != 3 {
                return Err(format!(
                    "oci key_id {:?} must be <tenancy OCID>/<user OCID>/<fingerprint>",
                    k.key_id
                ));
            }
            if !seen.insert(&k.key_id) {
                return Err(format!("oci key_id {:?} is listed twice", k.key_id));
            }
        }
        Ok(OciConfig { keys: file.keys })
    }
}

/// One API signing key. The SDK's `keyId` is `<tenancy OCID>/<user OCID>/<fingerprint>`
/// (from its config file); the public key is the PEM uploaded to OCI for that user.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OciKey {
    pub key_id: String,
    pub public_key_pem: PublicKeyPem,
    /// The principal that rate limits and retry tokens are scoped to (default: the key id).
    #[serde(default)]
    pub name: Option<String>,
    /// Compartment OCIDs the key may see and change; absent: every load balancer.
    #[serde(default)]
    pub compartments: Option<Vec<String>>,
}

/// An RSA public key, checked when the configuration is read.
#[derive(Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct PublicKeyPem(rsa::RsaPublicKey);

impl TryFrom<String> for PublicKeyPem {
    type Error = String;

    fn try_from(pem: String) -> Result<Self, Self::Error> {
        signature::parse_public_key(&pem).map(PublicKeyPem)
    }
}

impl std::fmt::Debug for PublicKeyPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PublicKeyPem(RSA)")
    }
}

#[derive(Clone)]
struct OciState {
    app: AppState,
    /// `[oci] keys`.
    keys: Arc<KeyRing>,
    /// Keys registered through the native API, as parsed so far.
    registered: Arc<registered_keys::RegisteredKeys>,
}

/// The caller a signature authenticated, and the compartments its key is limited to.
#[derive(Clone, Debug)]
struct OciPrincipal {
    name: String,
    compartments: Option<Vec<String>>,
}

impl OciPrincipal {
    fn admits_compartment(&self, compartment: &str) -> bool {
        self.compartments
            .as_ref()
            .is_none_or(|cs| cs.iter().any(|c| c == compartment))
    }

    /// The load balancers of its compartments (none made outside OCI, which have none),
    /// or every one.
    fn scope(&self) -> fulcrum_control::Scope {
        let Some(cs) = self.compartments.clone() else {
            return fulcrum_control::Scope::All;
        };
        fulcrum_control::Scope::limited(format!("the compartments {}", cs.join(", ")), move |lb| {
            let c = compartment(lb);
            cs.contains(&c)
        })
    }

    fn reader<'a>(&'a self, scope: &'a fulcrum_control::Scope) -> fulcrum_control::Reader<'a> {
        fulcrum_control::Reader {
            scope,
            principal: &self.name,
            front_door: FRONT_DOOR,
        }
    }
}

/// The load balancer a path names (`/20170115/loadBalancers/{lb}/…`): every operation on
/// one's resources lies under it, so the scope is checked once, here.
fn path_lb(path: &str) -> Option<LoadBalancerId> {
    let mut segs = path.trim_start_matches('/').split('/');
    match (segs.next(), segs.next(), segs.next()) {
        (Some("20170115"), Some("loadBalancers"), Some(lb)) if !lb.is_empty() => Some(lb_id(
            &percent_encoding::percent_decode_str(lb).decode_utf8_lossy(),
        )),
        _ => None,
    }
}

/// The name of this front door in audit records and work requests.
const FRONT_DOOR: &str = "oci";

/// Largest request body accepted (a load balancer with its backend sets fits easily).
const MAX_BODY: usize = 1 << 20;

pub fn router(state: AppState, config: &OciConfig) -> Router {
    let mut keys = KeyRing::default();
    for k in &config.keys {
        keys.insert(
            k.key_id.clone(),
            ApiKey {
                principal: k.name.clone().unwrap_or_else(|| k.key_id.clone()),
                key: k.public_key_pem.0.clone(),
                compartments: k.compartments.clone(),
            },
        );
    }
    if keys.is_empty() {
        tracing::info!(
            "no [oci] keys configured: OCI requests need a key registered through /v1/oci-api-keys"
        );
    }
    let state = OciState {
        app: state,
        keys: Arc::new(keys),
        registered: Arc::default(),
    };
    const LB: &str = "/20170115/loadBalancers/{lb}";
    let routes: [(String, MethodRouter<OciState>); 20] = [
        (
            "/20170115/loadBalancers".into(),
            get(list_load_balancers).post(create_load_balancer),
        ),
        (
            LB.into(),
            get(get_load_balancer)
                .put(update_load_balancer)
                .delete(delete_load_balancer),
        ),
        (
            format!("{LB}/backendSets"),
            get(list_backend_sets).post(create_backend_set),
        ),
        (
            format!("{LB}/backendSets/{{set}}"),
            get(get_backend_set)
                .put(update_backend_set)
                .delete(delete_backend_set),
        ),
        (
            format!("{LB}/backendSets/{{set}}/backends"),
            get(list_backends).post(create_backend),
        ),
        (
            format!("{LB}/backendSets/{{set}}/backends/{{backend}}"),
            get(get_backend).put(update_backend).delete(delete_backend),
        ),
        (
            format!("{LB}/backendSets/{{set}}/healthChecker"),
            get(get_health_checker).put(update_health_checker),
        ),
        (format!("{LB}/listeners"), post(create_listener)),
        (
            format!("{LB}/certificates"),
            get(certificates::list).post(certificates::create),
        ),
        (
            format!("{LB}/certificates/{{certificate}}"),
            axum::routing::delete(certificates::delete),
        ),
        (
            format!("{LB}/listeners/{{listener}}"),
            put(update_listener).delete(delete_listener),
        ),
        (
            format!("{LB}/pathRouteSets"),
            get(parts::list::<PathRouteSets>).post(create_path_route_set),
        ),
        (
            format!("{LB}/pathRouteSets/{{prs}}"),
            get(parts::get::<PathRouteSets>)
                .put(update_path_route_set)
                .delete(parts::delete::<PathRouteSets>),
        ),
        (
            format!("{LB}/hostnames"),
            get(parts::list::<routing::Hostnames>).post(routing::create_hostname),
        ),
        (
            format!("{LB}/hostnames/{{hostname}}"),
            get(parts::get::<routing::Hostnames>)
                .put(routing::update_hostname)
                .delete(parts::delete::<routing::Hostnames>),
        ),
        (
            format!("{LB}/routingPolicies"),
            get(parts::list::<routing::RoutingPolicies>).post(routing::create_policy),
        ),
        (
            format!("{LB}/routingPolicies/{{policy}}"),
            get(parts::get::<routing::RoutingPolicies>)
                .put(routing::update_policy)
                .delete(parts::delete::<routing::RoutingPolicies>),
        ),
        (format!("{LB}/workRequests"), get(list_work_requests)),
        (
            "/20170115/loadBalancerWorkRequests/{id}".into(),
            get(get_work_request),
        ),
        ("/20170115/{*rest}".into(), any(no_such_operation)),
    ];
    let mut router = Router::new();
    for (path, methods) in routes {
        let methods = methods.fallback(no_such_operation);
        // An endpoint configured with a trailing slash makes the SDK send `//20170115/…`
        // (and sign it so): serve that too rather than fail on a detail of configuration.
        router = router
            .route(&format!("/{path}"), methods.clone())
            .route(&path, methods);
    }
    router
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .layer(axum::middleware::map_response(with_opc_request_id))
        .with_state(state)
}

/// Unknown paths and methods answer in OCI's shape (after authentication, like OCI,
/// which does not tell strangers what exists).
async fn no_such_operation(method: http::Method, uri: http::Uri) -> OciError {
    OciError::not_found(format!("fulcrum has no operation {method} {}", uri.path()))
}

// ---- authentication ------------------------------------------------------------------

/// Verifies the request's signature over its raw target and headers and applies the
/// per-caller rate limit before any byte of the body is read; then reads the body (at
/// most the signed `content-length`, within [`MAX_BODY`] and the body deadline) and checks
/// it against the signed digest. Nothing here trusts an unsigned request, and an address
/// throttled for failing authentication is refused first.
async fn authenticate(State(s): State<OciState>, req: Request, next: Next) -> Response {
    match admit(&s, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn admit(s: &OciState, req: Request) -> Result<Request, OciError> {
    let client = crate::auth::client_ip(req.extensions());
    if let Some(wait) = s
        .app
        .auth_failures
        .throttled(client, std::time::Instant::now())
    {
        return Err(OciError::auth_throttled(wait));
    }
    let (mut parts, body) = req.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |pq| pq.as_str());
    // Logged (summarised per source) by `request::observe`, like every front door's.
    let unauthenticated = |failure: signature::AuthFailure| {
        OciError::unauthenticated(format!("the request is not authenticated: {}", failure.0))
    };
    let head = {
        let view = s.app.control.view();
        let keys = registered_keys::Keys {
            configured: &s.keys,
            registered: &s.registered,
            view: &view,
        };
        signature::verify_head(
            &parts.method,
            target,
            &parts.headers,
            &keys,
            std::time::SystemTime::now(),
        )
    }
    .map_err(unauthenticated)?;
    let principal = head.key.principal.clone();
    if let Err(wait) = s.app.limiter.check(&format!("oci:{principal}")) {
        return Err(ControlError::RateLimited { retry_after: wait }.into());
    }
    let limit = head.signed_length.unwrap_or(MAX_BODY);
    if limit > MAX_BODY {
        return Err(crate::body::BodyError::TooLarge { limit: MAX_BODY }.into());
    }
    let body = crate::body::read(body, limit).await?;
    head.check_body(&parts.headers, &body)
        .map_err(unauthenticated)?;
    let caller = OciPrincipal {
        name: principal,
        compartments: head.key.compartments.clone(),
    };
    let scope = caller.scope();
    // A load balancer outside the key's compartments is one that does not exist.
    if let Some(lb) = path_lb(parts.uri.path())
        && !scope.is_all()
        && !scope.admits_id(&s.app.control.view(), &lb)
    {
        return Err(OciError::not_found(format!(
            "load balancer {} not found",
            lb_ocid(&lb)
        )));
    }
    parts.extensions.insert(caller);
    Ok(Request::from_parts(parts, Body::from(body)))
}

async fn with_opc_request_id(mut resp: Response) -> Response {
    if let Ok(v) = HeaderValue::from_str(&current_request_id()) {
        resp.headers_mut().insert("opc-request-id", v);
    }
    resp
}

// ---- request pieces ------------------------------------------------------------------

/// Path parameters, percent-decoded (`10.0.0.3%3A8080` → `10.0.0.3:8080`).
struct Params(BTreeMap<String, String>);

impl Params {
    fn get(&self, name: &str) -> &str {
        self.0.get(name).map_or("", String::as_str)
    }

    fn lb(&self) -> LoadBalancerId {
        lb_id(self.get("lb"))
    }
}

impl FromRequestParts<OciState> for Params {
    type Rejection = OciError;

    async fn from_request_parts(parts: &mut Parts, s: &OciState) -> Result<Self, OciError> {
        axum::extract::Path::<BTreeMap<String, String>>::from_request_parts(parts, s)
            .await
            .map(|p| Params(p.0))
            .map_err(|e| OciError::invalid(e.body_text()))
    }
}

/// Query parameters.
struct QueryMap(BTreeMap<String, String>);

impl QueryMap {
    fn flag(&self, name: &str) -> Result<bool, OciError> {
        match self.0.get(name).map(String::as_str) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(OciError::invalid(format!(
                "{name} must be true or false (got {other:?})"
            ))),
        }
    }

    fn limit(&self) -> Result<usize, OciError> {
        match self.0.get("limit") {
            None => Ok(100),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| {
                    OciError::invalid(format!("limit must be between 1 and 1000 (got {v:?})"))
                }),
        }
    }

    /// `page`: the offset a previous `opc-next-page` gave.
    fn offset(&self) -> Result<usize, OciError> {
        match self.0.get("page") {
            None => Ok(0),
            Some(v) => v
                .parse()
                .map_err(|_| OciError::invalid("page is not a token this API issued")),
        }
    }
}

impl FromRequestParts<OciState> for QueryMap {
    type Rejection = OciError;

    async fn from_request_parts(parts: &mut Parts, s: &OciState) -> Result<Self, OciError> {
        axum::extract::Query::<BTreeMap<String, String>>::from_request_parts(parts, s)
            .await
            .map(|q| QueryMap(q.0))
            .map_err(|e| OciError::invalid(e.body_text()))
    }
}

/// What a mutation needs besides its arguments: request id, principal, retry token,
/// `if-match` (the load balancer's ETag) and `isLockOverride`.
struct Ctx(RequestContext);

impl FromRequestParts<OciState> for Ctx {
    type Rejection = OciError;

    async fn from_request_parts(parts: &mut Parts, s: &OciState) -> Result<Self, OciError> {
        let header = |name: &str| -> Result<Option<String>, OciError> {
            parts
                .headers
                .get(name)
                .map(|v| {
                    v.to_str()
                        .map(str::to_owned)
                        .map_err(|_| OciError::invalid(format!("header {name} is not valid text")))
                })
                .transpose()
        };
        let retry_token = header("opc-retry-token")?;
        if let Some(t) = &retry_token
            && (t.is_empty() || t.chars().count() > 64)
        {
            return Err(OciError::invalid(
                "opc-retry-token must be 1 to 64 characters",
            ));
        }
        let if_match = header("if-match")?.map(|value| IfMatch {
            scope: EtagScope::LoadBalancer,
            value,
        });
        let query = QueryMap::from_request_parts(parts, s).await?;
        let caller = parts
            .extensions
            .get::<OciPrincipal>()
            .cloned()
            .ok_or_else(|| OciError::unauthenticated("the request is not authenticated"))?;
        Ok(Ctx(RequestContext {
            request_id: current_request_id(),
            scope: caller.scope(),
            principal: caller.name,
            front_door: FRONT_DOOR,
            retry_token,
            if_match,
            lock_override: query.flag("isLockOverride")?,
            // OCI takes one work request per load balancer at a time.
            one_change_at_a_time: true,
            ..Default::default()
        }))
    }
}

fn require_json(headers: &http::HeaderMap) -> Result<(), OciError> {
    let ct = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !ct.contains("json") {
        return Err(OciError::invalid(format!(
            "expected an application/json body, not {ct:?}"
        )));
    }
    Ok(())
}

// ---- responses -----------------------------------------------------------------------

fn with_etag(mut resp: Response, cfg: &Config, lb: &LoadBalancerId) -> Response {
    if let Some(v) = cfg.loadbalancers.get(lb)
        && let Ok(h) = HeaderValue::from_str(&etag(v.mod_revision))
    {
        resp.headers_mut().insert(http::header::ETAG, h);
    }
    resp
}

/// `if-match` on a read: the read answers only while the load balancer's ETag matches.
struct ReadIfMatch(Option<String>);

impl FromRequestParts<OciState> for ReadIfMatch {
    type Rejection = OciError;

    async fn from_request_parts(parts: &mut Parts, _: &OciState) -> Result<Self, OciError> {
        parts
            .headers
            .get("if-match")
            .map(|v| {
                v.to_str()
                    .map(str::to_owned)
                    .map_err(|_| OciError::invalid("header if-match is not valid text"))
            })
            .transpose()
            .map(ReadIfMatch)
    }
}

/// A read's answer: the body with the load balancer's ETag.
fn json_for<T: serde::Serialize>(
    cfg: &Config,
    lb: &LoadBalancerId,
    cond: &ReadIfMatch,
    body: &T,
) -> OciResult {
    if let (Some(want), Some(v)) = (&cond.0, cfg.loadbalancers.get(lb)) {
        let current = etag(v.mod_revision);
        if !fulcrum_control::etag_matches(want, &current) {
            return Err(OciError::from(ControlError::PreconditionFailed { current }));
        }
    }
    Ok(with_etag(axum::Json(body).into_response(), cfg, lb))
}

/// A mutation's answer: 204 with the work request that tracks it.
fn accepted(cp: &ControlPlane, outcome: &Outcome) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&wr_ocid(&outcome.work_request.id)) {
        resp.headers_mut().insert("opc-work-request-id", v);
    }
    match &outcome.work_request.loadbalancer_id {
        Some(lb) => with_etag(resp, &cp.view(), lb),
        None => resp,
    }
}

// ---- lookups by OCI name -------------------------------------------------------------

fn find_lb<'a>(
    cfg: &'a Config,
    id: &LoadBalancerId,
) -> Result<&'a Versioned<fulcrum_model::LoadBalancer>, OciError> {
    cfg.loadbalancers
        .get(id)
        .ok_or_else(|| OciError::not_found(format!("load balancer {} not found", lb_ocid(id))))
}

fn find_set<'a>(cfg: &'a Config, lb: &LoadBalancerId, name: &str) -> Result<&'a Pool, OciError> {
    find_lb(cfg, lb)?;
    cfg.pools
        .values()
        .map(|p| &p.value)
        .find(|p| &p.loadbalancer_id == lb && pool_name(p) == name)
        .ok_or_else(|| OciError::not_found(format!("backend set {name:?} not found")))
}

fn find_backend<'a>(cfg: &'a Config, pool: &Pool, name: &str) -> Result<&'a Member, OciError> {
    cfg.members_of(&pool.id)
        .map(|m| &m.value)
        .find(|m| m.spec.endpoint() == name)
        .ok_or_else(|| {
            OciError::not_found(format!(
                "backend {name:?} not found in backend set {:?}",
                pool_name(pool)
            ))
        })
}

// ---- load balancers ------------------------------------------------------------------

async fn list_load_balancers(
    State(s): State<OciState>,
    Extension(caller): Extension<OciPrincipal>,
    q: QueryMap,
) -> OciResult {
    let Some(compartment_id) = q.0.get("compartmentId") else {
        return Err(OciError::missing("compartmentId"));
    };
    if !caller.admits_compartment(compartment_id) {
        return Err(OciError::not_found(format!(
            "compartment {compartment_id} not found"
        )));
    }
    let (limit, offset) = (q.limit()?, q.offset()?);
    let full = s.app.control.view();
    let cfg = full.scoped(&caller.scope());
    let mut all: Vec<_> = cfg
        .loadbalancers
        .values()
        // Load balancers made outside OCI belong to no compartment: listed in every one.
        .filter(|v| {
            let c = compartment(&v.value);
            c.is_empty() || &c == compartment_id
        })
        .map(|v| load_balancer(&s.app.control, &cfg, v))
        .filter(|v| {
            q.0.get("displayName").is_none_or(|n| &v.display_name == n)
                && q.0
                    .get("lifecycleState")
                    .is_none_or(|st| v.lifecycle_state == st)
        })
        .collect();
    let more = all.len() > offset + limit;
    let page: Vec<_> = all.drain(..).skip(offset).take(limit).collect();
    let mut resp = axum::Json(page).into_response();
    if more && let Ok(v) = HeaderValue::from_str(&(offset + limit).to_string()) {
        resp.headers_mut().insert("opc-next-page", v);
    }
    Ok(resp)
}

/// CreateLoadBalancer with its backend sets and listeners, all in one transaction.
async fn create_load_balancer(
    State(s): State<OciState>,
    Ctx(mut ctx): Ctx,
    headers: http::HeaderMap,
    body: Bytes,
) -> OciResult {
    require_json(&headers)?;
    ctx.if_match = None;
    let req: CreateLoadBalancerIn = parse_body(&body)?;
    req.check_unsupported()?;
    let name = req
        .display_name
        .clone()
        .ok_or_else(|| OciError::missing("displayName"))?;
    let mut spec = LoadBalancerSpec::new(name);
    spec.labels = req.labels()?;
    for (name, h) in req.hostnames.iter().flatten() {
        spec.hostnames.push(routing::hostname_of(
            name,
            h,
            &format!("hostnames.{name}."),
        )?);
    }
    if req.is_delete_protection_enabled == Some(true) {
        spec.locks.push(ResourceLock {
            kind: LockKind::Delete,
            message: "delete protection".into(),
        });
    }
    let listeners_in = req.listeners.unwrap_or_default();
    let sets_in = req.backend_sets.unwrap_or_default();
    let mut listener_parts = Vec::new();
    for (name, l) in &listeners_in {
        let prefix = format!("listeners.{name}.");
        check_name(name, &format!("{prefix}name"))?;
        let parts = l.to_parts(&prefix)?;
        if parts.certificate_name.is_some() {
            return Err(OciError::invalid(format!(
                "{prefix}sslConfiguration: a new load balancer has no certificates yet (its certificates field is not supported); create the load balancer, then CreateCertificate, then the listener"
            )));
        }
        if !sets_in.contains_key(&parts.default_backend_set) {
            return Err(OciError::invalid(format!(
                "{prefix}defaultBackendSetName {:?} is not a backend set of the request",
                parts.default_backend_set
            )));
        }
        listener_parts.push((name, parts));
    }
    let mut pools = Vec::new();
    for (name, bs) in &sets_in {
        // A backend set serves HTTP unless a TCP listener routes to it.
        let tcp = listener_parts.iter().any(|(_, l)| {
            l.default_backend_set == *name && l.protocol == fulcrum_model::ListenerProtocol::Tcp
        });
        let protocol = if tcp {
            PoolProtocol::Tcp
        } else {
            PoolProtocol::Http
        };
        let id = ControlPlane::new_pool_id();
        let prefix = format!("backendSets.{name}.");
        check_name(name, &format!("{prefix}name"))?;
        let parts = bs.to_parts(name, &id, protocol, &prefix)?;
        pools.push(NewPool {
            id,
            spec: parts.spec,
            members: parts.members,
            monitor: Some(parts.monitor),
        });
    }
    let listeners = listener_parts
        .into_iter()
        .map(|(name, parts)| {
            let pool = pools
                .iter()
                .find(|p| p.spec.name == parts.default_backend_set)
                .map(|p| p.id.clone());
            listener_spec(name, &parts, pool, None)
        })
        .collect();
    let outcome = s
        .app
        .control
        .add_resources(
            &ctx,
            "CreateLoadBalancer",
            NewResources {
                parent: Parent::New(spec, Vip::Allocate { subnet: None }),
                pools,
                listeners,
            },
        )
        .await?;
    Ok(accepted(&s.app.control, &outcome))
}

fn listener_spec(
    name: &str,
    parts: &ListenerParts,
    pool: Option<fulcrum_model::PoolId>,
    tls: Option<fulcrum_model::ListenerTls>,
) -> ListenerSpec {
    let mut timeouts = ListenerTimeouts::default();
    if let Some(ms) = parts.idle_ms {
        timeouts.idle_ms = ms;
    }
    ListenerSpec {
        name: name.to_owned(),
        description: String::new(),
        protocol: parts.protocol,
        port: parts.port,
        default_pool_id: pool,
        routes: Vec::new(),
        route_set: parts
            .path_route_set
            .clone()
            .or_else(|| parts.routing_policy.clone()),
        hostnames: parts.hostname_names.clone(),
        admin_state_up: true,
        tls,
        connection_limit: None,
        timeouts,
        access_log: Default::default(),
        request_id: true,
    }
}

async fn get_load_balancer(State(s): State<OciState>, p: Params, cond: ReadIfMatch) -> OciResult {
    let id = p.lb();
    let cfg = s.app.control.view();
    let v = find_lb(&cfg, &id)?;
    json_for(&cfg, &id, &cond, &load_balancer(&s.app.control, &cfg, v))
}

/// UpdateLoadBalancer: display name, delete protection (a DELETE lock) and free-form tags.
/// The patch is computed from the load balancer as read; without the caller's own
/// `if-match`, the change is pinned to that state (and re-read if it moved), so a
/// concurrent change of its locks or tags is never lost.
async fn update_load_balancer(
    State(s): State<OciState>,
    p: Params,
    Ctx(ctx): Ctx,
    headers: http::HeaderMap,
    body: Bytes,
) -> OciResult {
    require_json(&headers)?;
    let req: UpdateLoadBalancerIn = parse_body(&body)?;
    let id = p.lb();
    let mut attempts = 0;
    loop {
        let (patch, seen) = {
            let cfg = s.app.control.view();
            let v = find_lb(&cfg, &id)?;
            (req.to_patch(&v.value)?, etag(v.mod_revision))
        };
        let mut pinned = ctx.clone();
        if pinned.if_match.is_none() {
            pinned.if_match = Some(IfMatch {
                scope: EtagScope::LoadBalancer,
                value: seen,
            });
        }
        match s
            .app
            .control
            .update_loadbalancer(&pinned, &id, &patch)
            .await
        {
            Err(ControlError::PreconditionFailed { .. })
                if ctx.if_match.is_none() && attempts < 5 =>
            {
                attempts += 1;
            }
            result => return Ok(accepted(&s.app.control, &result?)),
        }
    }
}

/// Deletes the load balancer with everything under it, as OCI does.
async fn delete_load_balancer(State(s): State<OciState>, p: Params, Ctx(ctx): Ctx) -> OciResult {
    let outcome = s
        .app
        .control
        .delete_loadbalancer(&ctx, &p.lb(), true)
        .await?;
    Ok(accepted(&s.app.control, &outcome))
}

// ---- backend sets --------------------------------------------------------------------

async fn list_backend_sets(State(s): State<OciState>, p: Params, cond: ReadIfMatch) -> OciResult {
    let id = p.lb();
    let cfg = s.app.control.view();
    find_lb(&cfg, &id)?;
    let sets: Vec<_> = cfg
        .pools_of(&id)
        .map(|v| backend_set(&cfg, &v.value))
        .collect();
    json_for(&cfg, &id, &cond, &sets)
}

/// CreateBackendSet: the pool, its backends and its health checker in one transaction.
async fn create_backend_set(
    State(s): State<OciState>,
    p: Params,
    Ctx(ctx): Ctx,
    headers: http::HeaderMap,
    body: Bytes,
) -> OciResult {
    require_json(&headers)?;
    let req: BackendSetIn = parse_body(&body)?;
    let name = req.name.clone().ok_or_else(|| OciError::missing("name"))?;
    check_name(&name, "name")?;
    let id = ControlPlane::new_pool_id();
    let parts = req.to_parts(&name, &id, PoolProtocol::Http, "")?;
    let outcome = s
        .app
        .control
        .add_resources(
            &ctx,
            "CreateBackendSet",
            NewResources {
                parent: Parent::Existing(p.lb()),
                pools: vec![NewPool {
                    id,
                    spec: parts.spec,
                    members: parts.members,
                    monitor: Some(parts.monitor),
                }],
                listeners: Vec::new(),
            },
        )
        .await
        .map_err(name_conflict)?;
    Ok(accepted(&s.app.control, &outcome))
}

/// A duplicate (backend set or listener name, backend `ip:port`) is OCI's 409 Conflict,
/// not a 400.
fn name_conflict(e: ControlError) -> OciError {
    match &e {
        ControlError::Invalid(v) if v.first().message.contains("already") => {
            OciError::new(StatusCode::CONFLICT, "Conflict", v.first().message.clone())
        }
        _ => e.into(),
    }
}

async fn get_backend_set(State(s): State<OciState>, p: Params, cond: ReadIfMatch) -> OciResult {
    let id = p.lb();
    let cfg = s.app.control.view();
    let pool = find_set(&cfg, &id, p.get("set"))?;
    json_for(&cfg, &id, &cond, &backend_set(&cfg, pool))
}

/// UpdateBackendSet: policy, backends (the exact list), health checker and session
/// persistence, all in one transaction.
async fn update_backend_set(
    State(s): State<OciState>,
    p: Params,
    Ctx(ctx): Ctx,
    headers: http::HeaderMap,
    body: Bytes,
) -> OciResult {
    require_json(&headers)?;
    let req: BackendSetIn = parse_body(&body)?;
    if req.backends.is_none() {
        return Err(OciError::missing("backends"));
    }
    let (pool_id, name, protocol) = {
        let cfg = s.app.control.view();
        let pool = find_set(&cfg, &p.lb(), p.get("set"))?;
        (pool.id.clone(), pool.spec.name.clone(), pool.spec.protocol)
    };
    let parts = req.to_parts(&name, &pool_id, protocol, "")?;
    let outcome = s
        .app
        .control
        .update_pool_tree(
            &ctx,
            "UpdateBackendSet",
            &pool_id,
            PoolUpdate {
                patch: parts.pool_patch(),
                members: Some(parts.members),
                monitor: Some(parts.monitor),
            },
        )
        .await?;
    Ok(accepted(&s.app.control, &outcome))
}

async fn delete_backend_set(State(s): State<OciState>, p: Params, Ctx(ctx): Ctx) -> OciResult {
    let pool_id = find_set(&s.app.control.view(), &p.lb(), p.get("set"))?
        .id
        .clone();
    let outcome = s.app.control.delete_pool(&ctx, &pool_id).await?;
    Ok(accepted(&s.app.control, &outcome))
}

// ---- backends ------------------------------------------------------------------------

async fn list_backends(State(s): State<OciState>, p: Params, cond: ReadIfMatch) -> OciResult {
    let id = p.lb();
    let cfg = s.app.control.view();
    let pool = find_set(&cfg, &id, p.get("set"))?;
    let backends: Vec<_> = cfg
        .members_of(&pool.id)
        .map(|m| backend(&m.value))
        .collect();
    json_for(&cfg, &id, &cond, &backends)
}

async fn create_backend(
    State(s): State<OciState>,
    p: Params,
    Ctx(ctx): Ctx,
    headers: http::HeaderMap,
    body: Bytes,
) -> OciResult {
    require_json(&headers)?;
    let spec = parse_body::<BackendIn>(&body)?.to_spec("")?;
    let pool_id = find_set(&s.app.control.view(), &p.lb(), p.get("set"))?
        .id
        .clone();
    let outcome = s
        .app
        .control
        .create_member(&ctx, &pool_id, spec)
        .await
        .map_err(name_conflict)?;
    Ok(accepted(&s.app.control, &outcome))
}

async fn get_backend(State(s): State<OciState>, p: Params, cond: ReadIfMatch) -> OciResult {
    let id = p.lb();
    let cfg = s.app.control.view();
    let pool = find_set(&cfg, &id, p.get("set"))?;
    let member = find_backend(&cfg, pool, p.get("backend"))?;
    json_for(&cfg, &id, &cond, &backend(member))
}

/// UpdateBackend (seed 000).
async fn update_backend(
    State(s): State<OciState>,
    p: Params,
    Ctx(ctx): Ctx,
    headers: http::HeaderMap,
    body: Bytes,
) -> OciResult {
    require_json(&headers)?;
    let patch = parse_body::<UpdateBackendIn>(&body)?.to_patch()?;
    let (pool_id, member_id) = {
        let cfg = s.app.control.view();
        let pool = find_set(&cfg, &p.lb(), p.get("set"))?;
        let member = find_backend(&cfg, pool, p.get("backend"))?;
        (pool.id.clone(), member.id.clone())
    };
    let outcome = s
        .app
        .control
        .update_member(&ctx, &pool_id, &member_id, &patch)
        .await?;
    Ok(accepted(&s.app.control, &outcome))
}

async fn delete_backend(State(s): State<OciState>, p: Params, Ctx(ctx): Ctx) -> OciResult {
    let (pool_id, member_id) = {
        let cfg = s.app.control.view();
        let pool = find_set(&cfg, &p.lb(), p.get("set"))?;
        let member = find_backend(&cfg, pool, p.get("backend"))?;
        (pool.id.clone(), member.id.clone())
    };
    let outcome = s
        .app
        .control
        .delete_member(&ctx, &pool_id, &member_id)
        .await?;
    Ok(accepted(&s.app.control, &outcome))
}

// ---- health checkers -----------------------------------------------------------------

async fn get_health_checker(State(s): State<OciState>, p: Params, cond: ReadIfMatch) -> OciResult {
    let id = p.lb();
    let cfg = s.app.control.view();
    let pool = find_set(&cfg, &id, p.get("set"))?;
    let monitor = cfg.monitor_of(&pool.id).ok_or_else(|| {
        OciError::not_found(format!(
            "backend set {:?} has no health checker",
            pool_name(pool)
        ))
    })?;
    json_for(&cfg, &id, &cond, &health_checker(&monitor.value))
}

/// UpdateHealthChecker replaces the checker (creating one for a pool made without).
async fn update_health_checker(
    State(s): State<OciState>,
    p: Params,
    Ctx(ctx): Ctx,
    headers: http::HeaderMap,
    body: Bytes,
) -> OciResult {
    require_json(&headers)?;
    let req: HealthCheckerIn = parse_body(&body)?;
    let (pool_id, monitor_id) = {
        let cfg = s.app.control.view();
        let pool = find_set(&cfg, &p.lb(), p.get("set"))?;
        (
            pool.id.clone(),
            cfg.monitor_of(&pool.id).map(|m| m.value.id.clone()),
        )
    };
    let spec = req.to_spec(pool_id, "")?;
    let outcome = match monitor_id {
        Some(id) => {
            let patch = serde_json::to_value(&spec)
                .map_err(|e| OciError::from(ControlError::Internal(e.to_string())))?;
            s.app.control.update_monitor(&ctx, &id, &patch).await?
        }
        None => s.app.control.create_monitor(&ctx, spec).await?,
    };
    Ok(accepted(&s.app.control, &outcome))
}

// ---- listeners -----------------------------------------------------------------------

fn resolve_set(
    cfg: &Config,
    lb: &LoadBalancerId,
    parts: &ListenerParts,
) -> Result<fulcrum_model::PoolId, OciError> {
    find_set(cfg, lb, &parts.default_backend_set)
        .map(|p| p.id.clone())
        .map_err(|_| {
            OciError::invalid(format!(
                "defaultBackendSetName {:?} is not a backend set of this load balancer",
                parts.default_backend_set
            ))
        })
}

async fn create_listener(
    State(s): State<OciState>,
    p: Params,
    Ctx(ctx): Ctx,
    headers: http::HeaderMap,
    body: Bytes,
) -> OciResult {
    require_json(&headers)?;
    let req: ListenerIn = parse_body(&body)?;
    let name = req.name.clone().ok_or_else(|| OciError::missing("name"))?;
    check_name(&name, "name")?;
    let parts = req.to_parts("")?;
    let lb = p.lb();
    let (pool, tls) = {
        let cfg = s.app.control.view();
        find_lb(&cfg, &lb)?;
        check_listener_refs(&cfg, &lb, &parts, None)?;
        (
            resolve_set(&cfg, &lb, &parts)?,
            listener_tls(&cfg, &lb, &parts)?,
        )
    };
    let outcome = s
        .app
        .control
        .add_resources(
            &ctx,
            "CreateListener",
            NewResources {
                parent: Parent::Existing(lb),
                pools: Vec::new(),
                listeners: vec![listener_spec(&name, &parts, Some(pool), tls)],
            },
        )
        .await
        .map_err(name_conflict)?;
    Ok(accepted(&s.app.control, &outcome))
}

async fn update_listener(
    State(s): State<OciState>,
    p: Params,
    Ctx(ctx): Ctx,
    headers: http::HeaderMap,
    body: Bytes,
) -> OciResult {
    require_json(&headers)?;
    let parts = parse_body::<ListenerIn>(&body)?.to_parts("")?;
    let lb = p.lb();
    let (listener_id, pool, tls) = {
        let cfg = s.app.control.view();
        find_lb(&cfg, &lb)?;
        let l = find_listener(&cfg, &lb, p.get("listener"))?;
        check_listener_refs(&cfg, &lb, &parts, Some(&l))?;
        (
            l,
            resolve_set(&cfg, &lb, &parts)?,
            listener_tls(&cfg, &lb, &parts)?,
        )
    };
    let idle_ms = parts.idle_ms.unwrap_or(ListenerTimeouts::default().idle_ms);
    // UpdateListenerDetails is the whole listener: without sslConfiguration, no TLS.
    let patch = serde_json::json!({
        "protocol": parts.protocol,
        "port": parts.port,
        "default_pool_id": pool,
        "timeouts": {"idle_ms": idle_ms},
        "route_set": parts.path_route_set.as_ref().or(parts.routing_policy.as_ref()),
        "hostnames": parts.hostname_names,
        "tls": tls,
    });
    let outcome = s
        .app
        .control
        .update_listener(&ctx, &listener_id, &patch)
        .await?;
    Ok(accepted(&s.app.control, &outcome))
}

/// What a listener names is of the kind it names: `pathRouteSetName` a path route set,
/// `routingPolicyName` a routing policy. And one listener per port: OCI's virtual hosting
/// (several listeners on one port told apart by their hostnames) is refused with 409, as
/// fulcrum binds one listener per port; one listener with several hostnames and a routing
/// policy that routes by host serves the same traffic.
fn check_listener_refs(
    cfg: &Config,
    lb: &LoadBalancerId,
    parts: &ListenerParts,
    this: Option<&fulcrum_model::ListenerId>,
) -> Result<(), OciError> {
    let spec = &find_lb(cfg, lb)?.value.spec;
    for (name, want_policy, field) in [
        (&parts.path_route_set, false, "pathRouteSetName"),
        (&parts.routing_policy, true, "routingPolicyName"),
    ] {
        if let Some(name) = name
            && spec.route_set(name).map(routing::is_policy) != Some(want_policy)
        {
            let what = if want_policy {
                "routing policy"
            } else {
                "path route set"
            };
            return Err(OciError::invalid(format!(
                "{field}: the load balancer has no {what} {name:?}"
            )));
        }
    }
    if let Some(other) = cfg.listeners_of(lb).find(|l| {
        Some(&l.value.id) != this
            && l.value.spec.port == parts.port
            && (!l.value.spec.hostnames.is_empty() || !parts.hostname_names.is_empty())
    }) {
        return Err(OciError::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "port {} is used by listener {:?}: fulcrum serves one listener per port, so several listeners on one port told apart by hostnames are not supported; name all the hostnames on one listener and route by host with a routing policy",
                parts.port,
                listener_name(&other.value)
            ),
        ));
    }
    Ok(())
}

/// The TLS settings `sslConfiguration` asks for: its certificate by name.
fn listener_tls(
    cfg: &Config,
    lb: &LoadBalancerId,
    parts: &ListenerParts,
) -> Result<Option<fulcrum_model::ListenerTls>, OciError> {
    parts
        .certificate_name
        .as_deref()
        .map(|name| certificates::listener_tls(cfg, lb, name, "sslConfiguration.certificateName"))
        .transpose()
}

fn find_listener(
    cfg: &Config,
    lb: &LoadBalancerId,
    name: &str,
) -> Result<fulcrum_model::ListenerId, OciError> {
    cfg.listeners_of(lb)
        .find(|l| listener_name(&l.value) == name)
        .map(|l| l.value.id.clone())
        .ok_or_else(|| OciError::not_found(format!("listener {name:?} not found")))
}

async fn delete_listener(State(s): State<OciState>, p: Params, Ctx(ctx): Ctx) -> OciResult {
    let lb = p.lb();
    let listener_id = {
        let cfg = s.app.control.view();
        find_lb(&cfg, &lb)?;
        find_listener(&cfg, &lb, p.get("listener"))?
    };
    let outcome = s.app.control.delete_listener(&ctx, &listener_id).await?;
    Ok(accepted(&s.app.control, &outcome))
}

// ---- path route sets -----------------------------------------------------------------

/// A load balancer's path route sets: its route sets that are not routing policies.
struct PathRouteSets;

impl parts::LbPart for PathRouteSets {
    const KIND: &'static str = "path route set";
    const PARAM: &'static str = "prs";
    const DELETE: &'static str = "DeletePathRouteSet";
    type View = PathRouteSetView;

    fn views(cfg: &Config, spec: &LoadBalancerSpec) -> Vec<(String, PathRouteSetView)> {
        parts::route_set_views(spec, false, |set| path_route_set(cfg, set))
    }

    fn remove(spec: &mut LoadBalancerSpec, name: &str) -> bool {
        parts::remove_route_set(spec, name, false)
    }
}

/// CreatePathRouteSet (`create`) and UpdatePathRouteSet: a route set of the load balancer
/// (the model's `route_sets`) with the path routes given, the backend sets resolved on the
/// view the change is planned on.
async fn put_path_route_set(
    s: &OciState,
    p: &Params,
    ctx: &RequestContext,
    req: &PathRouteSetIn,
    name: &str,
    create: bool,
) -> OciResult {
    let routes = wire::path_routes(req.path_routes.as_deref())?;
    let input = serde_json::json!({"name": name, "pathRoutes": req.path_routes});
    let operation = match create {
        true => "CreatePathRouteSet",
        false => "UpdatePathRouteSet",
    };
    parts::change::<PathRouteSets, _>(
        s,
        ctx,
        &p.lb(),
        operation,
        name,
        create,
        &input,
        |cfg, lb| {
            let model = path_routes_to_model(&routes, parts::backend_set(cfg, &lb.id))?;
            parts::put_route_set::<PathRouteSets>(lb, name, model, None, create)
        },
    )
    .await
}

async fn create_path_route_set(
    State(s): State<OciState>,
    p: Params,
    Ctx(ctx): Ctx,
    headers: http::HeaderMap,
    body: Bytes,
) -> OciResult {
    require_json(&headers)?;
    let req: PathRouteSetIn = parse_body(&body)?;
    let name = req.name.clone().ok_or_else(|| OciError::missing("name"))?;
    check_name(&name, "name")?;
    put_path_route_set(&s, &p, &ctx, &req, &name, true).await
}

/// UpdatePathRouteSet: the set's routes replaced by the ones given.
async fn update_path_route_set(
    State(s): State<OciState>,
    p: Params,
    Ctx(ctx): Ctx,
    headers: http::HeaderMap,
    body: Bytes,
) -> OciResult {
    require_json(&headers)?;
    let req: PathRouteSetIn = parse_body(&body)?;
    put_path_route_set(&s, &p, &ctx, &req, p.get("prs"), false).await
}

// ---- work requests -------------------------------------------------------------------

fn compartment_of(cp: &ControlPlane, lb: Option<&LoadBalancerId>) -> String {
    lb.and_then(|id| {
        cp.view()
            .loadbalancers
            .get(id)
            .map(|v| compartment(&v.value))
    })
    .unwrap_or_default()
}

async fn get_work_request(
    State(s): State<OciState>,
    Extension(caller): Extension<OciPrincipal>,
    p: Params,
) -> OciResult {
    let id = wr_id(p.get("id"));
    let scope = caller.scope();
    let wr = s
        .app
        .control
        .read_work_request(&id, caller.reader(&scope))
        .await?
        .ok_or_else(|| OciError::not_found(format!("work request {} not found", p.get("id"))))?;
    let c = compartment_of(&s.app.control, wr.loadbalancer_id.as_ref());
    Ok(axum::Json(work_request(&wr, c)).into_response())
}

/// Newest first; `page` is the offset `opc-next-page` gave.
async fn list_work_requests(
    State(s): State<OciState>,
    Extension(caller): Extension<OciPrincipal>,
    p: Params,
    q: QueryMap,
) -> OciResult {
    let lb = p.lb();
    let (limit, offset) = (q.limit()?, q.offset()?);
    let scope = caller.scope();
    let all = s
        .app
        .control
        .list_work_requests(Some(&lb), caller.reader(&scope))
        .await?;
    if all.is_empty() {
        find_lb(&s.app.control.view(), &lb)?;
    }
    let c = compartment_of(&s.app.control, Some(&lb));
    let more = all.len() > offset + limit;
    let page: Vec<_> = all
        .iter()
        .skip(offset)
        .take(limit)
        .map(|wr| work_request(wr, c.clone()))
        .collect();
    let mut resp = axum::Json(page).into_response();
    if more && let Ok(v) = HeaderValue::from_str(&(offset + limit).to_string()) {
        resp.headers_mut().insert("opc-next-page", v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    //! The router in process: authentication, rate limits and error shapes, with requests
    //! signed here the way the SDK signs them.
    #![allow(clippy::unwrap_used)]

    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as B64;
    use http_body_util::BodyExt;
    use rsa::pkcs1v15::SigningKey;
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::signature::{SignatureEncoding, Signer};
    use sha2::{Digest, Sha256};
    use tower::ServiceExt;

    use super::*;

    const PRIVATE: &str = include_str!("testdata/router_test_key.pem");
    const KEY_ID: &str =
        "ocid1.tenancy.oc1..t/ocid1.user.oc1..u/00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff";

    async fn app(rate: f64, burst: u32) -> (tempfile::TempDir, Router) {
        let (dir, control) = fulcrum_control::testing::control().await;
        let private = rsa::RsaPrivateKey::from_pkcs8_pem(PRIVATE).unwrap();
        let state = AppState {
            control,
            tokens: Arc::new(Vec::new()),
            client_certs: Arc::new(Vec::new()),
            limiter: Arc::new(fulcrum_control::RateLimiter::new(rate, burst)),
            auth_failures: Arc::new(crate::auth::AuthFailures::new(
                std::time::Duration::from_secs(10),
                crate::auth::AuthThrottle::default(),
            )),
        };
        let config = OciConfig {
            keys: vec![OciKey {
                key_id: KEY_ID.into(),
                public_key_pem: PublicKeyPem(private.to_public_key()),
                name: Some("tester".into()),
                compartments: None,
            }],
        };
        (dir, router(state, &config))
    }

    /// A request signed as the SDK signs it.
    fn signed(method: &str, target: &str, body: &str) -> Request {
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let host = "127.0.0.1:9000";
        let mut lines = vec![
            format!("date: {date}"),
            format!("(request-target): {} {target}", method.to_lowercase()),
            format!("host: {host}"),
        ];
        let mut names = "date (request-target) host".to_owned();
        let mut b = http::Request::builder()
            .method(method)
            .uri(target)
            .header("date", &date)
            .header("host", host);
        if ["PUT", "POST", "PATCH"].contains(&method) {
            let digest = B64.encode(Sha256::digest(body.as_bytes()));
            lines.push(format!("content-length: {}", body.len()));
            lines.push("content-type: application/json".into());
            lines.push(format!("x-content-sha256: {digest}"));
            names.push_str(" content-length content-type x-content-sha256");
            b = b
                .header("content-length", body.len())
                .header("content-type", "application/json")
                .header("x-content-sha256", digest);
        }
        let key = SigningKey::<Sha256>::new(rsa::RsaPrivateKey::from_pkcs8_pem(PRIVATE).unwrap());
        let sig = B64.encode(key.sign(lines.join("\n").as_bytes()).to_bytes());
        b.header(
            "authorization",
            format!(
                r#"Signature algorithm="rsa-sha256",headers="{names}",keyId="{KEY_ID}",signature="{sig}",version="1""#
            ),
        )
        .body(Body::from(body.to_owned()))
        .unwrap()
    }

    async fn call(app: &Router, req: Request) -> (StatusCode, http::HeaderMap, serde_json::Value) {
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, headers, json)
    }

    #[test]
    fn a_key_limited_to_compartments_admits_only_theirs() {
        let lb = |labels: serde_json::Value| fulcrum_model::LoadBalancer {
            id: LoadBalancerId("x".into()),
            spec: serde_json::from_value(serde_json::json!({"name": "x", "labels": labels}))
                .unwrap(),
            created_at: chrono::DateTime::UNIX_EPOCH,
            updated_at: chrono::DateTime::UNIX_EPOCH,
        };
        let key = OciPrincipal {
            name: "k".into(),
            compartments: Some(vec!["ocid1.compartment.oc1..a".into()]),
        };
        assert!(key.admits_compartment("ocid1.compartment.oc1..a"));
        assert!(!key.admits_compartment("ocid1.compartment.oc1..b"));
        let scope = key.scope();
        assert!(scope.admits(&lb(
            serde_json::json!({LABEL_COMPARTMENT: "ocid1.compartment.oc1..a"})
        )));
        assert!(!scope.admits(&lb(
            serde_json::json!({LABEL_COMPARTMENT: "ocid1.compartment.oc1..b"})
        )));
        assert!(
            !scope.admits(&lb(serde_json::json!({}))),
            "made outside OCI"
        );
        let all = OciPrincipal {
            name: "k".into(),
            compartments: None,
        };
        assert!(all.scope().is_all() && all.admits_compartment("anything"));
    }

    #[test]
    fn the_load_balancer_of_a_path() {
        let id = |p: &str| path_lb(p).map(|l| l.0);
        assert_eq!(
            id("/20170115/loadBalancers/ocid1.loadbalancer.oc1.fulcrum.abc/backendSets"),
            Some("abc".into())
        );
        assert_eq!(
            id("//20170115/loadBalancers/abc"),
            Some("abc".into()),
            "a doubled slash"
        );
        assert_eq!(
            id("/20170115/loadBalancers/a%62c"),
            Some("abc".into()),
            "decoded"
        );
        assert_eq!(id("/20170115/loadBalancers"), None);
        assert_eq!(id("/20170115/loadBalancers/"), None);
        assert_eq!(id("/20170115/loadBalancerWorkRequests/w"), None);
    }

    #[tokio::test]
    async fn signed_requests_pass_and_others_are_401_in_ocis_shape() {
        let (_dir, app) = app(1000.0, 1000).await;
        let (status, headers, body) =
            call(&app, signed("GET", "/20170115/loadBalancers/nope", "")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["code"], "NotAuthorizedOrNotFound");
        assert!(headers.contains_key("opc-request-id"));

        let unsigned = http::Request::get("/20170115/loadBalancers/nope")
            .body(Body::empty())
            .unwrap();
        let (status, headers, body) = call(&app, unsigned).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["code"], "NotAuthenticated");
        assert!(headers.contains_key("opc-request-id"));

        // Unknown paths are not revealed to unsigned callers either.
        let unsigned = http::Request::get("/20170115/whatever")
            .body(Body::empty())
            .unwrap();
        assert_eq!(call(&app, unsigned).await.0, StatusCode::UNAUTHORIZED);
        let (status, _, body) = call(&app, signed("GET", "/20170115/whatever", "")).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("NotAuthorizedOrNotFound"))
        );
        let (status, _, body) =
            call(&app, signed("PATCH", "/20170115/loadBalancers/x", "{}")).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("NotAuthorizedOrNotFound"))
        );
    }

    #[tokio::test]
    async fn create_then_read_back_with_the_load_balancers_etag() {
        let (_dir, app) = app(1000.0, 1000).await;
        let body = r#"{"compartmentId": "c", "displayName": "lb", "shapeName": "flexible", "subnetIds": ["s"],
            "backendSets": {"bs": {"policy": "LEAST_CONNECTIONS", "healthChecker": {"protocol": "TCP"},
                                   "backends": [{"ipAddress": "10.0.0.1", "port": 80}]}}}"#;
        let (status, headers, _) =
            call(&app, signed("POST", "/20170115/loadBalancers", body)).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let wr = headers["opc-work-request-id"].to_str().unwrap().to_owned();
        let (status, _, wr) = call(
            &app,
            signed(
                "GET",
                &format!("/20170115/loadBalancerWorkRequests/{wr}"),
                "",
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(wr["type"], "CreateLoadBalancer");
        let lb = wr["loadBalancerId"].as_str().unwrap().to_owned();
        let (status, headers, backend) = call(
            &app,
            signed(
                "GET",
                &format!("/20170115/loadBalancers/{lb}/backendSets/bs/backends/10.0.0.1%3A80"),
                "",
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(backend["name"], "10.0.0.1:80");
        let etag = headers[http::header::ETAG].clone();
        let (_, headers, set) = call(
            &app,
            signed(
                "GET",
                &format!("/20170115/loadBalancers/{lb}/backendSets/bs"),
                "",
            ),
        )
        .await;
        assert_eq!(headers[http::header::ETAG], etag);
        assert_eq!(set["policy"], "LEAST_CONNECTIONS");
    }

    #[test]
    fn the_config_section_is_checked_when_read() {
        let pem = rsa::pkcs8::EncodePublicKey::to_public_key_pem(
            &rsa::RsaPrivateKey::from_pkcs8_pem(PRIVATE)
                .unwrap()
                .to_public_key(),
            rsa::pkcs8::LineEnding::LF,
        )
        .unwrap();
        let section = |key_id: &str, pem: &str| serde_json::json!({"keys": [{"key_id": key_id, "public_key_pem": pem}]});
        let ok: OciConfig = serde_json::from_value(section(KEY_ID, &pem)).unwrap();
        assert_eq!(ok.keys.len(), 1);
        let err = serde_json::from_value::<OciConfig>(section("just-a-name", &pem)).unwrap_err();
        assert!(err.to_string().contains("tenancy"), "{err}");
        let err = serde_json::from_value::<OciConfig>(section(KEY_ID, "not a key")).unwrap_err();
        assert!(err.to_string().contains("PEM"), "{err}");
        let twice = serde_json::json!({"keys": [
            {"key_id": KEY_ID, "public_key_pem": pem}, {"key_id": KEY_ID, "public_key_pem": pem}]});
        let err = serde_json::from_value::<OciConfig>(twice).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
    }

    #[tokio::test]
    async fn an_endpoint_with_a_trailing_slash_works() {
        let (_dir, app) = app(1000.0, 1000).await;
        let (status, _, body) = call(&app, signed("GET", "//20170115/loadBalancers/x", "")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["code"], "NotAuthorizedOrNotFound");
        assert!(body["message"].as_str().unwrap().contains("load balancer"));
    }

    #[tokio::test]
    async fn each_key_is_rate_limited_with_429_too_many_requests() {
        let (_dir, app) = app(0.01, 2).await;
        for _ in 0..2 {
            let (status, _, _) = call(&app, signed("GET", "/20170115/loadBalancers/x", "")).await;
            assert_eq!(status, StatusCode::NOT_FOUND);
        }
        let (status, headers, body) =
            call(&app, signed("GET", "/20170115/loadBalancers/x", "")).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(body["code"], "TooManyRequests");
        assert!(headers.contains_key(http::header::RETRY_AFTER));
    }

    /// A body that never arrives.
    struct Stalled;

    impl hyper::body::Body for Stalled {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Pending
        }
    }

    #[tokio::test]
    async fn the_signature_and_the_signed_length_are_checked_before_the_body() {
        let (_dir, app) = app(1000.0, 1000).await;
        let target = "/20170115/loadBalancers/x/backendSets/bs/backends/10.0.0.1:80";
        let tampered = {
            let mut r = signed("PUT", target, "{}").map(|_| Body::new(Stalled));
            *r.uri_mut() = target.replace("bs", "other").parse().unwrap();
            r
        };
        let too_large =
            signed("PUT", target, &" ".repeat(MAX_BODY + 1)).map(|_| Body::new(Stalled));
        for (what, req, status, code) in [
            (
                "tampered",
                tampered,
                StatusCode::UNAUTHORIZED,
                "NotAuthenticated",
            ),
            (
                "too large",
                too_large,
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
            ),
        ] {
            let answered =
                tokio::time::timeout(std::time::Duration::from_secs(5), call(&app, req)).await;
            let (got, _, body) = answered.unwrap_or_else(|_| panic!("{what}: waited for the body"));
            assert_eq!(
                (got, body["code"].as_str()),
                (status, Some(code)),
                "{what}: {body}"
            );
        }
    }
}
