//! VPCs, and the addresses (VIPs) load balancers are given: what a load balancer created
//! without an address binds, picked from the node's VIP ranges (`Options::vip_ranges`)
//! within its subnet, claimed in the same transaction so two never get the same one.

use std::net::IpAddr;

use fulcrum_model::{
    LoadBalancer, ResourceKind, Secrets, SubnetId, SubnetSpec, VipError, Vpc, VpcId, VpcSpec,
    allocate_vip,
};
use fulcrum_store::Compare;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::Plan;
use crate::ops::{new_id, patch_spec};
use crate::{Config, ControlError, ControlPlane, Outcome, RequestContext, keys};

/// Where a new load balancer's address comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Vip {
    /// The spec's `vip_address` as it is: the operator's choice (the native API). A
    /// listener that cannot bind it fails its work request.
    #[default]
    AsGiven,
    /// The spec's `vip_address`, which must lie in the node's VIP ranges and be no other
    /// load balancer's.
    InRanges,
    /// The first free address of the VIP ranges, within this subnet when one is named:
    /// not the network, broadcast or gateway address, nor another load balancer's.
    Allocate { subnet: Option<SubnetId> },
}

/// The value of a VIP claim key (`keys::vip_claim`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct VipClaim {
    pub loadbalancer_id: fulcrum_model::LoadBalancerId,
}

impl Secrets for VipClaim {
    fn secrets_mut(&mut self) -> Vec<&mut String> {
        Vec::new()
    }
}

impl From<VipError> for ControlError {
    fn from(e: VipError) -> Self {
        match e {
            VipError::OutsideRanges { .. } => ControlError::invalid("vip_address", e.to_string()),
            VipError::Exhausted { .. } => ControlError::Conflict(e.to_string()),
        }
    }
}

/// Sets `lb`'s address as `vip` says and, unless it is [`Vip::AsGiven`], claims it in `plan`.
pub(crate) fn plan_vip(
    cfg: &Config,
    ranges: &[ipnet::IpNet],
    plan: &mut Plan,
    lb: &mut LoadBalancer,
    vip: &Vip,
) -> Result<(), ControlError> {
    let user = |a: IpAddr| {
        cfg.loadbalancers
            .values()
            .find(|l| l.value.spec.vip_address == a)
            .map(|l| &l.value.id)
    };
    let addr = match vip {
        Vip::AsGiven => return Ok(()),
        Vip::InRanges => {
            let addr = lb.spec.vip_address;
            if !ranges.iter().any(|r| r.contains(&addr)) {
                return Err(ControlError::invalid(
                    "vip_address",
                    format!(
                        "vip_address {addr} is not an address this node can bind: it is outside [proxy] vip_ranges ({})",
                        ranges
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            if let Some(other) = user(addr) {
                return Err(ControlError::Conflict(format!(
                    "vip_address {addr} is already used by load balancer {other}"
                )));
            }
            addr
        }
        Vip::Allocate { subnet } => {
            let subnet: Option<&SubnetSpec> = match subnet {
                None => None,
                Some(id) => {
                    let s = cfg.subnets.get(id).ok_or_else(|| {
                        ControlError::invalid(
                            "vip_subnet_id",
                            format!("subnet {id} does not exist"),
                        )
                    })?;
                    // The subnet must not change under the transaction.
                    plan.compares
                        .push(Compare::unchanged(keys::subnet(id), s.mod_revision));
                    Some(&s.value.spec)
                }
            };
            allocate_vip(ranges, subnet, |a| user(a).is_some())?
        }
    };
    let key = keys::vip_claim(addr);
    // A claim left by a load balancer that no longer has the address is taken over.
    plan.compares.push(match cfg.vip_claims.get(&addr) {
        Some(rev) => Compare::unchanged(key.clone(), *rev),
        None => Compare::absent(key.clone()),
    });
    plan.put(
        key,
        &VipClaim {
            loadbalancer_id: lb.id.clone(),
        },
    )?;
    lb.spec.vip_address = addr;
    Ok(())
}

/// Drops the claim on `addr` (when there is one) as its load balancer lets the address go.
pub(crate) fn release_vip(cfg: &Config, plan: &mut Plan, addr: IpAddr) {
    if cfg.vip_claims.contains_key(&addr) {
        plan.delete(keys::vip_claim(addr));
    }
}

/// A subnet's rules against the VPC its `vpc_id` names, when it names one: within the
/// VPC's CIDR, overlapping none of the VPC's other subnets. The VPC is rewritten in the
/// plan so a concurrent deletion of it (which compares it) fails instead of leaving the
/// subnet in no VPC. `require` refuses a `vpc_id` that names no VPC (Huawei's API).
pub(crate) fn check_subnet_vpc(
    cfg: &Config,
    plan: &mut Plan,
    subnet_id: Option<&SubnetId>,
    spec: &SubnetSpec,
    require: bool,
) -> Result<(), ControlError> {
    let vpc_id = VpcId(spec.vpc_id.clone());
    let Some(vpc) = cfg.vpcs.get(&vpc_id) else {
        if require {
            return Err(ControlError::not_found(ResourceKind::Vpc, &vpc_id));
        }
        return Ok(());
    };
    if let Some(cidr) = vpc.value.spec.cidr
        && !cidr.contains(&spec.cidr)
    {
        return Err(ControlError::invalid(
            "cidr",
            format!(
                "cidr {} is not within VPC {vpc_id}'s cidr {cidr}",
                spec.cidr
            ),
        ));
    }
    for other in cfg.subnets.values() {
        let o = &other.value;
        if Some(&o.id) == subnet_id || o.spec.vpc_id != spec.vpc_id {
            continue;
        }
        if o.spec.cidr.contains(&spec.cidr) || spec.cidr.contains(&o.spec.cidr) {
            return Err(ControlError::Conflict(format!(
                "cidr {} overlaps subnet {} ({}) of VPC {vpc_id}",
                spec.cidr, o.id, o.spec.cidr
            )));
        }
    }
    let key = keys::vpc(&vpc_id);
    plan.compares
        .push(Compare::unchanged(key.clone(), vpc.mod_revision));
    plan.put(key, &vpc.value)?;
    Ok(())
}

impl ControlPlane {
    pub async fn create_vpc(
        &self,
        ctx: &RequestContext,
        spec: VpcSpec,
    ) -> Result<Outcome, ControlError> {
        spec.validate()?;
        self.mutate(ctx, &("CreateVpc", &spec), |_cfg, now| {
            let id = VpcId(new_id());
            let mut plan = Plan::new("CreateVpc");
            plan.compares.push(Compare::absent(keys::vpc(&id)));
            plan.put(
                keys::vpc(&id),
                &Vpc {
                    id: id.clone(),
                    spec: spec.clone(),
                    created_at: now,
                    updated_at: now,
                },
            )?;
            plan.touched(ResourceKind::Vpc, &id);
            plan.result = plan.resources.first().cloned();
            Ok(plan)
        })
        .await
    }

    /// Updates a VPC; a new CIDR must still hold every subnet of the VPC.
    pub async fn update_vpc(
        &self,
        ctx: &RequestContext,
        id: &VpcId,
        patch: &Value,
    ) -> Result<Outcome, ControlError> {
        self.mutate(ctx, &("UpdateVpc", id, patch), |cfg, now| {
            let cur = cfg
                .vpcs
                .get(id)
                .ok_or_else(|| ControlError::not_found(ResourceKind::Vpc, id))?;
            let spec: VpcSpec = patch_spec(&cur.value.spec, patch)?;
            spec.validate()?;
            let mut plan = Plan::new("UpdateVpc");
            if let Some(cidr) = spec.cidr {
                for s in cfg.subnets.values().filter(|s| s.value.spec.vpc_id == id.0) {
                    if !cidr.contains(&s.value.spec.cidr) {
                        return Err(ControlError::Conflict(format!(
                            "cidr {cidr} would not hold subnet {} ({})",
                            s.value.id, s.value.spec.cidr
                        )));
                    }
                    plan.compares.push(Compare::unchanged(
                        keys::subnet(&s.value.id),
                        s.mod_revision,
                    ));
                }
            }
            plan.target_revision = Some(cur.mod_revision);
            plan.compares
                .push(Compare::unchanged(keys::vpc(id), cur.mod_revision));
            plan.put(
                keys::vpc(id),
                &Vpc {
                    spec,
                    updated_at: now,
                    ..cur.value.clone()
                },
            )?;
            plan.touched(ResourceKind::Vpc, id);
            plan.result = plan.resources.first().cloned();
            Ok(plan)
        })
        .await
    }

    /// Deletes a VPC; refused while a subnet is in it.
    pub async fn delete_vpc(
        &self,
        ctx: &RequestContext,
        id: &VpcId,
    ) -> Result<Outcome, ControlError> {
        self.mutate(ctx, &("DeleteVpc", id), |cfg, _now| {
            let cur = cfg
                .vpcs
                .get(id)
                .ok_or_else(|| ControlError::not_found(ResourceKind::Vpc, id))?;
            if let Some(s) = cfg.subnets.values().find(|s| s.value.spec.vpc_id == id.0) {
                return Err(ControlError::Conflict(format!(
                    "VPC {id} still has subnet {}; delete its subnets first",
                    s.value.id
                )));
            }
            let mut plan = Plan::new("DeleteVpc");
            plan.target_revision = Some(cur.mod_revision);
            plan.compares
                .push(Compare::unchanged(keys::vpc(id), cur.mod_revision));
            plan.delete(keys::vpc(id));
            plan.touched(ResourceKind::Vpc, id);
            Ok(plan)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use fulcrum_model::{LoadBalancerId, LoadBalancerSpec};

    use super::*;
    use crate::testing::control;

    #[test]
    fn a_view_with_claims_and_vpcs_survives_a_snapshot_and_older_ones_load() {
        let mut cfg = Config::default();
        cfg.vip_claims.insert("127.0.0.2".parse().unwrap(), 7);
        cfg.vip_claims.insert("fd00::1".parse().unwrap(), 8);
        let back: Config = serde_json::from_slice(&serde_json::to_vec(&cfg).unwrap()).unwrap();
        assert_eq!(back.vip_claims, cfg.vip_claims);
        let old = br#"{"revision":3,"loadbalancers":{},"listeners":{},"pools":{},"members":{},"monitors":{},"subnets":{}}"#;
        let c: Config = serde_json::from_slice(old).unwrap();
        assert!(c.vpcs.is_empty() && c.vip_claims.is_empty());
        assert_eq!(
            keys::parse(&keys::vip_claim("fd00::1".parse().unwrap())),
            Some(keys::ConfigKey::VipClaim("fd00::1".parse().unwrap()))
        );
    }

    /// An allocated address is claimed with its load balancer and released when the load
    /// balancer moves to another address or is deleted, so it is given again.
    #[tokio::test]
    async fn claims_follow_the_load_balancer() {
        let (_dir, cp) = control().await;
        let ctx = RequestContext::default();
        let alloc = Vip::Allocate { subnet: None };
        let create = |name: &'static str| {
            let cp = cp.clone();
            let (ctx, alloc) = (ctx.clone(), alloc.clone());
            async move {
                let o = cp
                    .create_loadbalancer_at(&ctx, LoadBalancerSpec::new(name), alloc)
                    .await
                    .unwrap();
                let id = LoadBalancerId(o.result.unwrap().id);
                let vip = cp.view().loadbalancers[&id].value.spec.vip_address;
                (id, vip.to_string())
            }
        };
        let (a, vip_a) = create("a").await;
        assert_eq!(vip_a, "127.0.0.1");
        assert_eq!(create("b").await.1, "127.0.0.2");
        assert!(
            cp.view()
                .vip_claims
                .contains_key(&"127.0.0.1".parse().unwrap())
        );
        cp.update_loadbalancer(&ctx, &a, &serde_json::json!({"vip_address": "10.1.1.1"}))
            .await
            .unwrap();
        assert!(
            !cp.view()
                .vip_claims
                .contains_key(&"127.0.0.1".parse().unwrap())
        );
        let (c, vip_c) = create("c").await;
        assert_eq!(vip_c, "127.0.0.1");
        cp.delete_loadbalancer(&ctx, &c, false).await.unwrap();
        assert_eq!(cp.view().vip_claims.len(), 1);
        assert_eq!(create("d").await.1, "127.0.0.1");
        // An address given must lie in the ranges.
        let mut spec = LoadBalancerSpec::new("e");
        spec.vip_address = "10.0.0.1".parse().unwrap();
        let e = cp
            .create_loadbalancer_at(&ctx, spec, Vip::InRanges)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("vip_ranges"), "{e}");
        // …and be free; it is then claimed like an allocated one.
        let given = |addr: &str| {
            let mut spec = LoadBalancerSpec::new("g");
            spec.vip_address = addr.parse().unwrap();
            cp.create_loadbalancer_at(&ctx, spec, Vip::InRanges)
        };
        let e = given("127.0.0.1").await.unwrap_err();
        assert!(matches!(e, ControlError::Conflict(_)), "{e}");
        given("127.0.0.3").await.unwrap();
        assert!(
            cp.view()
                .vip_claims
                .contains_key(&"127.0.0.3".parse().unwrap())
        );
        assert_eq!(create("f").await.1, "127.0.0.4");
    }

    /// Retry tokens taken before addresses were allocated still replay: a new load
    /// balancer's parent fingerprints as it did (`{"new": spec}`).
    #[test]
    fn the_fingerprint_of_a_new_parent_is_unchanged() {
        let spec = LoadBalancerSpec::new("lb");
        let parent = crate::Parent::New(spec.clone(), Vip::Allocate { subnet: None });
        assert_eq!(
            serde_json::to_value(&parent).unwrap(),
            serde_json::json!({ "new": spec })
        );
        let existing = crate::Parent::Existing(LoadBalancerId("x".into()));
        assert_eq!(
            serde_json::to_value(&existing).unwrap(),
            serde_json::json!({ "existing": "x" })
        );
    }
}
