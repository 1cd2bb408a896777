//! Files the APIs serve to their owner (ticket PDFs, videos), fetched with
//! the visitor's token and passed on to the browser as they arrive, with
//! `Range` passed through so a `<video>` can seek.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

use crate::app::AppState;
use crate::error::WebError;

/// The answer headers a browser needs to use the file.
const PASSED_ON: [header::HeaderName; 6] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_RANGE,
    header::ACCEPT_RANGES,
    header::CONTENT_DISPOSITION,
    header::ETAG,
];

/// Fetch `path` with `token` and stream it to the browser.
pub async fn pass_on(
    state: &AppState,
    path: &str,
    token: &str,
    range: Option<&HeaderValue>,
) -> Result<Response, WebError> {
    let upstream = state.gateway.fetch(path, token, range).await?;
    let status = StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::OK);
    let mut headers = HeaderMap::new();
    for name in PASSED_ON {
        let value = upstream.headers().get(name.as_str());
        if let Some(Ok(value)) = value.map(|v| HeaderValue::from_bytes(v.as_bytes())) {
            headers.insert(name, value);
        }
    }
    let mut response = Response::new(Body::from_stream(upstream.bytes_stream()));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    // The file is the visitor's own: no shared cache may keep it.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    Ok(response)
}
