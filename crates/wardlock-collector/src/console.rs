//! The web console's accounts: the password rules (NIST SP 800-63B: a length floor and a
//! list of common and breached passwords, no composition rules), how an account's secrets
//! are sealed, and the console's pages, which the binary carries (`console/dist`).

use wardlock_core::console::{PASSWORD_MAX_CHARS, PASSWORD_MIN_CHARS};
use wardlock_core::secret::SecretString;
use wardlock_core::unlock::{self, PinHash, TotpSeed};

use crate::secret::{self, DataKey, KeyError};
use crate::store::{ConsoleAccount, Role};

/// Why a password is refused; each says what to choose instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("the password has {0} characters; it needs at least {PASSWORD_MIN_CHARS} (a few unrelated words are easy to remember)")]
    TooShort(usize),
    #[error("the password has {0} characters; at most {PASSWORD_MAX_CHARS}")]
    TooLong(usize),
    #[error("the password is on a list of common and breached passwords; choose another")]
    Breached,
    #[error("the password is too easy to guess ({0}); add another uncommon word or two")]
    Guessable(String),
}

/// Checks a new console password. The breached list is zxcvbn's (from published password
/// leaks); a password that is, or is built from, a few of its entries, the account's name
/// or "wardlock" is refused, as is one zxcvbn scores below 3 (about 10^8 guesses).
pub fn check_password(password: &SecretString, name: &str) -> Result<(), PasswordError> {
    let chars = password.expose().chars().count();
    if chars < PASSWORD_MIN_CHARS {
        return Err(PasswordError::TooShort(chars));
    }
    if chars > PASSWORD_MAX_CHARS {
        return Err(PasswordError::TooLong(chars));
    }
    let entropy = zxcvbn::zxcvbn(password.expose(), &[name, "wardlock", "console", "collector"]);
    let whole_password_listed = entropy.sequence().iter().any(|m| {
        m.i == 0
            && m.j + 1 >= chars
            && matches!(
                &m.pattern,
                // zxcvbn does not export the dictionaries' type; its name is all there is.
                zxcvbn::matching::patterns::MatchPattern::Dictionary(d)
                    if format!("{:?}", d.dictionary_name) == "Passwords"
            )
    });
    if whole_password_listed {
        return Err(PasswordError::Breached);
    }
    if entropy.score() < zxcvbn::Score::Three {
        let why = entropy
            .feedback()
            .and_then(|f| f.warning())
            .map(|w| w.to_string())
            .unwrap_or_else(|| "it follows a common pattern".to_owned());
        return Err(PasswordError::Guessable(why));
    }
    Ok(())
}

fn password_context(name: &str) -> String {
    // A directory user ID cannot hold a NUL, so this never names a directory user's hash.
    format!("console\0{name}")
}

fn totp_context(name: &str) -> Vec<u8> {
    [b"wardlock-console-totp\0".as_slice(), name.as_bytes()].concat()
}

/// A new account's sealed record and its TOTP seed (for the enrolment URI, shown once).
pub fn new_account(
    key: &DataKey,
    name: &str,
    role: Role,
    password: &SecretString,
) -> Result<(ConsoleAccount, TotpSeed), NewAccountError> {
    check_password(password, name)?;
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| NewAccountError::Random(e.to_string()))?;
    let hash = unlock::hash_pin(password, &salt).map_err(|e| NewAccountError::Hash(e.to_string()))?;
    let mut seed = zeroize::Zeroizing::new(vec![0u8; 20]);
    getrandom::getrandom(&mut seed).map_err(|e| NewAccountError::Random(e.to_string()))?;
    let seed = TotpSeed::new(seed.to_vec()).map_err(|e| NewAccountError::Hash(e.to_string()))?;
    let account = ConsoleAccount {
        name: name.to_owned(),
        role,
        password_sealed: secret::seal_pin_hash(key, &password_context(name), hash.as_phc())?,
        totp_sealed: key.seal(seed.expose(), &totp_context(name))?,
        auth_state: serde_json::to_string(&unlock::UserAuthState::default())
            .map_err(|e| NewAccountError::Hash(e.to_string()))?,
        disabled: false,
    };
    Ok((account, seed))
}

#[derive(Debug, thiserror::Error)]
pub enum NewAccountError {
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error("sealing the account's secrets: {0}")]
    Seal(#[from] KeyError),
    #[error("no randomness: {0}")]
    Random(String),
    #[error("hashing the password: {0}")]
    Hash(String),
}

/// An account's password hash and TOTP seed, opened; `None` if a sealed secret does not
/// open (another data key, or an edited row): such an account cannot sign in.
pub fn open_secrets(key: &DataKey, account: &ConsoleAccount) -> Option<(PinHash, TotpSeed)> {
    let phc = secret::open_pin_hash(key, &password_context(&account.name), &account.password_sealed).ok()?;
    let hash = PinHash::from_phc(phc.to_string()).ok()?;
    let seed = key.open(&account.totp_sealed, &totp_context(&account.name)).ok()?;
    Some((hash, TotpSeed::new(seed.to_vec()).ok()?))
}

/// The `otpauth://` URI an authenticator app scans for the account.
pub fn totp_uri(seed: &TotpSeed, name: &str) -> Result<String, unlock::UnlockError> {
    let policy =
        wardlock_core::console::sign_in_policy().map_err(|e| unlock::UnlockError::Totp(e.to_string()))?;
    unlock::totp_uri(&policy.totp, seed, &format!("{name}@console"))
}

/// The console's built pages (`console/dist`, made by `make console`). A binary built
/// without them serves a page that says how to build them.
#[derive(Debug, rust_embed::RustEmbed)]
#[folder = "../../console/dist"]
#[allow_missing = true]
pub struct Assets;

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(password: &str) -> Option<PasswordError> {
        check_password(&SecretString::new(password), "privacy.officer").err()
    }

    #[test]
    fn short_listed_and_guessable_passwords_are_refused_and_long_uncommon_ones_pass() {
        assert_eq!(refused("short pass"), Some(PasswordError::TooShort(10)));
        assert!(matches!(refused(&"x".repeat(257)), Some(PasswordError::TooLong(257))));
        // On the breached list, long enough, and refused for it.
        assert_eq!(refused("thecakeisalie"), Some(PasswordError::Breached));
        assert_eq!(refused("TheCakeIsALie"), Some(PasswordError::Breached), "capitals do not hide it");
        assert!(matches!(
            refused("password1234"),
            Some(PasswordError::Breached | PasswordError::Guessable(_))
        ));
        assert!(refused("privacy.officer1").is_some(), "the account's own name is guessable");
        assert!(matches!(refused("aaaaaaaaaaaaaaaa"), Some(PasswordError::Guessable(_))));
        assert_eq!(refused("tangerine kettle orbit sparrow"), None);
        assert_eq!(refused("Wx7#qPz!4mLs9@"), None);
    }

    #[test]
    fn an_accounts_secrets_are_sealed_to_it_and_open_only_for_it() {
        let key = DataKey::from_bytes([9; 32]);
        let password = SecretString::new("tangerine kettle orbit sparrow");
        let (account, seed) = new_account(&key, "alice", Role::Auditor, &password).expect("account");
        assert!(!account.password_sealed.contains("argon2"), "the hash is sealed, not in the clear");
        let (hash, opened) = open_secrets(&key, &account).expect("opens");
        assert!(unlock::verify_pin(&password, &hash));
        assert_eq!(opened.expose(), seed.expose());
        // Moved onto another name, the sealed secrets do not open.
        let moved = ConsoleAccount { name: "mallory".into(), ..account.clone() };
        assert!(open_secrets(&key, &moved).is_none());
        assert!(open_secrets(&DataKey::from_bytes([8; 32]), &account).is_none());
        assert!(totp_uri(&seed, "alice").expect("uri").starts_with("otpauth://totp/"));
    }
}
