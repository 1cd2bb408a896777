//! Receiving an upload: the `file` part of a multipart body goes to object
//! storage chunk by chunk as it arrives (never whole in memory), after its
//! first bytes were recognised as a video container, and is cut off with
//! 413 as soon as it passes the size limit.

use axum::extract::Multipart;
use axum::extract::multipart::Field;
use bytes::Bytes;
use futures_util::{StreamExt, stream};
use zocalo_objects::{ObjectError, ObjectStore};

use crate::domain::{SNIFF_BYTES, clean_file_name, sniff_video};
use crate::error::MediaError;

/// The form field that carries the video.
pub const FILE_FIELD: &str = "file";

/// What was stored.
pub struct Stored {
    pub file_name: String,
    pub content_type: String,
    pub size: u64,
}

/// The error the body stream raises at the size limit, recognised again
/// when the store hands it back.
#[derive(Debug, thiserror::Error)]
#[error("the upload passed the size limit")]
struct OverLimit;

/// Find the `file` part and store it under `key`.
pub async fn receive(
    multipart: &mut Multipart,
    objects: &dyn ObjectStore,
    key: &str,
    limit: u64,
) -> Result<Stored, MediaError> {
    loop {
        let field = multipart
            .next_field()
            .await
            .map_err(|e| MediaError::BadRequest(format!("malformed multipart body: {e}")))?
            .ok_or_else(|| MediaError::invalid(FILE_FIELD, "a video file is required"))?;
        if field.name() == Some(FILE_FIELD) {
            let stored = store_field(field, objects, key, limit).await;
            if matches!(stored, Err(MediaError::TooLarge { .. })) {
                read_rest_briefly(multipart).await;
            }
            return stored;
        }
        // Other fields are not read into memory: draining skips them.
        drain(field).await?;
    }
}

/// Closing a connection with unread data resets it, and the client then
/// never reads our 413. Give a client that is nearly done a moment to
/// finish sending, without reading for long.
async fn read_rest_briefly(multipart: &mut Multipart) {
    let rest = async {
        while let Ok(Some(field)) = multipart.next_field().await {
            if drain(field).await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(OVERRUN_GRACE, rest).await;
}

/// How long an upload past the limit is still read (and thrown away).
const OVERRUN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

async fn drain(mut field: Field<'_>) -> Result<(), MediaError> {
    while field
        .chunk()
        .await
        .map_err(|e| MediaError::BadRequest(format!("malformed multipart body: {e}")))?
        .is_some()
    {}
    Ok(())
}

async fn store_field(
    mut field: Field<'_>,
    objects: &dyn ObjectStore,
    key: &str,
    limit: u64,
) -> Result<Stored, MediaError> {
    let file_name = clean_file_name(field.file_name());
    let head = read_head(&mut field, limit).await?;
    if head.is_empty() {
        return Err(MediaError::invalid(FILE_FIELD, "the file is empty"));
    }
    let content_type = sniff_video(&head)
        .ok_or_else(|| MediaError::invalid(FILE_FIELD, "the file is not a video"))?;
    let head_len = head.len() as u64;
    let mut seen = head_len;
    let rest = field.map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        seen += chunk.len() as u64;
        if seen > limit {
            return Err(std::io::Error::other(OverLimit));
        }
        Ok(chunk)
    });
    let body = stream::once(async move { Ok(Bytes::from(head)) }).chain(rest);
    match objects.put(key, body.boxed()).await {
        Ok(size) => Ok(Stored {
            file_name,
            content_type: content_type.to_owned(),
            size,
        }),
        Err(ObjectError::Body(error)) if is_over_limit(&error) => {
            Err(MediaError::TooLarge { limit })
        }
        Err(ObjectError::Body(error)) => Err(MediaError::BadRequest(format!(
            "the upload broke off: {error}"
        ))),
        Err(error) => Err(error.into()),
    }
}

/// The first [`SNIFF_BYTES`] of the field (fewer if it is shorter).
async fn read_head(field: &mut Field<'_>, limit: u64) -> Result<Vec<u8>, MediaError> {
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    while head.len() < SNIFF_BYTES {
        match field.chunk().await {
            Ok(Some(chunk)) => head.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(error) => {
                return Err(MediaError::BadRequest(format!(
                    "the upload broke off: {error}"
                )));
            }
        }
        if head.len() as u64 > limit {
            return Err(MediaError::TooLarge { limit });
        }
    }
    Ok(head)
}

fn is_over_limit(error: &std::io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<OverLimit>().is_some())
}
