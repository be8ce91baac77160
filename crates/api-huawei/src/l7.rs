//! Forwarding policies (`l7policies`) and their rules (`l7rules`), v2 and v3 (v3 also
//! takes a policy's rules inline, and replaces them on update): each policy is one
//! of its listener's L7 routes in the core model ([`L7Route`]), its id the route's `id`,
//! its `position` the route's place in the listener's list (first match wins). A policy's
//! rules are the route's matchers: at most one `HOST_NAME` rule (`EQUAL_TO`: the route's
//! `host`, `*.` wildcards allowed) and one `PATH` rule (`EQUAL_TO`: `path_exact`,
//! `STARTS_WITH`: `path_prefix`); all of a policy's rules must match. `REGEX` is refused,
//! as are the actions other than `REDIRECT_TO_POOL` and v3's advanced forwarding fields.
//! A policy with no rules matches nothing (the route is down until a rule arrives). A rule's id is derived from its
//! policy's id and its type, so it needs no storage of its own.
//!
//! Every change is one [`ControlPlane::edit_listener`](fulcrum_control::ControlPlane::edit_listener),
//! planned against the current listener each time it is tried.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fulcrum_control::{Config, ControlError, Versioned};
use fulcrum_model::{L7Route, Listener, ListenerSpec, PoolId, ResourceKind, is_host_name};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::error::HuaweiError;
use super::handlers::{created, ctx, page_body, parse, reply, settle};
use super::{Api, Call, HState};

type HResult = Result<Response, HuaweiError>;

/// Huawei's largest `position`.
const MAX_POSITION: u32 = 100;

pub(crate) fn routes(api: Api) -> Router<HState> {
    macro_rules! h {
        ($f:ident) => {
            move |State(s): State<HState>, call: Call| async move { $f(api, s, call).await }
        };
    }
    Router::new()
        .route(
            "/l7policies",
            get(h!(list_policies)).post(h!(create_policy)),
        )
        .route(
            "/l7policies/{l7policy_id}",
            get(h!(show_policy))
                .put(h!(update_policy))
                .delete(h!(delete_policy)),
        )
        .route(
            "/l7policies/{l7policy_id}/rules",
            get(h!(list_rules)).post(h!(create_rule)),
        )
        .route(
            "/l7policies/{l7policy_id}/rules/{l7rule_id}",
            get(h!(show_rule))
                .put(h!(update_rule))
                .delete(h!(delete_rule)),
        )
}

// ---- wire shapes ---------------------------------------------------------------------

#[derive(Deserialize)]
struct PolicyBody<T> {
    l7policy: T,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyCreate {
    listener_id: String,
    action: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    admin_state_up: Option<bool>,
    redirect_pool_id: Option<String>,
    redirect_listener_id: Option<String>,
    redirect_url: Option<String>,
    position: Option<u32>,
    #[serde(default)]
    rules: Vec<RuleCreate>,
    priority: Option<Value>,
    redirect_url_config: Option<Value>,
    redirect_pools_config: Option<Value>,
    redirect_pools_sticky_session_config: Option<Value>,
    redirect_pools_extend_config: Option<Value>,
    fixed_response_config: Option<Value>,
    #[allow(dead_code)]
    tenant_id: Option<String>,
    #[allow(dead_code)]
    project_id: Option<String>,
}

/// v3's advanced forwarding settings, by field: refused by name when set (fulcrum forwards
/// to one pool, in `position` order).
macro_rules! check_advanced {
    ($req:expr) => {
        check_advanced(&[
            ("priority", &$req.priority),
            ("redirect_url_config", &$req.redirect_url_config),
            ("redirect_pools_config", &$req.redirect_pools_config),
            (
                "redirect_pools_sticky_session_config",
                &$req.redirect_pools_sticky_session_config,
            ),
            (
                "redirect_pools_extend_config",
                &$req.redirect_pools_extend_config,
            ),
            ("fixed_response_config", &$req.fixed_response_config),
        ])
    };
}

fn check_advanced(fields: &[(&str, &Option<Value>)]) -> Result<(), HuaweiError> {
    for (field, v) in fields {
        let set = match v {
            None | Some(Value::Null) => false,
            Some(Value::Array(a)) => !a.is_empty(),
            Some(_) => true,
        };
        if set {
            return Err(HuaweiError::invalid(format!(
                "l7policy.{field} is not supported: fulcrum forwards to redirect_pool_id, in position order"
            )));
        }
    }
    Ok(())
}

/// v3 rule `conditions` (advanced forwarding): refused when given.
fn check_conditions(conditions: Option<&Value>) -> Result<(), HuaweiError> {
    match conditions {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Array(a)) if a.is_empty() => Ok(()),
        Some(_) => Err(HuaweiError::invalid(
            "rule.conditions is not supported: give type, compare_type and value",
        )),
    }
}

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct PolicyUpdate {
    name: Option<String>,
    description: Option<String>,
    admin_state_up: Option<bool>,
    redirect_pool_id: Option<String>,
    redirect_listener_id: Option<String>,
    /// v3: the policy's rules, replaced whole.
    rules: Option<Vec<RuleCreate>>,
    priority: Option<Value>,
    redirect_url_config: Option<Value>,
    redirect_pools_config: Option<Value>,
    redirect_pools_sticky_session_config: Option<Value>,
    redirect_pools_extend_config: Option<Value>,
    fixed_response_config: Option<Value>,
}

#[derive(Deserialize)]
struct RuleBody<T> {
    rule: T,
}

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct RuleCreate {
    #[serde(rename = "type")]
    kind: String,
    compare_type: String,
    value: String,
    key: Option<String>,
    invert: Option<bool>,
    admin_state_up: Option<bool>,
    conditions: Option<Value>,
    #[allow(dead_code)]
    tenant_id: Option<String>,
    #[allow(dead_code)]
    project_id: Option<String>,
}

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct RuleUpdate {
    compare_type: Option<String>,
    value: Option<String>,
    key: Option<String>,
    invert: Option<bool>,
    admin_state_up: Option<bool>,
    conditions: Option<Value>,
}

/// The two rule types a route carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RuleType {
    HostName,
    Path,
}

impl RuleType {
    fn parse(t: &str) -> Result<Self, HuaweiError> {
        match t {
            "HOST_NAME" => Ok(RuleType::HostName),
            "PATH" => Ok(RuleType::Path),
            other => Err(HuaweiError::invalid(format!(
                "rule.type must be HOST_NAME or PATH (got {other:?})"
            ))),
        }
    }

    fn name(self) -> &'static str {
        match self {
            RuleType::HostName => "HOST_NAME",
            RuleType::Path => "PATH",
        }
    }
}

/// A rule's id: derived from its policy's id and its type (a policy holds at most one
/// rule of each type), UUID-shaped like every Huawei id.
fn rule_id(policy_id: &str, t: RuleType) -> String {
    let digest = Sha256::digest(format!("{policy_id}/{}", t.name()).as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// The rule types a route carries, in Huawei's order.
fn rule_types(r: &L7Route) -> impl Iterator<Item = RuleType> + use<> {
    let host = r.host.is_some().then_some(RuleType::HostName);
    let path = (r.path_prefix.is_some() || r.path_exact.is_some() || r.path_suffix.is_some())
        .then_some(RuleType::Path);
    host.into_iter().chain(path)
}

fn compare_type(r: &L7Route, t: RuleType) -> (&'static str, String) {
    match t {
        RuleType::HostName => ("EQUAL_TO", r.host.clone().unwrap_or_default()),
        RuleType::Path => match (&r.path_exact, &r.path_prefix, &r.path_suffix) {
            (Some(p), _, _) => ("EQUAL_TO", p.clone()),
            (None, Some(p), _) => ("STARTS_WITH", p.clone()),
            // Routes made through other front doors may match a suffix.
            (None, None, Some(p)) => ("ENDS_WITH", p.clone()),
            (None, None, None) => ("STARTS_WITH", String::new()),
        },
    }
}

/// Sets a rule of type `t` on the route, after Huawei's checks.
fn apply_rule(
    r: &mut L7Route,
    t: RuleType,
    compare: &str,
    value: &str,
    key: Option<&str>,
    invert: Option<bool>,
    admin_state_up: Option<bool>,
) -> Result<(), HuaweiError> {
    if invert == Some(true) {
        return Err(HuaweiError::invalid("rule.invert: only false is supported"));
    }
    if key.is_some_and(|k| !k.is_empty()) {
        return Err(HuaweiError::invalid(
            "rule.key is only for HEADER and COOKIE rules, which are not supported",
        ));
    }
    if admin_state_up == Some(false) {
        return Err(HuaweiError::invalid(
            "rule.admin_state_up: only true is supported",
        ));
    }
    match (t, compare) {
        (RuleType::HostName, "EQUAL_TO") => {
            if !is_host_name(value, true) {
                return Err(HuaweiError::invalid(format!(
                    "rule.value {value:?} is not a host name (letters, digits, '-' and '.', optionally starting with '*.')"
                )));
            }
            r.host = Some(value.to_owned());
        }
        (RuleType::HostName, other) => {
            return Err(HuaweiError::invalid(format!(
                "rule.compare_type of a HOST_NAME rule must be EQUAL_TO (got {other:?})"
            )));
        }
        (RuleType::Path, "EQUAL_TO" | "STARTS_WITH") => {
            if !value.starts_with('/') || value.len() > fulcrum_model::MAX_ROUTE_PATH {
                return Err(HuaweiError::invalid(format!(
                    "rule.value of a PATH rule must start with '/' and be at most {} characters (got {value:?})",
                    fulcrum_model::MAX_ROUTE_PATH
                )));
            }
            r.path_prefix = None;
            r.path_exact = None;
            r.path_suffix = None;
            if compare == "EQUAL_TO" {
                r.path_exact = Some(value.to_owned());
            } else {
                r.path_prefix = Some(value.to_owned());
            }
        }
        (RuleType::Path, "REGEX") => {
            return Err(HuaweiError::invalid(
                "rule.compare_type REGEX is not supported: use EQUAL_TO or STARTS_WITH",
            ));
        }
        (RuleType::Path, other) => {
            return Err(HuaweiError::invalid(format!(
                "rule.compare_type must be EQUAL_TO, STARTS_WITH or REGEX (got {other:?})"
            )));
        }
    }
    r.admin_state_up = true;
    Ok(())
}

/// Sets a policy's rules from a list (at most one of each type); no rules: matches nothing.
fn apply_rules(r: &mut L7Route, rules: &[RuleCreate]) -> Result<(), HuaweiError> {
    r.host = None;
    r.path_prefix = None;
    r.path_exact = None;
    r.path_suffix = None;
    r.admin_state_up = false;
    let mut seen = Vec::new();
    for rule in rules {
        let t = RuleType::parse(&rule.kind)?;
        if seen.contains(&t) {
            return Err(HuaweiError::invalid(format!(
                "l7policy.rules: a policy takes at most one {} rule",
                t.name()
            )));
        }
        seen.push(t);
        check_conditions(rule.conditions.as_ref())?;
        apply_rule(
            r,
            t,
            &rule.compare_type,
            &rule.value,
            rule.key.as_deref(),
            rule.invert,
            rule.admin_state_up,
        )?;
    }
    Ok(())
}

fn clear_rule(r: &mut L7Route, t: RuleType) {
    match t {
        RuleType::HostName => r.host = None,
        RuleType::Path => {
            r.path_prefix = None;
            r.path_exact = None;
            r.path_suffix = None;
        }
    }
    // A policy with no rules matches nothing.
    r.admin_state_up = rule_types(r).next().is_some();
}

// ---- finding and rendering -----------------------------------------------------------

/// The listener holding policy `id`, and the policy's index among its routes.
fn find_policy<'a>(cfg: &'a Config, id: &str) -> Option<(&'a Versioned<Listener>, usize)> {
    if id.is_empty() {
        return None;
    }
    cfg.listeners.values().find_map(|l| {
        l.value
            .spec
            .routes
            .iter()
            .position(|r| r.id == id)
            .map(|i| (l, i))
    })
}

fn policy_not_found(id: &str) -> HuaweiError {
    HuaweiError::not_found(format!("l7policy {id} not found"))
}

fn status_name(s: &HState, l: &Versioned<Listener>) -> Value {
    serde_json::to_value(s.app.control.listener_status(l)).unwrap_or(Value::Null)
}

fn render_policy(
    s: &HState,
    cfg: &Config,
    l: &Versioned<Listener>,
    i: usize,
    caller_project: &str,
) -> Value {
    let r = &l.value.spec.routes[i];
    let project = cfg
        .loadbalancers
        .get(&l.value.loadbalancer_id)
        .and_then(|lb| lb.value.spec.labels.get(super::views::LABEL_PROJECT))
        .cloned()
        .unwrap_or_else(|| caller_project.to_owned());
    let rules: Vec<Value> = rule_types(r)
        .map(|t| json!({ "id": rule_id(&r.id, t) }))
        .collect();
    json!({
        "id": r.id,
        "name": r.name,
        "description": r.description,
        "admin_state_up": true,
        "listener_id": l.value.id,
        "action": "REDIRECT_TO_POOL",
        "redirect_pool_id": r.pool_id,
        "redirect_listener_id": null,
        "redirect_url": null,
        "position": i + 1,
        "rules": rules,
        "provisioning_status": status_name(s, l),
        "project_id": project,
        "tenant_id": project,
    })
}

fn render_rule(
    s: &HState,
    l: &Versioned<Listener>,
    r: &L7Route,
    t: RuleType,
    project: &str,
) -> Value {
    let (compare, value) = compare_type(r, t);
    json!({
        "id": rule_id(&r.id, t),
        "type": t.name(),
        "compare_type": compare,
        "value": value,
        "key": null,
        "invert": false,
        "admin_state_up": true,
        "provisioning_status": status_name(s, l),
        "project_id": project,
        "tenant_id": project,
    })
}

fn show_policy_body(api: Api, s: &HState, call: &Call, id: &str, status: StatusCode) -> HResult {
    let full = s.app.control.view();
    let cfg = full.scoped(&call.caller.scope);
    let (l, i) = find_policy(&cfg, id).ok_or_else(|| policy_not_found(id))?;
    let body = render_policy(s, &cfg, l, i, &call.caller.project_id);
    Ok(reply(api, status, json!({ "l7policy": body })))
}

/// The query without the keys that choose what is shown rather than filter.
fn filters(call: &Call) -> Vec<(String, String)> {
    call.query
        .iter()
        .filter(|(k, _)| k != "display_all_rules" && k != "enterprise_project_id")
        .cloned()
        .collect()
}

// ---- policies ------------------------------------------------------------------------

async fn list_policies(api: Api, s: HState, call: Call) -> HResult {
    let items = {
        let full = s.app.control.view();
        let cfg = full.scoped(&call.caller.scope);
        cfg.listeners
            .values()
            .flat_map(|l| {
                (0..l.value.spec.routes.len())
                    .filter(|i| !l.value.spec.routes[*i].id.is_empty())
                    .map(|i| render_policy(&s, &cfg, l, i, &call.caller.project_id))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    page_body(api, "l7policies", &filters(&call), items)
}

async fn show_policy(api: Api, s: HState, call: Call) -> HResult {
    let id = call.param("l7policy_id")?;
    show_policy_body(api, &s, &call, &id, StatusCode::OK)
}

/// Huawei's actions other than forwarding to a pool, refused by name.
fn check_action(action: &str) -> Result<(), HuaweiError> {
    match action {
        "REDIRECT_TO_POOL" => Ok(()),
        "REDIRECT_TO_LISTENER" | "REDIRECT_TO_URL" | "FIXED_RESPONSE" => {
            Err(HuaweiError::invalid(format!(
                "l7policy.action {action} is not supported: fulcrum forwards to pools only (REDIRECT_TO_POOL)"
            )))
        }
        other => Err(HuaweiError::invalid(format!(
            "l7policy.action must be REDIRECT_TO_POOL (got {other:?})"
        ))),
    }
}

/// The pool a policy redirects to: one of the listener's load balancer.
fn check_pool(cfg: &Config, l: &Listener, pool: &PoolId) -> Result<(), ControlError> {
    match cfg.pools.get(pool) {
        None => Err(ControlError::not_found(ResourceKind::Pool, pool)),
        Some(p) if p.value.loadbalancer_id != l.loadbalancer_id => Err(ControlError::invalid(
            "redirect_pool_id",
            format!(
                "redirect_pool_id {pool} is a pool of another load balancer than listener {}'s",
                l.id
            ),
        )),
        Some(_) => Ok(()),
    }
}

fn check_routable(l: &Listener) -> Result<(), ControlError> {
    if l.spec.protocol.is_http() {
        Ok(())
    } else {
        Err(ControlError::invalid(
            "listener_id",
            format!(
                "listener {} is not an HTTP or TERMINATED_HTTPS listener; l7policies need one",
                l.id
            ),
        ))
    }
}

async fn create_policy(api: Api, s: HState, call: Call) -> HResult {
    let PolicyBody { l7policy: req } = parse::<PolicyBody<PolicyCreate>>(&call.body)?;
    check_action(&req.action)?;
    check_advanced!(req)?;
    if req.redirect_listener_id.is_some() || req.redirect_url.is_some() {
        return Err(HuaweiError::invalid(
            "l7policy.redirect_listener_id and redirect_url are only for actions that are not supported; use redirect_pool_id",
        ));
    }
    if req.admin_state_up == Some(false) {
        return Err(HuaweiError::invalid(
            "l7policy.admin_state_up: only true is supported",
        ));
    }
    let pool = PoolId(
        req.redirect_pool_id
            .clone()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                HuaweiError::invalid("l7policy.redirect_pool_id is required for REDIRECT_TO_POOL")
            })?,
    );
    if req
        .position
        .is_some_and(|p| !(1..=MAX_POSITION).contains(&p))
    {
        return Err(HuaweiError::invalid(format!(
            "l7policy.position must be between 1 and {MAX_POSITION}"
        )));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let mut route = L7Route {
        id: id.clone(),
        name: req.name.clone(),
        description: req.description.clone(),
        admin_state_up: false,
        ..L7Route::to_pool(pool.clone())
    };
    apply_rules(&mut route, &req.rules)?;
    let listener_id = fulcrum_model::ListenerId(req.listener_id.clone());
    let position = req.position;
    let input = json!({ "l7policy": {
        "listener_id": req.listener_id, "name": req.name, "description": req.description,
        "redirect_pool_id": pool, "position": position,
        "rules": req.rules,
    }});
    let outcome = s
        .app
        .control
        .edit_listener(
            &ctx(&call),
            "CreateL7Policy",
            &listener_id,
            &input,
            |cfg, l| {
                check_routable(l)?;
                check_pool(cfg, l, &pool)?;
                let mut spec: ListenerSpec = l.spec.clone();
                let at = position.map_or(spec.routes.len(), |p| {
                    (p as usize - 1).min(spec.routes.len())
                });
                spec.routes.insert(at, route.clone());
                Ok(spec)
            },
        )
        .await
        .map_err(HuaweiError::from)?;
    settle(api, &s, &outcome).await;
    show_policy_body(api, &s, &call, &id, created(api))
}

/// Changes the policy `id` (and nothing else on its listener) with `edit`.
async fn edit_policy<I: serde::Serialize>(
    s: &HState,
    call: &Call,
    operation: &'static str,
    id: &str,
    input: &I,
    edit: impl Fn(&Config, &Listener, &mut Vec<L7Route>, usize) -> Result<(), HuaweiError>,
) -> Result<fulcrum_control::Outcome, HuaweiError> {
    let listener_id = {
        let full = s.app.control.view();
        let cfg = full.scoped(&call.caller.scope);
        let (l, _) = find_policy(&cfg, id).ok_or_else(|| policy_not_found(id))?;
        l.value.id.clone()
    };
    // Errors of the dialect's own checks travel through the control plane's planning.
    let refused = parking_lot::Mutex::new(None);
    let result = s
        .app
        .control
        .edit_listener(&ctx(call), operation, &listener_id, input, |cfg, l| {
            let Some(i) = l.spec.routes.iter().position(|r| r.id == id) else {
                return Err(ControlError::not_found(ResourceKind::Listener, id));
            };
            let mut spec = l.spec.clone();
            match edit(cfg, l, &mut spec.routes, i) {
                Ok(()) => Ok(spec),
                Err(e) => {
                    let message = e.message.clone();
                    *refused.lock() = Some(e);
                    Err(ControlError::invalid("l7policy", message))
                }
            }
        })
        .await;
    match result {
        Ok(outcome) => Ok(outcome),
        Err(e) => Err(match refused.into_inner() {
            Some(own) => own,
            None if matches!(e, ControlError::NotFound { .. }) => policy_not_found(id),
            None => e.into(),
        }),
    }
}

async fn update_policy(api: Api, s: HState, call: Call) -> HResult {
    let id = call.param("l7policy_id")?;
    let PolicyBody { l7policy: req } = parse::<PolicyBody<PolicyUpdate>>(&call.body)?;
    if req.redirect_listener_id.is_some() {
        return Err(HuaweiError::invalid(
            "l7policy.redirect_listener_id is not supported: fulcrum forwards to pools only",
        ));
    }
    check_advanced!(req)?;
    if req.admin_state_up == Some(false) {
        return Err(HuaweiError::invalid(
            "l7policy.admin_state_up: only true is supported",
        ));
    }
    let outcome = edit_policy(
        &s,
        &call,
        "UpdateL7Policy",
        &id,
        &req,
        |cfg, l, routes, i| {
            let r = &mut routes[i];
            if let Some(name) = &req.name {
                r.name.clone_from(name);
            }
            if let Some(d) = &req.description {
                r.description.clone_from(d);
            }
            if let Some(p) = req.redirect_pool_id.as_ref().filter(|p| !p.is_empty()) {
                let pool = PoolId(p.clone());
                check_pool(cfg, l, &pool)?;
                r.pool_id = pool;
            }
            if let Some(rules) = &req.rules {
                apply_rules(r, rules)?;
            }
            Ok(())
        },
    )
    .await?;
    settle(api, &s, &outcome).await;
    show_policy_body(api, &s, &call, &id, StatusCode::OK)
}

/// Huawei deletes a policy with its rules.
async fn delete_policy(api: Api, s: HState, call: Call) -> HResult {
    let id = call.param("l7policy_id")?;
    let outcome = edit_policy(&s, &call, "DeleteL7Policy", &id, &id, |_, _, routes, i| {
        routes.remove(i);
        Ok(())
    })
    .await?;
    settle(api, &s, &outcome).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- rules ---------------------------------------------------------------------------

/// The rule `rule` of policy `policy` as the route carries it.
fn find_rule(r: &L7Route, rule: &str) -> Option<RuleType> {
    rule_types(r).find(|t| rule_id(&r.id, *t) == rule)
}

fn rule_not_found(policy: &str, rule: &str) -> HuaweiError {
    HuaweiError::not_found(format!("l7rule {rule} of l7policy {policy} not found"))
}

async fn list_rules(api: Api, s: HState, call: Call) -> HResult {
    let id = call.param("l7policy_id")?;
    let items = {
        let full = s.app.control.view();
        let cfg = full.scoped(&call.caller.scope);
        let (l, i) = find_policy(&cfg, &id).ok_or_else(|| policy_not_found(&id))?;
        let policy = render_policy(&s, &cfg, l, i, &call.caller.project_id);
        let project = policy["project_id"].as_str().unwrap_or_default().to_owned();
        let r = &l.value.spec.routes[i];
        rule_types(r)
            .map(|t| render_rule(&s, l, r, t, &project))
            .collect()
    };
    page_body(api, "rules", &call.query, items)
}

fn show_rule_body(
    api: Api,
    s: &HState,
    call: &Call,
    policy: &str,
    rule: &str,
    status: StatusCode,
) -> HResult {
    let full = s.app.control.view();
    let cfg = full.scoped(&call.caller.scope);
    let (l, i) = find_policy(&cfg, policy).ok_or_else(|| policy_not_found(policy))?;
    let r = &l.value.spec.routes[i];
    let t = find_rule(r, rule).ok_or_else(|| rule_not_found(policy, rule))?;
    let project = render_policy(s, &cfg, l, i, &call.caller.project_id)["project_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let body = render_rule(s, l, r, t, &project);
    Ok(reply(api, status, json!({ "rule": body })))
}

async fn show_rule(api: Api, s: HState, call: Call) -> HResult {
    let policy = call.param("l7policy_id")?;
    let rule = call.param("l7rule_id")?;
    show_rule_body(api, &s, &call, &policy, &rule, StatusCode::OK)
}

async fn create_rule(api: Api, s: HState, call: Call) -> HResult {
    let policy = call.param("l7policy_id")?;
    let RuleBody { rule: req } = parse::<RuleBody<RuleCreate>>(&call.body)?;
    let t = RuleType::parse(&req.kind)?;
    check_conditions(req.conditions.as_ref())?;
    let outcome = edit_policy(
        &s,
        &call,
        "CreateL7Rule",
        &policy,
        &req,
        |_, _, routes, i| {
            let r = &mut routes[i];
            if rule_types(r).any(|have| have == t) {
                return Err(HuaweiError::conflict(format!(
                    "l7policy {policy} already has a {} rule; update or delete it first",
                    t.name()
                )));
            }
            apply_rule(
                r,
                t,
                &req.compare_type,
                &req.value,
                req.key.as_deref(),
                req.invert,
                req.admin_state_up,
            )
        },
    )
    .await?;
    settle(api, &s, &outcome).await;
    show_rule_body(api, &s, &call, &policy, &rule_id(&policy, t), created(api))
}

async fn update_rule(api: Api, s: HState, call: Call) -> HResult {
    let policy = call.param("l7policy_id")?;
    let rule = call.param("l7rule_id")?;
    let RuleBody { rule: req } = parse::<RuleBody<RuleUpdate>>(&call.body)?;
    check_conditions(req.conditions.as_ref())?;
    let outcome = edit_policy(
        &s,
        &call,
        "UpdateL7Rule",
        &policy,
        &(&rule, &req),
        |_, _, routes, i| {
            let r = &mut routes[i];
            let t = find_rule(r, &rule).ok_or_else(|| rule_not_found(&policy, &rule))?;
            let (compare, value) = compare_type(r, t);
            apply_rule(
                r,
                t,
                req.compare_type.as_deref().unwrap_or(compare),
                req.value.as_deref().unwrap_or(&value),
                req.key.as_deref(),
                req.invert,
                req.admin_state_up,
            )
        },
    )
    .await?;
    settle(api, &s, &outcome).await;
    show_rule_body(api, &s, &call, &policy, &rule, StatusCode::OK)
}

async fn delete_rule(api: Api, s: HState, call: Call) -> HResult {
    let policy = call.param("l7policy_id")?;
    let rule = call.param("l7rule_id")?;
    let outcome = edit_policy(
        &s,
        &call,
        "DeleteL7Rule",
        &policy,
        &rule,
        |_, _, routes, i| {
            let r = &mut routes[i];
            let t = find_rule(r, &rule).ok_or_else(|| rule_not_found(&policy, &rule))?;
            clear_rule(r, t);
            Ok(())
        },
    )
    .await?;
    settle(api, &s, &outcome).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn route() -> L7Route {
        L7Route {
            id: "4f1c6f7e-0000-4000-8000-000000000001".into(),
            ..L7Route::to_pool(PoolId::from("p"))
        }
    }

    #[test]
    fn rules_map_onto_the_route() {
        let mut r = route();
        apply_rule(
            &mut r,
            RuleType::Path,
            "STARTS_WITH",
            "/api",
            None,
            None,
            None,
        )
        .unwrap();
        assert_eq!(r.path_prefix.as_deref(), Some("/api"));
        apply_rule(
            &mut r,
            RuleType::Path,
            "EQUAL_TO",
            "/api",
            None,
            Some(false),
            Some(true),
        )
        .unwrap();
        assert_eq!(
            (r.path_prefix.as_deref(), r.path_exact.as_deref()),
            (None, Some("/api"))
        );
        apply_rule(
            &mut r,
            RuleType::HostName,
            "EQUAL_TO",
            "*.a.test",
            None,
            None,
            None,
        )
        .unwrap();
        assert!(r.admin_state_up);
        assert_eq!(
            rule_types(&r).collect::<Vec<_>>(),
            [RuleType::HostName, RuleType::Path]
        );
        assert_eq!(
            compare_type(&r, RuleType::Path),
            ("EQUAL_TO", "/api".into())
        );
        clear_rule(&mut r, RuleType::Path);
        assert!(r.admin_state_up, "the host rule is left");
        clear_rule(&mut r, RuleType::HostName);
        assert!(!r.admin_state_up, "a policy with no rules matches nothing");
    }

    #[test]
    fn what_the_model_cannot_serve_is_refused() {
        let mut r = route();
        for (t, compare, value, key, invert) in [
            (RuleType::Path, "REGEX", "/a.*", None, None),
            (RuleType::Path, "ENDS_WITH", "/a", None, None),
            (RuleType::Path, "STARTS_WITH", "api", None, None),
            (RuleType::HostName, "STARTS_WITH", "a.test", None, None),
            (RuleType::HostName, "EQUAL_TO", "bad host", None, None),
            (RuleType::Path, "STARTS_WITH", "/a", Some("k"), None),
            (RuleType::Path, "STARTS_WITH", "/a", None, Some(true)),
        ] {
            let e = apply_rule(&mut r, t, compare, value, key, invert, None).unwrap_err();
            assert_eq!(
                (e.status, e.code),
                (StatusCode::BAD_REQUEST, "ELB.8902"),
                "{compare} {value}"
            );
        }
        assert_eq!(r, route(), "nothing applied");
    }

    #[test]
    fn rule_ids_are_stable_and_distinct() {
        let a = rule_id("p1", RuleType::Path);
        assert_eq!(a, rule_id("p1", RuleType::Path));
        assert_ne!(a, rule_id("p1", RuleType::HostName));
        assert_ne!(a, rule_id("p2", RuleType::Path));
        assert!(uuid::Uuid::parse_str(&a).is_ok());
    }
}
