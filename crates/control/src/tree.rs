//! Changing several related resources in one transaction:
//! - adding a load balancer (new or existing) with pools (each with its members and
//!   health monitor) and listeners that may route to those pools;
//! - updating a pool together with its whole member list and its health monitor.
//!
//! Everything is validated before anything is written, so a request is applied whole or
//! not at all.

use std::collections::HashSet;

use fulcrum_model::{
    Checker, HealthMonitor, HealthMonitorId, HealthMonitorSpec, Listener, ListenerId, ListenerSpec,
    LoadBalancer, LoadBalancerId, LoadBalancerSpec, MemberSpec, Pool, PoolContext, PoolId,
    PoolSpec, ResourceKind, ResourceRef, check_monitor_for_pool, check_unique_endpoints,
};
use fulcrum_store::Compare;
use serde::Serialize;
use serde_json::Value;

use crate::certificates::guard_listener_certificates;
use crate::engine::Plan;
use crate::network::{Vip, plan_vip};
use crate::ops::{
    check_pool_name_free, check_port_free, check_server_ids_fit, guard_subnets, lb_for_change,
    member_ctx, new_id, new_member, patch_spec, plan_member_list, pool_of,
};
use crate::{ControlError, ControlPlane, Outcome, RequestContext, keys};

/// Where the new resources go.
#[derive(Clone, Debug)]
pub enum Parent {
    /// A new load balancer, created in the same transaction, its address from [`Vip`].
    New(LoadBalancerSpec, Vip),
    /// A load balancer that exists (its locks apply).
    Existing(LoadBalancerId),
}

/// Serialised for retry tokens' fingerprints as before addresses were allocated
/// (`{"new": spec}`), so a token taken before an upgrade still replays after it: the
/// address a request asks for is in its spec already.
impl Serialize for Parent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Parent::New(spec, _) => s.serialize_newtype_variant("Parent", 0, "new", spec),
            Parent::Existing(id) => s.serialize_newtype_variant("Parent", 1, "existing", id),
        }
    }
}

/// A pool to create, with its members and health monitor. The caller chooses the id
/// (see [`ControlPlane::new_pool_id`]) so listeners in the same request can route to it.
#[derive(Clone, Debug, Serialize)]
pub struct NewPool {
    pub id: PoolId,
    pub spec: PoolSpec,
    pub members: Vec<MemberSpec>,
    /// Its `pool_id` must be `id`.
    pub monitor: Option<HealthMonitorSpec>,
}

/// Resources to add under one load balancer in one transaction.
#[derive(Clone, Debug, Serialize)]
pub struct NewResources {
    pub parent: Parent,
    pub pools: Vec<NewPool>,
    /// May route to the new pools (by their ids) or to pools the load balancer has.
    /// Names, when not empty, must be unique within the load balancer, like pool names.
    pub listeners: Vec<ListenerSpec>,
}

impl ControlPlane {
    /// A fresh pool id for [`NewPool::id`].
    pub fn new_pool_id() -> PoolId {
        PoolId(new_id())
    }

    /// Creates everything in `res` in one transaction, recorded as one work request named
    /// `operation`. The outcome's result is the new load balancer, or else the first new
    /// pool, or else the first new listener.
    pub async fn add_resources(
        &self,
        ctx: &RequestContext,
        operation: &'static str,
        res: NewResources,
    ) -> Result<Outcome, ControlError> {
        if let Parent::New(spec, _) = &res.parent {
            spec.validate()?;
        }
        for (i, l) in res.listeners.iter().enumerate() {
            l.validate()
                .map_err(|e| e.within(&format!("listeners[{i}]")))?;
        }
        // A retry picks new pool ids: the retry token's fingerprint must not see them.
        let fingerprint = (operation, without_pool_ids(&res));
        self.mutate(ctx, &fingerprint, |cfg, now| {
            let mut plan = Plan::new(operation);
            let lb = match &res.parent {
                Parent::New(spec, vip) => {
                    let mut lb = LoadBalancer {
                        id: LoadBalancerId(new_id()),
                        spec: spec.clone(),
                        created_at: now,
                        updated_at: now,
                    };
                    plan_vip(cfg, &self.opts.vip_ranges, &mut plan, &mut lb, vip)?;
                    plan.compares.push(Compare::absent(keys::lb(&lb.id)));
                    plan.put(keys::lb(&lb.id), &lb)?;
                    plan.touched(ResourceKind::LoadBalancer, &lb.id);
                    plan.result = plan.resources.first().cloned();
                    lb
                }
                Parent::Existing(id) => lb_for_change(cfg, ctx, id)?.value.clone(),
            };
            let lb_id = lb.id.clone();
            let mut errors = Checker::new();

            let mut pool_names: HashSet<&str> = cfg
                .pools_of(&lb_id)
                .map(|p| p.value.spec.name.as_str())
                .filter(|n| !n.is_empty())
                .collect();
            let mut pool_ids = HashSet::new();
            for (i, p) in res.pools.iter().enumerate() {
                let field = format!("pools[{i}]");
                errors.nested(
                    &field,
                    p.spec.validate(PoolContext {
                        lb_kind: lb.spec.kind,
                    }),
                );
                if !p.spec.name.is_empty() && !pool_names.insert(&p.spec.name) {
                    errors.fail(
                        format!("{field}.name"),
                        format!(
                            "load balancer {lb_id} already has a pool named {:?}",
                            p.spec.name
                        ),
                    );
                }
                if cfg.pools.contains_key(&p.id) || !pool_ids.insert(&p.id) {
                    errors.fail(format!("{field}.id"), format!("pool {} exists", p.id));
                }
                for (j, m) in p.members.iter().enumerate() {
                    errors.nested(
                        &format!("{field}.members[{j}]"),
                        m.validate(member_ctx(cfg, &lb, &p.spec, m)),
                    );
                }
                errors.nested(
                    &field,
                    check_unique_endpoints(
                        [],
                        p.members
                            .iter()
                            .enumerate()
                            .map(|(j, m)| (format!("members[{j}]"), m)),
                    ),
                );
                if let Some(mon) = &p.monitor {
                    let mfield = format!("{field}.monitor");
                    errors.nested(&mfield, mon.validate());
                    errors.nested(&mfield, check_monitor_for_pool(mon.kind, p.spec.protocol));
                    if mon.pool_id != p.id {
                        errors.fail(
                            format!("{mfield}.pool_id"),
                            "a new pool's health monitor must name that pool",
                        );
                    }
                }
            }

            if let Parent::New(..) = &res.parent {
                // A new load balancer's route sets may send only to the pools made with it.
                for (i, set) in lb.spec.route_sets.iter().enumerate() {
                    for (j, r) in set.routes.iter().enumerate() {
                        let http = res.pools.iter().any(|p| {
                            p.id == r.pool_id
                                && p.spec.protocol == fulcrum_model::PoolProtocol::Http
                        });
                        if !http {
                            errors.fail(
                                format!("route_sets[{i}].routes[{j}].pool_id"),
                                format!("pool {} is not an HTTP pool of the request", r.pool_id),
                            );
                        }
                    }
                }
            }
            let mut listener_names: HashSet<&str> = cfg
                .listeners_of(&lb_id)
                .map(|l| l.value.spec.name.as_str())
                .filter(|n| !n.is_empty())
                .collect();
            for (i, l) in res.listeners.iter().enumerate() {
                let field = format!("listeners[{i}]");
                if !l.name.is_empty() && !listener_names.insert(&l.name) {
                    errors.fail(
                        format!("{field}.name"),
                        format!(
                            "load balancer {lb_id} already has a listener named {:?}",
                            l.name
                        ),
                    );
                }
                for (ref_field, pool_id) in l.pool_refs() {
                    let protocol = match res.pools.iter().find(|p| &p.id == pool_id) {
                        Some(p) => Some(p.spec.protocol),
                        None => cfg
                            .pools
                            .get(pool_id)
                            .filter(|p| p.value.loadbalancer_id == lb_id)
                            .map(|p| p.value.spec.protocol),
                    };
                    match protocol {
                        Some(protocol) => errors.nested(
                            &field,
                            l.validate_pool(&ref_field, &lb_id, &lb_id, protocol),
                        ),
                        None => errors.fail(
                            format!("{field}.{ref_field}"),
                            format!("pool {pool_id} is not a pool of load balancer {lb_id}"),
                        ),
                    }
                }
                if let Some(name) = &l.route_set
                    && lb.spec.route_set(name).is_none()
                {
                    errors.fail(
                        format!("{field}.route_set"),
                        format!("load balancer {lb_id} has no route set {name:?}"),
                    );
                }
                for (j, name) in l.hostnames.iter().enumerate() {
                    if lb.spec.hostname(name).is_none() {
                        errors.fail(
                            format!("{field}.hostnames[{j}]"),
                            format!("load balancer {lb_id} has no hostname {name:?}"),
                        );
                    }
                }
                let clash = res.listeners[..i]
                    .iter()
                    .any(|o| o.port == l.port && o.protocol.is_udp() == l.protocol.is_udp());
                if clash {
                    errors.fail(
                        format!("{field}.port"),
                        format!("port {} is used by another listener of the request", l.port),
                    );
                }
            }
            errors.finish()?;
            for l in &res.listeners {
                check_port_free(cfg, &lb, l, None)?;
            }

            for p in &res.pools {
                let pool = Pool {
                    id: p.id.clone(),
                    loadbalancer_id: lb_id.clone(),
                    spec: p.spec.clone(),
                    created_at: now,
                    updated_at: now,
                };
                plan.compares.push(Compare::absent(keys::pool(&p.id)));
                plan.put(keys::pool(&p.id), &pool)?;
                plan.touched(ResourceKind::Pool, &p.id);
                guard_subnets(cfg, &mut plan, &p.members)?;
                for m in &p.members {
                    let member = new_member(&p.id, m, now);
                    plan.put(keys::member(&p.id, &member.id), &member)?;
                    plan.touched(ResourceKind::Member, &member.id);
                }
                if let Some(mon) = &p.monitor {
                    let monitor = HealthMonitor {
                        id: HealthMonitorId(new_id()),
                        loadbalancer_id: lb_id.clone(),
                        spec: mon.clone(),
                        created_at: now,
                        updated_at: now,
                    };
                    plan.put(keys::monitor(&monitor.id), &monitor)?;
                    plan.touched(ResourceKind::HealthMonitor, &monitor.id);
                }
            }
            for l in &res.listeners {
                let listener = Listener {
                    id: ListenerId(new_id()),
                    loadbalancer_id: lb_id.clone(),
                    spec: l.clone(),
                    created_at: now,
                    updated_at: now,
                };
                guard_listener_certificates(cfg, &mut plan, &lb_id, l)?;
                plan.put(keys::listener(&listener.id), &listener)?;
                plan.touched(ResourceKind::Listener, &listener.id);
            }
            if plan.result.is_none() {
                plan.result = first_of(&plan.resources, ResourceKind::Pool)
                    .or_else(|| first_of(&plan.resources, ResourceKind::Listener));
            }
            plan.lb = Some(lb_id);
            Ok(plan)
        })
        .await
    }
}

/// A pool's new state: a merge patch of its spec, and optionally its exact member list
/// and its health monitor.
#[derive(Clone, Debug, Serialize)]
pub struct PoolUpdate {
    pub patch: Value,
    /// The pool's members become exactly these. Members already in the pool at the same
    /// address and port keep their id (and their connections and health).
    pub members: Option<Vec<MemberSpec>>,
    /// Replaces the pool's health monitor, or creates one. Its `pool_id` must be the pool's.
    pub monitor: Option<HealthMonitorSpec>,
}

impl ControlPlane {
    /// Updates a pool, its members and its health monitor in one transaction, recorded
    /// as one work request named `operation`.
    pub async fn update_pool_tree(
        &self,
        ctx: &RequestContext,
        operation: &'static str,
        pool_id: &PoolId,
        update: PoolUpdate,
    ) -> Result<Outcome, ControlError> {
        self.mutate(ctx, &(operation, pool_id, &update), |cfg, now| {
            let cur = pool_of(cfg, pool_id)?;
            let lb_id = &cur.value.loadbalancer_id;
            let lb = lb_for_change(cfg, ctx, lb_id)?;
            let spec: PoolSpec = patch_spec(&cur.value.spec, &update.patch)?;
            let mut errors = Checker::new();
            errors.nested(
                "",
                spec.validate(PoolContext {
                    lb_kind: lb.value.spec.kind,
                }),
            );
            errors.nested("", spec.validate_update(&cur.value.spec));
            if update.members.is_none()
                && let Err(ControlError::Invalid(v)) =
                    check_server_ids_fit(&spec, cfg.members_of(pool_id).map(|m| &m.value.spec))
            {
                errors.nested("", Err(v));
            }
            for (i, m) in update.members.iter().flatten().enumerate() {
                errors.nested(
                    &format!("members[{i}]"),
                    m.validate(member_ctx(cfg, &lb.value, &spec, m)),
                );
            }
            if let Some(members) = &update.members {
                errors.nested(
                    "",
                    check_unique_endpoints(
                        [],
                        members
                            .iter()
                            .enumerate()
                            .map(|(i, m)| (format!("members[{i}]"), m)),
                    ),
                );
            }
            if let Some(mon) = &update.monitor {
                errors.nested("monitor", mon.validate());
                errors.nested("monitor", check_monitor_for_pool(mon.kind, spec.protocol));
                if &mon.pool_id != pool_id {
                    errors.fail("monitor.pool_id", "the health monitor must name this pool");
                }
            }
            errors.finish()?;
            if spec.name != cur.value.spec.name {
                check_pool_name_free(cfg, lb_id, &spec.name, Some(pool_id))?;
            }

            let mut plan = Plan::new(operation);
            plan.target_revision = Some(cur.mod_revision);
            plan.compares
                .push(Compare::unchanged(keys::pool(pool_id), cur.mod_revision));
            plan.put(
                keys::pool(pool_id),
                &Pool {
                    spec: spec.clone(),
                    updated_at: now,
                    ..cur.value.clone()
                },
            )?;
            plan.touched(ResourceKind::Pool, pool_id);
            if let Some(members) = &update.members {
                guard_subnets(cfg, &mut plan, members)?;
                plan_member_list(&mut plan, cfg, &cur.value, members, now)?;
            }
            if let Some(mon) = &update.monitor {
                let monitor = match cfg.monitor_of(pool_id) {
                    Some(old) if old.value.spec == *mon => None,
                    Some(old) => Some(HealthMonitor {
                        spec: mon.clone(),
                        updated_at: now,
                        ..old.value.clone()
                    }),
                    None => Some(HealthMonitor {
                        id: HealthMonitorId(new_id()),
                        loadbalancer_id: lb_id.clone(),
                        spec: mon.clone(),
                        created_at: now,
                        updated_at: now,
                    }),
                };
                if let Some(monitor) = monitor {
                    plan.put(keys::monitor(&monitor.id), &monitor)?;
                    plan.touched(ResourceKind::HealthMonitor, &monitor.id);
                }
            }
            plan.result = Some(ResourceRef {
                kind: ResourceKind::Pool,
                id: pool_id.to_string(),
            });
            plan.lb = Some(lb_id.clone());
            Ok(plan)
        })
        .await
    }
}

/// `res` with each new pool's id (and every reference to it) replaced by its position.
fn without_pool_ids(res: &NewResources) -> NewResources {
    let mut res = res.clone();
    let ids: Vec<PoolId> = res.pools.iter().map(|p| p.id.clone()).collect();
    let rename = |id: &mut PoolId| {
        if let Some(i) = ids.iter().position(|p| p == id) {
            *id = PoolId(format!("new-pool-{i}"));
        }
    };
    for p in &mut res.pools {
        rename(&mut p.id);
        if let Some(m) = &mut p.monitor {
            rename(&mut m.pool_id);
        }
    }
    for l in &mut res.listeners {
        if let Some(id) = &mut l.default_pool_id {
            rename(id);
        }
        for r in &mut l.routes {
            rename(&mut r.pool_id);
        }
    }
    res
}

fn first_of(resources: &[ResourceRef], kind: ResourceKind) -> Option<ResourceRef> {
    resources.iter().find(|r| r.kind == kind).cloned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use fulcrum_model::{HealthMonitorType, ListenerProtocol, PoolProtocol};

    use std::sync::Arc;

    use futures::StreamExt;

    use super::*;
    use crate::testing::{control, control_with};

    fn listener(name: &str, port: u16, pool: &PoolId) -> ListenerSpec {
        ListenerSpec {
            name: name.into(),
            description: String::new(),
            protocol: ListenerProtocol::Http,
            port,
            default_pool_id: Some(pool.clone()),
            routes: Vec::new(),
            route_set: None,
            hostnames: Vec::new(),
            admin_state_up: true,
            tls: None,
            connection_limit: None,
            timeouts: Default::default(),
            access_log: Default::default(),
            request_id: true,
        }
    }

    fn tree(pool_id: &PoolId, members: Vec<MemberSpec>) -> NewResources {
        NewResources {
            parent: Parent::New(LoadBalancerSpec::new("lb"), Vip::AsGiven),
            pools: vec![NewPool {
                id: pool_id.clone(),
                spec: PoolSpec::new("bs", PoolProtocol::Http),
                members,
                monitor: Some(HealthMonitorSpec::new(
                    pool_id.clone(),
                    HealthMonitorType::Http,
                )),
            }],
            listeners: vec![listener("l1", 18_080, pool_id)],
        }
    }

    /// A load balancer with one pool and a listener sending to it, made in one call.
    async fn lb_with_listener(
        cp: &ControlPlane,
        ctx: &RequestContext,
    ) -> (PoolId, LoadBalancerId, ListenerId) {
        let pool_id = ControlPlane::new_pool_id();
        let out = cp
            .add_resources(ctx, "Create", tree(&pool_id, Vec::new()))
            .await
            .unwrap();
        let lb_id = LoadBalancerId(out.result.unwrap().id);
        let listener_id = cp
            .view()
            .listeners_of(&lb_id)
            .next()
            .unwrap()
            .value
            .id
            .clone();
        (pool_id, lb_id, listener_id)
    }

    #[tokio::test]
    async fn creates_the_whole_tree_in_one_transaction() {
        let (_dir, cp) = control().await;
        let pool_id = ControlPlane::new_pool_id();
        let members = vec![
            MemberSpec::new("10.0.0.1", 80),
            MemberSpec::new("10.0.0.2", 80),
        ];
        let out = cp
            .add_resources(
                &RequestContext::default(),
                "CreateLoadBalancer",
                tree(&pool_id, members),
            )
            .await
            .unwrap();
        let cfg = cp.view();
        let lb_id = LoadBalancerId(out.result.unwrap().id);
        assert!(cfg.loadbalancers.contains_key(&lb_id));
        assert_eq!(cfg.pools[&pool_id].value.loadbalancer_id, lb_id);
        assert_eq!(cfg.members_of(&pool_id).count(), 2);
        assert!(cfg.monitor_of(&pool_id).is_some());
        assert_eq!(cfg.listeners_of(&lb_id).count(), 1);
        // One work request for all of it; the load balancer, pool, members, monitor
        // and listener share its revision.
        assert_eq!(out.work_request.resources.len(), 6);
        assert_eq!(cfg.pools[&pool_id].create_revision, out.revision);
    }

    #[tokio::test]
    async fn a_retried_creation_is_recognised_despite_new_pool_ids() {
        let (_dir, cp) = control().await;
        let ctx = RequestContext {
            principal: "p".into(),
            retry_token: Some("t".into()),
            ..Default::default()
        };
        let first = cp
            .add_resources(
                &ctx,
                "Create",
                tree(&ControlPlane::new_pool_id(), Vec::new()),
            )
            .await
            .unwrap();
        let again = cp
            .add_resources(
                &ctx,
                "Create",
                tree(&ControlPlane::new_pool_id(), Vec::new()),
            )
            .await
            .unwrap();
        assert!(again.replayed);
        assert_eq!(again.work_request.id, first.work_request.id);
        assert_eq!(cp.view().loadbalancers.len(), 1);
        let mut other = tree(&ControlPlane::new_pool_id(), Vec::new());
        other.listeners[0].port = 18_099;
        let err = cp.add_resources(&ctx, "Create", other).await.unwrap_err();
        assert!(matches!(err, ControlError::RetryTokenReused), "{err}");
    }

    #[tokio::test]
    async fn one_bad_part_writes_nothing() {
        let (_dir, cp) = control().await;
        let pool_id = ControlPlane::new_pool_id();
        let before = cp.view().revision;
        let mut res = tree(&pool_id, vec![MemberSpec::new("10.0.0.1", 80)]);
        // A duplicate endpoint deep inside the tree.
        res.pools[0].members.push(MemberSpec::new("10.0.0.1", 80));
        let err = cp
            .add_resources(&RequestContext::default(), "CreateLoadBalancer", res)
            .await
            .unwrap_err();
        assert!(matches!(err, ControlError::Invalid(_)), "{err}");
        let mut res = tree(&pool_id, Vec::new());
        res.listeners[0].default_pool_id = Some(PoolId::from("nope"));
        let err = cp
            .add_resources(&RequestContext::default(), "CreateLoadBalancer", res)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let cfg = cp.view();
        assert_eq!(cfg.revision, before);
        assert!(cfg.loadbalancers.is_empty() && cfg.pools.is_empty());
    }

    #[tokio::test]
    async fn a_pool_its_members_and_monitor_change_together_or_not_at_all() {
        let (_dir, cp) = control().await;
        let pool_id = ControlPlane::new_pool_id();
        let members = vec![
            MemberSpec::new("10.0.0.1", 80),
            MemberSpec::new("10.0.0.2", 80),
        ];
        let ctx = RequestContext::default();
        cp.add_resources(&ctx, "Create", tree(&pool_id, members))
            .await
            .unwrap();
        let kept_id = {
            let cfg = cp.view();
            cfg.members_of(&pool_id)
                .find(|m| m.value.spec.address == "10.0.0.2")
                .unwrap()
                .value
                .id
                .clone()
        };
        let mut monitor = HealthMonitorSpec::new(pool_id.clone(), HealthMonitorType::Tcp);
        monitor.unhealthy_threshold = 5;
        let mut kept = MemberSpec::new("10.0.0.2", 80);
        kept.weight = 3;
        let update = |members: Vec<MemberSpec>, monitor: HealthMonitorSpec| PoolUpdate {
            patch: serde_json::json!({"algorithm": "LEAST_CONNECTIONS"}),
            members: Some(members),
            monitor: Some(monitor),
        };

        // A bad monitor refuses the whole change.
        let mut bad = monitor.clone();
        bad.interval_ms = 1;
        let before = cp.view().revision;
        let err = cp
            .update_pool_tree(&ctx, "U", &pool_id, update(vec![kept.clone()], bad))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("interval_ms"), "{err}");
        assert_eq!(cp.view().revision, before);

        let new = MemberSpec::new("10.0.0.3", 80);
        cp.update_pool_tree(&ctx, "U", &pool_id, update(vec![kept, new], monitor))
            .await
            .unwrap();
        let cfg = cp.view();
        assert_eq!(
            cfg.pools[&pool_id].value.spec.algorithm,
            fulcrum_model::Algorithm::LeastConnections
        );
        let members: Vec<_> = cfg.members_of(&pool_id).map(|m| &m.value).collect();
        assert_eq!(members.len(), 2);
        let kept = members.iter().find(|m| m.id == kept_id).unwrap();
        assert_eq!(
            kept.spec.weight, 3,
            "the member at the same endpoint keeps its id"
        );
        assert!(members.iter().all(|m| m.spec.address != "10.0.0.1"));
        let mon = cfg.monitor_of(&pool_id).unwrap();
        assert_eq!(mon.value.spec.unhealthy_threshold, 5);
        assert_eq!(mon.value.spec.kind, HealthMonitorType::Tcp);
    }

    #[tokio::test]
    async fn names_stay_unique_under_an_existing_load_balancer() {
        let (_dir, cp) = control().await;
        let pool_id = ControlPlane::new_pool_id();
        let out = cp
            .add_resources(
                &RequestContext::default(),
                "CreateLoadBalancer",
                tree(&pool_id, Vec::new()),
            )
            .await
            .unwrap();
        let lb_id = LoadBalancerId(out.result.unwrap().id);
        let again = |pool: &str, listener_name: &str| NewResources {
            parent: Parent::Existing(lb_id.clone()),
            pools: vec![NewPool {
                id: ControlPlane::new_pool_id(),
                spec: PoolSpec::new(pool, PoolProtocol::Http),
                members: Vec::new(),
                monitor: None,
            }],
            listeners: vec![listener(listener_name, 18_081, &pool_id)],
        };
        for (pool, l) in [("bs", "l2"), ("bs2", "l1")] {
            let err = cp
                .add_resources(&RequestContext::default(), "X", again(pool, l))
                .await
                .unwrap_err();
            assert!(err.to_string().contains("already has"), "{err}");
        }
        cp.add_resources(&RequestContext::default(), "X", again("bs2", "l2"))
            .await
            .unwrap();
        assert_eq!(cp.view().pools_of(&lb_id).count(), 2);
    }

    /// Polls `check` until it holds, for at most ten seconds.
    async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !check().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within 10 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_retry_token_is_forgotten_once_it_expires() {
        use std::time::Duration;
        let ttl = Duration::from_millis(400);
        let (_dir, cp) = control_with(crate::Options {
            retry_token_ttl: ttl,
            housekeeping_every: Duration::from_millis(100),
            ..Default::default()
        })
        .await;
        let ctx = RequestContext {
            principal: "p".into(),
            retry_token: Some("t".into()),
            ..Default::default()
        };
        let create = || {
            cp.add_resources(
                &ctx,
                "Create",
                tree(&ControlPlane::new_pool_id(), Vec::new()),
            )
        };
        let first = create().await.unwrap();
        let again = create().await.unwrap();
        assert!(
            again.replayed,
            "within its lifetime the token answers the first result"
        );
        assert_eq!(again.work_request.id, first.work_request.id);
        let tokens = || async { cp.store().range(keys::IDEMPOTENCY).await.unwrap().kvs.len() };
        assert_eq!(tokens().await, 1);

        // Housekeeping deletes the expired record; the same token then starts afresh.
        eventually("the expired token forgotten", async || tokens().await == 0).await;
        let mut other = tree(&ControlPlane::new_pool_id(), Vec::new());
        other.listeners[0].port = 18_099;
        let fresh = cp.add_resources(&ctx, "Create", other).await.unwrap();
        assert!(
            !fresh.replayed,
            "an expired token is not replayed, even for another body"
        );
        assert_ne!(fresh.work_request.id, first.work_request.id);
        assert_eq!(cp.view().loadbalancers.len(), 2);
        assert_eq!(
            tokens().await,
            1,
            "the token is remembered again for the new change"
        );
    }

    #[tokio::test]
    async fn old_work_requests_are_deleted_but_one_a_live_retry_token_replays_is_kept() {
        use std::time::Duration;
        let (_dir, cp) = control_with(crate::Options {
            work_requests_kept: 3,
            housekeeping_every: Duration::from_millis(100),
            ..Default::default()
        })
        .await;
        let with_token = RequestContext {
            principal: "p".into(),
            retry_token: Some("t".into()),
            ..Default::default()
        };
        let create = |ctx: &RequestContext, port: u16| {
            let mut res = tree(&ControlPlane::new_pool_id(), Vec::new());
            res.listeners[0].port = port;
            let ctx = ctx.clone();
            let cp = cp.clone();
            async move { cp.add_resources(&ctx, "Create", res).await.unwrap() }
        };
        let first = create(&with_token, 18_300).await;
        let mut made = vec![first.work_request.id.clone()];
        for port in 18_301..18_308 {
            made.push(
                create(&RequestContext::default(), port)
                    .await
                    .work_request
                    .id,
            );
        }
        let stored = || async {
            let range = cp.store().range(keys::WORK_REQUESTS).await.unwrap();
            range
                .kvs
                .iter()
                .filter_map(|kv| keys::parse(&kv.key))
                .filter_map(|k| match k {
                    keys::ConfigKey::WorkRequest(id) => Some(id.to_owned()),
                    _ => None,
                })
                .collect::<std::collections::BTreeSet<_>>()
        };
        // The newest 3 stay, and the first, which its live retry token still answers.
        let expected: std::collections::BTreeSet<String> = [&made[0], &made[5], &made[6], &made[7]]
            .into_iter()
            .map(|id| id.0.clone())
            .collect();
        eventually("old work requests deleted", async || {
            stored().await == expected
        })
        .await;
        assert_eq!(cp.view().kept_work_requests.len(), 4);
        assert!(cp.get_work_request(&made[1]).await.unwrap().is_none());
        let replayed = create(&with_token, 18_300).await;
        assert!(replayed.replayed);
        assert_eq!(replayed.work_request.id, first.work_request.id);
        // Pending ones are never deleted, and nothing more goes while no more is made.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(stored().await, expected);
    }

    #[tokio::test]
    async fn a_stream_of_changes_is_trimmed_to_retention_between_housekeeping_rounds() {
        use std::time::Duration;
        let (_dir, cp) = control_with(crate::Options {
            work_requests_kept: 3,
            // Once at start (nothing to delete yet), then not within this test.
            housekeeping_every: Duration::from_secs(3600),
            ..Default::default()
        })
        .await;
        // Housekeeping's first round may run a little after the first changes and delete
        // a few; 140 is well beyond what it can.
        for port in 0..140 {
            let mut res = tree(&ControlPlane::new_pool_id(), Vec::new());
            res.listeners[0].port = 18_400 + port;
            cp.add_resources(&RequestContext::default(), "Create", res)
                .await
                .unwrap();
        }
        // Trimmed to 3 each time more than 3 + 100 have finished, so never more than that.
        let stored = || async {
            cp.store()
                .range(keys::WORK_REQUESTS)
                .await
                .unwrap()
                .kvs
                .len()
        };
        eventually("the work requests trimmed", async || {
            stored().await <= 3 + 100
        })
        .await;
        assert!(cp.view().kept_work_requests.len() <= 103);
    }

    #[tokio::test]
    async fn history_is_compacted_and_a_node_started_later_lists_past_it() {
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn fulcrum_store::Store> =
            Arc::new(fulcrum_store::EmbeddedStore::open(&dir.path().join("s.redb")).unwrap());
        let opts = crate::Options {
            history_revisions: 3,
            housekeeping_every: Duration::from_millis(100),
            ..Default::default()
        };
        let cp = ControlPlane::start(store.clone(), opts.clone())
            .await
            .unwrap();
        for port in 0..8 {
            let mut res = tree(&ControlPlane::new_pool_id(), Vec::new());
            res.listeners[0].port = 18_100 + port;
            cp.add_resources(&RequestContext::default(), "Create", res)
                .await
                .unwrap();
        }
        let first_revision = 1;
        // Compacted history answers `Compacted`, from `watch` or as its stream's first item.
        let compacted = async |from| match store.watch(keys::ROOT, from).await {
            Err(e) => matches!(e, fulcrum_store::StoreError::Compacted { .. }),
            Ok(mut stream) => matches!(
                tokio::time::timeout(Duration::from_secs(1), stream.next()).await,
                Ok(Some(Err(fulcrum_store::StoreError::Compacted { .. })))
            ),
        };
        eventually(
            "history before the last 3 revisions compacted",
            async || compacted(first_revision).await,
        )
        .await;
        // The latest revision stays watchable.
        let latest = store.revision().await.unwrap();
        assert!(!compacted(latest).await);

        // A second control plane on the same store (a fleet node joining, with the
        // fleet's key) lists the whole configuration past the compacted history, and both
        // follow changes made after.
        let late = ControlPlane::start(store.clone(), opts).await.unwrap();
        assert_eq!(late.view().loadbalancers.len(), 8);
        assert!(late.view().revision >= latest);
        let mut res = tree(&ControlPlane::new_pool_id(), Vec::new());
        res.listeners[0].port = 18_200;
        let out = cp
            .add_resources(&RequestContext::default(), "Create", res)
            .await
            .unwrap();
        eventually("the late node sees the change", async || {
            late.view().revision >= out.revision
        })
        .await;
        assert_eq!(late.view().loadbalancers.len(), 9);
    }

    /// Route sets: a listener names only one that exists, a set sends only to the load
    /// balancer's HTTP pools, and neither a pool a set sends to nor a set a listener names
    /// can be deleted (each cloud's delete order rests on these).
    #[tokio::test]
    async fn route_sets_hold_their_pools_and_listeners() {
        let (_dir, cp) = control().await;
        let ctx = RequestContext::default();
        let (pool_id, lb_id, listener_id) = lb_with_listener(&cp, &ctx).await;
        let set = |pool: &PoolId| {
            serde_json::json!({"route_sets": [{"name": "paths", "routes": [
                {"path_prefix": "/api", "pool_id": pool}
            ]}]})
        };
        // A listener cannot name a set that does not exist.
        let e = cp
            .update_listener(
                &ctx,
                &listener_id,
                &serde_json::json!({"route_set": "paths"}),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, ControlError::Invalid(_)), "{e}");
        // A set cannot send to a pool the load balancer does not have.
        let e = cp
            .update_loadbalancer(&ctx, &lb_id, &set(&PoolId::from("nope")))
            .await
            .unwrap_err();
        assert!(matches!(e, ControlError::Invalid(_)), "{e}");
        cp.update_loadbalancer(&ctx, &lb_id, &set(&pool_id))
            .await
            .unwrap();
        cp.update_listener(
            &ctx,
            &listener_id,
            &serde_json::json!({"route_set": "paths"}),
        )
        .await
        .unwrap();
        // The set, named by the listener, cannot go; nor its pool.
        let e = cp
            .update_loadbalancer(&ctx, &lb_id, &serde_json::json!({"route_sets": []}))
            .await
            .unwrap_err();
        assert!(matches!(e, ControlError::Conflict(_)), "{e}");
        cp.update_listener(
            &ctx,
            &listener_id,
            &serde_json::json!({"default_pool_id": null}),
        )
        .await
        .unwrap();
        for delete in [
            cp.delete_pool(&ctx, &pool_id).await,
            cp.delete_pool_unbinding(&ctx, &pool_id).await,
        ] {
            let e = delete.unwrap_err();
            assert!(
                matches!(&e, ControlError::Conflict(m) if m.contains("paths")),
                "{e}"
            );
        }
        // Let go in order: the listener, then the set, then the pool.
        cp.update_listener(&ctx, &listener_id, &serde_json::json!({"route_set": null}))
            .await
            .unwrap();
        cp.update_loadbalancer(&ctx, &lb_id, &serde_json::json!({"route_sets": []}))
            .await
            .unwrap();
        cp.delete_pool(&ctx, &pool_id).await.unwrap();
    }

    /// Huawei's order: a pool an L7 route sends to is not unbound silently.
    #[tokio::test]
    async fn a_routed_pool_is_not_deleted_by_unbinding() {
        let (_dir, cp) = control().await;
        let ctx = RequestContext::default();
        let (pool_id, _, listener_id) = lb_with_listener(&cp, &ctx).await;
        cp.update_listener(
            &ctx,
            &listener_id,
            &serde_json::json!({"routes": [{"id": "policy-1", "path_prefix": "/api", "pool_id": pool_id}]}),
        )
        .await
        .unwrap();
        let e = cp.delete_pool_unbinding(&ctx, &pool_id).await.unwrap_err();
        assert!(
            matches!(&e, ControlError::Conflict(m) if m.contains("policy-1")),
            "{e}"
        );
        cp.update_listener(&ctx, &listener_id, &serde_json::json!({"routes": []}))
            .await
            .unwrap();
        // Its listener's default pool is unbound in the same change.
        cp.delete_pool_unbinding(&ctx, &pool_id).await.unwrap();
        assert_eq!(
            cp.view().listeners[&listener_id].value.spec.default_pool_id,
            None
        );
    }
}
