//! Outlier detection without a health monitor (issue 20): under steady load from several
//! keep-alive clients, a member that answers 503, one that never answers, and one that
//! drops every POST each leave their pool within 2 s, at a bounded cost to clients; a pool
//! never ejects more than its share; the settings are the pool's, through the native API.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::backend::Backend;
use common::stack::{Stack, metric};
use serde_json::json;

/// What one client saw: each request's status (0: no answer), when it ended (since the
/// load began) and how long it took.
struct Seen {
    status: u16,
    at: Duration,
    took: Duration,
}

/// `clients` keep-alive clients, each on its own connection, sending one request after
/// another for `run`: what each saw, client by client.
async fn load(url: &str, clients: usize, run: Duration, post: bool) -> Vec<Vec<Seen>> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move {
            let c = common::stack::client();
            let mut seen = Vec::new();
            while start.elapsed() < run {
                let sent = Instant::now();
                let r = if post {
                    c.post(&url).body("order=42").send().await
                } else {
                    c.get(&url).send().await
                };
                let status = match r {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        let _ = r.bytes().await;
                        s
                    }
                    Err(_) => 0,
                };
                seen.push(Seen {
                    status,
                    at: start.elapsed(),
                    took: sent.elapsed(),
                });
            }
            seen
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("client task"));
    }
    out
}

fn by_status(seen: &[Vec<Seen>]) -> HashMap<u16, usize> {
    let mut counts = HashMap::new();
    for s in seen.iter().flatten() {
        *counts.entry(s.status).or_default() += 1;
    }
    counts
}

async fn three(a: &Backend, b: &Backend, c: &Backend) -> Stack {
    Stack::new(
        "ROUND_ROBIN",
        &[(a, json!({})), (b, json!({})), (c, json!({}))],
    )
    .await
}

async fn ejections(s: &Stack, member: &str) -> f64 {
    let text = s.f.metrics().await;
    metric(
        &text,
        &format!(
            "fulcrum_member_ejections_total{{pool=\"{}\",member=\"{member}\"}}",
            s.pool
        ),
    )
    .unwrap_or(0.0)
}

const CLIENTS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_answering_503_leaves_within_two_seconds() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let s = three(&a, &b, &c).await;
    c.set_status(503, None);
    let seen = load(&s.url, CLIENTS, Duration::from_secs(3), false).await;
    let counts = by_status(&seen);
    let total: usize = counts.values().sum();
    let fives = counts.get(&503).copied().unwrap_or(0);
    let last = seen
        .iter()
        .flatten()
        .filter(|x| x.status == 503)
        .map(|x| x.at)
        .max()
        .unwrap_or_default();
    // Five in a row eject it; each client may have had one more on its way meanwhile.
    assert!(
        fives <= 5 + CLIENTS,
        "{fives} of {total} requests saw the 503s: {counts:?}"
    );
    assert!(
        fives >= 5,
        "the member answered 503 before it left: {counts:?}"
    );
    assert!(last < Duration::from_secs(2), "last 503 at {last:?}");
    assert_eq!(counts.get(&200).copied().unwrap_or(0) + fives, total);
    assert_eq!(ejections(&s, &s.members[2]).await, 1.0);
    assert_eq!(s.f.member_status(&s.pool, &s.members[2]).await, "ERROR");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_member_costs_one_timeout_per_connection_and_leaves() {
    hung_member(CLIENTS).await;
}

/// One client alone waits once too: the member answered nothing at all while its request
/// waited, so it is hung, not slow, and leaves at once (not after three timeouts in a row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_member_leaves_at_its_first_timeout() {
    hung_member(1).await;
}

async fn hung_member(clients: usize) {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let s = three(&a, &b, &c).await;
    s.f.apply(
        "PATCH",
        &format!("/v1/pools/{}", s.pool),
        Some(json!({"member_timeouts": {"first_byte_ms": 400}})),
    )
    .await;
    // Accepts, reads, never answers (within the test).
    c.set_delay_ms(60_000);
    let seen = load(&s.url, clients, Duration::from_secs(3), false).await;
    let counts = by_status(&seen);
    for (i, client) in seen.iter().enumerate() {
        let slow = client
            .iter()
            .filter(|x| x.took >= Duration::from_millis(350))
            .count();
        assert!(
            slow <= 1,
            "client {i} waited for the hung member {slow} times"
        );
    }
    // A GET that timed out is sent to another member: the clients see answers.
    let answered = counts.get(&200).copied().unwrap_or(0);
    let timed_out = counts.get(&504).copied().unwrap_or(0);
    assert_eq!(
        answered + timed_out,
        counts.values().sum::<usize>(),
        "{counts:?}"
    );
    assert!(timed_out <= clients, "{counts:?}");
    assert!(answered > 100, "{counts:?}");
    let last_slow = seen
        .iter()
        .flatten()
        .filter(|x| x.took >= Duration::from_millis(350))
        .map(|x| x.at)
        .max()
        .unwrap_or_default();
    assert!(
        last_slow < Duration::from_secs(2),
        "last slow at {last_slow:?}"
    );
    assert_eq!(ejections(&s, &s.members[2]).await, 1.0);
    let retries = metric(
        &s.f.metrics().await,
        &format!("fulcrum_pool_retries_total{{pool=\"{}\"}}", s.pool),
    )
    .unwrap_or(0.0);
    assert!(retries >= 1.0, "timed-out GETs were retried: {retries}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_dropping_posts_leaves_and_posts_are_never_resent() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let s = three(&a, &b, &c).await;
    c.set_drop_posts(true);
    let seen = load(&s.url, CLIENTS, Duration::from_secs(3), true).await;
    let counts = by_status(&seen);
    let failed = counts.get(&502).copied().unwrap_or(0);
    let total: usize = counts.values().sum();
    // Three in a row eject it (gateway failures); a POST is not sent twice, so each one
    // it dropped is a 502 for its client.
    assert!(failed >= 3, "{counts:?}");
    assert!(failed <= 3 + CLIENTS, "{failed} of {total}: {counts:?}");
    assert_eq!(
        c.requests() as usize,
        failed,
        "every POST C saw failed, none resent"
    );
    assert_eq!(counts.get(&200).copied().unwrap_or(0) + failed, total);
    assert_eq!(ejections(&s, &s.members[2]).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_ejects_no_more_than_its_share_and_the_settings_are_its_own() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let s = three(&a, &b, &c).await;
    b.set_status(503, None);
    c.set_status(503, None);
    // The default share is half: of three members, one may be out.
    let seen = load(&s.url, 4, Duration::from_millis(1500), false).await;
    let out = ejections(&s, &s.members[1]).await + ejections(&s, &s.members[2]).await;
    assert_eq!(out, 1.0, "{:?}", by_status(&seen));
    let statuses = [
        s.f.member_status(&s.pool, &s.members[1]).await,
        s.f.member_status(&s.pool, &s.members[2]).await,
    ];
    assert_eq!(
        statuses.iter().filter(|st| *st == "ERROR").count(),
        1,
        "{statuses:?}"
    );

    // Invalid settings are refused with the field named, and change nothing.
    let pool_path = format!("/v1/pools/{}", s.pool);
    let r =
        s.f.call(
            "PATCH",
            &pool_path,
            Some(json!({"outlier_detection": {"max_ejection_percent": 150}})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body
            .to_string()
            .contains("outlier_detection.max_ejection_percent"),
        "{}",
        r.body
    );
    let pool = s.f.read(&pool_path).await;
    assert_eq!(pool["outlier_detection"]["max_ejection_percent"], 50);

    // Turned off, a member answering 503 stays in and keeps answering.
    s.f.apply(
        "PATCH",
        &pool_path,
        Some(json!({"outlier_detection": {"enabled": false}})),
    )
    .await;
    a.set_status(503, None);
    let seen = load(&s.url, 4, Duration::from_millis(500), false).await;
    let counts = by_status(&seen);
    assert!(
        counts.get(&503).copied().unwrap_or(0) > 20,
        "nothing ejected: {counts:?}"
    );
    assert_eq!(ejections(&s, &s.members[0]).await, 0.0, "nothing ejected");
}
