//! The layout of an admission ticket (A6 portrait, points from the bottom
//! left):
//!
//! ```text
//! ┌──────────────────────────────┐
//! │ KICKER         Ticket 1 of 3 │  dark band
//! │ issuer                       │
//! ├──────────────────────────────┤
//! │ Heading, up to two lines     │
//! │ LABEL        LABEL           │
//! │ value        value           │  two-column grid
//! │ …                            │
//! │ - - - - - - - - - - - - - - -│  tear line
//! │ ▣▣▣▣    CODE                 │
//! │ ▣QR▣    7K3F-9QX2            │
//! │ footer                       │
//! └──────────────────────────────┘
//! ```

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};
use qrcode::{Color, EcLevel, QrCode};

use crate::text::{Font, fit, width, win_ansi, wrap};

/// One label and its value on a ticket ("Seat", "C7").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub label: String,
    pub value: String,
}

impl Field {
    pub fn new(label: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            value: value.into(),
        }
    }
}

/// One page: what the ticket admits to and the code the door checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub heading: String,
    pub fields: Vec<Field>,
    /// Printed large and encoded in the QR code.
    pub code: String,
    pub footer: String,
}

/// Every ticket of one purchase, one page each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketBook {
    /// The document's title in its metadata.
    pub title: String,
    /// Top line of every page ("ADMIT ONE").
    pub kicker: String,
    /// Who issued the tickets, under the kicker.
    pub issuer: String,
    pub tickets: Vec<Ticket>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("a ticket document needs at least one ticket")]
    NoTickets,
}

const PAGE_WIDTH: f32 = 298.0;
const PAGE_HEIGHT: f32 = 420.0;
const MARGIN: f32 = 22.0;
const BAND_HEIGHT: f32 = 56.0;
const HEADING_SIZE: f32 = 17.0;
const LABEL_SIZE: f32 = 7.5;
const VALUE_SIZE: f32 = 11.5;
const ROW_HEIGHT: f32 = 31.0;
/// The grid stops here, above the tear line, whatever the number of fields.
const GRID_FLOOR: f32 = 158.0;
const TEAR_LINE: f32 = 146.0;
const QR_SIZE: f32 = 96.0;
const QR_BOTTOM: f32 = 38.0;
const CODE_MAX_SIZE: f32 = 20.0;

/// The PDF of `book`: one page per ticket.
pub fn render_tickets(book: &TicketBook) -> Result<Vec<u8>, RenderError> {
    if book.tickets.is_empty() {
        return Err(RenderError::NoTickets);
    }
    let mut ids = Ids::default();
    let catalog = ids.next();
    let tree = ids.next();
    let info = ids.next();
    let fonts: Vec<(Font, Ref)> = Font::ALL.iter().map(|font| (*font, ids.next())).collect();
    let pages: Vec<(Ref, Ref)> = book
        .tickets
        .iter()
        .map(|_| (ids.next(), ids.next()))
        .collect();

    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids(pages.iter().map(|(page, _)| *page))
        .count(pages.len() as i32);
    let mut document_info = pdf.document_info(info);
    document_info.title(TextStr(&book.title));
    document_info.producer(TextStr("Zócalo"));
    document_info.finish();
    for (font, id) in &fonts {
        pdf.type1_font(*id)
            .base_font(Name(font.base_font()))
            .encoding_predefined(Name(b"WinAnsiEncoding"));
    }
    for (index, (ticket, (page_id, content_id))) in book.tickets.iter().zip(&pages).enumerate() {
        let mut page = pdf.page(*page_id);
        page.media_box(Rect::new(0.0, 0.0, PAGE_WIDTH, PAGE_HEIGHT));
        page.parent(tree);
        page.contents(*content_id);
        let mut resources = page.resources();
        let mut font_dictionary = resources.fonts();
        for (font, id) in &fonts {
            font_dictionary.pair(Name(font.resource()), *id);
        }
        font_dictionary.finish();
        resources.finish();
        page.finish();
        let position = format!("Ticket {} of {}", index + 1, book.tickets.len());
        let content = page_content(book, ticket, &position);
        pdf.stream(*content_id, &content.finish());
    }
    Ok(pdf.finish())
}

#[derive(Default)]
struct Ids(i32);

impl Ids {
    fn next(&mut self) -> Ref {
        self.0 += 1;
        Ref::new(self.0)
    }
}

fn page_content(book: &TicketBook, ticket: &Ticket, position: &str) -> Content {
    let mut content = Content::new();
    draw_band(&mut content, book, position);
    let below_heading = draw_heading(&mut content, &ticket.heading);
    draw_fields(&mut content, &ticket.fields, below_heading);
    draw_tear_line(&mut content);
    draw_qr(&mut content, &ticket.code);
    draw_code(&mut content, &ticket.code);
    let footer = fit(
        &ticket.footer,
        Font::Regular,
        7.0,
        PAGE_WIDTH - 2.0 * MARGIN,
    );
    gray_text(&mut content, Font::Regular, 7.0, MARGIN, 20.0, &footer, 0.4);
    content
}

fn draw_band(content: &mut Content, book: &TicketBook, position: &str) {
    content.set_fill_gray(0.13);
    content.rect(0.0, PAGE_HEIGHT - BAND_HEIGHT, PAGE_WIDTH, BAND_HEIGHT);
    content.fill_nonzero();
    let top = PAGE_HEIGHT - 24.0;
    let usable = PAGE_WIDTH - 2.0 * MARGIN;
    let kicker = fit(&book.kicker, Font::Bold, 11.0, usable - 80.0);
    gray_text(content, Font::Bold, 11.0, MARGIN, top, &kicker, 1.0);
    let right = PAGE_WIDTH - MARGIN - width(position, Font::Regular, 9.0);
    gray_text(content, Font::Regular, 9.0, right, top, position, 1.0);
    let issuer = fit(&book.issuer, Font::Regular, 9.0, usable);
    gray_text(
        content,
        Font::Regular,
        9.0,
        MARGIN,
        top - 16.0,
        &issuer,
        0.8,
    );
}

/// Returns the baseline below which the fields may start.
fn draw_heading(content: &mut Content, heading: &str) -> f32 {
    let mut baseline = PAGE_HEIGHT - BAND_HEIGHT - 26.0;
    let lines = wrap(
        heading,
        Font::Bold,
        HEADING_SIZE,
        PAGE_WIDTH - 2.0 * MARGIN,
        2,
    );
    for line in lines {
        gray_text(
            content,
            Font::Bold,
            HEADING_SIZE,
            MARGIN,
            baseline,
            &line,
            0.0,
        );
        baseline -= HEADING_SIZE + 3.0;
    }
    baseline
}

fn draw_fields(content: &mut Content, fields: &[Field], top: f32) {
    let column = (PAGE_WIDTH - 2.0 * MARGIN) / 2.0;
    let mut label_line = top - 6.0;
    for row in fields.chunks(2) {
        let value_line = label_line - VALUE_SIZE - 3.0;
        if value_line < GRID_FLOOR {
            break;
        }
        for (i, field) in row.iter().enumerate() {
            let x = MARGIN + column * i as f32;
            let label = fit(
                &field.label.to_uppercase(),
                Font::Regular,
                LABEL_SIZE,
                column - 8.0,
            );
            gray_text(
                content,
                Font::Regular,
                LABEL_SIZE,
                x,
                label_line,
                &label,
                0.45,
            );
            let value = fit(&field.value, Font::Bold, VALUE_SIZE, column - 8.0);
            gray_text(content, Font::Bold, VALUE_SIZE, x, value_line, &value, 0.0);
        }
        label_line -= ROW_HEIGHT;
    }
}

fn draw_tear_line(content: &mut Content) {
    content.set_stroke_gray(0.6);
    content.set_line_width(0.8);
    content.set_dash_pattern([4.0, 3.0], 0.0);
    content.move_to(MARGIN, TEAR_LINE);
    content.line_to(PAGE_WIDTH - MARGIN, TEAR_LINE);
    content.stroke();
}

/// The QR code of `code`, dark modules as filled rectangles (runs of a row
/// merged, to keep the content stream short). A code too long for a QR
/// code is simply printed without one.
fn draw_qr(content: &mut Content, code: &str) {
    let Ok(qr) = QrCode::with_error_correction_level(code.as_bytes(), EcLevel::M) else {
        return;
    };
    let modules = qr.width();
    let colors = qr.to_colors();
    let module = QR_SIZE / modules as f32;
    content.set_fill_gray(0.0);
    for row in 0..modules {
        let y = QR_BOTTOM + QR_SIZE - (row + 1) as f32 * module;
        let mut column = 0;
        while column < modules {
            if colors[row * modules + column] != Color::Dark {
                column += 1;
                continue;
            }
            let start = column;
            while column < modules && colors[row * modules + column] == Color::Dark {
                column += 1;
            }
            let x = MARGIN + start as f32 * module;
            content.rect(x, y, (column - start) as f32 * module, module);
        }
    }
    content.fill_nonzero();
}

fn draw_code(content: &mut Content, code: &str) {
    let left = MARGIN + QR_SIZE + 16.0;
    let available = PAGE_WIDTH - MARGIN - left;
    let natural = width(code, Font::Mono, 1.0);
    let size = if natural > 0.0 {
        (available / natural).min(CODE_MAX_SIZE)
    } else {
        CODE_MAX_SIZE
    };
    let middle = QR_BOTTOM + QR_SIZE / 2.0;
    gray_text(
        content,
        Font::Regular,
        LABEL_SIZE,
        left,
        middle + 14.0,
        "CODE",
        0.45,
    );
    gray_text(
        content,
        Font::Mono,
        size,
        left,
        middle - size / 2.0,
        code,
        0.0,
    );
}

fn gray_text(content: &mut Content, font: Font, size: f32, x: f32, y: f32, text: &str, gray: f32) {
    content.set_fill_gray(gray);
    content.begin_text();
    content.set_font(Name(font.resource()), size);
    content.next_line(x, y);
    content.show(Str(&win_ansi(text)));
    content.end_text();
}
