//! Messages that cross service boundaries: the events services publish and
//! the jobs they enqueue, with their topic and queue names. Services depend
//! on this crate, never on each other, so a change here is a change of the
//! contract between them. It depends on nothing of ours.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub mod cinema;

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

/// Jobs of the media service (video tasks).
pub mod media {
    use super::*;

    /// Process one uploaded video: probe, convert, store the result.
    pub const PROCESS_QUEUE: &str = "media.process";

    /// Payload of the `media.process` job.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ProcessVideo {
        pub task_id: Uuid,
    }
}

#[cfg(test)]
mod tests {
    use super::cinema::{SeatMapState, ShowtimeSaved};
    use super::orders::*;

    #[test]
    fn jobs_round_trip_as_json() {
        let job = OrderJob {
            order_id: uuid::Uuid::now_v7(),
        };
        let value = serde_json::to_value(job).unwrap();
        assert_eq!(serde_json::from_value::<OrderJob>(value).unwrap(), job);
    }

    #[test]
    fn cinema_events_keep_their_field_names() {
        let event = ShowtimeSaved {
            showtime_id: uuid::Uuid::now_v7(),
            version: 3,
            movie_id: uuid::Uuid::now_v7(),
            room_id: uuid::Uuid::now_v7(),
            cinema_id: uuid::Uuid::now_v7(),
            chain_id: uuid::Uuid::now_v7(),
            starts_at: chrono::Utc::now(),
            ends_at: chrono::Utc::now(),
            prices: vec![],
            currency: "EUR".into(),
            status: super::cinema::SCHEDULED.into(),
        };
        let value = serde_json::to_value(&event).unwrap();
        assert_eq!(value["version"], 3);
        assert_eq!(value["status"], "scheduled");
        assert_eq!(
            serde_json::from_value::<ShowtimeSaved>(value).unwrap(),
            event
        );
        let seats: SeatMapState = serde_json::from_str(r#"{"version":2,"sold":["A1"]}"#).unwrap();
        assert_eq!(seats.sold, ["A1"]);
    }
}
