//! Central policies signed by IT with Ed25519, so neither a person at the workstation nor
//! a compromised collector can weaken them.
//!
//! The signature covers the exact bytes of the body (carried base64-encoded), so no
//! canonical re-encoding is needed to verify it.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePublicKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock::UtcMillis;

pub const SIGNED_POLICY_FORMAT: &str = "wardlock-signed-policy/v1";
/// Domain separation: a signature made for anything else never verifies as a policy.
const SIGNING_CONTEXT: &[u8] = b"wardlock-policy-v1\n";

/// What IT signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedPolicyBody {
    /// Increases with every policy IT issues; a workstation refuses one not newer than
    /// the one it applies (a replayed, stale policy).
    pub serial: u64,
    pub issued_at: UtcMillis,
    /// The workstation group the policy is for; `None` for every group.
    pub group: Option<String>,
    /// The policy document, TOML.
    pub policy: String,
}

/// The envelope as stored in a file and served by the collector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignedPolicy {
    pub format: String,
    /// Fingerprint of the signing key (see [`key_id`]), to say which key was used.
    pub key_id: String,
    /// The body's JSON bytes, base64.
    pub body: String,
    /// Ed25519 signature over the context string and the body bytes, base64.
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("not a signed Wardlock policy: {0}")]
    Malformed(String),
    #[error("signed by key {key_id}, which this workstation does not trust; add its public key to sync.trusted_keys in the machine policy")]
    UntrustedKey { key_id: String },
    #[error(
        "the signature does not match the policy: it was altered after signing, or signed by another key"
    )]
    BadSignature,
    #[error("not a usable Ed25519 public key: {0}")]
    BadKey(String),
}

/// Short, stable fingerprint of a public key: the first 16 hex digits of SHA-256 over
/// its 32 bytes.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// Reads a public key written as PEM (SubjectPublicKeyInfo) or as base64 of the 32 raw bytes.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, SignatureError> {
    let text = text.trim();
    if text.starts_with("-----BEGIN") {
        return VerifyingKey::from_public_key_pem(text).map_err(|e| SignatureError::BadKey(e.to_string()));
    }
    let bytes = B64.decode(text).map_err(|e| SignatureError::BadKey(e.to_string()))?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| SignatureError::BadKey("expected 32 bytes".into()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| SignatureError::BadKey(e.to_string()))
}

pub fn public_key_pem(key: &VerifyingKey) -> String {
    key.to_public_key_pem(Default::default()).unwrap_or_default()
}

impl SignedPolicy {
    pub fn sign(body: &SignedPolicyBody, key: &SigningKey) -> SignedPolicy {
        Self::sign_bytes(
            SIGNED_POLICY_FORMAT,
            SIGNING_CONTEXT,
            &serde_json::to_vec(body).unwrap_or_default(),
            key,
        )
    }

    fn sign_bytes(format: &str, context: &[u8], body_bytes: &[u8], key: &SigningKey) -> SignedPolicy {
        let signature = key.sign(&[context, body_bytes].concat());
        SignedPolicy {
            format: format.to_owned(),
            key_id: key_id(&key.verifying_key()),
            body: B64.encode(body_bytes),
            signature: B64.encode(signature.to_bytes()),
        }
    }

    pub fn from_json(text: &str) -> Result<SignedPolicy, SignatureError> {
        let envelope: SignedPolicy =
            serde_json::from_str(text).map_err(|e| SignatureError::Malformed(e.to_string()))?;
        if envelope.format != SIGNED_POLICY_FORMAT {
            return Err(SignatureError::Malformed(format!(
                "format is {:?}, expected {SIGNED_POLICY_FORMAT:?}",
                envelope.format
            )));
        }
        Ok(envelope)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The body's claims (serial, group) *without* checking the signature: for routing
    /// and ordering at the collector only. Whatever applies a policy uses [`Self::verify`].
    pub fn unverified_body(&self) -> Result<SignedPolicyBody, SignatureError> {
        let body_bytes = B64.decode(&self.body).map_err(|e| SignatureError::Malformed(e.to_string()))?;
        serde_json::from_slice(&body_bytes).map_err(|e| SignatureError::Malformed(e.to_string()))
    }

    /// Checks the signature against the trusted keys and returns the body. The body is
    /// parsed only after its signature verified.
    pub fn verify(&self, trusted: &[VerifyingKey]) -> Result<SignedPolicyBody, SignatureError> {
        let body_bytes = self.verified_bytes(SIGNING_CONTEXT, trusted)?;
        serde_json::from_slice(&body_bytes).map_err(|e| SignatureError::Malformed(e.to_string()))
    }

    fn verified_bytes(&self, context: &[u8], trusted: &[VerifyingKey]) -> Result<Vec<u8>, SignatureError> {
        let key = trusted
            .iter()
            .find(|k| key_id(k) == self.key_id)
            .ok_or_else(|| SignatureError::UntrustedKey { key_id: self.key_id.clone() })?;
        let body_bytes = B64.decode(&self.body).map_err(|_| SignatureError::BadSignature)?;
        let signature_bytes = B64.decode(&self.signature).map_err(|_| SignatureError::BadSignature)?;
        let signature = Signature::from_slice(&signature_bytes).map_err(|_| SignatureError::BadSignature)?;
        key.verify(&[context, &body_bytes].concat(), &signature).map_err(|_| SignatureError::BadSignature)?;
        Ok(body_bytes)
    }
}

pub const ADMIN_GRANT_FORMAT: &str = "wardlock-admin-grant/v2";
/// Domain separation from policies (and from the first grants, which bound no
/// credential): a signed policy never verifies as a grant.
const GRANT_CONTEXT: &[u8] = b"wardlock-admin-grant-v2\n";

/// IT's word that a directory user may act as an administrator at workstations (quit the
/// guard, enroll clinicians) **with these credentials**, until `expires`. Without it a
/// collector alone can never make one: a workstation takes the `admin` role of a
/// directory user only with a grant signed by one of its `sync.trusted_keys`, and takes
/// an administrator's PIN hash and TOTP seed only while they match `credential`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminGrant {
    pub user: String,
    pub issued_at: UtcMillis,
    pub expires: UtcMillis,
    /// Grows with each grant for this user: a workstation refuses one older than the
    /// newest it has taken, so an old grant (an old PIN) cannot be replayed.
    pub serial: u64,
    /// [`admin_credential_digest`] of the PIN hash and TOTP seed granted.
    pub credential: String,
}

/// What an admin grant binds: SHA-256 over the user ID, the PIN hash (its PHC string,
/// salt included) and the TOTP seed, each length-prefixed, hex. Reveals nothing a PIN
/// guess could be checked against without the PHC string itself.
pub fn admin_credential_digest(user: &str, pin_phc: Option<&str>, totp_seed: Option<&[u8]>) -> String {
    let mut digest = Sha256::new();
    digest.update(b"wardlock-admin-credential-v1\0");
    let mut part = |tag: u8, bytes: Option<&[u8]>| {
        digest.update([tag, u8::from(bytes.is_some())]);
        let bytes = bytes.unwrap_or_default();
        digest.update((bytes.len() as u64).to_be_bytes());
        digest.update(bytes);
    };
    part(b'u', Some(user.as_bytes()));
    part(b'p', pin_phc.map(str::as_bytes));
    part(b't', totp_seed);
    hex::encode(digest.finalize())
}

/// Why a verified grant does not make its user an administrator now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantRefusal {
    #[error("the directory's PIN hash or TOTP seed is not the one IT granted the role to")]
    CredentialChanged,
    #[error("the grant expired at {0}")]
    Expired(String),
    #[error("grant serial {serial} is older than serial {newest} already taken here")]
    Replayed { serial: u64, newest: u64 },
}

impl AdminGrant {
    /// Whether this (verified) grant makes its user an administrator at `now` with the
    /// credentials whose digest is `credential`, on a workstation that took serial
    /// `newest` last.
    pub fn holds(&self, credential: &str, newest: Option<u64>, now: UtcMillis) -> Result<(), GrantRefusal> {
        use subtle::ConstantTimeEq;
        if !bool::from(self.credential.as_bytes().ct_eq(credential.as_bytes())) {
            return Err(GrantRefusal::CredentialChanged);
        }
        if self.expires <= now {
            return Err(GrantRefusal::Expired(self.expires.to_rfc3339()));
        }
        match newest {
            Some(newest) if self.serial < newest => {
                Err(GrantRefusal::Replayed { serial: self.serial, newest })
            }
            _ => Ok(()),
        }
    }
}

impl AdminGrant {
    /// The grant signed, as the JSON envelope the directory carries.
    pub fn sign(&self, key: &SigningKey) -> String {
        let body = serde_json::to_vec(self).unwrap_or_default();
        SignedPolicy::sign_bytes(ADMIN_GRANT_FORMAT, GRANT_CONTEXT, &body, key).to_json()
    }

    /// The grant in `envelope`, if a trusted key signed it for `user`.
    pub fn verify(
        envelope: &str,
        user: &str,
        trusted: &[VerifyingKey],
    ) -> Result<AdminGrant, SignatureError> {
        let signed: SignedPolicy =
            serde_json::from_str(envelope).map_err(|e| SignatureError::Malformed(e.to_string()))?;
        if signed.format != ADMIN_GRANT_FORMAT {
            return Err(SignatureError::Malformed(format!(
                "format is {:?}, expected {ADMIN_GRANT_FORMAT:?}",
                signed.format
            )));
        }
        let body = signed.verified_bytes(GRANT_CONTEXT, trusted)?;
        let grant: AdminGrant =
            serde_json::from_slice(&body).map_err(|e| SignatureError::Malformed(e.to_string()))?;
        if grant.user != user {
            return Err(SignatureError::Malformed(format!(
                "the grant is for {:?}, not {user:?}",
                grant.user
            )));
        }
        Ok(grant)
    }

    /// Who a grant names, without checking it (the collector stores it for that user).
    pub fn unverified_user(envelope: &str) -> Option<String> {
        let signed: SignedPolicy = serde_json::from_str(envelope).ok()?;
        let body = B64.decode(&signed.body).ok()?;
        (signed.format == ADMIN_GRANT_FORMAT).then_some(())?;
        serde_json::from_slice::<AdminGrant>(&body).ok().map(|g| g.user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> SignedPolicyBody {
        SignedPolicyBody {
            serial: 7,
            issued_at: UtcMillis::from_unix_millis(1_795_000_000_000),
            group: Some("icu".into()),
            policy: "[lock]\nidle_timeout = \"2m\"\n".into(),
        }
    }

    #[test]
    fn signed_policy_verifies_with_its_key_and_not_another() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]);
        let signed = SignedPolicy::sign(&body(), &key);
        assert_eq!(signed.verify(&[key.verifying_key()]).unwrap(), body());
        assert!(matches!(signed.verify(&[other.verifying_key()]), Err(SignatureError::UntrustedKey { .. })));

        // Another key claiming the trusted key's id still fails on the signature.
        let mut forged = SignedPolicy::sign(&body(), &other);
        forged.key_id = key_id(&key.verifying_key());
        assert_eq!(forged.verify(&[key.verifying_key()]), Err(SignatureError::BadSignature));
    }

    #[test]
    fn any_changed_byte_of_the_body_fails() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let signed = SignedPolicy::sign(&body(), &key);
        let mut bytes = B64.decode(&signed.body).unwrap();
        for i in 0..bytes.len() {
            bytes[i] ^= 1;
            let tampered = SignedPolicy { body: B64.encode(&bytes), ..signed.clone() };
            assert_eq!(
                tampered.verify(&[key.verifying_key()]),
                Err(SignatureError::BadSignature),
                "byte {i}"
            );
            bytes[i] ^= 1;
        }
    }

    #[test]
    fn an_admin_grant_verifies_only_for_its_user_with_a_trusted_key_and_is_no_policy() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]);
        let grant = AdminGrant {
            user: "it.admin".into(),
            issued_at: UtcMillis::from_unix_millis(1),
            expires: UtcMillis::from_unix_millis(1_000),
            serial: 5,
            credential: admin_credential_digest("it.admin", Some("$argon2id$x"), None),
        };
        let signed = grant.sign(&key);
        assert_eq!(AdminGrant::verify(&signed, "it.admin", &[key.verifying_key()]).unwrap(), grant);
        assert!(AdminGrant::verify(&signed, "n.nurse", &[key.verifying_key()]).is_err(), "another user");
        assert!(matches!(
            AdminGrant::verify(&signed, "it.admin", &[other.verifying_key()]),
            Err(SignatureError::UntrustedKey { .. })
        ));
        assert_eq!(AdminGrant::unverified_user(&signed).as_deref(), Some("it.admin"));
        // A policy signature is not a grant, nor the other way round.
        let policy = SignedPolicy::sign(&body(), &key);
        let as_grant = SignedPolicy { format: ADMIN_GRANT_FORMAT.into(), ..policy };
        assert!(AdminGrant::verify(&as_grant.to_json(), "it.admin", &[key.verifying_key()]).is_err());
        let as_policy =
            SignedPolicy { format: SIGNED_POLICY_FORMAT.into(), ..serde_json::from_str(&signed).unwrap() };
        assert_eq!(as_policy.verify(&[key.verifying_key()]), Err(SignatureError::BadSignature));
    }

    #[test]
    fn an_admin_grant_holds_only_for_the_granted_credentials_before_it_expires_and_never_rolled_back() {
        let at = UtcMillis::from_unix_millis;
        let granted = admin_credential_digest("it.admin", Some("$argon2id$v=19$a"), Some(&[1; 20]));
        let grant = AdminGrant {
            user: "it.admin".into(),
            issued_at: at(0),
            expires: at(100),
            serial: 7,
            credential: granted.clone(),
        };
        assert_eq!(grant.holds(&granted, None, at(50)), Ok(()));
        assert_eq!(grant.holds(&granted, Some(7), at(50)), Ok(()));
        for other in [
            admin_credential_digest("it.admin", Some("$argon2id$v=19$b"), Some(&[1; 20])),
            admin_credential_digest("it.admin", Some("$argon2id$v=19$a"), Some(&[2; 20])),
            admin_credential_digest("it.admin", Some("$argon2id$v=19$a"), None),
            admin_credential_digest("other", Some("$argon2id$v=19$a"), Some(&[1; 20])),
        ] {
            assert_eq!(grant.holds(&other, None, at(50)), Err(GrantRefusal::CredentialChanged));
        }
        assert!(matches!(grant.holds(&granted, None, at(100)), Err(GrantRefusal::Expired(_))));
        assert_eq!(
            grant.holds(&granted, Some(8), at(50)),
            Err(GrantRefusal::Replayed { serial: 7, newest: 8 })
        );
        // Parts cannot slide into each other.
        assert_ne!(admin_credential_digest("a", Some("b"), None), admin_credential_digest("ab", None, None));
    }

    #[test]
    fn public_keys_parse_from_pem_and_base64() {
        let key = SigningKey::from_bytes(&[9; 32]).verifying_key();
        assert_eq!(parse_public_key(&public_key_pem(&key)).unwrap(), key);
        assert_eq!(parse_public_key(&B64.encode(key.as_bytes())).unwrap(), key);
        assert!(parse_public_key("not a key").is_err());
    }
}
