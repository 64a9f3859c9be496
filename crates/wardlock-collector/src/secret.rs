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
    #[cfg(test)]
    pub fn from_bytes(key: [u8; 32]) -> DataKey {
        DataKey(zeroize::Zeroizing::new(key))
    }

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

const SEALED_PIN_PREFIX: &str = "sealed:v1:";

/// What a sealed PIN hash is bound to: its user, and being a PIN hash (it cannot pass for
/// another user's, nor for a TOTP seed, which is sealed to the user ID alone).
fn pin_context(user: &str) -> Vec<u8> {
    [b"wardlock-collector-pin-hash\0".as_slice(), user.as_bytes()].concat()
}

/// A PIN hash (PHC string) as the directory stores it: sealed with the data key.
pub fn seal_pin_hash(key: &DataKey, user: &str, phc: &str) -> Result<String, KeyError> {
    use base64::Engine as _;
    let sealed = key.seal(phc.as_bytes(), &pin_context(user))?;
    Ok(format!("{SEALED_PIN_PREFIX}{}", base64::engine::general_purpose::STANDARD.encode(sealed)))
}

/// The PHC string of a stored PIN hash; only to seal it again for a workstation (or to
/// compute what an admin grant binds). A plain hash is refused: since the start seals
/// every hash, one in the clear was written there by someone else.
pub fn open_pin_hash(
    key: &DataKey,
    user: &str,
    stored: &str,
) -> Result<zeroize::Zeroizing<String>, KeyError> {
    use base64::Engine as _;
    let sealed = stored
        .strip_prefix(SEALED_PIN_PREFIX)
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .ok_or(KeyError::Unseal)?;
    let opened = key.open(&sealed, &pin_context(user))?;
    String::from_utf8(opened.to_vec()).map(zeroize::Zeroizing::new).map_err(|_| KeyError::Unseal)
}

/// Whether a stored PIN hash is in the clear (a database of an earlier release).
pub fn is_plain_pin_hash(stored: &str) -> bool {
    !stored.starts_with(SEALED_PIN_PREFIX)
}

/// Seals the PIN hashes an earlier release stored in the clear; returns how many.
pub fn seal_plain_pin_hashes(
    store: &dyn crate::store::CollectorStore,
    key: &DataKey,
) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    let mut sealed = 0;
    for mut user in store.users()? {
        let Some(plain) = user.pin_sealed.as_deref().filter(|s| is_plain_pin_hash(s)) else { continue };
        let plain = zeroize::Zeroizing::new(plain.to_owned());
        user.pin_sealed = Some(seal_pin_hash(key, &user.id, &plain)?);
        store.put_user(&user, false, None)?;
        sealed += 1;
    }
    Ok(sealed)
}

/// What an admin grant for this user binds ([`wardlock_core::policy::admin_credential_digest`]),
/// from the credentials as stored; `None` when a stored secret does not open.
pub fn credential_digest(key: &DataKey, user: &crate::store::UserRecord) -> Option<String> {
    let phc = match &user.pin_sealed {
        Some(stored) => Some(open_pin_hash(key, &user.id, stored).ok()?),
        None => None,
    };
    let seed = match &user.totp_sealed {
        Some(sealed) => Some(key.open(sealed, user.id.as_bytes()).ok()?),
        None => None,
    };
    Some(wardlock_core::policy::admin_credential_digest(
        &user.id,
        phc.as_ref().map(|p| p.as_str()),
        seed.as_deref().map(|s| &s[..]),
    ))
}
