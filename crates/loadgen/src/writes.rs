//! `writes`: acknowledged durable writes per second (closed loop). Each client PATCHes its own
//! member's weight (1, 2, 1, …) back to back on its own keep-alive connection; a 2xx answer is
//! a change the store has committed. Clients are spread round robin over several load
//! balancers, one pool each, so writes to different load balancers can proceed side by side.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, anyhow, ensure};
use bytes::Bytes;
use clap::Args;
use hyper::Method;
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

use crate::client::{Client, Endpoint};
use crate::stats::{ms, percentile, round, sorted};
use crate::{ApiArgs, Outcome, check_window};

#[derive(Args)]
pub struct WritesArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Concurrent clients, one keep-alive connection and one member each.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Load balancers (one pool each) the clients' members are spread over.
    #[arg(long, default_value_t = 4)]
    loadbalancers: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured seconds of the same load first.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
}

/// Client `c`'s member: (load balancer index, index of the member in that load balancer's pool).
pub fn placement(client: usize, loadbalancers: usize) -> (usize, usize) {
    (client % loadbalancers, client / loadbalancers)
}

/// The address of member `n` of load balancer `lb`: 10.9.<lb>.<n+1> (nothing listens there; no
/// traffic goes to it).
pub fn member_address(lb: usize, n: usize) -> String {
    format!("10.9.{lb}.{}", n + 1)
}

fn check_sizes(clients: usize, loadbalancers: usize) -> anyhow::Result<()> {
    ensure!(clients > 0, "--clients must be at least 1");
    ensure!(
        (1..=256).contains(&loadbalancers),
        "--loadbalancers must be 1 to 256"
    );
    ensure!(
        clients.div_ceil(loadbalancers) <= 254,
        "at most 254 clients per load balancer (member addresses 10.9.<lb>.1-254)"
    );
    Ok(())
}

#[derive(Default)]
struct Tally {
    statuses: BTreeMap<String, u64>,
    /// Latencies (ms) of the 2xx answers.
    acked: Vec<f64>,
    errors: u64,
}

#[derive(Serialize)]
struct Report {
    clients: usize,
    loadbalancers: usize,
    duration_s: f64,
    acked: u64,
    acked_per_s: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
    statuses: BTreeMap<String, u64>,
    errors: u64,
}

fn id_of(v: &serde_json::Value, what: &str) -> anyhow::Result<String> {
    v.get("id")
        .and_then(|id| id.as_str())
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("the new {what} has no id: {v}"))
}

/// Creates the load balancers, pools and members; returns each client's member path.
async fn setup(
    client: &mut Client,
    clients: usize,
    loadbalancers: usize,
) -> anyhow::Result<Vec<String>> {
    let mut pools = Vec::with_capacity(loadbalancers);
    for i in 0..loadbalancers {
        let lb = client
            .must(
                Method::POST,
                "/v1/loadbalancers",
                &json!({ "name": format!("writes-{i}") }),
            )
            .await?;
        let lb = id_of(&lb, "load balancer")?;
        let pool = client
            .must(
                Method::POST,
                &format!("/v1/loadbalancers/{lb}/pools"),
                &json!({ "name": "p", "protocol": "HTTP", "algorithm": "ROUND_ROBIN" }),
            )
            .await?;
        pools.push(id_of(&pool, "pool")?);
    }
    let mut paths = Vec::with_capacity(clients);
    for c in 0..clients {
        let (lb, n) = placement(c, loadbalancers);
        let pool = &pools[lb];
        let member = client
            .must(
                Method::POST,
                &format!("/v1/pools/{pool}/members"),
                &json!({ "address": member_address(lb, n), "port": 8080 }),
            )
            .await?;
        paths.push(format!(
            "/v1/pools/{pool}/members/{}",
            id_of(&member, "member")?
        ));
    }
    Ok(paths)
}

pub async fn run(a: WritesArgs) -> anyhow::Result<Outcome> {
    check_sizes(a.clients, a.loadbalancers)?;
    check_window(a.duration, a.warmup)?;
    let ep = Endpoint::new(&a.api, Duration::from_secs(10))?;
    let mut setup_client = Client::new(ep.clone());
    let paths = setup(&mut setup_client, a.clients, a.loadbalancers)
        .await
        .context("setting up through the API")?;
    drop(setup_client);
    eprintln!(
        "fulcrum-loadgen writes: {} load balancer(s), {} member(s); {} s warm-up, {} s measured",
        a.loadbalancers, a.clients, a.warmup, a.duration
    );

    let measure_from = Instant::now() + Duration::from_secs_f64(a.warmup);
    let until = measure_from + Duration::from_secs_f64(a.duration);
    let mut tasks = Vec::with_capacity(paths.len());
    for path in paths {
        let ep = ep.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::new(ep);
            let mut t = Tally::default();
            let mut weight = 1;
            let mut logged = 0;
            loop {
                let sent = Instant::now();
                if sent >= until {
                    return t;
                }
                let body = Bytes::from(format!("{{\"weight\":{weight}}}"));
                weight = 3 - weight;
                let r = client.call(Method::PATCH, &path, body).await;
                let done = Instant::now();
                // Counted when the answer comes within the measured window.
                let measured = done >= measure_from && done < until;
                match r {
                    Ok(reply) => {
                        if measured {
                            *t.statuses
                                .entry(reply.status.as_u16().to_string())
                                .or_default() += 1;
                            if reply.status.is_success() {
                                t.acked.push(ms(done - sent));
                            }
                        }
                    }
                    Err(e) => {
                        if measured {
                            t.errors += 1;
                        }
                        if logged < 3 {
                            logged += 1;
                            eprintln!("fulcrum-loadgen writes: {path}: {e:#}");
                        }
                        // The next call reconnects; do not spin if the server is gone.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }));
    }
    let mut all = Tally::default();
    for task in tasks {
        let t = task.await.context("a writes client panicked")?;
        for (k, n) in t.statuses {
            *all.statuses.entry(k).or_default() += n;
        }
        all.acked.extend(t.acked);
        all.errors += t.errors;
    }
    let lat = sorted(all.acked);
    let acked = lat.len() as u64;
    let report = Report {
        clients: a.clients,
        loadbalancers: a.loadbalancers,
        duration_s: a.duration,
        acked,
        acked_per_s: round(acked as f64 / a.duration, 1),
        p50_ms: percentile(&lat, 50.0).map(|x| round(x, 2)),
        p99_ms: percentile(&lat, 99.0).map(|x| round(x, 2)),
        max_ms: percentile(&lat, 100.0).map(|x| round(x, 2)),
        statuses: all.statuses,
        errors: all.errors,
    };
    let failure = (acked == 0).then(|| "no write was acknowledged".to_owned());
    Ok(Outcome {
        json: serde_json::to_string(&report)?,
        failure,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_spread_round_robin_over_load_balancers() {
        let got: Vec<(usize, usize)> = (0..6).map(|c| placement(c, 4)).collect();
        assert_eq!(got, vec![(0, 0), (1, 0), (2, 0), (3, 0), (0, 1), (1, 1)]);
        // 16 clients over 4: four members each.
        let mut per_lb = [0; 4];
        for c in 0..16 {
            per_lb[placement(c, 4).0] += 1;
        }
        assert_eq!(per_lb, [4; 4]);
    }

    #[test]
    fn member_addresses() {
        assert_eq!(member_address(0, 0), "10.9.0.1");
        assert_eq!(member_address(3, 3), "10.9.3.4");
        assert_eq!(member_address(255, 253), "10.9.255.254");
    }

    #[test]
    fn sizes() {
        assert!(check_sizes(16, 4).is_ok());
        assert!(check_sizes(254, 1).is_ok());
        assert!(check_sizes(255, 1).is_err());
        assert!(check_sizes(0, 4).is_err());
        assert!(check_sizes(16, 0).is_err());
        assert!(check_sizes(16, 257).is_err());
    }
}
