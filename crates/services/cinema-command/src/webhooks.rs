//! Outbound webhooks of a cinema: which events go out, to whom, and the
//! log of deliveries.
//!
//! A subscriber of the cinema topic (group `cinema-webhooks`) takes every
//! `showtime.saved`, `purchase.completed` and `purchase.refunded`, finds
//! the cinema it belongs to and enqueues one `cinema.webhook` job per
//! webhook of that cinema; `zocalo-notify`'s handler signs and delivers
//! each, retrying with backoff until the last attempt, and this module's
//! [`StoreRegistry`] keeps the attempts in the delivery log. The job id is
//! derived from (event, webhook), so an event delivered twice to the
//! subscriber enqueues each delivery once where the queue de-duplicates,
//! and receivers drop repeats by the event id in any case.

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::FutureExt as _;
use uuid::Uuid;
use zocalo_bus::{Event, EventHandler, JobError, JobQueue};
use zocalo_contracts::cinema::{self as contract, ShowtimeSaved};
use zocalo_notify::WebhookSettings;
use zocalo_notify::webhook::{self, Attempt, Envelope, RegistryError, Target, WebhookRegistry};

use crate::store::{CinemaStore, Kind};

/// The consumer group of the fan-out.
pub const GROUP: &str = "cinema-webhooks";

/// Event kinds a cinema's webhooks receive.
pub const DELIVERED_KINDS: [&str; 3] = [
    contract::SHOWTIME_SAVED,
    contract::PURCHASE_COMPLETED,
    contract::PURCHASE_REFUNDED,
];

/// The delivery log and the subscriptions, on the service's store.
pub struct StoreRegistry(pub Arc<dyn CinemaStore>);

#[async_trait]
impl WebhookRegistry for StoreRegistry {
    async fn target(&self, webhook_id: Uuid) -> Result<Option<Target>, RegistryError> {
        Ok(self.0.webhook(webhook_id).await?.map(|hook| Target {
            url: hook.url,
            secret: hook.secret,
        }))
    }

    async fn record(&self, attempt: &Attempt) -> Result<(), RegistryError> {
        Ok(self.0.record_delivery(attempt).await?)
    }
}

/// The event handler that turns cinema events into deliveries.
pub fn fanout(
    store: Arc<dyn CinemaStore>,
    jobs: Arc<dyn JobQueue>,
    settings: WebhookSettings,
) -> EventHandler {
    Arc::new(move |event| {
        let (store, jobs) = (store.clone(), jobs.clone());
        async move { enqueue_deliveries(store.as_ref(), jobs.as_ref(), settings, event).await }
            .boxed()
    })
}

async fn enqueue_deliveries(
    store: &dyn CinemaStore,
    jobs: &dyn JobQueue,
    settings: WebhookSettings,
    event: Event,
) -> Result<(), JobError> {
    if !DELIVERED_KINDS.contains(&event.kind.as_str()) {
        return Ok(());
    }
    let Some(cinema) = cinema_of(store, &event).await? else {
        return Ok(());
    };
    let hooks = store.webhooks_of(cinema).await.map_err(JobError::retry)?;
    let envelope = Envelope {
        id: event.id,
        kind: event.kind.clone(),
        created_at: event.occurred_at,
        data: event.payload.clone(),
    };
    // A webhook hears what happens after it is registered, not events that
    // were still on their way to this subscriber when it was.
    for hook in hooks
        .into_iter()
        .filter(|h| h.created_at <= event.occurred_at)
    {
        jobs.enqueue_with_id(
            delivery_id(event.id, hook.webhook_id),
            contract::WEBHOOK_QUEUE,
            webhook::job_payload(hook.webhook_id, envelope.clone()),
            settings.job_options(),
        )
        .await
        .map_err(JobError::retry)?;
    }
    Ok(())
}

/// One id per (event, webhook): the same pair always gives the same id.
fn delivery_id(event: Uuid, webhook: Uuid) -> Uuid {
    let mixed = event.as_u128() ^ webhook.as_u128().rotate_left(64);
    Uuid::from_u128(mixed)
}

/// The cinema an event is about: named by a showtime, or by the showtime
/// of a purchase.
async fn cinema_of(store: &dyn CinemaStore, event: &Event) -> Result<Option<Uuid>, JobError> {
    let field = |name: &str| {
        event.payload[name]
            .as_str()
            .and_then(|s| s.parse::<Uuid>().ok())
    };
    if event.kind == contract::SHOWTIME_SAVED {
        return Ok(field("cinema_id"));
    }
    let Some(showtime) = field("showtime_id") else {
        return Err(JobError::fatal(format!(
            "{} without a showtime_id",
            event.kind
        )));
    };
    let Some(doc) = store
        .load(Kind::Showtime, showtime)
        .await
        .map_err(JobError::retry)?
    else {
        return Ok(None);
    };
    let showtime: ShowtimeSaved = serde_json::from_value(doc).map_err(JobError::fatal)?;
    Ok(Some(showtime.cinema_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_ids_are_stable_and_distinct() {
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(delivery_id(a, b), delivery_id(a, b));
        assert_ne!(delivery_id(a, b), delivery_id(a, c));
        assert_ne!(delivery_id(a, b), delivery_id(b, a));
    }
}
