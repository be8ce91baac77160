//! The member side of HTTP/2 listeners: hyper HTTP/1.1 client connections, pooled per
//! member in its live state (so they survive config swaps).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::snapshot::{MemberRt, UpstreamRt};
use crate::state::{Lease, MemberState};
use crate::upstream::{ConnectError, UpIo};

/// What the proxy sends upstream: the client's body streamed as is, or nothing.
pub type UpstreamBody = Either<Incoming, Empty<Bytes>>;

/// Idle connections kept per member.
const MAX_IDLE: usize = 64;
/// Idle connections older than this are dropped rather than reused: most servers close
/// idle keep-alive connections after 60 s or more, and reusing one they just closed
/// would fail a request.
const MAX_IDLE_AGE: Duration = Duration::from_secs(30);

/// An idle connection and the upstream settings it was opened under.
struct Idle {
    conn: SendRequest<UpstreamBody>,
    since: Instant,
    settings: Arc<UpstreamRt>,
}

#[derive(Default)]
pub struct IdleConnections {
    conns: Mutex<Vec<Idle>>,
}

impl IdleConnections {
    /// An idle connection opened under `settings` (same TLS checks, certificates...).
    fn take(&self, settings: &Arc<UpstreamRt>) -> Option<SendRequest<UpstreamBody>> {
        let mut conns = self.conns.lock();
        while let Some(idle) = conns.pop() {
            let same =
                Arc::ptr_eq(&idle.settings, settings) || idle.settings.source == settings.source;
            if same && idle.conn.is_ready() && idle.since.elapsed() < MAX_IDLE_AGE {
                return Some(idle.conn);
            }
        }
        None
    }

    fn put(&self, conn: SendRequest<UpstreamBody>, settings: Arc<UpstreamRt>) {
        let mut conns = self.conns.lock();
        if conns.len() < MAX_IDLE && conn.is_ready() {
            conns.push(Idle {
                conn,
                since: Instant::now(),
                settings,
            });
        }
    }
}

/// A hyper HTTP/1.1 client connection to the member: an idle one if any, else a new one.
/// The flag says whether it was reused (a reused one may have been closed by the server).
pub async fn acquire(
    member: &MemberRt,
    timeout: Duration,
) -> Result<(SendRequest<UpstreamBody>, bool), ConnectError> {
    if let Some(c) = member.state.h2_idle.take(&member.upstream) {
        return Ok((c, true));
    }
    let sender = match crate::upstream::open(member, timeout).await? {
        UpIo::Plain(s) => handshake(s).await?,
        UpIo::Tls(s) => handshake(*s).await?,
    };
    Ok((sender, false))
}

async fn handshake<S>(stream: S) -> Result<SendRequest<UpstreamBody>, ConnectError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(ConnectError::Handshake)?;
    tokio::spawn(async move {
        // Ends when the member closes the connection or the last sender is dropped.
        let _ = conn.await;
    });
    Ok(sender)
}

/// A member's response body on its way to the client. When it ends, the connection goes
/// back to the member's idle pool and the in-flight lease is released; if the client goes
/// away first, both are dropped and the connection closes.
pub struct PooledBody {
    inner: Incoming,
    conn: Option<(SendRequest<UpstreamBody>, Arc<MemberState>, Arc<UpstreamRt>)>,
    _lease: Option<Lease>,
}

impl PooledBody {
    pub fn new(
        inner: Incoming,
        conn: SendRequest<UpstreamBody>,
        state: Arc<MemberState>,
        settings: Arc<UpstreamRt>,
        lease: Lease,
        keep_alive: bool,
    ) -> Self {
        let conn = keep_alive.then_some((conn, state, settings));
        let mut body = PooledBody {
            inner,
            conn,
            _lease: Some(lease),
        };
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    fn release(&mut self) {
        if let Some((conn, state, settings)) = self.conn.take() {
            state.h2_idle.put(conn, settings);
        }
        self._lease = None;
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => {
                this.conn = None;
                this._lease = None;
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What the proxy answers clients with: a member's body, or its own short message.
pub type ResponseBody = Either<PooledBody, Full<Bytes>>;
