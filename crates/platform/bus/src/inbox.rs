//! De-duplication for consumers. Delivery is at-least-once, so a consumer
//! records each event or job id in its own database, in the same
//! transaction as the effect of handling it; when the record says the id
//! was seen, the consumer skips the effect and acks. Handling and recording
//! commit together, so a crash in between redoes both, never only one.

use rusqlite::params;
use uuid::Uuid;

/// `CREATE TABLE processed_messages` for a service's SQLite migration.
pub const SQLITE_TABLE: &str = "CREATE TABLE IF NOT EXISTS processed_messages (
    id           TEXT PRIMARY KEY,
    processed_at INTEGER NOT NULL
);
";

/// `CREATE TABLE processed_messages` for a service's PostgreSQL migration.
pub const POSTGRES_TABLE: &str = "CREATE TABLE IF NOT EXISTS processed_messages (
    id           UUID PRIMARY KEY,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
";

/// Record `id` as processed; false when it already was.
pub fn record_sqlite(tx: &rusqlite::Transaction<'_>, id: Uuid) -> rusqlite::Result<bool> {
    let inserted = tx.execute(
        "INSERT INTO processed_messages (id, processed_at) VALUES (?1, ?2)
         ON CONFLICT (id) DO NOTHING",
        params![id.to_string(), crate::now_ms()],
    )?;
    Ok(inserted == 1)
}

/// Record `id` as processed; false when it already was. A concurrent
/// transaction recording the same id waits for this one and then gets false.
pub async fn record_postgres(
    tx: &tokio_postgres::Transaction<'_>,
    id: Uuid,
) -> Result<bool, tokio_postgres::Error> {
    let inserted = tx
        .execute(
            "INSERT INTO processed_messages (id) VALUES ($1) ON CONFLICT (id) DO NOTHING",
            &[&id],
        )
        .await?;
    Ok(inserted == 1)
}
