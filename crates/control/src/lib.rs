//! fulcrum's control plane.
//!
//! Every operation on the model is one atomic store transaction: it is planned against
//! the in-memory [`Config`] view, guarded by compare-and-swap on the mod revisions it read,
//! and retried if another writer got there first. A rejected request changes nothing.
//!
//! Shared semantics every dialect maps onto:
//! - **ETags** are store mod revisions. Every change under a load balancer rewrites the load
//!   balancer's key (and a member change its pool's key), so one value per load balancer
//!   (OCI) or per pool (Azure backend) moves whenever anything beneath it does.
//! - **Idempotency**: a retry token binds to a fingerprint of the request for 24 h; a replay
//!   returns the first outcome, a different request with the same token is refused.
//! - **Work requests**: each mutation writes one in the same transaction. Its revision is
//!   the transaction's; it succeeds once the data plane reports serving that revision.
//! - **Locks** on load balancers, overridable per request.
//!
//! Architecture invariant: this crate knows no HTTP and no dialect. It speaks the model.

mod apply;
mod batch;
mod certificates;
mod config;
mod engine;
mod error;
mod fleet;
mod keys;
mod member_updates;
mod network;
mod oci_keys;
mod ops;
mod patch;
mod pool_set;
mod ratelimit;
mod records;
mod scope;
mod secret_key;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod traffic;
mod tree;

pub use apply::{Applied, ApplyStep, ApplySummary, check_document};
pub use batch::Batch;
pub use config::{Config, Versioned};
pub use engine::{
    ControlPlane, FinishedHook, Follower, NOT_SERVED, Observer, Options, Outcome, Reader, Refusal,
    default_vip_ranges,
};
pub use error::ControlError;
pub use fleet::{NodeOptions, NodeRecord, Spread};
/// Store revisions number every configuration the control plane hands out.
pub use fulcrum_store::Revision;
pub use network::Vip;
pub use ops::*;
pub use patch::merge_patch;
pub use pool_set::{ListenerChange, PoolChange, PoolSetChange};
pub use ratelimit::RateLimiter;
pub use scope::Scope;
pub use secret_key::{KEY_LEN as SECRET_KEY_LEN, SecretKey, SecretKeyError};
pub use traffic::{BreakerState, MemberTraffic, ObservedHealth, Traffic, TrafficFigures};
pub use tree::{NewPool, NewResources, Parent, PoolUpdate};

/// Who asks for a change and how: everything a dialect learned from the request besides
/// the operation's own arguments.
#[derive(Clone, Debug, Default)]
pub struct RequestContext {
    /// Echoed in responses and recorded on the work request.
    pub request_id: String,
    /// The authenticated caller; retry tokens are scoped to it.
    pub principal: String,
    /// The API the change came through (`native`, `oci`, `huawei`, `azure`), for the
    /// audit record. Opaque here: this crate knows no dialect.
    pub front_door: &'static str,
    /// Retry token (1..64 characters): the same token with the same request acts once.
    pub retry_token: Option<String>,
    pub if_match: Option<IfMatch>,
    /// Override load balancer locks (OCI `isLockOverride`).
    pub lock_override: bool,
    /// Cloud semantics: a change to a load balancer waits until its previous change is
    /// served, and is refused as `Busy` after `busy_wait` (OCI's and Huawei's "not ACTIVE").
    /// Otherwise changes follow each other at once, each in its own revision, and the data
    /// plane serves them in order.
    pub one_change_at_a_time: bool,
    /// The load balancers the caller may see and change ([`Scope`]): checked against every
    /// plan, so a change outside it is refused whichever operation asks for it.
    pub scope: Scope,
    /// Set by `apply` alone: operations are planned into this batch, which commits them
    /// together, instead of committing one by one. Leave it `None`.
    pub batch: Option<Batch>,
}

/// A precondition on an ETag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfMatch {
    pub scope: EtagScope,
    /// An ETag as [`etag`] formats it, or `*` for "exists".
    pub value: String,
}

/// Which ETag a precondition names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EtagScope {
    /// The resource the operation acts on (a member's own, a pool's, …).
    Resource,
    /// The load balancer the resource belongs to (OCI).
    LoadBalancer,
}

/// The ETag of a resource at a mod revision: an opaque string without quotes.
pub fn etag(mod_revision: i64) -> String {
    format!("{mod_revision:x}")
}

/// Whether an `If-Match` value matches an ETag: `*` always; otherwise compared exactly,
/// ignoring surrounding quotes and a weak `W/` prefix.
pub fn etag_matches(if_match: &str, current: &str) -> bool {
    let v = if_match.trim();
    if v == "*" {
        return true;
    }
    v.split(',').any(|candidate| {
        let c = candidate.trim();
        let c = c.strip_prefix("W/").unwrap_or(c);
        c.trim_matches('"') == current
    })
}
