//! The event log, page by page, for the query side's replays.

use axum::extract::State;
use serde::Deserialize;
use zocalo_contracts::cinema::EventLogPage;
use zocalo_http::Problem;
use zocalo_http::auth::{AuthUser, roles};
use zocalo_http::extract::{Json, Query};

use crate::app::AppState;
use crate::error::CinemaError;

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

#[derive(Debug, Deserialize)]
pub struct PageParams {
    after: Option<i64>,
    limit: Option<u32>,
}

/// Events with `seq > after`, oldest first. Sequence numbers commit in
/// order, so paging on `next_after` never skips one (service tokens only).
#[utoipa::path(get, path = "/internal/events", security(("bearer" = [])),
    params(("after" = Option<i64>, Query), ("limit" = Option<u32>, Query)),
    responses((status = 200), (status = 403), (status = 422)))]
pub async fn page(
    State(state): State<AppState>,
    user: AuthUser,
    Query(params): Query<PageParams>,
) -> Result<Json<EventLogPage>, CinemaError> {
    if !user.has_role(roles::SERVICE) {
        return Err(Problem::forbidden("this needs a service token").into());
    }
    let after = params.after.unwrap_or(0);
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if after < 0 {
        return Err(Problem::invalid_field("after", "must be 0 or more").into());
    }
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Problem::invalid_field("limit", format!("must be 1 to {MAX_LIMIT}")).into());
    }
    let mut events = state.store.events_after(after, limit + 1).await?;
    let next_after = if events.len() > limit as usize {
        events.truncate(limit as usize);
        events.last().map(|e| e.seq)
    } else {
        None
    };
    Ok(Json(EventLogPage { events, next_after }))
}
