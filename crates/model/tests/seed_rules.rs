//! Every rule of /work/shared/SEEDS.md that the model is responsible for, as tables.
//!
//! Each table starts from a valid base value, applies one mutation per case and states
//! the outcome: `Ok`, or an error on exactly the named field (and on no other field).
//! The seed a rule comes from is given in brackets in the case description.

use fulcrum_model::*;

// ---------------------------------------------------------------------------------------
// The helper
// ---------------------------------------------------------------------------------------

/// What validating a mutated value must give.
#[derive(Clone, Copy, Debug)]
enum Expect {
    Ok,
    /// Refused with [`FieldErrorKind::Invalid`] on this field, and no other field refused.
    Invalid(&'static str),
    /// Refused with [`FieldErrorKind::Missing`] on this field, and no other field refused.
    Missing(&'static str),
}

use Expect::{Invalid, Missing, Ok as Valid};

/// `(description, mutation of the base, expected outcome)`.
type Case<T> = (&'static str, fn(&mut T), Expect);

/// Checks one case: applies `mutation` to a copy of `base`, validates it and compares
/// with `expected`. Returns a description of the mismatch, if any.
fn check_case<T: Clone>(
    base: &T,
    validate: &impl Fn(&T) -> Result<(), ValidationError>,
    mutation: fn(&mut T),
    expected: Expect,
) -> Option<String> {
    let mut value = base.clone();
    mutation(&mut value);
    let got = validate(&value);
    let (field, kind) = match expected {
        Expect::Ok => {
            return got.err().map(|e| format!("expected Ok, got Err({e})"));
        }
        Expect::Invalid(f) => (f, FieldErrorKind::Invalid),
        Expect::Missing(f) => (f, FieldErrorKind::Missing),
    };
    let Err(err) = got else {
        return Some(format!("expected {kind:?} error on {field:?}, got Ok"));
    };
    if !err
        .errors
        .iter()
        .any(|e| e.field == field && e.kind == kind)
    {
        return Some(format!("expected {kind:?} error on {field:?}, got {err}"));
    }
    if let Some(other) = err.errors.iter().find(|e| e.field != field) {
        return Some(format!(
            "expected only errors on {field:?}, also got one on {:?}: {err}",
            other.field
        ));
    }
    None
}

/// Runs a table: the base must be valid, then every case must give its outcome. All
/// mismatches are reported together.
fn check<T: Clone>(
    table: &str,
    base: &T,
    validate: impl Fn(&T) -> Result<(), ValidationError>,
    cases: &[Case<T>],
) {
    if let Err(e) = validate(base) {
        panic!("{table}: the base value is not valid: {e}");
    }
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(desc, mutation, expected)| {
            check_case(base, &validate, *mutation, *expected).map(|why| format!("  {desc}: {why}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{table}: {} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn chars(c: char, n: usize) -> String {
    std::iter::repeat_n(c, n).collect()
}

// ---------------------------------------------------------------------------------------
// Members [000, 001, 003]
// ---------------------------------------------------------------------------------------

/// A member with everything its validation looks at besides itself.
#[derive(Clone)]
struct MemberCase {
    spec: MemberSpec,
    lb_kind: LoadBalancerKind,
    lb_vpc_id: String,
    /// The subnet `spec.subnet_id` names; None = it does not exist.
    subnet: Option<SubnetSpec>,
}

impl MemberCase {
    fn validate(&self) -> Result<(), ValidationError> {
        self.spec.validate(MemberContext {
            lb_kind: self.lb_kind,
            lb_vpc_id: &self.lb_vpc_id,
            subnet: self.subnet.as_ref(),
            server_id_len: None,
        })
    }

    fn ipv6_subnet(&mut self) {
        self.subnet = Some(subnet("2001:db8::/64", "vpc-1"));
        self.spec.address = "2001:db8::10".into();
    }
}

fn subnet(cidr: &str, vpc: &str) -> SubnetSpec {
    SubnetSpec {
        name: String::new(),
        description: String::new(),
        cidr: cidr.parse().expect("test CIDRs are valid"),
        vpc_id: vpc.into(),
        gateway_ip: None,
    }
}

fn base_member() -> MemberCase {
    let mut spec = MemberSpec::new("192.168.44.11", 88);
    spec.name = "member-1".into();
    spec.subnet_id = Some(SubnetId::from("subnet-1"));
    MemberCase {
        spec,
        lb_kind: LoadBalancerKind::Shared,
        lb_vpc_id: "vpc-1".into(),
        subnet: Some(subnet("192.168.44.0/24", "vpc-1")),
    }
}

#[test]
fn member_rules() {
    let cases: &[Case<MemberCase>] = &[
        // weight [000 int32, 001 0..100 narrowed by the dialect, 003 0..100]
        (
            "weight 0 accepted (no new requests) [001]",
            |m| m.spec.weight = 0,
            Valid,
        ),
        ("weight 1 accepted [001]", |m| m.spec.weight = 1, Valid),
        ("weight 100 accepted [001]", |m| m.spec.weight = 100, Valid),
        (
            "weight MAX_WEIGHT (i32::MAX) accepted [000]",
            |m| m.spec.weight = MAX_WEIGHT,
            Valid,
        ),
        (
            "weight i32::MAX + 1 rejected [000]",
            |m| m.spec.weight = i32::MAX as u32 + 1,
            Invalid("weight"),
        ),
        (
            "weight u32::MAX rejected [000]",
            |m| m.spec.weight = u32::MAX,
            Invalid("weight"),
        ),
        // protocol_port 1..65535 [001]
        (
            "port 0 rejected [001]",
            |m| m.spec.port = 0,
            Invalid("port"),
        ),
        ("port 1 accepted [001]", |m| m.spec.port = 1, Valid),
        ("port 65535 accepted [001]", |m| m.spec.port = 65535, Valid),
        // name <= 255 characters [001]
        (
            "name empty accepted (default \"\") [001]",
            |m| m.spec.name.clear(),
            Valid,
        ),
        (
            "name of 255 ASCII chars accepted [001]",
            |m| m.spec.name = chars('a', 255),
            Valid,
        ),
        (
            "name of 256 ASCII chars rejected [001]",
            |m| m.spec.name = chars('a', 256),
            Invalid("name"),
        ),
        (
            "name of 255 two-byte chars (510 bytes) accepted: chars, not bytes [001]",
            |m| m.spec.name = chars('é', 255),
            Valid,
        ),
        (
            "name of 256 two-byte chars rejected [001]",
            |m| m.spec.name = chars('é', 256),
            Invalid("name"),
        ),
        (
            "name of 255 three-byte CJK chars accepted [001]",
            |m| m.spec.name = chars('名', 255),
            Valid,
        ),
        (
            "name of 255 four-byte chars (1020 bytes) accepted [001]",
            |m| m.spec.name = chars('🦀', 255),
            Valid,
        ),
        (
            "name of 256 four-byte chars rejected [001]",
            |m| m.spec.name = chars('🦀', 256),
            Invalid("name"),
        ),
        // address [001]
        (
            "address missing rejected [001]",
            |m| m.spec.address.clear(),
            Missing("address"),
        ),
        (
            "address neither IP nor host name rejected",
            |m| m.spec.address = "not an address!".into(),
            Invalid("address"),
        ),
        (
            "address first in subnet accepted [001]",
            |m| m.spec.address = "192.168.44.0".into(),
            Valid,
        ),
        (
            "address last in subnet accepted [001]",
            |m| m.spec.address = "192.168.44.255".into(),
            Valid,
        ),
        (
            "address outside the subnet's CIDR rejected [001]",
            |m| m.spec.address = "192.168.45.11".into(),
            Invalid("address"),
        ),
        (
            "address 10.0.0.1 outside 192.168.44.0/24 rejected [001]",
            |m| m.spec.address = "10.0.0.1".into(),
            Invalid("address"),
        ),
        (
            "host name address with a subnet rejected (must lie in the subnet) [001]",
            |m| m.spec.address = "backend.example.com".into(),
            Invalid("address"),
        ),
        (
            "host name address without a subnet accepted (native members)",
            |m| {
                m.spec.address = "backend.example.com".into();
                m.spec.subnet_id = None;
                m.subnet = None;
            },
            Valid,
        ),
        (
            "no subnet_id: no subnet rule",
            |m| {
                m.spec.subnet_id = None;
                m.subnet = None;
                m.spec.address = "10.9.9.9".into();
            },
            Valid,
        ),
        // subnet_id [001]
        (
            "subnet that does not exist rejected [001]",
            |m| m.subnet = None,
            Invalid("subnet_id"),
        ),
        (
            "IPv6 subnet on a shared load balancer rejected [001]",
            MemberCase::ipv6_subnet,
            Invalid("subnet_id"),
        ),
        (
            "IPv6 subnet on a dedicated load balancer accepted [001]",
            |m| {
                m.ipv6_subnet();
                m.lb_kind = LoadBalancerKind::Dedicated;
            },
            Valid,
        ),
        (
            "IPv6 address outside an IPv6 subnet rejected (dedicated) [001]",
            |m| {
                m.ipv6_subnet();
                m.lb_kind = LoadBalancerKind::Dedicated;
                m.spec.address = "2001:db9::10".into();
            },
            Invalid("address"),
        ),
        (
            "subnet in another VPC than the load balancer's rejected [001]",
            |m| m.subnet = Some(subnet("192.168.44.0/24", "vpc-2")),
            Invalid("subnet_id"),
        ),
        (
            "subnet VPC rule also applies on dedicated load balancers [001]",
            |m| {
                m.lb_kind = LoadBalancerKind::Dedicated;
                m.subnet = Some(subnet("192.168.44.0/24", "vpc-2"));
            },
            Invalid("subnet_id"),
        ),
        (
            "load balancer without VPC: no VPC rule",
            |m| {
                m.lb_vpc_id.clear();
                m.subnet = Some(subnet("192.168.44.0/24", "vpc-2"));
            },
            Valid,
        ),
        // priority 0..100 [003]
        ("priority 0 accepted [003]", |m| m.spec.priority = 0, Valid),
        (
            "priority 100 accepted [003]",
            |m| m.spec.priority = 100,
            Valid,
        ),
        (
            "priority 101 rejected [003]",
            |m| m.spec.priority = 101,
            Invalid("priority"),
        ),
        (
            "priority 255 rejected [003]",
            |m| m.spec.priority = 255,
            Invalid("priority"),
        ),
        // admin flags [000]
        (
            "backup, drain and offline together accepted [000]",
            |m| {
                m.spec.backup = true;
                m.spec.drain = true;
                m.spec.offline = true;
            },
            Valid,
        ),
        (
            "max_connections 0 rejected",
            |m| m.spec.max_connections = Some(0),
            Invalid("max_connections"),
        ),
        (
            "max_connections 1 accepted",
            |m| m.spec.max_connections = Some(1),
            Valid,
        ),
        (
            "invalid per-member upstream settings named under upstream [003]",
            |m| {
                m.spec.upstream = Some(Box::new(UpstreamSettings {
                    base_path: "no-slash".into(),
                    ..UpstreamSettings::default()
                }))
            },
            Invalid("upstream.base_path"),
        ),
    ];
    check("member", &base_member(), MemberCase::validate, cases);
}

#[test]
fn member_admin_states_follow_000_and_001() {
    let base = MemberSpec::new("10.0.0.1", 80);
    assert!(base.accepts_new_requests() && base.accepts_bound_requests());
    // (description, mutation, accepts new requests, accepts bound requests)
    type Row = (&'static str, fn(&mut MemberSpec), bool, bool);
    let table: &[Row] = &[
        (
            "weight 0: no new requests [001]",
            |m| m.weight = 0,
            false,
            true,
        ),
        (
            "drain: no new traffic [000]",
            |m| m.drain = true,
            false,
            true,
        ),
        (
            "offline: no traffic [000]",
            |m| m.offline = true,
            false,
            false,
        ),
        (
            "admin down: no traffic",
            |m| m.admin_state_up = false,
            false,
            false,
        ),
        (
            "backup: still eligible (pool decides) [000]",
            |m| m.backup = true,
            true,
            true,
        ),
    ];
    for (desc, mutation, new, bound) in table {
        let mut m = base.clone();
        mutation(&mut m);
        assert_eq!(
            m.accepts_new_requests(),
            *new,
            "{desc}: accepts_new_requests"
        );
        assert_eq!(
            m.accepts_bound_requests(),
            *bound,
            "{desc}: accepts_bound_requests"
        );
    }
}

#[test]
fn member_endpoint_is_oci_backend_name() {
    // [000] backendName is IP:port.
    assert_eq!(
        MemberSpec::new("10.0.0.3", 8080).endpoint(),
        "10.0.0.3:8080"
    );
    assert_eq!(MemberSpec::new("::1", 8080).endpoint(), "[::1]:8080");
}

// ---------------------------------------------------------------------------------------
// Unique address and port within a pool [001]
// ---------------------------------------------------------------------------------------

#[test]
fn unique_endpoints() {
    type Ep = (&'static str, u16);
    // (description, members already in the pool, members in the request, refused field)
    type Row = (
        &'static str,
        &'static [Ep],
        &'static [Ep],
        Option<&'static str>,
    );
    let table: &[Row] = &[
        (
            "distinct members accepted",
            &[("10.0.0.1", 80)],
            &[("10.0.0.2", 80), ("10.0.0.3", 80)],
            None,
        ),
        (
            "same address, other port accepted",
            &[("10.0.0.1", 80)],
            &[("10.0.0.1", 81)],
            None,
        ),
        (
            "same port, other address accepted",
            &[],
            &[("10.0.0.1", 80), ("10.0.0.2", 80)],
            None,
        ),
        ("empty request accepted", &[("10.0.0.1", 80)], &[], None),
        (
            "duplicate within the request rejected, naming the second",
            &[],
            &[("10.0.0.1", 80), ("10.0.0.1", 80)],
            Some("members[1]"),
        ),
        (
            "duplicate of an existing member rejected",
            &[("10.0.0.1", 80)],
            &[("10.0.0.1", 80)],
            Some("members[0]"),
        ),
        (
            "duplicate of an existing member later in the request rejected",
            &[("10.0.0.9", 443)],
            &[("10.0.0.1", 443), ("10.0.0.2", 443), ("10.0.0.9", 443)],
            Some("members[2]"),
        ),
        (
            "IPv6 ::1 vs 0:0:0:0:0:0:0:1 within the request rejected",
            &[],
            &[("::1", 80), ("0:0:0:0:0:0:0:1", 80)],
            Some("members[1]"),
        ),
        (
            "IPv6 0:0:0:0:0:0:0:1 vs existing ::1 rejected",
            &[("::1", 80)],
            &[("0:0:0:0:0:0:0:1", 80)],
            Some("members[0]"),
        ),
        (
            "IPv6 case and zero compression normalised",
            &[("2001:db8::1", 80)],
            &[("2001:DB8:0:0::0001", 80)],
            Some("members[0]"),
        ),
        (
            "host names compared case-insensitively",
            &[("backend.example.com", 80)],
            &[("Backend.Example.COM", 80)],
            Some("members[0]"),
        ),
        (
            "IPv6 ::1 and ::2 are distinct",
            &[("::1", 80)],
            &[("::2", 80)],
            None,
        ),
    ];
    for (desc, existing, new, expected) in table {
        let existing: Vec<MemberSpec> = existing
            .iter()
            .map(|(a, p)| MemberSpec::new(*a, *p))
            .collect();
        let new: Vec<MemberSpec> = new.iter().map(|(a, p)| MemberSpec::new(*a, *p)).collect();
        let got = check_unique_endpoints(
            &existing,
            new.iter()
                .enumerate()
                .map(|(i, m)| (format!("members[{i}]"), m)),
        );
        match (expected, got) {
            (None, Ok(())) => {}
            (None, Err(e)) => panic!("{desc}: expected Ok, got {e}"),
            (Some(f), Ok(())) => panic!("{desc}: expected an error on {f}, got Ok"),
            (Some(f), Err(e)) => {
                assert_eq!(e.errors.len(), 1, "{desc}: {e}");
                assert_eq!(e.first().field, *f, "{desc}: {e}");
                assert_eq!(e.first().kind, FieldErrorKind::Invalid, "{desc}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Pools [002]
// ---------------------------------------------------------------------------------------

#[derive(Clone)]
struct PoolCase {
    spec: PoolSpec,
    lb_kind: LoadBalancerKind,
}

impl PoolCase {
    fn validate(&self) -> Result<(), ValidationError> {
        self.spec.validate(PoolContext {
            lb_kind: self.lb_kind,
        })
    }

    fn protocol(&mut self, p: PoolProtocol) {
        self.spec.protocol = p;
    }

    fn persistence(&mut self, kind: PersistenceType, cookie: Option<&str>, timeout: Option<u32>) {
        self.spec.session_persistence = Some(SessionPersistence {
            kind,
            cookie_name: cookie.map(str::to_owned),
            persistence_timeout: timeout,
        });
    }

    fn app_cookie(&mut self, name: String) {
        self.spec.session_persistence = Some(SessionPersistence {
            kind: PersistenceType::AppCookie,
            cookie_name: Some(name),
            persistence_timeout: None,
        });
    }

    fn quic(&mut self) {
        self.protocol(PoolProtocol::Quic);
        self.persistence(PersistenceType::SourceIp, None, None);
    }

    fn slow_start(&mut self, enable: bool, duration: u32) {
        self.spec.slow_start = Some(SlowStart { enable, duration });
    }
}

fn base_pool() -> PoolCase {
    PoolCase {
        spec: PoolSpec::new("pool-1", PoolProtocol::Http),
        lb_kind: LoadBalancerKind::Shared,
    }
}

const SP: &str = "session_persistence";
const SP_TYPE: &str = "session_persistence.type";
const COOKIE: &str = "session_persistence.cookie_name";
const TIMEOUT: &str = "session_persistence.persistence_timeout";

#[test]
fn pool_rules() {
    use LoadBalancerKind::Dedicated;
    use PersistenceType::{AppCookie, HttpCookie, SourceIp};
    use PoolProtocol::{Https, Quic, Tcp, Tcpssl, Udp};
    let cases: &[Case<PoolCase>] = &[
        // name and description 0..255 characters
        ("empty name accepted [002]", |p| p.spec.name.clear(), Valid),
        (
            "name of 255 chars accepted",
            |p| p.spec.name = chars('a', 255),
            Valid,
        ),
        (
            "name of 256 chars rejected",
            |p| p.spec.name = chars('a', 256),
            Invalid("name"),
        ),
        (
            "name of 255 CJK chars (765 bytes) accepted",
            |p| p.spec.name = chars('池', 255),
            Valid,
        ),
        (
            "name of 256 CJK chars rejected",
            |p| p.spec.name = chars('池', 256),
            Invalid("name"),
        ),
        (
            "description empty accepted",
            |p| p.spec.description.clear(),
            Valid,
        ),
        (
            "description of 255 chars accepted",
            |p| p.spec.description = chars('d', 255),
            Valid,
        ),
        (
            "description of 256 chars rejected",
            |p| p.spec.description = chars('d', 256),
            Invalid("description"),
        ),
        (
            "description of 255 two-byte chars accepted",
            |p| p.spec.description = chars('ü', 255),
            Valid,
        ),
        (
            "description of 256 two-byte chars rejected",
            |p| p.spec.description = chars('ü', 256),
            Invalid("description"),
        ),
        // admin_state_up: only true
        (
            "admin_state_up true accepted",
            |p| p.spec.admin_state_up = true,
            Valid,
        ),
        (
            "admin_state_up false rejected",
            |p| p.spec.admin_state_up = false,
            Invalid("admin_state_up"),
        ),
        // lb_algorithm
        (
            "ROUND_ROBIN accepted",
            |p| p.spec.algorithm = Algorithm::RoundRobin,
            Valid,
        ),
        (
            "LEAST_CONNECTIONS accepted",
            |p| p.spec.algorithm = Algorithm::LeastConnections,
            Valid,
        ),
        (
            "SOURCE_IP accepted",
            |p| p.spec.algorithm = Algorithm::SourceIp,
            Valid,
        ),
        (
            "QUIC_CID on an HTTP pool rejected",
            |p| p.spec.algorithm = Algorithm::QuicCid,
            Invalid("algorithm"),
        ),
        (
            "QUIC_CID on a UDP pool rejected",
            |p| {
                p.protocol(Udp);
                p.spec.algorithm = Algorithm::QuicCid;
            },
            Invalid("algorithm"),
        ),
        (
            "QUIC_CID on a QUIC pool accepted",
            |p| {
                p.quic();
                p.spec.algorithm = Algorithm::QuicCid;
            },
            Valid,
        ),
        // QUIC pools: persistence must be on, type SOURCE_IP
        (
            "QUIC pool with SOURCE_IP persistence accepted",
            PoolCase::quic,
            Valid,
        ),
        (
            "QUIC pool without persistence rejected",
            |p| p.protocol(Quic),
            Invalid(SP),
        ),
        (
            "QUIC pool with HTTP_COOKIE persistence rejected",
            |p| {
                p.protocol(Quic);
                p.persistence(HttpCookie, None, None);
            },
            Invalid(SP_TYPE),
        ),
        (
            "QUIC pool with APP_COOKIE persistence rejected",
            |p| {
                p.protocol(Quic);
                p.persistence(AppCookie, Some("sid"), None);
            },
            Invalid(SP_TYPE),
        ),
        (
            "TCP pool without persistence accepted",
            |p| p.protocol(Tcp),
            Valid,
        ),
        (
            "UDP pool without persistence accepted",
            |p| p.protocol(Udp),
            Valid,
        ),
        ("TCPSSL pool accepted", |p| p.protocol(Tcpssl), Valid),
        // session_persistence.cookie_name
        (
            "APP_COOKIE with cookie_name accepted",
            |p| p.persistence(AppCookie, Some("JSESSIONID"), None),
            Valid,
        ),
        (
            "APP_COOKIE without cookie_name rejected",
            |p| p.persistence(AppCookie, None, None),
            Missing(COOKIE),
        ),
        (
            "cookie_name with HTTP_COOKIE rejected",
            |p| p.persistence(HttpCookie, Some("sid"), None),
            Invalid(COOKIE),
        ),
        (
            "cookie_name with SOURCE_IP rejected",
            |p| p.persistence(SourceIp, Some("sid"), None),
            Invalid(COOKIE),
        ),
        (
            "cookie_name with SOURCE_IP rejected on a TCP pool too",
            |p| {
                p.protocol(Tcp);
                p.persistence(SourceIp, Some("sid"), None);
            },
            Invalid(COOKIE),
        ),
        (
            "cookie_name letters, digits, '-' and '_' accepted (shared)",
            |p| p.app_cookie("Ab-9_z".into()),
            Valid,
        ),
        (
            "cookie_name with '.' rejected on shared",
            |p| p.app_cookie("my.sid".into()),
            Invalid(COOKIE),
        ),
        (
            "cookie_name with '.' accepted on dedicated",
            |p| {
                p.lb_kind = Dedicated;
                p.app_cookie("my.sid".into());
            },
            Valid,
        ),
        (
            "cookie_name with a space rejected",
            |p| p.app_cookie("my sid".into()),
            Invalid(COOKIE),
        ),
        (
            "cookie_name with '=' rejected",
            |p| p.app_cookie("sid=1".into()),
            Invalid(COOKIE),
        ),
        (
            "cookie_name with ';' rejected",
            |p| p.app_cookie("sid;".into()),
            Invalid(COOKIE),
        ),
        (
            "cookie_name with a non-ASCII letter rejected",
            |p| p.app_cookie("séssion".into()),
            Invalid(COOKIE),
        ),
        (
            "cookie_name with a space rejected on dedicated",
            |p| {
                p.lb_kind = Dedicated;
                p.app_cookie("my sid".into());
            },
            Invalid(COOKIE),
        ),
        (
            "cookie_name empty rejected",
            |p| p.app_cookie(String::new()),
            Invalid(COOKIE),
        ),
        (
            "cookie_name of 64 chars accepted on shared",
            |p| p.app_cookie(chars('c', 64)),
            Valid,
        ),
        (
            "cookie_name of 65 chars rejected on shared",
            |p| p.app_cookie(chars('c', 65)),
            Invalid(COOKIE),
        ),
        (
            "cookie_name of 255 chars accepted on dedicated",
            |p| {
                p.lb_kind = Dedicated;
                p.app_cookie(chars('c', 255));
            },
            Valid,
        ),
        (
            "cookie_name of 256 chars rejected on dedicated",
            |p| {
                p.lb_kind = Dedicated;
                p.app_cookie(chars('c', 256));
            },
            Invalid(COOKIE),
        ),
        // persistence_timeout: TCP/UDP/QUIC 1..60, HTTP/HTTPS 1..1440
        (
            "TCP timeout 0 rejected",
            |p| {
                p.protocol(Tcp);
                p.persistence(SourceIp, None, Some(0))
            },
            Invalid(TIMEOUT),
        ),
        (
            "TCP timeout 1 accepted",
            |p| {
                p.protocol(Tcp);
                p.persistence(SourceIp, None, Some(1))
            },
            Valid,
        ),
        (
            "TCP timeout 60 accepted",
            |p| {
                p.protocol(Tcp);
                p.persistence(SourceIp, None, Some(60))
            },
            Valid,
        ),
        (
            "TCP timeout 61 rejected",
            |p| {
                p.protocol(Tcp);
                p.persistence(SourceIp, None, Some(61))
            },
            Invalid(TIMEOUT),
        ),
        (
            "TCP timeout 61 rejected whatever the type (HTTP_COOKIE)",
            |p| {
                p.protocol(Tcp);
                p.persistence(HttpCookie, None, Some(61))
            },
            Invalid(TIMEOUT),
        ),
        (
            "UDP timeout 60 accepted",
            |p| {
                p.protocol(Udp);
                p.persistence(SourceIp, None, Some(60))
            },
            Valid,
        ),
        (
            "UDP timeout 61 rejected",
            |p| {
                p.protocol(Udp);
                p.persistence(SourceIp, None, Some(61))
            },
            Invalid(TIMEOUT),
        ),
        (
            "UDP timeout 0 rejected",
            |p| {
                p.protocol(Udp);
                p.persistence(SourceIp, None, Some(0))
            },
            Invalid(TIMEOUT),
        ),
        (
            "QUIC timeout 60 accepted",
            |p| {
                p.protocol(Quic);
                p.persistence(SourceIp, None, Some(60))
            },
            Valid,
        ),
        (
            "QUIC timeout 61 rejected",
            |p| {
                p.protocol(Quic);
                p.persistence(SourceIp, None, Some(61))
            },
            Invalid(TIMEOUT),
        ),
        (
            "QUIC timeout 0 rejected",
            |p| {
                p.protocol(Quic);
                p.persistence(SourceIp, None, Some(0))
            },
            Invalid(TIMEOUT),
        ),
        (
            "HTTP timeout 0 rejected",
            |p| p.persistence(HttpCookie, None, Some(0)),
            Invalid(TIMEOUT),
        ),
        (
            "HTTP timeout 1 accepted",
            |p| p.persistence(HttpCookie, None, Some(1)),
            Valid,
        ),
        (
            "HTTP timeout 61 accepted",
            |p| p.persistence(HttpCookie, None, Some(61)),
            Valid,
        ),
        (
            "HTTP timeout 1440 accepted",
            |p| p.persistence(HttpCookie, None, Some(1440)),
            Valid,
        ),
        (
            "HTTP timeout 1441 rejected",
            |p| p.persistence(HttpCookie, None, Some(1441)),
            Invalid(TIMEOUT),
        ),
        (
            "HTTPS timeout 1440 accepted",
            |p| {
                p.protocol(Https);
                p.persistence(HttpCookie, None, Some(1440))
            },
            Valid,
        ),
        (
            "HTTPS timeout 1441 rejected",
            |p| {
                p.protocol(Https);
                p.persistence(HttpCookie, None, Some(1441))
            },
            Invalid(TIMEOUT),
        ),
        // slow_start: HTTP/HTTPS only, duration 30..1200
        (
            "slow start on HTTP accepted",
            |p| p.slow_start(true, 30),
            Valid,
        ),
        (
            "slow start on HTTPS accepted",
            |p| {
                p.protocol(Https);
                p.slow_start(true, 600)
            },
            Valid,
        ),
        (
            "slow start duration 29 rejected",
            |p| p.slow_start(true, 29),
            Invalid("slow_start.duration"),
        ),
        (
            "slow start duration 30 accepted",
            |p| p.slow_start(true, 30),
            Valid,
        ),
        (
            "slow start duration 1200 accepted",
            |p| p.slow_start(true, 1200),
            Valid,
        ),
        (
            "slow start duration 1201 rejected",
            |p| p.slow_start(true, 1201),
            Invalid("slow_start.duration"),
        ),
        (
            "slow start duration checked even when disabled",
            |p| p.slow_start(false, 1201),
            Invalid("slow_start.duration"),
        ),
        (
            "slow start on TCP rejected",
            |p| {
                p.protocol(Tcp);
                p.slow_start(true, 30)
            },
            Invalid("slow_start"),
        ),
        (
            "slow start on TCP rejected even when disabled (passing the field is an error)",
            |p| {
                p.protocol(Tcp);
                p.slow_start(false, 30)
            },
            Invalid("slow_start"),
        ),
        (
            "slow start on UDP rejected",
            |p| {
                p.protocol(Udp);
                p.slow_start(true, 30)
            },
            Invalid("slow_start"),
        ),
        (
            "slow start on QUIC rejected",
            |p| {
                p.quic();
                p.slow_start(true, 30)
            },
            Invalid("slow_start"),
        ),
        (
            "slow start on TCPSSL rejected",
            |p| {
                p.protocol(Tcpssl);
                p.slow_start(true, 30)
            },
            Invalid("slow_start"),
        ),
        // vpc_id and type
        (
            "vpc_id of 36 chars accepted",
            |p| p.spec.vpc_id = chars('v', 36),
            Valid,
        ),
        (
            "vpc_id of 37 chars rejected",
            |p| p.spec.vpc_id = chars('v', 37),
            Invalid("vpc_id"),
        ),
        (
            "type \"\" without vpc_id accepted",
            |p| p.spec.pool_type = PoolType::Any,
            Valid,
        ),
        (
            "type \"\" with vpc_id accepted",
            |p| {
                p.spec.pool_type = PoolType::Any;
                p.spec.vpc_id = "vpc-1".into()
            },
            Valid,
        ),
        (
            "type instance with vpc_id accepted",
            |p| {
                p.spec.pool_type = PoolType::Instance;
                p.spec.vpc_id = "vpc-1".into()
            },
            Valid,
        ),
        (
            "type instance without vpc_id rejected",
            |p| p.spec.pool_type = PoolType::Instance,
            Invalid("vpc_id"),
        ),
        (
            "type ip without vpc_id accepted",
            |p| p.spec.pool_type = PoolType::Ip,
            Valid,
        ),
        (
            "type ip with vpc_id rejected",
            |p| {
                p.spec.pool_type = PoolType::Ip;
                p.spec.vpc_id = "vpc-1".into()
            },
            Invalid("vpc_id"),
        ),
        // protection
        (
            "consoleProtection with a reason accepted",
            |p| {
                p.spec.protection_status = ProtectionStatus::ConsoleProtection;
                p.spec.protection_reason = "change freeze".into();
            },
            Valid,
        ),
        (
            "consoleProtection without a reason accepted",
            |p| p.spec.protection_status = ProtectionStatus::ConsoleProtection,
            Valid,
        ),
        (
            "protection_reason of 255 chars accepted",
            |p| {
                p.spec.protection_status = ProtectionStatus::ConsoleProtection;
                p.spec.protection_reason = chars('r', 255);
            },
            Valid,
        ),
        (
            "protection_reason of 256 chars rejected",
            |p| {
                p.spec.protection_status = ProtectionStatus::ConsoleProtection;
                p.spec.protection_reason = chars('r', 256);
            },
            Invalid("protection_reason"),
        ),
        (
            "protection_reason of 255 CJK chars accepted",
            |p| {
                p.spec.protection_status = ProtectionStatus::ConsoleProtection;
                p.spec.protection_reason = chars('保', 255);
            },
            Valid,
        ),
        (
            "protection_reason with nonProtection rejected",
            |p| {
                p.spec.protection_status = ProtectionStatus::NonProtection;
                p.spec.protection_reason = "why".into();
            },
            Invalid("protection_reason"),
        ),
        // the rest
        (
            "member_deletion_protection accepted",
            |p| p.spec.member_deletion_protection = true,
            Valid,
        ),
        (
            "ip_version dualstack accepted",
            |p| p.spec.ip_version = IpVersion::Dualstack,
            Valid,
        ),
        (
            "max_connections_per_member 0 rejected",
            |p| p.spec.max_connections_per_member = Some(0),
            Invalid("max_connections_per_member"),
        ),
        (
            "invalid upstream settings named under upstream [003]",
            |p| p.spec.upstream.base_path = "x".into(),
            Invalid("upstream.base_path"),
        ),
    ];
    check("pool", &base_pool(), PoolCase::validate, cases);
}

/// Seed 002's update rules compare the pool before and after.
#[derive(Clone)]
struct PoolUpdate {
    old: PoolSpec,
    new: PoolSpec,
}

#[test]
fn pool_update_rules() {
    let base = PoolUpdate {
        old: PoolSpec::new("pool-1", PoolProtocol::Http),
        new: PoolSpec::new("pool-1", PoolProtocol::Http),
    };
    let cases: &[Case<PoolUpdate>] = &[
        (
            "vpc_id set while empty accepted",
            |u| u.new.vpc_id = "vpc-1".into(),
            Valid,
        ),
        (
            "vpc_id kept accepted",
            |u| {
                u.old.vpc_id = "vpc-1".into();
                u.new.vpc_id = "vpc-1".into();
            },
            Valid,
        ),
        (
            "vpc_id changed once set rejected",
            |u| {
                u.old.vpc_id = "vpc-1".into();
                u.new.vpc_id = "vpc-2".into();
            },
            Invalid("vpc_id"),
        ),
        (
            "vpc_id cleared once set rejected",
            |u| u.old.vpc_id = "vpc-1".into(),
            Invalid("vpc_id"),
        ),
        (
            "type \"\" → instance accepted",
            |u| u.new.pool_type = PoolType::Instance,
            Valid,
        ),
        (
            "type \"\" → ip accepted",
            |u| u.new.pool_type = PoolType::Ip,
            Valid,
        ),
        (
            "type instance kept accepted",
            |u| {
                u.old.pool_type = PoolType::Instance;
                u.new.pool_type = PoolType::Instance;
            },
            Valid,
        ),
        (
            "type instance → ip rejected",
            |u| {
                u.old.pool_type = PoolType::Instance;
                u.new.pool_type = PoolType::Ip;
            },
            Invalid("type"),
        ),
        (
            "type ip → instance rejected",
            |u| {
                u.old.pool_type = PoolType::Ip;
                u.new.pool_type = PoolType::Instance;
            },
            Invalid("type"),
        ),
        (
            "type instance → \"\" rejected",
            |u| u.old.pool_type = PoolType::Instance,
            Invalid("type"),
        ),
        (
            "type ip → \"\" rejected",
            |u| u.old.pool_type = PoolType::Ip,
            Invalid("type"),
        ),
        (
            "protocol change rejected",
            |u| u.new.protocol = PoolProtocol::Https,
            Invalid("protocol"),
        ),
        (
            "other fields may change",
            |u| {
                u.new.name = "renamed".into();
                u.new.description = "new".into();
                u.new.algorithm = Algorithm::LeastConnections;
                u.new.member_deletion_protection = true;
            },
            Valid,
        ),
    ];
    check(
        "pool update",
        &base,
        |u: &PoolUpdate| u.new.validate_update(&u.old),
        cases,
    );
}

#[test]
fn effective_persistence() {
    use EffectivePersistence as E;
    use PersistenceType::{AppCookie, HttpCookie, SourceIp};
    use PoolProtocol::{Http, Https, Quic, Tcp, Tcpssl, Udp};
    type Row = (
        &'static str,
        PoolProtocol,
        Option<(PersistenceType, Option<&'static str>, Option<u32>)>,
        E,
    );
    let table: &[Row] = &[
        ("no persistence → none", Http, None, E::None),
        ("no persistence on TCP → none", Tcp, None, E::None),
        (
            "TCP + SOURCE_IP → source IP, default 1",
            Tcp,
            Some((SourceIp, None, None)),
            E::SourceIp { timeout_minutes: 1 },
        ),
        (
            "TCP + HTTP_COOKIE → source IP whatever the type",
            Tcp,
            Some((HttpCookie, None, None)),
            E::SourceIp { timeout_minutes: 1 },
        ),
        (
            "TCP + APP_COOKIE → source IP whatever the type",
            Tcp,
            Some((AppCookie, Some("sid"), None)),
            E::SourceIp { timeout_minutes: 1 },
        ),
        (
            "UDP + HTTP_COOKIE → source IP, default 1",
            Udp,
            Some((HttpCookie, None, None)),
            E::SourceIp { timeout_minutes: 1 },
        ),
        (
            "UDP + SOURCE_IP, timeout 60 kept",
            Udp,
            Some((SourceIp, None, Some(60))),
            E::SourceIp {
                timeout_minutes: 60,
            },
        ),
        (
            "TCP + HTTP_COOKIE, timeout 30 kept",
            Tcp,
            Some((HttpCookie, None, Some(30))),
            E::SourceIp {
                timeout_minutes: 30,
            },
        ),
        (
            "QUIC + SOURCE_IP → source IP, default 1",
            Quic,
            Some((SourceIp, None, None)),
            E::SourceIp { timeout_minutes: 1 },
        ),
        (
            "TCPSSL (L4) + HTTP_COOKIE → source IP",
            Tcpssl,
            Some((HttpCookie, None, None)),
            E::SourceIp { timeout_minutes: 1 },
        ),
        (
            "HTTP + HTTP_COOKIE → cookie, default 1440",
            Http,
            Some((HttpCookie, None, None)),
            E::HttpCookie {
                timeout_minutes: 1440,
            },
        ),
        (
            "HTTPS + HTTP_COOKIE → cookie, default 1440",
            Https,
            Some((HttpCookie, None, None)),
            E::HttpCookie {
                timeout_minutes: 1440,
            },
        ),
        (
            "HTTP + HTTP_COOKIE, timeout 15 kept",
            Http,
            Some((HttpCookie, None, Some(15))),
            E::HttpCookie {
                timeout_minutes: 15,
            },
        ),
        (
            "HTTP + SOURCE_IP → off",
            Http,
            Some((SourceIp, None, None)),
            E::None,
        ),
        (
            "HTTPS + SOURCE_IP → off",
            Https,
            Some((SourceIp, None, Some(10))),
            E::None,
        ),
        (
            "HTTP + APP_COOKIE → app cookie by name",
            Http,
            Some((AppCookie, Some("JSESSIONID"), None)),
            E::AppCookie {
                cookie_name: "JSESSIONID".into(),
            },
        ),
        (
            "HTTPS + APP_COOKIE, timeout not used",
            Https,
            Some((AppCookie, Some("sid"), Some(5))),
            E::AppCookie {
                cookie_name: "sid".into(),
            },
        ),
    ];
    for (desc, protocol, sp, expected) in table {
        let mut pool = PoolSpec::new("p", *protocol);
        pool.session_persistence = sp.map(|(kind, cookie, timeout)| SessionPersistence {
            kind,
            cookie_name: cookie.map(str::to_owned),
            persistence_timeout: timeout,
        });
        assert_eq!(&pool.effective_persistence(), expected, "{desc}");
    }
}

#[test]
fn persistence_timeout_ranges_and_defaults() {
    use PoolProtocol::*;
    for (protocol, expected) in [
        (Tcp, (1, 60, 1)),
        (Udp, (1, 60, 1)),
        (Quic, (1, 60, 1)),
        (Http, (1, 1440, 1440)),
        (Https, (1, 1440, 1440)),
    ] {
        assert_eq!(
            protocol.persistence_timeout_range(),
            expected,
            "{protocol:?}"
        );
    }
}

#[test]
fn slow_start_window() {
    use PoolProtocol::{Http, Https, Tcp};
    let table: &[(&str, PoolProtocol, Option<SlowStart>, Option<u32>)] = &[
        ("absent → none", Http, None, None),
        (
            "disabled → none",
            Http,
            Some(SlowStart {
                enable: false,
                duration: 60,
            }),
            None,
        ),
        (
            "enabled on HTTP → duration",
            Http,
            Some(SlowStart {
                enable: true,
                duration: 60,
            }),
            Some(60),
        ),
        (
            "enabled on HTTPS → duration",
            Https,
            Some(SlowStart {
                enable: true,
                duration: 1200,
            }),
            Some(1200),
        ),
        (
            "enabled on TCP → none (not HTTP)",
            Tcp,
            Some(SlowStart {
                enable: true,
                duration: 60,
            }),
            None,
        ),
    ];
    for (desc, protocol, slow_start, expected) in table {
        let mut pool = PoolSpec::new("p", *protocol);
        pool.slow_start = *slow_start;
        assert_eq!(pool.slow_start_secs(), *expected, "{desc}");
    }
}

// ---------------------------------------------------------------------------------------
// Listener ↔ pool protocols [002]
// ---------------------------------------------------------------------------------------

const LISTENER_PROTOCOLS: [ListenerProtocol; 6] = [
    ListenerProtocol::Tcp,
    ListenerProtocol::Udp,
    ListenerProtocol::Http,
    ListenerProtocol::Https,
    ListenerProtocol::TerminatedHttps,
    ListenerProtocol::Quic,
];

const POOL_PROTOCOLS: [PoolProtocol; 6] = [
    PoolProtocol::Tcp,
    PoolProtocol::Udp,
    PoolProtocol::Http,
    PoolProtocol::Https,
    PoolProtocol::Quic,
    PoolProtocol::Tcpssl,
];

/// Seed 002's table. QUIC listeners are not in the seed; the model lets them use QUIC
/// pools only.
fn allowed_pools(l: ListenerProtocol) -> &'static [PoolProtocol] {
    use ListenerProtocol as L;
    use PoolProtocol as P;
    match l {
        L::Udp => &[P::Udp, P::Quic],
        L::Tcp => &[P::Tcp],
        L::Http => &[P::Http],
        L::Https => &[P::Http, P::Https],
        L::TerminatedHttps => &[P::Http],
        L::Quic => &[P::Quic],
    }
}

#[test]
fn listener_pool_protocol_table_is_exhaustive() {
    let mut checked = 0;
    for l in LISTENER_PROTOCOLS {
        for p in POOL_PROTOCOLS {
            let expected = allowed_pools(l).contains(&p);
            assert_eq!(
                l.accepts_pool(p),
                expected,
                "{l:?} listener with a {p:?} pool"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 36);
    // No listener may use a TCPSSL pool: the seed's TCP listener takes TCP pools only.
    assert!(
        LISTENER_PROTOCOLS
            .iter()
            .all(|l| !l.accepts_pool(PoolProtocol::Tcpssl))
    );
}

fn listener(protocol: ListenerProtocol) -> ListenerSpec {
    ListenerSpec {
        name: "listener-1".into(),
        description: String::new(),
        protocol,
        port: 80,
        default_pool_id: Some(PoolId::from("pool-1")),
        routes: Vec::new(),
        route_set: None,
        hostnames: Vec::new(),
        admin_state_up: true,
        tls: None,
        connection_limit: None,
        timeouts: ListenerTimeouts::default(),
        access_log: Default::default(),
        request_id: true,
    }
}

#[test]
fn listener_validate_pool() {
    let lb = LoadBalancerId::from("lb-1");
    let other = LoadBalancerId::from("lb-2");
    for l in LISTENER_PROTOCOLS {
        let spec = listener(l);
        for p in POOL_PROTOCOLS {
            let got = spec.validate_pool("default_pool_id", &lb, &lb, p);
            if allowed_pools(l).contains(&p) {
                assert!(got.is_ok(), "{l:?}/{p:?}: {got:?}");
            } else {
                let e = got.expect_err("incompatible protocols must be refused");
                assert_eq!(e.first().field, "default_pool_id", "{l:?}/{p:?}");
                assert_eq!(e.first().kind, FieldErrorKind::Invalid);
            }
        }
    }
    let spec = listener(ListenerProtocol::Http);
    let e = spec
        .validate_pool("routes[2].pool_id", &lb, &other, PoolProtocol::Http)
        .expect_err("a pool of another load balancer must be refused");
    assert_eq!(e.first().field, "routes[2].pool_id");
}

#[test]
fn listener_pool_refs_name_their_fields() {
    let mut spec = listener(ListenerProtocol::Http);
    spec.routes = vec![route(Some("a.example.com"), None, "pool-2")];
    let refs: Vec<(String, String)> = spec.pool_refs().map(|(f, p)| (f, p.to_string())).collect();
    assert_eq!(
        refs,
        [
            ("default_pool_id".to_owned(), "pool-1".to_owned()),
            ("routes[0].pool_id".to_owned(), "pool-2".to_owned()),
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Listeners
// ---------------------------------------------------------------------------------------

const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

fn tls() -> Option<ListenerTls> {
    Some(ListenerTls {
        certificate_chain_pem: CERT.into(),
        private_key_pem: KEY.into(),
        sni_certificates: Vec::new(),
        ocsp_response_base64: None,
        certificate_id: None,
        sni_certificate_ids: Vec::new(),
    })
}

fn route(host: Option<&str>, path: Option<&str>, pool: &str) -> L7Route {
    L7Route {
        host: host.map(str::to_owned),
        path_prefix: path.map(str::to_owned),
        ..L7Route::to_pool(PoolId::from(pool))
    }
}

fn exact(path: &str, pool: &str) -> L7Route {
    L7Route {
        path_exact: Some(path.into()),
        ..L7Route::to_pool(PoolId::from(pool))
    }
}

fn with_id(id: &str, mut r: L7Route) -> L7Route {
    r.id = id.into();
    r
}

fn terminated(l: &mut ListenerSpec) {
    l.protocol = ListenerProtocol::TerminatedHttps;
    l.port = 443;
    l.tls = tls();
}

#[test]
fn listener_rules() {
    use ListenerProtocol::*;
    let cases: &[Case<ListenerSpec>] = &[
        ("port 0 rejected", |l| l.port = 0, Invalid("port")),
        ("port 1 accepted", |l| l.port = 1, Valid),
        ("port 65535 accepted", |l| l.port = 65535, Valid),
        (
            "name of 255 chars accepted",
            |l| l.name = chars('n', 255),
            Valid,
        ),
        (
            "name of 256 chars rejected",
            |l| l.name = chars('n', 256),
            Invalid("name"),
        ),
        (
            "description of 256 chars rejected",
            |l| l.description = chars('d', 256),
            Invalid("description"),
        ),
        // TLS
        ("TERMINATED_HTTPS with tls accepted", terminated, Valid),
        (
            "TERMINATED_HTTPS without tls rejected",
            |l| l.protocol = TerminatedHttps,
            Missing("tls"),
        ),
        ("tls on HTTP rejected", |l| l.tls = tls(), Invalid("tls")),
        (
            "tls on HTTPS (pass-through) rejected",
            |l| {
                l.protocol = Https;
                l.tls = tls()
            },
            Invalid("tls"),
        ),
        (
            "tls on TCP rejected",
            |l| {
                l.protocol = Tcp;
                l.tls = tls()
            },
            Invalid("tls"),
        ),
        (
            "tls on UDP rejected",
            |l| {
                l.protocol = Udp;
                l.tls = tls()
            },
            Invalid("tls"),
        ),
        (
            "tls on QUIC rejected",
            |l| {
                l.protocol = Quic;
                l.tls = tls()
            },
            Invalid("tls"),
        ),
        (
            "tls by reference to a stored certificate accepted",
            |l| {
                terminated(l);
                l.tls = Some(ListenerTls::by_reference(
                    "cert-1".into(),
                    vec!["cert-2".into()],
                ));
            },
            Valid,
        ),
        (
            "tls by reference and inline PEM both rejected",
            |l| {
                terminated(l);
                l.tls.as_mut().unwrap().certificate_id = Some("cert-1".into());
            },
            Invalid("tls.certificate_id"),
        ),
        (
            "tls with no default certificate rejected",
            |l| {
                terminated(l);
                l.tls = Some(ListenerTls::by_reference("c".into(), Vec::new()));
                l.tls.as_mut().unwrap().certificate_id = None;
            },
            Invalid("tls"),
        ),
        (
            "tls naming an SNI certificate twice rejected",
            |l| {
                terminated(l);
                l.tls = Some(ListenerTls::by_reference(
                    "c".into(),
                    vec!["s".into(), "s".into()],
                ));
            },
            Invalid("tls.sni_certificate_ids[1]"),
        ),
        (
            "tls certificate that is not PEM rejected",
            |l| {
                terminated(l);
                l.tls.as_mut().unwrap().certificate_chain_pem = "garbage".into();
            },
            Invalid("tls.certificate_chain_pem"),
        ),
        (
            "tls key that is not PEM rejected",
            |l| {
                terminated(l);
                l.tls.as_mut().unwrap().private_key_pem = "garbage".into();
            },
            Invalid("tls.private_key_pem"),
        ),
        (
            "tls OCSP response in base64 accepted",
            |l| {
                terminated(l);
                l.tls.as_mut().unwrap().ocsp_response_base64 = Some("MAMKAQA=".into());
            },
            Valid,
        ),
        (
            "tls OCSP response that is not base64 rejected",
            |l| {
                terminated(l);
                l.tls.as_mut().unwrap().ocsp_response_base64 = Some("not base64!".into());
            },
            Invalid("tls.ocsp_response_base64"),
        ),
        // routes
        (
            "routes on HTTP accepted",
            |l| l.routes = vec![route(None, Some("/api"), "pool-2")],
            Valid,
        ),
        (
            "a stripped path prefix accepted",
            |l| {
                l.routes = vec![route(None, Some("/api"), "pool-2")];
                l.routes[0].strip_path_prefix = true;
            },
            Valid,
        ),
        (
            "stripping without a path prefix rejected",
            |l| {
                l.routes = vec![route(None, None, "pool-2")];
                l.routes[0].strip_path_prefix = true;
            },
            Invalid("routes[0].strip_path_prefix"),
        ),
        (
            "routes on TERMINATED_HTTPS accepted",
            |l| {
                terminated(l);
                l.routes = vec![route(Some("example.com"), Some("/"), "pool-2")];
            },
            Valid,
        ),
        (
            "routes on HTTPS (pass-through) rejected",
            |l| {
                l.protocol = Https;
                l.routes = vec![route(None, Some("/api"), "pool-2")];
            },
            Invalid("routes"),
        ),
        (
            "routes on TCP rejected",
            |l| {
                l.protocol = Tcp;
                l.routes = vec![route(None, Some("/api"), "pool-2")];
            },
            Invalid("routes"),
        ),
        (
            "routes on UDP rejected",
            |l| {
                l.protocol = Udp;
                l.routes = vec![route(None, None, "pool-2")];
            },
            Invalid("routes"),
        ),
        (
            "route path_prefix without leading '/' rejected",
            |l| l.routes = vec![route(None, Some("api"), "pool-2")],
            Invalid("routes[0].path_prefix"),
        ),
        (
            "route path_prefix empty rejected",
            |l| l.routes = vec![route(None, Some(""), "pool-2")],
            Invalid("routes[0].path_prefix"),
        ),
        (
            "second route's bad path_prefix named by index",
            |l| {
                l.routes = vec![
                    route(None, Some("/a"), "pool-2"),
                    route(None, Some("b"), "pool-3"),
                ]
            },
            Invalid("routes[1].path_prefix"),
        ),
        (
            "route host wildcard *.example.com accepted",
            |l| l.routes = vec![route(Some("*.example.com"), None, "pool-2")],
            Valid,
        ),
        (
            "route exact host accepted",
            |l| l.routes = vec![route(Some("api.example.com"), Some("/v1"), "pool-2")],
            Valid,
        ),
        (
            "route host with a space rejected",
            |l| l.routes = vec![route(Some("bad host"), None, "pool-2")],
            Invalid("routes[0].host"),
        ),
        (
            "route host bare '*' rejected",
            |l| l.routes = vec![route(Some("*"), None, "pool-2")],
            Invalid("routes[0].host"),
        ),
        (
            "route host wildcard not leading rejected",
            |l| l.routes = vec![route(Some("api.*.example.com"), None, "pool-2")],
            Invalid("routes[0].host"),
        ),
        (
            "route path_exact accepted",
            |l| l.routes = vec![exact("/health", "pool-2")],
            Valid,
        ),
        (
            "route path_exact without leading '/' rejected",
            |l| l.routes = vec![exact("health", "pool-2")],
            Invalid("routes[0].path_exact"),
        ),
        (
            "route path with a space rejected",
            |l| l.routes = vec![exact("/a b", "pool-2")],
            Invalid("routes[0].path_exact"),
        ),
        (
            "route path_suffix accepted",
            |l| {
                l.routes = vec![L7Route {
                    path_suffix: Some(".jpg".into()),
                    ..L7Route::to_pool(PoolId::from("pool-2"))
                }]
            },
            Valid,
        ),
        (
            "route path_suffix empty rejected",
            |l| {
                l.routes = vec![L7Route {
                    path_suffix: Some(String::new()),
                    ..L7Route::to_pool(PoolId::from("pool-2"))
                }]
            },
            Invalid("routes[0].path_suffix"),
        ),
        (
            "route with two path matches rejected",
            |l| {
                let mut r = exact("/a", "pool-2");
                r.path_prefix = Some("/a".into());
                l.routes = vec![r];
            },
            Invalid("routes[0]"),
        ),
        (
            "route ids unique within the listener",
            |l| {
                l.routes = vec![
                    with_id("p1", exact("/a", "pool-2")),
                    with_id("p1", exact("/b", "pool-2")),
                ]
            },
            Invalid("routes[1].id"),
        ),
        (
            "distinct route ids accepted (and unnamed routes share the empty id)",
            |l| {
                l.routes = vec![
                    with_id("p1", exact("/a", "pool-2")),
                    with_id("p2", exact("/b", "pool-2")),
                    exact("/c", "pool-2"),
                    exact("/d", "pool-2"),
                ]
            },
            Valid,
        ),
        (
            "route id over 255 characters rejected",
            |l| l.routes = vec![with_id(&"x".repeat(256), exact("/a", "pool-2"))],
            Invalid("routes[0].id"),
        ),
        // limits
        (
            "connection_limit 0 rejected",
            |l| l.connection_limit = Some(0),
            Invalid("connection_limit"),
        ),
        (
            "connection_limit 1 accepted",
            |l| l.connection_limit = Some(1),
            Valid,
        ),
        (
            "idle timeout 0 rejected",
            |l| l.timeouts.idle_ms = 0,
            Invalid("timeouts.idle_ms"),
        ),
        (
            "connect timeout 0 rejected",
            |l| l.timeouts.connect_ms = 0,
            Invalid("timeouts.connect_ms"),
        ),
    ];
    check("listener", &listener(Http), ListenerSpec::validate, cases);
}

// ---------------------------------------------------------------------------------------
// Health monitors
// ---------------------------------------------------------------------------------------

#[test]
fn health_monitor_rules() {
    let base = HealthMonitorSpec::new(PoolId::from("pool-1"), HealthMonitorType::Http);
    let cases: &[Case<HealthMonitorSpec>] = &[
        (
            "timeout equal to interval accepted",
            |h| {
                h.interval_ms = 3000;
                h.timeout_ms = 3000
            },
            Valid,
        ),
        (
            "timeout above interval rejected",
            |h| {
                h.interval_ms = 3000;
                h.timeout_ms = 3001
            },
            Invalid("timeout_ms"),
        ),
        (
            "interval below 100 ms rejected",
            |h| {
                h.interval_ms = 99;
                h.timeout_ms = 10
            },
            Invalid("interval_ms"),
        ),
        (
            "timeout below 10 ms rejected",
            |h| h.timeout_ms = 9,
            Invalid("timeout_ms"),
        ),
        (
            "healthy_threshold 0 rejected",
            |h| h.healthy_threshold = 0,
            Invalid("healthy_threshold"),
        ),
        (
            "healthy_threshold 1 accepted",
            |h| h.healthy_threshold = 1,
            Valid,
        ),
        (
            "healthy_threshold 10 accepted",
            |h| h.healthy_threshold = 10,
            Valid,
        ),
        (
            "healthy_threshold 11 rejected",
            |h| h.healthy_threshold = 11,
            Invalid("healthy_threshold"),
        ),
        (
            "unhealthy_threshold 0 rejected",
            |h| h.unhealthy_threshold = 0,
            Invalid("unhealthy_threshold"),
        ),
        (
            "unhealthy_threshold 1 accepted",
            |h| h.unhealthy_threshold = 1,
            Valid,
        ),
        (
            "unhealthy_threshold 10 accepted",
            |h| h.unhealthy_threshold = 10,
            Valid,
        ),
        (
            "unhealthy_threshold 11 rejected",
            |h| h.unhealthy_threshold = 11,
            Invalid("unhealthy_threshold"),
        ),
        (
            "url_path /healthz accepted",
            |h| h.url_path = "/healthz".into(),
            Valid,
        ),
        (
            "url_path without leading '/' rejected",
            |h| h.url_path = "healthz".into(),
            Invalid("url_path"),
        ),
        (
            "url_path empty rejected",
            |h| h.url_path.clear(),
            Invalid("url_path"),
        ),
        (
            "expected_codes \"200\" accepted",
            |h| h.expected_codes = "200".into(),
            Valid,
        ),
        (
            "expected_codes \"200-299\" accepted",
            |h| h.expected_codes = "200-299".into(),
            Valid,
        ),
        (
            "expected_codes \"200,202\" accepted",
            |h| h.expected_codes = "200,202".into(),
            Valid,
        ),
        (
            "expected_codes \"abc\" rejected",
            |h| h.expected_codes = "abc".into(),
            Invalid("expected_codes"),
        ),
        (
            "expected_codes \"600\" rejected",
            |h| h.expected_codes = "600".into(),
            Invalid("expected_codes"),
        ),
        (
            "expected_codes \"300-200\" rejected",
            |h| h.expected_codes = "300-200".into(),
            Invalid("expected_codes"),
        ),
        (
            "expected_codes empty rejected",
            |h| h.expected_codes.clear(),
            Invalid("expected_codes"),
        ),
        (
            "http_method HEAD accepted",
            |h| h.http_method = "HEAD".into(),
            Valid,
        ),
        (
            "http_method FETCH rejected",
            |h| h.http_method = "FETCH".into(),
            Invalid("http_method"),
        ),
        ("port 0 rejected", |h| h.port = Some(0), Invalid("port")),
        ("port 8080 accepted", |h| h.port = Some(8080), Valid),
        (
            "domain_name host accepted",
            |h| h.domain_name = Some("www.example.com".into()),
            Valid,
        ),
        (
            "domain_name with a space rejected",
            |h| h.domain_name = Some("www example".into()),
            Invalid("domain_name"),
        ),
        (
            "name of 256 chars rejected",
            |h| h.name = chars('h', 256),
            Invalid("name"),
        ),
    ];
    check("health monitor", &base, HealthMonitorSpec::validate, cases);
}

#[test]
fn expected_codes_forms() {
    type Row = (&'static str, Option<&'static [(u16, u16)]>);
    let table: &[Row] = &[
        ("200", Some(&[(200, 200)])),
        ("200-299", Some(&[(200, 299)])),
        ("200,202", Some(&[(200, 200), (202, 202)])),
        ("200,300-399", Some(&[(200, 200), (300, 399)])),
        (" 200 , 202 ", Some(&[(200, 200), (202, 202)])),
        ("100-599", Some(&[(100, 599)])),
        ("abc", None),
        ("600", None),
        ("99", None),
        ("300-200", None),
        ("200-600", None),
        ("", None),
        ("200,", None),
        ("200-", None),
        ("-200", None),
    ];
    for (input, expected) in table {
        assert_eq!(
            parse_expected_codes(input).as_deref(),
            *expected,
            "parse_expected_codes({input:?})"
        );
    }
    let mut h = HealthMonitorSpec::new(PoolId::from("p"), HealthMonitorType::Http);
    h.expected_codes = "200,300-399".into();
    assert!(h.expects(200) && h.expects(301) && h.expects(399));
    assert!(!h.expects(201) && !h.expects(404));
}

#[test]
fn health_monitor_type_for_pool() {
    use HealthMonitorType::*;
    use PoolProtocol as P;
    let table: &[(HealthMonitorType, PoolProtocol, bool)] = &[
        (Tcp, P::Tcp, true),
        (Http, P::Http, true),
        (Https, P::Https, true),
        (Http, P::Tcp, true),
        (Tcp, P::Http, true),
        (UdpConnect, P::Udp, true),
        (UdpConnect, P::Quic, true),
        (Tcp, P::Udp, true),
        (UdpConnect, P::Tcp, false),
        (UdpConnect, P::Http, false),
        (Http, P::Udp, false),
        (Https, P::Quic, false),
    ];
    for (kind, protocol, ok) in table {
        let got = check_monitor_for_pool(*kind, *protocol);
        assert_eq!(
            got.is_ok(),
            *ok,
            "{kind:?} monitor for a {protocol:?} pool: {got:?}"
        );
        if let Err(e) = got {
            assert_eq!(e.first().field, "type");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Subnets and load balancers [001, 002]
// ---------------------------------------------------------------------------------------

#[test]
fn subnet_rules() {
    let cases: &[Case<SubnetSpec>] = &[
        (
            "IPv6 CIDR accepted",
            |s| s.cidr = "2001:db8::/64".parse().unwrap(),
            Valid,
        ),
        (
            "CIDR with host bits rejected",
            |s| s.cidr = "10.0.0.1/24".parse().unwrap(),
            Invalid("cidr"),
        ),
        (
            "vpc_id empty rejected",
            |s| s.vpc_id.clear(),
            Invalid("vpc_id"),
        ),
        (
            "vpc_id of 36 chars accepted",
            |s| s.vpc_id = chars('v', 36),
            Valid,
        ),
        (
            "vpc_id of 37 chars rejected",
            |s| s.vpc_id = chars('v', 37),
            Invalid("vpc_id"),
        ),
        (
            "name of 256 chars rejected",
            |s| s.name = chars('s', 256),
            Invalid("name"),
        ),
    ];
    check(
        "subnet",
        &subnet("10.0.0.0/24", "vpc-1"),
        SubnetSpec::validate,
        cases,
    );
    let s = subnet("10.0.0.0/24", "vpc-1");
    assert!(s.contains("10.0.0.77".parse().unwrap()));
    assert!(!s.contains("10.0.1.1".parse().unwrap()));
    assert!(!s.is_ipv6() && subnet("2001:db8::/64", "v").is_ipv6());
}

#[test]
fn load_balancer_rules() {
    let cases: &[Case<LoadBalancerSpec>] = &[
        ("name empty rejected", |l| l.name.clear(), Invalid("name")),
        (
            "name of 256 chars rejected",
            |l| l.name = chars('l', 256),
            Invalid("name"),
        ),
        (
            "description of 256 chars rejected",
            |l| l.description = chars('d', 256),
            Invalid("description"),
        ),
        (
            "vpc_id of 36 chars accepted",
            |l| l.vpc_id = chars('v', 36),
            Valid,
        ),
        (
            "vpc_id of 37 chars rejected",
            |l| l.vpc_id = chars('v', 37),
            Invalid("vpc_id"),
        ),
        (
            "dedicated accepted",
            |l| l.kind = LoadBalancerKind::Dedicated,
            Valid,
        ),
        (
            "label key empty rejected",
            |l| {
                l.labels.insert(String::new(), "v".into());
            },
            Invalid("labels"),
        ),
    ];
    check(
        "load balancer",
        &LoadBalancerSpec::new("lb-1"),
        LoadBalancerSpec::validate,
        cases,
    );
}

// ---------------------------------------------------------------------------------------
// Upstream settings and circuit breakers [003]
// ---------------------------------------------------------------------------------------

fn base_rule() -> CircuitBreakerRule {
    CircuitBreakerRule {
        name: "trip-on-5xx".into(),
        failure_condition: FailureCondition {
            count: Some(5),
            percentage: None,
            interval_ms: 60_000,
            status_code_ranges: vec![StatusCodeRange { min: 500, max: 599 }],
            error_reasons: Vec::new(),
        },
        trip_duration_ms: 30_000,
        accept_retry_after: false,
    }
}

const RANGE0: &str = "failure_condition.status_code_ranges[0]";

#[test]
fn circuit_breaker_rules() {
    let cases: &[Case<CircuitBreakerRule>] = &[
        (
            "count only accepted",
            |r| r.failure_condition.count = Some(1),
            Valid,
        ),
        (
            "percentage only accepted",
            |r| {
                r.failure_condition.count = None;
                r.failure_condition.percentage = Some(50);
            },
            Valid,
        ),
        (
            "count and percentage accepted",
            |r| r.failure_condition.percentage = Some(50),
            Valid,
        ),
        (
            "neither count nor percentage rejected",
            |r| r.failure_condition.count = None,
            Invalid("failure_condition"),
        ),
        (
            "count 0 rejected",
            |r| r.failure_condition.count = Some(0),
            Invalid("failure_condition.count"),
        ),
        (
            "percentage 0 rejected",
            |r| r.failure_condition.percentage = Some(0),
            Invalid("failure_condition.percentage"),
        ),
        (
            "percentage 1 accepted",
            |r| r.failure_condition.percentage = Some(1),
            Valid,
        ),
        (
            "percentage 100 accepted",
            |r| r.failure_condition.percentage = Some(100),
            Valid,
        ),
        (
            "percentage 101 rejected",
            |r| r.failure_condition.percentage = Some(101),
            Invalid("failure_condition.percentage"),
        ),
        (
            "status range 100..599 accepted",
            |r| {
                r.failure_condition.status_code_ranges =
                    vec![StatusCodeRange { min: 100, max: 599 }]
            },
            Valid,
        ),
        (
            "status range of one status accepted",
            |r| {
                r.failure_condition.status_code_ranges =
                    vec![StatusCodeRange { min: 503, max: 503 }]
            },
            Valid,
        ),
        (
            "status range min 99 rejected",
            |r| {
                r.failure_condition.status_code_ranges = vec![StatusCodeRange { min: 99, max: 599 }]
            },
            Invalid(RANGE0),
        ),
        (
            "status range max 600 rejected",
            |r| {
                r.failure_condition.status_code_ranges =
                    vec![StatusCodeRange { min: 500, max: 600 }]
            },
            Invalid(RANGE0),
        ),
        (
            "status range min > max rejected",
            |r| {
                r.failure_condition.status_code_ranges =
                    vec![StatusCodeRange { min: 503, max: 500 }]
            },
            Invalid(RANGE0),
        ),
        (
            "second bad status range named by index",
            |r| {
                r.failure_condition.status_code_ranges = vec![
                    StatusCodeRange { min: 500, max: 599 },
                    StatusCodeRange { min: 0, max: 0 },
                ]
            },
            Invalid("failure_condition.status_code_ranges[1]"),
        ),
        (
            "error reasons only accepted",
            |r| {
                r.failure_condition.status_code_ranges.clear();
                r.failure_condition.error_reasons = vec!["Timeout".into()];
            },
            Valid,
        ),
        (
            "neither status ranges nor error reasons rejected",
            |r| r.failure_condition.status_code_ranges.clear(),
            Invalid("failure_condition"),
        ),
        (
            "empty error reason rejected",
            |r| r.failure_condition.error_reasons = vec![String::new()],
            Invalid("failure_condition.error_reasons[0]"),
        ),
        (
            "interval 0 rejected",
            |r| r.failure_condition.interval_ms = 0,
            Invalid("failure_condition.interval_ms"),
        ),
        (
            "interval 1 ms accepted",
            |r| r.failure_condition.interval_ms = 1,
            Valid,
        ),
        (
            "trip duration 0 rejected",
            |r| r.trip_duration_ms = 0,
            Invalid("trip_duration_ms"),
        ),
        (
            "trip duration 1 ms accepted",
            |r| r.trip_duration_ms = 1,
            Valid,
        ),
        (
            "accept_retry_after accepted",
            |r| r.accept_retry_after = true,
            Valid,
        ),
        ("name empty rejected", |r| r.name.clear(), Invalid("name")),
    ];
    check(
        "circuit breaker rule",
        &base_rule(),
        CircuitBreakerRule::validate,
        cases,
    );
}

#[test]
fn upstream_settings_rules() {
    let base = UpstreamSettings {
        circuit_breaker: vec![base_rule()],
        ..UpstreamSettings::default()
    };
    let cases: &[Case<UpstreamSettings>] = &[
        (
            "base_path /api accepted",
            |u| u.base_path = "/api".into(),
            Valid,
        ),
        (
            "base_path without '/' rejected",
            |u| u.base_path = "api".into(),
            Invalid("base_path"),
        ),
        (
            "rule errors named under circuit_breaker[i]",
            |u| u.circuit_breaker[0].trip_duration_ms = 0,
            Invalid("circuit_breaker[0].trip_duration_ms"),
        ),
        (
            "second rule named by index",
            |u| {
                let mut r = base_rule();
                r.failure_condition.percentage = Some(101);
                u.circuit_breaker.push(r);
            },
            Invalid("circuit_breaker[1].failure_condition.percentage"),
        ),
        (
            "proxy http://host:port accepted",
            |u| {
                u.proxy = Some(ForwardProxy {
                    url: "http://192.168.1.1:8080".into(),
                    username: Some("Contoso\\admin".into()),
                    password: Some("secret".into()),
                })
            },
            Valid,
        ),
        (
            "proxy url without http:// rejected",
            |u| {
                u.proxy = Some(ForwardProxy {
                    url: "192.168.1.1:8080".into(),
                    username: None,
                    password: None,
                })
            },
            Invalid("proxy.url"),
        ),
        (
            "proxy password without username rejected",
            |u| {
                u.proxy = Some(ForwardProxy {
                    url: "http://proxy:3128".into(),
                    username: None,
                    password: Some("secret".into()),
                })
            },
            Invalid("proxy.password"),
        ),
        (
            "header credentials accepted",
            |u| {
                u.credentials
                    .headers
                    .insert("x-my-1".into(), vec!["val1".into(), "val2".into()]);
            },
            Valid,
        ),
        (
            "header name with a space rejected",
            |u| {
                u.credentials
                    .headers
                    .insert("x my".into(), vec!["v".into()]);
            },
            Invalid("credentials.headers"),
        ),
        (
            "header value with a line break rejected",
            |u| {
                u.credentials
                    .headers
                    .insert("x-my".into(), vec!["a\r\nb".into()]);
            },
            Invalid("credentials.headers"),
        ),
        (
            "query parameter with empty name rejected",
            |u| {
                u.credentials.query.insert(String::new(), vec!["v".into()]);
            },
            Invalid("credentials.query"),
        ),
        (
            "authorization accepted",
            |u| {
                u.credentials.authorization = Some(Authorization {
                    scheme: "Basic".into(),
                    parameter: "opensesma".into(),
                })
            },
            Valid,
        ),
        (
            "authorization scheme with a space rejected",
            |u| {
                u.credentials.authorization = Some(Authorization {
                    scheme: "Bas ic".into(),
                    parameter: "x".into(),
                })
            },
            Invalid("credentials.authorization.scheme"),
        ),
        (
            "client certificate without a key rejected",
            |u| u.credentials.client_certificate_pem = Some(CERT.into()),
            Invalid("credentials.client_certificate_pem"),
        ),
        (
            "client certificate with its key accepted",
            |u| u.credentials.client_certificate_pem = Some(format!("{CERT}{KEY}")),
            Valid,
        ),
        (
            "TLS checks off accepted",
            |u| {
                u.tls.validate_certificate_chain = false;
                u.tls.validate_certificate_name = false;
            },
            Valid,
        ),
    ];
    check(
        "upstream settings",
        &base,
        UpstreamSettings::validate,
        cases,
    );
}

#[test]
fn upstream_tls_defaults_to_validating() {
    // [003] validateCertificateChain and validateCertificateName default to true.
    let tls = UpstreamTls::default();
    assert!(tls.validate_certificate_chain);
    assert!(tls.validate_certificate_name);
    let settings = UpstreamSettings::default();
    assert!(settings.tls.validate_certificate_chain && settings.tls.validate_certificate_name);
    assert!(
        PoolSpec::new("p", PoolProtocol::Http)
            .upstream
            .tls
            .validate_certificate_chain
    );
}

#[test]
fn masked_hides_secrets_and_keeps_names() {
    let mut u = UpstreamSettings {
        base_path: "/api".into(),
        ..UpstreamSettings::default()
    };
    u.credentials
        .headers
        .insert("x-my-1".into(), vec!["val1".into(), "val2".into()]);
    u.credentials
        .query
        .insert("sv".into(), vec!["xx".into(), "bb".into(), "cc".into()]);
    u.credentials.authorization = Some(Authorization {
        scheme: "Basic".into(),
        parameter: "opensesma".into(),
    });
    u.credentials.client_certificate_pem = Some(format!("{CERT}{KEY}"));
    u.proxy = Some(ForwardProxy {
        url: "http://192.168.1.1:8080".into(),
        username: Some("Contoso\\admin".into()),
        password: Some("<password>".into()),
    });
    let m = u.masked();

    assert_eq!(m.credentials.headers.keys().collect::<Vec<_>>(), ["x-my-1"]);
    assert_eq!(
        m.credentials.headers["x-my-1"],
        ["***", "***"],
        "one mask per value"
    );
    assert_eq!(m.credentials.query.keys().collect::<Vec<_>>(), ["sv"]);
    assert_eq!(m.credentials.query["sv"], ["***", "***", "***"]);
    let auth = m.credentials.authorization.as_ref().unwrap();
    assert_eq!(auth.scheme, "Basic", "the scheme is not secret");
    assert_eq!(auth.parameter, "***");
    assert_eq!(m.credentials.client_certificate_pem.as_deref(), Some("***"));
    let proxy = m.proxy.as_ref().unwrap();
    assert_eq!(proxy.url, "http://192.168.1.1:8080");
    assert_eq!(proxy.username.as_deref(), Some("Contoso\\admin"));
    assert_eq!(proxy.password.as_deref(), Some("***"));
    assert_eq!(m.base_path, "/api");
    assert_eq!(m.tls, u.tls);

    // Nothing secret survives anywhere in the masked value.
    let dump = format!("{m:?}");
    for secret in [
        "val1",
        "val2",
        "xx",
        "bb",
        "cc",
        "opensesma",
        "<password>",
        "PRIVATE KEY",
    ] {
        assert!(!dump.contains(secret), "{secret:?} leaked: {dump}");
    }

    // Absent secrets stay absent rather than becoming "***".
    let bare = UpstreamSettings {
        proxy: Some(ForwardProxy {
            url: "http://proxy:3128".into(),
            username: None,
            password: None,
        }),
        ..UpstreamSettings::default()
    };
    let bare_masked = bare.masked();
    assert_eq!(bare_masked, bare);
}

// ---------------------------------------------------------------------------------------
// The error type
// ---------------------------------------------------------------------------------------

#[test]
fn validation_errors_collect_every_field_and_nest() {
    let mut pool = PoolSpec::new(chars('a', 256), PoolProtocol::Tcp);
    pool.admin_state_up = false;
    pool.slow_start = Some(SlowStart {
        enable: true,
        duration: 10,
    });
    let e = pool
        .validate(PoolContext {
            lb_kind: LoadBalancerKind::Shared,
        })
        .unwrap_err();
    let fields: Vec<&str> = e.errors.iter().map(|e| e.field.as_str()).collect();
    for f in [
        "name",
        "admin_state_up",
        "slow_start",
        "slow_start.duration",
    ] {
        assert!(fields.contains(&f), "{f} missing from {fields:?}");
    }
    let nested = ValidationError::invalid("weight", "bad").within("members[3]");
    assert_eq!(nested.first().field, "members[3].weight");
    assert_eq!(
        ValidationError::missing("address").first().kind,
        FieldErrorKind::Missing
    );
}
