//! Passive outlier detection and per-request member timeouts: what a pool sets so that a
//! member which fails real requests leaves the rotation without a health monitor.

use serde::{Deserialize, Serialize};

use crate::validate::{Checker, ValidationError};

/// Takes a member out of its pool for a while when the requests sent to it fail, judged
/// from the traffic itself (Envoy's outlier detection, in fulcrum's terms). A member is
/// ejected after `consecutive_5xx` answers of 5xx or failures in a row, after
/// `consecutive_gateway_failures` connect failures, resets or timeouts in a row, or when its
/// success rate over an interval is far below its pool's. It stays out for
/// `base_ejection_ms` times the number of times it was ejected in a row (at most
/// `max_ejection_ms`), then takes traffic again; a pool never has more than
/// `max_ejection_percent` of its members ejected (at least one may be, and never the last
/// one available).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierDetection {
    pub enabled: bool,
    /// 5xx answers (and failures to answer) in a row that eject a member; 0: not used.
    pub consecutive_5xx: u32,
    /// Connect failures, resets and timeouts in a row that eject a member; 0: not used.
    pub consecutive_gateway_failures: u32,
    /// How often the success rates are compared and ejected members' streaks forgiven.
    pub interval_ms: u32,
    /// How long the first ejection lasts; each ejection in a row adds as much again.
    pub base_ejection_ms: u32,
    pub max_ejection_ms: u32,
    /// At most this share of the pool's members are out at once.
    pub max_ejection_percent: u32,
    /// Requests a member needs in an interval to have its success rate judged; 0: the
    /// success-rate test is off.
    pub success_rate_minimum_requests: u32,
    /// Members with enough requests a pool needs for the test to run (with fewer than
    /// five, one outlier among them can never be 1.9 standard deviations out).
    pub success_rate_minimum_members: u32,
    /// A member is ejected when its success rate is below the pool's mean by more than
    /// this many standard deviations, in thousandths (1900: 1.9).
    pub success_rate_stdev_factor: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            enabled: true,
            consecutive_5xx: 5,
            consecutive_gateway_failures: 3,
            interval_ms: 10_000,
            base_ejection_ms: 10_000,
            max_ejection_ms: 300_000,
            max_ejection_percent: 50,
            success_rate_minimum_requests: 100,
            success_rate_minimum_members: 5,
            success_rate_stdev_factor: 1_900,
        }
    }
}

impl OutlierDetection {
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut c = Checker::new();
        c.range("consecutive_5xx", self.consecutive_5xx, 0, 10_000);
        c.range(
            "consecutive_gateway_failures",
            self.consecutive_gateway_failures,
            0,
            10_000,
        );
        c.range("interval_ms", self.interval_ms, 100, 3_600_000);
        c.range("base_ejection_ms", self.base_ejection_ms, 100, 3_600_000);
        c.range(
            "max_ejection_ms",
            self.max_ejection_ms,
            self.base_ejection_ms.min(3_600_000),
            3_600_000,
        );
        c.range("max_ejection_percent", self.max_ejection_percent, 0, 100);
        c.range(
            "success_rate_minimum_requests",
            self.success_rate_minimum_requests,
            0,
            1_000_000,
        );
        c.range(
            "success_rate_minimum_members",
            self.success_rate_minimum_members,
            1,
            10_000,
        );
        c.range(
            "success_rate_stdev_factor",
            self.success_rate_stdev_factor,
            1,
            100_000,
        );
        c.finish()
    }
}

/// Limits on one request's exchange with a member, for the pool's HTTP members; absent,
/// the listener's `upstream_response_ms` bounds the wait for the answer's head.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MemberTimeouts {
    /// From the request sent to the answer's head; a member that misses it fails the
    /// request with a timeout (a gateway failure for outlier detection).
    pub first_byte_ms: Option<u32>,
    /// From the request sent to the answer's last byte.
    pub total_ms: Option<u32>,
}

impl MemberTimeouts {
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut c = Checker::new();
        if let Some(ms) = self.first_byte_ms {
            c.range("first_byte_ms", ms, 1, 3_600_000);
        }
        if let Some(ms) = self.total_ms {
            c.range("total_ms", ms, 1, 86_400_000);
            if let Some(first) = self.first_byte_ms {
                c.check(first <= ms, "first_byte_ms", || {
                    format!("first_byte_ms ({first}) must not exceed total_ms ({ms})")
                });
            }
        }
        c.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_out_of_range_values_are_named() {
        assert!(OutlierDetection::default().validate().is_ok());
        let bad = OutlierDetection {
            max_ejection_percent: 101,
            base_ejection_ms: 20_000,
            max_ejection_ms: 10_000,
            ..OutlierDetection::default()
        };
        let err = bad.validate().expect_err("invalid");
        let fields: Vec<_> = err.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["max_ejection_ms", "max_ejection_percent"]);
        let t = MemberTimeouts {
            first_byte_ms: Some(5_000),
            total_ms: Some(1_000),
        };
        assert!(t.validate().is_err());
        assert!(MemberTimeouts::default().validate().is_ok());
    }
}
