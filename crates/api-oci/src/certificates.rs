//! OCI certificate bundles (`/loadBalancers/{id}/certificates`) onto the model's
//! certificates, owned by their load balancer and named by `certificateName` (unique in
//! it); and a listener's `sslConfiguration`, which terminates TLS with the named
//! certificate (the model's TERMINATED_HTTPS listener naming it by id).
//!
//! A bundle with `publicCertificate` and `privateKey` is a server certificate; one with
//! only `caCertificate` a CA certificate. fulcrum serves TLSv1.2 and TLSv1.3 with rustls's
//! cipher suites and does not check client certificates: `verifyPeerCertificate: true`,
//! other protocols, encrypted keys (`passphrase`) and the Certificates service's ids are
//! refused with 400.

use axum::extract::State;
use bytes::Bytes;
use fulcrum_control::Config;
use fulcrum_model::{
    Certificate, CertificateId, CertificateKind, CertificateSpec, Listener, ListenerTls,
    LoadBalancerId,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::OciError;
use super::wire::{check_name, parse_body};
use super::{Ctx, OciResult, OciState, Params, ReadIfMatch, accepted, find_lb, json_for};

/// The protocols fulcrum's TLS listeners serve.
const PROTOCOLS: &[&str] = &["TLSv1.2", "TLSv1.3"];

/// OCI's predefined cipher suite names: accepted, served with rustls's suites (all of
/// them AEAD with forward secrecy, a subset of each).
const CIPHER_SUITES: &[&str] = &[
    "oci-default-ssl-cipher-suite-v1",
    "oci-modern-ssl-cipher-suite-v1",
    "oci-compatible-ssl-cipher-suite-v1",
    "oci-wider-compatible-ssl-cipher-suite-v1",
    "oci-customized-ssl-cipher-suite",
    "oci-default-http2-ssl-cipher-suite-v1",
    "oci-default-http2-tls-13-ssl-cipher-suite-v1",
    "oci-default-http2-tls-12-13-ssl-cipher-suite-v1",
    "oci-tls-13-recommended-ssl-cipher-suite-v1",
    "oci-tls-12-13-wider-ssl-cipher-suite-v1",
    "oci-tls-11-12-13-wider-ssl-cipher-suite-v1",
];

/// CreateCertificateDetails.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CertificateIn {
    certificate_name: Option<String>,
    public_certificate: Option<String>,
    private_key: Option<String>,
    ca_certificate: Option<String>,
    passphrase: Option<String>,
}

/// Certificate, as OCI reads it back.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CertificateView {
    certificate_name: String,
    public_certificate: Option<String>,
    ca_certificate: Option<String>,
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

impl CertificateIn {
    fn into_spec(self) -> Result<CertificateSpec, OciError> {
        let name = self
            .certificate_name
            .ok_or_else(|| OciError::missing("certificateName"))?;
        check_name(&name, "certificateName")?;
        if non_empty(self.passphrase).is_some() {
            return Err(OciError::invalid(
                "passphrase (an encrypted private key) is not supported by fulcrum; send the key unencrypted",
            ));
        }
        let (kind, chain, key) = match (
            non_empty(self.public_certificate),
            non_empty(self.private_key),
            non_empty(self.ca_certificate),
        ) {
            (Some(cert), Some(key), None) => (CertificateKind::Server, cert, Some(key)),
            (None, None, Some(ca)) => (CertificateKind::Ca, ca, None),
            (Some(_), None, _) => return Err(OciError::missing("privateKey")),
            (None, Some(_), _) => return Err(OciError::missing("publicCertificate")),
            (Some(_), Some(_), Some(_)) => {
                return Err(OciError::invalid(
                    "caCertificate with publicCertificate is not supported by fulcrum (it does not check client certificates); create the CA bundle under its own certificateName",
                ));
            }
            (None, None, None) => return Err(OciError::missing("publicCertificate")),
        };
        Ok(CertificateSpec {
            name,
            description: String::new(),
            kind,
            certificate_chain_pem: chain,
            private_key_pem: key,
            domains: Vec::new(),
            labels: Default::default(),
        })
    }
}

/// Model field names → OCI's, in error messages.
fn renamed(mut e: OciError) -> OciError {
    for (from, to) in [
        ("certificate_chain_pem", "publicCertificate"),
        ("private_key_pem", "privateKey"),
    ] {
        e.message = e.message.replace(from, to);
    }
    e
}

pub(crate) fn view(c: &Certificate) -> CertificateView {
    let (public, ca) = match c.spec.kind {
        CertificateKind::Server => (Some(c.spec.certificate_chain_pem.clone()), None),
        CertificateKind::Ca => (None, Some(c.spec.certificate_chain_pem.clone())),
    };
    CertificateView {
        certificate_name: c.spec.name.clone(),
        public_certificate: public,
        ca_certificate: ca,
    }
}

/// A load balancer's certificates.
pub(crate) fn of_lb<'a>(
    cfg: &'a Config,
    lb: &'a LoadBalancerId,
) -> impl Iterator<Item = &'a Certificate> + 'a {
    cfg.certificates
        .values()
        .map(|v| &v.value)
        .filter(move |c| c.loadbalancer_id.as_ref() == Some(lb))
}

fn find<'a>(cfg: &'a Config, lb: &'a LoadBalancerId, name: &str) -> Option<&'a Certificate> {
    of_lb(cfg, lb).find(|c| c.spec.name == name)
}

// ---- sslConfiguration ----------------------------------------------------------------

/// SSLConfigurationDetails of a listener.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SslIn {
    certificate_name: Option<String>,
    certificate_ids: Option<Vec<String>>,
    trusted_certificate_authority_ids: Option<Vec<String>>,
    verify_peer_certificate: Option<bool>,
    verify_depth: Option<i64>,
    protocols: Option<Vec<String>>,
    cipher_suite_name: Option<String>,
    server_order_preference: Option<String>,
    has_session_resumption: Option<bool>,
}

impl SslIn {
    /// Checks what fulcrum can serve; the certificate name, for [`SslIn::tls`].
    pub fn check(&self, prefix: &str) -> Result<String, OciError> {
        let f = |n: &str| format!("{prefix}sslConfiguration.{n}");
        if self.certificate_ids.as_ref().is_some_and(|v| !v.is_empty()) {
            return Err(OciError::invalid(format!(
                "{} (the OCI Certificates service) is not supported by fulcrum; use certificateName",
                f("certificateIds")
            )));
        }
        if self
            .trusted_certificate_authority_ids
            .as_ref()
            .is_some_and(|v| !v.is_empty())
        {
            return Err(OciError::invalid(format!(
                "{} is not supported by fulcrum",
                f("trustedCertificateAuthorityIds")
            )));
        }
        if self.verify_peer_certificate == Some(true) {
            return Err(OciError::invalid(format!(
                "{} true is not supported: fulcrum does not check client certificates",
                f("verifyPeerCertificate")
            )));
        }
        if let Some(d) = self.verify_depth
            && !(1..=9).contains(&d)
        {
            return Err(OciError::invalid(format!(
                "{} must be between 1 and 9 (got {d})",
                f("verifyDepth")
            )));
        }
        for p in self.protocols.iter().flatten() {
            if !PROTOCOLS.contains(&p.as_str()) {
                return Err(OciError::invalid(format!(
                    "{}: {p:?} is not served; fulcrum serves {}",
                    f("protocols"),
                    PROTOCOLS.join(" and ")
                )));
            }
        }
        if let Some(c) = &self.cipher_suite_name
            && !CIPHER_SUITES.contains(&c.as_str())
        {
            return Err(OciError::invalid(format!(
                "{} {c:?} is not one of OCI's predefined cipher suites",
                f("cipherSuiteName")
            )));
        }
        if let Some(p) = &self.server_order_preference
            && p != "ENABLED"
        {
            return Err(OciError::invalid(format!(
                "{} must be ENABLED (fulcrum prefers its own order; got {p:?})",
                f("serverOrderPreference")
            )));
        }
        if self.has_session_resumption == Some(false) {
            return Err(OciError::invalid(format!(
                "{} false is not supported: fulcrum's TLS listeners resume sessions",
                f("hasSessionResumption")
            )));
        }
        let name = self
            .certificate_name
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| OciError::missing(&f("certificateName")))?;
        Ok(name)
    }
}

/// The TLS settings of a listener of `lb` terminating with certificate `name`.
pub(crate) fn listener_tls(
    cfg: &Config,
    lb: &LoadBalancerId,
    name: &str,
    field: &str,
) -> Result<ListenerTls, OciError> {
    let cert = find(cfg, lb, name).ok_or_else(|| {
        OciError::invalid(format!(
            "{field}: the load balancer has no certificate named {name:?}"
        ))
    })?;
    if cert.spec.kind != CertificateKind::Server {
        return Err(OciError::invalid(format!(
            "{field}: certificate {name:?} holds only a CA certificate; a listener needs publicCertificate and privateKey"
        )));
    }
    Ok(ListenerTls::by_reference(cert.id.clone(), Vec::new()))
}

/// The `sslConfiguration` a listener reads back with.
pub(crate) fn ssl_view(cfg: &Config, l: &Listener) -> Option<Value> {
    let tls = l.spec.tls.as_ref()?;
    let name = tls
        .certificate_id
        .as_ref()
        .and_then(|id| cfg.certificates.get(id))
        .map(|c| c.value.spec.name.clone());
    Some(serde_json::json!({
        "certificateName": name,
        "certificateIds": null,
        "trustedCertificateAuthorityIds": null,
        "verifyPeerCertificate": false,
        "verifyDepth": 1,
        "protocols": PROTOCOLS,
        "cipherSuiteName": null,
        "serverOrderPreference": "ENABLED",
        "hasSessionResumption": true,
    }))
}

// ---- handlers ------------------------------------------------------------------------

pub(super) async fn create(
    State(s): State<OciState>,
    p: Params,
    Ctx(ctx): Ctx,
    headers: http::HeaderMap,
    body: Bytes,
) -> OciResult {
    super::require_json(&headers)?;
    let spec = parse_body::<CertificateIn>(&body)?.into_spec()?;
    let lb = p.lb();
    {
        let cfg = s.app.control.view();
        find_lb(&cfg, &lb)?;
        if find(&cfg, &lb, &spec.name).is_some() {
            return Err(OciError::new(
                http::StatusCode::CONFLICT,
                "Conflict",
                format!("a certificate named {:?} already exists", spec.name),
            ));
        }
    }
    let outcome = s
        .app
        .control
        .create_certificate(&ctx, Some(&lb), spec)
        .await
        .map_err(|e| renamed(OciError::from(e)))?;
    Ok(accepted(&s.app.control, &outcome))
}

pub(super) async fn list(State(s): State<OciState>, p: Params, cond: ReadIfMatch) -> OciResult {
    let lb = p.lb();
    let cfg = s.app.control.view();
    find_lb(&cfg, &lb)?;
    let certs: Vec<CertificateView> = of_lb(&cfg, &lb).map(view).collect();
    json_for(&cfg, &lb, &cond, &certs)
}

/// Refused (409 `Conflict`) while a listener uses it, as on OCI.
pub(super) async fn delete(State(s): State<OciState>, p: Params, Ctx(ctx): Ctx) -> OciResult {
    let lb = p.lb();
    let id: CertificateId = {
        let cfg = s.app.control.view();
        find_lb(&cfg, &lb)?;
        let name = p.get("certificate");
        let id = find(&cfg, &lb, name)
            .map(|c| c.id.clone())
            .ok_or_else(|| OciError::not_found(format!("certificate {name:?} not found")))?;
        if let Some(l) = cfg.listeners_using_certificate(&id).next() {
            return Err(OciError::new(
                http::StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "certificate {name:?} is used by listener {:?}",
                    super::wire::listener_name(l)
                ),
            ));
        }
        id
    };
    let outcome = s.app.control.delete_certificate(&ctx, &id).await?;
    Ok(accepted(&s.app.control, &outcome))
}
