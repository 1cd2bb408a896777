//! The in-process cache: moka, bounded by entry count or by bytes, each
//! entry expiring after its own time to live.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use moka::Expiry;
use moka::sync::Cache as Moka;

use crate::{Cache, CacheError};

#[derive(Clone)]
struct Entry {
    value: Bytes,
    ttl: Duration,
}

/// Each entry lives for the TTL it was stored with.
struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _key: &String, entry: &Entry, _now: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        entry: &Entry,
        _now: Instant,
        _remaining: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// A per-process cache; never fails.
#[derive(Clone)]
pub struct MemoryCache {
    entries: Moka<String, Entry>,
}

impl MemoryCache {
    /// A cache holding at most `max_entries` entries.
    pub fn new(max_entries: u64) -> Self {
        Self {
            entries: Moka::builder()
                .max_capacity(max_entries)
                .expire_after(PerEntryTtl)
                .build(),
        }
    }

    /// A cache holding at most about `max_bytes` of keys and values, for
    /// values whose sizes vary widely (cached response bodies).
    pub fn with_max_bytes(max_bytes: u64) -> Self {
        Self {
            entries: Moka::builder()
                .max_capacity(max_bytes)
                .weigher(|key: &String, entry: &Entry| {
                    u32::try_from(key.len() + entry.value.len()).unwrap_or(u32::MAX)
                })
                .expire_after(PerEntryTtl)
                .build(),
        }
    }

    pub fn get_now(&self, key: &str) -> Option<Bytes> {
        self.entries.get(key).map(|entry| entry.value)
    }

    pub fn set_now(&self, key: &str, value: Bytes, ttl: Duration) {
        let ttl = ttl.max(Duration::from_millis(1));
        self.entries.insert(key.to_owned(), Entry { value, ttl });
    }

    pub fn delete_now(&self, key: &str) {
        self.entries.invalidate(key);
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        Ok(self.get_now(key))
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), CacheError> {
        self.set_now(key, value, ttl);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        self.delete_now(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_after_their_own_ttl() {
        let cache = MemoryCache::new(100);
        cache.set_now("short", Bytes::from_static(b"a"), Duration::from_millis(50));
        cache.set_now("long", Bytes::from_static(b"b"), Duration::from_secs(60));
        assert_eq!(cache.get_now("short").as_deref(), Some(&b"a"[..]));
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(cache.get_now("short"), None);
        assert_eq!(cache.get_now("long").as_deref(), Some(&b"b"[..]));
        cache.delete_now("long");
        assert_eq!(cache.get_now("long"), None);
    }

    #[test]
    fn a_byte_bounded_cache_evicts_beyond_its_size() {
        let cache = MemoryCache::with_max_bytes(10 * 1024);
        for i in 0..100 {
            cache.set_now(
                &format!("k{i}"),
                Bytes::from(vec![0u8; 1024]),
                Duration::from_secs(60),
            );
        }
        cache.entries.run_pending_tasks();
        let kept = (0..100)
            .filter(|i| cache.get_now(&format!("k{i}")).is_some())
            .count();
        assert!(kept <= 10, "{kept} entries of 1 KiB kept in 10 KiB");
        assert!(kept > 0);
    }
}
