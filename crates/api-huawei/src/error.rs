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
//!
//! The VPC API (`/v1/{project_id}/vpcs`, `/v1/{project_id}/subnets`) answers in its own
//! shape, `{code, message, request_id}` ([`Shape::Vpc`]; the SDK reads `code` and `message`
//! too). Huawei documents `VPC.0003` (VPC not found), `VPC.0101` (invalid VPC parameter)
//! and `VPC.0201` (invalid subnet parameter); the others are fulcrum's, in the same
//! numbering (`01xx` VPCs, `02xx` subnets). Authentication and rate limits keep the API
//! gateway's `APIGW.*` codes, as on Huawei.
//!
//! | status | code (VPC / subnet)     | when |
//! |--------|-------------------------|------|
//! | 400    | `VPC.0101` / `VPC.0201` | invalid or missing parameter, unreadable body, no address to give |
//! | 404    | `VPC.0003` / `VPC.0202` | no such VPC / subnet (a subnet call naming a missing VPC: `VPC.0003`) |
//! | 409    | `VPC.0110` / `VPC.0210` | conflicts: overlapping CIDRs, a VPC with subnets, a subnet in use, no free address |
//! | 503    | `VPC.0105`              | the configuration store is unavailable |
//! | 500    | `VPC.0105`              | internal error |

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
    pub shape: Shape,
}

/// The body an error is rendered in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Shape {
    /// ELB (and the API gateway): `{error_code, error_msg, request_id}`.
    #[default]
    Elb,
    /// The VPC API: `{code, message, request_id}`.
    Vpc,
}

/// Which VPC API resource an error is about: it picks the code's module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VpcModule {
    Vpc,
    Subnet,
}

impl VpcModule {
    fn codes(self) -> (&'static str, &'static str, &'static str) {
        // (invalid, not found, conflict)
        match self {
            VpcModule::Vpc => ("VPC.0101", "VPC.0003", "VPC.0110"),
            VpcModule::Subnet => ("VPC.0201", "VPC.0202", "VPC.0210"),
        }
    }
}

impl HuaweiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
            shape: Shape::Elb,
        }
    }

    /// The same error as the VPC API renders it, its code in `module`'s numbering.
    /// Gateway codes (`APIGW.*`: authentication, rate limits) stay as they are.
    pub fn for_vpc(mut self, module: VpcModule) -> Self {
        self.shape = Shape::Vpc;
        if self.code.starts_with("APIGW.") || self.code.starts_with("VPC.") {
            return self;
        }
        let (invalid, not_found, conflict) = module.codes();
        self.code = match self.status {
            StatusCode::NOT_FOUND => not_found,
            StatusCode::CONFLICT => conflict,
            s if s.is_server_error() => "VPC.0105",
            _ => invalid,
        };
        self
    }

    /// A control-plane error from a VPC API call: a missing VPC is `VPC.0003` whichever
    /// resource the call was about.
    pub fn from_vpc_call(e: ControlError, module: VpcModule) -> Self {
        let vpc_missing = matches!(
            &e,
            ControlError::NotFound {
                kind: fulcrum_model::ResourceKind::Vpc,
                ..
            }
        );
        let mut err = HuaweiError::from(e).for_vpc(module);
        if vpc_missing {
            err.code = "VPC.0003";
        }
        err
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
        let body = match self.shape {
            Shape::Elb => serde_json::json!({
                "error_code": self.code,
                "error_msg": self.message,
                "request_id": current_request_id(),
            }),
            Shape::Vpc => serde_json::json!({
                "code": self.code,
                "message": self.message,
                "request_id": current_request_id(),
            }),
        };
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
