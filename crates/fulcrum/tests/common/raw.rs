//! A raw HTTP/1.1 client: exact bytes out, responses parsed from exact bytes in, and a way
//! to tell whether the server closed the connection. Every read has a deadline.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long a response may take to arrive before [`RawConn::response`] gives up.
pub const RESPONSE_DEADLINE: Duration = Duration::from_secs(10);

/// One response as the client read it.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// The status line and header lines, as received.
    pub head: String,
    /// Names lowercased, in order, repeated names kept.
    pub headers: Vec<(String, String)>,
    /// The body (decoded when chunked; what arrived, when `complete` is false).
    pub body: Vec<u8>,
    /// Whether the body ended as its framing said (false: the connection closed first).
    pub complete: bool,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What a read found.
enum Read {
    Data,
    Closed,
    Reset(String),
    TimedOut,
}

/// A client connection that sends raw bytes and parses what comes back.
pub struct RawConn<S = TcpStream> {
    pub stream: S,
    buf: Vec<u8>,
}

impl RawConn<TcpStream> {
    /// Connects to 127.0.0.1:`port` (TCP_NODELAY, so each write leaves at once).
    pub async fn connect(port: u16) -> RawConn<TcpStream> {
        let s = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to the listener");
        s.set_nodelay(true).expect("nodelay");
        RawConn::new(s)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawConn<S> {
    pub fn new(stream: S) -> RawConn<S> {
        RawConn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes `bytes` in one call. An error (the server closed first) is returned, not a
    /// panic: a server may answer and close before reading everything.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Bytes read but not yet consumed by [`RawConn::response`].
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    async fn read_more(&mut self, deadline: Instant) -> Read {
        let mut chunk = vec![0u8; 64 * 1024];
        match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
            Err(_) => Read::TimedOut,
            Ok(Ok(0)) => Read::Closed,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Read::Data
            }
            Ok(Err(e)) => Read::Reset(e.to_string()),
        }
    }

    /// Reads one response (an interim 1xx counts as one). `Err` says what came instead: the
    /// connection closed or was reset before a whole head, nothing within
    /// [`RESPONSE_DEADLINE`], or bytes that are not a response.
    pub async fn response(&mut self) -> Result<RawResponse, String> {
        self.response_within(RESPONSE_DEADLINE).await
    }

    /// [`RawConn::response`] with a deadline of `within`.
    pub async fn response_within(&mut self, within: Duration) -> Result<RawResponse, String> {
        let deadline = Instant::now() + within;
        let (len, status, headers) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 128];
            let mut r = httparse::Response::new(&mut slots);
            match r.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let headers: Vec<(String, String)> = r
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_ascii_lowercase(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect();
                    break (len, r.code.unwrap_or(0), headers);
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => {
                    return Err(format!(
                        "not an HTTP/1.1 response ({e}): {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ));
                }
            }
            let got = String::from_utf8_lossy(&self.buf).into_owned();
            match self.read_more(deadline).await {
                Read::Data => {}
                Read::Closed => return Err(format!("closed before a response; got {got:?}")),
                Read::Reset(e) => {
                    return Err(format!("reset before a response ({e}); got {got:?}"));
                }
                Read::TimedOut => return Err(format!("no response in time; got {got:?}")),
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..len]).into_owned();
        self.buf.drain(..len);
        let find = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.trim().to_owned())
        };
        let chunked = find("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().ends_with("chunked"));
        let length = find("content-length").and_then(|v| v.parse::<usize>().ok());
        let no_body = (100..200).contains(&status) || status == 204 || status == 304;
        let mut response = RawResponse {
            status,
            head,
            headers,
            body: Vec::new(),
            complete: true,
        };
        if no_body {
            return Ok(response);
        }
        loop {
            let done = if chunked {
                match decode_chunked(&self.buf) {
                    Ok(Some((used, body))) => Some((used, body)),
                    Ok(None) => None,
                    Err(e) => return Err(format!("bad chunked response body: {e}")),
                }
            } else if let Some(n) = length {
                (self.buf.len() >= n).then(|| (n, self.buf[..n].to_vec()))
            } else {
                None
            };
            if let Some((used, body)) = done {
                self.buf.drain(..used);
                response.body = body;
                return Ok(response);
            }
            match self.read_more(deadline).await {
                Read::Data => {}
                Read::Closed | Read::Reset(_) => {
                    // Delimited by close (no length, not chunked), or cut short.
                    response.complete = !chunked && length.is_none();
                    response.body = std::mem::take(&mut self.buf);
                    return Ok(response);
                }
                Read::TimedOut => {
                    return Err(format!(
                        "response body incomplete after {within:?}: {} {:?}",
                        response.head,
                        String::from_utf8_lossy(&self.buf)
                    ));
                }
            }
        }
    }

    /// Whether the server closes (or resets) the connection within `within` without
    /// sending anything more. Bytes that arrive meanwhile are kept for
    /// [`RawConn::response`] and make this false.
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        match self.read_more(Instant::now() + within).await {
            Read::Closed | Read::Reset(_) => true,
            Read::Data | Read::TimedOut => false,
        }
    }

    /// Reads until the server closes, at most `within`: everything read (pending bytes
    /// included) and whether it closed.
    pub async fn read_to_close(&mut self, within: Duration) -> (Vec<u8>, bool) {
        let deadline = Instant::now() + within;
        loop {
            match self.read_more(deadline).await {
                Read::Data => {}
                Read::Closed | Read::Reset(_) => return (std::mem::take(&mut self.buf), true),
                Read::TimedOut => return (std::mem::take(&mut self.buf), false),
            }
        }
    }
}

/// Decodes a chunked body at the start of `buf`: `Ok(None)` while incomplete, else the bytes
/// it took (trailers included) and the data.
pub fn decode_chunked(buf: &[u8]) -> Result<Option<(usize, Vec<u8>)>, String> {
    let mut pos = 0;
    let mut body = Vec::new();
    loop {
        let (used, size) = match httparse::parse_chunk_size(&buf[pos..]) {
            Ok(httparse::Status::Complete(c)) => c,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => {
                return Err(format!(
                    "invalid chunk size line at byte {pos}: {:?}",
                    String::from_utf8_lossy(&buf[pos..buf.len().min(pos + 40)])
                ));
            }
        };
        pos += used;
        if size == 0 {
            // Trailer fields, then an empty line.
            loop {
                let Some(eol) = buf[pos..].windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                pos += eol + 2;
                if eol == 0 {
                    return Ok(Some((pos, body)));
                }
            }
        }
        let size = usize::try_from(size).map_err(|_| "chunk size too large".to_owned())?;
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        pos += size;
        if &buf[pos..pos + 2] != b"\r\n" {
            return Err(format!("chunk data not followed by CRLF at byte {pos}"));
        }
        pos += 2;
    }
}
