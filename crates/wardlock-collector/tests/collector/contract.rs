//! The store's contract: every `CollectorStore` method, with what its answers mean, run
//! on the embedded SQLite file and on a real PostgreSQL cluster (`sqlite::…` and
//! `postgres::…`). One implementation serves both; this is what keeps it honest.

use wardlock_collector::store::{
    AdminAction, CollectorStore, EnrollAttempt, EnrollResult, EventQuery, NewEnrollSecret, NewWorkstation,
    PolicyPut, Received, Role, SqlStore, StoreError, UserRecord,
};
use wardlock_core::audit::{AuditDraft, AuditEntry, AuditKind};
use wardlock_core::clock::UtcMillis;
use wardlock_core::protocol::collector::Heartbeat;
use wardlock_testkit::collector::PgCluster;

enum Backend {
    Sqlite,
    Postgres,
}

/// A store on a new, empty database (and what keeps that database alive).
struct Fresh {
    store: SqlStore,
    _dir: tempfile::TempDir,
    /// The PostgreSQL database's URL, and its cluster.
    pg: Option<(String, PgCluster)>,
}

fn fresh(backend: Backend) -> Fresh {
    let dir = tempfile::tempdir().unwrap();
    match backend {
        Backend::Sqlite => {
            Fresh { store: SqlStore::open_sqlite(&dir.path().join("c.db")).unwrap(), _dir: dir, pg: None }
        }
        Backend::Postgres => {
            let pg = PgCluster::start();
            let url = pg.database("contract");
            Fresh { store: SqlStore::open_postgres(&url).unwrap(), _dir: dir, pg: Some((url, pg)) }
        }
    }
}

fn at(ms: i64) -> UtcMillis {
    UtcMillis::from_unix_millis(ms)
}

fn action(what: &str) -> AdminAction {
    AdminAction { time: at(1), actor: "token it".into(), action: what.into(), detail: String::new() }
}

fn enroll(store: &dyn CollectorStore, id: &str, group: &str) {
    let secret = [group.len() as u8; 32];
    let fleet = NewEnrollSecret { label: group.into(), group: group.into(), expires: None, max_uses: None };
    let _ = store.add_enroll_secret(&secret, &fleet, at(0), None);
    let mut node_key = [0; 32];
    node_key[..id.len()].copy_from_slice(id.as_bytes());
    let workstation = NewWorkstation {
        id: id.into(),
        hostname: format!("{id}.ward"),
        group: group.into(),
        agent_version: "t".into(),
        transport_key: vec![7; 32],
    };
    let attempt = EnrollAttempt { secret, workstation, node_key, presented_key: None };
    assert_eq!(store.enroll(&attempt, at(10)).unwrap(), EnrollResult::Enrolled);
}

fn chain(id: &str, kinds: &[(AuditKind, &str, i64)]) -> Vec<AuditEntry> {
    let mut log: Vec<AuditEntry> = Vec::new();
    for (kind, user, time) in kinds {
        let prev = log.last().map(|e| (e.seq, e.hash));
        log.push(AuditEntry::chain(AuditDraft::new(at(*time), *kind).user(*user), id, prev));
    }
    log
}

fn beat(last_seq: u64) -> Heartbeat {
    Heartbeat {
        workstation_id: String::new(),
        time: at(0),
        last_seq,
        unsent: 0,
        policy_serial: None,
        guard_connected: true,
    }
}

fn received(entries: &[AuditEntry]) -> Vec<Received> {
    entries.iter().cloned().map(Received::new).collect()
}

fn enrollment_and_workstations(backend: Backend) {
    let fresh = fresh(backend);
    let store: &dyn CollectorStore = &fresh.store;
    let fleet =
        NewEnrollSecret { label: "ward 4".into(), group: "ward-4".into(), expires: None, max_uses: Some(2) };
    store.add_enroll_secret(&[4; 32], &fleet, at(5), Some(&action("enroll_secret_create"))).unwrap();
    enroll(store, "ws-b", "icu");
    enroll(store, "ws-a", "ward-4");
    enroll(store, "ws-c", "ward-4");
    // Secrets page in the order made, and one is found by its ID.
    let first = store.enroll_secrets(None, 1).unwrap();
    assert_eq!(first.len(), 1);
    let rest =
        store.enroll_secrets(Some(&(first[0].created.unix_millis(), first[0].hash.to_vec())), 10).unwrap();
    assert_eq!(1 + rest.len(), 3, "{first:?} {rest:?}");
    let ward4 = store.enroll_secrets(None, 10).unwrap().into_iter().find(|s| s.label == "ward 4").unwrap();
    assert_eq!(store.enroll_secret(&ward4.id()).unwrap().as_ref(), Some(&ward4));
    assert_eq!(store.enroll_secret("000000000000").unwrap(), None);
    assert_eq!(store.enroll_secret("not hex").unwrap(), None);
    assert!(store.revoke_enroll_secret(&[4; 32], at(20), Some(&action("enroll_secret_revoke"))).unwrap());
    assert!(!store.revoke_enroll_secret(&[9; 32], at(20), Some(&action("nothing"))).unwrap());
    // Workstations page by ID; silent ones are those not heard from since a time.
    let page: Vec<String> = store.workstations(None, None, 2).unwrap().into_iter().map(|w| w.id).collect();
    assert_eq!(page, ["ws-a", "ws-b"]);
    let page: Vec<String> =
        store.workstations(None, Some("ws-b"), 2).unwrap().into_iter().map(|w| w.id).collect();
    assert_eq!(page, ["ws-c"]);
    store.heartbeat("ws-a", &beat(0), at(1_000)).unwrap();
    let silent: Vec<String> =
        store.workstations(Some(at(500)), None, 10).unwrap().into_iter().map(|w| w.id).collect();
    assert_eq!(silent, ["ws-b", "ws-c"]);
    assert_eq!(store.workstation_count().unwrap(), 3);
    assert_eq!(store.workstation_groups().unwrap(), ["icu", "ward-4"]);
    let mut key = [0; 32];
    key[..4].copy_from_slice(b"ws-a");
    assert_eq!(store.workstation_by_key(&key).unwrap().map(|w| w.hostname), Some("ws-a.ward".into()));
    // Revoked: its key stops working; only an approval brings the ID back.
    assert!(store
        .revoke_workstation("ws-a", &[0xdd; 32], at(30), Some(&action("workstation_revoke")))
        .unwrap());
    assert_eq!(store.workstation_by_key(&key).unwrap(), None);
    store
        .approve_reenroll(
            "ws-a",
            &[5; 32],
            Some("ward-4"),
            at(100),
            at(40),
            Some(&action("reenroll_approve")),
        )
        .unwrap();
    let again = EnrollAttempt {
        secret: [5; 32],
        workstation: NewWorkstation {
            id: "ws-a".into(),
            hostname: "ws-a.ward".into(),
            group: "ward-4".into(),
            agent_version: "t".into(),
            transport_key: vec![7; 32],
        },
        node_key: key,
        presented_key: None,
    };
    assert_eq!(store.enroll(&again, at(50)).unwrap(), EnrollResult::Enrolled);
    assert!(
        matches!(store.enroll(&again, at(60)).unwrap(), EnrollResult::Unauthorized(_)),
        "the approval is spent"
    );
    // Every action that changed something is logged, and the one that did not is not.
    let log: Vec<String> = store.admin_log(None, 100).unwrap().into_iter().map(|(_, a)| a.action).collect();
    assert_eq!(
        log,
        ["enroll_secret_create", "enroll_secret_revoke", "workstation_revoke", "reenroll_approve"]
    );
}

fn intake_findings_conflicts_and_events(backend: Backend) {
    let fresh = fresh(backend);
    let store: &dyn CollectorStore = &fresh.store;
    enroll(store, "ws-a", "default");
    let log = chain("ws-a", &[(AuditKind::Locked, "n.nurse", 1), (AuditKind::UnlockSucceeded, "n.nurse", 2)]);
    let done = store.ingest("ws-a", received(&log), at(100)).unwrap();
    assert_eq!((done.stored, done.ack.highest_contiguous_seq), (2, 2));
    // The same again is a no-op; another content under a stored seq is kept beside it.
    assert_eq!(store.ingest("ws-a", received(&log), at(101)).unwrap().duplicates, 2);
    let forged = chain("ws-a", &[(AuditKind::Locked, "someone.else", 1)]);
    let done = store.ingest("ws-a", received(&forged), at(102)).unwrap();
    assert_eq!(done.ack.conflicts, vec![1]);
    assert!(store.ingest("ws-unknown", received(&log), at(103)).is_err(), "no such workstation");
    assert_eq!(store.entry_count().unwrap(), 2);
    let conflicts = store.conflicts(Some("ws-a"), None, 10).unwrap();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(
        (conflicts[0].stored.user.as_deref(), conflicts[0].received.user.as_deref()),
        (Some("n.nurse"), Some("someone.else"))
    );
    let c = &conflicts[0];
    let key = (c.workstation.clone(), c.seq, c.received_at.unix_millis(), c.received.hash.to_vec());
    assert!(store.conflicts(None, Some(&key), 10).unwrap().is_empty());
    assert!(store.conflicts(Some("ws-b"), None, 10).unwrap().is_empty());
    // The workstation reports fewer entries than are stored: its log lost its tail.
    store.heartbeat("ws-a", &beat(1), at(200)).unwrap();
    let findings = store.findings(None, 10).unwrap();
    let kinds: Vec<&str> = findings.iter().map(|f| f.kind.as_str()).collect();
    assert_eq!(kinds, ["rewritten", "truncated"], "in the order found");
    let f = &findings[0];
    let after = (f.found.unix_millis(), f.workstation.clone(), f.seq, f.kind.clone());
    assert_eq!(store.findings(Some(&after), 10).unwrap(), findings[1..]);
    // Events: filters, and keyset paging by arrival.
    let q = |user: Option<&str>, after: Option<i64>| EventQuery {
        user: user.map(str::to_owned),
        after,
        limit: 1,
        ..EventQuery::default()
    };
    let first = store.events(&q(None, None)).unwrap();
    assert_eq!(first[0].entry, log[0]);
    assert_eq!(store.events(&q(None, Some(first[0].id))).unwrap()[0].entry, log[1]);
    assert!(store.events(&q(Some("someone.else"), None)).unwrap().is_empty(), "a conflict is no event");
    let by_kind = EventQuery { kind: Some("unlock_succeeded".into()), limit: 10, ..EventQuery::default() };
    assert_eq!(store.events(&by_kind).unwrap().len(), 1);
    // A forwarder's cursor.
    assert_eq!(store.forward_cursor("syslog").unwrap(), 0);
    store.set_forward_cursor("syslog", 2).unwrap();
    store.set_forward_cursor("syslog", 5).unwrap();
    assert_eq!(store.forward_cursor("syslog").unwrap(), 5);
}

fn user(id: &str, updated: i64) -> UserRecord {
    UserRecord {
        id: id.into(),
        display_name: id.to_uppercase(),
        role: "clinician".into(),
        disabled: false,
        pin_sealed: Some("sealed:v1:x".into()),
        totp_sealed: None,
        updated: at(updated),
        admin_grant: None,
        groups: vec!["icu".into(), "ward-4".into()],
    }
}

fn reports_mean_what_they_say(backend: Backend) {
    let fresh = fresh(backend);
    let store: &dyn CollectorStore = &fresh.store;
    enroll(store, "ws-a", "default");
    enroll(store, "ws-b", "default");
    use AuditKind::*;
    let a = chain(
        "ws-a",
        &[
            (UnlockFailed, "f.fumbler", 1_000),
            (UnlockFailed, "f.fumbler", 1_001),
            (UnlockFailed, "f.fumbler", 1_002),
            (UserLockedOut, "f.fumbler", 1_003),
            (UnlockFailed, "o.once", 1_004),
            (HoldStarted, "h.holder", 5_000),
            (EmergencyAccess, "e.emergency", 5_001),
            (UnlockSucceeded, "u.unlocker", 5_002),
            (UnlockSucceeded, "o.old", 100),
            (Locked, "l.lockedonly", 5_003),
        ],
    );
    store.ingest("ws-a", received(&a), at(6_000)).unwrap();
    let b = chain("ws-b", &[(UnlockFailed, "f.fumbler", 1_010)]);
    store.ingest("ws-b", received(&b), at(6_000)).unwrap();
    // Failures: most first, per user and workstation, paged along that order.
    let failed = store.failures_by_user(at(0), None, 10).unwrap();
    let rows: Vec<(&str, &str, u64, u64)> = failed
        .iter()
        .map(|f| (f.user.as_str(), f.workstation.as_str(), f.failed_attempts, f.lockouts))
        .collect();
    assert_eq!(rows, [("f.fumbler", "ws-a", 3, 1), ("f.fumbler", "ws-b", 1, 0), ("o.once", "ws-a", 1, 0)]);
    let f = &failed[0];
    let after = (f.failed_attempts, f.user.clone(), f.workstation.clone());
    assert_eq!(store.failures_by_user(at(0), Some(&after), 10).unwrap(), failed[1..]);
    assert_eq!(store.failures_by_user(at(1_005), None, 10).unwrap()[0].workstation, "ws-b", "since");
    // Stale: a hold, break-glass or an unlock is use; a lock alone is not; disabled users
    // and users changed since the cutoff are not reported.
    for id in ["h.holder", "e.emergency", "u.unlocker", "o.old", "l.lockedonly", "n.never"] {
        assert!(store.put_user(&user(id, 10), true, None).unwrap());
    }
    let mut disabled = user("d.disabled", 10);
    disabled.disabled = true;
    store.put_user(&disabled, true, None).unwrap();
    store.put_user(&user("r.recent", 4_500), true, None).unwrap();
    let stale = store.stale_users(at(4_000), None, 10).unwrap();
    let ids: Vec<(&str, Option<i64>)> =
        stale.iter().map(|(u, last)| (u.id.as_str(), last.map(|t| t.unix_millis()))).collect();
    assert_eq!(ids, [("l.lockedonly", None), ("n.never", None), ("o.old", Some(100))]);
    assert_eq!(store.stale_users(at(4_000), Some("n.never"), 10).unwrap().len(), 1, "paged by ID");
    // Users: new-only refuses an existing one; a change replaces it; pages by ID.
    assert!(!store.put_user(&user("o.old", 20), true, Some(&action("user_add"))).unwrap());
    let mut changed = user("o.old", 30);
    changed.display_name = "Olga Old".into();
    assert!(store.put_user(&changed, false, Some(&action("user_change"))).unwrap());
    assert_eq!(store.user("o.old").unwrap(), Some(changed));
    assert_eq!(store.user("nobody").unwrap(), None);
    assert!(store.set_admin_grant("o.old", "grant", at(40), Some(&action("admin_grant"))).unwrap());
    assert!(!store.set_admin_grant("nobody", "grant", at(40), Some(&action("nothing"))).unwrap());
    assert_eq!(store.user("o.old").unwrap().unwrap().admin_grant.as_deref(), Some("grant"));
    let page: Vec<String> =
        store.users_page(Some("h.holder"), 2).unwrap().into_iter().map(|u| u.id).collect();
    assert_eq!(page, ["l.lockedonly", "n.never"]);
    assert_eq!(store.users().unwrap().len(), 8);
    // The admin log pages in the order written.
    let log = store.admin_log(None, 1).unwrap();
    assert_eq!(log[0].1.action, "user_change");
    assert_eq!(store.admin_log(Some(log[0].0), 10).unwrap().len(), 1);
    store.log_admin(&action("sign_in")).unwrap();
    assert_eq!(store.admin_log(None, 10).unwrap().len(), 3);
}

fn policies_tokens_and_totp_steps(backend: Backend) {
    let fresh = fresh(backend);
    let store: &dyn CollectorStore = &fresh.store;
    assert_eq!(store.policy("icu").unwrap(), None);
    assert_eq!(
        store.put_policy("icu", 2, "{\"v\":2}", at(1), Some(&action("policy_put"))).unwrap(),
        PolicyPut::Stored
    );
    assert_eq!(
        store.put_policy("icu", 2, "{\"v\":2b}", at(2), Some(&action("policy_put"))).unwrap(),
        PolicyPut::Stale { current: 2 }
    );
    assert_eq!(store.put_policy("icu", 1, "{}", at(3), None).unwrap(), PolicyPut::Stale { current: 2 });
    let (envelope, etag) = store.policy("icu").unwrap().unwrap();
    assert_eq!(envelope, "{\"v\":2}");
    assert!(etag.starts_with('"'));
    assert_eq!(store.admin_log(None, 10).unwrap().len(), 1, "a refused put is not logged");
    store.add_token(&[3; 32], Role::Auditor, "siem", at(1), None).unwrap();
    assert_eq!(store.token(&[3; 32]).unwrap(), Some((Role::Auditor, "siem".into())));
    assert_eq!(store.token(&[4; 32]).unwrap(), None);
    // The latest step per user is kept; an older one noted later does not replace it.
    store.note_totp_steps(&[("d.totp".into(), at(60_000))], at(100)).unwrap();
    store.note_totp_steps(&[("d.totp".into(), at(30_000)), ("e.other".into(), at(30_000))], at(200)).unwrap();
    let mut steps = store.recent_totp_steps(at(0)).unwrap();
    steps.sort();
    assert_eq!(steps, [("d.totp".into(), at(60_000)), ("e.other".into(), at(30_000))]);
    assert_eq!(store.recent_totp_steps(at(150)).unwrap(), [("e.other".into(), at(30_000))]);
}

/// A row that is not what the schema says (here a NULL, on a database someone changed by
/// hand) is a typed error for that call, not a panic in a worker.
#[test]
fn a_tampered_postgresql_row_is_an_error_not_a_panic() {
    let fresh = fresh(Backend::Postgres);
    enroll(&fresh.store, "ws-a", "default");
    let (url, _) = fresh.pg.as_ref().unwrap();
    let out = std::process::Command::new("psql")
        .arg(url)
        .args(["-c", "ALTER TABLE workstations ALTER COLUMN hostname DROP NOT NULL; UPDATE workstations SET hostname = NULL"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answer = fresh.store.workstations(None, None, 10);
    assert!(matches!(answer, Err(StoreError::Row { column: 1, found: "NULL", .. })), "{answer:?}");
    assert_eq!(fresh.store.workstation_count().unwrap(), 1, "the store still answers");
}

on_both_backends!(
    enrollment_and_workstations,
    intake_findings_conflicts_and_events,
    reports_mean_what_they_say,
    policies_tokens_and_totp_steps
);
