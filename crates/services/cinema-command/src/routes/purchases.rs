//! Buying seats and giving them back.
//!
//! A purchase holds its seats (one row per seat, which the database lets
//! exist once), charges the card with the purchase id as the idempotency
//! key, then completes: seats sold, tickets issued, `purchase.completed`
//! appended, in one transaction. A declined card releases the seats; a
//! hold a crash left behind is released by the sweeper. A retry with the
//! same `Idempotency-Key` resumes or repeats the first purchase.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::Utc;
use uuid::Uuid;
use zocalo_contracts::cinema::{CinemaSaved, ShowtimeSaved};
use zocalo_http::Problem;
use zocalo_http::auth::AuthUser;
use zocalo_http::extract::{Json, Path};
use zocalo_payments::{Charge, ChargeOutcome};

use super::{created, load};
use crate::app::AppState;
use crate::domain::{Purchase, PurchaseInput, PurchaseStatus, SeatRequest};
use crate::error::CinemaError;
use crate::store::{Held, Kind, Refusal};

const IDEMPOTENCY_KEY: &str = "idempotency-key";
const MAX_KEY_LENGTH: usize = 200;

fn idempotency_key(headers: &HeaderMap) -> Result<String, Problem> {
    let key = headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or_default();
    if key.is_empty() || key.len() > MAX_KEY_LENGTH {
        return Err(Problem::bad_request(format!(
            "an Idempotency-Key header of 1 to {MAX_KEY_LENGTH} characters is required to buy"
        )));
    }
    Ok(key.to_owned())
}

fn count(outcome: &'static str) {
    metrics::counter!("cinema_purchases_total", "outcome" => outcome).increment(1);
}

fn seats(state: &'static str, n: usize) {
    metrics::counter!("cinema_seats_total", "state" => state).increment(n as u64);
}

fn refused(refusal: Refusal, request: &SeatRequest) -> CinemaError {
    match refusal {
        Refusal::NoShowtime => CinemaError::NotFound,
        Refusal::NotScheduled => {
            count("not_scheduled");
            CinemaError::State("the showtime is cancelled".into())
        }
        Refusal::Started => {
            count("started");
            CinemaError::State("the showtime has started; sales are closed".into())
        }
        Refusal::Unsellable(seats) => CinemaError::Unsellable(seats),
        Refusal::Taken(seats) => {
            count("taken");
            CinemaError::SeatsTaken(seats)
        }
        Refusal::NotEnough { free } => {
            count("not_enough");
            let wanted = match request {
                SeatRequest::Quantity(n) => *n,
                SeatRequest::Seats(seats) => seats.len(),
            };
            CinemaError::NotEnoughSeats { free, wanted }
        }
    }
}

/// Buy seats of a showtime: `seats` by label, or a `quantity` of the best
/// free ones. The answer is authoritative (the read models may lag).
#[utoipa::path(post, path = "/api/cinema/showtimes/{id}/purchases", request_body = PurchaseInput,
    params(("id" = Uuid, Path), ("Idempotency-Key" = String, Header)), security(("bearer" = [])),
    responses((status = 201, body = Purchase), (status = 400), (status = 402, description = "card declined, seats released"),
        (status = 404), (status = 409, description = "seats taken, not enough free seats, or the showtime is cancelled"),
        (status = 422, description = "invalid input, unknown or disabled seats, or the key was used for another request")))]
pub async fn purchase(
    State(state): State<AppState>,
    user: AuthUser,
    Path(showtime_id): Path<Uuid>,
    headers: HeaderMap,
    Json(input): Json<PurchaseInput>,
) -> Result<Response, CinemaError> {
    let customer = user.user_id()?;
    let key = idempotency_key(&headers)?;
    let new = input.validate(showtime_id, customer, key, state.hold_ttl)?;
    let request = new.seats.clone();
    let held = match state.store.hold(new).await? {
        Held::New(purchase) => {
            seats("held", purchase.seats.len());
            purchase
        }
        Held::Existing {
            purchase,
            same_request: true,
        } => purchase,
        Held::Existing { .. } => {
            return Err(Problem::invalid_field(
                "Idempotency-Key",
                "was already used for a different purchase",
            )
            .into());
        }
        Held::Refused(refusal) => return Err(refused(refusal, &request)),
    };
    let purchase = settle(&state, held).await?;
    created(
        format!("/api/cinema/purchases/{}", purchase.purchase_id),
        purchase,
    )
}

/// Take a purchase as far as it goes: charge and complete a hold, or
/// repeat the outcome of one that already ended.
async fn settle(state: &AppState, purchase: Purchase) -> Result<Purchase, CinemaError> {
    match purchase.status {
        PurchaseStatus::Held => {}
        PurchaseStatus::Completed | PurchaseStatus::Refunded => return Ok(purchase),
        PurchaseStatus::Declined => return Err(CinemaError::Declined),
        PurchaseStatus::Expired => return Err(hold_expired()),
    }
    // Free showtimes have nothing to charge (the ledger only keeps
    // positive amounts).
    if purchase.total_cents > 0 && charge(state, &purchase).await? == ChargeOutcome::Declined {
        if state
            .store
            .release(
                purchase.purchase_id,
                PurchaseStatus::Declined.as_str(),
                Utc::now(),
            )
            .await?
        {
            count("declined");
            seats("released", purchase.seats.len());
        }
        return Err(CinemaError::Declined);
    }
    let (completed_now, after) = state
        .store
        .complete(purchase.purchase_id, Utc::now())
        .await?;
    if completed_now {
        state.relay_wake.notify_one();
        count("completed");
        seats("sold", after.tickets.len());
    }
    match after.status {
        PurchaseStatus::Completed | PurchaseStatus::Refunded => Ok(after),
        PurchaseStatus::Declined => Err(CinemaError::Declined),
        // Expired between the charge and now: the seats are gone, so the
        // money goes back.
        _ => {
            state.payments.refund(purchase.purchase_id).await?;
            Err(hold_expired())
        }
    }
}

async fn charge(state: &AppState, purchase: &Purchase) -> Result<ChargeOutcome, CinemaError> {
    Ok(state
        .payments
        .charge(Charge {
            key: purchase.purchase_id,
            amount_cents: purchase.total_cents,
            currency: &purchase.currency,
            card_token: &purchase.card_token,
            card_last4: &purchase.card_last4,
        })
        .await?)
}

fn hold_expired() -> CinemaError {
    count("expired");
    CinemaError::State(
        "the seat hold expired before the payment completed; nothing was charged".into(),
    )
}

/// Whether `user` may refund `purchase`: its customer, an admin, or a
/// manager of the showtime's cinema.
async fn may_refund(
    state: &AppState,
    user: &AuthUser,
    purchase: &Purchase,
) -> Result<bool, CinemaError> {
    if user.is_admin() || user.user_id().ok() == Some(purchase.customer_id) {
        return Ok(true);
    }
    let Ok(me) = user.user_id() else {
        return Ok(false);
    };
    let showtime: ShowtimeSaved = load(state, Kind::Showtime, purchase.showtime_id).await?;
    let cinema: CinemaSaved = load(state, Kind::Cinema, showtime.cinema_id).await?;
    Ok(cinema.manager_ids.contains(&me))
}

/// Refund a completed purchase: its seats are free again and the charge is
/// given back. Repeating it answers the same.
#[utoipa::path(post, path = "/api/cinema/purchases/{id}/refund", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = Purchase), (status = 404), (status = 409, description = "not a completed purchase")))]
pub async fn refund(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> Result<Json<Purchase>, CinemaError> {
    let purchase = state
        .store
        .purchase(id)
        .await?
        .ok_or(CinemaError::NotFound)?;
    if !may_refund(&state, &user, &purchase).await? {
        return Err(CinemaError::NotFound);
    }
    let (refunded_now, after) = state.store.refund(id, Utc::now()).await?;
    if after.status != PurchaseStatus::Refunded {
        return Err(CinemaError::State(format!(
            "a purchase that is {} cannot be refunded",
            after.status.as_str()
        )));
    }
    if refunded_now {
        state.relay_wake.notify_one();
        count("refunded");
        seats("released", after.seats.len());
    }
    // Idempotent: a repeated refund request finishes a refund whose charge
    // could not be given back the first time.
    state.payments.refund(id).await?;
    Ok(Json(after))
}
