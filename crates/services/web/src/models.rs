//! The JSON the pages read from the APIs, with the few derived values the
//! templates show. Only the fields a page uses are declared; the APIs stay
//! the source of truth for the rest.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::views;

#[derive(Debug, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<serde_json::Value>,
}

impl<T> Page<T> {
    /// The cursor of the next page as a query value, if there is one.
    pub fn next(&self) -> Option<String> {
        match self.next_cursor.as_ref()? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub roles: Vec<String>,
    pub created_at: DateTime<Utc>,
}

impl User {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    pub fn roles_text(&self) -> String {
        if self.roles.is_empty() {
            "none".into()
        } else {
            self.roles.join(", ")
        }
    }

    pub fn since(&self) -> String {
        views::when(&self.created_at)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Camera {
    pub id: Uuid,
    pub brand: String,
    pub model: String,
    pub sensor: String,
    pub megapixels: f64,
    pub released: Option<i32>,
    #[serde(default)]
    pub review_count: Option<i64>,
    #[serde(default)]
    pub average_rating: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Lens {
    pub id: Uuid,
    pub brand: String,
    pub model: String,
    pub mount: String,
    pub focal_min_mm: f64,
    pub focal_max_mm: f64,
    pub max_aperture: f64,
    #[serde(default)]
    pub review_count: Option<i64>,
    #[serde(default)]
    pub average_rating: Option<f64>,
}

impl Camera {
    pub fn released_text(&self) -> String {
        self.released.map_or("—".into(), |y| y.to_string())
    }
}

impl Lens {
    pub fn focal_text(&self) -> String {
        if self.focal_min_mm == self.focal_max_mm {
            format!("{} mm", self.focal_min_mm)
        } else {
            format!("{}–{} mm", self.focal_min_mm, self.focal_max_mm)
        }
    }
}

/// Review count and average, as compared.
pub fn rating_text(count: Option<i64>, average: Option<f64>) -> String {
    match (count.unwrap_or(0), average) {
        (0, _) | (_, None) => "no reviews yet".into(),
        (1, Some(avg)) => format!("{avg:.1} / 5 (1 review)"),
        (n, Some(avg)) => format!("{avg:.1} / 5 ({n} reviews)"),
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Review {
    pub id: Uuid,
    pub title: String,
    pub content: String,
    pub rating: i64,
    pub camera_id: Option<Uuid>,
    pub lens_id: Option<Uuid>,
    pub target_brand: String,
    pub target_model: String,
    pub editor_id: Uuid,
    pub editor_name: String,
    pub created_at: DateTime<Utc>,
}

impl Review {
    pub fn stars(&self) -> String {
        views::stars(self.rating)
    }

    pub fn paragraphs(&self) -> Vec<String> {
        views::paragraphs(&self.content)
    }

    pub fn excerpt(&self) -> String {
        let first = self.paragraphs().into_iter().next().unwrap_or_default();
        match first.char_indices().nth(180) {
            Some((cut, _)) => format!("{}…", &first[..cut]),
            None => first,
        }
    }

    pub fn target(&self) -> String {
        format!("{} {}", self.target_brand, self.target_model)
    }

    /// The camera or lens page of the reviewed item.
    pub fn target_href(&self) -> String {
        match (self.camera_id, self.lens_id) {
            (Some(id), _) => format!("/cameras/{id}"),
            (_, Some(id)) => format!("/lenses/{id}"),
            _ => "/reviews".into(),
        }
    }

    pub fn date(&self) -> String {
        self.created_at.format("%Y-%m-%d").to_string()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Money {
    pub amount: String,
    pub currency: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Book {
    pub id: Uuid,
    pub seller_id: Uuid,
    pub title: String,
    pub author: String,
    pub isbn: String,
    pub description: String,
    pub condition: String,
    pub price: Money,
    pub stock: i32,
}

impl Book {
    pub fn price_text(&self) -> String {
        format!("{} {}", self.price.amount, self.price.currency)
    }

    pub fn condition_text(&self) -> &'static str {
        condition_label(&self.condition)
    }
}

pub const CONDITIONS: [(&str, &str); 4] = [
    ("new", "New"),
    ("like_new", "Like new"),
    ("good", "Good"),
    ("acceptable", "Acceptable"),
];

pub fn condition_label(condition: &str) -> &'static str {
    CONDITIONS
        .iter()
        .find(|(value, _)| *value == condition)
        .map_or("Unknown", |(_, label)| label)
}

#[derive(Debug, Clone, Deserialize)]
pub struct Line {
    pub book_id: Uuid,
    pub quantity: u32,
    pub title: Option<String>,
    pub unit_price_cents: Option<i64>,
    pub currency: Option<String>,
}

impl Line {
    pub fn title_text(&self) -> String {
        self.title
            .clone()
            .unwrap_or_else(|| "(being priced)".into())
    }

    pub fn price_text(&self) -> String {
        match (self.unit_price_cents, &self.currency) {
            (Some(cents), Some(currency)) => views::money(cents, currency),
            _ => "—".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Shipment {
    pub tracking_number: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Order {
    pub id: Uuid,
    pub status: String,
    pub failure_reason: Option<String>,
    pub shipping_address: String,
    pub provider: String,
    pub card_last4: String,
    pub total_cents: Option<i64>,
    pub currency: Option<String>,
    pub items: Vec<Line>,
    pub shipment: Option<Shipment>,
    pub created_at: DateTime<Utc>,
}

impl Order {
    pub fn is_final(&self) -> bool {
        matches!(self.status.as_str(), "delivered" | "cancelled" | "failed")
    }

    pub fn status_text(&self) -> String {
        status_label(&self.status, self.failure_reason.as_deref())
    }

    pub fn total_text(&self) -> String {
        match (self.total_cents, &self.currency) {
            (Some(cents), Some(currency)) => views::money(cents, currency),
            _ => "being priced".into(),
        }
    }

    pub fn placed(&self) -> String {
        views::when(&self.created_at)
    }

    pub fn can_cancel(&self) -> bool {
        matches!(self.status.as_str(), "pending" | "reserved" | "paid")
    }
}

/// An order status in words (the live status script shows the same).
pub fn status_label(status: &str, reason: Option<&str>) -> String {
    match status {
        "pending" => "Received, checking stock".into(),
        "reserved" => "Books reserved, charging your card".into(),
        "paid" => "Paid, preparing the parcel".into(),
        "shipped" => "Shipped, on its way".into(),
        "delivered" => "Delivered".into(),
        "cancelled" => "Cancelled".into(),
        "failed" => format!("Failed: {}", reason.unwrap_or("unknown reason")),
        other => other.to_owned(),
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Sale {
    pub book_id: Uuid,
    pub title: String,
    pub quantity: u32,
    pub unit_price_cents: i64,
    pub currency: String,
    pub paid_at: DateTime<Utc>,
}

impl Sale {
    pub fn price_text(&self) -> String {
        views::money(self.unit_price_cents, &self.currency)
    }

    pub fn paid(&self) -> String {
        views::when(&self.paid_at)
    }
}
