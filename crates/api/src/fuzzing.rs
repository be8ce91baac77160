//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, off in every build of
//! the binary). Each takes arbitrary bytes, drives one parser the way a request does, and
//! must never panic whatever it is given. The parsers stay private to their dialects;
//! these reach them from inside.
//!
//! Inputs that describe a request are text: a first line `METHOD TARGET`, header lines
//! `name: value`, a blank line, then the body.

use fulcrum_model::{
    HealthMonitorSpec, ListenerSpec, LoadBalancerKind, LoadBalancerSpec, MemberContext, MemberSpec,
    PoolContext, PoolSpec, SubnetSpec,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The OCI request signature: the `Authorization` header's parameters, the signing
/// string over the target and headers, the RSA check and the body's digest and length.
pub fn oci_signature(data: &[u8]) {
    crate::oci::fuzz::signature(data);
}

/// The Huawei `SDK-HMAC-SHA256` signature: the `Authorization` header, the canonical URI,
/// query and headers, the date and the HMAC.
pub fn huawei_signature(data: &[u8]) {
    crate::huawei::fuzz::signature(data);
}

/// Azure's `$filter` on backend lists, parsed and evaluated.
pub fn azure_filter(data: &[u8]) {
    crate::azure::fuzz::filter(data);
}

/// Native request bodies (the first byte picks the operation): decoded and validated into
/// the model, patches merged as the control plane merges them.
pub fn native_body(data: &[u8]) {
    crate::native::fuzz::body(data);
}

/// OCI request bodies (the first byte picks the operation), translated into the model.
pub fn oci_body(data: &[u8]) {
    crate::oci::fuzz::body(data);
}

/// OCI routing policy conditions (V1): parsed, and what parses mapped onto routes that
/// the model must accept.
pub fn oci_condition(data: &[u8]) {
    crate::oci::fuzz::condition(data);
}

/// Huawei request bodies (the first byte picks the operation): decoded, patches built
/// and merged, batch items read.
pub fn huawei_body(data: &[u8]) {
    crate::huawei::handlers::fuzz_body(data);
}

/// Azure backend bodies: `properties` decoded, secrets unmasked, translated into the
/// model (URL, durations, circuit breaker rules).
pub fn azure_body(data: &[u8]) {
    crate::azure::fuzz::body(data);
}

/// Azure API policy documents (the first byte 0) or API bodies (otherwise): the policy
/// parsed as XML and checked, the API's properties decoded and translated into its kept
/// fields, which must read back whole.
pub fn azure_api(data: &[u8]) {
    crate::azure::fuzz::api(data);
}

/// A request as text: method, target, headers (name and value, in order) and body.
pub(crate) struct TextRequest<'a> {
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
pub(crate) fn pick(data: &[u8]) -> Option<(u8, &[u8])> {
    data.split_first().map(|(b, rest)| (*b, rest))
}

/// Every model rule for a spec a request produced, as the control plane checks it before
/// a change (for either kind of load balancer where the rules differ).
pub(crate) fn validate_loadbalancer(spec: &LoadBalancerSpec) {
    let _ = spec.validate();
}

pub(crate) fn validate_listener(spec: &ListenerSpec) {
    let _ = spec.validate();
}

pub(crate) fn validate_pool(spec: &PoolSpec) {
    for lb_kind in [LoadBalancerKind::Shared, LoadBalancerKind::Dedicated] {
        let _ = spec.validate(PoolContext { lb_kind });
    }
}

pub(crate) fn validate_member(spec: &MemberSpec) {
    for lb_kind in [LoadBalancerKind::Shared, LoadBalancerKind::Dedicated] {
        let _ = spec.validate(MemberContext {
            lb_kind,
            lb_vpc_id: "vpc-1",
            subnet: None,
        });
    }
}

pub(crate) fn validate_monitor(spec: &HealthMonitorSpec) {
    let _ = spec.validate();
}

pub(crate) fn validate_subnet(spec: &SubnetSpec) {
    let _ = spec.validate();
}

/// An update as the control plane makes it: the merge patch applied to the current spec,
/// decoded again (unknown fields refused).
pub(crate) fn patched<T: Serialize + DeserializeOwned>(current: &T, patch: &Value) -> Option<T> {
    let mut doc = serde_json::to_value(current).ok()?;
    fulcrum_control::merge_patch(&mut doc, patch);
    fulcrum_control::decode_spec(doc).ok()
}
