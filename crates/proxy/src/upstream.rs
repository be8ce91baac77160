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

use crate::snapshot::{MemberRt, Target, UpstreamRt};
use crate::state::{Lease, MemberState};

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

#[derive(Debug)]
pub enum ConnectError {
    Timeout,
    Io(std::io::Error),
    Tls(String),
    Handshake(hyper::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Timeout => f.write_str("connect timed out"),
            ConnectError::Io(e) => write!(f, "connect failed: {e}"),
            ConnectError::Tls(e) => write!(f, "TLS to the member failed: {e}"),
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
    if let Some(c) = member.state.idle.take(&member.upstream) {
        return Ok((c, true));
    }
    let stream = match &member.upstream.proxy {
        None => connect_tcp(&member.target, timeout).await?,
        Some(proxy) => {
            let stream = connect_tcp(&proxy.target, timeout).await?;
            if member.upstream.tls.is_some() {
                // TLS to the member goes through a tunnel; plain HTTP uses absolute-form
                // requests on the proxy connection itself (see `http.rs`).
                tokio::time::timeout(timeout, tunnel(stream, &member.authority, proxy))
                    .await
                    .map_err(|_| ConnectError::Timeout)??
            } else {
                stream
            }
        }
    };
    let sender = match &member.upstream.tls {
        None => handshake(stream).await?,
        Some(Err(e)) => return Err(ConnectError::Tls(e.clone())),
        Some(Ok(config)) => {
            // SNI and name checks use the member's host: its DNS name, or its address.
            let name = match &member.target {
                Target::Host(h, _) => rustls::pki_types::ServerName::try_from(h.clone())
                    .map_err(|e| ConnectError::Tls(e.to_string()))?,
                Target::Addr(a) => rustls::pki_types::ServerName::IpAddress(a.ip().into()),
            };
            let tls = tokio::time::timeout(
                timeout,
                tokio_rustls::TlsConnector::from(config.clone()).connect(name, stream),
            )
            .await
            .map_err(|_| ConnectError::Timeout)?
            .map_err(|e| ConnectError::Tls(e.to_string()))?;
            handshake(tls).await?
        }
    };
    Ok((sender, false))
}

/// Opens a CONNECT tunnel to `authority` through a forward proxy.
async fn tunnel(
    mut stream: TcpStream,
    authority: &str,
    proxy: &crate::snapshot::ProxyRt,
) -> Result<TcpStream, ConnectError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(auth) = proxy.authorization.as_ref().and_then(|a| a.to_str().ok()) {
        request.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(ConnectError::Io)?;
    // Read the proxy's answer up to the blank line, byte by byte so nothing of the
    // tunnelled stream is consumed.
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192 || stream.read(&mut byte).await.map_err(ConnectError::Io)? == 0 {
            return Err(ConnectError::Tls("the proxy closed the tunnel".into()));
        }
        head.push(byte[0]);
    }
    let status_line = String::from_utf8_lossy(&head);
    let status = status_line.split_whitespace().nth(1).unwrap_or("");
    if !status.starts_with('2') {
        let line = status_line.lines().next().unwrap_or("").to_owned();
        return Err(ConnectError::Tls(format!(
            "the proxy refused the tunnel: {line}"
        )));
    }
    Ok(stream)
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
            state.idle.put(conn, settings);
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
