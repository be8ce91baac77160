use serde::{Deserialize, Serialize};

/// What the data plane observes for a resource (Octavia's operating_status).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OperatingStatus {
    /// Healthy and taking traffic.
    Online,
    /// Taking only requests bound to it (drain), finishing in-flight ones.
    Draining,
    /// Administratively out of service (offline or admin state down).
    Offline,
    /// Some members of a pool (or pools of a load balancer) are unhealthy.
    Degraded,
    /// Failing its health checks or its circuit breaker is open.
    Error,
    /// No health monitor: assumed healthy.
    NoMonitor,
}

/// Where a change to a resource stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProvisioningStatus {
    Active,
    PendingCreate,
    PendingUpdate,
    PendingDelete,
    Error,
}
