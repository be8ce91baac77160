//! One API client: one HTTP/1.1 keep-alive connection, reopened when it breaks.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
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
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl Client {
    pub fn new(ep: Endpoint) -> Self {
        Self { ep, conn: None }
    }

    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let stream = TcpStream::connect(&self.ep.addr)
            .await
            .with_context(|| format!("connecting to {}", self.ep.addr))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // Ends when the connection closes; the next request then fails and reconnects.
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Sends one request (JSON body, bearer token) and reads the whole answer. A request that
    /// fails on a reused keep-alive connection (the server may have closed it meanwhile) is sent
    /// once more on a new one; a failure on a new connection, or a timeout, is returned.
    pub async fn call(&mut self, method: Method, path: &str, body: Bytes) -> anyhow::Result<Reply> {
        let reused = self.conn.as_ref().is_some_and(|c| !c.is_closed());
        match self.call_once(method.clone(), path, body.clone()).await {
            Err(e) if reused && !e.is::<tokio::time::error::Elapsed>() => {
                self.call_once(method, path, body).await
            }
            r => r,
        }
    }

    async fn call_once(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
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

    async fn exchange(&mut self, method: Method, path: &str, body: Bytes) -> anyhow::Result<Reply> {
        let mut sender = match self.conn.take() {
            Some(c) if !c.is_closed() => c,
            _ => self.connect().await?,
        };
        sender.ready().await?;
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.ep.host.clone())
            .header(AUTHORIZATION, self.ep.auth.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(Full::new(body))?;
        let resp = sender.send_request(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        self.conn = Some(sender);
        Ok(Reply {
            status: parts.status,
            work_request: parts
                .headers
                .get("x-work-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
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
