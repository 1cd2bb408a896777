//! Rebuilding the read models from scratch: wipe them, then replay the
//! command side's event log (`GET /internal/events?after=<seq>&limit=<n>`)
//! page by page through the same code the live projector uses.
//!
//! The live projector may keep running meanwhile: every document keeps the
//! newest version it has seen, so an event applied twice (once live, once
//! replayed) or in any order ends in the same state.

use std::sync::Arc;

use zocalo_contracts::cinema::EventLogPage;
use zocalo_http::client::ServiceClient;
use zocalo_http::service_auth::ServiceAuth;

use crate::projector::{Incoming, Outcome, Projector};
use crate::store::CinemaStore;

/// The command side's event log, read with a service token.
pub struct EventLog {
    command: ServiceClient,
    auth: ServiceAuth,
    page_size: u32,
}

impl EventLog {
    pub fn new(command: ServiceClient, auth: ServiceAuth, page_size: u32) -> Self {
        Self {
            command,
            auth,
            page_size: page_size.clamp(1, 1_000),
        }
    }

    /// The events after log position `after`.
    pub async fn page(&self, after: i64) -> anyhow::Result<EventLogPage> {
        let token = self
            .auth
            .bearer()
            .await
            .map_err(|p| anyhow::anyhow!("no service token: {p}"))?;
        let response = self
            .command
            .get(&format!(
                "/internal/events?after={after}&limit={}",
                self.page_size
            ))
            .bearer_auth(token)
            .retryable()
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("reading the event log: {e}"))?;
        let status = response.status();
        anyhow::ensure!(
            status.is_success(),
            "the event log answered {status} after position {after}"
        );
        Ok(response.json().await?)
    }
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    pub pages: u64,
    pub events: u64,
    pub applied: u64,
    pub ignored: u64,
    /// The last log position replayed.
    pub last_seq: i64,
}

/// Wipe the read models and replay the whole log into them. The first page
/// is read before wiping: a log that cannot be read leaves the read models
/// as they were.
pub async fn rebuild(store: Arc<dyn CinemaStore>, log: &EventLog) -> anyhow::Result<Report> {
    let mut page = log.page(0).await?;
    store.wipe().await?;
    let projector = Projector::new(store);
    let mut report = Report::default();
    let mut after = 0;
    loop {
        report.pages += 1;
        for event in &page.events {
            let outcome = projector
                .apply(Incoming {
                    id: event.id,
                    kind: &event.kind,
                    payload: &event.payload,
                    occurred_at: event.occurred_at,
                    seq: Some(event.seq),
                })
                .await
                .map_err(|e| anyhow::anyhow!("event {} (seq {}): {e}", event.id, event.seq))?;
            report.events += 1;
            match outcome {
                Outcome::Applied => report.applied += 1,
                Outcome::Ignored => report.ignored += 1,
            }
            report.last_seq = report.last_seq.max(event.seq);
        }
        match page.next_after {
            // A log that does not move on would loop forever.
            Some(next) if next > after => {
                after = next;
                page = log.page(after).await?;
            }
            Some(next) => anyhow::bail!("the event log went back from {after} to {next}"),
            None => break,
        }
    }
    tracing::info!(
        pages = report.pages,
        events = report.events,
        applied = report.applied,
        ignored = report.ignored,
        last_seq = report.last_seq,
        "cinema read models rebuilt"
    );
    Ok(report)
}
