//! `GET /v1/stats`: recent traffic as this node's data plane measured it, for the
//! dashboard and `fulcrum` commands.

use axum::Json;
use axum::extract::State;
use fulcrum_control::{BreakerState, ObservedHealth, TrafficFigures};
use fulcrum_model::LoadBalancerId;
use serde::{Deserialize, Serialize};

use super::error::{ErrorBody, NativeError};
use super::extract::QueryParams;
use crate::AppState;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct StatsQuery {
    /// Only what serves this load balancer.
    loadbalancer_id: Option<String>,
}

/// Traffic figures over the recent window.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Figures {
    id: String,
    requests_per_second: f64,
    /// Failed share of the window's requests (5xx, and for members no answer at all).
    error_rate: f64,
    /// Latency quantiles over the window; null without requests (pools: always null,
    /// see their members).
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    /// Requests since this node's data plane started serving it.
    requests_total: u64,
}

impl Figures {
    fn new(id: String, f: &TrafficFigures) -> Figures {
        Figures {
            id,
            requests_per_second: f.requests_per_second,
            error_rate: f.error_rate,
            p50_ms: f.p50_ms,
            p99_ms: f.p99_ms,
            requests_total: f.requests_total,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct MemberFigures {
    #[serde(flatten)]
    figures: Figures,
    pool_id: String,
    /// 5xx answers and requests that got no answer, in all.
    errors_total: u64,
    in_flight: u64,
    /// `healthy`, `unhealthy` or `unknown` (no monitor and no failure seen).
    health: &'static str,
    /// Out of rotation after failed connects.
    ejected: bool,
    /// `closed`, `open` or `half_open`.
    breaker: &'static str,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct StatsView {
    /// Seconds the rates and quantiles cover (5 to 10 once running; 0 at first).
    window_seconds: f64,
    /// The configuration revision the data plane serves.
    revision: i64,
    listeners: Vec<Figures>,
    pools: Vec<Figures>,
    members: Vec<MemberFigures>,
}

/// Recent traffic through this node: per listener, pool and member, requests per second,
/// error rate and latency quantiles over the last 5 to 10 seconds, with totals, health and
/// breaker state. Each fleet node answers for the traffic it carried.
#[utoipa::path(get, path = "/v1/stats", tag = "meta", params(StatsQuery),
    responses((status = 200, body = StatsView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(super) async fn get_stats(
    State(s): State<AppState>,
    caller: super::extract::Caller,
    QueryParams(q): QueryParams<StatsQuery>,
) -> Result<Json<StatsView>, NativeError> {
    let traffic = s.control.traffic();
    let full = s.control.view();
    let cfg = caller.view(&full);
    // A caller limited to some load balancers sees only theirs.
    let everything = caller.0.scope.is_all();
    let lb = match q.loadbalancer_id {
        Some(id) => {
            let id = LoadBalancerId::from(id);
            if !cfg.loadbalancers.contains_key(&id) {
                return Err(super::gone("load balancer", id.as_str()));
            }
            Some(id)
        }
        None => None,
    };
    let listener_in = |id| match &lb {
        None if everything => true,
        lb => cfg
            .listeners
            .get(id)
            .is_some_and(|l| lb.as_ref().is_none_or(|lb| l.value.loadbalancer_id == *lb)),
    };
    let pool_in = |id| match &lb {
        None if everything => true,
        lb => cfg
            .pools
            .get(id)
            .is_some_and(|p| lb.as_ref().is_none_or(|lb| p.value.loadbalancer_id == *lb)),
    };
    Ok(Json(StatsView {
        window_seconds: traffic.window_seconds,
        revision: traffic.revision,
        listeners: traffic
            .listeners
            .iter()
            .filter(|(id, _)| listener_in(id))
            .map(|(id, f)| Figures::new(id.to_string(), f))
            .collect(),
        pools: traffic
            .pools
            .iter()
            .filter(|(id, _)| pool_in(id))
            .map(|(id, f)| Figures::new(id.to_string(), f))
            .collect(),
        members: traffic
            .members
            .iter()
            .filter(|m| pool_in(&m.pool_id))
            .map(|m| MemberFigures {
                figures: Figures::new(m.id.to_string(), &m.figures),
                pool_id: m.pool_id.to_string(),
                errors_total: m.errors_total,
                in_flight: m.in_flight,
                health: match m.health {
                    ObservedHealth::Unknown => "unknown",
                    ObservedHealth::Healthy => "healthy",
                    ObservedHealth::Unhealthy => "unhealthy",
                },
                ejected: m.ejected,
                breaker: match m.breaker {
                    BreakerState::Closed => "closed",
                    BreakerState::Open => "open",
                    BreakerState::HalfOpen => "half_open",
                },
            })
            .collect(),
    }))
}
