//! Instances registered in a NATS KV bucket.
//!
//! Each instance puts its [`Instance`] as JSON under `<service>.<id>` and
//! refreshes it every heartbeat. The bucket's `max_age` is the TTL, but
//! expiry by age sends nothing to watchers, so a watcher also drops every
//! entry whose last put is older than the TTL. While NATS is unreachable no
//! heartbeat can arrive, so a watcher keeps its list as it was; after the
//! connection returns, every entry gets a fresh TTL to be refreshed in.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv::{self, Entry, Operation, Store, Watch};
use async_nats::jetstream::stream::{self, DiscardPolicy, StorageType};
use async_nats::jetstream::{self, Context};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::loops::Loops;
use crate::{Discovery, DiscoveryError, Instance, Instances, check_name, publish};

/// How long a new watcher waits for the bucket's current entries before
/// answering; an empty bucket sends nothing, so this bounds that case.
const INITIAL_QUIET: Duration = Duration::from_millis(300);
const INITIAL_LIMIT: Duration = Duration::from_secs(3);
/// How long deregistering may wait on NATS, per step.
const LEAVE_LIMIT: Duration = Duration::from_secs(3);
/// The longest pause between attempts to re-open a broken watch.
const MAX_RETRY: Duration = Duration::from_secs(1);

/// Whether the client is connected, and how many times it lost the
/// connection (an outage is what makes a watch worth re-opening).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Link {
    connected: bool,
    outages: u64,
}

pub struct NatsDiscovery {
    bucket: Arc<Bucket>,
    store: Store,
    ttl: Duration,
    link: watch::Receiver<Link>,
    /// One watch loop per service, shared by its watchers.
    loops: Loops,
}

impl NatsDiscovery {
    /// Connect and open (creating if needed) the bucket whose entries live
    /// `ttl` without a heartbeat.
    pub async fn connect(url: &str, bucket: &str, ttl: Duration) -> Result<Self, DiscoveryError> {
        if ttl < Duration::from_millis(100) {
            return Err(DiscoveryError::Invalid(
                "ttl must be at least 100 ms".into(),
            ));
        }
        let link = Arc::new(watch::Sender::new(Link {
            connected: true,
            outages: 0,
        }));
        let events = link.clone();
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            // Discovery should notice a returning server within a second,
            // not after the default backoff of up to four.
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(100 * attempts as u64).min(MAX_RETRY)
            })
            .event_callback(move |event| {
                let link = events.clone();
                async move { track_link(&link, &event) }
            })
            .connect(url)
            .await
            .map_err(DiscoveryError::unavailable)?;
        let bucket = Arc::new(Bucket {
            js: jetstream::new(client),
            name: bucket.to_owned(),
            ttl,
        });
        let store = bucket.open().await?;
        Ok(Self {
            bucket,
            store,
            ttl,
            link: link.subscribe(),
            loops: Loops::default(),
        })
    }

    /// Put `instance` under key `<service>.<id>` now and every `heartbeat`
    /// (shorter than the TTL). The handle deletes the key on
    /// [`Registration::deregister`] and stops heartbeating when dropped.
    pub async fn register(
        &self,
        instance: Instance,
        heartbeat: Duration,
    ) -> Result<Registration, DiscoveryError> {
        check_name("service", &instance.service)?;
        check_name("instance id", &instance.id)?;
        if heartbeat.is_zero() || heartbeat >= self.ttl {
            return Err(DiscoveryError::Invalid(format!(
                "heartbeat {heartbeat:?} must be above zero and below the ttl {:?}",
                self.ttl
            )));
        }
        let key = format!("{}.{}", instance.service, instance.id);
        let value: bytes::Bytes = serde_json::to_vec(&instance)
            .map_err(|error| DiscoveryError::Invalid(error.to_string()))?
            .into();
        self.store
            .put(&key, value.clone())
            .await
            .map_err(DiscoveryError::unavailable)?;
        let stop = CancellationToken::new();
        let heartbeats = tokio::spawn(heartbeat_loop(
            self.bucket.clone(),
            self.store.clone(),
            key.clone(),
            value,
            heartbeat,
            stop.clone(),
        ));
        tracing::info!(%key, url = %instance.url, "registered in discovery");
        Ok(Registration {
            store: self.store.clone(),
            key,
            stop,
            heartbeats,
        })
    }
}

/// Record connects and disconnects for the watch loops.
fn track_link(link: &watch::Sender<Link>, event: &async_nats::Event) {
    match event {
        async_nats::Event::Connected => link.send_modify(|link| link.connected = true),
        async_nats::Event::Disconnected => link.send_modify(|link| {
            link.connected = false;
            link.outages += 1;
        }),
        _ => {}
    }
}

/// The bucket's name and how to (re-)create it.
struct Bucket {
    js: Context,
    name: String,
    ttl: Duration,
}

impl Bucket {
    /// Open the bucket, creating it if needed. Several processes may do
    /// this at once, and a server older than the client's KV defaults may
    /// refuse `create_key_value`: then the backing stream is created by
    /// hand, and an existing bucket is simply opened.
    async fn open(&self) -> Result<Store, DiscoveryError> {
        let (bucket, ttl) = (&self.name, self.ttl);
        let config = kv::Config {
            bucket: bucket.clone(),
            history: 1,
            max_age: ttl,
            storage: StorageType::File,
            ..Default::default()
        };
        match self.js.create_key_value(config).await {
            Ok(store) => return Ok(store),
            Err(error) => {
                tracing::debug!(%bucket, %error, "create_key_value refused; creating the stream");
            }
        }
        let stream = stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_age: ttl,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: DiscardPolicy::New,
            storage: StorageType::File,
            num_replicas: 1,
            ..Default::default()
        };
        if let Err(error) = self.js.get_or_create_stream(stream).await {
            tracing::debug!(%bucket, %error, "creating the bucket stream failed; opening it");
        }
        self.js
            .get_key_value(bucket.as_str())
            .await
            .map_err(DiscoveryError::unavailable)
    }

    /// After a failure while connected, the bucket may be gone (a NATS
    /// server restarted without its storage): create it again. Bounded, so
    /// a slow server cannot stall heartbeats.
    async fn recreate_if_connected(&self) {
        if self.js.client().connection_state() != async_nats::connection::State::Connected {
            return;
        }
        match tokio::time::timeout(self.ttl, self.open()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::debug!(bucket = %self.name, %error, "re-creating the bucket failed")
            }
            Err(_) => tracing::debug!(bucket = %self.name, "re-creating the bucket timed out"),
        }
    }
}

/// A registered instance. Dropping it stops the heartbeats (the entry then
/// expires after the TTL, as for a killed process); [`Self::deregister`]
/// also removes the entry at once.
pub struct Registration {
    store: Store,
    key: String,
    stop: CancellationToken,
    heartbeats: JoinHandle<()>,
}

impl Registration {
    /// The key this instance is registered under, `<service>.<id>`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Stop heartbeating and delete the entry, so watchers drop this
    /// instance now rather than after the TTL.
    pub async fn deregister(mut self) {
        self.stop.cancel();
        // A heartbeat in flight must land before the delete, or it would
        // bring the entry back for a TTL.
        // Bounded: with NATS down, shutdown must not wait on it for long.
        let _ = tokio::time::timeout(LEAVE_LIMIT, &mut self.heartbeats).await;
        match tokio::time::timeout(LEAVE_LIMIT, self.store.delete(&self.key)).await {
            Ok(Ok(())) => tracing::info!(key = %self.key, "deregistered from discovery"),
            Ok(Err(error)) => {
                tracing::warn!(key = %self.key, %error, "deregistering failed; the entry expires after its TTL");
            }
            Err(_) => {
                tracing::warn!(key = %self.key, "deregistering timed out; the entry expires after its TTL");
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn heartbeat_loop(
    bucket: Arc<Bucket>,
    store: Store,
    key: String,
    value: bytes::Bytes,
    every: Duration,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        // Not cancelled midway: deregistering waits for this put to settle.
        let failure = match tokio::time::timeout(bucket.ttl, store.put(&key, value.clone())).await {
            Ok(Ok(_)) => continue,
            Ok(Err(error)) => error.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        metrics::counter!("discovery_heartbeat_failures_total").increment(1);
        tracing::warn!(%key, error = %failure, "discovery heartbeat failed");
        tokio::select! {
            () = stop.cancelled() => return,
            () = bucket.recreate_if_connected() => {}
        }
    }
}

#[async_trait::async_trait]
impl Discovery for NatsDiscovery {
    /// Services nobody registered yet simply start empty.
    async fn watch(&self, service: &str) -> Result<watch::Receiver<Instances>, DiscoveryError> {
        check_name("service", service)?;
        if let Some(receiver) = self.loops.subscribe(service) {
            return Ok(receiver);
        }
        let outages = self.link.borrow().outages;
        let mut stream = open_watch(&self.store, service).await?;
        let mut tracker = Tracker::new(service, self.ttl);
        tracker.load_current(&mut stream).await;
        let sender = watch::Sender::new(Instances::from([]));
        publish(&sender, service, tracker.snapshot());
        Ok(self.loops.start(service, sender, |sender| {
            let watcher = Watcher {
                bucket: self.bucket.clone(),
                store: self.store.clone(),
                link: self.link.clone(),
                outages,
                sender,
                tracker,
            };
            tokio::spawn(watcher.run(stream))
        }))
    }
}

async fn open_watch(store: &Store, service: &str) -> Result<Watch, DiscoveryError> {
    store
        .watch_with_history(format!("{service}.*"))
        .await
        .map_err(DiscoveryError::unavailable)
}

/// The instances of one service as last seen in the bucket.
struct Tracker {
    service: String,
    prefix: String,
    ttl: Duration,
    live: HashMap<String, Live>,
    /// Entries are not expired before this: set when a watch is re-opened
    /// after an outage, so instances get a full TTL to heartbeat again.
    grace_from: Option<Instant>,
}

struct Live {
    instance: Instance,
    last_put: Instant,
}

impl Tracker {
    fn new(service: &str, ttl: Duration) -> Self {
        Self {
            service: service.to_owned(),
            prefix: format!("{service}."),
            ttl,
            live: HashMap::new(),
            grace_from: None,
        }
    }

    /// Read the entries already in the bucket: until the last one (no
    /// more pending), or a quiet moment for an empty bucket.
    async fn load_current(&mut self, stream: &mut Watch) {
        let deadline = tokio::time::Instant::now() + INITIAL_LIMIT;
        while tokio::time::Instant::now() < deadline {
            let Ok(Some(Ok(entry))) = tokio::time::timeout(INITIAL_QUIET, stream.next()).await
            else {
                return;
            };
            let caught_up = entry.delta == 0;
            self.apply(&entry);
            if caught_up {
                return;
            }
        }
    }

    /// Returns whether the set of instances changed.
    fn apply(&mut self, entry: &Entry) -> bool {
        let Some(id) = entry.key.strip_prefix(&self.prefix) else {
            return false;
        };
        match entry.operation {
            Operation::Delete | Operation::Purge => self.live.remove(id).is_some(),
            Operation::Put => match serde_json::from_slice::<Instance>(&entry.value) {
                Ok(instance) => {
                    let last_put = Instant::now()
                        .checked_sub(age(entry.created.unix_timestamp_nanos()))
                        .unwrap_or_else(Instant::now);
                    let previous = self.live.insert(
                        id.to_owned(),
                        Live {
                            instance: instance.clone(),
                            last_put,
                        },
                    );
                    previous.is_none_or(|previous| previous.instance != instance)
                }
                Err(error) => {
                    tracing::warn!(key = %entry.key, %error, "ignoring an unreadable discovery entry");
                    false
                }
            },
        }
    }

    /// Drop entries not refreshed within the TTL; returns whether any was.
    fn expire(&mut self) -> bool {
        let now = Instant::now();
        let before = self.live.len();
        let (ttl, grace_from) = (self.ttl, self.grace_from);
        self.live.retain(|_, live| {
            let since = grace_from.map_or(live.last_put, |grace| grace.max(live.last_put));
            now.saturating_duration_since(since) <= ttl
        });
        self.live.len() != before
    }

    fn snapshot(&self) -> Vec<Instance> {
        self.live
            .values()
            .map(|live| live.instance.clone())
            .collect()
    }
}

/// How long ago a server timestamp (ns since the epoch) was; zero if it
/// is ahead of this machine's clock.
fn age(created_ns: i128) -> Duration {
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |now| now.as_nanos() as i128);
    Duration::from_nanos(u64::try_from(now_ns - created_ns).unwrap_or(0))
}

/// The loop behind one service's receivers.
struct Watcher {
    bucket: Arc<Bucket>,
    store: Store,
    link: watch::Receiver<Link>,
    /// How many outages the connection had when the watch was opened.
    outages: u64,
    sender: watch::Sender<Instances>,
    tracker: Tracker,
}

impl Watcher {
    async fn run(mut self, first: Watch) {
        let mut stream = Some(first);
        let mut retry = Duration::from_millis(50);
        let sweep_every = (self.tracker.ttl / 5).clamp(Duration::from_millis(50), MAX_RETRY);
        let mut sweeps = tokio::time::interval(sweep_every);
        sweeps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut link_open = true;
        loop {
            if stream.is_none() && self.link.borrow().connected {
                match open_watch(&self.store, &self.tracker.service).await {
                    Ok(opened) => {
                        stream = Some(opened);
                        self.tracker.grace_from = Some(Instant::now());
                        retry = Duration::from_millis(50);
                    }
                    Err(error) => {
                        tracing::debug!(service = %self.tracker.service, %error, "re-opening the discovery watch failed");
                        self.bucket.recreate_if_connected().await;
                        retry = (retry * 2).min(MAX_RETRY);
                    }
                }
            }
            let watching = stream.is_some();
            let changed = tokio::select! {
                () = self.sender.closed() => return,
                entry = next_entry(&mut stream) => match entry {
                    Some(Ok(entry)) => self.tracker.apply(&entry),
                    // A broken or ended watch is re-opened: that replays
                    // the current entries, so nothing is missed.
                    Some(Err(error)) => {
                        tracing::debug!(service = %self.tracker.service, %error, "discovery watch broke; re-opening");
                        stream = None;
                        false
                    }
                    None => {
                        stream = None;
                        false
                    }
                },
                // Only a live watch can have seen the heartbeats: never
                // expire entries during an outage.
                _ = sweeps.tick(), if watching && self.link.borrow().connected => self.tracker.expire(),
                () = tokio::time::sleep(retry), if !watching => false,
                result = self.link.changed(), if link_open => {
                    match result {
                        Ok(()) => self.on_link_change(&mut stream),
                        Err(_) => link_open = false,
                    }
                    false
                }
            };
            if changed {
                publish(&self.sender, &self.tracker.service, self.tracker.snapshot());
            }
        }
    }

    /// After an outage the old watch may be stale: once connected again,
    /// open a fresh one, which replays the current entries.
    fn on_link_change(&mut self, stream: &mut Option<Watch>) {
        let link = *self.link.borrow_and_update();
        if link.connected && link.outages != self.outages {
            self.outages = link.outages;
            *stream = None;
        }
    }
}

async fn next_entry(stream: &mut Option<Watch>) -> Option<Result<Entry, kv::WatcherError>> {
    match stream {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}
