//! Secrets typed by the user (PINs, TOTP codes): never printed, wiped when dropped.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

/// A secret string. `Debug` and `Display` never show it; its memory is zeroed on drop.
/// It serialises as the plain string because the local protocol must carry it to
/// `wardlockd`; nothing else should ever serialise one.
#[derive(Clone, Default, Zeroize)]
#[zeroize(drop)]
pub struct SecretString(String);

/// Constant-time, so comparing secrets never leaks how much of them matched.
impl PartialEq for SecretString {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for SecretString {}

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Callers must not log, store or format it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Zeroizing<String>> for SecretString {
    fn from(value: Zeroizing<String>) -> Self {
        Self(value.as_str().to_owned())
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

impl Serialize for SecretString {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(SecretString)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equality_compares_whole_values() {
        assert_eq!(SecretString::new("482916"), SecretString::new("482916"));
        assert_ne!(SecretString::new("482916"), SecretString::new("482917"));
        assert_ne!(SecretString::new("4829"), SecretString::new("482916"));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let s = SecretString::new("482916");
        assert!(!format!("{s:?}").contains("482916"));
    }
}
