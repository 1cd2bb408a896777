//! Login rate limits shared by several auth instances through Redis, and
//! what happens when Redis is gone: each instance counts on its own, and
//! logins keep working.

use std::time::Duration;

use zocalo_auth::Settings;
use zocalo_http::ratelimit::RateLimit;
use zocalo_testkit::redis::{RedisProcess, redis_url, unique_prefix};
use zocalo_testkit::{Backend, Client, backend_tests};

use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp, login_at, spawn_beside, spawn_with};

backend_tests!(
    failed_logins_on_two_instances_spend_one_account_budget,
    account_and_ip_budgets_do_not_share_redis_keys,
    with_redis_killed_each_instance_limits_on_its_own,
    an_unreachable_redis_never_refuses_logins,
);

const BURST: u32 = 4;

/// A small per-account budget that does not refill during a test, counted
/// in the Redis at `url` under `prefix`.
fn limited_through(url: &str, prefix: &str) -> impl Fn(&mut Settings) + Clone {
    let (url, prefix) = (url.to_owned(), prefix.to_owned());
    move |settings: &mut Settings| {
        settings.login_per_account = RateLimit {
            per_second: 0.01,
            burst: BURST,
        };
        settings.redis_url = Some(url.clone());
        settings.redis_key_prefix = prefix.clone();
    }
}

/// Two instances on one database, counting logins in the Redis at `url`.
async fn two_instances(backend: Backend, url: &str, prefix: &str) -> (TestApp, Client) {
    let tweak = limited_through(url, prefix);
    let first = spawn_with(backend, tweak.clone()).await;
    let second = spawn_beside(&first, tweak).await;
    (first, second)
}

fn shared_redis(test: &str) -> Option<(String, String)> {
    let Some(url) = redis_url() else {
        eprintln!("ZOCALO_TEST_REDIS_URL is unset: {test} not run");
        return None;
    };
    Some((url, unique_prefix(test)))
}

async fn status_of_login(api: &Client, email: &str, password: &str) -> u16 {
    let response = tokio::time::timeout(Duration::from_secs(10), login_at(api, email, password))
        .await
        .expect("a login is answered within 10 s, whatever Redis does");
    response.status().as_u16()
}

async fn failed_logins_on_two_instances_spend_one_account_budget(backend: Backend) {
    let Some((url, prefix)) = shared_redis("auth-shared-account") else {
        return;
    };
    let (first, second) = two_instances(backend, &url, &prefix).await;
    first.user("ana@example.com").await;
    let instances = [&first.api, &second];
    for attempt in 0..BURST as usize {
        let api = instances[attempt % 2];
        assert_eq!(
            status_of_login(api, "ana@example.com", "wrong-password").await,
            400,
            "attempt {attempt} is within the shared burst"
        );
    }
    // Each instance has seen only half the burst, yet both refuse now.
    for api in instances {
        let refused = login_at(api, "ana@example.com", "a-good-password").await;
        assert_eq!(refused.status(), 429);
        let retry_after: u64 = refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry_after >= 1);
    }
    // The attacker locked out Ana's account only.
    assert_eq!(
        status_of_login(&second, ADMIN_EMAIL, ADMIN_PASSWORD).await,
        200
    );
}

async fn account_and_ip_budgets_do_not_share_redis_keys(backend: Backend) {
    let Some((url, prefix)) = shared_redis("auth-shared-keys") else {
        return;
    };
    let (first, second) = two_instances(backend, &url, &prefix).await;
    // An "account" named like the client's address: with one key space for
    // both limits, exhausting it would exhaust the IP's budget too.
    for _ in 0..BURST {
        assert_eq!(status_of_login(&first.api, "127.0.0.1", "guess").await, 400);
    }
    assert_eq!(status_of_login(&second, "127.0.0.1", "guess").await, 429);
    assert_eq!(
        status_of_login(&second, ADMIN_EMAIL, ADMIN_PASSWORD).await,
        200,
        "the per-IP budget of 127.0.0.1 is untouched"
    );
}

async fn with_redis_killed_each_instance_limits_on_its_own(backend: Backend) {
    let Some(mut redis) = RedisProcess::start() else {
        return;
    };
    let prefix = unique_prefix("auth-redis-killed");
    let (first, second) = two_instances(backend, &redis.url(), &prefix).await;
    first.user("ana@example.com").await;
    assert_eq!(
        status_of_login(&first.api, "ana@example.com", "a-good-password").await,
        200,
        "counted in Redis while it is up"
    );
    redis.kill();
    for api in [&first.api, &second] {
        for attempt in 0..BURST {
            assert_eq!(
                status_of_login(api, "ana@example.com", "wrong-password").await,
                400,
                "attempt {attempt} is within this instance's own burst"
            );
        }
        assert_eq!(
            status_of_login(api, "ana@example.com", "a-good-password").await,
            429,
            "each instance still enforces its own burst"
        );
    }
    assert_eq!(
        status_of_login(&second, ADMIN_EMAIL, ADMIN_PASSWORD).await,
        200
    );
}

async fn an_unreachable_redis_never_refuses_logins(backend: Backend) {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port();
    let url = format!("redis://127.0.0.1:{closed}");
    let app = spawn_with(backend, limited_through(&url, "zocalo:auth:")).await;
    assert_eq!(
        status_of_login(&app.api, ADMIN_EMAIL, ADMIN_PASSWORD).await,
        200
    );
    for _ in 1..BURST {
        assert_eq!(status_of_login(&app.api, ADMIN_EMAIL, "wrong").await, 400);
    }
    assert_eq!(
        status_of_login(&app.api, ADMIN_EMAIL, ADMIN_PASSWORD).await,
        429,
        "limited in this process instead"
    );
}
