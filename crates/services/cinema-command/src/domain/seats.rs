//! Seat labels and room layouts: which seats exist, which can be sold, what
//! class each is priced in, and which free seats are best.

use std::collections::HashSet;
use std::fmt;

use zocalo_contracts::cinema::{ACCESSIBLE, STANDARD};

/// Rows are lettered `A`…`Z`, so a room has at most 26.
pub const MAX_ROWS: u16 = 26;
pub const MAX_SEATS_PER_ROW: u16 = 60;

/// A seat: its row letter and its number in the row (`A1`, `C12`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeatLabel {
    /// 0-based row (`A` = 0).
    pub row: u16,
    /// 1-based number in the row.
    pub number: u16,
}

impl SeatLabel {
    /// Parse `A1`…`Z60` (case-insensitive); the range check against a room
    /// is [`Layout::contains`].
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let mut chars = text.chars();
        let letter = chars.next()?.to_ascii_uppercase();
        if !letter.is_ascii_uppercase() {
            return None;
        }
        let digits = chars.as_str();
        if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let number: u16 = digits.parse().ok()?;
        (number >= 1).then_some(Self {
            row: u16::from(letter as u8 - b'A'),
            number,
        })
    }
}

impl fmt::Display for SeatLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", char::from(b'A' + self.row as u8), self.number)
    }
}

/// A room's seat map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub rows: u16,
    pub seats_per_row: u16,
    pub disabled: HashSet<SeatLabel>,
    pub accessible: HashSet<SeatLabel>,
}

/// Why a requested seat cannot be sold at all (as opposed to being taken).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsellable {
    Unknown,
    Disabled,
}

impl Layout {
    pub fn contains(&self, seat: SeatLabel) -> bool {
        seat.row < self.rows && (1..=self.seats_per_row).contains(&seat.number)
    }

    /// Every seat, row by row.
    pub fn seats(&self) -> impl Iterator<Item = SeatLabel> + '_ {
        (0..self.rows).flat_map(move |row| {
            (1..=self.seats_per_row).map(move |number| SeatLabel { row, number })
        })
    }

    pub fn sellable_count(&self) -> usize {
        self.seats().filter(|s| !self.disabled.contains(s)).count()
    }

    pub fn check(&self, seat: SeatLabel) -> Result<(), Unsellable> {
        if !self.contains(seat) {
            Err(Unsellable::Unknown)
        } else if self.disabled.contains(&seat) {
            Err(Unsellable::Disabled)
        } else {
            Ok(())
        }
    }

    /// The price class of a seat.
    pub fn class_of(&self, seat: SeatLabel) -> &'static str {
        if self.accessible.contains(&seat) {
            ACCESSIBLE
        } else {
            STANDARD
        }
    }

    /// Up to `wanted` free seats, best first: standard seats before
    /// accessible ones (those stay free for who needs them as long as
    /// possible), then nearest the sweet spot — the middle of a row about
    /// two thirds of the way back.
    pub fn best_free(&self, taken: &HashSet<SeatLabel>, wanted: usize) -> Vec<SeatLabel> {
        let sweet_row = f64::from(self.rows.saturating_sub(1)) * 2.0 / 3.0;
        let middle = f64::from(self.seats_per_row + 1) / 2.0;
        let mut free: Vec<(bool, u64, SeatLabel)> = self
            .seats()
            .filter(|s| !self.disabled.contains(s) && !taken.contains(s))
            .map(|s| {
                let dr = f64::from(s.row) - sweet_row;
                let dc = f64::from(s.number) - middle;
                // Integral so ties break by label, which keeps picks stable.
                let distance = ((dr * dr * 4.0 + dc * dc) * 100.0) as u64;
                (self.accessible.contains(&s), distance, s)
            })
            .collect();
        free.sort_unstable();
        free.into_iter().take(wanted).map(|(_, _, s)| s).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seat(text: &str) -> SeatLabel {
        SeatLabel::parse(text).unwrap()
    }

    fn layout() -> Layout {
        Layout {
            rows: 5,
            seats_per_row: 10,
            disabled: [seat("A1")].into(),
            accessible: [seat("E5"), seat("E6")].into(),
        }
    }

    #[test]
    fn labels_round_trip() {
        assert_eq!(seat("c12").to_string(), "C12");
        assert_eq!(seat("A1"), SeatLabel { row: 0, number: 1 });
        for bad in ["", "A", "1A", "A0", "AA1", "A1x", "Ä1", "A1234"] {
            assert_eq!(SeatLabel::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn unknown_and_disabled_seats_are_unsellable() {
        let layout = layout();
        assert_eq!(layout.check(seat("F1")), Err(Unsellable::Unknown));
        assert_eq!(layout.check(seat("A11")), Err(Unsellable::Unknown));
        assert_eq!(layout.check(seat("A1")), Err(Unsellable::Disabled));
        assert_eq!(layout.check(seat("B2")), Ok(()));
        assert_eq!(layout.sellable_count(), 49);
    }

    #[test]
    fn best_seats_are_central_standard_and_free() {
        let layout = layout();
        let best = layout.best_free(&HashSet::new(), 2);
        assert_eq!(best.len(), 2);
        assert!(best.iter().all(|s| s.row == 3), "{best:?}");
        let taken: HashSet<_> = best.iter().copied().collect();
        let next = layout.best_free(&taken, 49);
        assert_eq!(next.len(), 47, "every other sellable seat");
        assert!(next.iter().all(|s| !taken.contains(s)));
        assert_eq!(
            &next[45..],
            &[seat("E5"), seat("E6")],
            "accessible seats come last"
        );
    }
}
