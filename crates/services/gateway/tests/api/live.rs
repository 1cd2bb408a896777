//! Live configuration and shared rate limits: a real gateway whose limit
//! changes through a watched file or a NATS KV key, and gateways counting
//! in real Redis servers, including one this suite kills and restarts.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use zocalo_config::live::{Live, NatsKvSource};
use zocalo_gateway::{Application, LiveSettings, Settings};
use zocalo_http::ratelimit::RateLimit;
use zocalo_telemetry::{LogFormat, LogSettings};
use zocalo_testkit::nats::{create_kv_bucket, nats_url};
use zocalo_testkit::redis::{RedisProcess, redis_url, unique_prefix};
use zocalo_testkit::{Client, TestTokens};

use crate::support::{metric, settings, spawn_upstream};

/// A limit no test reaches.
const GENEROUS: &str = "rate_limit = { per_second = 100, burst = 1000 }\n";
/// Two requests, then 429 for a long while.
const TIGHT: &str = "rate_limit = { per_second = 0.01, burst = 2 }\n";

struct RunningGateway {
    client: Client,
    live: Arc<Live<LiveSettings>>,
    stop: CancellationToken,
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(settings: Settings) -> RunningGateway {
    let app = Application::build(settings).await.expect("gateway builds");
    let client = Client::new(format!("http://127.0.0.1:{}", app.port()));
    let live = app.live();
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone()));
    RunningGateway { client, live, stop }
}

/// GET a proxied path as client `ip` (the gateway trusts loopback's
/// `X-Forwarded-For` in these tests); only 200 and 429 are acceptable.
async fn status_as(gateway: &RunningGateway, ip: &str) -> u16 {
    let response = gateway
        .client
        .get("/api/reviews")
        .header("x-forwarded-for", ip)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    assert!(status == 200 || status == 429, "unexpected status {status}");
    status
}

async fn status(gateway: &RunningGateway) -> u16 {
    status_as(gateway, "192.0.2.1").await
}

/// Poll (bounded) until a request gets `expected`.
async fn until_status(gateway: &RunningGateway, expected: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while status(gateway).await != expected {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn rejected_reloads(gateway: &RunningGateway) -> f64 {
    metric(
        &gateway.client,
        "config_reloads_total",
        "result=\"rejected\"",
    )
    .await
}

/// Write a new version of the live file and wait until the gateway has
/// rejected it (counted, and a poll interval passed).
async fn write_rejected(gateway: &RunningGateway, path: &Path, text: &str) {
    let before = rejected_reloads(gateway).await;
    std::fs::write(path, text).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while rejected_reloads(gateway).await <= before {
        assert!(Instant::now() < deadline, "{text:?} was not rejected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
}

fn trusting_loopback(mut settings: Settings) -> Settings {
    settings.trusted_proxies = vec![IpAddr::from([127, 0, 0, 1])];
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_file_changes_limit_and_log_level_and_bad_versions_are_rejected() {
    zocalo_telemetry::init_logging(&LogSettings {
        format: LogFormat::Json,
        filter: "error".into(),
    });
    let tokens = TestTokens::new();
    let upstream = spawn_upstream("reviews", &tokens).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway-live.toml");
    std::fs::write(
        &path,
        format!("{GENEROUS}log_level = \"error\"\n[feature_flags]\nnew_checkout = true\n"),
    )
    .unwrap();
    let mut settings = trusting_loopback(settings(&upstream.url));
    settings.live_config_file = Some(path.clone());
    let gateway = start(settings).await;
    assert!(gateway.live.get().flag("new_checkout"));
    assert!(
        !tracing::enabled!(tracing::Level::INFO),
        "log level from the file"
    );

    for _ in 0..5 {
        assert_eq!(status(&gateway).await, 200);
    }
    std::fs::write(
        &path,
        format!("{TIGHT}log_level = \"error,zocalo_gateway::live=debug\"\n"),
    )
    .unwrap();
    until_status(&gateway, 429, "the tighter limit").await;
    assert!(
        tracing::enabled!(target: "zocalo_gateway::live", tracing::Level::DEBUG),
        "log level reloaded"
    );
    assert!(!tracing::enabled!(tracing::Level::INFO));
    assert!(
        !gateway.live.get().flag("new_checkout"),
        "flag gone with the file"
    );

    write_rejected(&gateway, &path, "rate_limit = { per_second = ").await;
    assert_eq!(status(&gateway).await, 429, "broken TOML: old limit stays");
    write_rejected(
        &gateway,
        &path,
        "rate_limit = { per_second = -1, burst = 5 }\n",
    )
    .await;
    assert_eq!(
        status(&gateway).await,
        429,
        "invalid value: old limit stays"
    );
    write_rejected(
        &gateway,
        &path,
        &format!("{GENEROUS}log_level = \"info,[[\"\n"),
    )
    .await;
    assert_eq!(
        status(&gateway).await,
        429,
        "invalid log level: nothing applied"
    );
    assert!(tracing::enabled!(target: "zocalo_gateway::live", tracing::Level::DEBUG));

    std::fs::write(&path, GENEROUS).unwrap();
    until_status(&gateway, 200, "the generous limit again").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_live_file_stops_the_gateway_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway-live.toml");
    std::fs::write(&path, "rate_limt = 3\n").unwrap();
    let mut settings = settings("http://127.0.0.1:9");
    settings.live_config_file = Some(path);
    let error = Application::build(settings).await.err().expect("refused");
    assert!(format!("{error:#}").contains("rate_limt"), "{error:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_kv_key_changes_the_limit() {
    let Some(url) = nats_url() else {
        return;
    };
    let jetstream = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    let bucket = format!("gateway-live-{}", uuid::Uuid::new_v4().simple());
    let store = create_kv_bucket(&jetstream, &bucket).await;
    store.put("gateway", GENEROUS.into()).await.unwrap();

    let tokens = TestTokens::new();
    let upstream = spawn_upstream("reviews", &tokens).await;
    let mut settings = settings(&upstream.url);
    settings.live_config_nats = Some(NatsKvSource {
        url,
        bucket: bucket.clone(),
        key: "gateway".into(),
    });
    let gateway = start(settings).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while gateway.live.get().rate_limit.is_none() {
        assert!(Instant::now() < deadline, "the bucket's value is applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status(&gateway).await, 200);

    store.put("gateway", TIGHT.into()).await.unwrap();
    until_status(&gateway, 429, "the limit put in NATS KV").await;
    jetstream.delete_key_value(&bucket).await.unwrap();
}

fn redis_settings(upstream: &str, redis_url: &str, prefix: &str) -> Settings {
    let mut settings = trusting_loopback(settings(upstream));
    settings.redis_url = Some(redis_url.to_owned());
    settings.redis_key_prefix = prefix.to_owned();
    settings.rate_limit = Some(RateLimit {
        per_second: 0.01,
        burst: 3,
    });
    settings
}

/// How many of `n` requests as `ip`, alternating gateways, got 200.
async fn passed(gateways: &[&RunningGateway], ip: &str, n: usize) -> usize {
    let mut passed = 0;
    for i in 0..n {
        if status_as(gateways[i % gateways.len()], ip).await == 200 {
            passed += 1;
        }
    }
    passed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_sharing_redis_enforce_one_budget_per_client() {
    let Some(url) = redis_url() else {
        eprintln!("skipping: ZOCALO_TEST_REDIS_URL is not set");
        return;
    };
    let tokens = TestTokens::new();
    let upstream = spawn_upstream("reviews", &tokens).await;
    let prefix = unique_prefix("gateway");
    let a = start(redis_settings(&upstream.url, &url, &prefix)).await;
    let b = start(redis_settings(&upstream.url, &url, &prefix)).await;
    assert_eq!(passed(&[&a, &b], "198.51.100.1", 8).await, 3);
    assert_eq!(passed(&[&b, &a], "198.51.100.2", 2).await, 2, "per client");
    assert_eq!(upstream.hits(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_keeps_requests_flowing_under_local_limits_until_it_returns() {
    let Some(mut redis) = RedisProcess::start() else {
        return;
    };
    let tokens = TestTokens::new();
    let upstream = spawn_upstream("reviews", &tokens).await;
    let prefix = unique_prefix("gateway-outage");
    let a = start(redis_settings(&upstream.url, &redis.url(), &prefix)).await;
    let b = start(redis_settings(&upstream.url, &redis.url(), &prefix)).await;
    assert_eq!(
        passed(&[&a, &b], "198.51.100.1", 6).await,
        3,
        "shared while up"
    );

    redis.kill();
    let started = Instant::now();
    // Each gateway now counts on its own: its own burst, and no 5xx.
    assert_eq!(passed(&[&a], "198.51.100.2", 5).await, 3);
    assert_eq!(passed(&[&b], "198.51.100.2", 5).await, 3);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "no request hangs on Redis"
    );
    assert!(
        metric(
            &a.client,
            "cache_backend_fallbacks_total",
            "backend=\"redis\""
        )
        .await
            >= 5.0,
        "every request counted in-process is a fallback"
    );

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    for round in 0.. {
        // A fresh client each round: its budget spent on `a` refuses it on
        // `b` only when the count is shared again.
        let ip = format!("198.51.100.{}", 10 + round % 200);
        let _ = passed(&[&a], &ip, 3).await;
        if status_as(&b, &ip).await == 429 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "shared limiting resumes when Redis returns"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
