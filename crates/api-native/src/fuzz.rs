//! The native API's request bodies for `fulcrum_api::fuzzing::native_body`.

use fulcrum_model::{
    HealthMonitorSpec, HealthMonitorType, ListenerSpec, LoadBalancerSpec, MemberSpec, PoolId,
    PoolProtocol, PoolSpec, SubnetSpec,
};
use serde_json::Value;

use super::extract::parse_object;
use super::{BatchAction, BatchRequest, MemberRef};
use crate::fuzzing::{
    patched, pick, validate_listener, validate_loadbalancer, validate_member, validate_monitor,
    validate_pool, validate_subnet,
};

pub fn body(data: &[u8]) {
    let Some((which, body)) = pick(data) else {
        return;
    };
    match which % 8 {
        0 => {
            if let Ok(spec) = parse_object::<LoadBalancerSpec>(body) {
                validate_loadbalancer(&spec);
            }
        }
        1 => {
            if let Ok(spec) = parse_object::<ListenerSpec>(body) {
                validate_listener(&spec);
            }
        }
        2 => {
            if let Ok(spec) = parse_object::<PoolSpec>(body) {
                validate_pool(&spec);
                let _ = spec.validate_update(&PoolSpec::new("p", PoolProtocol::Http));
            }
        }
        3 => {
            if let Ok(spec) = parse_object::<MemberSpec>(body) {
                validate_member(&spec);
            }
        }
        4 => {
            if let Ok(spec) = parse_object::<HealthMonitorSpec>(body) {
                validate_monitor(&spec);
            }
        }
        5 => {
            if let Ok(spec) = parse_object::<SubnetSpec>(body) {
                validate_subnet(&spec);
            }
        }
        6 => {
            // What batch_members does with each item.
            let Ok(req) = parse_object::<BatchRequest>(body) else {
                return;
            };
            for m in req.members {
                match req.action {
                    BatchAction::Add | BatchAction::Replace => {
                        if let Ok(spec) = fulcrum_control::decode_spec::<MemberSpec>(m) {
                            validate_member(&spec);
                        }
                    }
                    BatchAction::Delete => {
                        let _ = fulcrum_control::decode_spec::<MemberRef>(m);
                    }
                }
            }
        }
        _ => {
            // A PATCH of each kind of resource.
            let Ok(patch) = parse_object::<Value>(body) else {
                return;
            };
            if let Some(s) = patched(&LoadBalancerSpec::new("lb"), &patch) {
                validate_loadbalancer(&s);
            }
            let listener = fulcrum_control::decode_spec::<ListenerSpec>(
                serde_json::json!({"protocol": "HTTP", "port": 8080}),
            );
            if let Some(s) = listener.ok().and_then(|l| patched(&l, &patch)) {
                validate_listener(&s);
            }
            let pool = PoolSpec::new("p", PoolProtocol::Http);
            if let Some(s) = patched(&pool, &patch) {
                validate_pool(&s);
                let _ = s.validate_update(&pool);
            }
            if let Some(s) = patched(&MemberSpec::new("10.0.0.1", 80), &patch) {
                validate_member(&s);
            }
            let monitor = HealthMonitorSpec::new(PoolId("p".into()), HealthMonitorType::Http);
            if let Some(s) = patched(&monitor, &patch) {
                validate_monitor(&s);
            }
        }
    }
}
