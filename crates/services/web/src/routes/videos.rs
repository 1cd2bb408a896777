//! The video task pages: the upload form (the file streams through to the
//! API as it arrives), the visitor's tasks with live status, and a task's
//! page playing the processed video, with both files to download (fetched
//! with the visitor's token, `Range` passed through).

use askama::Template;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use crate::app::AppState;
use crate::error::WebError;
use crate::gateway::ApiError;
use crate::session::Visitor;
use crate::views::{Chrome, FormErrors, encode, render, when};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/videos", get(tasks).post(upload))
        .route("/videos/{id}", get(task))
        .route("/videos/{id}/status", get(task_status))
        .route("/videos/{id}/{file}", get(file))
}

#[derive(Debug, Deserialize)]
struct Task {
    id: Uuid,
    status: String,
    progress: u8,
    file_name: String,
    original_size: u64,
    processed_size: Option<u64>,
    failure_reason: Option<String>,
    created_at: DateTime<Utc>,
}

impl Task {
    fn is_final(&self) -> bool {
        matches!(self.status.as_str(), "processed" | "failed")
    }

    fn status_text(&self) -> String {
        match self.status.as_str() {
            "uploaded" => "Uploaded, waiting to be processed".into(),
            "processing" => format!("Processing ({} %)", self.progress),
            "processed" => "Processed".into(),
            "failed" => format!(
                "Failed: {}",
                self.failure_reason.as_deref().unwrap_or("unknown reason")
            ),
            other => other.to_owned(),
        }
    }

    fn created(&self) -> String {
        when(&self.created_at)
    }

    fn sizes(&self) -> String {
        let mb = |bytes: u64| match bytes {
            0..1_000_000 => format!("{:.1} kB", bytes as f64 / 1_000.0),
            _ => format!("{:.1} MB", bytes as f64 / 1_000_000.0),
        };
        match self.processed_size {
            Some(processed) => format!("{} → {}", mb(self.original_size), mb(processed)),
            None => mb(self.original_size),
        }
    }
}

#[derive(Template)]
#[template(path = "videos/tasks.html")]
struct Tasks {
    chrome: Chrome,
    tasks: Vec<Task>,
    errors: FormErrors,
}

impl Tasks {
    /// What the API said about the file (not a video, too large).
    fn file_errors(&self) -> Vec<String> {
        self.errors.others(&[])
    }

    fn upload_action(&self) -> String {
        format!("/videos?csrf={}", encode(&self.chrome.csrf))
    }
}

async fn list(state: &AppState, token: &str) -> Result<Vec<Task>, WebError> {
    Ok(state
        .gateway
        .get_query(
            "/api/tasks",
            &[("max", "100".into()), ("order", "desc".into())],
            Some(token),
        )
        .await?)
}

async fn tasks_page(
    state: &AppState,
    visitor: &Visitor,
    errors: FormErrors,
) -> Result<Response, WebError> {
    let token = &visitor.require("/videos")?.access_token;
    render(Tasks {
        chrome: Chrome::new(visitor, "Your videos", "videos"),
        tasks: list(state, token).await?,
        errors,
    })
}

async fn tasks(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
) -> Result<Response, WebError> {
    tasks_page(&state, &visitor, FormErrors::none()).await
}

/// The upload form's CSRF token travels in the query string: the body is
/// the file, streamed on unread, so no form field can be looked at first.
#[derive(Debug, Deserialize)]
struct UploadParams {
    #[serde(default)]
    csrf: String,
}

async fn upload(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    Query(params): Query<UploadParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, WebError> {
    if !visitor.had_csrf_cookie || !state.csrf.verify(&visitor.csrf_cookie, &params.csrf) {
        return Err(WebError::Csrf);
    }
    let token = visitor.require("/videos")?.access_token.clone();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with("multipart/form-data"))
        .ok_or_else(|| WebError::BadRequest("the upload must be a multipart form".into()))?
        .to_owned();
    let stream = reqwest::Body::wrap_stream(body.into_data_stream());
    let created: Result<Task, ApiError> = state
        .gateway
        .upload("/api/tasks", &token, &content_type, stream)
        .await;
    match created {
        Ok(task) => Ok(Redirect::to(&format!("/videos/{}", task.id)).into_response()),
        Err(error) => {
            let errors = FormErrors::from_api(error, &[])?;
            let mut page = tasks_page(&state, &visitor, errors).await?;
            *page.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
            Ok(page)
        }
    }
}

#[derive(Template)]
#[template(path = "videos/task.html")]
struct TaskPage {
    chrome: Chrome,
    task: Task,
}

async fn fetch_task(state: &AppState, visitor: &Visitor, id: Uuid) -> Result<Task, WebError> {
    let token = &visitor.require(&format!("/videos/{id}"))?.access_token;
    Ok(state
        .gateway
        .get(&format!("/api/tasks/{id}"), Some(token))
        .await?)
}

async fn task(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    Path(id): Path<Uuid>,
) -> Result<Response, WebError> {
    let task = fetch_task(&state, &visitor, id).await?;
    render(TaskPage {
        chrome: Chrome::new(&visitor, task.file_name.clone(), "videos"),
        task,
    })
}

/// What the live status script polls (the same shape as an order's).
async fn task_status(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    Path(id): Path<Uuid>,
) -> Result<Response, WebError> {
    let task = fetch_task(&state, &visitor, id).await?;
    Ok(Json(serde_json::json!({
        "status": task.status,
        "label": task.status_text(),
        "final": task.is_final(),
    }))
    .into_response())
}

/// `original` or `processed`, played or downloaded.
async fn file(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    Path((id, file)): Path<(Uuid, String)>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    if file != "original" && file != "processed" {
        return Err(WebError::NotFound);
    }
    let token = &visitor.require(&format!("/videos/{id}"))?.access_token;
    crate::download::pass_on(
        &state,
        &format!("/api/tasks/{id}/{file}"),
        token,
        headers.get(header::RANGE),
    )
    .await
}
