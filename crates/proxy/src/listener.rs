//! Bound sockets, reconciled with each snapshot: a new listener binds one `SO_REUSEPORT`
//! socket per worker (the kernel spreads connections over them), a changed address rebinds,
//! a removed one stops accepting and lets its connections finish. Other listeners are
//! never touched. Each accepted connection is served to its end on the worker that
//! accepted it: HTTP/1.1 by `h1`, HTTP/2 by `h2`, TCP by `tcp`. A UDP listener's socket of each
//! worker is served by `udp` on that worker.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use fulcrum_model::{ListenerId, ListenerProtocol};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::context::Shared;
use crate::exchange::ConnInfo;
use crate::h1::H2_PREFACE;
use crate::snapshot::{BindKey, Snapshot};

pub(crate) struct Running {
    bind: BindKey,
    protocol: ListenerProtocol,
    stop: watch::Sender<bool>,
    /// Copies of the listening sockets (the accept loops own theirs), handed to a process
    /// that takes over from this one.
    sockets: Vec<std::net::TcpListener>,
}

/// Listening sockets handed over by the process this one takes over from, by address: a
/// listener on one of these addresses accepts on them instead of binding, so connections
/// waiting in their queues are never refused.
pub(crate) type Inherited = HashMap<SocketAddr, Vec<std::net::TcpListener>>;

/// Counts one open connection, in all and for its listener, until dropped.
struct ConnGuard {
    dp: Arc<Shared>,
    listener_open: Arc<AtomicUsize>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.dp.connections.closed();
        self.listener_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Pending connections per socket (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: i32 = 4096;

/// Makes the bound sockets match the snapshot: `running` are the listeners bound now, and
/// new ones get an accept loop on each worker. Returns the listeners that could not bind.
pub(crate) fn reconcile(
    shared: &Arc<Shared>,
    workers: &[tokio::runtime::Handle],
    running: &mut HashMap<ListenerId, Running>,
    snap: &Snapshot,
    inherited: &mut Inherited,
) -> Vec<(ListenerId, String)> {
    running.retain(|id, r| {
        let keep = snap
            .listeners
            .get(id)
            .is_some_and(|l| l.enabled && l.bind == r.bind && l.protocol == r.protocol);
        if !keep {
            tracing::info!(listener = %id, addr = %r.bind.addr, "closing listener");
            let _ = r.stop.send(true);
        }
        keep
    });
    let mut failed = Vec::new();
    for (id, l) in &snap.listeners {
        if !l.enabled || running.contains_key(id) {
            continue;
        }
        if l.bind.udp {
            match bind_udp(l.bind.addr, workers.len()) {
                Ok(sockets) => {
                    let (stop, stop_rx) = watch::channel(false);
                    tracing::info!(listener = %id, addr = %l.bind.addr, workers = workers.len(), "listening (UDP)");
                    for (socket, worker) in sockets.into_iter().zip(workers.iter()) {
                        worker.spawn(crate::udp::serve(
                            shared.clone(),
                            id.clone(),
                            socket,
                            stop_rx.clone(),
                            l.counters.clone(),
                        ));
                    }
                    running.insert(
                        id.clone(),
                        Running {
                            bind: l.bind.clone(),
                            protocol: l.protocol,
                            stop,
                            // UDP sockets are not handed over: a successor binds its own
                            // (SO_REUSEPORT), and flows end with the process that holds them.
                            sockets: Vec::new(),
                        },
                    );
                }
                Err(e) => failed.push((id.clone(), format!("cannot bind {}: {e}", l.bind.addr))),
            }
            continue;
        }
        if let Some(Err(e)) = &l.tls {
            failed.push((id.clone(), e.clone()));
            continue;
        }
        let sockets = match inherited.remove(&l.bind.addr) {
            Some(sockets) => {
                tracing::info!(listener = %id, addr = %l.bind.addr, sockets = sockets.len(), "listening on sockets taken over");
                Ok(sockets)
            }
            None => bind_tcp(l.bind.addr, workers.len()),
        };
        let copies = sockets.and_then(|sockets| {
            let copies = sockets
                .iter()
                .map(std::net::TcpListener::try_clone)
                .collect::<std::io::Result<Vec<_>>>()?;
            Ok((sockets, copies))
        });
        match copies {
            Ok((sockets, copies)) => {
                let (stop, stop_rx) = watch::channel(false);
                tracing::info!(listener = %id, addr = %l.bind.addr, protocol = ?l.protocol, workers = workers.len(), "listening");
                let open = Arc::new(AtomicUsize::new(0));
                // One socket per worker; sockets taken over from a process with more
                // workers are shared out among them, so none is left unserved.
                for (socket, worker) in sockets.into_iter().zip(workers.iter().cycle()) {
                    worker.spawn(accept_loop(
                        shared.clone(),
                        id.clone(),
                        l.protocol,
                        socket,
                        stop_rx.clone(),
                        open.clone(),
                    ));
                }
                running.insert(
                    id.clone(),
                    Running {
                        bind: l.bind.clone(),
                        protocol: l.protocol,
                        stop,
                        sockets: copies,
                    },
                );
            }
            Err(e) => {
                failed.push((id.clone(), format!("cannot bind {}: {e}", l.bind.addr)));
            }
        }
    }
    failed
}

/// Stops accepting everywhere; open connections finish their in-flight requests.
pub(crate) fn close_all(running: &mut HashMap<ListenerId, Running>) {
    for (_, r) in running.drain() {
        let _ = r.stop.send(true);
    }
}

/// Copies of every listening socket, by address, for a process taking over from this one.
pub(crate) fn socket_copies(
    running: &HashMap<ListenerId, Running>,
) -> std::io::Result<Vec<(SocketAddr, std::net::TcpListener)>> {
    let mut out = Vec::new();
    for r in running.values() {
        for s in &r.sockets {
            out.push((r.bind.addr, s.try_clone()?));
        }
    }
    Ok(out)
}

pub(crate) fn bound_addr(
    running: &HashMap<ListenerId, Running>,
    id: &ListenerId,
) -> Option<SocketAddr> {
    running.get(id).map(|r| r.bind.addr)
}

/// One UDP socket per worker on `addr`, all with `SO_REUSEPORT` (the kernel hashes each
/// client's address and port to one of them).
fn bind_udp(addr: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::UdpSocket>> {
    use socket2::{Domain, Protocol, Socket, Type};
    (0..count.max(1))
        .map(|_| {
            let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
            socket.set_reuse_address(true)?;
            socket.set_reuse_port(true)?;
            if addr.is_ipv6() {
                socket.set_only_v6(true)?;
            }
            socket.set_nonblocking(true)?;
            socket.bind(&addr.into())?;
            Ok(socket.into())
        })
        .collect()
}

/// One listening socket per worker on `addr`, all with `SO_REUSEPORT`. Binding is
/// synchronous, so the reconcile knows at once whether the address was free.
fn bind_tcp(addr: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
    (0..count.max(1))
        .map(|_| {
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
            socket.set_reuse_address(true)?;
            socket.set_reuse_port(true)?;
            if addr.is_ipv6() {
                socket.set_only_v6(true)?;
            }
            socket.set_nonblocking(true)?;
            socket.bind(&addr.into())?;
            socket.listen(BACKLOG)?;
            Ok(socket.into())
        })
        .collect()
}

async fn accept_loop(
    dp: Arc<Shared>,
    id: ListenerId,
    protocol: ListenerProtocol,
    socket: std::net::TcpListener,
    mut stop: watch::Receiver<bool>,
    open: Arc<AtomicUsize>,
) {
    let socket = match TcpListener::from_std(socket) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(listener = %id, error = %e, "cannot register the listening socket");
            return;
        }
    };
    loop {
        let accepted = tokio::select! {
            a = socket.accept() => a,
            _ = stop.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(listener = %id, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let opened = Instant::now();
        {
            let snap = dp.snapshot.load();
            let listener = snap.listeners.get(&id);
            let limit = listener.and_then(|l| l.connection_limit);
            if limit.is_some_and(|max| open.load(Ordering::Relaxed) >= max as usize) {
                drop(stream);
                continue;
            }
            if let Some(l) = listener {
                l.counters.connections.fetch_add(1, Ordering::Relaxed);
            }
        }
        let _ = stream.set_nodelay(true);
        open.fetch_add(1, Ordering::Relaxed);
        dp.connections.opened();
        let guard = ConnGuard {
            dp: dp.clone(),
            listener_open: open.clone(),
        };
        let (dp, id, stop) = (dp.clone(), id.clone(), stop.clone());
        // Spawned on this worker's own runtime: the connection never leaves this thread.
        // Boxed: a connection's future is a few KB, and tokio moves a task's future several
        // times while spawning and finishing it (callgrind: 7,300 Ir of memcpy per new
        // connection); a box moves as a pointer.
        tokio::spawn(async move {
            let _guard = guard;
            match protocol {
                ListenerProtocol::Http => {
                    Box::pin(serve_http(dp, id, stream, peer, opened, stop)).await
                }
                ListenerProtocol::TerminatedHttps => {
                    Box::pin(serve_tls(dp, id, stream, peer, opened, stop)).await
                }
                ListenerProtocol::Tcp | ListenerProtocol::Https => {
                    Box::pin(crate::tcp::serve(dp, id, stream, peer)).await
                }
                other => tracing::debug!(?other, "protocol not served"),
            }
        });
    }
    tracing::debug!(listener = %id, "stopped accepting");
}

fn header_timeout(dp: &Shared, id: &ListenerId) -> Duration {
    let ms = dp
        .snapshot
        .load()
        .listeners
        .get(id)
        .map_or(10_000, |l| l.timeouts.client_header_ms);
    Duration::from_millis(u64::from(ms))
}

/// A cleartext connection: HTTP/1.1, or HTTP/2 when it opens with HTTP/2's preface.
async fn serve_http(
    dp: Arc<Shared>,
    id: ListenerId,
    stream: TcpStream,
    peer: SocketAddr,
    opened: Instant,
    mut stop: watch::Receiver<bool>,
) {
    let conn = ConnInfo::new(id, peer, false);
    let socket = Some(stream.as_raw_fd());
    if let Some(switch) =
        crate::h1::serve(&dp, &conn, stream, socket, opened, &mut stop, true).await
    {
        let io = Rewind::new(switch.read, switch.io);
        let deadline = Instant::now() + header_timeout(&dp, &conn.listener);
        crate::h2::serve(&dp, &conn, io, deadline, &mut stop).await;
    }
}

async fn serve_tls(
    dp: Arc<Shared>,
    id: ListenerId,
    stream: TcpStream,
    peer: SocketAddr,
    opened: Instant,
    mut stop: watch::Receiver<bool>,
) {
    let config = {
        let snap = dp.snapshot.load();
        match snap.listeners.get(&id).and_then(|l| l.tls.clone()) {
            Some(Ok(c)) => c,
            _ => return,
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    // The handshake counts against the header timeout: a silent client cannot hold a slot.
    let deadline = opened + header_timeout(&dp, &id);
    let mut tls = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(listener = %id, %peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(listener = %id, %peer, "TLS handshake timed out");
            return;
        }
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let conn = ConnInfo::new(id, peer, true);
    if !h2 {
        crate::h1::serve(&dp, &conn, tls, None, opened, &mut stop, false).await;
        return;
    }
    // ALPN chose HTTP/2: only HTTP/2 is spoken from here on.
    let mut preface = [0u8; H2_PREFACE.len()];
    let read = tokio::time::timeout_at(deadline, tls.read_exact(&mut preface)).await;
    if !matches!(read, Ok(Ok(_))) || preface != H2_PREFACE {
        // An empty SETTINGS (the server's preface), then GOAWAY(PROTOCOL_ERROR).
        const REFUSAL: [u8; 26] = [
            0, 0, 0, 4, 0, 0, 0, 0, 0, // SETTINGS, no parameters
            0, 0, 8, 7, 0, 0, 0, 0, 0, // GOAWAY, 8 bytes
            0, 0, 0, 0, // last stream id 0
            0, 0, 0, 1, // PROTOCOL_ERROR
        ];
        let _ = tokio::time::timeout_at(deadline, async {
            let _ = tls.write_all(&REFUSAL).await;
            let _ = tls.shutdown().await;
        })
        .await;
        return;
    }
    let io = Rewind::new(preface.to_vec(), tls);
    crate::h2::serve(&dp, &conn, io, deadline, &mut stop).await;
}

/// A stream whose first bytes were already read: they are read again first.
struct Rewind<S> {
    read: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Rewind<S> {
    fn new(read: Vec<u8>, inner: S) -> Self {
        Rewind { read, at: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.at < this.read.len() {
            let n = (this.read.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.read[this.at..this.at + n]);
            this.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
