//! Registration and watching through the shared NATS server.

use std::time::Duration;

use zocalo_discovery::{Discovery, DiscoveryError, NatsDiscovery};

use crate::support::{bounded, bucket, drop_bucket, ids, instance, nats_url, sorted_ids, wait_for};

const HEARTBEAT: Duration = Duration::from_millis(300);
/// Long enough that only a delete, not expiry, can explain a prompt removal.
const LONG_TTL: Duration = Duration::from_secs(30);
const SHORT_TTL: Duration = Duration::from_secs(2);
const WAIT: Duration = Duration::from_secs(10);

async fn discovery(url: &str, bucket: &str, ttl: Duration) -> NatsDiscovery {
    NatsDiscovery::connect(url, bucket, ttl)
        .await
        .expect("connecting discovery")
}

#[tokio::test]
async fn a_watcher_sees_every_registration() {
    let Some(url) = nats_url() else { return };
    let bucket = bucket();
    bounded(async {
        let watcher = discovery(&url, &bucket, LONG_TTL).await;
        let mut reviews = watcher.watch("reviews").await.expect("watch reviews");
        assert!(
            reviews.borrow().is_empty(),
            "a fresh bucket has no instances"
        );

        // Two processes' worth of registrations, each on its own connection.
        let first = instance("reviews", 9001);
        let second = instance("reviews", 9002);
        let other_service = instance("catalog", 9003);
        let a = discovery(&url, &bucket, LONG_TTL).await;
        let b = discovery(&url, &bucket, LONG_TTL).await;
        let _first = a
            .register(first.clone(), HEARTBEAT)
            .await
            .expect("register");
        let _second = b
            .register(second.clone(), HEARTBEAT)
            .await
            .expect("register");
        let _other = b
            .register(other_service, HEARTBEAT)
            .await
            .expect("register");

        let expected = sorted_ids(&[&first, &second]);
        let seen = wait_for(&mut reviews, WAIT, |list| ids(list) == expected).await;
        assert_eq!(ids(&seen), expected, "both reviews instances, nothing else");
        let got_first = seen.iter().find(|i| i.id == first.id).expect("first");
        assert_eq!(*got_first, first, "the instance round-trips whole");
    })
    .await;
    drop_bucket(&url, &bucket).await;
}

#[tokio::test]
async fn a_deregistered_instance_is_gone_at_once() {
    let Some(url) = nats_url() else { return };
    let bucket = bucket();
    bounded(async {
        let watcher = discovery(&url, &bucket, LONG_TTL).await;
        let mut reviews = watcher.watch("reviews").await.expect("watch reviews");
        let registrant = discovery(&url, &bucket, LONG_TTL).await;
        let staying = instance("reviews", 9001);
        let leaving = instance("reviews", 9002);
        let _staying = registrant
            .register(staying.clone(), HEARTBEAT)
            .await
            .expect("register");
        let leaving_registration = registrant
            .register(leaving.clone(), HEARTBEAT)
            .await
            .expect("register");
        wait_for(&mut reviews, WAIT, |list| list.len() == 2).await;

        leaving_registration.deregister().await;
        // Far below the 30 s TTL: only the delete can explain this.
        let seen = wait_for(&mut reviews, Duration::from_secs(3), |list| list.len() == 1).await;
        assert_eq!(ids(&seen), [staying.id.as_str()]);

        // And no late heartbeat brings it back.
        tokio::time::sleep(HEARTBEAT * 3).await;
        assert_eq!(ids(&reviews.borrow()), [staying.id]);
    })
    .await;
    drop_bucket(&url, &bucket).await;
}

#[tokio::test]
async fn an_instance_that_stops_heartbeating_expires_after_the_ttl() {
    let Some(url) = nats_url() else { return };
    let bucket = bucket();
    bounded(async {
        let watcher = discovery(&url, &bucket, SHORT_TTL).await;
        let mut reviews = watcher.watch("reviews").await.expect("watch reviews");
        let registrant = discovery(&url, &bucket, SHORT_TTL).await;
        let alive = instance("reviews", 9001);
        let killed = instance("reviews", 9002);
        let _alive = registrant
            .register(alive.clone(), HEARTBEAT)
            .await
            .expect("register");
        let killed_registration = registrant
            .register(killed.clone(), HEARTBEAT)
            .await
            .expect("register");
        wait_for(&mut reviews, WAIT, |list| list.len() == 2).await;

        // Dropping the handle stops heartbeats without deleting, as `kill -9`.
        drop(killed_registration);
        let started = tokio::time::Instant::now();
        // Heartbeats keep it alive for well past one heartbeat, though.
        tokio::time::sleep(HEARTBEAT * 2).await;
        assert_eq!(reviews.borrow().len(), 2, "not dropped before its TTL");

        let seen = wait_for(&mut reviews, SHORT_TTL + Duration::from_secs(3), |list| {
            list.len() == 1
        })
        .await;
        assert_eq!(
            ids(&seen),
            [alive.id.as_str()],
            "gone {:?} after the kill",
            started.elapsed()
        );

        // The living instance, heartbeating, outlives several TTLs.
        tokio::time::sleep(SHORT_TTL * 2).await;
        assert_eq!(ids(&reviews.borrow()), [alive.id]);
    })
    .await;
    drop_bucket(&url, &bucket).await;
}

#[tokio::test]
async fn a_later_watcher_sees_the_instances_already_registered() {
    let Some(url) = nats_url() else { return };
    let bucket = bucket();
    bounded(async {
        let registrant = discovery(&url, &bucket, LONG_TTL).await;
        let first = instance("orders", 9001);
        let second = instance("orders", 9002);
        let _first = registrant
            .register(first.clone(), HEARTBEAT)
            .await
            .expect("register");
        let _second = registrant
            .register(second.clone(), HEARTBEAT)
            .await
            .expect("register");

        let late = discovery(&url, &bucket, LONG_TTL).await;
        let orders = late.watch("orders").await.expect("watch orders");
        // The current entries are loaded before `watch` answers.
        assert_eq!(ids(&orders.borrow()), sorted_ids(&[&first, &second]));
    })
    .await;
    drop_bucket(&url, &bucket).await;
}

#[tokio::test]
async fn entries_left_by_a_killed_process_are_not_listed_by_a_new_watcher() {
    let Some(url) = nats_url() else { return };
    let bucket = bucket();
    bounded(async {
        let registrant = discovery(&url, &bucket, SHORT_TTL).await;
        drop(
            registrant
                .register(instance("orders", 9001), HEARTBEAT)
                .await
                .expect("register"),
        );
        tokio::time::sleep(SHORT_TTL + Duration::from_millis(500)).await;
        let late = discovery(&url, &bucket, SHORT_TTL).await;
        let mut orders = late.watch("orders").await.expect("watch orders");
        // The server's max_age or the watcher's own sweep removes it.
        let seen = wait_for(&mut orders, Duration::from_secs(2), |list| list.is_empty()).await;
        assert!(seen.is_empty(), "stale entry listed: {seen:?}");
    })
    .await;
    drop_bucket(&url, &bucket).await;
}

#[tokio::test]
async fn several_processes_may_create_the_bucket_at_once() {
    let Some(url) = nats_url() else { return };
    let bucket = bucket();
    bounded(async {
        let (a, b, c) = tokio::join!(
            NatsDiscovery::connect(&url, &bucket, LONG_TTL),
            NatsDiscovery::connect(&url, &bucket, LONG_TTL),
            NatsDiscovery::connect(&url, &bucket, LONG_TTL),
        );
        let (a, b, c) = (a.expect("a"), b.expect("b"), c.expect("c"));
        let registered = instance("auth", 9001);
        let _registration = a
            .register(registered.clone(), HEARTBEAT)
            .await
            .expect("register");
        for discovery in [&b, &c] {
            let mut auth = discovery.watch("auth").await.expect("watch auth");
            let seen = wait_for(&mut auth, WAIT, |list| list.len() == 1).await;
            assert_eq!(ids(&seen), [registered.id.as_str()]);
        }
    })
    .await;
    drop_bucket(&url, &bucket).await;
}

#[tokio::test]
async fn a_bucket_made_with_another_ttl_is_opened_as_it_is() {
    let Some(url) = nats_url() else { return };
    let bucket = bucket();
    bounded(async {
        let first = discovery(&url, &bucket, LONG_TTL).await;
        // A different max_age makes creating the bucket fail; opening wins.
        let second = discovery(&url, &bucket, SHORT_TTL).await;
        let registered = instance("auth", 9001);
        let _registration = second
            .register(registered.clone(), HEARTBEAT)
            .await
            .expect("register");
        let mut auth = first.watch("auth").await.expect("watch auth");
        let seen = wait_for(&mut auth, WAIT, |list| list.len() == 1).await;
        assert_eq!(ids(&seen), [registered.id.as_str()]);
    })
    .await;
    drop_bucket(&url, &bucket).await;
}

#[tokio::test]
async fn bad_names_and_heartbeats_are_refused() {
    let Some(url) = nats_url() else { return };
    let bucket = bucket();
    bounded(async {
        let discovery = discovery(&url, &bucket, SHORT_TTL).await;
        let bad_service = instance("re.views", 9001);
        assert!(matches!(
            discovery.register(bad_service, HEARTBEAT).await,
            Err(DiscoveryError::Invalid(_))
        ));
        assert!(matches!(
            discovery
                .register(instance("reviews", 9001), SHORT_TTL)
                .await,
            Err(DiscoveryError::Invalid(_)),
        ));
        assert!(matches!(
            discovery.watch("*").await,
            Err(DiscoveryError::Invalid(_))
        ));
    })
    .await;
    drop_bucket(&url, &bucket).await;
}

#[tokio::test]
async fn connecting_to_a_closed_port_fails_instead_of_hanging() {
    bounded(async {
        let port = crate::support::free_port();
        let result =
            NatsDiscovery::connect(&format!("nats://127.0.0.1:{port}"), "unused", SHORT_TTL).await;
        assert!(matches!(result, Err(DiscoveryError::Unavailable(_))));
    })
    .await;
}
