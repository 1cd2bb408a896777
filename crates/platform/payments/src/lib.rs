//! Card payments for every service that sells something: the
//! [`PaymentProcessor`] trait and its [`SimulatedProcessor`], card checks
//! ([`is_valid_card`], [`tokenize`]) and the [`ChargeLedger`] in which the
//! simulator keeps one entry per idempotency key.
//!
//! The ledger lives in the selling service's own database (its store
//! implements [`ChargeLedger`] with the helpers of [`ledger`]), so a charge
//! and the sale it pays for are kept together and a retried charge with the
//! same key never charges twice. It depends on `zocalo-store` only.

pub mod ledger;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use uuid::Uuid;
use zocalo_store::StoreError;

pub use ledger::ChargeLedger;

/// A card number that is always declined.
pub const DECLINING_CARD: &str = "4000000000000002";
const DECLINE_MARK: &str = "tok_decline_";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeOutcome {
    Captured,
    Declined,
}

/// What a charge asks of the processor.
#[derive(Debug, Clone, Copy)]
pub struct Charge<'a> {
    /// The idempotency key: a repeated charge with it returns the first
    /// outcome and charges nothing.
    pub key: Uuid,
    pub amount_cents: i64,
    pub currency: &'a str,
    /// What [`tokenize`] made of the card.
    pub card_token: &'a str,
    pub card_last4: &'a str,
}

#[async_trait]
pub trait PaymentProcessor: Send + Sync + 'static {
    async fn charge(&self, charge: Charge<'_>) -> Result<ChargeOutcome, StoreError>;
    /// Give a captured charge back; `false` when there was nothing captured.
    async fn refund(&self, key: Uuid) -> Result<bool, StoreError>;
}

/// A card processor that answers at once (or after `latency`), declines the
/// [`DECLINING_CARD`] always and other cards at `decline_rate`, and keeps
/// its outcomes in the service's [`ChargeLedger`].
pub struct SimulatedProcessor {
    ledger: Arc<dyn ChargeLedger>,
    decline_rate: f64,
    latency: Duration,
}

impl SimulatedProcessor {
    pub fn new(ledger: Arc<dyn ChargeLedger>, decline_rate: f64, latency: Duration) -> Self {
        Self {
            ledger,
            decline_rate: decline_rate.clamp(0.0, 1.0),
            latency,
        }
    }
}

#[async_trait]
impl PaymentProcessor for SimulatedProcessor {
    async fn charge(&self, charge: Charge<'_>) -> Result<ChargeOutcome, StoreError> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let declined = charge.card_token.starts_with(DECLINE_MARK)
            || rand::thread_rng().gen_bool(self.decline_rate);
        let wanted = if declined {
            ledger::DECLINED
        } else {
            ledger::CAPTURED
        };
        // The ledger keeps the first outcome for a key; a retry reads it back.
        let recorded = self.ledger.record_charge(&charge, wanted).await?;
        metrics::counter!("payments_total", "outcome" => recorded.clone()).increment(1);
        Ok(if recorded == ledger::DECLINED {
            ChargeOutcome::Declined
        } else {
            ChargeOutcome::Captured
        })
    }

    async fn refund(&self, key: Uuid) -> Result<bool, StoreError> {
        self.ledger.refund_charge(key).await
    }
}

/// Luhn-valid, 12 to 19 digits.
pub fn is_valid_card(number: &str) -> bool {
    if !(12..=19).contains(&number.len()) || !number.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = number
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let digit = u32::from(b - b'0');
            if i % 2 == 1 {
                let doubled = digit * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                digit
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// A card number as typed (spaces and dashes allowed), reduced to its
/// digits when it is a valid card.
pub fn normalize_card(typed: &str) -> Option<String> {
    let digits: String = typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();
    is_valid_card(&digits).then_some(digits)
}

/// The last four digits, which is all of a card a service may keep besides
/// its token.
pub fn last4(card: &str) -> String {
    card[card.len().saturating_sub(4)..].to_owned()
}

/// What a service keeps instead of the card number.
pub fn tokenize(card: &str) -> String {
    let random: u64 = rand::thread_rng().r#gen();
    if card == DECLINING_CARD {
        format!("{DECLINE_MARK}{random:016x}")
    } else {
        format!("tok_{random:016x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_is_checked() {
        assert!(is_valid_card("4242424242424242"));
        assert!(is_valid_card(DECLINING_CARD));
        assert!(!is_valid_card("4242424242424241"));
        assert!(!is_valid_card("4242"));
        assert!(!is_valid_card("42424242424242x2"));
    }

    #[test]
    fn typed_cards_are_normalized() {
        assert_eq!(
            normalize_card("4242 4242-4242 4242").as_deref(),
            Some("4242424242424242")
        );
        assert_eq!(normalize_card("4242 4242"), None);
        assert_eq!(last4("4242424242424242"), "4242");
    }

    #[test]
    fn the_declining_card_is_marked_in_its_token() {
        assert!(tokenize(DECLINING_CARD).starts_with(DECLINE_MARK));
        assert!(!tokenize("4242424242424242").starts_with(DECLINE_MARK));
    }
}
