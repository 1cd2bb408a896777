//! The purchase saga: the job handlers that carry an order from `pending`
//! to `delivered`, or compensate it.
//!
//! Each run of the `orders.process` job looks at where the order stands and
//! takes the next step, until there is none left:
//!
//! | order | reservation | step |
//! |---|---|---|
//! | pending | none | reserve stock in the catalog → reserved/held, or failed |
//! | reserved | held | charge the card → paid, or failed (declined) |
//! | paid | held | commit the reservation → committed (expired: refund, failed) |
//! | paid | committed | create the shipment (once), schedule shipping |
//! | failed/cancelled | held | release the reservation → released |
//! | cancelled | committed | refund, return the sold copies → released |
//! | cancelled | any | refund a captured charge |
//!
//! (On the order, `released` means the copies are back on the shelf, whether
//! a hold was released or a sale returned.)
//!
//! Every step is idempotent — the catalog keys reservations by order id, the
//! payment ledger keys charges by order id, state changes are conditional —
//! so a worker that dies anywhere leaves a job that the next worker finishes
//! with the same result.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;
use zocalo_bus::outbox::Message;
use zocalo_bus::{Event, JobError, JobOptions};
use zocalo_contracts::orders::{self as contract, OrderChanged, OrderJob, OrderPaid, SoldItem};

use crate::catalog::{CatalogClient, Committed, Reserved, Returned};
use crate::domain::{Order, Provider};
use crate::payment::{Charge, ChargeOutcome, PaymentProcessor};
use crate::store::OrdersStore;

/// Enough for every step of the table above plus a margin.
const MAX_STEPS: usize = 8;

pub struct Saga {
    pub store: Arc<dyn OrdersStore>,
    pub catalog: CatalogClient,
    pub payments: Arc<dyn PaymentProcessor>,
    pub reservation_ttl_secs: u32,
    pub shipping_step: Duration,
}

fn retry(error: impl std::fmt::Display) -> JobError {
    JobError::Retry(error.to_string())
}

/// The job that (re)starts the saga of an order.
pub fn process_job(order_id: Uuid) -> Message {
    job(contract::PROCESS_QUEUE, order_id, Duration::ZERO)
}

fn job(queue: &str, order_id: Uuid, delay: Duration) -> Message {
    let payload = serde_json::to_value(OrderJob { order_id }).unwrap_or_default();
    Message::job(queue, payload, JobOptions::delayed(delay))
}

fn event(kind: &str, payload: serde_json::Value) -> Message {
    Message::Event(Event {
        id: Uuid::now_v7(),
        topic: contract::TOPIC.to_owned(),
        kind: kind.to_owned(),
        payload,
        occurred_at: Utc::now(),
        traceparent: zocalo_telemetry::trace::current_traceparent(),
    })
}

pub fn changed_event(order: &Order, status: &str, reason: Option<String>) -> Message {
    let kind = match status {
        "failed" => contract::ORDER_FAILED,
        "cancelled" => contract::ORDER_CANCELLED,
        "shipped" => contract::ORDER_SHIPPED,
        _ => contract::ORDER_DELIVERED,
    };
    let payload = OrderChanged {
        order_id: order.id,
        buyer_id: order.buyer_id,
        status: status.to_owned(),
        reason,
        at: Utc::now(),
    };
    event(kind, serde_json::to_value(payload).unwrap_or_default())
}

fn paid_event(order: &Order) -> Message {
    let items = order
        .items
        .iter()
        .map(|line| SoldItem {
            book_id: line.book_id,
            seller_id: line.seller_id.unwrap_or_default(),
            title: line.title.clone().unwrap_or_default(),
            quantity: line.quantity,
            unit_price_cents: line.unit_price_cents.unwrap_or_default(),
            currency: line.currency.clone().unwrap_or_default(),
        })
        .collect();
    let payload = OrderPaid {
        order_id: order.id,
        buyer_id: order.buyer_id,
        items,
        total_cents: order.total_cents.unwrap_or_default(),
        currency: order.currency.clone().unwrap_or_default(),
        paid_at: Utc::now(),
    };
    event(
        contract::ORDER_PAID,
        serde_json::to_value(payload).unwrap_or_default(),
    )
}

impl Saga {
    /// Handle one `orders.process` job.
    pub async fn process(&self, order_id: Uuid) -> Result<(), JobError> {
        for _ in 0..MAX_STEPS {
            let order = self
                .store
                .order(order_id)
                .await
                .map_err(retry)?
                .ok_or_else(|| JobError::Fatal(format!("order {order_id} does not exist")))?;
            if !self.step(&order).await? {
                return Ok(());
            }
        }
        Err(JobError::Retry("the saga did not settle".into()))
    }

    /// Take the next step; `false` when there is nothing left to do.
    async fn step(&self, order: &Order) -> Result<bool, JobError> {
        match (order.status.as_str(), order.reservation.as_str()) {
            ("pending", _) => self.reserve(order).await,
            ("reserved", "held") => self.charge(order).await,
            ("paid", "held") => self.commit(order).await,
            ("paid", "committed") if order.shipment.is_none() => self.ship(order).await,
            ("failed" | "cancelled", "held") => self.release(order).await,
            ("cancelled", "committed") => self.return_stock(order).await,
            ("cancelled", _) => self.refund(order).await,
            _ => Ok(false),
        }
    }

    async fn reserve(&self, order: &Order) -> Result<bool, JobError> {
        let lines: Vec<_> = order
            .items
            .iter()
            .map(|l| crate::domain::LineRequest {
                book_id: l.book_id,
                quantity: l.quantity,
            })
            .collect();
        match self
            .catalog
            .reserve(order.id, &lines, self.reservation_ttl_secs)
            .await
            .map_err(retry)?
        {
            Reserved::Held(priced) => {
                let currency = priced
                    .first()
                    .and_then(|l| l.currency.clone())
                    .unwrap_or_default();
                if priced
                    .iter()
                    .any(|l| l.currency.as_deref() != Some(currency.as_str()))
                {
                    // Mixed currencies cannot be charged as one amount.
                    self.fail(
                        order,
                        &["pending"],
                        "books are priced in different currencies",
                    )
                    .await?;
                    self.catalog.release(order.id).await.map_err(retry)?;
                    return Ok(true);
                }
                let total = priced
                    .iter()
                    .map(|l| l.unit_price_cents.unwrap_or_default() * i64::from(l.quantity))
                    .sum();
                let marked = self
                    .store
                    .mark_reserved(order.id, priced, total, &currency)
                    .await
                    .map_err(retry)?;
                if !marked {
                    // Cancelled while we were reserving: give the stock back.
                    self.catalog.release(order.id).await.map_err(retry)?;
                }
                Ok(marked)
            }
            Reserved::Refused(reason) => self.fail(order, &["pending"], &reason).await,
        }
    }

    async fn charge(&self, order: &Order) -> Result<bool, JobError> {
        let amount = order.total_cents.unwrap_or_default();
        let currency = order.currency.clone().unwrap_or_default();
        let outcome = self
            .payments
            .charge(Charge {
                key: order.id,
                amount_cents: amount,
                currency: &currency,
                card_token: &order.card_token,
                card_last4: &order.card_last4,
            })
            .await
            .map_err(retry)?;
        match outcome {
            ChargeOutcome::Captured => self
                .store
                .transition(
                    order.id,
                    &["reserved"],
                    "paid",
                    None,
                    vec![paid_event(order)],
                )
                .await
                .map_err(retry),
            ChargeOutcome::Declined => self.fail(order, &["reserved"], "payment declined").await,
        }
    }

    async fn commit(&self, order: &Order) -> Result<bool, JobError> {
        match self.catalog.commit(order.id).await.map_err(retry)? {
            Committed::Committed => self
                .store
                .set_reservation(order.id, "held", "committed")
                .await
                .map_err(retry),
            Committed::Gone => {
                // The hold lapsed before we committed it: the stock went back
                // to the shelf, so the money goes back to the buyer.
                self.payments.refund(order.id).await.map_err(retry)?;
                self.store
                    .set_reservation(order.id, "held", "released")
                    .await
                    .map_err(retry)?;
                self.fail(
                    order,
                    &["paid"],
                    "reservation expired before the order was confirmed",
                )
                .await
            }
        }
    }

    async fn ship(&self, order: &Order) -> Result<bool, JobError> {
        let provider = Provider::parse(&order.provider).unwrap_or(Provider::Dhl);
        let next = job(contract::SHIPPING_QUEUE, order.id, self.shipping_step);
        self.store
            .create_shipment(
                order.id,
                provider.as_str(),
                &provider.tracking_number(order.id),
                vec![next],
            )
            .await
            .map_err(retry)?;
        Ok(false)
    }

    async fn release(&self, order: &Order) -> Result<bool, JobError> {
        let released = self.catalog.release(order.id).await.map_err(retry)?;
        let now = if released { "released" } else { "committed" };
        self.store
            .set_reservation(order.id, "held", now)
            .await
            .map_err(retry)
    }

    /// A paid order was cancelled after its copies were sold: give the
    /// money back first (it does not depend on the catalog being up), then
    /// the copies. A failure is retried with the job until both are done;
    /// both calls are idempotent, so repeating them changes nothing.
    async fn return_stock(&self, order: &Order) -> Result<bool, JobError> {
        self.payments.refund(order.id).await.map_err(retry)?;
        match self.catalog.return_stock(order.id).await.map_err(retry)? {
            Returned::Returned => self
                .store
                .set_reservation(order.id, "committed", "released")
                .await
                .map_err(retry),
            Returned::NotSold(reason) => Err(JobError::Fatal(format!(
                "order {} is recorded as sold but the catalog cannot return it: {reason}",
                order.id
            ))),
        }
    }

    async fn refund(&self, order: &Order) -> Result<bool, JobError> {
        self.payments.refund(order.id).await.map_err(retry)?;
        Ok(false)
    }

    async fn fail(&self, order: &Order, from: &[&str], reason: &str) -> Result<bool, JobError> {
        let message = changed_event(order, "failed", Some(reason.to_owned()));
        self.store
            .transition(
                order.id,
                from,
                "failed",
                Some(reason.to_owned()),
                vec![message],
            )
            .await
            .map_err(retry)
    }

    /// Handle one `orders.shipping` job: one step along the route, and the
    /// next job if the parcel has not arrived.
    pub async fn advance_shipping(&self, order_id: Uuid) -> Result<(), JobError> {
        let order = self
            .store
            .order(order_id)
            .await
            .map_err(retry)?
            .ok_or_else(|| JobError::Fatal(format!("order {order_id} does not exist")))?;
        let step = self.shipping_step;
        let messages = Box::new(move |status: &str| {
            let mut messages = vec![changed_event(
                &order,
                if status == "delivered" {
                    "delivered"
                } else {
                    "shipped"
                },
                None,
            )];
            if status != "delivered" {
                messages.push(job(contract::SHIPPING_QUEUE, order.id, step));
            }
            messages
        });
        self.store
            .advance_shipment(order_id, Utc::now(), messages)
            .await
            .map_err(retry)?;
        Ok(())
    }
}
