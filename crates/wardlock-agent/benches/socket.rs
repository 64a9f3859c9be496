//! Round trips through the real `wardlockd` (started as a process by the test kit, on a
//! real socket and a real SQLite file): what the guard waits for. Numbers:
//! docs/benchmarks.md.

#![allow(clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use wardlock_testkit::agent::Daemon;

fn round_trips(c: &mut Criterion) {
    let mut d = Daemon::new(
        "[lockout]\nthrottle = \"0s\"\nmax_failures = 20\nworkstation_max_failures = 1000\n[service]\nmax_attempts_per_minute = 600\n",
    );
    d.add_user("n.nurse", "Nora Nurse", "nurse", Some("730284"), false);
    d.start();
    // This benchmark's process is the guard executable the test kit configures.
    let mut guard = d.client("guard");

    let mut g = c.benchmark_group("wardlockd_socket");
    g.bench_function("heartbeat_round_trip", |b| {
        b.iter(|| assert_eq!(guard.request(json!({"type": "heartbeat"}))["type"], "ack"))
    });
    g.bench_function("status_round_trip", |b| {
        b.iter(|| assert_eq!(guard.request(json!({"type": "status"}))["type"], "status"))
    });
    g.sample_size(20);
    g.bench_function("unlock_granted_round_trip", |b| {
        b.iter(|| assert_eq!(guard.unlock("n.nurse", Some("730284"), None)["result"], "granted"))
    });
    g.finish();
}

criterion_group!(benches, round_trips);
criterion_main!(benches);
