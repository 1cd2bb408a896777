//! The projector: applies cinema events to the read models, one
//! transaction per event, from the bus (live) or from the command side's
//! event log (rebuild). Both paths go through [`Projector::apply`].

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use uuid::Uuid;
use zocalo_bus::{Event, EventHandler, JobError};
use zocalo_store::StoreError;

use crate::projection::Change;
use crate::store::{CinemaStore, EventMeta};

/// The consumer group of the read side on the `cinema` topic.
pub const GROUP: &str = "cinema-query";

/// What became of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The read models changed.
    Applied,
    /// Nothing changed: a duplicate, an older version, or a kind the read
    /// models do not show.
    Ignored,
}

/// Why an event could not be applied.
#[derive(Debug)]
pub enum ProjectError {
    /// The payload does not match its kind: retrying cannot help.
    Unreadable(String),
    /// The store failed: a retry may help.
    Store(StoreError),
}

impl std::fmt::Display for ProjectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProjectError::Unreadable(reason) => f.write_str(reason),
            ProjectError::Store(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for ProjectError {}

/// One event as the projector needs it, from the bus or from the log.
#[derive(Debug, Clone)]
pub struct Incoming<'a> {
    pub id: Uuid,
    pub kind: &'a str,
    pub payload: &'a serde_json::Value,
    pub occurred_at: DateTime<Utc>,
    pub seq: Option<i64>,
}

#[derive(Clone)]
pub struct Projector {
    store: Arc<dyn CinemaStore>,
}

impl Projector {
    pub fn new(store: Arc<dyn CinemaStore>) -> Self {
        Self { store }
    }

    /// Apply one event.
    pub async fn apply(&self, event: Incoming<'_>) -> Result<Outcome, ProjectError> {
        let meta = EventMeta {
            id: event.id,
            occurred_at: event.occurred_at,
            seq: event.seq,
        };
        let change = Change::parse(event.kind, event.payload).map_err(ProjectError::Unreadable)?;
        let applied = match change {
            Some(change) => self.store.apply(&change, &meta).await,
            None => self.store.skip(&meta).await.map(|()| false),
        }
        .map_err(ProjectError::Store)?;
        Ok(if applied {
            Outcome::Applied
        } else {
            Outcome::Ignored
        })
    }

    /// The bus handler: unreadable events are dropped (logged), store
    /// failures redelivered; `applied` runs after each event that changed
    /// the read models.
    pub fn handler(&self, applied: Arc<dyn Fn() + Send + Sync>) -> EventHandler {
        let projector = self.clone();
        Arc::new(move |event: Event| {
            let projector = projector.clone();
            let applied = applied.clone();
            async move {
                let incoming = Incoming {
                    id: event.id,
                    kind: &event.kind,
                    payload: &event.payload,
                    occurred_at: event.occurred_at,
                    seq: None,
                };
                match projector.apply(incoming).await {
                    Ok(outcome) => {
                        record(outcome, event.occurred_at);
                        if outcome == Outcome::Applied {
                            applied();
                        }
                        Ok(())
                    }
                    Err(ProjectError::Unreadable(reason)) => Err(JobError::Fatal(reason)),
                    Err(ProjectError::Store(error)) => Err(JobError::Retry(error.to_string())),
                }
            }
            .boxed()
        })
    }
}

/// `cinema_projection_lag_seconds`: how long after it happened on the
/// command side the last live event was applied here; and the
/// applied/ignored counters. A rebuild replays old events and records
/// neither.
fn record(outcome: Outcome, occurred_at: DateTime<Utc>) {
    let lag = (Utc::now() - occurred_at).num_milliseconds().max(0) as f64 / 1000.0;
    metrics::gauge!("cinema_projection_lag_seconds").set(lag);
    let label = match outcome {
        Outcome::Applied => "applied",
        Outcome::Ignored => "ignored",
    };
    metrics::counter!("cinema_projection_events_total", "outcome" => label).increment(1);
}
