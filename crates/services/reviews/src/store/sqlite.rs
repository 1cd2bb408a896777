use std::path::Path;

use async_trait::async_trait;
use chrono::Utc;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use serde::Serialize;
use uuid::Uuid;
use zocalo_store::{SqlitePool, StoreError};

use super::{
    Created, EXPIRED_KEYS_PER_SWEEP, IDEMPOTENCY_KEY_TTL, IdempotencyClaim, KeyRecord,
    ResourceKind, ReviewsStore,
};
use crate::domain::{
    Camera, ContentQuery, EquipmentQuery, Lens, NewReview, Review, ReviewChanges, ReviewStats,
    fts5_terms,
};

mod migrations {
    refinery::embed_migrations!("migrations/sqlite");
}

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub fn open(path: &Path, readers: usize) -> Result<Self, StoreError> {
        Ok(Self {
            pool: SqlitePool::open(path, readers.min(8), migrations::migrations::runner())?,
        })
    }
}

const CAMERA_COLUMNS: &str = "id, brand, model, sensor, megapixels, released, created_at";
const LENS_COLUMNS: &str =
    "id, brand, model, mount, focal_min_mm, focal_max_mm, max_aperture, created_at";
const REVIEW_SELECT: &str = "SELECT r.id, r.title, r.content, r.rating, r.camera_id, r.lens_id, \
     COALESCE(c.brand, l.brand), COALESCE(c.model, l.model), r.editor_id, r.editor_name, r.created_at, r.updated_at \
     FROM reviews r LEFT JOIN cameras c ON c.id = r.camera_id LEFT JOIN lenses l ON l.id = r.lens_id";

fn camera_from_row(row: &Row<'_>) -> rusqlite::Result<Camera> {
    Ok(Camera {
        id: row.get(0)?,
        brand: row.get(1)?,
        model: row.get(2)?,
        sensor: row.get(3)?,
        megapixels: row.get(4)?,
        released: row.get(5)?,
        created_at: row.get(6)?,
    })
}

fn lens_from_row(row: &Row<'_>) -> rusqlite::Result<Lens> {
    Ok(Lens {
        id: row.get(0)?,
        brand: row.get(1)?,
        model: row.get(2)?,
        mount: row.get(3)?,
        focal_min_mm: row.get(4)?,
        focal_max_mm: row.get(5)?,
        max_aperture: row.get(6)?,
        created_at: row.get(7)?,
    })
}

fn review_from_row(row: &Row<'_>) -> rusqlite::Result<Review> {
    Ok(Review {
        id: row.get(0)?,
        title: row.get(1)?,
        content: row.get(2)?,
        rating: row.get(3)?,
        camera_id: row.get(4)?,
        lens_id: row.get(5)?,
        target_brand: row.get(6)?,
        target_model: row.get(7)?,
        editor_id: row.get(8)?,
        editor_name: row.get(9)?,
        created_at: row.get(10)?,
        updated_at: row.get(11)?,
    })
}

fn load_review(conn: &Connection, id: Uuid) -> Result<Option<Review>, StoreError> {
    let sql = format!("{REVIEW_SELECT} WHERE r.id = ?1");
    Ok(conn.query_row(&sql, [id], review_from_row).optional()?)
}

/// Claim the caller's key for a new resource, first thing in `tx`, after
/// deleting a few expired keys. `Some` is the record of an earlier request
/// with the key; the caller must then drop `tx` (rolling it back).
fn claim_key(
    tx: &Transaction<'_>,
    claim: Option<&IdempotencyClaim>,
    kind: ResourceKind,
    id: Uuid,
) -> Result<Option<KeyRecord>, StoreError> {
    let Some(claim) = claim else {
        return Ok(None);
    };
    tx.execute(
        "DELETE FROM idempotency_keys WHERE rowid IN ( \
         SELECT rowid FROM idempotency_keys WHERE created_at < ?1 ORDER BY created_at LIMIT ?2)",
        params![Utc::now() - IDEMPOTENCY_KEY_TTL, EXPIRED_KEYS_PER_SWEEP],
    )?;
    let inserted = tx.execute(
        "INSERT INTO idempotency_keys (caller, key, request_hash, resource_kind, resource_id, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (caller, key) DO NOTHING",
        params![claim.caller, claim.key, claim.request_hash, kind.as_str(), id, Utc::now()],
    )?;
    if inserted == 1 {
        return Ok(None);
    }
    // The writer connection is this instance's only one and transactions
    // are IMMEDIATE, so a taken key is a committed record.
    Ok(Some(tx.query_row(
        "SELECT request_hash, resource_id, response_body FROM idempotency_keys \
         WHERE caller = ?1 AND key = ?2",
        params![claim.caller, claim.key],
        |row| {
            Ok(KeyRecord {
                request_hash: row.get(0)?,
                resource_id: row.get(1)?,
                response_body: row.get::<_, Option<String>>(2)?.unwrap_or_default(),
            })
        },
    )?))
}

/// Store the answer to replay for the claimed key, in the creating
/// transaction.
fn record_response<T: Serialize>(
    tx: &Transaction<'_>,
    claim: Option<&IdempotencyClaim>,
    resource: &T,
) -> Result<(), StoreError> {
    let Some(claim) = claim else {
        return Ok(());
    };
    let body = serde_json::to_string(resource).map_err(|e| StoreError::Other(e.to_string()))?;
    tx.execute(
        "UPDATE idempotency_keys SET response_body = ?3 WHERE caller = ?1 AND key = ?2",
        params![claim.caller, claim.key, body],
    )?;
    Ok(())
}

fn stats(conn: &Connection, column: &str, id: Uuid) -> Result<ReviewStats, StoreError> {
    let sql = format!("SELECT COUNT(*), AVG(rating) FROM reviews WHERE {column} = ?1");
    Ok(conn.query_row(&sql, [id], |row| {
        Ok(ReviewStats {
            review_count: row.get(0)?,
            average_rating: row.get(1)?,
        })
    })?)
}

#[async_trait]
impl ReviewsStore for SqliteStore {
    async fn create_camera(
        &self,
        camera: Camera,
        claim: Option<IdempotencyClaim>,
    ) -> Result<Created<Camera>, StoreError> {
        self.pool
            .write(move |conn| {
                let tx = conn.transaction()?;
                if let Some(record) =
                    claim_key(&tx, claim.as_ref(), ResourceKind::Camera, camera.id)?
                {
                    return Ok(Created::Existing(record));
                }
                tx.execute(
                    &format!(
                        "INSERT INTO cameras ({CAMERA_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                    ),
                    params![
                        camera.id,
                        camera.brand,
                        camera.model,
                        camera.sensor,
                        camera.megapixels,
                        camera.released,
                        camera.created_at
                    ],
                )?;
                record_response(&tx, claim.as_ref(), &camera)?;
                tx.commit()?;
                Ok(Created::New(camera))
            })
            .await
    }

    async fn camera(&self, id: Uuid) -> Result<Option<Camera>, StoreError> {
        self.pool
            .read(move |conn| {
                let sql = format!("SELECT {CAMERA_COLUMNS} FROM cameras WHERE id = ?1");
                Ok(conn.query_row(&sql, [id], camera_from_row).optional()?)
            })
            .await
    }

    async fn cameras(&self, query: EquipmentQuery) -> Result<Vec<Camera>, StoreError> {
        self.pool
            .read(move |conn| {
                let sql = format!(
                    "SELECT {CAMERA_COLUMNS} FROM cameras WHERE (?1 IS NULL OR id > ?1) \
                     AND (?2 IS NULL OR lower(brand) = lower(?2)) ORDER BY id LIMIT ?3"
                );
                let mut statement = conn.prepare_cached(&sql)?;
                let rows = statement.query_map(
                    params![query.after, query.brand, query.limit],
                    camera_from_row,
                )?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
    }

    async fn create_lens(
        &self,
        lens: Lens,
        claim: Option<IdempotencyClaim>,
    ) -> Result<Created<Lens>, StoreError> {
        self.pool
            .write(move |conn| {
                let tx = conn.transaction()?;
                if let Some(record) = claim_key(&tx, claim.as_ref(), ResourceKind::Lens, lens.id)? {
                    return Ok(Created::Existing(record));
                }
                tx.execute(
                    &format!("INSERT INTO lenses ({LENS_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
                    params![lens.id, lens.brand, lens.model, lens.mount, lens.focal_min_mm, lens.focal_max_mm, lens.max_aperture, lens.created_at],
                )?;
                record_response(&tx, claim.as_ref(), &lens)?;
                tx.commit()?;
                Ok(Created::New(lens))
            })
            .await
    }

    async fn lens(&self, id: Uuid) -> Result<Option<Lens>, StoreError> {
        self.pool
            .read(move |conn| {
                let sql = format!("SELECT {LENS_COLUMNS} FROM lenses WHERE id = ?1");
                Ok(conn.query_row(&sql, [id], lens_from_row).optional()?)
            })
            .await
    }

    async fn lenses(&self, query: EquipmentQuery) -> Result<Vec<Lens>, StoreError> {
        self.pool
            .read(move |conn| {
                let sql = format!(
                    "SELECT {LENS_COLUMNS} FROM lenses WHERE (?1 IS NULL OR id > ?1) \
                     AND (?2 IS NULL OR lower(brand) = lower(?2)) ORDER BY id LIMIT ?3"
                );
                let mut statement = conn.prepare_cached(&sql)?;
                let rows = statement.query_map(
                    params![query.after, query.brand, query.limit],
                    lens_from_row,
                )?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
    }

    async fn create_review(
        &self,
        review: NewReview,
        claim: Option<IdempotencyClaim>,
    ) -> Result<Created<Review>, StoreError> {
        self.pool
            .write(move |conn| {
                let tx = conn.transaction()?;
                if let Some(record) =
                    claim_key(&tx, claim.as_ref(), ResourceKind::Review, review.id)?
                {
                    return Ok(Created::Existing(record));
                }
                tx.execute(
                    "INSERT INTO reviews (id, title, content, rating, camera_id, lens_id, editor_id, editor_name, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
                    params![
                        review.id, review.title, review.content, review.rating,
                        review.target.camera_id(), review.target.lens_id(),
                        review.editor_id, review.editor_name, review.created_at
                    ],
                )?;
                let created = load_review(&tx, review.id)?.ok_or(StoreError::NotFound)?;
                record_response(&tx, claim.as_ref(), &created)?;
                tx.commit()?;
                Ok(Created::New(created))
            })
            .await
    }

    async fn review(&self, id: Uuid) -> Result<Option<Review>, StoreError> {
        self.pool.read(move |conn| load_review(conn, id)).await
    }

    async fn update_review(
        &self,
        id: Uuid,
        changes: ReviewChanges,
    ) -> Result<Option<Review>, StoreError> {
        self.pool
            .write(move |conn| {
                let updated = conn.execute(
                    "UPDATE reviews SET title = COALESCE(?2, title), content = COALESCE(?3, content), \
                     rating = COALESCE(?4, rating), updated_at = ?5 WHERE id = ?1",
                    params![id, changes.title, changes.content, changes.rating, changes.updated_at],
                )?;
                if updated == 0 {
                    return Ok(None);
                }
                load_review(conn, id)
            })
            .await
    }

    async fn delete_review(&self, id: Uuid) -> Result<bool, StoreError> {
        self.pool
            .write(move |conn| Ok(conn.execute("DELETE FROM reviews WHERE id = ?1", [id])? > 0))
            .await
    }

    async fn reviews(&self, query: ContentQuery) -> Result<Vec<Review>, StoreError> {
        let terms = query.text.as_deref().and_then(fts5_terms);
        self.pool
            .read(move |conn| {
                let sql = format!(
                    "{REVIEW_SELECT} WHERE (?1 IS NULL OR r.id < ?1) \
                     AND (?2 IS NULL OR r.camera_id = ?2) \
                     AND (?3 IS NULL OR r.lens_id = ?3) \
                     AND (?4 IS NULL OR r.editor_id = ?4) \
                     AND (?5 IS NULL OR lower(COALESCE(c.brand, l.brand)) = lower(?5)) \
                     AND (?6 IS NULL OR r.rowid IN (SELECT rowid FROM reviews_fts WHERE reviews_fts MATCH ?6)) \
                     ORDER BY r.id DESC LIMIT ?7"
                );
                let mut statement = conn.prepare_cached(&sql)?;
                let rows = statement.query_map(
                    params![query.before, query.camera_id, query.lens_id, query.editor_id, query.brand, terms, query.limit],
                    review_from_row,
                )?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
    }

    async fn camera_stats(&self, ids: &[Uuid]) -> Result<Vec<(Camera, ReviewStats)>, StoreError> {
        let ids = ids.to_vec();
        self.pool
            .read(move |conn| {
                let sql = format!("SELECT {CAMERA_COLUMNS} FROM cameras WHERE id = ?1");
                let mut out = Vec::new();
                for id in ids {
                    if let Some(camera) = conn.query_row(&sql, [id], camera_from_row).optional()? {
                        out.push((camera, stats(conn, "camera_id", id)?));
                    }
                }
                Ok(out)
            })
            .await
    }

    async fn lens_stats(&self, ids: &[Uuid]) -> Result<Vec<(Lens, ReviewStats)>, StoreError> {
        let ids = ids.to_vec();
        self.pool
            .read(move |conn| {
                let sql = format!("SELECT {LENS_COLUMNS} FROM lenses WHERE id = ?1");
                let mut out = Vec::new();
                for id in ids {
                    if let Some(lens) = conn.query_row(&sql, [id], lens_from_row).optional()? {
                        out.push((lens, stats(conn, "lens_id", id)?));
                    }
                }
                Ok(out)
            })
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.pool.ping().await
    }
}
