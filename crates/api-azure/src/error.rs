//! The Azure dialect's one error shape, ARM's `{"error": {code, message, target, details}}`.
//!
//! Codes follow ARM and API Management. `MissingSubscriptionRegistration` is never used:
//! the SDK would answer it by trying to register the resource provider.

use axum::response::{IntoResponse, Response};
use fulcrum_control::ControlError;
use fulcrum_model::ValidationError;
use http::{HeaderValue, StatusCode};
use serde::Serialize;

use crate::body::BodyError;
use crate::request::current_request_id;

#[derive(Debug)]
pub(crate) struct AzureError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub target: Option<String>,
    pub details: Vec<Detail>,
    pub retry_after_secs: Option<u64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Detail {
    code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<&'a str>,
    details: &'a [Detail],
}

impl AzureError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            target: None,
            details: Vec::new(),
            retry_after_secs: None,
        }
    }

    /// 400 `ValidationError` naming one field.
    pub fn invalid(target: impl Into<String>, message: impl Into<String>) -> Self {
        Self::from_validation(ValidationError::invalid(target, message))
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthenticated(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// ARM's answer to a principal with no role in the scope it names.
    pub fn authorization_failed(
        principal: &str,
        method: &http::Method,
        resource_type: &str,
        scope: &str,
    ) -> Self {
        let action = match *method {
            http::Method::GET | http::Method::HEAD => "read",
            http::Method::DELETE => "delete",
            _ => "write",
        };
        Self::new(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            format!(
                "The client '{principal}' does not have authorization to perform action \
                 '{resource_type}/{action}' over scope '{scope}' or \
                 the scope is invalid."
            ),
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "ResourceNotFound", message)
    }

    /// The caller's address failed authentication too often: refused for `retry_after`.
    pub fn auth_throttled(retry_after: std::time::Duration) -> Self {
        let secs = fulcrum_api_core::auth::retry_after_secs(retry_after);
        AzureError {
            retry_after_secs: Some(secs),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                format!(
                    "Too many failed authentications from this address. Retry in {secs} seconds."
                ),
            )
        }
    }

    /// Every refused field as a detail; the first one is the error's target.
    pub fn from_validation(v: ValidationError) -> Self {
        let message = v.to_string();
        let details: Vec<Detail> = v
            .errors
            .into_iter()
            .map(|e| Detail {
                code: "ValidationError",
                target: (!e.field.is_empty()).then_some(e.field),
                message: e.message,
            })
            .collect();
        Self {
            target: details.first().and_then(|d| d.target.clone()),
            details,
            ..Self::new(StatusCode::BAD_REQUEST, "ValidationError", message)
        }
    }
}

impl From<BodyError> for AzureError {
    fn from(e: BodyError) -> Self {
        let code = match e {
            BodyError::TooLarge { .. } => "RequestEntityTooLarge",
            BodyError::TimedOut => "RequestTimeout",
            BodyError::LengthRequired => "LengthRequired",
            BodyError::Unreadable => "InvalidRequestContent",
        };
        AzureError::new(e.status(), code, e.to_string())
    }
}

impl From<ControlError> for AzureError {
    fn from(e: ControlError) -> Self {
        let message = e.to_string();
        match e {
            ControlError::Invalid(v) => AzureError::from_validation(v),
            ControlError::NotFound { .. } => AzureError::not_found(message),
            ControlError::Forbidden(_) => {
                AzureError::new(StatusCode::FORBIDDEN, "AuthorizationFailed", message)
            }
            ControlError::Conflict(_) | ControlError::RetryTokenReused => {
                AzureError::new(StatusCode::CONFLICT, "Conflict", message)
            }
            ControlError::Busy { .. } => {
                AzureError::new(StatusCode::CONFLICT, "AnotherOperationInProgress", message)
            }
            ControlError::Locked { .. } => {
                AzureError::new(StatusCode::CONFLICT, "ScopeLocked", message)
            }
            ControlError::PreconditionFailed { .. } => AzureError::new(
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailed",
                "The entity's ETag does not match the If-Match header; get the entity again and retry with its current ETag.",
            ),
            ControlError::RateLimited { retry_after } => AzureError {
                retry_after_secs: Some(retry_after.as_secs().max(1)),
                ..AzureError::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", message)
            },
            ControlError::OutcomeUnknown { .. } => AzureError {
                retry_after_secs: Some(crate::UNAVAILABLE_RETRY_SECS),
                ..AzureError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "OperationOutcomeUnknown",
                    message,
                )
            },
            ControlError::Unavailable(_) => AzureError {
                retry_after_secs: Some(crate::UNAVAILABLE_RETRY_SECS),
                ..AzureError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    message,
                )
            },
            ControlError::Internal(_) | ControlError::SecretKey(_) => {
                tracing::error!(error = %message, "internal error");
                AzureError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalServerError",
                    "internal error",
                )
            }
        }
    }
}

impl IntoResponse for AzureError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Inner {
                code: self.code,
                message: &self.message,
                target: self.target.as_deref(),
                details: &self.details,
            },
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        let headers = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&current_request_id()) {
            headers.insert("x-ms-request-id", v);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
        }
        if let Some(secs) = self.retry_after_secs {
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.extensions_mut()
                .insert(fulcrum_api_core::auth::AuthRefused(self.message));
        }
        resp
    }
}
