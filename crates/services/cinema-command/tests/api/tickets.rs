//! Ticket PDFs and emails: made after a purchase by the tickets job,
//! served from object storage to their owner only, emailed once to the
//! address in the buyer's token. PDFs are read back with poppler's tools
//! when installed (`.ci/run` installs them).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;
use zocalo_cinema_command::store::notify::EmailStatus;
use zocalo_testkit::{Backend, backend_tests, expect_problem};

use crate::helpers::{CARD, TestApp, id, spawn};

backend_tests!(
    a_purchase_gets_its_tickets_as_pdf_and_by_email,
    other_people_and_bad_names_get_404,
    a_buyer_without_an_email_claim_gets_no_email,
    refunded_tickets_are_void_and_missing_documents_say_retry,
    a_document_is_recorded_and_announced_once_however_often_it_is_made,
);

const WAIT: Duration = Duration::from_secs(20);

/// A customer whose token carries an email address.
fn customer_with_email(app: &TestApp, email: &str) -> (Uuid, String) {
    let id = Uuid::now_v7();
    (id, app.tokens.token_with_email(&id.to_string(), &[], email))
}

async fn bought(app: &TestApp, token: &str, showtime: Uuid, seats: &[&str]) -> Value {
    let response = app
        .buy(
            token,
            &Uuid::now_v7().to_string(),
            showtime,
            &json!({"seats": seats, "card": CARD}),
        )
        .await;
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

async fn get(app: &TestApp, token: &str, path: &str) -> reqwest::Response {
    app.api.get(path).bearer_auth(token).send().await.unwrap()
}

/// GET `path` until it is not a "being prepared" 404; every such 404
/// must carry `Retry-After`.
async fn pdf(app: &TestApp, token: &str, path: &str) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let response = get(app, token, path).await;
        if response.status() == 200 {
            assert_eq!(response.headers()["content-type"], "application/pdf");
            assert_eq!(response.headers()["cache-control"], "private, no-store");
            return response.bytes().await.unwrap().to_vec();
        }
        assert_eq!(response.headers().get("retry-after").unwrap(), "2");
        expect_problem(response, 404).await;
        assert!(tokio::time::Instant::now() < deadline, "no PDF at {path}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Pages and text of a PDF by poppler; `None` when it is not installed.
fn read_pdf(bytes: &[u8]) -> Option<(usize, String)> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.pdf");
    std::fs::write(&path, bytes).unwrap();
    let info = run("pdfinfo", &[path.to_str()?])?;
    let pages = info
        .lines()
        .find_map(|l| l.strip_prefix("Pages:"))?
        .trim()
        .parse()
        .unwrap();
    let text = run(
        "pdftotext",
        &["-layout", "-enc", "UTF-8", path.to_str()?, "-"],
    )?;
    Some((pages, text))
}

fn run(program: &str, args: &[&str]) -> Option<String> {
    match Command::new(program).args(args).output() {
        Ok(out) => {
            assert!(
                out.status.success(),
                "{program}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Some(String::from_utf8_lossy(&out.stdout).into_owned())
        }
        Err(_) => {
            eprintln!("skipped: {program} is not installed");
            None
        }
    }
}

fn emails(app: &TestApp) -> Vec<String> {
    let dir = app.files.join("mail");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect()
}

async fn document_ready_events(app: &TestApp, purchase: Uuid) -> usize {
    let events = app.store.events_after(0, 10_000).await.unwrap();
    events
        .iter()
        .filter(|e| {
            e.kind == "tickets.document_ready" && e.payload["purchase_id"] == purchase.to_string()
        })
        .count()
}

async fn email_status(app: &TestApp, purchase: Uuid) -> Option<EmailStatus> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let document = app.store.ticket_document(purchase).await.unwrap();
        match document {
            Some(d) if d.email_status != EmailStatus::Pending => return Some(d.email_status),
            _ if tokio::time::Instant::now() > deadline => return None,
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn a_purchase_gets_its_tickets_as_pdf_and_by_email(backend: Backend) {
    let app = spawn(backend).await;
    let venue = app.venue(5, 10, json!({})).await;
    let (_, token) = customer_with_email(&app, "ana@example.com");
    let purchase = bought(&app, &token, venue.showtime, &["C5", "C6", "C7"]).await;
    let purchase_id = id(&purchase, "purchase_id");

    let whole = pdf(
        &app,
        &token,
        &format!("/api/cinema/purchases/{purchase_id}/tickets.pdf"),
    )
    .await;
    assert!(whole.starts_with(b"%PDF-"));
    let alias = pdf(
        &app,
        &token,
        &format!("/api/cinema/tickets/purchases/{purchase_id}.pdf"),
    )
    .await;
    assert_eq!(
        alias, whole,
        "the gateway-facing path serves the same document"
    );
    if let Some((pages, text)) = read_pdf(&whole) {
        assert_eq!(pages, 3, "one page per ticket");
        for ticket in purchase["tickets"].as_array().unwrap() {
            assert!(text.contains(ticket["seat"].as_str().unwrap()), "{text}");
            assert!(text.contains(ticket["code"].as_str().unwrap()), "{text}");
        }
        for expected in [
            "Roma",
            "Cinemex Reforma",
            "Sala 1",
            "MXN 90.00",
            "18:00 (UTC)",
        ] {
            assert!(text.contains(expected), "{expected} missing: {text}");
        }
    }

    let first = &purchase["tickets"][0];
    let ticket_id = first["ticket_id"].as_str().unwrap();
    let single = pdf(
        &app,
        &token,
        &format!("/api/cinema/tickets/{ticket_id}.pdf"),
    )
    .await;
    if let Some((pages, text)) = read_pdf(&single) {
        assert_eq!(pages, 1);
        assert!(text.contains(first["code"].as_str().unwrap()), "{text}");
        assert!(text.contains(first["seat"].as_str().unwrap()), "{text}");
    }

    assert_eq!(
        email_status(&app, purchase_id).await,
        Some(EmailStatus::Sent)
    );
    let mail = emails(&app);
    assert_eq!(mail.len(), 1, "exactly one email");
    assert!(mail[0].contains("ana@example.com"));
    assert!(mail[0].contains("Subject: Your tickets for Roma"));
    assert!(mail[0].contains("application/pdf"));
    assert_eq!(document_ready_events(&app, purchase_id).await, 1);
}

async fn other_people_and_bad_names_get_404(backend: Backend) {
    let app = spawn(backend).await;
    let venue = app.venue(5, 10, json!({})).await;
    let (_, owner) = customer_with_email(&app, "ana@example.com");
    let purchase = bought(&app, &owner, venue.showtime, &["A1"]).await;
    let purchase_id = id(&purchase, "purchase_id");
    let ticket_id = purchase["tickets"][0]["ticket_id"]
        .as_str()
        .unwrap()
        .to_owned();
    pdf(
        &app,
        &owner,
        &format!("/api/cinema/tickets/{ticket_id}.pdf"),
    )
    .await;

    let (_, stranger) = app.customer();
    for path in [
        format!("/api/cinema/tickets/{ticket_id}.pdf"),
        format!("/api/cinema/purchases/{purchase_id}/tickets.pdf"),
        format!("/api/cinema/tickets/purchases/{purchase_id}.pdf"),
    ] {
        let response = get(&app, &stranger, &path).await;
        assert!(response.headers().get("retry-after").is_none());
        expect_problem(response, 404).await;
        // The cinema's manager does not read customers' tickets either.
        expect_problem(get(&app, &venue.manager, &path).await, 404).await;
        let anonymous = app.api.get(&path).send().await.unwrap();
        expect_problem(anonymous, 401).await;
    }
    for path in [
        format!("/api/cinema/tickets/{ticket_id}"),
        "/api/cinema/tickets/not-a-uuid.pdf".to_owned(),
        format!("/api/cinema/tickets/{}.pdf", Uuid::now_v7()),
        format!("/api/cinema/purchases/{}/tickets.pdf", Uuid::now_v7()),
        "/api/cinema/purchases/nope/tickets.pdf".to_owned(),
    ] {
        expect_problem(get(&app, &owner, &path).await, 404).await;
    }
}

async fn a_buyer_without_an_email_claim_gets_no_email(backend: Backend) {
    let app = spawn(backend).await;
    let venue = app.venue(5, 10, json!({})).await;
    let (_, token) = app.customer();
    let purchase = bought(&app, &token, venue.showtime, &["B2"]).await;
    let purchase_id = id(&purchase, "purchase_id");
    pdf(
        &app,
        &token,
        &format!("/api/cinema/purchases/{purchase_id}/tickets.pdf"),
    )
    .await;
    assert_eq!(
        email_status(&app, purchase_id).await,
        Some(EmailStatus::Skipped)
    );
    assert!(emails(&app).is_empty());
}

async fn refunded_tickets_are_void_and_missing_documents_say_retry(backend: Backend) {
    let app = spawn(backend).await;
    let venue = app.venue(5, 10, json!({})).await;
    let (_, token) = app.customer();
    let kept = bought(&app, &token, venue.showtime, &["D1"]).await;
    let kept_id = id(&kept, "purchase_id");
    let path = format!("/api/cinema/purchases/{kept_id}/tickets.pdf");
    pdf(&app, &token, &path).await;

    // A document not (or no longer) in storage: 404 with Retry-After.
    std::fs::remove_file(Path::new(&app.files).join(format!("objects/tickets/{kept_id}.pdf")))
        .unwrap();
    let response = get(&app, &token, &path).await;
    assert_eq!(response.headers()["retry-after"], "2");
    expect_problem(response, 404).await;

    let refunded = bought(&app, &token, venue.showtime, &["D2"]).await;
    let refunded_id = id(&refunded, "purchase_id");
    let path = format!("/api/cinema/purchases/{refunded_id}/tickets.pdf");
    pdf(&app, &token, &path).await;
    app.expect(
        &token,
        &format!("/api/cinema/purchases/{refunded_id}/refund"),
        &json!({}),
        200,
    )
    .await;
    let response = get(&app, &token, &path).await;
    assert!(response.headers().get("retry-after").is_none());
    let problem = expect_problem(response, 404).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("refunded"),
        "{problem}"
    );
}

async fn a_document_is_recorded_and_announced_once_however_often_it_is_made(backend: Backend) {
    let app = spawn(backend).await;
    let venue = app.venue(5, 10, json!({})).await;
    let (_, token) = app.customer();
    let purchase = bought(&app, &token, venue.showtime, &["E1"]).await;
    let purchase_id = id(&purchase, "purchase_id");
    let ready = zocalo_contracts::cinema::TicketsDocumentReady {
        purchase_id,
        customer_id: id(&purchase, "customer_id"),
        object_key: format!("tickets/{purchase_id}.pdf"),
    };
    // The job and 20 concurrent repeats of its recording step.
    let recorded = futures_util::future::join_all(
        (0..20).map(|_| app.store.document_stored(&ready, chrono::Utc::now())),
    )
    .await;
    pdf(
        &app,
        &token,
        &format!("/api/cinema/purchases/{purchase_id}/tickets.pdf"),
    )
    .await;
    let firsts = recorded
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert!(firsts <= 1, "{firsts} callers recorded the document");
    assert_eq!(document_ready_events(&app, purchase_id).await, 1);
}
