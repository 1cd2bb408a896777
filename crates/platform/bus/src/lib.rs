//! Durable jobs and events for Zócalo services.
//!
//! Services hand work to themselves through a [`JobQueue`] (at-least-once
//! delivery, visibility timeout, delays, retries with backoff, dead letters)
//! and tell each other about facts through an [`EventBus`] (publish, and
//! consumer groups that each see every event once). Two adapters implement
//! both: SQLite ([`SqliteBus`], the embedded default of `zocalo up`, one file
//! shared by every service and usable from several processes) and NATS
//! JetStream ([`NatsBus`], the distributed mode). [`run_worker`] and
//! [`run_subscriber`] are the consuming loops with the retry policy and
//! metrics; [`outbox`] moves messages written in a service's own transaction
//! to the bus after commit, and [`inbox`] lets consumers drop duplicates.
//!
//! Jobs and events carry the W3C trace context of the span that enqueued or
//! published them (a SQLite column, a NATS header, a field of outbox rows),
//! and the consuming loops handle each one in a span of that trace.
//!
//! Of our crates it depends on `zocalo-store` (for the pools the outbox
//! reads) and `zocalo-telemetry` (trace context) only; service crates and
//! `contracts` depend on it, never the reverse.

mod error;
mod event;
pub mod inbox;
mod job;
mod nats;
pub mod outbox;
mod sqlite;
mod worker;

use std::sync::Arc;
use std::time::Duration;

pub use error::BusError;
pub use event::{Event, EventBus};
pub use job::{Backoff, Job, JobError, JobOptions, JobQueue};
pub use nats::NatsBus;
pub use sqlite::SqliteBus;
pub use worker::{EventHandler, JobHandler, WorkerOptions, run_subscriber, run_worker};

/// Both halves of a bus, as services receive it.
#[derive(Clone)]
pub struct Bus {
    pub jobs: Arc<dyn JobQueue>,
    pub events: Arc<dyn EventBus>,
}

/// Settings that a URL's query string may override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusOptions {
    /// Namespace for NATS stream and subject names (`?prefix=t1`), so tests
    /// and tenants sharing a server do not see each other's messages.
    pub prefix: String,
    /// How long a delivered event stays invisible to the rest of its group
    /// before it is delivered again (`?ack_wait_ms=500`).
    pub ack_wait: Duration,
}

impl Default for BusOptions {
    fn default() -> Self {
        Self {
            prefix: String::new(),
            ack_wait: Duration::from_secs(30),
        }
    }
}

/// Open the bus a URL names:
/// - `sqlite://path/bus.db` → [`SqliteBus`];
/// - `nats://host:4222` → [`NatsBus`].
///
/// Query parameters `prefix` and `ack_wait_ms` set [`BusOptions`].
pub async fn connect(url: &str) -> Result<Bus, BusError> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let options = parse_options(query)?;
    if base.starts_with("nats://") || base.starts_with("tls://") {
        return Ok(NatsBus::connect(base, options).await?.bus());
    }
    match zocalo_store::Engine::from_url(base)? {
        zocalo_store::Engine::Sqlite(path) => {
            let bus =
                tokio::task::spawn_blocking(move || SqliteBus::open(&path, options)).await??;
            Ok(bus.bus())
        }
        zocalo_store::Engine::Postgres(_) => Err(BusError::Other(
            "the bus runs on sqlite:// or nats://, not PostgreSQL".into(),
        )),
    }
}

fn parse_options(query: &str) -> Result<BusOptions, BusError> {
    let mut options = BusOptions::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "prefix" => options.prefix = value.to_owned(),
            "ack_wait_ms" => {
                let ms = value.parse::<u64>().map_err(|_| {
                    BusError::Other(format!(
                        "bus url: ack_wait_ms must be a number, got `{value}`"
                    ))
                })?;
                options.ack_wait = Duration::from_millis(ms.max(1));
            }
            other => {
                return Err(BusError::Other(format!(
                    "bus url: unknown parameter `{other}`"
                )));
            }
        }
    }
    Ok(options)
}

/// Broker-safe form of a queue, topic or group name: only `[A-Za-z0-9_-]`
/// survive (NATS subjects and consumer names reserve `.`, `*`, `>` and
/// whitespace).
pub(crate) fn sanitize(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() { "_".into() } else { clean }
}

/// Milliseconds since the epoch, the SQLite adapters' clock: an integer
/// compares correctly across processes sharing the file.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parameters_set_options() {
        let options = parse_options("prefix=t1&ack_wait_ms=250").unwrap();
        assert_eq!(options.prefix, "t1");
        assert_eq!(options.ack_wait, Duration::from_millis(250));
        assert_eq!(parse_options("").unwrap(), BusOptions::default());
        assert!(parse_options("nope=1").is_err());
        assert!(parse_options("ack_wait_ms=soon").is_err());
    }

    #[test]
    fn names_are_sanitized() {
        assert_eq!(
            sanitize("orders.expire reservations"),
            "orders_expire_reservations"
        );
        assert_eq!(sanitize("a-b_C9"), "a-b_C9");
        assert_eq!(sanitize(""), "_");
    }
}
