//! Bound sockets, reconciled with each snapshot: a new listener binds, a changed address
//! rebinds, a removed one stops accepting and lets its connections finish. Other
//! listeners are never touched.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fulcrum_model::{ListenerId, ListenerProtocol};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::DataPlaneInner;
use crate::http::ConnInfo;
use crate::snapshot::{BindKey, Snapshot};

pub(crate) struct Running {
    bind: BindKey,
    protocol: ListenerProtocol,
    stop: watch::Sender<bool>,
}

/// Open client connections of all listeners, for graceful shutdown.
#[derive(Default)]
pub(crate) struct ConnCounter(AtomicUsize);

impl ConnCounter {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

struct ConnGuard(Arc<DataPlaneInner>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.connections.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl DataPlaneInner {
    /// Makes the bound sockets match the snapshot. Returns the listeners that could not bind.
    pub(crate) fn reconcile_listeners(
        self: &Arc<Self>,
        snap: &Snapshot,
    ) -> Vec<(ListenerId, String)> {
        let mut running = self.listeners.lock();
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
                failed.push((
                    id.clone(),
                    format!("{:?} listeners are not served yet", l.protocol),
                ));
                continue;
            }
            if let Some(Err(e)) = &l.tls {
                tracing::warn!(listener = %id, error = %e, "invalid TLS configuration");
                failed.push((id.clone(), e.clone()));
                continue;
            }
            match bind_tcp(l.bind.addr) {
                Ok(socket) => {
                    let (stop, stop_rx) = watch::channel(false);
                    tracing::info!(listener = %id, addr = %l.bind.addr, protocol = ?l.protocol, "listening");
                    tokio::spawn(accept_loop(
                        self.clone(),
                        id.clone(),
                        l.protocol,
                        socket,
                        stop_rx,
                    ));
                    running.insert(
                        id.clone(),
                        Running {
                            bind: l.bind.clone(),
                            protocol: l.protocol,
                            stop,
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(listener = %id, addr = %l.bind.addr, error = %e, "cannot bind");
                    failed.push((id.clone(), format!("cannot bind {}: {e}", l.bind.addr)));
                }
            }
        }
        failed
    }

    /// Stops accepting everywhere; open connections finish their in-flight requests.
    pub(crate) fn close_all_listeners(&self) {
        for (_, r) in self.listeners.lock().drain() {
            let _ = r.stop.send(true);
        }
    }

    pub(crate) fn bound_addr(&self, id: &ListenerId) -> Option<SocketAddr> {
        self.listeners.lock().get(id).map(|r| r.bind.addr)
    }
}

fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    // A std bind is immediate and keeps the reconcile synchronous.
    let std = std::net::TcpListener::bind(addr)?;
    std.set_nonblocking(true)?;
    TcpListener::from_std(std)
}

async fn accept_loop(
    dp: Arc<DataPlaneInner>,
    id: ListenerId,
    protocol: ListenerProtocol,
    socket: TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    let open = Arc::new(AtomicUsize::new(0));
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
        let limit = dp
            .snapshot
            .load()
            .listeners
            .get(&id)
            .and_then(|l| l.connection_limit);
        if limit.is_some_and(|max| open.load(Ordering::Relaxed) >= max as usize) {
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        open.fetch_add(1, Ordering::Relaxed);
        dp.connections.0.fetch_add(1, Ordering::Relaxed);
        let guard = ConnGuard(dp.clone());
        let (dp, id, open, stop) = (dp.clone(), id.clone(), open.clone(), stop.clone());
        tokio::spawn(async move {
            let _guard = guard;
            match protocol {
                ListenerProtocol::Http => serve_http(dp, id, stream, peer, false, stop).await,
                ListenerProtocol::TerminatedHttps => serve_tls(dp, id, stream, peer, stop).await,
                ListenerProtocol::Tcp | ListenerProtocol::Https => {
                    crate::tcp::serve(dp, id, stream, peer).await
                }
                other => tracing::debug!(?other, "protocol not served"),
            }
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    tracing::debug!(listener = %id, "stopped accepting");
}

fn header_timeout(dp: &DataPlaneInner, id: &ListenerId) -> Duration {
    let ms = dp
        .snapshot
        .load()
        .listeners
        .get(id)
        .map_or(10_000, |l| l.timeouts.client_header_ms);
    Duration::from_millis(u64::from(ms))
}

async fn serve_tls(
    dp: Arc<DataPlaneInner>,
    id: ListenerId,
    stream: TcpStream,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
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
    match tokio::time::timeout(header_timeout(&dp, &id), acceptor.accept(stream)).await {
        Ok(Ok(tls)) => serve_http(dp, id, tls, peer, true, stop).await,
        Ok(Err(e)) => tracing::debug!(listener = %id, %peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(listener = %id, %peer, "TLS handshake timed out"),
    }
}

/// What a connection is doing, for its idle timeout.
#[derive(Default)]
struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds since the connection opened, at the last request's start or end.
    last_ms: std::sync::atomic::AtomicU64,
}

impl Activity {
    fn touch(&self, opened: tokio::time::Instant) {
        let ms = u64::try_from(opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }
}

/// One request in flight on a connection, until it is answered or dropped (an HTTP/2 stream
/// the client resets is dropped mid-way, and must not keep the connection from idling out).
struct InFlight {
    activity: Arc<Activity>,
    opened: tokio::time::Instant,
}

impl InFlight {
    fn start(activity: Arc<Activity>, opened: tokio::time::Instant) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.touch(opened);
        Self { activity, opened }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.activity.touch(self.opened);
        self.activity.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve_http<S>(
    dp: Arc<DataPlaneInner>,
    id: ListenerId,
    stream: S,
    peer: SocketAddr,
    tls: bool,
    mut stop: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = header_timeout(&dp, &id);
    let idle = dp
        .snapshot
        .load()
        .listeners
        .get(&id)
        .map_or(60_000, |l| l.timeouts.idle_ms);
    let idle = Duration::from_millis(u64::from(idle));
    let info = Arc::new(ConnInfo::new(id, peer, tls));
    let opened = tokio::time::Instant::now();
    let activity = Arc::new(Activity::default());
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let seen = activity.clone();
    let service = hyper::service::service_fn(move |req| {
        let (dp, info) = (dp.clone(), info.clone());
        let in_flight = InFlight::start(seen.clone(), opened);
        // Boxed: the request future is a few KB, and hyper moves it into place for every
        // request (into a spawned task per stream with HTTP/2). Moving a pointer instead cut
        // memcpy's share of the instructions (callgrind, bench/PROFILE.md).
        Box::pin(async move {
            let resp = crate::http::handle(dp, info, req).await;
            drop(in_flight);
            resp
        })
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    // hyper has no idle timeout for HTTP/1 keep-alive: check a few times per period.
    let mut idle_check = tokio::time::interval((idle / 4).max(Duration::from_millis(25)));
    idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = conn.as_mut() => break,
            _ = stop.changed(), if !stopping => {
                // Stopped, or the listener is gone: finish the request in flight, then close.
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = idle_check.tick(), if !stopping => {
                let quiet = opened.elapsed().saturating_sub(Duration::from_millis(
                    activity.last_ms.load(Ordering::Relaxed),
                ));
                if activity.in_flight.load(Ordering::Relaxed) == 0 && quiet >= idle {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
