//! The auth service's vocabulary, validated once at the edge: an email is
//! trimmed and lower-cased, a password is long enough, a role is one the
//! platform knows. Handlers take these types, never raw strings.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use zocalo_http::{FieldError, Problem};

pub const MIN_PASSWORD_CHARS: usize = 10;
pub const MAX_PASSWORD_CHARS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let email = raw.trim().to_lowercase();
        let valid = email.len() <= 254
            && email.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains('@')
            })
            && !email.chars().any(|c| c.is_whitespace() || c.is_control());
        if valid {
            Ok(Self(email))
        } else {
            Err(field("email", "is not a valid email address"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password that meets the policy; never printed.
pub struct Password(String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

impl Password {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let chars = raw.chars().count();
        if chars < MIN_PASSWORD_CHARS {
            return Err(field(
                "password",
                &format!("must have at least {MIN_PASSWORD_CHARS} characters"),
            ));
        }
        if chars > MAX_PASSWORD_CHARS {
            return Err(field(
                "password",
                &format!("must have at most {MAX_PASSWORD_CHARS} characters"),
            ));
        }
        let distinct = raw.chars().collect::<std::collections::HashSet<_>>().len();
        if distinct < 4 {
            return Err(field("password", "is too repetitive"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let name = raw.trim();
        let chars = name.chars().count();
        if chars == 0 || chars > 100 || name.chars().any(char::is_control) {
            return Err(field("name", "must have 1 to 100 printable characters"));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Roles an admin can grant to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Editor,
    Manager,
    Seller,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Editor => "editor",
            Role::Manager => "manager",
            Role::Seller => "seller",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Problem;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "editor" => Ok(Role::Editor),
            "manager" => Ok(Role::Manager),
            "seller" => Ok(Role::Seller),
            _ => Err(Problem::invalid_field(
                "role",
                "must be one of admin, editor, manager, seller",
            )),
        }
    }
}

/// A user as the API shows it (no password hash, ever).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub roles: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// A user with the hash, for login only.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: User,
    pub password_hash: String,
}

pub struct NewUser {
    pub id: Uuid,
    pub email: Email,
    pub name: DisplayName,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
}

/// A service client for the `client_credentials` grant.
#[derive(Debug, Clone)]
pub struct OAuthClient {
    pub client_id: String,
    pub secret_hash: String,
    pub name: String,
    pub roles: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// A signing key as stored: its id and 32-byte Ed25519 seed.
#[derive(Clone)]
pub struct StoredKey {
    pub kid: String,
    pub seed: [u8; 32],
    pub created_at: DateTime<Utc>,
}

/// What presenting a refresh token led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// It was valid; it is now used and its successor is stored.
    Rotated { subject: String, family: Uuid },
    /// It had been used before: the whole family is now revoked.
    Reused { family: Uuid },
    /// Unknown, expired or revoked.
    Invalid,
}

/// The successor of a refresh token, stored in the same transaction that
/// marks its predecessor used.
pub struct NextRefresh {
    pub hash: String,
    pub expires_at: DateTime<Utc>,
}

fn field(name: &str, message: &str) -> FieldError {
    FieldError {
        field: name.into(),
        message: message.into(),
    }
}

/// Collect every field error of a request at once, so a client fixes all of
/// them in one round.
pub fn validate<A, B, C>(
    a: Result<A, FieldError>,
    b: Result<B, FieldError>,
    c: Result<C, FieldError>,
) -> Result<(A, B, C), Problem> {
    match (a, b, c) {
        (Ok(a), Ok(b), Ok(c)) => Ok((a, b, c)),
        (a, b, c) => Err(Problem::invalid_fields(
            [a.err(), b.err(), c.err()].into_iter().flatten().collect(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            Email::parse(" Ana@Example.COM ").unwrap().as_str(),
            "ana@example.com"
        );
        for bad in [
            "",
            "ana",
            "ana@",
            "@x.com",
            "ana@x",
            "a b@x.com",
            "ana@.com",
            "a@b@c.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn weak_passwords_are_refused() {
        assert!(Password::parse("short").is_err());
        assert!(Password::parse("aaaaaaaaaaaa").is_err());
        assert!(Password::parse("correct horse battery").is_ok());
    }

    #[test]
    fn validation_reports_every_field() {
        let problem = validate(
            Email::parse("x"),
            Password::parse("y"),
            DisplayName::parse("ok"),
        )
        .unwrap_err();
        assert_eq!(problem.errors.len(), 2);
    }
}
