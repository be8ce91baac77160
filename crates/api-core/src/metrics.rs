//! The API's own metric families (requests, latency, rate-limited calls, work-request
//! durations), updated by `request::observe` as requests pass and by the control plane's
//! work-request hook. `fulcrum-api` registers them in the registry `/metrics` serves.

use std::sync::Arc;
use std::time::Duration;

use fulcrum_control::FinishedHook;
use fulcrum_model::WorkRequestStatus;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    front_door: &'static str,
    operation: String,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    front_door: &'static str,
    operation: String,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FrontDoorLabels {
    front_door: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// API calls take milliseconds; a change that waits for the data plane, seconds.
const API_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// From a change's acceptance to its final status (recorded at most every 20 ms).
const WORK_REQUEST_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

fn api_histogram() -> Histogram {
    Histogram::new(API_BUCKETS)
}

fn work_request_histogram() -> Histogram {
    Histogram::new(WORK_REQUEST_BUCKETS)
}

/// The API's own families. Updating one takes `Family`'s read lock on the label set and
/// atomics, nothing global beyond that.
pub struct ApiMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily<OperationLabels>,
    rate_limited: Family<FrontDoorLabels, Counter>,
    work_requests: HistogramFamily<StatusLabels>,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        ApiMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(api_histogram),
            rate_limited: Family::default(),
            work_requests: Family::new_with_constructor(work_request_histogram),
        }
    }
}

impl ApiMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "fulcrum_api_requests",
            "API requests answered, by front door, operation (route template), method and status",
            self.requests.clone(),
        );
        r.register(
            "fulcrum_api_request_duration_seconds",
            "Time to answer an API request, by front door, operation and method",
            self.duration.clone(),
        );
        r.register(
            "fulcrum_api_rate_limited",
            "API calls refused by the per-caller rate limit (429), by front door",
            self.rate_limited.clone(),
        );
        r.register(
            "fulcrum_work_request_duration_seconds",
            "Time from a change's acceptance to its work request's final status",
            self.work_requests.clone(),
        );
    }

    /// Counts one answered request.
    pub fn observe_request(
        &self,
        front_door: &'static str,
        operation: String,
        method: &'static str,
        status: u16,
        elapsed: Duration,
    ) {
        let labels = OperationLabels {
            front_door,
            operation,
            method,
        };
        self.duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if status == 429 {
            self.rate_limited
                .get_or_create(&FrontDoorLabels { front_door })
                .inc();
        }
        self.requests
            .get_or_create(&RequestLabels {
                front_door: labels.front_door,
                operation: labels.operation,
                method: labels.method,
                status,
            })
            .inc();
    }

    /// What the control plane calls for each work request it records as finished.
    pub fn work_request_hook(self: &Arc<Self>) -> FinishedHook {
        let this = Arc::downgrade(self);
        Arc::new(move |wr| {
            let Some(this) = this.upgrade() else { return };
            let status = match wr.status {
                WorkRequestStatus::Succeeded => "SUCCEEDED",
                WorkRequestStatus::Failed => "FAILED",
                _ => return,
            };
            let Some(finished) = wr.finished_at else {
                return;
            };
            let secs = (finished - wr.accepted_at)
                .to_std()
                .unwrap_or_default()
                .as_secs_f64();
            this.work_requests
                .get_or_create(&StatusLabels { status })
                .observe(secs);
        })
    }
}
