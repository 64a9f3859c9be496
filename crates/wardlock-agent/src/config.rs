//! Where `wardlockd` keeps its files: platform defaults, a `--dev` directory, an optional
//! configuration file, and command-line overrides, in rising order of precedence.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The resolved locations the service uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Holds `wardlock.db` (and its WAL); owner-only.
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    /// The machine policy file.
    pub policy: PathBuf,
    /// A missing policy file is an error (it was named explicitly) or means the
    /// built-in defaults (the platform's default path, not yet written by IT).
    pub policy_required: bool,
    /// `file:DIR`, `keyring` or `systemd-credentials` (see `secrets::from_spec`).
    pub key_store: String,
    pub workstation_id: String,
    /// File with the collector's enrollment secret, read once, when the workstation
    /// first enrolls (`sync.endpoint` set and no node key yet).
    pub enroll_secret: PathBuf,
    /// The guard executable when the machine policy names none (`service.guard_executable`).
    pub guard_executable: PathBuf,
    /// A policy layer under the machine policy file: what `--dev` changes of the built-in
    /// defaults, so trying Wardlock on one's own desktop never logs anyone off.
    pub base_policy: Option<String>,
    /// `/etc/machine-id`: the machine the workstation's identity (its database, node key
    /// and workstation ID) was made on. Another one means a cloned image (`identity.rs`).
    pub machine_id_file: PathBuf,
}

/// Where the Debian package puts the guard: the default when wardlockd cannot name its
/// own directory.
pub const PACKAGED_GUARD: &str = "/usr/bin/wardlock";

/// The guard installed beside this wardlockd: `/usr/bin` from the package, `/usr/local/bin`
/// from `install.sh`, `target/*` in a build tree. Only root can write either directory.
fn guard_beside_this_program() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("wardlock")))
        .unwrap_or_else(|| PathBuf::from(PACKAGED_GUARD))
}

/// `--dev`'s layer under the machine policy: an unguarded session is only locked and
/// audited, never logged off, unless the policy file says otherwise.
pub const DEV_BASE_POLICY: &str = "[lock]\nwhen_unguarded = \"lock_only\"\n";

/// `--config FILE`, and the same keys given on the command line: every key optional.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub data_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub policy: Option<PathBuf>,
    pub key_store: Option<String>,
    pub workstation_id: Option<String>,
    pub enroll_secret: Option<PathBuf>,
    pub guard_executable: Option<PathBuf>,
    pub machine_id_file: Option<PathBuf>,
}

impl ConfigFile {
    pub fn parse(path: &Path, text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| format!("{}: {}", path.display(), e.message()))
    }
}

impl ServiceConfig {
    /// Production locations of this platform.
    pub fn platform_defaults() -> Self {
        let (data_dir, socket, policy, key_store) = if cfg!(windows) {
            let base = PathBuf::from(r"C:\ProgramData\Wardlock");
            (
                base.join("data"),
                PathBuf::from(r"\\.\pipe\wardlock-agent"),
                base.join("policy.toml"),
                "keyring",
            )
        } else if cfg!(target_os = "macos") {
            (
                PathBuf::from("/Library/Application Support/Wardlock"),
                PathBuf::from("/var/run/wardlock/agent.sock"),
                PathBuf::from("/Library/Preferences/Wardlock/policy.toml"),
                "keyring",
            )
        } else {
            (
                PathBuf::from("/var/lib/wardlock"),
                PathBuf::from("/run/wardlock/agent.sock"),
                PathBuf::from("/etc/wardlock/policy.toml"),
                "file:/etc/wardlock/credentials",
            )
        };
        // Under systemd the secret may come as a credential (LoadCredential=); otherwise a
        // file beside the policy, readable by the service's group only.
        let enroll_secret = std::env::var_os("CREDENTIALS_DIRECTORY")
            .map(|dir| PathBuf::from(dir).join("wardlock-enroll-secret"))
            .filter(|p| p.exists())
            .unwrap_or_else(|| policy.with_file_name("enroll-secret"));
        Self {
            data_dir,
            socket,
            policy,
            policy_required: false,
            key_store: key_store.to_owned(),
            workstation_id: gethostname::gethostname().to_string_lossy().into_owned(),
            enroll_secret,
            guard_executable: guard_beside_this_program(),
            base_policy: None,
            machine_id_file: PathBuf::from("/etc/machine-id"),
        }
    }

    /// Everything under one directory an unprivileged user owns: for the demo and tests.
    pub fn dev(dir: &Path) -> Self {
        Self {
            data_dir: dir.join("data"),
            socket: dir.join("agent.sock"),
            policy: dir.join("policy.toml"),
            policy_required: false,
            key_store: format!("file:{}", dir.join("credentials").display()),
            enroll_secret: dir.join("enroll-secret"),
            base_policy: Some(DEV_BASE_POLICY.to_owned()),
            ..Self::platform_defaults()
        }
    }

    /// `cli` over `file` over the defaults (of `dev_dir` when given, else the platform's).
    pub fn resolve(dev_dir: Option<&Path>, file: ConfigFile, cli: ConfigFile) -> Self {
        let mut config = match dev_dir {
            Some(dir) => Self::dev(dir),
            None => Self::platform_defaults(),
        };
        let policy_named = cli.policy.is_some() || file.policy.is_some();
        config.data_dir = cli.data_dir.or(file.data_dir).unwrap_or(config.data_dir);
        config.socket = cli.socket.or(file.socket).unwrap_or(config.socket);
        config.policy = cli.policy.or(file.policy).unwrap_or(config.policy);
        config.policy_required = policy_named;
        config.key_store = cli.key_store.or(file.key_store).unwrap_or(config.key_store);
        config.workstation_id = cli.workstation_id.or(file.workstation_id).unwrap_or(config.workstation_id);
        config.enroll_secret = cli.enroll_secret.or(file.enroll_secret).unwrap_or(config.enroll_secret);
        config.guard_executable =
            cli.guard_executable.or(file.guard_executable).unwrap_or(config.guard_executable);
        config.machine_id_file =
            cli.machine_id_file.or(file.machine_id_file).unwrap_or(config.machine_id_file);
        config
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("wardlock.db")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_beats_file_beats_dev_defaults() {
        let file = ConfigFile {
            socket: Some("/tmp/file.sock".into()),
            policy: Some("/tmp/file-policy.toml".into()),
            ..ConfigFile::default()
        };
        let cli = ConfigFile { policy: Some("/tmp/cli-policy.toml".into()), ..ConfigFile::default() };
        let c = ServiceConfig::resolve(Some(Path::new("/tmp/dev")), file, cli);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/dev/data"));
        assert_eq!(c.socket, PathBuf::from("/tmp/file.sock"));
        assert_eq!(c.policy, PathBuf::from("/tmp/cli-policy.toml"));
        assert!(c.policy_required);
        assert_eq!(c.key_store, "file:/tmp/dev/credentials");
    }

    #[test]
    fn unknown_config_keys_are_refused() {
        let err = ConfigFile::parse(Path::new("w.toml"), "datadir = \"/x\"").unwrap_err();
        assert!(err.contains("w.toml") && err.contains("datadir"), "{err}");
    }
}
