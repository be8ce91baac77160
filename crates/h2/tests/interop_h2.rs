//! `ServerConn` against the `h2` crate's client, over an in-memory duplex pipe: a small
//! test-only driver does the I/O the proxy will do, and answers each request with a body of
//! the size it asks for (`x-size`), reporting how much request body it received.

#![allow(clippy::unwrap_used)] // test helpers may panic

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Log, every_value_byte, pattern, serve};
use fulcrum_h2::{ErrorCode, Settings};

/// Runs `client` against a served connection; returns the server's log.
async fn run<F, Fut>(settings: Settings, client: F) -> Log
where
    F: FnOnce(h2::client::SendRequest<Bytes>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (c, s) = tokio::io::duplex(32 * 1024);
    let server = tokio::spawn(serve(s, settings));
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(100_000)
        .handshake::<_, Bytes>(c)
        .await
        .unwrap();
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    tokio::time::timeout(Duration::from_secs(30), client(send))
        .await
        .expect("client timed out");
    driver.abort();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server timed out")
        .unwrap()
}

/// Sends one request with `body` (in 10 KiB chunks) and returns (status, x-received, body).
async fn exchange(
    send: h2::client::SendRequest<Bytes>,
    path: &str,
    body: &[u8],
    size: usize,
) -> (u16, String, Vec<u8>) {
    let mut send = send.ready().await.unwrap();
    let req = http::Request::post(format!("http://example.com{path}"))
        .header("x-size", size.to_string())
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(())
        .unwrap();
    let (resp, mut stream) = send.send_request(req, body.is_empty()).unwrap();
    if !body.is_empty() {
        let chunks: Vec<&[u8]> = body.chunks(10 * 1024).collect();
        let last = chunks.len() - 1;
        for (i, c) in chunks.into_iter().enumerate() {
            stream
                .send_data(Bytes::copy_from_slice(c), i == last)
                .unwrap();
        }
    }
    let resp = resp.await.unwrap();
    let status = resp.status().as_u16();
    let received = resp.headers()["x-received"].to_str().unwrap().to_string();
    assert_eq!(resp.headers()["x-path"], path);
    let mut body = resp.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        got.extend_from_slice(&chunk);
    }
    (status, received, got)
}

#[tokio::test]
async fn concurrent_requests_with_bodies_both_ways_bigger_than_the_windows() {
    let log = run(Settings::default(), |send| async move {
        let mut tasks = Vec::new();
        for i in 0..8usize {
            let send = send.clone();
            tasks.push(tokio::spawn(async move {
                // Request bodies up to 1.5 MiB (past our 1 MiB window), responses up to
                // 700 KB (past the client's 100,000-byte windows).
                let up = pattern(i * 200_000);
                let size = 1000 + i * 100_000;
                let (status, received, body) = exchange(send, &format!("/r/{i}"), &up, size).await;
                assert_eq!(status, 200);
                assert_eq!(received, up.len().to_string());
                assert_eq!(body.len(), size);
                assert!(body == pattern(size), "body {i} differs");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await;
    assert_eq!(log.error, None);
    assert_eq!(log.requests.len(), 8);
}

#[tokio::test]
async fn many_small_requests_in_sequence_reuse_hpack_state() {
    let log = run(Settings::default(), |send| async move {
        for i in 0..300 {
            let (status, _, body) = exchange(send.clone(), &format!("/s/{i}"), b"", 10).await;
            assert_eq!((status, body.len()), (200, 10));
        }
    })
    .await;
    assert_eq!(log.error, None);
    assert_eq!(log.requests.len(), 300);
}

#[tokio::test]
async fn request_trailers_arrive() {
    let log = run(Settings::default(), |send| async move {
        let mut send = send.ready().await.unwrap();
        let req = http::Request::post("http://example.com/t")
            .body(())
            .unwrap();
        let (resp, mut stream) = send.send_request(req, false).unwrap();
        stream.send_data(Bytes::from_static(b"abc"), false).unwrap();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-checksum", "42".parse().unwrap());
        stream.send_trailers(trailers).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.headers()["x-received"], "3");
    })
    .await;
    assert_eq!(log.error, None);
    assert_eq!(
        log.trailers,
        [(1, vec![("x-checksum".to_string(), "42".to_string())])]
    );
}

#[tokio::test]
async fn a_client_reset_reaches_the_server() {
    let log = run(Settings::default(), |send| async move {
        let mut send = send.ready().await.unwrap();
        let req = http::Request::post("http://example.com/cancel")
            .body(())
            .unwrap();
        let (_resp, mut stream) = send.send_request(req, false).unwrap();
        stream
            .send_data(Bytes::from_static(b"partial"), false)
            .unwrap();
        stream.send_reset(h2::Reason::CANCEL);
        // The connection goes on.
        let (status, _, _) = exchange(send, "/after", b"", 5).await;
        assert_eq!(status, 200);
    })
    .await;
    assert_eq!(log.error, None);
    assert_eq!(log.resets, [(1, ErrorCode::CANCEL, true)]);
    assert_eq!(log.requests.len(), 2);
}

#[tokio::test]
async fn a_graceful_goaway_finishes_the_open_stream() {
    let log = run(Settings::default(), |send| async move {
        let (status, _, body) = exchange(send.clone(), "/goaway", b"", 300_000).await;
        assert_eq!((status, body.len()), (200, 300_000));
        // The client knows the connection is going away.
        let refused = async {
            let mut s = send.ready().await?;
            let req = http::Request::get("http://example.com/late")
                .body(())
                .unwrap();
            let (resp, _) = s.send_request(req, true)?;
            resp.await.map(|_| ())
        }
        .await;
        assert!(refused.is_err());
    })
    .await;
    assert_eq!(log.error, None);
    assert_eq!(log.requests.len(), 1);
}

#[tokio::test]
async fn small_windows_and_a_small_header_table_still_carry_everything() {
    let settings = Settings {
        initial_window_size: 16_384,
        max_concurrent_streams: 4,
        header_table_size: 256,
        ..Settings::default()
    };
    let log = run(settings, |send| async move {
        let mut tasks = Vec::new();
        for i in 0..4usize {
            let send = send.clone();
            tasks.push(tokio::spawn(async move {
                let up = pattern(100_000 + i);
                let (status, received, body) =
                    exchange(send, &format!("/w/{i}"), &up, 50_000).await;
                assert_eq!((status, received), (200, up.len().to_string()));
                assert!(body == pattern(50_000));
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await;
    assert_eq!(log.error, None);
}

#[tokio::test]
async fn every_value_byte_survives_the_clients_huffman_coding() {
    let log = run(Settings::default(), |send| async move {
        for _ in 0..3 {
            let mut send = send.clone().ready().await.unwrap();
            let req = http::Request::get("http://example.com/all")
                .header(
                    "x-all",
                    http::HeaderValue::from_bytes(&every_value_byte()).unwrap(),
                )
                .body(())
                .unwrap();
            let (resp, _) = send.send_request(req, true).unwrap();
            assert_eq!(resp.await.unwrap().status(), 200);
        }
    })
    .await;
    assert_eq!(log.error, None);
    assert_eq!(log.requests.len(), 3);
}
