//! Prometheus metrics. Requests bump plain atomics held by the listener's and the member's
//! live state (no label lookup, no lock, no allocation on the request path); a collector
//! walks the current snapshot and encodes them when scraped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::DataPlaneInner;
use crate::state::Health;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Why a request to a member failed before it answered.
#[derive(Clone, Copy)]
pub enum ErrorKind {
    Connect = 0,
    Timeout = 1,
    Reset = 2,
}
const ERROR_KINDS: [&str; 3] = ["connect", "timeout", "reset"];

#[derive(Default)]
pub struct Stats {
    by_class: [AtomicU64; 5],
    errors: [AtomicU64; 3],
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Stats {
    pub fn record(&self, status: u16, elapsed: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn error(&self, kind: ErrorKind) {
        self.errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn cumulative_buckets(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        let mut out: Vec<(f64, u64)> = BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(b, n)| {
                total += n.load(Ordering::Relaxed);
                (*b, total)
            })
            .collect();
        out.push((f64::INFINITY, self.count.load(Ordering::Relaxed)));
        out
    }
}

/// Hands out one `Stats` per listener id, alive as long as a snapshot holds it.
#[derive(Default)]
pub struct StatsRegistry(crate::weak_map::WeakMap<String, Stats>);

impl StatsRegistry {
    pub fn get(&self, id: &str) -> Arc<Stats> {
        self.0.get_or_insert_with(id, Stats::default).0
    }
}

/// Encodes the data plane's metrics on each scrape.
#[derive(Debug)]
struct Collector(Weak<DataPlaneInner>);

type Labels = Vec<(&'static str, String)>;

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        m.encode_family(labels)?
            .encode_counter::<NoLabelSet, _, u64>(v, None)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, i64)],
) -> Result<(), std::fmt::Error> {
    let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        m.encode_family(labels)?.encode_gauge(v)?;
    }
    Ok(())
}

fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, &Stats)],
) -> Result<(), std::fmt::Error> {
    let mut m = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, s) in rows {
        let sum = s.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        m.encode_family(labels)?.encode_histogram::<NoLabelSet>(
            sum,
            s.count.load(Ordering::Relaxed),
            &s.cumulative_buckets(),
            None,
        )?;
    }
    Ok(())
}

fn by_class(labels: &Labels, s: &Stats) -> impl Iterator<Item = (Labels, u64)> {
    CLASSES.iter().zip(&s.by_class).map(move |(c, n)| {
        let mut l = labels.clone();
        l.push(("code_class", (*c).to_owned()));
        (l, n.load(Ordering::Relaxed))
    })
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(dp) = self.0.upgrade() else {
            return Ok(());
        };
        let snap = dp.snapshot.load();
        let listeners: Vec<(Labels, &Stats)> = snap
            .listeners
            .values()
            .map(|l| (vec![("listener", l.id.to_string())], l.stats.as_ref()))
            .collect();
        let mut member_rows: Vec<(Labels, &crate::state::MemberState)> = Vec::new();
        let mut pool_totals: Vec<(Labels, u64)> = Vec::new();
        for pool in snap.pools.values() {
            let mut totals = [0u64; 5];
            for m in &pool.members {
                member_rows.push((
                    vec![("pool", pool.id.to_string()), ("member", m.id.to_string())],
                    m.state.as_ref(),
                ));
                for (t, n) in totals.iter_mut().zip(&m.state.stats.by_class) {
                    *t += n.load(Ordering::Relaxed);
                }
            }
            for (c, n) in CLASSES.iter().zip(totals) {
                pool_totals.push((
                    vec![
                        ("pool", pool.id.to_string()),
                        ("code_class", (*c).to_owned()),
                    ],
                    n,
                ));
            }
        }

        let rows: Vec<_> = listeners.iter().flat_map(|(l, s)| by_class(l, s)).collect();
        counter(
            &mut encoder,
            "fulcrum_listener_requests",
            "Responses sent to clients, by status class",
            &rows,
        )?;
        histogram(
            &mut encoder,
            "fulcrum_listener_request_duration_seconds",
            "Time from request to response headers",
            &listeners,
        )?;
        counter(
            &mut encoder,
            "fulcrum_pool_responses",
            "Member responses, by pool and status class",
            &pool_totals,
        )?;
        let rows: Vec<_> = member_rows
            .iter()
            .flat_map(|(l, s)| by_class(l, &s.stats))
            .collect();
        counter(
            &mut encoder,
            "fulcrum_member_responses",
            "Member responses, by status class",
            &rows,
        )?;
        let rows: Vec<_> = member_rows
            .iter()
            .flat_map(|(l, s)| {
                ERROR_KINDS.iter().zip(&s.stats.errors).map(move |(k, n)| {
                    let mut l = l.clone();
                    l.push(("kind", (*k).to_owned()));
                    (l, n.load(Ordering::Relaxed))
                })
            })
            .collect();
        counter(
            &mut encoder,
            "fulcrum_member_errors",
            "Requests to a member that failed before it answered",
            &rows,
        )?;
        let hist: Vec<_> = member_rows
            .iter()
            .map(|(l, s)| (l.clone(), &s.stats))
            .collect();
        histogram(
            &mut encoder,
            "fulcrum_member_request_duration_seconds",
            "Time from sending to a member to its response headers",
            &hist,
        )?;
        let rows: Vec<_> = member_rows
            .iter()
            .map(|(l, s)| (l.clone(), i64::try_from(s.in_flight()).unwrap_or(i64::MAX)))
            .collect();
        gauge(
            &mut encoder,
            "fulcrum_member_in_flight",
            "Requests or connections in flight",
            &rows,
        )?;
        let rows: Vec<_> = member_rows
            .iter()
            .map(|(l, s)| {
                let v = match s.health() {
                    Health::Unhealthy => 0,
                    _ if s.passively_ejected() || s.breaker_open() => 0,
                    _ => 1,
                };
                (l.clone(), v)
            })
            .collect();
        gauge(
            &mut encoder,
            "fulcrum_member_available",
            "1 when the member may take traffic by health, 0 when ejected",
            &rows,
        )?;
        gauge(
            &mut encoder,
            "fulcrum_config_revision",
            "The newest configuration revision compiled into what the data plane serves",
            &[(Vec::new(), snap.revision)],
        )?;
        gauge(
            &mut encoder,
            "fulcrum_open_connections",
            "Open client connections",
            &[(
                Vec::new(),
                i64::try_from(dp.connections.get()).unwrap_or(i64::MAX),
            )],
        )?;
        Ok(())
    }
}

/// A registry holding the data plane's collector.
pub(crate) fn registry(dp: &Arc<DataPlaneInner>) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(Collector(Arc::downgrade(dp))));
    r
}
