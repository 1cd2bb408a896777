//! Where the read models live: one `documents` table of JSON documents
//! (PostgreSQL `jsonb`, SQLite JSON text) with the columns they are found
//! by, and a one-row `projection` table with the checkpoint.
//!
//! Both adapters apply an event the same way, in one transaction: load the
//! target document, load what [`Change::lookups`] asks for, write what
//! [`Change::project`] returns and move the checkpoint. Applications are
//! serialised (SQLite has one writer; PostgreSQL takes a transaction-level
//! advisory lock), so two instances projecting at once cannot interleave a
//! read and a write of the same document.

mod postgres;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;
use zocalo_store::{DatabaseSettings, Engine, StoreError};

use crate::documents::{Doc, Key, Kind};
use crate::projection::Change;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// The columns of `documents`, in the order the adapters read them.
pub(crate) const COLUMNS: &str = "kind, id, version, deleted, chain_id, cinema_id, room_id, \
     movie_id, showtime_id, customer_id, city, name, at, status, body";

/// Where an event came from, for the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventMeta {
    pub id: Uuid,
    pub occurred_at: DateTime<Utc>,
    /// The position in the command side's log, when replayed from it.
    pub seq: Option<i64>,
}

/// How far the projection got.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Checkpoint {
    pub last_event_id: Option<Uuid>,
    /// When the last applied event happened on the command side.
    pub last_occurred_at: Option<DateTime<Utc>>,
    /// When it was applied here.
    pub last_applied_at: Option<DateTime<Utc>>,
    /// The last log position replayed by a rebuild.
    pub log_seq: i64,
    pub applied: i64,
    pub ignored: i64,
}

/// How a list is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Name,
    AtAscending,
    AtDescending,
}

/// A search over one document set; live documents only.
#[derive(Debug, Clone)]
pub struct DocQuery {
    pub kind: Kind,
    pub keys: Vec<(Key, Uuid)>,
    /// Lower-cased.
    pub city: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub status: Option<String>,
    /// Purchases known only by their PDF (version 0) are not listed.
    pub min_version: i64,
    pub order: Order,
    pub limit: u32,
    pub offset: u32,
}

impl DocQuery {
    pub fn new(kind: Kind, order: Order, limit: u32) -> Self {
        Self {
            kind,
            keys: Vec::new(),
            city: None,
            from: None,
            until: None,
            status: None,
            min_version: 0,
            order,
            limit,
            offset: 0,
        }
    }
}

/// A query parameter, converted by each adapter to its driver's type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Param {
    Text(String),
    Uuid(Uuid),
    Time(DateTime<Utc>),
    Int(i64),
}

/// `SELECT … FROM documents WHERE …` for `query`, with numbered
/// placeholders (`$1` in PostgreSQL, `?1` in SQLite).
pub(crate) fn list_sql(query: &DocQuery, placeholder: char) -> (String, Vec<Param>) {
    let mut params = vec![
        Param::Text(query.kind.as_str().to_owned()),
        Param::Int(query.min_version),
    ];
    let mut sql = format!(
        "SELECT {COLUMNS} FROM documents WHERE kind = {p}1 AND NOT deleted AND version >= {p}2",
        p = placeholder
    );
    let mut condition = |clause: &str, param: Param| {
        params.push(param);
        sql.push_str(&format!(" AND {clause} {placeholder}{}", params.len()));
    };
    for (key, id) in &query.keys {
        condition(&format!("{} =", key.column()), Param::Uuid(*id));
    }
    if let Some(city) = &query.city {
        condition("city =", Param::Text(city.clone()));
    }
    if let Some(from) = query.from {
        condition("at >=", Param::Time(from));
    }
    if let Some(until) = query.until {
        condition("at <", Param::Time(until));
    }
    if let Some(status) = &query.status {
        condition("status =", Param::Text(status.clone()));
    }
    sql.push_str(match query.order {
        Order::Name => " ORDER BY name, id",
        Order::AtAscending => " ORDER BY at, id",
        Order::AtDescending => " ORDER BY at DESC, id",
    });
    params.push(Param::Int(i64::from(query.limit)));
    params.push(Param::Int(i64::from(query.offset)));
    sql.push_str(&format!(
        " LIMIT {placeholder}{} OFFSET {placeholder}{}",
        params.len() - 1,
        params.len()
    ));
    (sql, params)
}

/// Movies with a scheduled showtime starting in `[from, until)`.
pub(crate) fn now_showing_sql(placeholder: char) -> String {
    let p = placeholder;
    format!(
        "SELECT {COLUMNS} FROM documents m WHERE m.kind = 'movie' AND NOT m.deleted \
         AND EXISTS (SELECT 1 FROM documents s WHERE s.kind = 'showtime' AND NOT s.deleted \
           AND s.movie_id = m.id AND s.status = 'scheduled' AND s.at >= {p}1 AND s.at < {p}2) \
         ORDER BY m.name, m.id LIMIT {p}3 OFFSET {p}4"
    )
}

/// The SQL that loads the documents of one lookup.
pub(crate) fn lookup_sql(lookup: &crate::projection::Lookup, placeholder: char) -> String {
    let p = placeholder;
    match lookup {
        crate::projection::Lookup::Id(..) => {
            format!("SELECT {COLUMNS} FROM documents WHERE kind = {p}1 AND id = {p}2")
        }
        crate::projection::Lookup::Key(_, key, _) => format!(
            "SELECT {COLUMNS} FROM documents WHERE kind = {p}1 AND {} = {p}2 AND NOT deleted",
            key.column()
        ),
    }
}

/// The kind and id parameters of a lookup.
pub(crate) fn lookup_params(lookup: &crate::projection::Lookup) -> (Kind, Uuid) {
    match lookup {
        crate::projection::Lookup::Id(kind, id) => (*kind, *id),
        crate::projection::Lookup::Key(kind, _, id) => (*kind, *id),
    }
}

/// Add `found` to `docs` unless a document of the same kind and id is there.
pub(crate) fn add_unique(docs: &mut Vec<Doc>, found: Vec<Doc>) {
    for doc in found {
        if !docs.iter().any(|d| d.kind == doc.kind && d.id == doc.id) {
            docs.push(doc);
        }
    }
}

#[async_trait]
pub trait CinemaStore: Send + Sync + 'static {
    /// Apply one event in one transaction and move the checkpoint; false
    /// when it changed nothing (a duplicate, or older than what is stored).
    async fn apply(&self, change: &Change, meta: &EventMeta) -> Result<bool, StoreError>;
    /// Move the checkpoint past an event the read models do not show.
    async fn skip(&self, meta: &EventMeta) -> Result<(), StoreError>;
    /// Delete every document and reset the checkpoint (before a rebuild).
    async fn wipe(&self) -> Result<(), StoreError>;
    /// One live document.
    async fn document(&self, kind: Kind, id: Uuid) -> Result<Option<Doc>, StoreError>;
    async fn list(&self, query: &DocQuery) -> Result<Vec<Doc>, StoreError>;
    /// Movies with a scheduled showtime starting in `[from, until)`, by title.
    async fn now_showing(
        &self,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<Doc>, StoreError>;
    async fn checkpoint(&self) -> Result<Checkpoint, StoreError>;
    /// Every document, tombstones included, by kind and id: the whole read
    /// model, for comparing two of them.
    async fn dump(&self) -> Result<Vec<Doc>, StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
}

pub async fn open(settings: &DatabaseSettings) -> Result<Arc<dyn CinemaStore>, StoreError> {
    Ok(match Engine::from_url(&settings.url)? {
        Engine::Sqlite(path) => Arc::new(SqliteStore::open(&path, settings.max_connections)?),
        Engine::Postgres(_) => Arc::new(PostgresStore::connect(settings).await?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_queries_number_their_parameters() {
        let mut query = DocQuery::new(Kind::Showtime, Order::AtAscending, 10);
        query.keys.push((Key::Movie, Uuid::nil()));
        query.status = Some("scheduled".into());
        let (sql, params) = list_sql(&query, '$');
        assert!(sql.contains("movie_id = $3"), "{sql}");
        assert!(sql.contains("status = $4"), "{sql}");
        assert!(sql.ends_with("LIMIT $5 OFFSET $6"), "{sql}");
        assert_eq!(params.len(), 6);
    }
}
