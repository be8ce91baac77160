//! What every front door of fulcrum's HTTP API shares: the state handlers get
//! ([`AppState`]), authentication (native tokens and client certificates, the summary and
//! throttle of failed authentication), request bodies and how a body that does not decode
//! is described, request ids, the layer that observes every request, and the layers around
//! the whole API. Each front door is a crate of its own (`fulcrum-api-native`,
//! `fulcrum-api-oci`, `fulcrum-api-huawei`, `fulcrum-api-azure`) that renders its own
//! errors; `fulcrum-api` assembles them into one router.
//!
//! Architecture invariant: only the API crates know HTTP and JSON wire shapes. They never
//! touch the store: every read goes through the control plane's view, every write through a
//! control-plane operation.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use fulcrum_control::{ControlPlane, RateLimiter};

pub mod auth;
pub mod body;
pub mod decode;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod request;

use auth::{ApiToken, AuthFailures, AuthThrottle, ClientCertPrincipal};
use metrics::ApiMetrics;
use request::Observe;

/// `Retry-After` of a 503 (the store is away or cannot write): every dialect sends it, so
/// clients back off instead of hammering, and SDKs that honour it retry on their own.
pub const UNAVAILABLE_RETRY_SECS: u64 = 1;

/// What every front door's handlers share.
#[derive(Clone)]
pub struct AppState {
    pub control: Arc<ControlPlane>,
    pub tokens: Arc<Vec<ApiToken>>,
    pub client_certs: Arc<Vec<ClientCertPrincipal>>,
    pub limiter: Arc<RateLimiter>,
    /// Failed authentication by source address: each front door asks it whether a caller
    /// is throttled before looking at its credentials.
    pub auth_failures: Arc<AuthFailures>,
}

/// On a request that came over TLS: links the API builds back to itself say https.
#[derive(Clone, Copy, Debug)]
pub struct ServedOverTls;

/// The state of the outermost middleware over the front doors' routes
/// ([`request::observe`]), and the task that logs the summaries of failed authentication.
pub fn observer(
    interval: Duration,
    throttle: AuthThrottle,
    metrics: Option<Arc<ApiMetrics>>,
) -> Arc<Observe> {
    let auth_failures = Arc::new(AuthFailures::new(interval, throttle));
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(request::flush_auth_failures(Arc::downgrade(&auth_failures)));
    }
    Arc::new(Observe {
        metrics,
        auth_failures,
    })
}

/// Routes with [`request::observe`] over them: metrics and the summary of failed
/// authentication.
pub fn observed(routes: Router, observe: Arc<Observe>) -> Router {
    routes.layer(axum::middleware::from_fn_with_state(
        observe,
        request::observe,
    ))
}

/// The layers around the whole API: stale marks while the store is away, request ids, and
/// a 500 for a handler that panics.
pub fn with_common_layers(router: Router, control: Arc<ControlPlane>) -> Router {
    router
        .layer(axum::middleware::from_fn_with_state(
            control,
            request::mark_stale,
        ))
        .layer(axum::middleware::from_fn(request::with_request_id))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            request::panic_response,
        ))
}

/// One front door's routes on their own, behind the layers `fulcrum_api::router` puts
/// around every front door (observed, request ids, stale marks, panics), with no native
/// tokens and the default summary and throttle of failed authentication: for a dialect's
/// tests, which need not depend on the assembly.
#[doc(hidden)]
pub fn single_front_door(
    control: Arc<ControlPlane>,
    rate_per_second: f64,
    rate_burst: u32,
    routes: impl FnOnce(AppState) -> Router,
) -> Router {
    let observe = observer(
        AuthFailures::DEFAULT_INTERVAL,
        AuthThrottle::default(),
        None,
    );
    let state = AppState {
        control: control.clone(),
        tokens: Arc::new(Vec::new()),
        client_certs: Arc::new(Vec::new()),
        limiter: Arc::new(RateLimiter::new(rate_per_second, rate_burst)),
        auth_failures: observe.auth_failures.clone(),
    };
    with_common_layers(observed(routes(state), observe), control)
}
