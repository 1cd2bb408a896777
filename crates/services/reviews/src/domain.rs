//! Cameras, lenses and reviews, validated once at the edge. Request types
//! deserialize loosely; `validate()` turns them into the checked `New…`
//! types the store accepts, reporting every bad field at once.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use zocalo_http::{FieldError, Problem};

/// Accumulates field errors so a client learns about all of them at once.
#[derive(Default)]
struct Checks(Vec<FieldError>);

impl Checks {
    fn text(&mut self, field: &str, value: &str, max: usize) -> String {
        let trimmed = value.trim();
        let chars = trimmed.chars().count();
        if chars == 0 || chars > max {
            self.fail(field, format!("must have 1 to {max} characters"));
        } else if trimmed
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
        {
            self.fail(field, "must not contain control characters".into());
        }
        trimmed.to_owned()
    }

    fn range(&mut self, field: &str, value: f64, min: f64, max: f64) -> f64 {
        if !value.is_finite() || value < min || value > max {
            self.fail(field, format!("must be between {min} and {max}"));
        }
        value
    }

    fn fail(&mut self, field: &str, message: String) {
        self.0.push(FieldError {
            field: field.into(),
            message,
        });
    }

    fn finish<T>(self, value: T) -> Result<T, Problem> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(Problem::invalid_fields(self.0))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Camera {
    pub id: Uuid,
    pub brand: String,
    pub model: String,
    pub sensor: String,
    pub megapixels: f64,
    pub released: Option<i32>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CameraInput {
    pub brand: String,
    pub model: String,
    pub sensor: String,
    pub megapixels: f64,
    pub released: Option<i32>,
}

impl CameraInput {
    pub fn validate(self) -> Result<Camera, Problem> {
        let mut checks = Checks::default();
        let camera = Camera {
            id: Uuid::now_v7(),
            brand: checks.text("brand", &self.brand, 100),
            model: checks.text("model", &self.model, 100),
            sensor: checks.text("sensor", &self.sensor, 50),
            megapixels: checks.range("megapixels", self.megapixels, 0.1, 1000.0),
            released: self.released,
            created_at: Utc::now(),
        };
        if let Some(year) = self.released {
            checks.range("released", f64::from(year), 1900.0, 2100.0);
        }
        checks.finish(camera)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Lens {
    pub id: Uuid,
    pub brand: String,
    pub model: String,
    pub mount: String,
    pub focal_min_mm: f64,
    pub focal_max_mm: f64,
    pub max_aperture: f64,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LensInput {
    pub brand: String,
    pub model: String,
    pub mount: String,
    pub focal_min_mm: f64,
    pub focal_max_mm: f64,
    pub max_aperture: f64,
}

impl LensInput {
    pub fn validate(self) -> Result<Lens, Problem> {
        let mut checks = Checks::default();
        let lens = Lens {
            id: Uuid::now_v7(),
            brand: checks.text("brand", &self.brand, 100),
            model: checks.text("model", &self.model, 100),
            mount: checks.text("mount", &self.mount, 50),
            focal_min_mm: checks.range("focal_min_mm", self.focal_min_mm, 1.0, 5000.0),
            focal_max_mm: checks.range("focal_max_mm", self.focal_max_mm, 1.0, 5000.0),
            max_aperture: checks.range("max_aperture", self.max_aperture, 0.5, 64.0),
            created_at: Utc::now(),
        };
        if lens.focal_max_mm < lens.focal_min_mm {
            checks.fail("focal_max_mm", "must not be less than focal_min_mm".into());
        }
        checks.finish(lens)
    }
}

/// What a review is about: exactly one camera or one lens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Camera(Uuid),
    Lens(Uuid),
}

impl Target {
    pub fn camera_id(self) -> Option<Uuid> {
        match self {
            Target::Camera(id) => Some(id),
            Target::Lens(_) => None,
        }
    }

    pub fn lens_id(self) -> Option<Uuid> {
        match self {
            Target::Lens(id) => Some(id),
            Target::Camera(_) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Review {
    pub id: Uuid,
    pub title: String,
    pub content: String,
    pub rating: i16,
    pub camera_id: Option<Uuid>,
    pub lens_id: Option<Uuid>,
    /// Brand and model of the camera or lens, for display.
    pub target_brand: String,
    pub target_model: String,
    pub editor_id: Uuid,
    pub editor_name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReviewInput {
    pub title: String,
    pub content: String,
    pub rating: i64,
    pub camera_id: Option<Uuid>,
    pub lens_id: Option<Uuid>,
}

/// A review ready to insert.
#[derive(Debug)]
pub struct NewReview {
    pub id: Uuid,
    pub title: String,
    pub content: String,
    pub rating: i16,
    pub target: Target,
    pub editor_id: Uuid,
    pub editor_name: String,
    pub created_at: DateTime<Utc>,
}

impl ReviewInput {
    pub fn validate(self, editor_id: Uuid, editor_name: String) -> Result<NewReview, Problem> {
        let mut checks = Checks::default();
        let title = checks.text("title", &self.title, 200);
        let content = checks.text("content", &self.content, 20_000);
        let rating = rating(&mut checks, self.rating);
        let target = match (self.camera_id, self.lens_id) {
            (Some(camera), None) => Some(Target::Camera(camera)),
            (None, Some(lens)) => Some(Target::Lens(lens)),
            _ => {
                checks.fail(
                    "camera_id",
                    "give exactly one of camera_id and lens_id".into(),
                );
                None
            }
        };
        let review = target.map(|target| NewReview {
            id: Uuid::now_v7(),
            title,
            content,
            rating,
            target,
            editor_id,
            editor_name,
            created_at: Utc::now(),
        });
        let review = checks.finish(review)?;
        review.ok_or_else(|| Problem::internal("validated review without target"))
    }
}

fn rating(checks: &mut Checks, value: i64) -> i16 {
    if !(1..=5).contains(&value) {
        checks.fail("rating", "must be an integer from 1 to 5".into());
    }
    value.clamp(1, 5) as i16
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ReviewPatch {
    pub title: Option<String>,
    pub content: Option<String>,
    pub rating: Option<i64>,
}

/// A checked patch; `None` fields stay as they are.
#[derive(Debug, Clone)]
pub struct ReviewChanges {
    pub title: Option<String>,
    pub content: Option<String>,
    pub rating: Option<i16>,
    pub updated_at: DateTime<Utc>,
}

impl ReviewPatch {
    pub fn validate(self) -> Result<ReviewChanges, Problem> {
        let mut checks = Checks::default();
        if self.title.is_none() && self.content.is_none() && self.rating.is_none() {
            checks.fail(
                "title",
                "give at least one of title, content, rating".into(),
            );
        }
        let changes = ReviewChanges {
            title: self.title.map(|t| checks.text("title", &t, 200)),
            content: self.content.map(|c| checks.text("content", &c, 20_000)),
            rating: self.rating.map(|r| rating(&mut checks, r)),
            updated_at: Utc::now(),
        };
        checks.finish(changes)
    }
}

/// Filters of `GET /api/content`, already checked.
#[derive(Debug, Clone, Default)]
pub struct ContentQuery {
    pub before: Option<Uuid>,
    pub camera_id: Option<Uuid>,
    pub lens_id: Option<Uuid>,
    pub editor_id: Option<Uuid>,
    pub brand: Option<String>,
    pub text: Option<String>,
    pub limit: u32,
}

/// Filters of the camera and lens lists.
#[derive(Debug, Clone, Default)]
pub struct EquipmentQuery {
    pub after: Option<Uuid>,
    pub brand: Option<String>,
    pub limit: u32,
}

/// Review count and mean rating of one camera or lens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReviewStats {
    pub review_count: i64,
    pub average_rating: Option<f64>,
}

/// FTS5 treats `"`, `*`, `:`, `-`, `AND`… as syntax; quote every word so a
/// reader's search is only ever a list of terms (all must match).
pub fn fts5_terms(text: &str) -> Option<String> {
    let terms: Vec<String> = text
        .split_whitespace()
        .map(|word| format!("\"{}\"", word.replace('"', "\"\"")))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fts5_terms_are_quoted() {
        assert_eq!(fts5_terms("sharp lens").unwrap(), "\"sharp\" \"lens\"");
        assert_eq!(
            fts5_terms("a\"b OR c*").unwrap(),
            "\"a\"\"b\" \"OR\" \"c*\""
        );
        assert_eq!(fts5_terms("   "), None);
    }

    #[test]
    fn a_review_needs_exactly_one_target() {
        let input = |camera_id, lens_id| ReviewInput {
            title: "t".into(),
            content: "c".into(),
            rating: 4,
            camera_id,
            lens_id,
        };
        let id = Uuid::now_v7();
        assert!(input(Some(id), None).validate(id, "e".into()).is_ok());
        assert!(input(None, Some(id)).validate(id, "e".into()).is_ok());
        assert_eq!(
            input(None, None)
                .validate(id, "e".into())
                .unwrap_err()
                .status,
            422
        );
        assert_eq!(
            input(Some(id), Some(id))
                .validate(id, "e".into())
                .unwrap_err()
                .status,
            422
        );
    }

    #[test]
    fn bad_fields_are_all_reported() {
        let problem = ReviewInput {
            title: "".into(),
            content: "ok".into(),
            rating: 9,
            camera_id: None,
            lens_id: None,
        }
        .validate(Uuid::now_v7(), "e".into())
        .unwrap_err();
        let fields: Vec<_> = problem.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["title", "rating", "camera_id"]);
    }

    #[test]
    fn lens_focal_range_is_checked() {
        let lens = LensInput {
            brand: "Sigma".into(),
            model: "Art".into(),
            mount: "E".into(),
            focal_min_mm: 70.0,
            focal_max_mm: 24.0,
            max_aperture: 2.8,
        };
        assert_eq!(lens.validate().unwrap_err().errors[0].field, "focal_max_mm");
    }
}
