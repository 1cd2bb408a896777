//! What every page shares: the layout's data ([`Chrome`]), form errors
//! and small formatting helpers used by the templates.

use askama::Template;
use axum::response::{Html, IntoResponse, Response};
use zocalo_http::FieldError;

use crate::assets::ASSETS;
use crate::error::WebError;
use crate::gateway::ApiError;
use crate::nav::{APPS, App};
use crate::session::Visitor;

/// The layout around every page: title, navigation, who is signed in, the
/// CSRF token for the sign-out form, and the asset URLs.
pub struct Chrome {
    pub title: String,
    /// The application the page belongs to, to mark it in the navigation.
    pub section: &'static str,
    pub user_name: Option<String>,
    pub is_editor: bool,
    /// Runs cinemas (or is an admin): the cinema's manager screens.
    pub is_manager: bool,
    pub csrf: String,
    pub css: &'static str,
    pub js: &'static str,
    pub icon: &'static str,
    pub apps: &'static [App],
}

impl Chrome {
    pub fn new(visitor: &Visitor, title: impl Into<String>, section: &'static str) -> Self {
        let user = visitor.user.as_ref();
        Self {
            title: title.into(),
            section,
            user_name: user.map(|u| u.name.clone()),
            is_editor: user.is_some_and(|u| u.has_role("editor") || u.has_role("admin")),
            is_manager: user.is_some_and(|u| u.has_role("manager") || u.has_role("admin")),
            csrf: visitor.csrf_token.clone(),
            ..Self::anonymous("")
        }
    }

    /// The layout for pages rendered without a visitor (error pages).
    pub fn anonymous(title: &str) -> Self {
        Self {
            title: title.into(),
            section: "",
            user_name: None,
            is_editor: false,
            is_manager: false,
            csrf: String::new(),
            css: &ASSETS.css.url,
            js: &ASSETS.js.url,
            icon: &ASSETS.icon.url,
            apps: APPS,
        }
    }
}

/// Render a template as a 200 HTML page.
pub fn render(page: impl Template) -> Result<Response, WebError> {
    Ok(Html(page.render()?).into_response())
}

/// What went wrong with a submitted form: messages per field (shown next
/// to the field) and one for the form as a whole.
#[derive(Debug, Default)]
pub struct FormErrors {
    fields: Vec<FieldError>,
    pub general: Option<String>,
}

impl FormErrors {
    pub fn none() -> Self {
        Self::default()
    }

    /// The errors of a refused API call. A 422 naming fields shows them
    /// next to those fields (`rename` maps API field names to the form's);
    /// anything else is a message for the whole form. An unavailable
    /// service is not a form error: it stays an error page.
    pub fn from_api(error: ApiError, rename: &[(&str, &str)]) -> Result<Self, WebError> {
        let status = error
            .status()
            .ok_or_else(|| WebError::from(error.clone()))?;
        if status == 401 || status == 404 || status >= 500 || status == 429 {
            return Err(error.into());
        }
        let mut fields = error.field_errors();
        for field in &mut fields {
            if let Some((_, to)) = rename.iter().find(|(from, _)| *from == field.field) {
                field.field = (*to).to_owned();
            }
        }
        let general = fields.is_empty().then(|| error.detail());
        Ok(Self { fields, general })
    }

    /// One message for the whole form.
    pub fn message(message: String) -> Self {
        Self {
            fields: Vec::new(),
            general: Some(message),
        }
    }

    pub fn field(field: &str, message: &str) -> Self {
        Self {
            fields: vec![FieldError {
                field: field.into(),
                message: message.into(),
            }],
            general: None,
        }
    }

    /// The message for `field`, if it has one.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.message.as_str())
    }

    /// Messages for fields the form does not show (so none is lost).
    pub fn others(&self, shown: &[&str]) -> Vec<String> {
        self.fields
            .iter()
            .filter(|e| !shown.contains(&e.field.as_str()))
            .map(|e| format!("{}: {}", e.field.replace('_', " "), e.message))
            .collect()
    }
}

/// Percent-encode a query value.
pub fn encode(value: &str) -> String {
    serde_urlencoded::to_string([("v", value)])
        .map(|s| s[2..].to_owned())
        .unwrap_or_default()
}

/// Only local paths are followed after sign-in, so a crafted link cannot
/// send someone to another site.
pub fn local_path(next: Option<&str>) -> String {
    match next {
        Some(path) if path.starts_with('/') && !path.starts_with("//") && !path.contains('\\') => {
            path.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// Paragraphs of a plain-text body (blank lines separate them).
pub fn paragraphs(text: &str) -> Vec<String> {
    text.replace("\r\n", "\n")
        .split("\n\n")
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// A rating as stars, e.g. `★★★★☆` (the template adds the words for
/// screen readers).
pub fn stars(rating: i64) -> String {
    let rating = rating.clamp(0, 5) as usize;
    format!("{}{}", "★".repeat(rating), "☆".repeat(5 - rating))
}

/// Minor units as a decimal amount with its currency: `1850, "USD"` →
/// `"18.50 USD"`.
pub fn money(cents: i64, currency: &str) -> String {
    format!("{}.{:02} {currency}", cents / 100, (cents % 100).abs())
}

/// A timestamp as people read it (UTC, to the minute).
pub fn when(at: &chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(local_path(Some("/books?q=x")), "/books?q=x");
        assert_eq!(local_path(Some("//evil.example")), "/");
        assert_eq!(local_path(Some("https://evil.example")), "/");
        assert_eq!(local_path(Some("/\\evil.example")), "/");
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn formatting_helpers() {
        assert_eq!(paragraphs("one\r\n\r\ntwo\n\n\n"), ["one", "two"]);
        assert_eq!(stars(4), "★★★★☆");
        assert_eq!(money(1850, "USD"), "18.50 USD");
        assert_eq!(encode("/a b?c=d&e"), "%2Fa+b%3Fc%3Dd%26e");
    }

    #[test]
    fn api_field_errors_land_on_form_fields() {
        let problem = zocalo_http::Problem::invalid_fields(vec![
            FieldError {
                field: "price.amount".into(),
                message: "must be more than 0".into(),
            },
            FieldError {
                field: "stock".into(),
                message: "must be 0 or more".into(),
            },
        ]);
        let errors = FormErrors::from_api(
            ApiError::Status(422, Some(problem)),
            &[("price.amount", "amount")],
        )
        .unwrap();
        assert_eq!(errors.get("amount"), Some("must be more than 0"));
        assert_eq!(errors.get("stock"), Some("must be 0 or more"));
        assert!(errors.general.is_none());
        assert!(FormErrors::from_api(ApiError::Unavailable("down".into()), &[]).is_err());
    }
}
