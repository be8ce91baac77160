//! A capture backend: a raw HTTP/1.1 server on 127.0.0.1 that records the exact bytes each
//! connection received and every complete request it parsed from them (framing by
//! Content-Length or chunked, decoded by itself), and answers each request in turn, so
//! pipelined requests get one answer each.
//!
//! By default a request is answered `200` with the body `"<METHOD> <target>"`; queued
//! [`Answer::Raw`]s are sent instead, one per request, for responses that lie.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::raw::decode_chunked;

/// One complete request as the backend parsed it.
#[derive(Clone, Debug)]
pub struct Captured {
    /// Index of the connection it came on (in accept order).
    pub conn: usize,
    pub method: String,
    pub target: String,
    /// Names as received (not lowercased), in order, repeated names kept.
    pub headers: Vec<(String, String)>,
    /// The body, decoded when it came chunked.
    pub body: Vec<u8>,
    /// Whether it came chunked.
    pub chunked: bool,
    /// The request line and header lines, exactly as received.
    pub head: String,
}

impl Captured {
    /// The first value of `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.all(name).into_iter().next()
    }

    /// Every value of `name`, in order (case-insensitive).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// What to answer a request with.
#[derive(Clone, Debug)]
pub enum Answer {
    /// `200`, `Content-Length`, body `"<METHOD> <target>"`.
    Echo,
    /// These exact bytes, in one write; then close the connection if `close`.
    Raw { bytes: Vec<u8>, close: bool },
}

#[derive(Default)]
struct State {
    /// Bytes received, per connection in accept order.
    conns: Mutex<Vec<Vec<u8>>>,
    requests: Mutex<Vec<Captured>>,
    /// Answers for the next requests, in order; [`Answer::Echo`] when empty.
    answers: Mutex<VecDeque<Answer>>,
}

pub struct Capture {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Capture {
    pub async fn start() -> Capture {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind capture backend");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State::default());
        let shared = state.clone();
        let task = tokio::spawn(async move {
            // Connection tasks live in the set, so aborting this task ends them all.
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((s, _)) = listener.accept().await {
                let idx = {
                    let mut c = shared.conns.lock();
                    c.push(Vec::new());
                    c.len() - 1
                };
                conns.spawn(serve(s, idx, shared.clone()));
                while conns.try_join_next().is_some() {}
            }
        });
        Capture { addr, state, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Complete requests received so far, in order.
    pub fn requests(&self) -> Vec<Captured> {
        self.state.requests.lock().clone()
    }

    /// Bytes received so far, over all connections.
    pub fn bytes_received(&self) -> usize {
        self.state.conns.lock().iter().map(Vec::len).sum()
    }

    /// Everything each connection received, in accept order.
    pub fn raw(&self) -> Vec<Vec<u8>> {
        self.state.conns.lock().clone()
    }

    /// Answers the next request (after those already queued) with `answer`.
    pub fn answer_next(&self, answer: Answer) {
        self.state.answers.lock().push_back(answer);
    }

    /// Waits until at least `n` complete requests arrived, at most `within`.
    pub async fn wait_requests(&self, n: usize, within: Duration) -> bool {
        super::stack::eventually(within, || async { self.requests().len() >= n }).await
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.task.abort();
    }
}

enum Framing {
    None,
    Length(usize),
    Chunked,
}

struct Head {
    len: usize,
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    framing: Framing,
    expects_continue: bool,
    close: bool,
}

/// A complete request head at the start of `buf` (`Ok(None)`: not yet), or `Err` when the
/// bytes are not a request or its framing is unreadable.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, ()> {
    let mut slots = [httparse::EMPTY_HEADER; 256];
    let mut r = httparse::Request::new(&mut slots);
    let len = match r.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let headers: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let values = |name: &str| {
        headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_ascii_lowercase())
            .collect::<Vec<_>>()
    };
    let framing = if values("transfer-encoding")
        .iter()
        .any(|v| v.contains("chunked"))
    {
        Framing::Chunked
    } else if let Some(cl) = values("content-length").first() {
        Framing::Length(cl.parse().map_err(|_| ())?)
    } else {
        Framing::None
    };
    Ok(Some(Head {
        len,
        method: r.method.unwrap_or_default().to_owned(),
        target: r.path.unwrap_or_default().to_owned(),
        expects_continue: values("expect").iter().any(|v| v == "100-continue"),
        close: values("connection")
            .iter()
            .any(|v| v.split(',').any(|t| t.trim() == "close")),
        headers,
        framing,
    }))
}

/// Reads more into `buf`, recording the bytes; false when the connection ended.
async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>, idx: usize, state: &State) -> bool {
    let mut chunk = vec![0u8; 64 * 1024];
    match s.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            state.conns.lock()[idx].extend_from_slice(&chunk[..n]);
            true
        }
    }
}

async fn serve(mut s: TcpStream, idx: usize, state: Arc<State>) {
    let _ = s.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        let head = loop {
            match parse_head(&buf) {
                Ok(Some(h)) => break h,
                Ok(None) => {}
                // Not a request we can frame: drop the connection.
                Err(()) => return,
            }
            if !read_more(&mut s, &mut buf, idx, &state).await {
                return;
            }
        };
        let head_text = String::from_utf8_lossy(&buf[..head.len]).into_owned();
        buf.drain(..head.len);
        let mut sent_continue = false;
        let body = loop {
            let framed = match head.framing {
                Framing::None => Ok(Some((0, Vec::new()))),
                Framing::Length(n) => Ok((buf.len() >= n).then(|| (n, buf[..n].to_vec()))),
                Framing::Chunked => decode_chunked(&buf),
            };
            match framed {
                Ok(Some((used, body))) => {
                    buf.drain(..used);
                    break body;
                }
                Ok(None) => {}
                Err(_) => return,
            }
            if head.expects_continue && !sent_continue {
                sent_continue = true;
                if s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err() {
                    return;
                }
            }
            if !read_more(&mut s, &mut buf, idx, &state).await {
                return;
            }
        };
        let echo = format!("{} {}", head.method, head.target);
        state.requests.lock().push(Captured {
            conn: idx,
            method: head.method,
            target: head.target,
            headers: head.headers,
            body,
            chunked: matches!(head.framing, Framing::Chunked),
            head: head_text,
        });
        let answer = state.answers.lock().pop_front().unwrap_or(Answer::Echo);
        let (bytes, close) = match answer {
            Answer::Echo => (
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{echo}",
                    echo.len()
                )
                .into_bytes(),
                head.close,
            ),
            Answer::Raw { bytes, close } => (bytes, close || head.close),
        };
        if s.write_all(&bytes).await.is_err() || close {
            let _ = s.shutdown().await;
            return;
        }
    }
}
