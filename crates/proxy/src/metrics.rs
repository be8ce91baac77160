//! Prometheus metrics: a collector walks the current snapshot and encodes the counters
//! of `stats.rs` when scraped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::context::Shared;
use crate::state::Health;
use crate::stats::{CLASSES, ERROR_KINDS, LOCAL_REPLIES, Stats};

/// Encodes the data plane's metrics on each scrape.
#[derive(Debug)]
struct Collector(Weak<Shared>);

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
            &s.buckets(),
            None,
        )?;
    }
    Ok(())
}

/// A model enum as its wire name: `TerminatedHttps` → `TERMINATED_HTTPS`.
fn wire_name(v: impl std::fmt::Debug) -> String {
    let debug = format!("{v:?}");
    let mut out = String::with_capacity(debug.len() + 4);
    for (i, c) in debug.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn load(a: &std::sync::atomic::AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
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
            for m in &pool.members {
                member_rows.push((
                    vec![("pool", pool.id.to_string()), ("member", m.id.to_string())],
                    m.state.as_ref(),
                ));
            }
            pool_totals.extend(by_class(&vec![("pool", pool.id.to_string())], &pool.stats));
        }

        // Names and addresses, to join on the id labels (`* on(pool) group_left(name)`).
        let rows: Vec<(Labels, i64)> = snap
            .listeners
            .values()
            .map(|l| {
                let labels = vec![
                    ("listener", l.id.to_string()),
                    ("name", l.name.clone()),
                    ("loadbalancer", l.loadbalancer.to_string()),
                    ("protocol", wire_name(l.protocol)),
                    ("address", l.bind.addr.to_string()),
                ];
                (labels, 1)
            })
            .collect();
        gauge(
            &mut encoder,
            "fulcrum_listener_info",
            "A listener's name, load balancer, protocol and address (value 1)",
            &rows,
        )?;
        let rows: Vec<(Labels, i64)> = snap
            .pools
            .values()
            .map(|p| {
                let labels = vec![
                    ("pool", p.id.to_string()),
                    ("name", p.name.clone()),
                    ("loadbalancer", p.loadbalancer.to_string()),
                    ("protocol", wire_name(p.protocol)),
                    ("algorithm", wire_name(p.algorithm)),
                ];
                (labels, 1)
            })
            .collect();
        gauge(
            &mut encoder,
            "fulcrum_pool_info",
            "A pool's name, load balancer, protocol and algorithm (value 1)",
            &rows,
        )?;
        let rows: Vec<(Labels, i64)> = snap
            .pools
            .values()
            .flat_map(|p| {
                p.members.iter().map(|m| {
                    let labels = vec![
                        ("pool", p.id.to_string()),
                        ("member", m.id.to_string()),
                        ("name", m.name.clone()),
                        ("address", m.authority.clone()),
                    ];
                    (labels, 1)
                })
            })
            .collect();
        gauge(
            &mut encoder,
            "fulcrum_member_info",
            "A member's name and address (value 1)",
            &rows,
        )?;

        let per_listener = |f: fn(&crate::stats::ListenerCounters) -> u64| -> Vec<(Labels, u64)> {
            snap.listeners
                .values()
                .map(|l| (vec![("listener", l.id.to_string())], f(&l.counters)))
                .collect()
        };
        counter(
            &mut encoder,
            "fulcrum_listener_connections",
            "Client connections accepted",
            &per_listener(|c| load(&c.connections)),
        )?;
        counter(
            &mut encoder,
            "fulcrum_listener_received_bytes",
            "Bytes received from clients (HTTP heads and bodies, TCP and UDP payload)",
            &per_listener(|c| load(&c.bytes_in)),
        )?;
        counter(
            &mut encoder,
            "fulcrum_listener_sent_bytes",
            "Bytes sent to clients",
            &per_listener(|c| load(&c.bytes_out)),
        )?;
        let rows: Vec<(Labels, u64)> = snap
            .listeners
            .values()
            .flat_map(|l| {
                LOCAL_REPLIES
                    .iter()
                    .zip(&l.counters.local)
                    .map(|(reason, n)| {
                        let labels = vec![
                            ("listener", l.id.to_string()),
                            ("reason", (*reason).to_owned()),
                        ];
                        (labels, load(n))
                    })
            })
            .collect();
        counter(
            &mut encoder,
            "fulcrum_listener_local_responses",
            "Answers fulcrum gave itself, not a member (by reason)",
            &rows,
        )?;
        // UDP listeners' flows and datagrams (only UDP listeners have rows).
        let udp = || snap.listeners.values().filter(|l| l.bind.udp);
        let rows: Vec<(Labels, i64)> = udp()
            .map(|l| {
                let open = load(&l.counters.udp.flows_open);
                (
                    vec![("listener", l.id.to_string())],
                    i64::try_from(open).unwrap_or(i64::MAX),
                )
            })
            .collect();
        gauge(
            &mut encoder,
            "fulcrum_listener_udp_flows_open",
            "UDP flows open now (a client address and port with its member socket)",
            &rows,
        )?;
        let rows: Vec<(Labels, u64)> = udp()
            .map(|l| {
                (
                    vec![("listener", l.id.to_string())],
                    load(&l.counters.udp.flows),
                )
            })
            .collect();
        counter(
            &mut encoder,
            "fulcrum_listener_udp_flows",
            "UDP flows created",
            &rows,
        )?;
        let rows: Vec<(Labels, u64)> = udp()
            .flat_map(|l| {
                [
                    ("in", &l.counters.udp.datagrams_in),
                    ("out", &l.counters.udp.datagrams_out),
                ]
                .into_iter()
                .map(|(direction, n)| {
                    let labels = vec![
                        ("listener", l.id.to_string()),
                        ("direction", direction.to_owned()),
                    ];
                    (labels, load(n))
                })
            })
            .collect();
        counter(
            &mut encoder,
            "fulcrum_listener_udp_datagrams",
            "UDP datagrams from clients (in) and relayed to them from members (out)",
            &rows,
        )?;
        // One row per listener and name: `names` zipped with the counters `of` gives.
        let by_name = |label: &'static str,
                       names: &'static [&'static str],
                       of: fn(&crate::stats::UdpCounters) -> &[AtomicU64]|
         -> Vec<(Labels, u64)> {
            udp()
                .flat_map(|l| {
                    names.iter().zip(of(&l.counters.udp)).map(move |(name, n)| {
                        let labels =
                            vec![("listener", l.id.to_string()), (label, (*name).to_owned())];
                        (labels, load(n))
                    })
                })
                .collect()
        };
        counter(
            &mut encoder,
            "fulcrum_listener_udp_dropped",
            "UDP datagrams dropped: a new flow past the cap (flow_cap) or with no member (no_member), larger than the path allows (too_large, EMSGSIZE), refused by the socket (send_failed, e.g. ICMP port unreachable)",
            &by_name("reason", &crate::stats::UDP_DROPS, |u| &u.dropped),
        )?;
        counter(
            &mut encoder,
            "fulcrum_listener_quic_flows",
            "QUIC pools' new flows by how they found their member: a QUIC-LB server ID in the connection ID (server_id), the hash of an Initial's client-chosen DCID (dcid_hash), source-IP persistence and hash (source)",
            &by_name("path", &crate::stats::QUIC_PATHS, |u| &u.quic_paths),
        )?;
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
        let rows: Vec<(Labels, u64)> = snap
            .pools
            .values()
            .map(|p| (vec![("pool", p.id.to_string())], load(&p.counters.retries)))
            .collect();
        counter(
            &mut encoder,
            "fulcrum_pool_retries",
            "Requests sent to another member after one failed",
            &rows,
        )?;
        let rows: Vec<(Labels, u64)> = snap
            .pools
            .values()
            .map(|p| {
                let refused = load(&p.counters.retries_refused);
                (vec![("pool", p.id.to_string())], refused)
            })
            .collect();
        counter(
            &mut encoder,
            "fulcrum_pool_retries_refused",
            "Retries not made because the pool's retry budget was spent",
            &rows,
        )?;
        let member_counter = |f: fn(&crate::state::MemberState) -> u64| -> Vec<(Labels, u64)> {
            member_rows.iter().map(|(l, s)| (l.clone(), f(s))).collect()
        };
        counter(
            &mut encoder,
            "fulcrum_member_ejections",
            "Times failed connects took the member out of rotation",
            &member_counter(|s| load(&s.ejections)),
        )?;
        counter(
            &mut encoder,
            "fulcrum_member_breaker_trips",
            "Times the member's circuit breaker opened",
            &member_counter(|s| load(&s.breaker_trips)),
        )?;
        let rows: Vec<(Labels, i64)> = member_rows
            .iter()
            .map(|(l, s)| (l.clone(), i64::from(s.breaker_open())))
            .collect();
        gauge(
            &mut encoder,
            "fulcrum_member_breaker_open",
            "1 while the member's circuit breaker is open",
            &rows,
        )?;
        let rows: Vec<(Labels, u64)> = member_rows
            .iter()
            .flat_map(|(l, s)| {
                [("passed", &s.checks_passed), ("failed", &s.checks_failed)]
                    .into_iter()
                    .map(move |(result, n)| {
                        let mut l = l.clone();
                        l.push(("result", result.to_owned()));
                        (l, load(n))
                    })
            })
            .collect();
        counter(
            &mut encoder,
            "fulcrum_member_health_checks",
            "Health checks of the member, by result",
            &rows,
        )?;
        let mut m = encoder.encode_descriptor(
            "fulcrum_member_health_check_duration_seconds",
            "Time spent in the member's health checks, in all (divide by the checks' count)",
            None,
            MetricType::Counter,
        )?;
        for (l, s) in &member_rows {
            let secs = load(&s.check_micros) as f64 / 1e6;
            m.encode_family(l)?
                .encode_counter::<NoLabelSet, _, u64>(&secs, None)?;
        }
        let rows: Vec<_> = member_rows
            .iter()
            .flat_map(|(l, s)| by_class(l, s.stats_or_zero()))
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
                ERROR_KINDS
                    .iter()
                    .zip(&s.stats_or_zero().errors)
                    .map(move |(k, n)| {
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
            .map(|(l, s)| (l.clone(), s.stats_or_zero()))
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
        if let Some(log) = &dp.access_log {
            let (written, dropped) = log.counts();
            counter(
                &mut encoder,
                "fulcrum_access_log_records",
                "Access-log records written",
                &[(Vec::new(), written)],
            )?;
            counter(
                &mut encoder,
                "fulcrum_access_log_dropped",
                "Access-log records dropped because the writer fell behind",
                &[(Vec::new(), dropped)],
            )?;
        }
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

/// The data plane's collector, for a registry of the caller's.
pub(crate) fn collector(dp: &Arc<Shared>) -> Box<dyn prometheus_client::collector::Collector> {
    Box::new(Collector(Arc::downgrade(dp)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    /// Encodes one histogram row the way the collector does.
    #[derive(Debug)]
    struct One(Arc<Stats>);

    impl prometheus_client::collector::Collector for One {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            histogram(&mut encoder, "t", "test", &[(Vec::new(), self.0.as_ref())])
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative_once() {
        let stats = Arc::new(Stats::default());
        for ms in [0.7, 0.7, 3.0, 40.0, 3_000.0, 0.7, 0.7] {
            stats.record(200, std::time::Duration::from_secs_f64(ms / 1000.0));
        }
        let mut r = Registry::default();
        r.register_collector(Box::new(One(stats)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap_or_default();
        let bucket = |le: &str| -> u64 {
            text.lines()
                .find(|l| l.starts_with("t_bucket") && l.contains(&format!("le=\"{le}\"")))
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                .unwrap_or(u64::MAX)
        };
        assert_eq!(bucket("0.001"), 4, "{text}");
        assert_eq!(bucket("0.005"), 5, "{text}");
        assert_eq!(bucket("0.05"), 6, "{text}");
        assert_eq!(bucket("2.5"), 6, "{text}");
        assert_eq!(bucket("+Inf"), 7, "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("t_count") && l.ends_with(" 7")),
            "{text}"
        );
    }
}
