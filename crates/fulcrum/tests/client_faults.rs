//! What clients do wrong, and what fulcrum owes them and the members: a client's fault
//! (an aborted upload, a malformed body) is never charged to a member; `Expect:
//! 100-continue` is honoured; the header timeout counts from accept, so a silent or slow
//! client cannot hold a connection.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::backend::Backend;
use common::capture::Capture;
use common::raw::RawConn;
use common::stack::{Stack, client, eventually, get, metric};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Nine aborted uploads, aborted chunked uploads and malformed chunked bodies against a
/// pool whose breaker trips on 3 connection failures: afterwards both members serve, none
/// is ERROR, and no connect/reset/timeout error is charged to them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_fault_is_never_a_members_fault() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let s = Stack::new("ROUND_ROBIN", &[(&a, json!({})), (&b, json!({}))]).await;
    s.circuit_breaker(json!([{
        "name": "connection failures",
        "failure_condition": {
            "count": 3, "interval_ms": 60000,
            "error_reasons": ["ConnectionFailure", "BackendConnectionFailure", "Timeout"]
        },
        "trip_duration_ms": 60000
    }]))
    .await;
    let started = || a.requests() + b.requests();

    // Aborted uploads: a head promising 100,000 bytes, 1,000 of them, then the client goes.
    for i in 0..9 {
        let before = started();
        let mut c = RawConn::connect(s.port).await;
        let mut upload = format!(
            "POST /upload/{i} HTTP/1.1\r\nHost: a.example\r\nContent-Length: 100000\r\n\r\n"
        )
        .into_bytes();
        upload.extend_from_slice(&[b'u'; 1000]);
        c.send(&upload).await.expect("send");
        // Give the upload time to reach a member (a proxy may also hold it back).
        eventually(Duration::from_secs(1), || async { started() > before }).await;
        drop(c);
    }
    // Aborted chunked uploads.
    for i in 0..3 {
        let before = started();
        let mut c = RawConn::connect(s.port).await;
        c.send(
            format!(
                "POST /chunked-upload/{i} HTTP/1.1\r\nHost: a.example\r\n\
                 Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("send");
        eventually(Duration::from_secs(1), || async { started() > before }).await;
        drop(c);
    }
    // Malformed chunked bodies (the answer is the smuggling tests' business).
    for i in 0..3 {
        let mut c = RawConn::connect(s.port).await;
        let _ = c
            .send(
                format!(
                    "POST /malformed/{i} HTTP/1.1\r\nHost: a.example\r\n\
                     Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n"
                )
                .as_bytes(),
            )
            .await;
        let _ = c.response_within(Duration::from_secs(5)).await;
    }
    // The members finish (or drop) what they were sent.
    eventually(Duration::from_secs(5), || async {
        a.in_flight() == 0 && b.in_flight() == 0
    })
    .await;

    let c = client();
    let mut answers: HashMap<String, u32> = HashMap::new();
    for i in 0..20 {
        let (status, body) = get(&c, &format!("{}/after/{i}", s.url)).await;
        let key = if status == 200 {
            body
        } else {
            format!("{status}: {body}")
        };
        *answers.entry(key).or_default() += 1;
    }
    let served = answers.get("a").copied().unwrap_or(0) + answers.get("b").copied().unwrap_or(0);
    assert!(
        served == 20 && answers.contains_key("a") && answers.contains_key("b"),
        "every GET answered 200, by both members: {answers:?}"
    );
    for m in &s.members {
        let status = s.f.member_status(&s.pool, m).await;
        assert_ne!(status, "ERROR", "member {m} is blamed for a client's fault");
    }
    let text = s.f.metrics().await;
    assert!(
        text.contains("fulcrum_member_errors_total"),
        "no member error series in /metrics:\n{text}"
    );
    let mut charged = Vec::new();
    for m in &s.members {
        for kind in ["connect", "reset", "timeout"] {
            let series = format!(
                "fulcrum_member_errors_total{{pool=\"{}\",member=\"{m}\",kind=\"{kind}\"}}",
                s.pool
            );
            let n = metric(&text, &series).unwrap_or(0.0);
            if n != 0.0 {
                charged.push(format!("{series} {n}"));
            }
        }
    }
    assert!(charged.is_empty(), "errors charged to members: {charged:?}");
}

/// `Expect: 100-continue`: the client gets `100 Continue` before it sends its body, then
/// the member's final answer, and the member got the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_honoured() {
    let cap = Capture::start().await;
    let s = Stack::with("ROUND_ROBIN", &[(cap.port(), json!({}))], "HTTP", json!({})).await;
    let mut c = RawConn::connect(s.port).await;
    c.send(
        b"POST /expect HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\n\
          Expect: 100-continue\r\n\r\n",
    )
    .await
    .expect("send the head");
    let interim = c
        .response_within(Duration::from_secs(5))
        .await
        .expect("an answer before the body");
    assert!(
        interim.head.starts_with("HTTP/1.1 100 "),
        "expected 100 Continue before the body: {}",
        interim.head
    );
    c.send(b"hello").await.expect("send the body");
    let mut last = c.response().await.expect("the final answer");
    // A second interim answer (the member's own) may be relayed; then the final one.
    for _ in 0..3 {
        if last.status != 100 {
            break;
        }
        last = c.response().await.expect("the final answer");
    }
    assert_eq!(
        (last.status, last.body_text().as_str()),
        (200, "POST /expect"),
        "{}",
        last.head
    );
    let seen: Vec<_> = cap
        .requests()
        .into_iter()
        .filter(|r| r.target == "/expect")
        .collect();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0].body, b"hello");
}

/// What a client that never completes its head saw: when it was closed (None: not
/// within 5 s) and what it read first.
async fn stalled_client(
    port: u16,
    send_first: &[u8],
    trickle: &[u8],
) -> (Option<Duration>, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let opened = Instant::now();
    if !send_first.is_empty() && s.write_all(send_first).await.is_err() {
        return (Some(opened.elapsed()), String::new());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut trickle = trickle.iter();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        tokio::select! {
            r = s.read(&mut buf) => match r {
                Ok(0) | Err(_) => return (Some(opened.elapsed()), String::from_utf8_lossy(&got).into_owned()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            },
            _ = tick.tick() => {
                if let Some(byte) = trickle.next()
                    && s.write_all(&[*byte]).await.is_err()
                {
                    return (Some(opened.elapsed()), String::from_utf8_lossy(&got).into_owned());
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                return (None, String::from_utf8_lossy(&got).into_owned());
            }
        }
    }
}

/// `client_header_ms: 500` counts from accept: a client that sends nothing, one that sends
/// half a head and stalls, and one that trickles a byte every 100 ms are each closed
/// within 5 s, and not before 400 ms (a 408 before the close is allowed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_timeout_counts_from_accept() {
    let a = Backend::start("a").await;
    let s = Stack::with(
        "ROUND_ROBIN",
        &[(a.port(), json!({}))],
        "HTTP",
        json!({"timeouts": {"client_header_ms": 500}}),
    )
    .await;
    let slow_header = format!(
        "GET / HTTP/1.1\r\nHost: a.example\r\nX-Slow: {}",
        "s".repeat(100)
    );
    let (silent, half, trickling) = tokio::join!(
        stalled_client(s.port, b"", b""),
        stalled_client(s.port, b"GET / HTTP/1.1\r\nHost: a.example\r\n", b""),
        stalled_client(s.port, b"", slow_header.as_bytes()),
    );
    let mut failures = Vec::new();
    for (name, (closed, got)) in [
        ("silent", silent),
        ("half a head", half),
        ("trickling", trickling),
    ] {
        match closed {
            None => failures.push(format!("{name}: still open after 5 s (read {got:?})")),
            Some(t) if t < Duration::from_millis(400) => {
                failures.push(format!("{name}: closed after {t:?}, before the timeout"));
            }
            Some(_) if !(got.is_empty() || got.starts_with("HTTP/1.1 408 ")) => {
                failures.push(format!("{name}: answered {got:?} before closing"));
            }
            Some(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(a.requests(), 0, "nothing reached the member");
}
