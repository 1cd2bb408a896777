//! Webhooks of a cinema, for its managers (and admins): register a URL
//! (the signing secret is shown once), list, delete, read the delivery
//! log. A manager of another cinema gets 404 for all of it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use zocalo_http::Problem;
use zocalo_http::auth::AuthUser;
use zocalo_http::extract::{Json, Path, Query};
use zocalo_notify::webhook;

use super::created;
use crate::app::AppState;
use crate::error::CinemaError;
use crate::store::notify::{DeliveryRecord, MAX_WEBHOOKS_PER_CINEMA, Webhook, WebhookAdded};
use crate::webhooks::DELIVERED_KINDS;

/// The cinema, if `user` runs it. Unlike the rest of the API, a caller who
/// is no manager at all also gets 404: webhooks and their delivery logs
/// reveal nothing to anyone but the cinema's managers.
async fn managed_cinema(
    state: &AppState,
    user: &AuthUser,
    cinema: Uuid,
) -> Result<(), CinemaError> {
    match super::managed_cinema(state, user, cinema).await {
        Ok(_) => Ok(()),
        Err(CinemaError::Problem(problem)) if problem.status == 403 => Err(CinemaError::NotFound),
        Err(error) => Err(error),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookInput {
    /// An `http://` or `https://` URL that accepts `POST`s.
    pub url: String,
}

/// A new webhook, with its secret: the only time the secret is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhook {
    pub webhook_id: Uuid,
    pub cinema_id: Uuid,
    pub url: String,
    /// Verify `Zocalo-Signature` with it; it is not shown again.
    pub secret: String,
    pub events: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// Register a webhook for the cinema's events (showtime saved, purchase
/// completed or refunded).
#[utoipa::path(post, path = "/api/cinema/cinemas/{id}/webhooks", request_body = WebhookInput,
    params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 201, body = CreatedWebhook), (status = 403), (status = 404),
        (status = 409, description = "already registered, or too many"), (status = 422)))]
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    Path(cinema_id): Path<Uuid>,
    Json(input): Json<WebhookInput>,
) -> Result<Response, CinemaError> {
    managed_cinema(&state, &user, cinema_id).await?;
    let url = input.url.trim().to_owned();
    webhook::check_url(&url, state.allow_private_webhooks)
        .map_err(|why| Problem::invalid_field("url", why))?;
    let hook = Webhook {
        webhook_id: Uuid::now_v7(),
        cinema_id,
        url,
        secret: webhook::generate_secret(),
        created_by: user.user_id()?,
        created_at: Utc::now(),
    };
    match state
        .store
        .add_webhook(&hook, MAX_WEBHOOKS_PER_CINEMA)
        .await?
    {
        WebhookAdded::Added => {}
        WebhookAdded::Duplicate => {
            return Err(CinemaError::State(
                "this cinema already has a webhook for that URL".into(),
            ));
        }
        WebhookAdded::TooMany => {
            return Err(CinemaError::State(format!(
                "a cinema may have at most {MAX_WEBHOOKS_PER_CINEMA} webhooks"
            )));
        }
        WebhookAdded::NoCinema => return Err(CinemaError::NotFound),
    }
    created(
        format!(
            "/api/cinema/cinemas/{cinema_id}/webhooks/{}",
            hook.webhook_id
        ),
        CreatedWebhook {
            webhook_id: hook.webhook_id,
            cinema_id,
            url: hook.url,
            secret: hook.secret,
            events: DELIVERED_KINDS.iter().map(|k| (*k).to_owned()).collect(),
            created_at: hook.created_at,
        },
    )
}

/// The cinema's webhooks (without their secrets).
#[utoipa::path(get, path = "/api/cinema/cinemas/{id}/webhooks", params(("id" = Uuid, Path)),
    security(("bearer" = [])), responses((status = 200, body = Vec<Webhook>), (status = 403), (status = 404)))]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    Path(cinema_id): Path<Uuid>,
) -> Result<Json<Vec<Webhook>>, CinemaError> {
    managed_cinema(&state, &user, cinema_id).await?;
    Ok(Json(state.store.webhooks_of(cinema_id).await?))
}

#[derive(Debug, Deserialize)]
pub struct CinemaParam {
    cinema_id: Uuid,
}

/// [`list`] under `/api/cinema/webhooks?cinema_id=…`, which the gateway
/// sends here for reads too.
#[utoipa::path(get, path = "/api/cinema/webhooks", params(("cinema_id" = Uuid, Query)),
    security(("bearer" = [])), responses((status = 200, body = Vec<Webhook>), (status = 404)))]
pub async fn list_by_query(
    state: State<AppState>,
    user: AuthUser,
    Query(param): Query<CinemaParam>,
) -> Result<Json<Vec<Webhook>>, CinemaError> {
    list(state, user, Path(param.cinema_id)).await
}

/// The webhook, if `user` manages its cinema (and it is of `cinema`, when
/// the path names one).
async fn managed_webhook(
    state: &AppState,
    user: &AuthUser,
    cinema: Option<Uuid>,
    id: Uuid,
) -> Result<Webhook, CinemaError> {
    let hook = state
        .store
        .webhook(id)
        .await?
        .ok_or(CinemaError::NotFound)?;
    if cinema.is_some_and(|c| c != hook.cinema_id) {
        return Err(CinemaError::NotFound);
    }
    managed_cinema(state, user, hook.cinema_id).await?;
    Ok(hook)
}

/// Remove a webhook; deliveries still queued for it are dropped.
#[utoipa::path(delete, path = "/api/cinema/cinemas/{id}/webhooks/{webhook_id}",
    params(("id" = Uuid, Path), ("webhook_id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 404)))]
pub async fn delete(
    State(state): State<AppState>,
    user: AuthUser,
    Path((cinema_id, id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode, CinemaError> {
    managed_webhook(&state, &user, Some(cinema_id), id).await?;
    if state.store.delete_webhook(id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(CinemaError::NotFound)
    }
}

#[derive(Debug, Deserialize)]
pub struct LogParams {
    limit: Option<u32>,
}

const DEFAULT_LOG: u32 = 50;
const MAX_LOG: u32 = 500;

/// Delivery attempts of a webhook, newest first.
#[utoipa::path(get, path = "/api/cinema/cinemas/{id}/webhooks/{webhook_id}/deliveries",
    params(("id" = Uuid, Path), ("webhook_id" = Uuid, Path), ("limit" = Option<u32>, Query)),
    security(("bearer" = [])), responses((status = 200, body = Vec<DeliveryRecord>), (status = 404), (status = 422)))]
pub async fn deliveries(
    State(state): State<AppState>,
    user: AuthUser,
    Path((cinema_id, id)): Path<(Uuid, Uuid)>,
    Query(params): Query<LogParams>,
) -> Result<Json<Vec<DeliveryRecord>>, CinemaError> {
    delivery_log(&state, &user, Some(cinema_id), id, params).await
}

/// [`deliveries`] under `/api/cinema/webhooks/{webhook_id}/deliveries`.
#[utoipa::path(get, path = "/api/cinema/webhooks/{webhook_id}/deliveries",
    params(("webhook_id" = Uuid, Path), ("limit" = Option<u32>, Query)),
    security(("bearer" = [])), responses((status = 200, body = Vec<DeliveryRecord>), (status = 404)))]
pub async fn deliveries_by_webhook(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    Query(params): Query<LogParams>,
) -> Result<Json<Vec<DeliveryRecord>>, CinemaError> {
    delivery_log(&state, &user, None, id, params).await
}

async fn delivery_log(
    state: &AppState,
    user: &AuthUser,
    cinema: Option<Uuid>,
    id: Uuid,
    params: LogParams,
) -> Result<Json<Vec<DeliveryRecord>>, CinemaError> {
    let limit = params.limit.unwrap_or(DEFAULT_LOG);
    if !(1..=MAX_LOG).contains(&limit) {
        return Err(Problem::invalid_field("limit", format!("must be 1 to {MAX_LOG}")).into());
    }
    managed_webhook(state, user, cinema, id).await?;
    Ok(Json(state.store.deliveries(id, limit).await?))
}
