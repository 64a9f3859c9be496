//! The console in a real browser: Debian's `chromium`, driven by Playwright for Node
//! (`console/e2e/console.spec.ts`), against a real collector and a real `wardlockd`
//! syncing to it. This side sets the scene (accounts, a workstation, a failed unlock made
//! with `wardlockctl agent unlock`, a break-glass access, and a rogue workstation whose
//! host name, users and details carry markup and script); the browser side signs in with
//! password and TOTP (codes from `oathtool`) and does what a privacy officer and IT do.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use serde_json::{json, Value};
use wardlock_core::audit::{AuditDraft, AuditEntry, AuditKind};
use wardlock_core::policy::{SignedPolicy, SignedPolicyBody};
use wardlock_core::protocol::collector::AuditRecord;
use wardlock_testkit::agent::{now, Daemon};
use wardlock_testkit::collector::Collector;

use super::sync::workstation;

const AUDITOR_PASSWORD: &str = "tangerine kettle orbit sparrow";
const ADMIN_PASSWORD: &str = "quartz lantern meadow figurine";
const NURSE_PIN: &str = "730284";
/// What the injection probe puts wherever a workstation or a person writes text.
const IMG: &str = "<img src=x onerror=\"window.__pwned='img'\">";
const SCRIPT: &str = "<script>window.__pwned='script'</script>";
const LINK: &str = "javascript:window.__pwned='link'";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(100)); // polling another process's state
    }
}

fn events(c: &Collector, query: &str) -> Vec<Value> {
    let (status, body) = c.call("GET", &format!("/api/v1/events?{query}"), None, None);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["events"].as_array().cloned().unwrap_or_default()
}

/// A workstation that enrolls with markup for a host name and sends entries whose users
/// and details carry script, as a compromised ward PC could.
fn rogue_workstation(c: &Collector) {
    use base64::Engine as _;
    let transport =
        base64::engine::general_purpose::STANDARD.encode(wardlock_core::transport::keypair(&[5; 32]).1);
    let enroll = json!({
        "enroll_secret": c.secret, "workstation_id": "ward4-rogue", "hostname": format!("bed 7 {IMG}"),
        "group": "default", "agent_version": format!("1.0 {SCRIPT}"), "transport_key": transport,
    });
    let (status, body) = c.call("POST", "/api/v1/enroll", None, Some(enroll.to_string()));
    assert_eq!(status, 200, "{body}");
    let node_key = serde_json::from_str::<Value>(&body).unwrap()["node_key"].as_str().unwrap().to_owned();
    let mut log: Vec<AuditEntry> = Vec::new();
    let t = now().unix_millis();
    let entries = [
        (AuditKind::UnlockFailed, Some(format!("x{IMG}")), vec![("reason", LINK.to_owned())]),
        (
            AuditKind::PhiAppHidden,
            None,
            vec![("app", format!("Chart — {SCRIPT}")), ("title", IMG.to_owned())],
        ),
        (
            AuditKind::EmergencyAccess,
            Some("mallory".to_owned()),
            vec![("reason", format!("{SCRIPT} {IMG} {LINK}"))],
        ),
    ];
    for (i, (kind, user, details)) in entries.into_iter().enumerate() {
        let prev = log.last().map(|e| (e.seq, e.hash));
        let mut draft =
            AuditDraft::new(wardlock_core::clock::UtcMillis::from_unix_millis(t + i as i64), kind);
        if let Some(user) = user {
            draft = draft.user(&user);
        }
        for (key, value) in details {
            draft = draft.detail(key, value);
        }
        log.push(AuditEntry::chain(draft, "ward4-rogue", prev));
    }
    let batch = json!({"workstation_id": "ward4-rogue", "entries": log.iter().map(AuditRecord::from).collect::<Vec<_>>()});
    let (status, body) = c.call("POST", "/api/v1/audit", Some(&node_key), Some(batch.to_string()));
    assert_eq!(status, 200, "{body}");
}

/// A week of shifts on six more workstations in three wards, sent as their agents would:
/// warnings that ran out into idle locks (with the idle time the guard measured), unlocks
/// through the day, a break-glass access now and then. What the charts draw.
fn ward_history(c: &Collector) {
    use base64::Engine as _;
    const HOUR: i64 = 3_600_000;
    let start = now().unix_millis() - 7 * 24 * HOUR;
    for (n, (ws, group)) in [
        ("icu-bed01", "icu"),
        ("icu-bed02", "icu"),
        ("ward4-bed03", "ward4"),
        ("ward4-desk", "ward4"),
        ("ed-triage1", "emergency"),
        ("ed-triage2", "emergency"),
    ]
    .into_iter()
    .enumerate()
    {
        let secret = c.call(
            "POST",
            "/api/v1/admin/enroll-secrets",
            None,
            Some(json!({"label": format!("history {ws}"), "group": group}).to_string()),
        );
        assert_eq!(secret.0, 201, "{}", secret.1);
        let secret = serde_json::from_str::<Value>(&secret.1).unwrap()["secret"].as_str().unwrap().to_owned();
        let transport = base64::engine::general_purpose::STANDARD
            .encode(wardlock_core::transport::keypair(&[10 + n as u8; 32]).1);
        let enroll = json!({
            "enroll_secret": secret, "workstation_id": ws, "hostname": ws, "group": group,
            "agent_version": "0.1.0", "transport_key": transport,
        });
        let (status, body) = c.call("POST", "/api/v1/enroll", None, Some(enroll.to_string()));
        assert_eq!(status, 200, "{body}");
        let node_key = serde_json::from_str::<Value>(&body).unwrap()["node_key"].as_str().unwrap().to_owned();
        let mut log: Vec<AuditEntry> = Vec::new();
        let mut push = |at: i64, kind: AuditKind, user: Option<&str>, details: &[(&str, String)]| {
            let prev = log.last().map(|e| (e.seq, e.hash));
            let mut draft = AuditDraft::new(wardlock_core::clock::UtcMillis::from_unix_millis(at), kind);
            if let Some(user) = user {
                draft = draft.user(user);
            }
            for (k, v) in details {
                draft = draft.detail(k, v);
            }
            log.push(AuditEntry::chain(draft, ws, prev));
        };
        // Busier wards lock more; the night is quieter; each lock comes a little late.
        let busy = [3, 3, 2, 2, 4, 4][n];
        for hour in 0..7 * 24 {
            let at = start + hour * HOUR;
            let hour_of_day = (at / HOUR) % 24;
            let per_hour = if (7..20).contains(&hour_of_day) { busy } else { 1 };
            for k in 0..per_hour {
                let t = at + k * (HOUR / per_hour);
                let late = (hour * 7 + k * 13 + n as i64 * 5) % 40;
                push(t, AuditKind::WarningShown, Some("n.nurse"), &[("seconds_left", "30".into())]);
                push(
                    t + 30_000 + late * 1000,
                    AuditKind::Locked,
                    Some("n.nurse"),
                    &[
                        ("reason", "idle".into()),
                        ("idle_secs", (300 + late).to_string()),
                        ("timeout_secs", "300".into()),
                    ],
                );
                push(t + 600_000, AuditKind::UnlockSucceeded, Some("n.nurse"), &[("method", "pin".into())]);
            }
            if (hour + n as i64 * 11) % 37 == 0 {
                push(
                    at + 900_000,
                    AuditKind::EmergencyAccess,
                    Some("k.kim"),
                    &[("reason", "Rapid response".into())],
                );
            }
        }
        for chunk in log.chunks(2000) {
            let batch = json!({"workstation_id": ws, "entries": chunk.iter().map(AuditRecord::from).collect::<Vec<_>>()});
            let (status, body) = c.call("POST", "/api/v1/audit", Some(&node_key), Some(batch.to_string()));
            assert_eq!(status, 200, "{body}");
        }
    }
}

#[test]
fn the_console_in_a_real_browser() {
    let chromium = Path::new("/usr/bin/chromium");
    assert!(chromium.exists(), "Debian's chromium is needed (`make setup` installs it)");
    let playwright = repo().join("console/node_modules/.bin/playwright");
    assert!(playwright.exists(), "{} is missing: run `make setup`", playwright.display());

    // Silent after 15 s: the workstation below sends a heartbeat every 5 s.
    let c = Collector::start_with_args(&["--silent-after", "15s", "--time-zone", "Europe/Berlin"]);
    let (status, page) = c.call("GET", "/console/", None, None);
    assert_eq!(status, 200, "the collector was built without its console (make console): {page}");
    let auditor = c.create_account("privacy.officer", "auditor", AUDITOR_PASSWORD);
    let admin = c.create_account("it.admin", "admin", ADMIN_PASSWORD);

    for user in [
        json!({"id": "n.nurse", "display_name": format!("Nora {IMG}"), "role": "nurse", "pin": NURSE_PIN}),
        json!({"id": "k.kim", "display_name": format!("Kim {SCRIPT}"), "role": format!("nurse {LINK}"), "pin": "582046"}),
    ] {
        let (status, body) = c.call("POST", "/api/v1/admin/users", None, Some(user.to_string()));
        assert_eq!(status, 201, "{body}");
    }
    let key = SigningKey::from_bytes(&[21; 32]);
    let mut d: Daemon = workstation(&c, &key, "").id("ward4-bed12");
    std::fs::write(
        d.policy_path(),
        std::fs::read_to_string(d.policy_path()).unwrap() + "\n[service]\ntool_unlock = true\n",
    )
    .unwrap();
    d.start();
    d.wait_for_audit("user_added", 2);

    // A failed unlock through the command line, as a person at the workstation would.
    let mut unlock = Command::new(wardlock_testkit::bin("wardlockctl"))
        .args(["agent", "--socket"])
        .arg(d.socket())
        .args(["unlock", "n.nurse", "--pin-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(unlock.stdin.as_mut().unwrap(), b"000000\n").unwrap();
    let refused = unlock.wait_with_output().unwrap();
    assert!(!refused.status.success(), "a wrong PIN is refused");
    // A break-glass access with a reason that holds markup.
    let mut guard = d.client("guard");
    let reason = format!("Code blue bed 12 {IMG}");
    let emergency =
        json!({"type": "unlock", "user": "k.kim", "pin": "582046", "totp": null, "emergency_reason": reason});
    assert_eq!(guard.request(emergency)["result"], "granted");
    rogue_workstation(&c);
    ward_history(&c);
    // IT's policies for the ICU: a first one, and the one that replaced it with a PHI tier.
    for (serial, text) in [
        (1, "[lock]\nidle_timeout = \"5m\"\nwarning = \"30s\"\n"),
        (2, "[lock]\nidle_timeout = \"3m\"\nwarning = \"20s\"\n\n[phi.tiers.charts]\nidle_timeout = \"90s\"\nwarning = \"15s\"\n"),
    ] {
        let body = SignedPolicyBody { serial, issued_at: now(), group: Some("icu".into()), policy: text.into() };
        let signed = SignedPolicy::sign(&body, &key);
        let (status, body) = c.call("PUT", "/api/v1/admin/policies/icu", None, Some(signed.to_json()));
        assert_eq!(status, 201, "{body}");
    }
    wait_for("the failed unlock and the break-glass access to reach the collector", || {
        let failed = events(&c, "workstation=ward4-bed12&kind=unlock_failed");
        let emergency = events(&c, "workstation=ward4-bed12&kind=emergency_access");
        !failed.is_empty() && !emergency.is_empty()
    });

    let screenshots = std::env::var_os("WARDLOCK_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/console-screenshots"));
    std::fs::create_dir_all(&screenshots).unwrap();
    let status = Command::new(&playwright)
        .args(["test", "--reporter=line"])
        .current_dir(repo().join("console"))
        .env("WARDLOCK_URL", c.url())
        .env("WARDLOCK_AUDITOR", "privacy.officer")
        .env("WARDLOCK_AUDITOR_PASSWORD", AUDITOR_PASSWORD)
        .env("WARDLOCK_AUDITOR_TOTP", &auditor)
        .env("WARDLOCK_ADMIN", "it.admin")
        .env("WARDLOCK_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("WARDLOCK_ADMIN_TOTP", &admin)
        .env("WARDLOCK_WORKSTATION", "ward4-bed12")
        .env("WARDLOCK_AGENT_PID", d.pid().to_string())
        .env("WARDLOCK_AGENT_SOCKET", d.socket())
        .env("WARDLOCKCTL", wardlock_testkit::bin("wardlockctl"))
        .env("WARDLOCK_NURSE_PIN", NURSE_PIN)
        .env("WARDLOCK_PYTHON", repo().join(".venv-tools/bin/python"))
        .env("WARDLOCK_FHIR_VALIDATOR", repo().join("scripts/validate_fhir.py"))
        .env("WARDLOCK_SCREENSHOTS", &screenshots)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the browser tests failed (console/e2e/console.spec.ts; see their output above)"
    );

    // What the browser did is in the admin log, as its people.
    let (_, log) = c.call("GET", "/api/v1/admin/log?limit=1000", None, None);
    let log: Vec<Value> = serde_json::from_str(&log).unwrap();
    let did = |actor: &str, action: &str| log.iter().any(|a| a["actor"] == actor && a["action"] == action);
    assert!(did("privacy.officer (console)", "console_sign_in"), "{log:?}");
    assert!(did("privacy.officer (console)", "emergency_reviewed"), "{log:?}");
    assert!(did("privacy.officer (console)", "events_export"), "{log:?}");
    assert!(did("it.admin (console)", "user_disable"), "{log:?}");

    // IT signs the draft the admin kept in the console with its offline key, and stores it.
    let (_, drafts) = c.call("GET", "/api/v1/policy-drafts", None, None);
    let drafts: Vec<Value> = serde_json::from_str(&drafts).unwrap();
    let draft = drafts.iter().find(|d| d["group"] == "ward4").expect("the console's draft for ward4");
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("policy-signing.key");
    std::fs::write(
        &key_file,
        ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_pem(&key, Default::default()).unwrap().as_bytes(),
    )
    .unwrap();
    std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let signed = Command::new(wardlock_testkit::bin("wardlockctl"))
        .args(["--server", &c.url(), "--token", &c.token, "--ca-file"])
        .arg(c.cert())
        .args(["policy", "sign", "--draft", &draft["id"].to_string(), "--key"])
        .arg(&key_file)
        .output()
        .unwrap();
    assert!(
        signed.status.success(),
        "{}{}",
        String::from_utf8_lossy(&signed.stdout),
        String::from_utf8_lossy(&signed.stderr)
    );
    let (_, policies) = c.call("GET", "/api/v1/policies", None, None);
    let policies: Vec<Value> = serde_json::from_str(&policies).unwrap();
    let ward4 = policies.iter().find(|p| p["group"] == "ward4").expect("ward4's policy stored");
    assert_eq!(ward4["timeouts"]["idle_timeout_secs"], 120, "{ward4}");
    assert_eq!(ward4["stored_by"], "dev admin", "stored with the token wardlockctl used: {ward4}");
    d.stop();
}
