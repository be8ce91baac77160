//! The model's JSON shapes: unknown fields are refused by name, defaults are the seeds'
//! defaults, enums are spelled as the seeds spell them, and a full pool survives a round
//! trip.

use std::collections::BTreeMap;

use chrono::TimeZone;
use fulcrum_model::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn parse<T: DeserializeOwned>(v: Value) -> Result<T, serde_json::Error> {
    serde_json::from_value(v)
}

fn parse_ok<T: DeserializeOwned>(v: Value) -> T {
    match serde_json::from_value(v.clone()) {
        Ok(t) => t,
        Err(e) => panic!("{v} should parse: {e}"),
    }
}

/// Deserializes `v` as `T` and returns the error message, which must exist.
fn refuse<T: DeserializeOwned>(v: Value) -> String {
    match parse::<T>(v.clone()) {
        Ok(_) => panic!("{v} should be refused"),
        Err(e) => e.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// Unknown fields
// ---------------------------------------------------------------------------------------

type Parser = fn(Value) -> Result<(), serde_json::Error>;

fn as_type<T: DeserializeOwned>(v: Value) -> Result<(), serde_json::Error> {
    parse::<T>(v).map(drop)
}

#[test]
fn unknown_fields_are_refused_by_name() {
    let pool = json!({"name": "p", "protocol": "HTTP"});
    let member = json!({"address": "10.0.0.1", "port": 80});
    let rule = json!({
        "name": "r",
        "failure_condition": {"count": 1, "interval_ms": 1000, "status_code_ranges": [{"min": 500, "max": 599}]},
        "trip_duration_ms": 1000
    });
    // (type, a valid body, where to put the unknown field: a JSON pointer to an object)
    let table: &[(&str, Parser, Value, &str)] = &[
        ("MemberSpec", as_type::<MemberSpec>, member.clone(), ""),
        (
            "MemberSpec.upstream",
            as_type::<MemberSpec>,
            json!({"address": "a", "port": 1, "upstream": {}}),
            "/upstream",
        ),
        ("PoolSpec", as_type::<PoolSpec>, pool.clone(), ""),
        (
            "SessionPersistence",
            as_type::<PoolSpec>,
            json!({"name": "p", "protocol": "HTTP", "session_persistence": {"type": "SOURCE_IP"}}),
            "/session_persistence",
        ),
        (
            "SlowStart",
            as_type::<PoolSpec>,
            json!({"name": "p", "protocol": "HTTP", "slow_start": {"enable": true}}),
            "/slow_start",
        ),
        (
            "PoolSpec.upstream",
            as_type::<PoolSpec>,
            json!({"name": "p", "protocol": "HTTP", "upstream": {}}),
            "/upstream",
        ),
        (
            "UpstreamTls",
            as_type::<UpstreamSettings>,
            json!({"tls": {}}),
            "/tls",
        ),
        (
            "Credentials",
            as_type::<UpstreamSettings>,
            json!({"credentials": {}}),
            "/credentials",
        ),
        (
            "Authorization",
            as_type::<UpstreamSettings>,
            json!({"credentials": {"authorization": {"scheme": "Basic", "parameter": "x"}}}),
            "/credentials/authorization",
        ),
        (
            "ForwardProxy",
            as_type::<UpstreamSettings>,
            json!({"proxy": {"url": "http://p:1"}}),
            "/proxy",
        ),
        (
            "CircuitBreakerRule",
            as_type::<CircuitBreakerRule>,
            rule.clone(),
            "",
        ),
        (
            "FailureCondition",
            as_type::<CircuitBreakerRule>,
            rule.clone(),
            "/failure_condition",
        ),
        (
            "StatusCodeRange",
            as_type::<CircuitBreakerRule>,
            rule.clone(),
            "/failure_condition/status_code_ranges/0",
        ),
        (
            "ListenerSpec",
            as_type::<ListenerSpec>,
            json!({"protocol": "HTTP", "port": 80}),
            "",
        ),
        (
            "ListenerTimeouts",
            as_type::<ListenerSpec>,
            json!({"protocol": "HTTP", "port": 80, "timeouts": {}}),
            "/timeouts",
        ),
        (
            "L7Route",
            as_type::<ListenerSpec>,
            json!({"protocol": "HTTP", "port": 80, "routes": [{"pool_id": "p"}]}),
            "/routes/0",
        ),
        (
            "ListenerTls",
            as_type::<ListenerSpec>,
            json!({"protocol": "TERMINATED_HTTPS", "port": 443, "tls": {"certificate_chain_pem": "c", "private_key_pem": "k"}}),
            "/tls",
        ),
        (
            "HealthMonitorSpec",
            as_type::<HealthMonitorSpec>,
            json!({"pool_id": "p", "type": "HTTP"}),
            "",
        ),
        (
            "SubnetSpec",
            as_type::<SubnetSpec>,
            json!({"cidr": "10.0.0.0/24", "vpc_id": "v"}),
            "",
        ),
        (
            "LoadBalancerSpec",
            as_type::<LoadBalancerSpec>,
            json!({"name": "lb"}),
            "",
        ),
        (
            "ResourceLock",
            as_type::<LoadBalancerSpec>,
            json!({"name": "lb", "locks": [{"type": "FULL"}]}),
            "/locks/0",
        ),
    ];
    for (name, parser, body, at) in table {
        parser(body.clone())
            .unwrap_or_else(|e| panic!("{name}: the valid body {body} is refused: {e}"));
        let mut bad = body.clone();
        bad.pointer_mut(at)
            .and_then(Value::as_object_mut)
            .unwrap_or_else(|| panic!("{name}: no object at {at:?}"))
            .insert("bogus_field".into(), json!(1));
        let err = parser(bad).expect_err(name).to_string();
        assert!(err.contains("unknown field `bogus_field`"), "{name}: {err}");
    }
}

#[test]
fn other_dialects_spellings_are_unknown_fields() {
    // Dialects translate their own names; the model refuses them rather than ignoring them.
    for (field, value) in [
        ("isBackup", json!(true)),
        ("protocol_port", json!(80)),
        ("ipAddress", json!("10.0.0.1")),
    ] {
        let mut body = json!({"address": "10.0.0.1", "port": 80});
        body[field] = value;
        let err = refuse::<MemberSpec>(body);
        assert!(err.contains(&format!("unknown field `{field}`")), "{err}");
    }
    let err =
        refuse::<PoolSpec>(json!({"name": "p", "protocol": "HTTP", "lb_algorithm": "SOURCE_IP"}));
    assert!(err.contains("unknown field `lb_algorithm`"), "{err}");
}

#[test]
fn required_fields_are_named() {
    let table: &[(&str, Parser, Value, &str)] = &[
        (
            "member address",
            as_type::<MemberSpec>,
            json!({"port": 80}),
            "address",
        ),
        (
            "member port",
            as_type::<MemberSpec>,
            json!({"address": "10.0.0.1"}),
            "port",
        ),
        (
            "pool protocol",
            as_type::<PoolSpec>,
            json!({"name": "p"}),
            "protocol",
        ),
        (
            "persistence type",
            as_type::<PoolSpec>,
            json!({"name": "p", "protocol": "TCP", "session_persistence": {}}),
            "type",
        ),
        (
            "listener port",
            as_type::<ListenerSpec>,
            json!({"protocol": "TCP"}),
            "port",
        ),
        (
            "monitor type",
            as_type::<HealthMonitorSpec>,
            json!({"pool_id": "p"}),
            "type",
        ),
        (
            "subnet vpc_id",
            as_type::<SubnetSpec>,
            json!({"cidr": "10.0.0.0/24"}),
            "vpc_id",
        ),
    ];
    for (name, parser, body, field) in table {
        let err = parser(body.clone()).expect_err(name).to_string();
        assert!(
            err.contains(&format!("missing field `{field}`")),
            "{name}: {err}"
        );
    }
}

#[test]
fn out_of_type_values_are_refused() {
    // [000] weight is int32 and non-negative; [001] ports are 1..65535 (0 is left to validation).
    assert!(parse::<MemberSpec>(json!({"address": "a", "port": 80, "weight": -1})).is_err());
    assert!(parse::<MemberSpec>(json!({"address": "a", "port": 65536})).is_err());
    assert!(parse::<MemberSpec>(json!({"address": "a", "port": 80, "priority": 256})).is_err());
    // A weight above i32::MAX parses (u32) and is refused by validation, naming `weight`.
    let m: MemberSpec =
        parse_ok(json!({"address": "10.0.0.1", "port": 80, "weight": 2_147_483_648u64}));
    let ctx = MemberContext {
        lb_kind: LoadBalancerKind::Shared,
        lb_vpc_id: "",
        subnet: None,
        server_id_len: None,
    };
    assert_eq!(m.validate(ctx).unwrap_err().first().field, "weight");
}

// ---------------------------------------------------------------------------------------
// Defaults
// ---------------------------------------------------------------------------------------

#[test]
fn member_defaults() {
    let m: MemberSpec = parse_ok(json!({"address": "10.0.0.1", "port": 80}));
    assert_eq!(m.weight, 1, "[001] weight defaults to 1");
    assert!(m.admin_state_up);
    assert!(
        !m.backup && !m.drain && !m.offline,
        "[000] isBackup/isDrain/isOffline default false"
    );
    assert_eq!(m.name, "", "[001] name defaults to \"\"");
    assert_eq!(m.priority, 0);
    assert_eq!(m.subnet_id, None);
    assert_eq!(m.max_connections, None);
    assert_eq!(m.upstream, None);
    assert_eq!(
        m,
        MemberSpec::new("10.0.0.1", 80),
        "MemberSpec::new agrees with serde"
    );
}

#[test]
fn pool_defaults() {
    let p: PoolSpec = parse_ok(json!({"name": "p", "protocol": "HTTP"}));
    assert_eq!(
        p,
        PoolSpec::new("p", PoolProtocol::Http),
        "PoolSpec::new agrees with serde"
    );
    assert_eq!(p.algorithm, Algorithm::RoundRobin);
    assert!(p.admin_state_up);
    assert_eq!(p.pool_type, PoolType::Any);
    assert_eq!(
        p.protection_status,
        ProtectionStatus::NonProtection,
        "[002] default nonProtection"
    );
    assert_eq!(p.ip_version, IpVersion::V4);
    assert!(!p.member_deletion_protection);
    assert_eq!(p.vpc_id, "");
    assert_eq!(p.session_persistence, None);
    assert_eq!(p.slow_start, None);

    // [002] slow_start: enable false, duration 30.
    let p: PoolSpec = parse_ok(json!({"name": "p", "protocol": "HTTP", "slow_start": {}}));
    assert_eq!(
        p.slow_start,
        Some(SlowStart {
            enable: false,
            duration: 30
        })
    );
    let p: PoolSpec =
        parse_ok(json!({"name": "p", "protocol": "HTTP", "slow_start": {"enable": true}}));
    assert_eq!(
        p.slow_start,
        Some(SlowStart {
            enable: true,
            duration: 30
        })
    );
    assert_eq!(p.slow_start_secs(), Some(30));

    // persistence: no cookie, the protocol's default timeout applies later.
    let p: PoolSpec = parse_ok(
        json!({"name": "p", "protocol": "HTTP", "session_persistence": {"type": "HTTP_COOKIE"}}),
    );
    let sp = p.session_persistence.clone().unwrap();
    assert_eq!((sp.cookie_name, sp.persistence_timeout), (None, None));
    assert_eq!(
        p.effective_persistence(),
        EffectivePersistence::HttpCookie {
            timeout_minutes: 1440
        }
    );
}

#[test]
fn health_monitor_defaults() {
    let h: HealthMonitorSpec = parse_ok(json!({"pool_id": "pool-1", "type": "HTTP"}));
    assert_eq!(
        h,
        HealthMonitorSpec::new(PoolId::from("pool-1"), HealthMonitorType::Http)
    );
    assert_eq!(h.interval_ms, 5_000);
    assert_eq!(h.timeout_ms, 3_000);
    assert_eq!(h.healthy_threshold, 2);
    assert_eq!(h.unhealthy_threshold, 3);
    assert_eq!(h.http_method, "GET");
    assert_eq!(h.url_path, "/");
    assert_eq!(h.expected_codes, "200");
    assert_eq!(h.port, None);
    assert_eq!(h.domain_name, None);
    assert!(h.admin_state_up);
    assert!(h.validate().is_ok(), "the defaults are valid");
}

#[test]
fn listener_and_load_balancer_defaults() {
    let l: ListenerSpec = parse_ok(json!({"protocol": "HTTP", "port": 80}));
    assert!(l.admin_state_up);
    assert_eq!(l.timeouts, ListenerTimeouts::default());
    assert!(l.routes.is_empty() && l.tls.is_none() && l.default_pool_id.is_none());
    let t: ListenerTimeouts = parse_ok(json!({"idle_ms": 5}));
    assert_eq!(t.idle_ms, 5);
    assert_eq!(t.connect_ms, ListenerTimeouts::default().connect_ms);

    let lb: LoadBalancerSpec = parse_ok(json!({"name": "lb"}));
    assert_eq!(lb, LoadBalancerSpec::new("lb"));
    assert_eq!(lb.kind, LoadBalancerKind::Shared);
    assert!(lb.admin_state_up);
    assert_eq!(lb.vip_address.to_string(), "0.0.0.0");
}

#[test]
fn upstream_tls_defaults_true() {
    // [003] validateCertificateChain / validateCertificateName default to true, however
    // much of the object is given.
    for (body, chain, name) in [
        (json!({}), true, true),
        (json!({"tls": {}}), true, true),
        (
            json!({"tls": {"validate_certificate_chain": false}}),
            false,
            true,
        ),
        (
            json!({"tls": {"validate_certificate_name": false}}),
            true,
            false,
        ),
    ] {
        let u: UpstreamSettings = parse_ok(body.clone());
        assert_eq!(
            (
                u.tls.validate_certificate_chain,
                u.tls.validate_certificate_name
            ),
            (chain, name),
            "{body}"
        );
    }
    let m: MemberSpec =
        parse_ok(json!({"address": "a", "port": 1, "upstream": {"scheme": "https"}}));
    let tls = m.upstream.unwrap().tls;
    assert!(tls.validate_certificate_chain && tls.validate_certificate_name);
}

// ---------------------------------------------------------------------------------------
// Enum spellings
// ---------------------------------------------------------------------------------------

/// Serializes to `wire`, parses back from it, and refuses each of `wrong`.
fn spelled<T>(value: T, wire: &str, wrong: &[&str])
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    assert_eq!(
        serde_json::to_value(&value).expect("enums serialize"),
        json!(wire),
        "{value:?}"
    );
    assert_eq!(parse_ok::<T>(json!(wire)), value, "{wire:?}");
    for w in wrong {
        assert!(
            parse::<T>(json!(w)).is_err(),
            "{w:?} must not parse as {value:?}"
        );
    }
}

#[test]
fn enum_spellings() {
    use Algorithm as A;
    spelled(
        A::RoundRobin,
        "ROUND_ROBIN",
        &["round_robin", "RoundRobin", "ROUNDROBIN"],
    );
    spelled(
        A::LeastConnections,
        "LEAST_CONNECTIONS",
        &["least_connections"],
    );
    spelled(A::SourceIp, "SOURCE_IP", &["SOURCEIP", "source_ip"]);
    spelled(A::QuicCid, "QUIC_CID", &["quic_cid", "QUICCID"]);

    use PersistenceType as S;
    spelled(S::SourceIp, "SOURCE_IP", &["source_ip"]);
    spelled(S::HttpCookie, "HTTP_COOKIE", &["http_cookie"]);
    spelled(S::AppCookie, "APP_COOKIE", &["AppCookie"]);

    use PoolProtocol as P;
    spelled(P::Tcp, "TCP", &["tcp"]);
    spelled(P::Udp, "UDP", &["udp"]);
    spelled(P::Http, "HTTP", &["http"]);
    spelled(P::Https, "HTTPS", &["https"]);
    spelled(P::Quic, "QUIC", &["quic"]);
    spelled(P::Tcpssl, "TCPSSL", &["TCP_SSL", "tcpssl"]);

    use ListenerProtocol as L;
    spelled(L::Tcp, "TCP", &["tcp"]);
    spelled(L::Udp, "UDP", &["udp"]);
    spelled(L::Http, "HTTP", &["http"]);
    spelled(L::Https, "HTTPS", &["https"]);
    spelled(
        L::TerminatedHttps,
        "TERMINATED_HTTPS",
        &["TERMINATEDHTTPS", "TERMINATED-HTTPS", "terminated_https"],
    );
    spelled(L::Quic, "QUIC", &["quic"]);

    spelled(PoolType::Any, "", &["any", "ANY"]);
    spelled(PoolType::Instance, "instance", &["INSTANCE", "Instance"]);
    spelled(PoolType::Ip, "ip", &["IP", "Ip"]);

    spelled(
        ProtectionStatus::NonProtection,
        "nonProtection",
        &["NON_PROTECTION", "NonProtection", "nonprotection"],
    );
    spelled(
        ProtectionStatus::ConsoleProtection,
        "consoleProtection",
        &["CONSOLE_PROTECTION", "ConsoleProtection"],
    );

    spelled(IpVersion::V4, "v4", &["V4", "ipv4"]);
    spelled(IpVersion::V6, "v6", &["V6"]);
    spelled(
        IpVersion::Dualstack,
        "dualstack",
        &["DualStack", "dual_stack"],
    );

    use HealthMonitorType as H;
    spelled(H::Tcp, "TCP", &["tcp"]);
    spelled(H::Http, "HTTP", &[]);
    spelled(H::Https, "HTTPS", &[]);
    spelled(H::UdpConnect, "UDP_CONNECT", &["UDPCONNECT"]);

    spelled(LoadBalancerKind::Shared, "shared", &["SHARED"]);
    spelled(LoadBalancerKind::Dedicated, "dedicated", &["DEDICATED"]);
    spelled(UpstreamScheme::Http, "http", &["HTTP"]);
    spelled(UpstreamScheme::Https, "https", &["HTTPS"]);
    spelled(LockKind::Full, "FULL", &["full"]);
    spelled(LockKind::Delete, "DELETE", &["delete"]);
}

#[test]
fn pool_type_field_is_named_type() {
    for (wire, expected) in [
        ("", PoolType::Any),
        ("instance", PoolType::Instance),
        ("ip", PoolType::Ip),
    ] {
        let p: PoolSpec = parse_ok(json!({"name": "p", "protocol": "TCP", "type": wire}));
        assert_eq!(p.pool_type, expected);
        assert_eq!(serde_json::to_value(&p).unwrap()["type"], json!(wire));
    }
    assert!(parse::<PoolSpec>(json!({"name": "p", "protocol": "TCP", "type": "vm"})).is_err());
}

// ---------------------------------------------------------------------------------------
// A full pool through JSON
// ---------------------------------------------------------------------------------------

fn full_pool() -> Pool {
    let mut headers = BTreeMap::new();
    headers.insert(
        "x-my-1".to_owned(),
        vec!["val1".to_owned(), "val2".to_owned()],
    );
    let mut query = BTreeMap::new();
    query.insert("sv".to_owned(), vec!["xx".to_owned(), "bb".to_owned()]);
    let at = chrono::Utc
        .with_ymd_and_hms(2024, 4, 18, 8, 30, 15)
        .unwrap();
    Pool {
        id: PoolId::from("36ce7086-a496-4666-9064-5ba0e6840c75"),
        loadbalancer_id: LoadBalancerId::from("098b2f68-af1c-41a9-8efd-69958722af62"),
        spec: PoolSpec {
            name: "My pool.".into(),
            description: "描述 — with multibyte text".into(),
            protocol: PoolProtocol::Http,
            algorithm: Algorithm::LeastConnections,
            session_persistence: Some(SessionPersistence {
                kind: PersistenceType::AppCookie,
                cookie_name: Some("JSESSIONID".into()),
                persistence_timeout: Some(30),
            }),
            slow_start: Some(SlowStart {
                enable: true,
                duration: 120,
            }),
            member_deletion_protection: true,
            vpc_id: "vpc-1".into(),
            pool_type: PoolType::Instance,
            protection_status: ProtectionStatus::ConsoleProtection,
            protection_reason: "change freeze".into(),
            ip_version: IpVersion::Dualstack,
            admin_state_up: true,
            max_connections_per_member: Some(1000),
            upstream: UpstreamSettings {
                scheme: UpstreamScheme::Https,
                base_path: "/api".into(),
                host_header: HostHeader::Member,
                credentials: Credentials {
                    headers,
                    query,
                    authorization: Some(Authorization {
                        scheme: "Basic".into(),
                        parameter: "opensesma".into(),
                    }),
                    client_certificate_pem: None,
                },
                tls: UpstreamTls {
                    validate_certificate_chain: false,
                    validate_certificate_name: true,
                    ca_certificates_pem: None,
                },
                proxy: Some(ForwardProxy {
                    url: "http://192.168.1.1:8080".into(),
                    username: Some("Contoso\\admin".into()),
                    password: Some("<password>".into()),
                }),
                circuit_breaker: vec![CircuitBreakerRule {
                    name: "trip-on-5xx".into(),
                    failure_condition: FailureCondition {
                        count: Some(5),
                        percentage: Some(50),
                        interval_ms: 60_000,
                        status_code_ranges: vec![StatusCodeRange { min: 500, max: 599 }],
                        error_reasons: vec!["Timeout".into()],
                    },
                    trip_duration_ms: 30_000,
                    accept_retry_after: true,
                }],
            },
            outlier_detection: OutlierDetection {
                consecutive_5xx: 7,
                max_ejection_percent: 34,
                ..OutlierDetection::default()
            },
            member_timeouts: MemberTimeouts {
                first_byte_ms: Some(2_000),
                total_ms: Some(30_000),
            },
            quic_lb: None,
        },
        created_at: at,
        updated_at: at,
    }
}

#[test]
fn full_pool_round_trips_through_json() {
    let pool = full_pool();
    assert!(
        pool.spec
            .validate(PoolContext {
                lb_kind: LoadBalancerKind::Shared
            })
            .is_ok()
    );

    let text = serde_json::to_string(&pool).unwrap();
    let back: Pool = serde_json::from_str(&text).unwrap();
    assert_eq!(back, pool);

    // The spec is flattened next to the metadata, with the seeds' spellings.
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["id"], json!("36ce7086-a496-4666-9064-5ba0e6840c75"));
    assert_eq!(v["name"], json!("My pool."));
    assert_eq!(v["type"], json!("instance"));
    assert_eq!(v["algorithm"], json!("LEAST_CONNECTIONS"));
    assert_eq!(v["protection_status"], json!("consoleProtection"));
    assert_eq!(v["ip_version"], json!("dualstack"));
    assert_eq!(v["session_persistence"]["type"], json!("APP_COOKIE"));
    assert_eq!(
        v["created_at"],
        json!("2024-04-18T08:30:15Z"),
        "[002] yyyy-MM-dd'T'HH:mm:ss'Z'"
    );
    assert!(v.get("spec").is_none(), "spec is flattened");

    // The spec alone round-trips too, and through its own strict parser.
    let spec_json = serde_json::to_value(&pool.spec).unwrap();
    assert_eq!(parse_ok::<PoolSpec>(spec_json), pool.spec);

    // A minimal pool round-trips with its defaults.
    let minimal = Pool {
        spec: PoolSpec::new("p", PoolProtocol::Tcp),
        ..full_pool()
    };
    let back: Pool = serde_json::from_str(&serde_json::to_string(&minimal).unwrap()).unwrap();
    assert_eq!(back, minimal);
}

#[test]
fn validation_errors_serialize_with_field_and_kind() {
    let e = ValidationError::missing("members[0].address");
    assert_eq!(
        serde_json::to_value(&e).unwrap(),
        json!({"errors": [{"field": "members[0].address", "kind": "missing", "message": "members[0].address is required"}]})
    );
}
