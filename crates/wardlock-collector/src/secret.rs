//! Node keys, enrollment secrets and API tokens: 256 random bits shown once as hex, and
//! kept only as SHA-256 (they are random, so a plain hash is enough to make a stolen
//! database useless for authenticating).

use sha2::{Digest, Sha256};

use crate::store::Hash;

/// A fresh secret, hex.
pub fn generate() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)?;
    Ok(hex::encode(bytes))
}

pub fn hash(secret: &str) -> Hash {
    Sha256::digest(secret.trim().as_bytes()).into()
}
