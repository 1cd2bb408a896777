//! `zocalo serve` with NATS discovery: the instance announces itself once
//! it answers, leaves discovery when told to stop, and expires when killed.

use std::time::Duration;

use zocalo_discovery::{Discovery, Instances, NatsDiscovery};

use super::distributed::Served;
use super::support::{nats_url, unique_bucket};

/// `zocalo serve reviews` registering in `bucket`; killed if the test
/// fails before it stops.
fn serve_reviews(nats_url: &str, bucket: &str, ttl_ms: &str) -> Served {
    let env = [
        ("ZOCALO_DISCOVERY__KIND", "nats"),
        ("ZOCALO_DISCOVERY__NATS_URL", nats_url),
        ("ZOCALO_DISCOVERY__BUCKET", bucket),
        ("ZOCALO_DISCOVERY__TTL_MS", ttl_ms),
        ("ZOCALO_DISCOVERY__HEARTBEAT_MS", "500"),
        ("ZOCALO_DISCOVERY__ZONE", "zone-e2e"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    Served::start("reviews", &env)
}

async fn drop_bucket(nats_url: &str, bucket: &str) {
    if let Ok(client) = async_nats::connect(nats_url).await {
        let _ = async_nats::jetstream::new(client)
            .delete_key_value(bucket)
            .await;
    }
}

async fn wait_for(
    receiver: &mut tokio::sync::watch::Receiver<Instances>,
    limit: Duration,
    ready: impl Fn(&Instances) -> bool,
) -> Instances {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let current = receiver.borrow_and_update().clone();
        if ready(&current) || tokio::time::Instant::now() >= deadline {
            return current;
        }
        let _ = tokio::time::timeout_at(deadline, receiver.changed()).await;
    }
}

#[tokio::test]
async fn serve_registers_in_discovery_and_leaves_before_stopping() {
    let Some(nats_url) = nats_url("discovery") else {
        return;
    };
    let bucket = unique_bucket();
    // Far longer than the test: only deregistration can remove the entry.
    let mut served = serve_reviews(&nats_url, &bucket, "30000");

    let watcher = NatsDiscovery::connect(&nats_url, &bucket, Duration::from_secs(30))
        .await
        .expect("connecting to NATS");
    let mut reviews = watcher.watch("reviews").await.expect("watch reviews");
    let seen = wait_for(&mut reviews, Duration::from_secs(10), |list| {
        !list.is_empty()
    })
    .await;
    assert_eq!(seen.len(), 1, "one registered instance: {seen:?}");
    let instance = &seen[0];
    assert_eq!(instance.service, "reviews");
    assert_eq!(instance.url, format!("http://127.0.0.1:{}", served.port));
    assert_eq!(instance.zone.as_deref(), Some("zone-e2e"));
    assert!(!instance.version.is_empty());
    let answer = reqwest::get(format!("{}/api/content", instance.url))
        .await
        .expect("the advertised URL answers");
    assert_eq!(answer.status(), 200);

    served.signal("-TERM");
    let left = wait_for(&mut reviews, Duration::from_secs(5), |list| list.is_empty()).await;
    assert!(left.is_empty(), "still listed after SIGTERM: {left:?}");
    let status = served.exit_status().await;
    assert!(status.success(), "exit status {status:?}");
    drop_bucket(&nats_url, &bucket).await;
}

#[tokio::test]
async fn a_killed_serve_leaves_discovery_within_the_ttl() {
    let Some(nats_url) = nats_url("discovery") else {
        return;
    };
    let bucket = unique_bucket();
    let ttl = Duration::from_secs(2);
    let mut staying = serve_reviews(&nats_url, &bucket, "2000");
    let mut killed = serve_reviews(&nats_url, &bucket, "2000");

    let watcher = NatsDiscovery::connect(&nats_url, &bucket, ttl)
        .await
        .expect("connecting to NATS");
    let mut reviews = watcher.watch("reviews").await.expect("watch reviews");
    let both = wait_for(&mut reviews, Duration::from_secs(10), |list| {
        list.len() == 2
    })
    .await;
    assert_eq!(both.len(), 2, "both instances listed: {both:?}");

    killed.signal("-KILL");
    killed.exit_status().await;
    let left = wait_for(&mut reviews, ttl + Duration::from_secs(4), |list| {
        list.len() == 1
    })
    .await;
    let urls: Vec<&str> = left.iter().map(|i| i.url.as_str()).collect();
    assert_eq!(urls, [format!("http://127.0.0.1:{}", staying.port)]);

    staying.signal("-TERM");
    staying.exit_status().await;
    drop_bucket(&nats_url, &bucket).await;
}
