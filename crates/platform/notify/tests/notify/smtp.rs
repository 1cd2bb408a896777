//! The SMTP sender against a real SMTP server (Python's aiosmtpd, which
//! `.ci/run` installs); skipped with a message when it is not installed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use zocalo_notify::{MailError, mailer};

use crate::{FROM, attachment_bytes, bounded, ticket_email};

/// A running aiosmtpd; killed when dropped.
struct SmtpServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn aiosmtpd_installed() -> bool {
    let found = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("skipped: python3 with aiosmtpd is not installed (pip install aiosmtpd)");
    }
    found
}

impl SmtpServer {
    fn start() -> Option<Self> {
        if !aiosmtpd_installed() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/notify/smtp_server.py");
        let port = free_port();
        let mut child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the SMTP server");
        let mut ready = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready.trim(), "ready", "the SMTP server did not start");
        Some(Self { child, port, dir })
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    fn messages(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect()
    }
}

#[tokio::test]
async fn a_message_with_its_pdf_reaches_a_real_smtp_server() {
    let Some(server) = SmtpServer::start() else {
        return;
    };
    bounded(async {
        let sender = mailer(&server.url(), FROM).unwrap();
        assert_eq!(sender.kind(), "smtp");
        let email = ticket_email("ana@example.com");
        sender.send(&email).await.unwrap();

        let messages = server.messages();
        assert_eq!(messages.len(), 1);
        let raw = std::fs::read_to_string(&messages[0]).unwrap();
        assert!(raw.starts_with("X-Envelope-To: ana@example.com"), "{raw}");
        assert!(raw.contains("Subject: Your tickets for El laberinto del fauno"));
        assert_eq!(attachment_bytes(&raw), email.attachments[0].content);
    })
    .await;
}

#[tokio::test]
async fn a_refused_recipient_is_a_permanent_failure() {
    let Some(server) = SmtpServer::start() else {
        return;
    };
    bounded(async {
        let sender = mailer(&server.url(), FROM).unwrap();
        let error = sender
            .send(&ticket_email("rejected@example.com"))
            .await
            .unwrap_err();
        assert!(matches!(error, MailError::Rejected(_)), "{error}");
        assert!(!error.is_retryable());
        assert!(server.messages().is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_server_that_is_down_is_a_retryable_failure() {
    bounded(async {
        let url = format!("smtp://127.0.0.1:{}", free_port());
        let sender = mailer(&url, FROM).unwrap();
        let error = sender
            .send(&ticket_email("a@example.com"))
            .await
            .unwrap_err();
        assert!(matches!(error, MailError::Unavailable(_)), "{error}");
        assert!(error.is_retryable());
    })
    .await;
}
