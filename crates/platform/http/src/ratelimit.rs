//! Keyed rate limiting (GCRA, via `governor`): per client IP at the gateway,
//! per account and per IP on login. A refusal is a 429 problem with
//! `Retry-After` in whole seconds.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use serde::{Deserialize, Serialize};

use crate::Problem;

/// `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

/// A limiter over string keys.
pub struct KeyedLimiter {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl KeyedLimiter {
    pub fn new(limit: RateLimit) -> Self {
        let period = Duration::from_secs_f64(1.0 / limit.per_second.max(0.001));
        let burst = NonZeroU32::new(limit.burst.max(1)).expect("max(1) is non-zero");
        let quota = Quota::with_period(period)
            .expect("a positive rate has a non-zero period")
            .allow_burst(burst);
        Self {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            clock: DefaultClock::default(),
        }
    }

    /// Count one request for `key`; `Err` is the 429 to send.
    pub fn check(&self, key: &str) -> Result<(), Problem> {
        self.limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(self.clock.now());
                Problem::too_many_requests(wait.as_secs_f64().ceil() as u64)
            })?;
        // Keep memory bounded: forget keys whose state is back to full.
        if self.limiter.len() > 100_000 {
            self.limiter.retain_recent();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_is_allowed_then_refused_per_key() {
        let limiter = KeyedLimiter::new(RateLimit {
            per_second: 0.1,
            burst: 3,
        });
        for _ in 0..3 {
            limiter.check("a").unwrap();
        }
        let refused = limiter.check("a").unwrap_err();
        assert_eq!(refused.status, 429);
        assert!(refused.retry_after_secs.unwrap() >= 1);
        limiter.check("b").expect("other keys are independent");
    }
}
