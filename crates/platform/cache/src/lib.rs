//! Caching adapters for Zócalo processes, and the shared store behind
//! cluster-wide rate limits.
//!
//! - [`Cache`]: get/set/delete of byte values with a time to live;
//! - [`MemoryCache`]: the in-process adapter (moka), per instance;
//! - [`RedisCache`]: the Redis adapter, shared by every instance;
//! - [`FallbackCache`]: Redis while it answers, the in-process cache while
//!   it does not — a cache outage degrades hit rates, never requests;
//! - [`Redis`]: one lazily connected, self-reconnecting Redis handle whose
//!   every command is bounded by a short timeout;
//! - [`SharedLimiter`]: a GCRA rate limit kept in Redis so that all
//!   instances spend one budget per key.
//!
//! Every switch to the in-process fallback counts in
//! `cache_backend_fallbacks_total{backend}`. This crate depends on no other
//! crate of ours, so the HTTP layer and services can both build on it.

mod fallback;
mod gcra;
mod memory;
mod redis;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub use fallback::FallbackCache;
pub use gcra::{Decision, SharedLimiter};
pub use memory::MemoryCache;
pub use redis::{DEFAULT_COMMAND_TIMEOUT, PROBE_INTERVAL, Redis, RedisCache};

/// Why a cache operation did not happen. Callers that can do without the
/// cache treat every variant alike: as a miss, or by falling back.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(String),
    #[error("Redis is unavailable (recent failure, retrying shortly)")]
    Unavailable,
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis error: {0}")]
    Redis(String),
}

/// A key-value cache of byte values that expire.
#[async_trait]
pub trait Cache: Send + Sync {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError>;
    /// Store `value` under `key` for `ttl` (at least one millisecond).
    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), CacheError>;
    async fn delete(&self, key: &str) -> Result<(), CacheError>;
}

/// Count one operation that the in-process fallback served because
/// `backend` failed or was known to be down.
pub fn record_fallback(backend: &'static str) {
    metrics::counter!("cache_backend_fallbacks_total", "backend" => backend).increment(1);
}
