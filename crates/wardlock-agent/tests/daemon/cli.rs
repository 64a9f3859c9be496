//! `wardlockd`'s command line and start-up errors, as IT meets them.

use std::process::Command;

fn wardlockd(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wardlockd")).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_and_help_with_an_example() {
    let (ok, out, _) = wardlockd(&["--version"]);
    assert!(ok && out.starts_with("wardlockd "), "{out}");
    let (ok, out, _) = wardlockd(&["--help"]);
    assert!(ok);
    for needle in ["--config", "--data-dir", "--socket", "--policy", "--dev", "Examples:", "SIGHUP"] {
        assert!(out.contains(needle), "--help lacks {needle}: {out}");
    }
}

#[test]
fn a_bad_config_file_or_first_policy_stops_the_start_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wardlockd.toml");
    std::fs::write(&config, "data_dir = \"/x\"\nsockt = \"/y\"\n").unwrap();
    let (ok, _, err) = wardlockd(&["--config", config.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("wardlockd.toml") && err.contains("sockt"), "{err}");

    let dev = dir.path().join("ws");
    std::fs::create_dir(&dev).unwrap();
    std::fs::write(dev.join("policy.toml"), "[lock]\nidle_timeout = \"2s\"\n").unwrap();
    let (ok, _, err) = wardlockd(&["--dev", dev.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("lock.idle_timeout") && err.contains("wardlockctl policy check"), "{err}");
    assert!(!dev.join("agent.sock").exists(), "a failed start left its socket behind");

    let (ok, _, err) = wardlockd(&["--dev", dev.to_str().unwrap(), "--policy", "/nonexistent/policy.toml"]);
    assert!(!ok && err.contains("/nonexistent/policy.toml"), "{err}");
}

#[test]
fn a_second_instance_on_the_same_socket_refuses_to_start() {
    let mut d = crate::util::Daemon::new(crate::util::FAST_POLICY);
    d.start();
    let (ok, _, err) = wardlockd(&["--dev", d.dir.path().to_str().unwrap()]);
    assert!(!ok && err.contains("already listening"), "{err}");
    // The first one never noticed.
    assert_eq!(d.client("tool").request(serde_json::json!({"type": "status"}))["type"], "status");
    assert_eq!(d.kinds().iter().filter(|k| *k == "service_started").count(), 1);
}
