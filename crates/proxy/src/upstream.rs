//! Connections to members: plain TCP or TLS, each with its own read buffer; kept alive
//! between requests in per-worker idle lists that live in the member's state (so they
//! survive config swaps) and are only ever touched by the worker whose runtime owns their
//! sockets. `connect.rs` opens them.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::iobuf::IoBuf;
use crate::settings::UpstreamRt;

/// Idle connections kept per member and worker.
const MAX_IDLE: usize = 64;
/// Idle connections older than this are dropped rather than reused: most servers close
/// idle keep-alive connections after 60 s or more, and reusing one they just closed
/// would fail a request.
const MAX_IDLE_AGE: Duration = Duration::from_secs(30);

/// A member connection's transport.
pub(crate) enum UpIo {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl UpIo {
    /// The socket, when bytes written go to it as they are (not TLS).
    pub(crate) fn socket(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        match self {
            UpIo::Plain(s) => Some(s.as_raw_fd()),
            UpIo::Tls(_) => None,
        }
    }
}

impl AsyncRead for UpIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpIo::Plain(s) => s.is_write_vectored(),
            UpIo::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One connection to a member, with the settings it was opened under.
pub(crate) struct UpConn {
    pub io: UpIo,
    pub buf: IoBuf,
    pub settings: Arc<UpstreamRt>,
    pub idle_since: Instant,
    /// Taken from the idle list: the member may have closed it meanwhile.
    pub reused: bool,
}

impl UpConn {
    /// Whether an idle connection still looks usable: no end of stream and no stray bytes
    /// reported by the reactor. A read polled with a no-op waker costs no system call unless
    /// the socket became readable, which is exactly the case to catch.
    fn looks_alive(&mut self) -> bool {
        let mut probe = [0u8; 1];
        let mut rb = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        matches!(
            Pin::new(&mut self.io).poll_read(&mut cx, &mut rb),
            Poll::Pending
        )
    }
}

/// A member's idle connections, one list per worker.
pub(crate) struct IdlePool {
    per_worker: Box<[Mutex<Vec<UpConn>>]>,
}

impl IdlePool {
    pub fn new(workers: usize) -> IdlePool {
        IdlePool {
            per_worker: (0..workers).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    fn slot(&self) -> Option<&Mutex<Vec<UpConn>>> {
        self.per_worker.get(crate::worker::current()?)
    }

    /// An idle connection opened under `settings` (same TLS checks, certificates...).
    pub(crate) fn take(&self, settings: &Arc<UpstreamRt>) -> Option<UpConn> {
        let mut conns = self.slot()?.lock();
        while let Some(mut c) = conns.pop() {
            let same = Arc::ptr_eq(&c.settings, settings) || c.settings.source == settings.source;
            if same && c.idle_since.elapsed() < MAX_IDLE_AGE && c.looks_alive() {
                c.reused = true;
                return Some(c);
            }
        }
        None
    }

    /// Keeps a connection whose exchange ended cleanly for the next request.
    pub fn put(&self, mut conn: UpConn) {
        if !conn.buf.is_empty() {
            // Bytes past the response: the member said more than it framed. Never reuse.
            return;
        }
        if let Some(slot) = self.slot() {
            let mut conns = slot.lock();
            if conns.len() < MAX_IDLE {
                conn.idle_since = Instant::now();
                conns.push(conn);
            }
        }
    }
}
