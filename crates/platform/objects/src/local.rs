//! Objects as files under one directory: `<root>/<key>`. A write goes to
//! `<root>/.tmp/<random>` first, is flushed to disk, then renamed over the
//! key (atomic within one file system), so readers see the old object or
//! the whole new one, never a part. Files left in `.tmp` by a crash are
//! removed by [`ObjectStore::remove_stale_uploads`].

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use crate::key::{check_key, check_prefix};
use crate::{ByteRange, ByteStream, GetObject, ObjectError, ObjectMeta, ObjectStore};

/// Where unfinished writes live, inside the root. Keys cannot start with a
/// dot, so no key can reach it.
const TEMP_DIR: &str = ".tmp";
/// Read buffer of a download stream.
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// Use `root` (created if missing) as the store.
    pub async fn open(root: impl AsRef<Path>) -> Result<Self, ObjectError> {
        let root = root.as_ref().to_path_buf();
        tokio::fs::create_dir_all(root.join(TEMP_DIR))
            .await
            .map_err(|e| ObjectError::Backend(format!("{}: {e}", root.display())))?;
        Ok(Self { root })
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, ObjectError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    /// Write `body` to `temp`, flushed to disk; the size written.
    async fn write_temp(temp: &Path, mut body: ByteStream<'_>) -> Result<u64, ObjectError> {
        let mut file = tokio::fs::File::create(temp)
            .await
            .map_err(ObjectError::backend)?;
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(ObjectError::Body)?;
            file.write_all(&chunk).await.map_err(ObjectError::backend)?;
            size += chunk.len() as u64;
        }
        // On disk before it gets its name: a crash after the rename must not
        // leave an empty or short file under the key.
        file.sync_all().await.map_err(ObjectError::backend)?;
        Ok(size)
    }
}

fn not_found_or(key: &str, error: std::io::Error) -> ObjectError {
    if error.kind() == std::io::ErrorKind::NotFound {
        ObjectError::NotFound(key.to_owned())
    } else {
        ObjectError::backend(error)
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put(&self, key: &str, body: ByteStream<'_>) -> Result<u64, ObjectError> {
        let path = self.path_of(key)?;
        let temp = self
            .root
            .join(TEMP_DIR)
            .join(uuid::Uuid::new_v4().simple().to_string());
        let written = Self::write_temp(&temp, body).await;
        let moved = match written {
            Ok(size) => move_into_place(&temp, &path).await.map(|()| size),
            Err(error) => Err(error),
        };
        if moved.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        moved
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<GetObject, ObjectError> {
        let path = self.path_of(key)?;
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| not_found_or(key, e))?;
        let size = file.metadata().await.map_err(ObjectError::backend)?.len();
        let range = match range {
            Some(range) => range
                .resolve(size)
                .ok_or(ObjectError::RangeNotSatisfiable { size })?,
            None => 0..size,
        };
        file.seek(SeekFrom::Start(range.start))
            .await
            .map_err(ObjectError::backend)?;
        let body = ReaderStream::with_capacity(file.take(range.end - range.start), READ_CHUNK);
        Ok(GetObject {
            size,
            range,
            body: body.boxed(),
        })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, ObjectError> {
        let path = self.path_of(key)?;
        let metadata = tokio::fs::metadata(&path)
            .await
            .map_err(|e| not_found_or(key, e))?;
        if !metadata.is_file() {
            return Err(ObjectError::NotFound(key.to_owned()));
        }
        Ok(meta(key.to_owned(), &metadata))
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        let path = self.path_of(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(ObjectError::backend(error)),
        }
        remove_empty_parents(&self.root, &path).await;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
        check_prefix(prefix)?;
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        tokio::task::spawn_blocking(move || list_files(&root, &prefix))
            .await
            .map_err(ObjectError::backend)?
    }

    async fn remove_stale_uploads(&self, older_than: Duration) -> Result<u64, ObjectError> {
        let temp = self.root.join(TEMP_DIR);
        tokio::task::spawn_blocking(move || remove_old_files(&temp, older_than))
            .await
            .map_err(ObjectError::backend)?
    }
}

async fn move_into_place(temp: &Path, path: &Path) -> Result<(), ObjectError> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(ObjectError::backend)?;
    }
    tokio::fs::rename(temp, path)
        .await
        .map_err(ObjectError::backend)
}

/// Directories of deleted objects go too, so the tree does not fill with
/// empty ones. Best effort: a directory that is not empty stays.
async fn remove_empty_parents(root: &Path, path: &Path) {
    let mut dir = path.parent();
    while let Some(current) = dir {
        if current == root || tokio::fs::remove_dir(current).await.is_err() {
            break;
        }
        dir = current.parent();
    }
}

fn meta(key: String, metadata: &std::fs::Metadata) -> ObjectMeta {
    ObjectMeta {
        key,
        size: metadata.len(),
        modified: metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH),
    }
}

/// Every file under `root/prefix` (or `root/prefix` itself), with its key.
fn list_files(root: &Path, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
    let mut found = Vec::new();
    let start = if prefix.is_empty() {
        root.to_path_buf()
    } else {
        root.join(prefix)
    };
    let mut pending = vec![start];
    while let Some(path) = pending.pop() {
        let metadata = match std::fs::metadata(&path) {
            Ok(metadata) => metadata,
            // Deleted while we walked, or a prefix with nothing under it.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(ObjectError::backend(error)),
        };
        if metadata.is_file() {
            found.push(meta(key_of(root, &path), &metadata));
            continue;
        }
        let entries = match std::fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(ObjectError::backend(error)),
        };
        for entry in entries {
            let entry = entry.map_err(ObjectError::backend)?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue; // the temporary directory, or nothing of ours
            }
            pending.push(entry.path());
        }
    }
    Ok(found)
}

fn key_of(root: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(root).unwrap_or(path);
    relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn remove_old_files(dir: &Path, older_than: Duration) -> Result<u64, ObjectError> {
    let cutoff = SystemTime::now()
        .checked_sub(older_than)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).map_err(ObjectError::backend)? {
        let entry = entry.map_err(ObjectError::backend)?;
        let Ok(metadata) = entry.metadata() else {
            continue;
        };
        let modified = metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        if metadata.is_file() && modified < cutoff && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(removed, dir = %dir.display(), "removed stale partial uploads");
    }
    Ok(removed)
}
