//! Byte ranges: what an HTTP `Range: bytes=…` header asks for, and what it
//! means for an object of a known size.

use std::ops::Range;

/// One range of bytes, as HTTP expresses it (RFC 9110 §14.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=first-`: from `first` to the end.
    From(u64),
    /// `bytes=first-last`: both inclusive.
    Bounded { first: u64, last: u64 },
    /// `bytes=-n`: the last `n` bytes.
    Last(u64),
}

impl ByteRange {
    /// Parse a `Range` header holding a single byte range; `None` for
    /// anything else (other units, several ranges, nonsense), which HTTP
    /// says to answer with the whole object.
    pub fn parse(header: &str) -> Option<Self> {
        let spec = header.trim().strip_prefix("bytes=")?.trim();
        if spec.contains(',') {
            return None;
        }
        let (first, last) = spec.split_once('-')?;
        let number = |s: &str| -> Option<u64> {
            let s = s.trim();
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        };
        match (first.trim().is_empty(), last.trim().is_empty()) {
            (true, false) => Some(Self::Last(number(last)?)),
            (false, true) => Some(Self::From(number(first)?)),
            (false, false) => {
                let (first, last) = (number(first)?, number(last)?);
                (first <= last).then_some(Self::Bounded { first, last })
            }
            (true, true) => None,
        }
    }

    /// The bytes this range covers in an object of `size` bytes, clamped to
    /// its end; `None` when it covers none (HTTP 416).
    pub fn resolve(self, size: u64) -> Option<Range<u64>> {
        let range = match self {
            Self::From(first) => first..size,
            Self::Bounded { first, last } => first..last.saturating_add(1).min(size),
            Self::Last(count) => size.saturating_sub(count)..size,
        };
        (range.start < range.end).then_some(range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_byte_ranges() {
        assert_eq!(
            ByteRange::parse("bytes=0-99"),
            Some(ByteRange::Bounded { first: 0, last: 99 })
        );
        assert_eq!(ByteRange::parse("bytes=100-"), Some(ByteRange::From(100)));
        assert_eq!(ByteRange::parse("bytes=-5"), Some(ByteRange::Last(5)));
        for ignored in [
            "bytes=5-1",
            "bytes=-",
            "items=0-1",
            "bytes=0-1,4-5",
            "bytes=a-b",
            "bytes=+1-2",
        ] {
            assert_eq!(ByteRange::parse(ignored), None, "{ignored}");
        }
    }

    #[test]
    fn resolves_against_the_size() {
        assert_eq!(
            ByteRange::Bounded { first: 0, last: 99 }.resolve(50),
            Some(0..50)
        );
        assert_eq!(ByteRange::From(10).resolve(50), Some(10..50));
        assert_eq!(ByteRange::From(50).resolve(50), None);
        assert_eq!(ByteRange::Last(10).resolve(50), Some(40..50));
        assert_eq!(ByteRange::Last(100).resolve(50), Some(0..50));
        assert_eq!(ByteRange::Last(0).resolve(50), None);
        assert_eq!(ByteRange::Bounded { first: 0, last: 0 }.resolve(0), None);
    }
}
