//! Request ids and the last line of defence against panics.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, StatusCode};

pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    /// The current request's id, so every error rendered during it can carry the id.
    static REQUEST_ID: String;
}

/// The request id of the request being served, if any.
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// Echoes the caller's request id (`x-request-id`, or a dialect's own header) or makes
/// one, and returns it on every response.
pub(crate) async fn with_request_id(req: Request, next: Next) -> Response {
    let id = ["x-request-id", "opc-request-id", "x-ms-client-request-id"]
        .iter()
        .find_map(|h| req.headers().get(*h))
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let mut resp = REQUEST_ID.scope(id.clone(), next.run(req)).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }
    resp
}

pub(crate) fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(http::header::CONTENT_TYPE, "application/json")],
        r#"{"code":"internal","message":"internal error"}"#,
    )
        .into_response()
}

/// Marks every response stale while the control plane cannot reach its store (fleet mode
/// during an etcd outage): reads then show the last configuration this node knew.
pub(crate) async fn mark_stale(
    axum::extract::State(control): axum::extract::State<
        std::sync::Arc<fulcrum_control::ControlPlane>,
    >,
    req: Request,
    next: Next,
) -> Response {
    let mut resp = next.run(req).await;
    if !control.store_reachable() {
        resp.headers_mut().insert(
            HeaderName::from_static("x-fulcrum-stale"),
            HeaderValue::from_static("true"),
        );
        resp.headers_mut().insert(
            http::header::WARNING,
            HeaderValue::from_static("110 fulcrum \"Response is Stale\""),
        );
    }
    resp
}

/// What the outermost API middleware keeps: the API's metrics (when `/metrics` is served)
/// and the summary of failed authentication.
pub struct Observe {
    pub(crate) metrics: Option<std::sync::Arc<crate::metrics::ApiMetrics>>,
    pub auth_failures: std::sync::Arc<crate::auth::AuthFailures>,
}

/// The operation a route serves, when its template is too broad to say (Azure routes every
/// backend call through one catch-all): set on the response by the handler.
#[derive(Clone, Copy, Debug)]
pub struct Operation(pub &'static str);

/// Counts every API request by front door, route template, method and status with its
/// latency, and hands each 401 to the summary of failed authentication (one place for all
/// four front doors: none of them logs a refused caller itself).
pub(crate) async fn observe(
    axum::extract::State(o): axum::extract::State<std::sync::Arc<Observe>>,
    req: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let front_door = front_door(req.uri().path());
    let template = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let method = method_label(req.method());
    let addr = crate::auth::client_ip(req.extensions());
    let resp = next.run(req).await;
    if resp.status() == StatusCode::UNAUTHORIZED {
        let reason = resp
            .extensions()
            .get::<crate::auth::AuthRefused>()
            .map_or("unauthenticated", |r| r.0.as_str());
        for line in o
            .auth_failures
            .record(addr, front_door, reason, std::time::Instant::now())
        {
            crate::auth::AuthFailures::log(&line);
        }
    }
    if let Some(metrics) = &o.metrics {
        let operation = match (resp.extensions().get::<Operation>(), template) {
            (Some(op), _) => op.0.to_owned(),
            // OCI serves `//20170115/…` too (an endpoint configured with a trailing
            // slash): the same operations.
            (None, Some(t)) if t.starts_with("//") => t[1..].to_owned(),
            (None, Some(t)) => t,
            (None, None) => "unmatched".to_owned(),
        };
        metrics.observe_request(
            front_door,
            operation,
            method,
            resp.status().as_u16(),
            started.elapsed(),
        );
    }
    resp
}

/// The front door a path belongs to: `native` (`/v1`), `oci`, `huawei`, `azure`, or `none`.
pub(crate) fn front_door(path: &str) -> &'static str {
    let p = path.trim_start_matches('/');
    let first = p.split('/').next().unwrap_or_default();
    match first {
        "v1" => "native",
        "20170115" => "oci",
        "v2.0" | "v2" | "v3" => "huawei",
        "subscriptions" => "azure",
        _ => "none",
    }
}

/// A method as a label: the standard ones by name, anything else as `OTHER` (the label
/// set stays bounded whatever callers send).
fn method_label(m: &http::Method) -> &'static str {
    use http::Method;
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Logs the summaries of failed authentication as their intervals end, until the API
/// is dropped.
pub(crate) async fn flush_auth_failures(failures: std::sync::Weak<crate::auth::AuthFailures>) {
    let tick = match failures.upgrade() {
        Some(f) => f.interval.min(std::time::Duration::from_secs(1)),
        None => return,
    };
    let mut timer = tokio::time::interval(tick);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        timer.tick().await;
        let Some(f) = failures.upgrade() else { return };
        for line in f.flush(std::time::Instant::now()) {
            crate::auth::AuthFailures::log(&line);
        }
    }
}
