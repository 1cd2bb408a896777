//! The internal reservation API, for the orders service: hold stock for an
//! order, then commit (sold) or release (stock returns); a committed sale
//! that is undone is returned (stock returns). Callers need a
//! token with the `service` role; a user's token, even an admin's, gets 403
//! because stock must only move as part of an order.
//!
//! Every call is idempotent, so the orders saga may retry any step after a
//! timeout without double-counting stock.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;
use zocalo_http::auth::{AuthUser, roles};
use zocalo_http::extract::{Json, Path};
use zocalo_http::{FieldError, Problem};

use super::created;
use crate::app::AppState;
use crate::domain::{
    Reservation, ReservationInput, ReservationStatus, ReserveOutcome, Shortfall, ShortfallKind,
    Transitioned, now,
};

pub const INSUFFICIENT_STOCK: &str = "urn:zocalo:problem:insufficient-stock";
pub const RESERVATION_STATE: &str = "urn:zocalo:problem:reservation-state";

fn require_service(user: &AuthUser) -> Result<(), Problem> {
    if user.has_role(roles::SERVICE) {
        Ok(())
    } else {
        Err(Problem::forbidden("this needs a service token"))
    }
}

fn count(outcome: &'static str) {
    metrics::counter!("catalog_reservations_total", "outcome" => outcome).increment(1);
}

/// Hold stock for every item, or for none.
#[utoipa::path(post, path = "/internal/reservations", request_body = ReservationInput, security(("bearer" = [])),
    responses(
        (status = 201, body = Reservation, description = "held"),
        (status = 200, body = Reservation, description = "this reservation_id existed; nothing changed"),
        (status = 403), (status = 409, description = "insufficient stock, or reservation_id reused for other items"),
        (status = 422, description = "bad input, or an unknown or withdrawn book")))]
pub async fn reserve(
    State(state): State<AppState>,
    user: AuthUser,
    Json(input): Json<ReservationInput>,
) -> Result<Response, Problem> {
    require_service(&user)?;
    let new = input.validate(state.default_ttl_secs)?;
    let lines = new.lines.clone();
    match state.store.reserve(new).await? {
        ReserveOutcome::Created(reservation) => {
            count("held");
            created(
                format!("/internal/reservations/{}", reservation.reservation_id),
                reservation,
            )
        }
        ReserveOutcome::Existing(reservation) if reservation.matches(&lines) => {
            count("existing");
            Ok(Json(reservation).into_response())
        }
        ReserveOutcome::Existing(_) => {
            count("mismatch");
            Err(Problem::conflict(
                "this reservation_id is already used for different items",
            ))
        }
        ReserveOutcome::Rejected(shortfalls) => Err(rejected(shortfalls)),
    }
}

/// Books that are not for sale make the request invalid (422); otherwise
/// the stock is short (409, retrying later may succeed).
fn rejected(shortfalls: Vec<Shortfall>) -> Problem {
    let unavailable: Vec<FieldError> = shortfalls
        .iter()
        .filter(|s| s.kind == ShortfallKind::Unavailable)
        .map(|s| FieldError {
            field: format!("items[{}].book_id", s.index),
            message: format!("book {} is not for sale (unknown or withdrawn)", s.book_id),
        })
        .collect();
    if !unavailable.is_empty() {
        count("unavailable");
        return Problem::invalid_fields(unavailable);
    }
    count("insufficient");
    let short: Vec<(FieldError, String)> = shortfalls
        .iter()
        .filter_map(|s| match s.kind {
            ShortfallKind::Insufficient {
                available,
                requested,
            } => Some((
                FieldError {
                    field: format!("items[{}].quantity", s.index),
                    message: format!(
                        "book {}: {requested} asked, {available} available",
                        s.book_id
                    ),
                },
                s.book_id.to_string(),
            )),
            ShortfallKind::Unavailable => None,
        })
        .collect();
    let books: Vec<&str> = short.iter().map(|(_, id)| id.as_str()).collect();
    let mut problem = Problem::new(StatusCode::CONFLICT)
        .with_type(INSUFFICIENT_STOCK)
        .with_title("Insufficient stock")
        .with_detail(format!(
            "not enough stock of book {}; nothing was reserved",
            books.join(", ")
        ));
    problem.errors = short.into_iter().map(|(error, _)| error).collect();
    problem
}

fn state_conflict(reservation: &Reservation, action: &str) -> Problem {
    let status = match reservation.status {
        // Past its expiry but not yet swept: it can no longer be committed.
        ReservationStatus::Held => "expired",
        other => other.as_str(),
    };
    Problem::conflict(format!("cannot {action}: the reservation is {status}"))
        .with_type(RESERVATION_STATE)
}

#[utoipa::path(get, path = "/internal/reservations/{id}", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = Reservation), (status = 403), (status = 404)))]
pub async fn get_one(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> Result<Json<Reservation>, Problem> {
    require_service(&user)?;
    state
        .store
        .reservation(id)
        .await?
        .map(Json)
        .ok_or_else(Problem::not_found)
}

/// The order is paid: the held copies are sold. Repeating is harmless; a
/// released or expired reservation cannot be committed (409).
#[utoipa::path(post, path = "/internal/reservations/{id}/commit", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = Reservation), (status = 403), (status = 404), (status = 409)))]
pub async fn commit(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> Result<Json<Reservation>, Problem> {
    require_service(&user)?;
    let outcome = state.store.commit_reservation(id, now()).await?;
    answer_transition(
        outcome,
        |status| status == ReservationStatus::Committed,
        |reservation| state_conflict(reservation, "commit"),
        "committed",
    )
}

/// The order failed or was cancelled: the held copies return to stock,
/// once, however often this is called. A committed reservation cannot be
/// released (409). An expired one answers 200 with status `expired`: its
/// stock has already returned.
#[utoipa::path(post, path = "/internal/reservations/{id}/release", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = Reservation), (status = 403), (status = 404), (status = 409)))]
pub async fn release(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> Result<Json<Reservation>, Problem> {
    require_service(&user)?;
    let outcome = state.store.release_reservation(id, now()).await?;
    answer_transition(
        outcome,
        ReservationStatus::returned_stock,
        |reservation| state_conflict(reservation, "release"),
        "released",
    )
}

/// A paid order was cancelled: the sold copies go back to stock, once,
/// however often (or concurrently) this is called; a repeat answers 200
/// with status `returned`. Only a committed reservation can be returned: a
/// held one is released instead, and one that never sold has nothing to
/// give back (409).
#[utoipa::path(post, path = "/internal/reservations/{id}/return", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = Reservation), (status = 403), (status = 404), (status = 409)))]
pub async fn return_stock(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> Result<Json<Reservation>, Problem> {
    require_service(&user)?;
    let outcome = state.store.return_reservation(id, now()).await?;
    answer_transition(
        outcome,
        |status| status == ReservationStatus::Returned,
        |reservation| {
            Problem::conflict(format!(
                "cannot return: the reservation is {}, only a committed one can be returned",
                reservation.status.as_str()
            ))
            .with_type(RESERVATION_STATE)
        },
        "returned",
    )
}

/// The answer to a state transition (commit, release, return): 404 for an
/// unknown reservation, 409 when it did not end where the caller asked, and
/// the reservation otherwise; only a call that changed it is counted as
/// `changed_label`, so repeats are not.
fn answer_transition(
    outcome: Option<Transitioned>,
    reached: impl FnOnce(ReservationStatus) -> bool,
    conflict: impl FnOnce(&Reservation) -> Problem,
    changed_label: &'static str,
) -> Result<Json<Reservation>, Problem> {
    let outcome = outcome.ok_or_else(Problem::not_found)?;
    if !reached(outcome.reservation.status) {
        count("refused");
        return Err(conflict(&outcome.reservation));
    }
    if outcome.changed {
        count(changed_label);
    }
    Ok(Json(outcome.reservation))
}
