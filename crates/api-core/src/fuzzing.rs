//! What the dialects' fuzz entry points share (feature `fuzzing`): requests written as
//! text, the operation byte, the model's rules as the control plane checks them, and
//! merge patches as the control plane applies them.
//!
//! A request as text: a first line `METHOD TARGET`, header lines `name: value`, a blank
//! line, then the body.

use fulcrum_model::{
    HealthMonitorSpec, ListenerSpec, LoadBalancerKind, LoadBalancerSpec, MemberContext, MemberSpec,
    PoolContext, PoolSpec, SubnetSpec,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A request as text: method, target, headers (name and value, in order) and body.
pub struct TextRequest<'a> {
    pub method: &'a str,
    pub target: &'a str,
    pub headers: Vec<(&'a str, &'a str)>,
    pub body: &'a [u8],
}

impl<'a> TextRequest<'a> {
    /// `None` when the head is not UTF-8.
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        let split = data.windows(2).position(|w| w == b"\n\n");
        let (head, body) = match split {
            Some(i) => (&data[..i], &data[i + 2..]),
            None => (data, &[][..]),
        };
        let head = std::str::from_utf8(head).ok()?;
        let mut lines = head.split('\n');
        let (method, target) = lines.next()?.split_once(' ')?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n, v.trim()))
            .collect();
        Some(TextRequest {
            method,
            target,
            headers,
            body,
        })
    }

    /// The headers as `http` would receive them (names it cannot hold are left out).
    pub fn header_map(&self) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in &self.headers {
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_str(value),
            ) {
                map.append(n, v);
            }
        }
        map
    }
}

/// The first byte (which operation), and the rest.
pub fn pick(data: &[u8]) -> Option<(u8, &[u8])> {
    data.split_first().map(|(b, rest)| (*b, rest))
}

/// Every model rule for a spec a request produced, as the control plane checks it before
/// a change (for either kind of load balancer where the rules differ).
pub fn validate_loadbalancer(spec: &LoadBalancerSpec) {
    let _ = spec.validate();
}

pub fn validate_listener(spec: &ListenerSpec) {
    let _ = spec.validate();
}

pub fn validate_pool(spec: &PoolSpec) {
    for lb_kind in [LoadBalancerKind::Shared, LoadBalancerKind::Dedicated] {
        let _ = spec.validate(PoolContext { lb_kind });
    }
}

pub fn validate_member(spec: &MemberSpec) {
    for lb_kind in [LoadBalancerKind::Shared, LoadBalancerKind::Dedicated] {
        let _ = spec.validate(MemberContext {
            lb_kind,
            lb_vpc_id: "vpc-1",
            subnet: None,
            server_id_len: Some(3),
        });
    }
}

pub fn validate_monitor(spec: &HealthMonitorSpec) {
    let _ = spec.validate();
}

pub fn validate_subnet(spec: &SubnetSpec) {
    let _ = spec.validate();
}

/// An update as the control plane makes it: the merge patch applied to the current spec,
/// decoded again (unknown fields refused).
pub fn patched<T: Serialize + DeserializeOwned>(current: &T, patch: &Value) -> Option<T> {
    let mut doc = serde_json::to_value(current).ok()?;
    fulcrum_control::merge_patch(&mut doc, patch);
    fulcrum_control::decode_spec(doc).ok()
}
