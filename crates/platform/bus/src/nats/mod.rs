//! The distributed bus on NATS JetStream (server 2.9, so plain stream and
//! consumer configs only).
//!
//! - Jobs: stream `ZOCALO_JOBS` (work-queue retention) with subjects
//!   `jobs.<queue>` (ready) and `delayed.<queue>`; one durable pull consumer
//!   per subject. A delayed job waits in `delayed.<queue>`, held back by
//!   nak-with-delay, and is moved to `jobs.<queue>` once due, so the ready
//!   consumer's delivery count is exactly the job's attempt number. Dead jobs
//!   go to `dead.<queue>` in `ZOCALO_DEAD`.
//! - Events: stream `ZOCALO_EVENTS` (limits retention, 7 days), one durable
//!   pull consumer per (topic, group), so each group sees every event and
//!   its members share them.
//!
//! Acks need the delivered message, so reserved jobs and delivered events
//! are kept in memory until settled: settle from the process that received.
//!
//! The client reconnects by itself, but a server that comes back without
//! its storage (a fresh pod, a lost volume) has neither streams nor
//! consumers. So after a failed publish or pull the bus declares its streams
//! again and forgets its cached consumers (at most once per
//! [`HEAL_INTERVAL`]): publishing then finds a stream again, and the next
//! pull re-creates its durable consumer. A pull from a vanished consumer
//! does not fail, it only finds nothing; so empty pulls check now and then
//! ([`CONSUMER_CHECK_INTERVAL`]) that their consumer still exists.

mod events;
mod jobs;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, Message};
use futures_util::StreamExt;

use crate::{Bus, BusError, BusOptions, sanitize};

/// Dead jobs and events are kept this long.
const DEAD_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
const EVENT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Deliveries not settled after this long are forgotten (the broker has
/// redelivered them long ago).
const HELD_MAX_AGE: Duration = Duration::from_secs(3600);
/// The least time between two attempts to re-declare the streams, so that
/// an outage does not turn every failed call into three more requests.
const HEAL_INTERVAL: Duration = Duration::from_secs(1);
/// How often an empty pull is followed by a check that its consumer still
/// exists (one request per interval per process, whatever the consumers).
const CONSUMER_CHECK_INTERVAL: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct NatsBus {
    inner: Arc<Inner>,
}

struct Inner {
    js: jetstream::Context,
    names: Names,
    ack_wait: Duration,
    jobs: stream::Stream,
    dead: stream::Stream,
    events: stream::Stream,
    consumers: Mutex<HashMap<String, PullConsumer>>,
    /// Reserved jobs by id.
    reserved: Held<uuid::Uuid>,
    /// Delivered events by (consumer, event id).
    delivered: Held<(String, uuid::Uuid)>,
    /// When this process last looked for due delayed jobs, per queue.
    promoted: Mutex<HashMap<String, Instant>>,
    /// What the streams are declared with, to declare them again.
    stream_configs: [stream::Config; 3],
    /// When the streams were last re-declared after a failure.
    healed: Mutex<Option<Instant>>,
    /// When an empty pull last checked that its consumer exists.
    consumer_checked: Mutex<Option<Instant>>,
}

impl NatsBus {
    /// Connect to `url` and create the streams if they do not exist.
    pub async fn connect(url: &str, options: BusOptions) -> Result<Self, BusError> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(BusError::unavailable)?;
        let js = jetstream::new(client);
        let names = Names::new(&options.prefix);
        let stream_configs = stream_configs(&names);
        let [jobs, dead, events] = stream_configs.clone();
        let jobs = create_stream(&js, jobs).await?;
        let dead = create_stream(&js, dead).await?;
        let events = create_stream(&js, events).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                js,
                names,
                ack_wait: options.ack_wait,
                jobs,
                dead,
                events,
                consumers: Mutex::default(),
                reserved: Held::default(),
                delivered: Held::default(),
                promoted: Mutex::default(),
                stream_configs,
                healed: Mutex::default(),
                consumer_checked: Mutex::default(),
            }),
        })
    }

    pub fn bus(self) -> Bus {
        let this = Arc::new(self);
        Bus {
            jobs: this.clone(),
            events: this,
        }
    }

    /// Delete this bus's streams and everything in them: for tests and
    /// tear-down of a prefixed namespace.
    pub async fn delete_streams(&self) -> Result<(), BusError> {
        for name in ["ZOCALO_JOBS", "ZOCALO_DEAD", "ZOCALO_EVENTS"] {
            self.inner
                .js
                .delete_stream(self.inner.names.stream(name))
                .await
                .map_err(BusError::unavailable)?;
        }
        Ok(())
    }

    /// A durable pull consumer, created on first use and cached.
    async fn consumer(
        &self,
        stream: &stream::Stream,
        name: &str,
        config: impl FnOnce() -> pull::Config,
    ) -> Result<PullConsumer, BusError> {
        let key = format!("{}\n{name}", stream.cached_info().config.name);
        if let Some(consumer) = lock(&self.inner.consumers).get(&key) {
            return Ok(consumer.clone());
        }
        let consumer = match stream.get_or_create_consumer(name, config()).await {
            Ok(consumer) => consumer,
            Err(error) => {
                self.heal().await;
                return Err(BusError::unavailable(error));
            }
        };
        lock(&self.inner.consumers).insert(key, consumer.clone());
        Ok(consumer)
    }

    /// Publish and wait for the stream's acknowledgement, so a returned Ok
    /// means the message is stored. `id` de-duplicates re-sends within the
    /// stream's duplicate window; `traceparent` travels as a header.
    async fn store(
        &self,
        subject: String,
        id: &str,
        body: Vec<u8>,
        traceparent: Option<&str>,
    ) -> Result<(), BusError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
        if let Some(traceparent) = traceparent {
            headers.insert(TRACEPARENT, traceparent);
        }
        let stored = async {
            self.inner
                .js
                .publish_with_headers(subject, headers, body.into())
                .await
                .map_err(BusError::unavailable)?
                .await
                .map_err(BusError::unavailable)
        }
        .await;
        if stored.is_err() {
            self.heal().await;
        }
        stored.map(drop)
    }

    /// [`fetch_one`], healing the bus when the pull fails.
    async fn fetch(
        &self,
        consumer: &PullConsumer,
        wait: Duration,
    ) -> Result<Option<Message>, BusError> {
        let fetched = fetch_one(consumer, wait).await;
        match &fetched {
            Err(_) => self.heal().await,
            // A pull from a consumer the server no longer has just comes
            // back empty, so an idle consumer asks now and then whether
            // it still exists.
            Ok(None) if self.consumer_check_due() => {
                let mut probe = consumer.clone();
                if probe.info().await.is_err() {
                    self.heal().await;
                }
            }
            Ok(_) => {}
        }
        fetched
    }

    /// True at most once per [`CONSUMER_CHECK_INTERVAL`].
    fn consumer_check_due(&self) -> bool {
        let mut checked = lock(&self.inner.consumer_checked);
        if checked.is_some_and(|at| at.elapsed() < CONSUMER_CHECK_INTERVAL) {
            return false;
        }
        *checked = Some(Instant::now());
        true
    }

    /// After a failure: declare the streams again (a no-op while they
    /// exist) and drop the cached consumers, so that a server which lost
    /// its storage gets both back. Throttled to once per [`HEAL_INTERVAL`].
    async fn heal(&self) {
        {
            let mut healed = lock(&self.inner.healed);
            if healed.is_some_and(|at| at.elapsed() < HEAL_INTERVAL) {
                return;
            }
            *healed = Some(Instant::now());
        }
        // Forgotten first: while the server is still down the declarations
        // below fail, and the next use must not trust the old consumers.
        lock(&self.inner.consumers).clear();
        for config in &self.inner.stream_configs {
            if let Err(error) = create_stream(&self.inner.js, config.clone()).await {
                tracing::debug!(%error, stream = %config.name, "stream not re-declared");
                return;
            }
        }
    }
}

const TRACEPARENT: &str = zocalo_telemetry::trace::TRACEPARENT;

/// The trace context a stored message was published in.
fn traceparent(message: &Message) -> Option<String> {
    let value = message.headers.as_ref()?.get(TRACEPARENT)?;
    Some(value.as_str().to_owned())
}

/// Take at most one message from `consumer`, waiting up to `wait`.
///
/// Always a plain pull request with a server-side expiry: on NATS 2.9 a
/// `no_wait` request that races another puller for the last message can be
/// left waiting with no expiry at all. The client-side limit is a last
/// resort against a lost reply; a message the server sent to an abandoned
/// request is redelivered after its ack wait.
async fn fetch_one(consumer: &PullConsumer, wait: Duration) -> Result<Option<Message>, BusError> {
    let wait = wait.max(MIN_EXPIRES);
    let mut batch = consumer
        .batch()
        .max_messages(1)
        .expires(wait)
        .messages()
        .await
        .map_err(BusError::unavailable)?;
    match tokio::time::timeout(wait + FETCH_GRACE, batch.next()).await {
        Ok(Some(Ok(message))) => Ok(Some(message)),
        Ok(Some(Err(error))) => Err(BusError::unavailable(error)),
        Ok(None) => Ok(None),
        Err(_) => Err(BusError::Unavailable(
            "JetStream pull request got no answer".into(),
        )),
    }
}

/// Shortest server-side expiry of a pull request.
const MIN_EXPIRES: Duration = Duration::from_millis(10);
/// How much later than its expiry a pull request may end before we give up.
pub(super) const FETCH_GRACE: Duration = Duration::from_secs(5);

/// The jobs, dead-letter and events streams of a namespace.
fn stream_configs(names: &Names) -> [stream::Config; 3] {
    [
        stream::Config {
            name: names.stream("ZOCALO_JOBS"),
            subjects: vec![names.subject("jobs.>"), names.subject("delayed.>")],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            ..Default::default()
        },
        stream::Config {
            name: names.stream("ZOCALO_DEAD"),
            subjects: vec![names.subject("dead.>")],
            max_age: DEAD_RETENTION,
            storage: StorageType::File,
            ..Default::default()
        },
        stream::Config {
            name: names.stream("ZOCALO_EVENTS"),
            subjects: vec![names.subject("events.>")],
            max_age: EVENT_RETENTION,
            storage: StorageType::File,
            ..Default::default()
        },
    ]
}

async fn create_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, BusError> {
    js.get_or_create_stream(config)
        .await
        .map_err(BusError::unavailable)
}

/// Stream and subject names, with the optional namespace prefix.
struct Names {
    stream_prefix: String,
    subject_prefix: String,
}

impl Names {
    fn new(prefix: &str) -> Self {
        if prefix.is_empty() {
            return Self {
                stream_prefix: String::new(),
                subject_prefix: String::new(),
            };
        }
        let prefix = sanitize(prefix);
        Self {
            stream_prefix: format!("{prefix}_"),
            subject_prefix: format!("{prefix}."),
        }
    }

    fn stream(&self, name: &str) -> String {
        format!("{}{name}", self.stream_prefix)
    }

    fn subject(&self, subject: &str) -> String {
        format!("{}{subject}", self.subject_prefix)
    }
}

/// Messages delivered to this process and not yet settled.
struct Held<K> {
    map: Mutex<HashMap<K, (Message, Instant)>>,
}

impl<K> Default for Held<K> {
    fn default() -> Self {
        Self {
            map: Mutex::default(),
        }
    }
}

impl<K: std::hash::Hash + Eq> Held<K> {
    fn insert(&self, key: K, message: Message) {
        let mut map = lock(&self.map);
        // Callers that never settle (a crashed handler) must not grow the
        // map forever; their messages were redelivered long ago.
        if map.len() > 1024 {
            map.retain(|_, (_, at)| at.elapsed() < HELD_MAX_AGE);
        }
        map.insert(key, (message, Instant::now()));
    }

    fn take(&self, key: &K) -> Option<Message> {
        lock(&self.map).remove(key).map(|(message, _)| message)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
