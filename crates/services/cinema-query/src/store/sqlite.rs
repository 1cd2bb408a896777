use std::path::Path;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::types::ToSql;
use rusqlite::{Connection, Row, params};
use uuid::Uuid;
use zocalo_store::{SqlitePool, StoreError};

use super::{
    COLUMNS, Checkpoint, CinemaStore, DocQuery, EventMeta, Param, add_unique, list_sql,
    lookup_params, lookup_sql, now_showing_sql,
};
use crate::documents::{Doc, Keys, Kind};
use crate::projection::{Change, Lookup};

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

fn doc_from_row(row: &Row<'_>) -> rusqlite::Result<Doc> {
    let kind: String = row.get(0)?;
    Ok(Doc {
        kind: Kind::parse(&kind).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                0,
                rusqlite::types::Type::Text,
                format!("unknown document kind `{kind}`").into(),
            )
        })?,
        id: row.get(1)?,
        version: row.get(2)?,
        deleted: row.get(3)?,
        keys: Keys {
            chain_id: row.get(4)?,
            cinema_id: row.get(5)?,
            room_id: row.get(6)?,
            movie_id: row.get(7)?,
            showtime_id: row.get(8)?,
            customer_id: row.get(9)?,
        },
        city: row.get(10)?,
        name: row.get(11)?,
        at: row.get(12)?,
        status: row.get(13)?,
        body: row.get(14)?,
    })
}

fn query_docs(conn: &Connection, sql: &str, params: &[&dyn ToSql]) -> Result<Vec<Doc>, StoreError> {
    let mut statement = conn.prepare_cached(sql)?;
    let docs = statement
        .query_map(params, doc_from_row)?
        .collect::<Result<_, _>>()?;
    Ok(docs)
}

fn to_sql(param: &Param) -> Box<dyn ToSql> {
    match param {
        Param::Text(text) => Box::new(text.clone()),
        Param::Uuid(id) => Box::new(*id),
        Param::Time(at) => Box::new(*at),
        Param::Int(n) => Box::new(*n),
    }
}

fn load_lookup(conn: &Connection, lookup: &Lookup) -> Result<Vec<Doc>, StoreError> {
    let (kind, id) = lookup_params(lookup);
    query_docs(
        conn,
        &lookup_sql(lookup, '?'),
        &[&kind.as_str() as &dyn ToSql, &id],
    )
}

fn put(conn: &Connection, doc: &Doc) -> Result<(), StoreError> {
    conn.prepare_cached(&format!(
        "INSERT INTO documents ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
         ON CONFLICT (kind, id) DO UPDATE SET version = excluded.version, deleted = excluded.deleted,
           chain_id = excluded.chain_id, cinema_id = excluded.cinema_id, room_id = excluded.room_id,
           movie_id = excluded.movie_id, showtime_id = excluded.showtime_id, customer_id = excluded.customer_id,
           city = excluded.city, name = excluded.name, at = excluded.at, status = excluded.status, body = excluded.body"
    ))?
    .execute(params![
        doc.kind.as_str(),
        doc.id,
        doc.version,
        doc.deleted,
        doc.keys.chain_id,
        doc.keys.cinema_id,
        doc.keys.room_id,
        doc.keys.movie_id,
        doc.keys.showtime_id,
        doc.keys.customer_id,
        doc.city,
        doc.name,
        doc.at,
        doc.status,
        // As text: the driver would store a JSON `null` (a tombstone's
        // body) as SQL NULL.
        doc.body.to_string(),
    ])?;
    Ok(())
}

fn advance(conn: &Connection, meta: &EventMeta, applied: bool) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE projection SET last_event_id = ?1, last_occurred_at = ?2, last_applied_at = ?3,
           log_seq = max(log_seq, coalesce(?4, log_seq)),
           applied = applied + ?5, ignored = ignored + 1 - ?5
         WHERE id = 1",
    )?
    .execute(params![
        meta.id,
        meta.occurred_at,
        Utc::now(),
        meta.seq,
        i64::from(applied)
    ])?;
    Ok(())
}

#[async_trait]
impl CinemaStore for SqliteStore {
    async fn apply(&self, change: &Change, meta: &EventMeta) -> Result<bool, StoreError> {
        let change = change.clone();
        let meta = *meta;
        self.pool
            .write(move |conn| {
                let tx = conn.transaction()?;
                let (kind, id) = change.target();
                let own = load_lookup(&tx, &Lookup::Id(kind, id))?.pop();
                let mut related = Vec::new();
                for lookup in change.lookups(own.as_ref()) {
                    add_unique(&mut related, load_lookup(&tx, &lookup)?);
                }
                let docs = change.project(own.as_ref(), &related);
                for doc in &docs {
                    put(&tx, doc)?;
                }
                advance(&tx, &meta, !docs.is_empty())?;
                tx.commit()?;
                Ok(!docs.is_empty())
            })
            .await
    }

    async fn skip(&self, meta: &EventMeta) -> Result<(), StoreError> {
        let meta = *meta;
        self.pool
            .write(move |conn| advance(conn, &meta, false))
            .await
    }

    async fn wipe(&self) -> Result<(), StoreError> {
        self.pool
            .write(|conn| {
                let tx = conn.transaction()?;
                tx.execute("DELETE FROM documents", [])?;
                tx.execute(
                    "UPDATE projection SET last_event_id = NULL, last_occurred_at = NULL,
                       last_applied_at = NULL, log_seq = 0, applied = 0, ignored = 0",
                    [],
                )?;
                tx.commit()?;
                Ok(())
            })
            .await
    }

    async fn document(&self, kind: Kind, id: Uuid) -> Result<Option<Doc>, StoreError> {
        self.pool
            .read(move |conn| {
                Ok(load_lookup(conn, &Lookup::Id(kind, id))?
                    .pop()
                    .filter(|doc| !doc.deleted))
            })
            .await
    }

    async fn list(&self, query: &DocQuery) -> Result<Vec<Doc>, StoreError> {
        let (sql, params) = list_sql(query, '?');
        self.pool
            .read(move |conn| {
                let boxed: Vec<Box<dyn ToSql>> = params.iter().map(to_sql).collect();
                let refs: Vec<&dyn ToSql> = boxed.iter().map(|b| b.as_ref()).collect();
                query_docs(conn, &sql, &refs)
            })
            .await
    }

    async fn now_showing(
        &self,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<Doc>, StoreError> {
        self.pool
            .read(move |conn| {
                query_docs(
                    conn,
                    &now_showing_sql('?'),
                    params![from, until, limit, offset],
                )
            })
            .await
    }

    async fn checkpoint(&self) -> Result<Checkpoint, StoreError> {
        self.pool
            .read(|conn| {
                Ok(conn.query_row(
                    "SELECT last_event_id, last_occurred_at, last_applied_at, log_seq, applied, ignored
                     FROM projection WHERE id = 1",
                    [],
                    |row| {
                        Ok(Checkpoint {
                            last_event_id: row.get(0)?,
                            last_occurred_at: row.get(1)?,
                            last_applied_at: row.get(2)?,
                            log_seq: row.get(3)?,
                            applied: row.get(4)?,
                            ignored: row.get(5)?,
                        })
                    },
                )?)
            })
            .await
    }

    async fn dump(&self) -> Result<Vec<Doc>, StoreError> {
        self.pool
            .read(|conn| {
                query_docs(
                    conn,
                    &format!("SELECT {COLUMNS} FROM documents ORDER BY kind, id"),
                    &[],
                )
            })
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.pool.ping().await
    }
}
