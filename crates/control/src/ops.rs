//! Operations on the model. Each validates against the view with the model's pure
//! functions and commits through the engine as one transaction.

use std::collections::HashMap;

use fulcrum_model::{
    HealthMonitor, HealthMonitorId, HealthMonitorSpec, Listener, ListenerId, ListenerSpec,
    LoadBalancer, LoadBalancerId, LoadBalancerSpec, LockKind, MAX_BATCH_MEMBERS, Member,
    MemberContext, MemberId, MemberSpec, Pool, PoolContext, PoolId, PoolSpec, ProvisioningStatus,
    ResourceKind, Subnet, SubnetId, SubnetSpec, Timestamp, ValidationError, check_monitor_for_pool,
    check_unique_endpoints, parse_server_id,
};
use fulcrum_store::Compare;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::certificates::guard_listener_certificates;
use crate::engine::Plan;
use crate::network::{Vip, check_subnet_vpc, plan_vip, release_vip};
use crate::{Config, ControlError, ControlPlane, Outcome, RequestContext, Versioned, keys};

/// A batch change of a pool's members (seed 001), all or nothing.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "action", content = "members", rename_all = "snake_case")]
pub enum BatchMembers {
    /// Every listed member is added.
    Add(Vec<MemberSpec>),
    /// The pool's members become exactly the list. Members already in the pool at the same
    /// address and port keep their id (and their connections and health).
    Replace(Vec<MemberSpec>),
    /// The listed members are removed.
    Delete(Vec<MemberId>),
}

impl BatchMembers {
    pub fn len(&self) -> usize {
        match self {
            BatchMembers::Add(m) | BatchMembers::Replace(m) => m.len(),
            BatchMembers::Delete(ids) => ids.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Applies a JSON merge patch to a spec and reads it back, naming the offending field
/// on failure (unknown fields included).
pub fn patch_spec<T: Serialize + DeserializeOwned>(
    current: &T,
    patch: &Value,
) -> Result<T, ControlError> {
    if !patch.is_object() {
        return Err(ControlError::invalid("", "the body must be a JSON object"));
    }
    let mut doc =
        serde_json::to_value(current).map_err(|e| ControlError::Internal(e.to_string()))?;
    crate::merge_patch(&mut doc, patch);
    decode_spec(doc)
}

/// Reads a spec from JSON, naming the offending field on failure.
pub fn decode_spec<T: DeserializeOwned>(doc: Value) -> Result<T, ControlError> {
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        let inner = e.into_inner().to_string();
        let message = if field.is_empty() {
            inner
        } else {
            format!("{field}: {inner}")
        };
        ControlError::Invalid(ValidationError::invalid(field, message))
    })
}

/// The load balancer a change lies under, after its locks allow the change.
pub(crate) fn lb_for_change<'a>(
    cfg: &'a Config,
    ctx: &RequestContext,
    id: &LoadBalancerId,
) -> Result<&'a Versioned<LoadBalancer>, ControlError> {
    let lb = cfg
        .loadbalancers
        .get(id)
        .ok_or_else(|| ControlError::not_found(ResourceKind::LoadBalancer, id))?;
    if lb.value.spec.has_lock(LockKind::Full) && !ctx.lock_override {
        return Err(ControlError::Locked {
            id: id.to_string(),
            lock: "FULL".into(),
        });
    }
    Ok(lb)
}

pub(crate) fn pool_of<'a>(
    cfg: &'a Config,
    id: &PoolId,
) -> Result<&'a Versioned<Pool>, ControlError> {
    cfg.pools
        .get(id)
        .ok_or_else(|| ControlError::not_found(ResourceKind::Pool, id))
}

pub(crate) fn member_ctx<'a>(
    cfg: &'a Config,
    lb: &'a LoadBalancer,
    pool: &PoolSpec,
    spec: &MemberSpec,
) -> MemberContext<'a> {
    MemberContext {
        server_id_len: pool.quic_lb.map(|q| q.server_id_len),
        lb_kind: lb.spec.kind,
        lb_vpc_id: &lb.spec.vpc_id,
        subnet: spec
            .subnet_id
            .as_ref()
            .and_then(|id| cfg.subnets.get(id))
            .map(|s| &s.value.spec),
    }
}

/// A pool's members' QUIC-LB server IDs must keep fitting its `quic_lb` when that changes.
pub(crate) fn check_server_ids_fit<'a>(
    pool: &PoolSpec,
    members: impl Iterator<Item = &'a MemberSpec>,
) -> Result<(), ControlError> {
    let len = pool.quic_lb.map(|q| usize::from(q.server_id_len));
    let mut c = fulcrum_model::Checker::new();
    if let Some(sid) = members
        .filter_map(|m| m.server_id.as_deref())
        .find(|sid| parse_server_id(sid).map(|b| b.len()) != len)
    {
        c.fail(
            "quic_lb",
            match len {
                Some(len) => format!(
                    "members have server IDs that are not {len} bytes long (such as {sid}); change them first"
                ),
                None => format!(
                    "members have server IDs (such as {sid}); remove them before quic_lb"
                ),
            },
        );
    }
    Ok(c.finish()?)
}

/// Keeps referenced subnets from changing under the transaction, and rewrites them so a
/// concurrent subnet update or deletion (which compares the subnet) fails instead of
/// leaving a member outside its subnet.
pub(crate) fn guard_subnets<'a>(
    cfg: &Config,
    plan: &mut Plan,
    specs: impl IntoIterator<Item = &'a MemberSpec>,
) -> Result<(), ControlError> {
    let mut seen = std::collections::HashSet::new();
    for s in specs {
        if let Some(id) = &s.subnet_id
            && seen.insert(id.clone())
            && let Some(subnet) = cfg.subnets.get(id)
        {
            let key = keys::subnet(id);
            plan.compares
                .push(Compare::unchanged(key.clone(), subnet.mod_revision));
            plan.put(key, &subnet.value)?;
        }
    }
    Ok(())
}

pub(crate) fn check_port_free(
    cfg: &Config,
    lb: &LoadBalancer,
    spec: &ListenerSpec,
    except: Option<&ListenerId>,
) -> Result<(), ControlError> {
    let vip = lb.spec.vip_address;
    for other in cfg.listeners.values() {
        let o = &other.value;
        if Some(&o.id) == except
            || o.spec.port != spec.port
            || o.spec.protocol.is_udp() != spec.protocol.is_udp()
        {
            continue;
        }
        let Some(other_lb) = cfg.loadbalancers.get(&o.loadbalancer_id) else {
            continue;
        };
        let other_vip = other_lb.value.spec.vip_address;
        if vip == other_vip || vip.is_unspecified() || other_vip.is_unspecified() {
            return Err(ControlError::Conflict(format!(
                "port {} on {} is already used by listener {}",
                spec.port, vip, o.id
            )));
        }
    }
    Ok(())
}

fn check_listener_pools(
    cfg: &Config,
    lb_id: &LoadBalancerId,
    spec: &ListenerSpec,
) -> Result<(), ControlError> {
    for (field, pool_id) in spec.pool_refs() {
        let pool = cfg.pools.get(pool_id).ok_or_else(|| {
            ControlError::invalid(field.clone(), format!("pool {pool_id} does not exist"))
        })?;
        spec.validate_pool(
            &field,
            lb_id,
            &pool.value.loadbalancer_id,
            pool.value.spec.protocol,
        )?;
    }
    let lb = cfg.loadbalancers.get(lb_id);
    for (i, name) in spec.hostnames.iter().enumerate() {
        if lb.is_none_or(|lb| lb.value.spec.hostname(name).is_none()) {
            return Err(ControlError::invalid(
                format!("hostnames[{i}]"),
                format!("the load balancer has no hostname {name:?}"),
            ));
        }
    }
    if let Some(name) = &spec.route_set {
        let exists = lb.is_some_and(|lb| lb.value.spec.route_set(name).is_some());
        if !exists {
            return Err(ControlError::invalid(
                "route_set",
                format!("the load balancer has no route set {name:?}"),
            ));
        }
    }
    Ok(())
}

/// A load balancer's route sets send only to HTTP pools of its own, and none of its route
/// sets or hostnames that a listener names is missing.
fn check_route_sets(
    cfg: &Config,
    lb_id: &LoadBalancerId,
    spec: &LoadBalancerSpec,
) -> Result<(), ControlError> {
    for (i, set) in spec.route_sets.iter().enumerate() {
        for (j, r) in set.routes.iter().enumerate() {
            let field = format!("route_sets[{i}].routes[{j}].pool_id");
            let pool = cfg
                .pools
                .get(&r.pool_id)
                .filter(|p| &p.value.loadbalancer_id == lb_id)
                .ok_or_else(|| {
                    ControlError::invalid(
                        field.clone(),
                        format!("{field}: the load balancer has no pool {}", r.pool_id),
                    )
                })?;
            if pool.value.spec.protocol != fulcrum_model::PoolProtocol::Http {
                return Err(ControlError::invalid(
                    field.clone(),
                    format!("{field}: routes send to HTTP pools only"),
                ));
            }
        }
    }
    for l in cfg.listeners_of(lb_id) {
        if let Some(name) = &l.value.spec.route_set
            && spec.route_set(name).is_none()
        {
            return Err(ControlError::Conflict(format!(
                "route set {name:?} is in use by listener {:?} ({})",
                l.value.spec.name, l.value.id
            )));
        }
        if let Some(name) = l
            .value
            .spec
            .hostnames
            .iter()
            .find(|name| spec.hostname(name).is_none())
        {
            return Err(ControlError::Conflict(format!(
                "hostname {name:?} is in use by listener {:?} ({})",
                l.value.spec.name, l.value.id
            )));
        }
    }
    Ok(())
}

pub(crate) fn check_pool_name_free(
    cfg: &Config,
    lb: &LoadBalancerId,
    name: &str,
    except: Option<&PoolId>,
) -> Result<(), ControlError> {
    if !name.is_empty()
        && cfg
            .pools_of(lb)
            .any(|p| p.value.spec.name == name && Some(&p.value.id) != except)
    {
        return Err(ControlError::Conflict(format!(
            "load balancer {lb} already has a pool named {name:?}"
        )));
    }
    Ok(())
}

pub(crate) fn check_member_removal(pool: &Pool, n: usize) -> Result<(), ControlError> {
    if n > 0 && pool.spec.member_deletion_protection {
        return Err(ControlError::Conflict(format!(
            "pool {} has member deletion protection enabled; members cannot be removed",
            pool.id
        )));
    }
    Ok(())
}

/// A new member of `pool_id`.
pub(crate) fn new_member(pool_id: &PoolId, spec: &MemberSpec, now: Timestamp) -> Member {
    Member {
        id: MemberId(new_id()),
        pool_id: pool_id.clone(),
        spec: spec.clone(),
        created_at: now,
        updated_at: now,
    }
}

/// Plans `pool`'s members to become exactly `specs`. A member whose address and port stay
/// keeps its id, so its connections, health and counters carry over; it is rewritten only
/// if its spec changed. The others are deleted, unless the pool protects its members.
pub(crate) fn plan_member_list(
    plan: &mut Plan,
    cfg: &Config,
    pool: &Pool,
    specs: &[MemberSpec],
    now: Timestamp,
) -> Result<(), ControlError> {
    let mut by_endpoint: HashMap<String, &Member> = cfg
        .members_of(&pool.id)
        .map(|m| (m.value.spec.endpoint(), &m.value))
        .collect();
    for spec in specs {
        let member = match by_endpoint.remove(&spec.endpoint()) {
            Some(old) if old.spec == *spec => continue,
            Some(old) => Member {
                spec: spec.clone(),
                updated_at: now,
                ..old.clone()
            },
            None => new_member(&pool.id, spec, now),
        };
        plan.put(keys::member(&pool.id, &member.id), &member)?;
        plan.touched(ResourceKind::Member, &member.id);
    }
    check_member_removal(pool, by_endpoint.len())?;
    for old in by_endpoint.values() {
        plan.delete(keys::member(&pool.id, &old.id));
        plan.touched(ResourceKind::Member, &old.id);
    }
    Ok(())
}

/// Plans the removal of a pool with everything beneath it.
pub(crate) fn plan_pool_removal(
    cfg: &Config,
    plan: &mut Plan,
    pool: &Pool,
) -> Result<(), ControlError> {
    let members: Vec<_> = cfg.members_of(&pool.id).collect();
    check_member_removal(pool, members.len())?;
    for m in members {
        plan.delete(keys::member(&pool.id, &m.value.id));
        plan.touched(ResourceKind::Member, &m.value.id);
    }
    if let Some(mon) = cfg.monitor_of(&pool.id) {
        plan.delete(keys::monitor(&mon.value.id));
        plan.touched(ResourceKind::HealthMonitor, &mon.value.id);
    }
    plan.delete(keys::pool(&pool.id));
    plan.touched(ResourceKind::Pool, &pool.id);
    Ok(())
}

impl ControlPlane {
    // ---- load balancers ------------------------------------------------------------

    /// Creates a load balancer at the spec's address.
    pub async fn create_loadbalancer(
        &self,
        ctx: &RequestContext,
        spec: LoadBalancerSpec,
    ) -> Result<Outcome, ControlError> {
        self.create_loadbalancer_at(ctx, spec, Vip::AsGiven).await
    }

    /// Creates a load balancer whose address comes from `vip`.
    pub async fn create_loadbalancer_at(
        &self,
        ctx: &RequestContext,
        spec: LoadBalancerSpec,
        vip: Vip,
    ) -> Result<Outcome, ControlError> {
        spec.validate()?;
        // The fingerprint leaves `vip` out, as before addresses were allocated: the address
        // a request asks for is in its spec (given, or 0.0.0.0 and a subnet label).
        self.mutate(ctx, &("CreateLoadBalancer", &spec), |cfg, now| {
            let id = LoadBalancerId(new_id());
            // A new load balancer has no pools yet: its route sets can hold no routes.
            check_route_sets(cfg, &id, &spec)?;
            let mut lb = LoadBalancer {
                id: id.clone(),
                spec: spec.clone(),
                created_at: now,
                updated_at: now,
            };
            let mut plan = Plan::new("CreateLoadBalancer");
            plan_vip(cfg, &self.opts.vip_ranges, &mut plan, &mut lb, &vip)?;
            plan.compares.push(Compare::absent(keys::lb(&id)));
            plan.put(keys::lb(&id), &lb)?;
            plan.touched(ResourceKind::LoadBalancer, &id);
            plan.result = plan.resources.first().cloned();
            plan.lb = Some(id);
            Ok(plan)
        })
        .await
    }

    pub async fn update_loadbalancer(
        &self,
        ctx: &RequestContext,
        id: &LoadBalancerId,
        patch: &Value,
    ) -> Result<Outcome, ControlError> {
        self.edit_loadbalancer(ctx, "UpdateLoadBalancer", id, patch, |_, lb| {
            patch_spec(&lb.spec, patch)
        })
        .await
    }

    /// Changes a load balancer's spec by a function of its current state, planned against
    /// each fresh view: `update_loadbalancer`'s merge patch, and the operations of dialects
    /// that address one part of it (OCI path route sets). `input` is the request as
    /// received, for retry-token fingerprints.
    pub async fn edit_loadbalancer<I: Serialize>(
        &self,
        ctx: &RequestContext,
        operation: &'static str,
        id: &LoadBalancerId,
        input: &I,
        edit: impl Fn(&Config, &LoadBalancer) -> Result<LoadBalancerSpec, ControlError>,
    ) -> Result<Outcome, ControlError> {
        self.mutate(ctx, &(operation, id, input), |cfg, now| {
            let lb = cfg
                .loadbalancers
                .get(id)
                .ok_or_else(|| ControlError::not_found(ResourceKind::LoadBalancer, id))?;
            let spec: LoadBalancerSpec = edit(cfg, &lb.value)?;
            spec.validate()?;
            // Changing only the locks is how a lock is lifted: always allowed.
            let mut unlocked = spec.clone();
            unlocked.locks = lb.value.spec.locks.clone();
            if unlocked != lb.value.spec {
                lb_for_change(cfg, ctx, id)?;
            }
            if spec.route_sets != lb.value.spec.route_sets
                || spec.hostnames != lb.value.spec.hostnames
            {
                check_route_sets(cfg, id, &spec)?;
            }
            let mut plan = Plan::new(operation);
            plan.target_revision = Some(lb.mod_revision);
            if spec.vip_address != lb.value.spec.vip_address {
                release_vip(cfg, &mut plan, lb.value.spec.vip_address);
            }
            let updated = LoadBalancer {
                spec,
                updated_at: now,
                ..lb.value.clone()
            };
            plan.put(keys::lb(id), &updated)?;
            plan.touched(ResourceKind::LoadBalancer, id);
            plan.result = plan.resources.first().cloned();
            plan.lb = Some(id.clone());
            Ok(plan)
        })
        .await
    }

    /// Deletes a load balancer; with `cascade`, everything beneath it too.
    pub async fn delete_loadbalancer(
        &self,
        ctx: &RequestContext,
        id: &LoadBalancerId,
        cascade: bool,
    ) -> Result<Outcome, ControlError> {
        self.mutate(ctx, &("DeleteLoadBalancer", id, cascade), |cfg, _now| {
            let lb = lb_for_change(cfg, ctx, id)?;
            if lb.value.spec.has_lock(LockKind::Delete) && !ctx.lock_override {
                return Err(ControlError::Locked {
                    id: id.to_string(),
                    lock: "DELETE".into(),
                });
            }
            let listeners: Vec<_> = cfg.listeners_of(id).collect();
            let pools: Vec<_> = cfg.pools_of(id).collect();
            let certificates: Vec<_> = cfg
                .certificates
                .values()
                .filter(|c| c.value.loadbalancer_id.as_ref() == Some(id))
                .collect();
            if !cascade && (!listeners.is_empty() || !pools.is_empty() || !certificates.is_empty()) {
                return Err(ControlError::Conflict(format!(
                    "load balancer {id} still has {} listeners, {} pools and {} certificates; delete them first or delete with cascade",
                    listeners.len(),
                    pools.len(),
                    certificates.len()
                )));
            }
            let mut plan = Plan::new("DeleteLoadBalancer");
            plan.target_revision = Some(lb.mod_revision);
            for l in listeners {
                plan.delete(keys::listener(&l.value.id));
                plan.touched(ResourceKind::Listener, &l.value.id);
            }
            for p in pools {
                plan_pool_removal(cfg, &mut plan, &p.value)?;
            }
            for c in certificates {
                plan.delete(keys::certificate(&c.value.id));
                plan.touched(ResourceKind::Certificate, &c.value.id);
            }
            plan.delete(keys::lb(id));
            release_vip(cfg, &mut plan, lb.value.spec.vip_address);
            plan.touched(ResourceKind::LoadBalancer, id);
            plan.lb = Some(id.clone());
            Ok(plan)
        })
        .await
    }

    // ---- listeners -----------------------------------------------------------------

    pub async fn create_listener(
        &self,
        ctx: &RequestContext,
        lb_id: &LoadBalancerId,
        spec: ListenerSpec,
    ) -> Result<Outcome, ControlError> {
        spec.validate()?;
        self.mutate(ctx, &("CreateListener", lb_id, &spec), |cfg, now| {
            let lb = lb_for_change(cfg, ctx, lb_id)?;
            check_listener_pools(cfg, lb_id, &spec)?;
            check_port_free(cfg, &lb.value, &spec, None)?;
            let mut plan = Plan::new("CreateListener");
            guard_listener_certificates(cfg, &mut plan, lb_id, &spec)?;
            let id = ListenerId(new_id());
            let listener = Listener {
                id: id.clone(),
                loadbalancer_id: lb_id.clone(),
                spec: spec.clone(),
                created_at: now,
                updated_at: now,
            };
            plan.put(keys::listener(&id), &listener)?;
            plan.touched(ResourceKind::Listener, &id);
            plan.result = plan.resources.first().cloned();
            plan.lb = Some(lb_id.clone());
            Ok(plan)
        })
        .await
    }

    pub async fn update_listener(
        &self,
        ctx: &RequestContext,
        id: &ListenerId,
        patch: &Value,
    ) -> Result<Outcome, ControlError> {
        self.mutate(ctx, &("UpdateListener", id, patch), |cfg, now| {
            let cur = cfg
                .listeners
                .get(id)
                .ok_or_else(|| ControlError::not_found(ResourceKind::Listener, id))?;
            let lb_id = &cur.value.loadbalancer_id;
            let lb = lb_for_change(cfg, ctx, lb_id)?;
            let spec: ListenerSpec = patch_spec(&cur.value.spec, patch)?;
            spec.validate()?;
            check_listener_pools(cfg, lb_id, &spec)?;
            check_port_free(cfg, &lb.value, &spec, Some(id))?;
            let mut plan = Plan::new("UpdateListener");
            guard_listener_certificates(cfg, &mut plan, lb_id, &spec)?;
            plan.target_revision = Some(cur.mod_revision);
            let updated = Listener {
                spec,
                updated_at: now,
                ..cur.value.clone()
            };
            plan.put(keys::listener(id), &updated)?;
            plan.touched(ResourceKind::Listener, id);
            plan.result = plan.resources.first().cloned();
            plan.lb = Some(lb_id.clone());
            Ok(plan)
        })
        .await
    }

    /// Changes a listener by a function of its current state, planned against each fresh
    /// view (so an edit of one route among several never writes back a stale list): the
    /// operations of dialects that address a listener's routes one by one (Huawei
    /// l7policies and l7rules). `input` is the request as the caller received it, for
    /// retry-token fingerprints; `edit` returns the new spec, validated here as any update.
    pub async fn edit_listener<I: serde::Serialize>(
        &self,
        ctx: &RequestContext,
        operation: &'static str,
        id: &ListenerId,
        input: &I,
        edit: impl Fn(&Config, &Listener) -> Result<ListenerSpec, ControlError>,
    ) -> Result<Outcome, ControlError> {
        self.mutate(ctx, &(operation, id, input), |cfg, now| {
            let cur = cfg
                .listeners
                .get(id)
                .ok_or_else(|| ControlError::not_found(ResourceKind::Listener, id))?;
            let lb_id = &cur.value.loadbalancer_id;
            let lb = lb_for_change(cfg, ctx, lb_id)?;
            let spec = edit(cfg, &cur.value)?;
            spec.validate()?;
            check_listener_pools(cfg, lb_id, &spec)?;
            check_port_free(cfg, &lb.value, &spec, Some(id))?;
            let mut plan = Plan::new(operation);
            plan.target_revision = Some(cur.mod_revision);
            plan.compares
                .push(Compare::unchanged(keys::listener(id), cur.mod_revision));
            let updated = Listener {
                spec,
                updated_at: now,
                ..cur.value.clone()
            };
            plan.put(keys::listener(id), &updated)?;
            plan.touched(ResourceKind::Listener, id);
            plan.result = plan.resources.first().cloned();
            plan.lb = Some(lb_id.clone());
            Ok(plan)
        })
        .await
    }

    pub async fn delete_listener(
        &self,
        ctx: &RequestContext,
        id: &ListenerId,
    ) -> Result<Outcome, ControlError> {
        self.mutate(ctx, &("DeleteListener", id), |cfg, _now| {
            let cur = cfg
                .listeners
                .get(id)
                .ok_or_else(|| ControlError::not_found(ResourceKind::Listener, id))?;
            lb_for_change(cfg, ctx, &cur.value.loadbalancer_id)?;
            let mut plan = Plan::new("DeleteListener");
            plan.target_revision = Some(cur.mod_revision);
            plan.delete(keys::listener(id));
            plan.touched(ResourceKind::Listener, id);
            plan.lb = Some(cur.value.loadbalancer_id.clone());
            Ok(plan)
        })
        .await
    }

    // ---- pools ---------------------------------------------------------------------

    pub async fn create_pool(
        &self,
        ctx: &RequestContext,
        lb_id: &LoadBalancerId,
        spec: PoolSpec,
    ) -> Result<Outcome, ControlError> {
        self.mutate(ctx, &("CreatePool", lb_id, &spec), |cfg, now| {
            let lb = lb_for_change(cfg, ctx, lb_id)?;
            spec.validate(PoolContext {
                lb_kind: lb.value.spec.kind,
            })?;
            check_pool_name_free(cfg, lb_id, &spec.name, None)?;
            let id = PoolId(new_id());
            let pool = Pool {
                id: id.clone(),
                loadbalancer_id: lb_id.clone(),
                spec: spec.clone(),
                created_at: now,
                updated_at: now,
            };
            let mut plan = Plan::new("CreatePool");
            plan.put(keys::pool(&id), &pool)?;
            plan.touched(ResourceKind::Pool, &id);
            plan.result = plan.resources.first().cloned();
            plan.lb = Some(lb_id.clone());
            Ok(plan)
        })
        .await
    }

    /// Creates a pool under a listener's load balancer and makes it that listener's default
    /// pool, in one transaction (Huawei's `create_pool` with `listener_id`). A listener that
    /// has a default pool already is a conflict; the pool must suit the listener's protocol.
    pub async fn create_pool_for_listener(
        &self,
        ctx: &RequestContext,
        listener_id: &ListenerId,
        spec: PoolSpec,
    ) -> Result<Outcome, ControlError> {
        self.mutate(ctx, &("CreatePool", listener_id, &spec), |cfg, now| {
            let listener = cfg
                .listeners
                .get(listener_id)
                .ok_or_else(|| ControlError::not_found(ResourceKind::Listener, listener_id))?;
            let lb_id = listener.value.loadbalancer_id.clone();
            let lb = lb_for_change(cfg, ctx, &lb_id)?;
            spec.validate(PoolContext {
                lb_kind: lb.value.spec.kind,
            })?;
            check_pool_name_free(cfg, &lb_id, &spec.name, None)?;
            if let Some(current) = &listener.value.spec.default_pool_id {
                return Err(ControlError::Conflict(format!(
                    "listener {listener_id} already has default pool {current}"
                )));
            }
            let id = PoolId(new_id());
            listener
                .value
                .spec
                .validate_pool("listener_id", &lb_id, &lb_id, spec.protocol)?;
            let pool = Pool {
                id: id.clone(),
                loadbalancer_id: lb_id.clone(),
                spec: spec.clone(),
                created_at: now,
                updated_at: now,
            };
            let mut updated = listener.value.clone();
            updated.spec.default_pool_id = Some(id.clone());
            updated.updated_at = now;
            let mut plan = Plan::new("CreatePool");
            plan.put(keys::pool(&id), &pool)?;
            plan.touched(ResourceKind::Pool, &id);
            plan.result = plan.resources.first().cloned();
            plan.compares.push(Compare::unchanged(
                keys::listener(listener_id),
                listener.mod_revision,
            ));
            plan.put(keys::listener(listener_id), &updated)?;
            plan.touched(ResourceKind::Listener, listener_id);
            plan.lb = Some(lb_id);
            Ok(plan)
        })
        .await
    }

    pub async fn update_pool(
        &self,
        ctx: &RequestContext,
        id: &PoolId,
        patch: &Value,
    ) -> Result<Outcome, ControlError> {
        self.mutate(ctx, &("UpdatePool", id, patch), |cfg, now| {
            let cur = pool_of(cfg, id)?;
            let lb_id = &cur.value.loadbalancer_id;
            let lb = lb_for_change(cfg, ctx, lb_id)?;
            let spec: PoolSpec = patch_spec(&cur.value.spec, patch)?;
            spec.validate(PoolContext {
                lb_kind: lb.value.spec.kind,
            })?;
            spec.validate_update(&cur.value.spec)?;
            if spec.name != cur.value.spec.name {
                check_pool_name_free(cfg, lb_id, &spec.name, Some(id))?;
            }
            check_server_ids_fit(&spec, cfg.members_of(id).map(|m| &m.value.spec))?;
            let mut plan = Plan::new("UpdatePool");
            plan.target_revision = Some(cur.mod_revision);
            let updated = Pool {
                spec,
                updated_at: now,
                ..cur.value.clone()
            };
            plan.compares
                .push(Compare::unchanged(keys::pool(id), cur.mod_revision));
            plan.put(keys::pool(id), &updated)?;
            plan.touched(ResourceKind::Pool, id);
            plan.result = plan.resources.first().cloned();
            plan.lb = Some(lb_id.clone());
            Ok(plan)
        })
        .await
    }

    /// Deletes a pool with its members and health monitor. Refused while a listener
    /// routes to it, or while member deletion protection holds members in it.
    /// Deletes a pool no listener uses (one that a listener uses is a conflict).
    pub async fn delete_pool(
        &self,
        ctx: &RequestContext,
        id: &PoolId,
    ) -> Result<Outcome, ControlError> {
        self.delete_pool_with(ctx, id, false).await
    }

    /// Deletes a pool and, in the same transaction, unbinds it from the listeners whose
    /// default pool it is (their default pool becomes none); refused while an L7 route
    /// sends to it. Huawei's order: a pool goes before its listener (a listener with a pool
    /// cannot), and only once no forwarding policy (route) names it.
    pub async fn delete_pool_unbinding(
        &self,
        ctx: &RequestContext,
        id: &PoolId,
    ) -> Result<Outcome, ControlError> {
        self.delete_pool_with(ctx, id, true).await
    }

    async fn delete_pool_with(
        &self,
        ctx: &RequestContext,
        id: &PoolId,
        unbind: bool,
    ) -> Result<Outcome, ControlError> {
        self.mutate(ctx, &("DeletePool", id), |cfg, now| {
            let cur = pool_of(cfg, id)?;
            lb_for_change(cfg, ctx, &cur.value.loadbalancer_id)?;
            let mut plan = Plan::new("DeletePool");
            plan.target_revision = Some(cur.mod_revision);
            if let Some(lb) = cfg.loadbalancers.get(&cur.value.loadbalancer_id)
                && let Some(set) = lb
                    .value
                    .spec
                    .route_sets
                    .iter()
                    .find(|s| s.routes.iter().any(|r| &r.pool_id == id))
            {
                return Err(ControlError::Conflict(format!(
                    "pool {id} is in use by route set {:?}; change the route set first",
                    set.name
                )));
            }
            for l in cfg.listeners_using(id) {
                if !unbind {
                    return Err(ControlError::Conflict(format!(
                        "pool {id} is in use by listener {}",
                        l.value.id
                    )));
                }
                if let Some(r) = l.value.spec.routes.iter().find(|r| &r.pool_id == id) {
                    let route = if r.id.is_empty() {
                        String::new()
                    } else {
                        format!(" {}", r.id)
                    };
                    return Err(ControlError::Conflict(format!(
                        "pool {id} is in use by route{route} of listener {}; delete the route (forwarding policy) first",
                        l.value.id
                    )));
                }
                let mut unbound = l.value.clone();
                unbound.spec.default_pool_id = None;
                unbound.updated_at = now;
                plan.compares.push(Compare::unchanged(
                    keys::listener(&l.value.id),
                    l.mod_revision,
                ));
                plan.put(keys::listener(&l.value.id), &unbound)?;
                plan.touched(ResourceKind::Listener, &l.value.id);
            }
            plan_pool_removal(cfg, &mut plan, &cur.value)?;
            plan.lb = Some(cur.value.loadbalancer_id.clone());
            Ok(plan)
        })
        .await
    }

    // ---- members -------------------------------------------------------------------

    pub async fn create_member(
        &self,
        ctx: &RequestContext,
        pool_id: &PoolId,
        spec: MemberSpec,
    ) -> Result<Outcome, ControlError> {
        self.mutate(ctx, &("CreateMember", pool_id, &spec), |cfg, now| {
            let pool = pool_of(cfg, pool_id)?;
            let lb = lb_for_change(cfg, ctx, &pool.value.loadbalancer_id)?;
            spec.validate(member_ctx(cfg, &lb.value, &pool.value.spec, &spec))?;
            check_unique_endpoints(
                cfg.members_of(pool_id).map(|m| &m.value.spec),
                [("address".to_owned(), &spec)],
            )?;
            let id = MemberId(new_id());
            let mut plan = Plan::new("CreateMember");
            guard_subnets(cfg, &mut plan, [&spec])?;
            plan.put(
                keys::member(pool_id, &id),
                &Member {
                    id: id.clone(),
                    pool_id: pool_id.clone(),
                    spec: spec.clone(),
                    created_at: now,
                    updated_at: now,
                },
            )?;
            plan.touched(ResourceKind::Member, &id);
            plan.result = plan.resources.first().cloned();
            plan.lb = Some(pool.value.loadbalancer_id.clone());
            plan.touch_pools.push(pool_id.clone());
            Ok(plan)
        })
        .await
    }

    pub async fn update_member(
        &self,
        ctx: &RequestContext,
        pool_id: &PoolId,
        id: &MemberId,
        patch: &Value,
    ) -> Result<Outcome, ControlError> {
        self.mutate(ctx, &("UpdateMember", pool_id, id, patch), |cfg, now| {
            let pool = pool_of(cfg, pool_id)?;
            let cur = cfg
                .member(pool_id, id)
                .ok_or_else(|| ControlError::not_found(ResourceKind::Member, id))?;
            let lb = lb_for_change(cfg, ctx, &pool.value.loadbalancer_id)?;
            let spec: MemberSpec = patch_spec(&cur.value.spec, patch)?;
            spec.validate(member_ctx(cfg, &lb.value, &pool.value.spec, &spec))?;
            check_unique_endpoints(
                cfg.members_of(pool_id)
                    .filter(|m| &m.value.id != id)
                    .map(|m| &m.value.spec),
                [("address".to_owned(), &spec)],
            )?;
            let mut plan = Plan::new("UpdateMember");
            guard_subnets(cfg, &mut plan, [&spec])?;
            plan.target_revision = Some(cur.mod_revision);
            // Siblings matter only when the endpoint (or subnet) moves; otherwise the member
            // alone is compared and changes of other members commit alongside.
            let key = keys::member(pool_id, id);
            plan.shareable = spec.address == cur.value.spec.address
                && spec.port == cur.value.spec.port
                && spec.subnet_id == cur.value.spec.subnet_id;
            plan.compares
                .push(Compare::unchanged(key.clone(), cur.mod_revision));
            plan.put(
                key,
                &Member {
                    spec,
                    updated_at: now,
                    ..cur.value.clone()
                },
            )?;
            plan.touched(ResourceKind::Member, id);
            plan.result = plan.resources.first().cloned();
            plan.lb = Some(pool.value.loadbalancer_id.clone());
            plan.touch_pools.push(pool_id.clone());
            Ok(plan)
        })
        .await
    }

    pub async fn delete_member(
        &self,
        ctx: &RequestContext,
        pool_id: &PoolId,
        id: &MemberId,
    ) -> Result<Outcome, ControlError> {
        self.mutate(ctx, &("DeleteMember", pool_id, id), |cfg, _now| {
            let pool = pool_of(cfg, pool_id)?;
            let cur = cfg
                .member(pool_id, id)
                .ok_or_else(|| ControlError::not_found(ResourceKind::Member, id))?;
            lb_for_change(cfg, ctx, &pool.value.loadbalancer_id)?;
            check_member_removal(&pool.value, 1)?;
            let mut plan = Plan::new("DeleteMember");
            plan.target_revision = Some(cur.mod_revision);
            plan.delete(keys::member(pool_id, id));
            plan.touched(ResourceKind::Member, id);
            plan.lb = Some(pool.value.loadbalancer_id.clone());
            plan.touch_pools.push(pool_id.clone());
            Ok(plan)
        })
        .await
    }

    /// Adds, replaces or deletes up to 200 members of a pool in one transaction.
    pub async fn batch_members(
        &self,
        ctx: &RequestContext,
        pool_id: &PoolId,
        batch: BatchMembers,
    ) -> Result<Outcome, ControlError> {
        if batch.len() > MAX_BATCH_MEMBERS {
            return Err(ControlError::invalid(
                "members",
                format!(
                    "at most {MAX_BATCH_MEMBERS} members per call (got {})",
                    batch.len()
                ),
            ));
        }
        self.mutate(ctx, &("BatchMembers", pool_id, &batch), |cfg, now| {
            let pool = pool_of(cfg, pool_id)?;
            let lb = lb_for_change(cfg, ctx, &pool.value.loadbalancer_id)?;
            let mut plan = Plan::new("BatchMembers");
            plan.target_revision = Some(pool.mod_revision);
            plan.lb = Some(pool.value.loadbalancer_id.clone());
            plan.touch_pools.push(pool_id.clone());
            let existing: Vec<&Versioned<Member>> = cfg.members_of(pool_id).collect();
            match &batch {
                BatchMembers::Add(specs) | BatchMembers::Replace(specs) => {
                    let mut errors = fulcrum_model::Checker::new();
                    for (i, s) in specs.iter().enumerate() {
                        errors.nested(
                            &format!("members[{i}]"),
                            s.validate(member_ctx(cfg, &lb.value, &pool.value.spec, s)),
                        );
                    }
                    errors.finish()?;
                    let replacing = matches!(batch, BatchMembers::Replace(_));
                    let kept = if replacing {
                        Vec::new()
                    } else {
                        existing.clone()
                    };
                    check_unique_endpoints(
                        kept.iter().map(|m| &m.value.spec),
                        specs
                            .iter()
                            .enumerate()
                            .map(|(i, s)| (format!("members[{i}]"), s)),
                    )?;
                    guard_subnets(cfg, &mut plan, specs)?;
                    if replacing {
                        plan_member_list(&mut plan, cfg, &pool.value, specs, now)?;
                    } else {
                        for s in specs {
                            let member = new_member(pool_id, s, now);
                            plan.put(keys::member(pool_id, &member.id), &member)?;
                            plan.touched(ResourceKind::Member, &member.id);
                        }
                    }
                }
                BatchMembers::Delete(ids) => {
                    check_member_removal(&pool.value, ids.len())?;
                    let mut errors = fulcrum_model::Checker::new();
                    let mut seen = std::collections::HashSet::new();
                    for (i, id) in ids.iter().enumerate() {
                        if cfg.member(pool_id, id).is_none() {
                            errors.fail(
                                format!("members[{i}].id"),
                                format!("member {id} is not in pool {pool_id}"),
                            );
                        } else if !seen.insert(id) {
                            errors.fail(
                                format!("members[{i}].id"),
                                format!("member {id} is listed twice"),
                            );
                        }
                    }
                    errors.finish()?;
                    for id in ids {
                        plan.delete(keys::member(pool_id, id));
                        plan.touched(ResourceKind::Member, id);
                    }
                }
            }
            plan.result = Some(fulcrum_model::ResourceRef {
                kind: ResourceKind::Pool,
                id: pool_id.to_string(),
            });
            Ok(plan)
        })
        .await
    }

    // ---- health monitors -----------------------------------------------------------

    pub async fn create_monitor(
        &self,
        ctx: &RequestContext,
        spec: HealthMonitorSpec,
    ) -> Result<Outcome, ControlError> {
        spec.validate()?;
        self.mutate(ctx, &("CreateHealthMonitor", &spec), |cfg, now| {
            let pool = pool_of(cfg, &spec.pool_id).map_err(|_| {
                ControlError::invalid("pool_id", format!("pool {} does not exist", spec.pool_id))
            })?;
            lb_for_change(cfg, ctx, &pool.value.loadbalancer_id)?;
            check_monitor_for_pool(spec.kind, pool.value.spec.protocol)?;
            if let Some(existing) = cfg.monitor_of(&spec.pool_id) {
                return Err(ControlError::Conflict(format!(
                    "pool {} already has health monitor {}",
                    spec.pool_id, existing.value.id
                )));
            }
            let id = HealthMonitorId(new_id());
            let mut plan = Plan::new("CreateHealthMonitor");
            plan.put(
                keys::monitor(&id),
                &HealthMonitor {
                    id: id.clone(),
                    loadbalancer_id: pool.value.loadbalancer_id.clone(),
                    spec: spec.clone(),
                    created_at: now,
                    updated_at: now,
                },
            )?;
            plan.touched(ResourceKind::HealthMonitor, &id);
            plan.result = plan.resources.first().cloned();
            plan.lb = Some(pool.value.loadbalancer_id.clone());
            plan.touch_pools.push(spec.pool_id.clone());
            Ok(plan)
        })
        .await
    }

    pub async fn update_monitor(
        &self,
        ctx: &RequestContext,
        id: &HealthMonitorId,
        patch: &Value,
    ) -> Result<Outcome, ControlError> {
        self.mutate(ctx, &("UpdateHealthMonitor", id, patch), |cfg, now| {
            let cur = cfg
                .monitors
                .get(id)
                .ok_or_else(|| ControlError::not_found(ResourceKind::HealthMonitor, id))?;
            lb_for_change(cfg, ctx, &cur.value.loadbalancer_id)?;
            let spec: HealthMonitorSpec = patch_spec(&cur.value.spec, patch)?;
            spec.validate()?;
            if spec.pool_id != cur.value.spec.pool_id {
                return Err(ControlError::invalid(
                    "pool_id",
                    "a health monitor cannot move to another pool",
                ));
            }
            let pool = pool_of(cfg, &spec.pool_id)?;
            check_monitor_for_pool(spec.kind, pool.value.spec.protocol)?;
            let mut plan = Plan::new("UpdateHealthMonitor");
            plan.target_revision = Some(cur.mod_revision);
            plan.put(
                keys::monitor(id),
                &HealthMonitor {
                    spec: spec.clone(),
                    updated_at: now,
                    ..cur.value.clone()
                },
            )?;
            plan.touched(ResourceKind::HealthMonitor, id);
            plan.result = plan.resources.first().cloned();
            plan.lb = Some(cur.value.loadbalancer_id.clone());
            plan.touch_pools.push(spec.pool_id);
            Ok(plan)
        })
        .await
    }

    pub async fn delete_monitor(
        &self,
        ctx: &RequestContext,
        id: &HealthMonitorId,
    ) -> Result<Outcome, ControlError> {
        self.mutate(ctx, &("DeleteHealthMonitor", id), |cfg, _now| {
            let cur = cfg
                .monitors
                .get(id)
                .ok_or_else(|| ControlError::not_found(ResourceKind::HealthMonitor, id))?;
            lb_for_change(cfg, ctx, &cur.value.loadbalancer_id)?;
            let mut plan = Plan::new("DeleteHealthMonitor");
            plan.target_revision = Some(cur.mod_revision);
            plan.delete(keys::monitor(id));
            plan.touched(ResourceKind::HealthMonitor, id);
            plan.lb = Some(cur.value.loadbalancer_id.clone());
            plan.touch_pools.push(cur.value.spec.pool_id.clone());
            Ok(plan)
        })
        .await
    }

    // ---- subnets -------------------------------------------------------------------

    /// Creates a subnet. Its `vpc_id` may name a VPC (then the subnet lies within the
    /// VPC's CIDR and overlaps none of its subnets) or, unless `require_vpc`, be a bare name.
    pub async fn create_subnet(
        &self,
        ctx: &RequestContext,
        spec: SubnetSpec,
        require_vpc: bool,
    ) -> Result<Outcome, ControlError> {
        spec.validate()?;
        self.mutate(ctx, &("CreateSubnet", &spec, require_vpc), |cfg, now| {
            let id = SubnetId(new_id());
            let mut plan = Plan::new("CreateSubnet");
            check_subnet_vpc(cfg, &mut plan, None, &spec, require_vpc)?;
            plan.put(
                keys::subnet(&id),
                &Subnet {
                    id: id.clone(),
                    spec: spec.clone(),
                    created_at: now,
                    updated_at: now,
                },
            )?;
            plan.touched(ResourceKind::Subnet, &id);
            plan.result = plan.resources.first().cloned();
            Ok(plan)
        })
        .await
    }

    /// Updates a subnet; refused if a member using it would no longer fit.
    pub async fn update_subnet(
        &self,
        ctx: &RequestContext,
        id: &SubnetId,
        patch: &Value,
    ) -> Result<Outcome, ControlError> {
        self.mutate(ctx, &("UpdateSubnet", id, patch), |cfg, now| {
            let cur = cfg
                .subnets
                .get(id)
                .ok_or_else(|| ControlError::not_found(ResourceKind::Subnet, id))?;
            let spec: SubnetSpec = patch_spec(&cur.value.spec, patch)?;
            spec.validate()?;
            let mut plan = Plan::new("UpdateSubnet");
            if spec.vpc_id != cur.value.spec.vpc_id || spec.cidr != cur.value.spec.cidr {
                check_subnet_vpc(cfg, &mut plan, Some(id), &spec, false)?;
            }
            for (pool_id, members) in &cfg.members {
                for m in members
                    .values()
                    .filter(|m| m.value.spec.subnet_id.as_ref() == Some(id))
                {
                    let Some(pool) = cfg.pools.get(pool_id) else {
                        continue;
                    };
                    let Some(lb) = cfg.loadbalancers.get(&pool.value.loadbalancer_id) else {
                        continue;
                    };
                    let mctx = MemberContext {
                        lb_kind: lb.value.spec.kind,
                        lb_vpc_id: &lb.value.spec.vpc_id,
                        subnet: Some(&spec),
                        server_id_len: pool.value.spec.quic_lb.map(|q| q.server_id_len),
                    };
                    if let Err(e) = m.value.spec.validate(mctx) {
                        return Err(ControlError::Conflict(format!(
                            "member {} would no longer fit: {e}",
                            m.value.id
                        )));
                    }
                    plan.compares.push(Compare::unchanged(
                        keys::member(pool_id, &m.value.id),
                        m.mod_revision,
                    ));
                }
            }
            plan.target_revision = Some(cur.mod_revision);
            plan.compares
                .push(Compare::unchanged(keys::subnet(id), cur.mod_revision));
            plan.put(
                keys::subnet(id),
                &Subnet {
                    spec,
                    updated_at: now,
                    ..cur.value.clone()
                },
            )?;
            plan.touched(ResourceKind::Subnet, id);
            plan.result = plan.resources.first().cloned();
            Ok(plan)
        })
        .await
    }

    pub async fn delete_subnet(
        &self,
        ctx: &RequestContext,
        id: &SubnetId,
    ) -> Result<Outcome, ControlError> {
        self.mutate(ctx, &("DeleteSubnet", id), |cfg, _now| {
            let cur = cfg
                .subnets
                .get(id)
                .ok_or_else(|| ControlError::not_found(ResourceKind::Subnet, id))?;
            if let Some(m) = cfg
                .members
                .values()
                .flat_map(|ms| ms.values())
                .find(|m| m.value.spec.subnet_id.as_ref() == Some(id))
            {
                return Err(ControlError::Conflict(format!(
                    "subnet {id} is in use by member {}",
                    m.value.id
                )));
            }
            let mut plan = Plan::new("DeleteSubnet");
            plan.target_revision = Some(cur.mod_revision);
            plan.compares
                .push(Compare::unchanged(keys::subnet(id), cur.mod_revision));
            plan.delete(keys::subnet(id));
            plan.touched(ResourceKind::Subnet, id);
            Ok(plan)
        })
        .await
    }

    // ---- reads ---------------------------------------------------------------------

    /// Where a resource last changed at `mod_revision` (created at `create_revision`) stands.
    pub fn provisioning_status<T>(&self, v: &Versioned<T>) -> ProvisioningStatus {
        if !self.is_pending(v.mod_revision) {
            ProvisioningStatus::Active
        } else if v.create_revision == v.mod_revision {
            ProvisioningStatus::PendingCreate
        } else {
            ProvisioningStatus::PendingUpdate
        }
    }

    /// A listener's provisioning status: ERROR once applied while the data plane cannot
    /// serve it (its address is taken, its certificate does not load); ACTIVE again by
    /// itself when it can.
    pub fn listener_status(&self, v: &Versioned<Listener>) -> ProvisioningStatus {
        self.unless_refused(v, ResourceKind::Listener, v.value.id.as_str())
    }

    /// A pool's provisioning status: ERROR once applied while the data plane refuses it.
    pub fn pool_status(&self, v: &Versioned<Pool>) -> ProvisioningStatus {
        self.unless_refused(v, ResourceKind::Pool, v.value.id.as_str())
    }

    /// A load balancer's provisioning status: ERROR once applied while any of its
    /// listeners cannot be served.
    pub fn load_balancer_status(
        &self,
        cfg: &Config,
        v: &Versioned<LoadBalancer>,
    ) -> ProvisioningStatus {
        match self.provisioning_status(v) {
            ProvisioningStatus::Active if self.refuses_any_listener_of(cfg, &v.value.id) => {
                ProvisioningStatus::Error
            }
            status => status,
        }
    }

    fn unless_refused<T>(
        &self,
        v: &Versioned<T>,
        kind: ResourceKind,
        id: &str,
    ) -> ProvisioningStatus {
        match self.provisioning_status(v) {
            ProvisioningStatus::Active if self.refusal(kind, id).is_some() => {
                ProvisioningStatus::Error
            }
            status => status,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use fulcrum_model::{LoadBalancerSpec, MemberSpec, PoolProtocol, PoolSpec};
    use serde_json::json;

    use super::*;
    use crate::testing::control;

    async fn pool_with(
        cp: &ControlPlane,
        members: usize,
    ) -> (LoadBalancerId, PoolId, Vec<MemberId>) {
        let ctx = RequestContext::default();
        let lb = cp
            .create_loadbalancer(&ctx, LoadBalancerSpec::new("lb"))
            .await
            .unwrap();
        let lb = LoadBalancerId(lb.result.unwrap().id);
        let pool = cp
            .create_pool(&ctx, &lb, PoolSpec::new("p", PoolProtocol::Http))
            .await
            .unwrap();
        let pool = PoolId(pool.result.unwrap().id);
        let specs = (0..members)
            .map(|i| MemberSpec::new(format!("10.0.0.{}", i + 1), 80))
            .collect();
        cp.batch_members(&ctx, &pool, BatchMembers::Add(specs))
            .await
            .unwrap();
        let ids = cp
            .view()
            .members_of(&pool)
            .map(|m| m.value.id.clone())
            .collect();
        (lb, pool, ids)
    }

    /// Weight changes of different members of one load balancer do not serialise on it:
    /// they all succeed, none undoes another, and a concurrent change of the load balancer
    /// itself is kept (touches never write back a stale spec).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_weight_changes_share_the_load_balancer() {
        let (_dir, cp) = control().await;
        let (lb, pool, members) = pool_with(&cp, 8).await;
        let before = cp.view().loadbalancers[&lb].mod_revision;
        let rounds = 20u32;
        let mut tasks = Vec::new();
        for m in members.clone() {
            let (cp, pool) = (cp.clone(), pool.clone());
            tasks.push(tokio::spawn(async move {
                for w in 1..=rounds {
                    cp.update_member(&RequestContext::default(), &pool, &m, &json!({"weight": w}))
                        .await
                        .unwrap();
                }
            }));
        }
        let renamed = {
            let cp = cp.clone();
            let lb = lb.clone();
            tokio::spawn(async move {
                cp.update_loadbalancer(&RequestContext::default(), &lb, &json!({"name": "renamed"}))
                    .await
                    .unwrap()
            })
        };
        for t in tasks {
            t.await.unwrap();
        }
        renamed.await.unwrap();
        let cfg = cp.view();
        for m in &members {
            assert_eq!(cfg.member(&pool, m).unwrap().value.spec.weight, rounds);
        }
        let lb = &cfg.loadbalancers[&lb];
        assert_eq!(lb.value.spec.name, "renamed");
        // Every change moved the load balancer's ETag.
        assert!(lb.mod_revision >= before + i64::from(rounds) * members.len() as i64);
    }

    /// A shared change compares the pool's stored bytes: re-encoding a pool that holds
    /// secrets seals them with new nonces, which could never compare equal (the change would
    /// stall until its deadline). An exclusive change re-encodes the pool: the bytes left as
    /// they were show the change went shared. The secrets stay whole in the view.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shared_changes_commit_under_a_pool_with_sealed_secrets() {
        let (_dir, cp) = control().await;
        let ctx = RequestContext::default();
        let lb = cp
            .create_loadbalancer(&ctx, LoadBalancerSpec::new("lb"))
            .await
            .unwrap();
        let lb = LoadBalancerId(lb.result.unwrap().id);
        let mut spec = PoolSpec::new("p", PoolProtocol::Http);
        spec.upstream
            .credentials
            .headers
            .insert("x-key".into(), vec!["pl4nted".into()]);
        let pool = cp.create_pool(&ctx, &lb, spec).await.unwrap();
        let pool = PoolId(pool.result.unwrap().id);
        let member = cp
            .create_member(&ctx, &pool, MemberSpec::new("10.0.0.1", 80))
            .await
            .unwrap();
        let member = MemberId(member.result.unwrap().id);
        let stored = cp.store().get(&keys::pool(&pool)).await.unwrap().unwrap();
        assert!(!String::from_utf8_lossy(&stored.value).contains("pl4nted"));
        for weight in 2..5 {
            let started = std::time::Instant::now();
            cp.update_member(&ctx, &pool, &member, &json!({"weight": weight}))
                .await
                .unwrap();
            assert!(
                started.elapsed() < std::time::Duration::from_millis(500),
                "took {:?}",
                started.elapsed()
            );
        }
        let after = cp.store().get(&keys::pool(&pool)).await.unwrap().unwrap();
        assert!(
            after.mod_revision > stored.mod_revision,
            "the pool's ETag moved"
        );
        assert_eq!(
            after.value, stored.value,
            "touched (shared), not rewritten: the sealed bytes are the same"
        );
        let cfg = cp.view();
        assert_eq!(
            cfg.pools[&pool].value.spec.upstream.credentials.headers["x-key"],
            ["pl4nted"]
        );
    }

    /// Endpoint changes still serialise: two members moved to one endpoint at once, one wins.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_endpoint_changes_cannot_collide() {
        let (_dir, cp) = control().await;
        for _ in 0..10 {
            let (_, pool, members) = pool_with(&cp, 2).await;
            let moves = members.iter().map(|m| {
                let (cp, pool, m) = (cp.clone(), pool.clone(), m.clone());
                tokio::spawn(async move {
                    cp.update_member(
                        &RequestContext::default(),
                        &pool,
                        &m,
                        &json!({"address": "10.9.9.9"}),
                    )
                    .await
                })
            });
            let mut ok = 0;
            for t in moves.collect::<Vec<_>>() {
                match t.await.unwrap() {
                    Ok(_) => ok += 1,
                    Err(ControlError::Invalid(_)) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(ok, 1);
        }
    }
}
