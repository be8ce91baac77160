//! The parts of a load balancer's spec that OCI addresses as resources of their own, by
//! name under `/loadBalancers/{id}/…`: path route sets, hostnames and routing policies.
//! One set of handlers lists, reads and deletes each kind ([`LbPart`]); a change to one
//! is a change of its load balancer (`ControlPlane::edit_loadbalancer`), planned on each
//! fresh view.

use axum::extract::State;
use fulcrum_control::{Config, ControlError, RequestContext};
use fulcrum_model::{L7Route, LoadBalancer, LoadBalancerId, LoadBalancerSpec, RouteSet};
use serde::Serialize;

use super::error::OciError;
use super::wire::{lb_ocid, pool_name};
use super::{Ctx, OciResult, OciState, Params, ReadIfMatch, accepted, find_lb, json_for};

/// One kind of named part of a load balancer's spec.
pub(crate) trait LbPart {
    /// What one is called in messages (`path route set`).
    const KIND: &'static str;
    /// The path parameter that names one.
    const PARAM: &'static str;
    /// The operation that deletes one (`DeletePathRouteSet`).
    const DELETE: &'static str;
    type View: Serialize;
    /// Every part of this kind, by name, as read back, in the spec's order.
    fn views(cfg: &Config, spec: &LoadBalancerSpec) -> Vec<(String, Self::View)>;
    /// Takes the named part out of `spec`; false if it holds none.
    fn remove(spec: &mut LoadBalancerSpec, name: &str) -> bool;
}

/// The named part of load balancer `lb`, as read back (404 if absent).
pub(crate) fn find<P: LbPart>(
    cfg: &Config,
    lb: &LoadBalancerId,
    name: &str,
) -> Result<P::View, OciError> {
    P::views(cfg, &find_lb(cfg, lb)?.value.spec)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .ok_or_else(|| OciError::not_found(format!("{} {name:?} not found", P::KIND)))
}

/// The error of a change planned on a view where the part is gone.
pub(crate) fn missing<P: LbPart>(lb: &LoadBalancer, name: &str) -> ControlError {
    ControlError::not_found(
        fulcrum_model::ResourceKind::LoadBalancer,
        format!("{} {} {name:?}", lb_ocid(&lb.id), P::KIND),
    )
}

pub(crate) async fn list<P: LbPart>(
    State(s): State<OciState>,
    p: Params,
    cond: ReadIfMatch,
) -> OciResult {
    let id = p.lb();
    let cfg = s.app.control.view();
    let all: Vec<P::View> = P::views(&cfg, &find_lb(&cfg, &id)?.value.spec)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    json_for(&cfg, &id, &cond, &all)
}

pub(crate) async fn get<P: LbPart>(
    State(s): State<OciState>,
    p: Params,
    cond: ReadIfMatch,
) -> OciResult {
    let id = p.lb();
    let cfg = s.app.control.view();
    let view = find::<P>(&cfg, &id, p.get(P::PARAM))?;
    json_for(&cfg, &id, &cond, &view)
}

/// Deletes the named part. What still uses it (a listener naming it) is refused by the
/// control plane with 409.
pub(crate) async fn delete<P: LbPart>(
    State(s): State<OciState>,
    p: Params,
    Ctx(ctx): Ctx,
) -> OciResult {
    let name = p.get(P::PARAM).to_owned();
    find::<P>(&s.app.control.view(), &p.lb(), &name)?;
    let outcome = s
        .app
        .control
        .edit_loadbalancer(&ctx, P::DELETE, &p.lb(), &name, |_, lb| {
            let mut spec = lb.spec.clone();
            match P::remove(&mut spec, &name) {
                true => Ok(spec),
                false => Err(missing::<P>(lb, &name)),
            }
        })
        .await?;
    Ok(accepted(&s.app.control, &outcome))
}

/// Creates (`create`) or replaces the named part, the load balancer's spec made by `edit`
/// on each fresh view; one to replace must exist (404). `input` is the request as
/// received, for retry-token fingerprints.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn change<P: LbPart, I: Serialize>(
    s: &OciState,
    ctx: &RequestContext,
    lb: &LoadBalancerId,
    operation: &'static str,
    name: &str,
    create: bool,
    input: &I,
    edit: impl Fn(&Config, &LoadBalancer) -> Result<LoadBalancerSpec, ControlError>,
) -> OciResult {
    if !create {
        find::<P>(&s.app.control.view(), lb, name)?;
    }
    let outcome = s
        .app
        .control
        .edit_loadbalancer(ctx, operation, lb, input, edit)
        .await?;
    Ok(accepted(&s.app.control, &outcome))
}

/// `lb`'s spec with route set `name` holding `routes`: a routing policy's with the rules
/// it was compiled from (`source`), a path route set's without. Added when `create` (409
/// if either kind has the name: they share the model's route set names), else replaced
/// (404 unless it is of this kind).
pub(crate) fn put_route_set<P: LbPart>(
    lb: &LoadBalancer,
    name: &str,
    routes: Vec<L7Route>,
    source: Option<String>,
    create: bool,
) -> Result<LoadBalancerSpec, ControlError> {
    let mut spec = lb.spec.clone();
    let policy = source.is_some();
    match spec.route_sets.iter_mut().find(|s| s.name == name) {
        Some(set) if create => {
            let what = match (set.source.is_some(), policy) {
                (true, true) => "routing policy",
                (false, false) => "path route set",
                (true, false) => "routing policy (fulcrum keeps both under one name space)",
                (false, true) => "path route set (fulcrum keeps both under one name space)",
            };
            Err(ControlError::Conflict(format!(
                "a {what} named {name:?} already exists"
            )))
        }
        Some(set) if set.source.is_some() == policy => {
            set.routes = routes;
            set.source = source;
            Ok(spec)
        }
        None if create => {
            spec.route_sets.push(RouteSet {
                name: name.to_owned(),
                routes,
                source,
            });
            Ok(spec)
        }
        _ => Err(missing::<P>(lb, name)),
    }
}

/// The route sets of `spec` that are routing policies (`policy`) or path route sets (not),
/// by name, as `view` reads them back.
pub(crate) fn route_set_views<V>(
    spec: &LoadBalancerSpec,
    policy: bool,
    view: impl Fn(&RouteSet) -> V,
) -> Vec<(String, V)> {
    spec.route_sets
        .iter()
        .filter(|set| set.source.is_some() == policy)
        .map(|set| (set.name.clone(), view(set)))
        .collect()
}

/// Takes route set `name` out of `spec` if it is a routing policy (`policy`) or a path
/// route set (not).
pub(crate) fn remove_route_set(spec: &mut LoadBalancerSpec, name: &str, policy: bool) -> bool {
    let before = spec.route_sets.len();
    spec.route_sets
        .retain(|s| s.name != name || s.source.is_some() != policy);
    spec.route_sets.len() != before
}

/// Resolves a backend set name of load balancer `lb` to its pool, on the view a change is
/// planned on.
pub(crate) fn backend_set<'a>(
    cfg: &'a Config,
    lb: &'a LoadBalancerId,
) -> impl Fn(&str) -> Option<fulcrum_model::PoolId> + 'a {
    move |name| {
        cfg.pools_of(lb)
            .find(|p| pool_name(&p.value) == name)
            .map(|p| p.value.id.clone())
    }
}
