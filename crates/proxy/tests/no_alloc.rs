//! A keep-alive HTTP/1.1 request through the data plane, in steady state, allocates nothing:
//! a counting global allocator watches 2,000 requests proxied by a real data plane (one
//! worker) between a client and a member on real loopback sockets. The client and the
//! member use fixed buffers, so what allocates in that window is the data plane, or a
//! background task of the control plane (a few at most; one per request would be 2,000).

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use fulcrum_control::{Options, RequestContext};
use fulcrum_proxy::{AccessLogFormat, AccessLogOptions, DataPlane, DataPlaneOptions};
use fulcrum_testkit::{CountingAllocator, total_allocations};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nServer: t\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello";

/// A member answering every request on a connection with `RESPONSE`, in one write, from a
/// fixed buffer (requests are small GETs: each ends with a blank line).
fn member() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            conn.set_nodelay(true).unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                let mut filled = 0;
                loop {
                    let Ok(n) = conn.read(&mut buf[filled..]) else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    filled += n;
                    while let Some(end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
                        if conn.write_all(RESPONSE).is_err() {
                            return;
                        }
                        buf.copy_within(end + 4..filled, 0);
                        filled -= end + 4;
                    }
                }
            });
        }
    });
    port
}

fn spec<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

/// Sends a GET and reads its whole response (fixed size) into `buf`.
fn exchange(client: &mut TcpStream, buf: &mut [u8]) -> usize {
    client
        .write_all(b"GET /x HTTP/1.1\r\nHost: test\r\nUser-Agent: no-alloc\r\n\r\n")
        .unwrap();
    let mut filled = 0;
    loop {
        let n = client.read(&mut buf[filled..]).unwrap();
        assert!(n > 0, "the data plane closed the connection");
        filled += n;
        if let Some(end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n")
            && filled >= end + 4 + 5
        {
            assert!(buf.starts_with(b"HTTP/1.1 200 "));
            return filled;
        }
    }
}

#[test]
fn a_keep_alive_request_allocates_nothing() {
    let allocations = allocations_in_2000_requests(None);
    assert!(
        allocations <= 20,
        "{allocations} allocations in 2,000 keep-alive requests: the request path allocates"
    );
}

/// With the access log on, each record is formatted into buffers that are reused too.
#[test]
fn a_logged_keep_alive_request_allocates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let allocations = allocations_in_2000_requests(Some(AccessLogOptions {
        format: AccessLogFormat::Json,
        path: Some(log.clone()),
    }));
    assert!(
        allocations <= 20,
        "{allocations} allocations in 2,000 logged keep-alive requests"
    );
    // The records were written (the data plane flushed them when it stopped).
    let written = std::fs::read_to_string(&log).unwrap();
    assert!(
        written.lines().count() >= 2_200,
        "{} records",
        written.lines().count()
    );
}

/// Allocations while a data plane with one worker proxies 2,000 keep-alive requests, after
/// 200 to warm up. One measurement at a time: the count is the whole process's.
fn allocations_in_2000_requests(access_log: Option<AccessLogOptions>) -> u64 {
    static ONE_AT_A_TIME: parking_lot::Mutex<()> = parking_lot::Mutex::new(());
    let _alone = ONE_AT_A_TIME.lock();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let member_port = member();
    let listen_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_dir, _control, data_plane) = runtime.block_on(async {
        let options = Options {
            self_apply: false,
            ..Options::default()
        };
        let (dir, control) = fulcrum_control::testing::control_with(options).await;
        let data_plane = DataPlane::start(
            control.clone(),
            DataPlaneOptions {
                workers: 1,
                access_log,
                ..DataPlaneOptions::default()
            },
        )
        .unwrap();
        let ctx = RequestContext::default();
        let lb = control
            .create_loadbalancer(
                &ctx,
                spec(serde_json::json!({"name": "lb", "vip_address": "127.0.0.1"})),
            )
            .await
            .unwrap();
        let lb_id = lb.result.unwrap().id.into();
        let pool = control
            .create_pool(
                &ctx,
                &lb_id,
                spec(serde_json::json!({"name": "p", "protocol": "HTTP", "algorithm": "ROUND_ROBIN"})),
            )
            .await
            .unwrap();
        let pool_id = pool.result.unwrap().id;
        control
            .create_member(
                &ctx,
                &pool_id.clone().into(),
                spec(serde_json::json!({"address": "127.0.0.1", "port": member_port})),
            )
            .await
            .unwrap();
        let listener = control
            .create_listener(
                &ctx,
                &lb_id,
                spec(serde_json::json!({
                    "name": "l", "protocol": "HTTP", "port": listen_port,
                    "default_pool_id": pool_id,
                })),
            )
            .await
            .unwrap();
        assert!(
            control
                .wait_applied(listener.revision, Duration::from_secs(10))
                .await,
            "the data plane never served the configuration"
        );
        (dir, control, data_plane)
    });

    let mut client = TcpStream::connect(("127.0.0.1", listen_port)).unwrap();
    client.set_nodelay(true).unwrap();
    let mut buf = vec![0u8; 4096];
    // Warm up: buffers, the member connection, the idle list, the worker's timer wheel.
    for _ in 0..200 {
        exchange(&mut client, &mut buf);
    }
    let before = total_allocations();
    for _ in 0..2_000 {
        exchange(&mut client, &mut buf);
    }
    let allocations = total_allocations() - before;
    drop(client);
    runtime.block_on(data_plane.shutdown(Duration::from_secs(1)));
    allocations as u64
}
