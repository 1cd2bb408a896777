//! The catalog's storage. Two adapters — PostgreSQL (full-text search with a
//! generated `tsvector` and a GIN index) and SQLite (FTS5 kept in step by
//! triggers) — implement [`CatalogStore`] and pass the conformance suite in
//! `tests/api/store.rs`.
//!
//! The database, not only this code, guards the invariants: stock never
//! below zero (`CHECK`), stock taken only by a conditional update that
//! refuses to overdraw, and a reservation leaves `held` (and `committed`)
//! at most once (a conditional update of its status in the same transaction
//! as the stock it returns). That is what keeps concurrent buyers, a
//! seller's edit, the expiry sweep and repeated returns from ever
//! overselling or returning stock twice.

mod postgres;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;
use zocalo_store::{DatabaseSettings, Engine, StoreError};

use crate::domain::{
    Book, BookChanges, BookQuery, Cursor, NewBook, NewReservation, Reservation, ReserveOutcome,
    Sort, Transitioned, fts5_terms,
};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Reservations the expiry sweep settles per transaction batch, and batches
/// per call: bounded work per tick, the next tick continues.
const EXPIRY_BATCH: i64 = 100;
const EXPIRY_BATCHES_PER_CALL: usize = 10;

#[async_trait]
pub trait CatalogStore: Send + Sync + 'static {
    async fn create_book(&self, book: NewBook) -> Result<Book, StoreError>;
    /// Any status; callers decide who may see a withdrawn listing.
    async fn book(&self, id: Uuid) -> Result<Option<Book>, StoreError>;
    /// Applies `changes` if `seller_id` owns the listing and it is active;
    /// `None` otherwise. A negative stock is `StoreError::Constraint`.
    async fn update_book(
        &self,
        id: Uuid,
        seller_id: Uuid,
        changes: BookChanges,
    ) -> Result<Option<Book>, StoreError>;
    /// Withdraws the seller's listing (again is fine); `false` when the
    /// seller has no such listing.
    async fn withdraw_book(
        &self,
        id: Uuid,
        seller_id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Active listings matching every filter, in `query.sort` order, after
    /// `query.after`.
    async fn books(&self, query: BookQuery) -> Result<Vec<Book>, StoreError>;

    /// Holds every line or none, in one transaction; an existing id is
    /// returned untouched.
    async fn reserve(&self, reservation: NewReservation) -> Result<ReserveOutcome, StoreError>;
    /// Read from the primary: callers read right after they write.
    async fn reservation(&self, id: Uuid) -> Result<Option<Reservation>, StoreError>;
    /// `held` and not yet expired at `now` → `committed`.
    async fn commit_reservation(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<Transitioned>, StoreError>;
    /// `held` → `released`, returning its stock in the same transaction.
    async fn release_reservation(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<Transitioned>, StoreError>;
    /// `committed` → `returned`, putting its copies back in stock in the
    /// same transaction: the sale was undone. Exactly once however often or
    /// concurrently it is called; any other status is left as it is.
    async fn return_reservation(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<Transitioned>, StoreError>;
    /// Every `held` reservation whose `expires_at` is not after `now` →
    /// `expired`, returning its stock; how many were expired. Safe to run
    /// beside releases and on several instances at once.
    async fn release_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;

    async fn ping(&self) -> Result<(), StoreError>;
}

pub async fn open(settings: &DatabaseSettings) -> Result<Arc<dyn CatalogStore>, StoreError> {
    Ok(match Engine::from_url(&settings.url)? {
        Engine::Sqlite(path) => Arc::new(SqliteStore::open(&path, settings.max_connections)?),
        Engine::Postgres(_) => Arc::new(PostgresStore::connect(settings).await?),
    })
}

/// A value bound to a placeholder of the listing query.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SqlValue {
    Text(String),
    Int(i64),
    Id(Uuid),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    fn placeholder(self, n: usize) -> String {
        match self {
            Dialect::Postgres => format!("${n}"),
            Dialect::Sqlite => format!("?{n}"),
        }
    }
}

/// The `WHERE … ORDER BY … LIMIT …` of a listing query over `books b`.
///
/// Built from the filters actually given, so the planner sees plain
/// predicates it can use indexes for. Only fixed SQL fragments are ever
/// concatenated; every value a client sent is a bound parameter.
pub(crate) struct ListingSql {
    pub tail: String,
    pub values: Vec<SqlValue>,
}

pub(crate) fn listing_sql(query: &BookQuery, dialect: Dialect) -> ListingSql {
    let mut clauses = vec!["b.status = 'active'".to_owned()];
    let mut values = Vec::new();
    let mut bind = |template: &str, value: SqlValue, clauses: &mut Vec<String>| {
        values.push(value);
        let p = dialect.placeholder(values.len());
        clauses.push(template.replace("{}", &p));
    };
    if let Some(text) = &query.text {
        match dialect {
            Dialect::Postgres => bind(
                "b.search @@ plainto_tsquery('english', {})",
                SqlValue::Text(text.clone()),
                &mut clauses,
            ),
            Dialect::Sqlite => {
                if let Some(terms) = fts5_terms(text) {
                    bind(
                        "b.seq IN (SELECT rowid FROM books_fts WHERE books_fts MATCH {})",
                        SqlValue::Text(terms),
                        &mut clauses,
                    );
                }
            }
        }
    }
    if let Some(author) = &query.author {
        let template = match dialect {
            Dialect::Postgres => "strpos(b.author_key, {}) > 0",
            Dialect::Sqlite => "instr(b.author_key, {}) > 0",
        };
        bind(template, SqlValue::Text(author.clone()), &mut clauses);
    }
    if let Some(isbn) = &query.isbn {
        bind("b.isbn = {}", SqlValue::Text(isbn.clone()), &mut clauses);
    }
    if let Some(condition) = query.condition {
        bind(
            "b.condition = {}",
            SqlValue::Text(condition.as_str().into()),
            &mut clauses,
        );
    }
    if let Some(min) = query.min_price_cents {
        bind("b.price_cents >= {}", SqlValue::Int(min), &mut clauses);
    }
    if let Some(max) = query.max_price_cents {
        bind("b.price_cents <= {}", SqlValue::Int(max), &mut clauses);
    }
    if let Some(currency) = &query.currency {
        bind(
            "b.currency = {}",
            SqlValue::Text(currency.clone()),
            &mut clauses,
        );
    }
    if let Some(seller) = query.seller_id {
        bind("b.seller_id = {}", SqlValue::Id(seller), &mut clauses);
    }
    if let Some(cursor) = query.after {
        push_cursor(cursor, query.sort, &mut clauses, &mut values, dialect);
    }
    let order = match query.sort {
        Sort::Newest => "b.id DESC",
        Sort::PriceAsc => "b.price_cents ASC, b.id ASC",
        Sort::PriceDesc => "b.price_cents DESC, b.id DESC",
    };
    values.push(SqlValue::Int(i64::from(query.limit)));
    let limit = dialect.placeholder(values.len());
    ListingSql {
        tail: format!(
            "WHERE {} ORDER BY {order} LIMIT {limit}",
            clauses.join(" AND ")
        ),
        values,
    }
}

/// Rows strictly after the cursor in the sort's order. The (price, id) row
/// comparison breaks ties between equal prices by id, so no two books share
/// a position.
fn push_cursor(
    cursor: Cursor,
    sort: Sort,
    clauses: &mut Vec<String>,
    values: &mut Vec<SqlValue>,
    dialect: Dialect,
) {
    if sort == Sort::Newest {
        values.push(SqlValue::Id(cursor.id));
        clauses.push(format!("b.id < {}", dialect.placeholder(values.len())));
        return;
    }
    values.push(SqlValue::Int(cursor.price_cents));
    let price = dialect.placeholder(values.len());
    values.push(SqlValue::Id(cursor.id));
    let id = dialect.placeholder(values.len());
    let op = if sort == Sort::PriceAsc { ">" } else { "<" };
    clauses.push(format!("(b.price_cents, b.id) {op} ({price}, {id})"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_sql_binds_every_value() {
        let query = BookQuery {
            text: Some("dune \"x".into()),
            author: Some("herbert".into()),
            min_price_cents: Some(100),
            sort: Sort::PriceDesc,
            after: Some(Cursor {
                sort: Sort::PriceDesc,
                price_cents: 500,
                id: Uuid::nil(),
            }),
            limit: 21,
            ..BookQuery::default()
        };
        let sql = listing_sql(&query, Dialect::Sqlite);
        assert_eq!(
            sql.tail,
            "WHERE b.status = 'active' AND b.seq IN (SELECT rowid FROM books_fts WHERE books_fts MATCH ?1) \
             AND instr(b.author_key, ?2) > 0 AND b.price_cents >= ?3 \
             AND (b.price_cents, b.id) < (?4, ?5) ORDER BY b.price_cents DESC, b.id DESC LIMIT ?6"
        );
        assert_eq!(sql.values[0], SqlValue::Text("\"dune\" \"\"\"x\"".into()));
        assert_eq!(sql.values.len(), 6);
        let pg = listing_sql(&query, Dialect::Postgres);
        assert!(pg.tail.contains("plainto_tsquery('english', $1)"));
        assert!(pg.tail.ends_with("LIMIT $6"));
    }
}
