//! The OCI dialect's one error shape: `{"code", "message"}` with OCI's codes and an
//! `opc-request-id` header, as the `oci` SDK turns into `ServiceError`.

use axum::response::{IntoResponse, Response};
use fulcrum_control::ControlError;
use fulcrum_model::FieldErrorKind;
use http::{HeaderValue, StatusCode};
use serde::Serialize;

use crate::body::BodyError;
use crate::request::current_request_id;

#[derive(Debug)]
pub(crate) struct OciError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_secs: Option<u64>,
    /// For a change of unknown outcome: the OCID of the work request it would have
    /// (`opc-work-request-id`, as on a change that was accepted).
    pub work_request: Option<String>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
}

impl OciError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
            work_request: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidParameter", message)
    }

    pub fn missing(field: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "MissingParameter",
            format!("{field} is required"),
        )
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "NotAuthenticated", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotAuthorizedOrNotFound", message)
    }

    /// The caller's address failed authentication too often: refused for `retry_after`.
    pub fn auth_throttled(retry_after: std::time::Duration) -> Self {
        let secs = crate::auth::retry_after_secs(retry_after);
        OciError {
            retry_after_secs: Some(secs),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                format!("too many failed authentications from this address; retry in {secs}s"),
            )
        }
    }
}

impl From<BodyError> for OciError {
    fn from(e: BodyError) -> Self {
        let code = match e {
            BodyError::TooLarge { .. } => "RequestEntityTooLarge",
            BodyError::TimedOut => "RequestTimeout",
            BodyError::LengthRequired => "LengthRequired",
            BodyError::Unreadable => "InvalidParameter",
        };
        OciError::new(e.status(), code, e.to_string())
    }
}

impl From<ControlError> for OciError {
    fn from(e: ControlError) -> Self {
        let message = e.to_string();
        match e {
            ControlError::Invalid(v) => {
                let code = match v.first().kind {
                    FieldErrorKind::Missing => "MissingParameter",
                    FieldErrorKind::Invalid => "InvalidParameter",
                };
                OciError::new(StatusCode::BAD_REQUEST, code, message)
            }
            ControlError::NotFound { .. } => OciError::not_found(message),
            // OCI tells no caller what it may not see: unauthorized is not found.
            ControlError::Forbidden(_) => OciError::not_found(message),
            ControlError::Conflict(_) | ControlError::Locked { .. } => {
                OciError::new(StatusCode::CONFLICT, "Conflict", message)
            }
            // Transient: the SDK's retry strategies retry IncorrectState.
            ControlError::Busy { .. } => {
                OciError::new(StatusCode::CONFLICT, "IncorrectState", message)
            }
            ControlError::RetryTokenReused => {
                OciError::new(StatusCode::CONFLICT, "InvalidatedRetryToken", message)
            }
            ControlError::PreconditionFailed { .. } => {
                OciError::new(StatusCode::PRECONDITION_FAILED, "NoEtagMatch", message)
            }
            ControlError::RateLimited { retry_after } => OciError {
                retry_after_secs: Some(retry_after.as_secs().max(1)),
                ..OciError::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", message)
            },
            // Named as OCI names work requests, so GetWorkRequest can look it up.
            ControlError::OutcomeUnknown { work_request_id } => {
                let ocid = crate::wire::wr_ocid(&fulcrum_model::WorkRequestId(work_request_id));
                OciError {
                    retry_after_secs: Some(crate::UNAVAILABLE_RETRY_SECS),
                    work_request: Some(ocid.clone()),
                    ..OciError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "ServiceUnavailable",
                        format!(
                            "the store took the change but did not confirm it: it may or may \
                             not have been made; look up work request {ocid} before retrying"
                        ),
                    )
                }
            }
            ControlError::Unavailable(_) => OciError {
                retry_after_secs: Some(crate::UNAVAILABLE_RETRY_SECS),
                ..OciError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    message,
                )
            },
            ControlError::Internal(_) | ControlError::SecretKey(_) => {
                tracing::error!(error = %message, "internal error");
                OciError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalServerError",
                    "internal error",
                )
            }
        }
    }
}

impl IntoResponse for OciError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code,
            message: &self.message,
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.extensions_mut()
                .insert(crate::auth::AuthRefused(self.message.clone()));
        }
        if let Some(ocid) = &self.work_request
            && let Ok(v) = HeaderValue::from_str(ocid)
        {
            resp.headers_mut().insert("opc-work-request-id", v);
        }
        if let Some(secs) = self.retry_after_secs {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Ok(v) = HeaderValue::from_str(&current_request_id()) {
            resp.headers_mut().insert("opc-request-id", v);
        }
        resp
    }
}
