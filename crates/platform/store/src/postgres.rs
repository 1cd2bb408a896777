//! PostgreSQL with a read/write split: writes and read-your-writes queries go
//! to the primary; plain reads go to the replica pool when one is configured
//! and fall back to the primary when the replica cannot hand out a
//! connection, so a lost replica costs capacity, not availability.

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::{DatabaseSettings, StoreError};

pub type PgClient = deadpool_postgres::Object;

#[derive(Clone)]
pub struct PgPools {
    primary: Pool,
    replica: Option<Pool>,
}

/// Arbitrary key for the advisory lock that serialises migrations when
/// several instances start at once.
const MIGRATION_LOCK: i64 = 0x7a6f_63616c6f;

impl PgPools {
    /// Build the pools and apply `migrations` on the primary.
    pub async fn connect(
        settings: &DatabaseSettings,
        migrations: refinery::Runner,
    ) -> Result<Self, StoreError> {
        migrate(&settings.url, migrations).await?;
        let primary = pool(&settings.url, settings.max_connections)?;
        let replica = settings
            .read_url
            .as_deref()
            .map(|url| pool(url, settings.max_connections))
            .transpose()?;
        Ok(Self { primary, replica })
    }

    pub async fn writer(&self) -> Result<PgClient, StoreError> {
        Ok(self.primary.get().await?)
    }

    pub async fn reader(&self) -> Result<PgClient, StoreError> {
        if let Some(replica) = &self.replica {
            match replica.get().await {
                Ok(client) => return Ok(client),
                Err(error) => {
                    tracing::warn!(%error, "replica unavailable, reading from primary");
                    metrics::counter!("store_replica_fallbacks_total").increment(1);
                }
            }
        }
        self.writer().await
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.writer().await?.simple_query("SELECT 1").await?;
        Ok(())
    }
}

fn pool(url: &str, size: usize) -> Result<Pool, StoreError> {
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| StoreError::Config(format!("bad postgres url: {e}")))?;
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
        .wait_timeout(Some(std::time::Duration::from_secs(5)))
        .create_timeout(Some(std::time::Duration::from_secs(5)))
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
