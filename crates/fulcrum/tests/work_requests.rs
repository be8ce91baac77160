//! Work requests tell the truth: a change the data plane cannot serve ends FAILED with why,
//! what it left behind reads ERROR until it can be served, then recovers by itself; a change
//! that has nothing to do with the failure is not blamed for it.

mod common;

use std::process::Command;
use std::time::Duration;

use common::TOKEN;
use common::backend::Backend;
use common::stack::{Fulcrum, client, eventually, get};
use serde_json::json;

#[tokio::test]
async fn a_listener_on_a_taken_port_fails_and_serves_by_itself_once_the_port_is_free() {
    let f = Fulcrum::start();
    let backend = Backend::start("a").await;
    let lb = f.loadbalancer().await;
    let pool = f.pool(&lb, "HTTP", "ROUND_ROBIN").await;
    let member = f.member(&pool, backend.port(), json!({})).await;

    // Another program holds the port (without SO_REUSEPORT, so it cannot be shared).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let r = f
        .api
        .ok(
            "POST",
            &format!("/v1/loadbalancers/{lb}/listeners"),
            Some(json!({"protocol": "HTTP", "port": port, "default_pool_id": pool})),
        )
        .await;
    let listener = r.id();
    let wr = f.api.settled(&r).await;
    assert_eq!(wr["status"], "FAILED", "{wr}");
    assert_eq!(wr["error"]["code"], "NotServed", "{wr}");
    let why = wr["error"]["message"].as_str().unwrap();
    assert!(
        why.contains(&listener) && why.contains(&format!("cannot bind 127.0.0.1:{port}")),
        "{why}"
    );

    // The listener and its load balancer say so.
    let l = f.read(&format!("/v1/listeners/{listener}")).await;
    assert_eq!(l["provisioning_status"], "ERROR", "{l}");
    assert_eq!(l["operating_status"], "ERROR", "{l}");
    assert!(l["status_reason"].as_str().unwrap().contains("cannot bind"));
    let lb_view = f.read(&format!("/v1/loadbalancers/{lb}")).await;
    assert_eq!(lb_view["provisioning_status"], "ERROR", "{lb_view}");

    // A change that does not touch the listener succeeds (`apply` asserts it).
    f.patch_member(&pool, &member, json!({"weight": 5})).await;

    // The failure is recorded, not only derived: it outlives what caused it.
    let wr_id = wr["id"].as_str().unwrap().to_owned();
    let recorded = eventually(Duration::from_secs(5), || async {
        let wrs = f.api.items("/v1/work-requests").await;
        wrs.iter()
            .any(|w| w["id"] == wr_id.as_str() && w["finished_at"].is_string())
    })
    .await;
    assert!(recorded, "the FAILED work request was never recorded");

    // The port frees: the listener binds by itself and serves.
    drop(taken);
    let url = format!("http://127.0.0.1:{port}/");
    let http = client();
    let serving = eventually(Duration::from_secs(10), || async {
        get(&http, &url).await.0 == 200
    })
    .await;
    assert!(serving, "the listener never bound after its port was freed");
    // The data plane reports it served right after binding.
    let active = eventually(Duration::from_secs(5), || async {
        f.read(&format!("/v1/listeners/{listener}")).await["provisioning_status"] == "ACTIVE"
    })
    .await;
    assert!(active, "the listener serves but does not read ACTIVE");
    let l = f.read(&format!("/v1/listeners/{listener}")).await;
    assert_eq!(l["provisioning_status"], "ACTIVE", "{l}");
    assert_eq!(l["operating_status"], "ONLINE", "{l}");
    assert!(l.get("status_reason").is_none(), "{l}");
    let lb_view = f.read(&format!("/v1/loadbalancers/{lb}")).await;
    assert_eq!(lb_view["provisioning_status"], "ACTIVE", "{lb_view}");
    // What the change did at the time stays on record.
    let wr = f.read(&format!("/v1/work-requests/{wr_id}")).await;
    assert_eq!(wr["status"], "FAILED", "{wr}");
}

#[tokio::test]
async fn the_cli_wait_exits_non_zero_with_the_reason() {
    let f = Fulcrum::start();
    let lb = f.loadbalancer().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args([
            "listener",
            "create",
            &lb,
            "--protocol",
            "TCP",
            "--port",
            &port,
        ])
        .args(["--wait", "--server", &f.api.base, "--token", TOKEN])
        .env_remove("FULCRUM_DATA_DIR")
        .output()
        .expect("run fulcrum");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "exit 0 for a listener that cannot bind"
    );
    assert!(
        stderr.contains("failed") && stderr.contains("cannot bind"),
        "{stderr}"
    );
    drop(taken);
}

#[tokio::test]
async fn upstream_tls_that_does_not_load_fails_the_pool_change() {
    let f = Fulcrum::start();
    let lb = f.loadbalancer().await;
    let pool = f.pool(&lb, "HTTP", "ROUND_ROBIN").await;
    let port = common::free_port();
    f.listener(&lb, "HTTP", port, Some(&pool)).await;
    let broken = "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n";
    let r = f
        .api
        .ok(
            "PATCH",
            &format!("/v1/pools/{pool}"),
            Some(json!({"upstream": {"scheme": "https", "tls": {"ca_certificates_pem": broken}}})),
        )
        .await;
    let wr = f.api.settled(&r).await;
    assert_eq!(wr["status"], "FAILED", "{wr}");
    let why = wr["error"]["message"].as_str().unwrap();
    assert!(
        why.contains(&pool) && why.contains("ca_certificates_pem"),
        "{why}"
    );
    let p = f.read(&format!("/v1/pools/{pool}")).await;
    assert_eq!(p["provisioning_status"], "ERROR", "{p}");
}

/// `[store] work_requests_kept`: housekeeping (at start, then every five minutes) deletes the
/// oldest finished work requests beyond it, across a crash and restart; the newest stay.
#[tokio::test]
async fn finished_work_requests_beyond_the_configured_count_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::unlimited_config_with(dir.path(), "[store]\nwork_requests_kept = 2\n");
    let data = dir.path().join("data");
    let server = common::Server::start_with(&data, &["--config", &config]);
    let api = server.client();
    let mut made = Vec::new();
    for _ in 0..5 {
        let r = api
            .apply("POST", "/v1/loadbalancers", Some(json!({"name": "lb"})))
            .await;
        made.push(r.header("x-work-request-id").expect("a work request id"));
    }
    // Every one recorded as finished, then a crash.
    let ids = |wrs: Vec<serde_json::Value>| -> Vec<String> {
        wrs.iter()
            .map(|w| w["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let recorded = eventually(Duration::from_secs(5), || async {
        let wrs = api.items("/v1/work-requests").await;
        wrs.len() == 5 && wrs.iter().all(|w| w["finished_at"].is_string())
    })
    .await;
    assert!(recorded, "not every work request was recorded as finished");
    server.kill9();

    let server = common::Server::start_with(&data, &["--config", &config]);
    let api = server.client();
    let newest: Vec<String> = made[3..].iter().rev().cloned().collect();
    let trimmed = eventually(Duration::from_secs(10), || async {
        ids(api.items("/v1/work-requests").await) == newest
    })
    .await;
    assert!(
        trimmed,
        "kept {:?}, expected the newest two {newest:?}",
        ids(api.items("/v1/work-requests").await)
    );
    let gone = api
        .call("GET", &format!("/v1/work-requests/{}", made[0]), None)
        .await;
    assert_eq!(gone.status, 404, "{}", gone.body);
    // The load balancers themselves stay.
    assert_eq!(api.items("/v1/loadbalancers").await.len(), 5);
}
