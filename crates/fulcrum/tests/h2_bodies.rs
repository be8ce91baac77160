//! HTTP/2 bodies both ways through fulcrum to an HTTP/1.1 member: uploads with and without a
//! length (sent on chunked), and responses larger than HTTP/2's flow-control windows, framed
//! by length or chunked. A real h2c client (hyper), the capture backend as the member.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::capture::{Answer, Capture};
use common::stack::Stack;
use futures_util::stream;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpStream;

type BoxBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

async fn h2c(stack: &Stack) -> hyper::client::conn::http2::SendRequest<BoxBody> {
    let stream = TcpStream::connect(stack.addr()).await.expect("connect");
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, BoxBody>(TokioIo::new(stream))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    sender
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

async fn send(
    sender: &mut hyper::client::conn::http2::SendRequest<BoxBody>,
    stack: &Stack,
    method: &str,
    body: BoxBody,
) -> (u16, Bytes) {
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("{}/upload", stack.url))
        .body(body)
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(20), sender.send_request(req))
        .await
        .expect("answered in time")
        .expect("h2 request");
    let status = resp.status().as_u16();
    let body = tokio::time::timeout(Duration::from_secs(20), resp.into_body().collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_with_and_without_a_length_reach_the_member_whole() {
    let member = Capture::start().await;
    let stack = Stack::with(
        "ROUND_ROBIN",
        &[(member.port(), json!({}))],
        "HTTP",
        json!({}),
    )
    .await;
    let mut sender = h2c(&stack).await;

    // With a length: the member gets the same Content-Length and the bytes.
    let data = payload(300_000);
    let (status, _) = send(
        &mut sender,
        &stack,
        "PUT",
        Full::new(Bytes::from(data.clone())).boxed(),
    )
    .await;
    assert_eq!(status, 200);
    // Without one (a stream of frames of unknown total): sent on chunked.
    let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = data
        .chunks(7_000)
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let (status, _) = send(
        &mut sender,
        &stack,
        "POST",
        StreamBody::new(stream::iter(chunks)).boxed(),
    )
    .await;
    assert_eq!(status, 200);

    assert!(member.wait_requests(2, Duration::from_secs(5)).await);
    let seen = member.requests();
    assert_eq!(seen[0].method, "PUT");
    assert_eq!(seen[0].header("content-length"), Some("300000"));
    assert!(!seen[0].chunked);
    assert!(seen[0].body == data, "the PUT body arrived changed");
    assert_eq!(seen[1].method, "POST");
    assert!(seen[1].chunked, "a body of unknown length goes chunked");
    assert_eq!(seen[1].header("content-length"), None);
    assert!(seen[1].body == data, "the POST body arrived changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_responses_arrive_whole_by_length_and_chunked() {
    let member = Capture::start().await;
    let stack = Stack::with(
        "ROUND_ROBIN",
        &[(member.port(), json!({}))],
        "HTTP",
        json!({}),
    )
    .await;
    let mut sender = h2c(&stack).await;
    let data = payload(1_000_000);

    // Larger than the client's 64 KiB stream window: fulcrum must wait for window updates.
    let mut by_length =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", data.len()).into_bytes();
    by_length.extend_from_slice(&data);
    member.answer_next(Answer::Raw {
        bytes: by_length,
        close: false,
    });
    let (status, body) = send(&mut sender, &stack, "GET", Full::new(Bytes::new()).boxed()).await;
    assert_eq!(status, 200);
    assert_eq!(body.len(), data.len());
    assert!(body == data, "the length-framed response arrived changed");

    // Chunked from the member: HTTP/2 has no chunks, the client gets the data alone.
    let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for c in data.chunks(10_000) {
        chunked.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        chunked.extend_from_slice(c);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    member.answer_next(Answer::Raw {
        bytes: chunked,
        close: false,
    });
    let (status, body) = send(&mut sender, &stack, "GET", Full::new(Bytes::new()).boxed()).await;
    assert_eq!(status, 200);
    assert!(body == data, "the chunked response arrived changed");

    // The member connection stayed usable: a plain request after both still works.
    let (status, body) = send(&mut sender, &stack, "GET", Full::new(Bytes::new()).boxed()).await;
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"GET /upload");
}

/// Many streams at once on one connection each get their own answer; a stream the client
/// resets half-way through a large response leaves the connection serving; cookie crumbs
/// (HTTP/2 sends each cookie as its own field) reach the HTTP/1.1 member as one field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_a_reset_one_and_cookie_crumbs() {
    let member = Capture::start().await;
    let stack = Stack::with(
        "ROUND_ROBIN",
        &[(member.port(), json!({}))],
        "HTTP",
        json!({}),
    )
    .await;
    let sender = h2c(&stack).await;

    let requests = (0..100).map(|i| {
        let mut sender = sender.clone();
        let url = format!("{}/stream/{i}", stack.url);
        async move {
            let req = hyper::Request::get(url)
                .body(Full::new(Bytes::new()).boxed())
                .expect("request");
            let resp = sender.send_request(req).await.expect("h2 request");
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            (i, status, body)
        }
    });
    let answers = tokio::time::timeout(
        Duration::from_secs(20),
        futures_util::future::join_all(requests),
    )
    .await
    .expect("all answered in time");
    for (i, status, body) in answers {
        assert_eq!(status, 200);
        assert_eq!(
            body,
            format!("GET /stream/{i}"),
            "stream {i} got another's answer"
        );
    }

    // A large response the client stops reading and resets after its first bytes.
    let data = payload(2_000_000);
    let mut big = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", data.len()).into_bytes();
    big.extend_from_slice(&data);
    member.answer_next(Answer::Raw {
        bytes: big,
        close: false,
    });
    let mut s = sender.clone();
    let req = hyper::Request::get(format!("{}/big", stack.url))
        .body(Full::new(Bytes::new()).boxed())
        .expect("request");
    let resp = s.send_request(req).await.expect("h2 request");
    let mut body = resp.into_body();
    let first = body.frame().await.expect("a first frame").expect("data");
    assert!(first.is_data());
    drop(body); // RST_STREAM(CANCEL)

    let mut s = sender.clone();
    let req = hyper::Request::get(format!("{}/after", stack.url))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Full::new(Bytes::new()).boxed())
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(10), s.send_request(req))
        .await
        .expect("answered after the reset")
        .expect("h2 request");
    assert_eq!(resp.status(), 200);
    let seen = member.requests();
    let after = seen
        .iter()
        .find(|r| r.target == "/after")
        .expect("the member got /after");
    assert_eq!(after.all("cookie"), ["a=1; b=2"]);
}
