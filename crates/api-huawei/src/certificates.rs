//! Huawei ELB certificates (`/certificates`, v2 and v3 shapes) onto the model's
//! certificates. A certificate belongs to the project it was created in (its
//! `huawei.project_id` label); listeners name it in `default_tls_container_ref` and
//! `sni_container_refs`.
//!
//! v3 wraps bodies in `{"certificate": …}` and adds `request_id`; v2 sends and answers the
//! certificate itself. `type` is `server` (with `private_key`) or `client` (a CA, for
//! client authentication). Private keys are never read back: `private_key` answers `***`.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fulcrum_control::Versioned;
use fulcrum_model::{Certificate, CertificateId, CertificateKind, CertificateSpec};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::error::HuaweiError;
use super::handlers::{created, ctx, page_body, parse, reply, result_id, set, settle};
use super::views::{LABEL_PROJECT, time};
use super::{Api, Call, HState};

type HResult = Result<Response, HuaweiError>;

/// Model field names → Huawei's, for error messages.
const RENAMES: &[(&str, &str)] = &[
    ("certificate_chain_pem", "certificate"),
    ("private_key_pem", "private_key"),
    ("domains", "domain"),
    ("kind", "type"),
];

/// Huawei's limit on `domain`: comma-separated names, 10,000 characters in all.
const MAX_DOMAIN_LEN: usize = 10_000;

pub(crate) fn routes(api: Api) -> Router<HState> {
    macro_rules! h {
        ($f:ident) => {
            move |State(s): State<HState>, call: Call| async move { $f(api, s, call).await }
        };
    }
    Router::new()
        .route("/certificates", get(h!(list)).post(h!(create)))
        .route(
            "/certificates/{certificate_id}",
            get(h!(show)).put(h!(update)).delete(h!(delete)),
        )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Create {
    certificate: String,
    private_key: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    domain: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    admin_state_up: Option<bool>,
    project_id: Option<String>,
    #[allow(dead_code)]
    enterprise_project_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Update {
    certificate: Option<String>,
    private_key: Option<String>,
    name: Option<String>,
    description: Option<String>,
    domain: Option<String>,
}

/// v3 wraps the certificate in `{"certificate": …}`; v2 sends it bare.
fn body<T: serde::de::DeserializeOwned>(api: Api, raw: &[u8]) -> Result<T, HuaweiError> {
    #[derive(Deserialize)]
    struct Wrapped<T> {
        certificate: T,
    }
    match api {
        Api::V3 => parse::<Wrapped<T>>(raw).map(|w| w.certificate),
        Api::V2 => parse::<T>(raw),
    }
}

fn kind(t: Option<&str>) -> Result<CertificateKind, HuaweiError> {
    match t {
        None | Some("server") => Ok(CertificateKind::Server),
        Some("client") => Ok(CertificateKind::Ca),
        Some(other) => Err(HuaweiError::invalid(format!(
            "certificate.type must be server or client (got {other:?})"
        ))),
    }
}

/// `a.example,*.b.example` → the names; empty entries are refused.
fn domains(text: &str) -> Result<Vec<String>, HuaweiError> {
    if text.len() > MAX_DOMAIN_LEN {
        return Err(HuaweiError::invalid(format!(
            "certificate.domain must be at most {MAX_DOMAIN_LEN} characters"
        )));
    }
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|d| {
            let d = d.trim();
            if d.is_empty() {
                Err(HuaweiError::invalid(
                    "certificate.domain has an empty name between commas",
                ))
            } else {
                Ok(d.to_owned())
            }
        })
        .collect()
}

fn render(api: Api, c: &Certificate) -> Value {
    let project = c
        .spec
        .labels
        .get(LABEL_PROJECT)
        .cloned()
        .unwrap_or_default();
    let mut out = json!({
        "id": c.id,
        "name": c.spec.name,
        "description": c.spec.description,
        "type": match c.spec.kind {
            CertificateKind::Server => "server",
            CertificateKind::Ca => "client",
        },
        "domain": c.spec.domains.join(","),
        "certificate": c.spec.certificate_chain_pem,
        "private_key": if c.spec.private_key_pem.is_some() { "***" } else { "" },
        "admin_state_up": true,
        "expire_time": time(&c.not_after),
        "source": "",
        "protection_status": "nonProtection",
        "protection_reason": "",
    });
    match api {
        Api::V2 => {
            out["tenant_id"] = json!(project);
            out["create_time"] = json!(time(&c.created_at));
            out["update_time"] = json!(time(&c.updated_at));
        }
        Api::V3 => {
            out["project_id"] = json!(project);
            out["created_at"] = json!(time(&c.created_at));
            out["updated_at"] = json!(time(&c.updated_at));
            out["common_name"] = json!(c.common_name.clone().unwrap_or_default());
            out["subject_alternative_names"] = json!(c.subject_alternative_names);
            out["enterprise_project_id"] = json!("0");
            out["scm_certificate_id"] = json!("");
        }
    }
    out
}

fn answer(api: Api, status: StatusCode, c: &Certificate) -> Response {
    match api {
        Api::V3 => reply(api, status, json!({ "certificate": render(api, c) })),
        Api::V2 => reply(api, status, render(api, c)),
    }
}

/// This dialect's certificates: those of no load balancer (OCI's live under theirs), as
/// the caller's scope sees them.
fn find(s: &HState, call: &Call, id: &CertificateId) -> Result<Certificate, HuaweiError> {
    let full = s.app.control.view();
    let cfg = full.scoped(&call.caller.scope);
    cfg.certificates
        .get(id)
        .map(|v| &v.value)
        .filter(|c| c.loadbalancer_id.is_none())
        .cloned()
        .ok_or_else(|| HuaweiError::not_found(format!("certificate {id} not found")))
}

async fn list(api: Api, s: HState, call: Call) -> HResult {
    let items = {
        let full = s.app.control.view();
        let cfg = full.scoped(&call.caller.scope);
        cfg.certificates
            .values()
            .map(|v: &Versioned<Certificate>| &v.value)
            .filter(|c| c.loadbalancer_id.is_none())
            .map(|c| render(api, c))
            .collect()
    };
    page_body(api, "certificates", &call.query, items)
}

async fn create(api: Api, s: HState, call: Call) -> HResult {
    let req: Create = body(api, &call.body)?;
    if req.admin_state_up == Some(false) {
        return Err(HuaweiError::invalid(
            "certificate.admin_state_up can only be true",
        ));
    }
    if let Some(p) = &req.project_id
        && *p != call.caller.project_id
    {
        return Err(HuaweiError::invalid(format!(
            "certificate.project_id {p} is not the project of the request"
        )));
    }
    let kind = kind(req.kind.as_deref())?;
    let mut spec = CertificateSpec {
        name: req.name,
        description: req.description,
        kind,
        certificate_chain_pem: req.certificate,
        private_key_pem: req.private_key.filter(|k| !k.trim().is_empty()),
        domains: match kind {
            CertificateKind::Server => domains(req.domain.as_deref().unwrap_or(""))?,
            // Huawei takes `domain` on a CA certificate and ignores it.
            CertificateKind::Ca => Vec::new(),
        },
        labels: Default::default(),
    };
    spec.labels
        .insert(LABEL_PROJECT.into(), call.caller.project_id.clone());
    let outcome = s
        .app
        .control
        .create_certificate(&ctx(&call), None, spec)
        .await
        .map_err(|e| HuaweiError::from(e).renamed(RENAMES))?;
    settle(api, &s, &outcome).await;
    let id = CertificateId(result_id(&outcome)?);
    Ok(answer(api, created(api), &find(&s, &call, &id)?))
}

async fn show(api: Api, s: HState, call: Call) -> HResult {
    let id = CertificateId(call.param("certificate_id")?);
    Ok(answer(api, StatusCode::OK, &find(&s, &call, &id)?))
}

async fn update(api: Api, s: HState, call: Call) -> HResult {
    let id = CertificateId(call.param("certificate_id")?);
    let req: Update = body(api, &call.body)?;
    let cur = find(&s, &call, &id)?;
    let mut patch = Map::new();
    set(&mut patch, "name", &req.name);
    set(&mut patch, "description", &req.description);
    set(&mut patch, "certificate_chain_pem", &req.certificate);
    set(&mut patch, "private_key_pem", &req.private_key);
    if let Some(d) = &req.domain
        && cur.spec.kind == CertificateKind::Server
    {
        patch.insert("domains".into(), json!(domains(d)?));
    }
    let outcome = s
        .app
        .control
        .update_certificate(&ctx(&call), &id, &Value::Object(patch))
        .await
        .map_err(|e| HuaweiError::from(e).renamed(RENAMES))?;
    settle(api, &s, &outcome).await;
    Ok(answer(api, StatusCode::OK, &find(&s, &call, &id)?))
}

/// Refused (409) while a listener uses it, as on Huawei.
async fn delete(api: Api, s: HState, call: Call) -> HResult {
    let id = CertificateId(call.param("certificate_id")?);
    find(&s, &call, &id)?;
    let outcome = s
        .app
        .control
        .delete_certificate(&ctx(&call), &id)
        .await
        .map_err(|e| HuaweiError::from(e).renamed(RENAMES))?;
    settle(api, &s, &outcome).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}
