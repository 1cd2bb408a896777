//! Ticket PDFs for their owner, served from object storage.
//!
//! The document is made by a job after the purchase completes, so for a
//! moment after buying it may not exist yet: that is a 404 with
//! `Retry-After`. A refunded purchase's tickets are void (404). Other
//! people's tickets are 404, as if they did not exist.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;
use zocalo_http::Problem;
use zocalo_http::auth::AuthUser;
use zocalo_http::extract::Path;
use zocalo_objects::ObjectError;

use crate::app::AppState;
use crate::domain::{Purchase, PurchaseStatus};
use crate::error::CinemaError;
use crate::tickets::{purchase_key, ticket_key};

/// Seconds a client should wait for a document being made.
const RETRY_AFTER_SECS: u64 = 2;

/// `<uuid>.pdf` → the uuid; anything else is not a document of ours.
fn pdf_id(file: &str) -> Result<Uuid, CinemaError> {
    file.strip_suffix(".pdf")
        .and_then(|id| id.parse().ok())
        .ok_or(CinemaError::NotFound)
}

/// The purchase, if `user` bought it and it still stands.
async fn owned(state: &AppState, user: &AuthUser, id: Uuid) -> Result<Purchase, CinemaError> {
    let purchase = state
        .store
        .purchase(id)
        .await?
        .ok_or(CinemaError::NotFound)?;
    if user.user_id().ok() != Some(purchase.customer_id) {
        return Err(CinemaError::NotFound);
    }
    match purchase.status {
        PurchaseStatus::Completed => Ok(purchase),
        PurchaseStatus::Refunded => Err(Problem::not_found()
            .with_detail("the purchase was refunded; its tickets are void")
            .into()),
        _ => Err(Problem::not_found()
            .with_detail("the purchase has no tickets")
            .into()),
    }
}

async fn serve(state: &AppState, key: &str, filename: String) -> Result<Response, CinemaError> {
    let object = match state.objects.get(key, None).await {
        Ok(object) => object,
        Err(ObjectError::NotFound(_)) => {
            return Err(Problem::not_found()
                .with_detail("the tickets are being prepared; try again shortly")
                .with_retry_after(RETRY_AFTER_SECS)
                .into());
        }
        Err(error) => return Err(Problem::internal(error).into()),
    };
    let disposition = HeaderValue::from_str(&format!("inline; filename=\"{filename}\""))
        .map_err(|e| CinemaError::Problem(Problem::internal(e)))?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/pdf"),
            ),
            (header::CONTENT_LENGTH, HeaderValue::from(object.size)),
            (header::CONTENT_DISPOSITION, disposition),
            // Someone's tickets: never in a shared cache.
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, no-store"),
            ),
        ],
        Body::from_stream(object.body),
    )
        .into_response())
}

/// One ticket's PDF (its owner only).
#[utoipa::path(get, path = "/api/cinema/tickets/{ticket_id}.pdf", params(("ticket_id" = Uuid, Path)),
    security(("bearer" = [])),
    responses((status = 200, content_type = "application/pdf"),
        (status = 404, description = "not yours, refunded, or not made yet (then with Retry-After)")))]
pub async fn ticket_pdf(
    State(state): State<AppState>,
    user: AuthUser,
    Path(file): Path<String>,
) -> Result<Response, CinemaError> {
    let ticket = pdf_id(&file)?;
    let purchase = state
        .store
        .purchase_of_ticket(ticket)
        .await?
        .ok_or(CinemaError::NotFound)?;
    let purchase = owned(&state, &user, purchase).await?;
    serve(
        &state,
        &ticket_key(purchase.purchase_id, ticket),
        format!("ticket-{ticket}.pdf"),
    )
    .await
}

/// Every ticket of a purchase in one PDF (its owner only).
#[utoipa::path(get, path = "/api/cinema/purchases/{id}/tickets.pdf", params(("id" = Uuid, Path)),
    security(("bearer" = [])),
    responses((status = 200, content_type = "application/pdf"),
        (status = 404, description = "not yours, refunded, or not made yet (then with Retry-After)")))]
pub async fn purchase_pdf(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> Result<Response, CinemaError> {
    let purchase = owned(&state, &user, id).await?;
    serve(
        &state,
        &purchase_key(purchase.purchase_id),
        format!("tickets-{id}.pdf"),
    )
    .await
}

/// The same document under `/api/cinema/tickets`, the prefix the gateway
/// sends to this service for every method (`GET /api/cinema/purchases/…`
/// goes to the query side).
#[utoipa::path(get, path = "/api/cinema/tickets/purchases/{id}.pdf", params(("id" = Uuid, Path)),
    security(("bearer" = [])),
    responses((status = 200, content_type = "application/pdf"), (status = 404)))]
pub async fn purchase_pdf_by_file(
    state: State<AppState>,
    user: AuthUser,
    Path(file): Path<String>,
) -> Result<Response, CinemaError> {
    let id = pdf_id(&file)?;
    purchase_pdf(state, user, Path(id)).await
}
