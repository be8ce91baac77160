//! The dialect behind the layers the API puts around every front door, without sockets: signed requests, the
//! failures that must be 401/429, and seed 002's "load balancer not ACTIVE" refusal.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use fulcrum_control::{ControlPlane, Options, RequestContext};
use fulcrum_model::{LoadBalancerId, LoadBalancerSpec, PoolId, PoolProtocol, PoolSpec};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::sign;
use super::{HuaweiConfig, HuaweiCredential, HuaweiToken};

const AK: &str = "AKTEST";
const SK: &str = "SKTEST";
const PROJECT: &str = "0123456789abcdef0123456789abcdef";
const HOST: &str = "fulcrum.test:9000";

struct Env {
    _dir: tempfile::TempDir,
    cp: Arc<ControlPlane>,
    router: axum::Router,
}

async fn env(rate_burst: u32) -> Env {
    // No data plane: revisions count as served only when the test says so.
    let opts = Options {
        self_apply: false,
        busy_wait: Duration::from_millis(100),
        ..Options::default()
    };
    let (dir, cp) = fulcrum_control::testing::control_with(opts).await;
    let config = HuaweiConfig {
        credentials: vec![HuaweiCredential {
            ak: AK.into(),
            sk: SK.into(),
            project_id: Some(PROJECT.into()),
        }],
        tokens: vec![HuaweiToken {
            name: Some("ci".into()),
            token: "tok".into(),
            project_id: None,
        }],
    };
    let router = fulcrum_api_core::single_front_door(cp.clone(), 0.01, rate_burst, |state| {
        crate::router(state, &config)
    });
    Env {
        _dir: dir,
        cp,
        router,
    }
}

/// A request signed the way huaweicloudsdkcore signs it, at `date`.
fn signed(method: &str, target: &str, body: &str, date: &str, sk: &str) -> Request<Body> {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let headers = [
        ("content-type", "application/json;charset=utf-8"),
        ("host", HOST),
        ("user-agent", "huaweicloud-usdk-python/3.0"),
        ("x-project-id", PROJECT),
        ("x-sdk-date", date),
    ];
    let lookup = |n: &str| headers.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
    let auth = sign::AuthHeader {
        access_key: AK,
        signed_headers: headers.iter().map(|(k, _)| *k).collect(),
        signature: "",
    };
    let req = sign::SignedRequest {
        method,
        raw_path: path,
        raw_query: query,
        header: &lookup,
        body: body.as_bytes(),
    };
    let creq = sign::canonical_request(&req, &auth).unwrap();
    let signature = sign::signature(sk, &sign::string_to_sign(date, &creq));
    let mut b = Request::builder().method(method).uri(target);
    for (k, v) in headers {
        b = b.header(k, v);
    }
    b.header(
        "authorization",
        format!(
            "SDK-HMAC-SHA256 Access={AK}, SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-date, Signature={signature}"
        ),
    )
    .body(Body::from(body.to_owned()))
    .unwrap()
}

fn now() -> String {
    chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string()
}

async fn send(router: &axum::Router, req: Request<Body>) -> (StatusCode, http::HeaderMap, Value) {
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, headers, body)
}

fn lbs_path() -> String {
    format!("/v3/{PROJECT}/elb/loadbalancers")
}

#[tokio::test]
async fn signatures_tokens_and_rate_limits() {
    let e = env(3).await;
    let (status, headers, body) = send(&e.router, signed("GET", &lbs_path(), "", &now(), SK)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["request_id"].is_string() && body["page_info"].is_object());
    assert!(headers.contains_key("x-request-id"));

    // Wrong key, tampered query, skewed date, unsigned: 401 in Huawei's shape, with the
    // request id in the body and the header.
    let tampered = {
        let mut r = signed("GET", &lbs_path(), "", &now(), SK);
        *r.uri_mut() = format!("{}?limit=1", lbs_path()).parse().unwrap();
        r
    };
    let old = (chrono::Utc::now() - chrono::Duration::minutes(16))
        .format("%Y%m%dT%H%M%SZ")
        .to_string();
    let unsigned = Request::get(lbs_path()).body(Body::empty()).unwrap();
    let bearer = Request::get(lbs_path())
        .header("authorization", "Bearer sdk-test-token")
        .body(Body::empty())
        .unwrap();
    for (what, req) in [
        (
            "wrong key",
            signed("GET", &lbs_path(), "", &now(), "SKOTHER"),
        ),
        ("tampered", tampered),
        ("skewed", signed("GET", &lbs_path(), "", &old, SK)),
        ("unsigned", unsigned),
        ("bearer", bearer),
    ] {
        let (status, headers, body) = send(&e.router, req).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert_eq!(body["error_code"], "APIGW.0301", "{what}");
        assert_eq!(
            body["request_id"].as_str().unwrap(),
            headers["x-request-id"].to_str().unwrap(),
            "{what}"
        );
    }

    // Burst of 3 per principal: two more signed calls pass, the next is 429.
    for _ in 0..2 {
        let (status, _, _) = send(&e.router, signed("GET", &lbs_path(), "", &now(), SK)).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, headers, body) = send(&e.router, signed("GET", &lbs_path(), "", &now(), SK)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error_code"], "APIGW.0308");
    assert!(headers.contains_key("retry-after"));

    // The token is another principal with its own bucket.
    let by_token = Request::get(lbs_path())
        .header("x-auth-token", "tok")
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = send(&e.router, by_token).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A signed request for a path of another project is refused.
    let other = "/v3/ffffffffffffffffffffffffffffffff/elb/loadbalancers";
    let (status, _, _) = send(&e.router, signed("GET", other, "", &now(), SK)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn update_pool_is_refused_while_the_load_balancer_is_not_active() {
    let e = env(100).await;
    let ctx = RequestContext::default();
    // In the credential's project, as if created through this API.
    let mut spec = LoadBalancerSpec::new("lb");
    spec.labels
        .insert(super::views::LABEL_PROJECT.into(), PROJECT.into());
    let lb = e.cp.create_loadbalancer(&ctx, spec).await.unwrap();
    e.cp.report_applied(lb.revision, Vec::new());
    let lb_id = LoadBalancerId(lb.result.unwrap().id);
    let pool =
        e.cp.create_pool(&ctx, &lb_id, PoolSpec::new("p", PoolProtocol::Http))
            .await
            .unwrap();
    e.cp.report_applied(pool.revision, Vec::new());
    let pool_id = PoolId(pool.result.unwrap().id);
    // A change the data plane does not serve yet: the load balancer is PENDING_UPDATE.
    e.cp.update_loadbalancer(&ctx, &lb_id, &json!({"description": "changing"}))
        .await
        .unwrap();

    let lb_path = format!("/v3/{PROJECT}/elb/loadbalancers/{lb_id}");
    let (_, _, body) = send(&e.router, signed("GET", &lb_path, "", &now(), SK)).await;
    assert_eq!(
        body["loadbalancer"]["provisioning_status"],
        "PENDING_UPDATE"
    );

    let pool_path = format!("/v3/{PROJECT}/elb/pools/{pool_id}");
    let update = r#"{"pool": {"lb_algorithm": "SOURCE_IP"}}"#;
    let (status, _, body) = send(&e.router, signed("PUT", &pool_path, update, &now(), SK)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error_code"], "ELB.8906");
    assert!(body["error_msg"].as_str().unwrap().contains("ACTIVE"));
    let unchanged =
        e.cp.view()
            .pools
            .get(&pool_id)
            .unwrap()
            .value
            .spec
            .algorithm;
    assert_eq!(unchanged, fulcrum_model::Algorithm::RoundRobin);

    // Once the data plane serves everything, the same update goes through.
    let cp = e.cp.clone();
    let reporter = tokio::spawn(async move {
        loop {
            let rev = cp.view().revision;
            cp.report_applied(rev, Vec::new());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let (status, _, body) = send(&e.router, signed("PUT", &pool_path, update, &now(), SK)).await;
    reporter.abort();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["pool"]["lb_algorithm"], "SOURCE_IP");
    assert!(body["request_id"].is_string());
}

/// A body that never arrives, declaring `Some(n)` bytes or, with `None`, no length
/// (chunked).
struct Stalled(Option<u64>);

impl hyper::body::Body for Stalled {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Pending
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.0.map_or_else(
            hyper::body::SizeHint::default,
            hyper::body::SizeHint::with_exact,
        )
    }
}

#[tokio::test]
async fn an_aksk_body_is_read_only_after_the_checks_that_need_none() {
    let e = env(100).await;
    let path = format!("/v3/{PROJECT}/elb/pools/p1");
    let stalled = |date: &str, declared: Option<u64>| {
        signed("PUT", &path, "{}", date, SK).map(|_| Body::new(Stalled(declared)))
    };
    let old = (chrono::Utc::now() - chrono::Duration::minutes(16))
        .format("%Y%m%dT%H%M%SZ")
        .to_string();
    let unknown_key = {
        let mut r = stalled(&now(), Some(100));
        r.headers_mut().insert(
            "authorization",
            "SDK-HMAC-SHA256 Access=AKOTHER, SignedHeaders=host;x-sdk-date, Signature=00"
                .parse()
                .unwrap(),
        );
        r
    };
    let unsigned_date = {
        let mut r = stalled(&now(), Some(100));
        r.headers_mut().insert(
            "authorization",
            format!("SDK-HMAC-SHA256 Access={AK}, SignedHeaders=host, Signature=00")
                .parse()
                .unwrap(),
        );
        r
    };
    for (what, req, status) in [
        ("unknown key", unknown_key, StatusCode::UNAUTHORIZED),
        (
            "skewed date",
            stalled(&old, Some(100)),
            StatusCode::UNAUTHORIZED,
        ),
        ("date not signed", unsigned_date, StatusCode::UNAUTHORIZED),
        (
            "no length",
            stalled(&now(), None),
            StatusCode::LENGTH_REQUIRED,
        ),
        (
            "too large",
            stalled(&now(), Some(13 * 1024 * 1024)),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ] {
        let answered = tokio::time::timeout(Duration::from_secs(5), send(&e.router, req)).await;
        let (got, _, body) = answered.unwrap_or_else(|_| panic!("{what}: waited for the body"));
        assert_eq!(got, status, "{what}: {body}");
    }
}

fn labelled(labels: Value) -> fulcrum_model::LoadBalancer {
    fulcrum_model::LoadBalancer {
        id: LoadBalancerId("lb".into()),
        spec: serde_json::from_value(json!({"name": "lb", "labels": labels})).unwrap(),
        created_at: chrono::DateTime::UNIX_EPOCH,
        updated_at: chrono::DateTime::UNIX_EPOCH,
    }
}

#[test]
fn a_bound_credential_sees_only_its_projects_load_balancers() {
    let scope = super::project_scope(Some(PROJECT));
    assert!(scope.admits(&labelled(json!({"huawei.project_id": PROJECT}))));
    assert!(!scope.admits(&labelled(json!({"huawei.project_id": "ffff"}))));
    assert!(
        !scope.admits(&labelled(json!({}))),
        "one made outside Huawei has no project"
    );
    assert!(
        !scope.admits(&labelled(json!({"oci.compartmentId": PROJECT}))),
        "only the project label counts"
    );
    let unbound = super::project_scope(None);
    assert!(unbound.is_all() && unbound.admits(&labelled(json!({}))));
}
