//! The auth service's storage, in its own terms. Two adapters implement
//! [`AuthStore`] — PostgreSQL and SQLite — and both pass the conformance
//! suite in `tests/api/store.rs`. Invariants live in the schema: one account
//! per email, roles from a fixed set, a refresh token used at most once.

mod postgres;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;
use zocalo_store::{DatabaseSettings, Engine, StoreError};

use crate::domain::{
    Credentials, NewUser, NextRefresh, OAuthClient, RefreshOutcome, Role, StoredKey, User,
};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

#[async_trait]
pub trait AuthStore: Send + Sync + 'static {
    /// Insert a user; a taken email is `StoreError::Conflict`.
    async fn create_user(&self, user: NewUser) -> Result<User, StoreError>;
    async fn credentials(&self, email: &str) -> Result<Option<Credentials>, StoreError>;
    async fn user(&self, id: Uuid) -> Result<Option<User>, StoreError>;
    /// Users in creation order, starting after `after`.
    async fn users(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<User>, StoreError>;
    /// `false` when there is no such user.
    async fn grant_role(&self, user: Uuid, role: Role) -> Result<bool, StoreError>;
    async fn revoke_role(&self, user: Uuid, role: Role) -> Result<bool, StoreError>;

    async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError>;
    async fn add_signing_key(&self, key: StoredKey) -> Result<(), StoreError>;

    /// Start a new refresh-token family with its first token.
    async fn insert_refresh(
        &self,
        hash: &str,
        family: Uuid,
        subject: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Atomically use the presented token and store its successor, or detect
    /// reuse and revoke the family.
    async fn rotate_refresh(
        &self,
        presented: &str,
        next: NextRefresh,
        now: DateTime<Utc>,
    ) -> Result<RefreshOutcome, StoreError>;
    /// The family and subject of a refresh token, valid or not.
    async fn refresh_owner(&self, hash: &str) -> Result<Option<(Uuid, String)>, StoreError>;
    async fn revoke_family(&self, family: Uuid, now: DateTime<Utc>) -> Result<(), StoreError>;
    async fn revoke_subject(&self, subject: &str, now: DateTime<Utc>) -> Result<(), StoreError>;

    /// Insert a client, or replace the secret, name and roles of an existing one.
    async fn save_client(&self, client: OAuthClient) -> Result<(), StoreError>;
    async fn client(&self, client_id: &str) -> Result<Option<OAuthClient>, StoreError>;

    async fn ping(&self) -> Result<(), StoreError>;
}

/// Open the store a URL names, applying migrations.
pub async fn open(settings: &DatabaseSettings) -> Result<Arc<dyn AuthStore>, StoreError> {
    Ok(match Engine::from_url(&settings.url)? {
        Engine::Sqlite(path) => Arc::new(SqliteStore::open(&path, settings.max_connections)?),
        Engine::Postgres(_) => Arc::new(PostgresStore::connect(settings).await?),
    })
}

fn roles_from_csv(csv: &str) -> Vec<String> {
    csv.split(',')
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect()
}
