//! The media service's errors: one enum, one way to answer with
//! `application/problem+json`. Client mistakes are 4xx and say what to
//! fix; storage failures are 503 (retry may help) and never leak details.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use zocalo_http::Problem;
use zocalo_objects::ObjectError;
use zocalo_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// Not there, or someone else's.
    #[error("no such task")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    /// A field of the request is wrong (422).
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("the upload is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    /// The task is not in a state that allows this (409).
    #[error("{0}")]
    Conflict(String),
    #[error("range not satisfiable")]
    RangeNotSatisfiable { size: u64 },
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("object storage: {0}")]
    Objects(ObjectError),
}

impl From<ObjectError> for MediaError {
    fn from(error: ObjectError) -> Self {
        match error {
            ObjectError::NotFound(_) => MediaError::NotFound,
            ObjectError::RangeNotSatisfiable { size } => MediaError::RangeNotSatisfiable { size },
            other => MediaError::Objects(other),
        }
    }
}

impl MediaError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            message: message.into(),
        }
    }
}

impl IntoResponse for MediaError {
    fn into_response(self) -> Response {
        match self {
            MediaError::NotFound => Problem::not_found()
                .with_detail("no such task")
                .into_response(),
            MediaError::BadRequest(detail) => Problem::bad_request(detail).into_response(),
            MediaError::Invalid { field, message } => {
                Problem::invalid_field(field, message).into_response()
            }
            MediaError::TooLarge { limit } => {
                let mut response = Problem::new(StatusCode::PAYLOAD_TOO_LARGE)
                    .with_detail(format!("uploads may have at most {limit} bytes"))
                    .into_response();
                // The rest of the body is not read: the connection cannot
                // carry another request, and the client must know.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                response
            }
            MediaError::Conflict(detail) => Problem::conflict(detail).into_response(),
            MediaError::RangeNotSatisfiable { size } => {
                let mut response = Problem::new(StatusCode::RANGE_NOT_SATISFIABLE)
                    .with_detail(format!("the file has {size} bytes"))
                    .into_response();
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    response.headers_mut().insert(header::CONTENT_RANGE, value);
                }
                response
            }
            MediaError::Store(error) => Problem::from(error).into_response(),
            MediaError::Objects(error) => {
                tracing::error!(%error, "object storage failed");
                Problem::unavailable("object storage is unavailable").into_response()
            }
        }
    }
}
