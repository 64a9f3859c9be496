//! `wardlockctl --server URL --token TOKEN` against a real collector over TLS.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::util::{s, Ctl};

struct Collector {
    dir: tempfile::TempDir,
    child: Child,
    url: String,
    token: String,
}

impl Collector {
    fn start() -> Collector {
        let exe = PathBuf::from(env!("CARGO_BIN_EXE_wardlockctl")).with_file_name("wardlock-collector");
        assert!(exe.exists(), "{} is missing: run `cargo build --workspace` (or `make test`)", exe.display());
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(exe)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--dev"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        assert!(lines.next().unwrap().unwrap().contains("listening on"));
        let token = std::fs::read_to_string(dir.path().join("admin-token")).unwrap();
        Collector { dir, child, url: format!("https://localhost:{port}"), token }
    }

    fn args<'a>(&'a self, ca: &'a str, token: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["--server", self.url.as_str(), "--token", token, "--ca-file", ca];
        v.extend_from_slice(rest);
        v
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn directory_policies_secrets_events_and_reports_through_the_collector() {
    let collector = Collector::start();
    let ctl = Ctl::new();
    let cert = collector.dir.path().join("tls/cert.pem");
    let ca = s(&cert);
    let token = collector.token.as_str();

    let secret = ctl
        .run(&collector.args(
            ca,
            token,
            &[
                "enroll-secret",
                "create",
                "--label",
                "ward-4",
                "--group",
                "ward4",
                "--expires",
                "7d",
                "--uses",
                "40",
            ],
        ))
        .ok();
    assert_eq!(secret.stdout.trim().len(), 64, "{}", secret.stdout);
    assert!(secret.stderr.contains("up to 40 workstations"), "{}", secret.stderr);
    let listed = ctl.run(&collector.args(ca, token, &["enroll-secret", "list"])).ok();
    let ward4 =
        listed.stdout.lines().find(|l| l.ends_with("ward-4")).unwrap_or_else(|| panic!("{}", listed.stdout));
    assert!(ward4.contains("usable") && ward4.contains("0/40") && ward4.contains(" ward4 "), "{ward4}");
    assert!(!listed.stdout.contains(secret.stdout.trim()), "the list shows no secret");
    let id = ward4.split_whitespace().next().unwrap().to_owned();
    ctl.run(&collector.args(ca, token, &["enroll-secret", "revoke", &id])).ok();
    let listed = ctl.run(&collector.args(ca, token, &["enroll-secret", "list"])).ok();
    assert!(listed.stdout.lines().any(|l| l.starts_with(&id) && l.contains("revoked")), "{}", listed.stdout);
    let unknown = ctl.run(&collector.args(ca, token, &["enroll-secret", "revoke", "000000000000"]));
    assert_eq!(unknown.code, 1);
    assert!(
        unknown.stderr.contains("404") && unknown.stderr.contains("no enrollment secret"),
        "{}",
        unknown.stderr
    );
    let code = ctl
        .run(&collector.args(ca, token, &["workstation", "re-enroll", "ward4-pc2", "--group", "icu"]))
        .ok();
    assert_eq!(code.stdout.trim().len(), 64, "{}", code.stdout);
    assert!(code.stderr.contains("may enroll again once"), "{}", code.stderr);
    let missing = ctl.run(&collector.args(ca, token, &["workstation", "revoke", "no-such-pc"]));
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("no workstation"), "{}", missing.stderr);

    let added = ctl.run_with_stdin(
        &collector.args(
            ca,
            token,
            &["user", "add", "n.nurse", "--name", "Nora Nurse", "--role", "nurse", "--pin-stdin", "--totp"],
        ),
        "730284\n",
    );
    let added = added.ok();
    assert!(added.stdout.contains("otpauth://totp/"), "{}", added.stdout);
    let list = ctl.run(&collector.args(ca, token, &["user", "list"])).ok();
    assert!(list.stdout.contains("n.nurse") && list.stdout.contains("active"), "{}", list.stdout);
    let weak = ctl.run_with_stdin(
        &collector.args(ca, token, &["user", "add", "w", "--name", "W", "--role", "nurse", "--pin-stdin"]),
        "123456\n",
    );
    assert_eq!(weak.code, 1);
    assert!(weak.stderr.contains("PIN refused"), "{}", weak.stderr);
    ctl.run(&collector.args(ca, token, &["user", "disable", "n.nurse"])).ok();
    assert!(ctl.run(&collector.args(ca, token, &["user", "list"])).ok().stdout.contains("disabled"));

    ctl.run(&["policy", "keygen", "--out", s(&ctl.path("keys"))]).ok();
    std::fs::write(ctl.path("icu.toml"), "[lock]\nidle_timeout = \"2m\"\n").unwrap();
    let key = ctl.path("keys/policy-signing.key");
    let signed = ctl.path("icu.signed.json");
    ctl.run(&[
        "policy",
        "sign",
        s(&ctl.path("icu.toml")),
        "--key",
        s(&key),
        "--group",
        "icu",
        "--serial",
        "3",
        "--out",
        s(&signed),
    ])
    .ok();
    let granted =
        ctl.run(&collector.args(ca, token, &["user", "grant-admin", "n.nurse", "--key", s(&key)])).ok();
    assert!(
        granted.stdout.contains("granted the admin role to n.nurse with their current PIN and TOTP until"),
        "{}",
        granted.stdout
    );
    let nobody = ctl.run(&collector.args(ca, token, &["user", "grant-admin", "nobody", "--key", s(&key)]));
    assert_eq!(nobody.code, 1);
    assert!(nobody.stderr.contains("no user \"nobody\""), "{}", nobody.stderr);
    let local = ctl.run(&["user", "grant-admin", "n.nurse", "--key", s(&key)]);
    assert!(local.stderr.contains("--server"), "{}", local.stderr);
    let pushed = ctl.run(&collector.args(ca, token, &["policy", "push", s(&signed), "--group", "icu"])).ok();
    assert!(pushed.stdout.contains("pushed serial 3 for group icu"), "{}", pushed.stdout);
    let again = ctl.run(&collector.args(ca, token, &["policy", "push", s(&signed), "--group", "icu"]));
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("409") && again.stderr.contains("higher --serial"), "{}", again.stderr);

    // Reports and exports in every format, all pages.
    let chain = ctl.run(&collector.args(ca, token, &["report", "chain"])).ok();
    assert_eq!(chain.stdout.trim(), "[]");
    let conflicts =
        ctl.run(&collector.args(ca, token, &["report", "conflicts", "--workstation", "ws-1"])).ok();
    assert_eq!(conflicts.stdout.trim(), "[]");
    for format in ["json", "csv", "fhir"] {
        let out = ctl.path(&format!("events.{format}"));
        ctl.run(&collector.args(ca, token, &["events", "--format", format, "--out", s(&out)])).ok();
        assert!(out.exists());
    }
    let fhir: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ctl.path("events.fhir")).unwrap()).unwrap();
    assert_eq!(fhir["resourceType"], "Bundle");
    // The console's answers are the tool's too: the fleet, and a review of break-glass.
    let fleet = ctl.run(&collector.args(ca, token, &["report", "fleet", "--group", "nowhere"])).ok();
    assert_eq!(fleet.stdout.trim(), "[]");
    let review = ctl.run(&collector.args(ca, token, &["report", "review", "ws-1", "1", "--note", "checked"]));
    assert_eq!(review.code, 1, "{}", review.stdout);
    assert!(
        review.stderr.contains("404") && review.stderr.contains("no break-glass access"),
        "{}",
        review.stderr
    );

    let wrong = ctl.run(&collector.args(ca, "0000", &["report", "silent"]));
    assert_eq!(wrong.code, 1);
    assert!(wrong.stderr.contains("401") && wrong.stderr.contains("API token"), "{}", wrong.stderr);
    let no_server = ctl.run(&["report", "silent"]);
    assert!(no_server.stderr.contains("--server URL --token TOKEN"), "{}", no_server.stderr);
}
