//! The L4 proxy: one member per client connection, bytes copied both ways.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fulcrum_model::ListenerId;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::connect::connect_tcp;
use crate::context::Shared;
use crate::select::{Tried, pick};
use crate::state::Lease;

/// Copy buffer per direction of a proxied TCP connection: bulk transfers are what TCP
/// listeners carry.
const TCP_BUFFER: usize = 64 * 1024;
/// Copy buffer per direction of an upgraded HTTP connection (WebSockets are many, long-lived
/// and mostly small messages).
pub(crate) const TUNNEL_BUFFER: usize = 16 * 1024;

const MAX_ATTEMPTS: usize = 2;

pub(crate) async fn serve(
    dp: Arc<Shared>,
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
    let client_hash = fulcrum_balance::hash_ip(peer.ip());
    let mut tried = Tried::default();
    // TCP pools persist by source address (seed 002), whatever the configured type.
    let sticky = match pool.persistence {
        fulcrum_model::EffectivePersistence::SourceIp { timeout_minutes } => Some((
            crate::sticky::StickyKey::Addr(peer.ip()),
            Duration::from_secs(u64::from(timeout_minutes) * 60),
        )),
        _ => None,
    };
    let mut bound = sticky.as_ref().and_then(|(key, ttl)| {
        let id = pool.sticky.get(key, *ttl)?;
        pool.by_id.get(&id).and_then(|&i| pool.bound(i))
    });
    for _ in 0..MAX_ATTEMPTS {
        let Some(idx) = bound.take().or_else(|| pick(&pool, client_hash, &tried)) else {
            break;
        };
        tried.add(idx);
        let member = &pool.members[idx];
        let _lease = Lease::new(&member.state);
        match connect_tcp(&member.target, connect_timeout).await {
            Ok(upstream) => {
                member.state.connect_succeeded();
                if let Some((key, ttl)) = sticky {
                    pool.sticky.bind(key, &member.id, ttl);
                }
                let idle = Duration::from_millis(u64::from(timeouts.idle_ms));
                let mut upstream = upstream;
                copy_until_idle(&mut client, &mut upstream, idle, TCP_BUFFER).await;
                return;
            }
            Err(e) => {
                tracing::debug!(member = %member.authority, error = %e, "connect failed");
                crate::exchange::failed(member, crate::stats::ErrorKind::Connect);
                crate::exchange::passive_failure(&pool, idx);
            }
        }
    }
    // No member: closing the connection is all TCP can say.
}

/// Copies both ways until either side closes or neither sends anything for `idle` (TCP
/// listeners, and HTTP connections after a `101 Switching Protocols`).
pub(crate) async fn copy_until_idle<A, B>(
    client: &mut A,
    upstream: &mut B,
    idle: Duration,
    buffer: usize,
) where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let opened = tokio::time::Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut client = Tracked {
        inner: client,
        opened,
        last: last.clone(),
    };
    let mut upstream = Tracked {
        inner: upstream,
        opened,
        last: last.clone(),
    };
    // TCP listeners copy with 64 KiB per direction (tokio's default is 8 KiB): a quarter of
    // the read and write calls on bulk transfers, for 112 KiB more per connection.
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, buffer, buffer);
    tokio::pin!(copy);
    let mut check = tokio::time::interval((idle / 4).max(Duration::from_millis(25)));
    loop {
        tokio::select! {
            _ = &mut copy => return,
            _ = check.tick() => {
                let quiet = opened
                    .elapsed()
                    .saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                if quiet >= idle {
                    return;
                }
            }
        }
    }
}

/// A stream that stamps the time of each successful read.
struct Tracked<S> {
    inner: S,
    opened: tokio::time::Instant,
    last: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last.store(ms, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
