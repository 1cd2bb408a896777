//! Books, prices, ISBNs and reservations, validated once at the edge.
//!
//! Request types deserialize loosely (most fields optional) so that
//! `validate()` can report every bad field of a request at once; what comes
//! out are the checked types the store accepts. Money is integer minor units
//! end to end: a price arrives as the string `"12.50"`, is stored as `1250`
//! and is rendered back as `"12.50"`, never passing through a float.

mod book;
mod isbn;
mod money;
mod query;
mod reservation;

use chrono::{DateTime, SubsecRound, Utc};
use zocalo_http::{FieldError, Problem};

pub use book::{
    Book, BookChanges, BookInput, BookPatch, BookStatus, Condition, NewBook, PriceInput,
};
pub use isbn::Isbn;
pub use money::{Currency, MAX_PRICE_CENTS, Money, Price, parse_amount};
pub use query::{BookQuery, Cursor, Sort};
pub use reservation::{
    ItemInput, MAX_TTL_SECS, NewReservation, Reservation, ReservationInput, ReservationLine,
    ReservationStatus, ReserveOutcome, ReservedItem, Shortfall, ShortfallKind, Transitioned,
};

/// The current time at the precision both stores keep (PostgreSQL stores
/// microseconds), so that a value read back equals the value written.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Accumulates field errors so a client learns about all of them at once.
#[derive(Default)]
pub(crate) struct Checks(Vec<FieldError>);

impl Checks {
    /// Trimmed text of `min..=max` characters without control characters
    /// (line breaks and tabs allowed).
    pub(crate) fn text(&mut self, field: &str, value: &str, min: usize, max: usize) -> String {
        let trimmed = value.trim();
        let chars = trimmed.chars().count();
        if chars < min || chars > max {
            self.fail(field, format!("must have {min} to {max} characters"));
        } else if trimmed
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
        {
            self.fail(field, "must not contain control characters".into());
        }
        trimmed.to_owned()
    }

    /// A required field: reports it missing and yields `None` when absent.
    pub(crate) fn required<T>(&mut self, field: &str, value: Option<T>) -> Option<T> {
        if value.is_none() {
            self.fail(field, "is required".into());
        }
        value
    }

    pub(crate) fn fail(&mut self, field: &str, message: String) {
        self.0.push(FieldError {
            field: field.into(),
            message,
        });
    }

    pub(crate) fn is_ok(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn into_problem(self) -> Problem {
        Problem::invalid_fields(self.0)
    }
}

/// FTS5 treats `"`, `*`, `:`, `-`, `AND`… as syntax; quote every word so a
/// reader's search is only ever a list of terms (all must match).
pub fn fts5_terms(text: &str) -> Option<String> {
    let terms: Vec<String> = text
        .split_whitespace()
        .map(|word| format!("\"{}\"", word.replace('"', "\"\"")))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fts5_terms_are_quoted() {
        assert_eq!(fts5_terms("used book").unwrap(), "\"used\" \"book\"");
        assert_eq!(
            fts5_terms("a\"b OR c* title:x").unwrap(),
            "\"a\"\"b\" \"OR\" \"c*\" \"title:x\""
        );
        assert_eq!(fts5_terms("  \t "), None);
    }

    #[test]
    fn text_checks_trim_and_bound() {
        let mut checks = Checks::default();
        assert_eq!(checks.text("t", "  hi  ", 1, 5), "hi");
        assert!(checks.is_ok());
        checks.text("t", "   ", 1, 5);
        checks.text("u", "abcdef", 1, 5);
        checks.text("v", "a\u{0}b", 1, 5);
        let fields: Vec<_> = checks.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["t", "u", "v"]);
    }
}
