//! The orders service's HTTP API.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;
use zocalo_http::Problem;
use zocalo_http::auth::AuthUser;
use zocalo_http::extract::{Json, Path, Query};

use crate::app::AppState;
use crate::domain::{Order, OrderInput, Sale};
use crate::saga;
use crate::store::Created;

const IDEMPOTENCY_KEY: &str = "idempotency-key";

pub fn router(state: AppState) -> Router {
    let ready_store = state.store.clone();
    let api = Router::new()
        .route("/api/orders", post(create_order).get(list_orders))
        .route("/api/orders/{id}", get(get_order))
        .route("/api/orders/{id}/cancel", post(cancel_order))
        .route("/api/sales", get(list_sales))
        .with_state(state);
    let ready: zocalo_telemetry::ReadinessCheck = std::sync::Arc::new(move || {
        let store = ready_store.clone();
        Box::pin(async move { store.ping().await.map_err(|e| e.to_string()) })
    });
    let openapi = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    zocalo_http::server::finish("orders", api, ready, openapi)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Zócalo orders",
        description = "Book purchases: order, pay, ship."
    ),
    paths(create_order, list_orders, get_order, cancel_order, list_sales),
    components(schemas(Order, OrderInput, OrderPage, Sale))
)]
struct ApiDoc;

fn idempotency_key(headers: &HeaderMap) -> Result<String, Problem> {
    let key = headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            Problem::bad_request("an Idempotency-Key header is required to create an order")
        })?;
    if key.len() > 200 {
        return Err(Problem::bad_request(
            "Idempotency-Key must have at most 200 characters",
        ));
    }
    Ok(key.to_owned())
}

fn accepted(order: Order) -> Result<Response, Problem> {
    let location =
        HeaderValue::from_str(&format!("/api/orders/{}", order.id)).map_err(Problem::internal)?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(order),
    )
        .into_response())
}

/// Place an order. It is processed in the background (reserve, pay, ship):
/// poll its `Location` for progress. Repeating the request with the same
/// `Idempotency-Key` returns the same order and never charges twice.
#[utoipa::path(post, path = "/api/orders", request_body = OrderInput, security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header)),
    responses((status = 202, body = Order), (status = 400), (status = 401), (status = 422, description = "invalid input, or the key was used for another request")))]
async fn create_order(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    Json(input): Json<OrderInput>,
) -> Result<Response, Problem> {
    let buyer = user.user_id()?;
    let key = idempotency_key(&headers)?;
    let order = input.validate(buyer)?;
    let job = saga::process_job(order.id);
    match state.store.create_order(order, &key, vec![job]).await? {
        Created::New(order) => {
            state.relay_wake.notify_one();
            metrics::counter!("orders_created_total").increment(1);
            accepted(order)
        }
        Created::Existing {
            order,
            same_request: true,
        } => accepted(order),
        Created::Existing { .. } => Err(Problem::invalid_field(
            "Idempotency-Key",
            "was already used for a different order",
        )),
    }
}

#[derive(Debug, Deserialize)]
struct PageParams {
    limit: Option<u32>,
    cursor: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPage {
    items: Vec<Order>,
    next_cursor: Option<Uuid>,
}

fn limit(limit: Option<u32>) -> Result<u32, Problem> {
    let limit = limit.unwrap_or(20);
    if (1..=100).contains(&limit) {
        Ok(limit)
    } else {
        Err(Problem::invalid_field("limit", "must be between 1 and 100"))
    }
}

/// The caller's orders, newest first.
#[utoipa::path(get, path = "/api/orders", security(("bearer" = [])), responses((status = 200, body = OrderPage), (status = 401)))]
async fn list_orders(
    State(state): State<AppState>,
    user: AuthUser,
    Query(params): Query<PageParams>,
) -> Result<Json<OrderPage>, Problem> {
    let limit = limit(params.limit)?;
    let mut items = state
        .store
        .orders_of(user.user_id()?, params.cursor, limit + 1)
        .await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|o| o.id)
    } else {
        None
    };
    Ok(Json(OrderPage { items, next_cursor }))
}

/// One of the caller's own orders; anyone else's is 404.
async fn own_order(state: &AppState, user: &AuthUser, id: Uuid) -> Result<Order, Problem> {
    let buyer = user.user_id()?;
    match state.store.order(id).await? {
        Some(order) if order.buyer_id == buyer || user.is_admin() => Ok(order),
        _ => Err(Problem::not_found()),
    }
}

#[utoipa::path(get, path = "/api/orders/{id}", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = Order), (status = 401), (status = 404)))]
async fn get_order(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> Result<Json<Order>, Problem> {
    own_order(&state, &user, id).await.map(Json)
}

/// Cancel before the parcel leaves. In the background, held stock is
/// released, sold copies go back to stock and a captured payment is
/// refunded.
#[utoipa::path(post, path = "/api/orders/{id}/cancel", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = Order), (status = 404), (status = 409, description = "already shipped or finished")))]
async fn cancel_order(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> Result<Json<Order>, Problem> {
    let order = own_order(&state, &user, id).await?;
    let event = saga::changed_event(&order, "cancelled", Some("cancelled by the buyer".into()));
    let cancelled = state
        .store
        .transition(
            id,
            &["pending", "reserved", "paid"],
            "cancelled",
            Some("cancelled by the buyer".into()),
            vec![event, saga::process_job(id)],
        )
        .await?;
    if !cancelled {
        return Err(Problem::conflict(format!(
            "an order that is {} can no longer be cancelled",
            order.status
        )));
    }
    state.relay_wake.notify_one();
    let order = state
        .store
        .order(id)
        .await?
        .ok_or_else(Problem::not_found)?;
    Ok(Json(order))
}

/// What others bought from the caller.
#[utoipa::path(get, path = "/api/sales", security(("bearer" = [])), responses((status = 200, body = Vec<Sale>), (status = 401)))]
async fn list_sales(
    State(state): State<AppState>,
    user: AuthUser,
    Query(params): Query<PageParams>,
) -> Result<Json<Vec<Sale>>, Problem> {
    let limit = limit(params.limit)?;
    Ok(Json(state.store.sales_of(user.user_id()?, limit).await?))
}
