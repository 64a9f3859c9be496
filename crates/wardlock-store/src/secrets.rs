//! Keys kept apart from the database: the data key that seals TOTP seeds at rest and,
//! later, the collector node key.
//!
//! One [`SecretStore`] trait hides where they live: the OS key store through `keyring`
//! (Windows Credential Manager, macOS keychain, Linux keyutils), or on Linux a credential
//! file readable by the service account only, sealed with `systemd-creds` where the
//! machine has it. A missing or wrong key is an error, never a reason to make a new one:
//! a new key would silently orphan every sealed seed.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use wardlock_core::sealing;
use zeroize::Zeroizing;

use crate::private_fs;
use crate::store::{Store, StoreError};

/// Name of the key that seals TOTP seeds.
pub const DATA_KEY: &str = "wardlock-data-key";
const KEY_CHECK_META: &str = "data_key_check";
const KEY_CHECK_PLAINTEXT: &[u8] = b"wardlock data key check v1";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{backend}: {message}")]
    Backend { backend: String, message: String },
    #[error(
        "the data key that protects TOTP secrets is missing from {backend}, but {db} has secrets sealed with it. \
         Restore the key from backup; if it is lost, re-enroll TOTP for every user (a new key is not made silently)"
    )]
    MissingKey { backend: String, db: PathBuf },
    #[error("the data key in {backend} is not the one {db} was sealed with; point Wardlock at the right key store or restore the right key")]
    WrongKey { backend: String, db: PathBuf },
    #[error("a sealed secret could not be opened: the data key is wrong or the sealed value was altered")]
    Unseal,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Somewhere to keep small secrets by name.
pub trait SecretStore: fmt::Debug + Send + Sync {
    /// Where the secrets are, for messages ("credential file /etc/wardlock/credentials").
    fn describe(&self) -> String;
    fn load(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, SecretError>;
    fn save(&self, name: &str, value: &[u8]) -> Result<(), SecretError>;
}

/// In-memory store for unit tests.
#[derive(Debug, Default)]
pub struct MemorySecretStore {
    secrets: Mutex<HashMap<String, Zeroizing<Vec<u8>>>>,
}

impl SecretStore for MemorySecretStore {
    fn describe(&self) -> String {
        "in-memory test store".into()
    }
    fn load(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, SecretError> {
        Ok(self.secrets.lock().map_err(|_| poisoned())?.get(name).cloned())
    }
    fn save(&self, name: &str, value: &[u8]) -> Result<(), SecretError> {
        self.secrets.lock().map_err(|_| poisoned())?.insert(name.to_owned(), Zeroizing::new(value.to_vec()));
        Ok(())
    }
}

fn poisoned() -> SecretError {
    SecretError::Backend { backend: "memory".into(), message: "lock poisoned".into() }
}

/// The OS key store through the `keyring` crate. On Linux that is keyutils: kernel
/// memory, gone at reboot, so there it only suits a cache; the credential file is the
/// Linux default.
#[derive(Debug)]
pub struct KeyringSecretStore {
    service: String,
}

impl KeyringSecretStore {
    pub fn new(service: impl Into<String>) -> Self {
        Self { service: service.into() }
    }

    fn entry(&self, name: &str) -> Result<keyring::Entry, SecretError> {
        keyring::Entry::new(&self.service, name).map_err(|e| self.error(e))
    }

    fn error(&self, e: keyring::Error) -> SecretError {
        SecretError::Backend { backend: self.describe(), message: e.to_string() }
    }
}

impl SecretStore for KeyringSecretStore {
    fn describe(&self) -> String {
        format!("OS key store (service {:?})", self.service)
    }
    fn load(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, SecretError> {
        match self.entry(name)?.get_secret() {
            Ok(secret) => Ok(Some(Zeroizing::new(secret))),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(self.error(e)),
        }
    }
    fn save(&self, name: &str, value: &[u8]) -> Result<(), SecretError> {
        self.entry(name)?.set_secret(value).map_err(|e| self.error(e))
    }
}

/// How a credential file is protected beyond its permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealing {
    /// `systemd-creds encrypt` (TPM2 and/or the host key).
    SystemdCreds,
    /// File permissions only (0600 in a 0700 directory).
    None,
}

/// Credential files in a directory only the service account can read.
#[derive(Debug)]
pub struct CredentialFileStore {
    dir: PathBuf,
    sealing: Sealing,
}

impl CredentialFileStore {
    pub fn new(dir: impl Into<PathBuf>, sealing: Sealing) -> Self {
        Self { dir: dir.into(), sealing }
    }

    /// Seals with `systemd-creds` when it works on this machine, else relies on permissions.
    pub fn with_best_sealing(dir: impl Into<PathBuf>) -> Self {
        let sealing = if systemd_creds_available() { Sealing::SystemdCreds } else { Sealing::None };
        Self::new(dir, sealing)
    }

    pub fn sealing(&self) -> Sealing {
        self.sealing
    }

    fn sealed_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.cred"))
    }

    fn plain_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }

    fn error(&self, message: impl fmt::Display) -> SecretError {
        SecretError::Backend { backend: self.describe(), message: message.to_string() }
    }
}

impl SecretStore for CredentialFileStore {
    fn describe(&self) -> String {
        let how = match self.sealing {
            Sealing::SystemdCreds => "sealed with systemd-creds",
            Sealing::None => "protected by file permissions",
        };
        format!("credential file in {} ({how})", self.dir.display())
    }

    fn load(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, SecretError> {
        let sealed = self.sealed_path(name);
        if sealed.exists() {
            return systemd_creds(&["decrypt", &format!("--name={name}"), path_str(&sealed)?, "-"], &[])
                .map(Some)
                .map_err(|e| self.error(format!("systemd-creds decrypt {}: {e}", sealed.display())));
        }
        let plain = self.plain_path(name);
        match fs::read(&plain) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                let text = std::str::from_utf8(&bytes)
                    .map_err(|_| self.error(format!("{} is not base64", plain.display())))?;
                B64.decode(text.trim())
                    .map(|v| Some(Zeroizing::new(v)))
                    .map_err(|_| self.error(format!("{} is not base64", plain.display())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.error(format!("{}: {e}", plain.display()))),
        }
    }

    fn save(&self, name: &str, value: &[u8]) -> Result<(), SecretError> {
        private_fs::create_dir(&self.dir).map_err(|e| self.error(format!("{}: {e}", self.dir.display())))?;
        let (target, contents) = match self.sealing {
            Sealing::SystemdCreds => {
                let sealed = systemd_creds(&["encrypt", &format!("--name={name}"), "-", "-"], value)
                    .map_err(|e| self.error(format!("systemd-creds encrypt: {e}")))?;
                (self.sealed_path(name), sealed)
            }
            Sealing::None => (self.plain_path(name), Zeroizing::new(B64.encode(value).into_bytes())),
        };
        // Write beside the target and rename, so a crash never leaves half a key.
        let tmp = target.with_extension("tmp");
        private_fs::replace(&tmp, &contents).map_err(|e| self.error(format!("{}: {e}", tmp.display())))?;
        fs::rename(&tmp, &target).map_err(|e| self.error(format!("{}: {e}", target.display())))?;
        Ok(())
    }
}

/// Credentials that systemd decrypted for this service (`LoadCredentialEncrypted=`) into
/// `$CREDENTIALS_DIRECTORY`: readable by the service alone, gone when it stops. Read-only:
/// the installer seals the key once, as root (see `installers/linux`).
#[derive(Debug)]
pub struct SystemdCredentialDir {
    dir: PathBuf,
}

impl SystemdCredentialDir {
    /// The directory systemd gave this process, if any.
    pub fn from_env() -> Option<Self> {
        std::env::var_os("CREDENTIALS_DIRECTORY").map(|dir| Self { dir: dir.into() })
    }
}

impl SecretStore for SystemdCredentialDir {
    fn describe(&self) -> String {
        format!("systemd credentials in {}", self.dir.display())
    }
    fn load(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, SecretError> {
        match fs::read(self.dir.join(name)) {
            Ok(bytes) => Ok(Some(Zeroizing::new(bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SecretError::Backend { backend: self.describe(), message: e.to_string() }),
        }
    }
    fn save(&self, name: &str, _value: &[u8]) -> Result<(), SecretError> {
        Err(SecretError::Backend {
            backend: self.describe(),
            message: format!(
                "credential {name:?} is missing and cannot be created from inside the service; \
                 wardlock-identity.service makes it (systemctl start wardlock-identity; \
                 journalctl -u wardlock-identity says why it did not)"
            ),
        })
    }
}

/// The secret store a `--key-store` value names: `file:DIR` (sealed with systemd-creds
/// where it works), `keyring`, or `systemd-credentials` (`$CREDENTIALS_DIRECTORY`).
pub fn from_spec(spec: &str) -> Result<Box<dyn SecretStore>, SecretError> {
    let bad = |message: String| SecretError::Backend { backend: "--key-store".into(), message };
    match spec {
        "keyring" => Ok(Box::new(KeyringSecretStore::new("wardlock"))),
        "systemd-credentials" => SystemdCredentialDir::from_env()
            .map(|s| Box::new(s) as Box<dyn SecretStore>)
            .ok_or_else(|| bad("systemd-credentials needs $CREDENTIALS_DIRECTORY, which systemd sets for a unit with LoadCredentialEncrypted=".into())),
        _ => match spec.strip_prefix("file:") {
            Some(dir) if !dir.is_empty() => Ok(Box::new(CredentialFileStore::with_best_sealing(dir))),
            _ => Err(bad(format!("{spec:?} is not understood; use file:DIR, keyring or systemd-credentials"))),
        },
    }
}

fn path_str(p: &Path) -> Result<&str, SecretError> {
    p.to_str().ok_or_else(|| SecretError::Backend {
        backend: "credential file".into(),
        message: "path is not UTF-8".into(),
    })
}

/// True when `systemd-creds` exists and can seal here (it needs root for the host key).
pub fn systemd_creds_available() -> bool {
    systemd_creds(&["encrypt", "--name=wardlock-probe", "-", "-"], b"probe").is_ok()
}

/// Runs `systemd-creds`, secrets through stdin/stdout only (never argv, never a temp file).
fn systemd_creds(args: &[&str], input: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
    let mut child = Command::new("systemd-creds")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run systemd-creds: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input).map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let stdout = Zeroizing::new(out.stdout);
    if out.status.success() {
        Ok(stdout)
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        // systemd-creds warns about the host key's medium on stderr even on success.
        let why = stderr
            .lines()
            .filter(|l| !l.contains("not located on encrypted media"))
            .collect::<Vec<_>>()
            .join("; ");
        Err(format!("exit {}: {why}", out.status.code().unwrap_or(-1)))
    }
}

/// The 256-bit key that seals TOTP seeds (XChaCha20-Poly1305, random 192-bit nonces).
pub struct DataKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

impl DataKey {
    pub fn from_bytes(bytes: &[u8]) -> Option<DataKey> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(DataKey(Zeroizing::new(arr)))
    }

    /// Key material for deriving other keys (HMAC). Never written anywhere.
    pub(crate) fn expose_for_derivation(&self) -> &[u8] {
        &self.0[..]
    }

    /// The key for this database: loaded from the secret store and checked against the
    /// check value the database keeps. Made only when neither exists yet.
    pub fn open_or_create(secrets: &dyn SecretStore, store: &Store) -> Result<DataKey, SecretError> {
        if let Some(key) = Self::open_existing(secrets, store)? {
            return Ok(key);
        }
        // Nothing yet. Make it under the database's write lock, and look again once we
        // hold it: the service and `wardlockctl` starting together must not each make a
        // key (one would be orphaned, and with it every seed sealed by it).
        store.with_write_lock(|| {
            if let Some(key) = Self::open_existing(secrets, store)? {
                return Ok(key);
            }
            let mut bytes = Zeroizing::new([0u8; 32]);
            getrandom::getrandom(&mut bytes[..])
                .map_err(|e| SecretError::Backend { backend: "OS random".into(), message: e.to_string() })?;
            secrets.save(DATA_KEY, &bytes[..])?;
            // Read it back: a store that silently drops keys must fail now, not after
            // the first seed was sealed with a key nobody kept.
            let reread = secrets.load(DATA_KEY)?;
            if reread.as_deref().map(|v| &v[..]) != Some(&bytes[..]) {
                return Err(SecretError::Backend {
                    backend: secrets.describe(),
                    message: "the key just saved cannot be read back".into(),
                });
            }
            let key = DataKey(bytes);
            store.set_meta(KEY_CHECK_META, &B64.encode(key.seal(KEY_CHECK_PLAINTEXT, b"key-check")?))?;
            Ok(key)
        })
    }

    /// The key, checked against the database, if either exists yet.
    fn open_existing(secrets: &dyn SecretStore, store: &Store) -> Result<Option<DataKey>, SecretError> {
        let check = store.meta(KEY_CHECK_META)?;
        let stored = secrets.load(DATA_KEY)?;
        let wrong = || SecretError::WrongKey { backend: secrets.describe(), db: store.path().to_owned() };
        let key = match (stored, &check) {
            (Some(bytes), _) => DataKey::from_bytes(&bytes).ok_or_else(wrong)?,
            (None, Some(_)) => {
                return Err(SecretError::MissingKey {
                    backend: secrets.describe(),
                    db: store.path().to_owned(),
                });
            }
            (None, None) => return Ok(None),
        };
        match check {
            Some(check) => {
                let sealed = B64.decode(check).map_err(|_| SecretError::Unseal)?;
                match key.open(&sealed, b"key-check") {
                    Ok(v) if &v[..] == KEY_CHECK_PLAINTEXT => Ok(Some(key)),
                    _ => Err(wrong()),
                }
            }
            // A key but no check value yet (a key store provisioned ahead, as wardlock-identity
            // does): this database adopts it.
            None => {
                store.set_meta(KEY_CHECK_META, &B64.encode(key.seal(KEY_CHECK_PLAINTEXT, b"key-check")?))?;
                Ok(Some(key))
            }
        }
    }

    /// Seals `plaintext`, bound to `context` (e.g. the user ID, so a sealed seed copied
    /// onto another user's row does not open there). Output: nonce ‖ ciphertext.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Result<Vec<u8>, SecretError> {
        let mut nonce = [0u8; sealing::NONCE_LEN];
        getrandom::getrandom(&mut nonce)
            .map_err(|e| SecretError::Backend { backend: "OS random".into(), message: e.to_string() })?;
        Ok(sealing::seal(&self.0, &nonce, plaintext, context))
    }

    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Zeroizing<Vec<u8>>, SecretError> {
        sealing::open(&self.0, sealed, context).map_err(|_| SecretError::Unseal)
    }
}
