//! What `/metrics` serves besides the data plane's collector: API requests, rate-limited
//! calls and work-request latency (the families of `fulcrum_api_core::metrics`, updated as
//! requests pass), connection figures, and `build_info` and process metrics (read from
//! `/proc/self` on each scrape).

use std::sync::Arc;

use fulcrum_api_core::metrics::ApiMetrics;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// Everything `/metrics` serves, in one registry encoded once per scrape.
pub struct Metrics {
    registry: Registry,
    api: Arc<ApiMetrics>,
    connections: crate::server::ConnectionStats,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with the API's families, `fulcrum_build_info` and process metrics.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let api = Arc::new(ApiMetrics::default());
        api.register(&mut registry);
        let connections = crate::server::ConnectionStats::default();
        connections.register(&mut registry);
        registry.register_collector(Box::new(ProcessCollector));
        Metrics {
            registry,
            api,
            connections,
        }
    }

    /// The API server's connection figures, for [`crate::serve`] to keep.
    pub fn connection_stats(&self) -> crate::server::ConnectionStats {
        self.connections.clone()
    }

    /// Adds a collector encoded on each scrape (the data plane's).
    pub fn register_collector(&mut self, collector: Box<dyn Collector>) {
        self.registry.register_collector(collector);
    }

    pub(crate) fn into_parts(self) -> (Arc<Registry>, Arc<ApiMetrics>) {
        (Arc::new(self.registry), self.api)
    }
}

/// The OpenMetrics text of a registry (`# EOF` last).
pub(crate) fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    out
}

/// `fulcrum_build_info` and the process metrics every Prometheus client library exports
/// (same names and units), read from `/proc/self` when scraped.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encoder
            .encode_descriptor(
                "fulcrum_build_info",
                "1, labelled with the version of fulcrum running",
                None,
                MetricType::Gauge,
            )?
            .encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?
            .encode_gauge(&1)?;
        let p = ProcessStats::read();
        if let Some(cpu) = p.cpu_seconds {
            encoder
                .encode_descriptor(
                    "process_cpu_seconds",
                    "Total user and system CPU time spent in seconds",
                    None,
                    MetricType::Counter,
                )?
                .encode_counter::<NoLabelSet, _, u64>(&cpu, None)?;
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                p.resident_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                p.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                p.max_fds,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                p.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                encoder
                    .encode_descriptor(name, help, None, MetricType::Gauge)?
                    .encode_gauge(&v)?;
            }
        }
        Ok(())
    }
}

/// What `/proc` says about this process; a value it does not give is left out.
#[derive(Debug, Default)]
struct ProcessStats {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<f64>,
    open_fds: Option<f64>,
    max_fds: Option<f64>,
    start_time_seconds: Option<f64>,
}

impl ProcessStats {
    #[cfg(target_os = "linux")]
    fn read() -> Self {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let boot_time = std::fs::read_to_string("/proc/stat").ok();
        let mut p = parse_stat(
            stat.as_deref().unwrap_or_default(),
            boot_time.as_deref().unwrap_or_default(),
            rustix::param::clock_ticks_per_second(),
            rustix::param::page_size() as u64,
        );
        p.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as f64);
        p.max_fds = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .map(|n| n as f64);
        p
    }

    #[cfg(not(target_os = "linux"))]
    fn read() -> Self {
        Self::default()
    }
}

/// CPU time, resident memory and start time from `/proc/self/stat` (fields after the
/// command name, which is in parentheses and may hold spaces) and `btime` of `/proc/stat`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_stat(stat: &str, proc_stat: &str, ticks: u64, page_size: u64) -> ProcessStats {
    let mut p = ProcessStats::default();
    let Some((_, after)) = stat.rsplit_once(')') else {
        return p;
    };
    // `after` starts with field 3 (state): field n is at index n - 3.
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let ticks = ticks.max(1) as f64;
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        p.cpu_seconds = Some((utime + stime) as f64 / ticks);
    }
    p.resident_bytes = field(24).map(|pages| (pages * page_size) as f64);
    let btime = proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok());
    if let (Some(btime), Some(start)) = (btime, field(22)) {
        p.start_time_seconds = Some(btime as f64 + start as f64 / ticks);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample `name{labels}` on the page (labels as encoded).
    fn sample(page: &str, name_and_labels: &str) -> Option<f64> {
        page.lines()
            .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    }

    #[tokio::test]
    async fn requests_are_counted_by_front_door_route_and_status_and_429s_apart() {
        use tower::ServiceExt;
        let (_dir, control) = fulcrum_control::testing::control().await;
        let config = crate::ApiConfig {
            tokens: vec![crate::ApiToken::admin("t", "tok")],
            rate_per_second: 0.001,
            rate_burst: 2,
            ..Default::default()
        };
        let app = crate::router(control, &config, Some(Metrics::new()));
        let send = |method: &str, uri: &str, token: Option<&str>| {
            let mut req = http::Request::builder().method(method).uri(uri);
            if let Some(t) = token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            app.clone()
                .oneshot(req.body(axum::body::Body::empty()).unwrap())
        };
        let statuses = [
            send("GET", "/v1/loadbalancers/abc", Some("tok"))
                .await
                .unwrap()
                .status(),
            send("POST", "/v1/loadbalancers", Some("tok"))
                .await
                .unwrap()
                .status(),
            send("GET", "/v1/loadbalancers/def", Some("tok"))
                .await
                .unwrap()
                .status(),
            send("GET", "/v1/loadbalancers/ghi", Some("tok"))
                .await
                .unwrap()
                .status(),
            send("GET", "/v1/loadbalancers", None)
                .await
                .unwrap()
                .status(),
            send("GET", "//20170115/loadBalancers", None)
                .await
                .unwrap()
                .status(),
            send("GET", "/nothing/here", None).await.unwrap().status(),
        ];
        assert_eq!(
            statuses.map(|s| s.as_u16()),
            [404, 400, 429, 429, 401, 401, 401]
        );
        let page = send("GET", "/metrics", None).await.unwrap();
        let page = axum::body::to_bytes(page.into_body(), 1 << 20)
            .await
            .unwrap();
        let page = String::from_utf8(page.to_vec()).unwrap();
        let requests =
            |labels: &str| sample(&page, &format!("fulcrum_api_requests_total{{{labels}}}"));
        let lb = r#"front_door="native",operation="/v1/loadbalancers/{id}",method="GET""#;
        assert_eq!(
            requests(&format!(r#"{lb},status="404""#)),
            Some(1.0),
            "{page}"
        );
        assert_eq!(
            requests(&format!(r#"{lb},status="429""#)),
            Some(2.0),
            "{page}"
        );
        assert_eq!(
            requests(
                r#"front_door="oci",operation="/20170115/loadBalancers",method="GET",status="401""#
            ),
            Some(1.0),
            "{page}"
        );
        // A path no route matches is counted without its path.
        assert_eq!(
            requests(r#"front_door="none",operation="unmatched",method="GET",status="401""#),
            Some(1.0),
            "{page}"
        );
        assert_eq!(
            sample(
                &page,
                r#"fulcrum_api_rate_limited_total{front_door="native"}"#
            ),
            Some(2.0),
            "{page}"
        );
        assert_eq!(
            sample(
                &page,
                &format!("fulcrum_api_request_duration_seconds_count{{{lb}}}")
            ),
            Some(3.0),
            "{page}"
        );
        // No raw path with an id becomes a label; /metrics itself is not counted.
        for raw in ["abc", "nothing", "/metrics\""] {
            assert!(!page.contains(raw), "{raw} in {page}");
        }
        assert_eq!(page.matches("# EOF").count(), 1);
    }

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        // A command name with spaces and parentheses, as the kernel writes it.
        let stat = "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    250 130 0 0 20 0 9 0 5000 123456789 321 18446744073709551615 \
                    1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";
        let p = parse_stat(
            stat,
            "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n",
            100,
            4096,
        );
        assert_eq!(p.cpu_seconds, Some(3.8));
        assert_eq!(p.resident_bytes, Some(321.0 * 4096.0));
        assert_eq!(p.start_time_seconds, Some(1_700_000_050.0));
    }

    #[test]
    fn unreadable_stat_gives_nothing() {
        let p = parse_stat("garbage", "", 100, 4096);
        assert_eq!(p.cpu_seconds, None);
        assert_eq!(p.resident_bytes, None);
        assert_eq!(p.start_time_seconds, None);
    }
}
