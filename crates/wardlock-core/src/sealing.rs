//! Secrets at rest: XChaCha20-Poly1305 with a random 192-bit nonce, bound to a context
//! (the user ID, so a sealed value copied onto another row does not open there).
//! Output: nonce ‖ ciphertext. The caller brings the nonce (the core has no randomness).

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

pub const NONCE_LEN: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a sealed secret could not be opened: the key is wrong or the sealed value was altered")]
pub struct Unseal;

pub fn seal(key: &[u8; 32], nonce: &[u8; NONCE_LEN], plaintext: &[u8], context: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.into());
    // Encryption fails only for inputs beyond 256 GiB.
    let ciphertext = cipher
        .encrypt(XNonce::from_slice(nonce), Payload { msg: plaintext, aad: context })
        .unwrap_or_default();
    [&nonce[..], &ciphertext].concat()
}

pub fn open(key: &[u8; 32], sealed: &[u8], context: &[u8]) -> Result<Zeroizing<Vec<u8>>, Unseal> {
    if sealed.len() < NONCE_LEN {
        return Err(Unseal);
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    XChaCha20Poly1305::new(key.into())
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: context })
        .map(Zeroizing::new)
        .map_err(|_| Unseal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_with_its_key_and_context_only() {
        let sealed = seal(&[1; 32], &[2; 24], b"seed", b"n.nurse");
        assert_eq!(&open(&[1; 32], &sealed, b"n.nurse").unwrap()[..], b"seed");
        assert_eq!(open(&[9; 32], &sealed, b"n.nurse"), Err(Unseal));
        assert_eq!(open(&[1; 32], &sealed, b"d.doctor"), Err(Unseal));
        assert_eq!(open(&[1; 32], &sealed[..10], b"n.nurse"), Err(Unseal));
    }
}
