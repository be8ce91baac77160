//! The API's HTTP server: an accept loop that keeps a connection budget, and the deadlines
//! of each connection.
//!
//! - **Budget.** At most `max_connections` are open at once: the loop takes a slot before
//!   it calls `accept`, so at the cap it stops accepting (new connections wait in the
//!   kernel's backlog) and never holds more file descriptors than its budget, whatever
//!   callers do; the data plane, which shares the process's descriptor limit, keeps the
//!   rest. A client address holds at most `max_connections_per_ip` of them; one more waits
//!   (unserved, unread) for one of its address's connections to close, for up to the
//!   header timeout, and as many again beyond that are closed at once.
//! - **Header timeout**, counted from when a connection is served: its first request head
//!   (HTTP/1.1, or the HTTP/2 preface and a request's headers) must have arrived by then.
//!   On a kept-alive connection the next head must arrive within the same time of its
//!   first byte.
//! - **Idle timeout**: a connection with no request in flight and no byte of a new one is
//!   closed after it.
//! - **Body deadline**: every request body must have arrived within `body_timeout` of its
//!   head; past that, reading it fails ([`BodyTimedOut`]), the front door answers 408 and
//!   the connection is closed (its body was not read to the end).
//!
//! - **TLS** ([`ApiTls`], when `[api]` names a certificate): the handshake is part of the
//!   first head, so it too must end within the header timeout from being served; every
//!   other limit applies to the decrypted connection as to a plain one. A client that
//!   speaks plain HTTP to it is told so (400) and closed.
//!
//! hyper's own `header_read_timeout` is not used: it also runs while a kept-alive
//! connection waits for its next request, which would make the idle timeout the header
//! timeout. One watchdog per connection keeps all three deadlines instead, from what the
//! connection's reads and requests tell it ([`ConnState`]).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tokio_rustls::server::TlsStream;
use tower::ServiceExt;

use crate::tls::ApiTls;
use fulcrum_api_core::ServedOverTls;
use fulcrum_api_core::auth::ClientCertificate;
use fulcrum_api_core::body::BodyTimedOut;

/// The API server's limits (`[api]` in `fulcrum.toml`).
#[derive(Clone, Debug)]
pub struct ServerLimits {
    /// A connection's first request head must arrive within this of its being served; a
    /// later head within this of its first byte.
    pub header_timeout: Duration,
    /// A connection with nothing in flight is closed after this.
    pub idle_timeout: Duration,
    /// A request's body must have arrived within this of its head.
    pub body_timeout: Duration,
    /// Connections open at once (the API's file-descriptor budget).
    pub max_connections: usize,
    /// Connections open at once from one client address.
    pub max_connections_per_ip: usize,
    /// How long a stopping server lets its connections finish.
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_connections_per_ip: 64,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// The largest request head (HTTP/1.1) or header list (HTTP/2) read: every front door's
/// heads fit in a few KiB (a JWT, a signature); hyper's defaults (400 KiB, 16 MiB) would
/// let each slow connection hold that much.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// HTTP/2 flow-control windows: what a client may send before the server reads it.
const H2_STREAM_WINDOW: u32 = 64 * 1024;
const H2_CONNECTION_WINDOW: u32 = 256 * 1024;
const H2_MAX_STREAMS: u32 = 32;

/// Connection figures for `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct ConnectionStats {
    open: Gauge,
    limit: Gauge,
    closed: Family<CloseLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseLabels {
    reason: &'static str,
}

impl ConnectionStats {
    pub(crate) fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register(
            "fulcrum_api_connections",
            "API connections open (served, or waiting for a slot of their client address)",
            self.open.clone(),
        );
        r.register(
            "fulcrum_api_connection_limit",
            "API connections allowed open at once (its file-descriptor budget)",
            self.limit.clone(),
        );
        r.register(
            "fulcrum_api_connections_closed",
            "API connections closed by the server: header_timeout, idle_timeout, per_ip_limit, tls_handshake (failed, or plain HTTP to a TLS API)",
            self.closed.clone(),
        );
    }

    fn closed(&self, reason: &'static str) {
        self.closed.get_or_create(&CloseLabels { reason }).inc();
    }
}

/// Raises the soft limit on open files to the hard limit (as HAProxy does) and returns the
/// limit now in force (`None`: unlimited or unknown).
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(maximum)) = (limit.current, limit.maximum)
        && current < maximum
    {
        match setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(maximum),
                maximum: Some(maximum),
            },
        ) {
            Ok(()) => return Some(maximum),
            Err(e) => {
                tracing::warn!(error = %e, current, maximum, "cannot raise the open-file limit");
            }
        }
    }
    limit.current
}

impl ServerLimits {
    /// Keeps the API's connections to at most half the process's file descriptors (the data
    /// plane needs the rest), with a warning when that lowers `max_connections`.
    pub fn fit_fd_limit(&mut self, fd_limit: Option<u64>) {
        let Some(fds) = fd_limit else { return };
        let budget = usize::try_from(fds / 2).unwrap_or(usize::MAX).max(1);
        if self.max_connections > budget {
            tracing::warn!(
                configured = self.max_connections,
                budget,
                fd_limit = fds,
                "[api] max_connections is more than half the open-file limit: lowered"
            );
            self.max_connections = budget;
        }
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` completes; then stops
/// accepting, lets every connection finish its requests (up to `shutdown_grace`) and
/// returns. With `tls`, every connection is TLS. Requests carry the caller's address
/// (`ConnectInfo<SocketAddr>`) and, over mTLS, what its verified certificate names.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    tls: Option<Arc<ApiTls>>,
    stats: ConnectionStats,
    shutdown: impl Future<Output = ()>,
) {
    let max = limits.max_connections.clamp(1, u32::MAX as usize);
    stats.limit.set(max as i64);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .header_read_timeout(None)
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .max_header_list_size(MAX_HEAD_BYTES as u32)
        .max_concurrent_streams(H2_MAX_STREAMS)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW);
    let shared = Arc::new(Shared {
        app,
        per_ip: PerIp::new(limits.max_connections_per_ip.max(1)),
        limits,
        tls,
        stats,
        builder,
    });
    let slots = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut slot: Option<OwnedSemaphorePermit> = None;
    let mut last_warning: Option<Instant> = None;
    let mut warn = |message: &str, error: Option<&std::io::Error>| {
        // At most one line a minute: a server at its cap would otherwise log per attempt.
        if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
            last_warning = Some(Instant::now());
            match error {
                Some(e) => tracing::warn!(error = %e, "{message}"),
                None => tracing::warn!(max_connections = max, "{message}"),
            }
        }
    };
    loop {
        let permit = match slot.take() {
            Some(p) => p,
            None => match slots.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    warn(
                        "the API is at its connection limit: new connections wait until one closes",
                        None,
                    );
                    tokio::select! {
                        p = slots.clone().acquire_owned() => match p {
                            Ok(p) => p,
                            Err(_) => break,
                        },
                        () = &mut shutdown => break,
                    }
                }
            },
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = &mut shutdown => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Here, not in the connection's task, so an address's connections take
                // its slots in the order they were accepted.
                let Some(ticket) = shared.per_ip.join(peer.ip()) else {
                    shared.stats.closed("per_ip_limit");
                    slot = Some(permit);
                    continue;
                };
                let ip_slot = ticket.slots.clone().try_acquire_owned().ok();
                tokio::spawn(connection(
                    shared.clone(),
                    stream,
                    peer,
                    Slots {
                        ip: ip_slot,
                        ticket,
                        _total: permit,
                    },
                    stop_rx.clone(),
                ));
            }
            Err(e) => {
                slot = Some(permit);
                if is_connection_error(&e) {
                    continue;
                }
                // Out of descriptors or memory: wait a little rather than spin on accept.
                warn("API accept failed", Some(&e));
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    () = &mut shutdown => break,
                }
            }
        }
    }
    drop(listener);
    drop(slot);
    let _ = stop_tx.send(true);
    let grace = shared.limits.shutdown_grace;
    if tokio::time::timeout(grace, slots.acquire_many(max as u32))
        .await
        .is_err()
    {
        tracing::warn!(
            open = max - slots.available_permits(),
            "API connections still open after {}s: closing them",
            grace.as_secs()
        );
    }
}

/// How long an idle connection of a stopping server waits for a request already sent.
const STOP_LINGER: Duration = Duration::from_secs(1);

/// Errors of one connection, not of the listener (as hyper's and axum's servers tell them).
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

struct Shared {
    app: Router,
    limits: ServerLimits,
    tls: Option<Arc<ApiTls>>,
    stats: ConnectionStats,
    per_ip: Arc<PerIp>,
    builder: auto::Builder<TokioExecutor>,
}

/// What an accepted connection holds of the budget: a slot of the total, its place with
/// its address and, unless it waits for one, a slot of its address. Released in this
/// order (fields drop in declaration order): its address's, then the total's.
struct Slots {
    ip: Option<OwnedSemaphorePermit>,
    ticket: Ticket,
    _total: OwnedSemaphorePermit,
}

/// One connection, from accept to close.
async fn connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    mut slots: Slots,
    mut stop: watch::Receiver<bool>,
) {
    let stats = &shared.stats;
    stats.open.inc();
    let _open = OnDrop(|| {
        stats.open.dec();
    });
    let limits = &shared.limits;
    if slots.ip.is_none() {
        // Over its address's cap: unserved (unread) until one of them closes.
        tokio::select! {
            p = slots.ticket.slots.clone().acquire_owned() => match p {
                Ok(p) => slots.ip = Some(p),
                Err(_) => return,
            },
            () = tokio::time::sleep(limits.header_timeout) => {
                stats.closed("per_ip_limit");
                return;
            }
            _ = stop.wait_for(|s| *s) => return,
        }
    }
    let _ = stream.set_nodelay(true);
    let state = Arc::new(ConnState::new());
    let Some(tls) = &shared.tls else {
        let io = Watched {
            inner: stream,
            state: state.clone(),
        };
        return serve_http(&shared, io, peer, state, None, stop).await;
    };
    // The handshake is part of the first head: it ends within the header timeout too.
    let handshaken = tokio::select! {
        r = handshake(tls.config(), stream) => r,
        () = tokio::time::sleep_until(state.start + limits.header_timeout) => {
            tracing::debug!(%peer, "API connection closed: no TLS handshake in time");
            stats.closed("header_timeout");
            return;
        }
        _ = stop.wait_for(|s| *s) => return,
    };
    let stream = match handshaken {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "API TLS handshake failed");
            stats.closed("tls_handshake");
            return;
        }
    };
    let certificate = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(crate::tls::client_certificate)
        .map(Arc::new);
    let io = Watched {
        inner: stream,
        state: state.clone(),
    };
    serve_http(&shared, io, peer, state, certificate, stop).await;
}

/// The first byte of a TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What a client that speaks plain HTTP to a TLS API is told before it is closed.
const PLAIN_HTTP_REFUSAL: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 61\r\nConnection: close\r\n\r\nThis fulcrum API speaks HTTPS only: use https:// to reach it\n";

/// The server side of a TLS handshake. A client whose first byte is not a TLS record
/// (plain HTTP, most likely) gets a 400 saying so, not a TLS alert it would not read.
async fn handshake(
    config: Arc<rustls::ServerConfig>,
    mut stream: TcpStream,
) -> std::io::Result<TlsStream<TcpStream>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        stream.write_all(PLAIN_HTTP_REFUSAL).await?;
        stream.shutdown().await?;
        // Read what the client sent before closing, so the close is not a reset that
        // could destroy the answer before the client reads it (bounded: the caller's
        // header deadline).
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "plain HTTP sent to the TLS API",
        ));
    }
    tokio_rustls::TlsAcceptor::from(config).accept(stream).await
}

/// One connection's HTTP, from its first request to its close: its deadlines, and a
/// graceful close when the server stops.
async fn serve_http<S>(
    shared: &Shared,
    io: Watched<S>,
    peer: SocketAddr,
    state: Arc<ConnState>,
    certificate: Option<Arc<ClientCertificate>>,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let stats = &shared.stats;
    let limits = &shared.limits;
    let io = TokioIo::new(io);
    let service = {
        let app = shared.app.clone();
        let state = state.clone();
        let certificate = certificate.clone();
        let over_tls = shared.tls.is_some();
        let body_timeout = limits.body_timeout;
        hyper::service::service_fn(move |req: http::Request<Incoming>| {
            let busy = Busy::start(state.clone());
            let deadline = Instant::now() + body_timeout;
            let mut req = req.map(|body| {
                axum::body::Body::new(DeadlineBody {
                    inner: body,
                    deadline,
                    timer: None,
                })
            });
            req.extensions_mut().insert(ConnectInfo(peer));
            if over_tls {
                req.extensions_mut().insert(ServedOverTls);
            }
            if let Some(c) = &certificate {
                req.extensions_mut().insert(c.clone());
            }
            let app = app.clone();
            async move {
                let resp = app.oneshot(req).await;
                drop(busy);
                resp
            }
        })
    };
    let mut conn = std::pin::pin!(shared.builder.serve_connection(io, service));
    let mut stopping = false;
    // Stopping, an idle connection waits this long for a request its client may have sent
    // as the stop came, and serves it (then closes) instead of closing under it.
    let mut linger_until: Option<Instant> = None;
    loop {
        let mut wake = state
            .deadline(limits)
            .map_or_else(|| Instant::now() + limits.idle_timeout, |(at, _)| at);
        if let Some(at) = linger_until {
            wake = wake.min(at);
        }
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "API connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(wake) => {
                if let Some((at, reason)) = state.deadline(limits)
                    && at <= Instant::now()
                {
                    tracing::debug!(%peer, reason, "API connection closed");
                    stats.closed(reason);
                    return;
                }
                if linger_until.is_some_and(|at| at <= Instant::now()) {
                    linger_until = None;
                    conn.as_mut().graceful_shutdown();
                }
            }
            () = state.head_began.notified() => {
                // A request began while lingering: it is served, then the connection closes.
                if linger_until.take().is_some() {
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                if state.idle() {
                    linger_until = Some(Instant::now() + STOP_LINGER);
                } else {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Runs a closure when dropped.
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// What a connection's watchdog knows: requests in flight, when it went idle, and whether
/// bytes of a new request arrived since. Times are milliseconds since it was served.
struct ConnState {
    start: Instant,
    in_flight: AtomicUsize,
    served_any: AtomicBool,
    idle_since_ms: AtomicU64,
    /// When the first byte after going idle arrived, plus one (0: none yet).
    head_started_ms: AtomicU64,
    /// Wakes the watchdog when a head begins (its deadline comes sooner).
    head_began: tokio::sync::Notify,
}

impl ConnState {
    fn new() -> Self {
        ConnState {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            served_any: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(0),
            head_started_ms: AtomicU64::new(0),
            head_began: tokio::sync::Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    /// When the connection is to be closed, and why, as things stand (`None`: a request
    /// is in flight).
    fn deadline(&self, limits: &ServerLimits) -> Option<(Instant, &'static str)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        if !self.served_any.load(Ordering::Acquire) {
            return Some((self.start + limits.header_timeout, "header_timeout"));
        }
        match self.head_started_ms.load(Ordering::Acquire) {
            0 => Some((
                self.at(self.idle_since_ms.load(Ordering::Acquire)) + limits.idle_timeout,
                "idle_timeout",
            )),
            started => Some((
                self.at(started - 1) + limits.header_timeout,
                "header_timeout",
            )),
        }
    }

    /// No request in flight and none begun.
    fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && self.head_started_ms.load(Ordering::Acquire) == 0
    }

    fn on_read(&self) {
        if self.head_started_ms.load(Ordering::Relaxed) == 0
            && self.in_flight.load(Ordering::Relaxed) == 0
        {
            let began = self.head_started_ms.compare_exchange(
                0,
                self.now_ms() + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
            if began.is_ok() {
                self.head_began.notify_one();
            }
        }
    }
}

/// A request in flight, from its head to its response.
struct Busy(Arc<ConnState>);

impl Busy {
    fn start(state: Arc<ConnState>) -> Busy {
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        state.served_any.store(true, Ordering::Release);
        state.head_started_ms.store(0, Ordering::Release);
        Busy(state)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let s = &self.0;
        if s.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            s.idle_since_ms.store(s.now_ms(), Ordering::Release);
            s.head_started_ms.store(0, Ordering::Release);
        }
    }
}

/// The connection (a socket, or TLS over it: then the bytes counted are the decrypted
/// ones), telling the watchdog when bytes arrive.
struct Watched<S> {
    inner: S,
    state: Arc<ConnState>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.on_read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
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

/// A request body that fails with [`BodyTimedOut`] once its deadline passes. The timer is
/// made only if the body has to be waited for.
struct DeadlineBody {
    inner: Incoming,
    deadline: Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|r| r.map_err(Into::into))),
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Connections per client address: each address has `cap` slots; as many connections
/// again may wait for one, and further ones are refused. An address's entry lives while a
/// connection of it is open, so the table never outgrows the connection budget.
struct PerIp {
    cap: usize,
    table: parking_lot::Mutex<HashMap<IpAddr, Entry>>,
}

struct Entry {
    slots: Arc<Semaphore>,
    /// Connections holding or waiting for a slot.
    users: usize,
}

/// A connection's place with its address: dropped when the connection closes.
struct Ticket {
    per_ip: Arc<PerIp>,
    ip: IpAddr,
    slots: Arc<Semaphore>,
}

impl PerIp {
    fn new(cap: usize) -> Arc<Self> {
        Arc::new(PerIp {
            cap,
            table: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    fn join(self: &Arc<Self>, ip: IpAddr) -> Option<Ticket> {
        let mut table = self.table.lock();
        let entry = table.entry(ip).or_insert_with(|| Entry {
            slots: Arc::new(Semaphore::new(self.cap)),
            users: 0,
        });
        if entry.users >= self.cap.saturating_mul(2) {
            return None;
        }
        entry.users += 1;
        Some(Ticket {
            per_ip: self.clone(),
            ip,
            slots: entry.slots.clone(),
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut table = self.per_ip.table.lock();
        if let Some(entry) = table.get_mut(&self.ip) {
            entry.users -= 1;
            if entry.users == 0 {
                table.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_has_its_slots_then_as_many_waiting_then_none() {
        let per_ip = PerIp::new(2);
        let ip = IpAddr::from([10, 0, 0, 1]);
        let tickets: Vec<Ticket> = (0..4).filter_map(|_| per_ip.join(ip)).collect();
        assert_eq!(tickets.len(), 4);
        assert!(per_ip.join(ip).is_none());
        let other = IpAddr::from([10, 0, 0, 2]);
        assert!(
            per_ip.join(other).is_some(),
            "another address is not affected"
        );
        drop(tickets);
        assert!(
            per_ip.table.lock().is_empty(),
            "an address with no connection is forgotten"
        );
    }

    #[test]
    fn the_plain_http_refusal_declares_its_length() {
        let text = std::str::from_utf8(PLAIN_HTTP_REFUSAL).unwrap_or_default();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(
            head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())),
            "{text}"
        );
    }

    #[test]
    fn the_watchdog_times_heads_idleness_and_nothing_in_flight() {
        let limits = ServerLimits::default();
        let state = Arc::new(ConnState::new());
        let (at, reason) = state.deadline(&limits).unwrap_or((state.start, "none"));
        assert_eq!(
            (at, reason),
            (state.start + limits.header_timeout, "header_timeout")
        );
        let busy = Busy::start(state.clone());
        state.on_read();
        assert_eq!(state.deadline(&limits), None, "a request is in flight");
        drop(busy);
        assert_eq!(
            state.deadline(&limits).map(|d| d.1),
            Some("idle_timeout"),
            "the body's bytes do not start a head"
        );
        state.on_read();
        assert_eq!(state.deadline(&limits).map(|d| d.1), Some("header_timeout"));
    }
}
