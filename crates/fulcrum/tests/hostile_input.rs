//! Every endpoint the OpenAPI document lists, hit with hostile input (with a stale `If-Match`,
//! and for creates without one too): nothing may answer with a 5xx, and nothing may change.

mod common;

use common::Server;
use serde_json::{Value, json};

#[tokio::test]
async fn no_request_yields_a_server_error() {
    let dir = tempfile::tempdir().unwrap();
    // The sweep sends thousands of requests.
    let config = common::unlimited_config(dir.path());
    let server = Server::start_with(&dir.path().join("data"), &["--config", &config]);
    let api = server.client();
    let lb = api
        .ok("POST", "/v1/loadbalancers", Some(json!({"name": "web"})))
        .await
        .id();
    let pool = api
        .ok(
            "POST",
            &format!("/v1/loadbalancers/{lb}/pools"),
            Some(json!({"name": "p", "protocol": "HTTP"})),
        )
        .await
        .id();
    let member = api
        .ok(
            "POST",
            &format!("/v1/pools/{pool}/members"),
            Some(json!({"address": "10.0.0.1", "port": 80})),
        )
        .await
        .id();
    let before = everything(&api).await;

    let doc = api.ok("GET", "/v1/openapi.json", None).await.body;
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 15, "the document lists the API");

    let bodies: Vec<String> = vec![
        String::new(),
        "{".into(),
        "null".into(),
        "[]".into(),
        "\"text\"".into(),
        "{}".into(),
        r#"{"weight": 1e400}"#.into(),
        r#"{"weight": 18446744073709551616}"#.into(),
        r#"{"name": null, "port": -5, "address": ["x"]}"#.into(),
        r#"{"upstream": {"credentials": {"headers": {"bad header": ["v\nx"]}}}}"#.into(),
        r#"{"action": "replace", "members": [null, 1, "x", {}]}"#.into(),
        format!("{{\"name\": \"{}\"}}", "x".repeat(100_000)),
        "\u{0}\u{1}garbage".into(),
        json!({"a": {"b": {"c": {"d": [[[[[]]]]]}}}}).to_string(),
    ];
    let ids = [
        lb.as_str(),
        pool.as_str(),
        member.as_str(),
        "nope",
        "..%2F..",
        "%00",
        // Not UTF-8 once decoded: refused by the path extractor, in the native shape.
        "%FF",
    ];
    let mut n = 0;
    let sweep = api.unpooled();
    for (template, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            for id in ids {
                let path = template
                    .replace("{member_id}", if id == pool { &member } else { id })
                    .replace("{id}", id);
                for body in &bodies {
                    let send = (!body.is_empty()).then_some(body.as_str());
                    let method = method.to_uppercase();
                    let r = sweep
                        .raw(&method, &path, send, &[("if-match", "\"zz\"")])
                        .await;
                    n += 1;
                    assert!(
                        r.status < 500,
                        "{method} {path} {body:.80} → {}: {}",
                        r.status,
                        r.body
                    );
                    if r.status >= 400 {
                        assert!(
                            r.body["message"].is_string(),
                            "{method} {path}: errors are JSON with a message: {}",
                            r.body
                        );
                    }
                    // A create with no precondition: only the body stands between it and a
                    // new resource, and every body here is invalid.
                    if method == "POST" {
                        let r = sweep.raw(&method, &path, send, &[]).await;
                        n += 1;
                        assert!(
                            (400..500).contains(&r.status),
                            "POST {path} {body:.80} → {}: {:.300}",
                            r.status,
                            r.body.to_string()
                        );
                    }
                }
            }
        }
    }
    assert!(n > 1000, "swept {n} requests");
    let after = everything(&api).await;
    assert_eq!(
        before, after,
        "hostile input changed nothing: no resource created, changed or deleted, no work request"
    );
}

/// Every resource as the native API lists it, without the observed statuses (the data plane
/// may serve them meanwhile), and every work request's id and operation.
async fn everything(api: &common::Api) -> Value {
    let state = |mut v: Value| {
        if let Some(o) = v.as_object_mut() {
            o.remove("provisioning_status");
            o.remove("operating_status");
            o.remove("status_reason");
        }
        v
    };
    let mut all = serde_json::Map::new();
    for kind in [
        "loadbalancers",
        "listeners",
        "pools",
        "healthmonitors",
        "subnets",
    ] {
        let items = api.items(&format!("/v1/{kind}?limit=1000")).await;
        all.insert(
            kind.into(),
            Value::Array(items.into_iter().map(state).collect()),
        );
    }
    let mut members = Vec::new();
    for pool in api.items("/v1/pools?limit=1000").await {
        let id = pool["id"].as_str().unwrap_or_default().to_owned();
        members.extend(
            api.items(&format!("/v1/pools/{id}/members?limit=1000"))
                .await
                .into_iter()
                .map(state),
        );
    }
    all.insert("members".into(), Value::Array(members));
    let work: Vec<Value> = api
        .items("/v1/work-requests?limit=1000")
        .await
        .into_iter()
        .map(|w| json!([w["id"], w["operation"]]))
        .collect();
    all.insert("work_requests".into(), Value::Array(work));
    Value::Object(all)
}

#[tokio::test]
async fn callers_over_their_rate_get_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fulcrum.toml");
    std::fs::write(&config, "[api]\nrate_per_second = 1\nrate_burst = 5\n").unwrap();
    let server = Server::start_with(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let api = server.client();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let r = api.call("GET", "/v1/loadbalancers", None).await;
        if r.status == 429 {
            assert_eq!(r.body["code"], "rate_limited");
            let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
            assert!((1..=2).contains(&wait), "Retry-After {wait}");
        }
        statuses.push(r.status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        3,
        "{statuses:?}"
    );
    // Health stays reachable for probes.
    assert_eq!(api.call("GET", "/v1/health", None).await.status, 200);
}
