//! Settings that change while the process runs: rate limits, feature
//! flags, the log level.
//!
//! A [`Live<T>`] holds the value in force in an `ArcSwap` (readers never
//! block or contend), and is fed by a watched TOML file and/or a NATS KV
//! key. Each new text is parsed (missing keys take `T`'s defaults) and
//! [`Validate`]d; a text that fails either is logged with the reason and
//! counted as `config_reloads_total{result="rejected"}`, and the running
//! value stays. Accepted values count as `result="ok"` and are announced on
//! a `watch` channel to whoever applies them.
//!
//! The file is polled (content hash once per interval) rather than watched
//! with inotify: polling works the same on overlay and network filesystems
//! and with editors that replace files by renaming, at the cost of up to
//! one interval of delay.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::ConfigError;

/// How often a watched file is read by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Pause before following a NATS KV key again after an error.
const NATS_RETRY: Duration = Duration::from_secs(2);

/// Checks a parsed value can be put in force (beyond what its types say).
pub trait Validate {
    fn validate(&self) -> Result<(), String>;
}

/// Where a NATS KV source lives: a key in a bucket on a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatsKvSource {
    pub url: String,
    pub bucket: String,
    pub key: String,
}

/// A value that can be replaced while the process runs.
pub struct Live<T> {
    current: ArcSwap<T>,
    changes: watch::Sender<Arc<T>>,
}

impl<T> Live<T>
where
    T: Serialize + DeserializeOwned + Default + Validate + Send + Sync + 'static,
{
    pub fn new(initial: T) -> Arc<Self> {
        let initial = Arc::new(initial);
        Arc::new(Self {
            current: ArcSwap::new(initial.clone()),
            changes: watch::Sender::new(initial),
        })
    }

    /// The value in force.
    pub fn get(&self) -> Arc<T> {
        self.current.load_full()
    }

    /// A receiver that sees every accepted value (the current one first).
    pub fn subscribe(&self) -> watch::Receiver<Arc<T>> {
        self.changes.subscribe()
    }

    /// Validate `value` and put it in force; on error nothing changes.
    pub fn replace(&self, value: T, origin: &str) -> Result<(), ConfigError> {
        match value.validate() {
            Ok(()) => {
                let value = Arc::new(value);
                self.current.store(value.clone());
                self.changes.send_replace(value);
                record("ok");
                tracing::info!(origin, "live configuration applied");
                Ok(())
            }
            Err(reason) => Err(reject(origin, reason)),
        }
    }

    /// Parse `text` as TOML over `T`'s defaults, then [`Live::replace`].
    pub fn apply_toml(&self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let parsed = Figment::from(Serialized::defaults(T::default()))
            .merge(Toml::string(text))
            .extract::<T>()
            .map_err(|error| reject(origin, ConfigError::from(error).0))?;
        self.replace(parsed, origin)
    }

    /// Apply `path` now — an error here is the caller's to report, so a
    /// bad file at startup stops the process — then re-read it every
    /// `every` until `stop`, applying each changed content.
    pub fn watch_file(
        self: &Arc<Self>,
        path: PathBuf,
        every: Duration,
        stop: CancellationToken,
    ) -> Result<JoinHandle<()>, ConfigError> {
        let text = std::fs::read(&path).map_err(|e| {
            ConfigError::new(format!("cannot read live config {}: {e}", path.display()))
        })?;
        self.apply_bytes(&text, &origin_of(&path))?;
        let live = self.clone();
        let mut last = content_hash(&text);
        Ok(tokio::spawn(async move {
            let mut unreadable = false;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
                match tokio::fs::read(&path).await {
                    Ok(text) => {
                        unreadable = false;
                        let hash = content_hash(&text);
                        if hash != last {
                            last = hash;
                            // Rejections are logged and counted inside.
                            let _ = live.apply_bytes(&text, &origin_of(&path));
                        }
                    }
                    Err(error) if !unreadable => {
                        unreadable = true;
                        tracing::warn!(path = %path.display(), %error, "cannot read live config, keeping the running one");
                    }
                    Err(_) => {}
                }
            }
        }))
    }

    /// Follow `source` until `stop`: its current value, then every put.
    /// Connection problems are retried; deletes keep the running value.
    pub fn watch_nats(
        self: &Arc<Self>,
        source: NatsKvSource,
        stop: CancellationToken,
    ) -> JoinHandle<()> {
        let live = self.clone();
        tokio::spawn(async move {
            let mut last_error = String::new();
            loop {
                let error = tokio::select! {
                    () = stop.cancelled() => return,
                    result = live.follow_nats(&source) => match result {
                        Ok(()) => "watch ended".to_owned(),
                        Err(error) => error,
                    },
                };
                // One warning per kind of failure, not one per retry.
                if error != last_error {
                    tracing::warn!(bucket = %source.bucket, key = %source.key, %error, "live config from NATS KV interrupted, retrying");
                    last_error = error;
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(NATS_RETRY) => {}
                }
            }
        })
    }

    async fn follow_nats(&self, source: &NatsKvSource) -> Result<(), String> {
        let client = async_nats::connect(&source.url)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", source.url))?;
        let store = async_nats::jetstream::new(client)
            .get_key_value(&source.bucket)
            .await
            .map_err(|e| format!("no KV bucket {}: {e}", source.bucket))?;
        let mut updates = store
            .watch_with_history(&source.key)
            .await
            .map_err(|e| e.to_string())?;
        let origin = format!("nats kv {}/{}", source.bucket, source.key);
        while let Some(entry) = updates.next().await {
            let entry = entry.map_err(|e| e.to_string())?;
            if entry.operation == async_nats::jetstream::kv::Operation::Put {
                let _ = self.apply_bytes(&entry.value, &origin);
            }
        }
        Ok(())
    }

    /// Call `apply` with the value in force now, then with every accepted
    /// value, until `stop`: how a setting is put in force (a log filter, a
    /// limiter) by whoever owns it.
    pub fn follow(
        &self,
        stop: CancellationToken,
        mut apply: impl FnMut(&T) + Send + 'static,
    ) -> JoinHandle<()> {
        let mut changes = self.subscribe();
        let current = changes.borrow_and_update().clone();
        apply(&current);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    changed = changes.changed() => if changed.is_err() { return },
                }
                let current = changes.borrow_and_update().clone();
                apply(&current);
            }
        })
    }

    fn apply_bytes(&self, text: &[u8], origin: &str) -> Result<(), ConfigError> {
        let text =
            std::str::from_utf8(text).map_err(|_| reject(origin, "not UTF-8 text".to_owned()))?;
        self.apply_toml(text, origin)
    }
}

fn origin_of(path: &Path) -> String {
    format!("file {}", path.display())
}

fn content_hash(text: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

fn record(result: &'static str) {
    metrics::counter!("config_reloads_total", "result" => result).increment(1);
}

fn reject(origin: &str, reason: String) -> ConfigError {
    record("rejected");
    tracing::warn!(origin, %reason, "live configuration rejected, keeping the running one");
    ConfigError::new(format!("{origin}: {reason}"))
}
