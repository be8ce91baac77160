//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, off in every build of
//! the binary). Each takes arbitrary bytes, drives one parser the way a request does, and
//! must never panic whatever it is given. The parsers stay private to their dialects;
//! each dialect crate's `fuzz` module (feature `fuzzing`) reaches them from inside.
//!
//! Inputs that describe a request are text: a first line `METHOD TARGET`, header lines
//! `name: value`, a blank line, then the body.

/// The OCI request signature: the `Authorization` header's parameters, the signing
/// string over the target and headers, the RSA check and the body's digest and length.
pub fn oci_signature(data: &[u8]) {
    fulcrum_api_oci::fuzz::signature(data);
}

/// The Huawei `SDK-HMAC-SHA256` signature: the `Authorization` header, the canonical URI,
/// query and headers, the date and the HMAC.
pub fn huawei_signature(data: &[u8]) {
    fulcrum_api_huawei::fuzz::signature(data);
}

/// Azure's `$filter` on backend lists, parsed and evaluated.
pub fn azure_filter(data: &[u8]) {
    fulcrum_api_azure::fuzz::filter(data);
}

/// Native request bodies (the first byte picks the operation): decoded and validated into
/// the model, patches merged as the control plane merges them.
pub fn native_body(data: &[u8]) {
    fulcrum_api_native::fuzz::body(data);
}

/// OCI request bodies (the first byte picks the operation), translated into the model.
pub fn oci_body(data: &[u8]) {
    fulcrum_api_oci::fuzz::body(data);
}

/// OCI routing policy conditions (V1): parsed, and what parses mapped onto routes that
/// the model must accept.
pub fn oci_condition(data: &[u8]) {
    fulcrum_api_oci::fuzz::condition(data);
}

/// Huawei request bodies (the first byte picks the operation): decoded, patches built
/// and merged, batch items read.
pub fn huawei_body(data: &[u8]) {
    fulcrum_api_huawei::fuzz::body(data);
}

/// Azure backend bodies: `properties` decoded, secrets unmasked, translated into the
/// model (URL, durations, circuit breaker rules).
pub fn azure_body(data: &[u8]) {
    fulcrum_api_azure::fuzz::body(data);
}

/// Azure API policy documents (the first byte 0) or API bodies (otherwise): the policy
/// parsed as XML and checked, the API's properties decoded and translated into its kept
/// fields, which must read back whole.
pub fn azure_api(data: &[u8]) {
    fulcrum_api_azure::fuzz::api(data);
}
