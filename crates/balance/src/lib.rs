//! Backend selection algorithms. Pure: no I/O, no async, no dependencies, and `select()` never
//! allocates.
//!
//! The data plane compiles one [`Selector`] per pool from the pool's members, given as
//! [`Candidate`]s in the pool snapshot's index order, shares it behind an `Arc` and rebuilds it
//! whenever the configuration changes. Each request then calls [`Selector::select`] with a
//! [`View`]: which indices may be chosen right now (healthy, not drained or offline, breaker
//! closed, not already tried by this request), their effective weight (slow start) and their
//! in-flight count.
//!
//! Why the live state is in the view rather than in the selector: in-flight counters, health,
//! breakers and slow-start clocks are owned by the data plane, keyed by the stable member id, and
//! must survive selector rebuilds. A selector holds only what follows from configuration, plus the
//! smoothing state of round robin, which is cheap to lose.
//!
//! | pool algorithm            | selector                                           | per pick |
//! |---------------------------|----------------------------------------------------|----------|
//! | `ROUND_ROBIN`, < 64       | [`SmoothWeightedRoundRobin`]: exact nginx SWRR     | O(n)     |
//! | `ROUND_ROBIN`, ≥ 64       | [`ScheduledRoundRobin`]: precomputed SWRR period   | O(1)     |
//! | `LEAST_CONNECTIONS`, < 64 | [`WeightedLeastConnections`]: nginx, SWRR on ties  | O(n)     |
//! | `LEAST_CONNECTIONS`, ≥ 64 | [`SampledLeastConnections`]: two weighted choices  | O(1)     |
//! | `SOURCE_IP`, `QUIC_CID`   | [`Maglev`]: consistent hash, weights ignored       | O(1)     |
//!
//! [`quic`] reads QUIC packet headers and QUIC-LB plaintext connection IDs, for `QUIC_CID`
//! pools: which member a datagram's connection ID names, or which key to hash.
//!
//! (O(1) while most of the pool is eligible; see each module for the fallbacks.)
//!
//! Every selector is `Send + Sync`; selection takes `&self` and uses only relaxed atomics, no
//! locks.

mod hash;
mod least_conn;
mod maglev;
pub mod quic;
mod schedule;
mod selector;
mod swrr;
mod view;

pub use hash::{hash_bytes, hash_ip, mix64};
pub use least_conn::{SampledLeastConnections, WeightedLeastConnections};
pub use maglev::Maglev;
pub use schedule::ScheduledRoundRobin;
pub use selector::{Algorithm, Selector};
pub use swrr::SmoothWeightedRoundRobin;
pub use view::{Candidate, View};
