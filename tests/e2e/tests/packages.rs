//! The Debian packages as `make packages` writes them into `target/debian/`: what each
//! holds and where, which files are conffiles, what they depend on (computed from the
//! binaries), and lintian's verdict; the signed repository `make apt-repo` makes, as real
//! apt reads it; and an install from it into a bare Debian root (debootstrap).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The one package of that name in target/debian/.
fn package(name: &str) -> PathBuf {
    let dir = workspace().join("target/debian");
    let found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; run `make packages` first", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&format!("{name}_")))
        .collect();
    assert_eq!(found.len(), 1, "one {name} package in {}: {found:?} (run `make packages`)", dir.display());
    found.into_iter().next().unwrap()
}

/// `dpkg-deb OPTION DEB [EXTRA]`: what it printed.
fn dpkg_deb(option: &str, deb: &Path, extra: Option<&std::ffi::OsStr>) -> String {
    let out = Command::new("dpkg-deb").arg(option).arg(deb).args(extra).output().unwrap();
    assert!(
        out.status.success(),
        "dpkg-deb {option} {}: {}",
        deb.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn field(deb: &Path, name: &str) -> String {
    dpkg_deb("--field", deb, Some(name.as_ref())).trim().to_owned()
}

/// Every path in the package, without the leading `.`.
fn contents(deb: &Path) -> Vec<String> {
    dpkg_deb("--contents", deb, None)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').trim_end_matches('/').to_owned())
        .collect()
}

fn conffiles(deb: &Path) -> Vec<String> {
    let mut files: Vec<String> =
        dpkg_deb("--info", deb, Some("conffiles".as_ref())).lines().map(str::to_owned).collect();
    files.sort();
    files
}

/// A file of the package, as it would be installed.
fn file(deb: &Path, path: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    dpkg_deb("--extract", deb, Some(dir.path().as_os_str()));
    std::fs::read_to_string(dir.path().join(path.trim_start_matches('/'))).unwrap()
}

fn lintian_errors(deb: &Path) -> Vec<String> {
    let out = Command::new("lintian").args(["--no-tag-display-limit"]).arg(deb).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("E:"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_workstation_package_holds_the_service_the_guard_and_the_tool_where_debian_looks() {
    let deb = package("wardlock");
    let files = contents(&deb);
    for path in [
        "/usr/bin/wardlockd",
        "/usr/bin/wardlockctl",
        "/usr/bin/wardlock",
        "/lib/systemd/system/wardlockd.service",
        "/lib/systemd/system/wardlock-identity.service",
        "/usr/libexec/wardlock/wardlock-identity",
        "/usr/lib/systemd/user/wardlock-guard.service",
        "/etc/xdg/autostart/wardlock-guard.desktop",
        "/usr/lib/sysusers.d/wardlock.conf",
        "/usr/share/polkit-1/rules.d/50-wardlock.rules",
        "/etc/wardlock/policy.toml",
        "/usr/share/man/man1/wardlockd.1.gz",
        "/usr/share/man/man1/wardlockctl.1.gz",
        "/usr/share/man/man1/wardlockctl-agent-status.1.gz",
        "/usr/share/man/man1/wardlock.1.gz",
        "/usr/share/bash-completion/completions/wardlockctl",
        "/usr/share/zsh/vendor-completions/_wardlockctl",
        "/usr/share/fish/vendor_completions.d/wardlockctl.fish",
        "/usr/share/doc/wardlock/copyright",
        "/usr/share/doc/wardlock/third-party-licences.txt",
    ] {
        assert!(files.iter().any(|f| f == path), "{path} is not in the package: {files:#?}");
    }
    assert!(!files.iter().any(|f| f.starts_with("/usr/local")), "nothing under /usr/local: {files:#?}");
    // IT's policy and the autostart entry survive an upgrade as IT left them.
    assert_eq!(conffiles(&deb), ["/etc/wardlock/policy.toml", "/etc/xdg/autostart/wardlock-guard.desktop"]);
    // The units start the programs where the package puts them.
    assert!(file(&deb, "/lib/systemd/system/wardlockd.service").contains("ExecStart=/usr/bin/wardlockd "));
    assert!(
        file(&deb, "/usr/lib/systemd/user/wardlock-guard.service").contains("ExecStart=/usr/bin/wardlock")
    );
    assert!(file(&deb, "/etc/xdg/autostart/wardlock-guard.desktop").contains("Exec=/usr/bin/wardlock"));
    // Depends: computed from the binaries (the guard's WebKit and GTK), and what the
    // maintainer scripts call.
    let depends = field(&deb, "Depends");
    for needed in ["libc6", "libwebkit2gtk-4.1-0", "libgtk-3-0", "init-system-helpers", "systemd"] {
        assert!(depends.split(", ").any(|d| d.starts_with(needed)), "Depends lacks {needed}: {depends}");
    }
    let version = field(&deb, "Version");
    assert!(version.contains("+git"), "a development build names its commit: {version}");
    // The statically linked crates and their licences, the guard's WebKit binding among them.
    let licences = file(&deb, "/usr/share/doc/wardlock/third-party-licences.txt");
    for crate_line in ["tauri v", "rusqlite v", "totp-rs v"] {
        let line = licences
            .lines()
            .find(|l| l.starts_with(crate_line))
            .unwrap_or_else(|| panic!("{crate_line}: {licences}"));
        assert!(line.contains("MIT") || line.contains("Apache"), "{line}");
    }
    assert!(!licences.contains("/work/"), "build paths in the licence list");
    assert_eq!(lintian_errors(&deb), Vec::<String>::new());
}

#[test]
fn the_collector_package_holds_the_server_its_unit_and_its_pages() {
    let deb = package("wardlock-collector");
    let files = contents(&deb);
    for path in [
        "/usr/bin/wardlock-collector",
        "/lib/systemd/system/wardlock-collector.service",
        "/usr/share/man/man1/wardlock-collector.1.gz",
        "/usr/share/man/man1/wardlock-collector-serve.1.gz",
        "/usr/share/bash-completion/completions/wardlock-collector",
        "/usr/share/doc/wardlock-collector/copyright",
        "/usr/share/doc/wardlock-collector/third-party-licences.txt",
    ] {
        assert!(files.iter().any(|f| f == path), "{path} is not in the package: {files:#?}");
    }
    assert!(!files.iter().any(|f| f.contains("wardlockd")), "no workstation part in the collector's package");
    assert!(file(&deb, "/lib/systemd/system/wardlock-collector.service")
        .contains("ExecStart=/usr/bin/wardlock-collector serve"));
    let depends = field(&deb, "Depends");
    assert!(depends.split(", ").any(|d| d.starts_with("libc6")), "{depends}");
    // The console's pages are built into the binary from npm packages: listed with theirs.
    let licences = file(&deb, "/usr/share/doc/wardlock-collector/third-party-licences.txt");
    for package in ["axum v", "preact v", "chart.js v"] {
        let line = licences
            .lines()
            .find(|l| l.starts_with(package))
            .unwrap_or_else(|| panic!("{package}: {licences}"));
        assert!(line.contains("MIT"), "{line}");
    }
    assert!(!depends.contains("webkit"), "the collector needs no desktop: {depends}");
    assert_eq!(lintian_errors(&deb), Vec::<String>::new());
}

/// A throw-away signing key in its own GnuPG home; answers its fingerprint.
fn signing_key(home: &Path, name: &str) -> String {
    std::fs::create_dir_all(home).unwrap();
    let gpg = |args: &[&str]| {
        let out = Command::new("gpg").env("GNUPGHOME", home).arg("--batch").args(args).output().unwrap();
        assert!(out.status.success(), "gpg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    gpg(&["--passphrase", "", "--quick-gen-key", name, "ed25519", "sign", "never"]);
    let listing = gpg(&["--with-colons", "--list-secret-keys", name]);
    listing.lines().find_map(|l| l.strip_prefix("fpr:").map(|f| f.trim_matches(':').to_owned())).unwrap()
}

fn make_repo(out: &Path, home: &Path, key: &str) -> std::process::Output {
    Command::new("bash")
        .arg(workspace().join("scripts/apt-repo.sh"))
        .arg(out)
        .env("GNUPGHOME", home)
        .env("WARDLOCK_APT_KEY", key)
        .output()
        .unwrap()
}

/// Real apt, reading `repo` through a sources list of its own (nothing of this machine's
/// apt configuration or state is used or changed).
struct Apt {
    dir: tempfile::TempDir,
}

impl Apt {
    fn new(repo: &Path, keyring: &Path) -> Apt {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["state/lists/partial", "cache/archives/partial", "parts", "prefs"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        std::fs::write(dir.path().join("status"), "").unwrap();
        std::fs::write(
            dir.path().join("sources.list"),
            format!("deb [signed-by={}] file:{} stable main\n", keyring.display(), repo.display()),
        )
        .unwrap();
        Apt { dir }
    }

    fn run(&self, tool: &str, args: &[&str]) -> std::process::Output {
        let d = self.dir.path().display();
        Command::new(tool)
            .args(["-o", &format!("Dir::Etc::sourcelist={d}/sources.list")])
            .args(["-o", &format!("Dir::Etc::sourceparts={d}/parts")])
            .args(["-o", &format!("Dir::Etc::preferencesparts={d}/prefs")])
            .args(["-o", &format!("Dir::State={d}/state")])
            .args(["-o", &format!("Dir::State::status={d}/status")])
            .args(["-o", &format!("Dir::Cache={d}/cache")])
            .args(["-o", "APT::Architecture=amd64", "-o", "Debug::NoLocking=1"])
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }
}

#[test]
fn the_signed_repository_is_taken_by_apt_with_its_key_and_refused_without_it_or_when_changed() {
    let work = tempfile::tempdir().unwrap();
    let (home, other_home) = (work.path().join("gnupg"), work.path().join("other-gnupg"));
    let key = signing_key(&home, "Wardlock test repository <it@example.invalid>");
    let repo = work.path().join("repo");
    let made = make_repo(&repo, &home, &key);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let keyring = repo.join("wardlock-archive-keyring.gpg");

    // With IT's key: apt reads the index and fetches exactly the package that was built.
    let apt = Apt::new(&repo, &keyring);
    let update = apt.run("apt-get", &["update"]);
    let said =
        String::from_utf8_lossy(&update.stderr).into_owned() + &String::from_utf8_lossy(&update.stdout);
    assert!(update.status.success() && !said.contains("W: ") && !said.contains("E: "), "{said}");
    let policy =
        String::from_utf8(apt.run("apt-cache", &["policy", "wardlock", "wardlock-collector"]).stdout)
            .unwrap();
    let built = field(&package("wardlock"), "Version");
    assert!(policy.contains(&format!("Candidate: {built}")), "{policy}");
    let download = apt.run("apt-get", &["download", "wardlock"]);
    assert!(download.status.success(), "{}", String::from_utf8_lossy(&download.stderr));
    let fetched = std::fs::read_dir(apt.dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .unwrap();
    assert_eq!(std::fs::read(fetched).unwrap(), std::fs::read(package("wardlock")).unwrap());

    // Signed by someone else's key: refused, nothing listed.
    let other = signing_key(&other_home, "Someone else <x@example.invalid>");
    let forged = work.path().join("forged");
    assert!(make_repo(&forged, &other_home, &other).status.success());
    let apt = Apt::new(&forged, &keyring);
    let update = apt.run("apt-get", &["update"]);
    let said = String::from_utf8_lossy(&update.stderr).into_owned();
    assert!(said.contains("NO_PUBKEY") || said.contains("not signed"), "{said}");
    let policy = String::from_utf8(apt.run("apt-cache", &["policy", "wardlock"]).stdout).unwrap();
    assert!(!policy.contains("Candidate: 0"), "a forged index was taken: {policy}");

    // The index changed after signing (a package swapped on the web server): refused.
    let packages = repo.join("dists/stable/main/binary-amd64/Packages");
    let text = std::fs::read_to_string(&packages).unwrap();
    std::fs::write(&packages, text.replacen("Priority: optional", "Priority: required", 1)).unwrap();
    std::fs::remove_file(repo.join("dists/stable/main/binary-amd64/Packages.gz")).unwrap();
    let apt = Apt::new(&repo, &keyring);
    let update = apt.run("apt-get", &["update"]);
    let said =
        String::from_utf8_lossy(&update.stderr).into_owned() + &String::from_utf8_lossy(&update.stdout);
    assert!(said.contains("Hash Sum mismatch") || said.contains("File has unexpected size"), "{said}");

    // Without IT's key the script refuses to make an unsigned repository.
    let unsigned = Command::new("bash")
        .arg(workspace().join("scripts/apt-repo.sh"))
        .arg(work.path().join("x"))
        .env_remove("WARDLOCK_APT_KEY")
        .output()
        .unwrap();
    assert!(!unsigned.status.success());
    assert!(String::from_utf8_lossy(&unsigned.stderr).contains("WARDLOCK_APT_KEY"));
}

/// A bare Debian root (debootstrap minbase from Debian's mirror), made once per suite and
/// kept under /var/cache/wardlock-test/roots/, outside any checkout; each test works on a
/// fresh copy. Unmounts what it mounted and stops what it started when dropped.
struct DebianRoot {
    suite: &'static str,
    dir: tempfile::TempDir,
    proc_mounted: bool,
}

const CACHE: &str = "/var/cache/wardlock-test";

/// Where the harness keeps wardlockd's output and process ID inside a root; removed
/// when it stops wardlockd, as systemd would keep them out of the root.
const HARNESS_LOG: &str = "/run/wardlockd.log";

impl DebianRoot {
    fn fresh(suite: &'static str) -> DebianRoot {
        let cached = Path::new(CACHE).join(format!("roots/debian-{suite}-minbase"));
        if !cached.join("etc/debian_version").exists() {
            // Made beside it and renamed, so an interrupted run leaves no half root behind.
            let making = Path::new(CACHE).join(format!("roots/.making-{suite}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&making);
            std::fs::create_dir_all(&making).unwrap();
            let out = Command::new("debootstrap")
                .args(["--variant=minbase", suite])
                .arg(&making)
                .arg("http://deb.debian.org/debian")
                .output()
                .unwrap();
            assert!(out.status.success(), "debootstrap {suite}: {}", String::from_utf8_lossy(&out.stdout));
            let _ = std::fs::remove_dir_all(&cached);
            std::fs::rename(&making, &cached).unwrap();
        }
        let root = Self::copy_of(suite, &cached);
        root.set_machine_id("5eed0000000000000000000000000001");
        // What the installer writes on a real machine (debootstrap leaves it out).
        std::fs::write(root.path().join("etc/hosts"), "127.0.0.1\tlocalhost\n::1\tlocalhost\n").unwrap();
        root
    }

    /// `from` copied whole into a new root (the kernel's /proc left out), with its own /proc.
    fn copy_of(suite: &'static str, from: &Path) -> DebianRoot {
        let dir = tempfile::Builder::new().prefix("wardlock-root-").tempdir_in("/var/tmp").unwrap();
        let copied = Command::new("cp")
            .args(["-a", "--one-file-system"])
            .arg(format!("{}/.", from.display()))
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(copied.success());
        let mut root = DebianRoot { suite, dir, proc_mounted: false };
        std::fs::create_dir_all(root.path().join("proc")).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "proc", "proc"])
            .arg(root.path().join("proc"))
            .status()
            .unwrap();
        assert!(mounted.success(), "mount proc in the root");
        root.proc_mounted = true;
        root
    }

    /// This root as a disk image cloned onto another machine: every file, another machine ID.
    fn cloned(&self, machine_id: &str) -> DebianRoot {
        let clone = Self::copy_of(self.suite, self.path());
        clone.set_machine_id(machine_id);
        clone
    }

    fn set_machine_id(&self, id: &str) {
        std::fs::write(self.path().join("etc/machine-id"), format!("{id}\n")).unwrap();
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs a shell command inside the root; answers its exit status and output.
    fn sh(&self, script: &str) -> (bool, String) {
        self.sh_on(None, script)
    }

    /// As [`sh`](Self::sh), on a machine named `hostname` (its own UTS namespace).
    fn sh_on(&self, hostname: Option<&str>, script: &str) -> (bool, String) {
        let mut command = Command::new("unshare");
        command.arg("--uts").arg("chroot").arg(self.path()).args([
            "/usr/bin/env",
            "-i",
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            "DEBIAN_FRONTEND=noninteractive",
            "LC_ALL=C",
        ]);
        let script = match hostname {
            Some(name) => format!("hostname {name} && {script}"),
            None => script.to_owned(),
        };
        let out = command.args(["sh", "-c", &script]).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    }

    /// The packages in `debs` as a signed repository inside the root (a throw-away key),
    /// in apt's sources with `Signed-By`.
    fn publish(&self, debs: &Path) {
        let work = tempfile::tempdir().unwrap();
        let home = work.path().join("gnupg");
        let key = signing_key(&home, "Wardlock test repository <it@example.invalid>");
        let repo = self.path().join("srv/wardlock");
        let out = Command::new("bash")
            .arg(workspace().join("scripts/apt-repo.sh"))
            .arg(&repo)
            .env("GNUPGHOME", &home)
            .env("WARDLOCK_APT_KEY", &key)
            .env("WARDLOCK_DEBS", debs)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::copy(
            repo.join("wardlock-archive-keyring.gpg"),
            self.path().join("usr/share/keyrings/wardlock-archive-keyring.gpg"),
        )
        .unwrap();
        std::fs::write(
            self.path().join("etc/apt/sources.list.d/wardlock.list"),
            "deb [signed-by=/usr/share/keyrings/wardlock-archive-keyring.gpg] file:/srv/wardlock stable main\n",
        )
        .unwrap();
    }

    /// `apt-get update`, then `apt-get ARGS`, unattended, with the cached archives.
    fn apt(&self, args: &str) -> (bool, String) {
        self.archives(true);
        let done = self.sh(&format!("apt-get update -qq && apt-get -y -qq {args}"));
        self.archives(false);
        done
    }

    /// The packages Debian's mirror gave earlier runs, so that each run fetches only what
    /// is new; and back again after.
    fn archives(&self, into_root: bool) {
        let cache = Path::new(CACHE).join(format!("apt-archives/{}", self.suite));
        std::fs::create_dir_all(&cache).unwrap();
        let root = self.path().join("var/cache/apt/archives");
        let (from, to) = if into_root { (&cache, &root) } else { (&root, &cache) };
        for entry in std::fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "deb")
                && !path.file_name().unwrap().to_string_lossy().starts_with("wardlock")
            {
                let _ = std::fs::copy(&path, to.join(path.file_name().unwrap()));
            }
        }
    }

    /// wardlockd as its installed units say (no systemd runs in a chroot): the
    /// wardlock-identity unit's `ExecStart` as root, then wardlockd's `ExecStart` as its own
    /// account with the data key decrypted into a directory only it reads, on a machine
    /// named `hostname` (the default workstation ID).
    fn start_wardlockd(&self, hostname: &str) {
        let (started, said) = self.sh_on(
            Some(hostname),
            &format!(
                "identity=$(sed -n 's/^ExecStart=//p' /lib/systemd/system/wardlock-identity.service) && $identity \
                 && exec_start=$(sed -n 's/^ExecStart=//p' /lib/systemd/system/wardlockd.service) \
                 && install -d -m 0755 -o wardlock -g wardlock /run/wardlock && install -d -m 0700 -o wardlock -g wardlock /var/lib/wardlock \
                 && install -d -m 0700 -o wardlock /run/credentials && systemd-creds decrypt --name=wardlock-data-key \
                    /etc/wardlock/credentials/wardlock-data-key.cred /run/credentials/wardlock-data-key \
                 && chown wardlock /run/credentials/wardlock-data-key \
                 && {{ CREDENTIALS_DIRECTORY=/run/credentials setpriv --reuid wardlock --regid wardlock --init-groups $exec_start >{HARNESS_LOG} 2>&1 & echo $! >/run/wardlockd.pid; }} \
                 && for i in $(seq 100); do [ -S /run/wardlock/agent.sock ] && break; sleep 0.1; done; test -S /run/wardlock/agent.sock"
                // (the socket's appearing is the only sign a process outside systemd gives: polled, with a deadline)
            ),
        );
        assert!(started, "{said}\n{}", self.wardlockd_log());
    }

    /// SIGTERM, as `systemctl stop` sends, and wait for it to exit; then what systemd
    /// removes when a unit stops (its runtime directory and credentials).
    fn stop_wardlockd(&self) {
        let (stopped, said) = self.sh(
            "pid=$(cat /run/wardlockd.pid) && kill -TERM $pid \
             && for i in $(seq 300); do kill -0 $pid 2>/dev/null || break; sleep 0.05; done; ! kill -0 $pid 2>/dev/null \
             && rm -rf /run/wardlock /run/credentials /run/wardlockd.pid",
        );
        assert!(stopped, "{said}\n{}", self.wardlockd_log());
    }

    fn wardlockd_log(&self) -> String {
        std::fs::read_to_string(self.path().join(HARNESS_LOG.trim_start_matches('/'))).unwrap_or_default()
    }

    /// `wardlockctl agent status --json` inside the root.
    fn status(&self) -> serde_json::Value {
        let (answered, status) = self.sh("wardlockctl agent status --json");
        assert!(answered, "{status}\n{}", self.wardlockd_log());
        serde_json::from_str(&status).unwrap_or_else(|e| panic!("{e}: {status}"))
    }

    /// The audit log of a database in the root, read with this build's wardlockctl.
    fn audit(&self, db: &str) -> Vec<serde_json::Value> {
        let out = Command::new(wardlock_testkit::bin("wardlockctl"))
            .args(["audit", "export", "--db"])
            .arg(self.path().join(db.trim_start_matches('/')))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Every path in the root (its own file system only).
    fn files(&self) -> std::collections::BTreeSet<String> {
        let (listed, out) = self.sh("find / -xdev");
        assert!(listed, "{out}");
        out.lines().map(str::to_owned).collect()
    }
}

impl Drop for DebianRoot {
    fn drop(&mut self) {
        // Whatever still runs inside the root, then the mount; only then is it deleted.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!("for p in /proc/[0-9]*; do [ \"$(readlink $p/root)\" = {} ] && kill -9 ${{p#/proc/}}; done; true", self.path().display()))
            .status();
        if self.proc_mounted {
            let _ = Command::new("umount").arg("-l").arg(self.path().join("proc")).status();
        }
    }
}

#[test]
fn a_bare_debian_12_installs_the_workstation_from_the_signed_repository_and_its_service_answers() {
    installs_from_the_signed_repository_and_the_service_answers("bookworm");
}

/// The packages are built on Debian 12; the next release takes them as they are.
#[test]
fn a_bare_debian_13_installs_the_same_packages_and_its_service_answers() {
    installs_from_the_signed_repository_and_the_service_answers("trixie");
}

fn installs_from_the_signed_repository_and_the_service_answers(suite: &'static str) {
    let root = DebianRoot::fresh(suite);
    root.publish(&workspace().join("target/debian"));

    // Every dependency comes from Debian's own packages; the maintainer scripts run
    // unattended.
    let started = std::time::Instant::now();
    let (installed, said) = root.apt("install wardlock");
    let took = started.elapsed();
    assert!(installed, "{said}");
    eprintln!("install of wardlock into a bare {}: {:.1} s", root.suite, took.as_secs_f64());
    for program in ["wardlockd", "wardlockctl", "wardlock"] {
        let (ran, version) = root.sh(&format!("/usr/bin/{program} --version"));
        assert!(ran && version.starts_with(&format!("{program} ")), "{program}: {version}");
    }
    let (_, account) = root.sh("id -u wardlock && getent group wardlock-session");
    assert!(account.contains("wardlock-session"), "{account}");
    // No identity is made at install: an image built from this root carries none.
    let (sealed, _) = root.sh("test -e /etc/wardlock/credentials/wardlock-data-key.cred");
    assert!(!sealed, "a data key was made at install, before this machine's first boot");
    for unit in ["wardlockd.service", "wardlock-identity.service"] {
        let (verified, said) = root.sh(&format!("systemd-analyze verify /lib/systemd/system/{unit}"));
        assert!(verified && said.trim().is_empty(), "{unit}: {said}");
    }
    // A user manager needs a runtime directory; a private one will do.
    let (verified, said) = root.sh("mkdir -p -m 0700 /run/user-verify && XDG_RUNTIME_DIR=/run/user-verify \
         systemd-analyze --user verify /usr/lib/systemd/user/wardlock-guard.service");
    assert!(verified && said.trim().is_empty(), "the guard's unit: {said}");
    for link in [
        "/etc/systemd/system/multi-user.target.wants/wardlockd.service",
        "/etc/systemd/system/wardlockd.service.requires/wardlock-identity.service",
    ] {
        let (enabled, _) = root.sh(&format!("test -L {link}"));
        assert!(enabled, "{link} is missing: the unit is not enabled");
    }

    root.start_wardlockd("ws-install");
    let status = root.status();
    assert_eq!(status["workstation_id"], "ws-install", "{status}");
    // The guard wardlockd accepts is the one the package installed.
    let (_, policy) = root.sh("wardlockctl policy check /etc/wardlock/policy.toml");
    assert!(!policy.contains("/usr/local/bin/wardlock"), "{policy}");
}

/// Polls `check` until it holds; on timeout, says `what` and what `root`'s wardlockd said.
fn eventually(root: &DebianRoot, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}\n{}\n{}",
            root.sh("wardlockctl agent status").1,
            root.wardlockd_log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100)); // another process's state, polled
    }
}

/// The same package with a later Debian revision: a newer build, for the upgrade.
fn newer_build(of: &Path, into: &Path) -> String {
    let unpacked = tempfile::tempdir().unwrap();
    let tree = unpacked.path().join("tree");
    assert!(Command::new("dpkg-deb").arg("-R").arg(of).arg(&tree).status().unwrap().success());
    let control = tree.join("DEBIAN/control");
    let text = std::fs::read_to_string(&control).unwrap();
    let version = text.lines().find_map(|l| l.strip_prefix("Version: ")).unwrap().to_owned();
    let newer = format!("{}-{}", version.rsplit_once('-').unwrap().0, 2);
    std::fs::write(&control, text.replace(&format!("Version: {version}"), &format!("Version: {newer}")))
        .unwrap();
    let out = into.join(format!("wardlock_{newer}_amd64.deb"));
    assert!(Command::new("dpkg-deb")
        .args(["-b", "--root-owner-group"])
        .arg(&tree)
        .arg(&out)
        .output()
        .unwrap()
        .status
        .success());
    newer
}

/// Hospital IT's whole round on one Debian 12 workstation, against a collector on
/// 127.0.0.1: an image prepared with IT's files in /etc/wardlock and the package, its
/// first boot enrolling with no clicks; a clone of it enrolling as another workstation;
/// an upgrade keeping an entry the collector had not yet received; and purges that lose
/// nothing: unsynced entries left verified in /var/backups, and after a sync, no file of
/// Wardlock left behind.
#[test]
fn a_golden_image_enrolls_clones_upgrades_and_purges_without_losing_an_entry() {
    use wardlock_testkit::collector::{Backend, Collector};
    let mut collector = Collector::start_new(Backend::Sqlite);
    let workstations = |c: &Collector| -> Vec<String> {
        let (_, body) = c.call("GET", "/api/v1/workstations", None, None);
        serde_json::from_str::<Vec<serde_json::Value>>(&body)
            .unwrap_or_default()
            .iter()
            .filter_map(|w| w["id"].as_str().map(str::to_owned))
            .collect()
    };
    let root = DebianRoot::fresh("bookworm");
    root.publish(&workspace().join("target/debian"));
    let (updated, said) = root.apt("update");
    assert!(updated, "{said}");
    let before_install = root.files();

    // The image: IT's files first (a drop-in with the collector, its CA, the enrollment
    // secret as copied, readable by root only), then the package.
    let etc = root.path().join("etc/wardlock");
    std::fs::create_dir_all(etc.join("policy.d")).unwrap();
    // A CA certificate is public: readable by all, as wardlockd's own account must read it.
    std::fs::write(etc.join("collector-ca.pem"), std::fs::read(collector.cert()).unwrap()).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(etc.join("collector-ca.pem"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(
        etc.join("policy.d/50-site.toml"),
        format!("[sync]\nendpoint = \"{}\"\nca_file = \"/etc/wardlock/collector-ca.pem\"\n", collector.url()),
    )
    .unwrap();
    std::fs::write(etc.join("enroll-secret"), &collector.secret).unwrap();
    let (installed, said) = root.apt("install wardlock");
    assert!(installed, "{said}");

    // First boot of the image's machine: it enrolls by itself.
    root.start_wardlockd("ws-image");
    eventually(&root, "ws-image in the collector's list", || {
        workstations(&collector).contains(&"ws-image".to_owned())
    });
    eventually(&root, "ws-image's backlog delivered", || root.status()["audit_unsent"] == 0);
    root.stop_wardlockd();

    // Cloned onto another machine (its own host name and machine ID).
    let clone = root.cloned("c10e0000000000000000000000000002");
    clone.start_wardlockd("ws-bed-12");
    eventually(&clone, "ws-bed-12 in the collector's list", || {
        workstations(&collector).contains(&"ws-bed-12".to_owned())
    });
    let clone_log = clone.audit("/var/lib/wardlock/wardlock.db");
    assert_eq!(clone_log[0]["kind"], "workstation_identity_made", "{:?}", clone_log[0]);
    assert_eq!(clone_log[0]["workstation"], "ws-bed-12");
    let (kept, listing) = clone.sh("ls /etc/wardlock/credentials/ /var/lib/wardlock/");
    assert!(
        kept && listing.contains("wardlock-data-key.cred.from-machine-")
            && listing.contains("wardlock.db.from-machine-"),
        "{listing}"
    );
    assert!(workstations(&collector).contains(&"ws-image".to_owned()));

    // The clone, with the collector down, writes entries it cannot send; then it is
    // purged: they are left, verified, in /var/backups.
    collector.kill9();
    clone.stop_wardlockd();
    clone.start_wardlockd("ws-bed-12");
    clone.stop_wardlockd();
    let unsent = clone.audit("/var/lib/wardlock/wardlock.db");
    let (purged, said) = clone.apt("purge wardlock");
    assert!(purged, "{said}");
    assert!(said.contains("/var/backups/wardlock/"), "purge does not say where the entries went: {said}");
    let backups: Vec<PathBuf> = std::fs::read_dir(clone.path().join("var/backups/wardlock"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let own = backups
        .iter()
        .find(|p| p.to_string_lossy().contains("ws-bed-12-wardlock.db-"))
        .unwrap_or_else(|| panic!("{backups:?}"));
    let verified = Command::new(wardlock_testkit::bin("wardlockctl"))
        .args(["audit", "verify", "--db"])
        .arg(own)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verified.stdout);
    assert!(
        verified.status.success() && said.contains(&format!("intact: {} entries", unsent.len())),
        "{said}"
    );
    let (gone, _) = clone.sh("test ! -e /var/lib/wardlock && test ! -e /etc/wardlock");
    assert!(gone, "purge kept the state it had copied out");
    drop(clone);

    // The image's machine, upgraded while an entry is not yet at the collector.
    root.start_wardlockd("ws-image");
    root.stop_wardlockd();
    let before = root.audit("/var/lib/wardlock/wardlock.db");
    let pending = before.last().unwrap().clone();
    let newer = tempfile::tempdir().unwrap();
    let version = newer_build(&package("wardlock"), newer.path());
    std::fs::copy(
        package("wardlock-collector"),
        newer.path().join(package("wardlock-collector").file_name().unwrap()),
    )
    .unwrap();
    root.publish(newer.path());
    let (upgraded, said) = root.apt("install wardlock");
    assert!(upgraded, "{said}");
    let (_, installed) = root.sh("dpkg-query -W -f '${Version}' wardlock");
    assert_eq!(installed, version);
    let after = root.audit("/var/lib/wardlock/wardlock.db");
    assert_eq!(after[..before.len()], before[..], "the upgrade changed the audit log");
    collector.start();
    root.start_wardlockd("ws-image");
    eventually(&root, "the entry from before the upgrade at the collector", || {
        collector.all_events().iter().any(|e| {
            e.workstation == "ws-image"
                && e.seq == pending["seq"].as_u64().unwrap()
                && hex(&e.hash) == pending["hash"].as_str().unwrap()
        })
    });
    let (verified, said) = root.sh("wardlockctl audit verify --db /var/lib/wardlock/wardlock.db");
    assert!(verified, "{said}");

    // Purged after everything reached the collector (the stop entry included, delivered
    // as wardlockd stops): nothing of Wardlock is left.
    root.stop_wardlockd();
    let (purged, said) = root.apt("purge --autoremove wardlock");
    assert!(purged, "{said}");
    assert!(said.contains("reached the collector"), "{said}");
    assert!(!root.path().join("var/backups/wardlock").exists(), "a backup of entries the collector holds");
    // Wardlock's: every new path with its name, and every path its package held. What
    // apt leaves of the dependencies it pulled in (ca-certificates' store) is Debian's;
    // the test's own repository and wardlockd's log are the harness's.
    let package_paths = contents(&package("wardlock"));
    let left: Vec<String> = root
        .files()
        .difference(&before_install)
        .filter(|p| p.to_lowercase().contains("wardlock") || package_paths.contains(p))
        .filter(|p| !p.starts_with("/srv/wardlock/") && p.as_str() != HARNESS_LOG)
        .cloned()
        .collect();
    assert_eq!(left, Vec::<String>::new(), "left behind by install and purge");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `ansible-playbook` from the test tools (scripts/requirements-tools.txt) against `root`
/// over the chroot connection; answers whether it succeeded and what it printed.
fn ansible_playbook(
    root: &DebianRoot,
    work: &Path,
    playbook: &str,
    group: &str,
    vars: &serde_json::Value,
) -> (bool, String) {
    let inventory = work.join("inventory.ini");
    std::fs::write(
        &inventory,
        format!(
            "[{group}]\nward4-pc ansible_connection=community.general.chroot ansible_host={} ansible_become=false\n",
            root.path().display()
        ),
    )
    .unwrap();
    let vars_file = work.join("vars.json");
    std::fs::write(&vars_file, vars.to_string()).unwrap();
    let out = Command::new(workspace().join(".venv-tools/bin/ansible-playbook"))
        .arg("-i")
        .arg(&inventory)
        .arg(workspace().join("installers/ansible").join(playbook))
        .arg("-e")
        .arg(format!("@{}", vars_file.display()))
        .env("ANSIBLE_ROLES_PATH", workspace().join("installers/ansible/roles"))
        .env("ANSIBLE_LOCAL_TEMP", work.join("ansible-tmp"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_PYTHON_INTERPRETER", "/usr/bin/python3")
        .output()
        .expect("ansible-playbook is in .venv-tools (make setup)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The recap line's counter `name` for the host.
fn recap(said: &str, name: &str) -> Option<u32> {
    let line = said.lines().rev().find(|l| l.starts_with("ward4-pc") && l.contains("ok="))?;
    line.split_whitespace().find_map(|f| f.strip_prefix(&format!("{name}="))?.parse().ok())
}

/// IT's Ansible role against a bare Debian 12 root (Python 3 on it, as Ansible needs):
/// repository, package, the policy drop-in with the collector and a trusted key, the CA
/// and the enrollment secret; the workstation then enrolls, and a second run, which also
/// asks `wardlockctl agent status`, changes nothing.
#[test]
fn the_ansible_role_sets_up_a_workstation_that_enrolls_and_a_second_run_changes_nothing() {
    use wardlock_testkit::collector::{Backend, Collector};
    let collector = Collector::start_new(Backend::Sqlite);
    let root = DebianRoot::fresh("bookworm");
    root.publish(&workspace().join("target/debian"));
    let (ready, said) = root.apt("install --no-install-recommends python3 python3-apt");
    assert!(ready, "{said}");
    // The role adds the repository itself, from the key on the control machine.
    std::fs::remove_file(root.path().join("etc/apt/sources.list.d/wardlock.list")).unwrap();
    let work = tempfile::tempdir().unwrap();
    let signing = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
    let mut vars = serde_json::json!({
        "wardlock_apt_url": "file:/srv/wardlock",
        "wardlock_apt_keyring": root.path().join("srv/wardlock/wardlock-archive-keyring.gpg"),
        "wardlock_group": "default",
        "wardlock_collector_url": collector.url(),
        "wardlock_collector_ca": std::fs::read_to_string(collector.cert()).unwrap(),
        "wardlock_enroll_secret": collector.secret,
        "wardlock_trusted_keys": [signing],
        "wardlock_policy_extra": "[lock]\nidle_timeout = \"4m\"\n",
    });

    let (ran, said) = ansible_playbook(&root, work.path(), "workstation.yml", "wardlock_workstations", &vars);
    assert!(ran, "{said}");
    assert_eq!(recap(&said, "failed"), Some(0), "{said}");
    assert!(!said.contains(&collector.secret), "the enrollment secret in Ansible's output");
    let (checked, policy) = root.sh("wardlockctl policy check /etc/wardlock/policy.toml");
    assert!(
        checked && policy.contains("idle_timeout = \"4m\"") && policy.contains(&collector.url()),
        "{policy}"
    );
    let (_, mode) = root.sh("stat -c '%a %U %G' /etc/wardlock/enroll-secret");
    assert_eq!(mode.trim(), "640 root wardlock");

    // First boot (no systemd in a chroot: started as its units say); then the role again,
    // now also asking wardlockd whether it reaches the collector.
    root.start_wardlockd("ward4-pc");
    vars["wardlock_verify"] = true.into();
    let (ran, said) = ansible_playbook(&root, work.path(), "workstation.yml", "wardlock_workstations", &vars);
    assert!(ran, "{said}");
    assert_eq!(recap(&said, "changed"), Some(0), "the second run changed something: {said}");
    assert!(said.contains("collector         reachable"), "{said}");
    let (_, body) = collector.call("GET", "/api/v1/workstations", None, None);
    assert!(body.contains("\"ward4-pc\""), "{body}");
}

#[test]
fn both_playbooks_pass_ansibles_syntax_check() {
    for playbook in ["workstation.yml", "collector.yml"] {
        let out = Command::new(workspace().join(".venv-tools/bin/ansible-playbook"))
            .args(["--syntax-check", "-i", "localhost,"])
            .arg(workspace().join("installers/ansible").join(playbook))
            .env("ANSIBLE_ROLES_PATH", workspace().join("installers/ansible/roles"))
            .output()
            .expect("ansible-playbook is in .venv-tools (make setup)");
        assert!(out.status.success(), "{playbook}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// The collector's role against a bare Debian 12 root: the package, its certificate and
/// key, the data key made once; the collector started as its unit says answers /healthz,
/// and a second run, which asks it, changes nothing.
#[test]
fn the_ansible_collector_role_sets_up_a_collector_that_answers_and_a_second_run_changes_nothing() {
    let root = DebianRoot::fresh("bookworm");
    root.publish(&workspace().join("target/debian"));
    let (ready, said) = root.apt("install --no-install-recommends python3 python3-apt");
    assert!(ready, "{said}");
    let work = tempfile::tempdir().unwrap();
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
        ])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(work.path().join("key.pem"))
        .arg("-out")
        .arg(work.path().join("cert.pem"))
        .output()
        .expect("openssl (make setup installs it)");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let mut vars = serde_json::json!({
        "wardlock_apt_url": "file:/srv/wardlock",
        "wardlock_apt_keyring": root.path().join("srv/wardlock/wardlock-archive-keyring.gpg"),
        "wardlock_collector_tls_cert": std::fs::read_to_string(work.path().join("cert.pem")).unwrap(),
        "wardlock_collector_tls_key": std::fs::read_to_string(work.path().join("key.pem")).unwrap(),
    });
    let (ran, said) = ansible_playbook(&root, work.path(), "collector.yml", "wardlock_collectors", &vars);
    assert!(ran, "{said}");
    assert!(!said.contains("PRIVATE KEY"), "the TLS key in Ansible's output");
    let (_, modes) = root.sh("stat -c '%n %a' /etc/wardlock-collector/key.pem /etc/credstore.encrypted/wardlock-collector.data-key");
    assert!(modes.contains("key.pem 600") && modes.contains("wardlock-collector.data-key 600"), "{modes}");

    // Started as its unit says (no systemd in a chroot): the credentials it loads put
    // where systemd would, then its ExecStart, on the port the unit names.
    let unit =
        std::fs::read_to_string(root.path().join("lib/systemd/system/wardlock-collector.service")).unwrap();
    let exec_start = unit.replace("\\\n", " ");
    let exec_start = exec_start.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap();
    let (started, said) = root.sh(&format!(
        "install -d -m 0700 /run/collector-credentials /var/lib/wardlock-collector \
         && cp /etc/wardlock-collector/key.pem /run/collector-credentials/tls-key \
         && systemd-creds decrypt --name=data-key /etc/credstore.encrypted/wardlock-collector.data-key /run/collector-credentials/data-key \
         && {{ CREDENTIALS_DIRECTORY=/run/collector-credentials; {exec_start} >/run/collector.log 2>&1 & }}"
    ));
    assert!(started, "{said}");
    vars["wardlock_collector_verify"] = true.into();
    let (ran, said) = ansible_playbook(&root, work.path(), "collector.yml", "wardlock_collectors", &vars);
    let log = std::fs::read_to_string(root.path().join("run/collector.log")).unwrap_or_default();
    assert!(ran, "{said}\n{log}");
    assert_eq!(recap(&said, "changed"), Some(0), "the second run changed something: {said}");
    assert_eq!(recap(&said, "failed"), Some(0), "{said}");
}
