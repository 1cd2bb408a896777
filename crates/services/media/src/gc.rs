//! Garbage collection of objects: what interrupted uploads left in the
//! store's temporary area, and objects no task refers to (an upload whose
//! row was never written, a delete that crashed between the row and the
//! files). Only objects older than a grace period are touched, so an upload
//! still on its way to its row is never taken.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use uuid::Uuid;
use zocalo_objects::ObjectStore;

use crate::domain::{TASKS_PREFIX, task_of_key};
use crate::store::TasksStore;

/// Ids asked of the store at once.
const BATCH: usize = 500;

/// What one collection removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Collected {
    pub stale_uploads: u64,
    pub orphans: u64,
}

pub async fn collect(
    store: &dyn TasksStore,
    objects: &dyn ObjectStore,
    grace: Duration,
) -> anyhow::Result<Collected> {
    let stale_uploads = objects.remove_stale_uploads(grace).await?;
    let cutoff = SystemTime::now()
        .checked_sub(grace)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut by_task: BTreeMap<Uuid, Vec<String>> = BTreeMap::new();
    for object in objects.list(TASKS_PREFIX).await? {
        if object.modified > cutoff {
            continue;
        }
        match task_of_key(&object.key) {
            Some(id) => by_task.entry(id).or_default().push(object.key),
            None => tracing::warn!(key = %object.key, "object under tasks/ that names no task"),
        }
    }
    let ids: Vec<Uuid> = by_task.keys().copied().collect();
    let mut orphans = 0;
    for batch in ids.chunks(BATCH) {
        let existing = store.existing(batch.to_vec()).await?;
        for id in batch.iter().filter(|id| !existing.contains(id)) {
            for key in &by_task[id] {
                objects.delete(key).await?;
                orphans += 1;
            }
        }
    }
    if stale_uploads + orphans > 0 {
        tracing::info!(stale_uploads, orphans, "object garbage collected");
    }
    Ok(Collected {
        stale_uploads,
        orphans,
    })
}
