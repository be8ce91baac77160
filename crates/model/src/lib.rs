//! fulcrum's core model.
//!
//! One model carries all four seeds (OCI UpdateBackend, Huawei batch member update and
//! UpdatePool, Azure APIM backends): every field they name has a home here, with its range
//! and default. Each dialect translates its wire shapes into these types and back; none
//! keeps a model of its own.
//!
//! Every resource is split into a *spec* (what a user sets, validated by one pure function
//! per resource) and metadata (id, parent, timestamps) that the control plane assigns.
//! Three states are kept apart:
//! - what the user asked for: `admin_state_up`, `drain`, `offline`, … in the specs;
//! - what is observed: [`OperatingStatus`], reported by the data plane, never stored here;
//! - where a change stands: [`ProvisioningStatus`], derived from pending work requests.
//!
//! Architecture invariant: this crate does no I/O, reads no clock and draws no random
//! numbers. Ids and timestamps come from the caller.

mod certificate;
mod health;
mod ids;
mod listener;
mod loadbalancer;
mod member;
mod oci_key;
mod outlier;
mod pool;
mod secrets;
mod status;
mod subnet;
mod upstream;
mod validate;
mod vip;
mod vpc;
mod workrequest;

pub use certificate::*;
pub use health::*;
pub use ids::*;
pub use listener::*;
pub use loadbalancer::*;
pub use member::*;
pub use oci_key::*;
pub use outlier::*;
pub use pool::*;
pub use secrets::Secrets;
pub use status::*;
pub use subnet::*;
pub use upstream::*;
pub use validate::*;
pub use vip::*;
pub use vpc::*;
pub use workrequest::*;

/// Wall-clock time as stored and reported (UTC).
pub type Timestamp = chrono::DateTime<chrono::Utc>;

/// The largest member weight: OCI's int32 range. Dialects narrow it (Huawei and Azure: 0..100).
pub const MAX_WEIGHT: u32 = i32::MAX as u32;

/// Most members one batch call may carry (seed 001).
pub const MAX_BATCH_MEMBERS: usize = 200;

/// Longest name or description (seeds 001 and 002).
pub const MAX_NAME_LEN: usize = 255;
