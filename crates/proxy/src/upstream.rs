//! Connections to members: keep-alive HTTP/1.1 connections pooled per member (in the
//! member's live state, so they survive config swaps), plus plain TCP connects.

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
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::snapshot::{MemberRt, Target};
use crate::state::{Lease, MemberState};

/// What the proxy sends upstream: the client's body streamed as is, or nothing.
pub type UpstreamBody = Either<Incoming, Empty<Bytes>>;

/// Idle connections kept per member.
const MAX_IDLE: usize = 64;
/// Idle connections older than this are dropped rather than reused: most servers close
/// idle keep-alive connections after 60 s or more, and reusing one they just closed
/// would fail a request.
const MAX_IDLE_AGE: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct IdleConnections {
    conns: Mutex<Vec<(SendRequest<UpstreamBody>, Instant)>>,
}

impl IdleConnections {
    fn take(&self) -> Option<SendRequest<UpstreamBody>> {
        let mut conns = self.conns.lock();
        while let Some((c, since)) = conns.pop() {
            if c.is_ready() && since.elapsed() < MAX_IDLE_AGE {
                return Some(c);
            }
        }
        None
    }

    fn put(&self, c: SendRequest<UpstreamBody>) {
        let mut conns = self.conns.lock();
        if conns.len() < MAX_IDLE && c.is_ready() {
            conns.push((c, Instant::now()));
        }
    }
}

#[derive(Debug)]
pub enum ConnectError {
    Timeout,
    Io(std::io::Error),
    Handshake(hyper::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Timeout => f.write_str("connect timed out"),
            ConnectError::Io(e) => write!(f, "connect failed: {e}"),
            ConnectError::Handshake(e) => write!(f, "handshake failed: {e}"),
        }
    }
}

/// Opens a TCP connection to a member.
pub async fn connect_tcp(target: &Target, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let attempt = async {
        match target {
            Target::Addr(a) => TcpStream::connect(a).await,
            Target::Host(h, p) => TcpStream::connect((h.as_str(), *p)).await,
        }
    };
    let stream = tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| ConnectError::Timeout)?
        .map_err(ConnectError::Io)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// An HTTP/1.1 connection to the member: an idle one if any, else a new one.
/// The flag says whether it was reused (a reused one may have been closed by the server).
pub async fn acquire(
    member: &MemberRt,
    timeout: Duration,
) -> Result<(SendRequest<UpstreamBody>, bool), ConnectError> {
    if let Some(c) = member.state.idle.take() {
        return Ok((c, true));
    }
    let stream = connect_tcp(&member.target, timeout).await?;
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(ConnectError::Handshake)?;
    tokio::spawn(async move {
        // Ends when the member closes the connection or the last sender is dropped.
        let _ = conn.await;
    });
    Ok((sender, false))
}

/// A member's response body on its way to the client. When it ends, the connection goes
/// back to the member's idle pool and the in-flight lease is released; if the client goes
/// away first, both are dropped and the connection closes.
pub struct PooledBody {
    inner: Incoming,
    conn: Option<(SendRequest<UpstreamBody>, Arc<MemberState>)>,
    _lease: Option<Lease>,
}

impl PooledBody {
    pub fn new(
        inner: Incoming,
        conn: SendRequest<UpstreamBody>,
        state: Arc<MemberState>,
        lease: Lease,
        keep_alive: bool,
    ) -> Self {
        let conn = keep_alive.then_some((conn, state));
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
        if let Some((conn, state)) = self.conn.take() {
            state.idle.put(conn);
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
