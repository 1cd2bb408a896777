//! The simulated card processor, behind a trait so a real one can replace it.
//!
//! Charges are idempotent by key (the saga uses the order id): the processor
//! keeps its own ledger, and a repeated charge with the same key returns the
//! first outcome without charging again. Declines happen at a configurable
//! rate, and the test card `4000 0000 0000 0002` always declines.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use uuid::Uuid;
use zocalo_store::StoreError;

use crate::store::OrdersStore;

/// A card number that is always declined.
pub const DECLINING_CARD: &str = "4000000000000002";
const DECLINE_MARK: &str = "tok_decline_";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeOutcome {
    Captured,
    Declined,
}

#[async_trait]
pub trait PaymentProcessor: Send + Sync + 'static {
    async fn charge(
        &self,
        key: Uuid,
        amount_cents: i64,
        currency: &str,
        card_token: &str,
        card_last4: &str,
    ) -> Result<ChargeOutcome, StoreError>;
    /// Give a captured charge back; `false` when there was nothing captured.
    async fn refund(&self, key: Uuid) -> Result<bool, StoreError>;
}

pub struct SimulatedProcessor {
    store: Arc<dyn OrdersStore>,
    decline_rate: f64,
    latency: Duration,
}

impl SimulatedProcessor {
    pub fn new(store: Arc<dyn OrdersStore>, decline_rate: f64, latency: Duration) -> Self {
        Self {
            store,
            decline_rate: decline_rate.clamp(0.0, 1.0),
            latency,
        }
    }
}

#[async_trait]
impl PaymentProcessor for SimulatedProcessor {
    async fn charge(
        &self,
        key: Uuid,
        amount_cents: i64,
        currency: &str,
        card_token: &str,
        card_last4: &str,
    ) -> Result<ChargeOutcome, StoreError> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let declined =
            card_token.starts_with(DECLINE_MARK) || rand::thread_rng().gen_bool(self.decline_rate);
        let wanted = if declined { "declined" } else { "captured" };
        // The ledger keeps the first outcome for a key; a retry reads it back.
        let recorded = self
            .store
            .record_charge(key, amount_cents, currency, card_last4, wanted)
            .await?;
        metrics::counter!("payments_total", "outcome" => recorded.clone()).increment(1);
        Ok(if recorded == "declined" {
            ChargeOutcome::Declined
        } else {
            ChargeOutcome::Captured
        })
    }

    async fn refund(&self, key: Uuid) -> Result<bool, StoreError> {
        self.store.refund_charge(key).await
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

/// What the order keeps instead of the card number.
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
    fn the_declining_card_is_marked_in_its_token() {
        assert!(tokenize(DECLINING_CARD).starts_with(DECLINE_MARK));
        assert!(!tokenize("4242424242424242").starts_with(DECLINE_MARK));
    }
}
