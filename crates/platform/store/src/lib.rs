//! Relational storage for Zócalo services.
//!
//! Services own their schema and SQL; this crate owns connections:
//! [`SqlitePool`] (embedded default: one writer, a few readers, WAL) and
//! [`PgPools`] (PostgreSQL primary for writes, any number of replicas for
//! reads with health checks, fallback to the primary and read-your-writes),
//! migrations with refinery for both, and
//! [`StoreError`], which turns driver errors into the few cases a service
//! acts on (conflict, constraint, not found, unavailable). Its only crate of
//! ours is `zocalo-http`, for turning a `StoreError` into a problem response.

mod error;
mod postgres;
mod sqlite;

use serde::{Deserialize, Serialize};

pub use error::StoreError;
pub use postgres::{PgClient, PgPools, ReplicaStatus};
pub use sqlite::SqlitePool;

/// Where a service keeps its data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseSettings {
    /// `sqlite://path/to/file.db` or `postgres://user@host/db`.
    pub url: String,
    /// A read replica (`postgres://…`); kept for compatibility, joins
    /// `read_urls`.
    pub read_url: Option<String>,
    /// Read replicas (`postgres://…`); reads fall back to `url` when none is
    /// healthy.
    pub read_urls: Vec<String>,
    /// Pool size per URL (PostgreSQL) or number of reader connections (SQLite).
    pub max_connections: usize,
    /// A replica whose replay lags more than this is not read from.
    pub max_replica_lag_ms: u64,
    /// How long a caller's reads go to the primary after it wrote
    /// (read-your-writes); 0 turns it off.
    pub sticky_ms: u64,
    /// How long a replica that failed to give a connection is skipped.
    pub replica_cooldown_ms: u64,
    /// How often replica lag and health are measured.
    pub replica_check_interval_ms: u64,
}

impl DatabaseSettings {
    /// `read_url` and `read_urls` together, without duplicates or blanks.
    pub fn replica_urls(&self) -> Vec<&str> {
        let mut urls: Vec<&str> = Vec::new();
        for url in self.read_url.iter().chain(&self.read_urls) {
            let url = url.trim();
            if !url.is_empty() && !urls.contains(&url) {
                urls.push(url);
            }
        }
        urls
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            read_url: None,
            read_urls: Vec::new(),
            max_connections: 16,
            max_replica_lag_ms: 5_000,
            sticky_ms: 2_000,
            replica_cooldown_ms: 2_000,
            replica_check_interval_ms: 1_000,
        }
    }
}

/// Which engine a URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Engine {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl Engine {
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Engine::Postgres(url.to_owned()));
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| {
                StoreError::Config(format!(
                    "database url must start with sqlite:// or postgres://, got `{url}`"
                ))
            })?;
        if path.is_empty() || path.contains(":memory:") {
            return Err(StoreError::Config(
                "a sqlite url needs a file path (in-memory databases are per connection)".into(),
            ));
        }
        Ok(Engine::Sqlite(path.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_the_engine() {
        assert_eq!(
            Engine::from_url("sqlite://data/a.db").unwrap(),
            Engine::Sqlite("data/a.db".into())
        );
        assert!(matches!(
            Engine::from_url("postgres://postgres@127.0.0.1/x").unwrap(),
            Engine::Postgres(_)
        ));
        assert!(Engine::from_url("mysql://x").is_err());
        assert!(Engine::from_url("sqlite://:memory:").is_err());
    }

    #[test]
    fn read_url_and_read_urls_are_merged() {
        let settings = DatabaseSettings {
            read_url: Some("postgres://a/x".into()),
            read_urls: vec!["postgres://b/x".into(), " ".into(), "postgres://a/x".into()],
            ..DatabaseSettings::default()
        };
        assert_eq!(
            settings.replica_urls(),
            ["postgres://a/x", "postgres://b/x"]
        );
    }
}
