//! One Redis handle for a process: connected lazily, reconnected by redis'
//! `ConnectionManager`, every command bounded by a short timeout so that a
//! slow or absent Redis never holds a request.
//!
//! After a failure the handle is marked down and answers
//! [`CacheError::Unavailable`] at once, without touching the network; a
//! background task pings Redis every [`PROBE_INTERVAL`] and marks it up
//! again when it answers. So an outage costs one timeout, not one per
//! request, and recovery needs no traffic.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, RedisError};

use crate::{Cache, CacheError};

/// Long enough for a round trip on a loaded LAN, short enough that a
/// request falling back to the in-process path is barely slower.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(100);
/// How often a Redis marked down is pinged.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Bound on establishing a connection, and on a probe: a Redis that needs
/// longer than this is as good as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A shareable (cheaply cloned) Redis handle.
#[derive(Clone)]
pub struct Redis {
    manager: ConnectionManager,
    command_timeout: Duration,
    /// Whether commands are sent at all; shared by all clones.
    up: Arc<AtomicBool>,
}

impl Redis {
    /// Parse `url` (`redis://host:port/db`); no connection is made until the
    /// first command, so a process starts whether or not Redis is up.
    pub fn new(url: &str) -> Result<Self, CacheError> {
        let client = redis::Client::open(url).map_err(|e| CacheError::InvalidUrl(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(DEFAULT_COMMAND_TIMEOUT))
            // Few, short retries: the probe task retries for as long as an
            // outage lasts, and no caller should wait on a retry schedule.
            .set_number_of_retries(1)
            .set_max_delay(PROBE_INTERVAL);
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| CacheError::InvalidUrl(e.to_string()))?;
        Ok(Self {
            manager,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            up: Arc::new(AtomicBool::new(true)),
        })
    }

    /// Bound every command by `timeout` instead of [`DEFAULT_COMMAND_TIMEOUT`].
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Whether commands are being sent (no failure since the last success).
    pub fn is_healthy(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Run one command (or script) on the shared connection, bounded by the
    /// command timeout; refused at once while Redis is marked down.
    pub async fn run<T, F, Fut>(&self, command: F) -> Result<T, CacheError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        if !self.is_healthy() {
            return Err(CacheError::Unavailable);
        }
        let outcome = self.execute(self.command_timeout, command).await;
        if let Err(error) = &outcome {
            self.mark_down(error);
        }
        outcome
    }

    async fn execute<T, F, Fut>(&self, timeout: Duration, command: F) -> Result<T, CacheError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        tokio::time::timeout(timeout, command(self.manager.clone()))
            .await
            .map_err(|_| CacheError::Timeout(timeout))
            .and_then(|result| result.map_err(|e| CacheError::Redis(e.to_string())))
    }

    /// The first failure of an outage logs it and starts the probe; later
    /// ones (concurrent requests) change nothing.
    fn mark_down(&self, error: &CacheError) {
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(%error, "redis unavailable, using in-process fallback");
            tokio::spawn(self.clone().probe_until_up());
        }
    }

    async fn probe_until_up(self) {
        loop {
            tokio::time::sleep(PROBE_INTERVAL).await;
            // Only the probe holds the handle: nobody needs Redis any more.
            if Arc::strong_count(&self.up) == 1 {
                return;
            }
            let ping = self
                .execute(CONNECT_TIMEOUT, |mut connection| async move {
                    redis::cmd("PING").query_async::<()>(&mut connection).await
                })
                .await;
            if ping.is_ok() {
                self.up.store(true, Ordering::Relaxed);
                tracing::info!("redis is reachable again");
                return;
            }
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
