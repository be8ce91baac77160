use std::time::Duration;

use fulcrum_model::{ResourceKind, ValidationError};
use fulcrum_store::StoreError;

/// Why an operation was refused. Every dialect renders these its own way, in one place.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    #[error("{kind} {id} not found")]
    NotFound { kind: ResourceKind, id: String },
    /// The request conflicts with the current state (a duplicate, a reference, a protection).
    #[error("{0}")]
    Conflict(String),
    /// The resource has a change the data plane does not serve yet; retry shortly.
    #[error("{kind} {id} has a change in progress; retry shortly")]
    Busy { kind: ResourceKind, id: String },
    /// A lock forbids the change and the request did not override it.
    #[error("load balancer {id} is locked ({lock}); override the lock to change it")]
    Locked { id: String, lock: String },
    /// The caller's credential does not allow the change (its role, or a change that
    /// would leave its scope).
    #[error("{0}")]
    Forbidden(String),
    #[error("the ETag does not match (current {current})")]
    PreconditionFailed { current: String },
    #[error("the retry token was already used for a different request")]
    RetryTokenReused,
    #[error("too many requests; retry in {}s", retry_after.as_secs().max(1))]
    RateLimited { retry_after: Duration },
    #[error("the configuration store is unavailable: {0}")]
    Unavailable(String),
    /// The store did not answer before the deadline after the change was sent: it may or
    /// may not have been committed. Look up its work request before trying again (or retry
    /// with the same retry token).
    #[error(
        "the configuration store did not confirm the change in time: it may or may not have \
         been made; look up work request {work_request_id} before retrying"
    )]
    OutcomeUnknown { work_request_id: String },
    #[error("internal error: {0}")]
    Internal(String),
    /// The secret key cannot open the secrets stored (another key sealed them), or the key
    /// could not be used at all. Only `ControlPlane::start` answers it.
    #[error("{0}")]
    SecretKey(String),
}

impl ControlError {
    pub fn not_found(kind: ResourceKind, id: impl std::fmt::Display) -> Self {
        ControlError::NotFound {
            kind,
            id: id.to_string(),
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ControlError::Invalid(ValidationError::invalid(field, message))
    }

    /// A stable name for the error (the native API's codes), for logs and audit records.
    pub fn code(&self) -> &'static str {
        match self {
            ControlError::Invalid(_) => "invalid_argument",
            ControlError::NotFound { .. } => "not_found",
            ControlError::Conflict(_) => "conflict",
            ControlError::Busy { .. } => "busy",
            ControlError::Locked { .. } => "locked",
            ControlError::Forbidden(_) => "forbidden",
            ControlError::PreconditionFailed { .. } => "precondition_failed",
            ControlError::RetryTokenReused => "retry_token_reused",
            ControlError::RateLimited { .. } => "rate_limited",
            ControlError::Unavailable(_) => "unavailable",
            ControlError::OutcomeUnknown { .. } => "outcome_unknown",
            ControlError::Internal(_) => "internal",
            ControlError::SecretKey(_) => "secret_key",
        }
    }
}

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> Self {
        match e {
            // Outside a write's own transaction (where the engine names the work request),
            // an unknown outcome is the store being unreachable.
            StoreError::Unavailable(m) | StoreError::Indeterminate(m) => {
                ControlError::Unavailable(m)
            }
            StoreError::TooLarge(m) => ControlError::invalid(
                "request",
                format!(
                    "this change is too large for the configuration store ({m}): make it in \
                     smaller parts, or start etcd with --max-txn-ops={} (its default is \
                     128) and a larger --max-request-bytes",
                    fulcrum_store::NEEDED_TXN_OPS
                ),
            ),
            other => ControlError::Internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change too large for etcd is the caller's to split (or the operator's to allow):
    /// a 400 that says how, not an internal error.
    #[test]
    fn a_change_too_large_for_the_store_is_refused_with_the_remedy() {
        let e = ControlError::from(StoreError::TooLarge(
            "etcd: etcdserver: too many operations in txn request".into(),
        ));
        assert_eq!(e.code(), "invalid_argument");
        let text = e.to_string();
        assert!(
            text.contains("--max-txn-ops=1024") && text.contains("smaller parts"),
            "{text}"
        );
    }
}
