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
use fulcrum_control::{Config, ControlError, RequestContext};
use fulcrum_model::{L7Route, LoadBalancerSpec, RouteSet};
use serde::{Deserialize, Serialize};

use super::condition::{self, Op};
use super::error::OciError;
use super::parts::{self, LbPart};
use super::wire::{check_name, parse_body};
use super::{Ctx, OciResult, OciState, Params, require_json};

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

/// A load balancer's hostnames.
pub(crate) struct Hostnames;

impl LbPart for Hostnames {
    const KIND: &'static str = "hostname";
    const PARAM: &'static str = "hostname";
    const DELETE: &'static str = "DeleteHostname";
    type View = HostnameView;

    fn views(_: &Config, spec: &LoadBalancerSpec) -> Vec<(String, HostnameView)> {
        spec.hostnames
            .iter()
            .map(|h| (h.name.clone(), hostname_view(h)))
            .collect()
    }

    fn remove(spec: &mut LoadBalancerSpec, name: &str) -> bool {
        let before = spec.hostnames.len();
        spec.hostnames.retain(|h| h.name != name);
        spec.hostnames.len() != before
    }
}

/// CreateHostname (`create`: its name unique in the load balancer, 409) and
/// UpdateHostname (a new host under the same name; the listeners that name it serve it).
async fn put_hostname(
    s: &OciState,
    p: &Params,
    ctx: &RequestContext,
    req: &HostnameIn,
    name: &str,
    create: bool,
) -> OciResult {
    let hostname = hostname_of(name, req, "")?;
    let input = serde_json::json!({"name": name, "hostname": req.hostname});
    let operation = match create {
        true => "CreateHostname",
        false => "UpdateHostname",
    };
    parts::change::<Hostnames, _>(s, ctx, &p.lb(), operation, name, create, &input, |_, lb| {
        let mut spec = lb.spec.clone();
        match (spec.hostnames.iter_mut().find(|h| h.name == name), create) {
            (Some(_), true) => {
                return Err(ControlError::Conflict(format!(
                    "hostname {name:?} already exists"
                )));
            }
            (Some(h), false) => *h = hostname.clone(),
            (None, true) => spec.hostnames.push(hostname.clone()),
            (None, false) => return Err(parts::missing::<Hostnames>(lb, name)),
        }
        Ok(spec)
    })
    .await
}

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
    put_hostname(&s, &p, &ctx, &req, &name, true).await
}

pub(crate) async fn update_hostname(
    State(s): State<OciState>,
    p: Params,
    Ctx(ctx): Ctx,
    headers: http::HeaderMap,
    body: Bytes,
) -> OciResult {
    require_json(&headers)?;
    let req: HostnameIn = parse_body(&body)?;
    put_hostname(&s, &p, &ctx, &req, p.get("hostname"), false).await
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

/// A load balancer's routing policies: its route sets compiled from rules.
pub(crate) struct RoutingPolicies;

impl LbPart for RoutingPolicies {
    const KIND: &'static str = "routing policy";
    const PARAM: &'static str = "policy";
    const DELETE: &'static str = "DeleteRoutingPolicy";
    type View = RoutingPolicyView;

    fn views(_: &Config, spec: &LoadBalancerSpec) -> Vec<(String, RoutingPolicyView)> {
        parts::route_set_views(spec, true, policy_view)
    }

    fn remove(spec: &mut LoadBalancerSpec, name: &str) -> bool {
        parts::remove_route_set(spec, name, true)
    }
}

/// CreateRoutingPolicy (`create`) and UpdateRoutingPolicy: the rules compiled to routes,
/// the backend sets resolved on the view the change is planned on.
async fn put_policy(
    s: &OciState,
    p: &Params,
    ctx: &RequestContext,
    req: &RoutingPolicyIn,
    name: &str,
    create: bool,
) -> OciResult {
    let version = match create {
        true => req.condition_language_version.as_deref(),
        // Optional on update: the version stays V1.
        false => Some(
            req.condition_language_version
                .as_deref()
                .unwrap_or(CONDITION_LANGUAGE),
        ),
    };
    let rules = routing_rules(version, req.rules.as_deref())?;
    let source = serde_json::to_string(&rules).map_err(|e| OciError::invalid(e.to_string()))?;
    let input = serde_json::json!({"name": name, "rules": req.rules});
    let operation = match create {
        true => "CreateRoutingPolicy",
        false => "UpdateRoutingPolicy",
    };
    parts::change::<RoutingPolicies, _>(
        s,
        ctx,
        &p.lb(),
        operation,
        name,
        create,
        &input,
        |cfg, lb| {
            let routes = routing_rules_to_model(&rules, parts::backend_set(cfg, &lb.id))?;
            parts::put_route_set::<RoutingPolicies>(lb, name, routes, Some(source.clone()), create)
        },
    )
    .await
}

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
    put_policy(&s, &p, &ctx, &req, &name, true).await
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
    put_policy(&s, &p, &ctx, &req, p.get("policy"), false).await
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
