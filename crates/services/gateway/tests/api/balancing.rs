//! Several instances behind one route: failing or hanging instances are
//! ejected and probed back in, idempotent requests are retried on another
//! instance (and only those), saturated services shed load, and the
//! instances can change while the gateway runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use zocalo_gateway::{BreakerSettings, RouteSettings, Settings, Strategy};
use zocalo_testkit::serve::{Served, serve};
use zocalo_testkit::{TestTokens, expect_problem};

use crate::support::{
    TestGateway, TestUpstream, dead_url, header, settings, spawn_gateway, spawn_upstream,
};

/// What a [`Stub`] does with each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    /// 200 with the request body echoed.
    Healthy = 0,
    /// 502, as an instance whose own dependencies are down.
    BadGateway = 1,
    /// Never answers (within any test's patience).
    Hang = 2,
    /// 500, as an instance whose every request crashes.
    Broken = 3,
}

#[derive(Clone)]
struct StubState {
    name: &'static str,
    hits: Arc<AtomicUsize>,
    mode: Arc<AtomicU8>,
}

/// An instance whose behaviour a test switches at runtime, counting every
/// request it receives.
struct Stub {
    url: String,
    state: StubState,
    _served: Served,
}

impl Stub {
    async fn spawn(name: &'static str, mode: Mode) -> Self {
        let state = StubState {
            name,
            hits: Arc::new(AtomicUsize::new(0)),
            mode: Arc::new(AtomicU8::new(mode as u8)),
        };
        let app = Router::new().fallback(answer).with_state(state.clone());
        let served = serve(app).await;
        Self {
            url: served.url.clone(),
            _served: served,
            state,
        }
    }

    fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    fn set_mode(&self, mode: Mode) {
        self.state.mode.store(mode as u8, Ordering::SeqCst);
    }
}

async fn answer(State(state): State<StubState>, body: Bytes) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    match state.mode.load(Ordering::SeqCst) {
        0 => ([("x-instance", state.name)], body).into_response(),
        1 => (StatusCode::BAD_GATEWAY, "down").into_response(),
        3 => (StatusCode::INTERNAL_SERVER_ERROR, "crashed").into_response(),
        _ => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            "too late".into_response()
        }
    }
}

/// Settings with a `things` service behind `/api/things` on `urls`, and
/// every other route on an unrelated live upstream, which the caller keeps
/// alive for as long as the gateway runs.
async fn things(urls: &[&str]) -> (Settings, TestUpstream) {
    let other = spawn_upstream("other", &TestTokens::new()).await;
    let mut settings = settings(&other.url);
    let mut route = RouteSettings::new("/api/things", "things");
    route.upstreams = urls.iter().map(|u| (*u).to_owned()).collect();
    settings.routes.push(route);
    (settings, other)
}

/// `things` on a closed port and `alive`, taken in turn: every other first
/// try meets the dead instance, and a threshold too high to reach keeps it
/// in rotation, so each of those tries needs a retry.
async fn things_behind_a_dead_instance(alive: &Stub) -> (Settings, TestUpstream) {
    let dead = dead_url().await;
    let (mut settings, other) = things(&[&dead, &alive.url]).await;
    settings.balancing = Strategy::RoundRobin;
    settings.breaker.consecutive_failures = 1_000;
    (settings, other)
}

async fn get_things(gateway: &TestGateway) -> reqwest::Response {
    tokio::time::timeout(
        Duration::from_secs(10),
        gateway.client.get("/api/things").send(),
    )
    .await
    .expect("the gateway answers instead of hanging")
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_instance_is_ejected_and_clients_see_no_failures() {
    let good = [
        Stub::spawn("one", Mode::Healthy).await,
        Stub::spawn("two", Mode::Healthy).await,
    ];
    let bad = Stub::spawn("bad", Mode::BadGateway).await;
    let (mut settings, _other) = things(&[&good[0].url, &good[1].url, &bad.url]).await;
    settings.breaker = BreakerSettings {
        consecutive_failures: 3,
        open_ms: 1_500,
        ..BreakerSettings::default()
    };
    let gateway = spawn_gateway(settings).await;

    for _ in 0..60 {
        let response = get_things(&gateway).await;
        assert_eq!(response.status(), 200, "the 502s are retried elsewhere");
    }
    assert_eq!(bad.hits(), 3, "ejected after 3 failures, no traffic since");
    for _ in 0..20 {
        assert_eq!(get_things(&gateway).await.status(), 200);
    }
    assert_eq!(bad.hits(), 3, "still ejected within its open period");

    tokio::time::sleep(Duration::from_millis(1_600)).await;
    for _ in 0..5 {
        assert_eq!(get_things(&gateway).await.status(), 200);
    }
    assert_eq!(
        bad.hits(),
        4,
        "one probe after the open period; it failed, so it is ejected again"
    );
    assert!(good[0].hits() + good[1].hits() >= 85);

    let metrics = gateway.client.get("/metrics").send().await.unwrap();
    let text = metrics.text().await.unwrap();
    let endpoint = bad.url.trim_start_matches("http://");
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name) && l.contains(&format!(r#"endpoint="{endpoint}""#)))
            .unwrap_or_else(|| panic!("no {name} for {endpoint} in {text}"))
            .to_owned()
    };
    assert!(line("upstream_breaker_state{").ends_with(" 2"), "open");
    assert!(
        line("upstream_ejections_total{").ends_with(" 2"),
        "ejected twice"
    );
    assert!(line("upstream_requests_in_flight{").ends_with(" 0"));
    assert!(
        text.lines()
            .any(|l| l.starts_with("upstream_retries_total{") && l.contains(r#"service="things""#)),
        "{text}"
    );
}

/// A 500 may be about the request, so it reaches the client unretried; but
/// an instance answering nothing else is broken, and its breaker opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_answering_only_500s_is_ejected_then_readmitted_when_healed() {
    let good = Stub::spawn("good", Mode::Healthy).await;
    let broken = Stub::spawn("broken", Mode::Broken).await;
    let (mut settings, _other) = things(&[&good.url, &broken.url]).await;
    settings.balancing = Strategy::RoundRobin;
    settings.breaker = BreakerSettings {
        consecutive_failures: 3,
        open_ms: 1_000,
        ..BreakerSettings::default()
    };
    let gateway = spawn_gateway(settings).await;

    let mut errors = 0;
    for _ in 0..40 {
        match get_things(&gateway).await.status().as_u16() {
            200 => {}
            500 => errors += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(
        errors, 3,
        "500s are relayed, not retried, until the breaker opens"
    );
    assert_eq!(broken.hits(), 3, "no traffic once ejected");

    broken.set_mode(Mode::Healthy);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    for _ in 0..20 {
        assert_eq!(get_things(&gateway).await.status(), 200);
    }
    assert!(
        broken.hits() > 3 + 5,
        "the healed instance is probed, closed and balanced to again ({} hits)",
        broken.hits()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_instance_is_timed_out_ejected_and_readmitted_once_healed() {
    let healthy = Stub::spawn("healthy", Mode::Healthy).await;
    let hanging = Stub::spawn("hanging", Mode::Hang).await;
    let (mut settings, _other) = things(&[&healthy.url, &hanging.url]).await;
    // Generous enough that the healthy instance never misses it on a busy
    // machine (it would then have no other instance to retry on).
    settings.try_timeout_ms = 500;
    settings.breaker = BreakerSettings {
        consecutive_failures: 2,
        open_ms: 500,
        ..BreakerSettings::default()
    };
    let gateway = spawn_gateway(settings).await;

    for _ in 0..20 {
        let start = Instant::now();
        let response = get_things(&gateway).await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "x-instance"), Some("healthy"));
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "no waiting on the hang"
        );
    }
    assert_eq!(hanging.hits(), 2, "ejected after two timed-out tries");

    hanging.set_mode(Mode::Healthy);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut answered_by_healed = 0;
    for _ in 0..40 {
        let response = get_things(&gateway).await;
        assert_eq!(response.status(), 200);
        if header(&response, "x-instance") == Some("hanging") {
            answered_by_healed += 1;
        }
    }
    // The probe succeeded and closed the breaker: more than the one trial.
    assert!(
        answered_by_healed > 1,
        "re-admitted after healing: {answered_by_healed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_hanging_instance_gets_a_fast_503_once_ejected() {
    let hanging = Stub::spawn("hanging", Mode::Hang).await;
    let (mut settings, _other) = things(&[&hanging.url]).await;
    settings.try_timeout_ms = 200;
    settings.breaker.consecutive_failures = 2;
    settings.breaker.open_ms = 5_000;
    let gateway = spawn_gateway(settings).await;

    for _ in 0..2 {
        let start = Instant::now();
        expect_problem(get_things(&gateway).await, 504).await;
        assert!(start.elapsed() < Duration::from_secs(3));
    }
    let start = Instant::now();
    let response = get_things(&gateway).await;
    let retry_after: u64 = header(&response, "retry-after").unwrap().parse().unwrap();
    assert!((1..=5).contains(&retry_after), "{retry_after}");
    expect_problem(response, 503).await;
    assert!(start.elapsed() < Duration::from_secs(1), "answered at once");
    assert_eq!(hanging.hits(), 2, "the ejected instance was not contacted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_requests_survive_a_dead_instance() {
    let alive = Stub::spawn("alive", Mode::Healthy).await;
    let (settings, _other) = things_behind_a_dead_instance(&alive).await;
    let gateway = spawn_gateway(settings).await;

    for i in 0..10 {
        let response = get_things(&gateway).await;
        assert_eq!(response.status(), 200, "GET {i}");
    }
    for i in 0..10 {
        let body = format!("order {i}");
        let response = gateway
            .client
            .post("/api/things")
            .header("idempotency-key", format!("key-{i}"))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "POST {i}");
        assert_eq!(response.text().await.unwrap(), body, "the body is re-sent");
    }
    assert_eq!(alive.hits(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_bodies_small_enough_to_buffer_are_sent_again() {
    let alive = Stub::spawn("alive", Mode::Healthy).await;
    let (settings, _other) = things_behind_a_dead_instance(&alive).await;
    let gateway = spawn_gateway(settings).await;

    let put = |body: Vec<u8>| gateway.client.put("/api/things").body(body);
    // Every first try meets the dead instance (see `things_behind_a_dead_instance`).
    let small = vec![b's'; 64 * 1024];
    let response = put(small.clone()).send().await.unwrap();
    assert_eq!(response.status(), 200, "a 64 KiB PUT is retried");
    assert_eq!(response.bytes().await.unwrap().len(), small.len());
    let response = put(vec![b'l'; 64 * 1024 + 1]).send().await.unwrap();
    expect_problem(response, 502).await;
    assert_eq!(
        alive.hits(),
        1,
        "the larger body streamed once, to the dead one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_without_idempotency_key_is_never_retried() {
    let failing = Stub::spawn("failing", Mode::BadGateway).await;
    let healthy = Stub::spawn("healthy", Mode::Healthy).await;
    let (mut settings, _other) = things(&[&failing.url, &healthy.url]).await;
    settings.balancing = Strategy::RoundRobin;
    let gateway = spawn_gateway(settings).await;

    let mut statuses = Vec::new();
    for _ in 0..4 {
        let response = gateway
            .client
            .post("/api/things")
            .body("pay once")
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(
        statuses,
        [502, 200, 502, 200],
        "the upstream's 502 is relayed"
    );
    assert_eq!(failing.hits(), 2);
    assert_eq!(healthy.hits(), 2, "the failed POSTs did not reach it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_retry_budget_stops_retries() {
    let alive = Stub::spawn("alive", Mode::Healthy).await;
    let (mut settings, _other) = things_behind_a_dead_instance(&alive).await;
    settings.retry.budget_ratio = 0.0;
    settings.retry.min_per_second = 0;
    let gateway = spawn_gateway(settings).await;

    // Round robin puts every first try on the dead instance (the refused
    // retry's pick takes the live one's turn).
    for _ in 0..4 {
        expect_problem(get_things(&gateway).await, 502).await;
    }
    assert_eq!(alive.hits(), 0, "no retry without budget");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_service_sheds_load_with_503_and_retry_after() {
    let tokens = TestTokens::new();
    let upstream = spawn_upstream("reviews", &tokens).await;
    let mut settings = settings(&upstream.url);
    settings.max_concurrent = 2;
    let gateway = Arc::new(spawn_gateway(settings).await);

    let requests: Vec<_> = (0..5)
        .map(|_| {
            let gateway = gateway.clone();
            tokio::spawn(async move {
                gateway
                    .client
                    .get("/api/compare/pause")
                    .send()
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut served = 0;
    let mut shed = 0;
    for request in requests {
        let response = request.await.unwrap();
        if response.status() == 200 {
            served += 1;
            continue;
        }
        assert_eq!(header(&response, "retry-after"), Some("1"));
        expect_problem(response, 503).await;
        shed += 1;
    }
    assert!(shed >= 1, "over the limit of 2, some are shed");
    assert!(served >= 2, "the limit's worth is served");
    assert_eq!(
        upstream.hits(),
        served,
        "shed requests never reach the service"
    );
    let metrics = gateway.client.get("/metrics").send().await.unwrap();
    let text = metrics.text().await.unwrap();
    assert!(
        text.lines().any(
            |l| l.starts_with("gateway_load_shed_total{") && l.contains(r#"service="reviews""#)
        ),
        "{text}"
    );
    // The slots are given back: a later request is served.
    let response = gateway.client.get("/api/reviews").send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_can_be_added_and_removed_at_runtime() {
    let first = Stub::spawn("first", Mode::Healthy).await;
    let second = Stub::spawn("second", Mode::Healthy).await;
    let (settings, _other) = things(&[&first.url]).await;
    let gateway = spawn_gateway(settings).await;

    let instance = |response: &reqwest::Response| header(response, "x-instance").map(str::to_owned);
    assert_eq!(
        instance(&get_things(&gateway).await).as_deref(),
        Some("first")
    );

    gateway
        .upstreams
        .set("things", &[first.url.clone(), second.url.clone()])
        .unwrap();
    for _ in 0..20 {
        assert_eq!(get_things(&gateway).await.status(), 200);
    }
    assert!(second.hits() > 0, "the added instance takes traffic");

    gateway
        .upstreams
        .set("things", std::slice::from_ref(&second.url))
        .unwrap();
    let before = first.hits();
    for _ in 0..5 {
        assert_eq!(
            instance(&get_things(&gateway).await).as_deref(),
            Some("second")
        );
    }
    assert_eq!(first.hits(), before, "the removed instance gets nothing");

    gateway.upstreams.set("things", &[]).unwrap();
    expect_problem(get_things(&gateway).await, 503).await;
    assert!(gateway.upstreams.set("nobody", &[]).is_err());
    assert!(
        gateway
            .upstreams
            .set("things", &["not a url".into()])
            .is_err()
    );
}
