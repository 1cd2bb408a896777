//! ISBN-10 and ISBN-13 with their check digits. Sellers type ISBNs with
//! hyphens or spaces; we store the bare digits so that a search by ISBN
//! matches however either side wrote it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A checked ISBN: 13 digits, or 9 digits and a check character (`0-9`/`X`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Isbn(String);

impl Isbn {
    /// Accepts hyphens and spaces between digits; a lowercase `x` check
    /// character is read as `X`.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let compact: String = text
            .chars()
            .filter(|c| *c != '-' && *c != ' ')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        match compact.len() {
            10 if isbn10_is_valid(&compact) => Ok(Self(compact)),
            13 if isbn13_is_valid(&compact) => Ok(Self(compact)),
            10 | 13 => Err("has a wrong check digit"),
            _ => Err("must be an ISBN-10 or ISBN-13"),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Isbn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Weights 10..1; `X` (10) only as the last character; sum ≡ 0 (mod 11).
fn isbn10_is_valid(isbn: &str) -> bool {
    let mut sum = 0u32;
    for (i, c) in isbn.chars().enumerate() {
        let value = match c {
            '0'..='9' => c as u32 - '0' as u32,
            'X' if i == 9 => 10,
            _ => return false,
        };
        sum += value * (10 - i as u32);
    }
    sum.is_multiple_of(11)
}

/// Weights alternate 1 and 3; sum ≡ 0 (mod 10).
fn isbn13_is_valid(isbn: &str) -> bool {
    let mut sum = 0u32;
    for (i, c) in isbn.chars().enumerate() {
        let Some(digit) = c.to_digit(10) else {
            return false;
        };
        sum += digit * if i % 2 == 0 { 1 } else { 3 };
    }
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_isbns_are_normalised() {
        assert_eq!(
            Isbn::parse("978-0-306-40615-7").unwrap().as_str(),
            "9780306406157"
        );
        assert_eq!(Isbn::parse("0 306 40615 2").unwrap().as_str(), "0306406152");
        assert_eq!(Isbn::parse("0-8044-2957-x").unwrap().as_str(), "080442957X");
    }

    #[test]
    fn bad_isbns_are_refused() {
        assert_eq!(
            Isbn::parse("978-0-306-40615-8"),
            Err("has a wrong check digit")
        );
        assert_eq!(Isbn::parse("0306406153"), Err("has a wrong check digit"));
        assert!(Isbn::parse("X306406152").is_err(), "X only as check digit");
        assert!(Isbn::parse("97803064061X7").is_err());
        assert!(Isbn::parse("12345").is_err());
        assert!(Isbn::parse("").is_err());
        assert!(Isbn::parse("978_0306406157").is_err());
        assert!(Isbn::parse("٩٧٨٠٣٠٦٤٠٦١٥٧").is_err(), "ASCII digits only");
    }
}
