//! Speed of the core's hot paths. Numbers and the machine they ran on: docs/benchmarks.md.

#![allow(clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use wardlock_core::audit::{AuditDraft, AuditEntry, AuditKind, ChainVerifier};
use wardlock_core::clock::UtcMillis;
use wardlock_core::policy::TotpPolicy;
use wardlock_core::secret::SecretString;
use wardlock_core::unlock::{check_totp, hash_pin, totp_code, verify_pin, TotpSeed};

fn pin(c: &mut Criterion) {
    let hash = hash_pin(&SecretString::new("730284"), &[7; 16]).unwrap();
    let right = SecretString::new("730284");
    let wrong = SecretString::new("730285");
    let mut g = c.benchmark_group("argon2id");
    g.sample_size(20);
    g.bench_function("verify_right_pin", |b| b.iter(|| assert!(verify_pin(&right, &hash))));
    g.bench_function("verify_wrong_pin", |b| b.iter(|| assert!(!verify_pin(&wrong, &hash))));
    g.finish();
}

fn totp(c: &mut Criterion) {
    let policy = TotpPolicy::default();
    let seed = TotpSeed::new(vec![42; 20]).unwrap();
    let now = UtcMillis::from_unix_millis(1_795_000_000_000);
    let code = SecretString::new(totp_code(&policy, &seed, now).unwrap());
    let wrong = SecretString::new("000000");
    c.bench_function("totp/check_right_code", |b| b.iter(|| check_totp(&policy, &seed, &code, now, None)));
    c.bench_function("totp/check_wrong_code", |b| b.iter(|| check_totp(&policy, &seed, &wrong, now, None)));
}

/// A realistic log: mostly locks and unlocks with a user, method and reason.
fn log(n: usize) -> Vec<AuditEntry> {
    let mut entries: Vec<AuditEntry> = Vec::with_capacity(n);
    for i in 0..n {
        let kind = if i % 2 == 0 { AuditKind::Locked } else { AuditKind::UnlockSucceeded };
        let draft = AuditDraft::new(UtcMillis::from_unix_millis(1_795_000_000_000 + i as i64 * 1000), kind)
            .user(format!("clinician.{}", i % 40))
            .os_account(Some("ward4-shared".into()))
            .policy_hash("9142db034a8524b4280ea4a55528e50258a714334ff982518bffecba695ef9cd")
            .detail("method", "pin")
            .detail("reason", "idle");
        let prev = entries.last().map(|e| (e.seq, e.hash));
        entries.push(AuditEntry::chain(draft, "ws-icu-07", prev));
    }
    entries
}

fn chain(c: &mut Criterion) {
    let entries = log(100_000);
    let mut g = c.benchmark_group("audit_chain");
    g.throughput(Throughput::Elements(entries.len() as u64));
    g.sample_size(20);
    g.bench_function("verify_100k_in_memory", |b| {
        b.iter_batched(
            ChainVerifier::new,
            |mut v| {
                for e in &entries {
                    v.push(e).unwrap();
                }
                v
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, pin, totp, chain);
criterion_main!(benches);
