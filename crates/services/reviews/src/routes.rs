//! The reviews service's HTTP API.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;
use zocalo_http::Problem;
use zocalo_http::auth::{AuthUser, roles};
use zocalo_http::extract::{Json, Path, Query};
use zocalo_store::StoreError;

use crate::app::AppState;
use crate::domain::{
    Camera, CameraInput, ContentQuery, EquipmentQuery, Lens, LensInput, Review, ReviewInput,
    ReviewPatch, ReviewStats, Target,
};
use crate::idempotency;
use crate::store::{Created, ResourceKind};

const DEFAULT_LIMIT: u32 = 20;
const MAX_LIMIT: u32 = 100;
const MAX_COMPARED: usize = 10;

pub fn router(state: AppState, cache_max_age_secs: u32) -> Router {
    let ready_store = state.store.clone();
    let read_cache = state.read_cache.clone();
    let api = Router::new()
        .route("/api/cameras", get(list_cameras).post(create_camera))
        .route("/api/cameras/{id}", get(get_camera))
        .route("/api/lenses", get(list_lenses).post(create_lens))
        .route("/api/lenses/{id}", get(get_lens))
        .route("/api/reviews", axum::routing::post(create_review))
        .route(
            "/api/reviews/{id}",
            get(get_review).patch(update_review).delete(delete_review),
        )
        .route("/api/content", get(list_content))
        .route("/api/content/{id}", get(get_review))
        .route("/api/compare", get(compare))
        .layer(middleware::from_fn(move |req, next| {
            zocalo_http::conditional::conditional_get(
                cache_max_age_secs,
                read_cache.clone(),
                req,
                next,
            )
        }))
        .with_state(state);
    let ready: zocalo_telemetry::ReadinessCheck = std::sync::Arc::new(move || {
        let store = ready_store.clone();
        Box::pin(async move { store.ping().await.map_err(|e| e.to_string()) })
    });
    let openapi = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    zocalo_http::server::finish("reviews", api, ready, openapi)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Zócalo reviews",
        description = "Camera and lens reviews: publish, read, search, compare."
    ),
    paths(
        create_camera,
        list_cameras,
        get_camera,
        create_lens,
        list_lenses,
        get_lens,
        create_review,
        get_review,
        update_review,
        delete_review,
        list_content,
        compare
    ),
    components(schemas(
        Camera,
        CameraInput,
        Lens,
        LensInput,
        Review,
        ReviewInput,
        ReviewPatch,
        ReviewStats,
        ReviewPage,
        CameraPage,
        LensPage,
        Comparison
    ))
)]
struct ApiDoc;

/// The caller's id if it may write reviews (editors; admins may too).
fn editor_id(user: &AuthUser) -> Result<Uuid, Problem> {
    user.require_role(roles::EDITOR)?;
    user.user_id()
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

fn check_limit(limit: Option<u32>) -> Result<u32, Problem> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(Problem::invalid_field(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        ))
    }
}

/// Fetch one more row than asked: if it came, there is a next page.
fn paginate<T>(mut items: Vec<T>, limit: u32, id: impl Fn(&T) -> Uuid) -> (Vec<T>, Option<Uuid>) {
    if items.len() > limit as usize {
        items.truncate(limit as usize);
        let next = items.last().map(id);
        (items, next)
    } else {
        (items, None)
    }
}

fn non_empty(value: Option<String>, field: &str, max: usize) -> Result<Option<String>, Problem> {
    match value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) {
        Some(v) if v.chars().count() > max => Err(Problem::invalid_field(
            field,
            format!("must have at most {max} characters"),
        )),
        other => Ok(other),
    }
}

fn conflict_as(error: StoreError, what: &str) -> Problem {
    match error {
        StoreError::Conflict(_) => Problem::conflict(format!("this {what} is already listed")),
        other => other.into(),
    }
}

/// The optional `Idempotency-Key` of the creating requests.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // documents a header read from the `HeaderMap`
struct IdempotencyKeyHeader {
    /// Up to 200 visible ASCII characters, chosen by the client per
    /// operation (a UUID is a good choice). A repeat with the same key and
    /// body within 24 hours gets the first answer again; with a different
    /// body, a 422. Scoped per caller.
    #[param(rename = "Idempotency-Key")]
    idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct EquipmentParams {
    /// Exact brand, case-insensitive.
    brand: Option<String>,
    /// 1–100, default 20.
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<Uuid>,
}

impl EquipmentParams {
    fn query(self) -> Result<EquipmentQuery, Problem> {
        Ok(EquipmentQuery {
            after: self.cursor,
            brand: non_empty(self.brand, "brand", 100)?,
            limit: check_limit(self.limit)? + 1,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CameraPage {
    items: Vec<Camera>,
    next_cursor: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LensPage {
    items: Vec<Lens>,
    next_cursor: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewPage {
    items: Vec<Review>,
    next_cursor: Option<Uuid>,
}

/// List a camera (editor). Repeating the request with the same
/// `Idempotency-Key` answers as the first time and lists nothing new.
#[utoipa::path(post, path = "/api/cameras", request_body = CameraInput, security(("bearer" = [])),
    params(IdempotencyKeyHeader),
    responses((status = 201, body = Camera), (status = 400, description = "malformed Idempotency-Key"), (status = 401), (status = 403), (status = 409),
        (status = 422, description = "invalid input, or the key was used for a different request")))]
async fn create_camera(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    Json(input): Json<CameraInput>,
) -> Result<Response, Problem> {
    editor_id(&user)?;
    let claim = idempotency::claim(&headers, &user, ResourceKind::Camera, &input)?;
    let camera = input.validate()?;
    let outcome = state
        .store
        .create_camera(camera, claim.clone())
        .await
        .map_err(|e| conflict_as(e, "camera"))?;
    match outcome {
        Created::New(camera) => {
            state.changed();
            created(format!("/api/cameras/{}", camera.id), camera)
        }
        Created::Existing(record) => idempotency::replay(record, claim.as_ref(), "/api/cameras"),
    }
}

/// Cameras in the order they were listed.
#[utoipa::path(get, path = "/api/cameras", params(EquipmentParams), responses((status = 200, body = CameraPage)))]
async fn list_cameras(
    State(state): State<AppState>,
    Query(params): Query<EquipmentParams>,
) -> Result<Json<CameraPage>, Problem> {
    let query = params.query()?;
    let limit = query.limit - 1;
    let (items, next_cursor) = paginate(state.store.cameras(query).await?, limit, |c| c.id);
    Ok(Json(CameraPage { items, next_cursor }))
}

#[utoipa::path(get, path = "/api/cameras/{id}", params(("id" = Uuid, Path)),
    responses((status = 200, body = Camera), (status = 404)))]
async fn get_camera(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<Camera>, Problem> {
    state
        .store
        .camera(id)
        .await?
        .map(Json)
        .ok_or_else(Problem::not_found)
}

/// List a lens (editor). Repeating the request with the same
/// `Idempotency-Key` answers as the first time and lists nothing new.
#[utoipa::path(post, path = "/api/lenses", request_body = LensInput, security(("bearer" = [])),
    params(IdempotencyKeyHeader),
    responses((status = 201, body = Lens), (status = 400, description = "malformed Idempotency-Key"), (status = 401), (status = 403), (status = 409),
        (status = 422, description = "invalid input, or the key was used for a different request")))]
async fn create_lens(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    Json(input): Json<LensInput>,
) -> Result<Response, Problem> {
    editor_id(&user)?;
    let claim = idempotency::claim(&headers, &user, ResourceKind::Lens, &input)?;
    let lens = input.validate()?;
    let outcome = state
        .store
        .create_lens(lens, claim.clone())
        .await
        .map_err(|e| conflict_as(e, "lens"))?;
    match outcome {
        Created::New(lens) => {
            state.changed();
            created(format!("/api/lenses/{}", lens.id), lens)
        }
        Created::Existing(record) => idempotency::replay(record, claim.as_ref(), "/api/lenses"),
    }
}

/// Lenses in the order they were listed.
#[utoipa::path(get, path = "/api/lenses", params(EquipmentParams), responses((status = 200, body = LensPage)))]
async fn list_lenses(
    State(state): State<AppState>,
    Query(params): Query<EquipmentParams>,
) -> Result<Json<LensPage>, Problem> {
    let query = params.query()?;
    let limit = query.limit - 1;
    let (items, next_cursor) = paginate(state.store.lenses(query).await?, limit, |l| l.id);
    Ok(Json(LensPage { items, next_cursor }))
}

#[utoipa::path(get, path = "/api/lenses/{id}", params(("id" = Uuid, Path)),
    responses((status = 200, body = Lens), (status = 404)))]
async fn get_lens(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<Lens>, Problem> {
    state
        .store
        .lens(id)
        .await?
        .map(Json)
        .ok_or_else(Problem::not_found)
}

/// Publish a review of exactly one camera or lens (editor). Repeating the
/// request with the same `Idempotency-Key` answers as the first time and
/// publishes nothing new.
#[utoipa::path(post, path = "/api/reviews", request_body = ReviewInput, security(("bearer" = [])),
    params(IdempotencyKeyHeader),
    responses((status = 201, body = Review), (status = 400, description = "malformed Idempotency-Key"), (status = 401), (status = 403),
        (status = 422, description = "invalid input, or the key was used for a different request")))]
async fn create_review(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    Json(input): Json<ReviewInput>,
) -> Result<Response, Problem> {
    let editor = editor_id(&user)?;
    let claim = idempotency::claim(&headers, &user, ResourceKind::Review, &input)?;
    let name = user.name.clone().unwrap_or_else(|| "editor".into());
    let review = input.validate(editor, name)?;
    let target = review.target;
    ensure_target_exists(&state, target).await?;
    let outcome = state
        .store
        .create_review(review, claim.clone())
        .await
        .map_err(|e| match e {
            // The target vanished between the check and the insert.
            StoreError::Constraint(_) => missing_target(target),
            other => other.into(),
        })?;
    let review = match outcome {
        Created::New(review) => review,
        Created::Existing(record) => {
            return idempotency::replay(record, claim.as_ref(), "/api/reviews");
        }
    };
    metrics::counter!("reviews_published_total").increment(1);
    state.changed();
    created(format!("/api/reviews/{}", review.id), review)
}

async fn ensure_target_exists(state: &AppState, target: Target) -> Result<(), Problem> {
    let exists = match target {
        Target::Camera(id) => state.store.camera(id).await?.is_some(),
        Target::Lens(id) => state.store.lens(id).await?.is_some(),
    };
    if exists {
        Ok(())
    } else {
        Err(missing_target(target))
    }
}

fn missing_target(target: Target) -> Problem {
    match target {
        Target::Camera(_) => Problem::invalid_field("camera_id", "no such camera"),
        Target::Lens(_) => Problem::invalid_field("lens_id", "no such lens"),
    }
}

/// One review, public.
#[utoipa::path(get, path = "/api/content/{id}", params(("id" = Uuid, Path)),
    responses((status = 200, body = Review), (status = 404)))]
async fn get_review(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<Review>, Problem> {
    state
        .store
        .review(id)
        .await?
        .map(Json)
        .ok_or_else(Problem::not_found)
}

/// A review the caller may change: its author's, or any for an admin.
/// Other people's reviews are reported as missing (404), not forbidden.
async fn own_review(state: &AppState, user: &AuthUser, id: Uuid) -> Result<Review, Problem> {
    let editor = editor_id(user)?;
    let review = state
        .store
        .review(id)
        .await?
        .ok_or_else(Problem::not_found)?;
    if review.editor_id == editor || user.is_admin() {
        Ok(review)
    } else {
        Err(Problem::not_found())
    }
}

/// Change title, content or rating of one's own review (editor; admin any).
#[utoipa::path(patch, path = "/api/reviews/{id}", params(("id" = Uuid, Path)), request_body = ReviewPatch, security(("bearer" = [])),
    responses((status = 200, body = Review), (status = 401), (status = 403), (status = 404), (status = 422)))]
async fn update_review(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    Json(patch): Json<ReviewPatch>,
) -> Result<Json<Review>, Problem> {
    let changes = patch.validate()?;
    own_review(&state, &user, id).await?;
    let updated = state.store.update_review(id, changes).await?;
    state.changed();
    updated.map(Json).ok_or_else(Problem::not_found)
}

/// Delete one's own review (editor; admin any).
#[utoipa::path(delete, path = "/api/reviews/{id}", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 401), (status = 403), (status = 404)))]
async fn delete_review(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, Problem> {
    own_review(&state, &user, id).await?;
    if state.store.delete_review(id).await? {
        state.changed();
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found())
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ContentParams {
    /// Words that must all appear in the title or content.
    q: Option<String>,
    camera_id: Option<Uuid>,
    lens_id: Option<Uuid>,
    editor_id: Option<Uuid>,
    /// Brand of the reviewed camera or lens, case-insensitive.
    brand: Option<String>,
    /// 1–100, default 20.
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<Uuid>,
}

/// Reviews, newest first; public.
#[utoipa::path(get, path = "/api/content", params(ContentParams), responses((status = 200, body = ReviewPage), (status = 400), (status = 422)))]
async fn list_content(
    State(state): State<AppState>,
    Query(params): Query<ContentParams>,
) -> Result<Json<ReviewPage>, Problem> {
    let limit = check_limit(params.limit)?;
    let query = ContentQuery {
        before: params.cursor,
        camera_id: params.camera_id,
        lens_id: params.lens_id,
        editor_id: params.editor_id,
        brand: non_empty(params.brand, "brand", 100)?,
        text: non_empty(params.q, "q", 200)?,
        limit: limit + 1,
    };
    let (items, next_cursor) = paginate(state.store.reviews(query).await?, limit, |r| r.id);
    Ok(Json(ReviewPage { items, next_cursor }))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct CompareParams {
    /// Comma-separated camera ids (2–10).
    cameras: Option<String>,
    /// Comma-separated lens ids (2–10).
    lenses: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Compared<T> {
    #[serde(flatten)]
    item: T,
    #[serde(flatten)]
    stats: ReviewStats,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "kind", content = "items", rename_all = "lowercase")]
pub enum Comparison {
    Cameras(Vec<Compared<Camera>>),
    Lenses(Vec<Compared<Lens>>),
}

/// Specs side by side with review count and average rating; public.
#[utoipa::path(get, path = "/api/compare", params(CompareParams),
    responses((status = 200, body = Comparison), (status = 404, description = "an id names nothing"), (status = 422)))]
async fn compare(
    State(state): State<AppState>,
    Query(params): Query<CompareParams>,
) -> Result<Json<Comparison>, Problem> {
    match (params.cameras, params.lenses) {
        (Some(list), None) => {
            let ids = parse_ids("cameras", &list)?;
            let found = state.store.camera_stats(&ids).await?;
            ensure_all_found(&ids, found.iter().map(|(c, _)| c.id))?;
            Ok(Json(Comparison::Cameras(
                found
                    .into_iter()
                    .map(|(item, stats)| Compared { item, stats })
                    .collect(),
            )))
        }
        (None, Some(list)) => {
            let ids = parse_ids("lenses", &list)?;
            let found = state.store.lens_stats(&ids).await?;
            ensure_all_found(&ids, found.iter().map(|(l, _)| l.id))?;
            Ok(Json(Comparison::Lenses(
                found
                    .into_iter()
                    .map(|(item, stats)| Compared { item, stats })
                    .collect(),
            )))
        }
        _ => Err(Problem::invalid_field(
            "cameras",
            "give exactly one of cameras and lenses",
        )),
    }
}

fn parse_ids(field: &str, list: &str) -> Result<Vec<Uuid>, Problem> {
    let mut ids = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let id: Uuid = part
            .parse()
            .map_err(|_| Problem::invalid_field(field, format!("`{part}` is not an id")))?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    if !(2..=MAX_COMPARED).contains(&ids.len()) {
        return Err(Problem::invalid_field(
            field,
            format!("compare 2 to {MAX_COMPARED} distinct ids"),
        ));
    }
    Ok(ids)
}

fn ensure_all_found(asked: &[Uuid], found: impl Iterator<Item = Uuid>) -> Result<(), Problem> {
    let found: Vec<Uuid> = found.collect();
    let missing: Vec<String> = asked
        .iter()
        .filter(|id| !found.contains(id))
        .map(Uuid::to_string)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Problem::not_found().with_detail(format!("not found: {}", missing.join(", "))))
    }
}
