use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;
use zocalo_store::{DatabaseSettings, PgPools, StoreError};

use super::{
    COLUMNS, Checkpoint, CinemaStore, DocQuery, EventMeta, Param, add_unique, list_sql,
    lookup_params, lookup_sql, now_showing_sql,
};
use crate::documents::{Doc, Keys, Kind};
use crate::projection::{Change, Lookup};

mod migrations {
    refinery::embed_migrations!("migrations/postgres");
}

/// Every projecting transaction holds this advisory lock: applications from
/// several instances run one after another.
const PROJECTION_LOCK: i64 = 0x6369_6e65_6d61_7172; // "cinemaqr"

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

fn doc_from_row(row: &Row) -> Result<Doc, StoreError> {
    let kind: String = row.get(0);
    Ok(Doc {
        kind: Kind::parse(&kind)
            .ok_or_else(|| StoreError::Other(format!("unknown document kind `{kind}`")))?,
        id: row.get(1),
        version: row.get(2),
        deleted: row.get(3),
        keys: Keys {
            chain_id: row.get(4),
            cinema_id: row.get(5),
            room_id: row.get(6),
            movie_id: row.get(7),
            showtime_id: row.get(8),
            customer_id: row.get(9),
        },
        city: row.get(10),
        name: row.get(11),
        at: row.get(12),
        status: row.get(13),
        body: row.get(14),
    })
}

async fn query_docs<C: GenericClient>(
    client: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Doc>, StoreError> {
    client
        .query(sql, params)
        .await?
        .iter()
        .map(doc_from_row)
        .collect()
}

fn to_sql(param: &Param) -> Box<dyn ToSql + Sync + Send> {
    match param {
        Param::Text(text) => Box::new(text.clone()),
        Param::Uuid(id) => Box::new(*id),
        Param::Time(at) => Box::new(*at),
        Param::Int(n) => Box::new(*n),
    }
}

async fn load_lookup<C: GenericClient>(
    client: &C,
    lookup: &Lookup,
) -> Result<Vec<Doc>, StoreError> {
    let (kind, id) = lookup_params(lookup);
    query_docs(client, &lookup_sql(lookup, '$'), &[&kind.as_str(), &id]).await
}

async fn put<C: GenericClient>(client: &C, doc: &Doc) -> Result<(), StoreError> {
    client
        .execute(
            &format!(
                "INSERT INTO documents ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
                 ON CONFLICT (kind, id) DO UPDATE SET version = excluded.version, deleted = excluded.deleted,
                   chain_id = excluded.chain_id, cinema_id = excluded.cinema_id, room_id = excluded.room_id,
                   movie_id = excluded.movie_id, showtime_id = excluded.showtime_id, customer_id = excluded.customer_id,
                   city = excluded.city, name = excluded.name, at = excluded.at, status = excluded.status, body = excluded.body"
            ),
            &[
                &doc.kind.as_str(),
                &doc.id,
                &doc.version,
                &doc.deleted,
                &doc.keys.chain_id,
                &doc.keys.cinema_id,
                &doc.keys.room_id,
                &doc.keys.movie_id,
                &doc.keys.showtime_id,
                &doc.keys.customer_id,
                &doc.city,
                &doc.name,
                &doc.at,
                &doc.status,
                &doc.body,
            ],
        )
        .await?;
    Ok(())
}

async fn advance<C: GenericClient>(
    client: &C,
    meta: &EventMeta,
    applied: bool,
) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE projection SET last_event_id = $1, last_occurred_at = $2, last_applied_at = now(),
               log_seq = greatest(log_seq, coalesce($3, log_seq)),
               applied = applied + $4, ignored = ignored + 1 - $4
             WHERE id = 1",
            &[&meta.id, &meta.occurred_at, &meta.seq, &i64::from(applied)],
        )
        .await?;
    Ok(())
}

#[async_trait]
impl CinemaStore for PostgresStore {
    async fn apply(&self, change: &Change, meta: &EventMeta) -> Result<bool, StoreError> {
        let mut client = self.pools.writer().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PROJECTION_LOCK])
            .await?;
        let (kind, id) = change.target();
        let own = load_lookup(&*tx, &Lookup::Id(kind, id)).await?.pop();
        let mut related = Vec::new();
        for lookup in change.lookups(own.as_ref()) {
            add_unique(&mut related, load_lookup(&*tx, &lookup).await?);
        }
        let docs = change.project(own.as_ref(), &related);
        for doc in &docs {
            put(&*tx, doc).await?;
        }
        advance(&*tx, meta, !docs.is_empty()).await?;
        tx.commit().await?;
        Ok(!docs.is_empty())
    }

    async fn skip(&self, meta: &EventMeta) -> Result<(), StoreError> {
        let client = self.pools.writer().await?;
        advance(&**client, meta, false).await
    }

    async fn wipe(&self) -> Result<(), StoreError> {
        let mut client = self.pools.writer().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PROJECTION_LOCK])
            .await?;
        tx.execute("DELETE FROM documents", &[]).await?;
        tx.execute(
            "UPDATE projection SET last_event_id = NULL, last_occurred_at = NULL,
               last_applied_at = NULL, log_seq = 0, applied = 0, ignored = 0",
            &[],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn document(&self, kind: Kind, id: Uuid) -> Result<Option<Doc>, StoreError> {
        let client = self.pools.reader().await?;
        Ok(load_lookup(&**client, &Lookup::Id(kind, id))
            .await?
            .pop()
            .filter(|doc| !doc.deleted))
    }

    async fn list(&self, query: &DocQuery) -> Result<Vec<Doc>, StoreError> {
        let (sql, params) = list_sql(query, '$');
        let boxed: Vec<_> = params.iter().map(to_sql).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = boxed
            .iter()
            .map(|b| b.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let client = self.pools.reader().await?;
        query_docs(&**client, &sql, &refs).await
    }

    async fn now_showing(
        &self,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<Doc>, StoreError> {
        let client = self.pools.reader().await?;
        query_docs(
            &**client,
            &now_showing_sql('$'),
            &[&from, &until, &i64::from(limit), &i64::from(offset)],
        )
        .await
    }

    async fn checkpoint(&self) -> Result<Checkpoint, StoreError> {
        let client = self.pools.reader().await?;
        let row = client
            .query_one(
                "SELECT last_event_id, last_occurred_at, last_applied_at, log_seq, applied, ignored
                 FROM projection WHERE id = 1",
                &[],
            )
            .await?;
        Ok(Checkpoint {
            last_event_id: row.get(0),
            last_occurred_at: row.get(1),
            last_applied_at: row.get(2),
            log_seq: row.get(3),
            applied: row.get(4),
            ignored: row.get(5),
        })
    }

    async fn dump(&self) -> Result<Vec<Doc>, StoreError> {
        let client = self.pools.writer().await?;
        query_docs(
            &**client,
            &format!("SELECT {COLUMNS} FROM documents ORDER BY kind, id"),
            &[],
        )
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.pools.ping().await
    }
}
