//! A fresh, isolated bus per test and small helpers for waiting.

use std::future::Future;
use std::time::Duration;

use zocalo_bus::{Bus, BusOptions, NatsBus};
use zocalo_testkit::{Backend, TestDatabase, clean_up_in_drop};

/// No test may take longer than this, whatever goes wrong.
const TEST_LIMIT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Nats,
}

/// `ZOCALO_TEST_NATS_URL`, e.g. `nats://127.0.0.1:4222`.
pub fn nats_url() -> Option<String> {
    std::env::var("ZOCALO_TEST_NATS_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

pub async fn bounded(test: impl Future<Output = ()>) {
    tokio::time::timeout(TEST_LIMIT, test)
        .await
        .expect("test exceeded its time limit");
}

/// A bus nobody else sees: a SQLite file in a temporary directory, or NATS
/// streams under a unique prefix (deleted when the test ends).
pub struct TestBus {
    pub bus: Bus,
    url: String,
    _db: Option<TestDatabase>,
    nats: Option<(String, String)>,
}

impl TestBus {
    pub async fn new(kind: Kind) -> Self {
        Self::with(kind, "").await
    }

    /// `params` is extra URL query, e.g. `ack_wait_ms=500`.
    pub async fn with(kind: Kind, params: &str) -> Self {
        let (url, db, nats) = match kind {
            Kind::Sqlite => {
                let db = zocalo_testkit::database(Backend::Sqlite)
                    .await
                    .expect("sqlite test database");
                (format!("{}?{params}", db.url), Some(db), None)
            }
            Kind::Nats => {
                let base = nats_url().expect("ZOCALO_TEST_NATS_URL");
                let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
                let url = format!("{base}?prefix={prefix}&{params}");
                (url, None, Some((base, prefix)))
            }
        };
        let url = url.trim_end_matches(['?', '&']).to_owned();
        let bus = zocalo_bus::connect(&url)
            .await
            .expect("connect to the test bus");
        Self {
            bus,
            url,
            _db: db,
            nats,
        }
    }

    /// Another connection to the same bus, as a second process would have.
    pub async fn connect_again(&self) -> Bus {
        zocalo_bus::connect(&self.url)
            .await
            .expect("second connection")
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        let Some((base, prefix)) = self.nats.take() else {
            return;
        };
        // The test's streams go with it.
        clean_up_in_drop(async move {
            let options = BusOptions {
                prefix,
                ..BusOptions::default()
            };
            let bus = NatsBus::connect(&base, options).await.ok()?;
            bus.delete_streams().await.ok()
        });
    }
}

/// Poll `check` every 20 ms until it yields a value; panic after `limit`.
pub async fn eventually<T>(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A service database with the outbox and inbox tables, as a service's
/// migration would create them.
pub async fn service_store(backend: Backend) -> (zocalo_bus::outbox::Source, TestDatabase) {
    use zocalo_bus::{inbox, outbox};
    let db = zocalo_testkit::database(backend)
        .await
        .expect("test database");
    let source = match backend {
        Backend::Sqlite => {
            let zocalo_store::Engine::Sqlite(path) =
                zocalo_store::Engine::from_url(&db.url).unwrap()
            else {
                unreachable!("a sqlite url")
            };
            let migrations = migrations(&[outbox::SQLITE_TABLE, inbox::SQLITE_TABLE]);
            outbox::Source::Sqlite(zocalo_store::SqlitePool::open(&path, 2, migrations).unwrap())
        }
        Backend::Postgres => {
            let settings = zocalo_store::DatabaseSettings {
                url: db.url.clone(),
                ..Default::default()
            };
            let migrations = migrations(&[outbox::POSTGRES_TABLE, inbox::POSTGRES_TABLE]);
            outbox::Source::Postgres(
                zocalo_store::PgPools::connect(&settings, migrations)
                    .await
                    .unwrap(),
            )
        }
    };
    (source, db)
}

fn migrations(statements: &[&str]) -> refinery::Runner {
    let migration =
        refinery::Migration::unapplied("V1__bus", &statements.concat()).expect("migration");
    refinery::Runner::new(&[migration])
}
