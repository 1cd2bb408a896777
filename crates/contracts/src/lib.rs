//! Messages that cross service boundaries: the events services publish and
//! the jobs they enqueue, with their topic and queue names. Services depend
//! on this crate, never on each other, so a change here is a change of the
//! contract between them. It depends on nothing of ours.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Topics and event kinds of the orders service.
pub mod orders {
    use super::*;

    pub const TOPIC: &str = "orders";

    pub const ORDER_PAID: &str = "order.paid";
    pub const ORDER_FAILED: &str = "order.failed";
    pub const ORDER_CANCELLED: &str = "order.cancelled";
    pub const ORDER_SHIPPED: &str = "order.shipped";
    pub const ORDER_DELIVERED: &str = "order.delivered";

    /// Jobs of the orders service (its own queues).
    pub const PROCESS_QUEUE: &str = "orders.process";
    pub const SHIPPING_QUEUE: &str = "orders.shipping";

    /// One line of a paid order, as sellers see it.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct SoldItem {
        pub book_id: Uuid,
        pub seller_id: Uuid,
        pub title: String,
        pub quantity: u32,
        pub unit_price_cents: i64,
        pub currency: String,
    }

    /// Payload of `order.paid`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct OrderPaid {
        pub order_id: Uuid,
        pub buyer_id: Uuid,
        pub items: Vec<SoldItem>,
        pub total_cents: i64,
        pub currency: String,
        pub paid_at: DateTime<Utc>,
    }

    /// Payload of every other order event.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct OrderChanged {
        pub order_id: Uuid,
        pub buyer_id: Uuid,
        pub status: String,
        pub reason: Option<String>,
        pub at: DateTime<Utc>,
    }

    /// Payload of the `orders.process` and `orders.shipping` jobs.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    pub struct OrderJob {
        pub order_id: Uuid,
    }
}

#[cfg(test)]
mod tests {
    use super::orders::*;

    #[test]
    fn jobs_round_trip_as_json() {
        let job = OrderJob {
            order_id: uuid::Uuid::now_v7(),
        };
        let value = serde_json::to_value(job).unwrap();
        assert_eq!(serde_json::from_value::<OrderJob>(value).unwrap(), job);
    }
}
