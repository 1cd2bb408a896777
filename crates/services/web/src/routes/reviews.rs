//! The reviews pages: browse and search, a review, camera and lens pages,
//! side-by-side comparison, and the editors' writing desk with a preview.

use askama::Template;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::Method;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde::Deserialize;
use uuid::Uuid;

use crate::app::AppState;
use crate::csrf::CsrfForm;
use crate::error::WebError;
use crate::gateway::ApiError;
use crate::models::{Camera, Lens, Page, Review, rating_text};
use crate::session::Visitor;
use crate::views::{Chrome, FormErrors, paragraphs, render, stars};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/reviews", get(browse))
        .route("/reviews/new", get(new_review).post(write_review))
        .route("/reviews/{id}", get(show))
        .route("/reviews/{id}/edit", get(edit_review).post(save_review))
        .route("/cameras", get(cameras))
        .route("/cameras/{id}", get(camera))
        .route("/lenses", get(lenses))
        .route("/lenses/{id}", get(lens))
        .route("/compare", get(compare))
}

#[derive(Debug, Default, Deserialize)]
struct BrowseParams {
    #[serde(default)]
    q: String,
    #[serde(default)]
    brand: String,
    #[serde(default)]
    cursor: String,
}

#[derive(Template)]
#[template(path = "reviews/browse.html")]
struct Browse {
    chrome: Chrome,
    params: BrowseParams,
    reviews: Vec<Review>,
    next: Option<String>,
}

impl Browse {
    fn next_href(&self, cursor: &str) -> String {
        let query = [
            ("q", self.params.q.as_str()),
            ("brand", self.params.brand.as_str()),
            ("cursor", cursor),
        ];
        let query: Vec<_> = query.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        format!(
            "/reviews?{}",
            serde_urlencoded::to_string(query).unwrap_or_default()
        )
    }
}

async fn browse(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    Query(params): Query<BrowseParams>,
) -> Result<Response, WebError> {
    let query = [
        ("q", params.q.clone()),
        ("brand", params.brand.clone()),
        ("cursor", params.cursor.clone()),
        ("limit", "20".into()),
    ];
    let page: Page<Review> = state
        .gateway
        .get_query("/api/content", &query, None)
        .await?;
    let title = if params.q.trim().is_empty() {
        "Reviews".to_owned()
    } else {
        format!("Reviews matching “{}”", params.q.trim())
    };
    let next = page.next();
    render(Browse {
        chrome: Chrome::new(&visitor, title, "reviews"),
        params,
        reviews: page.items,
        next,
    })
}

#[derive(Template)]
#[template(path = "reviews/show.html")]
struct Show {
    chrome: Chrome,
    review: Review,
    can_edit: bool,
}

async fn show(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    Path(id): Path<Uuid>,
) -> Result<Response, WebError> {
    // Signed in, the read carries the token: shared caches skip it, so an
    // editor sees their own change at once.
    let review: Review = state
        .gateway
        .get(&format!("/api/content/{id}"), visitor.token())
        .await?;
    let can_edit = visitor.user.as_ref().is_some_and(|u| {
        u.has_role("admin") || (u.has_role("editor") && u.id == review.editor_id.to_string())
    });
    render(Show {
        chrome: Chrome::new(&visitor, review.title.clone(), "reviews"),
        review,
        can_edit,
    })
}

#[derive(Template)]
#[template(path = "reviews/equipment.html")]
struct Equipment {
    chrome: Chrome,
    cameras: Vec<Camera>,
    lenses: Vec<Lens>,
    next: Option<String>,
    kind: &'static str,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct EquipmentParams {
    cursor: Option<String>,
    error: Option<String>,
}

/// Cameras or lenses: the two kinds of reviewed equipment share their
/// pages.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Cameras,
    Lenses,
}

impl Kind {
    /// The path segment, both in the API and in the pages.
    fn plural(self) -> &'static str {
        match self {
            Kind::Cameras => "cameras",
            Kind::Lenses => "lenses",
        }
    }

    /// The filter of `/api/content` that selects this kind's reviews.
    fn review_filter(self) -> &'static str {
        match self {
            Kind::Cameras => "camera_id",
            Kind::Lenses => "lens_id",
        }
    }
}

async fn cameras(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    Query(params): Query<EquipmentParams>,
) -> Result<Response, WebError> {
    equipment_list(&state, &visitor, params, Kind::Cameras).await
}

async fn lenses(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    Query(params): Query<EquipmentParams>,
) -> Result<Response, WebError> {
    equipment_list(&state, &visitor, params, Kind::Lenses).await
}

async fn equipment_list(
    state: &AppState,
    visitor: &Visitor,
    params: EquipmentParams,
    kind: Kind,
) -> Result<Response, WebError> {
    let query = [
        ("limit", "50".into()),
        ("cursor", params.cursor.unwrap_or_default()),
    ];
    let path = format!("/api/{}", kind.plural());
    let (cameras, lenses, next) = match kind {
        Kind::Cameras => {
            let page: Page<Camera> = state.gateway.get_query(&path, &query, None).await?;
            let next = page.next();
            (page.items, Vec::new(), next)
        }
        Kind::Lenses => {
            let page: Page<Lens> = state.gateway.get_query(&path, &query, None).await?;
            let next = page.next();
            (Vec::new(), page.items, next)
        }
    };
    let title = match kind {
        Kind::Cameras => "Cameras",
        Kind::Lenses => "Lenses",
    };
    render(Equipment {
        chrome: Chrome::new(visitor, title, "reviews"),
        cameras,
        lenses,
        next,
        kind: kind.plural(),
        error: params.error,
    })
}

#[derive(Template)]
#[template(path = "reviews/item.html")]
struct Item {
    chrome: Chrome,
    camera: Option<Camera>,
    lens: Option<Lens>,
    reviews: Vec<Review>,
}

async fn camera(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    Path(id): Path<Uuid>,
) -> Result<Response, WebError> {
    item(&state, &visitor, Kind::Cameras, id).await
}

async fn lens(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    Path(id): Path<Uuid>,
) -> Result<Response, WebError> {
    item(&state, &visitor, Kind::Lenses, id).await
}

/// A camera or lens page: its specs and its reviews.
async fn item(
    state: &AppState,
    visitor: &Visitor,
    kind: Kind,
    id: Uuid,
) -> Result<Response, WebError> {
    let path = format!("/api/{}/{id}", kind.plural());
    let (name, camera, lens) = match kind {
        Kind::Cameras => {
            let camera: Camera = state.gateway.get(&path, None).await?;
            (
                format!("{} {}", camera.brand, camera.model),
                Some(camera),
                None,
            )
        }
        Kind::Lenses => {
            let lens: Lens = state.gateway.get(&path, None).await?;
            (format!("{} {}", lens.brand, lens.model), None, Some(lens))
        }
    };
    let query = [
        (kind.review_filter(), id.to_string()),
        ("limit", "20".into()),
    ];
    let reviews: Page<Review> = state
        .gateway
        .get_query("/api/content", &query, None)
        .await?;
    render(Item {
        chrome: Chrome::new(visitor, name, "reviews"),
        camera,
        lens,
        reviews: reviews.items,
    })
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", content = "items", rename_all = "lowercase")]
enum Comparison {
    Cameras(Vec<Camera>),
    Lenses(Vec<Lens>),
}

#[derive(Template)]
#[template(path = "reviews/compare.html")]
struct Compare {
    chrome: Chrome,
    cameras: Vec<Camera>,
    lenses: Vec<Lens>,
}

impl Compare {
    fn rating(&self, count: &Option<i64>, average: &Option<f64>) -> String {
        rating_text(*count, *average)
    }
}

/// `/compare?camera=…&camera=…` (checkboxes of the camera list) or the same
/// with `lens`.
async fn compare(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    RawQuery(query): RawQuery,
) -> Result<Response, WebError> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or_default()).unwrap_or_default();
    let picked = |name: &str| -> Vec<String> {
        pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    };
    let (cameras, lenses) = (picked("camera"), picked("lens"));
    let (key, ids, back) = if lenses.is_empty() {
        ("cameras", cameras, "/cameras")
    } else {
        ("lenses", lenses, "/lenses")
    };
    if ids.len() < 2 {
        let message = crate::views::encode("Pick at least two to compare.");
        return Ok(Redirect::to(&format!("{back}?error={message}")).into_response());
    }
    let comparison: Comparison = state
        .gateway
        .get_query("/api/compare", &[(key, ids.join(","))], None)
        .await?;
    let (cameras, lenses) = match comparison {
        Comparison::Cameras(items) => (items, Vec::new()),
        Comparison::Lenses(items) => (Vec::new(), items),
    };
    render(Compare {
        chrome: Chrome::new(&visitor, "Side by side", "reviews"),
        cameras,
        lenses,
    })
}

/// The editor's form, also used for the preview.
#[derive(Debug, Default, Deserialize)]
struct ReviewForm {
    #[serde(default)]
    title: String,
    #[serde(default)]
    content: String,
    #[serde(default)]
    rating: String,
    /// `camera:<id>` or `lens:<id>` (new reviews only).
    #[serde(default)]
    target: String,
    /// The idempotency key of this form: publishing twice creates one review.
    #[serde(default)]
    key: String,
    /// `preview` or `publish`.
    #[serde(default)]
    action: String,
}

#[derive(Template)]
#[template(path = "reviews/editor.html")]
struct Editor {
    chrome: Chrome,
    /// `None` for a new review.
    editing: Option<Uuid>,
    form: ReviewForm,
    cameras: Vec<Camera>,
    lenses: Vec<Lens>,
    errors: FormErrors,
    preview: Option<Preview>,
}

/// The review as it will read once published.
struct Preview {
    title: String,
    stars: String,
    rating: i64,
    paragraphs: Vec<String>,
}

impl Editor {
    fn target_is(&self, value: &str) -> bool {
        self.form.target == value
    }

    fn rating_is(&self, value: &i64) -> bool {
        self.form.rating == value.to_string()
    }

    fn action(&self) -> String {
        match self.editing {
            Some(id) => format!("/reviews/{id}/edit"),
            None => "/reviews/new".into(),
        }
    }
}

fn preview(form: &ReviewForm) -> Preview {
    let rating = form.rating.parse().unwrap_or(0);
    Preview {
        title: form.title.clone(),
        stars: stars(rating),
        rating,
        paragraphs: paragraphs(&form.content),
    }
}

async fn equipment(state: &AppState) -> Result<(Vec<Camera>, Vec<Lens>), WebError> {
    let limit = [("limit", "100".to_owned())];
    let cameras: Page<Camera> = state
        .gateway
        .get_query("/api/cameras", &limit, None)
        .await?;
    let lenses: Page<Lens> = state.gateway.get_query("/api/lenses", &limit, None).await?;
    Ok((cameras.items, lenses.items))
}

fn require_editor<'a>(visitor: &'a Visitor, here: &str) -> Result<&'a str, WebError> {
    let user = visitor.require(here)?;
    if !(user.has_role("editor") || user.has_role("admin")) {
        return Err(WebError::Forbidden(
            "Only editors write reviews. An administrator can grant you the editor role.".into(),
        ));
    }
    Ok(&user.access_token)
}

async fn editor_page(
    state: &AppState,
    visitor: &Visitor,
    editing: Option<Uuid>,
    form: ReviewForm,
    errors: FormErrors,
    with_preview: bool,
) -> Result<Response, WebError> {
    let (cameras, lenses) = match editing {
        None => equipment(state).await?,
        Some(_) => (Vec::new(), Vec::new()),
    };
    let title = if editing.is_some() {
        "Edit review"
    } else {
        "Write a review"
    };
    render(Editor {
        chrome: Chrome::new(visitor, title, "reviews"),
        editing,
        preview: with_preview.then(|| preview(&form)),
        form,
        cameras,
        lenses,
        errors,
    })
}

async fn new_review(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
) -> Result<Response, WebError> {
    require_editor(&visitor, "/reviews/new")?;
    let form = ReviewForm {
        key: Uuid::new_v4().to_string(),
        ..ReviewForm::default()
    };
    editor_page(&state, &visitor, None, form, FormErrors::none(), false).await
}

/// The fields of the API's review input, from the form; a rating that is
/// not a number is sent as 0 so the API reports it with the others.
fn review_body(form: &ReviewForm) -> serde_json::Value {
    let rating: i64 = form.rating.trim().parse().unwrap_or(0);
    let mut body = serde_json::json!({
        "title": form.title, "content": form.content, "rating": rating,
    });
    if let Some((kind, id)) = form.target.split_once(':')
        && let Ok(id) = id.parse::<Uuid>()
    {
        let field = if kind == "lens" {
            "lens_id"
        } else {
            "camera_id"
        };
        body[field] = serde_json::json!(id);
    }
    body
}

async fn write_review(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    CsrfForm(form): CsrfForm<ReviewForm>,
) -> Result<Response, WebError> {
    let token = require_editor(&visitor, "/reviews/new")?.to_owned();
    if form.action == "preview" {
        return editor_page(&state, &visitor, None, form, FormErrors::none(), true).await;
    }
    if form.target.is_empty() {
        let errors = FormErrors::field("target", "choose the camera or lens reviewed");
        return editor_page(&state, &visitor, None, form, errors, false).await;
    }
    let key = (!form.key.is_empty()).then_some(form.key.as_str());
    let created: Result<Review, ApiError> = state
        .gateway
        .send(
            Method::POST,
            "/api/reviews",
            Some(&token),
            &review_body(&form),
            key,
        )
        .await;
    match created {
        Ok(review) => Ok(Redirect::to(&format!("/reviews/{}", review.id)).into_response()),
        Err(error) => {
            let errors =
                FormErrors::from_api(error, &[("camera_id", "target"), ("lens_id", "target")])?;
            editor_page(&state, &visitor, None, form, errors, false).await
        }
    }
}

async fn edit_review(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    Path(id): Path<Uuid>,
) -> Result<Response, WebError> {
    let token = require_editor(&visitor, &format!("/reviews/{id}/edit"))?;
    let review: Review = state
        .gateway
        .get(&format!("/api/content/{id}"), Some(token))
        .await?;
    let form = ReviewForm {
        title: review.title,
        content: review.content,
        rating: review.rating.to_string(),
        ..ReviewForm::default()
    };
    editor_page(&state, &visitor, Some(id), form, FormErrors::none(), false).await
}

async fn save_review(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    Path(id): Path<Uuid>,
    CsrfForm(form): CsrfForm<ReviewForm>,
) -> Result<Response, WebError> {
    let token = require_editor(&visitor, &format!("/reviews/{id}/edit"))?.to_owned();
    if form.action == "preview" {
        return editor_page(&state, &visitor, Some(id), form, FormErrors::none(), true).await;
    }
    let saved: Result<Review, ApiError> = state
        .gateway
        .send(
            Method::PATCH,
            &format!("/api/reviews/{id}"),
            Some(&token),
            &review_body(&form),
            None,
        )
        .await;
    match saved {
        Ok(review) => Ok(Redirect::to(&format!("/reviews/{}", review.id)).into_response()),
        Err(error) => {
            let errors = FormErrors::from_api(error, &[])?;
            editor_page(&state, &visitor, Some(id), form, errors, false).await
        }
    }
}
