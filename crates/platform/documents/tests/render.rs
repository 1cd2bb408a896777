//! Ticket PDFs read back by real PDF tools (poppler's `pdfinfo`,
//! `pdftotext`, `pdftoppm`, and `zbarimg` for the QR code). A test whose
//! tool is not installed says so and passes; `.ci/run` installs them.

use std::path::{Path, PathBuf};
use std::process::Command;

use zocalo_documents::{Field, RenderError, Ticket, TicketBook, render_tickets};

fn ticket(seat: &str, code: &str) -> Ticket {
    Ticket {
        heading: "El laberinto del fauno: edición especial del décimo aniversario".into(),
        fields: vec![
            Field::new("Cinema", "Cinépolis Zócalo"),
            Field::new("Room", "Sala 3"),
            Field::new("Date", "Sat 28 Nov 2026"),
            Field::new("Time", "20:30"),
            Field::new("Seat", seat),
            Field::new("Price", "MXN 95.00"),
        ],
        code: code.into(),
        footer: "Purchase 0193a6f1-7c1e-7000-8000-000000000001".into(),
    }
}

fn book() -> TicketBook {
    TicketBook {
        title: "Tickets".into(),
        kicker: "ADMIT ONE".into(),
        issuer: "Cadena Manzana".into(),
        tickets: vec![
            ticket("C7", "7K3F-9QX2"),
            ticket("C8", "M4PZ-2RWA"),
            ticket("C9", "Q8TN-5HJD"),
        ],
    }
}

/// The PDF written to a temporary file, for the command-line tools.
fn written(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tickets.pdf");
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

/// Run `program` with `args`; `None` when it is not installed.
fn run(program: &str, args: &[&str]) -> Option<String> {
    match Command::new(program).args(args).output() {
        Ok(output) => {
            assert!(
                output.status.success(),
                "{program} {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            Some(String::from_utf8_lossy(&output.stdout).into_owned())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("skipped: {program} is not installed");
            None
        }
        Err(error) => panic!("cannot run {program}: {error}"),
    }
}

fn page_text(path: &Path, page: usize) -> Option<String> {
    let page = page.to_string();
    run(
        "pdftotext",
        &[
            "-layout",
            "-enc",
            "UTF-8",
            "-f",
            &page,
            "-l",
            &page,
            path.to_str().unwrap(),
            "-",
        ],
    )
}

#[test]
fn one_page_per_ticket_with_seat_code_and_details() {
    let bytes = render_tickets(&book()).unwrap();
    assert!(bytes.starts_with(b"%PDF-"));
    let (_dir, path) = written(&bytes);
    let Some(info) = run("pdfinfo", &[path.to_str().unwrap()]) else {
        return;
    };
    assert!(
        info.lines()
            .any(|l| l.starts_with("Pages:") && l.ends_with(" 3")),
        "{info}"
    );
    assert!(
        info.contains("Tickets"),
        "the title is in the metadata: {info}"
    );
    for (page, (seat, code)) in [
        ("C7", "7K3F-9QX2"),
        ("C8", "M4PZ-2RWA"),
        ("C9", "Q8TN-5HJD"),
    ]
    .into_iter()
    .enumerate()
    {
        let text = page_text(&path, page + 1).unwrap();
        assert!(text.contains(seat), "page {}: {text}", page + 1);
        assert!(text.contains(code), "page {}: {text}", page + 1);
        assert!(
            text.contains(&format!("Ticket {} of 3", page + 1)),
            "{text}"
        );
        for expected in [
            "Cinépolis Zócalo",
            "Sala 3",
            "20:30",
            "MXN 95.00",
            "El laberinto del fauno",
            "ADMIT ONE",
        ] {
            assert!(text.contains(expected), "{expected} missing: {text}");
        }
    }
}

#[test]
fn the_qr_code_reads_back_as_the_verification_code() {
    let bytes = render_tickets(&book()).unwrap();
    let (dir, path) = written(&bytes);
    let prefix = dir.path().join("page");
    let Some(_) = run(
        "pdftoppm",
        &[
            "-png",
            "-r",
            "150",
            "-f",
            "2",
            "-l",
            "2",
            path.to_str().unwrap(),
            prefix.to_str().unwrap(),
        ],
    ) else {
        return;
    };
    let image = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "png"))
        .expect("pdftoppm wrote a page image");
    let Some(decoded) = run("zbarimg", &["--quiet", "--raw", image.to_str().unwrap()]) else {
        return;
    };
    assert_eq!(decoded.trim(), "M4PZ-2RWA");
}

#[test]
fn text_outside_win_ansi_does_not_break_the_document() {
    let mut book = book();
    book.tickets.truncate(1);
    book.tickets[0].heading = "千と千尋の神隠し (Spirited Away)".into();
    book.tickets[0].code = "X".repeat(3000);
    let bytes = render_tickets(&book).unwrap();
    let (_dir, path) = written(&bytes);
    let Some(text) = page_text(&path, 1) else {
        return;
    };
    assert!(text.contains("Spirited Away"), "{text}");
    assert!(text.contains("C7"), "{text}");
}

#[test]
fn an_empty_book_is_refused() {
    let mut book = book();
    book.tickets.clear();
    assert_eq!(render_tickets(&book), Err(RenderError::NoTickets));
}
