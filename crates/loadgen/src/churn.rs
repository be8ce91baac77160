//! `churn`: PATCH the benchmark pool's member weights at a fixed rate for a fixed time (open
//! loop), while the proxy serves traffic from that pool. Replaces the Python driver that
//! `bench/lib/fulcrum_api.py churn` was; same schedule, same report keys.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, ensure};
use bytes::Bytes;
use clap::Args;
use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::client::{Client, Endpoint};
use crate::stats::{ms, percentile, round, sorted};
use crate::{ApiArgs, Outcome};

#[derive(Args)]
pub struct ChurnArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// State file written by `bench/lib/fulcrum_api.py setup` (`http_pool`, `http_members`).
    #[arg(long)]
    state: String,
    /// Changes per second.
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// Seconds.
    #[arg(long)]
    duration: f64,
    /// Keep-alive API connections (each sends one change at a time).
    #[arg(long, default_value_t = 16)]
    connections: usize,
}

/// A request sent more than this after it was due counts as late.
const LATE: Duration = Duration::from_millis(5);
/// The first request is due this long after the workers start.
const LEAD: Duration = Duration::from_millis(50);

#[derive(Deserialize)]
struct State {
    http_pool: String,
    http_members: Vec<String>,
}

/// Which change is due when: request `i` (of `total`) is due `i / rate` seconds after the
/// start, and sets member `i mod m` to weight `1 + (i div m) mod 2`, so every member
/// alternates between 1 and 2 and each change recompiles the pool.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    rate: f64,
    members: u64,
    pub total: u64,
}

impl Schedule {
    pub fn new(rate: f64, duration: f64, members: usize) -> anyhow::Result<Self> {
        ensure!(rate.is_finite() && rate > 0.0, "--rate must be positive");
        ensure!(
            duration.is_finite() && duration >= 0.0,
            "--duration must not be negative"
        );
        ensure!(members > 0, "the state file lists no members");
        Ok(Self {
            rate,
            members: members as u64,
            // Truncated, like Python's int(rate * duration).
            total: (rate * duration) as u64,
        })
    }

    /// When request `i` is due, after the start.
    pub fn due(&self, i: u64) -> Duration {
        Duration::from_secs_f64(i as f64 / self.rate)
    }

    /// Index of the member request `i` changes.
    pub fn member(&self, i: u64) -> usize {
        (i % self.members) as usize
    }

    /// The weight request `i` sets.
    pub fn weight(&self, i: u64) -> u64 {
        1 + (i / self.members) % 2
    }
}

/// Key of an answer in `statuses`: `"200"` for success, `"<status> <code>"` otherwise, with the
/// error body's `code` when it has one, exactly as the Python driver counted them.
pub fn status_key(status: StatusCode, body: &[u8]) -> String {
    if status.as_u16() < 300 {
        return status.as_u16().to_string();
    }
    let code = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| match v.get("code") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Null) | None => None,
            Some(other) => Some(other.to_string()),
        })
        .unwrap_or_default();
    format!("{} {code}", status.as_u16()).trim().to_owned()
}

#[derive(Default)]
struct Tally {
    statuses: BTreeMap<String, u64>,
    ok: u64,
    /// Latencies (ms) of every answer, whatever its status.
    latencies: Vec<f64>,
    exceptions: u64,
    late: u64,
}

impl Tally {
    fn merge(&mut self, o: Tally) {
        for (k, n) in o.statuses {
            *self.statuses.entry(k).or_default() += n;
        }
        self.ok += o.ok;
        self.latencies.extend(o.latencies);
        self.exceptions += o.exceptions;
        self.late += o.late;
    }
}

#[derive(Serialize)]
struct Report {
    target_per_s: f64,
    attempted: u64,
    ok: u64,
    statuses: BTreeMap<String, u64>,
    exceptions: u64,
    achieved_per_s: Option<f64>,
    api_p50_ms: f64,
    api_p99_ms: f64,
    late: u64,
}

pub async fn run(a: ChurnArgs) -> anyhow::Result<Outcome> {
    ensure!(a.connections > 0, "--connections must be at least 1");
    let text = std::fs::read_to_string(&a.state).with_context(|| format!("reading {}", a.state))?;
    let state: State =
        serde_json::from_str(&text).with_context(|| format!("{}: not a setup state", a.state))?;
    let schedule = Schedule::new(a.rate, a.duration, state.http_members.len())?;
    let ep = Endpoint::new(&a.api, Duration::from_secs(10))?;
    let paths: Arc<Vec<String>> = Arc::new(
        state
            .http_members
            .iter()
            .map(|m| format!("/v1/pools/{}/members/{m}", state.http_pool))
            .collect(),
    );
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + LEAD;
    eprintln!(
        "fulcrum-loadgen churn: {} changes at {}/s over {} connection(s)",
        schedule.total, a.rate, a.connections
    );

    let mut tasks = Vec::with_capacity(a.connections);
    for _ in 0..a.connections {
        let (ep, paths, next) = (ep.clone(), paths.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = Client::new(ep);
            let mut t = Tally::default();
            let mut logged = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= schedule.total {
                    return t;
                }
                let due = start + schedule.due(i);
                tokio::time::sleep_until(due).await;
                let body = Bytes::from(format!("{{\"weight\":{}}}", schedule.weight(i)));
                let t0 = Instant::now();
                if t0 > due + LATE {
                    t.late += 1;
                }
                match client
                    .call(Method::PATCH, &paths[schedule.member(i)], body)
                    .await
                {
                    Ok(reply) => {
                        t.latencies.push(ms(t0.elapsed()));
                        if reply.status.is_success() {
                            t.ok += 1;
                        }
                        *t.statuses
                            .entry(status_key(reply.status, &reply.body))
                            .or_default() += 1;
                    }
                    Err(e) => {
                        t.exceptions += 1;
                        if logged < 3 {
                            logged += 1;
                            eprintln!("fulcrum-loadgen churn: request {i}: {e:#}");
                        }
                    }
                }
            }
        }));
    }
    let mut all = Tally::default();
    for task in tasks {
        all.merge(task.await.context("a churn worker panicked")?);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let lat = sorted(std::mem::take(&mut all.latencies));
    let report = Report {
        target_per_s: a.rate,
        attempted: schedule.total,
        ok: all.ok,
        statuses: all.statuses,
        exceptions: all.exceptions,
        achieved_per_s: (elapsed > 0.0).then(|| round(all.ok as f64 / elapsed, 1)),
        api_p50_ms: round(percentile(&lat, 50.0).unwrap_or(0.0), 2),
        api_p99_ms: round(percentile(&lat, 99.0).unwrap_or(0.0), 2),
        late: all.late,
    };
    let failure = (schedule.total > 0 && report.ok == 0)
        .then(|| format!("none of {} changes was acknowledged", schedule.total));
    Ok(Outcome {
        json: serde_json::to_string(&report)?,
        failure,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_counts_like_python() {
        assert_eq!(Schedule::new(500.0, 3.0, 3).unwrap().total, 1500);
        // int() truncates.
        assert_eq!(Schedule::new(500.0, 0.0031, 3).unwrap().total, 1);
        assert_eq!(Schedule::new(3.0, 0.5, 3).unwrap().total, 1);
        assert!(Schedule::new(0.0, 3.0, 3).is_err());
        assert!(Schedule::new(500.0, -1.0, 3).is_err());
        assert!(Schedule::new(500.0, 3.0, 0).is_err());
    }

    #[test]
    fn due_times_are_evenly_spaced() {
        let s = Schedule::new(500.0, 10.0, 3).unwrap();
        assert_eq!(s.due(0), Duration::ZERO);
        assert_eq!(s.due(1), Duration::from_millis(2));
        assert_eq!(s.due(500), Duration::from_secs(1));
        assert_eq!(s.due(4999), Duration::from_millis(9998));
    }

    #[test]
    fn members_cycle_and_weights_alternate_per_pass() {
        let s = Schedule::new(500.0, 10.0, 3).unwrap();
        let got: Vec<(usize, u64)> = (0..9).map(|i| (s.member(i), s.weight(i))).collect();
        assert_eq!(
            got,
            vec![
                (0, 1),
                (1, 1),
                (2, 1),
                (0, 2),
                (1, 2),
                (2, 2),
                (0, 1),
                (1, 1),
                (2, 1)
            ]
        );
        // Each member's consecutive changes alternate 1, 2, 1, …
        let one = Schedule::new(10.0, 1.0, 1).unwrap();
        assert_eq!(
            (0..4).map(|i| one.weight(i)).collect::<Vec<_>>(),
            [1, 2, 1, 2]
        );
    }

    #[test]
    fn status_keys_like_python() {
        assert_eq!(status_key(StatusCode::OK, b"{}"), "200");
        assert_eq!(status_key(StatusCode::ACCEPTED, b""), "202");
        assert_eq!(
            status_key(
                StatusCode::SERVICE_UNAVAILABLE,
                br#"{"code":"StoreUnavailable","message":"disk full"}"#
            ),
            "503 StoreUnavailable"
        );
        assert_eq!(status_key(StatusCode::CONFLICT, b"not json"), "409");
        assert_eq!(status_key(StatusCode::CONFLICT, br#"{"code":null}"#), "409");
        assert_eq!(
            status_key(StatusCode::BAD_REQUEST, br#"{"code":7}"#),
            "400 7"
        );
    }
}
