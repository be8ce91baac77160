//! Request smuggling and message framing through an HTTP listener: raw bytes in over a
//! TcpStream, and for every case both what the client got (status line, whether the
//! connection closed) and what the member received, read by a capture backend that records
//! exact bytes and parses requests itself.
//!
//! A request fulcrum refuses is answered 400 (414/431 when too large), its connection is
//! closed, and the member sees none of it. Tests that hold several cases run them all and
//! list every case that failed.

mod common;

use std::time::Duration;

use common::capture::{Answer, Capture, Captured};
use common::raw::RawConn;
use common::stack::Stack;
use serde_json::json;

/// How long a refusal may take, and how long the connection then has to close.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
const CLOSE_WITHIN: Duration = Duration::from_secs(5);
/// Anything forwarded is written before the client is answered; this grace catches a
/// late write all the same.
const FORWARD_GRACE: Duration = Duration::from_millis(150);

/// One capture member behind an HTTP listener.
async fn stack() -> (Stack, Capture) {
    let cap = Capture::start().await;
    let s = Stack::with("ROUND_ROBIN", &[(cap.port(), json!({}))], "HTTP", json!({})).await;
    (s, cap)
}

fn status_line(head: &str) -> &str {
    head.lines().next().unwrap_or_default()
}

/// Bytes each connection received since `before` was taken, where any.
fn received_since(cap: &Capture, before: &[Vec<u8>]) -> Vec<String> {
    cap.raw()
        .iter()
        .enumerate()
        .filter_map(|(i, now)| {
            let old = before.get(i).map_or(0, Vec::len);
            (now.len() > old).then(|| String::from_utf8_lossy(&now[old..]).into_owned())
        })
        .collect()
}

/// Sends `request` on a new connection and checks it is refused: a status in `statuses`,
/// the connection closed, and nothing at all reaching the member. `Err` lists what was
/// wrong.
async fn refused(s: &Stack, cap: &Capture, request: &[u8], statuses: &[u16]) -> Result<(), String> {
    let before = cap.raw();
    let mut c = RawConn::connect(s.port).await;
    // The whole request fits the socket buffers; a server that answers early may reset it.
    let _ = c.send(request).await;
    let mut problems = Vec::new();
    match c.response_within(ANSWER_WITHIN).await {
        Ok(r) if statuses.contains(&r.status) => {}
        Ok(r) => problems.push(format!(
            "answered {:?} (expected {statuses:?}), body {:?}",
            status_line(&r.head),
            r.body_text()
        )),
        Err(e) => problems.push(format!("no answer: {e}")),
    }
    if !c.closed_within(CLOSE_WITHIN).await {
        problems.push(format!(
            "the connection stayed open (pending {:?})",
            String::from_utf8_lossy(c.pending())
        ));
    }
    tokio::time::sleep(FORWARD_GRACE).await;
    let leaked = received_since(cap, &before);
    if !leaked.is_empty() {
        problems.push(format!("the member received {leaked:?}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Runs `refused` for every case and fails listing each case that was not refused.
async fn all_refused(s: &Stack, cap: &Capture, cases: &[(&str, Vec<u8>)], statuses: &[u16]) {
    let mut failures = Vec::new();
    for (name, request) in cases {
        if let Err(e) = refused(s, cap, request, statuses).await {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases not refused:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// A POST to `/smuggle` with `headers` (each ending in CRLF) and `body`.
fn post(headers: &str, body: &str) -> Vec<u8> {
    format!("POST /smuggle HTTP/1.1\r\nHost: a.example\r\n{headers}\r\n{body}").into_bytes()
}

/// A GET to `/` with `headers` (each ending in CRLF) after Host.
fn get_with(headers: &str) -> Vec<u8> {
    format!("GET / HTTP/1.1\r\nHost: a.example\r\n{headers}\r\n").into_bytes()
}

const CHUNKED_HELLO: &str = "5\r\nhello\r\n0\r\n\r\n";
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: a.example\r\n\r\n";

/// Sends one request on a new connection and returns the response, panicking without one.
async fn exchange(s: &Stack, request: &[u8]) -> common::raw::RawResponse {
    let mut c = RawConn::connect(s.port).await;
    c.send(request).await.expect("send");
    c.response()
        .await
        .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(request)))
}

/// The one request the member received for `target`, panicking unless exactly one.
fn only(cap: &Capture, target: &str) -> Captured {
    let seen: Vec<Captured> = cap
        .requests()
        .into_iter()
        .filter(|r| r.target == target)
        .collect();
    assert_eq!(
        seen.len(),
        1,
        "requests for {target} at the member: {seen:#?}"
    );
    seen.into_iter().next().expect("one")
}

// ---- framing headers -------------------------------------------------------------------

/// CL.TE: Content-Length and Transfer-Encoding together are refused outright (either
/// order), so neither reading of the body can smuggle a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_is_refused() {
    let (s, cap) = stack().await;
    let body = format!("{CHUNKED_HELLO}{SMUGGLED}");
    let cases = [
        (
            "CL then TE",
            post("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", &body),
        ),
        (
            "TE then CL",
            post("Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", &body),
        ),
    ];
    all_refused(&s, &cap, &cases, &[400]).await;
}

/// TE.CL and its obfuscations: any Transfer-Encoding but a single final `chunked` is
/// refused, with or without a Content-Length beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_encoding_must_be_exactly_chunked() {
    let (s, cap) = stack().await;
    let variants = [
        (
            "chunked twice",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        ),
        ("gzip", "Transfer-Encoding: gzip\r\n"),
        ("chunked, gzip", "Transfer-Encoding: chunked, gzip\r\n"),
        ("empty value", "Transfer-Encoding: \r\n"),
        ("space before colon", "Transfer-Encoding : chunked\r\n"),
        ("xchunked", "Transfer-Encoding: xchunked\r\n"),
    ];
    let mut cases = Vec::new();
    for (name, te) in variants {
        cases.push((name.to_owned(), post(te, CHUNKED_HELLO)));
        cases.push((
            format!("{name} with Content-Length"),
            post(&format!("Content-Length: 5\r\n{te}"), "hello"),
        ));
    }
    let cases: Vec<(&str, Vec<u8>)> = cases.iter().map(|(n, r)| (n.as_str(), r.clone())).collect();
    all_refused(&s, &cap, &cases, &[400]).await;
}

/// Content-Length is one decimal number: conflicting duplicates, lists, signs, hex and
/// overflow are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_must_be_one_decimal_number() {
    let (s, cap) = stack().await;
    let cases = [
        (
            "5 and 6",
            post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
        ),
        ("1, 2", post("Content-Length: 1, 2\r\n", "hello")),
        ("+5", post("Content-Length: +5\r\n", "hello")),
        ("-1", post("Content-Length: -1\r\n", "hello")),
        ("0x10", post("Content-Length: 0x10\r\n", "hello")),
        (
            "overflow",
            post("Content-Length: 99999999999999999999999\r\n", "hello"),
        ),
    ];
    all_refused(&s, &cap, &cases, &[400]).await;
}

/// Two identical Content-Lengths are one: accepted, and forwarded as a single
/// `Content-Length: 5` with the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_content_lengths_are_forwarded_as_one() {
    let (s, cap) = stack().await;
    let r = exchange(
        &s,
        b"POST /dup-cl HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.body_text(), "POST /dup-cl");
    let seen = only(&cap, "/dup-cl");
    assert_eq!(seen.all("content-length"), ["5"], "{}", seen.head);
    assert_eq!(seen.body, b"hello");
}

// ---- header syntax ---------------------------------------------------------------------

/// Obsolete line folding, a bare CR, a NUL in a value and a space in a name are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_header_lines_are_refused() {
    let (s, cap) = stack().await;
    let cases = [
        ("obs-fold (space)", get_with("X-Folded: one\r\n two\r\n")),
        ("obs-fold (tab)", get_with("X-Folded: one\r\n\ttwo\r\n")),
        ("bare CR in a value", get_with("X-Bad: a\rb\r\n")),
        ("NUL in a value", get_with("X-Bad: a\0b\r\n")),
        ("space in a name", get_with("X Bad: 1\r\n")),
    ];
    all_refused(&s, &cap, &cases, &[400]).await;
}

/// Host must be there once: two (same or different values) or none on HTTP/1.1 is 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_must_appear_exactly_once() {
    let (s, cap) = stack().await;
    let cases = [
        ("two identical Hosts", get_with("Host: a.example\r\n")),
        ("two different Hosts", get_with("Host: b.example\r\n")),
        ("no Host", b"GET / HTTP/1.1\r\nX-Any: 1\r\n\r\n".to_vec()),
    ];
    all_refused(&s, &cap, &cases, &[400]).await;
}

/// An absolute-form target must name the Host's authority; when it does, the member gets
/// the origin form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_must_match_host() {
    let (s, cap) = stack().await;
    let r = exchange(
        &s,
        b"GET http://a.example/abs?q=1 HTTP/1.1\r\nHost: a.example\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.head);
    let seen = only(&cap, "/abs?q=1");
    assert!(
        seen.head.starts_with("GET /abs?q=1 HTTP/1.1\r\n"),
        "{}",
        seen.head
    );
    assert_eq!(seen.all("host"), ["a.example"], "{}", seen.head);

    let r = exchange(
        &s,
        b"GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.head);
    let seen = only(&cap, "/");
    assert!(seen.head.starts_with("GET / HTTP/1.1\r\n"), "{}", seen.head);

    let cases = [(
        "other authority",
        b"GET http://other.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n".to_vec(),
    )];
    all_refused(&s, &cap, &cases, &[400]).await;
}

// ---- chunked bodies --------------------------------------------------------------------

/// A malformed chunked body is the client's error: 400 (not 502), the connection closed,
/// and no complete request at the member (a head or part of the body may have gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunked_bodies_are_refused() {
    let (s, cap) = stack().await;
    let cases = [
        ("invalid chunk size", "/c1", "zz\r\nhello\r\n0\r\n\r\n"),
        ("chunk overrun", "/c2", "3\r\nabcde\r\n0\r\n\r\n"),
        ("LF-only lines", "/c3", "3\nabc\n0\n\n"),
        (
            "17 hex digits (2^64)",
            "/c4",
            "10000000000000000\r\na\r\n0\r\n\r\n",
        ),
        (
            "17 hex digits (leading zeros)",
            "/c5",
            "00000000000000001\r\na\r\n0\r\n\r\n",
        ),
    ];
    let mut failures = Vec::new();
    for (name, target, body) in cases {
        let request = format!(
            "POST {target} HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
        );
        let mut c = RawConn::connect(s.port).await;
        let _ = c.send(request.as_bytes()).await;
        let mut problems = Vec::new();
        match c.response_within(ANSWER_WITHIN).await {
            Ok(r) if r.status == 400 => {}
            Ok(r) => problems.push(format!(
                "answered {:?} (expected 400)",
                status_line(&r.head)
            )),
            Err(e) => problems.push(format!("no answer: {e}")),
        }
        if !c.closed_within(CLOSE_WITHIN).await {
            problems.push("the connection stayed open".to_owned());
        }
        tokio::time::sleep(FORWARD_GRACE).await;
        let complete: Vec<Captured> = cap
            .requests()
            .into_iter()
            .filter(|r| r.target == target)
            .collect();
        if !complete.is_empty() {
            problems.push(format!(
                "the member received a complete request: {:?}",
                complete[0].body
            ));
        }
        if !problems.is_empty() {
            failures.push(format!("{name}: {}", problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The member is not blamed: it still answers.
    let r = exchange(&s, b"GET /after HTTP/1.1\r\nHost: a.example\r\n\r\n").await;
    assert_eq!(r.status, 200, "{}", r.head);
}

/// A chunked request body is forwarded chunked and arrives intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_request_bodies_arrive_intact() {
    let (s, cap) = stack().await;
    let r = exchange(
        &s,
        b"POST /chunked HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.body_text(), "POST /chunked");
    let seen = only(&cap, "/chunked");
    assert!(seen.chunked, "not forwarded chunked: {}", seen.head);
    assert!(seen.all("content-length").is_empty(), "{}", seen.head);
    assert_eq!(String::from_utf8_lossy(&seen.body), "hello world");

    // Larger than any one read: 64 chunks of 4 KiB.
    let data: Vec<u8> = (0..64 * 4096).map(|i| b'a' + (i % 26) as u8).collect();
    let mut request =
        b"POST /big HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for chunk in data.chunks(4096) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let r = exchange(&s, &request).await;
    assert_eq!(r.status, 200, "{}", r.head);
    let seen = only(&cap, "/big");
    assert!(
        seen.body == data,
        "{} of {} bytes",
        seen.body.len(),
        data.len()
    );
}

// ---- sizes -----------------------------------------------------------------------------

/// A 100 KiB target is refused with 414 or 431, 200 headers of 1 KiB with 431; the
/// connection closes and the member sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_are_refused() {
    let (s, cap) = stack().await;
    let long_target = format!(
        "GET /{} HTTP/1.1\r\nHost: a.example\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    all_refused(
        &s,
        &cap,
        &[("100 KiB target", long_target.into_bytes())],
        &[414, 431],
    )
    .await;
    let headers: String = (0..200)
        .map(|i| format!("X-Big-{i}: {}\r\n", "b".repeat(1024)))
        .collect();
    all_refused(
        &s,
        &cap,
        &[("200 headers of 1 KiB", get_with(&headers))],
        &[431],
    )
    .await;
}

// ---- pipelining ------------------------------------------------------------------------

/// Requests pipelined in one write are each answered, in order, and each reaches the
/// member exactly once with its body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let (s, cap) = stack().await;
    let mut c = RawConn::connect(s.port).await;
    c.send(
        b"GET /p1 HTTP/1.1\r\nHost: a.example\r\n\r\n\
          POST /p2 HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\n\r\nhello\
          GET /p3 HTTP/1.1\r\nHost: a.example\r\n\r\n\
          POST /p4 HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
          GET /p5 HTTP/1.1\r\nHost: a.example\r\n\r\n",
    )
    .await
    .expect("send");
    let expected = ["GET /p1", "POST /p2", "GET /p3", "POST /p4", "GET /p5"];
    for want in expected {
        let r = c
            .response()
            .await
            .unwrap_or_else(|e| panic!("answer to {want}: {e}"));
        assert_eq!(r.status, 200, "{want}: {}", r.head);
        assert_eq!(r.body_text(), want, "answers out of order");
    }
    for (target, body) in [
        ("/p1", ""),
        ("/p2", "hello"),
        ("/p3", ""),
        ("/p4", "abc"),
        ("/p5", ""),
    ] {
        assert_eq!(String::from_utf8_lossy(&only(&cap, target).body), body);
    }
    assert_eq!(cap.requests().len(), 5, "{:#?}", cap.requests());
}

/// A client that pipelines thousands of requests and reads nothing for a while fills its
/// socket, so answers stop fitting (the worker's batched sends come back short or empty
/// and the rest waits for room); once it reads, every answer arrives whole and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_gets_every_pipelined_answer_whole() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const REQUESTS: usize = 3_000;
    let (s, cap) = stack().await;
    // Answers just under the size sent in one piece with their head.
    let pad = "x".repeat(3_400);
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4_096).expect("SO_RCVBUF");
    let stream = socket
        .connect(([127, 0, 0, 1], s.port).into())
        .await
        .expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (mut rd, mut wr) = stream.into_split();
    let requests: Vec<u8> = (0..REQUESTS)
        .flat_map(|i| format!("GET /p{i}-{pad} HTTP/1.1\r\nHost: a.example\r\n\r\n").into_bytes())
        .collect();
    let writer = tokio::spawn(async move {
        wr.write_all(&requests).await.expect("send the requests");
        wr
    });
    // Unread until the member stops getting requests: the answers have filled the way.
    let mut seen = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = cap.requests().len();
        if now == seen || now == REQUESTS {
            break;
        }
        seen = now;
    }
    let mut got = Vec::new();
    let mut at = 0;
    let mut answered = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut chunk = vec![0u8; 64 * 1024];
    while answered < REQUESTS {
        // Every complete answer in `got[at..]`, checked in order.
        while let Some(end) = find(&got[at..], b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[at..at + end]).into_owned();
            assert!(
                head.starts_with("HTTP/1.1 200"),
                "answer {answered}: {head}"
            );
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().expect("length"))
                })
                .expect("Content-Length");
            let body_at = at + end + 4;
            if got.len() < body_at + len {
                break;
            }
            let want = format!("GET /p{answered}-{pad}");
            assert!(
                &got[body_at..body_at + len] == want.as_bytes(),
                "answer {answered} is not its request's"
            );
            at = body_at + len;
            answered += 1;
        }
        if answered == REQUESTS {
            break;
        }
        let n = tokio::time::timeout_at(deadline, rd.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("only {answered} of {REQUESTS} answers arrived"))
            .expect("read");
        assert!(n > 0, "closed after {answered} of {REQUESTS} answers");
        got.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(at, got.len(), "bytes after the last answer");
    writer.await.expect("writer");
    assert_eq!(cap.requests().len(), REQUESTS);
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---- responses that lie about their length ---------------------------------------------

/// A member that declares 100 bytes, sends 10 and closes: the client gets a response cut
/// short and its connection closed, never a second response spliced in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_response_closes_the_client_connection() {
    let (s, cap) = stack().await;
    cap.answer_next(Answer::Raw {
        bytes: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789".to_vec(),
        close: true,
    });
    let mut c = RawConn::connect(s.port).await;
    c.send(b"GET /short HTTP/1.1\r\nHost: a.example\r\n\r\n")
        .await
        .expect("send");
    let r = c.response().await.expect("a response head");
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(
        !r.complete,
        "the body was presented as complete: {:?}",
        r.body_text()
    );
    assert!(r.body.len() < 100, "{} bytes", r.body.len());
    assert!(
        c.closed_within(CLOSE_WITHIN).await,
        "the client connection stayed open after a truncated response"
    );
}

/// A member that sends more than its Content-Length on a keep-alive connection: the
/// extra bytes never reach the client as the answer to its next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_response_bytes_are_not_spliced_into_the_next_response() {
    let (s, cap) = stack().await;
    cap.answer_next(Answer::Raw {
        bytes: b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\
                 HTTP/1.1 200 OK\r\nContent-Length: 7\r\nX-Smuggled: 1\r\n\r\nsmuggle"
            .to_vec(),
        close: false,
    });
    let mut c = RawConn::connect(s.port).await;
    c.send(b"GET /first HTTP/1.1\r\nHost: a.example\r\n\r\n")
        .await
        .expect("send");
    let first = c.response().await.expect("first answer");
    assert_eq!(first.status, 200, "{}", first.head);
    assert_eq!(first.body_text(), "hello");
    c.send(b"GET /second HTTP/1.1\r\nHost: a.example\r\n\r\n")
        .await
        .expect("send the second request on the same connection");
    let second = c.response().await.expect("second answer");
    assert_eq!(
        (second.status, second.body_text().as_str()),
        (200, "GET /second"),
        "the second answer is not the member's: {}",
        second.head
    );
    assert!(second.header("x-smuggled").is_none(), "{}", second.head);
    only(&cap, "/second");
}

// ---- headers ---------------------------------------------------------------------------

/// Headers named in Connection are not forwarded; X-Forwarded-For gets the client
/// appended; X-Forwarded-Proto is set to http whatever the client said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_and_forwarding_headers() {
    let (s, cap) = stack().await;
    let r = exchange(
        &s,
        b"GET /hop HTTP/1.1\r\nHost: a.example\r\nConnection: x-secret\r\nX-Secret: 1\r\n\
          X-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: https\r\nX-Kept: yes\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.head);
    let seen = only(&cap, "/hop");
    assert!(seen.all("x-secret").is_empty(), "{}", seen.head);
    assert!(
        seen.all("connection")
            .iter()
            .all(|v| !v.to_ascii_lowercase().contains("x-secret")),
        "{}",
        seen.head
    );
    assert_eq!(
        seen.all("x-forwarded-for"),
        ["10.1.2.3, 127.0.0.1"],
        "{}",
        seen.head
    );
    assert_eq!(seen.all("x-forwarded-proto"), ["http"], "{}", seen.head);
    assert_eq!(seen.all("x-kept"), ["yes"], "{}", seen.head);

    exchange(&s, b"GET /plain HTTP/1.1\r\nHost: a.example\r\n\r\n").await;
    let seen = only(&cap, "/plain");
    assert_eq!(seen.all("x-forwarded-for"), ["127.0.0.1"], "{}", seen.head);
    assert_eq!(seen.all("x-forwarded-proto"), ["http"], "{}", seen.head);
}
