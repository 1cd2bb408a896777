//! Purchases: what a customer asks for, and what they get.
//!
//! A purchase is `held` (its seats are held, the card not yet charged),
//! then `completed` (charged, tickets issued), `declined` (the card was
//! refused, seats released) or `expired` (the hold outlived its deadline,
//! seats released, a charge that may have been captured given back); a
//! completed purchase may be `refunded`.

use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;
use zocalo_contracts::cinema::Ticket;
use zocalo_http::Problem;

use super::{Errors, SeatLabel};

/// At most this many seats in one purchase.
pub const MAX_SEATS: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PurchaseStatus {
    Held,
    Completed,
    Declined,
    Expired,
    Refunded,
}

impl PurchaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Completed => "completed",
            Self::Declined => "declined",
            Self::Expired => "expired",
            Self::Refunded => "refunded",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Held,
            Self::Completed,
            Self::Declined,
            Self::Expired,
            Self::Refunded,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct PurchaseInput {
    /// The seats wanted (`A1`, `C12`); or leave out and give `quantity`.
    pub seats: Option<Vec<String>>,
    /// How many seats: the best free ones are picked.
    pub quantity: Option<i64>,
    /// A card number; only its last four digits and a token are kept.
    pub card: String,
}

/// Which seats a purchase asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeatRequest {
    Seats(Vec<SeatLabel>),
    Quantity(usize),
}

/// A validated purchase request.
#[derive(Debug, Clone)]
pub struct NewPurchase {
    pub purchase_id: Uuid,
    pub showtime_id: Uuid,
    pub customer_id: Uuid,
    pub idempotency_key: String,
    /// Fingerprint of the request, to tell a retry from a different
    /// request reusing the key.
    pub request_hash: String,
    pub seats: SeatRequest,
    pub card_token: String,
    pub card_last4: String,
    pub created_at: DateTime<Utc>,
    pub held_until: DateTime<Utc>,
}

/// What one seat of a purchase costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketPrice {
    pub seat: SeatLabel,
    pub class: &'static str,
    pub price_cents: i64,
}

impl PurchaseInput {
    pub fn validate(
        self,
        showtime_id: Uuid,
        customer_id: Uuid,
        idempotency_key: String,
        hold: chrono::Duration,
    ) -> Result<NewPurchase, Problem> {
        let mut errors = Errors::default();
        let seats = match (self.seats, self.quantity) {
            (Some(seats), None) => Some(SeatRequest::Seats(seat_labels(&mut errors, &seats))),
            (None, Some(quantity)) => {
                let ok = (1..=MAX_SEATS as i64).contains(&quantity);
                errors.check(ok, "quantity", &format!("must be 1 to {MAX_SEATS}"));
                ok.then_some(SeatRequest::Quantity(quantity as usize))
            }
            _ => {
                errors.add("seats", "give either `seats` or `quantity`");
                None
            }
        };
        let card = zocalo_payments::normalize_card(&self.card);
        errors.check(card.is_some(), "card", "is not a valid card number");
        errors.finish()?;
        let (Some(seats), Some(card)) = (seats, card) else {
            return Err(Problem::invalid_field(
                "seats",
                "give either `seats` or `quantity`",
            ));
        };
        let request_hash = request_hash(showtime_id, &seats, &card);
        let now = Utc::now();
        Ok(NewPurchase {
            purchase_id: Uuid::now_v7(),
            showtime_id,
            customer_id,
            idempotency_key,
            request_hash,
            seats,
            card_token: zocalo_payments::tokenize(&card),
            card_last4: zocalo_payments::last4(&card),
            created_at: now,
            held_until: now + hold,
        })
    }
}

fn seat_labels(errors: &mut Errors, seats: &[String]) -> Vec<SeatLabel> {
    errors.check(
        (1..=MAX_SEATS).contains(&seats.len()),
        "seats",
        &format!("must list 1 to {MAX_SEATS} seats"),
    );
    let mut labels: Vec<SeatLabel> = Vec::new();
    for (i, text) in seats.iter().enumerate() {
        match SeatLabel::parse(text) {
            Some(seat) if labels.contains(&seat) => {
                errors.add(format!("seats[{i}]"), format!("`{text}` appears twice"))
            }
            Some(seat) => labels.push(seat),
            None => errors.add(
                format!("seats[{i}]"),
                format!("`{text}` is not a seat label"),
            ),
        }
    }
    labels
}

fn request_hash(showtime: Uuid, seats: &SeatRequest, card: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(showtime.as_bytes());
    match seats {
        SeatRequest::Seats(labels) => {
            for seat in labels {
                hasher.update(seat.to_string().as_bytes());
                hasher.update(b",");
            }
        }
        SeatRequest::Quantity(n) => hasher.update(format!("quantity:{n}").as_bytes()),
    }
    hasher.update(card.as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A purchase as answered to its customer: authoritative, unlike the read
/// models, which may lag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Purchase {
    pub purchase_id: Uuid,
    pub showtime_id: Uuid,
    pub customer_id: Uuid,
    pub status: PurchaseStatus,
    pub seats: Vec<String>,
    #[schema(value_type = Vec<Object>)]
    pub tickets: Vec<Ticket>,
    pub total_cents: i64,
    pub currency: String,
    pub card_last4: String,
    /// The showtime's seat map version this purchase produced (completed)
    /// or its refund produced (refunded).
    pub seat_map_version: Option<i64>,
    pub held_until: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip)]
    pub request_hash: String,
    #[serde(skip)]
    pub card_token: String,
}

/// Letters and digits a door attendant cannot confuse (no 0/O, 1/I/L).
const CODE_ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
const CODE_LENGTH: usize = 10;

/// A ticket's verification code: 10 characters, about 49 bits of chance;
/// the database keeps them unique.
pub fn verification_code() -> String {
    let mut rng = rand::thread_rng();
    (0..CODE_LENGTH)
        .map(|_| char::from(CODE_ALPHABET[rng.gen_range(0..CODE_ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(seats: Option<Vec<&str>>, quantity: Option<i64>, card: &str) -> PurchaseInput {
        PurchaseInput {
            seats: seats.map(|s| s.into_iter().map(String::from).collect()),
            quantity,
            card: card.into(),
        }
    }

    fn validate(input: PurchaseInput) -> Result<NewPurchase, Problem> {
        input.validate(
            Uuid::nil(),
            Uuid::nil(),
            "k".into(),
            chrono::Duration::minutes(5),
        )
    }

    #[test]
    fn seats_or_quantity_and_a_valid_card() {
        let ok = validate(input(Some(vec!["a1", "B2"]), None, "4242 4242 4242 4242")).unwrap();
        assert_eq!(ok.card_last4, "4242");
        assert!(matches!(ok.seats, SeatRequest::Seats(ref s) if s.len() == 2));
        assert!(validate(input(None, Some(3), "4242424242424242")).is_ok());
        for bad in [
            input(Some(vec!["A1"]), Some(1), "4242424242424242"),
            input(None, None, "4242424242424242"),
            input(None, Some(0), "4242424242424242"),
            input(None, Some(-2), "4242424242424242"),
            input(Some(vec![]), None, "4242424242424242"),
            input(Some(vec!["A1", "a1"]), None, "4242424242424242"),
            input(Some(vec!["1A"]), None, "4242424242424242"),
            input(Some(vec!["A1"]), None, "4242424242424241"),
        ] {
            assert_eq!(validate(bad).unwrap_err().status, 422);
        }
    }

    #[test]
    fn the_same_request_has_the_same_fingerprint() {
        let a = validate(input(Some(vec!["A1"]), None, "4242424242424242")).unwrap();
        let b = validate(input(Some(vec!["a1"]), None, "4242-4242-4242-4242")).unwrap();
        let c = validate(input(Some(vec!["A2"]), None, "4242424242424242")).unwrap();
        assert_eq!(a.request_hash, b.request_hash);
        assert_ne!(a.request_hash, c.request_hash);
    }

    #[test]
    fn codes_use_the_unambiguous_alphabet() {
        let code = verification_code();
        assert_eq!(code.len(), CODE_LENGTH);
        assert!(code.bytes().all(|b| CODE_ALPHABET.contains(&b)));
    }
}
