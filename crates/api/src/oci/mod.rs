//! The OCI Load Balancing dialect under `/20170115`: seed 000 (UpdateBackend) and the
//! operations around it, authenticated by OCI request signatures.

use axum::Router;
use serde::Deserialize;

use crate::AppState;

/// `[oci]` in `fulcrum.toml`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OciConfig {}

pub(crate) fn router(_state: AppState, _config: &OciConfig) -> Router {
    Router::new()
}
