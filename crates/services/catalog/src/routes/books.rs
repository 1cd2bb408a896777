//! Listings: sellers publish, edit and withdraw; anyone browses.
//!
//! Ownership is checked in the database (`WHERE seller_id = caller`), and
//! another seller's listing is reported as missing (404), not forbidden, so
//! ids of other people's listings reveal nothing.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use zocalo_http::Problem;
use zocalo_http::auth::AuthUser;
use zocalo_http::extract::{Json, Path, Query};

use super::created;
use crate::app::AppState;
use crate::domain::{
    Book, BookInput, BookPatch, BookQuery, BookStatus, Checks, Condition, Currency, Cursor, Isbn,
    Sort, now, parse_amount,
};

const DEFAULT_LIMIT: u32 = 20;
const MAX_LIMIT: u32 = 100;
const MAX_QUERY_TEXT: usize = 200;

/// List a book for sale; the caller (any signed-in user) is its seller.
#[utoipa::path(post, path = "/api/books", request_body = BookInput, security(("bearer" = [])),
    responses((status = 201, body = Book), (status = 400), (status = 401), (status = 403), (status = 415), (status = 422)))]
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    Json(input): Json<BookInput>,
) -> Result<Response, Problem> {
    let seller = user.user_id()?;
    let book = state.store.create_book(input.validate(seller)?).await?;
    metrics::counter!("catalog_books_listed_total").increment(1);
    created(format!("/api/books/{}", book.id), book)
}

/// One listing. A withdrawn listing is shown only to its seller (marked
/// `private` so no shared cache keeps it); to everyone else it is 404.
#[utoipa::path(get, path = "/api/books/{id}", params(("id" = Uuid, Path)),
    responses((status = 200, body = Book), (status = 404)))]
pub async fn get_one(
    State(state): State<AppState>,
    user: Option<AuthUser>,
    Path(id): Path<Uuid>,
) -> Result<Response, Problem> {
    let book = state.store.book(id).await?.ok_or_else(Problem::not_found)?;
    if book.status == BookStatus::Active {
        return Ok(Json(book).into_response());
    }
    let is_seller = user.and_then(|u| u.user_id().ok()) == Some(book.seller_id);
    if !is_seller {
        return Err(Problem::not_found());
    }
    Ok((
        [(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-store"),
        )],
        Json(book),
    )
        .into_response())
}

/// Why an edit of `id` by `seller` changed nothing: someone else's or no
/// listing (404), or the seller's own withdrawn listing (409).
async fn not_editable(state: &AppState, id: Uuid, seller: Uuid) -> Problem {
    match state.store.book(id).await {
        Ok(Some(book)) if book.seller_id == seller => {
            Problem::conflict("this listing is withdrawn and can no longer be changed")
        }
        Ok(_) => Problem::not_found(),
        Err(error) => error.into(),
    }
}

/// Change one's own active listing. `stock` sets the count available now.
#[utoipa::path(patch, path = "/api/books/{id}", params(("id" = Uuid, Path)), request_body = BookPatch, security(("bearer" = [])),
    responses((status = 200, body = Book), (status = 401), (status = 404), (status = 409), (status = 422)))]
pub async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    Json(patch): Json<BookPatch>,
) -> Result<Json<Book>, Problem> {
    let seller = user.user_id()?;
    let changes = patch.validate()?;
    match state.store.update_book(id, seller, changes).await? {
        Some(book) => Ok(Json(book)),
        None => Err(not_editable(&state, id, seller).await),
    }
}

/// Withdraw one's own listing: it leaves the browse results and cannot be
/// reserved; reservations already held stay valid. Repeating is harmless.
#[utoipa::path(delete, path = "/api/books/{id}", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 401), (status = 404)))]
pub async fn withdraw(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, Problem> {
    let seller = user.user_id()?;
    if state.store.withdraw_book(id, seller, now()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found())
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct BookParams {
    /// Words that must all appear in the title, author or description.
    q: Option<String>,
    /// Authors containing this text, case-insensitive.
    author: Option<String>,
    /// ISBN-10 or ISBN-13, hyphens allowed.
    isbn: Option<String>,
    /// new, like_new, good or acceptable.
    condition: Option<String>,
    /// Decimal string, inclusive.
    min_price: Option<String>,
    /// Decimal string, inclusive.
    max_price: Option<String>,
    /// Only prices in this currency.
    currency: Option<String>,
    seller_id: Option<Uuid>,
    /// newest (default), price_asc or price_desc.
    sort: Option<String>,
    /// 1–100, default 20.
    limit: Option<u32>,
    /// `next_cursor` of the previous page, with the same `sort`.
    cursor: Option<String>,
}

/// Blank parameters (`?author=`) count as absent.
fn present(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

fn bounded_text(checks: &mut Checks, field: &str, value: Option<String>) -> Option<String> {
    let value = present(value)?;
    if value.chars().count() > MAX_QUERY_TEXT {
        checks.fail(
            field,
            format!("must have at most {MAX_QUERY_TEXT} characters"),
        );
        return None;
    }
    // PostgreSQL cannot hold NUL in text; no listing contains control
    // characters anyway, so such a search is a client mistake.
    if value.chars().any(char::is_control) {
        checks.fail(field, "must not contain control characters".into());
        return None;
    }
    Some(value)
}

fn price_bound(checks: &mut Checks, field: &str, value: Option<String>) -> Option<i64> {
    let text = present(value)?;
    parse_amount(&text)
        .map_err(|e| checks.fail(field, e.into()))
        .ok()
}

impl BookParams {
    /// Every bad parameter is reported at once. The query asks one row more
    /// than the page shows, to learn whether another page follows.
    fn query(self) -> Result<BookQuery, Problem> {
        let mut checks = Checks::default();
        let text = bounded_text(&mut checks, "q", self.q);
        let author = bounded_text(&mut checks, "author", self.author).map(|a| a.to_lowercase());
        let isbn = present(self.isbn).and_then(|text| {
            Isbn::parse(&text)
                .map(|isbn| isbn.as_str().to_owned())
                .map_err(|e| checks.fail("isbn", e.into()))
                .ok()
        });
        let condition =
            present(self.condition).and_then(|c| Condition::check(&mut checks, "condition", &c));
        let min_price_cents = price_bound(&mut checks, "min_price", self.min_price);
        let max_price_cents = price_bound(&mut checks, "max_price", self.max_price);
        if let (Some(min), Some(max)) = (min_price_cents, max_price_cents)
            && min > max
        {
            checks.fail("max_price", "must not be less than min_price".into());
        }
        let currency = present(self.currency).and_then(|c| {
            Currency::parse(&c)
                .map(|c| c.as_str().to_owned())
                .map_err(|e| checks.fail("currency", e.into()))
                .ok()
        });
        let sort = match present(self.sort) {
            None => Sort::Newest,
            Some(text) => Sort::parse(&text).unwrap_or_else(|| {
                checks.fail(
                    "sort",
                    "must be one of newest, price_asc, price_desc".into(),
                );
                Sort::Newest
            }),
        };
        let after = present(self.cursor).and_then(|text| match Cursor::decode(&text) {
            Some(cursor) if cursor.sort == sort => Some(cursor),
            Some(_) => {
                checks.fail("cursor", "belongs to another sort order".into());
                None
            }
            None => {
                checks.fail("cursor", "is not a cursor this service issued".into());
                None
            }
        });
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            checks.fail("limit", format!("must be between 1 and {MAX_LIMIT}"));
        }
        if !checks.is_ok() {
            return Err(checks.into_problem());
        }
        Ok(BookQuery {
            text,
            author,
            isbn,
            condition,
            min_price_cents,
            max_price_cents,
            currency,
            seller_id: self.seller_id,
            sort,
            after,
            limit: limit + 1,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BookPage {
    items: Vec<Book>,
    /// Opaque; pass as `cursor` (with the same `sort`) for the next page.
    next_cursor: Option<String>,
}

/// Active listings; public and cacheable.
#[utoipa::path(get, path = "/api/books", params(BookParams),
    responses((status = 200, body = BookPage), (status = 400), (status = 422)))]
pub async fn list(
    State(state): State<AppState>,
    Query(params): Query<BookParams>,
) -> Result<Json<BookPage>, Problem> {
    let query = params.query()?;
    let (sort, shown) = (query.sort, query.limit as usize - 1);
    let mut items = state.store.books(query).await?;
    let next_cursor = if items.len() > shown {
        items.truncate(shown);
        items.last().map(|last| {
            Cursor {
                sort,
                price_cents: last.price.cents(),
                id: last.id,
            }
            .encode()
        })
    } else {
        None
    };
    Ok(Json(BookPage { items, next_cursor }))
}
