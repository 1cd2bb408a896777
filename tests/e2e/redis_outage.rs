//! Redis down under load: two gateways share one rate-limit budget per
//! client in a private `redis-server`. Killing it must not fail a request
//! (each gateway falls back to counting in-process), and once it is back
//! on the same port the two gateways enforce one shared budget again.
//!
//! Client addresses come from `X-Forwarded-For` (the test is a trusted
//! proxy), so each step of the test uses a client with a fresh budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use zocalo_testkit::redis::RedisProcess;

use super::distributed::{Served, deployment_env, wait_for_instances, with};
use super::free_port;
use super::support::{Load, Tally, eventually, nats_url, unique_bucket};

/// Requests a client may make at once; the refill (one per 1000 s) is
/// negligible during the test.
const BURST: u32 = 5;

/// A client address no other step used.
fn fresh_client(counter: &AtomicU32) -> String {
    let n = counter.fetch_add(1, Ordering::Relaxed);
    format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
}

/// GET `/api/content` through `gateway` as `client`; anything but 200 or
/// 429 fails the test.
async fn read_as(http: &reqwest::Client, gateway: &str, client: &str) -> u16 {
    let response = http
        .get(format!("{gateway}/api/content?limit=1"))
        .header("x-forwarded-for", client)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("the gateway answers");
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    assert!(
        status == 200 || status == 429,
        "unexpected {status}: {body}"
    );
    status
}

/// `count` reads through `gateway` as `client`: how many were allowed.
async fn allowed(http: &reqwest::Client, gateway: &str, client: &str, count: u32) -> u32 {
    let mut ok = 0;
    for _ in 0..count {
        if read_as(http, gateway, client).await == 200 {
            ok += 1;
        }
    }
    ok
}

/// Does a client that spent its whole budget on `first` get refused by
/// `second`? Only if both count in the same Redis.
async fn budget_is_shared(http: &reqwest::Client, first: &str, second: &str, client: &str) -> bool {
    assert_eq!(allowed(http, first, client, BURST).await, BURST);
    read_as(http, second, client).await == 429
}

/// Background traffic: every request from a new client, so every answer
/// must be 200 whatever Redis is doing; anything else is recorded.
async fn steady_load(
    http: reqwest::Client,
    gateways: [String; 2],
    clients: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
) {
    for n in 0..20_000usize {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let result = http
            .get(format!("{}/api/content?limit=1", gateways[n % 2]))
            .header("x-forwarded-for", fresh_client(&clients))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        tally
            .lock()
            .await
            .record(result, |status| status == 200)
            .await;
    }
}

/// Two gateways sharing rate limits in a private Redis, one reviews
/// instance behind them (found through NATS discovery).
struct Deployment {
    redis: RedisProcess,
    gateways: [String; 2],
    _processes: Vec<Served>,
}

impl Deployment {
    async fn start() -> Option<Self> {
        let nats_url = nats_url("failure")?;
        let redis = RedisProcess::start()?;
        let ports = [free_port(), free_port()];
        let gateways = ports.map(|port| format!("http://127.0.0.1:{port}"));
        let env = deployment_env(&nats_url, &unique_bucket(), &gateways[0]);
        let prefix = zocalo_testkit::redis::unique_prefix("redis-outage");
        let mut processes = vec![Served::start("reviews", &env)];
        for port in ports {
            processes.push(Served::start(
                "gateway",
                &with(
                    &env,
                    &[
                        ("ZOCALO_GATEWAY__LISTEN", format!("127.0.0.1:{port}")),
                        ("ZOCALO_GATEWAY__RATE_LIMIT__PER_SECOND", "0.001".into()),
                        ("ZOCALO_GATEWAY__RATE_LIMIT__BURST", BURST.to_string()),
                        ("ZOCALO_GATEWAY__REDIS_URL", redis.url()),
                        ("ZOCALO_GATEWAY__REDIS_KEY_PREFIX", prefix.clone()),
                        ("ZOCALO_GATEWAY__TRUSTED_PROXIES", "[\"127.0.0.1\"]".into()),
                    ],
                ),
            ));
        }
        let http = reqwest::Client::new();
        for gateway in &gateways {
            wait_for_instances(&http, gateway, 1).await;
        }
        Some(Self {
            redis,
            gateways,
            _processes: processes,
        })
    }
}

/// Poll with fresh clients until both gateways count in Redis again.
async fn wait_until_shared(
    http: &reqwest::Client,
    [first, second]: &[String; 2],
    clients: &AtomicU32,
) {
    eventually(
        Duration::from_secs(20),
        Duration::from_millis(250),
        async || {
            if budget_is_shared(http, first, second, &fresh_client(clients)).await {
                Ok(())
            } else {
                Err("the gateways never went back to the shared budget".to_owned())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_keep_serving_with_local_limits_while_redis_is_down() {
    let Some(Deployment {
        mut redis,
        gateways,
        _processes,
    }) = Deployment::start().await
    else {
        return;
    };
    let http = reqwest::Client::new();
    let clients = Arc::new(AtomicU32::new(1));
    let [first, second] = &gateways;

    // Redis up: one budget for both gateways.
    assert!(
        budget_is_shared(&http, first, second, &fresh_client(&clients)).await,
        "with Redis the gateways share a client's budget"
    );

    let tally = Arc::new(Mutex::new(Tally::default()));
    let load = Load::start(2, |stop| {
        steady_load(
            http.clone(),
            gateways.clone(),
            clients.clone(),
            stop,
            tally.clone(),
        )
    });
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Redis down: each gateway still limits, on its own count.
    redis.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let client = fresh_client(&clients);
    assert_eq!(allowed(&http, first, &client, BURST).await, BURST);
    assert_eq!(
        read_as(&http, first, &client).await,
        429,
        "the in-process limit still holds"
    );
    assert_eq!(
        allowed(&http, second, &client, BURST + 1).await,
        BURST,
        "the other gateway counts on its own"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Redis back on the same port (empty): sharing resumes within seconds.
    redis.restart();
    wait_until_shared(&http, &gateways, &clients).await;
    let client = fresh_client(&clients);
    let mut ok = 0;
    for round in 0..2 * BURST {
        if read_as(&http, &gateways[round as usize % 2], &client).await == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, BURST, "one budget across both gateways again");

    load.stop().await;
    tally.lock().await.assert_ran_without_failures(20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_redis_slows_no_request_and_sharing_resumes_when_it_answers() {
    let Some(deployment) = Deployment::start().await else {
        return;
    };
    let http = reqwest::Client::new();
    let clients = AtomicU32::new(1);
    let [first, second] = &deployment.gateways;

    // Frozen, Redis keeps its connections open and answers nothing: every
    // command runs into the gateway's short Redis timeout instead.
    deployment.redis.pause();
    let client = fresh_client(&clients);
    for _ in 0..BURST {
        let started = Instant::now();
        assert_eq!(read_as(&http, first, &client).await, 200);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a read waited {:?} on the frozen Redis",
            started.elapsed()
        );
    }
    assert_eq!(
        read_as(&http, first, &client).await,
        429,
        "the in-process limit holds"
    );
    assert_eq!(
        allowed(&http, second, &client, BURST).await,
        BURST,
        "the other gateway counts on its own"
    );

    deployment.redis.resume();
    wait_until_shared(&http, &deployment.gateways, &clients).await;
}
