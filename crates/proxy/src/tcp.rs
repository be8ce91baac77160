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

use crate::access_log::{Entry, Termination};
use crate::connect::connect_tcp;
use crate::context::Shared;
use crate::select::{SourceAffinity, Tried};
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
    let started = std::time::Instant::now();
    let (pool, timeouts, logged, counters) = {
        let snap = dp.snapshot.load();
        let Some(l) = snap.listeners.get(&listener) else {
            return;
        };
        let logged = dp.log_for(l).is_some();
        let Some(pool) = l.default_pool.clone() else {
            tracing::debug!(listener = %listener, "no default pool; closing connection");
            if logged {
                let mut entry = Entry::default();
                entry.begin("TCP", started, None);
                entry.termination = Termination::NoRoute;
                log(&dp, &entry, &listener, peer);
            }
            return;
        };
        (pool, l.timeouts, logged, l.counters.clone())
    };
    let mut entry = Entry::default();
    if logged {
        entry.begin("TCP", started, None);
    }
    let connect_timeout = Duration::from_millis(u64::from(timeouts.connect_ms));
    let client_hash = fulcrum_balance::hash_ip(peer.ip());
    let mut tried = Tried::default();
    // TCP pools persist by source address (seed 002), whatever the configured type.
    let mut affinity = SourceAffinity::of(&pool, peer.ip());
    let bound_to = affinity.bound_to;
    for _ in 0..MAX_ATTEMPTS {
        let Some(idx) = affinity.next(&pool, client_hash, &tried) else {
            break;
        };
        tried.add(idx);
        let member = &pool.members[idx];
        let _lease = Lease::new(&member.state);
        let connecting = std::time::Instant::now();
        let connected = connect_tcp(&member.target, connect_timeout).await;
        if logged {
            entry.served_by(&pool, idx);
            entry.attempts = entry.attempts.saturating_add(1);
            entry.connect = Some(connecting.elapsed());
            entry.sticky = bound_to == Some(idx);
        }
        match connected {
            Ok(upstream) => {
                crate::exchange::connected(member);
                affinity.bind(&pool, idx);
                let idle = Duration::from_millis(u64::from(timeouts.idle_ms));
                let mut upstream = upstream;
                let end = copy_until_idle(&mut client, &mut upstream, idle, TCP_BUFFER).await;
                counters.bytes(end.from_client, end.from_member);
                if logged {
                    entry.bytes_in = end.from_client;
                    entry.bytes_out = end.from_member;
                    entry.termination = end.termination;
                    log(&dp, &entry, &listener, peer);
                }
                return;
            }
            Err(e) => {
                tracing::debug!(member = %member.authority, error = %e, "connect failed");
                crate::exchange::failed(&pool, idx, crate::stats::ErrorKind::Connect);
            }
        }
    }
    // No member: closing the connection is all TCP can say.
    if logged {
        entry.termination = if entry.attempts == 0 {
            Termination::NoMember
        } else {
            Termination::MemberConnectFailed
        };
        log(&dp, &entry, &listener, peer);
    }
}

fn log(dp: &Shared, entry: &Entry, listener: &ListenerId, peer: SocketAddr) {
    if let Some(sink) = &dp.access_log {
        sink.emit(entry, listener.as_str(), peer);
    }
}

/// How a tunnel ended, and what went through it.
pub(crate) struct TunnelEnd {
    pub from_client: u64,
    pub from_member: u64,
    pub termination: Termination,
}

/// Copies both ways until either side closes or neither sends anything for `idle` (TCP
/// listeners, and HTTP connections after a `101 Switching Protocols`).
pub(crate) async fn copy_until_idle<A, B>(
    client: &mut A,
    upstream: &mut B,
    idle: Duration,
    buffer: usize,
) -> TunnelEnd
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let opened = tokio::time::Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut client = Tracked {
        inner: client,
        opened,
        last: last.clone(),
        read: 0,
    };
    let mut upstream = Tracked {
        inner: upstream,
        opened,
        last: last.clone(),
        read: 0,
    };
    // TCP listeners copy with 64 KiB per direction (tokio's default is 8 KiB): a quarter of
    // the read and write calls on bulk transfers, for 112 KiB more per connection.
    let termination = {
        let copy =
            tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, buffer, buffer);
        tokio::pin!(copy);
        let mut check = tokio::time::interval((idle / 4).max(Duration::from_millis(25)));
        loop {
            tokio::select! {
                done = &mut copy => break match done {
                    Ok(_) => Termination::Done,
                    Err(_) => Termination::ConnectionError,
                },
                _ = check.tick() => {
                    let quiet = opened
                        .elapsed()
                        .saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                    if quiet >= idle {
                        break Termination::IdleTimeout;
                    }
                }
            }
        }
    };
    TunnelEnd {
        from_client: client.read,
        from_member: upstream.read,
        termination,
    }
}

/// A stream that stamps the time of each successful read, and counts what it read.
struct Tracked<S> {
    inner: S,
    opened: tokio::time::Instant,
    last: Arc<AtomicU64>,
    read: u64,
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
            self.read += (buf.filled().len() - before) as u64;
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
