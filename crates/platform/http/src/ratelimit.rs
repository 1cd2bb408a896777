//! Keyed rate limiting (GCRA): per client IP at the gateway, per account
//! and per IP on login. A refusal is a 429 problem with `Retry-After` in
//! whole seconds.
//!
//! [`KeyedLimiter`] counts in this process (via `governor`).
//! [`RateLimiter`] is what a service holds: it counts in Redis when given
//! one, so that every instance spends one budget per key, and degrades to a
//! [`KeyedLimiter`] while Redis is down or slow — it never fails closed and
//! never turns a Redis problem into a 500. Its limit can be changed while
//! it runs (live configuration).

use std::fmt::Display;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use serde::{Deserialize, Serialize};
use zocalo_cache::{Decision, SharedLimiter, record_fallback};

use crate::Problem;

/// `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

/// A limiter over keys of type `K`: strings (accounts) by default, or
/// addresses, which need no allocation per check.
pub struct KeyedLimiter<K = String>
where
    K: Hash + Eq + Clone,
{
    limiter: DefaultKeyedRateLimiter<K>,
    clock: DefaultClock,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
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
    pub fn check<Q>(&self, key: &Q) -> Result<(), Problem>
    where
        Q: ToOwned<Owned = K> + ?Sized,
    {
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

impl RateLimit {
    /// Whether this limit limits anything (`per_second = 0` switches
    /// limiting off, which a file or an environment variable can say).
    pub fn is_enabled(&self) -> bool {
        self.per_second > 0.0
    }

    /// Reasons this limit cannot be enforced, for configuration checks.
    pub fn validate(&self) -> Result<(), String> {
        if !self.per_second.is_finite() || self.per_second < 0.0 {
            return Err(format!(
                "rate_limit.per_second must be a number >= 0, not {}",
                self.per_second
            ));
        }
        if self.is_enabled() && self.burst == 0 {
            return Err("rate_limit.burst must be at least 1".into());
        }
        Ok(())
    }
}

/// The limit in force and the in-process state that goes with it.
struct Active<K: Hash + Eq + Clone> {
    limit: RateLimit,
    local: KeyedLimiter<K>,
}

/// A rate limiter over keys of type `K` (strings by default), shared through
/// Redis when configured, reconfigurable at run time.
pub struct RateLimiter<K = String>
where
    K: Hash + Eq + Clone,
{
    active: ArcSwapOption<Active<K>>,
    shared: Option<SharedLimiter>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `limit` `None` (or disabled) lets everything through until
    /// [`RateLimiter::set_limit`] says otherwise. With `shared`, budgets
    /// are counted in Redis first.
    pub fn new(limit: Option<RateLimit>, shared: Option<SharedLimiter>) -> Self {
        let limiter = Self {
            active: ArcSwapOption::empty(),
            shared,
        };
        limiter.set_limit(limit);
        limiter
    }

    /// The limit in force, if any.
    pub fn limit(&self) -> Option<RateLimit> {
        self.active.load().as_ref().map(|active| active.limit)
    }

    /// Enforce `limit` from the next request on. Setting the limit already
    /// in force changes nothing (in-process counts are kept); a new one
    /// starts the in-process counts afresh, while the shared counts in Redis
    /// carry over (GCRA state does not depend on the rate).
    pub fn set_limit(&self, limit: Option<RateLimit>) {
        let limit = limit.filter(RateLimit::is_enabled);
        if limit == self.limit() {
            return;
        }
        self.active.store(limit.map(|limit| {
            std::sync::Arc::new(Active {
                limit,
                local: KeyedLimiter::new(limit),
            })
        }));
    }

    /// Count one request for `key`; `Err` is the 429 to send. Redis errors
    /// and timeouts are not errors here: the in-process count decides. The
    /// key is turned into text only for Redis.
    pub async fn check<Q>(&self, key: &Q) -> Result<(), Problem>
    where
        Q: ToOwned<Owned = K> + Display + ?Sized,
    {
        let Some(active) = self.active.load_full() else {
            return Ok(());
        };
        if let Some(shared) = &self.shared {
            let limit = active.limit;
            let text = key.to_string();
            match shared.check(&text, limit.per_second, limit.burst).await {
                Ok(Decision::Allowed) => return Ok(()),
                Ok(Decision::Refused { retry_after }) => {
                    return Err(Problem::too_many_requests(whole_seconds(retry_after)));
                }
                Err(error) => {
                    tracing::debug!(%error, "rate limit counted in-process");
                    record_fallback("redis");
                }
            }
        }
        active.local.check(key)
    }
}

/// `Retry-After` is in whole seconds, and never 0 for a refusal.
fn whole_seconds(wait: Duration) -> u64 {
    (wait.as_secs_f64().ceil() as u64).max(1)
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

    #[tokio::test]
    async fn the_limit_can_change_while_running() {
        let limiter = RateLimiter::new(None, None);
        for _ in 0..20 {
            limiter.check("a").await.unwrap();
        }
        let tight = RateLimit {
            per_second: 0.1,
            burst: 2,
        };
        limiter.set_limit(Some(tight));
        assert_eq!(limiter.limit(), Some(tight));
        limiter.check("a").await.unwrap();
        limiter.check("a").await.unwrap();
        assert_eq!(limiter.check("a").await.unwrap_err().status, 429);
        limiter.set_limit(Some(tight));
        assert_eq!(
            limiter.check("a").await.unwrap_err().status,
            429,
            "re-setting the same limit keeps the counts"
        );
        limiter.set_limit(Some(RateLimit {
            per_second: 0.0,
            burst: 1,
        }));
        assert_eq!(
            limiter.limit(),
            None,
            "per_second = 0 switches limiting off"
        );
        limiter.check("a").await.unwrap();
    }

    #[test]
    fn invalid_limits_are_named() {
        let limit = |per_second, burst| RateLimit { per_second, burst };
        assert!(limit(10.0, 5).validate().is_ok());
        assert!(limit(0.0, 0).validate().is_ok(), "off needs no burst");
        assert!(
            limit(-1.0, 5)
                .validate()
                .unwrap_err()
                .contains("per_second")
        );
        assert!(limit(f64::NAN, 5).validate().is_err());
        assert!(limit(1.0, 0).validate().unwrap_err().contains("burst"));
    }
}
