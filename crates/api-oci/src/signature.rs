//! OCI request signatures (draft-cavage HTTP Signatures, `rsa-sha256`, "version 1"),
//! verified the way OCI's services do. Pure: no I/O, the clock is a parameter.
//!
//! ```text
//! Authorization: Signature algorithm="rsa-sha256",headers="date (request-target) host …",
//!                keyId="<tenancy>/<user>/<fingerprint>",signature="<base64>",version="1"
//! ```
//! The signing string is one `name: value` line per signed header, in the order listed,
//! joined by `\n`; `(request-target)` is `<lowercase method> <path?query as sent>`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use http::HeaderMap;
use rsa::RsaPublicKey;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use sha2::{Digest, Sha256};

/// How far a request's `date` may be from the server's clock.
pub(crate) const MAX_SKEW: Duration = Duration::from_secs(5 * 60);

/// A registered public key and the principal it authenticates.
#[derive(Clone, Debug)]
pub(crate) struct ApiKey {
    pub principal: String,
    pub key: RsaPublicKey,
    /// The compartment OCIDs the key may see and change; `None`: every one.
    pub compartments: Option<Vec<String>>,
}

/// Where the verifier finds the key a signature names.
pub(crate) trait KeySource {
    /// The key registered under `key_id` (`tenancy/user/fingerprint`).
    fn find(&self, key_id: &str) -> Option<Arc<ApiKey>>;
}

/// Keys by key id (`tenancy/user/fingerprint`).
#[derive(Clone, Debug, Default)]
pub(crate) struct KeyRing {
    keys: HashMap<String, Arc<ApiKey>>,
}

impl KeyRing {
    pub fn insert(&mut self, key_id: String, key: ApiKey) {
        self.keys.insert(key_id, Arc::new(key));
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl KeySource for KeyRing {
    fn find(&self, key_id: &str) -> Option<Arc<ApiKey>> {
        self.keys.get(key_id).cloned()
    }
}

/// Reads an RSA public key in PEM: SubjectPublicKeyInfo (`BEGIN PUBLIC KEY`, what
/// `openssl rsa -pubout` and OCI's console give) or PKCS#1 (`BEGIN RSA PUBLIC KEY`).
pub(crate) fn parse_public_key(pem: &str) -> Result<RsaPublicKey, String> {
    let pem = pem.trim();
    RsaPublicKey::from_public_key_pem(pem)
        .or_else(|_| RsaPublicKey::from_pkcs1_pem(pem))
        .map_err(|e| format!("not an RSA public key in PEM: {e}"))
}

/// The parts of a request a signature covers.
#[cfg(test)]
pub(crate) struct SignedRequest<'a> {
    pub method: &'a http::Method,
    /// Path and query exactly as received (still percent-encoded).
    pub target: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// Why a request is not authenticated. The message goes to the caller (it names what
/// is wrong, never a secret).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct AuthFailure(pub String);

fn fail<T>(message: impl Into<String>) -> Result<T, AuthFailure> {
    Err(AuthFailure(message.into()))
}

/// Checks a request's signature and returns the principal of the key that signed it: what
/// the server does in two steps, around reading the body.
#[cfg(test)]
pub(crate) fn verify(
    req: &SignedRequest<'_>,
    keys: &impl KeySource,
    now: SystemTime,
) -> Result<Arc<ApiKey>, AuthFailure> {
    let head = verify_head(req.method, req.target, req.headers, keys, now)?;
    head.check_body(req.headers, req.body)?;
    Ok(head.key)
}

/// A request whose signature verified over its method, target and headers; what it says
/// of the body (its length, its digest) is still to be checked against the body.
pub(crate) struct VerifiedHead {
    pub key: Arc<ApiKey>,
    /// The signature covers `content-length`: the body must be exactly that long.
    pub signed_length: Option<usize>,
    /// The signature covers `x-content-sha256`.
    signed_digest: bool,
}

/// Everything a signature can prove before the body is read: the key is registered, the
/// date is within the allowed skew, the headers a method must sign are signed, and the
/// signature verifies. The body is covered only through `x-content-sha256` and
/// `content-length`, which [`VerifiedHead::check_body`] compares with it once read.
pub(crate) fn verify_head(
    method: &http::Method,
    target: &str,
    headers: &HeaderMap,
    keys: &impl KeySource,
    now: SystemTime,
) -> Result<VerifiedHead, AuthFailure> {
    let Some(auth) = headers.get(http::header::AUTHORIZATION) else {
        return fail("the request is not signed (no Authorization header)");
    };
    let Ok(auth) = auth.to_str() else {
        return fail("the Authorization header is not valid text");
    };
    let params = parse_authorization(auth)?;
    let param = |name: &str| params.get(name).copied();
    match param("algorithm") {
        Some("rsa-sha256") => {}
        Some(other) => return fail(format!("unsupported signature algorithm {other:?}")),
        None => return fail("the signature names no algorithm"),
    }
    if let Some(v) = param("version")
        && v != "1"
    {
        return fail(format!("unsupported signature version {v:?}"));
    }
    let Some(key_id) = param("keyId") else {
        return fail("the signature names no keyId");
    };
    let Some(signature) = param("signature") else {
        return fail("the Authorization header carries no signature");
    };
    let signed: Vec<String> = param("headers")
        .unwrap_or("date")
        .split(' ')
        .filter(|h| !h.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    for required in required_headers(method) {
        if !signed.iter().any(|h| h == required) {
            return fail(format!("the signature must cover the {required} header"));
        }
    }

    let mut lines = Vec::with_capacity(signed.len());
    for name in &signed {
        if name == "(request-target)" {
            let method = method.as_str().to_ascii_lowercase();
            lines.push(format!("(request-target): {method} {target}"));
            continue;
        }
        let mut values = headers.get_all(name.as_str()).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return fail(format!(
                "the signed header {name} must appear exactly once in the request"
            ));
        };
        let Ok(value) = value.to_str() else {
            return fail(format!("the signed header {name} is not valid text"));
        };
        lines.push(format!("{name}: {value}"));
    }
    let signed_digest = signed.iter().any(|h| h == "x-content-sha256");
    let signed_length = match signed.iter().any(|h| h == "content-length") {
        true => match header(headers, "content-length").and_then(|v| v.parse::<usize>().ok()) {
            Some(n) => Some(n),
            None => return fail("content-length is not a length"),
        },
        false => None,
    };
    check_date(headers, now)?;

    let Some(key) = keys.find(key_id) else {
        return fail(format!("no key is registered with keyId {key_id:?}"));
    };
    let Ok(raw) = B64.decode(signature) else {
        return fail("the signature is not base64");
    };
    let Ok(signature) = Signature::try_from(raw.as_slice()) else {
        return fail("the signature is malformed");
    };
    let verifier = VerifyingKey::<Sha256>::new(key.key.clone());
    if verifier
        .verify(lines.join("\n").as_bytes(), &signature)
        .is_err()
    {
        return fail("the signature does not verify");
    }
    Ok(VerifiedHead {
        key,
        signed_length,
        signed_digest,
    })
}

impl VerifiedHead {
    /// The body headers are only worth signing if they describe this body.
    pub fn check_body(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), AuthFailure> {
        if self.signed_digest {
            let digest = B64.encode(Sha256::digest(body));
            if header(headers, "x-content-sha256") != Some(digest.as_str()) {
                return fail("x-content-sha256 does not match the body");
            }
        }
        if self.signed_length.is_some_and(|n| n != body.len()) {
            return fail("content-length does not match the body");
        }
        Ok(())
    }
}

/// What every signature must cover, by method (what OCI's SDKs sign).
fn required_headers(method: &http::Method) -> &'static [&'static str] {
    const BASE: &[&str] = &["date", "(request-target)", "host"];
    const WITH_BODY: &[&str] = &[
        "date",
        "(request-target)",
        "host",
        "content-length",
        "content-type",
        "x-content-sha256",
    ];
    match *method {
        http::Method::PUT | http::Method::POST | http::Method::PATCH => WITH_BODY,
        _ => BASE,
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn check_date(headers: &HeaderMap, now: SystemTime) -> Result<(), AuthFailure> {
    let Some(date) = header(headers, "date") else {
        return fail("the date header is missing");
    };
    let Ok(at) = httpdate::parse_http_date(date) else {
        return fail("the date header is not an HTTP date");
    };
    let skew = now
        .duration_since(at)
        .or_else(|_| at.duration_since(now))
        .unwrap_or_default();
    if skew > MAX_SKEW {
        return fail(format!(
            "the date header is {}s away from the server's clock (at most {}s allowed)",
            skew.as_secs(),
            MAX_SKEW.as_secs()
        ));
    }
    Ok(())
}

/// `Signature k="v",k="v"` → the parameters.
fn parse_authorization(value: &str) -> Result<HashMap<&str, &str>, AuthFailure> {
    let Some(rest) = value.trim().strip_prefix("Signature ") else {
        return fail("the Authorization header is not an OCI request signature");
    };
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let Some((name, after)) = rest.split_once('=') else {
            return fail("malformed signature parameters");
        };
        let Some(after) = after.strip_prefix('"') else {
            return fail("malformed signature parameters");
        };
        let Some((val, after)) = after.split_once('"') else {
            return fail("malformed signature parameters");
        };
        if params.insert(name.trim(), val).is_some() {
            return fail(format!(
                "the signature parameter {} appears twice",
                name.trim()
            ));
        }
        rest = after.trim_start().trim_start_matches(',').trim_start();
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use http::{HeaderName, HeaderValue, Method};
    use serde::Deserialize;

    use super::*;

    /// Requests the real `oci` Python SDK (2.189.0) signed with the key whose public half
    /// is `testdata/test_key.pub.pem`, captured from the wire.
    const CAPTURED: &str = include_str!("testdata/sdk_requests.json");
    const KEY: &str = include_str!("testdata/test_key.pub.pem");
    const OTHER_KEY: &str = include_str!("testdata/other_key.pub.pem");
    const KEY_ID: &str = "ocid1.tenancy.oc1..aaaatenancy/ocid1.user.oc1..aaaauser/a8:34:00:8e:6f:5c:62:0a:63:e5:63:93:3f:29:7b:24";

    #[derive(Deserialize, Clone)]
    struct Captured {
        method: String,
        target: String,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Captured {
        fn headers(&self) -> HeaderMap {
            let mut map = HeaderMap::new();
            for (k, v) in &self.headers {
                map.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            map
        }

        fn set(&mut self, name: &str, value: &str) {
            self.headers.retain(|(k, _)| k != name);
            self.headers.push((name.into(), value.into()));
        }

        fn date(&self) -> SystemTime {
            let d = &self.headers.iter().find(|(k, _)| k == "date").unwrap().1;
            httpdate::parse_http_date(d).unwrap()
        }
    }

    fn captured() -> (Captured, Captured) {
        let all: Vec<Captured> = serde_json::from_str(CAPTURED).unwrap();
        (all[0].clone(), all[1].clone())
    }

    fn ring(pem: &str) -> KeyRing {
        let mut r = KeyRing::default();
        r.insert(
            KEY_ID.into(),
            ApiKey {
                principal: "tester".into(),
                key: parse_public_key(pem).unwrap(),
                compartments: None,
            },
        );
        r
    }

    fn check(c: &Captured, keys: &KeyRing, now: SystemTime) -> Result<String, AuthFailure> {
        let method = Method::from_bytes(c.method.as_bytes()).unwrap();
        let headers = c.headers();
        verify(
            &SignedRequest {
                method: &method,
                target: &c.target,
                headers: &headers,
                body: c.body.as_bytes(),
            },
            keys,
            now,
        )
        .map(|k| k.principal.clone())
    }

    fn rejected(c: &Captured, keys: &KeyRing, now: SystemTime, why: &str) {
        let err = check(c, keys, now).unwrap_err();
        assert!(err.0.contains(why), "expected {why:?}, got {:?}", err.0);
    }

    #[test]
    fn the_sdks_own_requests_verify() {
        let (put, get) = captured();
        let keys = ring(KEY);
        assert_eq!(check(&put, &keys, put.date()).unwrap(), "tester");
        assert_eq!(check(&get, &keys, get.date()).unwrap(), "tester");
    }

    #[test]
    fn any_tampering_is_refused() {
        let (put, get) = captured();
        let keys = ring(KEY);
        let now = put.date();

        let mut c = put.clone();
        c.body = c.body.replace("\"weight\": 5", "\"weight\": 6");
        rejected(&c, &keys, now, "x-content-sha256 does not match");

        // A body re-hashed by an attacker still fails: the hash is signed.
        let mut c = put.clone();
        c.body = c.body.replace("\"weight\": 5", "\"weight\": 6");
        c.set(
            "x-content-sha256",
            &B64.encode(Sha256::digest(c.body.as_bytes())),
        );
        rejected(&c, &keys, now, "does not verify");

        let mut c = put.clone();
        c.target = c.target.replace("bs1", "bs2");
        rejected(&c, &keys, now, "does not verify");

        // The raw target: the decoded form is not what was signed.
        let mut c = put.clone();
        c.target = c.target.replace("%3A", ":");
        rejected(&c, &keys, now, "does not verify");

        let mut c = get.clone();
        c.target = c.target.replace("page=p2", "page=p3");
        rejected(&c, &keys, get.date(), "does not verify");

        let mut c = get.clone();
        c.set("host", "127.0.0.1:1");
        rejected(&c, &keys, get.date(), "does not verify");

        // The method is part of the signed target.
        let mut c = get.clone();
        c.method = "DELETE".into();
        rejected(&c, &keys, get.date(), "does not verify");
    }

    #[test]
    fn a_signature_by_another_key_or_an_unknown_key_id_is_refused() {
        let (put, _) = captured();
        rejected(&put, &ring(OTHER_KEY), put.date(), "does not verify");
        let mut c = put.clone();
        let auth = c
            .headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .unwrap()
            .1
            .clone();
        c.set("authorization", &auth.replace("aaaauser", "aaaaother"));
        rejected(&c, &ring(KEY), put.date(), "no key is registered");
    }

    #[test]
    fn the_date_must_be_within_five_minutes() {
        let (put, _) = captured();
        let keys = ring(KEY);
        let at = put.date();
        assert!(check(&put, &keys, at + Duration::from_secs(299)).is_ok());
        assert!(check(&put, &keys, at - Duration::from_secs(299)).is_ok());
        rejected(
            &put,
            &keys,
            at + Duration::from_secs(301),
            "away from the server's clock",
        );
        rejected(
            &put,
            &keys,
            at - Duration::from_secs(301),
            "away from the server's clock",
        );
    }

    #[test]
    fn missing_or_unsigned_headers_are_refused() {
        let (put, get) = captured();
        let keys = ring(KEY);
        let now = put.date();

        let mut c = put.clone();
        c.headers.retain(|(k, _)| k != "authorization");
        rejected(&c, &keys, now, "not signed");

        let mut c = put.clone();
        c.headers.retain(|(k, _)| k != "x-content-sha256");
        rejected(&c, &keys, now, "x-content-sha256 must appear exactly once");

        let mut c = get.clone();
        c.headers.retain(|(k, _)| k != "date");
        rejected(&c, &keys, get.date(), "date must appear exactly once");

        // A PUT whose signature leaves the body out is refused even if it verifies.
        let mut c = put.clone();
        let auth = c
            .headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .unwrap()
            .1
            .clone();
        c.set(
            "authorization",
            &auth.replace(" content-length content-type x-content-sha256", ""),
        );
        rejected(&c, &keys, now, "must cover the content-length header");

        let mut c = get.clone();
        c.set("authorization", "Bearer sdk-test-token");
        rejected(&c, &keys, get.date(), "not an OCI request signature");
    }

    #[test]
    fn both_pem_forms_load() {
        let key = parse_public_key(KEY).unwrap();
        use rsa::pkcs1::EncodeRsaPublicKey;
        let pkcs1 = key.to_pkcs1_pem(rsa::pkcs1::LineEnding::LF).unwrap();
        assert_eq!(parse_public_key(&pkcs1).unwrap(), key);
        assert!(parse_public_key("-----BEGIN PUBLIC KEY-----\nxx\n").is_err());
    }
}
