//! Ticket documents: the PDF of a purchase (one page per ticket), kept in
//! object storage and emailed to the buyer.
//!
//! Completing a purchase puts a `cinema.tickets_pdf` job in the outbox in
//! the same transaction ([`pdf_job`]). Its handler ([`TicketsWorker`])
//! renders the document ([`ticket_book`] is the pure part), stores the
//! whole purchase under `tickets/<purchase_id>.pdf` and each ticket under
//! `tickets/<purchase_id>/<ticket_id>.pdf`, records the document and
//! appends `tickets.document_ready` in one transaction, then emails the
//! PDF to the address the buyer's token carried (or records that there was
//! none). Every step can run again: objects are overwritten with the same
//! bytes' equivalent, the document row and its event are written once, and
//! the email is sent only while its status is `pending`.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, FixedOffset, Utc};
use futures_util::FutureExt as _;
use futures_util::StreamExt as _;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use uuid::Uuid;
use zocalo_bus::outbox::Message;
use zocalo_bus::{JobError, JobHandler, JobOptions};
use zocalo_contracts::cinema::{
    self as contract, ChainSaved, CinemaSaved, MovieSaved, RoomSaved, ShowtimeSaved, Ticket,
    TicketsDocumentReady, TicketsPdfJob,
};
use zocalo_documents::{Field, TicketBook, render_tickets};
use zocalo_notify::{Attachment, Email, Mailer};
use zocalo_objects::ObjectStore;

use crate::domain::{Purchase, PurchaseStatus};
use crate::store::notify::EmailStatus;
use crate::store::{CinemaStore, Kind};

/// The job that makes a purchase's ticket document.
pub fn pdf_job(purchase_id: Uuid) -> Message {
    let payload = serde_json::to_value(TicketsPdfJob { purchase_id }).unwrap_or_default();
    Message::job(contract::TICKETS_PDF_QUEUE, payload, JobOptions::default())
}

/// Where the whole purchase's PDF is kept.
pub fn purchase_key(purchase: Uuid) -> String {
    format!("tickets/{purchase}.pdf")
}

/// Where one ticket's PDF is kept.
pub fn ticket_key(purchase: Uuid, ticket: Uuid) -> String {
    format!("tickets/{purchase}/{ticket}.pdf")
}

/// Everything a ticket names besides the purchase itself.
#[derive(Debug, Clone)]
pub struct Venue {
    pub showtime: ShowtimeSaved,
    pub movie: MovieSaved,
    pub room: RoomSaved,
    pub cinema: CinemaSaved,
    pub chain: ChainSaved,
}

/// The tickets of `purchase` as a printable book, times shown at
/// `offset` (cinemas keep no time zone; the offset is a setting).
pub fn ticket_book(
    purchase: &Purchase,
    tickets: &[Ticket],
    venue: &Venue,
    offset: FixedOffset,
) -> TicketBook {
    let starts = venue.showtime.starts_at.with_timezone(&offset);
    let pages = tickets
        .iter()
        .map(|ticket| zocalo_documents::Ticket {
            heading: venue.movie.title.clone(),
            fields: vec![
                Field::new("Cinema", &venue.cinema.name),
                Field::new("Room", &venue.room.name),
                Field::new("Date", starts.format("%a %d %b %Y").to_string()),
                Field::new(
                    "Time",
                    format!("{} ({})", starts.format("%H:%M"), offset_label(offset)),
                ),
                Field::new("Seat", &ticket.seat),
                Field::new("Price", money(ticket.price_cents, &purchase.currency)),
                Field::new("Class", &ticket.class),
                Field::new("Rated", &venue.movie.classification),
            ],
            code: ticket.code.clone(),
            footer: format!(
                "{}, {} · purchase {}",
                venue.cinema.address, venue.cinema.city, purchase.purchase_id
            ),
        })
        .collect();
    TicketBook {
        title: format!("Tickets for {}", venue.movie.title),
        kicker: "ADMIT ONE".into(),
        issuer: venue.chain.name.clone(),
        tickets: pages,
    }
}

fn offset_label(offset: FixedOffset) -> String {
    let minutes = offset.local_minus_utc() / 60;
    if minutes == 0 {
        return "UTC".into();
    }
    let sign = if minutes < 0 { '-' } else { '+' };
    format!(
        "UTC{sign}{:02}:{:02}",
        minutes.abs() / 60,
        minutes.abs() % 60
    )
}

/// `MXN 95.00`.
pub fn money(cents: i64, currency: &str) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let cents = cents.unsigned_abs();
    format!("{currency} {sign}{}.{:02}", cents / 100, cents % 100)
}

/// Runs `cinema.tickets_pdf` jobs.
pub struct TicketsWorker {
    pub store: Arc<dyn CinemaStore>,
    pub objects: Arc<dyn ObjectStore>,
    pub mailer: Arc<dyn Mailer>,
    pub offset: FixedOffset,
    /// Wakes the outbox relay once `tickets.document_ready` is written.
    pub relay_wake: Arc<Notify>,
}

impl TicketsWorker {
    pub fn handler(self: Arc<Self>) -> JobHandler {
        Arc::new(move |job| {
            let worker = self.clone();
            async move {
                let job: TicketsPdfJob = serde_json::from_value(job.payload)
                    .map_err(|e| JobError::fatal(format!("unreadable tickets job: {e}")))?;
                worker.make(job.purchase_id).await
            }
            .boxed()
        })
    }

    /// Render, store, record and email the tickets of one purchase.
    pub async fn make(&self, purchase_id: Uuid) -> Result<(), JobError> {
        let purchase = self
            .store
            .purchase(purchase_id)
            .await
            .map_err(JobError::retry)?
            .ok_or_else(|| JobError::fatal(format!("no purchase {purchase_id}")))?;
        if purchase.status != PurchaseStatus::Completed {
            tracing::info!(purchase = %purchase_id, status = purchase.status.as_str(),
                "no ticket document for a purchase that is not completed");
            return Ok(());
        }
        let venue = self.venue(&purchase).await?;
        let whole = self.render(&purchase, &purchase.tickets, &venue)?;
        for ticket in &purchase.tickets {
            let page = self.render(&purchase, std::slice::from_ref(ticket), &venue)?;
            self.put(&ticket_key(purchase_id, ticket.ticket_id), page)
                .await?;
        }
        let key = purchase_key(purchase_id);
        self.put(&key, whole.clone()).await?;
        let ready = TicketsDocumentReady {
            purchase_id,
            customer_id: purchase.customer_id,
            object_key: key,
        };
        if self
            .store
            .document_stored(&ready, Utc::now())
            .await
            .map_err(JobError::retry)?
        {
            self.relay_wake.notify_one();
            metrics::counter!("cinema_ticket_documents_total").increment(1);
        }
        self.email(&purchase, &venue, whole).await
    }

    async fn venue(&self, purchase: &Purchase) -> Result<Venue, JobError> {
        let showtime: ShowtimeSaved = self.doc(Kind::Showtime, purchase.showtime_id).await?;
        let movie: MovieSaved = self.doc(Kind::Movie, showtime.movie_id).await?;
        let room: RoomSaved = self.doc(Kind::Room, showtime.room_id).await?;
        let cinema: CinemaSaved = self.doc(Kind::Cinema, showtime.cinema_id).await?;
        let chain: ChainSaved = self.doc(Kind::Chain, cinema.chain_id).await?;
        Ok(Venue {
            showtime,
            movie,
            room,
            cinema,
            chain,
        })
    }

    async fn doc<T: DeserializeOwned>(&self, kind: Kind, id: Uuid) -> Result<T, JobError> {
        let doc = self
            .store
            .load(kind, id)
            .await
            .map_err(JobError::retry)?
            .ok_or_else(|| JobError::fatal(format!("{} {id} is gone", kind.table())))?;
        serde_json::from_value(doc).map_err(JobError::fatal)
    }

    fn render(
        &self,
        purchase: &Purchase,
        tickets: &[Ticket],
        venue: &Venue,
    ) -> Result<Vec<u8>, JobError> {
        render_tickets(&ticket_book(purchase, tickets, venue, self.offset)).map_err(JobError::fatal)
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), JobError> {
        let body = futures_util::stream::once(async move { Ok(Bytes::from(bytes)) }).boxed();
        self.objects.put(key, body).await.map_err(JobError::retry)?;
        Ok(())
    }

    /// Email the document once, to the address the buyer's token had.
    async fn email(
        &self,
        purchase: &Purchase,
        venue: &Venue,
        pdf: Vec<u8>,
    ) -> Result<(), JobError> {
        let id = purchase.purchase_id;
        let document = self
            .store
            .ticket_document(id)
            .await
            .map_err(JobError::retry)?;
        if document.is_some_and(|d| d.email_status != EmailStatus::Pending) {
            return Ok(());
        }
        let Some(address) = self.store.contact(id).await.map_err(JobError::retry)? else {
            tracing::info!(purchase = %id, "no email address for this purchase; tickets not emailed");
            return self.mark(id, EmailStatus::Skipped).await;
        };
        let email = ticket_email(address, purchase, venue, self.offset, pdf);
        match self.mailer.send(&email).await {
            Ok(()) => self.mark(id, EmailStatus::Sent).await,
            Err(error) if error.is_retryable() => Err(JobError::retry(error)),
            Err(error) => {
                tracing::warn!(purchase = %id, %error, "tickets email refused");
                self.mark(id, EmailStatus::Failed).await
            }
        }
    }

    async fn mark(&self, purchase: Uuid, status: EmailStatus) -> Result<(), JobError> {
        metrics::counter!("cinema_ticket_emails_total", "status" => status.as_str()).increment(1);
        self.store
            .set_email_status(purchase, status, Utc::now())
            .await
            .map_err(JobError::retry)
    }
}

fn ticket_email(
    to: String,
    purchase: &Purchase,
    venue: &Venue,
    offset: FixedOffset,
    pdf: Vec<u8>,
) -> Email {
    let starts: DateTime<FixedOffset> = venue.showtime.starts_at.with_timezone(&offset);
    let seats: Vec<&str> = purchase.tickets.iter().map(|t| t.seat.as_str()).collect();
    Email {
        to,
        subject: format!("Your tickets for {}", venue.movie.title),
        text: format!(
            "{title}\n{cinema}, {room}\n{when} ({zone})\nSeats: {seats}\nTotal: {total}\n\n\
             Your tickets are attached; show them (or their codes) at the door.\n",
            title = venue.movie.title,
            cinema = venue.cinema.name,
            room = venue.room.name,
            when = starts.format("%A %d %B %Y, %H:%M"),
            zone = offset_label(offset),
            seats = seats.join(", "),
            total = money(purchase.total_cents, &purchase.currency),
        ),
        attachments: vec![Attachment {
            filename: format!("tickets-{}.pdf", purchase.purchase_id),
            content_type: "application/pdf".into(),
            content: pdf,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_has_two_decimals() {
        assert_eq!(money(9500, "MXN"), "MXN 95.00");
        assert_eq!(money(5, "EUR"), "EUR 0.05");
        assert_eq!(money(-150, "USD"), "USD -1.50");
    }

    #[test]
    fn offsets_read_like_clocks() {
        assert_eq!(offset_label(FixedOffset::east_opt(0).unwrap()), "UTC");
        assert_eq!(
            offset_label(FixedOffset::west_opt(6 * 3600).unwrap()),
            "UTC-06:00"
        );
        assert_eq!(
            offset_label(FixedOffset::east_opt(5 * 3600 + 1800).unwrap()),
            "UTC+05:30"
        );
    }
}
