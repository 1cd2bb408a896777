use async_trait::async_trait;
use chrono::Utc;
use serde::Serialize;
use tokio_postgres::{GenericClient, Row, Transaction};
use uuid::Uuid;
use zocalo_store::{DatabaseSettings, PgPools, StoreError};

use super::{
    Created, EXPIRED_KEYS_PER_SWEEP, IDEMPOTENCY_KEY_TTL, IdempotencyClaim, KeyRecord,
    ResourceKind, ReviewsStore,
};
use crate::domain::{
    Camera, ContentQuery, EquipmentQuery, Lens, NewReview, Review, ReviewChanges, ReviewStats,
};

mod migrations {
    refinery::embed_migrations!("migrations/postgres");
}

pub struct PostgresStore {
    pools: PgPools,
}

impl PostgresStore {
    pub async fn connect(settings: &DatabaseSettings) -> Result<Self, StoreError> {
        Ok(Self {
            pools: PgPools::connect(settings, migrations::migrations::runner()).await?,
        })
    }
}

/// Reads that must see the caller's own write run on the primary (or in
/// the writing transaction).
async fn load_review<C: GenericClient>(client: &C, id: Uuid) -> Result<Option<Review>, StoreError> {
    let sql = format!("{REVIEW_SELECT} WHERE r.id = $1");
    Ok(client
        .query_opt(&sql, &[&id])
        .await?
        .as_ref()
        .map(review_from_row))
}

/// Delete a few keys older than [`IDEMPOTENCY_KEY_TTL`]. Best effort, outside
/// the request's transaction; `SKIP LOCKED` keeps instances sweeping at the
/// same time from waiting on each other.
async fn sweep_expired_keys(client: &tokio_postgres::Client, claim: Option<&IdempotencyClaim>) {
    if claim.is_none() {
        return;
    }
    let cutoff = Utc::now() - IDEMPOTENCY_KEY_TTL;
    let swept = client
        .execute(
            "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY( \
             SELECT ctid FROM idempotency_keys WHERE created_at < $1 \
             ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED))",
            &[&cutoff, &EXPIRED_KEYS_PER_SWEEP],
        )
        .await;
    if let Err(error) = swept {
        tracing::warn!(%error, "could not delete expired idempotency keys");
    }
}

/// Claim the caller's key for a new resource, first thing in `tx`. If a
/// request with the same key is in flight elsewhere, the insert waits for
/// its transaction: committed, its record is returned (and the caller must
/// roll back); rolled back, this request takes the key.
async fn claim_key(
    tx: &Transaction<'_>,
    claim: Option<&IdempotencyClaim>,
    kind: ResourceKind,
    id: Uuid,
) -> Result<Option<KeyRecord>, StoreError> {
    let Some(claim) = claim else {
        return Ok(None);
    };
    // Twice at most: the record found taken may be swept as expired before
    // it is read, and then the key is free again.
    for _ in 0..2 {
        let inserted = tx
            .execute(
                "INSERT INTO idempotency_keys (caller, key, request_hash, resource_kind, resource_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (caller, key) DO NOTHING",
                &[&claim.caller, &claim.key, &claim.request_hash, &kind.as_str(), &id, &Utc::now()],
            )
            .await?;
        if inserted == 1 {
            return Ok(None);
        }
        let row = tx
            .query_opt(
                "SELECT request_hash, resource_id, response_body FROM idempotency_keys \
                 WHERE caller = $1 AND key = $2",
                &[&claim.caller, &claim.key],
            )
            .await?;
        if let Some(row) = row {
            return Ok(Some(KeyRecord {
                request_hash: row.get(0),
                resource_id: row.get(1),
                // Set before the claiming transaction commits.
                response_body: row.get::<_, Option<String>>(2).unwrap_or_default(),
            }));
        }
    }
    Err(StoreError::Other(
        "idempotency key neither free nor taken".into(),
    ))
}

/// Store the answer to replay for the claimed key, in the creating
/// transaction.
async fn record_response<T: Serialize>(
    tx: &Transaction<'_>,
    claim: Option<&IdempotencyClaim>,
    resource: &T,
) -> Result<(), StoreError> {
    let Some(claim) = claim else {
        return Ok(());
    };
    let body = serde_json::to_string(resource).map_err(|e| StoreError::Other(e.to_string()))?;
    tx.execute(
        "UPDATE idempotency_keys SET response_body = $3 WHERE caller = $1 AND key = $2",
        &[&claim.caller, &claim.key, &body],
    )
    .await?;
    Ok(())
}

const CAMERA_COLUMNS: &str = "id, brand, model, sensor, megapixels, released, created_at";
const LENS_COLUMNS: &str =
    "id, brand, model, mount, focal_min_mm, focal_max_mm, max_aperture, created_at";
const REVIEW_SELECT: &str = "SELECT r.id, r.title, r.content, r.rating, r.camera_id, r.lens_id, \
     COALESCE(c.brand, l.brand), COALESCE(c.model, l.model), r.editor_id, r.editor_name, r.created_at, r.updated_at \
     FROM reviews r LEFT JOIN cameras c ON c.id = r.camera_id LEFT JOIN lenses l ON l.id = r.lens_id";

fn camera_from_row(row: &Row) -> Camera {
    Camera {
        id: row.get(0),
        brand: row.get(1),
        model: row.get(2),
        sensor: row.get(3),
        megapixels: row.get(4),
        released: row.get(5),
        created_at: row.get(6),
    }
}

fn lens_from_row(row: &Row) -> Lens {
    Lens {
        id: row.get(0),
        brand: row.get(1),
        model: row.get(2),
        mount: row.get(3),
        focal_min_mm: row.get(4),
        focal_max_mm: row.get(5),
        max_aperture: row.get(6),
        created_at: row.get(7),
    }
}

fn review_from_row(row: &Row) -> Review {
    Review {
        id: row.get(0),
        title: row.get(1),
        content: row.get(2),
        rating: row.get(3),
        camera_id: row.get(4),
        lens_id: row.get(5),
        target_brand: row.get(6),
        target_model: row.get(7),
        editor_id: row.get(8),
        editor_name: row.get(9),
        created_at: row.get(10),
        updated_at: row.get(11),
    }
}

fn stats_from_row(row: &Row, offset: usize) -> ReviewStats {
    ReviewStats {
        review_count: row.get(offset),
        average_rating: row.get(offset + 1),
    }
}

/// The tables of equipment reviews are written about; cameras and lenses
/// are read the same way.
#[derive(Clone, Copy)]
enum EquipmentTable {
    Cameras,
    Lenses,
}

impl EquipmentTable {
    /// The table and the columns its `*_from_row` reads, in order.
    fn table_and_columns(self) -> (&'static str, &'static str) {
        match self {
            Self::Cameras => ("cameras", CAMERA_COLUMNS),
            Self::Lenses => ("lenses", LENS_COLUMNS),
        }
    }
}

impl PostgresStore {
    /// One camera or lens, read through the read pool.
    async fn equipment<T>(
        &self,
        table: EquipmentTable,
        id: Uuid,
        from_row: fn(&Row) -> T,
    ) -> Result<Option<T>, StoreError> {
        let (table, columns) = table.table_and_columns();
        let client = self.pools.reader().await?;
        let sql = format!("SELECT {columns} FROM {table} WHERE id = $1");
        Ok(client.query_opt(&sql, &[&id]).await?.as_ref().map(from_row))
    }

    /// A page of cameras or lenses in id order, optionally of one brand
    /// (compared without case).
    async fn equipment_page<T>(
        &self,
        table: EquipmentTable,
        query: EquipmentQuery,
        from_row: fn(&Row) -> T,
    ) -> Result<Vec<T>, StoreError> {
        let (table, columns) = table.table_and_columns();
        let client = self.pools.reader().await?;
        let sql = format!(
            "SELECT {columns} FROM {table} WHERE ($1::uuid IS NULL OR id > $1) \
             AND ($2::text IS NULL OR lower(brand) = lower($2)) ORDER BY id LIMIT $3"
        );
        let rows = client
            .query(&sql, &[&query.after, &query.brand, &i64::from(query.limit)])
            .await?;
        Ok(rows.iter().map(from_row).collect())
    }

    /// Create a resource at most once per Idempotency-Key: the key is
    /// claimed first in the transaction (a concurrent request with it must
    /// wait there, not on a unique index of the resource, where it would
    /// fail as a duplicate), then `insert` runs, and the answer to replay is
    /// stored with the resource. A key used before returns its record.
    async fn create_once<T: Serialize>(
        &self,
        claim: Option<IdempotencyClaim>,
        kind: ResourceKind,
        id: Uuid,
        insert: impl AsyncFnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<Created<T>, StoreError> {
        let mut client = self.pools.writer().await?;
        sweep_expired_keys(&client, claim.as_ref()).await;
        let tx = client.transaction().await?;
        if let Some(record) = claim_key(&tx, claim.as_ref(), kind, id).await? {
            tx.rollback().await?;
            return Ok(Created::Existing(record));
        }
        let created = insert(&tx).await?;
        record_response(&tx, claim.as_ref(), &created).await?;
        tx.commit().await?;
        Ok(Created::New(created))
    }
}

#[async_trait]
impl ReviewsStore for PostgresStore {
    async fn create_camera(
        &self,
        camera: Camera,
        claim: Option<IdempotencyClaim>,
    ) -> Result<Created<Camera>, StoreError> {
        self.create_once(claim, ResourceKind::Camera, camera.id, async |tx| {
            tx.execute(
                &format!(
                    "INSERT INTO cameras ({CAMERA_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                ),
                &[
                    &camera.id,
                    &camera.brand,
                    &camera.model,
                    &camera.sensor,
                    &camera.megapixels,
                    &camera.released,
                    &camera.created_at,
                ],
            )
            .await?;
            Ok(camera)
        })
        .await
    }

    async fn camera(&self, id: Uuid) -> Result<Option<Camera>, StoreError> {
        self.equipment(EquipmentTable::Cameras, id, camera_from_row)
            .await
    }

    async fn cameras(&self, query: EquipmentQuery) -> Result<Vec<Camera>, StoreError> {
        self.equipment_page(EquipmentTable::Cameras, query, camera_from_row)
            .await
    }

    async fn create_lens(
        &self,
        lens: Lens,
        claim: Option<IdempotencyClaim>,
    ) -> Result<Created<Lens>, StoreError> {
        self.create_once(claim, ResourceKind::Lens, lens.id, async |tx| {
            tx.execute(
                &format!(
                    "INSERT INTO lenses ({LENS_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                ),
                &[
                    &lens.id,
                    &lens.brand,
                    &lens.model,
                    &lens.mount,
                    &lens.focal_min_mm,
                    &lens.focal_max_mm,
                    &lens.max_aperture,
                    &lens.created_at,
                ],
            )
            .await?;
            Ok(lens)
        })
        .await
    }

    async fn lens(&self, id: Uuid) -> Result<Option<Lens>, StoreError> {
        self.equipment(EquipmentTable::Lenses, id, lens_from_row)
            .await
    }

    async fn lenses(&self, query: EquipmentQuery) -> Result<Vec<Lens>, StoreError> {
        self.equipment_page(EquipmentTable::Lenses, query, lens_from_row)
            .await
    }

    async fn create_review(
        &self,
        review: NewReview,
        claim: Option<IdempotencyClaim>,
    ) -> Result<Created<Review>, StoreError> {
        self.create_once(claim, ResourceKind::Review, review.id, async |tx| {
            tx.execute(
                "INSERT INTO reviews (id, title, content, rating, camera_id, lens_id, editor_id, editor_name, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
                &[
                    &review.id, &review.title, &review.content, &review.rating,
                    &review.target.camera_id(), &review.target.lens_id(),
                    &review.editor_id, &review.editor_name, &review.created_at,
                ],
            )
            .await?;
            load_review(tx, review.id)
                .await?
                .ok_or(StoreError::NotFound)
        })
        .await
    }

    async fn review(&self, id: Uuid) -> Result<Option<Review>, StoreError> {
        let client = self.pools.reader().await?;
        let sql = format!("{REVIEW_SELECT} WHERE r.id = $1");
        Ok(client
            .query_opt(&sql, &[&id])
            .await?
            .as_ref()
            .map(review_from_row))
    }

    async fn update_review(
        &self,
        id: Uuid,
        changes: ReviewChanges,
    ) -> Result<Option<Review>, StoreError> {
        let client = self.pools.writer().await?;
        let updated = client
            .execute(
                "UPDATE reviews SET title = COALESCE($2, title), content = COALESCE($3, content), \
                 rating = COALESCE($4, rating), updated_at = $5 WHERE id = $1",
                &[
                    &id,
                    &changes.title,
                    &changes.content,
                    &changes.rating,
                    &changes.updated_at,
                ],
            )
            .await?;
        if updated == 0 {
            return Ok(None);
        }
        load_review(&**client, id).await
    }

    async fn delete_review(&self, id: Uuid) -> Result<bool, StoreError> {
        let client = self.pools.writer().await?;
        Ok(client
            .execute("DELETE FROM reviews WHERE id = $1", &[&id])
            .await?
            > 0)
    }

    async fn reviews(&self, query: ContentQuery) -> Result<Vec<Review>, StoreError> {
        let client = self.pools.reader().await?;
        let sql = format!(
            "{REVIEW_SELECT} WHERE ($1::uuid IS NULL OR r.id < $1) \
             AND ($2::uuid IS NULL OR r.camera_id = $2) \
             AND ($3::uuid IS NULL OR r.lens_id = $3) \
             AND ($4::uuid IS NULL OR r.editor_id = $4) \
             AND ($5::text IS NULL OR lower(COALESCE(c.brand, l.brand)) = lower($5)) \
             AND ($6::text IS NULL OR r.search @@ websearch_to_tsquery('english', $6)) \
             ORDER BY r.id DESC LIMIT $7"
        );
        let statement = client.prepare_cached(&sql).await?;
        let rows = client
            .query(
                &statement,
                &[
                    &query.before,
                    &query.camera_id,
                    &query.lens_id,
                    &query.editor_id,
                    &query.brand,
                    &query.text,
                    &i64::from(query.limit),
                ],
            )
            .await?;
        Ok(rows.iter().map(review_from_row).collect())
    }

    async fn camera_stats(&self, ids: &[Uuid]) -> Result<Vec<(Camera, ReviewStats)>, StoreError> {
        let client = self.pools.reader().await?;
        let sql = format!(
            "SELECT {CAMERA_COLUMNS}, \
             (SELECT COUNT(*) FROM reviews r WHERE r.camera_id = c.id), \
             (SELECT AVG(rating)::float8 FROM reviews r WHERE r.camera_id = c.id) \
             FROM cameras c WHERE id = ANY($1) ORDER BY array_position($1, id)"
        );
        let rows = client.query(&sql, &[&ids]).await?;
        Ok(rows
            .iter()
            .map(|row| (camera_from_row(row), stats_from_row(row, 7)))
            .collect())
    }

    async fn lens_stats(&self, ids: &[Uuid]) -> Result<Vec<(Lens, ReviewStats)>, StoreError> {
        let client = self.pools.reader().await?;
        let sql = format!(
            "SELECT {LENS_COLUMNS}, \
             (SELECT COUNT(*) FROM reviews r WHERE r.lens_id = l.id), \
             (SELECT AVG(rating)::float8 FROM reviews r WHERE r.lens_id = l.id) \
             FROM lenses l WHERE id = ANY($1) ORDER BY array_position($1, id)"
        );
        let rows = client.query(&sql, &[&ids]).await?;
        Ok(rows
            .iter()
            .map(|row| (lens_from_row(row), stats_from_row(row, 8)))
            .collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.pools.ping().await
    }
}
