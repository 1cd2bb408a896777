use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

/// What went wrong in the store, in the terms a service acts on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint (named by PostgreSQL's constraint name or SQLite's
    /// `table.column` list) refused the write.
    #[error("conflict on {0}")]
    Conflict(String),
    /// A check or foreign-key constraint refused the write.
    #[error("constraint {0} violated")]
    Constraint(String),
    #[error("not found")]
    NotFound,
    /// The database cannot be reached or is overloaded; a retry may help.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database configuration: {0}")]
    Config(String),
    #[error("database error: {0}")]
    Other(String),
}

impl StoreError {
    /// Did a constraint whose name contains `needle` refuse the write?
    pub fn is_constraint(&self, needle: &str) -> bool {
        match self {
            StoreError::Conflict(name) | StoreError::Constraint(name) => name.contains(needle),
            _ => false,
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        let Some(db) = error.as_db_error() else {
            return StoreError::Unavailable(error.to_string());
        };
        let constraint = db.constraint().unwrap_or("unknown").to_owned();
        match *db.code() {
            SqlState::UNIQUE_VIOLATION | SqlState::EXCLUSION_VIOLATION => {
                StoreError::Conflict(constraint)
            }
            SqlState::CHECK_VIOLATION
            | SqlState::FOREIGN_KEY_VIOLATION
            | SqlState::NOT_NULL_VIOLATION => StoreError::Constraint(constraint),
            SqlState::T_R_SERIALIZATION_FAILURE
            | SqlState::T_R_DEADLOCK_DETECTED
            | SqlState::TOO_MANY_CONNECTIONS
            | SqlState::ADMIN_SHUTDOWN
            | SqlState::CANNOT_CONNECT_NOW => StoreError::Unavailable(db.message().to_owned()),
            _ => StoreError::Other(format!("{}: {}", db.code().code(), db.message())),
        }
    }
}

impl From<PoolError> for StoreError {
    fn from(error: PoolError) -> Self {
        match error {
            PoolError::Backend(e) => e.into(),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match &error {
            rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
            rusqlite::Error::SqliteFailure(e, message) => {
                let message = message.clone().unwrap_or_default();
                match e.code {
                    ErrorCode::ConstraintViolation => sqlite_constraint(&message),
                    ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                        StoreError::Unavailable(message)
                    }
                    _ => StoreError::Other(error.to_string()),
                }
            }
            _ => StoreError::Other(error.to_string()),
        }
    }
}

/// SQLite says `UNIQUE constraint failed: users.email` or
/// `CHECK constraint failed: review_target`.
fn sqlite_constraint(message: &str) -> StoreError {
    let name = message
        .split_once(": ")
        .map(|(_, name)| name.to_owned())
        .unwrap_or_else(|| message.to_owned());
    if message.starts_with("UNIQUE") || message.starts_with("PRIMARY KEY") {
        StoreError::Conflict(name)
    } else {
        StoreError::Constraint(name)
    }
}

impl From<tokio::task::JoinError> for StoreError {
    fn from(error: tokio::task::JoinError) -> Self {
        StoreError::Other(format!("store task failed: {error}"))
    }
}

/// How a store failure looks to a client when the service has no more
/// specific answer: conflicts are the caller's (409/422), outages are
/// retryable (503), the rest is ours (500, details only in the log).
impl From<StoreError> for zocalo_http::Problem {
    fn from(error: StoreError) -> Self {
        use zocalo_http::Problem;
        match error {
            StoreError::Conflict(_) => Problem::conflict("conflicts with an existing resource"),
            StoreError::Constraint(name) => {
                Problem::invalid_field(name, "violates a constraint of the data model")
            }
            StoreError::NotFound => Problem::not_found(),
            StoreError::Unavailable(cause) => Problem::unavailable(cause),
            StoreError::Config(cause) | StoreError::Other(cause) => Problem::internal(cause),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_messages_become_named_conflicts() {
        assert!(matches!(
            sqlite_constraint("UNIQUE constraint failed: users.email"),
            StoreError::Conflict(name) if name == "users.email"
        ));
        assert!(sqlite_constraint("CHECK constraint failed: rating").is_constraint("rating"));
    }
}
