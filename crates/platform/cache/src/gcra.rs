//! A rate limit shared by every instance: GCRA (the generic cell rate
//! algorithm) with its one number of state per key — the theoretical
//! arrival time — kept in Redis.
//!
//! The whole check-and-update is one Lua script, run atomically by Redis
//! (EVALSHA, with EVAL the first time), so concurrent instances never race
//! on a key. Time comes from Redis' own clock (`TIME`): instances with
//! skewed clocks still agree. Keys expire once the budget they describe is
//! full again, so idle clients leave nothing behind.

use std::sync::Arc;
use std::time::Duration;

use redis::Script;

use crate::{CacheError, Redis};

/// Keys: the limit's key. Args: emission interval (ms, may be fractional),
/// burst. Returns `{1, 0}` when allowed, `{0, retry_after_ms}` when not.
const GCRA_LUA: &str = r"
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + tonumber(now_parts[2]) / 1000
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then
  tat = now
end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if allow_at > now then
  return {0, math.ceil(allow_at - now)}
end
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now) + 1)
return {1, 0}
";

/// Whether one request fits the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Refused { retry_after: Duration },
}

/// A GCRA limit over string keys, stored in Redis under `prefix` + key.
#[derive(Clone)]
pub struct SharedLimiter {
    redis: Redis,
    script: Arc<Script>,
    prefix: String,
}

impl SharedLimiter {
    pub fn new(redis: Redis, prefix: impl Into<String>) -> Self {
        Self {
            redis,
            script: Arc::new(Script::new(GCRA_LUA)),
            prefix: prefix.into(),
        }
    }

    /// Count one request for `key` against `burst` requests at once,
    /// refilled at `per_second` (which must be positive).
    pub async fn check(
        &self,
        key: &str,
        per_second: f64,
        burst: u32,
    ) -> Result<Decision, CacheError> {
        let key = format!("{}{key}", self.prefix);
        let interval_ms = 1000.0 / per_second.max(0.001);
        let burst = burst.max(1);
        let script = self.script.clone();
        let (allowed, retry_after_ms): (i64, i64) = self
            .redis
            .run(|mut connection| async move {
                script
                    .key(key)
                    .arg(interval_ms)
                    .arg(burst)
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        Ok(if allowed == 1 {
            Decision::Allowed
        } else {
            Decision::Refused {
                retry_after: Duration::from_millis(u64::try_from(retry_after_ms).unwrap_or(0)),
            }
        })
    }
}
