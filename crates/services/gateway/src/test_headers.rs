//! Header maps written inline, for the unit tests of several modules.

use axum::http::{HeaderMap, HeaderValue};

/// A map holding `pairs` in order, repeated names appended.
pub(crate) fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_static(value));
    }
    map
}
