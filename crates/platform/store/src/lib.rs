//! Relational storage for Zócalo services.
//!
//! Services own their schema and SQL; this crate owns connections:
//! [`SqlitePool`] (embedded default: one writer, a few readers, WAL) and
//! [`PgPools`] (PostgreSQL primary for writes, optional replica for reads that
//! falls back to the primary), migrations with refinery for both, and
//! [`StoreError`], which turns driver errors into the few cases a service
//! acts on (conflict, constraint, not found, unavailable). Its only crate of
//! ours is `zocalo-http`, for turning a `StoreError` into a problem response.

mod error;
mod postgres;
mod sqlite;

use serde::{Deserialize, Serialize};

pub use error::StoreError;
pub use postgres::{PgClient, PgPools};
pub use sqlite::SqlitePool;

/// Where a service keeps its data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseSettings {
    /// `sqlite://path/to/file.db` or `postgres://user@host/db`.
    pub url: String,
    /// A read replica (`postgres://…`); reads fall back to `url` when it fails.
    pub read_url: Option<String>,
    /// Pool size per URL (PostgreSQL) or number of reader connections (SQLite).
    pub max_connections: usize,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            read_url: None,
            max_connections: 16,
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
}
