//! Static assets, compiled into the binary and served under names that
//! carry a hash of their content (`/assets/app.3f2a9c1b.css`).
//!
//! A changed file gets a new name, so a response can be cached for a year
//! (`immutable`) by browsers, the gateway and any CDN, and a deploy is never
//! half-seen through stale caches. There is no build step: the hash is
//! computed once, at first use.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::WebError;

/// One asset: its public URL and what it serves.
pub struct Asset {
    pub url: String,
    name: String,
    content_type: &'static str,
    body: &'static [u8],
}

/// Every asset, by role. Templates read URLs from here.
pub struct Assets {
    pub css: Asset,
    pub js: Asset,
    pub icon: Asset,
}

pub static ASSETS: LazyLock<Assets> = LazyLock::new(|| Assets {
    css: Asset::new(
        "app",
        "css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/app.css"),
    ),
    js: Asset::new(
        "app",
        "js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/app.js"),
    ),
    icon: Asset::new(
        "icon",
        "svg",
        "image/svg+xml",
        include_bytes!("../assets/icon.svg"),
    ),
});

impl Asset {
    fn new(stem: &str, ext: &str, content_type: &'static str, body: &'static [u8]) -> Self {
        let digest = Sha256::digest(body);
        let hash: String = digest[..5].iter().map(|b| format!("{b:02x}")).collect();
        let name = format!("{stem}.{hash}.{ext}");
        Self {
            url: format!("/assets/{name}"),
            name,
            content_type,
            body,
        }
    }
}

impl Assets {
    fn find(&self, name: &str) -> Option<&Asset> {
        [&self.css, &self.js, &self.icon]
            .into_iter()
            .find(|asset| asset.name == name)
    }
}

/// `GET /assets/{name}`: only current names exist; an old hash is 404, so a
/// cache can never pair a new name with old content.
pub async fn serve(Path(name): Path<String>) -> Result<Response, WebError> {
    let asset = ASSETS.find(&name).ok_or(WebError::NotFound)?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        asset.body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_a_hash_of_the_content() {
        let css = &ASSETS.css;
        assert!(css.url.starts_with("/assets/app.") && css.url.ends_with(".css"));
        let hash = css.name.split('.').nth(1).unwrap();
        assert_eq!(hash.len(), 10);
        let expected: String = Sha256::digest(css.body)[..5]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hash, expected);
        assert!(ASSETS.find(&css.name).is_some());
        assert!(ASSETS.find("app.0000000000.css").is_none());
    }
}
