//! Request ids and the last line of defence against panics.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, StatusCode};

pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    /// The current request's id, so every error rendered during it can carry the id.
    pub(crate) static REQUEST_ID: String;
}

/// The request id of the request being served, if any.
pub(crate) fn current_request_id() -> String {
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
