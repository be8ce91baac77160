//! The access log, read back from the file a real server wrote after known traffic: one
//! record per HTTP/1.1 and HTTP/2 request and per TCP session, with the fields the README
//! lists; request ids passed on or made, forwarded to the member and returned; the text
//! format; SIGHUP reopening the file after it was moved; per-listener switch and sampling.

mod common;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::backend::{Backend, Echo};
use common::free_port;
use common::stack::{Fulcrum, access_log_records, client, eventually};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A server writing its access log to a file, and one member behind one HTTP listener.
struct Logged {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    f: Fulcrum,
    a: Backend,
    lb: String,
    pool: String,
    member: String,
    port: u16,
    listener: String,
}

impl Logged {
    async fn start(format: &str) -> Logged {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("access.log");
        let f = Fulcrum::start_with(&[
            "--access-log",
            path.to_str().unwrap_or_default(),
            "--access-log-format",
            format,
        ]);
        let a = Backend::start("a").await;
        let lb = f.loadbalancer().await;
        let pool = f.pool(&lb, "HTTP", "ROUND_ROBIN").await;
        let member = f.member(&pool, a.port(), json!({})).await;
        let port = free_port();
        let listener = f.listener(&lb, "HTTP", port, Some(&pool)).await;
        Logged {
            _dir: dir,
            path,
            f,
            a,
            lb,
            pool,
            member,
            port,
            listener,
        }
    }
}

async fn named_pool(f: &Fulcrum, lb: &str, name: &str, protocol: &str) -> String {
    f.apply(
        "POST",
        &format!("/v1/loadbalancers/{lb}/pools"),
        Some(json!({"name": name, "protocol": protocol, "algorithm": "ROUND_ROBIN"})),
    )
    .await
    .id()
}

fn find<'a>(records: &'a [Value], what: &str, cond: impl Fn(&Value) -> bool) -> &'a Value {
    records
        .iter()
        .find(|r| cond(r))
        .unwrap_or_else(|| panic!("no record of {what} in {records:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_records_describe_requests_and_sessions() {
    let Logged {
        _dir,
        path,
        f,
        a,
        lb,
        pool,
        member,
        port,
        listener,
    } = Logged::start("json").await;
    let c = client();

    // 1. The client's own request id goes to the member and comes back.
    let resp = c
        .get(format!("http://127.0.0.1:{port}/hello?x=1"))
        .header("x-request-id", "client-id-1")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("client-id-1")
    );
    // 2. Without one, fulcrum makes one, and member and client see the same.
    let resp = c
        .get(format!("http://127.0.0.1:{port}/second"))
        .send()
        .await
        .expect("request");
    let made = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("a request id returned")
        .to_owned();
    assert_eq!(made.len(), 36, "a UUID: {made}");
    let seen = a.last_headers().expect("the member saw the request");
    assert_eq!(
        seen.get("x-request-id").and_then(|v| v.to_str().ok()),
        Some(made.as_str())
    );
    // 3. A body: its bytes count in.
    let resp = c
        .post(format!("http://127.0.0.1:{port}/upload"))
        .body(vec![b'x'; 1000])
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 200);
    // 4. HTTP/2 (prior knowledge).
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("http://127.0.0.1:{port}/h2"))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("h2 request");
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-request-id"));
    let _ = resp.into_body().collect().await;
    // 5. A member that refuses connections: 502, the failure named.
    let dead_pool = named_pool(&f, &lb, "dead", "HTTP").await;
    f.member(&dead_pool, free_port(), json!({})).await;
    let dead_port = free_port();
    f.listener(&lb, "HTTP", dead_port, Some(&dead_pool)).await;
    let (status, _) = common::stack::get(&c, &format!("http://127.0.0.1:{dead_port}/dead")).await;
    assert_eq!(status, 502);
    // 6. A TCP session: five bytes each way.
    let echo = Echo::start().await;
    let tcp_pool = named_pool(&f, &lb, "tcp", "TCP").await;
    f.member(&tcp_pool, echo.addr.port(), json!({})).await;
    let tcp_port = free_port();
    let tcp_listener = f.listener(&lb, "TCP", tcp_port, Some(&tcp_pool)).await;
    let mut s = TcpStream::connect(("127.0.0.1", tcp_port))
        .await
        .expect("tcp");
    s.write_all(b"hello").await.expect("write");
    let mut back = [0u8; 5];
    s.read_exact(&mut back).await.expect("echo");
    drop(s);

    let all = access_log_records(&path, 6).await;
    let first = find(&all, "the first request", |r| {
        r["request_id"] == "client-id-1"
    });
    assert_eq!(first["listener"], listener.as_str());
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/hello?x=1");
    assert_eq!(first["authority"], format!("127.0.0.1:{port}"));
    assert_eq!(first["protocol"], "HTTP/1.1");
    assert_eq!(first["status"], 200);
    assert_eq!(first["pool"], pool.as_str());
    assert_eq!(first["member"], member.as_str());
    assert_eq!(first["member_address"], format!("127.0.0.1:{}", a.port()));
    assert_eq!(first["attempts"], 1);
    assert_eq!(first["termination"], "done");
    assert_eq!(first["sticky"], false);
    assert!(
        first["client"]
            .as_str()
            .is_some_and(|c| c.starts_with("127.0.0.1:")),
        "{first}"
    );
    assert!(
        first["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{first}"
    );
    assert!(first["bytes_in"].as_u64().unwrap_or(0) > 20, "{first}");
    assert!(first["bytes_out"].as_u64().unwrap_or(0) > 20, "{first}");
    let t = &first["timings_ms"];
    let total = t["total"].as_f64().unwrap_or(-1.0);
    let first_byte = t["first_byte"].as_f64().unwrap_or(-1.0);
    assert!(t["headers"].as_f64().is_some_and(|h| h >= 0.0), "{first}");
    assert!(t["connect"].as_f64().is_some_and(|c| c >= 0.0), "{first}");
    assert!(0.0 <= first_byte && first_byte <= total, "{first}");

    let second = find(&all, "the second request", |r| r["path"] == "/second");
    assert_eq!(second["request_id"], made.as_str());

    let upload = find(&all, "the upload", |r| r["path"] == "/upload");
    assert_eq!(upload["method"], "POST");
    assert!(upload["bytes_in"].as_u64().unwrap_or(0) >= 1000, "{upload}");

    let h2 = find(&all, "the HTTP/2 request", |r| r["path"] == "/h2");
    assert_eq!(h2["protocol"], "HTTP/2");
    assert_eq!(h2["status"], 200);
    assert!(h2["bytes_out"].as_u64().unwrap_or(0) > 0, "{h2}");

    let dead = find(&all, "the failed request", |r| r["path"] == "/dead");
    assert_eq!(dead["status"], 502);
    assert_eq!(dead["termination"], "member_connect_failed");
    assert!(dead["attempts"].as_u64().unwrap_or(0) >= 1, "{dead}");
    assert!(dead["timings_ms"]["first_byte"].is_null(), "{dead}");

    let tcp = find(&all, "the TCP session", |r| {
        r["listener"] == tcp_listener.as_str()
    });
    assert_eq!(tcp["protocol"], "TCP");
    assert_eq!(tcp["bytes_in"], 5);
    assert_eq!(tcp["bytes_out"], 5);
    assert_eq!(tcp["termination"], "done");
    assert!(tcp["method"].is_null() && tcp["status"].is_null(), "{tcp}");

    // 7. A head fulcrum refuses (two Host fields) is logged too, without method or path.
    let answer =
        common::stack::raw_http(port, "GET /bad HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let all = access_log_records(&path, 7).await;
    let bad = find(&all, "the refused head", |r| r["status"] == 400);
    assert_eq!(bad["termination"], "bad_request");
    assert!(bad["method"].is_null() && bad["pool"].is_null(), "{bad}");
    assert!(bad["bytes_in"].as_u64().unwrap_or(0) > 20, "{bad}");
    assert!(bad["bytes_out"].as_u64().unwrap_or(0) > 20, "{bad}");

    // The records written are counted for Prometheus.
    let metrics = f.metrics().await;
    assert!(
        common::stack::metric(&metrics, "fulcrum_access_log_records_total").unwrap_or(0.0) >= 6.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_records_and_sighup_reopens_the_file() {
    let Logged {
        _dir,
        path,
        f,
        a,
        pool,
        port,
        listener,
        ..
    } = Logged::start("text").await;
    let c = client();
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();

    assert_eq!(
        common::stack::get(&c, &format!("http://127.0.0.1:{port}/before"))
            .await
            .0,
        200
    );
    assert!(
        eventually(Duration::from_secs(5), || {
            let done = read(&path).contains("/before");
            async move { done }
        })
        .await
    );
    let line = read(&path);
    let line = line.lines().next().unwrap_or_default();
    assert!(line.starts_with("127.0.0.1:"), "{line}");
    assert!(
        line.contains(&format!(" {listener} {pool}/127.0.0.1:{} ", a.port())),
        "{line}"
    );
    assert!(line.contains(" 200 "), "{line}");
    assert!(line.contains(" done "), "{line}");
    assert!(
        line.ends_with(&format!("\"GET /before HTTP/1.1\" \"127.0.0.1:{port}\"")),
        "{line}"
    );

    // logrotate: move the file, then SIGHUP; later records go to a new file at the path.
    let moved = path.with_file_name("access.log.1");
    std::fs::rename(&path, &moved).expect("rename");
    f.signal("HUP");
    // The reopen happens at the writer's next flush; requests until then may still land
    // in the moved file, as with any logrotate.
    assert!(
        eventually(Duration::from_secs(5), || {
            let c = c.clone();
            let path = path.clone();
            async move {
                common::stack::get(&c, &format!("http://127.0.0.1:{port}/after")).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                std::fs::read_to_string(&path).is_ok_and(|t| t.contains("/after"))
            }
        })
        .await,
        "no record in a new {}",
        path.display()
    );
    assert!(read(&moved).contains("/before"));
    assert!(!read(&path).contains("/before"));
    // Still serving after the signal.
    assert_eq!(f.api.call("GET", "/v1/health", None).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_turn_their_log_off_or_sample_it() {
    // Bound, not `..`: what is left of the value would be dropped at once (the member too).
    let Logged {
        _dir,
        path,
        f,
        a: _member,
        port,
        listener,
        ..
    } = Logged::start("json").await;
    let bad = f
        .api
        .call(
            "PATCH",
            &format!("/v1/listeners/{listener}"),
            Some(json!({"access_log": {"sample_one_in": 0}})),
        )
        .await;
    assert_eq!(bad.status, 400, "{:?}", bad.body);

    f.apply(
        "PATCH",
        &format!("/v1/listeners/{listener}"),
        Some(json!({"access_log": {"enabled": false}})),
    )
    .await;
    let c = client();
    assert_eq!(
        common::stack::get(&c, &format!("http://127.0.0.1:{port}/off"))
            .await
            .0,
        200
    );

    f.apply(
        "PATCH",
        &format!("/v1/listeners/{listener}"),
        Some(json!({"access_log": {"enabled": true, "sample_one_in": 10}})),
    )
    .await;
    // Every tenth request of those a worker sees.
    for i in 0..100 {
        let (status, _) = common::stack::get(&c, &format!("http://127.0.0.1:{port}/s{i}")).await;
        assert_eq!(status, 200);
    }
    let all = access_log_records(&path, 10).await;
    // Wait a flush more: nothing else may arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all_after = access_log_records(&path, all.len()).await;
    assert!(
        all_after.iter().all(|r| r["path"] != "/off"),
        "{all_after:#?}"
    );
    // Each worker counts on its own: requests spread over connections on both workers
    // (the client may open a second one) shift the count by one either way.
    assert!((9..=11).contains(&all_after.len()), "{all_after:#?}");
}
