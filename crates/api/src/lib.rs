//! fulcrum's HTTP API: one router that serves every front door, the server it runs on
//! (TLS, connection limits, timeouts), `/metrics` and the dashboard.
//!
//! Each front door is a crate of its own: the native API under `/v1`
//! (`fulcrum-api-native`) and each cloud dialect (`fulcrum-api-oci`, `fulcrum-api-huawei`,
//! `fulcrum-api-azure`), which translates its wire shapes into control-plane operations
//! and renders errors its own way, in one place. What they share (state, authentication,
//! bodies, request ids, the layers around them) is `fulcrum-api-core`. A new dialect is a
//! new crate and one line in [`router`].
//!
//! Architecture invariant: only the API crates know HTTP and JSON wire shapes. They never
//! touch the store: every read goes through the control plane's view, every write
//! through a control-plane operation.

use std::sync::Arc;

use axum::Router;
use fulcrum_api_core::auth::AuthFailures;
use fulcrum_api_core::{AppState, observed, observer, with_common_layers};
use fulcrum_control::{ControlPlane, RateLimiter};

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod metrics;
mod server;
mod tls;
mod ui;

pub use fulcrum_api_azure::AzureConfig;
pub use fulcrum_api_core::auth::{ApiToken, AuthThrottle, CertMatch, ClientCertPrincipal, Role};
pub use fulcrum_api_huawei::HuaweiConfig;
pub use fulcrum_api_native::openapi_document;
pub use fulcrum_api_oci::OciConfig;
pub use metrics::Metrics;
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
            auth_failure_interval: AuthFailures::DEFAULT_INTERVAL,
            auth_throttle: AuthThrottle::default(),
        }
    }
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
        metrics.as_ref().map(|(_, api)| api.clone()),
    );
    let state = AppState {
        control,
        tokens: Arc::new(config.tokens.clone()),
        client_certs: Arc::new(config.client_certs.clone()),
        limiter: Arc::new(RateLimiter::new(config.rate_per_second, config.rate_burst)),
        auth_failures: observe.auth_failures.clone(),
    };
    // One line per front door.
    let front_doors = fulcrum_api_native::router(state.clone())
        .merge(fulcrum_api_oci::router(state.clone(), &config.oci))
        .merge(fulcrum_api_huawei::router(state.clone(), &config.huawei))
        .merge(fulcrum_api_azure::router(state, &config.azure));
    // The page's own files are not API calls (the calls it makes are).
    let router = observed(front_doors, observe).merge(ui::router());
    with_common_layers(
        with_metrics(router, metrics.map(|(registry, _)| registry)),
        control_for_stale,
    )
}

/// What a data-plane-only fleet node serves in place of the API: `/v1/health` and
/// `/metrics`, for probes and scrapers.
pub fn probe_router(control: Arc<ControlPlane>, metrics: Option<Metrics>) -> Router {
    let metrics = metrics.map(Metrics::into_parts);
    if let Some((_, api)) = &metrics {
        control.on_work_request_finished(api.work_request_hook());
    }
    let observe = observer(
        AuthFailures::DEFAULT_INTERVAL,
        AuthThrottle::OFF,
        metrics.as_ref().map(|(_, api)| api.clone()),
    );
    let state = AppState {
        control: control.clone(),
        tokens: Arc::new(Vec::new()),
        client_certs: Arc::new(Vec::new()),
        limiter: Arc::new(RateLimiter::new(0.0, 0)),
        auth_failures: observe.auth_failures.clone(),
    };
    let router = Router::new()
        .route("/v1/health", axum::routing::get(fulcrum_api_native::health))
        .with_state(state);
    let router = observed(router, observe);
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
