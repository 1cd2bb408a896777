//! Email senders against a real directory and a real SMTP server
//! (`aiosmtpd`, started per test; skipped when Python lacks it), and
//! webhooks against a real HTTP receiver through a real job queue.

mod mail;
mod smtp;
mod webhook;

use std::future::Future;
use std::time::Duration;

/// No test may take longer than this, whatever goes wrong.
const TEST_LIMIT: Duration = Duration::from_secs(30);

pub async fn bounded<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_LIMIT, test)
        .await
        .expect("test exceeded its time limit")
}

/// Poll `check` every 20 ms until it returns `Some`, at most `limit`.
pub async fn eventually<T>(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub const FROM: &str = "Zócalo Tickets <tickets@zocalo.invalid>";

pub fn ticket_email(to: &str) -> zocalo_notify::Email {
    zocalo_notify::Email {
        to: to.into(),
        subject: "Your tickets for El laberinto del fauno".into(),
        text: "Seats C7, C8. Show the attached PDF at the door.".into(),
        attachments: vec![zocalo_notify::Attachment {
            filename: "tickets.pdf".into(),
            content_type: "application/pdf".into(),
            content: b"%PDF-1.7\n\x00\x01\x02 binary ticket bytes \xff".to_vec(),
        }],
    }
}

/// The decoded attachment of a raw message: the last base64 part.
pub fn attachment_bytes(raw: &str) -> Vec<u8> {
    use base64::Engine as _;
    let part = raw
        .split("Content-Disposition: attachment")
        .nth(1)
        .expect("an attachment part");
    let body = part.split("\r\n\r\n").nth(1).expect("a part body");
    let encoded: String = body
        .lines()
        .take_while(|line| !line.starts_with("--"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .expect("base64 attachment")
}
