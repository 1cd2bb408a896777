//! The command side's HTTP API: writes under `/api/cinema` (reads are the
//! query side's) and the event log for replays under `/internal/events`
//! (service tokens only, not routed by the gateway).

mod events;
mod purchases;
mod tickets;
mod venues;
mod webhooks;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::OpenApi;
use uuid::Uuid;
use zocalo_bus::Event;
use zocalo_contracts::cinema::{self as contract, CinemaSaved};
use zocalo_http::Problem;
use zocalo_http::auth::{AuthUser, roles};
use zocalo_http::extract::Json;

use crate::app::AppState;
use crate::error::CinemaError;
use crate::store::{Kind, Record, Saved};

pub fn router(state: AppState) -> Router {
    let ready_store = state.store.clone();
    let api = Router::new()
        .route("/api/cinema/chains", post(venues::create_chain))
        .route(
            "/api/cinema/chains/{id}",
            patch(venues::update_chain).delete(venues::delete_chain),
        )
        .route("/api/cinema/cinemas", post(venues::create_cinema))
        .route(
            "/api/cinema/cinemas/{id}",
            patch(venues::update_cinema).delete(venues::delete_cinema),
        )
        .route(
            "/api/cinema/cinemas/{id}/managers/{user_id}",
            put(venues::assign_manager).delete(venues::remove_manager),
        )
        .route("/api/cinema/rooms", post(venues::create_room))
        .route(
            "/api/cinema/rooms/{id}",
            patch(venues::update_room).delete(venues::delete_room),
        )
        .route("/api/cinema/movies", post(venues::create_movie))
        .route(
            "/api/cinema/movies/{id}",
            patch(venues::update_movie).delete(venues::delete_movie),
        )
        .route("/api/cinema/showtimes", post(venues::create_showtime))
        .route(
            "/api/cinema/showtimes/{id}",
            patch(venues::update_showtime).delete(venues::cancel_showtime),
        )
        .route(
            "/api/cinema/showtimes/{id}/purchases",
            post(purchases::purchase),
        )
        .route("/api/cinema/purchases/{id}/refund", post(purchases::refund))
        .route("/api/cinema/tickets/{file}", get(tickets::ticket_pdf))
        .route(
            "/api/cinema/tickets/purchases/{file}",
            get(tickets::purchase_pdf_by_file),
        )
        .route(
            "/api/cinema/purchases/{id}/tickets.pdf",
            get(tickets::purchase_pdf),
        )
        .route(
            "/api/cinema/cinemas/{id}/webhooks",
            post(webhooks::create).get(webhooks::list),
        )
        .route(
            "/api/cinema/cinemas/{id}/webhooks/{webhook_id}",
            axum::routing::delete(webhooks::delete),
        )
        .route(
            "/api/cinema/cinemas/{id}/webhooks/{webhook_id}/deliveries",
            get(webhooks::deliveries),
        )
        .route("/api/cinema/webhooks", get(webhooks::list_by_query))
        .route(
            "/api/cinema/webhooks/{webhook_id}/deliveries",
            get(webhooks::deliveries_by_webhook),
        )
        .route("/internal/events", get(events::page))
        .with_state(state);
    let ready: zocalo_telemetry::ReadinessCheck = std::sync::Arc::new(move || {
        let store = ready_store.clone();
        Box::pin(async move { store.ping().await.map_err(|e| e.to_string()) })
    });
    let openapi = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    zocalo_http::server::finish("cinema-command", api, ready, openapi)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Zócalo cinema (commands)",
        description = "Writes of the cinema chain: venues, movies, showtimes, seat purchases; the event log for replays."
    ),
    paths(
        venues::create_chain,
        venues::update_chain,
        venues::delete_chain,
        venues::create_cinema,
        venues::update_cinema,
        venues::delete_cinema,
        venues::assign_manager,
        venues::remove_manager,
        venues::create_room,
        venues::update_room,
        venues::delete_room,
        venues::create_movie,
        venues::update_movie,
        venues::delete_movie,
        venues::create_showtime,
        venues::update_showtime,
        venues::cancel_showtime,
        purchases::purchase,
        purchases::refund,
        tickets::ticket_pdf,
        tickets::purchase_pdf,
        tickets::purchase_pdf_by_file,
        webhooks::create,
        webhooks::list,
        webhooks::list_by_query,
        webhooks::delete,
        webhooks::deliveries,
        webhooks::deliveries_by_webhook,
        events::page
    ),
    components(schemas(
        crate::domain::ChainInput,
        crate::domain::ChainPatch,
        crate::domain::CinemaInput,
        crate::domain::CinemaPatch,
        crate::domain::RoomInput,
        crate::domain::RoomPatch,
        crate::domain::MovieInput,
        crate::domain::MoviePatch,
        crate::domain::ShowtimeInput,
        crate::domain::ShowtimePatch,
        crate::domain::PriceInput,
        crate::domain::PurchaseInput,
        crate::domain::Purchase,
        crate::domain::PurchaseStatus,
        webhooks::WebhookInput,
        webhooks::CreatedWebhook,
        crate::store::notify::Webhook,
        crate::store::notify::DeliveryRecord
    ))
)]
struct ApiDoc;

/// An event of the cinema topic.
fn event(kind: &str, payload: &impl Serialize) -> Event {
    Event::new(
        contract::TOPIC,
        kind,
        serde_json::to_value(payload).unwrap_or_default(),
    )
}

fn doc(value: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// An aggregate's document, or 404.
async fn load<T: DeserializeOwned>(
    state: &AppState,
    kind: Kind,
    id: Uuid,
) -> Result<T, CinemaError> {
    let doc = state
        .store
        .load(kind, id)
        .await?
        .ok_or(CinemaError::NotFound)?;
    serde_json::from_value(doc).map_err(|e| CinemaError::Problem(Problem::internal(e)))
}

/// Save a record with its events; `in_use` explains a refused reference.
async fn commit(
    state: &AppState,
    record: Record,
    events: Vec<Event>,
    in_use: &str,
) -> Result<(), CinemaError> {
    match state.store.save(record, events).await? {
        Saved::Saved => {
            state.relay_wake.notify_one();
            Ok(())
        }
        Saved::Stale => Err(CinemaError::Stale),
        Saved::Overlaps(clash) => Err(CinemaError::Overlap(clash)),
        Saved::Reference => Err(CinemaError::Reference(in_use.into())),
    }
}

/// Delete an aggregate at `version`, publishing its tombstone.
async fn remove(
    state: &AppState,
    kind: Kind,
    id: Uuid,
    version: i64,
    deleted_kind: &str,
    in_use: &str,
) -> Result<StatusCode, CinemaError> {
    let tombstone = event(
        deleted_kind,
        &contract::Deleted {
            id,
            version: version + 1,
        },
    );
    match state
        .store
        .delete(kind, id, version, vec![tombstone])
        .await?
    {
        Saved::Saved => {
            state.relay_wake.notify_one();
            Ok(StatusCode::NO_CONTENT)
        }
        Saved::Stale => Err(CinemaError::Stale),
        Saved::Reference => Err(CinemaError::Reference(in_use.into())),
        Saved::Overlaps(clash) => Err(CinemaError::Overlap(clash)),
    }
}

/// `201 Created` with the resource's address (read from the query side).
fn created<T: Serialize>(location: String, body: T) -> Result<Response, CinemaError> {
    let location =
        HeaderValue::from_str(&location).map_err(|e| CinemaError::Problem(Problem::internal(e)))?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response())
}

/// Admins only; anyone else gets 403.
/// The cinema, if the caller runs it: an admin, or a manager it lists.
/// A manager of other cinemas gets 404, as if it did not exist; a caller
/// who is no manager at all gets 403.
async fn managed_cinema(
    state: &AppState,
    user: &AuthUser,
    cinema_id: Uuid,
) -> Result<CinemaSaved, CinemaError> {
    user.require_role(roles::MANAGER)?;
    let cinema: CinemaSaved = load(state, Kind::Cinema, cinema_id).await?;
    if user.is_admin() || cinema.manager_ids.contains(&user.user_id()?) {
        Ok(cinema)
    } else {
        Err(CinemaError::NotFound)
    }
}
