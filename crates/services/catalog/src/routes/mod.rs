//! The catalog's HTTP API: public listings under `/api/books` (reads are
//! cacheable) and the service-to-service reservation API under `/internal`
//! (never cached, never routed by the gateway).

mod books;
mod reservations;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use utoipa::OpenApi;
use zocalo_http::Problem;
use zocalo_http::extract::Json;

use crate::app::AppState;
use crate::domain::{Book, BookInput, BookPatch, Condition, Money, PriceInput};
use crate::domain::{ItemInput, Reservation, ReservationInput, ReservationStatus, ReservedItem};

pub fn router(state: AppState, cache_max_age_secs: u32) -> Router {
    let ready_store = state.store.clone();
    let public = Router::new()
        .route("/api/books", get(books::list).post(books::create))
        .route(
            "/api/books/{id}",
            get(books::get_one)
                .patch(books::update)
                .delete(books::withdraw),
        )
        .layer(middleware::from_fn(move |req, next| {
            zocalo_http::conditional::conditional_get(cache_max_age_secs, None, req, next)
        }));
    let internal = Router::new()
        .route("/internal/reservations", post(reservations::reserve))
        .route("/internal/reservations/{id}", get(reservations::get_one))
        .route(
            "/internal/reservations/{id}/commit",
            post(reservations::commit),
        )
        .route(
            "/internal/reservations/{id}/release",
            post(reservations::release),
        )
        .route(
            "/internal/reservations/{id}/return",
            post(reservations::return_stock),
        )
        .layer(middleware::map_response(no_store));
    let api = public.merge(internal).with_state(state);
    let ready: zocalo_telemetry::ReadinessCheck = std::sync::Arc::new(move || {
        let store = ready_store.clone();
        Box::pin(async move { store.ping().await.map_err(|e| e.to_string()) })
    });
    let openapi = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    zocalo_http::server::finish("catalog", api, ready, openapi)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Zócalo catalog",
        description = "Second-hand books: listings, search, and (internal) stock reservations."
    ),
    paths(
        books::create,
        books::list,
        books::get_one,
        books::update,
        books::withdraw,
        reservations::reserve,
        reservations::get_one,
        reservations::commit,
        reservations::release,
        reservations::return_stock
    ),
    components(schemas(
        Book,
        BookInput,
        BookPatch,
        PriceInput,
        Money,
        Condition,
        books::BookPage,
        ReservationInput,
        ItemInput,
        Reservation,
        ReservedItem,
        ReservationStatus
    ))
)]
struct ApiDoc;

/// Reservation state is private to the services involved and changes any
/// moment: no cache may keep it.
async fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn created<T: Serialize>(location: String, body: T) -> Result<Response, Problem> {
    let location = HeaderValue::from_str(&location).map_err(Problem::internal)?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response())
}
