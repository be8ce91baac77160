//! The Huawei Cloud ELB dialect: seed 001 (`/v2.0/lbaas/...`, shared ELB batch member
//! update) and seed 002 (`/v3/{project_id}/elb/...`, UpdatePool), authenticated by AK/SK
//! signatures or tokens.

use axum::Router;
use serde::Deserialize;

use crate::AppState;

/// `[huawei]` in `fulcrum.toml`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HuaweiConfig {}

pub(crate) fn router(_state: AppState, _config: &HuaweiConfig) -> Router {
    Router::new()
}
