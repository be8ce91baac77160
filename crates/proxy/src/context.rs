//! What every connection shares with the data plane: the snapshot it serves from, member
//! live state, settings and the open-connection count. Sessions (`h1`, `h2`, `tcp`) and
//! accept loops get this, never the data plane's own bookkeeping (`lib.rs`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::snapshot::Snapshot;
use crate::state::Registry;

/// Data-plane settings that are not part of the API's configuration.
#[derive(Clone, Debug)]
pub struct DataPlaneOptions {
    /// The longest a `Retry-After` may trip a member (circuit breakers that accept it).
    pub max_retry_after: Duration,
    /// Bind every listener on this address instead of its load balancer's VIP: a
    /// node-local choice, e.g. several fleet nodes on one host, each on its own address.
    pub bind_address: Option<std::net::IpAddr>,
    /// Worker threads serving traffic, each with its own runtime and sockets (0: one per
    /// CPU).
    pub workers: usize,
    /// Where the access log goes (None: no access log).
    pub access_log: Option<crate::access_log::AccessLogOptions>,
}

impl Default for DataPlaneOptions {
    fn default() -> Self {
        Self {
            max_retry_after: Duration::from_millis(crate::breaker::MAX_RETRY_AFTER_MS),
            bind_address: None,
            workers: 0,
            access_log: None,
        }
    }
}

pub(crate) struct Shared {
    pub options: DataPlaneOptions,
    pub snapshot: ArcSwap<Snapshot>,
    pub registry: Registry,
    /// Open client connections of all listeners, for graceful shutdown.
    pub connections: ConnCounter,
    pub access_log: Option<std::sync::Arc<crate::access_log::Sink>>,
}

impl Shared {
    /// The access log, if this listener's next request (or session) is to be logged.
    pub fn log_for(
        &self,
        listener: &crate::snapshot::ListenerRt,
    ) -> Option<&crate::access_log::Sink> {
        if listener.log_one_in == 0 {
            return None;
        }
        self.access_log
            .as_deref()
            .filter(|_| crate::access_log::sampled(listener.log_one_in))
    }
}

#[derive(Default)]
pub(crate) struct ConnCounter(AtomicUsize);

impl ConnCounter {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    pub fn opened(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn closed(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
