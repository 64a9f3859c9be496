//! `wardlockd` against a real `wardlock-collector` process over TLS on loopback:
//! enrollment, signed policies end to end, and a fault run where nothing may be lost or
//! doubled.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use serde_json::{json, Value};
use wardlock_core::audit::{verify_chain, AuditDraft, AuditEntry, AuditKind};
use wardlock_core::clock::UtcMillis;
use wardlock_core::policy::{public_key_pem, SignedPolicy, SignedPolicyBody};
use wardlock_core::protocol::collector::AuditRecord;

use wardlock_testkit::agent::{contains_bytes, now, oathtool, totp_secret, Daemon, PATIENCE};
use wardlock_testkit::collector::{call, free_port, Backend, Collector, PgCluster};

fn sign(key: &SigningKey, serial: u64, group: &str, policy: &str) -> SignedPolicy {
    let body =
        SignedPolicyBody { serial, issued_at: now(), group: Some(group.into()), policy: policy.into() };
    SignedPolicy::sign(&body, key)
}

/// A workstation set up to sync with `collector`, trusting `key` for central policies.
/// `extra` goes into the `[sync]` section; `lockout` into `[lockout]`.
pub(crate) fn workstation(collector: &Collector, key: &SigningKey, extra: &str) -> Daemon {
    workstation_with(collector, key, "", extra)
}

fn workstation_with(collector: &Collector, key: &SigningKey, lockout: &str, extra: &str) -> Daemon {
    let pem = public_key_pem(&key.verifying_key());
    let policy = format!(
        "[lockout]\nthrottle = \"0s\"\n{lockout}[sync]\nendpoint = \"{}\"\nca_file = \"{}\"\ninterval = \"5s\"\ntrusted_keys = [\"\"\"\n{pem}\"\"\"]\n{extra}",
        collector.url(),
        collector.cert().display()
    );
    let d = Daemon::new(&policy);
    std::fs::write(d.dir.path().join("enroll-secret"), &collector.secret).unwrap();
    d
}

/// Polls `check` until it holds: for conditions inside another process that sends no
/// event (a row count), with a deadline.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn a_signed_policy_pushed_to_the_collector_reaches_the_workstation_and_forgeries_do_not(backend: Backend) {
    let collector = Collector::start_new(backend);
    let it_key = SigningKey::from_bytes(&[11; 32]);
    let mut d = workstation(&collector, &it_key, "");
    d.start();
    d.wait_for_audit("collector_enrolled", 1);
    assert!(d.kinds().contains(&"collector_enrolled".to_owned()));
    let mut guard = d.client("guard");
    assert_eq!(guard.request(json!({"type": "policy"}))["policy"]["idle_timeout_secs"], 300);

    let good = sign(&it_key, 1, "default", "[lock]\nidle_timeout = \"2m\"\n");
    let (status, body) = collector.call("PUT", "/api/v1/admin/policies/default", None, Some(good.to_json()));
    assert_eq!(status, 201, "{body}");
    let pushed = guard.read().unwrap();
    assert_eq!(pushed["type"], "policy_changed");
    assert_eq!(pushed["policy"]["idle_timeout_secs"], 120);
    let applied_hash = pushed["policy"]["hash"].clone();

    // Signed by a key the workstation does not trust.
    let other = SigningKey::from_bytes(&[12; 32]);
    let forged = sign(&other, 2, "default", "[lock]\nidle_timeout = \"8h\"\n");
    assert_eq!(collector.call("PUT", "/api/v1/admin/policies/default", None, Some(forged.to_json())).0, 201);
    d.wait_for_audit("policy_refused", 1);

    // The trusted key's policy with one byte of its body changed after signing.
    let genuine = sign(&it_key, 3, "default", "[lock]\nidle_timeout = \"2m\"\n");
    let mut body_bytes = base64_decode(&genuine.body);
    let at = body_bytes.windows(2).position(|w| w == b"2m").unwrap();
    body_bytes[at] = b'9';
    let altered = SignedPolicy { body: base64_encode(&body_bytes), ..genuine };
    assert_eq!(collector.call("PUT", "/api/v1/admin/policies/default", None, Some(altered.to_json())).0, 201);
    d.wait_for_audit("policy_refused", 2);

    assert_eq!(guard.request(json!({"type": "status"}))["policy_hash"], applied_hash, "the old policy stays");
    let refusals: Vec<_> = d
        .audit()
        .into_iter()
        .filter(|e| e.kind.as_str() == "policy_refused")
        .map(|e| e.details["why"].clone())
        .collect();
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    assert!(refusals[0].contains("does not trust"), "{refusals:?}");
    assert!(refusals[1].contains("altered"), "{refusals:?}");

    // After a restart the applied central policy is still in force.
    d.restart();
    assert_eq!(d.client("tool").request(json!({"type": "policy"}))["policy"]["idle_timeout_secs"], 120);
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).unwrap()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn ten_thousand_entries_survive_a_down_and_killed_collector_and_an_agent_restart(backend: Backend) {
    const N: u64 = 10_000;
    let mut collector = Collector::start_new(backend);
    let key = SigningKey::from_bytes(&[13; 32]);
    let mut d = workstation(&collector, &key, "batch_size = 25\nbacklog_warning = 9000\n");
    d.start();
    d.wait_for_audit("collector_enrolled", 1);
    collector.kill9();

    // Produced while the collector is down.
    {
        let mut store = d.open_store();
        for chunk in 0..10 {
            let mut tx = store.write().unwrap();
            for i in 0..N / 10 {
                let n = chunk * (N / 10) + i;
                tx.append(
                    AuditDraft::new(
                        UtcMillis::from_unix_millis(1_795_000_000_000 + n as i64),
                        AuditKind::Locked,
                    )
                    .detail("reason", "idle")
                    .detail("fault_test", n),
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }
    }
    d.wait_for_status("the collector unreachable", |s| s["collector_reachable"] == false);
    d.wait_for_audit("sync_backlog", 1);

    // Back, then killed in the middle of the stream.
    collector.start();
    let entries_at_collector = |c: &Collector| -> u64 {
        let (_, body) = c.call("GET", "/api/v1/workstations", None, None);
        serde_json::from_str::<Value>(&body).unwrap()[0]["entries_received"].as_u64().unwrap_or(0)
    };
    eventually("the collector to hold a part of the backlog", || entries_at_collector(&collector) > 1000);
    collector.kill9();
    let held = d.open_store().acked_seq().unwrap();
    assert!(
        held < N,
        "the whole backlog went through before the kill ({held} acknowledged); the test proves nothing"
    );

    // The agent restarts once (uncleanly), the collector comes back.
    d.kill9();
    d.start();
    collector.start();
    let last = || d.open_store().last_seq().unwrap();
    eventually("every entry to be acknowledged", || {
        let store = d.open_store();
        store.acked_seq().unwrap() == store.last_seq().unwrap()
    });

    let events = collector.all_events();
    let injected = events.iter().filter(|e| e.details.contains_key("fault_test")).count() as u64;
    assert_eq!(injected, N, "the collector holds {injected} of the {N} entries");
    let mut seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    seqs.dedup();
    assert_eq!(seqs.len(), events.len(), "an entry is doubled");
    assert!(events.len() as u64 >= last() - 2, "entries are missing");
    assert_eq!(verify_chain(&events).unwrap(), events.len() as u64, "the chain at the collector is broken");
    let (_, findings) = collector.call("GET", "/api/v1/reports/chain", None, None);
    assert_eq!(findings, "[]", "the collector flagged problems");
    let kinds = d.kinds();
    assert_eq!(
        kinds.iter().filter(|k| *k == "sync_backlog").count(),
        1,
        "10,000 unsent entries pass the 9,000 threshold: one warning, not one per cycle"
    );
}

fn a_batch_that_does_not_chain_on_is_flagged_and_kept(backend: Backend) {
    let collector = Collector::start_new(backend);
    let enroll = json!({
        "enroll_secret": collector.secret, "workstation_id": "ws-bad", "hostname": "h", "group": "default",
        "agent_version": "t", "transport_key": base64_encode(&wardlock_core::transport::keypair(&[3; 32]).1),
    });
    let (status, body) = collector.call("POST", "/api/v1/enroll", None, Some(enroll.to_string()));
    assert_eq!(status, 200, "{body}");
    let node_key = serde_json::from_str::<Value>(&body).unwrap()["node_key"].as_str().unwrap().to_owned();

    let mut log: Vec<AuditEntry> = Vec::new();
    for i in 0..8 {
        let prev = log.last().map(|e| (e.seq, e.hash));
        let draft = AuditDraft::new(UtcMillis::from_unix_millis(1_795_000_000_000 + i), AuditKind::Locked);
        log.push(AuditEntry::chain(draft, "ws-bad", prev));
    }
    // Entries 6..8 are re-chained onto a different history.
    log[5].prev_hash = [9; 32];
    log[5].hash = log[5].compute_hash();
    for i in 6..8 {
        log[i].prev_hash = log[i - 1].hash;
        log[i].hash = log[i].compute_hash();
    }
    let batch = |entries: &[AuditEntry]| {
        json!({"workstation_id": "ws-bad", "entries": entries.iter().map(AuditRecord::from).collect::<Vec<_>>()}).to_string()
    };
    let (status, body) = collector.call("POST", "/api/v1/audit", Some(&node_key), Some(batch(&log[..5])));
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).unwrap()["chain_break_at"].clone()),
        (200, Value::Null)
    );
    let (status, body) = collector.call("POST", "/api/v1/audit", Some(&node_key), Some(batch(&log[5..])));
    let ack: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 200);
    assert_eq!(ack["chain_break_at"], 6);
    assert_eq!(ack["highest_contiguous_seq"], 8, "the entries are kept");

    // Sending the first five again with one changed is a rewritten history.
    let mut rewritten = log[..5].to_vec();
    rewritten[2].user = Some("someone.else".into());
    rewritten[2].hash = rewritten[2].compute_hash();
    collector.call("POST", "/api/v1/audit", Some(&node_key), Some(batch(&rewritten)));

    assert_eq!(collector.all_events().len(), 8);
    let (_, report) = collector.call("GET", "/api/v1/reports/chain", None, None);
    let kinds: Vec<(u64, String)> = serde_json::from_str::<Vec<Value>>(&report)
        .unwrap()
        .iter()
        .map(|f| (f["seq"].as_u64().unwrap(), f["kind"].as_str().unwrap().to_owned()))
        .collect();
    assert!(kinds.contains(&(6, "broken_link".to_owned())), "{kinds:?}");
    assert!(kinds.contains(&(3, "rewritten".to_owned())), "{kinds:?}");
    let (_, metrics) = collector.call("GET", "/metrics", None, None);
    assert!(
        metrics.lines().any(|l| l.starts_with("wardlock_chain_findings_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

fn bad_requests_get_clear_4xx_answers(backend: Backend) {
    let collector = Collector::start_new(backend);
    let (status, body) = collector.call("POST", "/api/v1/enroll", None, Some("{not json".into()));
    assert_eq!(status, 400);
    assert!(body.contains("request body"), "{body}");
    let (status, _) = collector.call("POST", "/api/v1/audit", Some("0000"), Some("{}".into()));
    assert_eq!(status, 401, "a wrong node key");
    let (status, body) = collector.call(
        "POST",
        "/api/v1/admin/tokens",
        None,
        Some(json!({"role": "auditor", "label": "compliance"}).to_string()),
    );
    assert_eq!(status, 201, "{body}");
    let auditor = serde_json::from_str::<Value>(&body).unwrap()["token"].as_str().unwrap().to_owned();
    let key = SigningKey::from_bytes(&[14; 32]);
    let (status, body) = collector.call(
        "PUT",
        "/api/v1/admin/policies/default",
        Some(&auditor),
        Some(sign(&key, 1, "default", "").to_json()),
    );
    assert_eq!(status, 403, "an auditor pushed a policy: {body}");
    assert_eq!(collector.call("GET", "/api/v1/events", Some(&auditor), None).0, 200, "auditors read events");
    let (status, _) = collector.call("POST", "/api/v1/enroll", None, Some("x".repeat(17 * 1024 * 1024)));
    assert_eq!(status, 413, "a 17 MiB body");
    let (status, body) = collector.call(
        "PUT",
        "/api/v1/admin/policies/icu",
        None,
        Some(sign(&key, 1, "default", "").to_json()),
    );
    assert_eq!(status, 400, "signed for another group: {body}");
    assert_eq!(
        collector
            .call("PUT", "/api/v1/admin/policies/default", None, Some(sign(&key, 5, "default", "").to_json()))
            .0,
        201
    );
    let (status, body) = collector.call(
        "PUT",
        "/api/v1/admin/policies/default",
        None,
        Some(sign(&key, 5, "default", "").to_json()),
    );
    assert_eq!(status, 409, "a replayed serial: {body}");
    // Every admin action is on record: `serve --dev`'s own credentials (its command line),
    // then what was done through the API.
    let (_, log) = collector.call("GET", "/api/v1/admin/log", None, None);
    let actions: Vec<(bool, String)> = serde_json::from_str::<Vec<Value>>(&log)
        .unwrap()
        .iter()
        .map(|a| {
            let by_command_line = a["actor"].as_str().unwrap().starts_with("wardlock-collector command line");
            (by_command_line, a["action"].as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(
        actions,
        [
            (true, "enroll_secret_create".to_owned()),
            (true, "token_create".to_owned()),
            (false, "token_create".to_owned()),
            (false, "policy_push".to_owned())
        ]
    );
}

fn the_collector_directory_reaches_the_workstation_works_offline_and_disabling_takes_effect(
    backend: Backend,
) {
    let mut collector = Collector::start_new(backend);
    let key = SigningKey::from_bytes(&[15; 32]);
    let mut d = workstation(&collector, &key, "");
    d.start();
    d.wait_for_audit("collector_enrolled", 1);

    let new_user = json!({"id": "d.central", "display_name": "Dee Central", "role": "physician", "pin": "582046", "totp": true});
    let (status, body) = collector.call("POST", "/api/v1/admin/users", None, Some(new_user.to_string()));
    assert_eq!(status, 201, "{body}");
    let uri = serde_json::from_str::<Value>(&body).unwrap()["otpauth_uri"].as_str().unwrap().to_owned();
    let (status, body) = collector.call(
        "POST",
        "/api/v1/admin/users",
        None,
        Some(json!({"id": "weak", "display_name": "W", "role": "nurse", "pin": "123456"}).to_string()),
    );
    assert_eq!(status, 400, "a common PIN was accepted: {body}");
    d.wait_for_audit("user_added", 1);

    // The collector goes away; the workstation still knows the user.
    collector.kill9();
    let mut guard = d.client("guard");
    let granted = guard.unlock("d.central", Some("582046"), None);
    assert_eq!(
        (granted["result"].as_str(), granted["display_name"].as_str()),
        (Some("granted"), Some("Dee Central"))
    );
    let code = oathtool(&totp_secret(&uri));
    assert_eq!(
        guard.unlock("d.central", None, Some(&code))["result"],
        "granted",
        "the seed sent sealed for this workstation works"
    );

    // Disabled centrally: refused at the next sync.
    collector.start();
    let (status, _) = collector.call("POST", "/api/v1/admin/users/d.central/disable", None, None);
    assert_eq!(status, 204);
    d.wait_for_audit("user_disabled", 1);
    assert_eq!(guard.unlock("d.central", Some("582046"), None)["result"], "refused");

    let entries = d.audit();
    let by_collector: Vec<&str> = entries
        .iter()
        .filter(|e| {
            e.user.as_deref() == Some("d.central")
                && e.details.get("by").map(String::as_str) == Some("collector")
        })
        .map(|e| e.kind.as_str())
        .collect();
    assert_eq!(by_collector, ["user_added", "user_disabled"]);
    // The seed never sits in the workstation's database in a form that opens without the data key.
    let secret = totp_secret(&uri);
    assert!(!contains_bytes(&std::fs::read(d.db_path()).unwrap(), secret.as_bytes()));
}

#[test]
fn two_collectors_on_one_postgres_store_a_batch_sent_to_both_once() {
    let first = Collector::start_new(Backend::Postgres);
    let second = Collector::start_on(None, first.db.clone());
    let enroll = json!({
        "enroll_secret": first.secret, "workstation_id": "ws-ha", "hostname": "h", "group": "default",
        "agent_version": "t", "transport_key": base64_encode(&wardlock_core::transport::keypair(&[4; 32]).1),
    });
    let (_, body) = first.call("POST", "/api/v1/enroll", None, Some(enroll.to_string()));
    let node_key = serde_json::from_str::<Value>(&body).unwrap()["node_key"].as_str().unwrap().to_owned();

    let mut log: Vec<AuditEntry> = Vec::new();
    for i in 0..2000 {
        let prev = log.last().map(|e| (e.seq, e.hash));
        let draft = AuditDraft::new(UtcMillis::from_unix_millis(1_795_000_000_000 + i), AuditKind::Locked);
        log.push(AuditEntry::chain(draft, "ws-ha", prev));
    }
    let batch = |entries: &[AuditEntry]| {
        json!({"workstation_id": "ws-ha", "entries": entries.iter().map(AuditRecord::from).collect::<Vec<_>>()})
            .to_string()
    };
    // A load balancer retrying on the other instance: every batch reaches both at once.
    for chunk in log.chunks(250) {
        let body = batch(chunk);
        let acks: Vec<(u16, String)> = std::thread::scope(|scope| {
            let handles: Vec<_> = [&first, &second]
                .into_iter()
                .map(|c| {
                    let (body, key) = (body.clone(), node_key.clone());
                    scope.spawn(move || c.call("POST", "/api/v1/audit", Some(&key), Some(body)))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let last = chunk.last().unwrap().seq;
        for (status, body) in acks {
            assert_eq!(status, 200, "{body}");
            assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["highest_contiguous_seq"], last);
        }
    }
    let events = second.all_events();
    assert_eq!(events.len(), 2000, "stored {} entries for 2000 sent", events.len());
    assert_eq!(verify_chain(&events).unwrap(), 2000);
    assert_eq!(first.call("GET", "/api/v1/reports/chain", None, None).1, "[]");
}

/// A real rsyslog (Debian's `rsyslog` + `rsyslog-gnutls`) listening with TLS, writing
/// what it parsed of each message (host, app, msgid, structured data) to a file.
struct Rsyslog {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Rsyslog {
    fn start_new() -> Rsyslog {
        let dir = tempfile::tempdir().unwrap();
        // A test CA and a server certificate it signed, as a hospital's PKI would issue.
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("openssl is needed (`make setup` installs it)");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        std::fs::write(
            dir.path().join("leaf.ext"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=Wardlock test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "key.pem",
            "-out",
            "leaf.csr",
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
            "-out",
            "cert.pem",
        ]);
        let mut r = Rsyslog { port: free_port(), dir, child: None };
        r.start();
        r
    }

    fn start(&mut self) {
        let d = self.dir.path().display();
        let conf = format!(
            r#"global(workDirectory="{d}" defaultNetstreamDriver="gtls"
       defaultNetstreamDriverCAFile="{d}/ca.pem" defaultNetstreamDriverCertFile="{d}/cert.pem"
       defaultNetstreamDriverKeyFile="{d}/key.pem")
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imtcp" port="{}")
template(name="fields" type="string" string="%hostname%|%app-name%|%msgid%|%pri%|%structured-data%\n")
action(type="omfile" file="{d}/received.log" template="fields")
"#,
            self.port
        );
        let conf_path = self.dir.path().join("rsyslog.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let rsyslogd = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("rsyslogd is needed (apt-get install rsyslog rsyslog-gnutls; `make setup` does it)");
        let child = Command::new(rsyslogd)
            .arg("-n")
            .arg("-f")
            .arg(&conf_path)
            .arg("-i")
            .arg(self.dir.path().join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        // Listening once a TLS handshake would be possible: the port accepts.
        eventually("rsyslog to listen", || std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok());
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Every line rsyslog wrote so far, split into its parsed fields.
    fn received(&self) -> Vec<Vec<String>> {
        std::fs::read_to_string(self.dir.path().join("received.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.splitn(5, '|').map(str::to_owned).collect())
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The seqs rsyslog received, from the structured data it parsed.
fn seqs_received(r: &Rsyslog) -> std::collections::BTreeSet<u64> {
    r.received()
        .iter()
        .filter_map(|f| f.get(4))
        .filter_map(|sd| sd.split("seq=\"").nth(1)?.split('"').next()?.parse().ok())
        .collect()
}

#[test]
fn every_entry_reaches_a_real_rsyslog_over_tls_even_across_its_restart() {
    let mut rsyslog = Rsyslog::start_new();
    let mut collector = Collector::start_new(Backend::Sqlite);
    // The same collector database, now forwarding.
    collector.kill9();
    collector.extra_args = vec![
        "--syslog-tls".into(),
        format!("localhost:{}", rsyslog.port),
        "--syslog-ca".into(),
        rsyslog.dir.path().join("ca.pem").display().to_string(),
    ];
    collector.start();
    let enroll = json!({
        "enroll_secret": collector.secret, "workstation_id": "ws-siem", "hostname": "h", "group": "default",
        "agent_version": "t", "transport_key": base64_encode(&wardlock_core::transport::keypair(&[5; 32]).1),
    });
    let (_, body) = collector.call("POST", "/api/v1/enroll", None, Some(enroll.to_string()));
    let node_key = serde_json::from_str::<Value>(&body).unwrap()["node_key"].as_str().unwrap().to_owned();
    let mut log: Vec<AuditEntry> = Vec::new();
    for i in 0..600 {
        let prev = log.last().map(|e| (e.seq, e.hash));
        let draft =
            AuditDraft::new(UtcMillis::from_unix_millis(1_795_000_000_000 + i), AuditKind::UnlockFailed)
                .user("n.nurse")
                .detail("reason", "bad_credentials");
        log.push(AuditEntry::chain(draft, "ws-siem", prev));
    }
    let send = |entries: &[AuditEntry]| {
        let body = json!({"workstation_id": "ws-siem", "entries": entries.iter().map(AuditRecord::from).collect::<Vec<_>>()});
        assert_eq!(collector.call("POST", "/api/v1/audit", Some(&node_key), Some(body.to_string())).0, 200);
    };
    send(&log[..300]);
    eventually("rsyslog to receive the first 300", || seqs_received(&rsyslog).len() == 300);

    // The receiver restarts; what is stored meanwhile waits and then arrives.
    rsyslog.kill();
    send(&log[300..]);
    rsyslog.start();
    eventually("rsyslog to receive all 600 after its restart", || seqs_received(&rsyslog).len() == 600);

    let fields = &rsyslog.received()[0];
    assert_eq!(fields[0], "ws-siem", "HOSTNAME as rsyslog parsed it");
    assert_eq!(fields[1], "wardlock", "APP-NAME");
    assert_eq!(fields[2], "unlock_failed", "MSGID");
    assert_eq!(fields[3], "84", "authpriv.warning");
    assert!(
        fields[4].starts_with("[wardlock@32473 ") && fields[4].contains("user=\"n.nurse\""),
        "{}",
        fields[4]
    );
}

/// `schemathesis` (property-based, from the OpenAPI document) against a live collector:
/// no 5xx, every answer matches the schema, and what violates the schema is refused.
#[test]
fn schemathesis_finds_no_server_error_and_no_answer_outside_the_schema() {
    let collector = Collector::start_new(Backend::Sqlite);
    let enroll = json!({
        "enroll_secret": collector.secret, "workstation_id": "ws-fuzz", "hostname": "h", "group": "default",
        "agent_version": "t", "transport_key": base64_encode(&wardlock_core::transport::keypair(&[6; 32]).1),
    });
    let (_, body) = collector.call("POST", "/api/v1/enroll", None, Some(enroll.to_string()));
    let node_key = serde_json::from_str::<Value>(&body).unwrap()["node_key"].as_str().unwrap().to_owned();
    let st = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv-tools/bin/schemathesis");
    assert!(st.exists(), "{} is missing: run `make setup` (it installs schemathesis)", st.display());
    // The people's endpoints with the admin token, then the workstations' with a node key.
    // The live tail streams for minutes: the browser test holds it (`browser.rs`).
    let node_paths = "^/api/v1/(audit|policy|heartbeat|directory)$";
    let people = ("--exclude-path-regex", "^/api/v1/(audit|policy|heartbeat|directory|events/stream)$");
    for (token, (filter, node_paths)) in
        [(&collector.token, people), (&node_key, ("--include-path-regex", node_paths))]
    {
        let out = Command::new(&st)
            .args(["run", &format!("{}/api/v1/openapi.json", collector.url())])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .arg("--tls-verify")
            .arg(collector.cert())
            .args([filter, node_paths])
            .args(["--checks", "all", "--exclude-checks", "positive_data_acceptance"])
            .args(["-n", "40", "--seed", "20261123", "--request-timeout", "20"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "schemathesis found problems:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(" passed"), "{stdout}");
    }
}

/// Requests with an `Accept` header.
fn get_as(c: &Collector, path: &str, accept: &str) -> (u16, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let cert = reqwest::Certificate::from_pem(&std::fs::read(c.cert()).unwrap()).unwrap();
        let client = reqwest::Client::builder().add_root_certificate(cert).build().unwrap();
        let response = client
            .get(format!("{}{path}", c.url()))
            .bearer_auth(&c.token)
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    })
}

fn compliance_sees_failures_lockouts_emergencies_and_stale_accounts(backend: Backend) {
    let collector = Collector::start_new(backend);
    let key = SigningKey::from_bytes(&[16; 32]);
    let mut d = workstation_with(&collector, &key, "max_failures = 3\n", "");
    d.add_user("n.nurse", "Nora Nurse", "nurse", Some("730284"), false);
    d.start();
    d.wait_for_audit("collector_enrolled", 1);
    for user in [
        json!({"id": "n.nurse", "display_name": "Nora Nurse", "role": "nurse", "pin": "730284"}),
        json!({"id": "o.orphan", "display_name": "Olga Orphan", "role": "nurse", "pin": "640271"}),
        json!({"id": "h.holder", "display_name": "Hana Holder", "role": "nurse", "pin": "582046"}),
    ] {
        assert_eq!(collector.call("POST", "/api/v1/admin/users", None, Some(user.to_string())).0, 201);
    }
    std::thread::sleep(Duration::from_millis(20)); // so the cut-off below falls strictly between
    let accounts_made = now();
    let mut guard = d.client("guard");
    for pin in ["111111", "222222", "333333"] {
        assert_eq!(guard.unlock("n.nurse", Some(pin), None)["result"], "refused");
    }
    let emergency = json!({"type": "unlock", "user": "n.nurse", "pin": "730284", "totp": null, "emergency_reason": "Code blue, bed 12"});
    assert_eq!(
        guard.request(emergency)["result"],
        "refused",
        "locked out: break-glass still needs the user not to be locked out"
    );
    d.stop();
    // A second workstation run where the nurse gets in by break-glass with the lockout gone,
    // and where another nurse only ever uses "Keep open" (a hold is an unlock too).
    let mut d2 = workstation(&collector, &key, "\n[lock.hold]\ngroups = [\"default\"]\n").id("ws-two");
    d2.add_user("n.nurse", "Nora Nurse", "nurse", Some("730284"), false);
    d2.add_user("h.holder", "Hana Holder", "nurse", Some("582046"), false);
    d2.start();
    let mut guard = d2.client("guard");
    let emergency = json!({"type": "unlock", "user": "n.nurse", "pin": "730284", "totp": null, "emergency_reason": "Code blue, bed 12"});
    assert_eq!(guard.request(emergency)["result"], "granted");
    let hold =
        json!({"type": "hold", "user": "h.holder", "pin": "582046", "totp": null, "emergency_reason": null});
    let held = guard.request(hold);
    assert_eq!(held["result"], "granted", "{held}");
    d2.wait_for_audit("collector_enrolled", 1);
    d.start();
    let everything_sent = |d: &Daemon| {
        let store = d.open_store();
        store.acked_seq().unwrap() == store.last_seq().unwrap()
    };
    eventually("both workstations to send everything", || everything_sent(&d) && everything_sent(&d2));

    let (_, failed) = collector.call("GET", "/api/v1/reports/failed", None, None);
    let failed: Vec<Value> = serde_json::from_str(&failed).unwrap();
    assert_eq!(
        (failed[0]["user"].as_str(), failed[0]["failed_attempts"].as_u64(), failed[0]["lockouts"].as_u64()),
        (Some("n.nurse"), Some(4), Some(1)),
        "{failed:?}"
    );
    let (_, emergencies) = collector.call("GET", "/api/v1/reports/emergency", None, None);
    let emergencies: Vec<Value> = serde_json::from_str(&emergencies).unwrap();
    assert_eq!(emergencies.len(), 1);
    assert_eq!(emergencies[0]["details"]["reason"], "Code blue, bed 12");
    let path = format!("/api/v1/reports/stale?since={}", accounts_made.to_rfc3339());
    let (status, stale) = collector.call("GET", &path, None, None);
    assert_eq!(status, 200, "{stale}");
    let stale: Vec<String> = serde_json::from_str::<Vec<Value>>(&stale)
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        stale,
        ["o.orphan"],
        "n.nurse got in (break-glass) and h.holder held the session since then: neither is stale"
    );
    let (_, recent) = collector.call("GET", "/api/v1/reports/stale", None, None);
    assert_eq!(recent, "[]", "accounts made today are not 90 days stale");
    let (_, silent) = collector.call("GET", "/api/v1/reports/silent?minutes=60", None, None);
    assert_eq!(silent, "[]");

    // FHIR R4, checked by an independent implementation.
    let (status, bundle) = get_as(&collector, "/api/v1/events?limit=10000", "application/fhir+json");
    assert_eq!(status, 200);
    let file = collector.dir.path().join("bundle.json");
    std::fs::write(&file, &bundle).unwrap();
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv-tools/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make setup` (it installs the FHIR validator)",
        python.display()
    );
    let out = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/validate_fhir.py"))
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bundle: Value = serde_json::from_str(&bundle).unwrap();
    let events: Vec<&Value> = bundle["entry"].as_array().unwrap().iter().map(|e| &e["resource"]).collect();
    let login_failures =
        events.iter().filter(|e| e["subtype"][0]["code"] == "110122" && e["outcome"] == "4").count();
    assert_eq!(login_failures, 4);
    let override_started =
        events.iter().find(|e| e["subtype"][0]["code"] == "110127").expect("no emergency override");
    assert_eq!(override_started["type"]["code"], "110113");
    assert_eq!(override_started["purposeOfEvent"][0]["coding"][0]["code"], "ETREAT");

    let (_, csv) = get_as(&collector, "/api/v1/events?kind=emergency_access", "text/csv");
    assert!(csv.lines().nth(1).is_some_and(|l| l.contains("emergency_access")), "{csv}");
}

/// A refusal of a body that is still arriving reaches the client as its status, over
/// HTTP/1.1 (reqwest, as the agent's sync client speaks it, and curl) and HTTP/2 (curl):
/// the agent re-enrolls only on seeing a 401.
#[test]
fn early_refusals_reach_curl_and_reqwest_over_http1_and_http2() {
    let collector = Collector::start_new(Backend::Sqlite);
    let (status, enrolled) = enroll_as(&collector, "ws-early", &collector.secret);
    assert_eq!(status, 200, "{enrolled}");
    let node_key = serde_json::from_str::<Value>(&enrolled).unwrap()["node_key"].as_str().unwrap().to_owned();
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let huge = "x".repeat(17 * 1024 * 1024);
    let (status, body) = collector.call("POST", "/api/v1/audit", Some("0000"), Some(big.clone()));
    assert_eq!(status, 401, "2 MB, wrong node key: {body}");
    // The credential is checked before any of the body is kept: a stranger is told 401
    // whatever it sends, and only a known workstation learns that its body is too large.
    let (status, body) = collector.call("POST", "/api/v1/audit", Some("0000"), Some(huge.clone()));
    assert_eq!(status, 401, "17 MiB, wrong node key: {body}");
    let (status, body) = collector.call("POST", "/api/v1/audit", Some(&node_key), Some(huge.clone()));
    assert_eq!(status, 413, "17 MiB, right node key: {body}");

    let dir = tempfile::tempdir().unwrap();
    let (big_file, huge_file) = (dir.path().join("big.json"), dir.path().join("huge.json"));
    std::fs::write(&big_file, &big).unwrap();
    std::fs::write(&huge_file, &huge).unwrap();
    let url = format!("{}/api/v1/audit", collector.url());
    for (version, spoken) in [("--http1.1", "1.1"), ("--http2", "2")] {
        for (file, key, expected) in
            [(&big_file, "0000", "401"), (&huge_file, "0000", "401"), (&huge_file, node_key.as_str(), "413")]
        {
            let out = Command::new("curl")
                .args(["-sS", "-o", "/dev/null", "-w", "%{http_code} %{http_version}", version, "--cacert"])
                .arg(collector.cert())
                .args(["-H", &format!("Authorization: Bearer {key}")])
                .args(["-H", "Content-Type: application/json", "--data-binary"])
                .arg(format!("@{}", file.display()))
                .arg(&url)
                .output()
                .expect("curl (make setup installs it)");
            let answer = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "curl {version} {}: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(answer, format!("{expected} {spoken}"), "curl {version} with {}", file.display());
        }
    }
}

/// A collector whose data key went missing refuses to start rather than make a new key
/// that would orphan every sealed TOTP secret, says what to do, and starts again once the
/// key is back.
#[test]
fn a_missing_data_key_with_users_in_the_database_is_an_error_not_a_new_key() {
    let mut collector = Collector::start_new(Backend::Sqlite);
    let new_user =
        json!({"id": "d.central", "display_name": "Dana Central", "role": "physician", "totp": true});
    let (status, body) = collector.call("POST", "/api/v1/admin/users", None, Some(new_user.to_string()));
    assert_eq!(status, 201, "{body}");
    collector.kill9();
    let key_file = collector.dir.path().join("data.key");
    let key = std::fs::read(&key_file).unwrap();
    std::fs::remove_file(&key_file).unwrap();

    let mut serve = Command::new(wardlock_testkit::bin("wardlock-collector"))
        .args(["serve", "--listen", &format!("127.0.0.1:{}", collector.port), "--dev"])
        .arg(collector.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    while serve.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = serve.kill();
            panic!("it started without its data key");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = serve.wait_with_output().unwrap();
    assert!(!out.status.success(), "it exited well without its data key");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("data key") && said.contains("missing") && said.contains("Restore"), "{said}");
    assert!(!key_file.exists(), "a new key was made");

    std::fs::write(&key_file, key).unwrap();
    collector.start();
    let (status, body) = collector.call("GET", "/api/v1/admin/users", None, None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("d.central"), "{body}");
}

/// A test CA and, signed by it, a certificate for 127.0.0.1 (openssl, as an admin would).
fn test_ca(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let (ca_key, ca) = (dir.join(format!("{name}-ca.key")), dir.join(format!("{name}-ca.pem")));
    let (key, csr, cert) =
        (dir.join(format!("{name}.key")), dir.join(format!("{name}.csr")), dir.join(format!("{name}.pem")));
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\n").unwrap();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().expect("openssl (make setup installs it)");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let s = |p: &Path| p.display().to_string();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN={name} test CA"),
        "-keyout",
        &s(&ca_key),
        "-out",
        &s(&ca),
    ]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &s(&key),
        "-out",
        &s(&csr),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &s(&csr),
        "-CA",
        &s(&ca),
        "-CAkey",
        &s(&ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &s(&ext),
        "-out",
        &s(&cert),
    ]);
    (ca, cert, key)
}

/// The collector speaks TLS to PostgreSQL when the URL asks (`sslmode=verify-full`,
/// `sslrootcert`), and refuses, saying why, a server it cannot verify or a TLS URL without
/// a CA.
#[test]
fn the_collector_speaks_tls_to_postgresql_and_refuses_a_server_it_cannot_verify() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_ca(certs.path(), "db");
    let (other_ca, _, _) = test_ca(certs.path(), "other");
    let pg = PgCluster::start_with_tls(&cert, &key);
    let port = pg.port;
    let plain = pg.database("collector");

    // A server it cannot verify, and a TLS URL without a CA: no start, and why.
    for (url, why) in [
        (format!("{plain}?sslmode=verify-full&sslrootcert={}", other_ca.display()), "certificate"),
        (format!("{plain}?sslmode=require"), "sslrootcert"),
    ] {
        let out = Command::new(wardlock_testkit::bin("wardlock-collector"))
            .args(["enroll-secret", "create", "--db", &url, "--label", "x", "--group", "default"])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "it used {url}");
        assert!(said.contains(why), "{url}: {said}");
    }

    let collector = Collector::start_on(
        Some(pg),
        Some(format!("{plain}?sslmode=verify-full&sslrootcert={}", ca.display())),
    );
    assert_eq!(collector.call("GET", "/healthz", None, None).0, 200);
    // Every connection the collector holds is encrypted.
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "wardlock", "-d", "postgres", "-At", "-c"])
        .arg("SELECT s.ssl, count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = 'collector' GROUP BY s.ssl")
        .output()
        .unwrap();
    let rows = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(rows.starts_with("t|") && !rows.contains("f|"), "connections by ssl: {rows:?}");
}

fn enroll_as(collector: &Collector, id: &str, secret: &str) -> (u16, String) {
    let body = json!({
        "enroll_secret": secret, "workstation_id": id, "hostname": "impostor-pc", "group": "default",
        "agent_version": "t", "transport_key": base64_encode(&wardlock_core::transport::keypair(&[5; 32]).1),
    });
    // No bearer: an enrollment from a machine that holds no node key.
    call(
        &collector.cert(),
        "POST",
        &format!("{}/api/v1/enroll", collector.url()),
        None,
        Some(body.to_string()),
    )
}

fn findings_of(collector: &Collector, id: &str) -> Vec<Value> {
    let (status, body) = collector.call("GET", "/api/v1/reports/chain", None, None);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Vec<Value>>(&body)
        .unwrap()
        .into_iter()
        .filter(|f| f["workstation"] == id)
        .collect()
}

fn a_workstation_cannot_take_anothers_id_and_a_reinstall_needs_an_administrators_approval(backend: Backend) {
    let collector = Collector::start_new(backend);
    let key = SigningKey::from_bytes(&[16; 32]);
    let mut b = workstation(&collector, &key, "").id("ws-b");
    b.add_user("n.nurse", "Nora Nurse", "nurse", Some("730284"), false);
    b.start();
    b.wait_for_audit("collector_enrolled", 1);

    // Another machine claims B's ID with the fleet's secret: refused, and noted on B.
    let (status, body) = enroll_as(&collector, "ws-b", &collector.secret);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("is enrolled already") && body.contains("workstation re-enroll ws-b"), "{body}");
    let findings = findings_of(&collector, "ws-b");
    assert!(
        findings
            .iter()
            .any(|f| f["kind"] == "enroll_conflict" && f["detail"].as_str().unwrap().contains("impostor-pc")),
        "{findings:?}"
    );
    // B keeps working: what happens there still arrives.
    assert_eq!(b.client("guard").unlock("n.nurse", Some("000000"), None)["result"], "refused");
    eventually("B's unlock_failed at the collector", || {
        collector.all_events().iter().any(|e| e.workstation == "ws-b" && e.kind.as_str() == "unlock_failed")
    });

    // B is reinstalled: an administrator approves enrolling its ID again, once.
    let (status, body) = collector.call("POST", "/api/v1/admin/workstations/ws-b/re-enroll", None, None);
    assert_eq!(status, 201, "{body}");
    let code = serde_json::from_str::<Value>(&body).unwrap()["code"].as_str().unwrap().to_owned();
    let mut reinstalled = workstation(&collector, &key, "").id("ws-b");
    std::fs::write(reinstalled.dir.path().join("enroll-secret"), &code).unwrap();
    reinstalled.start();
    reinstalled.wait_for_audit("collector_enrolled", 1);
    // The old installation's node key stopped working: refused, it tries to enroll with
    // the fleet secret, and that is a conflict now.
    b.wait_for_status("its enrollment refused as a conflict", |s| {
        s["collector_error"].as_str().is_some_and(|e| e.contains("is enrolled already"))
    });
    // The code was for one enrollment.
    let (status, body) = enroll_as(&collector, "ws-b", &code);
    assert_eq!(status, 401, "{body}");

    // Revoked: the reinstalled workstation's key stops at once, and the fleet secret
    // does not bring it back.
    let (status, body) = collector.call("POST", "/api/v1/admin/workstations/ws-b/revoke", None, None);
    assert_eq!(status, 204, "{body}");
    let (status, body) = enroll_as(&collector, "ws-b", &collector.secret);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("was revoked"), "{body}");
    // Its node key refused, it tries its one-time code again, which is spent.
    reinstalled.wait_for_status("its spent code refused", |s| {
        s["collector_error"].as_str().is_some_and(|e| e.contains("enrollment secret not recognised"))
    });

    let (_, log) = collector.call("GET", "/api/v1/admin/log", None, None);
    for action in ["workstation_reenroll_approve", "workstation_revoke"] {
        assert!(log.contains(action), "{action} not in the admin log: {log}");
    }
}

fn enrollment_secrets_expire_run_out_and_are_revoked(backend: Backend) {
    let collector = Collector::start_new(backend);
    let make = |body: Value| {
        let (status, text) =
            collector.call("POST", "/api/v1/admin/enroll-secrets", None, Some(body.to_string()));
        assert_eq!(status, 201, "{text}");
        serde_json::from_str::<Value>(&text).unwrap()
    };
    let two = make(json!({"label": "ward 4", "group": "default", "max_uses": 2}));
    let secret = two["secret"].as_str().unwrap();
    assert_eq!(enroll_as(&collector, "ws-1", secret).0, 200);
    assert_eq!(enroll_as(&collector, "ws-2", secret).0, 200);
    let (status, body) = enroll_as(&collector, "ws-3", secret);
    assert_eq!((status, body.contains("used up")), (401, true), "{body}");

    let short = make(json!({"label": "today", "group": "default", "expires_in_secs": 1}));
    let id = short["id"].as_str().unwrap().to_owned();
    eventually("the secret to expire", || {
        let (_, list) = collector.call("GET", "/api/v1/admin/enroll-secrets", None, None);
        serde_json::from_str::<Vec<Value>>(&list)
            .unwrap()
            .iter()
            .any(|s| s["id"] == id && s["state"] == "expired")
    });
    let (status, body) = enroll_as(&collector, "ws-4", short["secret"].as_str().unwrap());
    assert_eq!((status, body.contains("expired")), (401, true), "{body}");

    let third = make(json!({"label": "spare", "group": "default"}));
    let (status, _) = collector.call(
        "DELETE",
        &format!("/api/v1/admin/enroll-secrets/{}", third["id"].as_str().unwrap()),
        None,
        None,
    );
    assert_eq!(status, 204);
    let (status, body) = enroll_as(&collector, "ws-5", third["secret"].as_str().unwrap());
    assert_eq!((status, body.contains("revoked")), (401, true), "{body}");

    let (_, list) = collector.call("GET", "/api/v1/admin/enroll-secrets", None, None);
    let list: Vec<Value> = serde_json::from_str(&list).unwrap();
    let ward4 = list.iter().find(|s| s["label"] == "ward 4").unwrap();
    assert_eq!(
        (ward4["uses"].as_u64(), ward4["max_uses"].as_u64(), ward4["state"].as_str()),
        (Some(2), Some(2), Some("used up"))
    );
    assert!(!serde_json::to_string(&list).unwrap().contains(secret), "a listed secret shows itself");
    // Auditors may not see or make them.
    let (status, _) = collector.call("GET", "/api/v1/admin/enroll-secrets", Some("not-a-token"), None);
    assert_eq!(status, 401);
}

fn copy_database(from: &Path, to: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let (src, dst) = (format!("{}{suffix}", from.display()), format!("{}{suffix}", to.display()));
        if Path::new(&src).exists() {
            std::fs::copy(&src, &dst).unwrap();
        } else {
            let _ = std::fs::remove_file(&dst);
        }
    }
}

fn a_rolled_back_workstation_log_conflicts_and_both_versions_are_kept_and_the_sender_told(backend: Backend) {
    let collector = Collector::start_new(backend);
    let key = SigningKey::from_bytes(&[17; 32]);
    let mut d = workstation(&collector, &key, "").id("ws-r");
    d.add_user("n.nurse", "Nora Nurse", "nurse", Some("730284"), false);
    d.start();
    d.wait_for_audit("collector_enrolled", 1);
    let synced = |d: &Daemon| {
        let last = d.audit().last().unwrap().seq;
        eventually("the workstation's log at the collector", || {
            collector.all_events().iter().filter(|e| e.workstation == "ws-r").map(|e| e.seq).max()
                >= Some(last)
        });
        last
    };
    synced(&d);
    d.stop();
    // A backup of the workstation's database, then more history, all of it delivered.
    let backup = d.dir.path().join("backup.db");
    copy_database(&d.db_path(), &backup);
    d.start();
    for _ in 0..3 {
        assert_eq!(d.client("guard").unlock("n.nurse", Some("000000"), None)["result"], "refused");
    }
    let delivered_up_to = synced(&d);
    let originals: Vec<AuditEntry> =
        collector.all_events().into_iter().filter(|e| e.workstation == "ws-r").collect();
    d.stop();

    // The backup is restored: the workstation writes other entries under seqs the
    // collector holds, and sends them.
    copy_database(&backup, &d.db_path());
    d.start();
    assert_eq!(d.client("guard").unlock("n.nurse", Some("730284"), None)["result"], "granted");
    eventually("the collector to report the conflicts", || {
        let (_, body) = collector.call("GET", "/api/v1/reports/conflicts?workstation=ws-r", None, None);
        serde_json::from_str::<Vec<Value>>(&body).is_ok_and(|c| !c.is_empty())
    });
    let (status, body) = collector.call("GET", "/api/v1/reports/conflicts?workstation=ws-r", None, None);
    assert_eq!(status, 200, "{body}");
    let conflicts: Vec<Value> = serde_json::from_str(&body).unwrap();
    for c in &conflicts {
        assert_eq!(c["stored"]["seq"], c["seq"]);
        assert_eq!(c["received"]["seq"], c["seq"]);
        assert_ne!(c["stored"]["hash"], c["received"]["hash"], "{c}");
        assert!(c["seq"].as_u64().unwrap() <= delivered_up_to);
    }
    // Nothing of the first version is lost: the collector still holds every original.
    let now_held: Vec<AuditEntry> =
        collector.all_events().into_iter().filter(|e| e.workstation == "ws-r").collect();
    for original in &originals {
        assert!(now_held.contains(original), "seq {} was replaced", original.seq);
    }
    let findings = findings_of(&collector, "ws-r");
    assert!(findings.iter().any(|f| f["kind"] == "rewritten"), "{findings:?}");
    // The sender was told, and keeps its version, not counted delivered.
    let first = conflicts[0]["seq"].as_u64().unwrap();
    eventually("the sender told of the conflict under seq {first}", || {
        d.audit().iter().any(|e| {
            e.kind.as_str() == "collector_conflict" && e.details.get("seq") == Some(&first.to_string())
        })
    });
    let told: Vec<_> = d.audit().into_iter().filter(|e| e.kind.as_str() == "collector_conflict").collect();
    assert!(told.iter().any(|e| e.details.get("seq") == Some(&first.to_string())), "{told:?}");
    assert_eq!(d.open_store().conflicts().unwrap().first(), Some(&first));
}

#[test]
fn a_workstation_over_its_quota_gets_429_waits_as_asked_and_delivers_everything_once() {
    const N: u64 = 1_000;
    let mut collector = Collector::start_on(None, None);
    collector.kill9();
    // The default: 600 entries a minute (a minute's worth at once, then 10 a second).
    collector.extra_args = vec!["--max-entries-per-minute".into(), "600".into()];
    collector.start();
    let key = SigningKey::from_bytes(&[18; 32]);
    let mut d = workstation(&collector, &key, "batch_size = 100\n");
    d.start();
    d.wait_for_audit("collector_enrolled", 1);
    {
        let mut store = d.open_store();
        let mut tx = store.write().unwrap();
        for n in 0..N {
            tx.append(
                AuditDraft::new(UtcMillis::from_unix_millis(1_795_000_000_000 + n as i64), AuditKind::Locked)
                    .detail("quota_test", n),
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    d.wait_for_status("the collector asking to wait", |s| s["collector_retry_after_secs"].is_u64());
    let (_, metrics) = collector.call("GET", "/metrics", None, None);
    let throttled = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wardlock_audit_batches_throttled_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(throttled >= 1, "{metrics}");
    eventually("every entry to be acknowledged", || {
        let store = d.open_store();
        store.acked_seq().unwrap() == store.last_seq().unwrap()
    });
    let events = collector.all_events();
    let injected: Vec<u64> =
        events.iter().filter(|e| e.details.contains_key("quota_test")).map(|e| e.seq).collect();
    let mut distinct = injected.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!((injected.len() as u64, distinct.len() as u64), (N, N), "none lost, none doubled");

    // What the collector answers, as any client sees it: 429 with Retry-After.
    let node = json!({
        "enroll_secret": collector.secret, "workstation_id": "ws-q", "hostname": "h", "group": "default",
        "agent_version": "t", "transport_key": base64_encode(&wardlock_core::transport::keypair(&[6; 32]).1),
    });
    let (_, body) = collector.call("POST", "/api/v1/enroll", None, Some(node.to_string()));
    let node_key = serde_json::from_str::<Value>(&body).unwrap()["node_key"].as_str().unwrap().to_owned();
    let mut log: Vec<AuditEntry> = Vec::new();
    for i in 0..601 {
        let prev = log.last().map(|e| (e.seq, e.hash));
        log.push(AuditEntry::chain(
            AuditDraft::new(UtcMillis::from_unix_millis(1_795_000_000_000 + i), AuditKind::Locked),
            "ws-q",
            prev,
        ));
    }
    let batch = |entries: &[AuditEntry]| {
        json!({"workstation_id": "ws-q", "entries": entries.iter().map(AuditRecord::from).collect::<Vec<_>>()}).to_string()
    };
    assert_eq!(collector.call("POST", "/api/v1/audit", Some(&node_key), Some(batch(&log[..600]))).0, 200);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (status, retry_after) = runtime.block_on(async {
        let cert = reqwest::Certificate::from_pem(&std::fs::read(collector.cert()).unwrap()).unwrap();
        let client = reqwest::Client::builder().add_root_certificate(cert).build().unwrap();
        let response = client
            .post(format!("{}/api/v1/audit", collector.url()))
            .bearer_auth(&node_key)
            .header("content-type", "application/json")
            .body(batch(&log[600..]))
            .send()
            .await
            .unwrap();
        let retry = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
        (response.status().as_u16(), retry)
    });
    assert_eq!(status, 429);
    assert!(
        retry_after.as_deref().and_then(|r| r.parse::<u64>().ok()).is_some_and(|r| (1..=60).contains(&r)),
        "{retry_after:?}"
    );
}

fn a_ward_pc_cannot_move_itself_into_another_group_only_an_administrator_can(backend: Backend) {
    let collector = Collector::start_new(backend);
    let user = |id: &str, group: &str| json!({"id": id, "display_name": "D", "role": "nurse", "pin": "582046", "totp": true, "groups": [group]});
    for (id, group) in [("icu.nurse", "icu"), ("w.nurse", "ward4")] {
        assert_eq!(
            collector.call("POST", "/api/v1/admin/users", None, Some(user(id, group).to_string())).0,
            201
        );
    }
    let (status, made) = collector.call(
        "POST",
        "/api/v1/admin/enroll-secrets",
        None,
        Some(json!({"label": "ward 4", "group": "ward4"}).to_string()),
    );
    assert_eq!(status, 201, "{made}");
    let ward4_secret = serde_json::from_str::<Value>(&made).unwrap()["secret"].as_str().unwrap().to_owned();
    let enroll = |secret: &str, group: &str, transport: u8, bearer: Option<&str>| {
        let body = json!({
            "enroll_secret": secret, "workstation_id": "ws-w4", "hostname": "ward4-pc", "group": group,
            "agent_version": "t", "transport_key": base64_encode(&wardlock_core::transport::keypair(&[transport; 32]).1),
        });
        call(
            &collector.cert(),
            "POST",
            &format!("{}/api/v1/enroll", collector.url()),
            bearer,
            Some(body.to_string()),
        )
    };
    let node_key =
        |body: &str| serde_json::from_str::<Value>(body).unwrap()["node_key"].as_str().unwrap().to_owned();
    // The ward 4 secret does not enroll into the ICU, nor the fleet's into anything but its group.
    assert_eq!(enroll(&ward4_secret, "icu", 5, None).0, 403);
    assert_eq!(enroll(&collector.secret, "icu", 5, None).0, 403);
    let (status, body) = enroll(&ward4_secret, "ward4", 5, None);
    assert_eq!(status, 200, "{body}");
    let key = node_key(&body);
    let directory = |key: &str| collector.call("GET", "/api/v1/directory", Some(key), None).1;
    assert!(directory(&key).contains("w.nurse") && !directory(&key).contains("icu.nurse"));

    // Its own node key proves who it is, not that it may change group or transport key.
    for (group, transport) in [("icu", 6), ("ward4", 6), ("icu", 5)] {
        let (status, body) = enroll("", group, transport, Some(&key));
        assert_eq!(status, 409, "{group} {transport}: {body}");
        assert!(body.contains("administrator's approval"), "{body}");
    }
    assert!(!directory(&key).contains("icu.nurse"), "a refused move opened the ICU's directory");
    let conflict =
        findings_of(&collector, "ws-w4").into_iter().find(|f| f["kind"] == "enroll_conflict").unwrap();
    let detail = conflict["detail"].as_str().unwrap();
    assert_eq!(detail.lines().count(), 3, "each refusal appended, none overwritten: {detail}");
    assert!(detail.contains("group \"ward4\" -> \"icu\"") && detail.contains("transport key"), "{detail}");

    // An administrator moves it: audited, and a finding on the workstation.
    let (status, approved) = collector.call(
        "POST",
        "/api/v1/admin/workstations/ws-w4/re-enroll",
        None,
        Some(json!({"group": "icu"}).to_string()),
    );
    assert_eq!(status, 201, "{approved}");
    let code = serde_json::from_str::<Value>(&approved).unwrap()["code"].as_str().unwrap().to_owned();
    let (status, body) = enroll(&code, "icu", 6, None);
    assert_eq!(status, 200, "{body}");
    let key = node_key(&body);
    assert!(directory(&key).contains("icu.nurse") && !directory(&key).contains("w.nurse"));
    let moved = findings_of(&collector, "ws-w4").into_iter().find(|f| f["kind"] == "group_changed").unwrap();
    assert!(moved["detail"].as_str().unwrap().contains("\"ward4\" -> \"icu\""), "{moved}");
    let (_, log) = collector.call("GET", "/api/v1/admin/log", None, None);
    assert!(log.contains("ws-w4 into group icu"), "{log}");
}

fn ten_thousand_break_glass_entries_dated_in_the_future_cannot_hide_a_real_one(backend: Backend) {
    let collector = Collector::start_new(backend);
    let (status, body) = enroll_as(&collector, "ws-rogue", &collector.secret);
    assert_eq!(status, 200, "{body}");
    let node_key = serde_json::from_str::<Value>(&body).unwrap()["node_key"].as_str().unwrap().to_owned();
    // A rogue ward PC fills the report's window with break-glass entries dated next year...
    let next_year = now().saturating_add(Duration::from_secs(365 * 24 * 3600));
    let mut log: Vec<AuditEntry> = Vec::new();
    for i in 0..10_050 {
        let prev = log.last().map(|e| (e.seq, e.hash));
        let draft =
            AuditDraft::new(next_year.saturating_add(Duration::from_millis(i)), AuditKind::EmergencyAccess)
                .user("x.decoy")
                .detail("reason", "decoy");
        log.push(AuditEntry::chain(draft, "ws-rogue", prev));
    }
    // ...and then a real one happens.
    let prev = log.last().map(|e| (e.seq, e.hash));
    let real = AuditDraft::new(now(), AuditKind::EmergencyAccess)
        .user("n.nurse")
        .detail("reason", "code blue bed 4");
    log.push(AuditEntry::chain(real, "ws-rogue", prev));
    for part in log.chunks(5_000) {
        let batch = json!({"workstation_id": "ws-rogue", "entries": part.iter().map(AuditRecord::from).collect::<Vec<_>>()});
        let (status, body) =
            collector.call("POST", "/api/v1/audit", Some(&node_key), Some(batch.to_string()));
        assert_eq!(status, 200, "{body}");
    }
    // Every page of the report, by entry time: the real access is on one of them.
    let mut seen = 0;
    let mut found = false;
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/api/v1/reports/emergency?limit=10000&after={a}"),
            None => "/api/v1/reports/emergency?limit=10000".to_owned(),
        };
        let (page, next) = get_page(&collector, &path);
        seen += page.len();
        found |= page.iter().any(|e| e["user"] == "n.nurse");
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, 10_051, "every access on some page");
    assert!(found, "the real access was pushed off every page");
    // By the time the collector received them, nothing the workstation says counts.
    let since = now().saturating_add(Duration::from_secs(0)).unix_millis() - 10 * 60 * 1000;
    let since = UtcMillis::from_unix_millis(since).to_rfc3339();
    let (status, body) = collector.call(
        "GET",
        &format!("/api/v1/reports/emergency?by=received&since={since}&limit=10000"),
        None,
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Vec<Value>>(&body).unwrap().len(), 10_000, "a full first page");
    // The dates in the future are findings for compliance.
    let ahead = findings_of(&collector, "ws-rogue").iter().filter(|f| f["kind"] == "time_ahead").count();
    assert!(ahead >= 1000, "{ahead} time_ahead findings");
}

/// One page of a list (a GET with the admin token): its items and `X-Next-After`.
fn get_page(collector: &Collector, path: &str) -> (Vec<Value>, Option<String>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let pem = std::fs::read(collector.cert()).unwrap();
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .build()
            .unwrap();
        let response = client
            .get(format!("{}{path}", collector.url()))
            .bearer_auth(&collector.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let next = response.headers().get("x-next-after").map(|v| v.to_str().unwrap().to_owned());
        (response.json::<Vec<Value>>().await.unwrap(), next)
    })
}

fn a_totp_code_used_at_one_workstation_is_refused_at_another_once_it_hears_of_it(backend: Backend) {
    let collector = Collector::start_new(backend);
    let key = SigningKey::from_bytes(&[24; 32]);
    let user =
        json!({"id": "d.totp", "display_name": "Dee Totp", "role": "nurse", "pin": "582046", "totp": true});
    let (status, body) = collector.call("POST", "/api/v1/admin/users", None, Some(user.to_string()));
    assert_eq!(status, 201, "{body}");
    let uri = serde_json::from_str::<Value>(&body).unwrap()["otpauth_uri"].as_str().unwrap().to_owned();
    let mut a = workstation(&collector, &key, "");
    a.start();
    let mut b = workstation(&collector, &key, "").id("ws-b");
    b.start();
    a.wait_for_audit("user_added", 1);
    b.wait_for_audit("user_added", 1);

    // Someone watches the code typed at A, and walks to B.
    let code = oathtool(&totp_secret(&uri));
    assert_eq!(a.client("guard").unlock("d.totp", None, Some(&code))["result"], "granted");
    let used = a.wait_for_audit("unlock_succeeded", 1);
    assert!(used[0].details.contains_key("totp_step_at"), "{:?}", used[0].details);
    eventually("B to hear of the step used at A", || {
        b.open_store().user_auth("d.totp").unwrap().last_totp_step.is_some()
    });
    assert_eq!(b.client("guard").unlock("d.totp", None, Some(&code))["result"], "refused");
    let refused = b.wait_for_audit("unlock_failed", 1);
    assert_eq!(refused[0].details["reason"], "totp_replayed");
}

/// Every collector test runs on both backends: `sqlite::…` and `postgres::…`.
fn admin_actions_and_their_log_are_written_together(backend: Backend) {
    let collector = Collector::start_new(backend);
    let db = collector
        .db
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", collector.dir.path().join("collector.db").display()));
    // IT's own command line, on the database: each action leaves its entry, with the OS
    // account that ran it.
    for args in [
        vec!["token", "create", "--db", &db, "--label", "siem-reader", "--role", "auditor"],
        vec!["enroll-secret", "create", "--db", &db, "--label", "ward 7", "--group", "ward-7"],
    ] {
        let out = Command::new(wardlock_testkit::bin("wardlock-collector"))
            .args(&args)
            .env("SUDO_USER", "it.oncall")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let (_, log) = collector.call("GET", "/api/v1/admin/log", None, None);
    let log: Vec<Value> = serde_json::from_str(&log).unwrap();
    for action in ["token_create", "enroll_secret_create"] {
        let entry = log
            .iter()
            .find(|e| e["action"] == action && e["actor"].as_str().is_some_and(|a| a.contains("it.oncall")));
        assert!(entry.is_some(), "no {action} by it.oncall's command line in {log:?}");
    }
    // An action whose entry cannot be written does not happen either.
    let tokens = |c: &Collector| c.sql("SELECT count(*) FROM api_tokens").trim().to_owned();
    let before = tokens(&collector);
    collector.sql("ALTER TABLE admin_log RENAME TO admin_log_gone");
    let body = json!({"role": "auditor", "label": "unlogged"}).to_string();
    let (status, answer) = collector.call("POST", "/api/v1/admin/tokens", None, Some(body));
    assert_eq!(status, 503, "{answer}");
    assert_eq!(tokens(&collector), before, "a token was made that the admin log does not show");
    collector.sql("ALTER TABLE admin_log_gone RENAME TO admin_log");
    let body = json!({"role": "auditor", "label": "logged"}).to_string();
    assert_eq!(collector.call("POST", "/api/v1/admin/tokens", None, Some(body)).0, 201);
    let (_, log) = collector.call("GET", "/api/v1/admin/log", None, None);
    assert!(log.contains("label logged") && !log.contains("unlogged"), "{log}");
}

on_both_backends!(
    admin_actions_and_their_log_are_written_together,
    compliance_sees_failures_lockouts_emergencies_and_stale_accounts,
    a_signed_policy_pushed_to_the_collector_reaches_the_workstation_and_forgeries_do_not,
    ten_thousand_entries_survive_a_down_and_killed_collector_and_an_agent_restart,
    a_batch_that_does_not_chain_on_is_flagged_and_kept,
    bad_requests_get_clear_4xx_answers,
    the_collector_directory_reaches_the_workstation_works_offline_and_disabling_takes_effect,
    a_workstation_cannot_take_anothers_id_and_a_reinstall_needs_an_administrators_approval,
    enrollment_secrets_expire_run_out_and_are_revoked,
    a_rolled_back_workstation_log_conflicts_and_both_versions_are_kept_and_the_sender_told,
    the_collector_alone_makes_no_administrator_and_an_it_signed_grant_does,
    a_ward_pc_cannot_move_itself_into_another_group_only_an_administrator_can,
    ten_thousand_break_glass_entries_dated_in_the_future_cannot_hide_a_real_one,
    a_totp_code_used_at_one_workstation_is_refused_at_another_once_it_hears_of_it
);

/// A workstation stopped (for an upgrade, a removal, a shutdown) delivers its last
/// entries, its stop included, before it exits: nothing stays only on the workstation.
#[test]
fn a_stopping_workstation_delivers_its_last_entries_before_it_exits() {
    let collector = Collector::start_new(Backend::Sqlite);
    let key = SigningKey::from_bytes(&[32; 32]);
    let mut d = workstation(&collector, &key, "").id("ws-stop");
    d.start();
    d.wait_for_audit("collector_enrolled", 1);
    d.stop();
    let last = d.audit().last().unwrap().clone();
    assert_eq!(last.kind.as_str(), "service_stopped");
    assert_eq!(d.open_store().acked_seq().unwrap(), last.seq);
    assert!(collector.all_events().contains(&last), "the stop entry is not at the collector");
}

/// A golden image: one workstation made, enrolled and stopped, then its whole directory
/// copied onto machines with other machine IDs. Each clone makes its own identity, says so
/// in its audit, keeps the image's chain whole beside it, and enrolls as a workstation of
/// its own; the image's node key is never used from a clone.
#[test]
fn a_cloned_image_makes_its_own_identity_and_enrolls_as_another_workstation() {
    let collector = Collector::start_new(Backend::Sqlite);
    let key = SigningKey::from_bytes(&[31; 32]);
    let image_machine = "0123456789abcdef0123456789abcdef";
    let mut image = workstation(&collector, &key, "").id("ws-image").machine_id(image_machine);
    image.start();
    image.wait_for_audit("collector_enrolled", 1);
    // Restarted on its own machine: the same identity, nothing renewed.
    image.restart();
    image.stop();
    assert!(!image.kinds().contains(&"workstation_identity_made".to_owned()));
    let image_entries = image.audit().len() as u64;

    // Cloned onto a machine with its own host name (the workstation ID) and machine ID.
    let mut clone = image.cloned().id("ws-bed-12").machine_id("fedcba9876543210fedcba9876543210");
    clone.start();
    let made = clone.wait_for_audit("workstation_identity_made", 1).remove(0);
    assert_eq!(made.seq, 1, "the first entry of the clone's own chain");
    assert_eq!(made.workstation, "ws-bed-12");
    let tag = |id: &str| wardlock_core::identity::machine_tag(id).unwrap();
    assert_eq!(made.details.get("previous_machine"), Some(&tag(image_machine)));
    assert_eq!(made.details.get("machine"), Some(&tag("fedcba9876543210fedcba9876543210")));
    assert_eq!(made.details.get("image_entries"), Some(&image_entries.to_string()));
    assert_eq!(made.details.get("image_workstation").map(String::as_str), Some("ws-image"));
    assert!(!made.details.values().any(|v| v.contains(image_machine)), "the machine ID itself: {made:?}");
    let kept = PathBuf::from(made.details.get("image_database").unwrap());
    assert!(kept.starts_with(clone.dir.path()), "{}", kept.display());
    let verified = Command::new(wardlock_testkit::bin("wardlockctl"))
        .args(["audit", "verify", "--db"])
        .arg(&kept)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verified.stdout);
    assert!(verified.status.success(), "{said}");
    assert!(said.contains(&format!("intact: {image_entries} entries")), "the image's chain, whole: {said}");

    clone.wait_for_audit("collector_enrolled", 1);
    let last = clone.audit().last().unwrap().seq;
    eventually("the clone's log at the collector", || {
        collector.all_events().iter().filter(|e| e.workstation == "ws-bed-12").map(|e| e.seq).max()
            >= Some(last)
    });
    let (_, body) = collector.call("GET", "/api/v1/workstations", None, None);
    let listed: Vec<Value> = serde_json::from_str(&body).unwrap();
    let ids: Vec<&str> = listed.iter().filter_map(|w| w["id"].as_str()).collect();
    assert!(ids.contains(&"ws-image") && ids.contains(&"ws-bed-12"), "{ids:?}");
    assert!(findings_of(&collector, "ws-image").is_empty(), "the clone touched the image's record");

    // A clone whose host name was not changed claims the image's ID with a new identity:
    // refused, and both sides say why; the image's record stays the image's.
    let mut unrenamed = image.cloned().machine_id("00000000000000000000000000000001");
    unrenamed.start();
    unrenamed.wait_for_audit("workstation_identity_made", 1);
    unrenamed.wait_for_status("the collector's refusal", |s| {
        s["collector_error"].as_str().is_some_and(|e| e.contains("is enrolled already"))
    });
    assert!(!unrenamed.kinds().contains(&"collector_enrolled".to_owned()));
    eventually("the refused claim among the image's findings", || {
        findings_of(&collector, "ws-image").iter().any(|f| f["kind"] == "enroll_conflict")
    });
}

#[test]
fn lists_and_reports_come_in_pages_that_follow_each_other_without_gaps() {
    let collector = Collector::start_new(Backend::Sqlite);
    for i in 0..7 {
        assert_eq!(enroll_as(&collector, &format!("ws-{i:02}"), &collector.secret).0, 200);
        // A refused claim on each: one finding each.
        assert_eq!(enroll_as(&collector, &format!("ws-{i:02}"), &collector.secret).0, 409);
    }
    for path in ["/api/v1/workstations", "/api/v1/reports/chain"] {
        let mut seen: Vec<String> = Vec::new();
        let mut after: Option<String> = None;
        let mut pages = 0;
        loop {
            let url = match &after {
                Some(a) => format!("{}{path}?limit=3&after={a}", collector.url()),
                None => format!("{}{path}?limit=3", collector.url()),
            };
            let _ = rustls::crypto::ring::default_provider().install_default();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let (items, next) = runtime.block_on(async {
                let cert = reqwest::Certificate::from_pem(&std::fs::read(collector.cert()).unwrap()).unwrap();
                let client = reqwest::Client::builder().add_root_certificate(cert).build().unwrap();
                let response = client.get(&url).bearer_auth(&collector.token).send().await.unwrap();
                assert_eq!(response.status(), 200, "{url}");
                let next = response.headers().get("x-next-after").map(|v| v.to_str().unwrap().to_owned());
                (response.json::<Vec<Value>>().await.unwrap(), next)
            });
            assert!(items.len() <= 3, "{path}: a page of {}", items.len());
            pages += 1;
            for item in items {
                let id = item.get("id").or(item.get("workstation")).unwrap().as_str().unwrap().to_owned();
                seen.push(id);
            }
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        let expected: Vec<String> = (0..7).map(|i| format!("ws-{i:02}")).collect();
        assert_eq!(seen, expected, "{path}: every item once, in order");
        assert_eq!(pages, 3, "{path}");
    }
    let (status, body) = collector.call("GET", "/api/v1/workstations?limit=10001", None, None);
    assert_eq!(status, 400, "{body}");
}

#[test]
fn the_directory_is_served_from_a_sealed_snapshot_until_it_changes() {
    let collector = Collector::start_new(Backend::Sqlite);
    let user =
        |id: &str| json!({"id": id, "display_name": "D", "role": "nurse", "pin": "582046", "totp": true});
    assert_eq!(collector.call("POST", "/api/v1/admin/users", None, Some(user("d.one").to_string())).0, 201);
    let (status, body) = enroll_as(&collector, "ws-dir", &collector.secret);
    assert_eq!(status, 200, "{body}");
    let node_key = serde_json::from_str::<Value>(&body).unwrap()["node_key"].as_str().unwrap().to_owned();
    let directory = || collector.call("GET", "/api/v1/directory", Some(&node_key), None);
    let (first, second) = (directory(), directory());
    assert_eq!(first.0, 200, "{}", first.1);
    // Sealing draws a new nonce each time: the same bytes twice are the kept snapshot.
    assert_eq!(first.1, second.1, "the seeds were sealed again for the same directory");
    assert!(first.1.contains("totp_sealed"));
    assert!(!first.1.contains("$argon2id$"), "a PIN hash in the clear: {}", first.1);
    assert!(first.1.contains("\"pin_sealed\":\""), "{}", first.1);
    assert_eq!(collector.call("POST", "/api/v1/admin/users", None, Some(user("d.two").to_string())).0, 201);
    let third = directory();
    assert_ne!(third.1, first.1, "a changed directory is served as it is now");
    assert!(third.1.contains("d.two"));
    // A user who works only in the ICU reaches no workstation of another group.
    let icu =
        json!({"id": "d.icu", "display_name": "D", "role": "nurse", "pin": "582046", "groups": ["icu"]});
    assert_eq!(collector.call("POST", "/api/v1/admin/users", None, Some(icu.to_string())).0, 201);
    let fourth = directory();
    assert!(!fourth.1.contains("d.icu"), "a user outside this workstation's group: {}", fourth.1);
    assert_eq!(fourth.1, third.1, "nothing changed for this workstation");
    // The fleet's secret enrolls into its own group only; the ICU's secret into the ICU.
    let (status, body) = enroll_as_in(&collector, "ws-icu", "icu", &collector.secret);
    assert_eq!(status, 403, "{body}");
    let (status, made) = collector.call(
        "POST",
        "/api/v1/admin/enroll-secrets",
        None,
        Some(json!({"label": "icu", "group": "icu"}).to_string()),
    );
    assert_eq!(status, 201, "{made}");
    let icu_secret = serde_json::from_str::<Value>(&made).unwrap()["secret"].as_str().unwrap().to_owned();
    let (status, _) = enroll_as_in(&collector, "ws-icu", "icu", &icu_secret);
    assert_eq!(status, 200);
    let (_, listed) = collector.call("GET", "/api/v1/admin/users", None, None);
    assert!(listed.contains("\"groups\":[\"icu\"]"), "{listed}");
}

fn enroll_as_in(collector: &Collector, id: &str, group: &str, secret: &str) -> (u16, String) {
    let body = json!({
        "enroll_secret": secret, "workstation_id": id, "hostname": "h", "group": group,
        "agent_version": "t", "transport_key": base64_encode(&wardlock_core::transport::keypair(&[7; 32]).1),
    });
    let (status, text) = call(
        &collector.cert(),
        "POST",
        &format!("{}/api/v1/enroll", collector.url()),
        None,
        Some(body.to_string()),
    );
    if status == 200 {
        let key = serde_json::from_str::<Value>(&text).unwrap()["node_key"].as_str().unwrap().to_owned();
        let (_, dir) = collector.call("GET", "/api/v1/directory", Some(&key), None);
        assert!(dir.contains("d.icu"), "the ICU workstation lacks its ICU user: {dir}");
    }
    (status, text)
}

fn the_collector_alone_makes_no_administrator_and_an_it_signed_grant_does(backend: Backend) {
    let mut collector = Collector::start_new(backend);
    let it_key = SigningKey::from_bytes(&[19; 32]);
    let mut d = workstation(&collector, &it_key, "");
    d.start();
    d.wait_for_audit("collector_enrolled", 1);
    let admin = json!({"id": "it.oncall", "display_name": "IT On-call", "role": "admin", "pin": "582046"});
    assert_eq!(collector.call("POST", "/api/v1/admin/users", None, Some(admin.to_string())).0, 201);
    d.wait_for_audit("user_added", 1);
    let stored = collector.sql("SELECT pin_hash FROM users");
    assert!(!stored.contains("$argon2"), "a PIN hash in the clear at the collector: {stored}");

    // Without IT's grant the role is not taken, and that is audited.
    let mut guard = d.client("guard");
    let quit = json!({"type": "quit", "user": "it.oncall", "pin": "582046", "totp": null});
    assert_eq!(
        guard.request(quit.clone())["result"],
        "refused",
        "a collector-made administrator quit the guard"
    );
    let refused = d.audit().into_iter().find(|e| e.kind.as_str() == "admin_grant_refused").expect("audited");
    assert_eq!(refused.user.as_deref(), Some("it.oncall"));
    // A grant signed by a key the workstation does not trust changes nothing.
    let stranger = SigningKey::from_bytes(&[20; 32]);
    let (_, users) = collector.call("GET", "/api/v1/admin/users", None, None);
    let users: Vec<Value> = serde_json::from_str(&users).unwrap();
    let credential = users.iter().find(|u| u["id"] == "it.oncall").unwrap()["credential_digest"]
        .as_str()
        .expect("the directory says what a grant binds")
        .to_owned();
    let grant_for = |user: &str, serial: u64| wardlock_core::policy::AdminGrant {
        user: user.into(),
        issued_at: now(),
        expires: now().saturating_add(Duration::from_secs(3600)),
        serial,
        credential: credential.clone(),
    };
    let forged = grant_for("it.oncall", 2);
    let put = |grant: String| {
        let body = json!({"grant": grant}).to_string();
        collector.call("POST", "/api/v1/admin/users/it.oncall/admin-grant", None, Some(body))
    };
    assert_eq!(put(forged.sign(&stranger)).0, 204);
    eventually("the untrusted grant refused too", || {
        d.audit().iter().filter(|e| e.kind.as_str() == "admin_grant_refused").count() >= 2
    });
    assert_eq!(guard.request(quit.clone())["result"], "refused");
    // A grant for someone else is refused by the collector.
    assert_eq!(put(grant_for("n.nurse", 2).sign(&it_key)).0, 400);

    // IT's grant: the role is taken at the next sync.
    let changed_before = d.kinds().iter().filter(|k| *k == "user_changed").count();
    assert_eq!(put(forged.sign(&it_key)).0, 204);
    d.wait_for_audit("user_changed", changed_before + 1);
    assert_eq!(guard.request(quit.clone())["result"], "authorized");
    let refusals = |d: &Daemon| d.audit().iter().filter(|e| e.kind.as_str() == "admin_grant_refused").count();
    let before = refusals(&d);

    // Someone with the collector's database (and its key: the collector seals what it
    // finds at its start) puts a PIN hash of their own on the administrator.
    let theirs =
        wardlock_core::unlock::hash_pin(&wardlock_core::secret::SecretString::new("193846"), &[3; 16])
            .unwrap();
    collector.sql(&format!(
        "UPDATE users SET pin_hash = '{}', updated_ms = updated_ms + 1 WHERE id = 'it.oncall'",
        theirs.as_phc()
    ));
    collector.restart();
    let stored = collector.sql("SELECT pin_hash FROM users WHERE id = 'it.oncall'");
    assert!(stored.starts_with("sealed:v1:") && !stored.contains("argon2"), "sealed at the start: {stored}");
    eventually("the changed credentials refused", || refusals(&d) > before);
    let refused = d.audit().into_iter().rev().find(|e| e.kind.as_str() == "admin_grant_refused").unwrap();
    assert!(refused.details["what"].contains("not the one IT granted"), "{:?}", refused.details);
    let theirs_quit = json!({"type": "quit", "user": "it.oncall", "pin": "193846", "totp": null});
    assert_eq!(guard.request(theirs_quit)["result"], "refused", "the collector's PIN made an administrator");
    assert_eq!(guard.unlock("it.oncall", Some("193846"), None)["result"], "refused", "nor even a clinician");
    // No administrator while the directory disagrees with IT's grant; the credentials
    // IT granted are the ones still held here.
    assert_eq!(guard.request(quit)["result"], "refused");
    assert_eq!(guard.unlock("it.oncall", Some("582046"), None)["result"], "granted");
}

#[test]
fn the_collector_database_and_its_folder_are_owner_only_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("made-by-hand/collector.db");
    // An administrator bootstrapping by hand, with the usual umask.
    let out = Command::new("sh")
        .args(["-c", "umask 022; exec \"$0\" token create --db \"sqlite://$1\" --label boot --role admin"])
        .arg(wardlock_testkit::bin("wardlock-collector"))
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(db.parent().unwrap()), 0o700);
    for file in ["collector.db", "collector.db-wal", "collector.db-shm"] {
        let path = db.with_file_name(file);
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{file}");
        }
    }
    // A copy restored loosely is tightened at the next open.
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(wardlock_testkit::bin("wardlock-collector"))
        .args(["token", "create", "--db", &format!("sqlite://{}", db.display()), "--label", "two"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(mode(&db), 0o600);
    // And --dev makes its folder, keys and database the same way.
    let dev = dir.path().join("dev");
    let mut collector = Command::new("sh")
        .args(["-c", "umask 022; exec \"$0\" serve --dev \"$1\" --listen 127.0.0.1:0"])
        .arg(wardlock_testkit::bin("wardlock-collector"))
        .arg(&dev)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(collector.stderr.take().unwrap()));
    // It listens on a port of its choosing: its structured `listening` event says which.
    assert!(lines.any(|l| l.unwrap().contains("event=\"listening\"")), "the dev collector never listened");
    let _ = collector.kill();
    let _ = collector.wait();
    assert_eq!(mode(&dev), 0o700);
    for file in ["collector.db", "data.key", "admin-token", "enroll-secret"] {
        assert_eq!(mode(&dev.join(file)) & 0o077, 0, "{file} is readable by others");
    }
}

#[test]
fn a_directory_user_never_replaces_a_local_user_of_the_same_id() {
    let collector = Collector::start_new(Backend::Sqlite);
    let mut d = workstation(&collector, &SigningKey::from_bytes(&[21; 32]), "");
    // Enrolled here by the ward's administrator.
    d.add_user("it.local", "Local Admin", "admin", Some("730284"), false);
    let same = json!({"id": "it.local", "display_name": "Someone Else", "role": "nurse", "pin": "582046"});
    assert_eq!(collector.call("POST", "/api/v1/admin/users", None, Some(same.to_string())).0, 201);
    d.start();
    let conflict = d.wait_for_audit("directory_conflict", 1);
    assert_eq!(conflict[0].user.as_deref(), Some("it.local"));
    let mut guard = d.client("guard");
    assert_eq!(guard.unlock("it.local", Some("582046"), None)["result"], "refused", "the directory's PIN");
    assert_eq!(guard.unlock("it.local", Some("730284"), None)["result"], "granted", "the local one stays");
    let quit = json!({"type": "quit", "user": "it.local", "pin": "730284", "totp": null});
    assert_eq!(guard.request(quit)["result"], "authorized", "still the local administrator");
}

#[test]
fn names_with_control_characters_are_refused_at_intake() {
    let collector = Collector::start_new(Backend::Sqlite);
    let (status, body) = enroll_as(&collector, "ws-ctl", &collector.secret);
    assert_eq!(status, 200, "{body}");
    let node_key = serde_json::from_str::<Value>(&body).unwrap()["node_key"].as_str().unwrap().to_owned();
    for (user, account) in [("n.nurse\nforged line", "ward4"), ("n.nurse", "\tward4"), ("=cmd\r", "ward4")] {
        let draft = AuditDraft::new(now(), AuditKind::Locked).user(user).os_account(Some(account.into()));
        let entry = AuditEntry::chain(draft, "ws-ctl", None);
        let batch = json!({"workstation_id": "ws-ctl", "entries": [AuditRecord::from(&entry)]});
        let (status, body) =
            collector.call("POST", "/api/v1/audit", Some(&node_key), Some(batch.to_string()));
        assert_eq!(status, 400, "{user:?}/{account:?}: {body}");
        assert!(body.contains("control characters"), "{body}");
    }
    assert!(collector.all_events().is_empty(), "nothing was stored");
}

#[test]
fn a_directory_pin_must_meet_the_pin_rules_of_every_group_it_reaches() {
    let collector = Collector::start_new(Backend::Sqlite);
    let it_key = SigningKey::from_bytes(&[23; 32]);
    let icu = sign(&it_key, 1, "icu", "[pin]\nmin_length = 8\n");
    let (status, body) =
        collector.call("PUT", "/api/v1/admin/policies/icu", None, Some(serde_json::to_string(&icu).unwrap()));
    assert_eq!(status, 201, "{body}");
    let add = |id: &str, pin: &str, groups: &[&str]| {
        let user = json!({"id": id, "display_name": "D", "role": "nurse", "pin": pin, "groups": groups});
        collector.call("POST", "/api/v1/admin/users", None, Some(user.to_string()))
    };
    let (status, body) = add("d.icu", "582046", &["icu"]);
    assert_eq!(status, 400, "a six-digit PIN in a ward that asks for eight: {body}");
    assert!(body.contains("group \\\"icu\\\"") && body.contains("at least 8"), "{body}");
    assert_eq!(add("d.icu", "58204613", &["icu"]).0, 201);
    assert_eq!(add("d.ward", "582046", &["ward4"]).0, 201, "ward 4 keeps the default rules");
}
