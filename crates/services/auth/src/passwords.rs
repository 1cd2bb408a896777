//! Password hashing with argon2id (the crate's defaults: 19 MiB, 2 passes),
//! on the blocking pool so that a burst of logins never stalls the runtime.

use std::sync::OnceLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, SaltString};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use zocalo_http::Problem;

pub async fn hash(password: String) -> Result<String, Problem> {
    tokio::task::spawn_blocking(move || hash_blocking(&password))
        .await
        .map_err(Problem::internal)?
}

fn hash_blocking(password: &str) -> Result<String, Problem> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(Problem::internal)
}

/// Check `password` against `stored`; with `None` (no such account) check
/// against a fixed dummy hash so that the answer takes as long either way.
pub async fn verify(password: String, stored: Option<String>) -> Result<bool, Problem> {
    tokio::task::spawn_blocking(move || {
        let stored = match &stored {
            Some(hash) => hash.as_str(),
            None => dummy_hash(),
        };
        let parsed = PasswordHash::new(stored).map_err(Problem::internal)?;
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(matches && stored != dummy_hash())
    })
    .await
    .map_err(Problem::internal)?
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        hash_blocking(&crate::keys::random_secret()).expect("hashing a random password")
    })
}
