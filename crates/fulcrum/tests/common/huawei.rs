//! A Huawei ELB caller over the harness's client: an `X-Auth-Token`, or an AK/SK pair that
//! signs each request as `huaweicloudsdkcore` does (`SDK-HMAC-SHA256` over the method, the
//! path with a trailing `/`, the query, `host`, `x-sdk-date` and, with a body,
//! `content-type`, and the body's SHA-256). Paths are used as they are: give ones that need
//! no percent-encoding.

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Api, Resp};

pub enum Credential {
    Token(String),
    AkSk { ak: String, sk: String },
}

pub struct Huawei {
    pub api: Api,
    pub credential: Credential,
}

impl Huawei {
    pub fn token(api: &Api, token: &str) -> Huawei {
        Huawei {
            api: api.anonymous(),
            credential: Credential::Token(token.to_owned()),
        }
    }

    pub fn ak_sk(api: &Api, ak: &str, sk: &str) -> Huawei {
        Huawei {
            api: api.anonymous(),
            credential: Credential::AkSk {
                ak: ak.to_owned(),
                sk: sk.to_owned(),
            },
        }
    }

    pub async fn call(&self, method: &str, target: &str, body: Option<Value>) -> Resp {
        let body = body.map(|b| b.to_string());
        let headers: Vec<(&str, String)> = match &self.credential {
            Credential::Token(t) => vec![("x-auth-token", t.clone())],
            Credential::AkSk { ak, sk } => self.signature(method, target, body.as_deref(), ak, sk),
        };
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.api
            .raw(method, target, body.as_deref(), &headers)
            .await
    }

    fn signature(
        &self,
        method: &str,
        target: &str,
        body: Option<&str>,
        ak: &str,
        sk: &str,
    ) -> Vec<(&'static str, String)> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut query: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
        query.sort();
        let date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
        let host = self.api.base.trim_start_matches("http://").to_owned();
        // The harness sends `application/json` with every body.
        let mut signed = Vec::new();
        if body.is_some() {
            signed.push(("content-type", "application/json".to_owned()));
        }
        signed.push(("host", host));
        signed.push(("x-sdk-date", date.clone()));
        let names = signed.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(";");
        let canonical_headers: String = signed.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let canonical = format!(
            "{}\n{}/\n{}\n{canonical_headers}\n{names}\n{}",
            method.to_ascii_uppercase(),
            path.trim_end_matches('/'),
            query.join("&"),
            hex::encode(Sha256::digest(body.unwrap_or_default().as_bytes())),
        );
        let to_sign = format!(
            "SDK-HMAC-SHA256\n{date}\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(sk.as_bytes()).expect("any key length");
        mac.update(to_sign.as_bytes());
        let signature = hex::encode(mac.finalize().into_bytes());
        vec![
            ("x-sdk-date", date),
            (
                "authorization",
                format!(
                    "SDK-HMAC-SHA256 Access={ak}, SignedHeaders={names}, Signature={signature}"
                ),
            ),
        ]
    }
}
