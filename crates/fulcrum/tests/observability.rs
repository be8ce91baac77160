//! The server's own logs as an operator reads them from a file: JSON (one object per
//! line) or text without colour codes, one audit record per API change whichever front
//! door it came through, and failed authentication summarised per source instead of one
//! line per request.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Api, Server, TOKEN};
use futures_util::StreamExt;
use serde_json::{Value, json};

const AZURE_TOKEN: &str = "azure-test-token-0123456789";
/// An upstream credential: it must never reach the log.
const SECRET: &str = "upstream-secret-4b1d-77aa";
const AZURE_BACKENDS: &str = "/subscriptions/00000000-0000-4000-8000-000000000001/resourceGroups/rg1/providers/Microsoft.ApiManagement/service/svc1/backends";

/// Writes `fulcrum.toml` (an Azure token, then `extra`) into `dir`; returns its path.
fn config(dir: &Path, extra: &str) -> String {
    let path = dir.join("fulcrum.toml");
    let text = format!(
        "[[azure.tokens]]\nname = \"ci\"\ntoken = \"{AZURE_TOKEN}\"\n\n{}\n{extra}",
        common::UNLIMITED_API
    );
    std::fs::write(&path, text).expect("write config");
    path.to_str().expect("utf-8 path").to_owned()
}

/// Every line of the log parsed as JSON; a line that is not JSON fails the test.
fn json_lines(log: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(log).expect("read the log");
    text.lines()
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {l:?}"))
        })
        .collect()
}

fn audit_records(lines: &[Value]) -> Vec<&Value> {
    lines
        .iter()
        .filter(|l| l["target"] == "fulcrum::audit")
        .collect()
}

/// The one audit record of the request `request_id`.
fn record_of<'a>(lines: &'a [Value], request_id: &str) -> &'a Value {
    let found: Vec<&Value> = audit_records(lines)
        .into_iter()
        .filter(|r| r["request_id"] == request_id)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one audit record for request {request_id}: {found:#?}"
    );
    found[0]
}

fn azure(server: &Server) -> Api {
    Api {
        token: Some(AZURE_TOKEN.to_owned()),
        ..server.client()
    }
}

#[tokio::test]
async fn json_logs_carry_one_audit_record_per_change() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let log = dir.path().join("stderr.log");
    let server = Server::start_logging(
        &dir.path().join("data"),
        &["--config", &cfg, "--log-format", "json"],
        &log,
        "info",
    );
    let api = server.client();

    // Accepted through the native API.
    let lb = api
        .ok("POST", "/v1/loadbalancers", Some(json!({"name": "web"})))
        .await;
    let pool = api
        .ok(
            "POST",
            &format!("/v1/loadbalancers/{}/pools", lb.id()),
            Some(json!({"name": "p", "protocol": "HTTP",
                "upstream": {"credentials": {"headers": {"x-api-key": [SECRET]}}}})),
        )
        .await;
    // Refused by the control plane.
    let missing = api
        .call(
            "POST",
            "/v1/loadbalancers/no-such-lb/pools",
            Some(json!({"name": "q", "protocol": "HTTP"})),
        )
        .await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    // Refused as invalid, with the secret in the refused request.
    let invalid = api
        .call(
            "POST",
            &format!("/v1/loadbalancers/{}/pools", lb.id()),
            Some(json!({"name": "q", "protocol": "HTTP",
                "upstream": {"credentials": {"headers": {"bad header": [SECRET]}}}})),
        )
        .await;
    assert_eq!(invalid.status, 400, "{}", invalid.body);
    // Accepted through a dialect (Azure API Management), with an upstream credential.
    let backend = azure(&server)
        .raw(
            "PUT",
            &format!("{AZURE_BACKENDS}/one?api-version=2024-05-01"),
            Some(
                &json!({"properties": {"url": "http://10.0.0.9:8080", "protocol": "http",
                    "credentials": {"header": {"x-api-key": [SECRET]}}}})
                .to_string(),
            ),
            &[("x-ms-client-request-id", "azure-put-1")],
        )
        .await;
    assert!(
        (200..300).contains(&backend.status),
        "{} {}",
        backend.status,
        backend.body
    );
    // The change is served before its record is looked for (records are written as the
    // change is answered; this only lets the process settle).
    api.applied(&pool).await;

    let text = std::fs::read_to_string(&log).unwrap();
    for secret in [SECRET, TOKEN, AZURE_TOKEN] {
        assert!(!text.contains(secret), "a secret reached the log:\n{text}");
    }
    let lines = json_lines(&log);
    for l in &lines {
        for field in ["timestamp", "level", "target", "message"] {
            assert!(l.get(field).is_some(), "{field} missing from {l}");
        }
    }

    let rid = |r: &common::Resp| r.header("x-request-id").expect("x-request-id");
    let wr = |r: &common::Resp| r.header("x-work-request-id").expect("x-work-request-id");
    let created = record_of(&lines, &rid(&lb));
    assert_eq!(created["level"], "INFO");
    assert_eq!(created["message"], "change accepted");
    assert_eq!(created["principal"], "env", "{created}");
    assert_eq!(created["front_door"], "native", "{created}");
    assert_eq!(created["operation"], "CreateLoadBalancer", "{created}");
    assert_eq!(created["outcome"], "accepted", "{created}");
    assert_eq!(created["work_request"], wr(&lb).as_str(), "{created}");
    assert_eq!(created["loadbalancer"], lb.id().as_str(), "{created}");
    assert_eq!(
        created["resources"],
        format!("load_balancer/{}", lb.id()),
        "{created}"
    );

    let pooled = record_of(&lines, &rid(&pool));
    assert_eq!(pooled["operation"], "CreatePool", "{pooled}");
    assert_eq!(pooled["work_request"], wr(&pool).as_str(), "{pooled}");
    assert!(
        pooled["resources"]
            .as_str()
            .unwrap()
            .split(',')
            .any(|r| r == format!("pool/{}", pool.id())),
        "{pooled}"
    );

    let refused = record_of(&lines, &rid(&missing));
    assert_eq!(refused["message"], "change refused", "{refused}");
    assert_eq!(refused["outcome"], "refused", "{refused}");
    assert_eq!(refused["error_code"], "not_found", "{refused}");
    assert_eq!(refused["operation"], "CreatePool", "{refused}");
    assert_eq!(refused["principal"], "env", "{refused}");

    let put = record_of(&lines, "azure-put-1");
    assert_eq!(put["front_door"], "azure", "{put}");
    assert_eq!(put["principal"], "azure:ci", "{put}");
    assert_eq!(put["operation"], "PutBackend", "{put}");
    assert_eq!(put["outcome"], "accepted", "{put}");
    assert!(
        !put["work_request"].as_str().unwrap_or_default().is_empty(),
        "{put}"
    );
    let wr_id = put["work_request"].as_str().unwrap();
    let recorded = api.read(&format!("/v1/work-requests/{wr_id}")).await;
    assert_eq!(recorded["operation"], "PutBackend", "{recorded}");
    assert_eq!(recorded["request_id"], "azure-put-1", "{recorded}");
}

/// Sends `n` requests, 16 at a time, each of which must answer 401.
async fn unauthenticated(n: usize, make: impl Fn(usize) -> reqwest::RequestBuilder) {
    futures_util::stream::iter((0..n).map(make))
        .map(|req| async move {
            let resp = req
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .expect("request");
            let status = resp.status().as_u16();
            let _ = resp.bytes().await;
            status
        })
        .buffer_unordered(16)
        .for_each(|status| async move { assert_eq!(status, 401) })
        .await;
}

#[tokio::test]
async fn failed_authentication_is_summarised_per_source() {
    const PER_DOOR: usize = 2_000;
    const INTERVAL_SECS: u64 = 2;
    let dir = tempfile::tempdir().unwrap();
    // The format comes from the config file here.
    let cfg = config(
        dir.path(),
        &format!("[log]\nformat = \"json\"\nauth_failure_interval_secs = {INTERVAL_SECS}\n"),
    );
    let log = dir.path().join("stderr.log");
    let server = Server::start_logging(&dir.path().join("data"), &["--config", &cfg], &log, "info");
    let at_start = json_lines(&log).len();
    let http = common::http_client();
    let base = server.base.clone();
    let url = |path: &str| format!("{base}{path}");

    let started = Instant::now();
    // Native: no token, or a wrong one.
    unauthenticated(PER_DOOR, |i| {
        let req = http.get(url("/v1/loadbalancers"));
        match i % 2 {
            0 => req,
            _ => req.bearer_auth("wrong-token"),
        }
    })
    .await;
    // OCI: unsigned.
    unauthenticated(PER_DOOR, |_| {
        http.get(url(
            "/20170115/loadBalancers?compartmentId=ocid1.compartment.x",
        ))
    })
    .await;
    // Huawei: neither a signature nor a token.
    unauthenticated(PER_DOOR, |_| {
        http.get(url("/v3/0123456789abcdef/elb/loadbalancers"))
    })
    .await;
    // Azure: a token it does not know.
    unauthenticated(PER_DOOR, |_| {
        http.get(url(&format!("{AZURE_BACKENDS}?api-version=2024-05-01")))
            .bearer_auth("not-the-azure-token")
    })
    .await;
    let flood = started.elapsed();
    // The last summary is written when its interval ends.
    tokio::time::sleep(Duration::from_secs(INTERVAL_SECS) + Duration::from_millis(1500)).await;

    let lines = json_lines(&log);
    let new = &lines[at_start..];
    let failures: Vec<&Value> = new
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("authentication fail"))
        })
        .collect();
    // Nothing else was logged per request.
    assert_eq!(failures.len(), new.len(), "{new:#?}");
    // One line per source (here one address) per interval, plus the first failure's.
    let bound = flood.as_secs() / INTERVAL_SECS + 3;
    assert!(
        failures.len() as u64 <= bound,
        "{} lines for {PER_DOOR}×4 failures in {flood:?}: {failures:#?}",
        failures.len()
    );
    for l in &failures {
        assert_eq!(l["level"], "WARN", "{l}");
        assert_eq!(l["source"], "127.0.0.1", "{l}");
    }
    // Every failure is counted exactly once: the first on its own line, then the counts.
    let counted: u64 = failures
        .iter()
        .map(|l| {
            l.get("failures")
                .map_or(1, |n| n.as_u64().expect("a count"))
        })
        .sum();
    assert_eq!(counted, 4 * PER_DOOR as u64, "{failures:#?}");
    let last = failures.last().expect("a summary");
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .contains("authentication failures from 127.0.0.1 in the last"),
        "{last}"
    );
}

#[tokio::test]
async fn text_logs_in_a_file_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let server = Server::start_logging(&dir.path().join("data"), &[], &log, "info");
    let api = server.client();
    let lb = api
        .ok("POST", "/v1/loadbalancers", Some(json!({"name": "web"})))
        .await;
    let bytes = std::fs::read(&log).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.contains("change accepted") && text.contains("fulcrum::audit"),
        "{text}"
    );
    assert!(text.contains(&lb.id()), "{text}");
    assert!(
        !bytes.contains(&0x1b),
        "ESC in a log written to a file:\n{text:?}"
    );
    assert!(
        serde_json::from_str::<Value>(text.lines().next().unwrap_or_default()).is_err(),
        "text, not JSON"
    );
}
