//! Client-side load balancing over the live instances of one service, with
//! per-instance circuit breakers and a retry budget.
//!
//! This is pure bookkeeping: it never opens a socket. A caller (the gateway,
//! a service-to-service client) asks a [`Balancer`] for a [`Pick`], sends
//! the request wherever the pick says, and reports the outcome with
//! [`Pick::success`] or [`Pick::failure`]. Dropping a pick without either
//! means the request was cancelled and counts for nothing.
//!
//! - Choice: power of two random choices on in-flight requests (or round
//!   robin), among the endpoints whose breaker is closed, weighted: each
//!   endpoint has a weight (default 1, set by URL with
//!   [`Balancer::set_weights`]); P2C draws its two candidates in proportion
//!   to weight and compares in-flight requests per unit of weight, round
//!   robin gives each its weight's share of turns; weight 0 drains an
//!   endpoint (no new requests while another can take them) for canaries
//!   and planned shutdowns.
//! - Outlier ejection *is* the per-endpoint breaker: after
//!   `consecutive_failures` failures an endpoint is opened (ejected) for
//!   `open_ms`, doubling on every failed probe up to `max_open_ms`; then one
//!   trial request is let through (half-open), whose outcome closes or
//!   re-opens it. At most `max_ejection_percent` of a set is ejected unless
//!   every endpoint is failing, in which case [`Balancer::pick`] answers
//!   `None` at once instead of sending requests to dead instances.
//! - [`RetryBudget`]: retries are allowed only while they stay a fraction of
//!   the requests, so retries cannot multiply load during an outage.
//!
//! Time comes from `tokio::time::Instant`, so tests run with paused time.

mod balancer;
mod breaker;
mod budget;
mod endpoint;

use serde::{Deserialize, Serialize};

pub use balancer::{Balancer, Pick};
pub use breaker::BreakerState;
pub use budget::RetryBudget;
pub use endpoint::{DEFAULT_WEIGHT, Endpoint, EndpointId, InvalidEndpoint};

/// Answers meaning "this instance cannot serve now" rather than "this
/// request failed": worth trying another instance (when the request may be
/// sent again).
pub fn worth_another_instance(status: http::StatusCode) -> bool {
    matches!(status.as_u16(), 502..=504)
}

/// Answers that count against the instance in its breaker: the above, and
/// 500. A 500 goes back to the caller as it is (it may be about this one
/// request, so it is never retried), but an instance answering nothing but
/// 500s is as broken as one that hangs, and its breaker must open; one
/// success in between resets the streak, so a single bad request pattern
/// does not eject a healthy instance.
pub fn counts_against_instance(status: http::StatusCode) -> bool {
    status == http::StatusCode::INTERNAL_SERVER_ERROR || worth_another_instance(status)
}

/// Report an answer's outcome to the breaker of the instance that gave it.
pub fn report_answer(pick: &mut Pick, status: http::StatusCode) {
    if counts_against_instance(status) {
        pick.failure();
    } else {
        pick.success();
    }
}

/// Metric handles are registered once, when an endpoint or budget is
/// created, and a handle taken before the recorder exists stays a no-op
/// forever: make sure the process-wide recorder is installed first.
fn install_recorder() {
    let _ = zocalo_telemetry::metrics_handle();
}

/// How an endpoint is chosen among the available ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Strategy {
    /// Two endpoints at random, the one with fewer requests in flight.
    #[default]
    #[serde(rename = "p2c")]
    PowerOfTwoChoices,
    #[serde(rename = "round_robin")]
    RoundRobin,
}

/// When an endpoint is ejected and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BreakerSettings {
    /// Failures in a row (connect errors, timeouts, 502/503/504) that open
    /// the breaker.
    pub consecutive_failures: u32,
    /// How long the first opening lasts before a trial request.
    pub open_ms: u64,
    /// The cap of the doubling open period.
    pub max_open_ms: u64,
    /// The largest share of a set that may be ejected at once, unless every
    /// endpoint is failing.
    pub max_ejection_percent: u8,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            open_ms: 5_000,
            max_open_ms: 60_000,
            max_ejection_percent: 50,
        }
    }
}

/// How many tries a request gets and how many retries the budget allows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetrySettings {
    /// Tries per request, the first one included.
    pub max_attempts: u32,
    /// Retry tokens each request deposits (0.2: at most one retry per five
    /// requests over the window).
    pub budget_ratio: f64,
    /// Retries allowed per second whatever the traffic, so that a quiet
    /// client can still retry.
    pub min_per_second: u32,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            budget_ratio: 0.2,
            min_per_second: 10,
        }
    }
}
