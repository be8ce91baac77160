//! OCI API signing keys registered at run time: stored like any resource, so every node of
//! a fleet learns of a new key (or of its removal) through the same change feed, and the
//! OCI front door reads them from the view. Like OCI's own UploadApiKey and DeleteApiKey,
//! a key is registered or removed, never changed.
//!
//! Only an unlimited caller may do either: a key grants access, so a credential limited to
//! some load balancers could otherwise register one limited to nothing.

use fulcrum_model::{OciApiKey, OciApiKeyId, OciApiKeySpec, ResourceKind};
use fulcrum_store::Compare;

use crate::engine::Plan;
use crate::ops::new_id;
use crate::{ControlError, ControlPlane, Outcome, RequestContext, Scope, keys};

/// The value of a key id's claim (`keys::oci_key_id_claim`).
#[derive(Clone, serde::Serialize)]
struct KeyIdClaim {
    key: OciApiKeyId,
    key_id: String,
}

impl fulcrum_model::Secrets for KeyIdClaim {
    fn secrets_mut(&mut self) -> Vec<&mut String> {
        Vec::new()
    }
}

fn only_unlimited(scope: &Scope) -> Result<(), ControlError> {
    match scope {
        Scope::All => Ok(()),
        Scope::Limited { what, .. } => Err(ControlError::Forbidden(format!(
            "this credential is limited to {what}: registering or removing API keys needs \
             an unlimited one"
        ))),
    }
}

impl ControlPlane {
    /// Registers a key; its key id (`tenancy/user/fingerprint`) must be new.
    pub async fn create_oci_api_key(
        &self,
        ctx: &RequestContext,
        spec: OciApiKeySpec,
    ) -> Result<Outcome, ControlError> {
        only_unlimited(&ctx.scope)?;
        let info = spec.validate()?;
        let key_id = OciApiKey::key_id_of(&spec, &info.fingerprint);
        self.mutate(ctx, &("CreateOciApiKey", &spec), |cfg, now| {
            if let Some(other) = cfg.oci_api_keys.values().find(|k| k.value.key_id == key_id) {
                return Err(ControlError::Conflict(format!(
                    "the key {key_id} is already registered ({})",
                    other.value.id
                )));
            }
            let id = OciApiKeyId(new_id());
            let mut plan = Plan::new("CreateOciApiKey");
            plan.compares.push(Compare::absent(keys::oci_api_key(&id)));
            // Two registrations of one key at once: only one claim can be created.
            let claim = keys::oci_key_id_claim(&key_id);
            plan.compares.push(Compare::absent(claim.clone()));
            plan.put(
                claim,
                &KeyIdClaim {
                    key: id.clone(),
                    key_id: key_id.clone(),
                },
            )?;
            plan.put(
                keys::oci_api_key(&id),
                &OciApiKey {
                    id: id.clone(),
                    spec: spec.clone(),
                    key_id: key_id.clone(),
                    fingerprint: info.fingerprint.clone(),
                    created_at: now,
                },
            )?;
            plan.touched(ResourceKind::OciApiKey, &id);
            plan.result = plan.resources.first().cloned();
            Ok(plan)
        })
        .await
    }

    /// Removes a key: requests it signs are refused from the moment the change is served.
    pub async fn delete_oci_api_key(
        &self,
        ctx: &RequestContext,
        id: &OciApiKeyId,
    ) -> Result<Outcome, ControlError> {
        only_unlimited(&ctx.scope)?;
        self.mutate(ctx, &("DeleteOciApiKey", id), |cfg, _now| {
            let cur = cfg
                .oci_api_keys
                .get(id)
                .ok_or_else(|| ControlError::not_found(ResourceKind::OciApiKey, id))?;
            let mut plan = Plan::new("DeleteOciApiKey");
            plan.target_revision = Some(cur.mod_revision);
            plan.compares
                .push(Compare::unchanged(keys::oci_api_key(id), cur.mod_revision));
            plan.delete(keys::oci_api_key(id));
            plan.delete(keys::oci_key_id_claim(&cur.value.key_id));
            plan.touched(ResourceKind::OciApiKey, id);
            Ok(plan)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::testing::control;

    const KEY: &str = include_str!("../../model/testdata/oci-key-2048.pub.pem");

    fn spec(user: &str) -> OciApiKeySpec {
        OciApiKeySpec {
            tenancy: "ocid1.tenancy.oc1..t".into(),
            user: user.into(),
            public_key_pem: KEY.into(),
            name: String::new(),
            compartments: None,
        }
    }

    #[tokio::test]
    async fn a_key_is_registered_once_and_removed() {
        let (_dir, cp) = control().await;
        let ctx = RequestContext::default();
        let out = cp
            .create_oci_api_key(&ctx, spec("ocid1.user.oc1..u"))
            .await
            .unwrap();
        let id = OciApiKeyId(out.result.unwrap().id);
        let key = cp.view().oci_api_keys[&id].value.clone();
        let fingerprint = include_str!("../../model/testdata/oci-key-2048.fingerprint").trim();
        assert_eq!(key.fingerprint, fingerprint);
        assert_eq!(
            key.key_id,
            format!("ocid1.tenancy.oc1..t/ocid1.user.oc1..u/{fingerprint}")
        );
        assert_eq!(key.principal(), key.key_id);

        let again = cp
            .create_oci_api_key(&ctx, spec("ocid1.user.oc1..u"))
            .await
            .unwrap_err();
        assert!(matches!(again, ControlError::Conflict(_)), "{again:?}");
        // The same public key for another user is another key id.
        cp.create_oci_api_key(&ctx, spec("ocid1.user.oc1..v"))
            .await
            .unwrap();

        cp.delete_oci_api_key(&ctx, &id).await.unwrap();
        assert!(!cp.view().oci_api_keys.contains_key(&id));
        // Its key id is free again.
        cp.create_oci_api_key(&ctx, spec("ocid1.user.oc1..u"))
            .await
            .unwrap();
        let missing = cp.delete_oci_api_key(&ctx, &id).await.unwrap_err();
        assert!(
            matches!(missing, ControlError::NotFound { .. }),
            "{missing:?}"
        );
    }

    #[tokio::test]
    async fn a_limited_caller_may_not_register_or_remove_keys() {
        let (_dir, cp) = control().await;
        let limited = RequestContext {
            scope: Scope::limited("nothing", |_| false).with_networks(),
            ..RequestContext::default()
        };
        let e = cp
            .create_oci_api_key(&limited, spec("ocid1.user.oc1..u"))
            .await
            .unwrap_err();
        assert!(matches!(e, ControlError::Forbidden(_)), "{e:?}");
        let out = cp
            .create_oci_api_key(&RequestContext::default(), spec("ocid1.user.oc1..u"))
            .await
            .unwrap();
        let id = OciApiKeyId(out.result.unwrap().id);
        let e = cp.delete_oci_api_key(&limited, &id).await.unwrap_err();
        assert!(matches!(e, ControlError::Forbidden(_)), "{e:?}");
        assert!(cp.view().oci_api_keys.contains_key(&id));
        // Nor does it see them.
        assert!(cp.view().scoped(&limited.scope).oci_api_keys.is_empty());
    }
}
