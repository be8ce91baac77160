//! Opening connections to members: TCP, through a forward proxy (a CONNECT tunnel for
//! TLS members), and TLS; or taking one of this worker's idle ones.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::iobuf::IoBuf;
use crate::settings::{ProxyRt, Target};
use crate::snapshot::MemberRt;
use crate::upstream::{UpConn, UpIo};

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
