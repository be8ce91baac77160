//! One API client: one HTTP/1.1 keep-alive connection, reopened when it breaks.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use hyper::header::HeaderValue;
use hyper::{Method, StatusCode, Uri};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::ApiArgs;

/// Where to connect and what every request carries; cheap to clone, one per client.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `host:port` to connect to.
    addr: String,
    host: HeaderValue,
    auth: HeaderValue,
    timeout: Duration,
}

impl Endpoint {
    pub fn new(a: &ApiArgs, timeout: Duration) -> anyhow::Result<Self> {
        let (addr, host) = parse_api(&a.api)?;
        let auth = HeaderValue::from_str(&format!("Bearer {}", a.token))
            .context("the token is not a valid header value")?;
        Ok(Self {
            addr,
            host: HeaderValue::from_str(&host).context("the API's host")?,
            auth,
            timeout,
        })
    }
}

/// `http://host:port[/]` → (`host:port` to connect to, the Host header).
pub fn parse_api(api: &str) -> anyhow::Result<(String, String)> {
    let uri: Uri = api
        .parse()
        .with_context(|| format!("--api {api}: not a URL"))?;
    if uri.scheme_str() != Some("http") {
        bail!("--api {api}: only http:// is supported");
    }
    let authority = uri
        .authority()
        .ok_or_else(|| anyhow!("--api {api}: no host"))?;
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        bail!("--api {api}: give the base URL only (http://host:port)");
    }
    let port = authority.port_u16().unwrap_or(80);
    Ok((
        format!("{}:{port}", authority.host()),
        authority.as_str().to_owned(),
    ))
}

/// An answer: status, the work request that tracks the change (if any) and the body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub work_request: Option<String>,
    pub body: Bytes,
}

pub struct Client {
    ep: Endpoint,
    conn: Option<Conn>,
}

/// One open connection and what was read from it beyond the last answer.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// Headers an answer may have (fulcrum's have fewer than 20).
const MAX_HEADERS: usize = 64;

impl Client {
    pub fn new(ep: Endpoint) -> Self {
        Self { ep, conn: None }
    }

    async fn connect(&self) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(&self.ep.addr)
            .await
            .with_context(|| format!("connecting to {}", self.ep.addr))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(16 << 10),
        })
    }

    /// Sends one request (JSON body, bearer token) and reads the whole answer. A request that
    /// fails on a reused keep-alive connection (the server may have closed it meanwhile) is sent
    /// once more on a new one; a failure on a new connection, or a timeout, is returned.
    pub async fn call(&mut self, method: Method, path: &str, body: Bytes) -> anyhow::Result<Reply> {
        let reused = self.conn.is_some();
        match self.call_once(&method, path, &body).await {
            Err(e) if reused && !e.is::<tokio::time::error::Elapsed>() => {
                self.call_once(&method, path, &body).await
            }
            r => r,
        }
    }

    async fn call_once(
        &mut self,
        method: &Method,
        path: &str,
        body: &[u8],
    ) -> anyhow::Result<Reply> {
        let r = tokio::time::timeout(self.ep.timeout, self.exchange(method, path, body)).await;
        let r = match r {
            Ok(r) => r,
            Err(elapsed) => Err(anyhow::Error::new(elapsed)),
        };
        if r.is_err() {
            self.conn = None;
        }
        r
    }

    /// One request and its answer on the kept connection (or a new one). Written by hand on
    /// a plain socket, not through an HTTP client library: the churn benchmark runs this next
    /// to the proxy it measures, so every microsecond it spends is taken from the proxy.
    /// Answers must carry a Content-Length (fulcrum's API always does).
    async fn exchange(
        &mut self,
        method: &Method,
        path: &str,
        body: &[u8],
    ) -> anyhow::Result<Reply> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => self.connect().await?,
        };
        let mut request = Vec::with_capacity(256 + body.len());
        for part in [
            method.as_str().as_bytes(),
            b" ",
            path.as_bytes(),
            b" HTTP/1.1\r\nhost: ",
            self.ep.host.as_bytes(),
            b"\r\nauthorization: ",
            self.ep.auth.as_bytes(),
            b"\r\ncontent-type: application/json\r\ncontent-length: ",
            body.len().to_string().as_bytes(),
            b"\r\n\r\n",
            body,
        ] {
            request.extend_from_slice(part);
        }
        conn.stream.write_all(&request).await?;

        conn.buf.clear();
        let (status, work_request, head_len, body_len, close) = loop {
            if conn.buf.len() == conn.buf.capacity() {
                conn.buf.reserve(conn.buf.len());
            }
            if conn.stream.read_buf(&mut conn.buf).await? == 0 {
                bail!("the connection closed before a whole answer head");
            }
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            let httparse::Status::Complete(head_len) = response.parse(&conn.buf)? else {
                continue;
            };
            let status = StatusCode::from_u16(response.code.unwrap_or(0))?;
            let mut body_len = None;
            let mut work_request = None;
            let mut close = false;
            for h in response.headers.iter() {
                if h.name.eq_ignore_ascii_case("content-length") {
                    body_len = Some(std::str::from_utf8(h.value)?.trim().parse::<usize>()?);
                } else if h.name.eq_ignore_ascii_case("x-work-request-id") {
                    work_request = Some(String::from_utf8_lossy(h.value).into_owned());
                } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    bail!("a chunked answer (only Content-Length is read)");
                } else if h.name.eq_ignore_ascii_case("connection") {
                    close = h.value.eq_ignore_ascii_case(b"close");
                }
            }
            let body_len = body_len.ok_or_else(|| anyhow!("an answer without Content-Length"))?;
            break (status, work_request, head_len, body_len, close);
        };
        while conn.buf.len() < head_len + body_len {
            conn.buf.reserve(head_len + body_len - conn.buf.len());
            if conn.stream.read_buf(&mut conn.buf).await? == 0 {
                bail!("the connection closed in the middle of an answer body");
            }
        }
        let body = Bytes::copy_from_slice(&conn.buf[head_len..head_len + body_len]);
        if !close {
            self.conn = Some(conn);
        }
        Ok(Reply {
            status,
            work_request,
            body,
        })
    }

    /// A call that must succeed: a non-2xx answer is an error with the body in it. Waits for
    /// the work request the answer names, if any, to end SUCCEEDED. Returns the JSON body.
    pub async fn must(
        &mut self,
        method: Method,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let reply = self
            .call(method.clone(), path, Bytes::from(body.to_string()))
            .await
            .with_context(|| format!("{method} {path}"))?;
        if !reply.status.is_success() {
            bail!(
                "{method} {path} -> {}: {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            );
        }
        let parsed: serde_json::Value = serde_json::from_slice(&reply.body)
            .with_context(|| format!("{method} {path}: the answer is not JSON"))?;
        if let Some(wr) = reply.work_request {
            self.wait(&wr).await?;
        }
        Ok(parsed)
    }

    async fn wait(&mut self, wr: &str) -> anyhow::Result<()> {
        let path = format!("/v1/work-requests/{wr}/wait?timeout_ms=30000");
        let reply = self
            .call(Method::GET, &path, Bytes::new())
            .await
            .with_context(|| format!("waiting for work request {wr}"))?;
        let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_default();
        match body.get("status").and_then(|s| s.as_str()) {
            Some("SUCCEEDED") => Ok(()),
            _ => bail!(
                "work request {wr} did not succeed ({}): {body}",
                reply.status
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers read whole across short reads, on one kept connection, and a new connection
    /// once the server says `Connection: close`.
    #[tokio::test]
    async fn answers_come_whole_and_connections_are_kept_until_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut accepted = 0;
            for close_after in [2, 1] {
                let (mut s, _) = listener.accept().await.unwrap();
                s.set_nodelay(true).unwrap();
                accepted += 1;
                let mut buf = vec![0u8; 4096];
                for i in 0..close_after {
                    let n = s.read(&mut buf).await.unwrap();
                    let text = String::from_utf8_lossy(&buf[..n]).to_string();
                    assert!(text.starts_with("PATCH /v1/x HTTP/1.1\r\n"), "{text}");
                    assert!(text.contains("authorization: Bearer t\r\n"), "{text}");
                    assert!(text.ends_with("\r\n\r\n{\"weight\":2}"), "{text}");
                    let last = i + 1 == close_after;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nx-work-request-id: wr-{accepted}-{i}\r\n{}content-length: 11\r\n\r\n",
                        if last && close_after == 1 {
                            "connection: close\r\n"
                        } else {
                            ""
                        }
                    );
                    // Head and body in pieces, as a slow server would send them.
                    s.write_all(head.as_bytes()).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    s.write_all(b"{\"ok\":").await.unwrap();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    s.write_all(b"true}").await.unwrap();
                }
            }
        });
        let ep = Endpoint::new(
            &ApiArgs {
                api: format!("http://{addr}"),
                token: "t".into(),
            },
            Duration::from_secs(5),
        )
        .unwrap();
        let mut client = Client::new(ep);
        for expected in ["wr-1-0", "wr-1-1", "wr-2-0"] {
            let reply = client
                .call(
                    Method::PATCH,
                    "/v1/x",
                    Bytes::from_static(b"{\"weight\":2}"),
                )
                .await
                .unwrap();
            assert_eq!(reply.status, StatusCode::OK);
            assert_eq!(reply.work_request.as_deref(), Some(expected));
            assert_eq!(&reply.body[..], b"{\"ok\":true}");
        }
        assert!(client.conn.is_none(), "kept a connection the server closed");
        server.await.unwrap();
    }

    #[test]
    fn api_urls() {
        assert_eq!(
            parse_api("http://127.0.0.1:9000").unwrap(),
            ("127.0.0.1:9000".into(), "127.0.0.1:9000".into())
        );
        assert_eq!(
            parse_api("http://localhost/").unwrap(),
            ("localhost:80".into(), "localhost".into())
        );
        assert_eq!(parse_api("http://[::1]:81").unwrap().0, "[::1]:81");
        assert!(parse_api("https://127.0.0.1:9000").is_err());
        assert!(parse_api("http://127.0.0.1:9000/v1").is_err());
        assert!(parse_api("127.0.0.1:9000").is_err());
    }
}
