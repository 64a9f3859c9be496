//! The ward's shared OS account against the service's files and socket: another local
//! account cannot read the database, its WAL or the key, and connects only if policy
//! allows it. Needs root to make the accounts (CI runs as root).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::util::{Daemon, FAST_POLICY};

const ALLOWED: &str = "wltest-ward";
const OTHER: &str = "wltest-visitor";

/// Makes a local account unless it exists. Panics when not root, rather than passing
/// a test that checked nothing.
fn account(name: &str) {
    if !crate::util::running_as_root("making OS accounts") {
        return;
    }
    // Tests run in parallel (and two binaries may too): one account maker at a time,
    // machine-wide, and an account made meanwhile by someone else is as good.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(std::env::temp_dir().join("wardlock-test-accounts.lock"))
        .unwrap();
    let _held =
        nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| e).unwrap();
    if Command::new("id").arg(name).output().unwrap().status.success() {
        return;
    }
    let out = Command::new("useradd")
        .args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name])
        .output()
        .unwrap();
    // Exit status 9: the name is taken, by an account made outside this lock.
    assert!(
        out.status.success() || out.status.code() == Some(9),
        "useradd {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn skip() -> bool {
    !nix::unistd::geteuid().is_root()
}

/// Runs `cmd` as `user` and returns (success, stdout, stderr).
fn run_as(user: &str, cmd: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new("runuser")
        .args(["-u", user, "--"])
        .args(cmd)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn another_account_cannot_read_the_database_its_wal_or_the_key() {
    account(OTHER);
    if skip() {
        return;
    }
    let mut d = Daemon::new(FAST_POLICY);
    d.add_user("n.nurse", "Nora Nurse", "nurse", Some("730284"), true);
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d.start();
    assert_eq!(d.client("guard").unlock("n.nurse", Some("730284"), None)["result"], "granted");

    let db = d.db_path();
    let wal = db.with_file_name("wardlock.db-wal");
    let creds = d.dir.path().join("credentials");
    let key = std::fs::read_dir(&creds).unwrap().next().unwrap().unwrap().path();
    assert!(wal.exists(), "the WAL should exist while the service runs");
    assert_eq!(mode(db.parent().unwrap()), 0o700);
    assert_eq!(mode(&creds), 0o700);
    for file in [&db, &wal, &key] {
        assert_eq!(mode(file), 0o600, "{}", file.display());
        let (ok, _, err) = run_as(OTHER, &["cat", file.to_str().unwrap()], &[]);
        assert!(!ok && err.contains("Permission denied"), "{} readable by {OTHER}: {err}", file.display());
    }
    let (ok, _, _) = run_as(OTHER, &["ls", db.parent().unwrap().to_str().unwrap()], &[]);
    assert!(!ok, "the data directory can be listed by {OTHER}");
}

/// Runs inside `runuser`, started by the test below: one hello, the answer on stdout.
#[test]
fn hello_as_another_account_child() {
    let Some(socket) = std::env::var_os("WARDLOCK_TEST_SOCKET") else { return };
    let mut c = crate::util::Client::connect(Path::new(&socket));
    // A refused account is told so at once and may find the socket closed for its hello.
    let _ = c.send_raw(b"{\"type\":\"hello\",\"version\":1,\"client\":\"other account\"}\n");
    println!("ANSWER {}", c.read().expect("no answer at all"));
}

#[test]
fn only_accounts_the_policy_names_may_connect() {
    account(ALLOWED);
    account(OTHER);
    if skip() {
        return;
    }
    let mut d = Daemon::new(&format!("{FAST_POLICY}[service]\nallowed_users = [\"{ALLOWED}\"]\n"));
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d.start();
    // The test binary may sit where other accounts cannot reach; run a copy.
    let exe = d.dir.path().join("daemon-test-client");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = d.socket();
    let args = [
        exe.to_str().unwrap(),
        "--exact",
        "access::hello_as_another_account_child",
        "--nocapture",
        "--test-threads=1",
    ];
    let env = [("WARDLOCK_TEST_SOCKET", socket.to_str().unwrap())];

    let (_, allowed, err) = run_as(ALLOWED, &args, &env);
    assert!(
        allowed.contains(r#"ANSWER {"server":"#) || allowed.contains(r#""type":"hello""#),
        "{allowed}{err}"
    );
    let (_, other, err) = run_as(OTHER, &args, &env);
    assert!(other.contains(r#""code":"not_allowed""#), "{other}{err}");
    assert!(other.contains(OTHER), "the refusal names the account: {other}");
}
