//! Certificates: stored once, named by listeners (`ListenerTls::certificate_id`,
//! `sni_certificate_ids`). The data plane resolves the names when it compiles a listener,
//! and compiles it again when a certificate it names changes, so an update re-keys every
//! listener that uses it with no listener change.
//!
//! A listener that names a certificate rewrites the certificate's key in the same
//! transaction (as members do their subnets), so deleting the certificate, which compares
//! that key, cannot race a listener coming to use it.

use fulcrum_model::{
    Certificate, CertificateId, CertificateKind, CertificateSpec, ListenerSpec, LoadBalancerId,
    ResourceKind,
};
use fulcrum_store::Compare;
use serde_json::Value;

use crate::engine::Plan;
use crate::ops::{lb_for_change, new_id, patch_spec};
use crate::{Config, ControlError, ControlPlane, Outcome, RequestContext, keys};

/// Checks a server certificate's private key against its certificate.
fn check_key_pair(spec: &CertificateSpec) -> Result<(), ControlError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let Some(key_pem) = &spec.private_key_pem else {
        return Ok(());
    };
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(spec.certificate_chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| {
                ControlError::invalid(
                    "certificate_chain_pem",
                    format!("certificate_chain_pem cannot be read: {e}"),
                )
            })?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| {
        ControlError::invalid(
            "private_key_pem",
            format!("private_key_pem cannot be read: {e}"),
        )
    })?;
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        ControlError::invalid(
            "private_key_pem",
            format!("private_key_pem does not fit the certificate: {e}"),
        )
    })?;
    Ok(())
}

/// The checks of a certificate on its own, before any plan: what it reads from the PEM.
fn checked(spec: &CertificateSpec) -> Result<fulcrum_model::CertificateInfo, ControlError> {
    let info = spec.validate()?;
    check_key_pair(spec)?;
    Ok(info)
}

/// A certificate name is unique under its load balancer (OCI names them).
fn check_name_free(
    cfg: &Config,
    owner: Option<&LoadBalancerId>,
    name: &str,
    except: Option<&CertificateId>,
) -> Result<(), ControlError> {
    let Some(owner) = owner else {
        return Ok(());
    };
    if name.is_empty() {
        return Ok(());
    }
    if let Some(other) = cfg.certificates.values().find(|c| {
        c.value.loadbalancer_id.as_ref() == Some(owner)
            && c.value.spec.name == name
            && Some(&c.value.id) != except
    }) {
        return Err(ControlError::Conflict(format!(
            "load balancer {owner} already has a certificate named {name:?} ({})",
            other.value.id
        )));
    }
    Ok(())
}

/// Checks the certificates a listener of `lb_id` names (they exist, serve, and belong to
/// that load balancer or to none), and guards them: each is compared and rewritten, so a
/// concurrent deletion fails instead of leaving the listener without its certificate.
pub(crate) fn guard_listener_certificates(
    cfg: &Config,
    plan: &mut Plan,
    lb_id: &LoadBalancerId,
    spec: &ListenerSpec,
) -> Result<(), ControlError> {
    let Some(tls) = &spec.tls else {
        return Ok(());
    };
    for (field, id) in tls.certificate_refs() {
        let cert = cfg.certificates.get(id).ok_or_else(|| {
            ControlError::invalid(
                field.clone(),
                format!("{field}: certificate {id} does not exist"),
            )
        })?;
        if cert.value.spec.kind != CertificateKind::Server {
            return Err(ControlError::invalid(
                field.clone(),
                format!("{field}: certificate {id} is a CA certificate, not a server certificate"),
            ));
        }
        if let Some(owner) = &cert.value.loadbalancer_id
            && owner != lb_id
        {
            return Err(ControlError::invalid(
                field.clone(),
                format!("{field}: certificate {id} belongs to another load balancer"),
            ));
        }
        let key = keys::certificate(id);
        if plan.writes_key(&key) {
            continue;
        }
        plan.compares
            .push(Compare::unchanged(key.clone(), cert.mod_revision));
        plan.put(key, &cert.value)?;
    }
    Ok(())
}

impl Config {
    /// The listeners that name certificate `id`.
    pub fn listeners_using_certificate<'a>(
        &'a self,
        id: &'a CertificateId,
    ) -> impl Iterator<Item = &'a fulcrum_model::Listener> + 'a {
        self.listeners.values().map(|l| &l.value).filter(move |l| {
            l.spec
                .tls
                .as_ref()
                .is_some_and(|t| t.certificate_refs().any(|(_, c)| c == id))
        })
    }
}

impl ControlPlane {
    /// Stores a certificate, under load balancer `owner` (deleted with it) or under none.
    pub async fn create_certificate(
        &self,
        ctx: &RequestContext,
        owner: Option<&LoadBalancerId>,
        spec: CertificateSpec,
    ) -> Result<Outcome, ControlError> {
        let info = checked(&spec)?;
        self.mutate(ctx, &("CreateCertificate", owner, &spec), |cfg, now| {
            if let Some(lb) = owner {
                lb_for_change(cfg, ctx, lb)?;
            }
            check_name_free(cfg, owner, &spec.name, None)?;
            let id = CertificateId(new_id());
            let cert = Certificate::new(
                id.clone(),
                owner.cloned(),
                spec.clone(),
                info.clone(),
                now,
                now,
            );
            let mut plan = Plan::new("CreateCertificate");
            plan.compares.push(Compare::absent(keys::certificate(&id)));
            plan.put(keys::certificate(&id), &cert)?;
            plan.touched(ResourceKind::Certificate, &id);
            plan.result = plan.resources.first().cloned();
            plan.lb = owner.cloned();
            Ok(plan)
        })
        .await
    }

    /// Changes a certificate (a merge patch of its spec); every listener that names it is
    /// served with the new one once the change is applied. Its kind cannot change while a
    /// listener uses it (a CA certificate serves no listener).
    pub async fn update_certificate(
        &self,
        ctx: &RequestContext,
        id: &CertificateId,
        patch: &Value,
    ) -> Result<Outcome, ControlError> {
        self.mutate(ctx, &("UpdateCertificate", id, patch), |cfg, now| {
            let cur = cfg
                .certificates
                .get(id)
                .ok_or_else(|| ControlError::not_found(ResourceKind::Certificate, id))?;
            let owner = cur.value.loadbalancer_id.as_ref();
            if let Some(lb) = owner {
                lb_for_change(cfg, ctx, lb)?;
            }
            let spec: CertificateSpec = patch_spec(&cur.value.spec, patch)?;
            let info = checked(&spec)?;
            check_name_free(cfg, owner, &spec.name, Some(id))?;
            if spec.kind != CertificateKind::Server
                && let Some(l) = cfg.listeners_using_certificate(id).next()
            {
                return Err(ControlError::Conflict(format!(
                    "certificate {id} is used by listener {}: it must stay a server certificate",
                    l.id
                )));
            }
            let mut plan = Plan::new("UpdateCertificate");
            plan.target_revision = Some(cur.mod_revision);
            plan.compares
                .push(Compare::unchanged(keys::certificate(id), cur.mod_revision));
            let updated = Certificate::new(
                id.clone(),
                owner.cloned(),
                spec,
                info,
                cur.value.created_at,
                now,
            );
            plan.put(keys::certificate(id), &updated)?;
            plan.touched(ResourceKind::Certificate, id);
            for l in cfg.listeners_using_certificate(id) {
                plan.touched(ResourceKind::Listener, &l.id);
            }
            plan.result = plan.resources.first().cloned();
            plan.lb = owner.cloned();
            Ok(plan)
        })
        .await
    }

    /// Deletes a certificate; refused (conflict) while a listener names it.
    pub async fn delete_certificate(
        &self,
        ctx: &RequestContext,
        id: &CertificateId,
    ) -> Result<Outcome, ControlError> {
        self.mutate(ctx, &("DeleteCertificate", id), |cfg, _now| {
            let cur = cfg
                .certificates
                .get(id)
                .ok_or_else(|| ControlError::not_found(ResourceKind::Certificate, id))?;
            if let Some(lb) = &cur.value.loadbalancer_id {
                lb_for_change(cfg, ctx, lb)?;
            }
            if let Some(l) = cfg.listeners_using_certificate(id).next() {
                return Err(ControlError::Conflict(format!(
                    "certificate {id} is in use by listener {}",
                    l.id
                )));
            }
            let mut plan = Plan::new("DeleteCertificate");
            plan.target_revision = Some(cur.mod_revision);
            plan.compares
                .push(Compare::unchanged(keys::certificate(id), cur.mod_revision));
            plan.delete(keys::certificate(id));
            plan.touched(ResourceKind::Certificate, id);
            plan.lb = cur.value.loadbalancer_id.clone();
            Ok(plan)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use fulcrum_model::{
        ListenerId, ListenerProtocol, ListenerTls, LoadBalancerSpec, PoolProtocol, PoolSpec,
    };
    use serde_json::json;

    use super::*;
    use crate::Scope;
    use crate::testing::control;

    fn pair(name: &str) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    fn server(name: &str, labels: &[(&str, &str)]) -> CertificateSpec {
        let (cert, key) = pair(name);
        CertificateSpec {
            name: name.into(),
            description: String::new(),
            kind: CertificateKind::Server,
            certificate_chain_pem: cert,
            private_key_pem: Some(key),
            domains: Vec::new(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn listener(port: u16, tls: ListenerTls, pool: &str) -> ListenerSpec {
        serde_json::from_value(json!({
            "protocol": ListenerProtocol::TerminatedHttps,
            "port": port,
            "default_pool_id": pool,
            "tls": tls,
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn listeners_name_certificates_that_exist_and_keep_them_from_deletion() {
        let (_dir, cp) = control().await;
        let ctx = RequestContext::default();
        let lb = cp
            .create_loadbalancer(&ctx, LoadBalancerSpec::new("lb"))
            .await
            .unwrap();
        let lb = LoadBalancerId(lb.result.unwrap().id);
        let pool = cp
            .create_pool(&ctx, &lb, PoolSpec::new("p", PoolProtocol::Http))
            .await
            .unwrap()
            .result
            .unwrap()
            .id;
        let id = |o: Outcome| CertificateId(o.result.unwrap().id);

        // A key that is not the certificate's is refused; nothing is stored.
        let mut bad = server("a.test", &[]);
        bad.private_key_pem = server("b.test", &[]).private_key_pem;
        let e = cp.create_certificate(&ctx, None, bad).await.unwrap_err();
        assert_eq!(e.code(), "invalid_argument", "{e}");
        assert!(cp.view().certificates.is_empty());

        let a = id(cp
            .create_certificate(&ctx, None, server("a.test", &[]))
            .await
            .unwrap());
        let stored = cp.view().certificates[&a].value.clone();
        assert_eq!(stored.subject_alternative_names, ["a.test"]);
        assert!(stored.not_after > stored.not_before);

        // A listener naming a missing certificate is refused by field.
        let missing = listener(
            8443,
            ListenerTls::by_reference("nope".into(), vec![]),
            &pool,
        );
        let e = cp.create_listener(&ctx, &lb, missing).await.unwrap_err();
        assert!(e.to_string().contains("tls.certificate_id"), "{e}");

        let l = cp
            .create_listener(
                &ctx,
                &lb,
                listener(8443, ListenerTls::by_reference(a.clone(), vec![]), &pool),
            )
            .await
            .unwrap();
        let l = ListenerId(l.result.unwrap().id);
        let e = cp.delete_certificate(&ctx, &a).await.unwrap_err();
        assert_eq!(e.code(), "conflict", "{e}");
        let e = cp
            .update_certificate(&ctx, &a, &json!({"kind": "ca", "private_key_pem": null}))
            .await
            .unwrap_err();
        assert_eq!(
            e.code(),
            "conflict",
            "a used certificate stays a server one: {e}"
        );
        // An update (a new pair) is stored with what its PEM says.
        let (cert, key) = pair("c.test");
        let before = cp.view().certificates[&a].mod_revision;
        cp.update_certificate(
            &ctx,
            &a,
            &json!({"certificate_chain_pem": cert, "private_key_pem": key}),
        )
        .await
        .unwrap();
        let after = cp.view().certificates[&a].clone();
        assert_eq!(after.value.subject_alternative_names, ["c.test"]);
        assert!(after.mod_revision > before);

        cp.delete_listener(&ctx, &l).await.unwrap();
        cp.delete_certificate(&ctx, &a).await.unwrap();
        assert!(cp.view().certificates.is_empty());

        // A load balancer's certificates go with it.
        let owned = id(cp
            .create_certificate(&ctx, Some(&lb), server("o.test", &[]))
            .await
            .unwrap());
        let e = cp
            .create_certificate(&ctx, Some(&lb), server("o.test", &[]))
            .await
            .unwrap_err();
        assert_eq!(
            e.code(),
            "conflict",
            "names are unique per load balancer: {e}"
        );
        cp.delete_loadbalancer(&ctx, &lb, true).await.unwrap();
        assert!(!cp.view().certificates.contains_key(&owned));
    }

    #[tokio::test]
    async fn a_scope_sees_and_changes_only_the_certificates_it_owns() {
        let (_dir, cp) = control().await;
        let project = |p: &'static str| {
            Scope::limited(format!("project {p}"), |_| false)
                .with_networks()
                .owning(move |labels| labels.get("project").map(String::as_str) == Some(p))
        };
        let ctx = |p| RequestContext {
            scope: project(p),
            ..Default::default()
        };
        let mine = CertificateId(
            cp.create_certificate(&ctx("p1"), None, server("a.test", &[("project", "p1")]))
                .await
                .unwrap()
                .result
                .unwrap()
                .id,
        );
        let e = cp
            .create_certificate(&ctx("p1"), None, server("b.test", &[("project", "p2")]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), "forbidden", "{e}");
        {
            let full = cp.view();
            assert!(full.scoped(&project("p1")).certificates.contains_key(&mine));
            assert!(full.scoped(&project("p2")).certificates.is_empty());
        }
        let e = cp.delete_certificate(&ctx("p2"), &mine).await.unwrap_err();
        assert_eq!(
            e.code(),
            "not_found",
            "another project's is as if absent: {e}"
        );
        let e = cp
            .update_certificate(&ctx("p1"), &mine, &json!({"labels": {"project": "p2"}}))
            .await
            .unwrap_err();
        assert_eq!(e.code(), "forbidden", "no moving it out: {e}");
        cp.delete_certificate(&ctx("p1"), &mine).await.unwrap();
    }
}
