//! The reviews service's storage. Two adapters — PostgreSQL (full-text search
//! with a generated `tsvector` and GIN index) and SQLite (FTS5 kept in step
//! by triggers) — implement [`ReviewsStore`] and pass the conformance suite
//! in `tests/api/store.rs`. The schema enforces the rules: a review targets
//! exactly one camera or lens that exists, ratings are 1–5, a brand/model
//! pair is listed once.

mod postgres;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;
use zocalo_store::{DatabaseSettings, Engine, StoreError};

use crate::domain::{
    Camera, ContentQuery, EquipmentQuery, Lens, NewReview, Review, ReviewChanges, ReviewStats,
};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

#[async_trait]
pub trait ReviewsStore: Send + Sync + 'static {
    /// A brand/model already listed is `StoreError::Conflict`.
    async fn create_camera(&self, camera: Camera) -> Result<Camera, StoreError>;
    async fn camera(&self, id: Uuid) -> Result<Option<Camera>, StoreError>;
    async fn cameras(&self, query: EquipmentQuery) -> Result<Vec<Camera>, StoreError>;
    async fn create_lens(&self, lens: Lens) -> Result<Lens, StoreError>;
    async fn lens(&self, id: Uuid) -> Result<Option<Lens>, StoreError>;
    async fn lenses(&self, query: EquipmentQuery) -> Result<Vec<Lens>, StoreError>;

    /// A target that does not exist is `StoreError::Constraint`.
    async fn create_review(&self, review: NewReview) -> Result<Review, StoreError>;
    async fn review(&self, id: Uuid) -> Result<Option<Review>, StoreError>;
    /// `None` when there is no such review.
    async fn update_review(
        &self,
        id: Uuid,
        changes: ReviewChanges,
    ) -> Result<Option<Review>, StoreError>;
    async fn delete_review(&self, id: Uuid) -> Result<bool, StoreError>;
    /// Newest first, before `query.before`, matching every filter given.
    async fn reviews(&self, query: ContentQuery) -> Result<Vec<Review>, StoreError>;

    /// Stats of each listed camera that exists, in the order asked.
    async fn camera_stats(&self, ids: &[Uuid]) -> Result<Vec<(Camera, ReviewStats)>, StoreError>;
    async fn lens_stats(&self, ids: &[Uuid]) -> Result<Vec<(Lens, ReviewStats)>, StoreError>;

    async fn ping(&self) -> Result<(), StoreError>;
}

pub async fn open(settings: &DatabaseSettings) -> Result<Arc<dyn ReviewsStore>, StoreError> {
    Ok(match Engine::from_url(&settings.url)? {
        Engine::Sqlite(path) => Arc::new(SqliteStore::open(&path, settings.max_connections)?),
        Engine::Postgres(_) => Arc::new(PostgresStore::connect(settings).await?),
    })
}
