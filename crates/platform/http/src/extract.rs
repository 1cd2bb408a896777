//! Extractors whose rejections are problems.
//!
//! axum's own extractors answer bad input with plain text; these wrappers
//! keep the same behaviour but speak `application/problem+json`, so a
//! malformed body, a wrong content type or a bad query string is a clear
//! 4xx the client can act on.

use axum::extract::rejection::{FormRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Problem;

/// JSON body in, JSON body out.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(json_problem(rejection)),
        }
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn json_problem(rejection: JsonRejection) -> Problem {
    let status = rejection.status();
    let detail = match &rejection {
        JsonRejection::MissingJsonContentType(_) => {
            "expected a body with content type application/json".to_string()
        }
        JsonRejection::JsonSyntaxError(_) => "the body is not valid JSON".to_string(),
        // Data errors carry serde's message, which names the field and the
        // expected type without echoing our internals.
        JsonRejection::JsonDataError(e) => e.body_text(),
        _ => rejection.body_text(),
    };
    if status == StatusCode::UNPROCESSABLE_ENTITY {
        Problem::new(status)
            .with_title("Invalid input")
            .with_detail(detail)
    } else {
        Problem::new(status).with_detail(detail)
    }
}

/// An `application/x-www-form-urlencoded` body.
#[derive(Debug, Clone, Copy, Default)]
pub struct Form<T>(pub T);

impl<T, S> FromRequest<S> for Form<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Form::<T>::from_request(req, state).await {
            Ok(axum::Form(value)) => Ok(Form(value)),
            Err(rejection) => Err(form_problem(rejection)),
        }
    }
}

fn form_problem(rejection: FormRejection) -> Problem {
    let status = rejection.status();
    let detail = match &rejection {
        FormRejection::InvalidFormContentType(_) => {
            "expected a body with content type application/x-www-form-urlencoded".to_string()
        }
        _ => rejection.body_text(),
    };
    Problem::new(status).with_detail(detail)
}

/// The query string.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(query_problem(rejection)),
        }
    }
}

fn query_problem(rejection: QueryRejection) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST)
        .with_title("Invalid query string")
        .with_detail(rejection.body_text())
}

/// Path parameters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(path_problem(rejection)),
        }
    }
}

fn path_problem(rejection: PathRejection) -> Problem {
    // A path segment that does not parse (`/api/reviews/abc` where an id is
    // expected) names nothing that exists: 404, like any unknown path.
    match rejection {
        PathRejection::FailedToDeserializePathParams(_) => Problem::not_found(),
        other => Problem::internal(other.body_text()),
    }
}
