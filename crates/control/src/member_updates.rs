//! Updating several existing members of one pool in one transaction (Huawei v3
//! `members/batch-update`; any dialect with a "patch these members by id" call).

use fulcrum_model::{
    Checker, Member, MemberId, MemberSpec, PoolId, ResourceKind, ResourceRef,
    check_unique_endpoints,
};
use serde_json::Value;

use crate::engine::Plan;
use crate::ops::{guard_subnets, lb_for_change, member_ctx, patch_spec, pool_of};
use crate::{ControlError, ControlPlane, Outcome, RequestContext, keys};

impl ControlPlane {
    /// Applies a JSON merge patch to each listed member of a pool, all or nothing: every
    /// member must exist, appear once, and still be valid (address and port unique in the
    /// pool, subnet rules) after its patch; otherwise nothing changes. Errors name the
    /// member by its place in the list (`members[2].weight`).
    pub async fn update_members(
        &self,
        ctx: &RequestContext,
        pool_id: &PoolId,
        patches: &[(MemberId, Value)],
    ) -> Result<Outcome, ControlError> {
        if patches.len() > fulcrum_model::MAX_BATCH_MEMBERS {
            return Err(ControlError::invalid(
                "members",
                format!(
                    "at most {} members per call (got {})",
                    fulcrum_model::MAX_BATCH_MEMBERS,
                    patches.len()
                ),
            ));
        }
        self.mutate(ctx, &("UpdateMembers", pool_id, patches), |cfg, now| {
            let pool = pool_of(cfg, pool_id)?;
            let lb = lb_for_change(cfg, ctx, &pool.value.loadbalancer_id)?;
            let mut errors = Checker::new();
            let mut seen = std::collections::HashSet::new();
            let mut updated: Vec<(String, Member)> = Vec::new();
            for (i, (id, patch)) in patches.iter().enumerate() {
                let field = format!("members[{i}]");
                let Some(cur) = cfg.member(pool_id, id) else {
                    errors.fail(
                        format!("{field}.id"),
                        format!("member {id} is not in pool {pool_id}"),
                    );
                    continue;
                };
                if !seen.insert(id) {
                    errors.fail(
                        format!("{field}.id"),
                        format!("member {id} is listed twice"),
                    );
                    continue;
                }
                let spec: MemberSpec = match patch_spec(&cur.value.spec, patch) {
                    Ok(spec) => spec,
                    Err(ControlError::Invalid(v)) => {
                        errors.nested(&field, Err(v));
                        continue;
                    }
                    Err(other) => return Err(other),
                };
                errors.nested(
                    &field,
                    spec.validate(member_ctx(cfg, &lb.value, &pool.value.spec, &spec)),
                );
                updated.push((
                    field,
                    Member {
                        spec,
                        updated_at: now,
                        ..cur.value.clone()
                    },
                ));
            }
            errors.finish()?;
            let untouched = cfg
                .members_of(pool_id)
                .filter(|m| !seen.contains(&m.value.id))
                .map(|m| &m.value.spec);
            check_unique_endpoints(
                untouched,
                updated.iter().map(|(field, m)| (field.clone(), &m.spec)),
            )?;
            let mut plan = Plan::new("UpdateMembers");
            plan.target_revision = Some(pool.mod_revision);
            plan.lb = Some(pool.value.loadbalancer_id.clone());
            plan.touch_pools.push(pool_id.clone());
            guard_subnets(cfg, &mut plan, updated.iter().map(|(_, m)| &m.spec))?;
            for (_, m) in &updated {
                plan.put(keys::member(pool_id, &m.id), m)?;
                plan.touched(ResourceKind::Member, &m.id);
            }
            plan.result = Some(ResourceRef {
                kind: ResourceKind::Pool,
                id: pool_id.to_string(),
            });
            Ok(plan)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use fulcrum_model::{LoadBalancerSpec, PoolProtocol, PoolSpec};
    use serde_json::json;

    use super::*;
    use crate::BatchMembers;

    async fn setup() -> (tempfile::TempDir, Arc<ControlPlane>, PoolId, Vec<MemberId>) {
        let (dir, cp) = crate::testing::control().await;
        let ctx = RequestContext::default();
        let lb = cp
            .create_loadbalancer(&ctx, LoadBalancerSpec::new("lb"))
            .await
            .unwrap();
        let lb_id = fulcrum_model::LoadBalancerId(lb.result.unwrap().id);
        let pool = cp
            .create_pool(&ctx, &lb_id, PoolSpec::new("p", PoolProtocol::Http))
            .await
            .unwrap();
        let pool_id = PoolId(pool.result.unwrap().id);
        cp.batch_members(
            &ctx,
            &pool_id,
            BatchMembers::Add(vec![
                MemberSpec::new("10.0.0.1", 80),
                MemberSpec::new("10.0.0.2", 80),
            ]),
        )
        .await
        .unwrap();
        let ids = cp
            .view()
            .members_of(&pool_id)
            .map(|m| m.value.id.clone())
            .collect();
        (dir, cp, pool_id, ids)
    }

    fn weights(cp: &ControlPlane, pool: &PoolId) -> Vec<u32> {
        let mut w: Vec<(String, u32)> = cp
            .view()
            .members_of(pool)
            .map(|m| (m.value.spec.address.clone(), m.value.spec.weight))
            .collect();
        w.sort();
        w.into_iter().map(|(_, w)| w).collect()
    }

    #[tokio::test]
    async fn updates_all_or_nothing() {
        let (_dir, cp, pool, ids) = setup().await;
        let ctx = RequestContext::default();
        let by_addr = |a: &str| {
            cp.view()
                .members_of(&pool)
                .find(|m| m.value.spec.address == a)
                .map(|m| m.value.id.clone())
                .unwrap()
        };
        let (m1, m2) = (by_addr("10.0.0.1"), by_addr("10.0.0.2"));
        assert_eq!(ids.len(), 2);
        cp.update_members(
            &ctx,
            &pool,
            &[
                (m1.clone(), json!({"weight": 5})),
                (m2.clone(), json!({"weight": 7, "name": "b"})),
            ],
        )
        .await
        .unwrap();
        assert_eq!(weights(&cp, &pool), vec![5, 7]);

        // One bad patch (a port clash with the other member) changes nothing.
        let err = cp
            .update_members(
                &ctx,
                &pool,
                &[
                    (m1.clone(), json!({"weight": 9})),
                    (m2.clone(), json!({"address": "10.0.0.1"})),
                ],
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("members[1]"), "{err}");
        assert_eq!(weights(&cp, &pool), vec![5, 7]);

        // Unknown ids, duplicates and unknown fields are refused by position.
        let err = cp
            .update_members(
                &ctx,
                &pool,
                &[
                    (m1.clone(), json!({"weight": 1})),
                    (MemberId("nope".into()), json!({"weight": 1})),
                ],
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("members[1].id"), "{err}");
        let err = cp
            .update_members(
                &ctx,
                &pool,
                &[
                    (m1.clone(), json!({"weight": 1})),
                    (m1.clone(), json!({"weight": 2})),
                ],
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("listed twice"), "{err}");
        let err = cp
            .update_members(&ctx, &pool, &[(m2, json!({"colour": 1}))])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("members[0]"), "{err}");
        assert_eq!(weights(&cp, &pool), vec![5, 7]);
    }
}
