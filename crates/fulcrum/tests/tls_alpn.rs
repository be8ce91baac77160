//! ALPN decides the protocol on a TERMINATED_HTTPS listener: a client that negotiated h2
//! and then speaks HTTP/1.1 gets no HTTP/1.1 answer (a GOAWAY with PROTOCOL_ERROR, or at
//! least a close); http/1.1, or no ALPN at all, is served as HTTP/1.1; a real h2 client is
//! served as HTTP/2.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::backend::Backend;
use common::raw::RawConn;
use common::stack::Stack;
use common::tls::{Cert, cert, listener_tls, tls_connect};
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;

const NAME: &str = "alpn.test";

async fn stack(backend: &Backend) -> (Stack, Cert) {
    let c = cert(&[NAME]);
    let s = Stack::with(
        "ROUND_ROBIN",
        &[(backend.port(), json!({}))],
        "TERMINATED_HTTPS",
        listener_tls(&c),
    )
    .await;
    (s, c)
}

/// HTTP/2 frames in `bytes`: (type, payload), up to the first incomplete one.
fn frames(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 9 <= bytes.len() {
        let len = u32::from_be_bytes([0, bytes[pos], bytes[pos + 1], bytes[pos + 2]]) as usize;
        let kind = bytes[pos + 3];
        if pos + 9 + len > bytes.len() {
            break;
        }
        out.push((kind, bytes[pos + 9..pos + 9 + len].to_vec()));
        pos += 9 + len;
    }
    out
}

const GOAWAY: u8 = 0x7;
const PROTOCOL_ERROR: u32 = 0x1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_bytes_after_h2_was_negotiated_get_no_http1_answer() {
    let a = Backend::start("a").await;
    let (s, c) = stack(&a).await;
    let tls = tls_connect(s.port, NAME, &c.der, &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut conn = RawConn::new(tls);
    let _ = conn
        .send(b"GET / HTTP/1.1\r\nHost: alpn.test\r\n\r\n")
        .await;
    let (bytes, closed) = conn.read_to_close(Duration::from_secs(5)).await;
    assert!(
        !bytes.windows(8).any(|w| w == b"HTTP/1.1"),
        "an HTTP/1.1 answer on an h2 connection: {:?}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(closed, "the connection stayed open: {bytes:?}");
    let goaways: Vec<u32> = frames(&bytes)
        .into_iter()
        .filter(|(kind, payload)| *kind == GOAWAY && payload.len() >= 8)
        .map(|(_, p)| u32::from_be_bytes([p[4], p[5], p[6], p[7]]))
        .collect();
    assert!(
        goaways.iter().all(|code| *code == PROTOCOL_ERROR),
        "GOAWAY error codes {goaways:?}, expected PROTOCOL_ERROR"
    );
    assert_eq!(a.requests(), 0, "the member was not asked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_by_alpn_or_without_alpn_is_served() {
    let a = Backend::start("a").await;
    let (s, c) = stack(&a).await;
    for alpn in [&[&b"http/1.1"[..]][..], &[]] {
        let tls = tls_connect(s.port, NAME, &c.der, alpn).await;
        let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        assert_eq!(
            negotiated.as_deref(),
            alpn.first().copied(),
            "ALPN {alpn:?}"
        );
        let mut conn = RawConn::new(tls);
        for _ in 0..2 {
            conn.send(b"GET / HTTP/1.1\r\nHost: alpn.test\r\n\r\n")
                .await
                .expect("send");
            let r = conn.response().await.expect("an HTTP/1.1 answer");
            assert!(
                r.head.starts_with("HTTP/1.1 200 "),
                "ALPN {alpn:?}: {}",
                r.head
            );
            assert_eq!(r.body_text(), "a");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_by_alpn_is_served() {
    let a = Backend::start("a").await;
    let (s, c) = stack(&a).await;
    let tls = tls_connect(s.port, NAME, &c.der, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    for i in 0..3 {
        let req = Request::get(format!("https://{NAME}/h2/{i}"))
            .body(Empty::<Bytes>::new())
            .expect("request");
        let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
            .await
            .expect("an answer in time")
            .expect("an h2 answer");
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"a");
    }
    assert_eq!(a.last_uri().as_deref(), Some("/h2/2"));
}
