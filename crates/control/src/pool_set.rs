//! One atomic change of a load balancer, several of its pools (with their members) and
//! at most one of its listeners, computed from the current view. A front door whose
//! resources span pools (an Azure Pool backend follows the backends it references; an
//! Azure API is a route of its service's gateway listener, perhaps to a pool of its own)
//! changes them all in one transaction or not at all.

use std::collections::{HashMap, HashSet};

use fulcrum_model::{
    Listener, ListenerId, ListenerSpec, LoadBalancer, LoadBalancerId, LoadBalancerSpec,
    MemberContext, MemberSpec, Pool, PoolContext, PoolId, PoolProtocol, PoolSpec, ResourceKind,
    ResourceRef, check_unique_endpoints,
};
use fulcrum_store::Compare;
use serde::Serialize;

use crate::engine::{Named, Plan};
use crate::network::{Vip, plan_vip};
use crate::ops::{
    check_port_free, guard_subnets, lb_for_change, new_id, plan_member_list, plan_pool_removal,
};
use crate::{Config, ControlError, ControlPlane, Outcome, RequestContext, Versioned, keys};

/// What the load balancer and its pools should look like after the change.
#[derive(Clone, Debug)]
pub struct PoolSetChange {
    pub loadbalancer: LoadBalancerId,
    /// The load balancer's spec after the change: it is created under `loadbalancer` when
    /// absent, rewritten when present. `None` leaves it as it is (it must exist).
    pub loadbalancer_spec: Option<LoadBalancerSpec>,
    pub pools: Vec<PoolChange>,
    /// The pool (by name) the request is about: `If-Match` in resource scope names its
    /// ETag, and it is the outcome's result while it exists.
    pub target_pool: String,
    /// Where a load balancer this change creates gets its address.
    pub vip: Vip,
    /// A listener of the load balancer (by name) to create, replace or delete with the pools.
    pub listener: Option<ListenerChange>,
}

#[derive(Clone, Debug)]
pub enum ListenerChange {
    /// Creates the listener named `spec.name`, or replaces that listener's spec. Route `i`
    /// goes to the pool named `route_pools[i]` (one of this change's, or one that stays),
    /// whatever its `pool_id` says.
    Put {
        spec: Box<ListenerSpec>,
        route_pools: Vec<String>,
    },
    /// Deletes the named listener, if there is one.
    Delete { name: String },
}

impl ListenerChange {
    fn name(&self) -> &str {
        match self {
            ListenerChange::Put { spec, .. } => &spec.name,
            ListenerChange::Delete { name } => name,
        }
    }
}

#[derive(Clone, Debug)]
pub enum PoolChange {
    /// Creates the pool named `spec.name`, or replaces that pool's spec. Its members become
    /// exactly `members`; one at an address and port already in the pool keeps its id (and
    /// so its health, breaker and connections).
    Put {
        spec: Box<PoolSpec>,
        members: Vec<MemberSpec>,
    },
    /// Deletes the named pool with its members and health monitor; refused while a
    /// listener routes to it.
    Delete { name: String },
}

impl PoolChange {
    fn name(&self) -> &str {
        match self {
            PoolChange::Put { spec, .. } => &spec.name,
            PoolChange::Delete { name } => name,
        }
    }
}

impl ControlPlane {
    /// Runs `change`, planned against the current view (and again against a fresher one
    /// if another writer got there first), as one transaction recorded as a work request
    /// named `operation` (`UpdateBackend`, …). `input` identifies the request for retry
    /// tokens.
    pub async fn change_pools<I: Serialize>(
        &self,
        ctx: &RequestContext,
        operation: &'static str,
        input: &I,
        change: impl Fn(&Config) -> Result<PoolSetChange, ControlError>,
    ) -> Result<Outcome, ControlError> {
        self.mutate(ctx, &Named(operation, input), |cfg, now| {
            let change = change(cfg)?;
            plan_pool_set(cfg, ctx, &self.opts.vip_ranges, operation, &change, now)
        })
        .await
    }
}

fn plan_pool_set(
    cfg: &Config,
    ctx: &RequestContext,
    vip_ranges: &[ipnet::IpNet],
    operation: &'static str,
    change: &PoolSetChange,
    now: fulcrum_model::Timestamp,
) -> Result<Plan, ControlError> {
    let lb_id = &change.loadbalancer;
    let mut plan = Plan::new(operation);
    plan.lb = Some(lb_id.clone());

    // The load balancer as it will be: existing (locks checked) or created here.
    let existing_lb = cfg.loadbalancers.get(lb_id);
    let lb: LoadBalancer = match (existing_lb, &change.loadbalancer_spec) {
        (Some(_), spec) => {
            let cur = lb_for_change(cfg, ctx, lb_id)?;
            match spec {
                Some(spec) if *spec != cur.value.spec => {
                    spec.validate()?;
                    let updated = LoadBalancer {
                        spec: spec.clone(),
                        updated_at: now,
                        ..cur.value.clone()
                    };
                    plan.put(keys::lb(lb_id), &updated)?;
                    updated
                }
                _ => cur.value.clone(),
            }
        }
        (None, Some(spec)) => {
            spec.validate()?;
            let mut created = LoadBalancer {
                id: lb_id.clone(),
                spec: spec.clone(),
                created_at: now,
                updated_at: now,
            };
            plan_vip(cfg, vip_ranges, &mut plan, &mut created, &change.vip)?;
            plan.compares.push(Compare::absent(keys::lb(lb_id)));
            plan.put(keys::lb(lb_id), &created)?;
            plan.touched(ResourceKind::LoadBalancer, lb_id);
            created
        }
        (None, None) => return Err(ControlError::not_found(ResourceKind::LoadBalancer, lb_id)),
    };

    let by_name: HashMap<&str, &Versioned<Pool>> = cfg
        .pools_of(lb_id)
        .filter(|p| !p.value.spec.name.is_empty())
        .map(|p| (p.value.spec.name.as_str(), p))
        .collect();
    let mut seen = HashSet::new();
    for c in &change.pools {
        if c.name().is_empty() || !seen.insert(c.name()) {
            return Err(ControlError::invalid(
                "pools",
                format!(
                    "pool names in one change must be unique and not empty ({:?})",
                    c.name()
                ),
            ));
        }
    }
    plan.target_revision = by_name
        .get(change.target_pool.as_str())
        .map(|p| p.mod_revision);

    // The pools after the change, by name: what the listener's routes may name.
    let mut after: HashMap<&str, (PoolId, PoolProtocol)> = by_name
        .iter()
        .map(|(name, p)| (*name, (p.value.id.clone(), p.value.spec.protocol)))
        .collect();
    let mut result = None;
    for c in &change.pools {
        match c {
            PoolChange::Put { spec, members } => {
                let current = by_name.get(spec.name.as_str()).copied();
                let id = plan_pool_put(cfg, &mut plan, &lb, current, spec, members, now)?;
                if spec.name == change.target_pool {
                    result = Some(ResourceRef {
                        kind: ResourceKind::Pool,
                        id: id.to_string(),
                    });
                }
                after.insert(spec.name.as_str(), (id, spec.protocol));
            }
            PoolChange::Delete { name } => {
                after.remove(name.as_str());
            }
        }
    }

    // The listener, as this change leaves it (None: as it is, or gone).
    let changed_listener = change
        .listener
        .as_ref()
        .map(|l| {
            cfg.listeners_of(lb_id)
                .find(|x| x.value.spec.name == l.name())
                .map(|x| x.value.id.clone())
        })
        .unwrap_or_default();
    let new_listener = match &change.listener {
        Some(ListenerChange::Put { spec, route_pools }) => Some(plan_listener_put(
            cfg,
            &mut plan,
            &lb,
            changed_listener.as_ref(),
            spec,
            route_pools,
            &after,
            now,
        )?),
        Some(ListenerChange::Delete { .. }) => {
            if let Some(id) = &changed_listener {
                plan.delete(keys::listener(id));
                plan.touched(ResourceKind::Listener, id);
            }
            None
        }
        None => None,
    };

    for c in &change.pools {
        let PoolChange::Delete { name } = c else {
            continue;
        };
        let Some(pool) = by_name.get(name.as_str()) else {
            return Err(ControlError::not_found(ResourceKind::Pool, name));
        };
        let id = &pool.value.id;
        // Listeners are judged as the change leaves them.
        let user = cfg
            .listeners_using(id)
            .map(|l| &l.value)
            .find(|l| Some(&l.id) != changed_listener.as_ref())
            .or(new_listener
                .as_ref()
                .filter(|l| l.spec.pool_refs().any(|(_, p)| p == id)));
        if let Some(l) = user {
            return Err(ControlError::Conflict(format!(
                "pool {name} is in use by listener {}",
                l.id
            )));
        }
        plan.compares
            .push(Compare::unchanged(keys::pool(id), pool.mod_revision));
        plan_pool_removal(cfg, &mut plan, &pool.value)?;
    }
    plan.result = result;
    Ok(plan)
}

/// Plans a listener's creation or replacement, its routes resolved to the pools named.
#[allow(clippy::too_many_arguments)]
fn plan_listener_put(
    cfg: &Config,
    plan: &mut Plan,
    lb: &LoadBalancer,
    current: Option<&ListenerId>,
    spec: &ListenerSpec,
    route_pools: &[String],
    pools: &HashMap<&str, (PoolId, PoolProtocol)>,
    now: fulcrum_model::Timestamp,
) -> Result<Listener, ControlError> {
    if route_pools.len() != spec.routes.len() {
        return Err(ControlError::Internal(format!(
            "listener {:?}: {} routes but {} route pools",
            spec.name,
            spec.routes.len(),
            route_pools.len()
        )));
    }
    let mut spec = spec.clone();
    for (i, name) in route_pools.iter().enumerate() {
        let field = format!("routes[{i}].pool_id");
        let (id, protocol) = pools.get(name.as_str()).ok_or_else(|| {
            ControlError::invalid(
                field.clone(),
                format!("no pool named {name:?} is left by this change"),
            )
        })?;
        spec.routes[i].pool_id = id.clone();
        spec.validate_pool(&field, &lb.id, &lb.id, *protocol)?;
    }
    if let Some(default) = &spec.default_pool_id {
        let pool = cfg.pools.get(default).ok_or_else(|| {
            ControlError::invalid("default_pool_id", format!("pool {default} does not exist"))
        })?;
        spec.validate_pool(
            "default_pool_id",
            &lb.id,
            &pool.value.loadbalancer_id,
            pool.value.spec.protocol,
        )?;
    }
    spec.validate()?;
    check_port_free(cfg, lb, &spec, current)?;
    let listener = match current.and_then(|id| cfg.listeners.get(id)) {
        Some(cur) => Listener {
            spec,
            updated_at: now,
            ..cur.value.clone()
        },
        None => Listener {
            id: ListenerId(new_id()),
            loadbalancer_id: lb.id.clone(),
            spec,
            created_at: now,
            updated_at: now,
        },
    };
    plan.put(keys::listener(&listener.id), &listener)?;
    plan.touched(ResourceKind::Listener, &listener.id);
    Ok(listener)
}

/// Plans one pool's creation or replacement with its members; returns the pool's id.
fn plan_pool_put(
    cfg: &Config,
    plan: &mut Plan,
    lb: &LoadBalancer,
    current: Option<&Versioned<Pool>>,
    spec: &PoolSpec,
    members: &[MemberSpec],
    now: fulcrum_model::Timestamp,
) -> Result<PoolId, ControlError> {
    spec.validate(PoolContext {
        lb_kind: lb.spec.kind,
    })?;
    if let Some(cur) = current {
        spec.validate_update(&cur.value.spec)?;
    }
    let mut errors = fulcrum_model::Checker::new();
    for (i, m) in members.iter().enumerate() {
        let mctx = MemberContext {
            server_id_len: spec.quic_lb.map(|q| q.server_id_len),
            lb_kind: lb.spec.kind,
            lb_vpc_id: &lb.spec.vpc_id,
            subnet: m
                .subnet_id
                .as_ref()
                .and_then(|id| cfg.subnets.get(id))
                .map(|s| &s.value.spec),
        };
        errors.nested(&format!("members[{i}]"), m.validate(mctx));
    }
    errors.finish()?;
    check_unique_endpoints(
        std::iter::empty(),
        members
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("members[{i}]"), m)),
    )?;
    guard_subnets(cfg, plan, members)?;

    let pool = match current {
        Some(cur) => {
            plan.compares.push(Compare::unchanged(
                keys::pool(&cur.value.id),
                cur.mod_revision,
            ));
            Pool {
                spec: spec.clone(),
                updated_at: now,
                ..cur.value.clone()
            }
        }
        None => Pool {
            id: PoolId(new_id()),
            loadbalancer_id: lb.id.clone(),
            spec: spec.clone(),
            created_at: now,
            updated_at: now,
        },
    };
    let pool_id = pool.id.clone();
    // Written even when only members change, so the pool's ETag moves.
    plan.put(keys::pool(&pool_id), &pool)?;
    plan.touched(ResourceKind::Pool, &pool_id);

    plan_member_list(plan, cfg, &pool, members, now)?;
    Ok(pool_id)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use fulcrum_model::{ListenerSpec, PoolProtocol};

    use super::*;
    use crate::network::Vip;
    use crate::testing::control;
    use crate::{EtagScope, IfMatch, etag};

    fn put(name: &str, members: &[(&str, u16)]) -> PoolChange {
        PoolChange::Put {
            spec: Box::new(PoolSpec::new(name, PoolProtocol::Http)),
            members: members
                .iter()
                .map(|(a, p)| MemberSpec::new(*a, *p))
                .collect(),
        }
    }

    fn change(lb: &LoadBalancerId, pools: Vec<PoolChange>, target: &str) -> PoolSetChange {
        let mut spec = LoadBalancerSpec::new("svc");
        spec.labels.insert("k".into(), target.into());
        PoolSetChange {
            loadbalancer: lb.clone(),
            loadbalancer_spec: Some(spec),
            pools,
            target_pool: target.into(),
            vip: Vip::AsGiven,
            listener: None,
        }
    }

    fn pool<'a>(
        cfg: &'a Config,
        lb: &'a LoadBalancerId,
        name: &str,
    ) -> Option<&'a Versioned<Pool>> {
        cfg.pools_of(lb).find(|p| p.value.spec.name == name)
    }

    #[tokio::test]
    async fn creates_load_balancer_and_pools_at_once_and_keeps_member_ids() {
        let (_dir, cp) = control().await;
        let lb = LoadBalancerId("lb-fixed".into());
        let ctx = RequestContext::default();
        let c = change(
            &lb,
            vec![put("a", &[("10.0.0.1", 80)]), put("b", &[("10.0.0.2", 80)])],
            "a",
        );
        let out = cp
            .change_pools(&ctx, "Test", &"1", |_| Ok(c.clone()))
            .await
            .unwrap();
        let (a_id, member_id) = {
            let cfg = cp.view();
            assert_eq!(cfg.loadbalancers[&lb].value.spec.labels["k"], "a");
            let a = pool(&cfg, &lb, "a").unwrap();
            assert_eq!(out.result.as_ref().unwrap().id, a.value.id.to_string());
            assert!(pool(&cfg, &lb, "b").is_some());
            let m = cfg.members_of(&a.value.id).next().unwrap().value.id.clone();
            (a.value.id.clone(), m)
        };
        // Second change: member weight changes (same endpoint keeps its id), b goes.
        let mut weighted = MemberSpec::new("10.0.0.1", 80);
        weighted.weight = 7;
        let c2 = change(
            &lb,
            vec![
                PoolChange::Put {
                    spec: Box::new(PoolSpec::new("a", PoolProtocol::Http)),
                    members: vec![weighted],
                },
                PoolChange::Delete { name: "b".into() },
            ],
            "a",
        );
        cp.change_pools(&ctx, "Test", &"2", |_| Ok(c2.clone()))
            .await
            .unwrap();
        let cfg = cp.view();
        let m = cfg.members_of(&a_id).next().unwrap();
        assert_eq!((m.value.id.clone(), m.value.spec.weight), (member_id, 7));
        assert!(pool(&cfg, &lb, "b").is_none());
    }

    #[tokio::test]
    async fn a_refused_change_writes_nothing_and_if_match_names_the_target_pool() {
        let (_dir, cp) = control().await;
        let lb = LoadBalancerId("lb-fixed".into());
        let ctx = RequestContext::default();
        let c = change(&lb, vec![put("a", &[("10.0.0.1", 80)])], "a");
        cp.change_pools(&ctx, "Test", &"1", |_| Ok(c.clone()))
            .await
            .unwrap();
        let rev = cp.view().revision;

        // One bad pool (duplicate endpoint) in the set: nothing at all is written.
        let bad = change(
            &lb,
            vec![
                put("a", &[("10.0.0.9", 80)]),
                put("c", &[("10.0.0.3", 80), ("10.0.0.3", 80)]),
            ],
            "a",
        );
        let e = cp
            .change_pools(&ctx, "Test", &"2", |_| Ok(bad.clone()))
            .await
            .unwrap_err();
        assert!(matches!(e, ControlError::Invalid(_)), "{e}");
        assert_eq!(cp.view().revision, rev);

        // A stale If-Match on the target pool is refused; the current one passes.
        let stale = RequestContext {
            if_match: Some(IfMatch {
                scope: EtagScope::Resource,
                value: "\"fffff\"".into(),
            }),
            ..Default::default()
        };
        let e = cp
            .change_pools(&stale, "Test", &"3", |_| Ok(c.clone()))
            .await
            .unwrap_err();
        assert!(matches!(e, ControlError::PreconditionFailed { .. }), "{e}");
        let current = pool(&cp.view(), &lb, "a").unwrap().mod_revision;
        let fresh = RequestContext {
            if_match: Some(IfMatch {
                scope: EtagScope::Resource,
                value: etag(current),
            }),
            ..Default::default()
        };
        cp.change_pools(&fresh, "Test", &"4", |_| Ok(c.clone()))
            .await
            .unwrap();
        assert!(pool(&cp.view(), &lb, "a").unwrap().mod_revision > current);
    }

    #[tokio::test]
    async fn a_listener_routes_to_pools_of_the_same_change_and_lets_them_go_with_it() {
        let (_dir, cp) = control().await;
        let lb = LoadBalancerId("lb-fixed".into());
        let ctx = RequestContext::default();
        let gateway = |routes: &[(&str, &str)]| {
            let mut spec: ListenerSpec = serde_json::from_value(serde_json::json!({
                "name": "gw", "protocol": "HTTP", "port": 18098,
            }))
            .unwrap();
            spec.routes = routes
                .iter()
                .map(|(prefix, _)| fulcrum_model::L7Route {
                    path_prefix: Some((*prefix).to_owned()),
                    strip_path_prefix: true,
                    ..fulcrum_model::L7Route::to_pool(PoolId("unresolved".into()))
                })
                .collect();
            ListenerChange::Put {
                spec: Box::new(spec),
                route_pools: routes.iter().map(|(_, p)| (*p).to_owned()).collect(),
            }
        };
        let mut c = change(&lb, vec![put("a", &[("10.0.0.1", 80)])], "a");
        c.listener = Some(gateway(&[("/a", "a")]));
        cp.change_pools(&ctx, "Test", &"1", |_| Ok(c.clone()))
            .await
            .unwrap();
        {
            let cfg = cp.view();
            let a = pool(&cfg, &lb, "a").unwrap().value.id.clone();
            let l = cfg.listeners_of(&lb).next().unwrap();
            assert_eq!(l.value.spec.routes[0].pool_id, a, "resolved by name");
        }
        // A route to a pool that is neither there nor created: refused, nothing written.
        let rev = cp.view().revision;
        let mut bad = change(&lb, vec![], "a");
        bad.listener = Some(gateway(&[("/a", "a"), ("/b", "missing")]));
        let e = cp
            .change_pools(&ctx, "Test", &"2", |_| Ok(bad.clone()))
            .await
            .unwrap_err();
        assert!(matches!(e, ControlError::Invalid(_)), "{e}");
        assert_eq!(cp.view().revision, rev);
        // The route goes and its pool with it, in one change: the listener is judged as
        // the change leaves it.
        let mut gone = change(&lb, vec![PoolChange::Delete { name: "a".into() }], "a");
        gone.listener = Some(gateway(&[]));
        cp.change_pools(&ctx, "Test", &"3", |_| Ok(gone.clone()))
            .await
            .unwrap();
        // Deleting the pool while the listener still routes to it is refused.
        let mut again = change(&lb, vec![put("b", &[("10.0.0.2", 80)])], "b");
        again.listener = Some(gateway(&[("/b", "b")]));
        cp.change_pools(&ctx, "Test", &"4", |_| Ok(again.clone()))
            .await
            .unwrap();
        let del = change(&lb, vec![PoolChange::Delete { name: "b".into() }], "b");
        let e = cp
            .change_pools(&ctx, "Test", &"5", |_| Ok(del.clone()))
            .await
            .unwrap_err();
        assert!(matches!(e, ControlError::Conflict(_)), "{e}");
        let mut both = del.clone();
        both.listener = Some(ListenerChange::Delete { name: "gw".into() });
        cp.change_pools(&ctx, "Test", &"6", |_| Ok(both.clone()))
            .await
            .unwrap();
        let cfg = cp.view();
        assert_eq!(cfg.listeners_of(&lb).count(), 0);
        assert!(pool(&cfg, &lb, "b").is_none());
    }

    #[tokio::test]
    async fn deleting_a_pool_a_listener_uses_is_refused() {
        let (_dir, cp) = control().await;
        let lb = LoadBalancerId("lb-fixed".into());
        let ctx = RequestContext::default();
        let c = change(&lb, vec![put("a", &[("10.0.0.1", 80)])], "a");
        cp.change_pools(&ctx, "Test", &"1", |_| Ok(c.clone()))
            .await
            .unwrap();
        let pool_id = pool(&cp.view(), &lb, "a").unwrap().value.id.clone();
        let l: ListenerSpec = serde_json::from_value(serde_json::json!({
            "protocol": "HTTP", "port": 18099, "default_pool_id": pool_id,
        }))
        .unwrap();
        cp.create_listener(&ctx, &lb, l).await.unwrap();
        let del = change(&lb, vec![PoolChange::Delete { name: "a".into() }], "a");
        let e = cp
            .change_pools(&ctx, "Test", &"2", |_| Ok(del.clone()))
            .await
            .unwrap_err();
        assert!(matches!(e, ControlError::Conflict(_)), "{e}");
    }
}
