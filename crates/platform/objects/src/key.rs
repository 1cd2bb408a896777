//! What a key may be. One rule for every adapter, so a key that works on a
//! laptop works against S3 and can never name a path outside the store.

use crate::ObjectError;

const MAX_KEY_BYTES: usize = 512;

/// Accept `key` if it is `/`-separated segments of `[A-Za-z0-9._-]`, none
/// empty and none starting with `.` (which rules out `..` and the local
/// store's temporary directory), at most 512 bytes.
pub fn check_key(key: &str) -> Result<(), ObjectError> {
    let valid = !key.is_empty()
        && key.len() <= MAX_KEY_BYTES
        && key.split('/').all(|segment| {
            !segment.is_empty()
                && !segment.starts_with('.')
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    if valid {
        Ok(())
    } else {
        Err(ObjectError::InvalidKey(key.chars().take(80).collect()))
    }
}

/// A listing prefix: empty (everything) or a valid key.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), ObjectError> {
    if prefix.is_empty() {
        Ok(())
    } else {
        check_key(prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_plain_relative_paths() {
        for good in ["a", "tasks/0193/original", "x-y_z.mp4", "a/b/c/d"] {
            assert!(check_key(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "../a",
            "a/../b",
            ".tmp/x",
            "a/.hidden",
            "a b",
            "a\\b",
            "é",
            "a?b",
        ] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
        assert!(check_key(&"a".repeat(513)).is_err());
    }
}
