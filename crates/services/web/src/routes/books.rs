//! The book store pages: catalog with search and filters, a book, selling
//! a book, the cart and checkout, the buyer's orders with live status, and
//! the seller's sales.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use uuid::Uuid;

use crate::app::AppState;
use crate::csrf::CsrfForm;
use crate::error::WebError;
use crate::gateway::ApiError;
use crate::models::{Book, CONDITIONS, Order, Page, Sale, status_label};
use crate::session::{Jar, Visitor, cookie};
use crate::views::{Chrome, FormErrors, money, render};

const CART_COOKIE: &str = "zocalo_cart";
const CART_MAX_LINES: usize = 20;
const CART_TTL_SECS: i64 = 7 * 24 * 3600;
const PROVIDERS: [(&str, &str); 4] = [
    ("dhl", "DHL"),
    ("fedex", "FedEx"),
    ("envia", "Envía"),
    ("servientrega", "Servientrega"),
];
const SORTS: [(&str, &str); 3] = [
    ("newest", "Newest first"),
    ("price_asc", "Price, low to high"),
    ("price_desc", "Price, high to low"),
];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/books", get(catalog))
        .route("/books/new", get(sell_page).post(sell))
        .route("/books/{id}", get(book))
        .route("/cart", get(cart).post(add_to_cart))
        .route("/cart/remove", post(remove_from_cart))
        .route("/checkout", get(checkout_page).post(checkout))
        .route("/orders", get(orders))
        .route("/orders/{id}", get(order))
        .route("/orders/{id}/status", get(order_status))
        .route("/orders/{id}/cancel", post(cancel))
        .route("/sales", get(sales))
}

#[derive(Debug, Default, Deserialize)]
struct CatalogParams {
    #[serde(default)]
    q: String,
    #[serde(default)]
    author: String,
    #[serde(default)]
    condition: String,
    #[serde(default)]
    min_price: String,
    #[serde(default)]
    max_price: String,
    #[serde(default)]
    sort: String,
    #[serde(default)]
    cursor: String,
}

impl CatalogParams {
    fn query(&self) -> Vec<(&'static str, String)> {
        vec![
            ("q", self.q.clone()),
            ("author", self.author.clone()),
            ("condition", self.condition.clone()),
            ("min_price", self.min_price.clone()),
            ("max_price", self.max_price.clone()),
            ("sort", self.sort.clone()),
            ("cursor", self.cursor.clone()),
        ]
    }
}

#[derive(Template)]
#[template(path = "books/catalog.html")]
struct Catalog {
    chrome: Chrome,
    params: CatalogParams,
    books: Vec<Book>,
    next: Option<String>,
    errors: FormErrors,
}

impl Catalog {
    fn conditions(&self) -> &'static [(&'static str, &'static str)] {
        &CONDITIONS
    }

    fn sorts(&self) -> &'static [(&'static str, &'static str)] {
        &SORTS
    }

    fn next_href(&self, cursor: &str) -> String {
        let mut query = self.params.query();
        query.retain(|(k, v)| *k != "cursor" && !v.is_empty());
        query.push(("cursor", cursor.to_owned()));
        format!(
            "/books?{}",
            serde_urlencoded::to_string(query).unwrap_or_default()
        )
    }
}

async fn catalog(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    Query(params): Query<CatalogParams>,
) -> Result<Response, WebError> {
    let listed: Result<Page<Book>, ApiError> = state
        .gateway
        .get_query("/api/books", &params.query(), None)
        .await;
    // A bad filter (a price that is not a number) is shown next to its field.
    let (books, next, errors) = match listed {
        Ok(page) => {
            let next = page.next();
            (page.items, next, FormErrors::none())
        }
        Err(error) => (Vec::new(), None, FormErrors::from_api(error, &[])?),
    };
    render(Catalog {
        chrome: Chrome::new(&visitor, "Books", "books"),
        params,
        books,
        next,
        errors,
    })
}

#[derive(Template)]
#[template(path = "books/book.html")]
struct BookPage {
    chrome: Chrome,
    book: Book,
    own: bool,
}

async fn book(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    Path(id): Path<Uuid>,
) -> Result<Response, WebError> {
    let book: Book = state
        .gateway
        .get(&format!("/api/books/{id}"), visitor.token())
        .await?;
    let own = visitor
        .user
        .as_ref()
        .is_some_and(|u| u.id == book.seller_id.to_string());
    render(BookPage {
        chrome: Chrome::new(&visitor, book.title.clone(), "books"),
        book,
        own,
    })
}

#[derive(Debug, Default, Deserialize)]
struct SellForm {
    #[serde(default)]
    title: String,
    #[serde(default)]
    author: String,
    #[serde(default)]
    isbn: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    condition: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    currency: String,
    #[serde(default)]
    stock: String,
}

#[derive(Template)]
#[template(path = "books/sell.html")]
struct Sell {
    chrome: Chrome,
    form: SellForm,
    errors: FormErrors,
}

impl Sell {
    fn conditions(&self) -> &'static [(&'static str, &'static str)] {
        &CONDITIONS
    }
}

async fn sell_page(Extension(visitor): Extension<Visitor>) -> Result<Response, WebError> {
    visitor.require("/books/new")?;
    render(Sell {
        chrome: Chrome::new(&visitor, "Sell a book", "books"),
        form: SellForm {
            currency: "USD".into(),
            stock: "1".into(),
            condition: "good".into(),
            ..SellForm::default()
        },
        errors: FormErrors::none(),
    })
}

async fn sell(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    CsrfForm(form): CsrfForm<SellForm>,
) -> Result<Response, WebError> {
    let token = visitor.require("/books/new")?.access_token.clone();
    let Ok(stock) = form.stock.trim().parse::<i64>() else {
        return render(Sell {
            chrome: Chrome::new(&visitor, "Sell a book", "books"),
            form,
            errors: FormErrors::field("stock", "must be a whole number"),
        });
    };
    let body = serde_json::json!({
        "title": form.title, "author": form.author, "isbn": form.isbn,
        "description": form.description, "condition": form.condition,
        "price": {"amount": form.amount.trim(), "currency": form.currency.trim().to_uppercase()},
        "stock": stock,
    });
    let listed: Result<Book, ApiError> = state
        .gateway
        .send(Method::POST, "/api/books", Some(&token), &body, None)
        .await;
    match listed {
        Ok(book) => Ok(Redirect::to(&format!("/books/{}", book.id)).into_response()),
        Err(error) => {
            let rename = [
                ("price.amount", "amount"),
                ("price.currency", "currency"),
                ("price", "amount"),
            ];
            render(Sell {
                chrome: Chrome::new(&visitor, "Sell a book", "books"),
                errors: FormErrors::from_api(error, &rename)?,
                form,
            })
        }
    }
}

/// The cart lives in a cookie (`id:quantity|…`): nothing is stored for
/// visitors who never buy, and stock is only checked by the order.
#[derive(Debug, Default, Clone, PartialEq)]
struct Cart(Vec<(Uuid, u32)>);

impl Cart {
    fn from_headers(headers: &HeaderMap) -> Self {
        let jar = Jar::from_headers(headers);
        let lines = jar
            .get(CART_COOKIE)
            .unwrap_or_default()
            .split('|')
            .filter_map(|line| {
                let (id, quantity) = line.split_once(':')?;
                let quantity: u32 = quantity.parse().ok()?;
                Some((id.parse().ok()?, quantity.clamp(1, 100)))
            })
            .take(CART_MAX_LINES)
            .collect();
        Self(lines)
    }

    fn add(&mut self, book: Uuid, quantity: u32) {
        if let Some(line) = self.0.iter_mut().find(|(id, _)| *id == book) {
            line.1 = (line.1 + quantity).min(100);
        } else if self.0.len() < CART_MAX_LINES {
            self.0.push((book, quantity.clamp(1, 100)));
        }
    }

    fn cookie(&self, secure: bool) -> axum::http::HeaderValue {
        let value: Vec<String> = self.0.iter().map(|(id, q)| format!("{id}:{q}")).collect();
        let max_age = if self.0.is_empty() { 0 } else { CART_TTL_SECS };
        cookie(CART_COOKIE, &value.join("|"), max_age, secure)
    }
}

fn with_cart(response: impl IntoResponse, cart: &Cart, state: &AppState) -> Response {
    let mut response = response.into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, cart.cookie(state.secure_cookies));
    response
}

struct CartLine {
    book: Book,
    quantity: u32,
    subtotal: String,
}

#[derive(Template)]
#[template(path = "books/cart.html")]
struct CartPage {
    chrome: Chrome,
    lines: Vec<CartLine>,
    totals: Vec<String>,
}

/// The books of the cart as they are now (withdrawn ones are dropped).
async fn cart_lines(state: &AppState, cart: &Cart) -> Result<Vec<CartLine>, WebError> {
    let mut lines = Vec::new();
    for (id, quantity) in &cart.0 {
        match state
            .gateway
            .get::<Book>(&format!("/api/books/{id}"), None)
            .await
        {
            Ok(book) => {
                let cents = price_cents(&book.price.amount) * i64::from(*quantity);
                let subtotal = money(cents, &book.price.currency);
                lines.push(CartLine {
                    book,
                    quantity: *quantity,
                    subtotal,
                });
            }
            Err(error) if error.status() == Some(404) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(lines)
}

/// A decimal string with two fraction digits as minor units.
fn price_cents(amount: &str) -> i64 {
    let (units, fraction) = amount.split_once('.').unwrap_or((amount, "0"));
    let fraction = format!("{fraction:0<2}");
    units.parse::<i64>().unwrap_or(0) * 100 + fraction[..2].parse::<i64>().unwrap_or(0)
}

/// One total per currency.
fn totals(lines: &[CartLine]) -> Vec<String> {
    let mut sums: Vec<(String, i64)> = Vec::new();
    for line in lines {
        let cents = price_cents(&line.book.price.amount) * i64::from(line.quantity);
        match sums
            .iter_mut()
            .find(|(c, _)| *c == line.book.price.currency)
        {
            Some(sum) => sum.1 += cents,
            None => sums.push((line.book.price.currency.clone(), cents)),
        }
    }
    sums.iter().map(|(c, cents)| money(*cents, c)).collect()
}

async fn cart(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let lines = cart_lines(&state, &Cart::from_headers(&headers)).await?;
    render(CartPage {
        chrome: Chrome::new(&visitor, "Your cart", "books"),
        totals: totals(&lines),
        lines,
    })
}

#[derive(Debug, Deserialize)]
struct CartForm {
    book_id: Uuid,
    #[serde(default)]
    quantity: Option<String>,
}

async fn add_to_cart(
    State(state): State<AppState>,
    headers: HeaderMap,
    CsrfForm(form): CsrfForm<CartForm>,
) -> Result<Response, WebError> {
    let quantity = form
        .quantity
        .as_deref()
        .unwrap_or("1")
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|q| (1..=100).contains(q))
        .ok_or_else(|| WebError::BadRequest("the quantity must be 1 to 100".into()))?;
    let mut cart = Cart::from_headers(&headers);
    cart.add(form.book_id, quantity);
    Ok(with_cart(Redirect::to("/cart"), &cart, &state))
}

async fn remove_from_cart(
    State(state): State<AppState>,
    headers: HeaderMap,
    CsrfForm(form): CsrfForm<CartForm>,
) -> Result<Response, WebError> {
    let mut cart = Cart::from_headers(&headers);
    cart.0.retain(|(id, _)| *id != form.book_id);
    Ok(with_cart(Redirect::to("/cart"), &cart, &state))
}

#[derive(Debug, Default, Deserialize)]
struct CheckoutForm {
    #[serde(default)]
    shipping_address: String,
    #[serde(default)]
    provider: String,
    #[serde(default)]
    card: String,
    /// The idempotency key of this checkout: submitting twice orders once.
    #[serde(default)]
    key: String,
}

#[derive(Template)]
#[template(path = "books/checkout.html")]
struct Checkout {
    chrome: Chrome,
    lines: Vec<CartLine>,
    totals: Vec<String>,
    form: CheckoutForm,
    errors: FormErrors,
    other_errors: Vec<String>,
}

impl Checkout {
    fn providers(&self) -> &'static [(&'static str, &'static str)] {
        &PROVIDERS
    }
}

async fn checkout_form(
    state: &AppState,
    visitor: &Visitor,
    headers: &HeaderMap,
    form: CheckoutForm,
    errors: FormErrors,
) -> Result<Response, WebError> {
    let lines = cart_lines(state, &Cart::from_headers(headers)).await?;
    let other_errors = errors.others(&["shipping_address", "provider", "card"]);
    render(Checkout {
        chrome: Chrome::new(visitor, "Checkout", "books"),
        totals: totals(&lines),
        lines,
        form,
        errors,
        other_errors,
    })
}

async fn checkout_page(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    visitor.require("/checkout")?;
    let form = CheckoutForm {
        provider: "dhl".into(),
        key: Uuid::new_v4().to_string(),
        ..CheckoutForm::default()
    };
    checkout_form(&state, &visitor, &headers, form, FormErrors::none()).await
}

async fn checkout(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    headers: HeaderMap,
    CsrfForm(form): CsrfForm<CheckoutForm>,
) -> Result<Response, WebError> {
    let token = visitor.require("/checkout")?.access_token.clone();
    let cart = Cart::from_headers(&headers);
    let items: Vec<_> = cart
        .0
        .iter()
        .map(|(id, quantity)| serde_json::json!({"book_id": id, "quantity": quantity}))
        .collect();
    let body = serde_json::json!({
        "items": items, "shipping_address": form.shipping_address,
        "provider": form.provider, "card": form.card,
    });
    let key = if form.key.is_empty() {
        Uuid::new_v4().to_string()
    } else {
        form.key.clone()
    };
    let placed: Result<Order, ApiError> = state
        .gateway
        .send(Method::POST, "/api/orders", Some(&token), &body, Some(&key))
        .await;
    match placed {
        Ok(order) => Ok(with_cart(
            Redirect::to(&format!("/orders/{}", order.id)),
            &Cart::default(),
            &state,
        )),
        Err(error) => {
            let errors = FormErrors::from_api(error, &[])?;
            let form = CheckoutForm {
                card: String::new(),
                ..form
            };
            checkout_form(&state, &visitor, &headers, form, errors).await
        }
    }
}

#[derive(Template)]
#[template(path = "books/orders.html")]
struct Orders {
    chrome: Chrome,
    orders: Vec<Order>,
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Cursor {
    cursor: Option<String>,
}

async fn orders(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    Query(cursor): Query<Cursor>,
) -> Result<Response, WebError> {
    let token = &visitor.require("/orders")?.access_token;
    let query = [
        ("limit", "20".into()),
        ("cursor", cursor.cursor.unwrap_or_default()),
    ];
    let page: Page<Order> = state
        .gateway
        .get_query("/api/orders", &query, Some(token))
        .await?;
    let next = page.next();
    render(Orders {
        chrome: Chrome::new(&visitor, "Your orders", "books"),
        orders: page.items,
        next,
    })
}

#[derive(Template)]
#[template(path = "books/order.html")]
struct OrderPage {
    chrome: Chrome,
    order: Order,
}

async fn fetch_order(state: &AppState, visitor: &Visitor, id: Uuid) -> Result<Order, WebError> {
    let token = &visitor.require(&format!("/orders/{id}"))?.access_token;
    Ok(state
        .gateway
        .get(&format!("/api/orders/{id}"), Some(token))
        .await?)
}

async fn order(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    Path(id): Path<Uuid>,
) -> Result<Response, WebError> {
    let order = fetch_order(&state, &visitor, id).await?;
    render(OrderPage {
        chrome: Chrome::new(&visitor, "Order", "books"),
        order,
    })
}

/// What the live status script polls: the status in words and whether it
/// can still change.
async fn order_status(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    Path(id): Path<Uuid>,
) -> Result<Response, WebError> {
    let order = fetch_order(&state, &visitor, id).await?;
    let tracking = order.shipment.as_ref().map(|s| s.tracking_number.clone());
    Ok(Json(serde_json::json!({
        "status": order.status,
        "label": status_label(&order.status, order.failure_reason.as_deref()),
        "final": order.is_final(),
        "tracking": tracking,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
struct Empty {}

async fn cancel(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    Path(id): Path<Uuid>,
    CsrfForm(_): CsrfForm<Empty>,
) -> Result<Response, WebError> {
    let token = &visitor.require(&format!("/orders/{id}"))?.access_token;
    state
        .gateway
        .call(
            Method::POST,
            &format!("/api/orders/{id}/cancel"),
            Some(token),
        )
        .await?;
    Ok(Redirect::to(&format!("/orders/{id}")).into_response())
}

#[derive(Template)]
#[template(path = "books/sales.html")]
struct Sales {
    chrome: Chrome,
    sales: Vec<Sale>,
}

async fn sales(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
) -> Result<Response, WebError> {
    let token = &visitor.require("/sales")?.access_token;
    let sales: Vec<Sale> = state
        .gateway
        .get_query("/api/sales", &[("limit", "100".into())], Some(token))
        .await?;
    render(Sales {
        chrome: Chrome::new(&visitor, "Your sales", "books"),
        sales,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cart_cookie_round_trips_and_ignores_garbage() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let mut cart = Cart::default();
        cart.add(a, 1);
        cart.add(b, 2);
        cart.add(a, 3);
        let set = cart.cookie(true);
        let value = set.to_str().unwrap().split(';').next().unwrap().to_owned();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            format!("{value}|nonsense|{}:x", Uuid::now_v7())
                .parse()
                .unwrap(),
        );
        assert_eq!(Cart::from_headers(&headers).0, vec![(a, 4), (b, 2)]);
    }

    #[test]
    fn prices_become_cents() {
        assert_eq!(price_cents("18.50"), 1850);
        assert_eq!(price_cents("7"), 700);
        assert_eq!(price_cents("0.5"), 50);
    }
}
