//! The OCI dialect's parsers for `fulcrum_api::fuzzing`: the request signature and the
//! request bodies.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use fulcrum_model::{LoadBalancer, LoadBalancerSpec, MemberSpec, PoolId, PoolProtocol};

use super::signature::{ApiKey, KeyRing, parse_public_key, verify_head};
use super::wire::{
    BackendIn, BackendSetIn, CreateLoadBalancerIn, HealthCheckerIn, ListenerIn, UpdateBackendIn,
    UpdateLoadBalancerIn, check_name, parse_body,
};
use crate::fuzzing::{
    TextRequest, patched, pick, validate_loadbalancer, validate_member, validate_monitor,
    validate_pool,
};

/// The key of the requests the real SDK signed (`testdata/`), under their key id: inputs
/// grown from those reach the RSA check and the body's.
fn keys() -> &'static KeyRing {
    static KEYS: OnceLock<KeyRing> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut ring = KeyRing::default();
        if let Ok(key) = parse_public_key(include_str!("testdata/test_key.pub.pem")) {
            ring.insert(
                "ocid1.tenancy.oc1..aaaatenancy/ocid1.user.oc1..aaaauser/a8:34:00:8e:6f:5c:62:0a:63:e5:63:93:3f:29:7b:24".into(),
                ApiKey {
                    principal: "fuzz".into(),
                    key,
                    compartments: None,
                },
            );
        }
        ring
    })
}

pub fn signature(data: &[u8]) {
    let Some(req) = TextRequest::parse(data) else {
        return;
    };
    let Ok(method) = http::Method::from_bytes(req.method.as_bytes()) else {
        return;
    };
    let headers = req.header_map();
    // The clock where the request says it is (so the date check can pass), or far from it.
    let now = headers
        .get("date")
        .and_then(|d| d.to_str().ok())
        .and_then(|d| httpdate::parse_http_date(d).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    if let Ok(head) = verify_head(&method, req.target, &headers, keys(), now) {
        let _ = head.check_body(&headers, req.body);
    }
}

pub fn body(data: &[u8]) {
    let Some((which, body)) = pick(data) else {
        return;
    };
    match which % 7 {
        0 => create_load_balancer(body),
        1 => {
            let Ok(req) = parse_body::<UpdateLoadBalancerIn>(body) else {
                return;
            };
            let lb = LoadBalancer {
                id: super::wire::lb_id("ocid1.loadbalancer.oc1..fuzz"),
                spec: LoadBalancerSpec::new("lb"),
                created_at: chrono::DateTime::UNIX_EPOCH,
                updated_at: chrono::DateTime::UNIX_EPOCH,
            };
            if let Ok(patch) = req.to_patch(&lb)
                && let Some(spec) = patched(&lb.spec, &patch)
            {
                validate_loadbalancer(&spec);
            }
        }
        2 => {
            if let Ok(req) = parse_body::<BackendSetIn>(body) {
                backend_set(
                    &req,
                    req.name.as_deref().unwrap_or("bs"),
                    PoolProtocol::Http,
                    "",
                );
            }
        }
        3 => {
            if let Ok(spec) = parse_body::<BackendIn>(body).and_then(|b| b.to_spec("")) {
                validate_member(&spec);
            }
        }
        4 => {
            let patch = parse_body::<UpdateBackendIn>(body).and_then(|b| b.to_patch());
            if let Ok(patch) = patch
                && let Some(spec) = patched(&MemberSpec::new("10.0.0.1", 80), &patch)
            {
                validate_member(&spec);
            }
        }
        5 => {
            let spec =
                parse_body::<HealthCheckerIn>(body).and_then(|h| h.to_spec(PoolId("p".into()), ""));
            if let Ok(spec) = spec {
                validate_monitor(&spec);
            }
        }
        _ => {
            if let Ok(l) = parse_body::<ListenerIn>(body) {
                let _ = l.to_parts("");
            }
        }
    }
}

/// What the create handler does before it calls the control plane.
fn create_load_balancer(body: &[u8]) {
    let Ok(req) = parse_body::<CreateLoadBalancerIn>(body) else {
        return;
    };
    if req.check_unsupported().is_err() {
        return;
    }
    let mut spec = LoadBalancerSpec::new(req.display_name.clone().unwrap_or_default());
    if let Ok(labels) = req.labels() {
        spec.labels = labels;
    }
    validate_loadbalancer(&spec);
    let mut tcp_sets = Vec::new();
    for (name, l) in req.listeners.iter().flatten() {
        let prefix = format!("listeners.{name}.");
        let _ = check_name(name, &format!("{prefix}name"));
        if let Ok(parts) = l.to_parts(&prefix)
            && parts.protocol == fulcrum_model::ListenerProtocol::Tcp
        {
            tcp_sets.push(parts.default_backend_set);
        }
    }
    for (name, set) in req.backend_sets.iter().flatten() {
        let prefix = format!("backendSets.{name}.");
        let _ = check_name(name, &format!("{prefix}name"));
        let protocol = if tcp_sets.contains(name) {
            PoolProtocol::Tcp
        } else {
            PoolProtocol::Http
        };
        backend_set(set, name, protocol, &prefix);
    }
}

fn backend_set(set: &BackendSetIn, name: &str, protocol: PoolProtocol, prefix: &str) {
    if let Ok(parts) = set.to_parts(name, &PoolId("p".into()), protocol, prefix) {
        validate_pool(&parts.spec);
        for m in &parts.members {
            validate_member(m);
        }
        validate_monitor(&parts.monitor);
    }
}

/// A routing rule's condition: parsed (never a panic, an error's place within the text),
/// and, when it maps onto routes, routes the model accepts in a route set.
pub fn condition(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = match super::condition::parse(text) {
        Ok(c) => c,
        Err(e) => {
            assert!(e.at <= text.len(), "{e:?}");
            return;
        }
    };
    assert!(parsed.n_comparisons() >= 1);
    let Ok(matches) = super::condition::route_matches(&parsed) else {
        return;
    };
    assert!(!matches.is_empty() && matches.len() <= super::condition::MAX_ALTERNATIVES);
    let rule = super::routing::RoutingRule {
        name: "r".into(),
        condition: text.to_owned(),
        backend_set_name: "bs".into(),
        matches,
    };
    let routes = super::routing::routing_rules_to_model(&[rule], |_| Some(PoolId("p".into())))
        .expect("every backend set resolves");
    let mut spec = LoadBalancerSpec::new("lb");
    spec.route_sets.push(fulcrum_model::RouteSet {
        name: "policy".into(),
        routes,
        source: Some(text.to_owned()),
    });
    if let Err(e) = spec.validate() {
        panic!("{text:?} maps onto routes the model refuses: {e}");
    }
}
