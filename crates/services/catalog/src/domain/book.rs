//! A listing: one seller offering copies of one book at one price.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;
use zocalo_http::Problem;

use super::money::{Currency, Money, Price, parse_amount};
use super::{Checks, Isbn, now};

pub const MAX_TITLE: usize = 300;
pub const MAX_AUTHOR: usize = 200;
pub const MAX_DESCRIPTION: usize = 5_000;
/// The most copies one listing may hold; keeps sums of quantities far from
/// integer limits.
pub const MAX_STOCK: i64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    New,
    LikeNew,
    Good,
    Acceptable,
}

impl Condition {
    pub const ALL: [Condition; 4] = [
        Condition::New,
        Condition::LikeNew,
        Condition::Good,
        Condition::Acceptable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Condition::New => "new",
            Condition::LikeNew => "like_new",
            Condition::Good => "good",
            Condition::Acceptable => "acceptable",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }

    pub(crate) fn check(checks: &mut Checks, field: &str, text: &str) -> Option<Self> {
        let parsed = Self::parse(text);
        if parsed.is_none() {
            checks.fail(
                field,
                "must be one of new, like_new, good, acceptable".into(),
            );
        }
        parsed
    }
}

/// `active` listings are browsable and reservable; `withdrawn` ones are
/// hidden from everyone but their seller and cannot be reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BookStatus {
    Active,
    Withdrawn,
}

impl BookStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BookStatus::Active => "active",
            BookStatus::Withdrawn => "withdrawn",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(BookStatus::Active),
            "withdrawn" => Some(BookStatus::Withdrawn),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Book {
    pub id: Uuid,
    pub seller_id: Uuid,
    pub title: String,
    pub author: String,
    /// Digits only (ISBN-10 may end in `X`).
    pub isbn: String,
    pub description: String,
    pub condition: Condition,
    #[schema(value_type = Money)]
    pub price: Price,
    /// Copies available now; held reservations are already taken out.
    pub stock: i32,
    pub status: BookStatus,
    pub created_at: DateTime<Utc>,
    /// Last change by the seller (reservations do not count).
    pub updated_at: DateTime<Utc>,
}

/// A price as sent: `amount` must be a string; a JSON number is refused
/// because it may already have been rounded by the client's float.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PriceInput {
    #[schema(value_type = String, example = "12.50")]
    pub amount: Option<Value>,
    #[schema(example = "USD")]
    pub currency: Option<String>,
}

impl PriceInput {
    fn check(self, checks: &mut Checks) -> Option<Price> {
        let cents = match self.amount {
            Some(Value::String(text)) => parse_amount(&text)
                .map_err(|e| checks.fail("price.amount", e.into()))
                .ok(),
            Some(Value::Number(_)) => {
                checks.fail(
                    "price.amount",
                    "must be a string like \"12.50\", not a JSON number".into(),
                );
                None
            }
            Some(_) => {
                checks.fail("price.amount", "must be a string like \"12.50\"".into());
                None
            }
            None => checks.required::<i64>("price.amount", None),
        };
        let currency = match checks.required("price.currency", self.currency) {
            Some(text) => Currency::parse(&text)
                .map_err(|e| checks.fail("price.currency", e.into()))
                .ok(),
            None => None,
        };
        let (cents, currency) = (cents?, currency?);
        Price::new(cents, currency)
            .map_err(|e| checks.fail("price.amount", e.into()))
            .ok()
    }
}

fn check_stock(checks: &mut Checks, stock: i64) -> i32 {
    if !(0..=MAX_STOCK).contains(&stock) {
        checks.fail(
            "stock",
            format!("must be a whole number from 0 to {MAX_STOCK}"),
        );
    }
    stock.clamp(0, MAX_STOCK) as i32
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct BookInput {
    pub title: Option<String>,
    pub author: Option<String>,
    /// ISBN-10 or ISBN-13; hyphens and spaces are ignored.
    #[schema(example = "978-0-306-40615-7")]
    pub isbn: Option<String>,
    /// Optional, up to 5000 characters.
    pub description: Option<String>,
    pub condition: Option<String>,
    pub price: Option<PriceInput>,
    /// 0 to 10000.
    pub stock: Option<i64>,
}

/// A listing ready to insert.
#[derive(Debug, Clone)]
pub struct NewBook {
    pub id: Uuid,
    pub seller_id: Uuid,
    pub title: String,
    pub author: String,
    pub isbn: Isbn,
    pub description: String,
    pub condition: Condition,
    pub price: Price,
    pub stock: i32,
    pub created_at: DateTime<Utc>,
}

impl BookInput {
    pub fn validate(self, seller_id: Uuid) -> Result<NewBook, Problem> {
        let mut checks = Checks::default();
        let title = checks
            .required("title", self.title)
            .map(|t| checks.text("title", &t, 1, MAX_TITLE));
        let author = checks
            .required("author", self.author)
            .map(|a| checks.text("author", &a, 1, MAX_AUTHOR));
        let isbn = checks.required("isbn", self.isbn).and_then(|text| {
            Isbn::parse(&text)
                .map_err(|e| checks.fail("isbn", e.into()))
                .ok()
        });
        let description = checks.text(
            "description",
            &self.description.unwrap_or_default(),
            0,
            MAX_DESCRIPTION,
        );
        let condition = checks
            .required("condition", self.condition)
            .and_then(|c| Condition::check(&mut checks, "condition", &c));
        let price = checks
            .required("price", self.price)
            .and_then(|p| p.check(&mut checks));
        let stock = checks
            .required("stock", self.stock)
            .map(|s| check_stock(&mut checks, s));
        match (title, author, isbn, condition, price, stock) {
            (Some(title), Some(author), Some(isbn), Some(condition), Some(price), Some(stock))
                if checks.is_ok() =>
            {
                let created_at = now();
                Ok(NewBook {
                    id: Uuid::now_v7(),
                    seller_id,
                    title,
                    author,
                    isbn,
                    description,
                    condition,
                    price,
                    stock,
                    created_at,
                })
            }
            _ => Err(checks.into_problem()),
        }
    }
}

/// A seller's change to a listing. The ISBN, seller and status are not
/// editable here: a different book is a different listing, and withdrawing
/// is `DELETE`. Unknown fields are refused so a typo is not silently lost.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BookPatch {
    pub title: Option<String>,
    pub author: Option<String>,
    pub description: Option<String>,
    pub condition: Option<String>,
    pub price: Option<PriceInput>,
    /// Sets the available count (copies held by reservations are not in it).
    pub stock: Option<i64>,
}

/// A checked patch; `None` fields stay as they are.
#[derive(Debug, Clone)]
pub struct BookChanges {
    pub title: Option<String>,
    pub author: Option<String>,
    pub description: Option<String>,
    pub condition: Option<Condition>,
    pub price: Option<Price>,
    pub stock: Option<i32>,
    pub updated_at: DateTime<Utc>,
}

impl BookChanges {
    /// Changes nothing but `updated_at`; a base for building changes.
    pub fn none() -> Self {
        Self {
            title: None,
            author: None,
            description: None,
            condition: None,
            price: None,
            stock: None,
            updated_at: now(),
        }
    }
}

impl BookPatch {
    pub fn validate(self) -> Result<BookChanges, Problem> {
        let mut checks = Checks::default();
        let empty = self.title.is_none()
            && self.author.is_none()
            && self.description.is_none()
            && self.condition.is_none()
            && self.price.is_none()
            && self.stock.is_none();
        if empty {
            checks.fail(
                "title",
                "give at least one of title, author, description, condition, price, stock".into(),
            );
        }
        let changes = BookChanges {
            title: self.title.map(|t| checks.text("title", &t, 1, MAX_TITLE)),
            author: self
                .author
                .map(|a| checks.text("author", &a, 1, MAX_AUTHOR)),
            description: self
                .description
                .map(|d| checks.text("description", &d, 0, MAX_DESCRIPTION)),
            condition: self
                .condition
                .and_then(|c| Condition::check(&mut checks, "condition", &c)),
            price: self.price.and_then(|p| p.check(&mut checks)),
            stock: self.stock.map(|s| check_stock(&mut checks, s)),
            updated_at: now(),
        };
        if checks.is_ok() {
            Ok(changes)
        } else {
            Err(checks.into_problem())
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn input(value: Value) -> BookInput {
        serde_json::from_value(value).unwrap()
    }

    fn fields(problem: &Problem) -> Vec<&str> {
        problem.errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn a_good_listing_validates() {
        let book = input(json!({
            "title": " Dune ", "author": "Frank Herbert", "isbn": "978-0-306-40615-7",
            "condition": "like_new", "price": {"amount": "12.5", "currency": "USD"}, "stock": 3
        }))
        .validate(Uuid::now_v7())
        .unwrap();
        assert_eq!(book.title, "Dune");
        assert_eq!(book.isbn.as_str(), "9780306406157");
        assert_eq!(book.price.cents(), 1250);
        assert_eq!(book.description, "");
        assert_eq!(book.condition, Condition::LikeNew);
    }

    #[test]
    fn every_bad_field_is_reported() {
        let problem = input(json!({
            "title": "", "author": "A", "isbn": "978-0-306-40615-8", "condition": "mint",
            "price": {"amount": "1.234", "currency": "usd"}, "stock": -1
        }))
        .validate(Uuid::now_v7())
        .unwrap_err();
        assert_eq!(problem.status, 422);
        assert_eq!(
            fields(&problem),
            [
                "title",
                "isbn",
                "condition",
                "price.amount",
                "price.currency",
                "stock"
            ]
        );
    }

    #[test]
    fn missing_fields_and_float_prices_are_reported() {
        let problem = input(json!({"price": {"amount": 12.5}}))
            .validate(Uuid::now_v7())
            .unwrap_err();
        assert_eq!(
            fields(&problem),
            [
                "title",
                "author",
                "isbn",
                "condition",
                "price.amount",
                "price.currency",
                "stock"
            ]
        );
        let zero = input(json!({
            "title": "t", "author": "a", "isbn": "0306406152", "condition": "good",
            "price": {"amount": "0.00", "currency": "EUR"}, "stock": 0
        }))
        .validate(Uuid::now_v7())
        .unwrap_err();
        assert_eq!(fields(&zero), ["price.amount"]);
    }

    #[test]
    fn patches_need_a_change_and_refuse_unknown_fields() {
        assert_eq!(
            fields(&BookPatch::default().validate().unwrap_err()),
            ["title"]
        );
        let patch: BookPatch = serde_json::from_value(json!({"stock": 7})).unwrap();
        assert_eq!(patch.validate().unwrap().stock, Some(7));
        assert!(serde_json::from_value::<BookPatch>(json!({"isbn": "0306406152"})).is_err());
        let bad: BookPatch =
            serde_json::from_value(json!({"stock": 10001, "condition": "bad"})).unwrap();
        assert_eq!(fields(&bad.validate().unwrap_err()), ["condition", "stock"]);
    }
}
