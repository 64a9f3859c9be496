//! Audit log throughput on a real SQLite file. Numbers: docs/benchmarks.md.

#![allow(clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wardlock_core::audit::{AuditDraft, AuditKind};
use wardlock_core::clock::UtcMillis;
use wardlock_store::store::OpenOptions;
use wardlock_store::Store;

fn draft(i: u64) -> AuditDraft {
    AuditDraft::new(UtcMillis::from_unix_millis(1_795_000_000_000 + i as i64), AuditKind::UnlockSucceeded)
        .user(format!("clinician.{}", i % 40))
        .os_account(Some("ward4-shared".into()))
        .detail("method", "pin")
}

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(&dir.path().join("w.db"), &OpenOptions { create: true, workstation_id: "ws-bench".into() })
        .unwrap()
}

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let mut i = 0;
    let mut g = c.benchmark_group("audit_store");
    g.throughput(Throughput::Elements(1));
    g.bench_function("append_durable_synchronous_full", |b| {
        b.iter(|| {
            i += 1;
            store.append(draft(i)).unwrap()
        })
    });
    g.finish();
}

fn verify(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    // One transaction for set-up speed; the chain is the same as with single appends.
    let n = 100_000u64;
    let mut tx = store.write().unwrap();
    for i in 0..n {
        tx.append(draft(i)).unwrap();
    }
    tx.commit().unwrap();
    let mut g = c.benchmark_group("audit_store");
    g.throughput(Throughput::Elements(n));
    g.sample_size(10);
    g.bench_function("verify_100k_from_sqlite", |b| {
        b.iter(|| assert_eq!(store.verify_audit().unwrap().entries, n))
    });
    g.finish();
}

/// A whole unlock decision as `wardlockd` will make it: read the user and counters, verify
/// the PIN (Argon2id), commit counters and audit entry durably.
fn unlock(c: &mut Criterion) {
    use wardlock_core::policy::ValidPolicy;
    use wardlock_core::secret::SecretString;
    use wardlock_core::unlock::{Attempt, Outcome};
    use wardlock_store::auth::{attempt_unlock, Context, Purpose};
    use wardlock_store::directory::{add_user, Actor, NewUser};
    use wardlock_store::secrets::{DataKey, MemorySecretStore};

    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let secrets = MemorySecretStore::default();
    let key = DataKey::open_or_create(&secrets, &store).unwrap();
    let policy = ValidPolicy::default();
    let t = UtcMillis::from_unix_millis(1_795_000_000_000);
    let new = NewUser {
        id: "n.nurse".into(),
        display_name: "Nora Nurse".into(),
        role: "nurse".into(),
        pin: Some(SecretString::new("730284")),
        totp: false,
    };
    add_user(&mut store, &key, &policy, new, &Actor::default(), t).unwrap();
    let attempt =
        Attempt { user_id: "n.nurse".into(), pin: Some(SecretString::new("730284")), ..Attempt::default() };
    let mut g = c.benchmark_group("unlock");
    g.sample_size(20);
    g.bench_function("right_pin_decided_and_audited", |b| {
        b.iter(|| {
            let r =
                attempt_unlock(&mut store, &key, &policy, &attempt, Purpose::Unlock, &Context::default(), t)
                    .unwrap();
            assert!(matches!(r.outcome, Outcome::Granted { .. }));
        })
    });
    g.finish();
}

criterion_group!(benches, append, verify, unlock);
criterion_main!(benches);
