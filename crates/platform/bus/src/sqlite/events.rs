//! Events are an append-only table. Each (topic, group) has a cursor, the
//! last event handed to the group, and a table of deliveries not yet acked,
//! each with a deadline; `next` first redelivers an expired delivery, then
//! advances the cursor. Claiming runs in an IMMEDIATE transaction, so members
//! of a group (in this process or another) never take the same event.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{SqliteBus, parse_uuid};
use crate::{BusError, Event, EventBus, millis, now_ms};

/// Longest sleep between polls while `next` waits; work from other
/// processes is seen this late at worst.
const POLL: Duration = Duration::from_millis(100);
/// Events older than this, and not awaiting an ack, are pruned.
const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Prune on every this-many-th publish, not on each.
const PRUNE_EVERY: i64 = 1024;

struct Row {
    id: String,
    topic: String,
    kind: String,
    payload: String,
    occurred_at: DateTime<Utc>,
    traceparent: Option<String>,
}

impl Row {
    fn into_event(self) -> Result<Event, BusError> {
        Ok(Event {
            id: parse_uuid(&self.id)?,
            topic: self.topic,
            kind: self.kind,
            payload: serde_json::from_str(&self.payload)?,
            occurred_at: self.occurred_at,
            traceparent: self.traceparent,
        })
    }
}

#[async_trait]
impl EventBus for SqliteBus {
    async fn publish(&self, event: &Event) -> Result<(), BusError> {
        let event_row = (
            event.id.to_string(),
            event.topic.clone(),
            event.kind.clone(),
            serde_json::to_string(&event.payload)?,
            event.occurred_at,
            event.traceparent.clone(),
        );
        self.db
            .write(move |conn| {
                let (id, topic, kind, payload, occurred_at, traceparent) = event_row;
                // The same id twice (an outbox re-send) is one event.
                let seq: Option<i64> = conn
                    .query_row(
                        "INSERT INTO events
                           (id, topic, kind, payload, occurred_at, published_at, traceparent)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING RETURNING seq",
                        params![id, topic, kind, payload, occurred_at, now_ms(), traceparent],
                        |r| r.get(0),
                    )
                    .optional()?;
                if seq.is_some_and(|seq| seq % PRUNE_EVERY == 0) {
                    prune(conn)?;
                }
                Ok(())
            })
            .await?;
        self.wakeup("event", &event.topic).notify_waiters();
        Ok(())
    }

    async fn next(
        &self,
        topic: &str,
        group: &str,
        wait: Duration,
    ) -> Result<Option<Event>, BusError> {
        let deadline = tokio::time::Instant::now() + wait;
        let wakeup = self.wakeup("event", topic);
        loop {
            // Registered before looking, so a publish in between still wakes us.
            let notified = wakeup.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(event) = self.claim(topic, group).await? {
                return Ok(Some(event));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let _ = tokio::time::timeout((deadline - now).min(POLL), notified).await;
        }
    }

    async fn ack(&self, topic: &str, group: &str, event: &Event) -> Result<(), BusError> {
        let key = (topic.to_owned(), group.to_owned(), event.id.to_string());
        self.db
            .write(move |conn| {
                conn.execute(
                    "DELETE FROM event_deliveries WHERE topic = ?1 AND grp = ?2 AND event_id = ?3",
                    params![key.0, key.1, key.2],
                )?;
                Ok(())
            })
            .await
    }

    async fn nack(
        &self,
        topic: &str,
        group: &str,
        event: &Event,
        delay: Duration,
    ) -> Result<(), BusError> {
        let key = (topic.to_owned(), group.to_owned(), event.id.to_string());
        let delay = millis(delay);
        self.db
            .write(move |conn| {
                conn.execute(
                    "UPDATE event_deliveries SET visible_at = ?4
                     WHERE topic = ?1 AND grp = ?2 AND event_id = ?3",
                    params![key.0, key.1, key.2, now_ms().saturating_add(delay)],
                )?;
                Ok(())
            })
            .await
    }
}

impl SqliteBus {
    /// Take the group's next event: an expired delivery first, else the
    /// next one after the cursor.
    async fn claim(&self, topic: &str, group: &str) -> Result<Option<Event>, BusError> {
        let (topic, group) = (topic.to_owned(), group.to_owned());
        let ack_wait = millis(self.ack_wait);
        let row = self
            .db
            .write(move |conn| claim(conn, &topic, &group, ack_wait))
            .await?;
        row.map(Row::into_event).transpose()
    }
}

fn claim(
    conn: &mut Connection,
    topic: &str,
    group: &str,
    ack_wait: i64,
) -> Result<Option<Row>, BusError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now_ms();
    let visible_at = now.saturating_add(ack_wait);
    let expired: Option<i64> = tx
        .query_row(
            "SELECT seq FROM event_deliveries WHERE topic = ?1 AND grp = ?2 AND visible_at <= ?3
             ORDER BY visible_at, seq LIMIT 1",
            params![topic, group, now],
            |r| r.get(0),
        )
        .optional()?;
    let seq = match expired {
        Some(seq) => {
            tx.execute(
                "UPDATE event_deliveries SET visible_at = ?4, deliveries = deliveries + 1
                 WHERE topic = ?1 AND grp = ?2 AND seq = ?3",
                params![topic, group, seq, visible_at],
            )?;
            Some(seq)
        }
        None => advance(&tx, topic, group, visible_at)?,
    };
    let row = match seq {
        Some(seq) => Some(tx.query_row(
            "SELECT id, topic, kind, payload, occurred_at, traceparent FROM events WHERE seq = ?1",
            [seq],
            |r| {
                Ok(Row {
                    id: r.get(0)?,
                    topic: r.get(1)?,
                    kind: r.get(2)?,
                    payload: r.get(3)?,
                    occurred_at: r.get(4)?,
                    traceparent: r.get(5)?,
                })
            },
        )?),
        None => None,
    };
    tx.commit()?;
    Ok(row)
}

/// Move the group's cursor to its next event and record the delivery. A
/// group seen for the first time starts at the oldest retained event, as a
/// new JetStream consumer does.
fn advance(
    tx: &rusqlite::Transaction<'_>,
    topic: &str,
    group: &str,
    visible_at: i64,
) -> Result<Option<i64>, BusError> {
    tx.execute(
        "INSERT INTO event_cursors (topic, grp, last_seq) VALUES (?1, ?2, 0)
         ON CONFLICT (topic, grp) DO NOTHING",
        params![topic, group],
    )?;
    let next: Option<(i64, String)> = tx
        .query_row(
            "SELECT seq, id FROM events WHERE topic = ?1 AND seq >
               (SELECT last_seq FROM event_cursors WHERE topic = ?1 AND grp = ?2)
             ORDER BY seq LIMIT 1",
            params![topic, group],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((seq, id)) = next else {
        return Ok(None);
    };
    tx.execute(
        "UPDATE event_cursors SET last_seq = ?3 WHERE topic = ?1 AND grp = ?2",
        params![topic, group, seq],
    )?;
    tx.execute(
        "INSERT INTO event_deliveries (topic, grp, seq, event_id, visible_at, deliveries)
         VALUES (?1, ?2, ?3, ?4, ?5, 1)",
        params![topic, group, seq, id, visible_at],
    )?;
    Ok(Some(seq))
}

fn prune(conn: &Connection) -> Result<(), BusError> {
    let cutoff = now_ms().saturating_sub(millis(RETENTION));
    conn.execute(
        "DELETE FROM events WHERE published_at < ?1
         AND seq NOT IN (SELECT seq FROM event_deliveries)",
        [cutoff],
    )?;
    Ok(())
}
