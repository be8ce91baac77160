//! The Azure API Management dialect: seed 003 (Backend - Update) and the backend
//! operations around it under `/subscriptions/{sub}/resourceGroups/{rg}/providers/
//! Microsoft.ApiManagement/service/{svc}/backends`.

use axum::Router;
use serde::Deserialize;

use crate::AppState;

/// `[azure]` in `fulcrum.toml`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureConfig {}

pub(crate) fn router(_state: AppState, _config: &AzureConfig) -> Router {
    Router::new()
}
