//! Signing keys and the secrets derived from them.
//!
//! The key ring holds every published key, newest last; tokens are signed
//! with the newest, and all of them stay in the JWKS so that tokens signed
//! before a rotation verify until they expire. Keys are persisted in the
//! store, so restarts and other instances sign with the same keys.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use jsonwebtoken::jwk::JwkSet;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::RwLock;
use zocalo_http::auth::TokenSigner;
use zocalo_store::StoreError;

use crate::domain::StoredKey;
use crate::store::AuthStore;

/// How many keys the JWKS keeps publishing after rotations.
const PUBLISHED_KEYS: usize = 3;

pub struct KeyRing {
    signers: RwLock<Vec<Arc<TokenSigner>>>,
}

impl KeyRing {
    /// Load the stored keys, creating the first one on a new install.
    pub async fn load(store: &dyn AuthStore) -> Result<Self, StoreError> {
        let mut keys = store.signing_keys().await?;
        if keys.is_empty() {
            keys.push(new_key(store).await?);
        }
        let signers = keys
            .iter()
            .rev()
            .take(PUBLISHED_KEYS)
            .rev()
            .map(|k| Arc::new(TokenSigner::from_seed(k.kid.clone(), &k.seed)))
            .collect();
        Ok(Self {
            signers: RwLock::new(signers),
        })
    }

    pub async fn current(&self) -> Arc<TokenSigner> {
        self.signers
            .read()
            .await
            .last()
            .cloned()
            .expect("the ring is never empty")
    }

    pub async fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: self
                .signers
                .read()
                .await
                .iter()
                .map(|s| s.jwk().clone())
                .collect(),
        }
    }

    /// Create and persist a new key and sign with it from now on.
    pub async fn rotate(&self, store: &dyn AuthStore) -> Result<String, StoreError> {
        let key = new_key(store).await?;
        let signer = Arc::new(TokenSigner::from_seed(key.kid.clone(), &key.seed));
        let mut signers = self.signers.write().await;
        signers.push(signer);
        if signers.len() > PUBLISHED_KEYS {
            signers.remove(0);
        }
        Ok(key.kid)
    }
}

async fn new_key(store: &dyn AuthStore) -> Result<StoredKey, StoreError> {
    let kid = format!("k{}", Utc::now().format("%Y%m%d%H%M%S%3f"));
    let (_, seed) = TokenSigner::generate(kid.clone());
    let key = StoredKey {
        kid,
        seed,
        created_at: Utc::now(),
    };
    store.add_signing_key(key.clone()).await?;
    Ok(key)
}

/// A high-entropy opaque secret (refresh tokens, client secrets).
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// How opaque secrets are stored: SHA-256 is enough for 256-bit random
/// values (no dictionary to attack), and lets us look them up by hash.
pub fn secret_hash(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
