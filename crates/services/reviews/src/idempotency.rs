//! `Idempotency-Key` on the creating requests (`POST /api/cameras`,
//! `/api/lenses`, `/api/reviews`), so a client or the gateway may resend a
//! POST whose answer it did not get — to this instance or another — without
//! creating twice. Keys are scoped per caller (token subject). The first
//! request with a key creates the resource and records the key with it in
//! one transaction (see [`crate::store`]); a repeat with the same body gets
//! the first answer again (`201`, same body and `Location`), a repeat with
//! a different body a 422. Without the header nothing changes.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};
use zocalo_http::Problem;
use zocalo_http::auth::AuthUser;

use crate::store::{IdempotencyClaim, KeyRecord, ResourceKind};

pub const HEADER: &str = "idempotency-key";
/// Set on a replayed answer, so clients and logs can tell it from the first.
const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
const MAX_KEY_CHARS: usize = 200;

/// The request's claim on its `Idempotency-Key`; `None` without the header.
/// `input` is the parsed body: its canonical JSON, with the kind of
/// resource, is what "the same request" means (so whitespace and field
/// order do not matter).
pub fn claim<T: Serialize>(
    headers: &HeaderMap,
    user: &AuthUser,
    kind: ResourceKind,
    input: &T,
) -> Result<Option<IdempotencyClaim>, Problem> {
    let Some(key) = key(headers)? else {
        return Ok(None);
    };
    Ok(Some(IdempotencyClaim {
        caller: user.subject.clone(),
        key,
        request_hash: request_hash(kind, input)?,
    }))
}

fn key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let mut values = headers.get_all(HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Problem::bad_request("send one Idempotency-Key header"));
    }
    let key = value
        .to_str()
        .map_err(|_| Problem::bad_request("Idempotency-Key must be visible ASCII"))?
        .trim();
    if key.is_empty() || key.len() > MAX_KEY_CHARS {
        return Err(Problem::bad_request(format!(
            "Idempotency-Key must have 1 to {MAX_KEY_CHARS} characters"
        )));
    }
    Ok(Some(key.to_owned()))
}

fn request_hash<T: Serialize>(kind: ResourceKind, input: &T) -> Result<String, Problem> {
    let body = serde_json::to_vec(input).map_err(Problem::internal)?;
    let mut hasher = Sha256::new();
    hasher.update(kind.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(&body);
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The answer to a request whose key was used before: the first answer
/// again if it is the same request, else a 422.
pub fn replay(
    record: KeyRecord,
    claim: Option<&IdempotencyClaim>,
    collection: &str,
) -> Result<Response, Problem> {
    let Some(claim) = claim else {
        return Err(Problem::internal(
            "a key record for a request without a key",
        ));
    };
    if record.request_hash != claim.request_hash {
        return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY)
            .with_title("Idempotency-Key reused")
            .with_detail("Idempotency-Key reused with a different request"));
    }
    metrics::counter!("reviews_idempotent_replays_total").increment(1);
    let location = HeaderValue::from_str(&format!("{collection}/{}", record.resource_id))
        .map_err(Problem::internal)?;
    Ok((
        StatusCode::CREATED,
        [
            (header::LOCATION, location),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (REPLAYED, HeaderValue::from_static("true")),
        ],
        record.response_body,
    )
        .into_response())
}
