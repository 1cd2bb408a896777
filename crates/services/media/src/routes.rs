//! The media service's HTTP API (`/api/tasks`). Every route needs a
//! signed-in user and shows only that user's tasks: someone else's task is
//! 404, exactly like one that does not exist.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use futures_util::Stream;
use serde::Deserialize;
use utoipa::OpenApi;
use uuid::Uuid;
use zocalo_bus::JobOptions;
use zocalo_bus::outbox::Message;
use zocalo_contracts::media::{PROCESS_QUEUE, ProcessVideo};
use zocalo_http::auth::AuthUser;
use zocalo_http::extract::{Json, Path, Query};
use zocalo_objects::ByteRange;

use crate::app::AppState;
use crate::domain::{NewTask, Task, original_key, processed_key, status};
use crate::error::MediaError;
use crate::store::Deleted;
use crate::upload;

pub fn router(state: AppState) -> Router {
    let ready_store = state.store.clone();
    let api = Router::new()
        .route(
            "/api/tasks",
            // The service enforces its own upload limit while streaming.
            get(list_tasks)
                .post(create_task)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/api/tasks/{id}", get(get_task).delete(delete_task))
        .route("/api/tasks/{id}/events", get(task_events))
        .route("/api/tasks/{id}/original", get(download_original))
        .route("/api/tasks/{id}/processed", get(download_processed))
        .with_state(state);
    let ready: zocalo_telemetry::ReadinessCheck = std::sync::Arc::new(move || {
        let store = ready_store.clone();
        Box::pin(async move { store.ping().await.map_err(|e| e.to_string()) })
    });
    let openapi = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    zocalo_http::server::finish("media", api, ready, openapi)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Zócalo media",
        description = "Video tasks: upload, processing with ffmpeg, status, download."
    ),
    paths(
        create_task,
        list_tasks,
        get_task,
        task_events,
        download_original,
        download_processed,
        delete_task
    ),
    components(schemas(Task))
)]
struct ApiDoc;

/// The caller's task `id`, or 404.
async fn owned_task(state: &AppState, user: &AuthUser, id: Uuid) -> Result<Task, MediaError> {
    let owner = user.user_id().map_err(|_| MediaError::NotFound)?;
    match state.store.task(id).await? {
        Some(task) if task.owner_id == owner => Ok(task),
        _ => Err(MediaError::NotFound),
    }
}

/// The job that processes a task.
fn process_job(task_id: Uuid, max_attempts: u32) -> Message {
    let payload = serde_json::to_value(ProcessVideo { task_id }).unwrap_or_default();
    Message::job(
        PROCESS_QUEUE,
        payload,
        JobOptions {
            max_attempts: max_attempts.max(1),
            ..JobOptions::default()
        },
    )
}

/// Upload a video (multipart field `file`). The file is streamed to object
/// storage; what it is is decided from its content. A job is queued to
/// process it.
#[utoipa::path(post, path = "/api/tasks", security(("bearer" = [])),
    request_body(content_type = "multipart/form-data", description = "field `file`: the video"),
    responses((status = 201, body = Task), (status = 400), (status = 401), (status = 413, description = "larger than the configured limit"),
        (status = 422, description = "no file, an empty file, or not a video")))]
async fn create_task(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, MediaError> {
    let owner = user
        .user_id()
        .map_err(|e| MediaError::BadRequest(e.detail.unwrap_or_default()))?;
    let limit = state.max_upload_bytes;
    if declared_length(&headers).is_some_and(|length| length > limit + MULTIPART_OVERHEAD) {
        return Err(MediaError::TooLarge { limit });
    }
    let mut multipart = multipart.map_err(|e| {
        MediaError::BadRequest(format!(
            "expected a multipart/form-data body: {}",
            e.body_text()
        ))
    })?;
    let id = Uuid::now_v7();
    let key = original_key(id);
    let stored = upload::receive(&mut multipart, state.objects.as_ref(), &key, limit).await?;
    let task = NewTask {
        id,
        owner_id: owner,
        file_name: stored.file_name,
        content_type: stored.content_type,
        original_size: stored.size,
        created_at: Utc::now(),
    };
    let created = match state
        .store
        .create_task(task, vec![process_job(id, state.max_attempts)])
        .await
    {
        Ok(created) => created,
        Err(error) => {
            // No row refers to the object: remove it now rather than
            // leaving it to garbage collection.
            let _ = state.objects.delete(&key).await;
            return Err(error.into());
        }
    };
    state.relay_wake.notify_one();
    metrics::counter!("media_uploads_total").increment(1);
    metrics::counter!("media_upload_bytes_total").increment(created.original_size);
    let location =
        HeaderValue::from_str(&format!("/api/tasks/{id}")).map_err(|_| MediaError::NotFound)?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(created),
    )
        .into_response())
}

/// Room for multipart boundaries and part headers on top of the file.
const MULTIPART_OVERHEAD: u64 = 64 * 1024;

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    max: Option<u32>,
    order: Option<String>,
}

const DEFAULT_PAGE: u32 = 20;
const MAX_PAGE: u32 = 100;

/// The caller's tasks with their status, oldest first (`order=asc`, the
/// default) or newest first (`order=desc`), at most `max` (1–100, default 20).
#[utoipa::path(get, path = "/api/tasks", security(("bearer" = [])),
    params(("max" = Option<u32>, Query), ("order" = Option<String>, Query, description = "asc | desc")),
    responses((status = 200, body = [Task]), (status = 400), (status = 401), (status = 422)))]
async fn list_tasks(
    State(state): State<AppState>,
    user: AuthUser,
    Query(params): Query<ListParams>,
) -> Result<Json<Vec<Task>>, MediaError> {
    let owner = user
        .user_id()
        .map_err(|e| MediaError::BadRequest(e.detail.unwrap_or_default()))?;
    let max = params.max.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&max) {
        return Err(MediaError::invalid(
            "max",
            format!("must be between 1 and {MAX_PAGE}"),
        ));
    }
    let newest_first = match params.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => return Err(MediaError::invalid("order", "must be asc or desc")),
    };
    Ok(Json(state.store.tasks_of(owner, max, newest_first).await?))
}

/// One task, with its status and progress.
#[utoipa::path(get, path = "/api/tasks/{id}", security(("bearer" = [])),
    responses((status = 200, body = Task), (status = 401), (status = 404)))]
async fn get_task(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> Result<Json<Task>, MediaError> {
    Ok(Json(owned_task(&state, &user, id).await?))
}

/// Server-sent events: the task now (event `task`), then again at every
/// change, until it is processed or failed (or `deleted`).
#[utoipa::path(get, path = "/api/tasks/{id}/events", security(("bearer" = [])),
    responses((status = 200, content_type = "text/event-stream"), (status = 401), (status = 404)))]
async fn task_events(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, MediaError> {
    owned_task(&state, &user, id).await?;
    let watch = Watch {
        changes: crate::changes::subscribe(),
        state,
        id,
        last_version: None,
        done: false,
    };
    let events = futures_util::stream::unfold(watch, |mut watch| async move {
        let event = watch.next_event().await?;
        Some((Ok(event), watch))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Follows one task for [`task_events`] by reading the store, which
/// workers in every process share: again after each `status_poll`, or as
/// soon as a worker in this process announces a change.
struct Watch {
    changes: crate::changes::Subscription,
    state: AppState,
    id: Uuid,
    last_version: Option<i64>,
    done: bool,
}

impl Watch {
    async fn next_event(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        loop {
            match self.state.store.task(self.id).await {
                Ok(Some(task)) if Some(task.version) != self.last_version => {
                    self.last_version = Some(task.version);
                    self.done = status::is_settled(&task.status);
                    return Event::default().event("task").json_data(&task).ok();
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    self.done = true;
                    return Some(Event::default().event("deleted").data(self.id.to_string()));
                }
                Err(error) => tracing::debug!(task = %self.id, %error, "status poll failed"),
            }
            let _ =
                tokio::time::timeout(self.state.status_poll, self.changes.changed(self.id)).await;
        }
    }
}

/// The uploaded file as it was received. Supports `Range`.
#[utoipa::path(get, path = "/api/tasks/{id}/original", security(("bearer" = [])),
    responses((status = 200), (status = 206), (status = 401), (status = 404), (status = 416)))]
async fn download_original(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<Response, MediaError> {
    let task = owned_task(&state, &user, id).await?;
    let name = task.file_name.clone();
    download(
        &state,
        &original_key(id),
        &task.content_type,
        &name,
        &headers,
    )
    .await
}

/// The processed MP4 (409 until the task is processed). Supports `Range`.
#[utoipa::path(get, path = "/api/tasks/{id}/processed", security(("bearer" = [])),
    responses((status = 200), (status = 206), (status = 401), (status = 404), (status = 409), (status = 416)))]
async fn download_processed(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<Response, MediaError> {
    let task = owned_task(&state, &user, id).await?;
    if task.status != status::PROCESSED {
        return Err(MediaError::Conflict(format!(
            "the task is {}, not processed",
            task.status
        )));
    }
    let stem = task
        .file_name
        .rsplit_once('.')
        .map_or(task.file_name.as_str(), |(stem, _)| stem);
    let name = format!("{stem}-processed.mp4");
    download(&state, &processed_key(id), "video/mp4", &name, &headers).await
}

/// Stream an object, or the single byte range the request asks for.
async fn download(
    state: &AppState,
    key: &str,
    content_type: &str,
    file_name: &str,
    headers: &HeaderMap,
) -> Result<Response, MediaError> {
    let range = headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
        .and_then(ByteRange::parse);
    let object = state.objects.get(key, range).await?;
    let length = object.range.end - object.range.start;
    let mut response = Response::new(Body::from_stream(object.body));
    let headers = response.headers_mut();
    let mut set = |name, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    set(header::CONTENT_TYPE, content_type.to_owned());
    set(header::CONTENT_LENGTH, length.to_string());
    set(header::ACCEPT_RANGES, "bytes".to_owned());
    // The name was cleaned at upload: no quotes or control characters.
    set(
        header::CONTENT_DISPOSITION,
        format!("attachment; filename=\"{file_name}\""),
    );
    set(header::CACHE_CONTROL, "private, no-store".to_owned());
    if range.is_some() {
        set(
            header::CONTENT_RANGE,
            format!(
                "bytes {}-{}/{}",
                object.range.start,
                object.range.end - 1,
                object.size
            ),
        );
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    Ok(response)
}

/// Remove a task and its files; refused (409) while it is being processed.
#[utoipa::path(delete, path = "/api/tasks/{id}", security(("bearer" = [])),
    responses((status = 204), (status = 401), (status = 404), (status = 409, description = "being processed")))]
async fn delete_task(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, MediaError> {
    let owner = user.user_id().map_err(|_| MediaError::NotFound)?;
    match state.store.delete_task(owner, id).await? {
        Deleted::Removed => {
            crate::changes::announce(id);
            // After the row: a crash in between leaves orphans, which
            // garbage collection removes; never a row without its file.
            for key in [original_key(id), processed_key(id)] {
                if let Err(error) = state.objects.delete(&key).await {
                    tracing::warn!(%key, %error, "cannot delete object; garbage collection will");
                }
            }
            Ok(StatusCode::NO_CONTENT)
        }
        Deleted::Processing => Err(MediaError::Conflict(
            "the task is being processed; delete it when it is done".into(),
        )),
        Deleted::NotFound => Err(MediaError::NotFound),
    }
}
