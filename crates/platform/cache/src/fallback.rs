//! Redis first, the in-process cache when Redis fails: a cache outage costs
//! hit rate and sharing between instances, never a failed request.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{Cache, CacheError, MemoryCache, RedisCache, record_fallback};

/// A cache that never fails: Redis while it answers, else this process's
/// own [`MemoryCache`].
///
/// Entries written to the fallback during an outage are not copied to
/// Redis afterwards; they simply expire. Stale reads are bounded by the TTLs
/// callers choose, as with any cache.
#[derive(Clone)]
pub struct FallbackCache {
    redis: RedisCache,
    local: MemoryCache,
}

impl FallbackCache {
    pub fn new(redis: RedisCache, local: MemoryCache) -> Self {
        Self { redis, local }
    }

    fn fell_back(error: &CacheError) {
        tracing::debug!(%error, "cache operation served in-process");
        record_fallback("redis");
    }
}

#[async_trait]
impl Cache for FallbackCache {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        match self.redis.get(key).await {
            Ok(value) => Ok(value),
            Err(error) => {
                Self::fell_back(&error);
                Ok(self.local.get_now(key))
            }
        }
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), CacheError> {
        if let Err(error) = self.redis.set(key, value.clone(), ttl).await {
            Self::fell_back(&error);
            self.local.set_now(key, value, ttl);
        }
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        // The local copy may hold a value written during an outage; it must
        // not outlive a delete either way.
        self.local.delete_now(key);
        if let Err(error) = self.redis.delete(key).await {
            Self::fell_back(&error);
        }
        Ok(())
    }
}
