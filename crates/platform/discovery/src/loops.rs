//! One background loop per watched service, shared by all its receivers.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Instances;

#[derive(Default)]
pub(crate) struct Loops {
    running: Mutex<HashMap<String, Loop>>,
}

struct Loop {
    /// Kept here too, so receivers never see the channel closed even after
    /// the loop ended for want of receivers.
    sender: watch::Sender<Instances>,
    task: JoinHandle<()>,
}

impl Loops {
    /// A receiver of the loop already running for `service`, if any.
    pub(crate) fn subscribe(&self, service: &str) -> Option<watch::Receiver<Instances>> {
        let running = self.running.lock().expect("discovery lock");
        let current = running.get(service)?;
        (!current.task.is_finished()).then(|| current.sender.subscribe())
    }

    /// Start `spawn`'s loop publishing to `sender`, unless another caller
    /// started one for `service` meanwhile; a receiver of whichever runs.
    pub(crate) fn start(
        &self,
        service: &str,
        sender: watch::Sender<Instances>,
        spawn: impl FnOnce(watch::Sender<Instances>) -> JoinHandle<()>,
    ) -> watch::Receiver<Instances> {
        let mut running = self.running.lock().expect("discovery lock");
        if let Some(current) = running.get(service)
            && !current.task.is_finished()
        {
            return current.sender.subscribe();
        }
        let receiver = sender.subscribe();
        let task = spawn(sender.clone());
        running.insert(service.to_owned(), Loop { sender, task });
        receiver
    }
}
