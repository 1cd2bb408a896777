//! Events: facts one service publishes and others react to (an order was
//! paid, a showtime was created). Consumer groups give each subscribing
//! service every event once, shared among that service's instances.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::BusError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique per event; consumers de-duplicate on it.
    pub id: Uuid,
    pub topic: String,
    pub kind: String,
    pub payload: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
    /// The W3C `traceparent` of the span that created the event; consumers
    /// handle it in that trace. Carried by the transport (a column, a
    /// header), not in the serialized event.
    #[serde(skip)]
    pub traceparent: Option<String>,
}

impl Event {
    /// A new event with a fresh time-ordered id, occurring now, in the
    /// current span's trace.
    pub fn new(
        topic: impl Into<String>,
        kind: impl Into<String>,
        payload: serde_json::Value,
    ) -> Self {
        Self {
            id: Uuid::now_v7(),
            topic: topic.into(),
            kind: kind.into(),
            payload,
            occurred_at: Utc::now(),
            traceparent: zocalo_telemetry::trace::current_traceparent(),
        }
    }
}

#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    async fn publish(&self, event: &Event) -> Result<(), BusError>;

    /// Next event of `topic` for consumer group `group` (each group sees
    /// every event once it acks; within a group each event goes to one
    /// member). None after `wait` with nothing new. An event not acked within
    /// the bus's ack deadline is delivered again.
    async fn next(
        &self,
        topic: &str,
        group: &str,
        wait: Duration,
    ) -> Result<Option<Event>, BusError>;

    async fn ack(&self, topic: &str, group: &str, event: &Event) -> Result<(), BusError>;

    /// Give an event back for redelivery after `delay` instead of waiting
    /// for the ack deadline. The default relies on the deadline.
    async fn nack(
        &self,
        topic: &str,
        group: &str,
        event: &Event,
        delay: Duration,
    ) -> Result<(), BusError> {
        let _ = (topic, group, event, delay);
        Ok(())
    }
}
