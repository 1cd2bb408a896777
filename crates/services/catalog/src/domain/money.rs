//! Prices as integer minor units. A float cannot hold 0.10 exactly, so a
//! price never becomes one: it is parsed from a decimal string, kept as
//! cents (`i64`) with its currency, and printed back from the integer.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// 1,000,000.00 in minor units: the most a listing may cost.
pub const MAX_PRICE_CENTS: i64 = 100_000_000;

/// Enough integer digits for any filter bound without overflowing `i64`
/// once multiplied by 100.
const MAX_INTEGER_DIGITS: usize = 12;

/// A decimal string (`"12"`, `"12.5"`, `"12.50"`) as minor units. No sign,
/// no exponent, no spaces, at most two fraction digits.
pub fn parse_amount(text: &str) -> Result<i64, &'static str> {
    const SHAPE: &str = "must be a decimal string with at most 2 fraction digits, like \"12.50\"";
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || !all_digits(whole)
        || !all_digits(fraction)
        || fraction.len() > 2
        || (text.contains('.') && fraction.is_empty())
    {
        return Err(SHAPE);
    }
    let significant = whole.trim_start_matches('0');
    if significant.len() > MAX_INTEGER_DIGITS {
        return Err("is too large");
    }
    let digits = |s: &str| s.bytes().fold(0i64, |n, b| n * 10 + i64::from(b - b'0'));
    let cents = match fraction.len() {
        0 => 0,
        1 => digits(fraction) * 10,
        _ => digits(fraction),
    };
    Ok(digits(significant) * 100 + cents)
}

/// Renders minor units as `"12.50"`.
fn format_amount(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// An ISO 4217-shaped code: three uppercase ASCII letters. Which codes
/// exist is not checked; the catalog only needs them to compare equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Currency(String);

impl Currency {
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        if text.len() == 3 && text.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Self(text.to_owned()))
        } else {
            Err("must be three uppercase letters, like \"USD\"")
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A listing price: more than zero, at most [`MAX_PRICE_CENTS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "Money", try_from = "Money")]
pub struct Price {
    cents: i64,
    currency: Currency,
}

impl Price {
    pub fn new(cents: i64, currency: Currency) -> Result<Self, &'static str> {
        if cents <= 0 {
            Err("must be more than 0")
        } else if cents > MAX_PRICE_CENTS {
            Err("must be at most 1000000.00")
        } else {
            Ok(Self { cents, currency })
        }
    }

    /// A price as the database holds it; its constraints already checked it,
    /// so a bad row is reported rather than trusted.
    pub fn from_stored(cents: i64, currency: &str) -> Result<Self, String> {
        let currency = Currency::parse(currency).map_err(|e| format!("stored currency {e}"))?;
        Self::new(cents, currency).map_err(|e| format!("stored price {e}"))
    }

    pub fn cents(&self) -> i64 {
        self.cents
    }

    pub fn currency(&self) -> &str {
        self.currency.as_str()
    }

    pub fn amount(&self) -> String {
        format_amount(self.cents)
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount(), self.currency())
    }
}

/// The wire form of a price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Money {
    /// Decimal string with two fraction digits, e.g. `"12.50"`.
    #[schema(example = "12.50")]
    pub amount: String,
    /// Three uppercase letters, e.g. `"USD"`.
    #[schema(example = "USD")]
    pub currency: String,
}

impl From<Price> for Money {
    fn from(price: Price) -> Self {
        Money {
            amount: price.amount(),
            currency: price.currency.0,
        }
    }
}

impl TryFrom<Money> for Price {
    type Error = &'static str;

    fn try_from(money: Money) -> Result<Self, Self::Error> {
        Price::new(
            parse_amount(&money.amount)?,
            Currency::parse(&money.currency)?,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_to_cents() {
        assert_eq!(parse_amount("12.50"), Ok(1250));
        assert_eq!(parse_amount("12.5"), Ok(1250));
        assert_eq!(parse_amount("12"), Ok(1200));
        assert_eq!(parse_amount("0.07"), Ok(7));
        assert_eq!(parse_amount("0"), Ok(0));
        assert_eq!(parse_amount("007.10"), Ok(710));
        assert_eq!(parse_amount("1000000.00"), Ok(MAX_PRICE_CENTS));
    }

    #[test]
    fn malformed_amounts_are_refused() {
        for bad in [
            "1.234", "-1", "+1", "1e3", ".5", "5.", "", " 1", "1 ", "1,50", "NaN", "1.2.3", "١٢",
            "0x10",
        ] {
            assert!(parse_amount(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(parse_amount("9999999999999"), Err("is too large"));
        assert_eq!(parse_amount(&"9".repeat(40)), Err("is too large"));
    }

    #[test]
    fn prices_round_trip_through_their_string_form() {
        let usd = Currency::parse("USD").unwrap();
        let price = Price::new(1250, usd.clone()).unwrap();
        assert_eq!(price.amount(), "12.50");
        assert_eq!(Price::new(5, usd.clone()).unwrap().amount(), "0.05");
        let json = serde_json::to_value(&price).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"amount": "12.50", "currency": "USD"})
        );
        let back: Price = serde_json::from_value(json).unwrap();
        assert_eq!(back, price);
        assert!(Price::new(0, usd.clone()).is_err());
        assert!(Price::new(MAX_PRICE_CENTS + 1, usd).is_err());
    }

    #[test]
    fn currencies_are_three_uppercase_letters() {
        assert!(Currency::parse("EUR").is_ok());
        for bad in ["eur", "EU", "EURO", "E1R", "ÉUR"] {
            assert!(Currency::parse(bad).is_err(), "{bad}");
        }
    }
}
