//! Who a request is for, as a *routing hint* for read-your-writes.
//!
//! [`read_your_writes`] (installed by [`crate::server::finish`] on every
//! service) runs each request inside a task-local scope holding the `sub`
//! claim of its bearer token; the store reads it with [`current_subject`] to
//! send a caller's reads to the primary right after that caller wrote.
//!
//! The claim is taken from the token **without verifying it**: this value
//! never authorizes anything (the verified extractors in [`crate::auth`] do
//! that), it only chooses between the primary and a replica, so a forged
//! token can at worst move its own reads to the primary. Decoding without
//! verifying keeps the middleware free of keys and cheap enough to run
//! before routing, which it must, because public reads never verify a token
//! yet are exactly the reads that should see the caller's write.
//!
//! The scope does not follow work the handler spawns onto other tasks: those
//! read as an anonymous caller (replicas allowed), which is safe.

use std::future::Future;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Longer tokens are not looked at; ours are a few hundred bytes.
const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Longer subjects are ignored rather than kept in the store's map.
const MAX_SUBJECT_LEN: usize = 256;

tokio::task_local! {
    static SUBJECT: Option<Arc<str>>;
}

/// The subject of the request being served, if it carried a bearer token
/// with a `sub` claim and runs inside [`read_your_writes`] or [`with_subject`].
pub fn current_subject() -> Option<Arc<str>> {
    SUBJECT.try_with(Clone::clone).ok().flatten()
}

/// Run `work` as `subject` (jobs, event handlers and tests acting for a user).
pub async fn with_subject<F: Future>(subject: Option<Arc<str>>, work: F) -> F::Output {
    SUBJECT.scope(subject, work).await
}

/// Middleware: serve the request inside the scope of its (unverified) subject.
pub async fn read_your_writes(req: Request, next: Next) -> Response {
    let subject = unverified_subject(req.headers());
    with_subject(subject, next.run(req)).await
}

/// The `sub` claim of the bearer token in `headers`, signature unchecked.
pub fn unverified_subject(headers: &HeaderMap) -> Option<Arc<str>> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let payload = token.trim().split('.').nth(1)?;
    let json = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: SubjectClaim = serde_json::from_slice(&json).ok()?;
    let subject = claims.sub?;
    (!subject.is_empty() && subject.len() <= MAX_SUBJECT_LEN).then(|| Arc::from(subject))
}

#[derive(serde::Deserialize)]
struct SubjectClaim {
    sub: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn bearer(payload: &str) -> HeaderMap {
        let token = format!(
            "{}.{}.signature",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA"}"#),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        headers
    }

    #[test]
    fn the_sub_claim_is_read_without_a_valid_signature() {
        let subject = unverified_subject(&bearer(r#"{"sub":"alice","roles":[]}"#));
        assert_eq!(subject.as_deref(), Some("alice"));
    }

    #[test]
    fn anything_else_is_anonymous() {
        assert_eq!(unverified_subject(&HeaderMap::new()), None);
        assert_eq!(unverified_subject(&bearer(r#"{"roles":[]}"#)), None);
        assert_eq!(unverified_subject(&bearer(r#"{"sub":""}"#)), None);
        assert_eq!(unverified_subject(&bearer("not json")), None);
        let long = format!(r#"{{"sub":"{}"}}"#, "x".repeat(MAX_SUBJECT_LEN + 1));
        assert_eq!(unverified_subject(&bearer(&long)), None);
        let mut basic = HeaderMap::new();
        basic.insert(AUTHORIZATION, HeaderValue::from_static("Basic YTpi"));
        assert_eq!(unverified_subject(&basic), None);
    }

    #[tokio::test]
    async fn the_subject_is_visible_only_inside_its_scope() {
        assert_eq!(current_subject(), None);
        let inside = with_subject(Some("bob".into()), async { current_subject() }).await;
        assert_eq!(inside.as_deref(), Some("bob"));
        assert_eq!(current_subject(), None);
    }
}
