//! The native API's one error shape: `{code, message, field?, request_id}`.

use axum::response::{IntoResponse, Response};
use fulcrum_control::ControlError;
use http::StatusCode;
use serde::Serialize;

use crate::body::BodyError;
use crate::request::current_request_id;

#[derive(Debug)]
pub(crate) struct NativeError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    pub retry_after_secs: Option<u64>,
    /// For `outcome_unknown`: the work request the change would have (`X-Work-Request-Id`).
    pub work_request_id: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    /// Stable, machine-readable: `invalid_argument`, `unauthenticated`, `forbidden`, `not_found`,
    /// `conflict`, `busy`, `locked`, `retry_token_reused`, `precondition_failed`,
    /// `payload_too_large`, `request_timeout`, `rate_limited`, `unavailable`,
    /// `outcome_unknown`, `internal`.
    code: &'static str,
    message: String,
    /// The request field at fault, for `invalid_argument`.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    /// For `outcome_unknown`: the change reached the store but no answer came, so it may
    /// have been made. This is the work request it would have: found
    /// (`GET /v1/work-requests/{id}`) if the change was made, not found if it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    work_request_id: Option<String>,
    request_id: String,
}

impl NativeError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after_secs: None,
            work_request_id: None,
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        Self {
            field: (!field.is_empty()).then_some(field),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_argument", message)
        }
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// The caller's address failed authentication too often: refused for `retry_after`.
    pub fn auth_throttled(retry_after: std::time::Duration) -> Self {
        let secs = crate::auth::retry_after_secs(retry_after);
        NativeError {
            retry_after_secs: Some(secs),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many failed authentications from this address; retry in {secs}s"),
            )
        }
    }
}

impl From<BodyError> for NativeError {
    fn from(e: BodyError) -> Self {
        let code = match e {
            BodyError::TooLarge { .. } => "payload_too_large",
            BodyError::TimedOut => "request_timeout",
            BodyError::LengthRequired | BodyError::Unreadable => "invalid_argument",
        };
        NativeError::new(e.status(), code, e.to_string())
    }
}

impl From<ControlError> for NativeError {
    fn from(e: ControlError) -> Self {
        let message = e.to_string();
        match e {
            ControlError::Invalid(v) => {
                let field = v.first().field.clone();
                NativeError::invalid(field, message)
            }
            ControlError::NotFound { .. } => NativeError::not_found(message),
            ControlError::Forbidden(_) => NativeError::forbidden(message),
            ControlError::Conflict(_) => {
                NativeError::new(StatusCode::CONFLICT, "conflict", message)
            }
            ControlError::Busy { .. } => NativeError::new(StatusCode::CONFLICT, "busy", message),
            ControlError::Locked { .. } => {
                NativeError::new(StatusCode::CONFLICT, "locked", message)
            }
            ControlError::RetryTokenReused => {
                NativeError::new(StatusCode::CONFLICT, "retry_token_reused", message)
            }
            ControlError::PreconditionFailed { .. } => NativeError::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                message,
            ),
            ControlError::RateLimited { retry_after } => NativeError {
                retry_after_secs: Some(retry_after.as_secs().max(1)),
                ..NativeError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
            },
            ControlError::OutcomeUnknown { work_request_id } => NativeError {
                retry_after_secs: Some(crate::UNAVAILABLE_RETRY_SECS),
                work_request_id: Some(work_request_id),
                ..NativeError::new(StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown", message)
            },
            ControlError::Unavailable(_) => NativeError {
                retry_after_secs: Some(crate::UNAVAILABLE_RETRY_SECS),
                ..NativeError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            },
            ControlError::Internal(_) | ControlError::SecretKey(_) => {
                tracing::error!(error = %message, "internal error");
                NativeError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
        }
    }
}

impl IntoResponse for NativeError {
    fn into_response(self) -> Response {
        let body_message = self.message.clone();
        let body = ErrorBody {
            code: self.code,
            message: self.message,
            field: self.field,
            work_request_id: self.work_request_id.clone(),
            request_id: current_request_id(),
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            resp.extensions_mut()
                .insert(crate::auth::AuthRefused(body_message));
        }
        if let Some(id) = self.work_request_id
            && let Ok(v) = http::HeaderValue::from_str(&id)
        {
            resp.headers_mut().insert("x-work-request-id", v);
        }
        if let Some(secs) = self.retry_after_secs {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
        }
        resp
    }
}
