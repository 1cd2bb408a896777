//! The inbox against both service stores.

use uuid::Uuid;
use zocalo_bus::inbox;
use zocalo_bus::outbox::Source;
use zocalo_testkit::{Backend, backend_tests};

use crate::support::{bounded, service_store};

backend_tests!(an_id_is_recorded_once_and_only_when_committed);

/// Record `id` in a transaction that commits or rolls back.
async fn record(source: &Source, id: Uuid, commit: bool) -> bool {
    match source {
        Source::Sqlite(pool) => pool
            .write(move |conn| {
                let tx = conn.transaction()?;
                let first = inbox::record_sqlite(&tx, id)?;
                if commit {
                    tx.commit()?
                } else {
                    tx.rollback()?
                }
                Ok(first)
            })
            .await
            .unwrap(),
        Source::Postgres(pools) => {
            let mut client = pools.writer().await.unwrap();
            let tx = client.transaction().await.unwrap();
            let first = inbox::record_postgres(&tx, id).await.unwrap();
            if commit {
                tx.commit().await.unwrap()
            } else {
                tx.rollback().await.unwrap()
            }
            first
        }
    }
}

async fn an_id_is_recorded_once_and_only_when_committed(backend: Backend) {
    bounded(async {
        let (source, _db) = service_store(backend).await;
        let id = Uuid::now_v7();
        assert!(record(&source, id, false).await, "first sight");
        assert!(
            record(&source, id, true).await,
            "the rolled-back record did not count"
        );
        assert!(!record(&source, id, true).await, "a duplicate");
        assert!(
            record(&source, Uuid::now_v7(), true).await,
            "other ids are unaffected"
        );
    })
    .await
}
