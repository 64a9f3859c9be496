//! The Linux installer's pieces, checked with systemd's own tools: the unit verifies and
//! is sandboxed, the account is made by sysusers, and a key sealed the way install.sh
//! seals it is what the unit hands to `wardlockd` and what `wardlockctl` opens.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use wardlock_store::secrets::{self, DataKey};
use wardlock_store::store::OpenOptions;
use wardlock_store::Store;

fn installers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../installers/linux")
}

/// The unit with its ExecStart pointing at the binary just built (verify checks it exists).
fn unit_for_test(dir: &Path) -> PathBuf {
    let unit = std::fs::read_to_string(installers().join("wardlockd.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/wardlockd "), "install.sh puts the binary there");
    let path = dir.join("wardlockd.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/wardlockd", env!("CARGO_BIN_EXE_wardlockd"))).unwrap();
    path
}

#[test]
fn the_unit_verifies_and_is_tightly_sandboxed() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_test(dir.path());
    // The identity unit it requires, beside it, with its script where the test can see it.
    let identity_unit = std::fs::read_to_string(installers().join("wardlock-identity.service")).unwrap();
    let script = installers().join("wardlock-identity").canonicalize().unwrap();
    std::fs::write(
        dir.path().join("wardlock-identity.service"),
        identity_unit.replace("/usr/local/libexec/wardlock/wardlock-identity", &script.display().to_string()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .arg(dir.path().join("wardlock-identity.service"))
        .output()
        .expect("systemd-analyze is needed (apt-get install systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");

    let out =
        Command::new("systemd-analyze").args(["security", "--offline=true"]).arg(&unit).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let level: f32 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for wardlockd.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    assert!(level <= 2.5, "exposure {level}: the sandbox got weaker");

    let unit_text = std::fs::read_to_string(&unit).unwrap();
    for line in [
        "User=wardlock",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "Restart=always",
        "StateDirectory=wardlock",
        "RuntimeDirectory=wardlock",
    ] {
        assert!(unit_text.lines().any(|l| l == line), "missing {line}");
    }
}

#[test]
fn sysusers_makes_the_service_account() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    let out = Command::new("systemd-sysusers")
        .arg(format!("--root={}", root.path().display()))
        .arg(installers().join("sysusers-wardlock.conf"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    let entry = passwd.lines().find(|l| l.starts_with("wardlock:")).expect("no wardlock account");
    assert!(entry.ends_with(":/var/lib/wardlock:/usr/sbin/nologin"), "{entry}");
    // The group the shipped policy lets talk to wardlockd.
    let group = std::fs::read_to_string(root.path().join("etc/group")).unwrap();
    assert!(group.lines().any(|l| l.starts_with("wardlock-session:")), "{group}");
    let template = std::fs::read_to_string(installers().join("policy.toml")).unwrap();
    assert!(
        template.contains("allowed_groups = [\"wardlock-session\"]"),
        "the template restricts who may connect"
    );
}

#[test]
fn the_installer_scripts_parse() {
    let out = Command::new("bash").arg("-n").arg(installers().join("install.sh")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let debian = installers().join("../debian");
    for script in [
        installers().join("wardlock-identity"),
        debian.join("wardlock/postinst"),
        debian.join("wardlock/prerm"),
        debian.join("wardlock/postrm"),
        debian.join("wardlock-collector/postinst"),
    ] {
        let out = Command::new("sh").arg("-n").arg(&script).output().unwrap();
        assert!(out.status.success(), "{}: {}", script.display(), String::from_utf8_lossy(&out.stderr));
    }
    // polkit rules are JavaScript.
    let dir = tempfile::tempdir().unwrap();
    let js = dir.path().join("rules.js");
    let rules = std::fs::read_to_string(installers().join("polkit-wardlock.rules")).unwrap();
    std::fs::write(&js, format!("var polkit = {{ addRule: function () {{}}, Result: {{}} }};\n{rules}"))
        .unwrap();
    let out = Command::new("node")
        .arg("--check")
        .arg(&js)
        .output()
        .expect("node is needed (`make setup` installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_key_made_by_wardlock_identity_is_the_one_the_unit_and_wardlockctl_use() {
    if !crate::util::running_as_root("systemd-creds with the host key") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sealed_dir = dir.path().join("etc-credentials");
    std::fs::create_dir(&sealed_dir).unwrap();
    let cred = sealed_dir.join("wardlock-data-key.cred");
    let machine_id = dir.path().join("machine-id");
    std::fs::write(&machine_id, "0123456789abcdef0123456789abcdef\n").unwrap();
    assert!(identity(&sealed_dir, &machine_id).status.success());
    // What LoadCredentialEncrypted= does before starting the service.
    let loaded = dir.path().join("run-credentials");
    std::fs::create_dir(&loaded).unwrap();
    let status = Command::new("systemd-creds")
        .args(["decrypt", "--name=wardlock-data-key"])
        .arg(&cred)
        .arg(loaded.join("wardlock-data-key"))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());

    let agent = dir.path().join("agent");
    let run = |credentials: &Path| {
        Command::new(env!("CARGO_BIN_EXE_wardlockd"))
            .arg("--dev")
            .arg(&agent)
            .args(["--key-store", "systemd-credentials"])
            .env("CREDENTIALS_DIRECTORY", credentials)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Without the credential the service refuses to start and says how to fix it.
    let empty = dir.path().join("no-credentials");
    std::fs::create_dir(&empty).unwrap();
    let out = run(&empty).wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wardlock-identity"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut child = run(&loaded);
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap()));
    assert!(lines.next().unwrap().unwrap().contains("listening on"));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    assert!(child.wait().unwrap().success());

    // wardlockctl, as root, reaches the same key through the sealed file.
    let store = Store::open(
        &agent.join("data/wardlock.db"),
        &OpenOptions { create: false, workstation_id: "x".into() },
    )
    .unwrap();
    let spec = format!("file:{}", sealed_dir.display());
    DataKey::open_or_create(secrets::from_spec(&spec).unwrap().as_ref(), &store).expect("a different key");
}

/// What wardlock-identity.service runs, on `credentials` for the machine in `machine_id`.
fn identity(credentials: &Path, machine_id: &Path) -> std::process::Output {
    Command::new(installers().join("wardlock-identity"))
        .env("WARDLOCK_CREDENTIALS_DIR", credentials)
        .env("WARDLOCK_MACHINE_ID_FILE", machine_id)
        .output()
        .unwrap()
}

/// The data key belongs to the machine it was made on: made once, kept on every later
/// boot, adopted from an earlier release, and made again (the image's kept) on a clone.
#[test]
fn wardlock_identity_makes_the_key_once_per_machine_and_keeps_an_images_key() {
    if !crate::util::running_as_root("systemd-creds with the host key") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    let cred = creds.join("wardlock-data-key.cred");
    let machine_id = dir.path().join("machine-id");
    // A golden image before its first boot has no ID yet: nothing is made.
    std::fs::write(&machine_id, "uninitialized\n").unwrap();
    let out = identity(&creds, &machine_id);
    assert!(!out.status.success() && !cred.exists());
    assert!(String::from_utf8_lossy(&out.stderr).contains("systemd-machine-id-setup"));

    std::fs::write(&machine_id, "0123456789abcdef0123456789abcdef\n").unwrap();
    assert!(identity(&creds, &machine_id).status.success());
    let made = std::fs::read(&cred).unwrap();
    let stamp = std::fs::read_to_string(creds.join("machine")).unwrap();
    assert_eq!(
        Some(stamp.trim().to_owned()),
        wardlock_core::identity::machine_tag("0123456789abcdef0123456789abcdef")
    );
    assert!(identity(&creds, &machine_id).status.success());
    assert_eq!(std::fs::read(&cred).unwrap(), made, "a second boot changes nothing");

    // An earlier release's key, with no stamp: this machine's, kept.
    std::fs::remove_file(creds.join("machine")).unwrap();
    assert!(identity(&creds, &machine_id).status.success());
    assert_eq!(std::fs::read(&cred).unwrap(), made);
    assert_eq!(std::fs::read_to_string(creds.join("machine")).unwrap(), stamp);

    // Cloned onto another machine: a new key; the image's kept beside it.
    std::fs::write(&machine_id, "fedcba9876543210fedcba9876543210\n").unwrap();
    let out = identity(&creds, &machine_id);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cloned image"));
    assert_ne!(std::fs::read(&cred).unwrap(), made);
    let kept = creds.join(format!("wardlock-data-key.cred.from-machine-{}", &stamp.trim()[..12]));
    assert_eq!(std::fs::read(&kept).unwrap(), made, "the image's key is never deleted");

    // Back to the first machine's ID and over again: no kept key is overwritten.
    std::fs::write(&machine_id, "0123456789abcdef0123456789abcdef\n").unwrap();
    assert!(identity(&creds, &machine_id).status.success());
    std::fs::write(&machine_id, "fedcba9876543210fedcba9876543210\n").unwrap();
    assert!(identity(&creds, &machine_id).status.success());
    assert_eq!(std::fs::read(&kept).unwrap(), made);
    assert!(kept.with_file_name(format!("{}.2", kept.file_name().unwrap().to_string_lossy())).exists());
}

#[test]
fn the_collector_unit_verifies_too() {
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(installers().join("wardlock-collector.service")).unwrap();
    let collector = PathBuf::from(env!("CARGO_BIN_EXE_wardlockd")).with_file_name("wardlock-collector");
    assert!(collector.exists(), "build the workspace first (`make test` does)");
    let path = dir.path().join("wardlock-collector.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/wardlock-collector", collector.to_str().unwrap()))
        .unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
}

#[test]
fn the_guards_user_unit_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(installers().join("wardlock-guard.service")).unwrap();
    let guard = PathBuf::from(env!("CARGO_BIN_EXE_wardlockd")).with_file_name("wardlock");
    assert!(guard.exists(), "build the workspace first (`make test` does)");
    assert!(unit.contains("Restart=always"), "the guard must be restarted when it dies");
    let path = dir.path().join("wardlock-guard.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/wardlock", guard.to_str().unwrap())).unwrap();
    // A user manager needs a runtime directory; a private one will do.
    let runtime = tempfile::tempdir().unwrap();
    let out = Command::new("systemd-analyze")
        .args(["--user", "verify"])
        .arg(&path)
        .env("XDG_RUNTIME_DIR", runtime.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze --user verify: {stderr}");
}

#[test]
fn the_polkit_rule_lets_only_the_service_lock_and_end_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let js = dir.path().join("rules.js");
    let rules = std::fs::read_to_string(installers().join("polkit-wardlock.rules")).unwrap();
    let harness = r#"
var rule;
var polkit = { addRule: function (f) { rule = f; }, Result: { YES: "yes", NOT_HANDLED: "not_handled" } };
RULES
var out = [];
for (const user of ["wardlock", "ward4"]) {
  for (const id of ["org.freedesktop.login1.lock-sessions", "org.freedesktop.login1.manage",
                    "org.freedesktop.login1.power-off"]) {
    out.push(user + " " + id + " " + rule({ id: id }, { user: user }));
  }
}
console.log(out.join("\n"));
"#;
    std::fs::write(&js, harness.replace("RULES", &rules)).unwrap();
    let out = Command::new("node").arg(&js).output().expect("node is needed (`make setup` installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "wardlock org.freedesktop.login1.lock-sessions yes\n\
         wardlock org.freedesktop.login1.manage yes\n\
         wardlock org.freedesktop.login1.power-off not_handled\n\
         ward4 org.freedesktop.login1.lock-sessions not_handled\n\
         ward4 org.freedesktop.login1.manage not_handled\n\
         ward4 org.freedesktop.login1.power-off not_handled"
    );
}

#[test]
fn the_collector_takes_its_data_key_from_an_encrypted_credential_apart_from_the_database() {
    let unit = std::fs::read_to_string(installers().join("wardlock-collector.service")).unwrap();
    assert!(unit
        .contains("LoadCredentialEncrypted=data-key:/etc/credstore.encrypted/wardlock-collector.data-key"));
    assert!(unit.contains("--data-key ${CREDENTIALS_DIRECTORY}/data-key"), "{unit}");
    assert!(!unit.contains("/var/lib/wardlock-collector/data.key"), "the key beside the database");

    // As the unit's first start would have it: the key made once and encrypted with the
    // host's credential key (a private one here), then decrypted by systemd into the
    // service's credentials directory.
    let dir = tempfile::tempdir().unwrap();
    let creds_env = [("SYSTEMD_CREDENTIAL_SECRET", dir.path().join("host.secret"))];
    let run = |cmd: &mut Command| {
        let out = cmd.envs(creds_env.iter().map(|(k, v)| (k, v))).output().unwrap();
        assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    run(Command::new("systemd-creds").arg("setup"));
    let collector = PathBuf::from(env!("CARGO_BIN_EXE_wardlockd")).with_file_name("wardlock-collector");
    let key = run(Command::new(&collector).args(["data-key", "create"]));
    let key = String::from_utf8(key).unwrap();
    assert_eq!(key.trim().len(), 44, "a 32-byte key in base64: {key:?}");
    let encrypted = dir.path().join("wardlock-collector.data-key");
    let mut encrypt = Command::new("systemd-creds")
        .args(["encrypt", "--with-key=host", "--name=data-key", "-"])
        .arg(&encrypted)
        .envs(creds_env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut encrypt.stdin.take().unwrap(), key.as_bytes()).unwrap();
    assert!(encrypt.wait().unwrap().success());
    assert!(
        !String::from_utf8_lossy(&std::fs::read(&encrypted).unwrap()).contains(key.trim()),
        "stored in the clear"
    );
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    run(Command::new("systemd-creds")
        .args(["decrypt", "--name=data-key"])
        .arg(&encrypted)
        .arg(credentials.join("data-key")));

    let serve = |dev: &Path| {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Command::new(&collector)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--dev"])
            .arg(dev)
            .arg("--data-key")
            .arg(credentials.join("data-key"))
            .env("CREDENTIALS_DIRECTORY", &credentials)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let state = dir.path().join("state");
    let mut child = serve(&state);
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap()));
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("listening on"), "{first}");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!state.join("data.key").exists(), "a key was made beside the database");

    // Without the credential the collector stops and says how to make one; it makes none
    // in the credentials directory.
    std::fs::remove_file(credentials.join("data-key")).unwrap();
    let out = serve(&state).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("data key credential") && stderr.contains("systemd-creds encrypt"), "{stderr}");
    assert!(!credentials.join("data-key").exists());
}
