//! Object storage for Zócalo services: large files (uploaded videos, their
//! processed versions, ticket PDFs) kept outside the relational stores,
//! behind one small trait, [`ObjectStore`].
//!
//! Two adapters implement it and pass one conformance suite: a local
//! directory ([`LocalStore`], the default of `zocalo up`) and any
//! S3-compatible service ([`S3Store`], for distributed deployments), chosen
//! by the URL in [`ObjectsSettings`]. Writes take a stream and never hold
//! the object whole in memory; an object becomes visible only once complete
//! (a temporary file renamed into place, or a multipart upload completed),
//! so a crash never leaves half an object under its key. Reads may ask for a
//! byte range. `list` lets a service find objects that no row refers to any
//! more; `remove_stale_uploads` clears what interrupted writes left behind.
//!
//! Of our crates it depends on `zocalo-config` only (for [`Secret`]).

mod key;
mod local;
mod range;
mod s3;

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};
use zocalo_config::Secret;

pub use key::check_key;
pub use local::LocalStore;
pub use range::ByteRange;
pub use s3::S3Store;

/// The bytes of an object as they arrive or leave: chunks, or the I/O error
/// that ended the stream.
pub type ByteStream<'a> = BoxStream<'a, std::io::Result<Bytes>>;

/// What a store knows of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    pub modified: SystemTime,
}

/// An object (or the requested part of it) being read.
pub struct GetObject {
    /// The size of the whole object, whatever range was asked for.
    pub size: u64,
    /// The bytes `body` holds, `start..end` of the whole object.
    pub range: Range<u64>,
    pub body: ByteStream<'static>,
}

impl std::fmt::Debug for GetObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetObject")
            .field("size", &self.size)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("no object `{0}`")]
    NotFound(String),
    /// Keys are `/`-separated segments of `[A-Za-z0-9._-]`, none empty,
    /// none starting with `.`.
    #[error("invalid object key `{0}`")]
    InvalidKey(String),
    /// The range starts at or after the end of an object of `size` bytes.
    #[error("range not satisfiable for an object of {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    /// The body stream given to `put` failed; nothing was stored. The
    /// stream's own error is kept so the caller can recognise it (a size
    /// limit it imposed, a client that went away).
    #[error("the body of the object failed: {0}")]
    Body(#[source] std::io::Error),
    /// The storage itself failed (disk, network, credentials).
    #[error("object storage: {0}")]
    Backend(String),
}

impl ObjectError {
    pub(crate) fn backend(error: impl std::fmt::Display) -> Self {
        Self::Backend(error.to_string())
    }
}

/// Where objects live. Adapters differ in how, never in what they promise.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Store `body` under `key`, replacing any object there, and return its
    /// size. The object is visible only once the stream ended well; if the
    /// stream fails, nothing is visible and [`ObjectError::Body`] carries
    /// its error.
    async fn put(&self, key: &str, body: ByteStream<'_>) -> Result<u64, ObjectError>;

    /// Read the object under `key`, or the part `range` names.
    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<GetObject, ObjectError>;

    async fn head(&self, key: &str) -> Result<ObjectMeta, ObjectError>;

    /// Remove the object; removing one that is not there succeeds.
    async fn delete(&self, key: &str) -> Result<(), ObjectError>;

    /// Every object whose key is `prefix` or starts with `prefix/` (all of
    /// them for `""`), in no particular order. For garbage collection: it
    /// reads the whole listing into memory.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError>;

    /// Remove what writes interrupted by a crash left behind and is older
    /// than `older_than`; returns how many were removed.
    async fn remove_stale_uploads(&self, older_than: Duration) -> Result<u64, ObjectError>;
}

/// Which store to open, and how to reach it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ObjectsSettings {
    /// A directory (`data/objects`, `file:///srv/objects`) or an S3 bucket
    /// with an optional key prefix (`s3://videos`, `s3://shared/media`).
    pub url: String,
    /// The S3 endpoint for services other than AWS (MinIO, Ceph, moto):
    /// `http://minio:9000`. Path-style addressing is used with it.
    pub s3_endpoint: Option<String>,
    pub s3_region: String,
    /// Credentials; when absent, the `AWS_ACCESS_KEY_ID` /
    /// `AWS_SECRET_ACCESS_KEY` environment variables (or an instance
    /// role) are used.
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<Secret>,
    /// Allow an `http://` endpoint (a test server, a private network).
    pub s3_allow_http: bool,
}

impl Default for ObjectsSettings {
    fn default() -> Self {
        Self {
            url: "data/objects".into(),
            s3_endpoint: None,
            s3_region: "us-east-1".into(),
            s3_access_key_id: None,
            s3_secret_access_key: None,
            s3_allow_http: false,
        }
    }
}

/// Open the store `settings.url` names: `s3://…` an [`S3Store`], anything
/// else (a path or `file://` URL) a [`LocalStore`], created if missing.
pub async fn open(settings: &ObjectsSettings) -> Result<Arc<dyn ObjectStore>, ObjectError> {
    if settings.url.starts_with("s3://") {
        return Ok(Arc::new(S3Store::open(settings)?));
    }
    let path = settings
        .url
        .strip_prefix("file://")
        .unwrap_or(&settings.url);
    Ok(Arc::new(LocalStore::open(path).await?))
}
