//! A test-only driver: serves one connection with `ServerConn` over any async stream, and
//! answers each request with a body of the size it asks for (`x-size`), reporting how much
//! request body it received (`x-received`).

#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // test support may panic

use std::collections::HashMap;
use std::sync::OnceLock;

use fulcrum_h2::{ErrorCode, Event, ServerConn, Settings};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Response bodies are slices of this pattern.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Every byte a field value may hold inside it (tab and space not at its edges): sent
/// through the client's Huffman coder, it exercises most of the decoder's code table.
pub fn every_value_byte() -> Vec<u8> {
    let mut v = vec![b'!', b'\t'];
    v.extend(0x20..=0x7e);
    v.extend(0x80..=0xff);
    v
}

#[derive(Default, Debug)]
pub struct Log {
    pub requests: Vec<(u32, String)>,
    pub resets: Vec<(u32, ErrorCode, bool)>,
    pub trailers: Vec<(u32, Vec<(String, String)>)>,
    pub goaway: Vec<ErrorCode>,
    pub error: Option<String>,
}

struct StreamState {
    path: String,
    size: usize,
    received: usize,
}

/// Serves one connection until the client closes it (or, after a GOAWAY, until it is idle).
pub async fn serve<S: AsyncRead + AsyncWrite>(io: S, settings: Settings) -> Log {
    serve_sized(io, settings, 0).await
}

/// As [`serve`], answering requests without `x-size` with `default_size` bytes.
pub async fn serve_sized<S: AsyncRead + AsyncWrite>(
    io: S,
    settings: Settings,
    default_size: usize,
) -> Log {
    static BODY: OnceLock<Vec<u8>> = OnceLock::new();
    let body = BODY.get_or_init(|| pattern(4 << 20));
    let (mut rd, mut wr) = tokio::io::split(io);
    let mut conn = ServerConn::new(settings);
    let mut log = Log::default();
    let mut streams: HashMap<u32, StreamState> = HashMap::new();
    // Responses being sent: stream -> (offset, size).
    let mut sending: HashMap<u32, (usize, usize)> = HashMap::new();
    let mut buf = Vec::new();
    let mut tmp = vec![0u8; 8192];
    let mut going_away = false;
    loop {
        // Send what the windows allow, then flush everything queued.
        sending.retain(|&id, (off, size)| {
            let n = conn.send_data(id, &body[*off..*size], true);
            *off += n;
            *off < *size && conn.can_send(id)
        });
        let out = conn.output().to_vec();
        if !out.is_empty() {
            if wr.write_all(&out).await.is_err() {
                return log;
            }
            conn.consume_output(out.len());
        }
        if log.error.is_some() || (going_away && conn.is_idle()) {
            let _ = wr.shutdown().await;
            return log;
        }
        let n = match rd.read(&mut tmp).await {
            Ok(0) | Err(_) => return log,
            Ok(n) => n,
        };
        buf.extend_from_slice(&tmp[..n]);
        let mut at = 0;
        loop {
            let (used, event) = match conn.receive(&buf[at..]) {
                Ok(r) => r,
                Err(e) => {
                    log.error = Some(format!("{e:?}"));
                    break;
                }
            };
            let input = &buf[at..];
            at += used;
            let mut respond = None;
            match event {
                Event::NeedMore => break,
                Event::Request { stream, end_stream } => {
                    let head = conn.head();
                    let path = String::from_utf8_lossy(head.path().unwrap_or(b"")).into_owned();
                    let size = head
                        .fields()
                        .find(|(n, _)| *n == b"x-size")
                        .map_or(default_size, |(_, v)| {
                            std::str::from_utf8(v).unwrap().parse().unwrap()
                        });
                    let cookies: Vec<&[u8]> = head.cookies().collect();
                    if !cookies.is_empty() && cookies != [&b"a=1"[..], b"b=2"] {
                        log.error = Some(format!("cookies: {cookies:?}"));
                    }
                    if let Some((_, v)) = head.fields().find(|(n, _)| *n == b"x-all")
                        && v != every_value_byte()
                    {
                        log.error = Some(format!("x-all: {v:?}"));
                    }
                    log.requests.push((stream, path.clone()));
                    if path == "/goaway" {
                        conn.send_goaway(ErrorCode::NO_ERROR);
                        going_away = true;
                    }
                    streams.insert(
                        stream,
                        StreamState {
                            path,
                            size,
                            received: 0,
                        },
                    );
                    if end_stream {
                        respond = Some(stream);
                    }
                }
                Event::Data {
                    stream,
                    data,
                    end_stream,
                } => {
                    let len = input[data].len();
                    conn.release(stream, len);
                    if let Some(s) = streams.get_mut(&stream) {
                        s.received += len;
                    }
                    if end_stream {
                        respond = Some(stream);
                    }
                }
                Event::Trailers { stream } => {
                    let fields = conn
                        .head()
                        .fields()
                        .map(|(n, v)| {
                            (
                                String::from_utf8_lossy(n).into_owned(),
                                String::from_utf8_lossy(v).into_owned(),
                            )
                        })
                        .collect();
                    log.trailers.push((stream, fields));
                    respond = Some(stream);
                }
                Event::StreamReset {
                    stream,
                    code,
                    remote,
                } => {
                    streams.remove(&stream);
                    sending.remove(&stream);
                    log.resets.push((stream, code, remote));
                }
                Event::GoAway { code, .. } => log.goaway.push(code),
                Event::WindowOpened { .. } | Event::Nothing | Event::Rejected { .. } => {}
            }
            if let Some(id) = respond
                && let Some(s) = streams.remove(&id)
            {
                let received = s.received.to_string();
                let fields: [(&[u8], &[u8]); 3] = [
                    (b"X-Received", received.as_bytes()),
                    (b"X-Path", s.path.as_bytes()),
                    (b"Content-Type", b"application/octet-stream"),
                ];
                assert!(conn.send_headers(id, 200, fields, s.size == 0));
                if s.size > 0 {
                    sending.insert(id, (0, s.size));
                }
            }
        }
        buf.drain(..at);
    }
}
