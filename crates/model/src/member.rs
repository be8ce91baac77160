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
    /// QUIC pools with `quic_lb`: the server ID this member encodes in its connection IDs,
    /// in hex (`server_id_len` bytes, unique in the pool). Datagrams whose connection ID
    /// carries it go to this member wherever the client's address moves.
    #[serde(default)]
    pub server_id: Option<String>,
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
    /// The pool's `quic_lb.server_id_len` (None: the pool has no `quic_lb`, and a member
    /// may have no `server_id`).
    pub server_id_len: Option<u8>,
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
            server_id: None,
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
        if let Some(sid) = &self.server_id {
            match (parse_server_id(sid), ctx.server_id_len) {
                (_, None) => c.fail(
                    "server_id",
                    "server_id is only valid in QUIC pools with quic_lb",
                ),
                (None, _) => c.fail(
                    "server_id",
                    format!("server_id must be hex bytes, like \"0a1b2c\" (got {sid:?})"),
                ),
                (Some(bytes), Some(len)) => c.check(bytes.len() == usize::from(len), "server_id", || {
                    format!(
                        "server_id must be {len} bytes (the pool's quic_lb.server_id_len), got {}",
                        bytes.len()
                    )
                }),
            }
        }
        c.finish()
    }

    /// The member's server ID as bytes, when it has a well-formed one.
    pub fn server_id_bytes(&self) -> Option<Vec<u8>> {
        self.server_id.as_deref().and_then(parse_server_id)
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
/// (seed 001), and per QUIC-LB `server_id`, both within the request and against members
/// already in the pool. `fields` names each new member in the request (`members[3]`).
pub fn check_unique_endpoints<'a>(
    existing: impl IntoIterator<Item = &'a MemberSpec>,
    new: impl IntoIterator<Item = (String, &'a MemberSpec)>,
) -> Result<(), ValidationError> {
    let mut seen = std::collections::HashSet::new();
    let mut server_ids = std::collections::HashSet::new();
    for m in existing {
        seen.insert((normalize_address(&m.address), m.port));
        server_ids.extend(m.server_id_bytes());
    }
    let mut c = Checker::new();
    for (field, m) in new {
        if !seen.insert((normalize_address(&m.address), m.port)) {
            c.fail(
                &field,
                format!("another member of the pool already uses {}", m.endpoint()),
            );
        }
        if let Some(sid) = m.server_id_bytes()
            && !server_ids.insert(sid)
        {
            c.fail(
                format!("{field}.server_id"),
                format!(
                    "another member of the pool already has server_id {}",
                    m.server_id.as_deref().unwrap_or_default()
                ),
            );
        }
    }
    c.finish()
}

/// Hex bytes (either case, at least one byte), as a `server_id` is written.
pub fn parse_server_id(hex: &str) -> Option<Vec<u8>> {
    if hex.is_empty() || !hex.len().is_multiple_of(2) {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16);
    hex.as_bytes()
        .chunks(2)
        .map(|p| Some((digit(p[0])? * 16 + digit(p[1])?) as u8))
        .collect()
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

    /// An empty address is refused once, as missing, even in a subnet that would otherwise
    /// ask for an IP address inside it.
    #[test]
    fn a_missing_address_is_one_error_with_a_subnet_too() {
        let subnet = SubnetSpec {
            name: String::new(),
            description: String::new(),
            cidr: "192.168.44.0/24".parse().unwrap(),
            vpc_id: "vpc-1".into(),
            gateway_ip: None,
        };
        let mut m = MemberSpec::new("", 80);
        m.subnet_id = Some("subnet-1".into());
        let errors = |m: &MemberSpec| {
            m.validate(MemberContext {
                lb_kind: LoadBalancerKind::Dedicated,
                lb_vpc_id: "vpc-1",
                subnet: Some(&subnet),
                server_id_len: None,
            })
            .unwrap_err()
            .errors
            .into_iter()
            .map(|e| (e.field, e.kind))
            .collect::<Vec<_>>()
        };
        let missing = vec![("address".to_owned(), crate::FieldErrorKind::Missing)];
        assert_eq!(errors(&m), missing);
        // A host name in a subnet is refused: it must be an IP address.
        m.address = "backend.example".into();
        assert_eq!(
            errors(&m),
            [("address".to_owned(), crate::FieldErrorKind::Invalid)]
        );
    }
}

#[cfg(test)]
mod server_id_tests {
    use super::*;

    fn ctx(server_id_len: Option<u8>) -> MemberContext<'static> {
        MemberContext {
            lb_kind: LoadBalancerKind::Dedicated,
            lb_vpc_id: "",
            subnet: None,
            server_id_len,
        }
    }

    fn with_sid(port: u16, sid: &str) -> MemberSpec {
        let mut m = MemberSpec::new("10.0.0.1", port);
        m.server_id = Some(sid.into());
        m
    }

    fn error(m: &MemberSpec, len: Option<u8>) -> Option<String> {
        m.validate(ctx(len))
            .err()
            .map(|e| format!("{}: {}", e.first().field, e.first().message))
    }

    #[test]
    fn server_ids_are_hex_of_the_pools_length() {
        assert_eq!(parse_server_id("0aFf10"), Some(vec![0x0a, 0xff, 0x10]));
        for bad in ["", "a", "0g", "abc", "+1", "é0"] {
            assert_eq!(parse_server_id(bad), None, "{bad:?}");
        }
        assert_eq!(error(&with_sid(1, "c4605e"), Some(3)), None);
        assert_eq!(error(&MemberSpec::new("10.0.0.1", 1), Some(3)), None);
        assert_eq!(
            error(&with_sid(1, "c4605e"), Some(2)).as_deref(),
            Some("server_id: server_id must be 2 bytes (the pool's quic_lb.server_id_len), got 3")
        );
        assert!(
            error(&with_sid(1, "c4605"), Some(3))
                .unwrap()
                .contains("hex bytes")
        );
        assert!(
            error(&with_sid(1, "c4605e"), None)
                .unwrap()
                .contains("only valid in QUIC pools with quic_lb")
        );
    }

    #[test]
    fn server_ids_are_unique_in_the_pool() {
        let existing = [with_sid(1, "0a0b"), MemberSpec::new("10.0.0.2", 1)];
        let ok = [with_sid(2, "0a0c"), MemberSpec::new("10.0.0.3", 1)];
        assert!(
            check_unique_endpoints(
                &existing,
                ok.iter()
                    .enumerate()
                    .map(|(i, m)| (format!("members[{i}]"), m))
            )
            .is_ok()
        );
        // The same bytes in another case are the same server ID.
        let clash = [with_sid(3, "0A0B")];
        let e =
            check_unique_endpoints(&existing, [("members[0]".to_owned(), &clash[0])]).unwrap_err();
        assert_eq!(e.first().field, "members[0].server_id");
        assert!(e.first().message.contains("already has server_id 0A0B"));
        // Within one request too.
        let twice = [with_sid(4, "0101"), with_sid(5, "0101")];
        let e = check_unique_endpoints(
            [],
            twice
                .iter()
                .enumerate()
                .map(|(i, m)| (format!("members[{i}]"), m)),
        )
        .unwrap_err();
        assert_eq!(e.first().field, "members[1].server_id");
    }
}
