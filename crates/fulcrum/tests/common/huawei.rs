//! A Huawei caller over the harness's client, for the ELB and VPC paths: an `X-Auth-Token`
//! ([`Huawei::new`] uses [`HUAWEI_TOKEN`], which [`HUAWEI_CONFIG`] admits for
//! [`HUAWEI_PROJECT`]), or an AK/SK pair that signs each request as `huaweicloudsdkcore` does
//! (`SDK-HMAC-SHA256` over the method, the path with a trailing `/`, the query, `host`,
//! `x-sdk-date` and, with a body, `content-type`, and the body's SHA-256). `{p}` in a path is
//! replaced by [`HUAWEI_PROJECT`]; paths are used as they are otherwise: give ones that need
//! no percent-encoding.

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Api, Resp};

pub const HUAWEI_TOKEN: &str = "huawei-test-token-0001";
pub const HUAWEI_PROJECT: &str = "0123456789abcdef0123456789abcdef";

/// The `[huawei]` section that admits [`HUAWEI_TOKEN`] for [`HUAWEI_PROJECT`].
pub const HUAWEI_CONFIG: &str = "\n[huawei]\ntokens = [{ name = \"tests\", token = \"huawei-test-token-0001\", project_id = \"0123456789abcdef0123456789abcdef\" }]\n";

pub enum Credential {
    Token(String),
    AkSk { ak: String, sk: String },
}

pub struct Huawei {
    pub api: Api,
    pub credential: Credential,
}

impl Huawei {
    /// [`HUAWEI_TOKEN`]'s caller.
    pub fn new(api: &Api) -> Huawei {
        Huawei::token(api, HUAWEI_TOKEN)
    }

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
        let target = &target.replace("{p}", HUAWEI_PROJECT);
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

    /// A call that must answer `status`; returns its body.
    pub async fn expect(
        &self,
        status: u16,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let r = self.call(method, path, body).await;
        assert_eq!(r.status, status, "{method} {path}: {}", r.body);
        r.body
    }

    /// A VPC error: `status` with `code`, in the VPC API's `{code, message}` shape.
    pub async fn vpc_error(
        &self,
        status: u16,
        code: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> String {
        let b = self.expect(status, method, path, body).await;
        assert_eq!(b["code"], code, "{method} {path}: {b}");
        assert!(b.get("error_code").is_none(), "VPC shape, not ELB's: {b}");
        b["message"].as_str().expect("message").to_owned()
    }

    pub async fn create_vpc(&self, name: &str, cidr: &str) -> String {
        let b = self
            .expect(
                200,
                "POST",
                "/v1/{p}/vpcs",
                Some(json!({"vpc": {"name": name, "cidr": cidr}})),
            )
            .await;
        b["vpc"]["id"].as_str().expect("vpc id").to_owned()
    }

    /// A subnet of `vpc`; returns its body (`id`, `neutron_subnet_id`, …).
    pub async fn create_subnet(&self, vpc: &str, cidr: &str, gateway: &str) -> Value {
        let b = self
            .expect(
                200,
                "POST",
                "/v1/{p}/subnets",
                Some(json!({"subnet": {"name": format!("s-{cidr}"), "cidr": cidr,
                                       "gateway_ip": gateway, "vpc_id": vpc}})),
            )
            .await;
        b["subnet"].clone()
    }

    /// A v3 load balancer on the subnet whose `neutron_subnet_id` is `subnet`, with the
    /// address given or (`None`) allocated; returns the response (status and body).
    pub async fn create_lb(&self, name: &str, subnet: &str, vip: Option<&str>) -> Resp {
        let mut lb = json!({"name": name, "vip_subnet_cidr_id": subnet});
        if let Some(v) = vip {
            lb["vip_address"] = json!(v);
        }
        self.call(
            "POST",
            "/v3/{p}/elb/loadbalancers",
            Some(json!({ "loadbalancer": lb })),
        )
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
