//! fulcrum's Huawei dialect driven with `X-Auth-Token` (the AK/SK signature has its own
//! tests, and the real SDK's in `sdk/huawei`): [`HUAWEI_CONFIG`] and [`Huawei`], a client
//! of the ELB and VPC paths of one project.

use serde_json::{Value, json};

use super::{Api, Resp};

pub const HUAWEI_TOKEN: &str = "huawei-test-token-0001";
pub const HUAWEI_PROJECT: &str = "0123456789abcdef0123456789abcdef";

/// The `[huawei]` section that admits [`HUAWEI_TOKEN`] for [`HUAWEI_PROJECT`].
pub const HUAWEI_CONFIG: &str = "\n[huawei]\ntokens = [{ name = \"tests\", token = \"huawei-test-token-0001\", project_id = \"0123456789abcdef0123456789abcdef\" }]\n";

pub struct Huawei {
    api: Api,
}

impl Huawei {
    pub fn new(api: &Api) -> Huawei {
        Huawei {
            api: api.anonymous(),
        }
    }

    /// `path` under `/v1/{project}` (VPC) or `/v3/{project}/elb` (ELB) is the caller's: it
    /// starts with `/v1/` or `/v3/`, and `{p}` in it is replaced by the project id.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        let path = path.replace("{p}", HUAWEI_PROJECT);
        let b = body.map(|b| b.to_string());
        self.api
            .raw(
                method,
                &path,
                b.as_deref(),
                &[("x-auth-token", HUAWEI_TOKEN)],
            )
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
}
