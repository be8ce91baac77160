//! OCI API signing keys registered at run time (`/v1/oci-api-keys`): what OCI's Identity
//! service does with UploadApiKey, ListApiKeys and DeleteApiKey, for the OCI front door.
//! The OCI SDK's config names a key by `tenancy`, `user` and `fingerprint`; registering the
//! public key with the first two gives the third, computed as OCI computes it.

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use fulcrum_api_core::AppState;
use fulcrum_model::{OciApiKey, OciApiKeyId, OciApiKeySpec, WorkRequest};
use http::StatusCode;

use crate::error::ErrorBody;
use crate::extract::{Caller, Ctx, JsonBody, PathParams, QueryParams};
use crate::{
    ApiResult, Page, PageQuery, accepted, created_or_ok, gone, paginate, respond, result_id,
};

#[utoipa::path(get, path = "/v1/oci-api-keys", tag = "oci-api-keys", params(PageQuery),
    responses((status = 200, body = Page<OciApiKey>)))]
pub(crate) async fn list_oci_api_keys(
    State(s): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<PageQuery>,
) -> ApiResult {
    let full = s.control.view();
    let cfg = caller.view(&full);
    let page = paginate(
        &q,
        cfg.oci_api_keys.values(),
        |v| v.value.id.to_string(),
        |v| v.value.clone(),
    )?;
    Ok(Json(page).into_response())
}

/// Registers a key; the answer carries its `key_id` and `fingerprint`, the values the OCI
/// SDK's config file holds.
#[utoipa::path(post, path = "/v1/oci-api-keys", tag = "oci-api-keys", request_body = OciApiKeySpec,
    responses((status = 201, body = OciApiKey), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(crate) async fn create_oci_api_key(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    JsonBody(spec): JsonBody<OciApiKeySpec>,
) -> ApiResult {
    let outcome = s.control.create_oci_api_key(&ctx, spec).await?;
    let id = OciApiKeyId(result_id(&outcome)?);
    let cfg = s.control.view();
    let v = cfg
        .oci_api_keys
        .get(&id)
        .ok_or_else(|| gone("OCI API key", id.as_str()))?;
    Ok(respond(
        created_or_ok(&outcome, true),
        Some(v.mod_revision),
        Some(&outcome.work_request),
        &v.value,
    ))
}

#[utoipa::path(get, path = "/v1/oci-api-keys/{id}", tag = "oci-api-keys",
    responses((status = 200, body = OciApiKey), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_oci_api_key(
    State(s): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> ApiResult {
    let full = s.control.view();
    let cfg = caller.view(&full);
    let v = cfg
        .oci_api_keys
        .get(&OciApiKeyId(id.clone()))
        .ok_or_else(|| gone("OCI API key", &id))?;
    Ok(respond(
        StatusCode::OK,
        Some(v.mod_revision),
        None,
        &v.value,
    ))
}

/// Removes a key: requests signed with it are refused once the change is served.
#[utoipa::path(delete, path = "/v1/oci-api-keys/{id}", tag = "oci-api-keys",
    responses((status = 202, body = WorkRequest), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_oci_api_key(
    State(s): State<AppState>,
    PathParams(id): PathParams<String>,
    Ctx(ctx): Ctx,
) -> ApiResult {
    let outcome = s.control.delete_oci_api_key(&ctx, &OciApiKeyId(id)).await?;
    Ok(accepted(&outcome))
}
