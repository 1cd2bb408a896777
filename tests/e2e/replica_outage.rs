//! Reads survive the loss of the replica: `zocalo serve reviews` reading
//! from a real streaming replica keeps answering from the primary while the
//! replica is down, and reads from the replica again once it is back.

use std::time::{Duration, Instant};

use zocalo_testkit::replica::{OwnReplica, replica_url, wait_for_replay};
use zocalo_testkit::{Backend, database};

use super::distributed::Served;
use super::support::{eventually, metrics, samples};

/// The instance's view of its replica: 1 healthy, 0 skipped.
async fn replica_healthy(http: &reqwest::Client, instance: &str) -> Option<f64> {
    samples(&metrics(http, instance).await, "store_replica_healthy", &[]).next()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_continue_from_the_primary_while_the_replica_is_down() {
    let Some(primary) = zocalo_testkit::postgres_url() else {
        eprintln!("ZOCALO_TEST_POSTGRES_URL is unset: replica outage test not run");
        return;
    };
    if replica_url().is_none() {
        eprintln!("ZOCALO_TEST_REPLICA_URL is unset: replica outage test not run");
        return;
    }
    let replica = OwnReplica::start();
    let db = database(Backend::Postgres).await.expect("database");
    // The database must exist on the replica before the service checks it.
    assert!(wait_for_replay(&primary, &replica.url()).await);
    let read_url = db
        .on(&replica.url())
        .expect("a replica URL for the database");
    let served = Served::start(
        "reviews",
        &[
            ("ZOCALO_REVIEWS__DATABASE_URL", db.url.clone()),
            ("ZOCALO_REVIEWS__DATABASE_READ_URL", read_url),
            // Every read must reach PostgreSQL, not the service's own cache.
            ("ZOCALO_REVIEWS__READ_CACHE_TTL_MS", "0".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    let http = reqwest::Client::new();
    let instance = served.url();
    let read = async || {
        http.get(format!("{instance}/api/content"))
            .send()
            .await
            .map(|r| r.status().as_u16())
    };

    eventually(
        Duration::from_secs(15),
        Duration::from_millis(200),
        async || match replica_healthy(&http, &instance).await {
            Some(1.0) => Ok(()),
            other => Err(format!("replica not healthy yet: {other:?}")),
        },
    )
    .await;
    assert_eq!(read().await.unwrap(), 200);

    replica.stop();
    let started = Instant::now();
    for n in 0..40 {
        let status = read().await.expect("the instance answers");
        assert_eq!(status, 200, "read {n} with the replica down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "reads were not held up by the dead replica: {:?}",
        started.elapsed()
    );
    assert_eq!(
        replica_healthy(&http, &instance).await,
        Some(0.0),
        "the dead replica is skipped"
    );

    replica.restart();
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(200),
        async || match replica_healthy(&http, &instance).await {
            Some(1.0) => Ok(()),
            other => Err(format!("replica not re-admitted yet: {other:?}")),
        },
    )
    .await;
    assert_eq!(read().await.unwrap(), 200);
}
