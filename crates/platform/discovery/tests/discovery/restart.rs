//! A NATS outage: watchers keep their list, and both watching and
//! heartbeating resume when the server returns.

use std::time::Duration;

use zocalo_discovery::{Discovery, NatsDiscovery};

use crate::support::{OwnNats, bounded, free_port, ids, instance, sorted_ids, wait_for};

const TTL: Duration = Duration::from_secs(2);
const HEARTBEAT: Duration = Duration::from_millis(400);

#[tokio::test]
async fn watchers_keep_their_list_through_a_nats_restart() {
    bounded(async {
        let dir = tempfile::tempdir().expect("store directory");
        let port = free_port();
        let url = format!("nats://127.0.0.1:{port}");
        let server = OwnNats::start(port, dir.path()).await;

        let watcher = NatsDiscovery::connect(&url, "zocalo_instances", TTL)
            .await
            .expect("watcher connects");
        let registrant = NatsDiscovery::connect(&url, "zocalo_instances", TTL)
            .await
            .expect("registrant connects");
        let mut reviews = watcher.watch("reviews").await.expect("watch reviews");
        let before = instance("reviews", 9001);
        let _before = registrant
            .register(before.clone(), HEARTBEAT)
            .await
            .expect("register");
        wait_for(&mut reviews, Duration::from_secs(10), |list| {
            list.len() == 1
        })
        .await;

        server.kill();
        // Well past the TTL with no heartbeat able to arrive: still listed.
        tokio::time::sleep(TTL * 2).await;
        assert_eq!(
            ids(&reviews.borrow()),
            [before.id.as_str()],
            "an outage must not empty the list"
        );

        let _server = OwnNats::start(port, dir.path()).await;
        let after = instance("reviews", 9002);
        let mut registered = None;
        for _ in 0..40 {
            match registrant.register(after.clone(), HEARTBEAT).await {
                Ok(registration) => {
                    registered = Some(registration);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
        let _after = registered.expect("registering once NATS is back");

        let expected = sorted_ids(&[&before, &after]);
        let seen = wait_for(&mut reviews, Duration::from_secs(10), |list| {
            ids(list) == expected
        })
        .await;
        assert_eq!(ids(&seen), expected, "the new instance appears");

        // The first instance's heartbeats resumed: it outlives another TTL.
        tokio::time::sleep(TTL * 2).await;
        assert_eq!(ids(&reviews.borrow()), expected);
    })
    .await;
}
