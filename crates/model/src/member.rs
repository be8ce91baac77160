use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::{
    Checker, LoadBalancerKind, MAX_NAME_LEN, MAX_WEIGHT, MemberId, PoolId, SubnetSpec, Timestamp,
    UpstreamSettings, ValidationError, is_host_name,
};

/// What a user sets on a member.
///
/// Admin states, as the seeds define them: `weight` 0 takes no new requests; `drain` takes
/// no new requests or connections but lets in-flight ones finish (and still serves clients
/// bound to it by persistence); `offline` and `admin_state_up = false` take no traffic at
/// all; `backup` members serve only while no non-backup member of the pool is available.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberSpec {
    #[serde(default)]
    pub name: String,
    /// IP address or DNS name of the backend server.
    pub address: String,
    /// 1..65535.
    pub port: u16,
    /// The subnet the address lies in (required by Huawei; optional natively).
    #[serde(default)]
    pub subnet_id: Option<crate::SubnetId>,
    /// Share of new requests relative to the other members; 0 = none.
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub backup: bool,
    #[serde(default)]
    pub drain: bool,
    #[serde(default)]
    pub offline: bool,
    #[serde(default = "crate::default_true")]
    pub admin_state_up: bool,
    /// Priority group, 0..100; lower is preferred (seed 003 pool services).
    #[serde(default)]
    pub priority: u8,
    /// Most concurrent connections; absent = the pool's limit.
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// Overrides the pool's upstream settings for this member. Boxed: few members have their
    /// own, and inline it would more than double the size of every member held in memory.
    #[serde(default)]
    pub upstream: Option<Box<UpstreamSettings>>,
}

fn default_weight() -> u32 {
    1
}

/// What member validation needs to know about where the member goes.
#[derive(Clone, Copy, Debug)]
pub struct MemberContext<'a> {
    pub lb_kind: LoadBalancerKind,
    /// The load balancer's VPC ("" = no VPC rule).
    pub lb_vpc_id: &'a str,
    /// The subnet `subnet_id` names, when it names one that exists.
    pub subnet: Option<&'a SubnetSpec>,
}

impl MemberSpec {
    pub fn new(address: impl Into<String>, port: u16) -> Self {
        Self {
            name: String::new(),
            address: address.into(),
            port,
            subnet_id: None,
            weight: default_weight(),
            backup: false,
            drain: false,
            offline: false,
            admin_state_up: true,
            priority: 0,
            max_connections: None,
            upstream: None,
        }
    }

    pub fn validate(&self, ctx: MemberContext<'_>) -> Result<(), ValidationError> {
        let mut c = Checker::new();
        c.max_len("name", &self.name, MAX_NAME_LEN);
        let ip = self.address.parse::<IpAddr>().ok();
        if self.address.is_empty() {
            c.missing("address");
        } else {
            c.check(
                ip.is_some() || is_host_name(&self.address, false),
                "address",
                || {
                    format!(
                        "address {:?} is neither an IP address nor a host name",
                        self.address
                    )
                },
            );
        }
        c.check(self.port != 0, "port", || {
            "port must be between 1 and 65535 (got 0)".into()
        });
        c.range("weight", self.weight, 0, MAX_WEIGHT);
        c.range("priority", self.priority, 0, 100);
        if let Some(n) = self.max_connections {
            c.check(n > 0, "max_connections", || {
                "max_connections must be at least 1".into()
            });
        }
        if let Some(subnet_id) = &self.subnet_id {
            match ctx.subnet {
                None => c.fail("subnet_id", format!("subnet {subnet_id} does not exist")),
                Some(subnet) => {
                    if subnet.is_ipv6() && ctx.lb_kind == LoadBalancerKind::Shared {
                        c.fail("subnet_id", "IPv6 subnets are not supported");
                    }
                    match ip {
                        Some(ip) if !subnet.contains(ip) => c.fail(
                            "address",
                            format!(
                                "address {ip} is not in subnet {subnet_id} ({})",
                                subnet.cidr
                            ),
                        ),
                        None if !self.address.is_empty() => c.fail(
                            "address",
                            "address must be an IP address when subnet_id is set",
                        ),
                        _ => {}
                    }
                    c.check(
                        ctx.lb_vpc_id.is_empty() || subnet.vpc_id == ctx.lb_vpc_id,
                        "subnet_id",
                        || {
                            format!(
                                "subnet {subnet_id} is in VPC {}, not the load balancer's VPC {}",
                                subnet.vpc_id, ctx.lb_vpc_id
                            )
                        },
                    );
                }
            }
        }
        if let Some(u) = &self.upstream {
            c.nested("upstream", u.validate());
        }
        c.finish()
    }

    /// Whether the member may be chosen for new, unbound requests (before health).
    pub fn accepts_new_requests(&self) -> bool {
        self.admin_state_up && !self.offline && !self.drain && self.weight > 0
    }

    /// Whether the member may serve requests already bound to it (persistence, in-flight).
    pub fn accepts_bound_requests(&self) -> bool {
        self.admin_state_up && !self.offline
    }

    /// The `ip:port` form OCI uses as the backend's name.
    /// The `Host` a client calling this member at `scheme` would send: its address, with
    /// the port unless it is the scheme's default.
    pub fn host_for(&self, scheme: crate::UpstreamScheme) -> String {
        let default_port = match scheme {
            crate::UpstreamScheme::Http => 80,
            crate::UpstreamScheme::Https => 443,
        };
        if self.port == default_port {
            match self.address.parse::<IpAddr>() {
                Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
                _ => self.address.clone(),
            }
        } else {
            self.endpoint()
        }
    }

    pub fn endpoint(&self) -> String {
        match self.address.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("[{v6}]:{}", self.port),
            _ => format!("{}:{}", self.address, self.port),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Member {
    pub id: MemberId,
    pub pool_id: PoolId,
    #[serde(flatten)]
    pub spec: MemberSpec,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

/// Checks a whole set of members for a pool: at most one member per address and port
/// (seed 001), both within the request and against members already in the pool.
/// `fields` names each new member in the request (`members[3]`).
pub fn check_unique_endpoints<'a>(
    existing: impl IntoIterator<Item = &'a MemberSpec>,
    new: impl IntoIterator<Item = (String, &'a MemberSpec)>,
) -> Result<(), ValidationError> {
    let mut seen: std::collections::HashSet<(String, u16)> = existing
        .into_iter()
        .map(|m| (normalize_address(&m.address), m.port))
        .collect();
    let mut c = Checker::new();
    for (field, m) in new {
        if !seen.insert((normalize_address(&m.address), m.port)) {
            c.fail(
                field,
                format!("another member of the pool already uses {}", m.endpoint()),
            );
        }
    }
    c.finish()
}

fn normalize_address(a: &str) -> String {
    match a.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => a.to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UpstreamScheme::{Http, Https};

    #[test]
    fn a_members_own_host_names_its_port_unless_the_schemes_default() {
        let host = |address: &str, port, scheme| MemberSpec::new(address, port).host_for(scheme);
        assert_eq!(host("api.example.com", 443, Https), "api.example.com");
        assert_eq!(host("api.example.com", 443, Http), "api.example.com:443");
        assert_eq!(host("api.example.com", 80, Http), "api.example.com");
        assert_eq!(host("10.0.0.5", 8080, Http), "10.0.0.5:8080");
        assert_eq!(host("::1", 80, Http), "[::1]");
        assert_eq!(host("::1", 8443, Https), "[::1]:8443");
    }
}
