//! The native API end to end, against the real binary on a real socket and a real store.

mod common;

use common::{Api, Server};
use serde_json::{Value, json};

/// The port of `build_stack`'s listener: free when the test began, the same for one load
/// balancer every time it is asked (a second listener on it must conflict).
fn listener_port(lb: &str) -> u16 {
    static PORTS: std::sync::OnceLock<parking_lot::Mutex<std::collections::HashMap<String, u16>>> =
        std::sync::OnceLock::new();
    *PORTS
        .get_or_init(Default::default)
        .lock()
        .entry(lb.to_owned())
        .or_insert_with(common::free_port)
}

/// A load balancer with a listener, a pool, three members and a health monitor.
async fn build_stack(api: &Api) -> (String, String, Vec<String>) {
    let lb = api
        .ok(
            "POST",
            "/v1/loadbalancers",
            Some(json!({"name": "web", "vip_address": "127.0.0.1"})),
        )
        .await;
    assert_eq!(lb.status, 201);
    assert!(lb.header("x-work-request-id").is_some());
    assert!(lb.header("etag").is_some());
    let lb = lb.id();
    let pool = api
        .ok(
            "POST",
            &format!("/v1/loadbalancers/{lb}/pools"),
            Some(json!({"name": "app", "protocol": "HTTP", "algorithm": "ROUND_ROBIN"})),
        )
        .await
        .id();
    let mut members = Vec::new();
    for port in [8081, 8082, 8083] {
        let m = api
            .ok(
                "POST",
                &format!("/v1/pools/{pool}/members"),
                Some(json!({"address": "127.0.0.1", "port": port})),
            )
            .await;
        assert_eq!(m.body["weight"], 1, "default weight");
        members.push(m.id());
    }
    api.ok(
        "POST",
        &format!("/v1/loadbalancers/{lb}/listeners"),
        Some(json!({"name": "http", "protocol": "HTTP", "port": listener_port(&lb), "default_pool_id": pool})),
    )
    .await;
    api.ok(
        "POST",
        "/v1/healthmonitors",
        Some(json!({"pool_id": pool, "type": "HTTP", "url_path": "/health"})),
    )
    .await;
    (lb, pool, members)
}

#[tokio::test]
async fn full_walkthrough_survives_kill_minus_nine() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let api = server.client();
    let (lb, pool, members) = build_stack(&api).await;
    let m0 = &members[0];
    let member_path = format!("/v1/pools/{pool}/members/{m0}");

    // If-Match: the current ETag works, a stale one answers 412 and changes nothing.
    let current = api.ok("GET", &member_path, None).await;
    let etag = current.header("etag").unwrap();
    let updated = api
        .raw(
            "PATCH",
            &member_path,
            Some(r#"{"weight": 3, "drain": true}"#),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(updated.body["weight"], 3);
    assert_eq!(updated.body["operating_status"], "DRAINING");
    let stale = api
        .raw(
            "PATCH",
            &member_path,
            Some(r#"{"weight": 7}"#),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(stale.status, 412, "{}", stale.body);
    assert_eq!(stale.body["code"], "precondition_failed");
    assert_eq!(api.ok("GET", &member_path, None).await.body["weight"], 3);
    let star = api
        .raw(
            "PATCH",
            &member_path,
            Some(r#"{"drain": false}"#),
            &[("if-match", "*")],
        )
        .await;
    assert_eq!(star.status, 200);

    // A retry token: the replay returns the same work request and acts once.
    let body = r#"{"address": "127.0.0.1", "port": 9001}"#;
    let key = [("idempotency-key", "create-9001")];
    let first = api
        .raw(
            "POST",
            &format!("/v1/pools/{pool}/members"),
            Some(body),
            &key,
        )
        .await;
    let again = api
        .raw(
            "POST",
            &format!("/v1/pools/{pool}/members"),
            Some(body),
            &key,
        )
        .await;
    assert_eq!(first.status, 201);
    assert_eq!(again.status, 201);
    assert_eq!(
        first.header("x-work-request-id"),
        again.header("x-work-request-id")
    );
    assert_eq!(first.id(), again.id());
    let members_now = api.items(&format!("/v1/pools/{pool}/members")).await;
    assert_eq!(members_now.iter().filter(|m| m["port"] == 9001).count(), 1);
    // The same token with a different request is refused.
    let other = api
        .raw(
            "POST",
            &format!("/v1/pools/{pool}/members"),
            Some(r#"{"address": "127.0.0.1", "port": 9002}"#),
            &key,
        )
        .await;
    assert_eq!(other.status, 409, "{}", other.body);
    assert_eq!(other.body["code"], "retry_token_reused");

    // The work request succeeds; waiting on it returns at once.
    let wr = first.header("x-work-request-id").unwrap();
    let done = api
        .ok(
            "GET",
            &format!("/v1/work-requests/{wr}/wait?timeout_ms=5000"),
            None,
        )
        .await;
    assert_eq!(done.body["status"], "SUCCEEDED");

    let before: Value = snapshot(&api, &lb, &pool).await;
    server.kill9();

    let server = Server::start(dir.path());
    let api = server.client();
    let after = snapshot(&api, &lb, &pool).await;
    assert_eq!(before, after, "state after kill -9 and restart");
    let wr_after = api
        .ok("GET", &format!("/v1/work-requests/{wr}"), None)
        .await;
    assert_eq!(wr_after.body["status"], "SUCCEEDED");
    // The retry token is remembered across the restart too.
    let replay = api
        .raw(
            "POST",
            &format!("/v1/pools/{pool}/members"),
            Some(body),
            &key,
        )
        .await;
    assert_eq!(
        replay.header("x-work-request-id").as_deref(),
        Some(wr.as_str())
    );
}

async fn snapshot(api: &Api, lb: &str, pool: &str) -> Value {
    let strip = |mut v: Value| {
        // Statuses are observations, not state.
        if let Some(o) = v.as_object_mut() {
            o.remove("provisioning_status");
            o.remove("operating_status");
            o.remove("status_reason");
        }
        v
    };
    json!({
        "lb": strip(api.ok("GET", &format!("/v1/loadbalancers/{lb}"), None).await.body),
        "pool": strip(api.ok("GET", &format!("/v1/pools/{pool}"), None).await.body),
        "members": api.items(&format!("/v1/pools/{pool}/members")).await.into_iter().map(strip).collect::<Vec<_>>(),
        "listeners": api.items(&format!("/v1/loadbalancers/{lb}/listeners")).await.into_iter().map(strip).collect::<Vec<_>>(),
        "monitors": api.items(&format!("/v1/healthmonitors?pool_id={pool}")).await.into_iter().map(strip).collect::<Vec<_>>(),
    })
}

#[tokio::test]
async fn member_batches_are_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let api = server.client();
    let (_lb, pool, _) = build_stack(&api).await;
    let batch = format!("/v1/pools/{pool}/members/batch");
    let members = |n: u16, base: u16| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"address": "10.1.0.1", "port": base + i, "weight": 2}))
            .collect()
    };

    let r = api
        .ok(
            "POST",
            &batch,
            Some(json!({"action": "replace", "members": members(200, 20000)})),
        )
        .await;
    assert_eq!(r.body["members"].as_array().unwrap().len(), 200);
    assert_eq!(
        api.items(&format!("/v1/pools/{pool}/members?limit=1000"))
            .await
            .len(),
        200
    );

    let too_many = api
        .call(
            "POST",
            &batch,
            Some(json!({"action": "add", "members": members(201, 30000)})),
        )
        .await;
    assert_eq!(too_many.status, 400, "{}", too_many.body);
    assert_eq!(too_many.body["field"], "members");

    let mut bad = members(50, 40000);
    bad[37]["weight"] = json!(-1);
    let r = api
        .call(
            "POST",
            &batch,
            Some(json!({"action": "add", "members": bad})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["field"], "members[37].weight");

    let mut dup = members(3, 50000);
    dup[2]["port"] = json!(20005);
    let r = api
        .call(
            "POST",
            &batch,
            Some(json!({"action": "add", "members": dup})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["field"], "members[2]");

    let all = api
        .items(&format!("/v1/pools/{pool}/members?limit=1000"))
        .await;
    assert_eq!(all.len(), 200, "rejected batches changed nothing");
    assert!(all.iter().all(|m| m["weight"] == 2));

    // Replace keeps the id of a member at the same address and port.
    let kept = all.iter().find(|m| m["port"] == 20000).unwrap()["id"].clone();
    let r = api
        .ok("POST", &batch, Some(json!({"action": "replace", "members": [{"address": "10.1.0.1", "port": 20000, "weight": 5}]})))
        .await;
    let after = r.body["members"].as_array().unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["id"], kept);
    assert_eq!(after[0]["weight"], 5);

    let r = api
        .ok(
            "POST",
            &batch,
            Some(json!({"action": "delete", "members": [{"id": kept}]})),
        )
        .await;
    assert!(r.body["members"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn bad_requests_get_clear_errors_never_a_500() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let api = server.client();
    let (lb, pool, members) = build_stack(&api).await;

    let anon = api.anonymous();
    for path in [
        "/v1/loadbalancers",
        &format!("/v1/pools/{pool}"),
        "/v1/work-requests",
    ] {
        let r = anon.call("GET", path, None).await;
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.body["code"], "unauthenticated");
        assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
    }
    let wrong = Api {
        token: Some("nope".into()),
        ..api.clone()
    };
    assert_eq!(
        wrong.call("GET", "/v1/loadbalancers", None).await.status,
        401
    );
    assert_eq!(anon.call("GET", "/v1/health", None).await.status, 200);
    let doc = anon.call("GET", "/v1/openapi.json", None).await;
    assert_eq!(doc.status, 200);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3.1"));

    let m = &members[0];
    let member = format!("/v1/pools/{pool}/members/{m}");
    // (method, path, body, expected status, expected field)
    let dup_listener = format!(r#"{{"protocol": "HTTP", "port": {}}}"#, listener_port(&lb));
    let cases: Vec<(&str, String, &str, u16, Option<&str>)> = vec![
        ("PATCH", member.clone(), "{\"weight\": ", 400, None),
        ("PATCH", member.clone(), "[1,2]", 400, None),
        ("PATCH", member.clone(), "", 400, None),
        (
            "PATCH",
            member.clone(),
            r#"{"wieght": 3}"#,
            400,
            Some("wieght"),
        ),
        (
            "PATCH",
            member.clone(),
            r#"{"weight": -1}"#,
            400,
            Some("weight"),
        ),
        (
            "PATCH",
            member.clone(),
            r#"{"weight": "heavy"}"#,
            400,
            Some("weight"),
        ),
        ("PATCH", member.clone(), r#"{"port": 0}"#, 400, Some("port")),
        (
            "PATCH",
            member.clone(),
            r#"{"port": 70000}"#,
            400,
            Some("port"),
        ),
        (
            "PATCH",
            member.clone(),
            r#"{"priority": 101}"#,
            400,
            Some("priority"),
        ),
        ("PATCH", member.clone(), r#"{"id": "x"}"#, 400, Some("id")),
        (
            "PATCH",
            member.clone(),
            r#"{"address": "127.0.0.1", "port": 8082}"#,
            400,
            Some("address"),
        ),
        (
            "PATCH",
            format!("/v1/pools/{pool}"),
            r#"{"slow_start": {"enable": true, "duration": 10}}"#,
            400,
            Some("slow_start.duration"),
        ),
        (
            "PATCH",
            format!("/v1/pools/{pool}"),
            r#"{"admin_state_up": false}"#,
            400,
            Some("admin_state_up"),
        ),
        (
            "PATCH",
            format!("/v1/pools/{pool}"),
            r#"{"algorithm": "QUIC_CID"}"#,
            400,
            Some("algorithm"),
        ),
        (
            "PATCH",
            format!("/v1/pools/{pool}"),
            r#"{"protocol": "TCP"}"#,
            400,
            Some("protocol"),
        ),
        (
            "POST",
            format!("/v1/loadbalancers/{lb}/listeners"),
            dup_listener.as_str(),
            409,
            None,
        ),
        (
            "POST",
            format!("/v1/loadbalancers/{lb}/listeners"),
            r#"{"protocol": "TCP", "port": 18081, "default_pool_id": "POOL"}"#,
            400,
            Some("default_pool_id"),
        ),
        (
            "POST",
            format!("/v1/loadbalancers/{lb}/pools"),
            r#"{"name": "app", "protocol": "HTTP"}"#,
            409,
            None,
        ),
        (
            "POST",
            "/v1/healthmonitors".into(),
            r#"{"pool_id": "POOL", "type": "TCP"}"#,
            409,
            None,
        ),
        ("DELETE", format!("/v1/pools/{pool}"), "", 409, None),
        ("DELETE", format!("/v1/loadbalancers/{lb}"), "", 409, None),
        ("GET", "/v1/pools/does-not-exist".into(), "", 404, None),
        ("PATCH", "/v1/pools/does-not-exist".into(), "{}", 404, None),
        ("GET", "/v1/work-requests/nope".into(), "", 404, None),
        (
            "GET",
            "/v1/loadbalancers?limit=100000".into(),
            "",
            400,
            Some("limit"),
        ),
        (
            "POST",
            "/v1/subnets".into(),
            r#"{"cidr": "10.0.0.1/24", "vpc_id": "v"}"#,
            400,
            Some("cidr"),
        ),
        (
            "POST",
            "/v1/subnets".into(),
            r#"{"cidr": "banana", "vpc_id": "v"}"#,
            400,
            Some("cidr"),
        ),
    ];
    for (method, path, body, status, field) in cases {
        let path = path.replace("POOL", &pool);
        let body = body.replace("POOL", &pool);
        let b = (!body.is_empty() || method == "PATCH").then_some(body.as_str());
        let r = api.raw(method, &path, b, &[]).await;
        assert_eq!(r.status, status, "{method} {path} {body}: {}", r.body);
        assert!(
            r.body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            r.body
        );
        assert!(r.body["request_id"].as_str().is_some(), "{}", r.body);
        if let Some(f) = field {
            assert_eq!(r.body["field"], f, "{method} {path} {body}: {}", r.body);
        }
    }
    // Nothing above changed the member.
    let m = api.ok("GET", &member, None).await;
    assert_eq!(m.body["weight"], 1);
    assert_eq!(m.body["port"], 8081);

    // The caller's request id is echoed.
    let r = api
        .raw(
            "GET",
            "/v1/loadbalancers",
            None,
            &[("x-request-id", "trace-42")],
        )
        .await;
    assert_eq!(r.header("x-request-id").as_deref(), Some("trace-42"));
}

#[tokio::test]
async fn concurrent_conditional_updates_have_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let api = server.client();
    let (_lb, pool, members) = build_stack(&api).await;
    let path = format!("/v1/pools/{pool}/members/{}", members[0]);
    // Several rounds: a lost race shows only now and then.
    for round in 0..10 {
        let etag = api.ok("GET", &path, None).await.header("etag").unwrap();
        let mut tasks = Vec::new();
        for w in 10..26 {
            let api = api.clone();
            let (path, etag) = (path.clone(), etag.clone());
            tasks.push(tokio::spawn(async move {
                let r = api
                    .raw(
                        "PATCH",
                        &path,
                        Some(&format!("{{\"weight\": {w}}}")),
                        &[("if-match", &etag)],
                    )
                    .await;
                (r.status, w)
            }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        let winners: Vec<_> = results.iter().filter(|(s, _)| *s == 200).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        assert!(
            results.iter().all(|(s, _)| *s == 200 || *s == 412),
            "{results:?}"
        );
        let now = api.ok("GET", &path, None).await.body["weight"].clone();
        assert_eq!(now, winners[0].1, "the winner's write is the one stored");
    }
}

#[tokio::test]
async fn locks_and_deletion_protection_hold() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let api = server.client();
    let (lb, pool, members) = build_stack(&api).await;
    let member = format!("/v1/pools/{pool}/members/{}", members[0]);

    api.ok(
        "PATCH",
        &format!("/v1/loadbalancers/{lb}"),
        Some(json!({"locks": [{"type": "FULL"}]})),
    )
    .await;
    let r = api.call("PATCH", &member, Some(json!({"weight": 2}))).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (409, Some("locked")),
        "{}",
        r.body
    );
    let r = api
        .raw(
            "PATCH",
            &member,
            Some(r#"{"weight": 2}"#),
            &[("x-lock-override", "true")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    api.ok(
        "PATCH",
        &format!("/v1/loadbalancers/{lb}"),
        Some(json!({"locks": []})),
    )
    .await;

    api.ok(
        "PATCH",
        &format!("/v1/pools/{pool}"),
        Some(json!({"member_deletion_protection": true})),
    )
    .await;
    let r = api.call("DELETE", &member, None).await;
    assert_eq!(r.status, 409, "{}", r.body);
    let r = api
        .call(
            "POST",
            &format!("/v1/pools/{pool}/members/batch"),
            Some(json!({"action": "replace", "members": []})),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(
        api.items(&format!("/v1/pools/{pool}/members")).await.len(),
        3
    );
    api.ok(
        "PATCH",
        &format!("/v1/pools/{pool}"),
        Some(json!({"member_deletion_protection": false})),
    )
    .await;

    let r = api
        .ok(
            "DELETE",
            &format!("/v1/loadbalancers/{lb}?cascade=true"),
            None,
        )
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(
        api.call("GET", &format!("/v1/pools/{pool}"), None)
            .await
            .status,
        404
    );
    assert!(api.items("/v1/listeners").await.is_empty());
    assert!(api.items("/v1/healthmonitors").await.is_empty());
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_400() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let api = server.client();
    let r = api
        .http
        .post(format!("{}/v1/loadbalancers", api.base))
        .bearer_auth(common::TOKEN)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=web")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["field"], "content-type");
    assert!(api.items("/v1/loadbalancers").await.is_empty());
}

/// Lists come in pages: 100 items by default, in id order, with a `next_page_token` that
/// `page_token` continues from; the last page has none; a limit outside 1..1000 is refused.
#[tokio::test]
async fn lists_are_paged_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let api = server.client();
    let (_lb, pool, _) = build_stack(&api).await;
    let members: Vec<Value> = (0..147)
        .map(|i| json!({"address": "10.0.1.1", "port": 1000 + i}))
        .collect();
    api.ok(
        "POST",
        &format!("/v1/pools/{pool}/members/batch"),
        Some(json!({"action": "add", "members": members})),
    )
    .await;
    let path = format!("/v1/pools/{pool}/members");
    let first = api.ok("GET", &path, None).await.body;
    let page1 = first["items"].as_array().expect("items").clone();
    assert_eq!(page1.len(), 100, "the default limit");
    let token = first["next_page_token"]
        .as_str()
        .expect("a next page")
        .to_owned();
    assert_eq!(page1.last().map(|m| m["id"].clone()), Some(json!(token)));
    let second = api
        .ok("GET", &format!("{path}?page_token={token}"), None)
        .await
        .body;
    let page2 = second["items"].as_array().expect("items").clone();
    assert_eq!(
        page2.len(),
        150 - 100,
        "the rest: 147 added and build_stack's three"
    );
    assert!(second.get("next_page_token").is_none(), "{second}");
    let ids: Vec<String> = page1
        .iter()
        .chain(&page2)
        .map(|m| m["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "in id order, no repeats"
    );
    let small = api.ok("GET", &format!("{path}?limit=7"), None).await.body;
    assert_eq!(small["items"].as_array().map(Vec::len), Some(7));
    for bad in ["0", "1001", "x"] {
        let r = api.call("GET", &format!("{path}?limit={bad}"), None).await;
        assert_eq!(r.status, 400, "limit={bad}: {}", r.body);
    }
}

/// A secret is never shown back: not in what reads return, not in the errors a malformed
/// or refused value gets (credentials, proxy passwords, URLs with credentials in them).
#[tokio::test]
async fn secrets_are_never_echoed() {
    const SECRET: &str = "pl4nted-s3cret";
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let api = server.client();
    let lb = api
        .ok(
            "POST",
            "/v1/loadbalancers",
            Some(json!({"name": "s", "vip_address": "127.0.0.1"})),
        )
        .await
        .id();
    let pools = format!("/v1/loadbalancers/{lb}/pools");
    let refused = [
        // Wrong types around secret values.
        json!({"name": "a", "protocol": "HTTP", "upstream": {"credentials": {"headers": {"X-Key": SECRET}}}}),
        json!({"name": "b", "protocol": "HTTP", "upstream": {"credentials": {"authorization": {"scheme": "Basic", "parameter": [SECRET]}}}}),
        json!({"name": "c", "protocol": "HTTP", "upstream": {"proxy": {"url": "http://p:3128", "password": {"x": SECRET}}}}),
        // Credentials inside a proxy URL, valid or not.
        json!({"name": "d", "protocol": "HTTP", "upstream": {"proxy": {"url": format!("http://user:{SECRET}@proxy:3128")}}}),
        json!({"name": "e", "protocol": "HTTP", "upstream": {"proxy": {"url": format!("ftp://user:{SECRET}@proxy:3128")}}}),
        json!({"name": "f", "protocol": "HTTP", "upstream": {"credentials": {"client_certificate_pem": SECRET}}}),
    ];
    for body in refused {
        let r = api.call("POST", &pools, Some(body.clone())).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(
            !r.body.to_string().contains(SECRET),
            "{body} echoed: {}",
            r.body
        );
    }
    let r = api
        .call(
            "POST",
            &pools,
            Some(json!({"name": "ok", "protocol": "HTTP", "upstream": {
                "credentials": {"headers": {"X-Key": [SECRET]}, "authorization": {"scheme": "Bearer", "parameter": SECRET}},
                "proxy": {"url": "http://proxy:3128", "username": "u", "password": SECRET}
            }})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(!r.body.to_string().contains(SECRET), "{}", r.body);
    let read = api.read(&format!("/v1/pools/{}", r.id())).await;
    assert!(!read.to_string().contains(SECRET), "{read}");
    assert_eq!(read["upstream"]["proxy"]["password"], "***");
}
