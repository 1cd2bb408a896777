//! `RateLimiter` over real Redis servers: one budget across instances, and
//! in-process limits (never errors) while Redis is down.

use std::time::{Duration, Instant};

use zocalo_cache::{Redis, SharedLimiter};
use zocalo_http::ratelimit::{RateLimit, RateLimiter};
use zocalo_testkit::redis::{RedisProcess, redis_url, unique_prefix};

const SLOW: RateLimit = RateLimit {
    per_second: 0.2,
    burst: 3,
};

fn limiter(url: &str, prefix: &str) -> RateLimiter {
    let shared = SharedLimiter::new(Redis::new(url).unwrap(), prefix);
    RateLimiter::new(Some(SLOW), Some(shared))
}

/// How many of `attempts` checks of `key` pass, alternating instances.
async fn passes(instances: &[&RateLimiter], key: &str, attempts: usize) -> usize {
    let mut passed = 0;
    for i in 0..attempts {
        match instances[i % instances.len()].check(key).await {
            Ok(()) => passed += 1,
            Err(problem) => assert_eq!(problem.status, 429, "a refusal is a 429, never a 500"),
        }
    }
    passed
}

/// Two instances sharing one budget on `server`, checked to share it.
async fn two_sharing(server: &RedisProcess, test: &str) -> (RateLimiter, RateLimiter) {
    let prefix = unique_prefix(test);
    let (a, b) = (
        limiter(&server.url(), &prefix),
        limiter(&server.url(), &prefix),
    );
    assert_eq!(passes(&[&a, &b], "before", 6).await, 3, "shared while up");
    (a, b)
}

/// Whether, within 20 s, a budget spent on `a` refuses on `b`: a fresh key
/// each round, since `b` refuses a key only if the count is shared again.
async fn shared_again(a: &RateLimiter, b: &RateLimiter) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    for round in 0.. {
        let key = format!("after-{round}");
        let _ = passes(&[a], &key, 3).await;
        if b.check(&key).await.is_err() {
            return true;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

#[tokio::test]
async fn two_instances_enforce_one_combined_budget() {
    let Some(url) = redis_url() else {
        eprintln!("skipping: ZOCALO_TEST_REDIS_URL is not set");
        return;
    };
    let prefix = unique_prefix("limiter");
    let (a, b) = (limiter(&url, &prefix), limiter(&url, &prefix));
    assert_eq!(passes(&[&a, &b], "203.0.113.7", 8).await, 3);
    let refusal = b.check("203.0.113.7").await.unwrap_err();
    assert!(refusal.retry_after_secs.is_some_and(|s| s >= 1));
}

#[tokio::test]
async fn redis_down_degrades_to_in_process_limits_and_recovers() {
    let Some(mut server) = RedisProcess::start() else {
        return;
    };
    let (a, b) = two_sharing(&server, "outage").await;

    server.kill();
    let started = Instant::now();
    // Each instance now counts on its own: its own burst, no errors.
    assert_eq!(passes(&[&a], "during", 5).await, 3);
    assert_eq!(passes(&[&b], "during", 5).await, 3);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "checks answer promptly while Redis is down"
    );

    server.restart();
    assert!(
        shared_again(&a, &b).await,
        "shared limiting resumes after Redis returns"
    );
}

#[tokio::test]
async fn a_frozen_redis_costs_a_timeout_not_a_hang() {
    let Some(server) = RedisProcess::start() else {
        return;
    };
    let (a, b) = two_sharing(&server, "frozen").await;

    server.pause();
    let started = Instant::now();
    assert_eq!(passes(&[&a], "during", 5).await, 3, "in-process limits");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a silent Redis delays requests by a short timeout at most"
    );

    server.resume();
    assert!(
        shared_again(&a, &b).await,
        "shared limiting resumes after Redis thaws"
    );
}
