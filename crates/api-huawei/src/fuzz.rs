//! The Huawei signature for `fulcrum_api::fuzzing::huawei_signature`, and the request
//! bodies for `fulcrum_api::fuzzing::huawei_body` (in `handlers.rs`, beside the shapes).

use chrono::{DateTime, Utc};

use super::sign::{canonical_query, canonical_uri, parse_authorization, parse_sdk_date, verify};
use crate::fuzzing::TextRequest;
pub use crate::handlers::fuzz_body as body;

pub fn signature(data: &[u8]) {
    let Some(req) = TextRequest::parse(data) else {
        return;
    };
    let (raw_path, raw_query) = match req.target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (req.target, None),
    };
    // What the server canonicalises whatever the Authorization header says.
    let _ = canonical_uri(raw_path);
    let _ = canonical_query(raw_query);
    let header = |name: &str| -> Option<&str> {
        req.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    };
    let Some(auth) = header("authorization") else {
        return;
    };
    let Ok(auth) = parse_authorization(auth) else {
        return;
    };
    // The clock where the request says it is (so the date check can pass).
    let now = header("x-sdk-date")
        .and_then(|d| parse_sdk_date(d.trim()))
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let signed = super::sign::SignedRequest {
        method: req.method,
        raw_path,
        raw_query,
        header: &header,
        body: req.body,
    };
    let _ = verify(&signed, &auth, "fuzz-secret-key", now);
}
