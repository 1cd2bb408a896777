//! The query service's errors and their problem responses.

use axum::response::{IntoResponse, Response};
use zocalo_http::Problem;
use zocalo_store::StoreError;

#[derive(Debug)]
pub enum QueryError {
    /// No such document, or not the caller's: 404 either way.
    NotFound,
    /// A query parameter the caller got wrong: 400 naming it.
    InvalidParameter { name: &'static str, message: String },
    /// The read model could not be reached or read.
    Store(StoreError),
}

impl QueryError {
    pub fn invalid(name: &'static str, message: impl Into<String>) -> Self {
        QueryError::InvalidParameter {
            name,
            message: message.into(),
        }
    }
}

impl From<StoreError> for QueryError {
    fn from(error: StoreError) -> Self {
        QueryError::Store(error)
    }
}

impl From<QueryError> for Problem {
    fn from(error: QueryError) -> Self {
        match error {
            QueryError::NotFound => Problem::not_found(),
            QueryError::InvalidParameter { name, message } => {
                Problem::bad_request(format!("query parameter `{name}`: {message}"))
            }
            QueryError::Store(error) => error.into(),
        }
    }
}

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}
