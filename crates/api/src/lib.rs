//! fulcrum's HTTP API.
//!
//! One router serves every front door. The native API lives under `/v1`; each cloud
//! dialect (`oci`, `huawei`, `azure`) is a module of its own that translates its wire
//! shapes into control-plane operations and renders errors its own way, in one place.
//!
//! Architecture invariant: only this crate knows HTTP and JSON wire shapes. It never
//! touches the store: every read goes through the control plane's view, every write
//! through a control-plane operation.

use std::sync::Arc;

use axum::Router;
use fulcrum_control::{ControlPlane, RateLimiter};

mod auth;
mod azure;
mod body;
mod decode;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod huawei;
mod metrics;
mod native;
mod oci;
mod request;
mod server;
mod tls;
mod ui;

/// `Retry-After` of a 503 (the store is away or cannot write): every dialect sends it, so
/// clients back off instead of hammering, and SDKs that honour it retry on their own.
pub(crate) const UNAVAILABLE_RETRY_SECS: u64 = 1;

pub use auth::{ApiToken, AuthThrottle, CertMatch, ClientCertPrincipal, Role};
pub use azure::AzureConfig;
pub use huawei::HuaweiConfig;
pub use metrics::Metrics;
pub use native::openapi_document;
pub use oci::OciConfig;
pub use server::{ConnectionStats, ServerLimits, raise_fd_limit, serve};
pub use tls::{ApiTls, ClientAuth, RELOAD_CHECK_INTERVAL, TlsError, TlsFiles};

/// How the API authenticates and throttles callers.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Bearer tokens accepted by the native API. Empty: every call but health and the
    /// OpenAPI document answers 401.
    pub tokens: Vec<ApiToken>,
    /// Client certificates (verified by the API's TLS) that authenticate as a token's
    /// principal in the native API.
    pub client_certs: Vec<ClientCertPrincipal>,
    /// Requests per second per caller, after a burst.
    pub rate_per_second: f64,
    pub rate_burst: u32,
    /// The OCI dialect's keys.
    pub oci: OciConfig,
    /// The Huawei dialect's credentials.
    pub huawei: HuaweiConfig,
    /// The Azure dialect's credentials.
    pub azure: AzureConfig,
    /// Failed authentication is logged once per source address per interval, as a count.
    pub auth_failure_interval: std::time::Duration,
    /// Failed authentication refuses an address for a while after too many.
    pub auth_throttle: AuthThrottle,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            tokens: Vec::new(),
            client_certs: Vec::new(),
            rate_per_second: 200.0,
            rate_burst: 400,
            oci: OciConfig::default(),
            huawei: HuaweiConfig::default(),
            azure: AzureConfig::default(),
            auth_failure_interval: std::time::Duration::from_secs(10),
            auth_throttle: AuthThrottle::default(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub control: Arc<ControlPlane>,
    pub tokens: Arc<Vec<ApiToken>>,
    pub client_certs: Arc<Vec<ClientCertPrincipal>>,
    pub limiter: Arc<RateLimiter>,
    /// Failed authentication by source address: each front door asks it whether a caller
    /// is throttled before looking at its credentials.
    pub auth_failures: Arc<auth::AuthFailures>,
}

/// The whole API as one router. `/metrics`, when given, needs no token, like
/// `/v1/health`: scrapers and probes run where the API listens (127.0.0.1 by default).
/// Neither does the dashboard page at `/ui`: it asks for a token and reads `/v1` with it.
/// Serve it with [`serve`] (or with `into_make_service_with_connect_info::<SocketAddr>()`),
/// so failed authentication is summarised and throttled per source address.
pub fn router(control: Arc<ControlPlane>, config: &ApiConfig, metrics: Option<Metrics>) -> Router {
    let control_for_stale = control.clone();
    let metrics = metrics.map(Metrics::into_parts);
    if let Some((_, api)) = &metrics {
        control.on_work_request_finished(api.work_request_hook());
    }
    let observe = observer(
        config.auth_failure_interval,
        config.auth_throttle,
        metrics.as_ref(),
    );
    let state = AppState {
        control,
        tokens: Arc::new(config.tokens.clone()),
        client_certs: Arc::new(config.client_certs.clone()),
        limiter: Arc::new(RateLimiter::new(config.rate_per_second, config.rate_burst)),
        auth_failures: observe.auth_failures.clone(),
    };
    let router = native::router(state.clone())
        .merge(oci::router(state.clone(), &config.oci))
        .merge(huawei::router(state.clone(), &config.huawei))
        .merge(azure::router(state, &config.azure))
        .layer(axum::middleware::from_fn_with_state(
            observe,
            request::observe,
        ))
        // The page's own files are not API calls (the calls it makes are).
        .merge(ui::router());
    with_common_layers(
        with_metrics(router, metrics.map(|(registry, _)| registry)),
        control_for_stale,
    )
}

/// The state of the outermost middleware (`request::observe`), and the task that logs
/// the summaries of failed authentication.
fn observer(
    interval: std::time::Duration,
    throttle: AuthThrottle,
    metrics: Option<&(
        Arc<prometheus_client::registry::Registry>,
        Arc<metrics::ApiMetrics>,
    )>,
) -> Arc<request::Observe> {
    let auth_failures = Arc::new(auth::AuthFailures::new(interval, throttle));
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(request::flush_auth_failures(Arc::downgrade(&auth_failures)));
    }
    Arc::new(request::Observe {
        metrics: metrics.map(|(_, api)| api.clone()),
        auth_failures,
    })
}

/// What a data-plane-only fleet node serves in place of the API: `/v1/health` and
/// `/metrics`, for probes and scrapers.
pub fn probe_router(control: Arc<ControlPlane>, metrics: Option<Metrics>) -> Router {
    let metrics = metrics.map(Metrics::into_parts);
    if let Some((_, api)) = &metrics {
        control.on_work_request_finished(api.work_request_hook());
    }
    let observe = observer(
        ApiConfig::default().auth_failure_interval,
        AuthThrottle::OFF,
        metrics.as_ref(),
    );
    let state = AppState {
        control: control.clone(),
        tokens: Arc::new(Vec::new()),
        client_certs: Arc::new(Vec::new()),
        limiter: Arc::new(RateLimiter::new(0.0, 0)),
        auth_failures: observe.auth_failures.clone(),
    };
    let router = Router::new()
        .route("/v1/health", axum::routing::get(native::health))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            observe,
            request::observe,
        ));
    with_common_layers(
        with_metrics(router, metrics.map(|(registry, _)| registry)),
        control,
    )
}

/// `/metrics`: the one registry (the API's families, process metrics and whatever
/// collectors were added, such as the data plane's), encoded once per scrape.
fn with_metrics(
    router: Router,
    registry: Option<Arc<prometheus_client::registry::Registry>>,
) -> Router {
    let Some(registry) = registry else {
        return router;
    };
    router.route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                // prometheus-client writes OpenMetrics (`# EOF`, counter families named
                // without `_total`): say so, or a scraper parses it as the older text format.
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics::render(&registry),
                )
            }
        }),
    )
}

fn with_common_layers(router: Router, control: Arc<ControlPlane>) -> Router {
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
