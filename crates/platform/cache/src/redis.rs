//! One Redis handle for a process: connected lazily, reconnected in the
//! background by redis' `ConnectionManager`, every command bounded by a
//! short timeout so that a slow or absent Redis never holds a request.
//!
//! After a failure the handle reports [`CacheError::Unavailable`] without
//! touching the network for [`RETRY_AFTER`]; the first command after that
//! is the probe that finds Redis back (or not). So an outage costs at most
//! one timeout per caller per interval, not one per request.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, RedisError};

use crate::{Cache, CacheError};

/// Long enough for a round trip on a loaded LAN, short enough that a
/// request falling back to the in-process path is barely slower.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(100);
/// How long Redis is left alone after a failure.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Bound on establishing a connection; commands time out sooner anyway.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A shareable (cheaply cloned) Redis handle.
#[derive(Clone)]
pub struct Redis {
    manager: ConnectionManager,
    command_timeout: Duration,
    health: Arc<Health>,
}

impl Redis {
    /// Parse `url` (`redis://host:port/db`); no connection is made until the
    /// first command, so a process starts whether or not Redis is up.
    pub fn new(url: &str) -> Result<Self, CacheError> {
        let client = redis::Client::open(url).map_err(|e| CacheError::InvalidUrl(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(DEFAULT_COMMAND_TIMEOUT))
            // Reconnection happens in the background; no caller waits on
            // its retries because every command has its own timeout.
            .set_number_of_retries(2)
            .set_max_delay(RETRY_AFTER);
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| CacheError::InvalidUrl(e.to_string()))?;
        Ok(Self {
            manager,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            health: Arc::new(Health::new()),
        })
    }

    /// Bound every command by `timeout` instead of [`DEFAULT_COMMAND_TIMEOUT`].
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Whether the last command succeeded (or none failed recently).
    pub fn is_healthy(&self) -> bool {
        self.health.is_up()
    }

    /// Run one command (or script) on the shared connection, bounded by the
    /// command timeout; refused at once while Redis is known to be down.
    pub async fn run<T, F, Fut>(&self, command: F) -> Result<T, CacheError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        if !self.health.may_try() {
            return Err(CacheError::Unavailable);
        }
        let outcome = tokio::time::timeout(self.command_timeout, command(self.manager.clone()))
            .await
            .map_err(|_| CacheError::Timeout(self.command_timeout))
            .and_then(|result| result.map_err(|e| CacheError::Redis(e.to_string())));
        match &outcome {
            Ok(_) => self.health.record_success(),
            Err(error) => self.health.record_failure(error),
        }
        outcome
    }
}

/// Up/down state and when to probe again, shared by all clones of a handle.
struct Health {
    epoch: Instant,
    up: AtomicBool,
    /// Milliseconds since `epoch` before which no command is tried.
    retry_at_ms: AtomicU64,
}

impl Health {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            up: AtomicBool::new(true),
            retry_at_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn may_try(&self) -> bool {
        self.now_ms() >= self.retry_at_ms.load(Ordering::Relaxed)
    }

    fn record_success(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!("redis is reachable again");
        }
    }

    fn record_failure(&self, error: &CacheError) {
        let retry_at = self.now_ms() + u64::try_from(RETRY_AFTER.as_millis()).unwrap_or(1000);
        self.retry_at_ms.store(retry_at, Ordering::Relaxed);
        // Log the transition, not every failed request of an outage.
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(%error, "redis unavailable, using in-process fallback");
        }
    }
}

/// The Redis cache adapter: values under `prefix` + key, expiring in Redis.
#[derive(Clone)]
pub struct RedisCache {
    redis: Redis,
    prefix: String,
}

impl RedisCache {
    /// `prefix` namespaces the keys (e.g. `zocalo:cache:gateway:`).
    pub fn new(redis: Redis, prefix: impl Into<String>) -> Self {
        Self {
            redis,
            prefix: prefix.into(),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

#[async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        let key = self.key(key);
        let value: Option<Vec<u8>> = self
            .redis
            .run(|mut connection| async move { connection.get(key).await })
            .await?;
        Ok(value.map(Bytes::from))
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), CacheError> {
        let key = self.key(key);
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.redis
            .run(|mut connection| async move {
                connection
                    .pset_ex::<_, _, ()>(key, value.as_ref(), millis)
                    .await
            })
            .await
    }

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        let key = self.key(key);
        self.redis
            .run(|mut connection| async move { connection.del::<_, ()>(key).await })
            .await
    }
}
