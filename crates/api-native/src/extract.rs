//! Extractors that turn every malformed request into a clear 400 naming the field.

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use fulcrum_control::{EtagScope, IfMatch, RequestContext};
use http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::NativeError;
use crate::AppState;
use crate::auth::{
    ClientCertificate, Principal, Role, authenticate, authenticate_certificate, bearer,
};
use crate::request::current_request_id;

/// A JSON body, read with the offending field named on any error. Unknown fields are
/// refused by the target types themselves (`deny_unknown_fields`).
pub(crate) struct JsonBody<T>(pub T);

/// The largest body the native API reads (axum's default limit, which it had before).
const MAX_BODY: usize = 2 * 1024 * 1024;

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = NativeError;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        if let Some(ct) = req.headers().get(http::header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or_default();
            if !ct.contains("json") {
                return Err(NativeError::invalid(
                    "content-type",
                    format!("expected an application/json body, not {ct}"),
                ));
            }
        }
        let bytes = crate::body::read(req.into_body(), MAX_BODY).await?;
        parse_object(&bytes).map(JsonBody)
    }
}

/// A request body, which is always a JSON object here. serde would also read a struct from
/// an array of its fields in order (`[{}]` as an apply with an empty document), which no
/// schema of this API allows.
pub(crate) fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, NativeError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') | None => parse_json(bytes),
        Some(_) => Err(NativeError::invalid(
            "",
            "the request body must be a JSON object ({...})",
        )),
    }
}

pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, NativeError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(NativeError::invalid(
            "",
            "the request body is empty; expected JSON",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).or_else(|e| {
        // JSON has one kind of number: `8080.0` is the integer 8080 (JSON Schema agrees),
        // which serde refuses for an integer field. Read again with such numbers written
        // as integers; the first error stands if that fails too.
        let retried = serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(|mut v| integral_numbers(&mut v).then_some(v))
            .and_then(|v| serde_path_to_error::deserialize(v).ok());
        retried.ok_or_else(|| describe(e))
    })
}

/// A JSON merge patch (an update's body), with integral numbers written as integers.
pub(crate) struct JsonPatch(pub serde_json::Value);

impl<S: Send + Sync> FromRequest<S> for JsonPatch {
    type Rejection = NativeError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let JsonBody(mut patch) = JsonBody::<serde_json::Value>::from_request(req, state).await?;
        integral_numbers(&mut patch);
        Ok(JsonPatch(patch))
    }
}

/// Writes every number with a fractional part of zero (`5.0`, `1e3`) as an integer, where
/// one holds it; whether any was.
pub(crate) fn integral_numbers(value: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0) else {
                return false;
            };
            // Within -2^63..2^64 the cast is exact: `f` is integral.
            let integer = if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
                Value::from(f as u64)
            } else if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
                Value::from(f as i64)
            } else {
                return false;
            };
            *value = integer;
            true
        }
        // Every one is rewritten: no short cut.
        Value::Array(items) => items
            .iter_mut()
            .map(integral_numbers)
            .fold(false, |a, b| a | b),
        Value::Object(map) => map
            .values_mut()
            .map(integral_numbers)
            .fold(false, |a, b| a | b),
        _ => false,
    }
}

fn describe(e: serde_path_to_error::Error<serde_json::Error>) -> NativeError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let what = crate::decode::describe(&inner);
    if inner.is_syntax() || inner.is_eof() {
        NativeError::invalid("", format!("malformed JSON: {inner}"))
    } else if path == "." {
        NativeError::invalid("", what)
    } else {
        NativeError::invalid(path.clone(), format!("{path}: {what}"))
    }
}

/// The name of this front door in audit records and work requests.
const FRONT_DOOR: &str = "native";

/// The authenticated caller (role and scope), for reads: `view` is what it may see.
pub(crate) struct Caller(pub Principal);

impl Caller {
    /// The configuration as this caller may see it (`Config::scoped`).
    pub fn view<'a>(
        &self,
        full: &'a fulcrum_control::Config,
    ) -> std::borrow::Cow<'a, fulcrum_control::Config> {
        full.scoped(&self.0.scope)
    }

    pub fn reader(&self) -> fulcrum_control::Reader<'_> {
        fulcrum_control::Reader {
            scope: &self.0.scope,
            principal: &self.0.name,
            front_door: FRONT_DOOR,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = NativeError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| NativeError::unauthenticated("not authenticated"))
    }
}

/// Query parameters, refused with a 400 naming the parameter.
pub(crate) struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = NativeError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| QueryParams(q))
            .map_err(|e| NativeError::invalid("", e.body_text()))
    }
}

/// Path parameters, refused with the native error shape (axum's own rejection is plain
/// text): a parameter that is not UTF-8 once percent-decoded (`/v1/pools/%FF`).
pub(crate) struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = NativeError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| PathParams(p))
            .map_err(|e| NativeError::invalid("path", e.body_text()))
    }
}

/// What a mutation needs to know about the request besides its body.
pub(crate) struct Ctx(pub RequestContext);

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = NativeError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let header = |name: &str| -> Result<Option<String>, NativeError> {
            parts
                .headers
                .get(name)
                .map(|v| {
                    v.to_str().map(str::to_owned).map_err(|_| {
                        NativeError::invalid(name, format!("header {name} is not valid text"))
                    })
                })
                .transpose()
        };
        let (principal, scope) = parts
            .extensions
            .get::<Principal>()
            .map(|p| (p.name.clone(), p.scope.clone()))
            .unwrap_or_default();
        let lock_override = match header("x-lock-override")?.as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(NativeError::invalid(
                    "x-lock-override",
                    format!("x-lock-override must be true or false (got {other:?})"),
                ));
            }
        };
        Ok(Ctx(RequestContext {
            request_id: current_request_id(),
            principal,
            front_door: FRONT_DOOR,
            retry_token: header("idempotency-key")?,
            if_match: header("if-match")?.map(|value| IfMatch {
                scope: EtagScope::Resource,
                value,
            }),
            lock_override,
            // Changes follow each other at once; the data plane serves them in order.
            one_change_at_a_time: false,
            scope,
            ..Default::default()
        }))
    }
}

/// Authenticates `/v1` calls (all but health and the OpenAPI document) from their headers,
/// before any byte of the body is read, and applies the per-caller rate limit. An address
/// throttled for failing authentication is refused first.
pub(crate) async fn require_token(
    axum::extract::State(state): axum::extract::State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    if path == "/v1/health" || path == "/v1/openapi.json" {
        return next.run(req).await;
    }
    // Before the credentials are looked at (and before any byte of the body is read).
    let client = crate::auth::client_ip(req.extensions());
    if let Some(wait) = state
        .auth_failures
        .throttled(client, std::time::Instant::now())
    {
        return NativeError::auth_throttled(wait).into_response();
    }
    let presented = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    // A bearer token wins; without one, a verified client certificate (mTLS) may stand for
    // a token's principal.
    let certificate = req.extensions().get::<std::sync::Arc<ClientCertificate>>();
    let principal = match (presented, certificate) {
        (Some(presented), _) => authenticate(&state.tokens, presented)
            .ok_or_else(|| NativeError::unauthenticated("invalid bearer token")),
        (None, Some(cert)) => authenticate_certificate(&state.client_certs, &state.tokens, cert).ok_or_else(|| {
            NativeError::unauthenticated(
                "the client certificate is not mapped to a principal ([[api.client_certs]]) and no bearer token was sent",
            )
        }),
        (None, None) => Err(NativeError::unauthenticated(
            "missing bearer token (Authorization: Bearer …)",
        )),
    };
    let principal = match principal {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Err(wait) = state.limiter.check(&principal.name) {
        return NativeError::from(fulcrum_control::ControlError::RateLimited { retry_after: wait })
            .into_response();
    }
    // The route's template when one matched (what the router dispatches on), else the path.
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| req.uri().path(), |m| m.as_str());
    let needed = Role::needed(req.method(), route);
    if principal.role < needed {
        return NativeError::forbidden(format!(
            "the token {:?} has the role {}; this call needs {}",
            principal.name,
            principal.role.as_str(),
            needed.as_str()
        ))
        .into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use fulcrum_model::MemberSpec;

    #[test]
    fn a_body_is_an_object_never_an_array_of_fields() {
        let m: MemberSpec = parse_object(br#" {"address": "10.0.0.1", "port": 80}"#).unwrap();
        assert_eq!(m.port, 80);
        for body in [&br#"["10.0.0.1", 80]"#[..], b"[{}]", b"\"member\"", b"80"] {
            let Err(e) = parse_object::<MemberSpec>(body) else {
                panic!("{} was read as a member", String::from_utf8_lossy(body));
            };
            assert_eq!(e.status, http::StatusCode::BAD_REQUEST);
            assert!(e.message.contains("JSON object"), "{}", e.message);
        }
        assert!(
            parse_object::<MemberSpec>(b"  ").is_err(),
            "an empty body is still refused"
        );
    }

    #[test]
    fn integral_numbers_are_integers() {
        for body in [
            r#"{"address": "10.0.0.1", "port": 8080.0, "weight": 5}"#,
            r#"{"address": "10.0.0.1", "port": 8.08e3, "weight": 5.0}"#,
        ] {
            let m: MemberSpec = parse_json(body.as_bytes()).unwrap();
            assert_eq!((m.port, m.weight), (8080, 5), "{body}");
        }
        for (body, field) in [
            (r#"{"address": "10.0.0.1", "port": 8080.5}"#, "port"),
            (r#"{"address": "10.0.0.1", "port": 70000.0}"#, "port"),
            (r#"{"address": "10.0.0.1", "port": -1.0}"#, "port"),
            (r#"{"address": "10.0.0.1", "port": 1e30}"#, "port"),
        ] {
            let e = parse_json::<MemberSpec>(body.as_bytes()).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{body}: {}", e.message);
        }
        let mut patch = serde_json::json!({"weight": 2.0, "upstream": {"x": [1.5, -3.0]}});
        assert!(integral_numbers(&mut patch));
        assert_eq!(
            patch,
            serde_json::json!({"weight": 2, "upstream": {"x": [1.5, -3]}})
        );
    }
}
