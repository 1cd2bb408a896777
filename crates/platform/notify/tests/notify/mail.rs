//! The log and file senders.

use std::collections::HashSet;
use std::sync::Arc;

use zocalo_notify::{MailError, Mailer, mailer};

use crate::{FROM, attachment_bytes, bounded, ticket_email};

fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn the_file_sender_writes_one_complete_eml_per_message() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let outbox = dir.path().join("mail");
        let url = format!("file://{}", outbox.display());
        let sender = mailer(&url, FROM).unwrap();
        let email = ticket_email("Ana López <ana@example.com>");
        sender.send(&email).await.unwrap();

        let written = files(&outbox);
        assert_eq!(written.len(), 1, "{written:?}");
        assert!(written[0].extension().is_some_and(|e| e == "eml"));
        let raw = std::fs::read_to_string(&written[0]).unwrap();
        assert!(raw.contains("To: "), "{raw}");
        assert!(raw.contains("ana@example.com"), "{raw}");
        assert!(raw.contains("tickets@zocalo.invalid"), "{raw}");
        assert!(raw.contains("Subject: Your tickets for El laberinto del fauno"));
        assert!(raw.contains("multipart/mixed"));
        assert!(raw.contains("filename=\"tickets.pdf\""), "{raw}");
        assert_eq!(attachment_bytes(&raw), email.attachments[0].content);
    })
    .await;
}

#[tokio::test]
async fn concurrent_file_sends_leave_no_partial_files() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let sender: Arc<dyn Mailer> =
            mailer(&format!("file://{}", dir.path().display()), FROM).unwrap();
        let sends = (0..50).map(|i| {
            let sender = sender.clone();
            tokio::spawn(async move {
                let mut email = ticket_email(&format!("buyer{i}@example.com"));
                email.subject = format!("message {i}");
                sender.send(&email).await
            })
        });
        for send in futures_util::future::join_all(sends).await {
            send.unwrap().unwrap();
        }
        let written = files(dir.path());
        assert_eq!(written.len(), 50);
        assert!(
            written
                .iter()
                .all(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.')),
            "no temporary file is left behind"
        );
        let subjects: HashSet<String> = written
            .iter()
            .map(|p| {
                let raw = std::fs::read_to_string(p).unwrap();
                raw.lines()
                    .find_map(|l| l.strip_prefix("Subject: "))
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(subjects.len(), 50, "every message is whole and distinct");
    })
    .await;
}

#[tokio::test]
async fn an_unwritable_directory_is_a_retryable_failure() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, b"a file where the directory should be").unwrap();
        let sender = mailer(&format!("file://{}", blocker.display()), FROM).unwrap();
        let error = sender
            .send(&ticket_email("a@example.com"))
            .await
            .unwrap_err();
        assert!(matches!(error, MailError::Unavailable(_)), "{error}");
        assert!(error.is_retryable());
    })
    .await;
}

#[tokio::test]
async fn the_log_sender_accepts_and_checks_addresses() {
    bounded(async {
        let sender = mailer("log:", FROM).unwrap();
        sender.send(&ticket_email("a@example.com")).await.unwrap();
        let error = sender
            .send(&ticket_email("not an address"))
            .await
            .unwrap_err();
        assert!(matches!(error, MailError::Invalid(_)), "{error}");
        assert!(!error.is_retryable());
    })
    .await;
}
