use serde::{Deserialize, Serialize};

use crate::{LoadBalancerId, ResourceRef, Timestamp, WorkRequestId};

/// Where an asynchronous change stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkRequestStatus {
    /// Recorded, not yet committed.
    Accepted,
    /// Committed to the store; the data plane does not serve it yet.
    InProgress,
    /// The data plane serves the change.
    Succeeded,
    Failed,
}

impl WorkRequestStatus {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            WorkRequestStatus::Succeeded | WorkRequestStatus::Failed
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkRequestError {
    pub code: String,
    pub message: String,
}

/// One mutation, from acceptance until the data plane serves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkRequest {
    pub id: WorkRequestId,
    /// What was done, e.g. `UpdateMember`, `BatchMembers`.
    pub operation: String,
    #[serde(default)]
    pub loadbalancer_id: Option<LoadBalancerId>,
    /// The resources the change created, updated or deleted.
    pub resources: Vec<ResourceRef>,
    pub status: WorkRequestStatus,
    /// The store revision that holds the change; the change is served once the data
    /// plane has applied this revision.
    pub revision: i64,
    /// The request id of the call that made it.
    pub request_id: String,
    /// Who asked for it (`front door:principal`): a caller limited to some load balancers
    /// may still read the work requests it made after their load balancer is gone.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub principal: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub error: Option<WorkRequestError>,
    #[schema(value_type = String, format = DateTime)]
    pub accepted_at: Timestamp,
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<Timestamp>,
}
