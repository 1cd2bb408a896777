//! Browsing: filters, sort orders and keyset cursors.
//!
//! Pages are cut by position, not offset, so a page never repeats or skips
//! a book because others were listed meanwhile. The position depends on the
//! sort: the id alone for `newest`, (price, id) for the price orders. The
//! cursor carries it as opaque base64url text, so clients cannot build one
//! by hand and we may change its shape.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use super::Condition;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// Most recently listed first (ids are time-ordered UUIDv7).
    #[default]
    Newest,
    PriceAsc,
    PriceDesc,
}

impl Sort {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "newest" => Some(Sort::Newest),
            "price_asc" => Some(Sort::PriceAsc),
            "price_desc" => Some(Sort::PriceDesc),
            _ => None,
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Sort::Newest => "n",
            Sort::PriceAsc => "pa",
            Sort::PriceDesc => "pd",
        }
    }
}

/// Where the previous page ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub sort: Sort,
    /// The last book's price in minor units (price orders only).
    pub price_cents: i64,
    pub id: Uuid,
}

impl Cursor {
    pub fn encode(&self) -> String {
        let raw = format!("{}:{}:{}", self.sort.tag(), self.price_cents, self.id);
        URL_SAFE_NO_PAD.encode(raw)
    }

    pub fn decode(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        let raw = String::from_utf8(bytes).ok()?;
        let mut parts = raw.splitn(3, ':');
        let sort = match parts.next()? {
            "n" => Sort::Newest,
            "pa" => Sort::PriceAsc,
            "pd" => Sort::PriceDesc,
            _ => return None,
        };
        let price_cents = parts.next()?.parse().ok()?;
        let id = parts.next()?.parse().ok()?;
        Some(Self {
            sort,
            price_cents,
            id,
        })
    }
}

/// Filters of `GET /api/books`, already checked. Only active listings are
/// ever returned.
#[derive(Debug, Clone, Default)]
pub struct BookQuery {
    /// Words that must all appear in title, author or description.
    pub text: Option<String>,
    /// Lowercase; matches authors containing it.
    pub author: Option<String>,
    /// Normalised digits.
    pub isbn: Option<String>,
    pub condition: Option<Condition>,
    pub min_price_cents: Option<i64>,
    pub max_price_cents: Option<i64>,
    pub currency: Option<String>,
    pub seller_id: Option<Uuid>,
    pub sort: Sort,
    /// Must have been made for the same `sort`.
    pub after: Option<Cursor>,
    /// Rows to fetch (the handler asks one more than it shows).
    pub limit: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let cursor = Cursor {
            sort: Sort::PriceDesc,
            price_cents: 1999,
            id: Uuid::now_v7(),
        };
        let text = cursor.encode();
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(Cursor::decode(&text), Some(cursor));
        for garbage in ["", "!!", "bjox", &URL_SAFE_NO_PAD.encode("x:1:nope")] {
            assert_eq!(Cursor::decode(garbage), None, "{garbage}");
        }
    }
}
