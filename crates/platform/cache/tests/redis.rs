//! The Redis adapters against real servers: the shared test Redis for
//! sharing between instances, a private `redis-server` for outages.

use std::time::{Duration, Instant};

use bytes::Bytes;
use zocalo_cache::{
    Cache, CacheError, Decision, FallbackCache, MemoryCache, Redis, RedisCache, SharedLimiter,
};
use zocalo_testkit::redis::{RedisProcess, redis_url, unique_prefix};

fn shared_redis() -> Option<String> {
    let url = redis_url();
    if url.is_none() {
        eprintln!("skipping: ZOCALO_TEST_REDIS_URL is not set");
    }
    url
}

#[tokio::test]
async fn two_instances_share_one_gcra_budget() {
    let Some(url) = shared_redis() else { return };
    let prefix = unique_prefix("gcra");
    // Two handles, two connections: as two gateway processes would have.
    let first = SharedLimiter::new(Redis::new(&url).unwrap(), prefix.clone());
    let second = SharedLimiter::new(Redis::new(&url).unwrap(), prefix);
    let (per_second, burst) = (0.5, 6);
    let mut allowed = 0;
    for i in 0..10 {
        let limiter = if i % 2 == 0 { &first } else { &second };
        if limiter.check("client", per_second, burst).await.unwrap() == Decision::Allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 6, "the burst is spent once across both instances");
    let Decision::Refused { retry_after } = first.check("client", per_second, burst).await.unwrap()
    else {
        panic!("an exhausted budget refuses");
    };
    assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(2));
    assert_eq!(
        second
            .check("other-client", per_second, burst)
            .await
            .unwrap(),
        Decision::Allowed,
        "keys have separate budgets"
    );
}

#[tokio::test]
async fn the_budget_refills_at_the_configured_rate() {
    let Some(url) = shared_redis() else { return };
    let limiter = SharedLimiter::new(Redis::new(&url).unwrap(), unique_prefix("refill"));
    assert_eq!(
        limiter.check("k", 20.0, 1).await.unwrap(),
        Decision::Allowed
    );
    assert!(matches!(
        limiter.check("k", 20.0, 1).await.unwrap(),
        Decision::Refused { .. }
    ));
    // One token every 50 ms: well within a second one is back.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        limiter.check("k", 20.0, 1).await.unwrap(),
        Decision::Allowed
    );
}

#[tokio::test]
async fn redis_cache_round_trips_and_expires() {
    let Some(url) = shared_redis() else { return };
    let cache = RedisCache::new(Redis::new(&url).unwrap(), unique_prefix("cache"));
    assert_eq!(cache.get("a").await.unwrap(), None);
    cache
        .set("a", Bytes::from_static(b"one"), Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(cache.get("a").await.unwrap().as_deref(), Some(&b"one"[..]));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(cache.get("a").await.unwrap(), None, "expired in Redis");
    cache
        .set("b", Bytes::from_static(b"two"), Duration::from_secs(60))
        .await
        .unwrap();
    cache.delete("b").await.unwrap();
    assert_eq!(cache.get("b").await.unwrap(), None);
}

#[tokio::test]
async fn a_closed_port_fails_fast_and_is_then_skipped() {
    // Port 1 on loopback: nothing listens there.
    let redis = Redis::new("redis://127.0.0.1:1").unwrap();
    let cache = RedisCache::new(redis.clone(), "x:");
    let started = Instant::now();
    assert!(cache.get("a").await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no hanging on a dead Redis"
    );
    assert!(!redis.is_healthy());
    assert!(matches!(cache.get("a").await, Err(CacheError::Unavailable)));
}

#[tokio::test]
async fn fallback_cache_survives_an_outage_and_shares_again_after_it() {
    let Some(mut server) = RedisProcess::start() else {
        return;
    };
    let prefix = unique_prefix("fallback");
    let instance = |prefix: &str| {
        FallbackCache::new(
            RedisCache::new(Redis::new(&server.url()).unwrap(), prefix),
            MemoryCache::new(1000),
        )
    };
    let (a, b) = (instance(&prefix), instance(&prefix));
    let ttl = Duration::from_secs(60);

    a.set("k", Bytes::from_static(b"shared"), ttl)
        .await
        .unwrap();
    assert_eq!(b.get("k").await.unwrap().as_deref(), Some(&b"shared"[..]));

    server.kill();
    let started = Instant::now();
    a.set("k", Bytes::from_static(b"local"), ttl).await.unwrap();
    assert_eq!(
        a.get("k").await.unwrap().as_deref(),
        Some(&b"local"[..]),
        "served in-process while Redis is down"
    );
    assert_eq!(b.get("k").await.unwrap(), None, "b has no local copy");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "never hangs on Redis"
    );

    server.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        a.set("k2", Bytes::from_static(b"again"), ttl)
            .await
            .unwrap();
        if b.get("k2").await.unwrap().as_deref() == Some(&b"again"[..]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sharing resumes after Redis returns"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_redis_marked_down_is_probed_back_without_traffic() {
    let Some(mut server) = RedisProcess::start() else {
        return;
    };
    let redis = Redis::new(&server.url()).unwrap();
    let cache = RedisCache::new(redis.clone(), unique_prefix("probe"));
    assert_eq!(cache.get("k").await.unwrap(), None);

    server.kill();
    assert!(cache.get("k").await.is_err());
    assert!(!redis.is_healthy());
    assert!(matches!(cache.get("k").await, Err(CacheError::Unavailable)));

    server.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !redis.is_healthy() {
        assert!(Instant::now() < deadline, "the probe finds Redis back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cache.get("k").await.unwrap(), None, "commands flow again");
}
