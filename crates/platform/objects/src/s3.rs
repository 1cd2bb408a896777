//! Objects in an S3-compatible bucket, through the `object_store` crate
//! (SigV4 signing, retries, multipart uploads) on reqwest with rustls/ring.
//!
//! A small object (up to one part) is sent in one `PUT`; a larger one as a
//! multipart upload, which S3 makes visible only when it is completed and
//! which is aborted if the body fails — the same "whole or nothing"
//! promise as the local store's rename. An upload abandoned by a crash stays
//! invisible; S3 keeps its parts until a bucket lifecycle rule
//! (`AbortIncompleteMultipartUpload`) removes them, which is why
//! `remove_stale_uploads` has nothing to do here (see docs/operations.md).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{GetOptions, GetRange, PutPayload, WriteMultipart};

use crate::key::{check_key, check_prefix};
use crate::{
    ByteRange, ByteStream, GetObject, ObjectError, ObjectMeta, ObjectStore, ObjectsSettings,
};

/// S3's smallest part (but the last); also the size below which an object
/// goes in one request.
const PART_SIZE: usize = 5 * 1024 * 1024;
/// Parts in flight at once per upload: the memory an upload may hold is
/// about `(PARTS_IN_FLIGHT + 1) * PART_SIZE`.
const PARTS_IN_FLIGHT: usize = 2;

#[derive(Debug, Clone)]
pub struct S3Store {
    inner: Arc<dyn object_store::ObjectStore>,
}

impl S3Store {
    /// Open `s3://bucket[/prefix]` with the endpoint, region and
    /// credentials of `settings` (falling back to the `AWS_…` environment).
    pub fn open(settings: &ObjectsSettings) -> Result<Self, ObjectError> {
        let rest = settings
            .url
            .strip_prefix("s3://")
            .ok_or_else(|| ObjectError::Backend(format!("not an s3:// URL: {}", settings.url)))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_end_matches('/');
        if bucket.is_empty() {
            return Err(ObjectError::Backend("s3:// URL without a bucket".into()));
        }
        if !prefix.is_empty() {
            check_key(prefix)?;
        }
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_region(&settings.s3_region)
            .with_allow_http(settings.s3_allow_http);
        if let Some(endpoint) = &settings.s3_endpoint {
            // Self-hosted services rarely have a DNS name per bucket.
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        }
        if let Some(id) = &settings.s3_access_key_id {
            builder = builder.with_access_key_id(id);
        }
        if let Some(secret) = &settings.s3_secret_access_key {
            builder = builder.with_secret_access_key(secret.expose());
        }
        let s3 = builder
            .build()
            .map_err(|e| ObjectError::Backend(format!("s3 settings: {e}")))?;
        let inner: Arc<dyn object_store::ObjectStore> = if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(PrefixStore::new(s3, prefix))
        };
        Ok(Self { inner })
    }

    /// Send the rest of `body` as parts after `head`, completing the upload
    /// only if the whole body arrived.
    async fn put_multipart(
        &self,
        path: &Path,
        head: Vec<Bytes>,
        mut body: ByteStream<'_>,
    ) -> Result<u64, ObjectError> {
        let upload = self
            .inner
            .put_multipart(path)
            .await
            .map_err(ObjectError::backend)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut size = 0u64;
        for chunk in head {
            size += chunk.len() as u64;
            writer.put(chunk);
        }
        loop {
            let next = match writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                Ok(()) => body.next().await,
                Err(error) => Some(Err(std::io::Error::other(error))),
            };
            match next {
                Some(Ok(chunk)) => {
                    size += chunk.len() as u64;
                    writer.put(chunk);
                }
                Some(Err(error)) => {
                    let _ = writer.abort().await;
                    return Err(ObjectError::Body(error));
                }
                None => break,
            }
        }
        writer.finish().await.map_err(ObjectError::backend)?;
        Ok(size)
    }
}

fn error_for(key: &str, error: object_store::Error) -> ObjectError {
    match error {
        object_store::Error::NotFound { .. } => ObjectError::NotFound(key.to_owned()),
        other => ObjectError::backend(other),
    }
}

fn meta(meta: object_store::ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        key: meta.location.to_string(),
        size: meta.size,
        modified: meta.last_modified.into(),
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, mut body: ByteStream<'_>) -> Result<u64, ObjectError> {
        check_key(key)?;
        let path = Path::from(key);
        // Read up to one part: a small object is one PUT, not three calls.
        let mut head = Vec::new();
        let mut buffered = 0usize;
        while buffered < PART_SIZE {
            match body.next().await {
                Some(Ok(chunk)) => {
                    buffered += chunk.len();
                    head.push(chunk);
                }
                Some(Err(error)) => return Err(ObjectError::Body(error)),
                None => {
                    let payload: PutPayload = head.into_iter().collect();
                    self.inner
                        .put(&path, payload)
                        .await
                        .map_err(ObjectError::backend)?;
                    return Ok(buffered as u64);
                }
            }
        }
        self.put_multipart(&path, head, body).await
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<GetObject, ObjectError> {
        check_key(key)?;
        let path = Path::from(key);
        let range = match range {
            None => None,
            Some(range) => {
                let size = self.head(key).await?.size;
                Some(
                    range
                        .resolve(size)
                        .ok_or(ObjectError::RangeNotSatisfiable { size })?,
                )
            }
        };
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let result = self
            .inner
            .get_opts(&path, options)
            .await
            .map_err(|e| error_for(key, e))?;
        let size = result.meta.size;
        let range = result.range.clone();
        let body = result.into_stream().map_err(std::io::Error::other).boxed();
        Ok(GetObject { size, range, body })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, ObjectError> {
        check_key(key)?;
        let found = self
            .inner
            .head(&Path::from(key))
            .await
            .map_err(|e| error_for(key, e))?;
        Ok(meta(found))
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        check_key(key)?;
        match self.inner.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(ObjectError::backend(error)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
        check_prefix(prefix)?;
        let under = (!prefix.is_empty()).then(|| Path::from(prefix));
        let mut found: Vec<ObjectMeta> = self
            .inner
            .list(under.as_ref())
            .map_ok(meta)
            .try_collect()
            .await
            .map_err(ObjectError::backend)?;
        // S3 lists what is under `prefix/`; the key `prefix` itself is
        // asked for separately, as the local store includes it.
        if !prefix.is_empty() {
            match self.head(prefix).await {
                Ok(exact) => found.push(exact),
                Err(ObjectError::NotFound(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(found)
    }

    async fn remove_stale_uploads(&self, _older_than: Duration) -> Result<u64, ObjectError> {
        // Interrupted uploads are incomplete multipart uploads: invisible,
        // and removed by the bucket's lifecycle rule (module docs).
        Ok(0)
    }
}
