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
    ] {
        assert!(files.iter().any(|f| f == path), "{path} is not in the package: {files:#?}");
    }
    assert!(!files.iter().any(|f| f.contains("wardlockd")), "no workstation part in the collector's package");
    assert!(file(&deb, "/lib/systemd/system/wardlock-collector.service")
        .contains("ExecStart=/usr/bin/wardlock-collector serve"));
    let depends = field(&deb, "Depends");
    assert!(depends.split(", ").any(|d| d.starts_with("libc6")), "{depends}");
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
        let dir = tempfile::Builder::new().prefix("wardlock-root-").tempdir_in("/var/tmp").unwrap();
        let copied = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", cached.display()))
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(copied.success());
        let mut root = DebianRoot { suite, dir, proc_mounted: false };
        let mounted = Command::new("mount")
            .args(["-t", "proc", "proc"])
            .arg(root.path().join("proc"))
            .status()
            .unwrap();
        assert!(mounted.success(), "mount proc in the root");
        root.proc_mounted = true;
        root
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs a shell command inside the root; answers its exit status and output.
    fn sh(&self, script: &str) -> (bool, String) {
        let out = Command::new("chroot")
            .arg(self.path())
            .args([
                "/usr/bin/env",
                "-i",
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                "DEBIAN_FRONTEND=noninteractive",
                "LC_ALL=C",
            ])
            .args(["sh", "-c", script])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
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
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("gnupg");
    let key = signing_key(&home, "Wardlock test repository <it@example.invalid>");
    let repo = root.path().join("srv/wardlock");
    assert!(make_repo(&repo, &home, &key).status.success());
    std::fs::copy(
        repo.join("wardlock-archive-keyring.gpg"),
        root.path().join("usr/share/keyrings/wardlock-archive-keyring.gpg"),
    )
    .unwrap();
    std::fs::write(
        root.path().join("etc/apt/sources.list.d/wardlock.list"),
        "deb [signed-by=/usr/share/keyrings/wardlock-archive-keyring.gpg] file:/srv/wardlock stable main\n",
    )
    .unwrap();

    // Every dependency comes from Debian's own packages; the maintainer scripts run
    // unattended.
    root.archives(true);
    let started = std::time::Instant::now();
    let (installed, said) = root.sh("apt-get update -qq && apt-get install -y -qq wardlock");
    let took = started.elapsed();
    root.archives(false);
    assert!(installed, "{said}");
    eprintln!("install of wardlock into a bare {}: {:.1} s", root.suite, took.as_secs_f64());
    for program in ["wardlockd", "wardlockctl", "wardlock"] {
        let (ran, version) = root.sh(&format!("/usr/bin/{program} --version"));
        assert!(ran && version.starts_with(&format!("{program} ")), "{program}: {version}");
    }
    let (_, account) = root.sh("id -u wardlock && getent group wardlock-session");
    assert!(account.contains("wardlock-session"), "{account}");
    let (sealed, _) = root.sh("test -s /etc/wardlock/credentials/wardlock-data-key.cred");
    assert!(sealed, "the data key was not sealed at install");
    let (verified, said) = root.sh("systemd-analyze verify /lib/systemd/system/wardlockd.service");
    assert!(verified && said.trim().is_empty(), "wardlockd.service: {said}");
    // A user manager needs a runtime directory; a private one will do.
    let (verified, said) = root.sh("mkdir -p -m 0700 /run/user-verify && XDG_RUNTIME_DIR=/run/user-verify \
         systemd-analyze --user verify /usr/lib/systemd/user/wardlock-guard.service");
    assert!(verified && said.trim().is_empty(), "the guard's unit: {said}");
    let (enabled, _) = root.sh("test -L /etc/systemd/system/multi-user.target.wants/wardlockd.service");
    assert!(enabled, "wardlockd.service is not enabled");

    // wardlockd started as its unit says (no systemd runs in a chroot): as its own account,
    // with the data key decrypted into a directory only it reads; then asked for its status.
    let exec_start = std::fs::read_to_string(root.path().join("lib/systemd/system/wardlockd.service"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart=").map(str::to_owned))
        .unwrap();
    let (started, said) = root.sh(&format!(
        "install -d -m 0755 -o wardlock -g wardlock /run/wardlock && install -d -m 0700 -o wardlock -g wardlock /var/lib/wardlock \
         && install -d -m 0700 -o wardlock /run/credentials && systemd-creds decrypt --name=wardlock-data-key \
            /etc/wardlock/credentials/wardlock-data-key.cred /run/credentials/wardlock-data-key \
         && chown wardlock /run/credentials/wardlock-data-key \
         && (CREDENTIALS_DIRECTORY=/run/credentials setpriv --reuid wardlock --regid wardlock --init-groups {exec_start} >/var/log/wardlockd.log 2>&1 &) \
         && for i in $(seq 100); do [ -S /run/wardlock/agent.sock ] && break; sleep 0.1; done; test -S /run/wardlock/agent.sock"
        // (the socket's appearing is the only sign a process outside systemd gives: polled, with a deadline)
    ));
    let log = std::fs::read_to_string(root.path().join("var/log/wardlockd.log")).unwrap_or_default();
    assert!(started, "{said}\n{log}");
    let (answered, status) = root.sh("wardlockctl agent status");
    assert!(answered && status.contains("audit entries"), "{status}\n{log}");
}
