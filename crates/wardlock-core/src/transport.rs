//! Secrets in transit from the collector to one workstation (TOTP seeds in the
//! directory): HPKE (RFC 9180) base mode, X25519 + HKDF-SHA256 + ChaCha20-Poly1305,
//! to the workstation's own transport key. The collector's TLS protects the channel;
//! this keeps a seed readable by its one workstation only, even in logs or proxies.
//!
//! No randomness of its own: the caller brings the key material and the RNG.

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

type Kem = X25519HkdfSha256;
const INFO: &[u8] = b"wardlock directory secret v1";
const ENCAPPED_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("not a transport public key (32 bytes of X25519)")]
    BadPublicKey,
    #[error("a sealed directory secret did not open: wrong workstation key, or altered in transit")]
    Open,
    #[error("sealing failed: {0}")]
    Seal(String),
}

/// A workstation's transport key pair from 32 random bytes: (secret, public).
pub fn keypair(ikm: &[u8; 32]) -> (Zeroizing<Vec<u8>>, [u8; 32]) {
    let (secret, public) = Kem::derive_keypair(ikm);
    let mut public_bytes = [0u8; 32];
    public_bytes.copy_from_slice(&public.to_bytes());
    (Zeroizing::new(secret.to_bytes().to_vec()), public_bytes)
}

/// Seals `plaintext` to `recipient` (its public key), bound to `aad` (the user ID).
/// Output: encapsulated key ‖ ciphertext.
pub fn seal<R: CryptoRng + RngCore>(
    recipient: &[u8],
    plaintext: &[u8],
    aad: &[u8],
    rng: &mut R,
) -> Result<Vec<u8>, TransportError> {
    let public =
        <Kem as hpke::Kem>::PublicKey::from_bytes(recipient).map_err(|_| TransportError::BadPublicKey)?;
    let (encapped, ciphertext) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Kem, R>(
        &OpModeS::Base,
        &public,
        INFO,
        plaintext,
        aad,
        rng,
    )
    .map_err(|e| TransportError::Seal(e.to_string()))?;
    Ok([&encapped.to_bytes()[..], &ciphertext].concat())
}

pub fn open(secret: &[u8], sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, TransportError> {
    if sealed.len() < ENCAPPED_LEN {
        return Err(TransportError::Open);
    }
    let private = <Kem as hpke::Kem>::PrivateKey::from_bytes(secret).map_err(|_| TransportError::Open)?;
    let (encapped, ciphertext) = sealed.split_at(ENCAPPED_LEN);
    let encapped = <Kem as hpke::Kem>::EncappedKey::from_bytes(encapped).map_err(|_| TransportError::Open)?;
    hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(
        &OpModeR::Base,
        &private,
        &encapped,
        INFO,
        ciphertext,
        aad,
    )
    .map(Zeroizing::new)
    .map_err(|_| TransportError::Open)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic bytes for tests only.
    struct TestRng(u64);
    impl RngCore for TestRng {
        fn next_u32(&mut self) -> u32 {
            self.next_u64() as u32
        }
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            self.0
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for b in dest {
                *b = self.next_u64() as u8;
            }
        }
    }
    impl CryptoRng for TestRng {}

    #[test]
    fn only_the_right_workstation_opens_and_only_for_the_right_user() {
        let (secret, public) = keypair(&[1; 32]);
        let (other_secret, _) = keypair(&[2; 32]);
        let sealed = seal(&public, b"seed bytes", b"n.nurse", &mut TestRng(7)).unwrap();
        assert_eq!(&open(&secret, &sealed, b"n.nurse").unwrap()[..], b"seed bytes");
        assert_eq!(open(&other_secret, &sealed, b"n.nurse"), Err(TransportError::Open));
        assert_eq!(open(&secret, &sealed, b"d.doctor"), Err(TransportError::Open), "moved to another user");
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(open(&secret, &altered, b"n.nurse"), Err(TransportError::Open));
        assert_eq!(seal(&[0; 5], b"x", b"y", &mut TestRng(1)), Err(TransportError::BadPublicKey));
    }
}
