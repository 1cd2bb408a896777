//! The cinema's manager screens: add a room to a cinema, a movie, and a
//! showtime of a movie in a room. The API decides who may (the cinema's
//! managers; admins for movies too): its 403 is shown on the form.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::Method;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;
use uuid::Uuid;

use crate::app::AppState;
use crate::csrf::CsrfForm;
use crate::error::WebError;
use crate::gateway::ApiError;
use crate::session::Visitor;
use crate::views::{Chrome, FormErrors, render};

use super::cinema::Page;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/cinema/manage", get(manage))
        .route("/cinema/manage/rooms", post(add_room))
        .route("/cinema/manage/movies", post(add_movie))
        .route("/cinema/manage/showtimes", post(add_showtime))
}

#[derive(Debug, Deserialize)]
struct Room {
    id: Uuid,
    name: String,
    capacity: u32,
}

#[derive(Debug, Deserialize)]
struct Cinema {
    id: Uuid,
    name: String,
    #[serde(default)]
    rooms: Vec<Room>,
}

#[derive(Debug, Deserialize)]
struct Movie {
    id: Uuid,
    title: String,
}

/// Every form of the page, as typed (one is submitted at a time).
#[derive(Debug, Default, Deserialize)]
struct ManageForm {
    #[serde(default)]
    cinema_id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    rows: String,
    #[serde(default)]
    seats_per_row: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    duration_min: String,
    #[serde(default)]
    movie_id: String,
    #[serde(default)]
    room_id: String,
    #[serde(default)]
    starts_at: String,
    #[serde(default)]
    price: String,
}

#[derive(Template)]
#[template(path = "cinema/manage.html")]
struct Manage {
    chrome: Chrome,
    cinemas: Vec<Cinema>,
    movies: Vec<Movie>,
    form: ManageForm,
    /// Which form the errors belong to (`room`, `movie`, `showtime`).
    failed: &'static str,
    errors: FormErrors,
    done: Done,
}

impl Manage {
    /// The message for `field` of `form`, when that form was refused.
    fn error(&self, form: &str, field: &str) -> Option<&str> {
        (self.failed == form)
            .then(|| self.errors.get(field))
            .flatten()
    }

    /// What the API said about `form` as a whole, or about fields it does
    /// not show (`shown`: the names of those it does, space-separated).
    fn alerts(&self, form: &str, shown: &str) -> Vec<String> {
        if self.failed != form {
            return Vec::new();
        }
        let shown: Vec<&str> = shown.split_whitespace().collect();
        let mut alerts = self.errors.others(&shown);
        alerts.extend(self.errors.general.clone());
        alerts
    }
}

/// What the last form added. A new movie has no showtime yet, so the list
/// of movies now showing lacks it: it is offered from here.
#[derive(Debug, Default, Deserialize)]
struct Done {
    #[serde(default)]
    done: String,
    new_movie: Option<Uuid>,
    #[serde(default)]
    new_title: String,
}

async fn page(
    state: &AppState,
    visitor: &Visitor,
    form: ManageForm,
    failed: &'static str,
    errors: FormErrors,
    done: Done,
) -> Result<Response, WebError> {
    let signed_in = visitor.require("/cinema/manage")?;
    if !(signed_in.has_role("manager") || signed_in.has_role("admin")) {
        return Err(WebError::Forbidden(
            "the manager screens are for the cinemas' managers".into(),
        ));
    }
    let limit = [("limit", "100".to_owned())];
    let cinemas: Page<Cinema> = state
        .gateway
        .get_query("/api/cinema/cinemas", &limit, None)
        .await?;
    let mut movies: Page<Movie> = state
        .gateway
        .get_query("/api/cinema/movies", &limit, None)
        .await?;
    if let Some(id) = done
        .new_movie
        .filter(|id| movies.items.iter().all(|m| m.id != *id))
    {
        movies.items.insert(
            0,
            Movie {
                id,
                title: done.new_title.clone(),
            },
        );
    }
    render(Manage {
        chrome: Chrome::new(visitor, "Manage cinemas", "cinema"),
        cinemas: cinemas.items,
        movies: movies.items,
        form,
        failed,
        errors,
        done,
    })
}

async fn manage(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    Query(done): Query<Done>,
) -> Result<Response, WebError> {
    page(
        &state,
        &visitor,
        ManageForm::default(),
        "",
        FormErrors::none(),
        done,
    )
    .await
}

/// A whole number typed into `field`, or that field's error.
fn number(value: &str, field: &str) -> Result<i64, FormErrors> {
    value
        .trim()
        .parse()
        .map_err(|_| FormErrors::field(field, "must be a whole number"))
}

/// Send a creation to the API; back to the page saying what was added, or
/// the form again with the API's refusal.
async fn create(
    state: &AppState,
    visitor: &Visitor,
    form: ManageForm,
    which: &'static str,
    path: &str,
    body: Result<serde_json::Value, FormErrors>,
) -> Result<Response, WebError> {
    let token = visitor.require("/cinema/manage")?.access_token.clone();
    let body = match body {
        Ok(body) => body,
        Err(errors) => return page(state, visitor, form, which, errors, Done::default()).await,
    };
    let created: Result<serde_json::Value, ApiError> = state
        .gateway
        .send(Method::POST, path, Some(&token), &body, None)
        .await;
    match created {
        Ok(created) => {
            let mut query = vec![("done", which.to_owned())];
            if let Some(id) = created["movie_id"].as_str() {
                query.push(("new_movie", id.to_owned()));
                query.push(("new_title", form.title.clone()));
            }
            let query = serde_urlencoded::to_string(query).unwrap_or_default();
            Ok(Redirect::to(&format!("/cinema/manage?{query}")).into_response())
        }
        Err(error) => {
            let errors = match error.status() {
                Some(403 | 409) => FormErrors::message(error.detail()),
                _ => FormErrors::from_api(error, &[("prices", "price")])?,
            };
            page(state, visitor, form, which, errors, Done::default()).await
        }
    }
}

async fn add_room(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    CsrfForm(form): CsrfForm<ManageForm>,
) -> Result<Response, WebError> {
    let body = number(&form.rows, "rows").and_then(|rows| {
        let seats = number(&form.seats_per_row, "seats_per_row")?;
        Ok(
            serde_json::json!({"cinema_id": form.cinema_id, "name": form.name,
            "rows": rows, "seats_per_row": seats}),
        )
    });
    create(&state, &visitor, form, "room", "/api/cinema/rooms", body).await
}

async fn add_movie(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    CsrfForm(form): CsrfForm<ManageForm>,
) -> Result<Response, WebError> {
    let body = number(&form.duration_min, "duration_min")
        .map(|minutes| serde_json::json!({"title": form.title, "duration_min": minutes}));
    create(&state, &visitor, form, "movie", "/api/cinema/movies", body).await
}

/// The start as typed in a `datetime-local` field, read as UTC.
fn starts_at(value: &str) -> Result<String, FormErrors> {
    chrono::NaiveDateTime::parse_from_str(value.trim(), "%Y-%m-%dT%H:%M")
        .map(|at| at.and_utc().to_rfc3339())
        .map_err(|_| FormErrors::field("starts_at", "must be a day and time (UTC)"))
}

/// A price as typed (`85`, `85.50`) in minor units.
fn cents(value: &str) -> Result<i64, FormErrors> {
    let invalid = || FormErrors::field("price", "must be an amount such as 85.50");
    let (units, fraction) = value.trim().split_once('.').unwrap_or((value.trim(), "0"));
    if fraction.len() > 2 || units.is_empty() {
        return Err(invalid());
    }
    let units: i64 = units.parse().map_err(|_| invalid())?;
    let fraction: i64 = format!("{fraction:0<2}").parse().map_err(|_| invalid())?;
    Ok(units * 100 + fraction)
}

async fn add_showtime(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    CsrfForm(form): CsrfForm<ManageForm>,
) -> Result<Response, WebError> {
    let body = starts_at(&form.starts_at).and_then(|at| {
        let price = cents(&form.price)?;
        Ok(
            serde_json::json!({"movie_id": form.movie_id, "room_id": form.room_id,
            "starts_at": at, "prices": [{"class": "standard", "cents": price}]}),
        )
    });
    create(
        &state,
        &visitor,
        form,
        "showtime",
        "/api/cinema/showtimes",
        body,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_starts_and_prices_are_read_or_refused() {
        assert_eq!(
            starts_at("2030-07-01T20:00").unwrap(),
            "2030-07-01T20:00:00+00:00"
        );
        assert!(
            starts_at("tomorrow")
                .unwrap_err()
                .get("starts_at")
                .is_some()
        );
        assert_eq!(cents("85").unwrap(), 8500);
        assert_eq!(cents("85.5").unwrap(), 8550);
        assert!(cents("8.505").is_err() && cents("x").is_err() && cents(".5").is_err());
    }
}
