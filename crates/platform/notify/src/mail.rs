//! Email senders. Every sender takes the same [`Email`] and turns it into
//! one RFC 5322 message with lettre's builder, so what the file sender
//! writes is byte for byte what the SMTP sender would hand over.
//!
//! | URL | sender |
//! |---|---|
//! | `log:` | [`LogMailer`]: one log line per message (the default) |
//! | `file:///var/mail/zocalo` | [`FileMailer`]: one `.eml` file per message, written atomically |
//! | `smtp://host:25` | [`SmtpMailer`], plain SMTP (a relay on a private network, a test server) |
//! | `smtp://host:587?tls=required` | STARTTLS required (`opportunistic` also accepted) |
//! | `smtps://user:pass@host:465` | TLS from the first byte |
//!
//! TLS is rustls with the ring provider and the Mozilla root certificates
//! (`webpki-roots`): no OpenSSL, no system certificate store.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

/// One message to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    /// `someone@example.com` or `Name <someone@example.com>`.
    pub to: String,
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    pub attachments: Vec<Attachment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub filename: String,
    /// A MIME type such as `application/pdf`.
    pub content_type: String,
    pub content: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The message cannot be built (an invalid address, a bad content
    /// type): sending it again cannot help.
    #[error("invalid email: {0}")]
    Invalid(String),
    /// The server refused the message for good (an SMTP 5xx).
    #[error("email rejected: {0}")]
    Rejected(String),
    /// The server or the directory cannot take it now; try again later.
    #[error("email sender unavailable: {0}")]
    Unavailable(String),
    /// The sender's URL or settings are wrong.
    #[error("email sender configuration: {0}")]
    Config(String),
}

impl MailError {
    /// Whether sending the same message later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, MailError::Unavailable(_))
    }
}

#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    async fn send(&self, email: &Email) -> Result<(), MailError>;

    /// `log`, `file` or `smtp`, for logs and metrics.
    fn kind(&self) -> &'static str;
}

/// The sender `url` names (see the module's table), sending as `from`.
pub fn mailer(url: &str, from: &str) -> Result<Arc<dyn Mailer>, MailError> {
    let from: Mailbox = from
        .parse()
        .map_err(|e| MailError::Config(format!("sender address `{from}`: {e}")))?;
    let url = url.trim();
    if url == "log:" || url == "log://" || url == "log" {
        return Ok(Arc::new(LogMailer { from }));
    }
    if let Some(path) = url.strip_prefix("file://") {
        if path.is_empty() {
            return Err(MailError::Config("file:// needs a directory".into()));
        }
        return Ok(Arc::new(FileMailer::new(path, from)));
    }
    if url.starts_with("smtp://") || url.starts_with("smtps://") {
        return Ok(Arc::new(SmtpMailer::new(url, from, SMTP_TIMEOUT)?));
    }
    Err(MailError::Config(format!(
        "unknown email sender `{}`: use log:, file:///dir, smtp:// or smtps://",
        redact(url)
    )))
}

/// How long one SMTP conversation may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(15);

/// `url` without a password, for error messages.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://…{}", &url[at..]),
        _ => url.to_owned(),
    }
}

/// The RFC 5322 message for `email`.
pub fn compose(from: &Mailbox, email: &Email) -> Result<Message, MailError> {
    let to: Mailbox = email
        .to
        .parse()
        .map_err(|e| MailError::Invalid(format!("recipient `{}`: {e}", email.to)))?;
    let builder = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(email.subject.clone())
        .message_id(Some(format!("<{}@zocalo>", Uuid::now_v7())));
    let text = SinglePart::plain(email.text.clone());
    let built = if email.attachments.is_empty() {
        builder.singlepart(text)
    } else {
        let mut parts = MultiPart::mixed().singlepart(text);
        for attachment in &email.attachments {
            let content_type = ContentType::parse(&attachment.content_type).map_err(|e| {
                MailError::Invalid(format!("content type `{}`: {e}", attachment.content_type))
            })?;
            parts = parts.singlepart(
                lettre::message::Attachment::new(attachment.filename.clone())
                    .body(attachment.content.clone(), content_type),
            );
        }
        builder.multipart(parts)
    };
    built.map_err(|e| MailError::Invalid(e.to_string()))
}

fn count(kind: &'static str, outcome: &'static str) {
    metrics::counter!("emails_sent_total", "sender" => kind, "outcome" => outcome).increment(1);
}

fn counted(kind: &'static str, result: Result<(), MailError>) -> Result<(), MailError> {
    count(kind, if result.is_ok() { "ok" } else { "error" });
    result
}

/// Logs each message (recipient, subject, attachments) instead of sending
/// it: the default, so `zocalo up` needs no mail server.
pub struct LogMailer {
    from: Mailbox,
}

#[async_trait]
impl Mailer for LogMailer {
    async fn send(&self, email: &Email) -> Result<(), MailError> {
        let message = compose(&self.from, email)?;
        let attachments: Vec<String> = email
            .attachments
            .iter()
            .map(|a| format!("{} ({} bytes)", a.filename, a.content.len()))
            .collect();
        tracing::info!(
            to = %email.to,
            subject = %email.subject,
            ?attachments,
            bytes = message.formatted().len(),
            "email (log sender, not sent)"
        );
        count("log", "ok");
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "log"
    }
}

/// Writes each message as `<time>-<id>.eml` in a directory: written under a
/// hidden temporary name, flushed to disk, then renamed, so a reader of the
/// directory (a test, a pickup daemon) never sees half a message.
pub struct FileMailer {
    dir: PathBuf,
    from: Mailbox,
}

impl FileMailer {
    pub fn new(dir: impl Into<PathBuf>, from: Mailbox) -> Self {
        Self {
            dir: dir.into(),
            from,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    async fn write(&self, bytes: &[u8]) -> std::io::Result<PathBuf> {
        tokio::fs::create_dir_all(&self.dir).await?;
        let id = Uuid::now_v7();
        let temporary = self.dir.join(format!(".{id}.eml.tmp"));
        let name = format!(
            "{}-{id}.eml",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
        );
        let target = self.dir.join(name);
        let mut file = tokio::fs::File::create(&temporary).await?;
        file.write_all(bytes).await?;
        file.sync_all().await?;
        drop(file);
        if let Err(error) = tokio::fs::rename(&temporary, &target).await {
            let _ = tokio::fs::remove_file(&temporary).await;
            return Err(error);
        }
        Ok(target)
    }
}

#[async_trait]
impl Mailer for FileMailer {
    async fn send(&self, email: &Email) -> Result<(), MailError> {
        let message = compose(&self.from, email)?;
        let written = self.write(&message.formatted()).await;
        let result = match written {
            Ok(path) => {
                tracing::info!(to = %email.to, subject = %email.subject, path = %path.display(),
                    "email written");
                Ok(())
            }
            Err(error) => Err(MailError::Unavailable(format!(
                "cannot write to {}: {error}",
                self.dir.display()
            ))),
        };
        counted("file", result)
    }

    fn kind(&self) -> &'static str {
        "file"
    }
}

/// Hands each message to an SMTP server (one connection per message).
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpMailer {
    pub fn new(url: &str, from: Mailbox, timeout: Duration) -> Result<Self, MailError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| MailError::Config(format!("smtp url `{}`: {e}", redact(url))))?
            .timeout(Some(timeout))
            .build();
        Ok(Self { transport, from })
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, email: &Email) -> Result<(), MailError> {
        let message = compose(&self.from, email)?;
        let result = match self.transport.send(message).await {
            Ok(_) => {
                tracing::info!(to = %email.to, subject = %email.subject, "email sent over SMTP");
                Ok(())
            }
            Err(error) if error.is_permanent() => Err(MailError::Rejected(error.to_string())),
            Err(error) => Err(MailError::Unavailable(error.to_string())),
        };
        counted("smtp", result)
    }

    fn kind(&self) -> &'static str {
        "smtp"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_choose_the_sender() {
        let from = "Zócalo <tickets@zocalo.invalid>";
        assert_eq!(mailer("log:", from).unwrap().kind(), "log");
        assert_eq!(mailer("file:///tmp/mail", from).unwrap().kind(), "file");
        assert_eq!(
            mailer("smtp://127.0.0.1:2525", from).unwrap().kind(),
            "smtp"
        );
        assert_eq!(
            mailer("smtps://user:pw@mail.example.com:465", from)
                .unwrap()
                .kind(),
            "smtp"
        );
        assert!(matches!(
            mailer("carrier-pigeon://x", from),
            Err(MailError::Config(_))
        ));
        assert!(matches!(mailer("file://", from), Err(MailError::Config(_))));
        assert!(matches!(
            mailer("log:", "not an address"),
            Err(MailError::Config(_))
        ));
    }

    #[test]
    fn passwords_stay_out_of_errors() {
        assert_eq!(
            redact("smtps://user:secret@mail.example.com:465"),
            "smtps://…@mail.example.com:465"
        );
    }

    #[test]
    fn a_bad_recipient_is_not_retryable() {
        let from: Mailbox = "a@b.example".parse().unwrap();
        let email = Email {
            to: "nobody".into(),
            subject: "s".into(),
            text: "t".into(),
            attachments: vec![],
        };
        let error = compose(&from, &email).unwrap_err();
        assert!(matches!(error, MailError::Invalid(_)));
        assert!(!error.is_retryable());
    }
}
