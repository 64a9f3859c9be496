//! What every command that touches the workstation needs: the database, the key store,
//! the policy in force, the caller's identity and the clock.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::Args;
use wardlock_core::clock::UtcMillis;
use wardlock_core::policy::{Layer, Policy, PolicyDocument, ValidPolicy};
use wardlock_store::secrets::{self, DataKey, SecretStore};
use wardlock_store::store::OpenOptions;
use wardlock_store::Store;

#[derive(Debug, Args)]
pub struct Global {
    /// Workstation database [default: the platform data dir, /var/lib/wardlock/wardlock.db on Linux]
    #[arg(long, global = true, env = "WARDLOCK_DB")]
    pub db: Option<PathBuf>,
    /// Where the data key lives: `file:DIR` (sealed with systemd-creds where available), `keyring`
    /// or `systemd-credentials` (inside a unit with LoadCredentialEncrypted=)
    /// [default: file:/etc/wardlock/credentials on Linux, keyring elsewhere]
    #[arg(long, global = true, env = "WARDLOCK_KEY_STORE")]
    pub key_store: Option<String>,
    /// Machine policy file [default: /etc/wardlock/policy.toml if it exists, else built-in defaults]
    #[arg(long, global = true, env = "WARDLOCK_POLICY")]
    pub policy: Option<PathBuf>,
}

impl Global {
    pub fn db_path(&self) -> PathBuf {
        self.db.clone().unwrap_or_else(|| crate::default_data_dir().join("wardlock.db"))
    }

    pub fn open_store(&self, create: bool) -> Result<Store> {
        let path = self.db_path();
        let options = OpenOptions { create, workstation_id: workstation_id() };
        Store::open(&path, &options)
            .with_context(|| format!("opening the workstation database {}", path.display()))
    }

    pub fn secret_store(&self) -> Result<Box<dyn SecretStore>> {
        let spec = match &self.key_store {
            Some(spec) => spec.clone(),
            None if cfg!(target_os = "linux") => "file:/etc/wardlock/credentials".to_owned(),
            None => "keyring".to_owned(),
        };
        Ok(secrets::from_spec(&spec)?)
    }

    pub fn data_key(&self, store: &Store) -> Result<DataKey> {
        let secrets = self.secret_store()?;
        DataKey::open_or_create(secrets.as_ref(), store).context("opening the data key")
    }

    pub fn load_policy(&self) -> Result<ValidPolicy> {
        let path = match &self.policy {
            Some(p) => p.clone(),
            None => {
                let default = Path::new("/etc/wardlock/policy.toml");
                if !default.exists() {
                    return Ok(ValidPolicy::default());
                }
                default.to_owned()
            }
        };
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let doc = PolicyDocument::parse(&path.display().to_string(), Layer::Machine, &text)?;
        Ok(Policy::layered(&[doc])?)
    }
}

pub fn now() -> UtcMillis {
    wardlock_store::utc_now()
}

pub fn workstation_id() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// The human behind the command: the account that ran sudo, else the current one.
pub fn os_account() -> Option<String> {
    if let Ok(user) = std::env::var("SUDO_USER") {
        if !user.is_empty() {
            return Some(user);
        }
    }
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => Some(user.name),
        _ => Some(format!("uid:{uid}")),
    }
}
