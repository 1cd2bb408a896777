//! Replica routing against real PostgreSQL streaming replication.
//!
//! Needs `ZOCALO_TEST_POSTGRES_URL` (the primary) and, for most tests,
//! `ZOCALO_TEST_REPLICA_URL` (a streaming replica of it, as started by
//! `scripts/pg-replica.sh start`); without them a test says why and returns.
//! Tests that stop a replica start their own on a free port with the same
//! script and never touch the shared one.

use std::time::{Duration, Instant};

use tokio_postgres::NoTls;
use zocalo_http::session::with_subject;
use zocalo_store::{DatabaseSettings, PgClient, PgPools};
use zocalo_testkit::replica::{OwnReplica, free_port, replica_url};
use zocalo_testkit::{drop_postgres_database, postgres_url, with_database};

const WAIT: Duration = Duration::from_secs(20);

fn primary_url() -> Option<String> {
    let url = postgres_url();
    if url.is_none() {
        eprintln!("ZOCALO_TEST_POSTGRES_URL is unset: replica test not run");
    }
    url
}

/// The primary and the shared replica.
fn cluster_urls() -> Option<(String, String)> {
    Some((primary_url()?, replica_url()?))
}

/// A replica of this test's own (which it may stop or pause), a fresh
/// database on the primary and pools over both, tuned by `tune`.
struct OwnCluster {
    // Fields drop in order: the pools close before the database is dropped.
    pools: PgPools,
    _db: TestDatabase,
    replica: OwnReplica,
}

impl OwnCluster {
    async fn start(tune: impl FnOnce(&mut DatabaseSettings)) -> Option<Self> {
        let (primary, _) = cluster_urls()?;
        let replica = OwnReplica::start();
        let url = replica.url();
        let db = TestDatabase::create(&primary, &[&url]).await;
        let pools = db.pools(&[&url], tune).await;
        Some(Self {
            pools,
            _db: db,
            replica,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_on_the_primary_stream_to_the_replica() {
    let Some((primary, replica)) = cluster_urls() else {
        return;
    };
    let db = TestDatabase::create(&primary, &[&replica]).await;
    let pools = db.pools(&[&replica], |_| {}).await;

    insert(&pools.writer().await.unwrap(), 1).await;

    let replica_client = connect(&db.on(&replica)).await;
    assert!(
        in_recovery(&replica_client).await,
        "the replica URL names a standby"
    );
    let seen = eventually(|| async { count(&replica_client, 1).await == 1 }).await;
    assert!(
        seen,
        "the row written on the primary never reached the replica"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_reads_its_own_write_from_the_primary() {
    let Some((primary, replica)) = cluster_urls() else {
        return;
    };
    let db = TestDatabase::create(&primary, &[&replica]).await;
    let pools = db
        .pools(&[&replica], |s| {
            s.sticky_ms = 1_000;
            s.replica_check_interval_ms = 100;
        })
        .await;

    let anonymous = pools.reader().await.unwrap();
    assert!(
        in_recovery(&anonymous).await,
        "anonymous reads use the replica"
    );
    drop(anonymous);

    with_subject(Some("alice".into()), async {
        insert(&pools.writer().await.unwrap(), 7).await;
        let reader = pools.reader().await.unwrap();
        assert!(
            !in_recovery(&reader).await,
            "the writer's read goes to the primary"
        );
        assert_eq!(count(&reader, 7).await, 1, "and sees the row at once");
    })
    .await;

    let other = with_subject(Some("bob".into()), pools.reader())
        .await
        .unwrap();
    assert!(
        in_recovery(&other).await,
        "other callers keep using the replica"
    );
    drop(other);

    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let back = eventually(|| async {
        let later = with_subject(Some("alice".into()), pools.reader())
            .await
            .unwrap();
        in_recovery(&later).await
    })
    .await;
    assert!(
        back,
        "after the sticky window, once the replica replayed the write, the writer reads it again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_fall_back_to_the_primary_quickly_when_the_replica_is_down() {
    let Some(primary) = primary_url() else {
        return;
    };
    let db = TestDatabase::create(&primary, &[]).await;
    let dead = closed_port_url();
    let pools = db.pools(&[&dead], |s| s.replica_cooldown_ms = 60_000).await;

    let reads = async {
        for _ in 0..20 {
            let client = pools.reader().await.expect("reads keep working");
            assert!(!in_recovery(&client).await, "served by the primary");
        }
    };
    tokio::time::timeout(Duration::from_secs(3), reads)
        .await
        .expect("20 reads with a dead replica answer within 3 s (the cooldown skips it)");

    let status = &pools.replicas()[0];
    assert!(status.down && !status.healthy(), "{status:?}");
    assert_eq!(pools.replica_fallbacks(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replica_is_skipped_while_a_live_one_serves() {
    let Some((primary, replica)) = cluster_urls() else {
        return;
    };
    let db = TestDatabase::create(&primary, &[&replica]).await;
    let dead = closed_port_url();
    let pools = db
        .pools(&[&dead, &db.on(&replica)], |s| {
            s.replica_cooldown_ms = 60_000
        })
        .await;

    for _ in 0..20 {
        let client = pools.reader().await.unwrap();
        assert!(in_recovery(&client).await, "served by the live replica");
    }
    assert_eq!(pools.replica_fallbacks(), 0);
    let statuses = pools.replicas();
    assert!(statuses[0].down, "{statuses:?}");
    assert!(statuses[1].healthy(), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_survive_a_replica_stopping_and_return_when_it_restarts() {
    let Some(cluster) = OwnCluster::start(|s| {
        s.replica_cooldown_ms = 300;
        s.replica_check_interval_ms = 200;
    })
    .await
    else {
        return;
    };
    let (pools, own) = (&cluster.pools, &cluster.replica);
    insert(&pools.writer().await.unwrap(), 1).await;
    assert_eq!(served_by_port(pools).await, own.port);

    own.stop();
    for _ in 0..20 {
        let client = pools
            .reader()
            .await
            .expect("reads continue without the replica");
        assert!(!in_recovery(&client).await, "served by the primary");
        assert_eq!(count(&client, 1).await, 1);
    }
    assert!(pools.replica_fallbacks() > 0);
    assert!(!pools.replicas()[0].healthy());

    own.restart();
    let back = eventually(|| async { served_by_port(pools).await == own.port }).await;
    assert!(back, "reads did not return to the restarted replica");
    assert!(pools.replicas()[0].healthy());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_is_left_until_it_catches_up() {
    let Some(cluster) = OwnCluster::start(|s| {
        s.max_replica_lag_ms = 300;
        s.replica_check_interval_ms = 100;
    })
    .await
    else {
        return;
    };
    let (pools, own) = (&cluster.pools, &cluster.replica);

    own.pause_replay().await;
    insert(&pools.writer().await.unwrap(), 2).await;
    let lagging = eventually(|| async { pools.replicas()[0].lagging }).await;
    assert!(
        lagging,
        "paused replay never showed as lag: {:?}",
        pools.replicas()
    );
    let client = pools.reader().await.unwrap();
    assert!(
        !in_recovery(&client).await,
        "a lagging replica is not read from"
    );
    assert_eq!(count(&client, 2).await, 1);
    drop(client);

    own.resume_replay().await;
    let back = eventually(|| async { served_by_port(pools).await == own.port }).await;
    assert!(back, "reads did not return once the replica caught up");
    assert_eq!(count(&pools.reader().await.unwrap(), 2).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_sticky_window_a_writer_reads_only_replicas_that_replayed_its_write() {
    let Some(cluster) = OwnCluster::start(|s| {
        s.sticky_ms = 200;
        s.max_replica_lag_ms = 60_000;
        s.replica_check_interval_ms = 100;
    })
    .await
    else {
        return;
    };
    let (pools, own) = (&cluster.pools, &cluster.replica);

    own.pause_replay().await;
    with_subject(Some("alice".into()), async {
        insert(&pools.writer().await.unwrap(), 3).await;
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        pools.replicas()[0].healthy(),
        "within max_replica_lag_ms the replica stays in use: {:?}",
        pools.replicas()
    );

    let alice = with_subject(Some("alice".into()), pools.reader())
        .await
        .unwrap();
    assert!(
        !in_recovery(&alice).await,
        "the replica has not replayed alice's write: her reads stay on the primary"
    );
    assert_eq!(count(&alice, 3).await, 1);
    drop(alice);
    let bob = with_subject(Some("bob".into()), pools.reader())
        .await
        .unwrap();
    assert!(in_recovery(&bob).await, "other callers read the replica");
    assert_eq!(count(&bob, 3).await, 0, "which has not applied the write");
    drop(bob);

    own.resume_replay().await;
    let back = eventually(|| async {
        let alice = with_subject(Some("alice".into()), pools.reader())
            .await
            .unwrap();
        in_recovery(&alice).await && count(&alice, 3).await == 1
    })
    .await;
    assert!(
        back,
        "once the replica replayed the write, alice reads it there"
    );
}

// ---- helpers -------------------------------------------------------------

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(connection);
    client
}

async fn insert(client: &PgClient, id: i64) {
    client
        .execute("INSERT INTO items (id) VALUES ($1)", &[&id])
        .await
        .unwrap();
}

async fn count(client: &tokio_postgres::Client, id: i64) -> i64 {
    client
        .query_one("SELECT count(*) FROM items WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0)
}

async fn in_recovery(client: &tokio_postgres::Client) -> bool {
    client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap()
        .get(0)
}

/// The port of the server that served an anonymous read.
async fn served_by_port(pools: &PgPools) -> u16 {
    let client = pools.reader().await.unwrap();
    let port: i32 = client
        .query_one("SELECT inet_server_port()", &[])
        .await
        .unwrap()
        .get(0);
    u16::try_from(port).unwrap()
}

/// Poll `check` every 100 ms until it holds, for at most [`WAIT`].
async fn eventually<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A URL nothing listens on: connections are refused at once.
fn closed_port_url() -> String {
    format!("postgres://postgres@127.0.0.1:{}/postgres", free_port())
}

/// A database created on the primary for one test (with an `items` table),
/// dropped when the test ends; replication creates it on every replica.
struct TestDatabase {
    name: String,
    primary: String,
}

impl TestDatabase {
    /// Create it and wait until each replica (server URLs) has it.
    async fn create(primary: &str, replicas: &[&str]) -> Self {
        let name = format!("zt_replica_{}", uuid_like());
        connect(primary)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let db = Self {
            name,
            primary: primary.to_owned(),
        };
        for replica in replicas {
            let admin = connect(replica).await;
            let sql = "SELECT count(*) FROM pg_database WHERE datname = $1";
            let replicated = eventually(|| async {
                let found: i64 = admin.query_one(sql, &[&db.name]).await.unwrap().get(0);
                found == 1
            })
            .await;
            assert!(replicated, "database {} never reached {replica}", db.name);
        }
        db
    }

    /// `server` with this test's database.
    fn on(&self, server: &str) -> String {
        with_database(server, &self.name)
    }

    /// Pools on this database: the primary plus `replicas` (server URLs or
    /// already database URLs), settings adjusted by `tune`.
    async fn pools(&self, replicas: &[&str], tune: impl FnOnce(&mut DatabaseSettings)) -> PgPools {
        let mut settings = DatabaseSettings {
            url: self.on(&self.primary),
            read_urls: replicas.iter().map(|r| self.on(r)).collect(),
            max_connections: 4,
            ..DatabaseSettings::default()
        };
        tune(&mut settings);
        let migration = refinery::Migration::unapplied(
            "V1__items",
            "CREATE TABLE items (id bigint PRIMARY KEY, note text);",
        )
        .unwrap();
        let pools = PgPools::connect(&settings, refinery::Runner::new(&[migration]))
            .await
            .unwrap();
        // The table must be on every replica before a test reads there.
        for replica in &settings.read_urls {
            if let Ok(client) = tokio_postgres::connect(replica, NoTls).await {
                let (client, connection) = client;
                tokio::spawn(connection);
                let sql = "SELECT count(*) FROM pg_tables WHERE tablename = 'items'";
                let ready = eventually(|| async {
                    client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) == 1
                })
                .await;
                assert!(ready, "the items table never reached {replica}");
            }
        }
        pools
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        drop_postgres_database(&self.primary, &self.name);
    }
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}_{nanos}", std::process::id())
}
