//! Conditional GETs for public reads: a strong `ETag` from the body's hash,
//! `Cache-Control`, and `304 Not Modified` for a matching `If-None-Match`.
//!
//! Hashing the rendered body costs one pass over bytes already in memory and
//! needs no cooperation from handlers, so every public read route gets it by
//! adding one layer. A CDN or proxy in front can then cache and revalidate.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};

use crate::Problem;

/// Bodies larger than this are passed through without an `ETag`.
const MAX_HASHED_BODY: usize = 4 * 1024 * 1024;

/// Middleware: see the module docs. `max_age` is the `Cache-Control` max-age
/// in seconds.
pub async fn conditional_get(max_age: u32, req: Request, next: Next) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return next.run(req).await;
    }
    let if_none_match = req.headers().get(header::IF_NONE_MATCH).cloned();
    let response = next.run(req).await;
    if response.status() != StatusCode::OK {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Only bodies of known, bounded size are hashed; a stream is passed on
    // untouched rather than buffered.
    let bounded = http_body::Body::size_hint(&body)
        .upper()
        .is_some_and(|upper| upper <= MAX_HASHED_BODY as u64);
    if !bounded {
        return Response::from_parts(parts, body);
    }
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => return Problem::internal(error).into_response(),
    };
    let etag = etag_of(&bytes);
    parts.headers.insert(header::ETAG, etag.clone());
    parts.headers.entry(header::CACHE_CONTROL).or_insert(
        HeaderValue::from_str(&format!("public, max-age={max_age}"))
            .expect("digits are a valid header value"),
    );
    if if_none_match.is_some_and(|v| matches_etag(&v, &etag)) {
        parts.status = StatusCode::NOT_MODIFIED;
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::empty());
    }
    Response::from_parts(parts, Body::from(bytes))
}

fn etag_of(bytes: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(bytes);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a valid header value")
}

/// RFC 9110 §13.1.2: `*` or a list of (possibly weak) tags, compared weakly.
fn matches_etag(if_none_match: &HeaderValue, etag: &HeaderValue) -> bool {
    let Ok(list) = if_none_match.to_str() else {
        return false;
    };
    let ours = etag.to_str().unwrap_or_default();
    list.split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_matching_is_weak_and_handles_lists() {
        let etag = etag_of(b"hello");
        let tag = etag.to_str().unwrap().to_string();
        assert!(matches_etag(&HeaderValue::from_str(&tag).unwrap(), &etag));
        assert!(matches_etag(
            &HeaderValue::from_str(&format!("\"x\", W/{tag}")).unwrap(),
            &etag
        ));
        assert!(matches_etag(&HeaderValue::from_static("*"), &etag));
        assert!(!matches_etag(&HeaderValue::from_static("\"other\""), &etag));
        assert_ne!(etag, etag_of(b"hello!"));
    }
}
