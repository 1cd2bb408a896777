//! The catalog's internal reservation API, as the saga sees it.
//!
//! Every call is idempotent on the catalog side (the reservation id is the
//! order id), so the saga may repeat any of them after a crash or timeout.
//! Each call carries an `Idempotency-Key` derived from the order id and the
//! step, which lets the [`ServiceClient`] retry it on another catalog
//! instance when one fails mid-call.
//! Network failures and 5xx answers are `Err` (retry later); the catalog's
//! definite answers (no stock, no such book, reservation gone) are outcomes.

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;
use zocalo_http::client::ServiceClient;
use zocalo_http::service_auth::ServiceAuth;

use crate::domain::{Line, LineRequest};

pub struct CatalogClient {
    catalog: ServiceClient,
    auth: ServiceAuth,
}

pub enum Reserved {
    Held(Vec<Line>),
    /// The catalog refused: not enough stock, or a book that is not for sale.
    Refused(String),
}

pub enum Committed {
    Committed,
    /// The reservation expired or was released before we could commit it.
    Gone,
}

pub enum Returned {
    /// The copies are back in stock (now or by an earlier call).
    Returned,
    /// The catalog has no committed sale by this id: the reason it gave.
    NotSold(String),
}

#[derive(Deserialize)]
struct Price {
    amount: String,
    currency: String,
}

#[derive(Deserialize)]
struct ReservedItem {
    book_id: Uuid,
    quantity: u32,
    unit_price: Price,
    title: String,
    seller_id: Uuid,
}

#[derive(Deserialize)]
struct Reservation {
    items: Vec<ReservedItem>,
}

#[derive(Deserialize)]
struct ProblemBody {
    detail: Option<String>,
}

impl CatalogClient {
    pub fn new(catalog: ServiceClient, auth: ServiceAuth) -> Self {
        Self { catalog, auth }
    }

    /// POST one step of `order`'s reservation. The key names the order and
    /// the step: the same step repeated is the same request, and two steps
    /// never share a key.
    async fn post(
        &self,
        path: &str,
        order: Uuid,
        step: &str,
        body: serde_json::Value,
    ) -> Result<reqwest::Response, String> {
        let token = self.auth.bearer().await.map_err(|p| p.to_string())?;
        self.catalog
            .post(path)
            .bearer_auth(token)
            .idempotency_key(format!("{order}:{step}"))
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())
    }

    pub async fn reserve(
        &self,
        order: Uuid,
        lines: &[LineRequest],
        ttl_secs: u32,
    ) -> Result<Reserved, String> {
        let items: Vec<_> = lines
            .iter()
            .map(|l| json!({"book_id": l.book_id, "quantity": l.quantity}))
            .collect();
        let body = json!({"reservation_id": order, "items": items, "ttl_secs": ttl_secs});
        let response = self
            .post("/internal/reservations", order, "reserve", body)
            .await?;
        match response.status() {
            StatusCode::OK | StatusCode::CREATED => {
                let reservation: Reservation = response
                    .json()
                    .await
                    .map_err(|e| format!("catalog answered an unreadable reservation: {e}"))?;
                reservation
                    .items
                    .into_iter()
                    .map(priced_line)
                    .collect::<Result<Vec<_>, _>>()
                    .map(Reserved::Held)
            }
            StatusCode::CONFLICT | StatusCode::UNPROCESSABLE_ENTITY => {
                let detail = response
                    .json::<ProblemBody>()
                    .await
                    .ok()
                    .and_then(|p| p.detail)
                    .unwrap_or_else(|| "the catalog refused the reservation".into());
                Ok(Reserved::Refused(detail))
            }
            status => Err(format!("catalog answered {status} to a reservation")),
        }
    }

    pub async fn commit(&self, order: Uuid) -> Result<Committed, String> {
        let response = self
            .post(
                &format!("/internal/reservations/{order}/commit"),
                order,
                "commit",
                json!({}),
            )
            .await?;
        match response.status() {
            StatusCode::OK => Ok(Committed::Committed),
            StatusCode::CONFLICT | StatusCode::NOT_FOUND => Ok(Committed::Gone),
            status => Err(format!("catalog answered {status} to a commit")),
        }
    }

    /// Give the stock back. Releasing what is already released, expired or
    /// unknown is success: there is nothing left to give back. A reservation
    /// that was committed (by a run of ours that died before recording it)
    /// cannot be released: `Ok(false)`.
    pub async fn release(&self, order: Uuid) -> Result<bool, String> {
        let response = self
            .post(
                &format!("/internal/reservations/{order}/release"),
                order,
                "release",
                json!({}),
            )
            .await?;
        match response.status() {
            StatusCode::OK | StatusCode::NOT_FOUND => Ok(true),
            StatusCode::CONFLICT => Ok(false),
            status => Err(format!("catalog answered {status} to a release")),
        }
    }

    /// Put the copies of a committed (sold) reservation back in stock: the
    /// paid order was cancelled. Returning what is already returned is
    /// success. A reservation that is unknown or was never committed has
    /// nothing to give back: the catalog and the order disagree, which
    /// retrying cannot mend.
    pub async fn return_stock(&self, order: Uuid) -> Result<Returned, String> {
        let response = self
            .post(
                &format!("/internal/reservations/{order}/return"),
                order,
                "return",
                json!({}),
            )
            .await?;
        match response.status() {
            StatusCode::OK => Ok(Returned::Returned),
            StatusCode::CONFLICT | StatusCode::NOT_FOUND => {
                let detail = response
                    .json::<ProblemBody>()
                    .await
                    .ok()
                    .and_then(|p| p.detail)
                    .unwrap_or_else(|| "the catalog refused the return".into());
                Ok(Returned::NotSold(detail))
            }
            status => Err(format!("catalog answered {status} to a return")),
        }
    }
}

fn priced_line(item: ReservedItem) -> Result<Line, String> {
    Ok(Line {
        book_id: item.book_id,
        quantity: item.quantity,
        seller_id: Some(item.seller_id),
        title: Some(item.title),
        unit_price_cents: Some(parse_cents(&item.unit_price.amount)?),
        currency: Some(item.unit_price.currency),
    })
}

/// "12.50" → 1250, without floating point.
pub fn parse_cents(amount: &str) -> Result<i64, String> {
    let bad = || format!("`{amount}` is not a price");
    let (units, fraction) = amount.split_once('.').unwrap_or((amount, ""));
    if units.is_empty()
        || fraction.len() > 2
        || !units
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let units: i64 = units.parse().map_err(|_| bad())?;
    let cents: i64 = format!("{fraction:0<2}").parse().map_err(|_| bad())?;
    units
        .checked_mul(100)
        .and_then(|u| u.checked_add(cents))
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::parse_cents;

    #[test]
    fn prices_parse_exactly() {
        assert_eq!(parse_cents("12.50").unwrap(), 1250);
        assert_eq!(parse_cents("12.5").unwrap(), 1250);
        assert_eq!(parse_cents("7").unwrap(), 700);
        assert_eq!(parse_cents("0.07").unwrap(), 7);
        for bad in ["", ".5", "1.234", "-1", "1e3", "a"] {
            assert!(parse_cents(bad).is_err(), "{bad}");
        }
    }
}
