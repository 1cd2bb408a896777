//! PostgreSQL with a read/write split.
//!
//! Writes go to the primary. Reads go to one of any number of replicas, in
//! turn, skipping a replica that is *down* (it failed to hand out a
//! connection: skipped for a cooldown, then one read tries it again) or
//! *lagging* (its replay is more than `max_replica_lag_ms` behind), and fall
//! back to the primary when no replica is usable, so a lost replica costs
//! capacity, not availability.
//!
//! Read-your-writes: [`PgPools::writer`] remembers when the current caller
//! ([`zocalo_http::session::current_subject`]) wrote. [`PgPools::reader`]
//! sends that caller to the primary for `sticky_ms`, and after that only to
//! a replica known to have replayed past the write, until every usable
//! replica must have. The memory is per process: another instance of the
//! service does not know about the write (docs/design-replicas.md has the
//! limits and the LSN-token alternative).
//!
//! A background task measures replica lag, re-admits replicas that answer
//! again and publishes pool gauges; it ends when the last `PgPools` clone is
//! dropped.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use deadpool_postgres::{
    Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime, TimeoutType,
};
use tokio_postgres::NoTls;

use crate::{DatabaseSettings, StoreError};

pub type PgClient = deadpool_postgres::Object;

/// The primary pool, the replica pools and what is known about them.
#[derive(Clone)]
pub struct PgPools {
    inner: Arc<Inner>,
}

struct Inner {
    primary: Pool,
    replicas: Vec<Replica>,
    /// Where the next read starts looking, so reads spread over replicas.
    next_replica: AtomicUsize,
    /// When each recent writer last wrote; `None` when there is nothing to
    /// be sticky about (no replicas, or `sticky_ms` = 0).
    recent_writers: Option<moka::sync::Cache<Arc<str>, Instant>>,
    sticky: Duration,
    cooldown: Duration,
    max_lag: Duration,
    fallbacks: AtomicU64,
    /// The primary's WAL position at recent checks, oldest first: a replica
    /// that replayed one of them holds everything committed before it.
    primary_positions: Mutex<VecDeque<(Instant, u64)>>,
}

/// Primary positions remembered; a replica further behind than this many
/// checks gets no bound and so serves no recent writer.
const POSITIONS_KEPT: usize = 32;

/// One replica as seen by this process.
struct Replica {
    /// `host:port/dbname`, the `replica` label of its metrics.
    name: String,
    pool: Pool,
    health: Mutex<Health>,
}

#[derive(Default)]
struct Health {
    /// Not to be tried before this instant (it failed to give a connection).
    down_until: Option<Instant>,
    /// Replay lag at the last check; `None` before the first one.
    lag: Option<Duration>,
    lagging: bool,
    /// Everything committed on the primary before this instant had been
    /// replayed at the last check (a lower bound; `None` before the first).
    replayed_through: Option<Instant>,
}

/// A replica's state, for readiness pages, operators and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaStatus {
    /// `host:port/dbname`.
    pub name: String,
    /// Failed to give a connection and is in its cooldown.
    pub down: bool,
    /// Replay lag at the last check; `None` before the first check.
    pub lag: Option<Duration>,
    /// Lag above `max_replica_lag_ms`: not read from until it catches up.
    pub lagging: bool,
}

impl ReplicaStatus {
    /// Would a read be sent to it now?
    pub fn healthy(&self) -> bool {
        !self.down && !self.lagging
    }
}

/// Arbitrary key for the advisory lock that serialises migrations when
/// several instances start at once.
const MIGRATION_LOCK: i64 = 0x7a6f_63616c6f;

/// A dead replica must not cost every read a long wait.
const REPLICA_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const PRIMARY_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl PgPools {
    /// Build the pools, apply `migrations` on the primary and start the
    /// replica monitor (needs a Tokio runtime).
    pub async fn connect(
        settings: &DatabaseSettings,
        migrations: refinery::Runner,
    ) -> Result<Self, StoreError> {
        migrate(&settings.url, migrations).await?;
        let primary = pool(
            &settings.url,
            settings.max_connections,
            PRIMARY_CONNECT_TIMEOUT,
        )?;
        let replicas = settings
            .replica_urls()
            .into_iter()
            .map(|url| Replica::new(url, settings.max_connections))
            .collect::<Result<Vec<_>, _>>()?;
        let sticky = Duration::from_millis(settings.sticky_ms);
        let max_lag = Duration::from_millis(settings.max_replica_lag_ms);
        let interval = Duration::from_millis(settings.replica_check_interval_ms.max(50));
        // Past this age every usable replica (lag ≤ max_lag, checked within
        // one interval) has replayed the write, so it need not be remembered.
        let remembered = sticky + max_lag + 2 * interval;
        let recent_writers = (!replicas.is_empty() && !sticky.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(remembered)
                .build()
        });
        let inner = Arc::new(Inner {
            primary,
            replicas,
            next_replica: AtomicUsize::new(0),
            recent_writers,
            sticky,
            cooldown: Duration::from_millis(settings.replica_cooldown_ms),
            max_lag,
            fallbacks: AtomicU64::new(0),
            primary_positions: Mutex::default(),
        });
        tokio::spawn(monitor(Arc::downgrade(&inner), interval));
        Ok(Self { inner })
    }

    /// A primary connection for writing. The current caller's reads go to
    /// the primary for the sticky window that starts now.
    pub async fn writer(&self) -> Result<PgClient, StoreError> {
        if let (Some(writers), Some(subject)) = (
            &self.inner.recent_writers,
            zocalo_http::session::current_subject(),
        ) {
            writers.insert(subject, Instant::now());
        }
        self.primary().await
    }

    /// A connection for reading: the primary when the current caller wrote
    /// within the sticky window; otherwise a usable replica that (if the
    /// caller wrote before) has replayed past that write; otherwise the
    /// primary.
    pub async fn reader(&self) -> Result<PgClient, StoreError> {
        let wrote_at = self.current_caller_last_write();
        if wrote_at.is_some_and(|at| at.elapsed() < self.inner.sticky) {
            metrics::counter!("store_read_your_writes_total").increment(1);
            return self.primary().await;
        }
        // `wrote_at` is when the connection was taken, not when the write
        // committed: demanding the replica be `sticky` further along covers
        // every write transaction shorter than the window.
        let committed_by = wrote_at.map(|at| at + self.inner.sticky);
        if let Some(client) = self.replica_connection(committed_by).await {
            return Ok(client);
        }
        if wrote_at.is_some() {
            metrics::counter!("store_read_your_writes_total").increment(1);
        } else if !self.inner.replicas.is_empty() {
            self.inner.fallbacks.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("store_replica_fallbacks_total").increment(1);
        }
        self.primary().await
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.primary().await?.simple_query("SELECT 1").await?;
        Ok(())
    }

    /// Each replica's state, in configuration order.
    pub fn replicas(&self) -> Vec<ReplicaStatus> {
        self.inner.replicas.iter().map(Replica::status).collect()
    }

    /// Reads that wanted a replica but were served by the primary because
    /// none was usable, since these pools were built.
    pub fn replica_fallbacks(&self) -> u64 {
        self.inner.fallbacks.load(Ordering::Relaxed)
    }

    /// Check every replica now (the monitor does it every
    /// `replica_check_interval_ms`): measure lag, re-admit the ones that
    /// answer, mark down the ones that do not.
    pub async fn check_replicas(&self) {
        self.inner.check_replicas().await;
    }

    async fn primary(&self) -> Result<PgClient, StoreError> {
        Ok(self.inner.primary.get().await?)
    }

    fn current_caller_last_write(&self) -> Option<Instant> {
        let writers = self.inner.recent_writers.as_ref()?;
        writers.get(&zocalo_http::session::current_subject()?)
    }

    /// Try the usable replicas that replayed past `committed_by` (if given)
    /// in turn, starting after the one the last read started with; `None`
    /// when none gave a connection.
    async fn replica_connection(&self, committed_by: Option<Instant>) -> Option<PgClient> {
        let replicas = &self.inner.replicas;
        if replicas.is_empty() {
            return None;
        }
        let start = self.inner.next_replica.fetch_add(1, Ordering::Relaxed);
        for offset in 0..replicas.len() {
            let replica = &replicas[(start + offset) % replicas.len()];
            if !replica.has_replayed(committed_by) || !replica.try_now(self.inner.cooldown) {
                continue;
            }
            match replica.pool.get().await {
                Ok(client) => {
                    replica.mark_up();
                    return Some(client);
                }
                // All its connections are busy: the replica is fine, this
                // read goes elsewhere.
                Err(PoolError::Timeout(TimeoutType::Wait)) => {}
                Err(error) => {
                    tracing::warn!(replica = %replica.name, %error, "replica unavailable, skipping it for the cooldown");
                    replica.mark_down(self.inner.cooldown);
                }
            }
        }
        None
    }
}

impl Inner {
    async fn check_replicas(&self) {
        if self.replicas.is_empty() {
            return;
        }
        let positions = self.record_primary_position().await;
        for replica in &self.replicas {
            match replica.check(&positions).await {
                Ok(check) => {
                    metrics::gauge!("store_replica_lag_seconds", "replica" => replica.name.clone())
                        .set(check.lag.as_secs_f64());
                    replica.record(check, self.max_lag);
                }
                Err(error) => {
                    tracing::debug!(replica = %replica.name, %error, "replica check failed");
                    replica.mark_down(self.cooldown);
                }
            }
            let healthy = replica.status().healthy();
            metrics::gauge!("store_replica_healthy", "replica" => replica.name.clone())
                .set(if healthy { 1.0 } else { 0.0 });
        }
    }

    /// Note the primary's WAL position now; all positions remembered.
    async fn record_primary_position(&self) -> Vec<(Instant, u64)> {
        // Taken before asking: everything committed before `now` is at or
        // below the position the primary reports.
        let now = Instant::now();
        match self.primary_wal_position().await {
            Ok(position) => {
                let mut positions = lock(&self.primary_positions);
                positions.push_back((now, position));
                if positions.len() > POSITIONS_KEPT {
                    positions.pop_front();
                }
            }
            Err(error) => tracing::debug!(%error, "primary WAL position unknown"),
        }
        lock(&self.primary_positions).iter().copied().collect()
    }

    async fn primary_wal_position(&self) -> Result<u64, StoreError> {
        let client = self.primary.get().await?;
        let text: String = client
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await?
            .get(0);
        parse_lsn(&text)
    }

    fn publish_pool_gauges(&self) {
        publish_pool_gauge("primary".to_owned(), &self.primary);
        for replica in &self.replicas {
            publish_pool_gauge(format!("replica:{}", replica.name), &replica.pool);
        }
    }
}

/// Check replicas and publish gauges every `interval` while the pools live.
async fn monitor(inner: Weak<Inner>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        inner.check_replicas().await;
        inner.publish_pool_gauges();
    }
}

fn publish_pool_gauge(pool: String, of: &Pool) {
    let status = of.status();
    let in_use = status.size.saturating_sub(status.available);
    for (state, value) in [
        ("in_use", in_use),
        ("idle", status.available),
        ("waiting", status.waiting),
        ("max", status.max_size),
    ] {
        metrics::gauge!("store_pool_connections", "pool" => pool.clone(), "state" => state)
            .set(value as f64);
    }
}

/// Replay lag: 0 on a standby that has replayed everything it received from
/// a live WAL receiver (an idle primary sends nothing, which is not lag),
/// otherwise the age of the last replayed transaction; 0 on a server that is
/// not a standby at all. Second column: the WAL position replayed, NULL on a
/// server that is not a standby (it has everything).
const CHECK_QUERY: &str = "SELECT (CASE \
       WHEN NOT pg_is_in_recovery() THEN 0 \
       WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() \
            AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver) THEN 0 \
       ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0) \
     END)::float8, \
     CASE WHEN pg_is_in_recovery() THEN COALESCE(pg_last_wal_replay_lsn()::text, '0/0') END";

/// `16/B374D848` → one number, ordered like PostgreSQL orders positions.
fn parse_lsn(text: &str) -> Result<u64, StoreError> {
    let bad = || StoreError::Other(format!("bad WAL position `{text}`"));
    let (high, low) = text.split_once('/').ok_or_else(bad)?;
    let high = u64::from_str_radix(high, 16).map_err(|_| bad())?;
    let low = u64::from_str_radix(low, 16).map_err(|_| bad())?;
    Ok((high << 32) | low)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded values are plain data, valid even if a holder panicked.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// What one check of a replica found.
struct Check {
    lag: Duration,
    /// It had replayed everything committed before this instant.
    replayed_through: Option<Instant>,
}

impl Replica {
    fn new(url: &str, size: usize) -> Result<Self, StoreError> {
        Ok(Self {
            name: replica_name(url)?,
            pool: pool(url, size, REPLICA_CONNECT_TIMEOUT)?,
            health: Mutex::default(),
        })
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        lock(&self.health)
    }

    /// May a read use it now? A down replica whose cooldown is over lets
    /// exactly one read try it: that read pushes the cooldown forward, so
    /// concurrent reads do not all pay for a probe of a dead server.
    fn try_now(&self, cooldown: Duration) -> bool {
        let mut health = self.health();
        if health.lagging {
            return false;
        }
        match health.down_until {
            None => true,
            Some(until) if Instant::now() < until => false,
            Some(_) => {
                health.down_until = Some(Instant::now() + cooldown);
                true
            }
        }
    }

    /// Has it replayed everything committed before `wrote_at` (per its last
    /// check)? Always true without a write to wait for.
    fn has_replayed(&self, wrote_at: Option<Instant>) -> bool {
        let Some(wrote_at) = wrote_at else {
            return true;
        };
        self.health()
            .replayed_through
            .is_some_and(|through| through > wrote_at)
    }

    fn mark_down(&self, cooldown: Duration) {
        self.health().down_until = Some(Instant::now() + cooldown);
    }

    fn mark_up(&self) {
        let mut health = self.health();
        if health.down_until.take().is_some() {
            tracing::info!(replica = %self.name, "replica answers again");
        }
    }

    fn record(&self, check: Check, max_lag: Duration) {
        let mut health = self.health();
        let lag = check.lag;
        health.down_until = None;
        health.lag = Some(lag);
        // Replay only moves forward; keep the best bound known.
        health.replayed_through = health.replayed_through.max(check.replayed_through);
        let lagging = lag > max_lag;
        if lagging != health.lagging {
            tracing::warn!(replica = %self.name, lag_ms = lag.as_millis() as u64, lagging, "replica lag crossed the limit");
        }
        health.lagging = lagging;
    }

    /// Measure lag, and find the newest of the primary's `positions` it has
    /// replayed.
    async fn check(&self, positions: &[(Instant, u64)]) -> Result<Check, StoreError> {
        let client = self.pool.get().await?;
        let row = client.query_one(CHECK_QUERY, &[]).await?;
        let seconds: f64 = row.get(0);
        let replayed = match row.get::<_, Option<String>>(1) {
            Some(text) => parse_lsn(&text)?,
            None => u64::MAX,
        };
        Ok(Check {
            lag: Duration::from_secs_f64(seconds.max(0.0)),
            replayed_through: positions
                .iter()
                .rev()
                .find(|(_, position)| *position <= replayed)
                .map(|(at, _)| *at),
        })
    }

    fn status(&self) -> ReplicaStatus {
        let health = self.health();
        ReplicaStatus {
            name: self.name.clone(),
            down: health.down_until.is_some(),
            lag: health.lag,
            lagging: health.lagging,
        }
    }
}

/// `host:port/dbname` of a URL, without user or password.
fn replica_name(url: &str) -> Result<String, StoreError> {
    let config = parse(url)?;
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    Ok(format!(
        "{host}:{port}/{}",
        config.get_dbname().unwrap_or_default()
    ))
}

fn parse(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    url.parse()
        .map_err(|e| StoreError::Config(format!("bad postgres url: {e}")))
}

fn pool(url: &str, size: usize, connect_timeout: Duration) -> Result<Pool, StoreError> {
    let mut config = parse(url)?;
    config.connect_timeout(connect_timeout);
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(Runtime::Tokio1)
        // Waiting for a busy pool as long as for a new connection: short on
        // replicas, whose reads have the primary to go to.
        .wait_timeout(Some(connect_timeout))
        .create_timeout(Some(connect_timeout))
        .build()
        .map_err(|e| StoreError::Config(e.to_string()))
}

async fn migrate(url: &str, migrations: refinery::Runner) -> Result<(), StoreError> {
    let (mut client, connection) = tokio_postgres::connect(url, NoTls).await?;
    let driver = tokio::spawn(connection);
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = migrations
        .run_async(&mut client)
        .await
        .map(|_| ())
        .map_err(|e| StoreError::Other(format!("migrations failed: {e}")));
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    drop(client);
    let _ = driver.await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_names_carry_no_credentials() {
        let name = replica_name("postgres://app:secret@10.0.0.7:5433/reviews").unwrap();
        assert_eq!(name, "10.0.0.7:5433/reviews");
    }

    #[test]
    fn wal_positions_order_like_postgres() {
        assert_eq!(parse_lsn("0/0").unwrap(), 0);
        assert_eq!(parse_lsn("16/B374D848").unwrap(), 0x16_B374_D848);
        assert!(parse_lsn("0/FFFFFFFF").unwrap() < parse_lsn("1/0").unwrap());
        assert!(parse_lsn("nonsense").is_err());
    }
}
