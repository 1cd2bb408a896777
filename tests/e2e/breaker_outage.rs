//! An upstream that hangs: a reviews instance frozen with SIGSTOP accepts
//! connections but never answers. The gateway must give up on it after its
//! per-try timeout, retry elsewhere, open that instance's breaker, and close
//! it again through a half-open trial once the instance is thawed
//! (SIGCONT). With no other instance to go to, clients get a fast problem
//! response instead of a hang.
//!
//! Discovery keeps the frozen instance listed (long TTL), so what takes it
//! out of rotation is the breaker, not discovery.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::distributed::{
    Served, content_requests, deployment_env, wait_for_instances, wait_for_traffic, with,
};
use super::free_port;
use super::support::{Load, Tally, eventually, metrics, nats_url, samples, unique_bucket};

/// The longest any client request may take while an instance hangs:
/// generous, but far below the 30 s a request would wait without the
/// per-try timeout.
const ANSWER_BOUND: Duration = Duration::from_secs(3);

/// A gateway and `instances` reviews instances (each on its own SQLite
/// file: the test reads an empty list), meeting through NATS discovery.
struct Deployment {
    gateway: String,
    reviews: Vec<Served>,
    _gateway: Served,
}

impl Deployment {
    /// `None` when NATS is not configured.
    async fn start(instances: usize) -> Option<Self> {
        let nats_url = &nats_url("failure")?;
        let port = free_port();
        let gateway = format!("http://127.0.0.1:{port}");
        let env = with(
            &deployment_env(nats_url, &unique_bucket(), &gateway),
            // The frozen instance stops heartbeating; a long TTL keeps it
            // listed so that only the breaker can take it out.
            &[("ZOCALO_DISCOVERY__TTL_MS", "60000".into())],
        );
        let reviews: Vec<Served> = (0..instances)
            .map(|_| Served::start("reviews", &env))
            .collect();
        let gateway_process = Served::start(
            "gateway",
            &with(
                &env,
                &[
                    ("ZOCALO_GATEWAY__LISTEN", format!("127.0.0.1:{port}")),
                    ("ZOCALO_GATEWAY__RATE_LIMIT__PER_SECOND", "0".into()),
                    ("ZOCALO_GATEWAY__TRY_TIMEOUT_MS", "300".into()),
                    ("ZOCALO_GATEWAY__BREAKER__OPEN_MS", "1000".into()),
                    ("ZOCALO_GATEWAY__BREAKER__MAX_OPEN_MS", "2000".into()),
                    // Every read must reach an instance: the response cache
                    // would answer repeated reads itself.
                    ("ZOCALO_GATEWAY__CACHE__ENABLED", "false".into()),
                ],
            ),
        );
        wait_for_instances(&reqwest::Client::new(), &gateway, instances).await;
        Some(Self {
            gateway,
            reviews,
            _gateway: gateway_process,
        })
    }

    /// Poll until the gateway reports the breaker of `instance` in state
    /// `wanted`, within `within`.
    async fn wait_for_breaker(
        &self,
        http: &reqwest::Client,
        instance: &Served,
        wanted: u8,
        within: Duration,
    ) {
        wait_for_breaker(http, &self.gateway, &instance.url(), wanted, within).await;
    }
}

/// The gateway's `upstream_breaker_state` for one reviews instance
/// (0 closed, 1 half-open, 2 open), if it reports one.
async fn breaker_state(http: &reqwest::Client, gateway: &str, instance: &str) -> Option<u8> {
    let metrics = metrics(http, gateway).await;
    // Endpoints are labelled by their authority (`127.0.0.1:PORT`).
    let authority = instance.trim_start_matches("http://");
    let endpoint = format!("endpoint=\"{authority}\"");
    samples(&metrics, "upstream_breaker_state", &[&endpoint])
        .next()
        .map(|value| value as u8)
}

/// Poll until the breaker of `instance` reports `wanted`, within `within`.
async fn wait_for_breaker(
    http: &reqwest::Client,
    gateway: &str,
    instance: &str,
    wanted: u8,
    within: Duration,
) {
    eventually(
        within,
        Duration::from_millis(100),
        async || match breaker_state(http, gateway, instance).await {
            Some(state) if state == wanted => Ok(()),
            state => Err(format!(
                "breaker of {instance} never reached {wanted} (last {state:?})"
            )),
        },
    )
    .await;
}

/// What the load saw.
#[derive(Default)]
struct Seen {
    tally: Tally,
    slowest: Duration,
}

/// GET `/api/content` in a loop until `stop` (and at most 20 000 times),
/// recording failures and the slowest answer.
async fn read_load(
    http: reqwest::Client,
    gateway: String,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
) {
    for _ in 0..20_000 {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let started = Instant::now();
        let result = http
            .get(format!("{gateway}/api/content?limit=5"))
            .timeout(Duration::from_secs(30))
            .send()
            .await;
        let took = started.elapsed();
        let mut seen = seen.lock().await;
        seen.slowest = seen.slowest.max(took);
        seen.tally.record(result, |status| status == 200).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_instance_is_cut_off_by_its_breaker_and_readmitted_when_it_heals() {
    let Some(deployment) = Deployment::start(2).await else {
        return;
    };
    let http = reqwest::Client::new();
    let hanging = &deployment.reviews[0];
    let healthy = &deployment.reviews[1];

    let seen = Arc::new(Mutex::new(Seen::default()));
    let load = Load::start(4, |stop| {
        read_load(http.clone(), deployment.gateway.clone(), stop, seen.clone())
    });
    tokio::time::sleep(Duration::from_secs(1)).await;

    hanging.freeze();
    deployment
        .wait_for_breaker(&http, hanging, 2, Duration::from_secs(10))
        .await;
    // Stay frozen a while under load: the breaker's trials keep failing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let healthy_before = content_requests(&http, &healthy.url()).await;
    assert!(healthy_before > 0, "the healthy instance carried the load");

    hanging.signal("-CONT");
    let thawed_before = content_requests(&http, &hanging.url()).await;
    deployment
        .wait_for_breaker(&http, hanging, 0, Duration::from_secs(10))
        .await;
    // Back in rotation: it answers real traffic again.
    wait_for_traffic(&http, &hanging.url(), thawed_before, "the healed instance").await;

    load.stop().await;
    let seen = seen.lock().await;
    eprintln!("slowest answer {:?}", seen.slowest);
    seen.tally.assert_ran_without_failures(50);
    assert!(
        seen.slowest < ANSWER_BOUND,
        "a request waited {:?} on the hanging instance",
        seen.slowest
    );
}

/// One GET through the gateway, as the client saw it.
#[derive(Debug)]
struct Answer {
    status: u16,
    problem: bool,
    retry_after: bool,
    took: Duration,
}

async fn timed_read(http: &reqwest::Client, gateway: &str) -> Answer {
    let started = Instant::now();
    let response = http
        .get(format!("{gateway}/api/content?limit=5"))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("the gateway answers");
    let problem = response
        .headers()
        .get("content-type")
        .is_some_and(|value| value.as_bytes().starts_with(b"application/problem+json"));
    let retry_after = response.headers().contains_key("retry-after");
    let status = response.status().as_u16();
    let _ = response.bytes().await;
    Answer {
        status,
        problem,
        retry_after,
        took: started.elapsed(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_hanging_instance_gets_fast_problem_answers_then_recovers() {
    let Some(deployment) = Deployment::start(1).await else {
        return;
    };
    let http = reqwest::Client::new();
    let only = &deployment.reviews[0];
    assert_eq!(timed_read(&http, &deployment.gateway).await.status, 200);

    only.freeze();
    // Bounded: 3 s of requests, each bounded by ANSWER_BOUND.
    let until = Instant::now() + Duration::from_secs(3);
    let mut answers = Vec::new();
    while Instant::now() < until && answers.len() < 500 {
        answers.push(timed_read(&http, &deployment.gateway).await);
    }
    for Answer {
        status,
        problem,
        retry_after,
        took,
    } in &answers
    {
        assert!(
            *status == 503 || *status == 504,
            "a hanging upstream gives 503/504, not {status}: {answers:?}"
        );
        assert!(problem, "the {status} is problem+json");
        assert!(*status != 503 || *retry_after, "a 503 says when to retry");
        assert!(*took < ANSWER_BOUND, "an answer took {took:?}");
    }
    assert!(
        answers.iter().any(|answer| answer.status == 503),
        "the breaker opened: later requests are refused without a try"
    );
    deployment
        .wait_for_breaker(&http, only, 2, Duration::from_secs(5))
        .await;

    only.signal("-CONT");
    eventually(
        Duration::from_secs(15),
        Duration::from_millis(100),
        async || {
            let Answer { status, took, .. } = timed_read(&http, &deployment.gateway).await;
            assert!(took < ANSWER_BOUND, "an answer took {took:?}");
            if status == 200 {
                Ok(())
            } else {
                Err(format!(
                    "no 200 within 15 s of the instance healing (last {status})"
                ))
            }
        },
    )
    .await;
    deployment
        .wait_for_breaker(&http, only, 0, Duration::from_secs(5))
        .await;
}
