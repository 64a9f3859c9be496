//! Node keys, enrollment secrets and API tokens: 256 random bits shown once as hex, and
//! kept only as SHA-256 (they are random, so a plain hash is enough to make a stolen
//! database useless for authenticating).

use sha2::{Digest, Sha256};
use wardlock_core::sealing;

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

/// The collector's data key: seals TOTP seeds at rest (XChaCha20-Poly1305, bound to the
/// user ID), so a copy of the database alone reveals none. Kept in its own file (0600).
pub struct DataKey(zeroize::Zeroizing<[u8; 32]>);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {why}")]
    File { path: String, why: String },
    #[error("a sealed secret did not open: wrong data key, or the database was altered")]
    Unseal,
}

impl DataKey {
    /// Loads the key; `Ok(None)` when the file does not exist.
    pub fn open_file(path: &std::path::Path) -> Result<Option<DataKey>, KeyError> {
        use base64::Engine as _;
        let err = |why: String| KeyError::File { path: path.display().to_string(), why };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes = zeroize::Zeroizing::new(
                    base64::engine::general_purpose::STANDARD
                        .decode(text.trim())
                        .map_err(|e| err(e.to_string()))?,
                );
                let key: [u8; 32] = bytes[..].try_into().map_err(|_| err("not a 32-byte key".into()))?;
                Ok(Some(DataKey(zeroize::Zeroizing::new(key))))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// A new key as its file holds it (base64), for `systemd-creds encrypt` to take from
    /// a pipe: it never lies on a disk in the clear.
    pub fn new_encoded() -> Result<zeroize::Zeroizing<String>, KeyError> {
        let key = Self::random().map_err(|why| KeyError::File { path: "-".into(), why })?;
        Ok(Self::encode(&key))
    }

    fn random() -> Result<zeroize::Zeroizing<[u8; 32]>, String> {
        let mut key = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::getrandom(&mut key[..]).map_err(|e| e.to_string())?;
        Ok(key)
    }

    fn encode(key: &[u8; 32]) -> zeroize::Zeroizing<String> {
        use base64::Engine as _;
        zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&key[..]))
    }

    /// Makes a new key in a file that must not exist yet (owner-only, synced).
    pub fn create_file(path: &std::path::Path) -> Result<DataKey, KeyError> {
        let err = |why: String| KeyError::File { path: path.display().to_string(), why };
        let key = Self::random().map_err(err)?;
        let text = Self::encode(&key);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(|e| err(e.to_string()))?;
        std::io::Write::write_all(&mut file, text.as_bytes()).map_err(|e| err(e.to_string()))?;
        file.sync_all().map_err(|e| err(e.to_string()))?;
        Ok(DataKey(key))
    }

    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut nonce = [0u8; sealing::NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(|_| KeyError::Unseal)?;
        Ok(sealing::seal(&self.0, &nonce, plaintext, context))
    }

    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>, KeyError> {
        sealing::open(&self.0, sealed, context).map_err(|_| KeyError::Unseal)
    }
}
