//! OCI hostnames (`/loadBalancers/{id}/hostnames`) and routing policies
//! (`/loadBalancers/{id}/routingPolicies`) on the model's load balancer.
//!
//! A hostname is one of the load balancer's `hostnames` (name and virtual host name); a
//! listener's `hostnameNames` are the model listener's `hostnames`, so the listener serves
//! only requests for those hosts (others get 404). Deleting a hostname a listener names is
//! refused (409), as is removing it from a load balancer.
//!
//! A routing policy is a route set of the load balancer whose routes were compiled from
//! its rules (`condition.rs`), in rule order, each rule's alternatives in order, first match
//! wins; the rules as written are kept in the set's `source` and read back from it. Path
//! route sets and routing policies share the model's route set names: one name cannot be
//! both. A listener's `routingPolicyName` is its `route_set`.

use axum::extract::State;
use bytes::Bytes;
use fulcrum_control::{Config, ControlError};
use fulcrum_model::{L7Route, LoadBalancer, LoadBalancerId, LoadBalancerSpec, RouteSet};
use serde::{Deserialize, Serialize};

use super::condition::{self, Op};
use super::error::OciError;
use super::wire::{check_name, lb_ocid, parse_body, pool_name};
use super::{
    Ctx, OciResult, OciState, Params, ReadIfMatch, accepted, find_lb, json_for, require_json,
};

// ---- hostnames -----------------------------------------------------------------------

/// HostnameDetails, CreateHostnameDetails and UpdateHostnameDetails.
#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HostnameIn {
    pub name: Option<String>,
    pub hostname: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HostnameView {
    name: String,
    hostname: String,
}

pub(crate) fn hostname_view(h: &fulcrum_model::Hostname) -> HostnameView {
    HostnameView {
        name: h.name.clone(),
        hostname: h.hostname.clone(),
    }
}

/// A virtual host name as OCI takes it: exact, or `*` in place of its first or last label.
pub(crate) fn check_hostname(hostname: &str, field: &str) -> Result<String, OciError> {
    let lower = hostname.to_ascii_lowercase();
    if !fulcrum_model::is_virtual_host_name(&lower) {
        return Err(OciError::invalid(format!(
            "{field} {hostname:?} must be a host name (app.example.com), or one with '*' in place of its first or last label (*.example.com, app.example.*)"
        )));
    }
    Ok(lower)
}

/// The model's hostname for a HostnameDetails under `name`.
pub(crate) fn hostname_of(
    name: &str,
    h: &HostnameIn,
    prefix: &str,
) -> Result<fulcrum_model::Hostname, OciError> {
    check_name(name, &format!("{prefix}name"))?;
    if let Some(inner) = &h.name
        && inner != name
    {
        return Err(OciError::invalid(format!(
            "{prefix}name {inner:?} differs from its key {name:?}"
        )));
    }
    let field = format!("{prefix}hostname");
    let hostname = h
        .hostname
        .as_deref()
        .ok_or_else(|| OciError::missing(&field))?;
    Ok(fulcrum_model::Hostname {
        name: name.to_owned(),
        hostname: check_hostname(hostname, &field)?,
    })
}

fn find_hostname<'a>(
    cfg: &'a Config,
    lb: &LoadBalancerId,
    name: &str,
) -> Result<&'a fulcrum_model::Hostname, OciError> {
    find_lb(cfg, lb)?
        .value
        .spec
        .hostname(name)
        .ok_or_else(|| OciError::not_found(format!("hostname {name:?} not found")))
}

fn no_hostname(lb: &LoadBalancer, name: &str) -> ControlError {
    ControlError::not_found(
        fulcrum_model::ResourceKind::LoadBalancer,
        format!("{} hostname {name:?}", lb_ocid(&lb.id)),
    )
}

pub(crate) async fn list_hostnames(
    State(s): State<OciState>,
    p: Params,
    cond: ReadIfMatch,
) -> OciResult {
    let id = p.lb();
    let cfg = s.app.control.view();
    let all: Vec<_> = find_lb(&cfg, &id)?
        .value
        .spec
        .hostnames
        .iter()
        .map(hostname_view)
        .collect();
    json_for(&cfg, &id, &cond, &all)
}

pub(crate) async fn get_hostname(
    State(s): State<OciState>,
    p: Params,
    cond: ReadIfMatch,
) -> OciResult {
    let id = p.lb();
    let cfg = s.app.control.view();
    let h = find_hostname(&cfg, &id, p.get("hostname"))?;
    json_for(&cfg, &id, &cond, &hostname_view(h))
}

/// CreateHostname: a hostname of the load balancer, its name unique in it (409).
pub(crate) async fn create_hostname(
    State(s): State<OciState>,
    p: Params,
    Ctx(ctx): Ctx,
    headers: http::HeaderMap,
    body: Bytes,
) -> OciResult {
    require_json(&headers)?;
    let req: HostnameIn = parse_body(&body)?;
    let name = req.name.clone().ok_or_else(|| OciError::missing("name"))?;
    let hostname = hostname_of(&name, &req, "")?;
    let outcome = s
        .app
        .control
        .edit_loadbalancer(&ctx, "CreateHostname", &p.lb(), &req, |_, lb| {
            if lb.spec.hostname(&name).is_some() {
                return Err(ControlError::Conflict(format!(
                    "hostname {name:?} already exists"
                )));
            }
            let mut spec = lb.spec.clone();
            spec.hostnames.push(hostname.clone());
            Ok(spec)
        })
        .await?;
    Ok(accepted(&s.app.control, &outcome))
}

/// UpdateHostname: a new host name under the same name; the listeners that name it serve
/// the new one.
pub(crate) async fn update_hostname(
    State(s): State<OciState>,
    p: Params,
    Ctx(ctx): Ctx,
    headers: http::HeaderMap,
    body: Bytes,
) -> OciResult {
    require_json(&headers)?;
    let req: HostnameIn = parse_body(&body)?;
    let name = p.get("hostname").to_owned();
    find_hostname(&s.app.control.view(), &p.lb(), &name)?;
    let hostname = hostname_of(&name, &req, "")?;
    let input = serde_json::json!({"name": name, "hostname": req.hostname});
    let outcome = s
        .app
        .control
        .edit_loadbalancer(&ctx, "UpdateHostname", &p.lb(), &input, |_, lb| {
            let mut spec = lb.spec.clone();
            let h = spec
                .hostnames
                .iter_mut()
                .find(|h| h.name == name)
                .ok_or_else(|| no_hostname(lb, &name))?;
            *h = hostname.clone();
            Ok(spec)
        })
        .await?;
    Ok(accepted(&s.app.control, &outcome))
}

/// DeleteHostname: refused (409) while a listener names it.
pub(crate) async fn delete_hostname(
    State(s): State<OciState>,
    p: Params,
    Ctx(ctx): Ctx,
) -> OciResult {
    let name = p.get("hostname").to_owned();
    find_hostname(&s.app.control.view(), &p.lb(), &name)?;
    let outcome = s
        .app
        .control
        .edit_loadbalancer(&ctx, "DeleteHostname", &p.lb(), &name, |_, lb| {
            lb.spec
                .hostname(&name)
                .ok_or_else(|| no_hostname(lb, &name))?;
            let mut spec = lb.spec.clone();
            spec.hostnames.retain(|h| h.name != name);
            Ok(spec)
        })
        .await?;
    Ok(accepted(&s.app.control, &outcome))
}

// ---- routing policies ----------------------------------------------------------------

/// The one condition language version OCI defines.
const CONDITION_LANGUAGE: &str = "V1";

/// The one action of a routing rule.
const FORWARD: &str = "FORWARD_TO_BACKENDSET";

/// Most comparisons in one policy (OCI's limit).
const MAX_POLICY_CONDITIONS: usize = 200;

/// CreateRoutingPolicyDetails and UpdateRoutingPolicyDetails.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RoutingPolicyIn {
    pub name: Option<String>,
    pub condition_language_version: Option<String>,
    pub rules: Option<Vec<RoutingRuleIn>>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RoutingRuleIn {
    pub name: Option<String>,
    pub condition: Option<String>,
    pub actions: Option<Vec<ActionIn>>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ActionIn {
    pub name: Option<String>,
    pub backend_set_name: Option<String>,
}

/// A rule, checked and compiled, before its backend set is resolved; also how the rules
/// are kept (as JSON in the route set's `source`) and read back.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RoutingRule {
    pub name: String,
    pub condition: String,
    pub backend_set_name: String,
    #[serde(skip)]
    pub matches: Vec<condition::RouteMatch>,
}

/// Policy and rule names: a letter or `_`, then letters, digits and `_` (OCI's rule).
fn check_policy_name(name: &str, field: &str) -> Result<(), OciError> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 32;
    match ok {
        true => Ok(()),
        false => Err(OciError::invalid(format!(
            "{field} must be 1 to 32 letters, digits and underscores, starting with a letter or underscore (got {name:?})"
        ))),
    }
}

/// Checks a policy's language version and rules and compiles each rule's condition.
pub(crate) fn routing_rules(
    version: Option<&str>,
    rules: Option<&[RoutingRuleIn]>,
) -> Result<Vec<RoutingRule>, OciError> {
    let version = version.ok_or_else(|| OciError::missing("conditionLanguageVersion"))?;
    if version != CONDITION_LANGUAGE {
        return Err(OciError::invalid(format!(
            "conditionLanguageVersion must be {CONDITION_LANGUAGE} (got {version:?})"
        )));
    }
    let rules = rules.ok_or_else(|| OciError::missing("rules"))?;
    let mut out: Vec<RoutingRule> = Vec::with_capacity(rules.len());
    let mut n_conditions = 0;
    for (i, r) in rules.iter().enumerate() {
        let f = |n: &str| format!("rules[{i}].{n}");
        let name = r
            .name
            .clone()
            .ok_or_else(|| OciError::missing(&f("name")))?;
        check_policy_name(&name, &f("name"))?;
        if out.iter().any(|o| o.name == name) {
            return Err(OciError::invalid(format!(
                "{} {name:?} is taken by another rule",
                f("name")
            )));
        }
        let text = r
            .condition
            .clone()
            .ok_or_else(|| OciError::missing(&f("condition")))?;
        let parsed = condition::parse(&text)
            .map_err(|e| OciError::invalid(format!("{}: {e}", f("condition"))))?;
        n_conditions += parsed.n_comparisons();
        if n_conditions > MAX_POLICY_CONDITIONS {
            return Err(OciError::invalid(format!(
                "a routing policy holds at most {MAX_POLICY_CONDITIONS} conditions"
            )));
        }
        let matches = condition::route_matches(&parsed)
            .map_err(|e| OciError::invalid(format!("{}: {e}", f("condition"))))?;
        let backend_set_name = match r.actions.as_deref() {
            Some(
                [
                    ActionIn {
                        name: Some(action),
                        backend_set_name: Some(set),
                    },
                ],
            ) if action == FORWARD => set.clone(),
            _ => {
                return Err(OciError::invalid(format!(
                    "{} must hold one action, {FORWARD} with a backendSetName",
                    f("actions")
                )));
            }
        };
        out.push(RoutingRule {
            name,
            condition: text,
            backend_set_name,
            matches,
        });
    }
    Ok(out)
}

/// The model's routes for a policy's rules, in order: each rule's alternatives, each to
/// the rule's backend set. A route's `id` is `rule.alternative`, its `name` the rule's.
pub(crate) fn routing_rules_to_model(
    rules: &[RoutingRule],
    pool: impl Fn(&str) -> Option<fulcrum_model::PoolId>,
) -> Result<Vec<L7Route>, ControlError> {
    let mut out = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let pool_id = pool(&r.backend_set_name).ok_or_else(|| {
            ControlError::invalid(
                format!("rules[{i}].actions[0].backendSetName"),
                format!(
                    "rules[{i}].actions[0].backendSetName: the load balancer has no backend set {:?}",
                    r.backend_set_name
                ),
            )
        })?;
        for (j, m) in r.matches.iter().enumerate() {
            let mut route = L7Route {
                id: format!("{i}.{j}"),
                name: r.name.clone(),
                host: m.host.clone(),
                ..L7Route::to_pool(pool_id.clone())
            };
            if let Some(p) = &m.path {
                route.path_ignore_case = p.ignore_case;
                let value = Some(p.value.clone());
                match p.op {
                    Op::Eq => route.path_exact = value,
                    Op::StartsWith => route.path_prefix = value,
                    Op::EndsWith => route.path_suffix = value,
                }
            }
            out.push(route);
        }
    }
    Ok(out)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RoutingPolicyView {
    name: String,
    condition_language_version: &'static str,
    rules: Vec<serde_json::Value>,
}

/// Whether a route set is a routing policy (else a path route set).
pub(crate) fn is_policy(set: &RouteSet) -> bool {
    set.source.is_some()
}

pub(crate) fn policy_view(set: &RouteSet) -> RoutingPolicyView {
    let rules: Vec<RoutingRule> = set
        .source
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    RoutingPolicyView {
        name: set.name.clone(),
        condition_language_version: CONDITION_LANGUAGE,
        rules: rules
            .into_iter()
            .map(|r| {
                serde_json::json!({
                    "name": r.name,
                    "condition": r.condition,
                    "actions": [{"name": FORWARD, "backendSetName": r.backend_set_name}],
                })
            })
            .collect(),
    }
}

fn find_policy<'a>(
    cfg: &'a Config,
    lb: &LoadBalancerId,
    name: &str,
) -> Result<&'a RouteSet, OciError> {
    find_lb(cfg, lb)?
        .value
        .spec
        .route_set(name)
        .filter(|s| is_policy(s))
        .ok_or_else(|| OciError::not_found(format!("routing policy {name:?} not found")))
}

/// The load balancer's route sets with policy `name` set to `rules` (added if absent),
/// the backend sets resolved on the view the change is planned on.
fn with_policy(
    cfg: &Config,
    lb: &LoadBalancer,
    name: &str,
    rules: &[RoutingRule],
    create: bool,
) -> Result<LoadBalancerSpec, ControlError> {
    let routes = routing_rules_to_model(rules, |set| {
        cfg.pools_of(&lb.id)
            .find(|p| pool_name(&p.value) == set)
            .map(|p| p.value.id.clone())
    })?;
    let source = serde_json::to_string(rules).map_err(|e| ControlError::Internal(e.to_string()))?;
    let mut spec = lb.spec.clone();
    match spec.route_sets.iter_mut().find(|s| s.name == name) {
        Some(set) if create => {
            let what = match is_policy(set) {
                true => "routing policy",
                false => "path route set (fulcrum keeps both under one name space)",
            };
            return Err(ControlError::Conflict(format!(
                "a {what} named {name:?} already exists"
            )));
        }
        Some(set) if is_policy(set) => {
            set.routes = routes;
            set.source = Some(source);
        }
        None if create => spec.route_sets.push(RouteSet {
            name: name.to_owned(),
            routes,
            source: Some(source),
        }),
        _ => {
            return Err(ControlError::not_found(
                fulcrum_model::ResourceKind::LoadBalancer,
                format!("{} routing policy {name:?}", lb_ocid(&lb.id)),
            ));
        }
    }
    Ok(spec)
}

pub(crate) async fn list_policies(
    State(s): State<OciState>,
    p: Params,
    cond: ReadIfMatch,
) -> OciResult {
    let id = p.lb();
    let cfg = s.app.control.view();
    let all: Vec<_> = find_lb(&cfg, &id)?
        .value
        .spec
        .route_sets
        .iter()
        .filter(|s| is_policy(s))
        .map(policy_view)
        .collect();
    json_for(&cfg, &id, &cond, &all)
}

pub(crate) async fn get_policy(
    State(s): State<OciState>,
    p: Params,
    cond: ReadIfMatch,
) -> OciResult {
    let id = p.lb();
    let cfg = s.app.control.view();
    let set = find_policy(&cfg, &id, p.get("policy"))?;
    json_for(&cfg, &id, &cond, &policy_view(set))
}

/// CreateRoutingPolicy: the rules compiled to routes in one change.
pub(crate) async fn create_policy(
    State(s): State<OciState>,
    p: Params,
    Ctx(ctx): Ctx,
    headers: http::HeaderMap,
    body: Bytes,
) -> OciResult {
    require_json(&headers)?;
    let req: RoutingPolicyIn = parse_body(&body)?;
    let name = req.name.clone().ok_or_else(|| OciError::missing("name"))?;
    check_policy_name(&name, "name")?;
    let rules = routing_rules(
        req.condition_language_version.as_deref(),
        req.rules.as_deref(),
    )?;
    let input = serde_json::json!({"name": name, "rules": req.rules});
    let outcome = s
        .app
        .control
        .edit_loadbalancer(&ctx, "CreateRoutingPolicy", &p.lb(), &input, |cfg, lb| {
            with_policy(cfg, lb, &name, &rules, true)
        })
        .await?;
    Ok(accepted(&s.app.control, &outcome))
}

/// UpdateRoutingPolicy: the rules replaced by the ones given.
pub(crate) async fn update_policy(
    State(s): State<OciState>,
    p: Params,
    Ctx(ctx): Ctx,
    headers: http::HeaderMap,
    body: Bytes,
) -> OciResult {
    require_json(&headers)?;
    let req: RoutingPolicyIn = parse_body(&body)?;
    let name = p.get("policy").to_owned();
    find_policy(&s.app.control.view(), &p.lb(), &name)?;
    let rules = routing_rules(
        // Optional on update: the version stays V1.
        Some(
            req.condition_language_version
                .as_deref()
                .unwrap_or(CONDITION_LANGUAGE),
        ),
        req.rules.as_deref(),
    )?;
    let input = serde_json::json!({"name": name, "rules": req.rules});
    let outcome = s
        .app
        .control
        .edit_loadbalancer(&ctx, "UpdateRoutingPolicy", &p.lb(), &input, |cfg, lb| {
            with_policy(cfg, lb, &name, &rules, false)
        })
        .await?;
    Ok(accepted(&s.app.control, &outcome))
}

/// DeleteRoutingPolicy: refused (409) while a listener uses it.
pub(crate) async fn delete_policy(
    State(s): State<OciState>,
    p: Params,
    Ctx(ctx): Ctx,
) -> OciResult {
    let name = p.get("policy").to_owned();
    find_policy(&s.app.control.view(), &p.lb(), &name)?;
    let outcome = s
        .app
        .control
        .edit_loadbalancer(&ctx, "DeleteRoutingPolicy", &p.lb(), &name, |_, lb| {
            if !lb.spec.route_set(&name).is_some_and(is_policy) {
                return Err(ControlError::not_found(
                    fulcrum_model::ResourceKind::LoadBalancer,
                    format!("{} routing policy {name:?}", lb_ocid(&lb.id)),
                ));
            }
            let mut spec = lb.spec.clone();
            spec.route_sets.retain(|s| s.name != name);
            Ok(spec)
        })
        .await?;
    Ok(accepted(&s.app.control, &outcome))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn rule(name: &str, condition: &str, set: &str) -> RoutingRuleIn {
        RoutingRuleIn {
            name: Some(name.into()),
            condition: Some(condition.into()),
            actions: Some(vec![ActionIn {
                name: Some(FORWARD.into()),
                backend_set_name: Some(set.into()),
            }]),
        }
    }

    #[test]
    fn rules_become_routes_in_rule_order() {
        let rules = routing_rules(
            Some("V1"),
            Some(&[
                rule("api", "http.request.url.path sw (i '/api')", "api"),
                rule(
                    "shop",
                    "any(http.request.headers[(i 'Host')] eq 'shop.test', http.request.url.path ew '.png')",
                    "static",
                ),
            ]),
        )
        .unwrap();
        let pool = |n: &str| Some(fulcrum_model::PoolId(format!("pool-{n}")));
        let routes = routing_rules_to_model(&rules, pool).unwrap();
        let pick = |host: Option<&str>, path: &str| {
            routes
                .iter()
                .find(|r| r.matches(host, path.as_bytes()))
                .map(|r| r.pool_id.0.as_str())
        };
        assert_eq!(routes.len(), 3);
        assert_eq!(
            routes.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["0.0", "1.0", "1.1"]
        );
        assert_eq!(pick(None, "/API/x"), Some("pool-api"));
        assert_eq!(pick(Some("shop.test"), "/api/x"), Some("pool-api"));
        assert_eq!(pick(Some("Shop.Test"), "/cart"), Some("pool-static"));
        assert_eq!(pick(Some("other.test"), "/a.png"), Some("pool-static"));
        assert_eq!(pick(Some("other.test"), "/a.PNG"), None);
        // Unknown backend sets are refused by rule.
        let e = routing_rules_to_model(&rules, |n| pool(n).filter(|_| n == "api")).unwrap_err();
        assert!(e.to_string().contains("rules[1]"), "{e}");
    }

    #[test]
    fn bad_policies_are_refused_by_field() {
        let ok = rule("r", "http.request.url.path sw '/'", "a");
        for (version, rules, what) in [
            (
                None,
                vec![rule("r", "http.request.url.path sw '/'", "a")],
                "conditionLanguageVersion",
            ),
            (Some("V2"), vec![ok], "V1"),
            (
                Some("V1"),
                vec![rule("1r", "http.request.url.path sw '/'", "a")],
                "rules[0].name",
            ),
            (
                Some("V1"),
                vec![
                    rule("r", "http.request.url.path sw '/'", "a"),
                    rule("r", "http.request.url.path sw '/'", "a"),
                ],
                "taken",
            ),
            (
                Some("V1"),
                vec![rule("r", "http.request.url.path sw", "a")],
                "rules[0].condition",
            ),
            (
                Some("V1"),
                vec![rule("r", "http.request.cookies['a'] eq 'b'", "a")],
                "cookies",
            ),
            (
                Some("V1"),
                vec![RoutingRuleIn {
                    actions: Some(vec![]),
                    ..rule("r", "http.request.url.path sw '/'", "a")
                }],
                "rules[0].actions",
            ),
        ] {
            let e = routing_rules(version, Some(&rules)).unwrap_err();
            assert_eq!(e.status, http::StatusCode::BAD_REQUEST, "{what}");
            assert!(e.message.contains(what), "{what}: {}", e.message);
        }
    }

    #[test]
    fn hostnames_take_ocis_wildcards_only() {
        for ok in [
            "app.example.com",
            "*.example.com",
            "app.*",
            "APP.Example.com",
        ] {
            check_hostname(ok, "hostname").unwrap();
        }
        assert_eq!(
            check_hostname("APP.Example.com", "h").unwrap(),
            "app.example.com"
        );
        for bad in ["", "*", "a.*.com", "a b", "app.example.com:80"] {
            assert!(check_hostname(bad, "hostname").is_err(), "{bad}");
        }
    }
}
