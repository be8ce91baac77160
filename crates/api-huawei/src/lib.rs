//! The Huawei Cloud ELB dialect: seed 001 (`PUT /v2.0/lbaas/pools/{pool_id}/members`,
//! shared ELB batch member update) and seed 002 (`PUT /v3/{project_id}/elb/pools/{pool_id}`,
//! UpdatePool), with the load balancer, listener, pool, member and health monitor
//! operations around them, authenticated by AK/SK signatures (`SDK-HMAC-SHA256`) or
//! `X-Auth-Token`.
//!
//! Three path families, one set of handlers:
//! - `/v2.0/lbaas/...`: the OpenStack LBaaS v2 API of Huawei's shared ELB (what
//!   gophercloud and `call_api` send); the project comes from the credential or
//!   `X-Project-Id`.
//! - `/v2/{project_id}/elb/...`: what `huaweicloudsdkelb.v2` sends; same shapes.
//! - `/v3/{project_id}/elb/...`: what `huaweicloudsdkelb.v3` sends; `request_id` in every
//!   success body, lists paged with `marker`/`limit` and `page_info`.
//!
//! Load balancers created through v2 are `shared`, through v3 `dedicated` (the model's
//! [`fulcrum_model::LoadBalancerKind`]); a few pool rules differ by kind.
//!
//! Besides ELB, the VPC v1 calls of Huawei's VPC SDK (`/v1/{project_id}/vpcs`,
//! `/v1/{project_id}/subnets`, [`vpc`]) create the VPCs and subnets load balancers and
//! members name, under the same credentials.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequest, Path, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use subtle::ConstantTimeEq;

// The shared pieces (`fulcrum-api-core`), at the paths this crate's modules name them by
// (`crate::auth`, `crate::body`, `crate::request`, ...).
#[cfg(feature = "fuzzing")]
use fulcrum_api_core::fuzzing;
use fulcrum_api_core::{AppState, UNAVAILABLE_RETRY_SECS, auth, body, decode, request};

mod certificates;
mod error;
/// Entry points for `fulcrum_api::fuzzing` (feature `fuzzing`).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
pub(crate) mod handlers;
mod l7;
mod sign;
#[cfg(test)]
mod tests;
mod views;
mod vpc;

use error::HuaweiError;

/// `[huawei]` in `fulcrum.toml`:
///
/// ```toml
/// [huawei]
/// credentials = [{ ak = "AK...", sk = "SK...", project_id = "0123..." }]
/// tokens = [{ token = "...", project_id = "0123..." }]
/// ```
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HuaweiConfig {
    /// Access keys for `SDK-HMAC-SHA256` signatures.
    #[serde(default)]
    pub credentials: Vec<HuaweiCredential>,
    /// Tokens accepted in `X-Auth-Token`.
    #[serde(default)]
    pub tokens: Vec<HuaweiToken>,
}

/// One AK/SK pair. With `project_id`, requests must name that project (in the path or
/// `X-Project-Id`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HuaweiCredential {
    pub ak: String,
    pub sk: String,
    #[serde(default)]
    pub project_id: Option<String>,
}

impl std::fmt::Debug for HuaweiCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HuaweiCredential")
            .field("ak", &self.ak)
            .field("sk", &"***")
            .field("project_id", &self.project_id)
            .finish()
    }
}

/// A token for `X-Auth-Token`. `name` is the principal in logs and rate limits.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HuaweiToken {
    #[serde(default)]
    pub name: Option<String>,
    pub token: String,
    #[serde(default)]
    pub project_id: Option<String>,
}

impl std::fmt::Debug for HuaweiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HuaweiToken")
            .field("name", &self.name)
            .field("token", &"***")
            .field("project_id", &self.project_id)
            .finish()
    }
}

#[derive(Clone)]
pub(crate) struct HState {
    pub app: AppState,
    config: Arc<HuaweiConfig>,
    /// [`UNVERIFIED_BODY_BUDGET`], in bytes.
    unverified: Arc<tokio::sync::Semaphore>,
}

/// The authenticated caller, the project the request is for, and what it may see: a
/// credential bound to a project sees only that project's load balancers.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub principal: String,
    pub project_id: String,
    pub scope: fulcrum_control::Scope,
}

/// The scope of a credential: its project's load balancers (those created in it, whose
/// project label is it) and the VPCs and subnets, or everything for a credential bound to
/// no project.
pub(crate) fn project_scope(bound: Option<&str>) -> fulcrum_control::Scope {
    let Some(project) = bound.map(str::to_owned) else {
        return fulcrum_control::Scope::All;
    };
    // Its VPCs and subnets too, through the VPC API (not partitioned by project here), and
    // its certificates.
    let owner = project.clone();
    fulcrum_control::Scope::limited(format!("project {project}"), move |lb| {
        lb.spec.labels.get(views::LABEL_PROJECT) == Some(&project)
    })
    .with_networks()
    .owning(move |labels| labels.get(views::LABEL_PROJECT) == Some(&owner))
}

/// Which API family a request came in through: it decides shapes and defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Api {
    /// `/v2.0/lbaas` and `/v2/{project_id}/elb`: shared ELB, LBaaS v2 shapes.
    V2,
    /// `/v3/{project_id}/elb`: dedicated ELB.
    V3,
}

/// Largest request body: AK/SK signing is documented for bodies up to 12 MB.
const MAX_BODY: usize = 12 * 1024 * 1024;
/// Bytes of AK/SK-signed bodies read before their signature is verified, all requests
/// together: the signature covers the body's hash, so a caller who knows an access key
/// (an identifier, not a secret) could otherwise make every connection buffer 12 MB.
const UNVERIFIED_BODY_BUDGET: usize = 32 * 1024 * 1024;

pub fn router(state: AppState, config: &HuaweiConfig) -> Router {
    let hstate = HState {
        app: state,
        config: Arc::new(config.clone()),
        unverified: Arc::new(tokio::sync::Semaphore::new(UNVERIFIED_BODY_BUDGET)),
    };
    Router::new()
        // Anything else under these prefixes is this dialect's 404, after authentication.
        .nest(
            "/v2.0/lbaas",
            handlers::routes(Api::V2)
                .merge(certificates::routes(Api::V2))
                .fallback(no_such_endpoint),
        )
        .nest(
            "/v2/{project_id}/elb",
            handlers::routes(Api::V2)
                .merge(certificates::routes(Api::V2))
                .fallback(no_such_endpoint),
        )
        .nest(
            "/v3/{project_id}/elb",
            handlers::routes(Api::V3)
                .merge(certificates::routes(Api::V3))
                .fallback(no_such_endpoint),
        )
        .merge(vpc::routes())
        .layer(axum::middleware::from_fn_with_state(
            hstate.clone(),
            authenticate,
        ))
        .with_state(hstate)
}

async fn no_such_endpoint() -> HuaweiError {
    HuaweiError::not_found("no such endpoint in this API")
}

/// The project named by the path (`/v2/{p}/…`, `/v3/{p}/…`), if any.
fn path_project(path: &str) -> Option<&str> {
    let mut segs = path.trim_start_matches('/').split('/');
    match segs.next() {
        Some("v1" | "v2" | "v3") => segs.next(),
        _ => None,
    }
}

/// Verifies the AK/SK signature or the token, checks the project and the rate limit,
/// and hands the caller to the handlers. Every failure is a 401 in Huawei's shape; an
/// address throttled for failing authentication is refused (429) first. A token is
/// checked from the headers alone; an AK/SK signature as far as it can be before the body
/// it covers is read (`sign::check_head`).
async fn authenticate(State(s): State<HState>, req: Request, next: Next) -> Response {
    match admit(&s, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn admit(s: &HState, req: Request) -> Result<Request, HuaweiError> {
    let client = crate::auth::client_ip(req.extensions());
    if let Some(wait) = s
        .app
        .auth_failures
        .throttled(client, std::time::Instant::now())
    {
        return Err(HuaweiError::auth_throttled(wait));
    }
    let (mut parts, body) = req.into_parts();
    // The body is read (to hash it) only for a known access key whose signature passed
    // every check that does not need it; otherwise it is passed on untouched, so an
    // unauthenticated caller cannot make us buffer it.
    let mut body = Some(body);
    let mut read_body = None;
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let (principal, bound_project) = if let Some(auth) = header("authorization") {
        let parsed = sign::parse_authorization(auth)
            .map_err(|e| HuaweiError::unauthenticated(e.to_string()))?;
        let cred = s
            .config
            .credentials
            .iter()
            .find(|c| c.ak == parsed.access_key)
            .ok_or_else(|| HuaweiError::unauthenticated("unknown access key"))?;
        let lookup = |name: &str| header(name);
        let now = chrono::Utc::now();
        sign::check_head(&lookup, &parsed, now)
            .map_err(|e| HuaweiError::unauthenticated(e.to_string()))?;
        let bytes = match body.take() {
            Some(b) => read_unverified(s, b).await?,
            None => Bytes::new(),
        };
        let signed = sign::SignedRequest {
            method: parts.method.as_str(),
            raw_path: parts.uri.path(),
            raw_query: parts.uri.query(),
            header: &lookup,
            body: &bytes,
        };
        sign::verify(&signed, &parsed, &cred.sk, now)
            .map_err(|e| HuaweiError::unauthenticated(e.to_string()))?;
        read_body = Some(bytes);
        (format!("huawei-ak:{}", cred.ak), cred.project_id.clone())
    } else if let Some(token) = header("x-auth-token") {
        let mut found = None;
        for (i, t) in s.config.tokens.iter().enumerate() {
            if bool::from(t.token.as_bytes().ct_eq(token.as_bytes())) {
                found = Some((
                    format!(
                        "huawei-token:{}",
                        t.name.clone().unwrap_or_else(|| i.to_string())
                    ),
                    t.project_id.clone(),
                ));
            }
        }
        found.ok_or_else(|| HuaweiError::unauthenticated("invalid X-Auth-Token"))?
    } else {
        return Err(HuaweiError::unauthenticated(
            "missing Authorization (SDK-HMAC-SHA256) or X-Auth-Token",
        ));
    };
    let in_path = path_project(parts.uri.path()).map(|p| {
        percent_encoding::percent_decode_str(p)
            .decode_utf8_lossy()
            .into_owned()
    });
    let in_header = header("x-project-id").map(str::to_owned);
    if in_path.as_deref() == Some("{project_id}") {
        return Err(HuaweiError::invalid(
            "the path holds no project id: build the SDK credentials as BasicCredentials(ak, sk, project_id)",
        ));
    }
    for named in [&in_path, &in_header].into_iter().flatten() {
        if let Some(bound) = &bound_project
            && named != bound
        {
            return Err(HuaweiError::unauthenticated(format!(
                "the credential is not valid for project {named}"
            )));
        }
    }
    if let (Some(p), Some(h)) = (&in_path, &in_header)
        && p != h
    {
        return Err(HuaweiError::invalid(
            "X-Project-Id and the project id in the path differ",
        ));
    }
    let project_id = in_path
        .or(in_header)
        .or_else(|| bound_project.clone())
        .unwrap_or_default();
    if let Err(wait) = s.app.limiter.check(&principal) {
        return Err(fulcrum_control::ControlError::RateLimited { retry_after: wait }.into());
    }
    parts.extensions.insert(Caller {
        principal,
        project_id,
        scope: project_scope(bound_project.as_deref()),
    });
    let body = match (body, read_body) {
        (Some(untouched), _) => untouched,
        (None, bytes) => axum::body::Body::from(bytes.unwrap_or_default()),
    };
    Ok(Request::from_parts(parts, body))
}

/// Reads the body of a request whose signature is still to be verified (its hash is
/// signed): it must declare its length, at most [`MAX_BODY`], and that many bytes must be
/// free in the budget of unverified bodies (else 429: many such uploads at once are
/// more likely a flood than callers), and it must arrive within the body deadline.
async fn read_unverified(s: &HState, body: axum::body::Body) -> Result<Bytes, HuaweiError> {
    let Some(declared) = crate::body::declared_length(&body) else {
        return Err(crate::body::BodyError::LengthRequired.into());
    };
    if declared == 0 {
        return Ok(Bytes::new());
    }
    if declared > MAX_BODY as u64 {
        return Err(crate::body::BodyError::TooLarge { limit: MAX_BODY }.into());
    }
    let Ok(_budget) = s.unverified.try_acquire_many(declared as u32) else {
        return Err(HuaweiError::busy_uploads());
    };
    Ok(crate::body::read(body, declared as usize).await?)
}

/// Everything a handler reads from a request: the caller, path parameters, query pairs
/// (decoded, in order; repeated keys allowed) and the raw body.
pub(crate) struct Call {
    pub caller: Caller,
    pub params: HashMap<String, String>,
    pub query: Vec<(String, String)>,
    pub body: Bytes,
}

impl Call {
    pub fn param(&self, name: &str) -> Result<String, HuaweiError> {
        self.params
            .get(name)
            .cloned()
            .ok_or_else(|| HuaweiError::invalid(format!("path parameter {name} is missing")))
    }
}

impl FromRequest<HState> for Call {
    type Rejection = HuaweiError;

    async fn from_request(req: Request, state: &HState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let caller = parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| HuaweiError::unauthenticated("not authenticated"))?;
        use axum::extract::FromRequestParts;
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(&mut parts, state)
            .await
            .map_err(|e| HuaweiError::invalid(e.body_text()))?;
        let query = parse_query(parts.uri.query());
        let body = crate::body::read(body, MAX_BODY).await?;
        Ok(Call {
            caller,
            params,
            query,
            body,
        })
    }
}

fn parse_query(raw: Option<&str>) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    raw.unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}
