//! The query API: `GET`/`HEAD` under `/api/cinema/…`, answered from the read
//! models only. Public reads get an `ETag` and `Cache-Control`; the
//! caller's purchases are private and never cached.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, NaiveDate, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;
use zocalo_contracts::cinema::{ACCESSIBLE, SCHEDULED, STANDARD};
use zocalo_http::auth::AuthUser;
use zocalo_http::extract::{Json, Path, Query};

use crate::app::AppState;
use crate::documents::{
    ChainView, CinemaView, Doc, Key, Kind, MovieView, NamedRef, PurchaseView, RoomView,
    SeatMapView, ShowtimeView,
};
use crate::error::QueryError;
use crate::store::{DocQuery, Order};

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 100;
const MAX_OFFSET: u32 = 10_000;

pub fn router(state: AppState, cache_max_age_secs: u32) -> Router {
    let ready_store = state.store.clone();
    let read_cache = state.read_cache.clone();
    let public = Router::new()
        .route("/api/cinema/chains", get(list_chains))
        .route("/api/cinema/chains/{id}", get(get_chain))
        .route("/api/cinema/cinemas", get(list_cinemas))
        .route("/api/cinema/cinemas/{id}", get(get_cinema))
        .route("/api/cinema/movies", get(now_showing))
        .route("/api/cinema/movies/{id}", get(get_movie))
        .route("/api/cinema/showtimes", get(list_showtimes))
        .route("/api/cinema/showtimes/{id}", get(get_showtime))
        .route("/api/cinema/showtimes/{id}/seats", get(get_seats))
        .route("/api/cinema/share/showtimes/{id}", get(share_showtime))
        .layer(middleware::from_fn(move |req, next| {
            zocalo_http::conditional::conditional_get(
                cache_max_age_secs,
                read_cache.clone(),
                req,
                next,
            )
        }));
    let mine = Router::new()
        .route("/api/cinema/purchases", get(my_purchases))
        .route("/api/cinema/purchases/{id}", get(my_purchase))
        .layer(middleware::map_response(|mut response: Response| async {
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, no-store"),
            );
            response
        }));
    let api = public.merge(mine).with_state(state);
    let ready: zocalo_telemetry::ReadinessCheck = std::sync::Arc::new(move || {
        let store = ready_store.clone();
        Box::pin(async move { store.ping().await.map_err(|e| e.to_string()) })
    });
    let openapi = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    zocalo_http::server::finish("cinema-query", api, ready, openapi)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Zócalo cinema (reads)",
        description = "Chains, cinemas, movies now showing, showtimes, live seat maps and the caller's purchases, served from read models projected from the cinema events."
    ),
    paths(
        list_chains,
        get_chain,
        list_cinemas,
        get_cinema,
        now_showing,
        get_movie,
        list_showtimes,
        get_showtime,
        get_seats,
        share_showtime,
        my_purchases,
        my_purchase
    ),
    components(schemas(
        ChainView,
        CinemaView,
        MovieView,
        ShowtimeView,
        PurchaseView,
        SeatMapResponse,
        ShareView
    ))
)]
struct ApiDoc;

/// A page of documents.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    items: Vec<T>,
    /// The `offset` of the next page; absent on the last one.
    next_offset: Option<u32>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct PageParams {
    /// 1–100, default 50.
    limit: Option<u32>,
    /// 0–10000, default 0.
    offset: Option<u32>,
}

impl PageParams {
    /// `(limit, offset)`; the store is asked one more than `limit` so that
    /// a next page is known to exist.
    fn checked(&self) -> Result<(u32, u32), QueryError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(QueryError::invalid(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            ));
        }
        let offset = self.offset.unwrap_or(0);
        if offset > MAX_OFFSET {
            return Err(QueryError::invalid(
                "offset",
                format!("must be at most {MAX_OFFSET}"),
            ));
        }
        Ok((limit, offset))
    }
}

/// Views of `docs`, as a page of at most `limit` (the store gave one more
/// if there is a next page).
fn page<T: DeserializeOwned>(docs: Vec<Doc>, limit: u32, offset: u32) -> Page<T> {
    let more = docs.len() > limit as usize;
    Page {
        items: docs
            .iter()
            .take(limit as usize)
            .filter_map(Doc::view)
            .collect(),
        next_offset: more.then_some(offset + limit),
    }
}

async fn list_of<T: DeserializeOwned>(
    state: &AppState,
    mut query: DocQuery,
    params: &PageParams,
) -> Result<Page<T>, QueryError> {
    let (limit, offset) = params.checked()?;
    query.limit = limit + 1;
    query.offset = offset;
    Ok(page(state.store.list(&query).await?, limit, offset))
}

async fn one<T: DeserializeOwned>(state: &AppState, kind: Kind, id: Uuid) -> Result<T, QueryError> {
    state
        .store
        .document(kind, id)
        .await?
        .and_then(|doc| doc.view())
        .ok_or(QueryError::NotFound)
}

/// Chains with their cinemas, by name.
#[utoipa::path(get, path = "/api/cinema/chains", params(PageParams),
    responses((status = 200, body = Page<ChainView>), (status = 400)))]
async fn list_chains(
    State(state): State<AppState>,
    Query(params): Query<PageParams>,
) -> Result<Json<Page<ChainView>>, QueryError> {
    let query = DocQuery::new(Kind::Chain, Order::Name, 0);
    Ok(Json(list_of(&state, query, &params).await?))
}

#[utoipa::path(get, path = "/api/cinema/chains/{id}", params(("id" = Uuid, Path)),
    responses((status = 200, body = ChainView), (status = 404)))]
async fn get_chain(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<ChainView>, QueryError> {
    Ok(Json(one(&state, Kind::Chain, id).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct CinemaParams {
    /// Exact city, case-insensitive.
    city: Option<String>,
    chain_id: Option<Uuid>,
    limit: Option<u32>,
    offset: Option<u32>,
}

/// Cinemas with their chain and rooms, by name; `city` narrows them.
#[utoipa::path(get, path = "/api/cinema/cinemas", params(CinemaParams),
    responses((status = 200, body = Page<CinemaView>), (status = 400)))]
async fn list_cinemas(
    State(state): State<AppState>,
    Query(params): Query<CinemaParams>,
) -> Result<Json<Page<CinemaView>>, QueryError> {
    let mut query = DocQuery::new(Kind::Cinema, Order::Name, 0);
    if let Some(city) = params.city.as_deref().map(str::trim) {
        if city.is_empty() || city.chars().count() > 100 {
            return Err(QueryError::invalid("city", "must have 1 to 100 characters"));
        }
        query.city = Some(city.to_lowercase());
    }
    if let Some(chain) = params.chain_id {
        query.keys.push((Key::Chain, chain));
    }
    let paging = PageParams {
        limit: params.limit,
        offset: params.offset,
    };
    Ok(Json(list_of(&state, query, &paging).await?))
}

#[utoipa::path(get, path = "/api/cinema/cinemas/{id}", params(("id" = Uuid, Path)),
    responses((status = 200, body = CinemaView), (status = 404)))]
async fn get_cinema(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<CinemaView>, QueryError> {
    Ok(Json(one(&state, Kind::Cinema, id).await?))
}

/// Keep the scheduled showtimes starting in `[from, until)`.
fn keep_window(movie: &mut MovieView, from: DateTime<Utc>, until: DateTime<Utc>) {
    movie
        .showtimes
        .retain(|s| s.status == SCHEDULED && s.starts_at >= from && s.starts_at < until);
}

/// Movies now showing: with a scheduled showtime from now to the configured
/// number of days ahead, by title, each with those showtimes.
#[utoipa::path(get, path = "/api/cinema/movies", params(PageParams),
    responses((status = 200, body = Page<MovieView>), (status = 400)))]
async fn now_showing(
    State(state): State<AppState>,
    Query(params): Query<PageParams>,
) -> Result<Json<Page<MovieView>>, QueryError> {
    let (limit, offset) = params.checked()?;
    let now = Utc::now();
    let until = now + state.now_showing;
    let docs = state
        .store
        .now_showing(now, until, limit + 1, offset)
        .await?;
    let mut movies: Page<MovieView> = page(docs, limit, offset);
    for movie in &mut movies.items {
        keep_window(movie, now, until);
    }
    Ok(Json(movies))
}

/// A movie with its coming scheduled showtimes.
#[utoipa::path(get, path = "/api/cinema/movies/{id}", params(("id" = Uuid, Path)),
    responses((status = 200, body = MovieView), (status = 404)))]
async fn get_movie(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<MovieView>, QueryError> {
    let mut movie: MovieView = one(&state, Kind::Movie, id).await?;
    keep_window(&mut movie, Utc::now(), DateTime::<Utc>::MAX_UTC);
    Ok(Json(movie))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ShowtimeParams {
    movie_id: Option<Uuid>,
    cinema_id: Option<Uuid>,
    /// A day (`2026-12-24`, UTC); without it, showtimes from now on.
    date: Option<String>,
    limit: Option<u32>,
    offset: Option<u32>,
}

/// The start of `date`'s day and of the next, in UTC.
fn day_bounds(date: &str) -> Result<(DateTime<Utc>, DateTime<Utc>), QueryError> {
    let day = NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .map_err(|_| QueryError::invalid("date", "must be a day as YYYY-MM-DD"))?;
    let start = day.and_time(chrono::NaiveTime::MIN).and_utc();
    Ok((start, start + chrono::Duration::days(1)))
}

/// Scheduled showtimes by start, with movie, room, cinema and prices;
/// narrowed by movie, cinema and day.
#[utoipa::path(get, path = "/api/cinema/showtimes", params(ShowtimeParams),
    responses((status = 200, body = Page<ShowtimeView>), (status = 400)))]
async fn list_showtimes(
    State(state): State<AppState>,
    Query(params): Query<ShowtimeParams>,
) -> Result<Json<Page<ShowtimeView>>, QueryError> {
    let mut query = DocQuery::new(Kind::Showtime, Order::AtAscending, 0);
    query.status = Some(SCHEDULED.into());
    if let Some(movie) = params.movie_id {
        query.keys.push((Key::Movie, movie));
    }
    if let Some(cinema) = params.cinema_id {
        query.keys.push((Key::Cinema, cinema));
    }
    match params.date.as_deref() {
        Some(date) => {
            let (from, until) = day_bounds(date)?;
            query.from = Some(from);
            query.until = Some(until);
        }
        None => query.from = Some(Utc::now()),
    }
    let paging = PageParams {
        limit: params.limit,
        offset: params.offset,
    };
    Ok(Json(list_of(&state, query, &paging).await?))
}

/// One showtime, whatever its status.
#[utoipa::path(get, path = "/api/cinema/showtimes/{id}", params(("id" = Uuid, Path)),
    responses((status = 200, body = ShowtimeView), (status = 404)))]
async fn get_showtime(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<ShowtimeView>, QueryError> {
    Ok(Json(one(&state, Kind::Showtime, id).await?))
}

/// The live seat map of a showtime, row by row.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeatMapResponse {
    showtime_id: Uuid,
    /// The seat map's version: it grows with every sale or refund.
    version: i64,
    status: String,
    starts_at: DateTime<Utc>,
    room: Option<NamedRef>,
    capacity: u32,
    sold: u32,
    free: u32,
    rows: Vec<SeatRow>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SeatRow {
    row: String,
    seats: Vec<Seat>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Seat {
    seat: String,
    /// `standard` or `accessible`.
    class: &'static str,
    /// `free`, `sold` or `disabled`.
    state: &'static str,
}

/// Row 0 is `A`, 25 is `Z`, 26 is `AA`.
pub fn row_label(mut index: u32) -> String {
    let mut label = Vec::new();
    loop {
        label.push(b'A' + (index % 26) as u8);
        if index < 26 {
            break;
        }
        index = index / 26 - 1;
    }
    label.reverse();
    String::from_utf8(label).expect("ASCII letters")
}

fn seat_rows(room: &RoomView, sold: &[String]) -> Vec<SeatRow> {
    (0..u32::from(room.rows))
        .map(|r| {
            let row = row_label(r);
            let seats = (1..=u32::from(room.seats_per_row))
                .map(|n| {
                    let seat = format!("{row}{n}");
                    let state = if room.disabled.contains(&seat) {
                        "disabled"
                    } else if sold.binary_search_by(|s| cmp_seat(s, &seat)).is_ok() {
                        "sold"
                    } else {
                        "free"
                    };
                    let class = if room.accessible.contains(&seat) {
                        ACCESSIBLE
                    } else {
                        STANDARD
                    };
                    Seat { seat, class, state }
                })
                .collect();
            SeatRow { row, seats }
        })
        .collect()
}

fn cmp_seat(a: &str, b: &str) -> std::cmp::Ordering {
    crate::projection::seat_order(a).cmp(&crate::projection::seat_order(b))
}

fn seat_map_response(seats: SeatMapView) -> Option<SeatMapResponse> {
    let showtime = seats.showtime?;
    let rows = seats
        .room
        .as_ref()
        .map(|room| seat_rows(room, &seats.sold))
        .unwrap_or_default();
    let capacity = seats.room.as_ref().map_or(0, |room| room.capacity);
    let sold = u32::try_from(seats.sold.len()).unwrap_or(u32::MAX);
    Some(SeatMapResponse {
        showtime_id: seats.showtime_id,
        version: seats.version,
        status: showtime.status,
        starts_at: showtime.starts_at,
        room: seats.room.as_ref().map(|room| NamedRef {
            id: room.id,
            version: room.version,
            name: room.name.clone(),
        }),
        capacity,
        sold,
        free: capacity.saturating_sub(sold),
        rows,
    })
}

#[utoipa::path(get, path = "/api/cinema/showtimes/{id}/seats", params(("id" = Uuid, Path)),
    responses((status = 200, body = SeatMapResponse), (status = 404)))]
async fn get_seats(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Response, QueryError> {
    let seats: SeatMapView = one(&state, Kind::SeatMap, id).await?;
    seat_map_response(seats)
        .map(live)
        .ok_or(QueryError::NotFound)
}

/// A response that changes with every sale: caches (the gateway's, a
/// browser's) must revalidate it each time, which the `ETag` makes a cheap
/// 304 while it has not changed. The instance's own read cache still
/// serves it, cleared by every projected event.
fn live<T: Serialize>(body: T) -> Response {
    (
        [(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, no-cache"),
        )],
        Json(body),
    )
        .into_response()
}

/// What a share link shows: a showtime in a sentence, with where to look
/// and how many seats are left.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShareView {
    title: String,
    text: String,
    /// The showtime's own API path.
    showtime_url: String,
    seats_url: String,
    free_seats: Option<u32>,
    showtime: ShowtimeView,
}

/// The public share view of a showtime (what a share link points to).
#[utoipa::path(get, path = "/api/cinema/share/showtimes/{id}", params(("id" = Uuid, Path)),
    responses((status = 200, body = ShareView), (status = 404)))]
async fn share_showtime(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Response, QueryError> {
    let showtime: ShowtimeView = one(&state, Kind::Showtime, id).await?;
    let seats = state
        .store
        .document(Kind::SeatMap, id)
        .await?
        .and_then(|doc| doc.view::<SeatMapView>())
        .and_then(seat_map_response);
    let title = showtime
        .movie
        .as_ref()
        .map_or_else(|| "A showtime".to_owned(), |m| m.title.clone());
    let place = match (&showtime.cinema, &showtime.room) {
        (Some(cinema), Some(room)) => {
            format!(" at {}, {} ({})", cinema.name, cinema.city, room.name)
        }
        (Some(cinema), None) => format!(" at {}, {}", cinema.name, cinema.city),
        _ => String::new(),
    };
    let text = format!(
        "{title}{place}, {}",
        showtime.starts_at.format("%A %-d %B %Y, %H:%M UTC")
    );
    Ok(live(ShareView {
        title,
        text,
        showtime_url: format!("/api/cinema/showtimes/{id}"),
        seats_url: format!("/api/cinema/showtimes/{id}/seats"),
        free_seats: seats.map(|s| s.free),
        showtime,
    }))
}

/// The caller's purchases with their tickets, newest first.
#[utoipa::path(get, path = "/api/cinema/purchases", params(PageParams), security(("bearer" = [])),
    responses((status = 200, body = Page<PurchaseView>), (status = 400), (status = 401)))]
async fn my_purchases(
    State(state): State<AppState>,
    user: AuthUser,
    Query(params): Query<PageParams>,
) -> Result<Response, zocalo_http::Problem> {
    let mut query = DocQuery::new(Kind::Purchase, Order::AtDescending, 0);
    query.keys.push((Key::Customer, user.user_id()?));
    query.min_version = 1;
    let purchases: Page<PurchaseView> = list_of(&state, query, &params).await?;
    Ok(Json(purchases).into_response())
}

/// One of the caller's purchases; anybody else's is 404.
#[utoipa::path(get, path = "/api/cinema/purchases/{id}", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = PurchaseView), (status = 401), (status = 404)))]
async fn my_purchase(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> Result<Response, zocalo_http::Problem> {
    let customer = user.user_id()?;
    let purchase: PurchaseView = one(&state, Kind::Purchase, id).await?;
    if purchase.customer_id != customer || purchase.rank() == 0 {
        return Err(QueryError::NotFound.into());
    }
    Ok(Json(purchase).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_lettered_like_spreadsheet_columns() {
        assert_eq!(row_label(0), "A");
        assert_eq!(row_label(25), "Z");
        assert_eq!(row_label(26), "AA");
        assert_eq!(row_label(27), "AB");
    }

    #[test]
    fn days_are_utc_and_checked() {
        let (from, until) = day_bounds("2026-12-24").unwrap();
        assert_eq!(from.to_rfc3339(), "2026-12-24T00:00:00+00:00");
        assert_eq!((until - from).num_hours(), 24);
        assert!(day_bounds("24/12/2026").is_err());
        assert!(day_bounds("2026-02-30").is_err());
    }
}
