//! `apply`: a declarative document made true in one change.
//!
//! ```yaml
//! subnets:
//!   - {name: backends, cidr: 10.0.0.0/24, vpc_id: vpc-1}
//! loadbalancers:
//!   - name: web                       # matched by name
//!     vip_address: 127.0.0.1
//!     pools:
//!       - name: app                   # matched by name within the load balancer
//!         protocol: HTTP
//!         health_monitor: {type: HTTP, url_path: /health}
//!         members:                    # the pool's members become exactly these
//!           - {address: 10.0.0.5, port: 8080, weight: 3, subnet: backends}
//!     listeners:
//!       - name: http                  # matched by name
//!         protocol: HTTP
//!         port: 8080
//!         default_pool: app           # a pool of the document, by name
//!         routes: [{path_prefix: /api, pool: app}]
//! ```
//! Every other field is the native API's. Fields a document leaves out keep their current
//! values; applying the same document twice changes nothing. With `prune`, listeners and
//! pools of the document's load balancers that it does not name are deleted, and so is
//! the health monitor of a pool that names none.
//!
//! The document is planned as the operations a user would call one by one (create or
//! update each resource, replace each pool's members), each checked as that operation
//! checks it, on a view that already holds the steps before it. All of them then commit
//! as one transaction (see [`crate::batch`]): a document that fails anywhere changes
//! nothing, and a concurrent change to what it read makes it plan again.

use std::collections::HashMap;

use chrono::Utc;
use fulcrum_model::{
    HealthMonitorId, ListenerId, LoadBalancerId, MemberSpec, PoolId, ResourceKind, ResourceRef,
    SubnetId, Timestamp, ValidationError,
};
use futures::FutureExt;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::batch::Batch;
use crate::engine::Plan;
use crate::{
    BatchMembers, Config, ControlError, ControlPlane, Outcome, RequestContext, decode_spec,
};

/// What applying does (or, planning only, would do) to one resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApplyStep {
    /// `create`, `update`, `delete` or `unchanged`.
    pub action: &'static str,
    /// `subnet`, `loadbalancer`, `pool`, `members`, `healthmonitor` or `listener`.
    pub kind: &'static str,
    /// By name: `web`, `web/app` (pool app of load balancer web), …
    pub name: String,
    /// For an update: the fields that change.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

/// Every step, in the order they apply, with counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ApplySummary {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub deleted: usize,
    /// Whether anything changes (or would).
    pub changes: bool,
    pub plan: Vec<ApplyStep>,
}

/// The result of [`ControlPlane::apply`].
#[derive(Clone, Debug)]
pub struct Applied {
    pub summary: ApplySummary,
    /// The change's outcome; `None` when only planned, or when nothing had to change.
    pub outcome: Option<Outcome>,
}

impl ControlPlane {
    /// Makes the configuration match `doc` in one transaction, or only plans it
    /// (`dry_run`). Nothing is written when the plan changes nothing.
    pub async fn apply(
        &self,
        ctx: &RequestContext,
        doc: &Value,
        prune: bool,
        dry_run: bool,
    ) -> Result<Applied, ControlError> {
        check_document(doc)?;
        let view = self.view().clone();
        let (_, summary) = self.plan_apply(ctx, view, doc, prune, Utc::now())?;
        if dry_run || !summary.changes {
            return Ok(Applied {
                summary,
                outcome: None,
            });
        }
        // Planned again on the view the engine commits against (and again if it moved).
        let last = Mutex::new(summary);
        let outcome = self
            .mutate(ctx, &("Apply", doc, prune), |cfg, now| {
                let (plan, summary) = self.plan_apply(ctx, cfg.clone(), doc, prune, now)?;
                *last.lock() = summary;
                Ok(plan)
            })
            .await?;
        Ok(Applied {
            summary: last.into_inner(),
            outcome: Some(outcome),
        })
    }

    fn plan_apply(
        &self,
        ctx: &RequestContext,
        view: Config,
        doc: &Value,
        prune: bool,
        now: Timestamp,
    ) -> Result<(Plan, ApplySummary), ControlError> {
        let batch = Batch::new(view, self.opts.secret_key.clone(), now, "Apply");
        let steps_ctx = RequestContext {
            batch: Some(batch.clone()),
            retry_token: None,
            if_match: None,
            ..ctx.clone()
        };
        let mut applier = Applier {
            cp: self,
            ctx: &steps_ctx,
            batch: &batch,
            summary: ApplySummary::default(),
            prune,
            first_lb: None,
        };
        // Operations in a batch plan and return without waiting on anything.
        applier
            .run(doc)
            .now_or_never()
            .ok_or_else(|| ControlError::Internal("an apply step waited".into()))??;
        let Applier {
            mut summary,
            first_lb,
            ..
        } = applier;
        summary.changes = batch.writes_anything();
        Ok((batch.finish(first_lb), summary))
    }
}

/// Checks a document's shape without a view: objects and lists where they belong, a
/// name on everything, no name twice where names are unique, and references (a
/// listener's pools, a member's subnet) to what the document defines. Returns what it
/// holds, for a summary line.
pub fn check_document(doc: &Value) -> Result<String, ControlError> {
    let doc = top_level(doc)?;
    let subnets = list(doc.get("subnets"), "subnets")?;
    let subnet_names = names(&subnets, "subnets", "subnet")?;
    let lbs = list(doc.get("loadbalancers"), "loadbalancers")?;
    let lb_names = names(&lbs, "loadbalancers", "load balancer")?;
    let (mut pool_count, mut listener_count, mut member_count) = (0, 0, 0);
    for (i, lb) in lbs.iter().enumerate() {
        let at = format!("loadbalancers[{i}]");
        let pools = list(lb.get("pools"), &format!("{at}.pools"))?;
        let pool_names = names(&pools, &format!("{at}.pools"), "pool")?;
        for (j, pool) in pools.iter().enumerate() {
            let members = list(pool.get("members"), &format!("{at}.pools[{j}].members"))?;
            for (k, m) in members.iter().enumerate() {
                if let Some(s) = m.get("subnet") {
                    let s = s.as_str().unwrap_or_default();
                    if !subnet_names.iter().any(|n| n == s) {
                        return Err(invalid(
                            format!("{at}.pools[{j}].members[{k}].subnet"),
                            format!("subnet {s:?} is not defined in the document"),
                        ));
                    }
                }
            }
            member_count += members.len();
        }
        let listeners = list(lb.get("listeners"), &format!("{at}.listeners"))?;
        names(&listeners, &format!("{at}.listeners"), "listener")?;
        for (j, l) in listeners.iter().enumerate() {
            for (field, pool) in pool_references(l) {
                let p = pool.as_str().unwrap_or_default();
                if !pool_names.iter().any(|n| n == p) {
                    return Err(invalid(
                        format!("{at}.listeners[{j}].{field}"),
                        format!("pool {p:?} is not defined in this load balancer"),
                    ));
                }
            }
        }
        pool_count += pools.len();
        listener_count += listeners.len();
    }
    Ok(format!(
        "{} subnet(s), {} load balancer(s), {pool_count} pool(s) with {member_count} member(s), {listener_count} listener(s)",
        subnet_names.len(),
        lb_names.len()
    ))
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ControlError {
    ControlError::Invalid(ValidationError::invalid(field, message))
}

fn top_level(doc: &Value) -> Result<&Map<String, Value>, ControlError> {
    let Value::Object(doc) = doc else {
        return Err(invalid(
            "",
            "the document must be an object with `subnets` and `loadbalancers`",
        ));
    };
    if let Some(key) = doc
        .keys()
        .find(|k| *k != "subnets" && *k != "loadbalancers")
    {
        return Err(invalid(
            key.clone(),
            format!("unknown top-level key {key:?} (expected subnets, loadbalancers)"),
        ));
    }
    Ok(doc)
}

/// The objects of a list field (absent or null: none).
fn list(v: Option<&Value>, at: &str) -> Result<Vec<Map<String, Value>>, ControlError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Object(o) => Ok(o.clone()),
                _ => Err(invalid(format!("{at}[{i}]"), "must be an object")),
            })
            .collect(),
        Some(_) => Err(invalid(at, "must be a list")),
    }
}

/// Each item's name; every item needs one, and no two may share it.
fn names(items: &[Map<String, Value>], at: &str, what: &str) -> Result<Vec<String>, ControlError> {
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let name = name_of(item).ok_or_else(|| {
            invalid(
                format!("{at}[{i}].name"),
                format!("every {what} in the document needs a name"),
            )
        })?;
        if out.contains(&name) {
            return Err(invalid(
                format!("{at}[{i}].name"),
                format!("two {what}s are named {name:?}"),
            ));
        }
        out.push(name);
    }
    Ok(out)
}

fn name_of(o: &Map<String, Value>) -> Option<String> {
    o.get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
}

/// A listener's references to pools by name: `default_pool` and `routes[i].pool`.
fn pool_references(l: &Map<String, Value>) -> Vec<(String, &Value)> {
    let mut refs: Vec<(String, &Value)> = l
        .get("default_pool")
        .map(|p| ("default_pool".to_owned(), p))
        .into_iter()
        .collect();
    if let Some(Value::Array(routes)) = l.get("routes") {
        for (i, r) in routes.iter().enumerate() {
            if let Some(p) = r.get("pool") {
                refs.push((format!("routes[{i}].pool"), p));
            }
        }
    }
    refs
}

/// Places an operation's error at `at` in the document.
fn at(at: &str, e: ControlError) -> ControlError {
    match e {
        ControlError::Invalid(v) => ControlError::Invalid(v.within(at)),
        ControlError::Conflict(m) => ControlError::Conflict(format!("{at}: {m}")),
        ControlError::NotFound { .. } => invalid(at, e.to_string()),
        e => e,
    }
}

/// Whether `existing` lacks anything `desired` sets.
fn differs(existing: &Value, desired: &Value) -> bool {
    match (existing, desired) {
        (Value::Object(e), Value::Object(d)) => d
            .iter()
            .any(|(k, dv)| e.get(k).is_none_or(|ev| differs(ev, dv))),
        (Value::Array(e), Value::Array(d)) => {
            e.len() != d.len() || e.iter().zip(d).any(|(ev, dv)| differs(ev, dv))
        }
        (e, d) => e != d,
    }
}

/// The top-level fields of `desired` that `existing` does not already have.
fn changed_fields(existing: &Value, desired: &Value) -> Vec<String> {
    match (existing, desired) {
        (Value::Object(e), Value::Object(d)) => d
            .iter()
            .filter(|(k, dv)| e.get(k.as_str()).is_none_or(|ev| differs(ev, dv)))
            .map(|(k, _)| k.clone())
            .collect(),
        _ => Vec::new(),
    }
}

fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// A resource as apply compares it: its id, name and spec.
#[derive(Clone)]
struct Existing {
    id: String,
    name: String,
    spec: Value,
}

/// The one resource named `name`; several are refused, naming them.
fn by_name(
    candidates: &[Existing],
    name: &str,
    what: &str,
    at: &str,
) -> Result<Option<Existing>, ControlError> {
    let named: Vec<&Existing> = candidates.iter().filter(|c| c.name == name).collect();
    if named.len() > 1 {
        let ids: Vec<&str> = named.iter().map(|c| c.id.as_str()).collect();
        return Err(ControlError::Conflict(format!(
            "{at}: {} {what}s are named {name:?} ({}): rename all but one; nothing was changed",
            ids.len(),
            ids.join(", ")
        )));
    }
    Ok(named.first().map(|c| (*c).clone()))
}

/// What an upsert creates or updates.
enum Target<'a> {
    Subnet,
    LoadBalancer,
    Pool(&'a LoadBalancerId),
    Listener(&'a LoadBalancerId),
    Monitor,
}

impl Target<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Target::Subnet => "subnet",
            Target::LoadBalancer => "loadbalancer",
            Target::Pool(_) => "pool",
            Target::Listener(_) => "listener",
            Target::Monitor => "healthmonitor",
        }
    }
}

struct Applier<'a> {
    cp: &'a ControlPlane,
    /// Carries the batch: every operation plans into it.
    ctx: &'a RequestContext,
    batch: &'a Batch,
    summary: ApplySummary,
    prune: bool,
    first_lb: Option<ResourceRef>,
}

impl Applier<'_> {
    async fn run(&mut self, doc: &Value) -> Result<(), ControlError> {
        let doc = top_level(doc)?;
        let mut subnets = HashMap::new();
        for (i, s) in list(doc.get("subnets"), "subnets")?.into_iter().enumerate() {
            let at = format!("subnets[{i}]");
            let name = name_of(&s).unwrap_or_default();
            let existing: Vec<Existing> = self.batch.read(&self.ctx.scope, |c| {
                c.subnets
                    .values()
                    .map(|v| Existing {
                        id: v.value.id.to_string(),
                        name: v.value.spec.name.clone(),
                        spec: to_json(&v.value.spec),
                    })
                    .collect()
            });
            let current = by_name(&existing, &name, "subnet", &at)?;
            let id = self
                .upsert(Target::Subnet, &name, &at, current, Value::Object(s))
                .await?;
            subnets.insert(name, id);
        }
        let lbs = list(doc.get("loadbalancers"), "loadbalancers")?;
        for (i, lb) in lbs.into_iter().enumerate() {
            self.loadbalancer(&format!("loadbalancers[{i}]"), lb, &subnets)
                .await?;
        }
        Ok(())
    }

    fn step(&mut self, action: &'static str, kind: &'static str, name: &str, fields: Vec<String>) {
        match action {
            "create" => self.summary.created += 1,
            "update" => self.summary.updated += 1,
            "delete" => self.summary.deleted += 1,
            _ => self.summary.unchanged += 1,
        }
        self.summary.plan.push(ApplyStep {
            action,
            kind,
            name: name.to_owned(),
            fields,
        });
    }

    /// Creates `desired`, or updates `existing` where it differs. Returns the id.
    async fn upsert(
        &mut self,
        target: Target<'_>,
        label: &str,
        at_: &str,
        existing: Option<Existing>,
        desired: Value,
    ) -> Result<String, ControlError> {
        let kind = target.kind();
        let Some(existing) = existing else {
            self.step("create", kind, label, Vec::new());
            let outcome = self
                .create(&target, desired)
                .await
                .map_err(|e| at(at_, e))?;
            return outcome
                .result
                .map(|r| r.id)
                .ok_or_else(|| ControlError::Internal(format!("{kind} created without an id")));
        };
        if differs(&existing.spec, &desired) {
            self.step(
                "update",
                kind,
                label,
                changed_fields(&existing.spec, &desired),
            );
            self.update(&target, &existing.id, &desired)
                .await
                .map_err(|e| at(at_, e))?;
        } else {
            self.step("unchanged", kind, label, Vec::new());
        }
        Ok(existing.id)
    }

    async fn create(&self, target: &Target<'_>, desired: Value) -> Result<Outcome, ControlError> {
        let (cp, ctx) = (self.cp, self.ctx);
        match target {
            Target::Subnet => cp.create_subnet(ctx, decode_spec(desired)?, false).await,
            Target::LoadBalancer => cp.create_loadbalancer(ctx, decode_spec(desired)?).await,
            Target::Pool(lb) => cp.create_pool(ctx, lb, decode_spec(desired)?).await,
            Target::Listener(lb) => cp.create_listener(ctx, lb, decode_spec(desired)?).await,
            Target::Monitor => cp.create_monitor(ctx, decode_spec(desired)?).await,
        }
    }

    async fn update(
        &self,
        target: &Target<'_>,
        id: &str,
        patch: &Value,
    ) -> Result<Outcome, ControlError> {
        let (cp, ctx, id) = (self.cp, self.ctx, id.to_owned());
        match target {
            Target::Subnet => cp.update_subnet(ctx, &SubnetId(id), patch).await,
            Target::LoadBalancer => {
                cp.update_loadbalancer(ctx, &LoadBalancerId(id), patch)
                    .await
            }
            Target::Pool(_) => cp.update_pool(ctx, &PoolId(id), patch).await,
            Target::Listener(_) => cp.update_listener(ctx, &ListenerId(id), patch).await,
            Target::Monitor => cp.update_monitor(ctx, &HealthMonitorId(id), patch).await,
        }
    }

    async fn loadbalancer(
        &mut self,
        at_: &str,
        mut lb: Map<String, Value>,
        subnets: &HashMap<String, String>,
    ) -> Result<(), ControlError> {
        let name = name_of(&lb).unwrap_or_default();
        let pools = list(lb.remove("pools").as_ref(), &format!("{at_}.pools"))?;
        let listeners = list(lb.remove("listeners").as_ref(), &format!("{at_}.listeners"))?;
        let existing: Vec<Existing> = self.batch.read(&self.ctx.scope, |c| {
            c.loadbalancers
                .values()
                .map(|v| Existing {
                    id: v.value.id.to_string(),
                    name: v.value.spec.name.clone(),
                    spec: to_json(&v.value.spec),
                })
                .collect()
        });
        let current = by_name(&existing, &name, "load balancer", at_)?;
        let lb_id = LoadBalancerId(
            self.upsert(Target::LoadBalancer, &name, at_, current, Value::Object(lb))
                .await?,
        );
        if self.first_lb.is_none() {
            self.first_lb = Some(ResourceRef {
                kind: ResourceKind::LoadBalancer,
                id: lb_id.to_string(),
            });
        }

        let existing_pools: Vec<Existing> = self.batch.read(&self.ctx.scope, |c| {
            c.pools_of(&lb_id)
                .map(|v| Existing {
                    id: v.value.id.to_string(),
                    name: v.value.spec.name.clone(),
                    spec: to_json(&v.value.spec),
                })
                .collect()
        });
        let mut pool_ids: HashMap<String, String> = HashMap::new();
        for (j, mut pool) in pools.into_iter().enumerate() {
            let at_pool = format!("{at_}.pools[{j}]");
            let pname = name_of(&pool).unwrap_or_default();
            let members = pool.remove("members");
            let monitor = pool.remove("health_monitor");
            let current = by_name(&existing_pools, &pname, "pool", &at_pool)?;
            let label = format!("{name}/{pname}");
            let pool_id = PoolId(
                self.upsert(
                    Target::Pool(&lb_id),
                    &label,
                    &at_pool,
                    current,
                    Value::Object(pool),
                )
                .await?,
            );
            self.members(&at_pool, &label, &pool_id, members, subnets)
                .await?;
            self.monitor(&at_pool, &label, &pool_id, monitor).await?;
            pool_ids.insert(pname, pool_id.to_string());
        }

        let existing_listeners: Vec<Existing> = self.batch.read(&self.ctx.scope, |c| {
            c.listeners_of(&lb_id)
                .map(|v| Existing {
                    id: v.value.id.to_string(),
                    name: v.value.spec.name.clone(),
                    spec: to_json(&v.value.spec),
                })
                .collect()
        });
        // Listeners the document dropped go before the others are written, so a listener
        // renamed in the document can take over its port; pools it dropped go last, once
        // no listener of the document sends to them.
        let label = |e: &Existing| {
            let n = if e.name.is_empty() { &e.id } else { &e.name };
            format!("{name}/{n}")
        };
        if self.prune {
            let named: Vec<String> = listeners.iter().filter_map(name_of).collect();
            for l in existing_listeners
                .iter()
                .filter(|l| !named.contains(&l.name))
            {
                self.step("delete", "listener", &label(l), Vec::new());
                self.cp
                    .delete_listener(self.ctx, &ListenerId(l.id.clone()))
                    .await
                    .map_err(|e| at(at_, e))?;
            }
        }
        for (j, mut l) in listeners.into_iter().enumerate() {
            let at_listener = format!("{at_}.listeners[{j}]");
            let lname = name_of(&l).unwrap_or_default();
            let resolve = |v: &Value, field: &str| -> Result<Value, ControlError> {
                let n = v.as_str().unwrap_or_default();
                pool_ids
                    .get(n)
                    .map(|id| Value::String(id.clone()))
                    .ok_or_else(|| {
                        invalid(
                            format!("{at_listener}.{field}"),
                            format!("pool {n:?} is not defined in this load balancer"),
                        )
                    })
            };
            if let Some(p) = l.remove("default_pool") {
                let id = resolve(&p, "default_pool")?;
                l.insert("default_pool_id".into(), id);
            }
            if let Some(Value::Array(routes)) = l.get_mut("routes") {
                for (k, r) in routes.iter_mut().enumerate() {
                    if let Some(obj) = r.as_object_mut()
                        && let Some(p) = obj.remove("pool")
                    {
                        obj.insert("pool_id".into(), resolve(&p, &format!("routes[{k}].pool"))?);
                    }
                }
            }
            let current = by_name(&existing_listeners, &lname, "listener", &at_listener)?;
            self.upsert(
                Target::Listener(&lb_id),
                &format!("{name}/{lname}"),
                &at_listener,
                current,
                Value::Object(l),
            )
            .await?;
        }

        if self.prune {
            for p in existing_pools
                .iter()
                .filter(|p| !pool_ids.values().any(|id| *id == p.id))
            {
                self.step("delete", "pool", &label(p), Vec::new());
                self.cp
                    .delete_pool(self.ctx, &PoolId(p.id.clone()))
                    .await
                    .map_err(|e| at(at_, e))?;
            }
        }
        Ok(())
    }

    /// Makes the pool's members exactly the document's (one batch replace).
    async fn members(
        &mut self,
        at_pool: &str,
        label: &str,
        pool_id: &PoolId,
        members: Option<Value>,
        subnets: &HashMap<String, String>,
    ) -> Result<(), ControlError> {
        let Some(members) = members else {
            return Ok(());
        };
        let at_members = format!("{at_pool}.members");
        let mut wanted = list(Some(&members), &at_members)?;
        for (k, m) in wanted.iter_mut().enumerate() {
            if let Some(s) = m.remove("subnet") {
                let n = s.as_str().unwrap_or_default();
                let id = subnets.get(n).ok_or_else(|| {
                    invalid(
                        format!("{at_members}[{k}].subnet"),
                        format!("subnet {n:?} is not defined in the document"),
                    )
                })?;
                m.insert("subnet_id".into(), Value::String(id.clone()));
            }
        }
        let existing: Vec<Value> = self.batch.read(&self.ctx.scope, |c| {
            c.members_of(pool_id)
                .map(|m| to_json(&m.value.spec))
                .collect()
        });
        let endpoint = |v: &Value| (v.get("address").cloned(), v.get("port").cloned());
        let same = existing.len() == wanted.len()
            && wanted.iter().all(|w| {
                let w = Value::Object(w.clone());
                existing
                    .iter()
                    .any(|e| endpoint(e) == endpoint(&w) && !differs(e, &w))
            });
        if same {
            self.step("unchanged", "members", label, Vec::new());
            return Ok(());
        }
        let action = if existing.is_empty() {
            "create"
        } else {
            "update"
        };
        self.step(
            action,
            "members",
            label,
            vec![format!("{} member(s)", wanted.len())],
        );
        let specs = wanted
            .into_iter()
            .enumerate()
            .map(|(k, m)| {
                decode_spec::<MemberSpec>(Value::Object(m))
                    .map_err(|e| at(&format!("{at_members}[{k}]"), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.cp
            .batch_members(self.ctx, pool_id, BatchMembers::Replace(specs))
            .await
            .map_err(|e| at(&at_members, e))?;
        Ok(())
    }

    async fn monitor(
        &mut self,
        at_pool: &str,
        label: &str,
        pool_id: &PoolId,
        monitor: Option<Value>,
    ) -> Result<(), ControlError> {
        let at_monitor = format!("{at_pool}.health_monitor");
        let existing = self.batch.read(&self.ctx.scope, |c| {
            c.monitor_of(pool_id).map(|m| Existing {
                id: m.value.id.to_string(),
                name: label.to_owned(),
                spec: to_json(&m.value.spec),
            })
        });
        match monitor {
            None | Some(Value::Null) => {
                if self.prune
                    && let Some(m) = existing
                {
                    self.step("delete", "healthmonitor", label, Vec::new());
                    self.cp
                        .delete_monitor(self.ctx, &HealthMonitorId(m.id))
                        .await
                        .map_err(|e| at(&at_monitor, e))?;
                }
                Ok(())
            }
            Some(Value::Object(mut m)) => {
                m.insert("pool_id".into(), Value::String(pool_id.to_string()));
                self.upsert(
                    Target::Monitor,
                    label,
                    &at_monitor,
                    existing,
                    Value::Object(m),
                )
                .await?;
                Ok(())
            }
            Some(_) => Err(invalid(at_monitor, "must be an object")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_are_checked_before_any_view() {
        let ok = json!({"subnets": [{"name": "s"}], "loadbalancers": [{"name": "web",
            "pools": [{"name": "app", "members": [{"address": "10.0.0.1", "port": 80, "subnet": "s"}]}],
            "listeners": [{"name": "http", "default_pool": "app", "routes": [{"pool": "app"}]}]}]});
        assert_eq!(
            check_document(&ok).unwrap(),
            "1 subnet(s), 1 load balancer(s), 1 pool(s) with 1 member(s), 1 listener(s)"
        );
        let field = |doc: Value| match check_document(&doc).unwrap_err() {
            ControlError::Invalid(v) => v.first().field.clone(),
            e => panic!("{e}"),
        };
        assert_eq!(field(json!({"pools": []})), "pools");
        assert_eq!(
            field(json!({"loadbalancers": [{"name": "a"}, {"name": "a"}]})),
            "loadbalancers[1].name"
        );
        assert_eq!(
            field(json!({"loadbalancers": [{}]})),
            "loadbalancers[0].name"
        );
        assert_eq!(
            field(
                json!({"loadbalancers": [{"name": "a", "listeners": [{"name": "l", "routes": [{"pool": "x"}]}]}]})
            ),
            "loadbalancers[0].listeners[0].routes[0].pool"
        );
        assert_eq!(
            field(
                json!({"loadbalancers": [{"name": "a", "pools": [{"name": "p", "members": [{"subnet": "nope"}]}]}]})
            ),
            "loadbalancers[0].pools[0].members[0].subnet"
        );
        assert_eq!(
            field(json!({"loadbalancers": {"name": "a"}})),
            "loadbalancers"
        );
    }

    #[test]
    fn only_fields_the_document_sets_are_compared() {
        let existing =
            json!({"name": "app", "protocol": "HTTP", "weight": 1, "tags": {"a": 1, "b": 2}});
        assert!(!differs(
            &existing,
            &json!({"name": "app", "tags": {"a": 1}})
        ));
        assert!(differs(&existing, &json!({"weight": 2})));
        assert!(differs(&existing, &json!({"color": "blue"})));
        assert_eq!(
            changed_fields(
                &existing,
                &json!({"name": "app", "weight": 2, "color": "x"})
            ),
            vec!["color".to_owned(), "weight".to_owned()]
        );
    }

    fn web(port: u16, members: &[u16]) -> Value {
        let members: Vec<Value> = members
            .iter()
            .map(|p| json!({"address": "127.0.0.1", "port": p, "subnet": "local"}))
            .collect();
        json!({
            "subnets": [{"name": "local", "cidr": "127.0.0.0/8", "vpc_id": "vpc-1"}],
            "loadbalancers": [{
                "name": "web",
                "vip_address": "127.0.0.1",
                "vpc_id": "vpc-1",
                "pools": [{"name": "app", "protocol": "HTTP", "algorithm": "ROUND_ROBIN",
                    "health_monitor": {"type": "TCP", "interval_ms": 5000, "timeout_ms": 3000},
                    "members": members}],
                "listeners": [{"name": "http", "protocol": "HTTP", "port": port,
                    "default_pool": "app"}]
            }]
        })
    }

    fn count(cp: &ControlPlane) -> (usize, usize, usize, usize, usize, usize) {
        let c = cp.view();
        (
            c.subnets.len(),
            c.loadbalancers.len(),
            c.pools.len(),
            c.members.values().map(|m| m.len()).sum(),
            c.monitors.len(),
            c.listeners.len(),
        )
    }

    #[tokio::test]
    async fn a_document_applies_whole_once_and_then_changes_nothing() {
        let (_dir, cp) = crate::testing::control().await;
        let ctx = RequestContext::default();
        let doc = web(18080, &[9001, 9002]);
        let planned = cp.apply(&ctx, &doc, false, true).await.unwrap();
        assert!(planned.outcome.is_none());
        assert_eq!(count(&cp), (0, 0, 0, 0, 0, 0), "a dry run writes nothing");
        assert_eq!(planned.summary.created, 6, "{:?}", planned.summary.plan);

        let applied = cp.apply(&ctx, &doc, false, false).await.unwrap();
        assert_eq!(applied.summary, planned.summary);
        let wr = applied.outcome.unwrap().work_request;
        assert_eq!(wr.operation, "Apply");
        assert_eq!(count(&cp), (1, 1, 1, 2, 1, 1));
        let again = cp.apply(&ctx, &doc, false, false).await.unwrap();
        assert!(again.outcome.is_none() && !again.summary.changes);
        assert_eq!(again.summary.unchanged, 6);

        // One member changes: one step, one revision.
        let before = cp.view().revision;
        let changed = cp
            .apply(&ctx, &web(18080, &[9001, 9003]), false, false)
            .await
            .unwrap();
        let steps: Vec<_> = changed
            .summary
            .plan
            .iter()
            .filter(|s| s.action != "unchanged")
            .collect();
        assert_eq!(steps.len(), 1, "{steps:?}");
        assert_eq!((steps[0].action, steps[0].kind), ("update", "members"));
        assert_eq!(changed.outcome.unwrap().revision, before + 1);
    }

    #[tokio::test]
    async fn a_document_that_fails_anywhere_changes_nothing() {
        let (_dir, cp) = crate::testing::control().await;
        let ctx = RequestContext::default();
        cp.apply(&ctx, &web(18080, &[9001]), false, false)
            .await
            .unwrap();
        let before = (count(&cp), cp.view().revision);
        // A second load balancer whose listener takes the first one's port: its subnet,
        // load balancer, pool, members and monitor plan fine, the listener does not.
        let mut doc = web(18080, &[9005]);
        doc["subnets"][0]["name"] = json!("other");
        doc["loadbalancers"][0]["name"] = json!("api");
        doc["loadbalancers"][0]["pools"][0]["members"][0]["subnet"] = json!("other");
        let err = cp.apply(&ctx, &doc, false, false).await.unwrap_err();
        assert!(
            matches!(&err, ControlError::Conflict(m) if m.starts_with("loadbalancers[0].listeners[0]: port 18080")),
            "{err}"
        );
        assert_eq!(
            (count(&cp), cp.view().revision),
            before,
            "nothing was written"
        );

        // An invalid field deep in the document is named by its path.
        let mut doc = web(18081, &[9001]);
        doc["loadbalancers"][0]["pools"][0]["members"][0]["weight"] = json!(-1);
        match cp.apply(&ctx, &doc, false, false).await.unwrap_err() {
            ControlError::Invalid(v) => {
                assert!(
                    v.first()
                        .field
                        .starts_with("loadbalancers[0].pools[0].members"),
                    "{v:?}"
                )
            }
            e => panic!("{e}"),
        }
        assert_eq!((count(&cp), cp.view().revision), before);
    }

    #[tokio::test]
    async fn prune_removes_what_the_document_dropped_in_the_same_change() {
        let (_dir, cp) = crate::testing::control().await;
        let ctx = RequestContext::default();
        let mut doc = web(18080, &[9001]);
        doc["loadbalancers"][0]["pools"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "old", "protocol": "HTTP", "algorithm": "ROUND_ROBIN"}));
        doc["loadbalancers"][0]["listeners"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "old", "protocol": "HTTP", "port": 18090, "default_pool": "old"}));
        cp.apply(&ctx, &doc, false, false).await.unwrap();
        assert_eq!(count(&cp), (1, 1, 2, 1, 1, 2));
        let slim = web(18080, &[9001]);
        // Without prune nothing goes.
        cp.apply(&ctx, &slim, false, false).await.unwrap();
        assert_eq!(count(&cp), (1, 1, 2, 1, 1, 2));
        let pruned = cp.apply(&ctx, &slim, true, false).await.unwrap();
        let deleted: Vec<_> = pruned
            .summary
            .plan
            .iter()
            .filter(|s| s.action == "delete")
            .map(|s| format!("{} {}", s.kind, s.name))
            .collect();
        assert_eq!(deleted, ["listener web/old", "pool web/old"]);
        assert_eq!(count(&cp), (1, 1, 1, 1, 1, 1));
    }
}
