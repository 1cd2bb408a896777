//! The reviews service's storage. Two adapters — PostgreSQL (full-text search
//! with a generated `tsvector` and GIN index) and SQLite (FTS5 kept in step
//! by triggers) — implement [`ReviewsStore`] and pass the conformance suite
//! in `tests/api/store.rs`. The schema enforces the rules: a review targets
//! exactly one camera or lens that exists, ratings are 1–5, a brand/model
//! pair is listed once.
//!
//! Creating methods take an optional [`IdempotencyClaim`]: the resource and
//! the record of its key are written in one transaction, and the key's
//! primary key (caller, key) makes a second request with the same key —
//! on any instance, at the same moment or later — find the first one's
//! record instead of creating again.

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

/// How long an idempotency key is remembered at least; older records are
/// deleted a few at a time by later keyed requests.
pub const IDEMPOTENCY_KEY_TTL: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// At most this many expired keys are deleted per keyed request, so the
/// cleanup stays cheap however many piled up.
const EXPIRED_KEYS_PER_SWEEP: i64 = 100;

/// What a creating request with an `Idempotency-Key` is: who sent it, the
/// key, and a fingerprint of the request (endpoint and body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyClaim {
    /// The token subject: keys are scoped per caller.
    pub caller: String,
    pub key: String,
    pub request_hash: String,
}

/// The kind of resource a key created, recorded for operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    Camera,
    Lens,
    Review,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Camera => "camera",
            ResourceKind::Lens => "lens",
            ResourceKind::Review => "review",
        }
    }
}

/// What the first request with a key created and answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub request_hash: String,
    pub resource_id: Uuid,
    /// The JSON body of the first `201 Created`, replayed byte for byte.
    pub response_body: String,
}

/// The outcome of a creating call.
#[derive(Debug)]
pub enum Created<T> {
    /// Created now (and the key, if any, recorded with it).
    New(T),
    /// The caller's key was used before: what that request created. The
    /// caller compares `request_hash` to tell a retry from a reused key.
    Existing(KeyRecord),
}

#[async_trait]
pub trait ReviewsStore: Send + Sync + 'static {
    /// A brand/model already listed is `StoreError::Conflict`.
    async fn create_camera(
        &self,
        camera: Camera,
        claim: Option<IdempotencyClaim>,
    ) -> Result<Created<Camera>, StoreError>;
    async fn camera(&self, id: Uuid) -> Result<Option<Camera>, StoreError>;
    async fn cameras(&self, query: EquipmentQuery) -> Result<Vec<Camera>, StoreError>;
    async fn create_lens(
        &self,
        lens: Lens,
        claim: Option<IdempotencyClaim>,
    ) -> Result<Created<Lens>, StoreError>;
    async fn lens(&self, id: Uuid) -> Result<Option<Lens>, StoreError>;
    async fn lenses(&self, query: EquipmentQuery) -> Result<Vec<Lens>, StoreError>;

    /// A target that does not exist is `StoreError::Constraint`.
    async fn create_review(
        &self,
        review: NewReview,
        claim: Option<IdempotencyClaim>,
    ) -> Result<Created<Review>, StoreError>;
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
