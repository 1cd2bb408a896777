//! Word that a task changed, for the status streams of this process.
//!
//! A status stream ([`crate::routes`]) reads the task from the store, which
//! is what workers in every process share; between reads it sleeps for
//! `media.status_poll_ms`. When the worker runs in the same process as the
//! API (`zocalo up`, the embedded default), that sleep is the only thing
//! between a finished conversion and the client hearing of it, so the
//! worker also announces each change here and the streams wake at once.
//! Workers in other processes are still seen, at the polling interval.
//!
//! The channel is process-wide for the same reason the SQLite bus keeps its
//! wake-ups process-wide: the API and the worker are built separately and
//! share nothing else.

use std::sync::OnceLock;

use tokio::sync::broadcast;
use uuid::Uuid;

/// Announcements a slow stream may fall behind by before it misses some;
/// one that misses any reads the store again, so nothing is lost.
const BACKLOG: usize = 256;

fn channel() -> &'static broadcast::Sender<Uuid> {
    static CHANGES: OnceLock<broadcast::Sender<Uuid>> = OnceLock::new();
    CHANGES.get_or_init(|| broadcast::channel(BACKLOG).0)
}

/// Say that task `id` changed (status, progress, or gone).
pub fn announce(id: Uuid) {
    // No receiver is the common case (nobody is watching): not an error.
    let _ = channel().send(id);
}

/// Announcements from now on.
pub fn subscribe() -> Subscription {
    Subscription(channel().subscribe())
}

pub struct Subscription(broadcast::Receiver<Uuid>);

impl Subscription {
    /// Wait until task `id` may have changed: it was announced, or
    /// announcements were missed. Never returns otherwise, so callers bound
    /// the wait with their polling interval.
    pub async fn changed(&mut self, id: Uuid) {
        loop {
            match self.0.recv().await {
                Ok(changed) if changed == id => return,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_watcher_wakes_for_its_task_only() {
        let (mine, other) = (Uuid::new_v4(), Uuid::new_v4());
        let mut subscription = subscribe();
        announce(other);
        let early = tokio::time::timeout(Duration::from_millis(50), subscription.changed(mine));
        assert!(
            early.await.is_err(),
            "another task's change must not wake it"
        );
        announce(mine);
        tokio::time::timeout(Duration::from_secs(5), subscription.changed(mine))
            .await
            .expect("its own task's change wakes it");
    }

    #[tokio::test]
    async fn a_watcher_that_fell_behind_wakes_to_read_again() {
        let mine = Uuid::new_v4();
        let mut subscription = subscribe();
        for _ in 0..BACKLOG + 10 {
            announce(Uuid::new_v4());
        }
        tokio::time::timeout(Duration::from_secs(5), subscription.changed(mine))
            .await
            .expect("missed announcements may have been about this task");
    }
}
