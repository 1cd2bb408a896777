//! The charge ledger: one row per idempotency key in the selling service's
//! database. The primary key is what makes a charge idempotent: the first
//! outcome recorded for a key is the one every retry reads back.
//!
//! Services create the table with [`SQLITE_TABLE`] / [`POSTGRES_TABLE`] in
//! a migration; the ledger is then their store's pool, which implements
//! [`ChargeLedger`] here for both engines.

use async_trait::async_trait;
use chrono::Utc;
use rusqlite::params;
use uuid::Uuid;
use zocalo_store::{PgPools, SqlitePool, StoreError};

use crate::Charge;

pub const CAPTURED: &str = "captured";
pub const DECLINED: &str = "declined";
pub const REFUNDED: &str = "refunded";

/// `CREATE TABLE payment_charges` for a service's SQLite migration.
pub const SQLITE_TABLE: &str = "CREATE TABLE IF NOT EXISTS payment_charges (
    idempotency_key BLOB PRIMARY KEY,
    amount_cents    INTEGER NOT NULL CHECK (amount_cents > 0),
    currency        TEXT NOT NULL,
    card_last4      TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('captured', 'declined', 'refunded')),
    created_at      TEXT NOT NULL
);
";

/// `CREATE TABLE payment_charges` for a service's PostgreSQL migration.
pub const POSTGRES_TABLE: &str = "CREATE TABLE IF NOT EXISTS payment_charges (
    idempotency_key UUID PRIMARY KEY,
    amount_cents    BIGINT NOT NULL CHECK (amount_cents > 0),
    currency        TEXT NOT NULL,
    card_last4      TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('captured', 'declined', 'refunded')),
    created_at      TIMESTAMPTZ NOT NULL
);
";

/// Where a [`crate::SimulatedProcessor`] keeps its outcomes.
#[async_trait]
pub trait ChargeLedger: Send + Sync + 'static {
    /// Store `status` for the charge's key unless the key has an entry;
    /// return the entry's status either way.
    async fn record_charge(&self, charge: &Charge<'_>, status: &str) -> Result<String, StoreError>;
    /// `captured → refunded`; `false` when the key has no captured charge.
    async fn refund_charge(&self, key: Uuid) -> Result<bool, StoreError>;
    /// The statuses recorded for `key` (at most one), for tests and audits.
    async fn charges(&self, key: Uuid) -> Result<Vec<String>, StoreError>;
}

/// A [`Charge`] that owns its strings, to move into a blocking task.
#[derive(Debug, Clone)]
struct OwnedCharge {
    key: Uuid,
    amount_cents: i64,
    currency: String,
    card_token: String,
    card_last4: String,
}

impl From<&Charge<'_>> for OwnedCharge {
    fn from(charge: &Charge<'_>) -> Self {
        Self {
            key: charge.key,
            amount_cents: charge.amount_cents,
            currency: charge.currency.to_owned(),
            card_token: charge.card_token.to_owned(),
            card_last4: charge.card_last4.to_owned(),
        }
    }
}

impl OwnedCharge {
    fn as_charge(&self) -> Charge<'_> {
        Charge {
            key: self.key,
            amount_cents: self.amount_cents,
            currency: &self.currency,
            card_token: &self.card_token,
            card_last4: &self.card_last4,
        }
    }
}

fn record_sqlite(
    conn: &rusqlite::Connection,
    charge: &Charge<'_>,
    status: &str,
) -> Result<String, StoreError> {
    conn.execute(
        "INSERT INTO payment_charges (idempotency_key, amount_cents, currency, card_last4, status, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (idempotency_key) DO NOTHING",
        params![charge.key, charge.amount_cents, charge.currency, charge.card_last4, status, Utc::now()],
    )?;
    Ok(conn.query_row(
        "SELECT status FROM payment_charges WHERE idempotency_key = ?1",
        [charge.key],
        |row| row.get(0),
    )?)
}

fn refund_sqlite(conn: &rusqlite::Connection, key: Uuid) -> Result<bool, StoreError> {
    Ok(conn.execute(
        "UPDATE payment_charges SET status = 'refunded' WHERE idempotency_key = ?1 AND status = 'captured'",
        [key],
    )? > 0)
}

fn charges_sqlite(conn: &rusqlite::Connection, key: Uuid) -> Result<Vec<String>, StoreError> {
    let mut statement =
        conn.prepare_cached("SELECT status FROM payment_charges WHERE idempotency_key = ?1")?;
    let rows = statement.query_map([key], |row| row.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

async fn record_postgres<C: tokio_postgres::GenericClient>(
    client: &C,
    charge: &Charge<'_>,
    status: &str,
) -> Result<String, StoreError> {
    client
        .execute(
            "INSERT INTO payment_charges (idempotency_key, amount_cents, currency, card_last4, status, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (idempotency_key) DO NOTHING",
            &[&charge.key, &charge.amount_cents, &charge.currency, &charge.card_last4, &status, &Utc::now()],
        )
        .await?;
    let row = client
        .query_one(
            "SELECT status FROM payment_charges WHERE idempotency_key = $1",
            &[&charge.key],
        )
        .await?;
    Ok(row.get(0))
}

async fn refund_postgres<C: tokio_postgres::GenericClient>(
    client: &C,
    key: Uuid,
) -> Result<bool, StoreError> {
    Ok(client
        .execute(
            "UPDATE payment_charges SET status = 'refunded' WHERE idempotency_key = $1 AND status = 'captured'",
            &[&key],
        )
        .await?
        > 0)
}

async fn charges_postgres<C: tokio_postgres::GenericClient>(
    client: &C,
    key: Uuid,
) -> Result<Vec<String>, StoreError> {
    let rows = client
        .query(
            "SELECT status FROM payment_charges WHERE idempotency_key = $1",
            &[&key],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

#[async_trait]
impl ChargeLedger for SqlitePool {
    async fn record_charge(&self, charge: &Charge<'_>, status: &str) -> Result<String, StoreError> {
        let (charge, status) = (OwnedCharge::from(charge), status.to_owned());
        self.write(move |conn| record_sqlite(conn, &charge.as_charge(), &status))
            .await
    }

    async fn refund_charge(&self, key: Uuid) -> Result<bool, StoreError> {
        self.write(move |conn| refund_sqlite(conn, key)).await
    }

    async fn charges(&self, key: Uuid) -> Result<Vec<String>, StoreError> {
        self.read(move |conn| charges_sqlite(conn, key)).await
    }
}

/// On the primary: a charge is a write, and its outcome is read back
/// where it was written.
#[async_trait]
impl ChargeLedger for PgPools {
    async fn record_charge(&self, charge: &Charge<'_>, status: &str) -> Result<String, StoreError> {
        let client = self.writer().await?;
        record_postgres(&**client, charge, status).await
    }

    async fn refund_charge(&self, key: Uuid) -> Result<bool, StoreError> {
        let client = self.writer().await?;
        refund_postgres(&**client, key).await
    }

    async fn charges(&self, key: Uuid) -> Result<Vec<String>, StoreError> {
        let client = self.writer().await?;
        charges_postgres(&**client, key).await
    }
}
