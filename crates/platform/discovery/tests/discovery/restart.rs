//! A NATS outage: watchers keep their list, and both watching and
//! heartbeating resume when the server returns.

use std::time::Duration;

use tokio::sync::watch;
use zocalo_discovery::{Discovery, Instance, Instances, NatsDiscovery, Registration};

use crate::support::{
    OwnNats, bounded, free_port, ids, instance, nats_server_binary, sorted_ids, wait_for,
};

const TTL: Duration = Duration::from_secs(2);
const HEARTBEAT: Duration = Duration::from_millis(400);

#[tokio::test]
async fn watchers_keep_their_list_through_a_nats_restart() {
    let Some(binary) = nats_server_binary() else {
        return;
    };
    bounded(async {
        let dir = tempfile::tempdir().expect("store directory");
        let port = free_port();
        let url = format!("nats://127.0.0.1:{port}");
        let server = OwnNats::start(&binary, port, dir.path()).await;

        let Watched {
            _watcher,
            registrant,
            list: mut reviews,
            registered: before,
            _registration,
        } = Watched::start(&url, "reviews").await;

        server.kill();
        // Well past the TTL with no heartbeat able to arrive: still listed.
        tokio::time::sleep(TTL * 2).await;
        assert_eq!(
            ids(&reviews.borrow()),
            [before.id.as_str()],
            "an outage must not empty the list"
        );

        let _server = OwnNats::start(&binary, port, dir.path()).await;
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

#[tokio::test]
async fn a_bucket_lost_with_the_server_is_created_again() {
    let Some(binary) = nats_server_binary() else {
        return;
    };
    bounded(async {
        let port = free_port();
        let url = format!("nats://127.0.0.1:{port}");
        let first_dir = tempfile::tempdir().expect("store directory");
        let server = OwnNats::start(&binary, port, first_dir.path()).await;

        let Watched {
            _watcher,
            registrant: _registrant,
            list: catalog,
            registered,
            _registration,
        } = Watched::start(&url, "catalog").await;

        // The server comes back with empty storage: the bucket is gone.
        server.kill();
        let second_dir = tempfile::tempdir().expect("store directory");
        let _server = OwnNats::start(&binary, port, second_dir.path()).await;

        // Heartbeats (or the watcher) re-create the bucket and the entry is
        // put again. Looked up without creating anything, so the test
        // cannot be the one that made the bucket.
        let key = format!("catalog.{}", registered.id);
        let mut found = None;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            found = stored(&url, &key).await;
            if found.is_some() {
                break;
            }
        }
        assert_eq!(
            found,
            Some(registered.clone()),
            "re-registered in the new bucket"
        );

        // The old watcher kept the instance throughout and still has it
        // after a TTL on the new server.
        tokio::time::sleep(TTL + Duration::from_millis(500)).await;
        assert_eq!(ids(&catalog.borrow()), [registered.id.as_str()]);
    })
    .await;
}

/// A watcher and a registrant on one server, with one instance of a
/// service registered and seen by the watcher.
struct Watched {
    // The watch is fed for as long as its discovery lives.
    _watcher: NatsDiscovery,
    registrant: NatsDiscovery,
    list: watch::Receiver<Instances>,
    registered: Instance,
    _registration: Registration,
}

impl Watched {
    async fn start(url: &str, service: &str) -> Self {
        let watcher = NatsDiscovery::connect(url, "zocalo_instances", TTL)
            .await
            .expect("watcher connects");
        let registrant = NatsDiscovery::connect(url, "zocalo_instances", TTL)
            .await
            .expect("registrant connects");
        let mut list = watcher.watch(service).await.expect("watch");
        let registered = instance(service, 9001);
        let registration = registrant
            .register(registered.clone(), HEARTBEAT)
            .await
            .expect("register");
        wait_for(&mut list, Duration::from_secs(10), |list| list.len() == 1).await;
        Self {
            _watcher: watcher,
            registrant,
            list,
            registered,
            _registration: registration,
        }
    }
}

/// The instance under `key`, read without creating the bucket.
async fn stored(url: &str, key: &str) -> Option<Instance> {
    let client = async_nats::connect(url).await.ok()?;
    let store = async_nats::jetstream::new(client)
        .get_key_value("zocalo_instances")
        .await
        .ok()?;
    let value = store.get(key).await.ok()??;
    serde_json::from_slice(&value).ok()
}
