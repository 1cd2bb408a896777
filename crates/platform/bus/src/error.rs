//! One error type for every adapter, reduced to what a caller acts on: is
//! the bus unreachable (retry later), is a message malformed (a bug, do not
//! retry), or something else.

use std::fmt::Display;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The broker or the database behind the bus cannot be reached, or is
    /// busy; a retry may help.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// A message could not be encoded or decoded.
    #[error("bus message serialization: {0}")]
    Serialization(String),
    #[error("bus error: {0}")]
    Other(String),
}

impl BusError {
    /// Wrap a broker client error: they are all connection or timeout
    /// problems from the caller's point of view.
    pub(crate) fn unavailable(error: impl Display) -> Self {
        BusError::Unavailable(error.to_string())
    }
}

impl From<serde_json::Error> for BusError {
    fn from(error: serde_json::Error) -> Self {
        BusError::Serialization(error.to_string())
    }
}

impl From<rusqlite::Error> for BusError {
    fn from(error: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match error.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                BusError::Unavailable(error.to_string())
            }
            _ => BusError::Other(error.to_string()),
        }
    }
}

impl From<tokio_postgres::Error> for BusError {
    fn from(error: tokio_postgres::Error) -> Self {
        // Without a database error the connection itself failed.
        if error.as_db_error().is_none() {
            BusError::Unavailable(error.to_string())
        } else {
            BusError::Other(error.to_string())
        }
    }
}

impl From<zocalo_store::StoreError> for BusError {
    fn from(error: zocalo_store::StoreError) -> Self {
        match error {
            zocalo_store::StoreError::Unavailable(cause) => BusError::Unavailable(cause),
            other => BusError::Other(other.to_string()),
        }
    }
}

impl From<tokio::task::JoinError> for BusError {
    fn from(error: tokio::task::JoinError) -> Self {
        BusError::Other(format!("bus task failed: {error}"))
    }
}
