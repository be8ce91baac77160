//! What the data plane measured of recent traffic, as the API reports it (`/v1/stats`).
//! Figures are this node's own: in a fleet each node answers for the traffic it carried.

use fulcrum_model::{ListenerId, MemberId, PoolId};

/// Requests over the recent window and in all.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrafficFigures {
    pub requests_per_second: f64,
    /// Share of requests in the window that failed: a 5xx answer, or (for members) no
    /// answer at all (connect failure, reset, timeout).
    pub error_rate: f64,
    /// Latency quantiles over the window (None: no request in it, or not measured).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub requests_total: u64,
}

/// What health checks and passive observation say of a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObservedHealth {
    Unknown,
    Healthy,
    Unhealthy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    /// The trip is over: the next request decides.
    HalfOpen,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MemberTraffic {
    pub id: MemberId,
    pub pool_id: PoolId,
    pub figures: TrafficFigures,
    /// Requests that failed in all (5xx answers and failures before an answer).
    pub errors_total: u64,
    pub in_flight: u64,
    pub health: ObservedHealth,
    /// Out of rotation after failed connects (passive health).
    pub ejected: bool,
    pub breaker: BreakerState,
}

/// One reading of everything the data plane serves.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Traffic {
    /// How many seconds the rates and quantiles cover (0 until a first window is taken).
    pub window_seconds: f64,
    /// The configuration revision the data plane serves.
    pub revision: i64,
    pub listeners: Vec<(ListenerId, TrafficFigures)>,
    pub pools: Vec<(PoolId, TrafficFigures)>,
    pub members: Vec<MemberTraffic>,
}
