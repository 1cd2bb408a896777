//! Text for the PDF standard fonts: encoding into WinAnsi (the one-byte
//! encoding every reader knows for Helvetica and Courier, which covers
//! Spanish and the other Western European languages) and width estimates
//! for wrapping and truncating lines.

/// Which standard font a run of text is set in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Font {
    Regular,
    Bold,
    Mono,
}

impl Font {
    /// Resource names in every page's font dictionary.
    pub(crate) fn resource(self) -> &'static [u8] {
        match self {
            Font::Regular => b"F1",
            Font::Bold => b"F2",
            Font::Mono => b"F3",
        }
    }

    pub(crate) fn base_font(self) -> &'static [u8] {
        match self {
            Font::Regular => b"Helvetica",
            Font::Bold => b"Helvetica-Bold",
            Font::Mono => b"Courier-Bold",
        }
    }

    pub(crate) const ALL: [Font; 3] = [Font::Regular, Font::Bold, Font::Mono];
}

/// `text` in WinAnsi; characters it cannot show become `?`.
pub(crate) fn win_ansi(text: &str) -> Vec<u8> {
    text.chars().map(win_ansi_byte).collect()
}

fn win_ansi_byte(c: char) -> u8 {
    match c {
        ' '..='~' => c as u8,
        // Latin-1's upper half is WinAnsi's too.
        '\u{A0}'..='\u{FF}' => c as u32 as u8,
        '€' => 0x80,
        '‚' => 0x82,
        '„' => 0x84,
        '…' => 0x85,
        '‘' => 0x91,
        '’' => 0x92,
        '“' => 0x93,
        '”' => 0x94,
        '•' => 0x95,
        '–' => 0x96,
        '—' => 0x97,
        '™' => 0x99,
        '\t' | '\n' | '\r' => b' ',
        _ => b'?',
    }
}

/// Width of `text` in points at `size`.
pub(crate) fn width(text: &str, font: Font, size: f32) -> f32 {
    let units: u32 = text.chars().map(|c| glyph_units(c, font)).sum();
    units as f32 * size / 1000.0
}

/// Advance of one glyph in thousandths of an em. Courier is monospaced;
/// Helvetica uses its metrics for ASCII and an average for the rest, and
/// bold is taken as 10 % wider, which errs on the side of shorter lines.
fn glyph_units(c: char, font: Font) -> u32 {
    match font {
        Font::Mono => 600,
        Font::Regular => helvetica_units(c),
        Font::Bold => helvetica_units(c) * 11 / 10,
    }
}

fn helvetica_units(c: char) -> u32 {
    const ASCII: [u16; 95] = [
        278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278,
        278, // ' '../
        556, 556, 556, 556, 556, 556, 556, 556, 556, 556, // 0-9
        278, 278, 584, 584, 584, 556, 1015, // :..@
        667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, // A-M
        722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, // N-Z
        278, 278, 278, 469, 556, 333, // [..`
        556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, // a-m
        556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, // n-z
        334, 260, 334, 584, // {..~
    ];
    match c {
        ' '..='~' => u32::from(ASCII[(c as usize) - 32]),
        _ => 667,
    }
}

/// `text` cut to fit `max_width`, ending in `…` when cut.
pub(crate) fn fit(text: &str, font: Font, size: f32, max_width: f32) -> String {
    if width(text, font, size) <= max_width {
        return text.to_owned();
    }
    let mut fitted = String::new();
    for c in text.chars() {
        fitted.push(c);
        if width(&fitted, font, size) + width("…", font, size) > max_width {
            fitted.pop();
            break;
        }
    }
    format!("{}…", fitted.trim_end())
}

/// `text` broken into at most `max_lines` lines of at most `max_width`,
/// between words; the last line is cut with `…` if text is left over.
pub(crate) fn wrap(
    text: &str,
    font: Font,
    size: f32,
    max_width: f32,
    max_lines: usize,
) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut words = text.split_whitespace();
    while let Some(word) = words.next() {
        let candidate = if current.is_empty() {
            word.to_owned()
        } else {
            format!("{current} {word}")
        };
        if width(&candidate, font, size) <= max_width || current.is_empty() {
            current = candidate;
            continue;
        }
        if lines.len() + 1 == max_lines {
            let rest: Vec<&str> = std::iter::once(word).chain(words).collect();
            current = format!("{current} {}", rest.join(" "));
            break;
        }
        lines.push(std::mem::take(&mut current));
        current = word.to_owned();
    }
    if !current.is_empty() {
        lines.push(current);
    }
    lines
        .into_iter()
        .take(max_lines.max(1))
        .map(|line| fit(&line, font, size, max_width))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spanish_text_is_win_ansi() {
        assert_eq!(win_ansi("Año"), vec![b'A', 0xF1, b'o']);
        assert_eq!(win_ansi("€ 5"), vec![0x80, b' ', b'5']);
        assert_eq!(win_ansi("東"), vec![b'?']);
    }

    #[test]
    fn widths_follow_helvetica_metrics() {
        assert!((width("ii", Font::Regular, 10.0) - 4.44).abs() < 0.01);
        assert!((width("MM", Font::Mono, 10.0) - 12.0).abs() < 0.01);
        assert!(width("abc", Font::Bold, 10.0) > width("abc", Font::Regular, 10.0));
    }

    #[test]
    fn long_text_is_cut_with_an_ellipsis() {
        let cut = fit("The Good, the Bad and the Ugly", Font::Regular, 12.0, 80.0);
        assert!(cut.ends_with('…'));
        assert!(width(&cut, Font::Regular, 12.0) <= 80.0);
        assert_eq!(fit("Up", Font::Regular, 12.0, 80.0), "Up");
    }

    #[test]
    fn wrapping_keeps_words_and_line_limits() {
        let lines = wrap(
            "Everything Everywhere All at Once",
            Font::Bold,
            18.0,
            150.0,
            2,
        );
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("Everything"));
        for line in &lines {
            assert!(width(line, Font::Bold, 18.0) <= 150.0, "{line}");
        }
        assert_eq!(wrap("Alien", Font::Bold, 18.0, 150.0, 2), vec!["Alien"]);
        let many = wrap(
            "one two three four five six seven eight nine ten",
            Font::Regular,
            12.0,
            40.0,
            3,
        );
        assert_eq!(many.len(), 3);
        assert!(many[2].ends_with('…'));
    }
}
