//! Webhook deliveries through a real job queue (a SQLite bus file) and the
//! real worker loop, to a real HTTP receiver that fails on purpose.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::Utc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use zocalo_bus::Bus;
use zocalo_notify::webhook::{
    self, ATTEMPT_HEADER, Attempt, EVENT_ID_HEADER, Envelope, Outcome, RegistryError,
    SIGNATURE_HEADER, Target, WebhookRegistry, WebhookSender, WebhookSettings,
};
use zocalo_testkit::{Backend, TestDatabase};

use crate::{bounded, eventually};

const QUEUE: &str = "test.webhook";
const WAIT: Duration = Duration::from_secs(20);

/// What the receiver saw of one request.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

/// An HTTP receiver that answers 503 to its first `failures` requests
/// (after sleeping `delay`), then 204.
#[derive(Clone)]
struct Receiver {
    seen: Arc<Mutex<Vec<Received>>>,
    calls: Arc<AtomicUsize>,
    failures: usize,
    delay: Duration,
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let call = receiver.calls.fetch_add(1, Ordering::SeqCst);
    if call < receiver.failures {
        tokio::time::sleep(receiver.delay).await;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    receiver
        .seen
        .lock()
        .unwrap()
        .push(Received { headers, body });
    StatusCode::NO_CONTENT
}

impl Receiver {
    async fn start(failures: usize, delay: Duration) -> (Self, zocalo_testkit::serve::Served) {
        let receiver = Self {
            seen: Arc::default(),
            calls: Arc::default(),
            failures,
            delay,
        };
        let router = Router::new()
            .route("/hook", post(receive))
            .with_state(receiver.clone());
        let served = zocalo_testkit::serve::serve(router).await;
        (receiver, served)
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn delivered(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }
}

/// The service's side, kept in memory: subscriptions and the attempt log.
#[derive(Default)]
struct Registry {
    targets: Mutex<Vec<(Uuid, Target)>>,
    attempts: Mutex<Vec<Attempt>>,
}

#[async_trait]
impl WebhookRegistry for Registry {
    async fn target(&self, webhook_id: Uuid) -> Result<Option<Target>, RegistryError> {
        let targets = self.targets.lock().unwrap();
        Ok(targets
            .iter()
            .find(|(id, _)| *id == webhook_id)
            .map(|(_, target)| target.clone()))
    }

    async fn record(&self, attempt: &Attempt) -> Result<(), RegistryError> {
        self.attempts.lock().unwrap().push(attempt.clone());
        Ok(())
    }
}

impl Registry {
    fn attempts(&self) -> Vec<Attempt> {
        self.attempts.lock().unwrap().clone()
    }
}

/// A bus of its own, a registry and a worker on the webhook queue.
struct Harness {
    bus: Bus,
    registry: Arc<Registry>,
    settings: WebhookSettings,
    _db: TestDatabase,
    _stop: tokio_util::sync::DropGuard,
}

impl Harness {
    async fn start(settings: WebhookSettings) -> Self {
        let db = zocalo_testkit::database(Backend::Sqlite).await.unwrap();
        let bus = zocalo_bus::connect(&db.url).await.unwrap();
        let registry = Arc::new(Registry::default());
        let sender = WebhookSender::new(&settings).unwrap();
        let stop = CancellationToken::new();
        let mut options = settings.worker_options();
        options.poll_interval = Duration::from_millis(20);
        tokio::spawn(zocalo_bus::run_worker(
            bus.jobs.clone(),
            QUEUE,
            webhook::job_handler(sender, registry.clone()),
            options,
            stop.clone(),
        ));
        Self {
            bus,
            registry,
            settings,
            _db: db,
            _stop: stop.drop_guard(),
        }
    }

    fn subscribe(&self, url: String) -> (Uuid, String) {
        let (id, secret) = (Uuid::now_v7(), webhook::generate_secret());
        self.registry.targets.lock().unwrap().push((
            id,
            Target {
                url,
                secret: secret.clone(),
            },
        ));
        (id, secret)
    }

    async fn send(&self, webhook_id: Uuid, event: &Envelope) {
        self.bus
            .jobs
            .enqueue(
                QUEUE,
                webhook::job_payload(webhook_id, event.clone()),
                self.settings.job_options(),
            )
            .await
            .unwrap();
    }
}

fn fast(max_attempts: u32) -> WebhookSettings {
    WebhookSettings {
        timeout_ms: 2_000,
        max_attempts,
        backoff_base_ms: 40,
        backoff_cap_ms: 200,
        concurrency: 2,
        // The receivers here listen on 127.0.0.1.
        allow_private_targets: true,
    }
}

fn event() -> Envelope {
    Envelope {
        id: Uuid::now_v7(),
        kind: "purchase.completed".into(),
        created_at: Utc::now(),
        data: serde_json::json!({"purchase_id": Uuid::now_v7(), "seats": ["C7", "C8"]}),
    }
}

#[tokio::test]
async fn a_receiver_that_fails_twice_gets_the_event_on_the_third_attempt() {
    bounded(async {
        let harness = Harness::start(fast(5)).await;
        let (receiver, served) = Receiver::start(2, Duration::ZERO).await;
        let (webhook_id, secret) = harness.subscribe(format!("{}/hook", served.url));
        let event = event();
        harness.send(webhook_id, &event).await;

        let delivered = eventually("the delivery", WAIT, async || {
            let delivered = receiver.delivered();
            (!delivered.is_empty()).then_some(delivered)
        })
        .await;
        assert_eq!(receiver.calls(), 3);
        assert_eq!(delivered.len(), 1);
        let request = &delivered[0];
        let signature = request.headers[SIGNATURE_HEADER].to_str().unwrap();
        webhook::verify(
            &secret,
            signature,
            &request.body,
            Utc::now(),
            Duration::from_secs(300),
        )
        .expect("the receiver can verify the signature");
        assert_eq!(request.headers[ATTEMPT_HEADER], "3");
        assert_eq!(
            request.headers[EVENT_ID_HEADER],
            event.id.to_string().as_str()
        );
        assert_eq!(request.headers["content-type"], "application/json");
        let body: Envelope = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body, event);

        let attempts = eventually("three recorded attempts", WAIT, async || {
            let attempts = harness.registry.attempts();
            (attempts.len() == 3).then_some(attempts)
        })
        .await;
        let outcomes: Vec<(u32, Outcome, Option<u16>)> = attempts
            .iter()
            .map(|a| (a.attempt, a.outcome, a.status))
            .collect();
        assert_eq!(
            outcomes,
            vec![
                (1, Outcome::Retrying, Some(503)),
                (2, Outcome::Retrying, Some(503)),
                (3, Outcome::Delivered, Some(204)),
            ]
        );
        // The retry waited at least half the first backoff (equal jitter).
        let gap = attempts[1].at - attempts[0].at;
        assert!(gap >= chrono::Duration::milliseconds(20), "{gap}");
        assert!(attempts.iter().all(|a| a.event_id == event.id));
        eventually("an empty queue", WAIT, async || {
            (harness.bus.jobs.depth(QUEUE).await.unwrap() == 0).then_some(())
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn a_receiver_that_never_answers_well_ends_in_the_dead_letters() {
    bounded(async {
        let harness = Harness::start(fast(3)).await;
        let (receiver, served) = Receiver::start(usize::MAX, Duration::ZERO).await;
        let (webhook_id, _) = harness.subscribe(format!("{}/hook", served.url));
        harness.send(webhook_id, &event()).await;

        let dead = eventually("a dead letter", WAIT, async || {
            let dead = harness.bus.jobs.dead_letters(QUEUE).await.unwrap();
            (!dead.is_empty()).then_some(dead)
        })
        .await;
        assert_eq!(dead.len(), 1);
        assert_eq!(receiver.calls(), 3, "exactly max_attempts requests");
        let outcomes: Vec<Outcome> = harness
            .registry
            .attempts()
            .iter()
            .map(|a| a.outcome)
            .collect();
        assert_eq!(
            outcomes,
            vec![Outcome::Retrying, Outcome::Retrying, Outcome::GaveUp]
        );
    })
    .await;
}

#[tokio::test]
async fn a_slow_receiver_times_out_and_is_retried() {
    bounded(async {
        let settings = WebhookSettings {
            timeout_ms: 200,
            ..fast(3)
        };
        let harness = Harness::start(settings).await;
        let (receiver, served) = Receiver::start(1, Duration::from_secs(5)).await;
        let (webhook_id, _) = harness.subscribe(format!("{}/hook", served.url));
        harness.send(webhook_id, &event()).await;

        eventually("the delivery after a timeout", WAIT, async || {
            (receiver.delivered().len() == 1).then_some(())
        })
        .await;
        let attempts = eventually("two attempts", WAIT, async || {
            let attempts = harness.registry.attempts();
            (attempts.len() == 2).then_some(attempts)
        })
        .await;
        assert_eq!(attempts[0].status, None);
        assert_eq!(attempts[0].error.as_deref(), Some("timed out"));
        assert_eq!(attempts[1].outcome, Outcome::Delivered);
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_receiver_is_retried_and_a_deleted_webhook_is_dropped() {
    bounded(async {
        let harness = Harness::start(fast(2)).await;
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", closed.local_addr().unwrap());
        drop(closed);
        let (webhook_id, _) = harness.subscribe(url);
        harness.send(webhook_id, &event()).await;
        eventually("a dead letter", WAIT, async || {
            let dead = harness.bus.jobs.dead_letters(QUEUE).await.unwrap();
            (dead.len() == 1).then_some(())
        })
        .await;
        let attempts = harness.registry.attempts();
        assert_eq!(attempts.len(), 2);
        assert!(
            attempts[0]
                .error
                .as_deref()
                .unwrap()
                .starts_with("cannot connect")
        );

        // An unknown (deleted) subscription: acknowledged, nothing sent.
        harness.send(Uuid::now_v7(), &event()).await;
        eventually("an empty queue", WAIT, async || {
            (harness.bus.jobs.depth(QUEUE).await.unwrap() == 0).then_some(())
        })
        .await;
        assert_eq!(harness.registry.attempts().len(), 2);
        assert_eq!(harness.bus.jobs.dead_letters(QUEUE).await.unwrap().len(), 1);
    })
    .await;
}

/// Without `allow_private_targets`, neither an address written in the URL
/// nor a name that resolves to loopback reaches the receiver listening
/// there; each attempt is recorded with the reason, and the job ends.
#[tokio::test]
async fn private_targets_are_refused_unless_allowed() {
    bounded(async {
        let settings = WebhookSettings {
            allow_private_targets: false,
            ..fast(1)
        };
        let harness = Harness::start(settings).await;
        let (receiver, served) = Receiver::start(0, Duration::ZERO).await;
        let port = served.authority().rsplit(':').next().unwrap().to_owned();
        for url in [
            format!("{}/hook", served.url),
            format!("http://localhost:{port}/hook"),
            format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        ] {
            let (webhook_id, _) = harness.subscribe(url);
            harness.send(webhook_id, &event()).await;
        }
        let attempts = eventually("three refused attempts", WAIT, async || {
            let attempts = harness.registry.attempts();
            (attempts.len() == 3).then_some(attempts)
        })
        .await;
        for attempt in &attempts {
            let error = attempt.error.as_deref().unwrap_or_default();
            assert!(error.contains("private"), "{attempt:?}");
            assert_eq!(attempt.outcome, Outcome::GaveUp, "{attempt:?}");
        }
        assert_eq!(receiver.calls(), 0, "no request reached the receiver");

        // The same receiver, allowed: delivered.
        let allowed = Harness::start(fast(1)).await;
        let (webhook_id, _) = allowed.subscribe(format!("http://localhost:{port}/hook"));
        allowed.send(webhook_id, &event()).await;
        eventually("the allowed delivery", WAIT, async || {
            (receiver.delivered().len() == 1).then_some(())
        })
        .await;
    })
    .await;
}
