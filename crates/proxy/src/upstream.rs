//! Connections to members: plain TCP or TLS, direct or through a forward proxy, each with
//! its own read buffer; kept alive between requests in per-worker idle lists that live in
//! the member's state (so they survive config swaps) and are only ever touched by the
//! worker whose runtime owns their sockets.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::iobuf::IoBuf;
use crate::snapshot::{MemberRt, ProxyRt, Target, UpstreamRt};

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
    settings: Arc<UpstreamRt>,
    idle_since: Instant,
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
    fn take(&self, settings: &Arc<UpstreamRt>) -> Option<UpConn> {
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

#[derive(Debug)]
pub enum ConnectError {
    Timeout,
    Io(std::io::Error),
    Tls(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Timeout => f.write_str("connect timed out"),
            ConnectError::Io(e) => write!(f, "connect failed: {e}"),
            ConnectError::Tls(e) => write!(f, "TLS to the member failed: {e}"),
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

/// A connection to the member: one of this worker's idle ones if any, else a new one
/// (through its forward proxy and with TLS, as its settings say).
pub(crate) async fn acquire(member: &MemberRt, timeout: Duration) -> Result<UpConn, ConnectError> {
    if let Some(c) = member.state.idle.take(&member.upstream) {
        return Ok(c);
    }
    let io = open(member, timeout).await?;
    Ok(UpConn {
        io,
        buf: IoBuf::new(),
        settings: member.upstream.clone(),
        idle_since: Instant::now(),
        reused: false,
    })
}

/// A new transport to the member.
pub(crate) async fn open(member: &MemberRt, timeout: Duration) -> Result<UpIo, ConnectError> {
    let stream = match &member.upstream.proxy {
        None => connect_tcp(&member.target, timeout).await?,
        Some(proxy) => {
            let stream = connect_tcp(&proxy.target, timeout).await?;
            if member.upstream.tls.is_some() {
                // TLS to the member goes through a tunnel; plain HTTP uses absolute-form
                // requests on the proxy connection itself.
                tokio::time::timeout(timeout, tunnel(stream, &member.authority, proxy))
                    .await
                    .map_err(|_| ConnectError::Timeout)??
            } else {
                stream
            }
        }
    };
    match &member.upstream.tls {
        None => Ok(UpIo::Plain(stream)),
        Some(Err(e)) => Err(ConnectError::Tls(e.clone())),
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
            Ok(UpIo::Tls(Box::new(tls)))
        }
    }
}

/// Opens a CONNECT tunnel to `authority` through a forward proxy.
async fn tunnel(
    mut stream: TcpStream,
    authority: &str,
    proxy: &ProxyRt,
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
