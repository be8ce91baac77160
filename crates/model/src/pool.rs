use serde::{Deserialize, Serialize};

use crate::{
    Checker, LoadBalancerId, LoadBalancerKind, MAX_NAME_LEN, MemberTimeouts, OutlierDetection,
    PoolId, Timestamp, UpstreamSettings, ValidationError,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PoolProtocol {
    Tcp,
    Udp,
    Http,
    Https,
    Quic,
    Tcpssl,
}

impl PoolProtocol {
    pub fn is_http(self) -> bool {
        matches!(self, PoolProtocol::Http | PoolProtocol::Https)
    }

    /// Seed 002: persistence timeout range and default, in minutes.
    pub fn persistence_timeout_range(self) -> (u32, u32, u32) {
        if self.is_http() {
            (1, 1440, 1440)
        } else {
            (1, 60, 1)
        }
    }
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Algorithm {
    /// Smooth weighted round robin.
    #[default]
    RoundRobin,
    /// Weighted least connections (in-flight requests for HTTP, connections for TCP).
    LeastConnections,
    /// Consistent hash of the client address; member weights are ignored.
    SourceIp,
    /// QUIC connection-ID hash; QUIC pools only.
    QuicCid,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PersistenceType {
    SourceIp,
    HttpCookie,
    AppCookie,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionPersistence {
    #[serde(rename = "type")]
    pub kind: PersistenceType,
    /// The application's cookie to learn; APP_COOKIE only.
    #[serde(default)]
    pub cookie_name: Option<String>,
    /// Minutes of idleness before a binding expires; absent = the protocol's default.
    /// Not used by APP_COOKIE.
    #[serde(default)]
    pub persistence_timeout: Option<u32>,
}

/// What persistence the data plane applies to a pool: seed 002's rules resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EffectivePersistence {
    None,
    SourceIp { timeout_minutes: u32 },
    HttpCookie { timeout_minutes: u32 },
    AppCookie { cookie_name: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SlowStart {
    #[serde(default)]
    pub enable: bool,
    /// Seconds, 30..1200.
    #[serde(default = "default_slow_start_duration")]
    pub duration: u32,
}

fn default_slow_start_duration() -> u32 {
    30
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PoolType {
    /// Any backend.
    #[default]
    #[serde(rename = "")]
    Any,
    /// Any backend; `vpc_id` required.
    #[serde(rename = "instance")]
    Instance,
    /// Cross-VPC IP backends only; `vpc_id` forbidden.
    #[serde(rename = "ip")]
    Ip,
}

/// Written by hand: utoipa's derive ignores an empty `rename`, and would document `Any`
/// where the wire says `""`.
impl utoipa::PartialSchema for PoolType {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(["", "instance", "ip"]))
            .description(Some(
                "`\"\"`: any backend; `instance`: any backend, `vpc_id` required; `ip`: cross-VPC IP backends only, `vpc_id` forbidden.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for PoolType {}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum ProtectionStatus {
    #[default]
    NonProtection,
    ConsoleProtection,
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum IpVersion {
    #[default]
    V4,
    V6,
    Dualstack,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// Unique within the load balancer when not empty (it is the OCI backend set and
    /// Azure backend name).
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub protocol: PoolProtocol,
    #[serde(default)]
    pub algorithm: Algorithm,
    #[serde(default)]
    pub session_persistence: Option<SessionPersistence>,
    #[serde(default)]
    pub slow_start: Option<SlowStart>,
    /// When true, members cannot be removed through any API.
    #[serde(default)]
    pub member_deletion_protection: bool,
    #[serde(default)]
    pub vpc_id: String,
    #[serde(default, rename = "type")]
    pub pool_type: PoolType,
    #[serde(default)]
    pub protection_status: ProtectionStatus,
    #[serde(default)]
    pub protection_reason: String,
    #[serde(default)]
    pub ip_version: IpVersion,
    /// Seed 002: only `true` is accepted.
    #[serde(default = "crate::default_true")]
    pub admin_state_up: bool,
    /// Most concurrent connections per member unless the member sets its own (OCI
    /// `backendMaxConnections`); absent = unlimited.
    #[serde(default)]
    pub max_connections_per_member: Option<u32>,
    /// Defaults for how members are reached; a member may override them.
    #[serde(default)]
    pub upstream: UpstreamSettings,
    /// Members that fail requests leave the rotation for a while (on by default).
    #[serde(default)]
    pub outlier_detection: OutlierDetection,
    /// Limits on each request's exchange with a member (HTTP pools).
    #[serde(default)]
    pub member_timeouts: MemberTimeouts,
    /// QUIC pools: where the members' connection IDs carry their `server_id` (QUIC-LB
    /// plaintext). Absent: no connection ID names a member, and `QUIC_CID` hashes them.
    #[serde(default)]
    pub quic_lb: Option<QuicLb>,
}

/// How a QUIC pool's members encode their server ID in the connection IDs they issue: the
/// plaintext format of the IETF QUIC-LB draft (draft-ietf-quic-load-balancers §5.2). The
/// first octet's bits 7–5 are `config_id`, the next `server_id_len` bytes the member's
/// `server_id`, then at least `nonce_len` bytes of nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuicLb {
    /// 0..6 (7 marks unroutable connection IDs); lets members rotate configurations.
    #[serde(default)]
    pub config_id: u8,
    /// Bytes of server ID, 1..15; every member's `server_id` has this length.
    pub server_id_len: u8,
    /// Bytes of nonce, 4..18, with `server_id_len + nonce_len` at most 19: a connection ID
    /// shorter than `1 + server_id_len + nonce_len` names no member.
    #[serde(default = "default_nonce_len")]
    pub nonce_len: u8,
}

fn default_nonce_len() -> u8 {
    4
}

impl QuicLb {
    pub fn new(server_id_len: u8) -> Self {
        QuicLb {
            config_id: 0,
            server_id_len,
            nonce_len: default_nonce_len(),
        }
    }

    fn check(&self, c: &mut Checker) {
        c.range("quic_lb.config_id", self.config_id, 0, 6);
        c.range("quic_lb.server_id_len", self.server_id_len, 1, 15);
        c.range("quic_lb.nonce_len", self.nonce_len, 4, 18);
        let sum = u32::from(self.server_id_len) + u32::from(self.nonce_len);
        let in_range = (1..=15).contains(&self.server_id_len) && (4..=18).contains(&self.nonce_len);
        c.check(!in_range || sum <= 19, "quic_lb.nonce_len", || {
            format!(
                "quic_lb.server_id_len + quic_lb.nonce_len must be at most 19 (a connection ID holds 20 bytes; got {sum})"
            )
        });
    }
}

/// What pool validation needs to know about the pool's load balancer.
#[derive(Clone, Copy, Debug)]
pub struct PoolContext {
    pub lb_kind: LoadBalancerKind,
}

impl PoolSpec {
    pub fn new(name: impl Into<String>, protocol: PoolProtocol) -> Self {
        Self {
            name: name.into(),
            description: String::new(),
            protocol,
            algorithm: Algorithm::default(),
            session_persistence: None,
            slow_start: None,
            member_deletion_protection: false,
            vpc_id: String::new(),
            pool_type: PoolType::default(),
            protection_status: ProtectionStatus::default(),
            protection_reason: String::new(),
            ip_version: IpVersion::default(),
            admin_state_up: true,
            max_connections_per_member: None,
            upstream: UpstreamSettings::default(),
            outlier_detection: OutlierDetection::default(),
            member_timeouts: MemberTimeouts::default(),
            quic_lb: None,
        }
    }

    /// Every rule of seed 002 that concerns one pool on its own.
    pub fn validate(&self, ctx: PoolContext) -> Result<(), ValidationError> {
        let mut c = Checker::new();
        // Seed 002 allows an empty name (0..255); dialects that use the name as the
        // pool's identifier (OCI backend sets, Azure backends) always set one.
        c.max_len("name", &self.name, MAX_NAME_LEN);
        c.max_len("description", &self.description, MAX_NAME_LEN);
        c.check(self.admin_state_up, "admin_state_up", || {
            "admin_state_up can only be true".into()
        });
        c.check(
            self.algorithm != Algorithm::QuicCid || self.protocol == PoolProtocol::Quic,
            "algorithm",
            || "QUIC_CID is only supported for QUIC pools".into(),
        );
        self.check_persistence(ctx, &mut c);
        if let Some(q) = &self.quic_lb {
            c.check(self.protocol == PoolProtocol::Quic, "quic_lb", || {
                "quic_lb is only supported for QUIC pools".into()
            });
            q.check(&mut c);
        }
        if let Some(s) = &self.slow_start {
            if !self.protocol.is_http() {
                c.fail(
                    "slow_start",
                    format!(
                        "slow_start is only supported for HTTP and HTTPS pools, not {:?}",
                        self.protocol
                    ),
                );
            }
            c.range("slow_start.duration", s.duration, 30, 1200);
        }
        c.max_len("vpc_id", &self.vpc_id, 36);
        match self.pool_type {
            PoolType::Instance => c.check(!self.vpc_id.is_empty(), "vpc_id", || {
                "vpc_id is required when type is instance".into()
            }),
            PoolType::Ip => c.check(self.vpc_id.is_empty(), "vpc_id", || {
                "vpc_id must not be set when type is ip".into()
            }),
            PoolType::Any => {}
        }
        c.max_len("protection_reason", &self.protection_reason, MAX_NAME_LEN);
        c.check(
            self.protection_reason.is_empty()
                || self.protection_status == ProtectionStatus::ConsoleProtection,
            "protection_reason",
            || "protection_reason is only valid with protection_status consoleProtection".into(),
        );
        if let Some(n) = self.max_connections_per_member {
            c.check(n > 0, "max_connections_per_member", || {
                "max_connections_per_member must be at least 1".into()
            });
        }
        c.nested("upstream", self.upstream.validate());
        c.nested("outlier_detection", self.outlier_detection.validate());
        c.nested("member_timeouts", self.member_timeouts.validate());
        c.finish()
    }

    fn check_persistence(&self, ctx: PoolContext, c: &mut Checker) {
        let Some(sp) = &self.session_persistence else {
            c.check(
                self.protocol != PoolProtocol::Quic,
                "session_persistence",
                || "QUIC pools require session_persistence of type SOURCE_IP".into(),
            );
            return;
        };
        if self.protocol == PoolProtocol::Quic && sp.kind != PersistenceType::SourceIp {
            c.fail(
                "session_persistence.type",
                "QUIC pools require session_persistence of type SOURCE_IP",
            );
        }
        match (&sp.cookie_name, sp.kind) {
            (Some(_), k) if k != PersistenceType::AppCookie => c.fail(
                "session_persistence.cookie_name",
                "session_persistence.cookie_name is only valid with type APP_COOKIE",
            ),
            (None, PersistenceType::AppCookie) => c.missing("session_persistence.cookie_name"),
            (Some(name), _) => {
                let (max, dots) = match ctx.lb_kind {
                    LoadBalancerKind::Shared => (64, false),
                    LoadBalancerKind::Dedicated => (255, true),
                };
                let ok_chars = name.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (dots && b == b'.')
                });
                c.check(
                    !name.is_empty() && ok_chars,
                    "session_persistence.cookie_name",
                    || {
                        format!(
                            "session_persistence.cookie_name may hold only letters, digits, '-', '_'{} (got {name:?})",
                            if dots { " and '.'" } else { "" }
                        )
                    },
                );
                c.max_len("session_persistence.cookie_name", name, max);
            }
            (None, _) => {}
        }
        if let Some(t) = sp.persistence_timeout {
            let (min, max, _) = self.protocol.persistence_timeout_range();
            c.range("session_persistence.persistence_timeout", t, min, max);
        }
    }

    /// Seed 002's rules about what may change: `vpc_id` only while empty; `type` only
    /// while empty and never back to empty.
    pub fn validate_update(&self, old: &PoolSpec) -> Result<(), ValidationError> {
        let mut c = Checker::new();
        c.check(
            old.vpc_id.is_empty() || self.vpc_id == old.vpc_id,
            "vpc_id",
            || "vpc_id can only be changed while it is empty".into(),
        );
        c.check(
            old.pool_type == PoolType::Any || self.pool_type == old.pool_type,
            "type",
            || "type can only be changed while it is empty".into(),
        );
        c.check(self.protocol == old.protocol, "protocol", || {
            "protocol cannot be changed".into()
        });
        c.finish()
    }

    /// The persistence the data plane applies, after seed 002's protocol rules: TCP, UDP
    /// (and QUIC) pools persist by source IP whatever the type; HTTP and HTTPS pools honour
    /// HTTP_COOKIE and APP_COOKIE, and other types leave persistence off.
    pub fn effective_persistence(&self) -> EffectivePersistence {
        let Some(sp) = &self.session_persistence else {
            return EffectivePersistence::None;
        };
        let (_, _, default) = self.protocol.persistence_timeout_range();
        let timeout_minutes = sp.persistence_timeout.unwrap_or(default);
        if !self.protocol.is_http() {
            return EffectivePersistence::SourceIp { timeout_minutes };
        }
        match (sp.kind, &sp.cookie_name) {
            (PersistenceType::HttpCookie, _) => {
                EffectivePersistence::HttpCookie { timeout_minutes }
            }
            (PersistenceType::AppCookie, Some(name)) => EffectivePersistence::AppCookie {
                cookie_name: name.clone(),
            },
            _ => EffectivePersistence::None,
        }
    }

    /// The slow-start window in seconds, when enabled.
    pub fn slow_start_secs(&self) -> Option<u32> {
        self.slow_start
            .filter(|s| s.enable && self.protocol.is_http())
            .map(|s| s.duration)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Pool {
    pub id: PoolId,
    pub loadbalancer_id: LoadBalancerId,
    #[serde(flatten)]
    pub spec: PoolSpec,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quic_pool(quic_lb: Option<QuicLb>) -> PoolSpec {
        let mut p = PoolSpec::new("q", PoolProtocol::Quic);
        p.algorithm = Algorithm::QuicCid;
        p.session_persistence = Some(SessionPersistence {
            kind: PersistenceType::SourceIp,
            cookie_name: None,
            persistence_timeout: None,
        });
        p.quic_lb = quic_lb;
        p
    }

    fn errors(p: &PoolSpec) -> Vec<(String, String)> {
        let ctx = PoolContext {
            lb_kind: LoadBalancerKind::Dedicated,
        };
        match p.validate(ctx) {
            Ok(()) => Vec::new(),
            Err(e) => e
                .errors
                .iter()
                .map(|e| (e.field.clone(), e.message.clone()))
                .collect(),
        }
    }

    #[test]
    fn quic_lb_configs() {
        assert_eq!(errors(&quic_pool(None)), vec![]);
        assert_eq!(errors(&quic_pool(Some(QuicLb::new(3)))), vec![]);
        let edge = QuicLb {
            config_id: 6,
            server_id_len: 15,
            nonce_len: 4,
        };
        assert_eq!(errors(&quic_pool(Some(edge))), vec![]);
        let fields = |q: QuicLb| -> Vec<String> {
            errors(&quic_pool(Some(q)))
                .into_iter()
                .map(|(f, _)| f)
                .collect()
        };
        assert_eq!(
            fields(QuicLb {
                config_id: 7,
                ..QuicLb::new(3)
            }),
            ["quic_lb.config_id"]
        );
        assert_eq!(fields(QuicLb::new(0)), ["quic_lb.server_id_len"]);
        assert_eq!(fields(QuicLb::new(16)), ["quic_lb.server_id_len"]);
        assert_eq!(
            fields(QuicLb {
                nonce_len: 3,
                ..QuicLb::new(3)
            }),
            ["quic_lb.nonce_len"]
        );
        let too_long = errors(&quic_pool(Some(QuicLb {
            nonce_len: 5,
            ..QuicLb::new(15)
        })));
        assert_eq!(too_long.len(), 1);
        assert!(too_long[0].1.contains("at most 19"), "{too_long:?}");
        // Only QUIC pools.
        let mut udp = PoolSpec::new("u", PoolProtocol::Udp);
        udp.quic_lb = Some(QuicLb::new(3));
        assert_eq!(
            errors(&udp),
            [(
                "quic_lb".to_owned(),
                "quic_lb is only supported for QUIC pools".to_owned()
            )]
        );
    }

    #[test]
    fn quic_lb_wire_shape_and_defaults() {
        let q: QuicLb = serde_json::from_str(r#"{"server_id_len": 2}"#).unwrap();
        assert_eq!(q, QuicLb::new(2));
        assert_eq!((q.config_id, q.nonce_len), (0, 4));
        assert!(serde_json::from_str::<QuicLb>(r#"{"server_id_len": 2, "key": "x"}"#).is_err());
    }
}
