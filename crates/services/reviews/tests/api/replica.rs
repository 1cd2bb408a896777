//! Read-your-writes through the whole service: behind a replica that has
//! stopped applying WAL, an editor still reads its own write at once (the
//! primary serves it) while anonymous reads come from the replica.

use std::time::{Duration, Instant};

use zocalo_testkit::Backend;
use zocalo_testkit::replica::{OwnReplica, replica_url, wait_for_replay};

use crate::helpers::spawn_on;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_editor_reads_its_own_write_while_the_replica_lags() {
    let Some(primary) = zocalo_testkit::postgres_url() else {
        eprintln!("ZOCALO_TEST_POSTGRES_URL is unset: replica test not run");
        return;
    };
    if replica_url().is_none() {
        return;
    }
    let replica = OwnReplica::start();
    let db = zocalo_testkit::database(Backend::Postgres)
        .await
        .expect("database");
    // The database must exist on the replica before the service checks it,
    // or the first check would (rightly) put the replica in its cooldown.
    assert!(
        wait_for_replay(&primary, &replica.url()).await,
        "the replica never caught up with the new database"
    );
    let read_url = db.on(&replica.url());
    let app = spawn_on(db, |settings| {
        settings.database_read_url = read_url;
        settings.read_cache_ttl_ms = 0;
    })
    .await;
    assert!(
        wait_for_replay(&primary, &replica.url()).await,
        "the replica never caught up with the schema"
    );
    replica.pause_replay().await;

    let camera = app.camera("Leica", "Q3").await;
    let path = format!("/api/cameras/{camera}");
    let own = app
        .api
        .get(&path)
        .bearer_auth(&app.editor.1)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200, "the editor reads its write at once");
    let anonymous = app.api.get(&path).send().await.unwrap();
    assert_eq!(
        anonymous.status(),
        404,
        "anonymous reads come from the replica, which has not applied the write"
    );

    replica.resume_replay().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut status = 0;
    while Instant::now() < deadline && status != 200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = app.api.get(&path).send().await.unwrap().status().as_u16();
    }
    assert_eq!(status, 200, "the replica caught up once replay resumed");
}
