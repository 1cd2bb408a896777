//! Chains, cinemas and their managers (admins), rooms and showtimes (the
//! cinema's managers), movies (admins and managers).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use uuid::Uuid;
use zocalo_contracts::cinema::{
    self as contract, CANCELLED, ChainSaved, CinemaSaved, MovieSaved, ShowtimeSaved,
};
use zocalo_http::Problem;
use zocalo_http::auth::{AuthUser, roles};
use zocalo_http::extract::{Json, Path};

use super::{commit, created, doc, event, load, managed_cinema, remove};
use crate::app::AppState;
use crate::domain::{
    ChainInput, ChainPatch, CinemaInput, CinemaPatch, MovieInput, MoviePatch, Room, RoomInput,
    RoomPatch, ShowtimeContext, ShowtimeInput, ShowtimePatch, with_manager,
};
use crate::error::CinemaError;
use crate::store::{Kind, Record};

fn chain_record(chain: &ChainSaved) -> Record {
    Record {
        kind: Kind::Chain,
        id: chain.chain_id,
        version: chain.version,
        parent: None,
        doc: doc(chain),
        slot: None,
    }
}

fn cinema_record(cinema: &CinemaSaved) -> Record {
    Record {
        kind: Kind::Cinema,
        id: cinema.cinema_id,
        version: cinema.version,
        parent: Some(cinema.chain_id),
        doc: doc(cinema),
        slot: None,
    }
}

fn room_record(room: &Room) -> Record {
    Record {
        kind: Kind::Room,
        id: room.saved.room_id,
        version: room.saved.version,
        parent: Some(room.saved.cinema_id),
        doc: doc(room),
        slot: None,
    }
}

fn movie_record(movie: &MovieSaved) -> Record {
    Record {
        kind: Kind::Movie,
        id: movie.movie_id,
        version: movie.version,
        parent: None,
        doc: doc(movie),
        slot: None,
    }
}

// ---------------------------------------------------------------- chains

/// Register a chain (admins).
#[utoipa::path(post, path = "/api/cinema/chains", request_body = ChainInput, security(("bearer" = [])),
    responses((status = 201), (status = 403), (status = 422)))]
pub async fn create_chain(
    State(state): State<AppState>,
    user: AuthUser,
    Json(input): Json<ChainInput>,
) -> Result<Response, CinemaError> {
    user.require_role(roles::ADMIN)?;
    let chain = input.validate()?;
    let events = vec![event(contract::CHAIN_SAVED, &chain)];
    commit(&state, chain_record(&chain), events, "").await?;
    created(format!("/api/cinema/chains/{}", chain.chain_id), chain)
}

#[utoipa::path(patch, path = "/api/cinema/chains/{id}", request_body = ChainPatch, params(("id" = Uuid, Path)),
    security(("bearer" = [])), responses((status = 200), (status = 404), (status = 409), (status = 422)))]
pub async fn update_chain(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    Json(patch): Json<ChainPatch>,
) -> Result<Json<ChainSaved>, CinemaError> {
    user.require_role(roles::ADMIN)?;
    let chain = patch.apply(load(&state, Kind::Chain, id).await?)?;
    let events = vec![event(contract::CHAIN_SAVED, &chain)];
    commit(&state, chain_record(&chain), events, "").await?;
    Ok(Json(chain))
}

#[utoipa::path(delete, path = "/api/cinema/chains/{id}", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 404), (status = 409, description = "the chain still has cinemas")))]
pub async fn delete_chain(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, CinemaError> {
    user.require_role(roles::ADMIN)?;
    let chain: ChainSaved = load(&state, Kind::Chain, id).await?;
    remove(
        &state,
        Kind::Chain,
        id,
        chain.version,
        contract::CHAIN_DELETED,
        "the chain still has cinemas",
    )
    .await
}

// --------------------------------------------------------------- cinemas

/// Open a cinema in a chain (admins); managers are assigned separately.
#[utoipa::path(post, path = "/api/cinema/cinemas", request_body = CinemaInput, security(("bearer" = [])),
    responses((status = 201), (status = 403), (status = 422)))]
pub async fn create_cinema(
    State(state): State<AppState>,
    user: AuthUser,
    Json(input): Json<CinemaInput>,
) -> Result<Response, CinemaError> {
    user.require_role(roles::ADMIN)?;
    let cinema = input.validate()?;
    let events = vec![event(contract::CINEMA_SAVED, &cinema)];
    commit(&state, cinema_record(&cinema), events, "")
        .await
        .map_err(|e| no_such(e, "chain_id", "no such chain"))?;
    created(format!("/api/cinema/cinemas/{}", cinema.cinema_id), cinema)
}

/// A refused reference on creation is the caller's unknown id: 422.
fn no_such(error: CinemaError, field: &str, message: &str) -> CinemaError {
    match error {
        CinemaError::Reference(_) => Problem::invalid_field(field, message).into(),
        other => other,
    }
}

#[utoipa::path(patch, path = "/api/cinema/cinemas/{id}", request_body = CinemaPatch, params(("id" = Uuid, Path)),
    security(("bearer" = [])), responses((status = 200), (status = 404), (status = 409), (status = 422)))]
pub async fn update_cinema(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    Json(patch): Json<CinemaPatch>,
) -> Result<Json<CinemaSaved>, CinemaError> {
    user.require_role(roles::ADMIN)?;
    let cinema = patch.apply(load(&state, Kind::Cinema, id).await?)?;
    let events = vec![event(contract::CINEMA_SAVED, &cinema)];
    commit(&state, cinema_record(&cinema), events, "").await?;
    Ok(Json(cinema))
}

#[utoipa::path(delete, path = "/api/cinema/cinemas/{id}", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 404), (status = 409, description = "the cinema still has rooms")))]
pub async fn delete_cinema(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, CinemaError> {
    user.require_role(roles::ADMIN)?;
    let cinema: CinemaSaved = load(&state, Kind::Cinema, id).await?;
    remove(
        &state,
        Kind::Cinema,
        id,
        cinema.version,
        contract::CINEMA_DELETED,
        "the cinema still has rooms",
    )
    .await
}

/// Concurrent assignments to one cinema retry on a fresh read this often.
const MANAGER_ATTEMPTS: usize = 5;

/// Add (or remove) a manager, idempotently: a second identical request
/// changes nothing and answers the same.
async fn set_manager(
    state: &AppState,
    user: &AuthUser,
    cinema_id: Uuid,
    manager: Uuid,
    assigned: bool,
) -> Result<Json<CinemaSaved>, CinemaError> {
    user.require_role(roles::ADMIN)?;
    for _ in 0..MANAGER_ATTEMPTS {
        let current: CinemaSaved = load(state, Kind::Cinema, cinema_id).await?;
        let Some(cinema) = with_manager(current.clone(), manager, assigned) else {
            return Ok(Json(current));
        };
        let events = vec![event(contract::CINEMA_SAVED, &cinema)];
        match commit(state, cinema_record(&cinema), events, "").await {
            Ok(()) => return Ok(Json(cinema)),
            Err(CinemaError::Stale) => continue,
            Err(other) => return Err(other),
        }
    }
    Err(CinemaError::Stale)
}

/// Let a user (who needs the `manager` role) run this cinema (admins).
#[utoipa::path(put, path = "/api/cinema/cinemas/{id}/managers/{user_id}", params(("id" = Uuid, Path), ("user_id" = Uuid, Path)),
    security(("bearer" = [])), responses((status = 200), (status = 403), (status = 404)))]
pub async fn assign_manager(
    State(state): State<AppState>,
    user: AuthUser,
    Path((id, manager)): Path<(Uuid, Uuid)>,
) -> Result<Json<CinemaSaved>, CinemaError> {
    set_manager(&state, &user, id, manager, true).await
}

#[utoipa::path(delete, path = "/api/cinema/cinemas/{id}/managers/{user_id}", params(("id" = Uuid, Path), ("user_id" = Uuid, Path)),
    security(("bearer" = [])), responses((status = 200), (status = 403), (status = 404)))]
pub async fn remove_manager(
    State(state): State<AppState>,
    user: AuthUser,
    Path((id, manager)): Path<(Uuid, Uuid)>,
) -> Result<Json<CinemaSaved>, CinemaError> {
    set_manager(&state, &user, id, manager, false).await
}

// ----------------------------------------------------------------- rooms

/// Add a room to a cinema the caller manages.
#[utoipa::path(post, path = "/api/cinema/rooms", request_body = RoomInput, security(("bearer" = [])),
    responses((status = 201), (status = 403), (status = 404, description = "no such cinema, or not yours"), (status = 422)))]
pub async fn create_room(
    State(state): State<AppState>,
    user: AuthUser,
    Json(input): Json<RoomInput>,
) -> Result<Response, CinemaError> {
    managed_cinema(&state, &user, input.cinema_id).await?;
    let room = input.validate(state.default_cleaning_min)?;
    let events = vec![event(contract::ROOM_SAVED, &room.saved)];
    commit(&state, room_record(&room), events, "no such cinema").await?;
    created(format!("/api/cinema/rooms/{}", room.saved.room_id), room)
}

/// A room of a cinema the caller manages.
async fn managed_room(state: &AppState, user: &AuthUser, id: Uuid) -> Result<Room, CinemaError> {
    user.require_role(roles::MANAGER)?;
    let room: Room = load(state, Kind::Room, id).await?;
    managed_cinema(state, user, room.saved.cinema_id).await?;
    Ok(room)
}

#[utoipa::path(patch, path = "/api/cinema/rooms/{id}", request_body = RoomPatch, params(("id" = Uuid, Path)),
    security(("bearer" = [])), responses((status = 200), (status = 404), (status = 409), (status = 422)))]
pub async fn update_room(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    Json(patch): Json<RoomPatch>,
) -> Result<Json<Room>, CinemaError> {
    let room = patch.apply(managed_room(&state, &user, id).await?)?;
    let events = vec![event(contract::ROOM_SAVED, &room.saved)];
    commit(&state, room_record(&room), events, "").await?;
    Ok(Json(room))
}

#[utoipa::path(delete, path = "/api/cinema/rooms/{id}", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 404), (status = 409, description = "the room has showtimes")))]
pub async fn delete_room(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, CinemaError> {
    let room = managed_room(&state, &user, id).await?;
    remove(
        &state,
        Kind::Room,
        id,
        room.saved.version,
        contract::ROOM_DELETED,
        "the room has showtimes",
    )
    .await
}

// ---------------------------------------------------------------- movies

/// Movies belong to no cinema: admins and every manager keep the list.
fn require_movie_editor(user: &AuthUser) -> Result<(), CinemaError> {
    user.require_role(roles::MANAGER).map_err(CinemaError::from)
}

#[utoipa::path(post, path = "/api/cinema/movies", request_body = MovieInput, security(("bearer" = [])),
    responses((status = 201), (status = 403), (status = 422)))]
pub async fn create_movie(
    State(state): State<AppState>,
    user: AuthUser,
    Json(input): Json<MovieInput>,
) -> Result<Response, CinemaError> {
    require_movie_editor(&user)?;
    let movie = input.validate()?;
    let events = vec![event(contract::MOVIE_SAVED, &movie)];
    commit(&state, movie_record(&movie), events, "").await?;
    created(format!("/api/cinema/movies/{}", movie.movie_id), movie)
}

/// A new duration applies to showtimes created or moved afterwards;
/// scheduled ones keep their end.
#[utoipa::path(patch, path = "/api/cinema/movies/{id}", request_body = MoviePatch, params(("id" = Uuid, Path)),
    security(("bearer" = [])), responses((status = 200), (status = 404), (status = 409), (status = 422)))]
pub async fn update_movie(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    Json(patch): Json<MoviePatch>,
) -> Result<Json<MovieSaved>, CinemaError> {
    require_movie_editor(&user)?;
    let movie = patch.apply(load(&state, Kind::Movie, id).await?)?;
    let events = vec![event(contract::MOVIE_SAVED, &movie)];
    commit(&state, movie_record(&movie), events, "").await?;
    Ok(Json(movie))
}

#[utoipa::path(delete, path = "/api/cinema/movies/{id}", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 404), (status = 409, description = "the movie has showtimes")))]
pub async fn delete_movie(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, CinemaError> {
    require_movie_editor(&user)?;
    let movie: MovieSaved = load(&state, Kind::Movie, id).await?;
    remove(
        &state,
        Kind::Movie,
        id,
        movie.version,
        contract::MOVIE_DELETED,
        "the movie has showtimes",
    )
    .await
}

// ------------------------------------------------------------- showtimes

async fn save_showtime(state: &AppState, showtime: &ShowtimeSaved) -> Result<(), CinemaError> {
    let events = vec![event(contract::SHOWTIME_SAVED, showtime)];
    commit(
        state,
        Record::showtime(showtime),
        events,
        "no such movie or room",
    )
    .await
}

/// The movie a showtime plays, or 422 naming the field.
async fn movie_for(state: &AppState, id: Uuid) -> Result<MovieSaved, CinemaError> {
    load(state, Kind::Movie, id).await.map_err(|e| match e {
        CinemaError::NotFound => Problem::invalid_field("movie_id", "no such movie").into(),
        other => other,
    })
}

/// Schedule a movie in a room of a cinema the caller manages; 409 naming
/// the showtime it would overlap.
#[utoipa::path(post, path = "/api/cinema/showtimes", request_body = ShowtimeInput, security(("bearer" = [])),
    responses((status = 201), (status = 404, description = "no such room, or not yours"), (status = 409, description = "overlaps another showtime"), (status = 422)))]
pub async fn create_showtime(
    State(state): State<AppState>,
    user: AuthUser,
    Json(input): Json<ShowtimeInput>,
) -> Result<Response, CinemaError> {
    let room = managed_room(&state, &user, input.room_id).await?;
    let cinema: CinemaSaved = load(&state, Kind::Cinema, room.saved.cinema_id).await?;
    let movie = movie_for(&state, input.movie_id).await?;
    let context = ShowtimeContext {
        movie: &movie,
        room: &room,
        chain_id: cinema.chain_id,
    };
    let showtime = input.validate(context, &state.default_currency)?;
    save_showtime(&state, &showtime).await?;
    created(
        format!("/api/cinema/showtimes/{}", showtime.showtime_id),
        showtime,
    )
}

/// A showtime of a cinema the caller manages, with what its end needs.
async fn managed_showtime(
    state: &AppState,
    user: &AuthUser,
    id: Uuid,
) -> Result<(ShowtimeSaved, MovieSaved, Room), CinemaError> {
    user.require_role(roles::MANAGER)?;
    let showtime: ShowtimeSaved = load(state, Kind::Showtime, id).await?;
    managed_cinema(state, user, showtime.cinema_id).await?;
    let movie = load(state, Kind::Movie, showtime.movie_id).await?;
    let room = load(state, Kind::Room, showtime.room_id).await?;
    Ok((showtime, movie, room))
}

#[utoipa::path(patch, path = "/api/cinema/showtimes/{id}", request_body = ShowtimePatch, params(("id" = Uuid, Path)),
    security(("bearer" = [])), responses((status = 200), (status = 404), (status = 409), (status = 422)))]
pub async fn update_showtime(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    Json(patch): Json<ShowtimePatch>,
) -> Result<Json<ShowtimeSaved>, CinemaError> {
    let (current, movie, room) = managed_showtime(&state, &user, id).await?;
    let context = ShowtimeContext {
        movie: &movie,
        room: &room,
        chain_id: current.chain_id,
    };
    let showtime = patch.apply(current, context)?;
    save_showtime(&state, &showtime).await?;
    Ok(Json(showtime))
}

/// Cancel a showtime. The row stays (purchases refer to it) and
/// `showtime.saved` says `cancelled`; it sells no more seats, and its slot
/// is free for another showtime.
#[utoipa::path(delete, path = "/api/cinema/showtimes/{id}", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200), (status = 404)))]
pub async fn cancel_showtime(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> Result<Json<ShowtimeSaved>, CinemaError> {
    let (mut showtime, _, _) = managed_showtime(&state, &user, id).await?;
    if showtime.status == CANCELLED {
        return Ok(Json(showtime));
    }
    showtime.status = CANCELLED.into();
    showtime.version += 1;
    save_showtime(&state, &showtime).await?;
    Ok(Json(showtime))
}
