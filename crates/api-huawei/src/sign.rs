//! `SDK-HMAC-SHA256`, the AK/SK signature `huaweicloudsdkcore` puts on every request,
//! verified exactly as the SDK computes it. Pure: no I/O, the clock is an argument.
//!
//! ```text
//! Authorization: SDK-HMAC-SHA256 Access=<AK>, SignedHeaders=<h1;h2;…>, Signature=<hex>
//! CanonicalRequest = METHOD \n CanonicalURI \n CanonicalQuery \n CanonicalHeaders \n SignedHeaders \n hex(sha256(body))
//! StringToSign     = "SDK-HMAC-SHA256" \n X-Sdk-Date \n hex(sha256(CanonicalRequest))
//! Signature        = hex(hmac_sha256(SK, StringToSign))
//! ```
//! The signed headers are whatever the client says it signed (the SDK signs User-Agent
//! too), so the canonical headers are rebuilt from the `SignedHeaders` list.

use chrono::{DateTime, NaiveDateTime, Utc};
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub(crate) const ALGORITHM: &str = "SDK-HMAC-SHA256";
/// Hash of an empty body: the SDK uses it for every request without one.
const EMPTY_HASH: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// How far `X-Sdk-Date` may be from our clock, either way (Huawei's API gateway: 15 min).
pub(crate) const MAX_SKEW_SECS: i64 = 15 * 60;

/// Python's `quote(s, safe='~')`: everything but RFC 3986 unreserved characters.
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The parts of an `Authorization: SDK-HMAC-SHA256 …` header.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct AuthHeader<'a> {
    pub access_key: &'a str,
    /// Lowercase names, in the order given.
    pub signed_headers: Vec<&'a str>,
    pub signature: &'a str,
}

/// Why a signature was refused. The messages never contain a secret.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SignError {
    Malformed(&'static str),
    UnsupportedAlgorithm(String),
    MissingSignedHeader(String),
    /// A header every verifiable request must sign is not in `SignedHeaders`.
    UnsignedHeader(&'static str),
    BadDate,
    Skewed,
    UnsignedPayload,
    Mismatch,
}

impl std::fmt::Display for SignError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignError::Malformed(what) => write!(f, "malformed Authorization header: {what}"),
            SignError::UnsupportedAlgorithm(a) => write!(
                f,
                "signature algorithm {a:?} is not supported; use {ALGORITHM}"
            ),
            SignError::MissingSignedHeader(h) => {
                write!(f, "header {h} is listed in SignedHeaders but not sent")
            }
            SignError::UnsignedHeader(h) => write!(f, "header {h} must be signed"),
            SignError::BadDate => write!(f, "X-Sdk-Date must look like 20240501T100000Z"),
            SignError::Skewed => write!(
                f,
                "X-Sdk-Date is more than {} minutes away from the server's clock",
                MAX_SKEW_SECS / 60
            ),
            SignError::UnsignedPayload => write!(f, "unsigned payloads are not accepted"),
            SignError::Mismatch => write!(f, "verify aksk signature fail"),
        }
    }
}

/// Parses `SDK-HMAC-SHA256 Access=…, SignedHeaders=…, Signature=…`.
pub(crate) fn parse_authorization(value: &str) -> Result<AuthHeader<'_>, SignError> {
    let (algorithm, rest) = value
        .trim()
        .split_once(' ')
        .ok_or(SignError::Malformed("expected '<algorithm> Access=…'"))?;
    if algorithm != ALGORITHM {
        return Err(SignError::UnsupportedAlgorithm(algorithm.to_owned()));
    }
    let (mut access, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or(SignError::Malformed("expected key=value pairs"))?;
        match k {
            "Access" => access = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => signature = Some(v),
            _ => return Err(SignError::Malformed("unknown field")),
        }
    }
    let access_key = access
        .filter(|v| !v.is_empty())
        .ok_or(SignError::Malformed("Access is missing"))?;
    let signed = signed
        .filter(|v| !v.is_empty())
        .ok_or(SignError::Malformed("SignedHeaders is missing"))?;
    let signature = signature
        .filter(|v| !v.is_empty())
        .ok_or(SignError::Malformed("Signature is missing"))?;
    Ok(AuthHeader {
        access_key,
        signed_headers: signed.split(';').collect(),
        signature,
    })
}

/// The request as the signature covers it.
pub(crate) struct SignedRequest<'a, 'v> {
    pub method: &'a str,
    /// The path as sent (still percent-encoded).
    pub raw_path: &'a str,
    /// The query as sent, without `?`.
    pub raw_query: Option<&'a str>,
    /// Looks a header up by lowercase name.
    pub header: &'a dyn Fn(&str) -> Option<&'v str>,
    pub body: &'a [u8],
}

/// `unquote`, split on `/`, `quote(seg, safe='~')` each segment, trailing `/` always.
pub(crate) fn canonical_uri(raw_path: &str) -> String {
    let decoded = percent_decode_str(raw_path).decode_utf8_lossy();
    let mut out = decoded
        .split('/')
        .map(|seg| utf8_percent_encode(seg, ENCODE).to_string())
        .collect::<Vec<_>>()
        .join("/");
    if !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// Python's `parse_qsl(keep_blank_values=True)`, sorted by key then value, re-encoded.
pub(crate) fn canonical_query(raw_query: Option<&str>) -> String {
    let Some(q) = raw_query else {
        return String::new();
    };
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        percent_decode_str(&s).decode_utf8_lossy().into_owned()
    };
    let mut pairs: Vec<(String, String)> = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, ENCODE),
                utf8_percent_encode(v, ENCODE)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The canonical request the client signed.
pub(crate) fn canonical_request(
    req: &SignedRequest<'_, '_>,
    auth: &AuthHeader<'_>,
) -> Result<String, SignError> {
    let mut headers = String::new();
    for name in &auth.signed_headers {
        let value =
            (req.header)(name).ok_or_else(|| SignError::MissingSignedHeader((*name).to_owned()))?;
        headers.push_str(name);
        headers.push(':');
        headers.push_str(value.trim());
        headers.push('\n');
    }
    let payload = if req.body.is_empty() {
        EMPTY_HASH.to_owned()
    } else if (req.header)("x-sdk-content-sha256").is_some() {
        // The SDK sends UNSIGNED-PAYLOAD for bodies that are not JSON; this API takes
        // only JSON, and an unsigned body could be swapped in transit.
        return Err(SignError::UnsignedPayload);
    } else {
        hex::encode(Sha256::digest(req.body))
    };
    Ok(format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method.to_ascii_uppercase(),
        canonical_uri(req.raw_path),
        canonical_query(req.raw_query),
        headers,
        auth.signed_headers.join(";"),
        payload
    ))
}

pub(crate) fn string_to_sign(sdk_date: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{sdk_date}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    )
}

/// Lowercase hex HMAC-SHA256 keyed with the raw secret key (no key derivation).
pub(crate) fn signature(secret_key: &str, string_to_sign: &str) -> String {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret_key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(string_to_sign.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

pub(crate) fn parse_sdk_date(value: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(value, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc())
}

/// What can be checked before the body is read (the signature covers its hash): `host`
/// and `x-sdk-date` are signed, every signed header is sent, and `X-Sdk-Date` is a date
/// within the allowed skew. Returns `X-Sdk-Date`.
pub(crate) fn check_head<'v>(
    header: &dyn Fn(&str) -> Option<&'v str>,
    auth: &AuthHeader<'_>,
    now: DateTime<Utc>,
) -> Result<&'v str, SignError> {
    for required in ["host", "x-sdk-date"] {
        if !auth.signed_headers.contains(&required) {
            return Err(SignError::UnsignedHeader(required));
        }
    }
    for name in &auth.signed_headers {
        if header(name).is_none() {
            return Err(SignError::MissingSignedHeader((*name).to_owned()));
        }
    }
    let date_text = header("x-sdk-date")
        .ok_or_else(|| SignError::MissingSignedHeader("x-sdk-date".into()))?
        .trim();
    let date = parse_sdk_date(date_text).ok_or(SignError::BadDate)?;
    if (now - date).num_seconds().abs() > MAX_SKEW_SECS {
        return Err(SignError::Skewed);
    }
    Ok(date_text)
}

/// Verifies a parsed `Authorization` header against the request with the caller's
/// secret key. `host` and `x-sdk-date` must be signed: without them a signature could
/// be replayed at another server or at any time.
pub(crate) fn verify(
    req: &SignedRequest<'_, '_>,
    auth: &AuthHeader<'_>,
    secret_key: &str,
    now: DateTime<Utc>,
) -> Result<(), SignError> {
    let date_text = check_head(req.header, auth, now)?;
    let creq = canonical_request(req, auth)?;
    let expected = signature(secret_key, &string_to_sign(date_text, &creq));
    if bool::from(expected.as_bytes().ct_eq(auth.signature.as_bytes())) {
        Ok(())
    } else {
        Err(SignError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const PROJECT: &str = "0123456789abcdef0123456789abcdef";
    const PATH: &str =
        "/v3/0123456789abcdef0123456789abcdef/elb/pools/5a9a3e9e-d1aa-448e-af37-a70171f2a332";
    const BODY: &str = r#"{"pool": {"lb_algorithm": "ROUND_ROBIN", "name": "pool-1"}}"#;
    const AUTH: &str = "SDK-HMAC-SHA256 Access=AKTEST, SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-date, Signature=1e980fabcb5d26dd59f29c74b07e506f851bd9cd776c7b3c869eac8afd966ed8";

    fn vector_header(name: &str) -> Option<&'static str> {
        match name {
            "content-type" => Some("application/json;charset=utf-8"),
            "host" => Some("127.0.0.1:8080"),
            "user-agent" => Some("huaweicloud-usdk-python/3.0"),
            "x-project-id" => Some(PROJECT),
            "x-sdk-date" => Some("20240501T100000Z"),
            _ => None,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        parse_sdk_date(s).unwrap()
    }

    fn check(
        method: &str,
        path: &str,
        body: &str,
        header: &dyn Fn(&str) -> Option<&'static str>,
        auth: &str,
        now: &str,
    ) -> Result<(), SignError> {
        let auth = parse_authorization(auth)?;
        let req = SignedRequest {
            method,
            raw_path: path,
            raw_query: None,
            header,
            body: body.as_bytes(),
        };
        verify(&req, &auth, "SKTEST", at(now))
    }

    #[test]
    fn research_vector_canonical_request_and_signature() {
        let auth = parse_authorization(AUTH).unwrap();
        assert_eq!(auth.access_key, "AKTEST");
        let req = SignedRequest {
            method: "PUT",
            raw_path: PATH,
            raw_query: None,
            header: &vector_header,
            body: BODY.as_bytes(),
        };
        let creq = canonical_request(&req, &auth).unwrap();
        assert_eq!(
            creq,
            format!(
                "PUT\n{PATH}/\n\ncontent-type:application/json;charset=utf-8\nhost:127.0.0.1:8080\n\
                 user-agent:huaweicloud-usdk-python/3.0\nx-project-id:{PROJECT}\nx-sdk-date:20240501T100000Z\n\n\
                 content-type;host;user-agent;x-project-id;x-sdk-date\n\
                 cd9bf5ccc227e9e9c1b1546e647869e56ce50709c48c044e7be3839c53de0ebf"
            )
        );
        let sts = string_to_sign("20240501T100000Z", &creq);
        assert_eq!(
            sts,
            "SDK-HMAC-SHA256\n20240501T100000Z\n3a26fc2425d241ee0c8b5836272afacf90b61b406eb1b2cee8c645f614a6406c"
        );
        assert_eq!(
            signature("SKTEST", &sts),
            "1e980fabcb5d26dd59f29c74b07e506f851bd9cd776c7b3c869eac8afd966ed8"
        );
        assert_eq!(
            check("PUT", PATH, BODY, &vector_header, AUTH, "20240501T100500Z"),
            Ok(())
        );
    }

    #[test]
    fn tampered_requests_are_refused() {
        let now = "20240501T100000Z";
        let ok = |m, p, b, a: &str| check(m, p, b, &vector_header, a, now);
        assert_eq!(ok("PUT", PATH, BODY, AUTH), Ok(()));
        // Another body, method, path or key.
        let body2 = BODY.replace("ROUND_ROBIN", "SOURCE_IP");
        assert_eq!(ok("PUT", PATH, &body2, AUTH), Err(SignError::Mismatch));
        assert_eq!(ok("POST", PATH, BODY, AUTH), Err(SignError::Mismatch));
        let path2 = PATH.replace("5a9a", "6a9a");
        assert_eq!(ok("PUT", &path2, BODY, AUTH), Err(SignError::Mismatch));
        let auth = parse_authorization(AUTH).unwrap();
        let req = SignedRequest {
            method: "PUT",
            raw_path: PATH,
            raw_query: None,
            header: &vector_header,
            body: BODY.as_bytes(),
        };
        assert_eq!(
            verify(&req, &auth, "SKTEST2", at(now)),
            Err(SignError::Mismatch)
        );
        // A flipped signature digit.
        let flipped = AUTH.replace("ed8", "ed9");
        assert_eq!(ok("PUT", PATH, BODY, &flipped), Err(SignError::Mismatch));
        // A changed signed header value.
        let other_host = |n: &str| {
            if n == "host" {
                Some("127.0.0.1:8081")
            } else {
                vector_header(n)
            }
        };
        assert_eq!(
            check("PUT", PATH, BODY, &other_host, AUTH, now),
            Err(SignError::Mismatch)
        );
        // A signed header that is not sent.
        let no_ua = |n: &str| {
            if n == "user-agent" {
                None
            } else {
                vector_header(n)
            }
        };
        assert_eq!(
            check("PUT", PATH, BODY, &no_ua, AUTH, now),
            Err(SignError::MissingSignedHeader("user-agent".into()))
        );
        // Host or date left out of SignedHeaders.
        let unsigned_date = AUTH.replace(";x-sdk-date", "");
        assert_eq!(
            ok("PUT", PATH, BODY, &unsigned_date),
            Err(SignError::UnsignedHeader("x-sdk-date"))
        );
    }

    #[test]
    fn date_skew_is_bounded_both_ways() {
        let c = |now| check("PUT", PATH, BODY, &vector_header, AUTH, now);
        assert_eq!(c("20240501T101500Z"), Ok(()));
        assert_eq!(c("20240501T094500Z"), Ok(()));
        assert_eq!(c("20240501T101501Z"), Err(SignError::Skewed));
        assert_eq!(c("20240501T094459Z"), Err(SignError::Skewed));
        let bad_date = |n: &str| {
            if n == "x-sdk-date" {
                Some("2024-05-01T10:00:00Z")
            } else {
                vector_header(n)
            }
        };
        assert_eq!(
            check("PUT", PATH, BODY, &bad_date, AUTH, "20240501T100000Z"),
            Err(SignError::BadDate)
        );
    }

    #[test]
    fn authorization_header_parsing() {
        assert!(matches!(
            parse_authorization("SDK-HMAC-SM3 Access=a, SignedHeaders=host, Signature=ab"),
            Err(SignError::UnsupportedAlgorithm(_))
        ));
        assert!(matches!(
            parse_authorization("V11-HMAC-SHA256 Credential=a/b, SignedHeaders=host, Signature=ab"),
            Err(SignError::UnsupportedAlgorithm(_))
        ));
        assert!(parse_authorization("SDK-HMAC-SHA256 Access=a, Signature=ab").is_err());
        assert!(parse_authorization("SDK-HMAC-SHA256").is_err());
        assert!(parse_authorization("Bearer abc").is_err());
    }

    #[test]
    fn canonical_uri_and_query_follow_python_quote() {
        assert_eq!(
            canonical_uri("/v2.0/lbaas/pools/p/members"),
            "/v2.0/lbaas/pools/p/members/"
        );
        assert_eq!(canonical_uri("/a/"), "/a/");
        assert_eq!(canonical_uri("/a%20b/c%2Fd"), "/a%20b/c/d/");
        assert_eq!(canonical_uri("/x:y@z"), "/x%3Ay%40z/");
        assert_eq!(
            canonical_query(Some(
                "name=pool-1&limit=2&name=a%20b&marker=abc&admin_state_up=true"
            )),
            "admin_state_up=true&limit=2&marker=abc&name=a%20b&name=pool-1"
        );
        assert_eq!(canonical_query(Some("a=b+c&flag")), "a=b%20c&flag=");
        assert_eq!(canonical_query(None), "");
    }

    #[test]
    fn empty_body_hashes_as_empty_and_unsigned_payloads_are_refused() {
        let auth = parse_authorization(AUTH).unwrap();
        let with_unsigned = |n: &str| {
            if n == "x-sdk-content-sha256" {
                Some("UNSIGNED-PAYLOAD")
            } else {
                vector_header(n)
            }
        };
        let req = SignedRequest {
            method: "GET",
            raw_path: PATH,
            raw_query: None,
            header: &with_unsigned,
            body: b"",
        };
        assert!(
            canonical_request(&req, &auth)
                .unwrap()
                .ends_with(EMPTY_HASH)
        );
        let req = SignedRequest {
            body: BODY.as_bytes(),
            ..req
        };
        assert_eq!(
            canonical_request(&req, &auth),
            Err(SignError::UnsignedPayload)
        );
    }

    /// Requests the real SDK signed (`huaweicloudsdkcore`'s own `Signer`, fixed date; made by
    /// running it, see `testdata/sdk_signed.json`): the verifier accepts each as sent, with
    /// its query, and refuses it once anything signed changes.
    #[test]
    fn requests_signed_by_the_real_sdk_verify() {
        fn signed<'a>(
            method: &'a str,
            path: &'a str,
            query: Option<&'a str>,
            header: &'a dyn Fn(&str) -> Option<&'a str>,
            body: &'a str,
        ) -> SignedRequest<'a, 'a> {
            SignedRequest {
                method,
                raw_path: path,
                raw_query: query,
                header,
                body: body.as_bytes(),
            }
        }
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("testdata/sdk_signed.json")).unwrap();
        let secret = fixture["secret_key"].as_str().unwrap();
        let requests = fixture["requests"].as_array().unwrap();
        assert_eq!(requests.len(), 4);
        for r in requests {
            let uri = r["uri"].as_str().unwrap();
            let (path, query) = match uri.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (uri, None),
            };
            let headers = r["headers"].as_object().unwrap();
            let header = |name: &str| headers.get(name).and_then(|v| v.as_str());
            let auth = parse_authorization(header("authorization").unwrap()).unwrap();
            assert_eq!(auth.access_key, fixture["access_key"].as_str().unwrap());
            let method = r["method"].as_str().unwrap();
            let body = r["body"].as_str().unwrap();
            let now = at(header("x-sdk-date").unwrap());
            let ok = signed(method, path, query, &header, body);
            assert_eq!(verify(&ok, &auth, secret, now), Ok(()), "{method} {uri}");
            assert_eq!(
                verify(&ok, &auth, "another secret", now),
                Err(SignError::Mismatch)
            );
            let other_path = format!("{path}x");
            let moved = signed(method, &other_path, query, &header, body);
            assert_eq!(
                verify(&moved, &auth, secret, now),
                Err(SignError::Mismatch),
                "{method} {uri}: path changed"
            );
            if query.is_some() {
                let no_query = signed(method, path, None, &header, body);
                assert_eq!(
                    verify(&no_query, &auth, secret, now),
                    Err(SignError::Mismatch),
                    "{method} {uri}: query dropped"
                );
            }
            if !body.is_empty() {
                let other_body = format!("{body} ");
                let changed = signed(method, path, query, &header, &other_body);
                assert_eq!(
                    verify(&changed, &auth, secret, now),
                    Err(SignError::Mismatch),
                    "{method} {uri}: body changed"
                );
            }
        }
    }
}
