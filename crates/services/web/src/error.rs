//! The one error type of the web service: every failure becomes a page a
//! person can act on (or a redirect to sign in), never a stack trace and
//! never a JSON body.

use askama::Template;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};

use crate::gateway::ApiError;
use crate::views::Chrome;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("not found")]
    NotFound,
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The page needs a signed-in user; after signing in, go back here.
    #[error("sign in required")]
    SignIn(String),
    #[error("the form's CSRF token is missing or wrong")]
    Csrf,
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<ApiError> for WebError {
    fn from(error: ApiError) -> Self {
        match error.status() {
            Some(401) => WebError::SignIn("/".into()),
            Some(403) => WebError::Forbidden(error.detail()),
            Some(404) => WebError::NotFound,
            Some(status) if (400..500).contains(&status) && status != 429 => {
                WebError::BadRequest(error.detail())
            }
            Some(429) => WebError::Unavailable("too many requests; wait a moment".into()),
            Some(_) => {
                tracing::warn!(?error, "an API call failed");
                WebError::Unavailable(error.detail())
            }
            None => {
                if let ApiError::Unavailable(cause) = &error {
                    tracing::warn!(%cause, "the gateway gave no usable answer");
                }
                WebError::Unavailable(error.detail())
            }
        }
    }
}

impl From<askama::Error> for WebError {
    fn from(error: askama::Error) -> Self {
        WebError::Internal(format!("rendering failed: {error}"))
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    chrome: Chrome,
    status: u16,
    heading: &'static str,
    message: String,
}

/// The error page for `status`, in the site's layout.
pub fn error_page(status: StatusCode, message: String) -> Response {
    let heading = match status.as_u16() {
        400 | 422 => "That request could not be understood",
        403 => "You may not do that",
        404 => "Page not found",
        503 => "Service unavailable",
        405 => "Not allowed here",
        _ => "Something went wrong",
    };
    let page = ErrorPage {
        chrome: Chrome::anonymous(heading),
        status: status.as_u16(),
        heading,
        message,
    };
    let mut response = match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(_) => (status, heading).into_response(),
    };
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    response
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        match self {
            WebError::SignIn(next) => {
                Redirect::to(&format!("/signin?next={}", crate::views::encode(&next)))
                    .into_response()
            }
            WebError::NotFound => error_page(
                StatusCode::NOT_FOUND,
                "There is nothing at this address. It may have been removed, or the link is wrong."
                    .into(),
            ),
            WebError::Forbidden(detail) => error_page(StatusCode::FORBIDDEN, detail),
            WebError::Csrf => error_page(
                StatusCode::FORBIDDEN,
                "This form has expired or did not come from this site. Go back, reload the page and try again."
                    .into(),
            ),
            WebError::BadRequest(detail) => error_page(StatusCode::BAD_REQUEST, detail),
            WebError::Unavailable(detail) => {
                error_page(StatusCode::SERVICE_UNAVAILABLE, detail)
            }
            WebError::Internal(cause) => {
                tracing::error!(%cause, "page failed");
                error_page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "An unexpected error happened on our side. Please try again.".into(),
                )
            }
        }
    }
}

/// Middleware: the problem+json answers of the shared server stack
/// (unknown path, wrong method, a panic) become error pages too.
pub async fn html_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !is_problem {
        return response;
    }
    let status = response.status();
    let message = match status {
        StatusCode::NOT_FOUND => {
            "There is nothing at this address. It may have been removed, or the link is wrong."
        }
        StatusCode::METHOD_NOT_ALLOWED => "This page cannot be used that way.",
        s if s.is_server_error() => "An unexpected error happened on our side. Please try again.",
        _ => "The request could not be understood.",
    };
    error_page(status, message.into())
}
