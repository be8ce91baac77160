//! The L4 proxy: one member per client connection, bytes copied both ways.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fulcrum_balance::hash_ip;
use fulcrum_model::ListenerId;
use tokio::net::TcpStream;

use crate::DataPlaneInner;
use crate::select::{Tried, pick};
use crate::state::Lease;
use crate::upstream::connect_tcp;

const MAX_ATTEMPTS: usize = 2;

pub(crate) async fn serve(
    dp: Arc<DataPlaneInner>,
    listener: ListenerId,
    mut client: TcpStream,
    peer: SocketAddr,
) {
    let (pool, timeouts) = {
        let snap = dp.snapshot.load();
        let Some(l) = snap.listeners.get(&listener) else {
            return;
        };
        let Some(pool) = l.default_pool.clone() else {
            tracing::debug!(listener = %listener, "no default pool; closing connection");
            return;
        };
        (pool, l.timeouts)
    };
    let connect_timeout = Duration::from_millis(u64::from(timeouts.connect_ms));
    let client_hash = hash_ip(peer.ip());
    let mut tried = Tried::default();
    for _ in 0..MAX_ATTEMPTS {
        let Some(idx) = pick(&pool, client_hash, &tried) else {
            break;
        };
        tried.add(idx);
        let member = &pool.members[idx];
        let _lease = Lease::new(&member.state);
        match connect_tcp(&member.target, connect_timeout).await {
            Ok(mut upstream) => {
                member.state.connect_succeeded();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                return;
            }
            Err(e) => {
                tracing::debug!(member = %member.authority, error = %e, "connect failed");
                dp.passive_failure(&pool, idx);
            }
        }
    }
    // No member: closing the connection is all TCP can say.
}
