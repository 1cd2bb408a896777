//! Events on JetStream: the consumer for (topic, group) is durable, so a
//! group's progress survives restarts and its members pull from one cursor.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{AckKind, Message};
use async_trait::async_trait;

use super::NatsBus;
use crate::{BusError, Event, EventBus, sanitize};

impl NatsBus {
    fn event_subject(&self, topic: &str) -> String {
        self.inner
            .names
            .subject(&format!("events.{}", sanitize(topic)))
    }

    fn consumer_name(topic: &str, group: &str) -> String {
        format!("{}_{}", sanitize(group), sanitize(topic))
    }

    async fn group_consumer(&self, topic: &str, group: &str) -> Result<PullConsumer, BusError> {
        let name = Self::consumer_name(topic, group);
        let filter_subject = self.event_subject(topic);
        let ack_wait = self.inner.ack_wait;
        let stream = self.inner.events.clone();
        self.consumer(&stream, &name.clone(), || pull::Config {
            durable_name: Some(name),
            filter_subject,
            ack_policy: AckPolicy::Explicit,
            ack_wait,
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
    }

    fn held_event(&self, topic: &str, group: &str, event: &Event) -> Result<Message, BusError> {
        self.inner
            .delivered
            .take(&(Self::consumer_name(topic, group), event.id))
            .ok_or_else(|| {
                BusError::Other(format!(
                    "event {} was not delivered to {group} in this process, or is already settled",
                    event.id
                ))
            })
    }
}

#[async_trait]
impl EventBus for NatsBus {
    async fn publish(&self, event: &Event) -> Result<(), BusError> {
        let body = serde_json::to_vec(event)?;
        self.store(
            self.event_subject(&event.topic),
            &event.id.to_string(),
            body,
            event.traceparent.as_deref(),
        )
        .await
    }

    async fn next(
        &self,
        topic: &str,
        group: &str,
        wait: Duration,
    ) -> Result<Option<Event>, BusError> {
        let consumer = self.group_consumer(topic, group).await?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(message) = self.fetch(&consumer, remaining).await? else {
                return Ok(None);
            };
            match serde_json::from_slice::<Event>(&message.payload) {
                Ok(mut event) => {
                    event.traceparent = super::traceparent(&message);
                    let key = (Self::consumer_name(topic, group), event.id);
                    self.inner.delivered.insert(key, message);
                    return Ok(Some(event));
                }
                Err(error) => {
                    // Undecodable events would fail every member forever.
                    tracing::error!(topic, group, %error, "undecodable event terminated");
                    message
                        .double_ack_with(AckKind::Term)
                        .await
                        .map_err(BusError::unavailable)?;
                    if remaining.is_zero() {
                        return Ok(None);
                    }
                }
            }
        }
    }

    async fn ack(&self, topic: &str, group: &str, event: &Event) -> Result<(), BusError> {
        let message = self.held_event(topic, group, event)?;
        message.double_ack().await.map_err(BusError::unavailable)
    }

    async fn nack(
        &self,
        topic: &str,
        group: &str,
        event: &Event,
        delay: Duration,
    ) -> Result<(), BusError> {
        let message = self.held_event(topic, group, event)?;
        let delay = (!delay.is_zero()).then_some(delay);
        message
            .double_ack_with(AckKind::Nak(delay))
            .await
            .map_err(BusError::unavailable)
    }
}
