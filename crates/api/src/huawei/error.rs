//! The one place Huawei errors are rendered: `{error_code, error_msg, request_id}` with the
//! request id also in `X-Request-Id` (the SDK's exceptions read it from the header).
//!
//! | status | error_code   | when |
//! |--------|--------------|------|
//! | 400    | `ELB.8902`   | invalid or missing parameter, unreadable body |
//! | 401    | `APIGW.0301` | bad or missing AK/SK signature or token |
//! | 408    | `ELB.8902`   | the body did not arrive within the body deadline |
//! | 411    | `ELB.8902`   | an AK/SK-signed body without `Content-Length` |
//! | 413    | `ELB.8902`   | the body is larger than 12 MB |
//! | 403    | `APIGW.0302` | the credential's project does not allow the change |
//! | 404    | `ELB.8904`   | no such resource or endpoint |
//! | 409    | `ELB.8905`   | conflicts: duplicates, references, deletion protection |
//! | 409    | `ELB.8906`   | the load balancer is not ACTIVE (a change is in progress) |
//! | 409    | `ELB.8907`   | the load balancer is locked |
//! | 412    | `ELB.8912`   | precondition failed |
//! | 429    | `APIGW.0308` | rate limited, or too many failed authentications from the address, or too many unverified uploads at once (with `Retry-After`) |
//! | 503    | `ELB.1001`   | the configuration store is unavailable |
//! | 500    | `ELB.1000`   | internal error |

use axum::response::{IntoResponse, Response};
use fulcrum_control::ControlError;
use http::StatusCode;

use crate::body::BodyError;
use crate::request::current_request_id;

#[derive(Debug)]
pub(crate) struct HuaweiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_secs: Option<u64>,
}

impl HuaweiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ELB.8902", message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "APIGW.0301",
            format!(
                "Incorrect IAM authentication information: {}",
                message.into()
            ),
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "ELB.8904", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "ELB.8905", message)
    }

    /// The caller's address failed authentication too often: refused for `retry_after`.
    pub fn auth_throttled(retry_after: std::time::Duration) -> Self {
        let secs = crate::auth::retry_after_secs(retry_after);
        HuaweiError {
            retry_after_secs: Some(secs),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "APIGW.0308",
                format!("too many failed authentications from this address; retry in {secs}s"),
            )
        }
    }

    /// Too many signed bodies are being read at once, before their signatures are checked.
    pub fn busy_uploads() -> Self {
        HuaweiError {
            retry_after_secs: Some(1),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "APIGW.0308",
                "too many signed request bodies are being received at once; retry",
            )
        }
    }

    /// Renames the model's field names in the message to this API's (`port` →
    /// `protocol_port`, …), as whole words.
    pub fn renamed(mut self, renames: &[(&str, &str)]) -> Self {
        self.message = rename_words(&self.message, renames);
        self
    }
}

/// Replaces whole words (delimited by anything but `[A-Za-z0-9_]`).
pub(crate) fn rename_words(text: &str, renames: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let replaced = renames
            .iter()
            .find(|(from, _)| *from == word.as_str())
            .map(|(_, to)| *to);
        out.push_str(replaced.unwrap_or(word.as_str()));
        word.clear();
    };
    for ch in text.chars() {
        if ch.is_ascii_alphanumeric() || ch == '_' {
            word.push(ch);
        } else {
            flush(&mut word, &mut out);
            out.push(ch);
        }
    }
    flush(&mut word, &mut out);
    out
}

impl From<BodyError> for HuaweiError {
    fn from(e: BodyError) -> Self {
        HuaweiError::new(e.status(), "ELB.8902", e.to_string())
    }
}

impl From<ControlError> for HuaweiError {
    fn from(e: ControlError) -> Self {
        let message = e.to_string();
        match e {
            ControlError::Invalid(_) => HuaweiError::invalid(message),
            ControlError::NotFound { .. } => HuaweiError::not_found(message),
            ControlError::Forbidden(_) => {
                HuaweiError::new(StatusCode::FORBIDDEN, "APIGW.0302", message)
            }
            ControlError::Conflict(_) | ControlError::RetryTokenReused => {
                HuaweiError::conflict(message)
            }
            ControlError::Busy { .. } => HuaweiError::new(
                StatusCode::CONFLICT,
                "ELB.8906",
                format!("the load balancer's provisioning_status is not ACTIVE: {message}"),
            ),
            ControlError::Locked { .. } => {
                HuaweiError::new(StatusCode::CONFLICT, "ELB.8907", message)
            }
            ControlError::PreconditionFailed { .. } => {
                HuaweiError::new(StatusCode::PRECONDITION_FAILED, "ELB.8912", message)
            }
            ControlError::RateLimited { retry_after } => HuaweiError {
                retry_after_secs: Some(retry_after.as_secs().max(1)),
                ..HuaweiError::new(StatusCode::TOO_MANY_REQUESTS, "APIGW.0308", message)
            },
            ControlError::OutcomeUnknown { .. } => HuaweiError {
                retry_after_secs: Some(crate::UNAVAILABLE_RETRY_SECS),
                ..HuaweiError::new(StatusCode::SERVICE_UNAVAILABLE, "ELB.1002", message)
            },
            ControlError::Unavailable(_) => HuaweiError {
                retry_after_secs: Some(crate::UNAVAILABLE_RETRY_SECS),
                ..HuaweiError::new(StatusCode::SERVICE_UNAVAILABLE, "ELB.1001", message)
            },
            ControlError::Internal(_) | ControlError::SecretKey(_) => {
                tracing::error!(error = %message, "internal error");
                HuaweiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "ELB.1000",
                    "internal error",
                )
            }
        }
    }
}

impl IntoResponse for HuaweiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error_code": self.code,
            "error_msg": self.message,
            "request_id": current_request_id(),
        });
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.extensions_mut()
                .insert(crate::auth::AuthRefused(self.message));
        }
        if let Some(secs) = self.retry_after_secs {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_whole_words_only() {
        let r = [("port", "protocol_port"), ("subnet_id", "subnet_cidr_id")];
        assert_eq!(
            rename_words(
                "members[3].port: port must be between 1 and 65535 (got 0)",
                &r
            ),
            "members[3].protocol_port: protocol_port must be between 1 and 65535 (got 0)"
        );
        assert_eq!(
            rename_words("subnet_id: subnet x; ports and report stay", &r),
            "subnet_cidr_id: subnet x; ports and report stay"
        );
    }
}
