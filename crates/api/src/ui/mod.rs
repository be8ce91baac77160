//! The dashboard: one page at `/ui` with its script and style sheet, all built into the
//! binary. The page needs no token to load; it asks the operator for one and then reads
//! and changes fulcrum only through the public native API (`/v1`), like any other client.
//!
//! Architecture invariant: nothing here reads the control plane. The page's assets are
//! fixed at build time and reference nothing outside this server (no CDN, no font host),
//! so the dashboard works on a host with no way out.

use axum::Router;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// Scripts and styles only from this server, calls only to this server, no frames: what the
/// page renders cannot load or run anything else even if a value slipped through unescaped.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// `/` (a redirect to `/ui`), `/ui` and its assets. No authentication: the page holds no
/// data of its own.
pub(crate) fn router() -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/ui", get(|| async { page() }))
        .route("/ui/", get(|| async { page() }))
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route("/ui/{*rest}", get(|| async { missing() }))
}

fn page() -> Response {
    let mut resp = asset("text/html; charset=utf-8", INDEX_HTML);
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Revalidate on every load, so a page never outlives the binary that served it.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

fn missing() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "no such dashboard asset\n",
    )
        .into_response()
}
