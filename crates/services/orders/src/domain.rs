//! Orders, their states and the input that creates them, validated once.
//!
//! An order moves `pending → reserved → paid → shipped → delivered`, or ends
//! `failed` (with a reason) or `cancelled`. Separately it tracks what it
//! holds in the catalog (`none → held → committed | released`), so that
//! compensation knows what there is to undo. `released` means the copies
//! are back in stock: a hold released, or a sale returned after a paid
//! order was cancelled (`committed → released`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;
use zocalo_http::{FieldError, Problem};

pub const MAX_ITEMS: usize = 50;
pub const MAX_QUANTITY: u32 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Dhl,
    Fedex,
    Envia,
    Servientrega,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Dhl => "dhl",
            Provider::Fedex => "fedex",
            Provider::Envia => "envia",
            Provider::Servientrega => "servientrega",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "dhl" => Some(Provider::Dhl),
            "fedex" => Some(Provider::Fedex),
            "envia" => Some(Provider::Envia),
            "servientrega" => Some(Provider::Servientrega),
            _ => None,
        }
    }

    /// Tracking numbers look like the carrier's own.
    pub fn tracking_number(self, order: Uuid) -> String {
        let digits = order.as_u128() % 10_000_000_000;
        match self {
            Provider::Dhl => format!("JD{digits:010}"),
            Provider::Fedex => format!("FX{digits:010}"),
            Provider::Envia => format!("EN{digits:010}"),
            Provider::Servientrega => format!("SV{digits:010}"),
        }
    }
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ItemInput {
    pub book_id: Uuid,
    pub quantity: i64,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct OrderInput {
    pub items: Vec<ItemInput>,
    pub shipping_address: String,
    pub provider: String,
    /// A card number; only its last four digits and a token are kept.
    pub card: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineRequest {
    pub book_id: Uuid,
    pub quantity: u32,
}

/// A validated order request.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub id: Uuid,
    pub buyer_id: Uuid,
    pub lines: Vec<LineRequest>,
    pub shipping_address: String,
    pub provider: Provider,
    pub card_token: String,
    pub card_last4: String,
    pub created_at: DateTime<Utc>,
    /// Fingerprint of the request, to tell a retry from a different request
    /// that reuses the same idempotency key.
    pub request_hash: String,
}

impl OrderInput {
    pub fn validate(self, buyer_id: Uuid) -> Result<NewOrder, Problem> {
        let mut errors = Vec::new();
        let mut fail = |field: &str, message: &str| {
            errors.push(FieldError {
                field: field.into(),
                message: message.into(),
            })
        };
        if self.items.is_empty() || self.items.len() > MAX_ITEMS {
            fail("items", &format!("must list 1 to {MAX_ITEMS} books"));
        }
        let mut lines: Vec<LineRequest> = Vec::new();
        for (i, item) in self.items.iter().enumerate() {
            if !(1..=i64::from(MAX_QUANTITY)).contains(&item.quantity) {
                fail(
                    &format!("items[{i}].quantity"),
                    &format!("must be 1 to {MAX_QUANTITY}"),
                );
            } else if lines.iter().any(|l| l.book_id == item.book_id) {
                fail(
                    &format!("items[{i}].book_id"),
                    "appears twice; order a larger quantity instead",
                );
            } else {
                lines.push(LineRequest {
                    book_id: item.book_id,
                    quantity: item.quantity as u32,
                });
            }
        }
        let address = self.shipping_address.trim().to_owned();
        if address.chars().count() < 5 || address.chars().count() > 500 {
            fail("shipping_address", "must have 5 to 500 characters");
        }
        let provider = Provider::parse(&self.provider);
        if provider.is_none() {
            fail("provider", "must be one of dhl, fedex, envia, servientrega");
        }
        let card = crate::payment::normalize_card(&self.card);
        if card.is_none() {
            fail("card", "is not a valid card number");
        }
        let (Some(provider), Some(card), true) = (provider, card, errors.is_empty()) else {
            return Err(Problem::invalid_fields(errors));
        };
        let request_hash = request_hash(&lines, &address, provider, &card);
        Ok(NewOrder {
            id: Uuid::now_v7(),
            buyer_id,
            lines,
            shipping_address: address,
            provider,
            card_token: crate::payment::tokenize(&card),
            card_last4: crate::payment::last4(&card),
            created_at: Utc::now(),
            request_hash,
        })
    }
}

fn request_hash(lines: &[LineRequest], address: &str, provider: Provider, card: &str) -> String {
    let mut hasher = Sha256::new();
    for line in lines {
        hasher.update(line.book_id.as_bytes());
        hasher.update(line.quantity.to_le_bytes());
    }
    hasher.update(address.as_bytes());
    hasher.update(provider.as_str().as_bytes());
    hasher.update(card.as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An order line once the catalog has priced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Line {
    pub book_id: Uuid,
    pub quantity: u32,
    pub seller_id: Option<Uuid>,
    pub title: Option<String>,
    pub unit_price_cents: Option<i64>,
    pub currency: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Shipment {
    pub provider: String,
    pub tracking_number: String,
    pub status: String,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Order {
    pub id: Uuid,
    pub buyer_id: Uuid,
    pub status: String,
    /// What the order holds in the catalog: none, held, committed, released
    /// (the copies are back in stock).
    pub reservation: String,
    pub failure_reason: Option<String>,
    pub shipping_address: String,
    pub provider: String,
    pub card_last4: String,
    #[serde(skip)]
    pub card_token: String,
    pub total_cents: Option<i64>,
    pub currency: Option<String>,
    pub items: Vec<Line>,
    pub shipment: Option<Shipment>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Order {
    pub fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "delivered" | "cancelled" | "failed")
    }
}

/// A line of a seller's sales, projected from `order.paid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Sale {
    pub order_id: Uuid,
    pub book_id: Uuid,
    pub buyer_id: Uuid,
    pub title: String,
    pub quantity: u32,
    pub unit_price_cents: i64,
    pub currency: String,
    pub paid_at: DateTime<Utc>,
}
