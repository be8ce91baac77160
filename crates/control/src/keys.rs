//! The store's key layout. Everything fulcrum keeps lives under [`ROOT`], so one watch
//! of that prefix sees every change; "children of X" is a prefix range.

use fulcrum_model::{
    CertificateId, HealthMonitorId, ListenerId, LoadBalancerId, MemberId, OciApiKeyId, PoolId,
    SubnetId, VpcId, WorkRequestId,
};

pub const ROOT: &str = "/fulcrum/v1/";
pub const CONFIG: &str = "/fulcrum/v1/config/";
pub const WORK_REQUESTS: &str = "/fulcrum/v1/wr/";
pub const IDEMPOTENCY: &str = "/fulcrum/v1/idem/";
/// Fleet nodes' records, bound to their sessions. Outside [`ROOT`] on purpose: the config
/// watch never sees them, so a node publishing what it serves never triggers more work.
pub const NODES: &str = "/fulcrum/nodes/";
/// A value sealed with the secret key every node must share (see `records`). Outside
/// [`ROOT`] too: it is no configuration.
pub const SECRET_KEY_CHECK: &str = "/fulcrum/secret-key-check";

pub fn node(id: &str) -> String {
    format!("{NODES}{id}")
}

pub fn lb(id: &LoadBalancerId) -> String {
    format!("{CONFIG}lb/{id}")
}
pub fn listener(id: &ListenerId) -> String {
    format!("{CONFIG}listener/{id}")
}
pub fn pool(id: &PoolId) -> String {
    format!("{CONFIG}pool/{id}")
}
pub fn member(pool: &PoolId, id: &MemberId) -> String {
    format!("{CONFIG}member/{pool}/{id}")
}
pub fn monitor(id: &HealthMonitorId) -> String {
    format!("{CONFIG}monitor/{id}")
}
pub fn subnet(id: &SubnetId) -> String {
    format!("{CONFIG}subnet/{id}")
}
pub fn certificate(id: &CertificateId) -> String {
    format!("{CONFIG}certificate/{id}")
}
pub fn vpc(id: &VpcId) -> String {
    format!("{CONFIG}vpc/{id}")
}
pub fn oci_api_key(id: &OciApiKeyId) -> String {
    format!("{CONFIG}oci-api-key/{id}")
}
/// An OCI key id's claim (`tenancy/user/fingerprint`, hashed: it holds slashes), created
/// with the key, so that two keys registered at once never share a key id.
pub fn oci_key_id_claim(key_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(key_id.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{CONFIG}oci-key-id/{hex}")
}
/// An allocated VIP's claim: created (compared absent) with the load balancer that was
/// given the address, so two load balancers created at once never get the same one. The
/// view ignores these keys; the load balancers themselves say which addresses are taken.
pub fn vip_claim(addr: std::net::IpAddr) -> String {
    format!("{CONFIG}vip/{addr}")
}
pub fn work_request(id: &WorkRequestId) -> String {
    format!("{WORK_REQUESTS}{id}")
}
pub fn idempotency(digest_hex: &str) -> String {
    format!("{IDEMPOTENCY}{digest_hex}")
}

/// A parsed config key.
#[derive(Debug, PartialEq, Eq)]
pub enum ConfigKey<'a> {
    LoadBalancer(&'a str),
    Listener(&'a str),
    Pool(&'a str),
    Member {
        pool: &'a str,
        member: &'a str,
    },
    Monitor(&'a str),
    Subnet(&'a str),
    Vpc(&'a str),
    Certificate(&'a str),
    OciApiKey(&'a str),
    /// Claims a key id; the view ignores it (the keys say which ids are taken).
    OciKeyIdClaim,
    VipClaim(std::net::IpAddr),
    WorkRequest(&'a str),
}

pub fn parse(key: &str) -> Option<ConfigKey<'_>> {
    if let Some(id) = key.strip_prefix(WORK_REQUESTS) {
        return Some(ConfigKey::WorkRequest(id));
    }
    let rest = key.strip_prefix(CONFIG)?;
    let (kind, id) = rest.split_once('/')?;
    Some(match kind {
        "lb" => ConfigKey::LoadBalancer(id),
        "listener" => ConfigKey::Listener(id),
        "pool" => ConfigKey::Pool(id),
        "member" => {
            let (pool, member) = id.split_once('/')?;
            ConfigKey::Member { pool, member }
        }
        "monitor" => ConfigKey::Monitor(id),
        "subnet" => ConfigKey::Subnet(id),
        "vpc" => ConfigKey::Vpc(id),
        "certificate" => ConfigKey::Certificate(id),
        "oci-api-key" => ConfigKey::OciApiKey(id),
        "oci-key-id" => ConfigKey::OciKeyIdClaim,
        "vip" => ConfigKey::VipClaim(id.parse().ok()?),
        _ => return None,
    })
}
