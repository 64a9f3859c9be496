//! What the console asks of a hospital's collector: 1,000,000 entries from 5,000
//! workstations over 30 days, on SQLite and on a throwaway PostgreSQL cluster. Each
//! question is timed through the store as the API asks it (the server's share of an
//! answer): the first Events page, one user's events, failures of a group, the Fleet page,
//! and the charts over 7 and 30 days. Numbers: docs/benchmarks.md.
//!
//!   cargo bench -p wardlock-collector --bench console
//!   knobs: WARDLOCK_BENCH_ROWS (1000000), WARDLOCK_BENCH_WORKSTATIONS (5000)

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use wardlock_collector::store::{CollectorStore, EventQuery, SqlStore};
use wardlock_core::clock::UtcMillis;
use wardlock_testkit::collector::PgCluster;

mod common;
use common::{knob, median};

const DAY: i64 = 24 * 3600 * 1000;
/// The kinds a ward's day is made of, in the proportions the fill uses.
const KINDS: [&str; 10] = [
    "warning_shown",
    "locked",
    "unlock_succeeded",
    "warning_shown",
    "locked",
    "unlock_succeeded",
    "warning_cancelled",
    "unlock_failed",
    "heartbeat",
    "emergency_access",
];

/// The heat map's counts, which intake keeps (the fill writes entries past it).
const HOUR_COUNTS: &str = "INSERT INTO chart_hours (grp, hour_ms, locks, unlocks)
    SELECT w.grp, (a.time_ms / 3600000) * 3600000,
           sum(CASE WHEN a.kind = 'locked' THEN 1 ELSE 0 END), sum(CASE WHEN a.kind = 'unlock_succeeded' THEN 1 ELSE 0 END)
    FROM audit a JOIN workstations w ON w.id = a.workstation
    WHERE a.kind IN ('locked', 'unlock_succeeded') GROUP BY 1, 2;";

fn main() {
    let rows = knob("WARDLOCK_BENCH_ROWS", 1_000_000);
    let workstations = knob("WARDLOCK_BENCH_WORKSTATIONS", 5000);
    let now = UtcMillis::from_unix_millis(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64,
    );
    let start = now.unix_millis() - 30 * DAY;

    let dir = tempfile::tempdir().unwrap();
    let sqlite = dir.path().join("console.db");
    let store = SqlStore::open_sqlite(&sqlite).unwrap();
    fill_sqlite(&sqlite, rows, workstations, start);
    report("SQLite", &store, rows, workstations, now);
    drop(store);
    if std::env::var("WARDLOCK_BENCH_BACKENDS").is_ok_and(|b| b == "sqlite") {
        return;
    }

    let pg = PgCluster::start();
    let url = pg.database("console");
    let store = SqlStore::open_postgres(&url).unwrap();
    fill_postgres(&url, rows, workstations, start);
    report("PostgreSQL", &store, rows, workstations, now);
}

fn report(backend: &str, store: &SqlStore, rows: usize, workstations: usize, now: UtcMillis) {
    println!("{backend}: {rows} entries from {workstations} workstations over 30 days");
    let show = |what: &str, (took, n): (Duration, usize)| {
        println!("  {what:<44} {:>8.2} ms  ({n} rows)", took.as_secs_f64() * 1000.0);
    };
    let page = |q: EventQuery| EventQuery { limit: 101, ..q };
    show(
        "events, first page (100)",
        median(11, || store.events(&page(EventQuery::default())).unwrap().len()),
    );
    let user = EventQuery { user: Some("u-0042".into()), ..EventQuery::default() };
    show("events of one user (1 in 500)", median(11, || store.events(&page(user.clone())).unwrap().len()));
    let failures = EventQuery { group: Some("g-07".into()), failures: Some(true), ..EventQuery::default() };
    show(
        "failures in one group (1 in 50)",
        median(11, || store.events(&page(failures.clone())).unwrap().len()),
    );
    let ws = EventQuery { workstation: Some("ws-01234".into()), ..EventQuery::default() };
    show("a workstation's timeline", median(11, || store.events(&page(ws.clone())).unwrap().len()));
    let silent_before = UtcMillis::from_unix_millis(now.unix_millis() - 15 * 60 * 1000);
    show(
        "fleet, first page (500)",
        median(11, || store.fleet(None, silent_before, None, 501).unwrap().len()),
    );
    show(
        "fleet of one group (100 workstations)",
        median(11, || store.fleet(Some("g-07"), silent_before, None, 501).unwrap().len()),
    );
    for (days, group) in [(7, None), (30, None), (30, Some("g-07"))] {
        let since = UtcMillis::from_unix_millis(now.unix_millis() - days * DAY);
        let what = match group {
            Some(g) => format!("charts, {days} days, group {g}"),
            None => format!("charts, {days} days"),
        };
        show(
            &what,
            median(5, || {
                let c = store.charts(since, now, group).unwrap();
                c.locks_per_hour.len() + c.unattended.len() + c.emergency_per_week.len()
            }),
        );
    }
}

/// Workstations in 50 groups; entries spread evenly over the 30 days, 500 users.
fn fill_sqlite(path: &std::path::Path, rows: usize, workstations: usize, start: i64) {
    let began = Instant::now();
    let mut conn = rusqlite::Connection::open(path).unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut w = tx
            .prepare(
                "INSERT INTO workstations (id, node_key, hostname, grp, agent_version, enrolled_ms, last_seen_ms,
                     contiguous_hash, transport_key, state, state_ms, backlog, policy_serial, guard_connected)
                 VALUES (?1, ?2, ?1, ?3, '0.1.0', ?4, ?5, x'00', x'00', ?6, ?5, 0, 1, 1)",
            )
            .unwrap();
        for i in 0..workstations {
            let state = ["locked", "active", "warning", "guard_lost"][i % 4];
            // One in 50 has not been heard from for an hour: silent.
            let seen = start + 30 * DAY - if i % 50 == 0 { 3_600_000 } else { 30_000 };
            w.execute(rusqlite::params![
                format!("ws-{i:05}"),
                (i as u64).to_be_bytes().to_vec(),
                format!("g-{:02}", i % 50),
                start,
                seen,
                state
            ])
            .unwrap();
        }
        let mut e = tx
            .prepare(
                "INSERT INTO audit (workstation, seq, time_ms, kind, usr, details, prev_hash, hash, received_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, x'00', x'00', ?3)",
            )
            .unwrap();
        let step = (30 * DAY) / rows as i64;
        for i in 0..rows {
            // Each workstation's entries go round the kinds (5,000 is a multiple of 10).
            let kind = KINDS[(i + i / workstations) % KINDS.len()];
            let details = if kind == "locked" {
                format!("{{\"reason\":\"idle\",\"idle_secs\":\"{}\",\"timeout_secs\":\"300\"}}", 300 + i % 45)
            } else {
                "{}".to_owned()
            };
            e.execute(rusqlite::params![
                format!("ws-{:05}", i % workstations),
                (i / workstations + 1) as i64,
                start + i as i64 * step,
                kind,
                format!("u-{:04}", i % 500),
                details
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
    conn.execute_batch(HOUR_COUNTS).unwrap();
    conn.execute_batch("ANALYZE").unwrap();
    println!("(SQLite filled in {:.1} s)", began.elapsed().as_secs_f64());
}

fn fill_postgres(url: &str, rows: usize, workstations: usize, start: i64) {
    let began = Instant::now();
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let kinds = KINDS.iter().map(|k| format!("'{k}'")).collect::<Vec<_>>().join(", ");
    client
        .batch_execute(&format!(
            "INSERT INTO workstations (id, node_key, hostname, grp, agent_version, enrolled_ms, last_seen_ms,
                 contiguous_hash, transport_key, state, state_ms, backlog, policy_serial, guard_connected)
               SELECT 'ws-' || lpad(i::text, 5, '0'), int8send(i), 'ws-' || lpad(i::text, 5, '0'),
                      'g-' || lpad((i % 50)::text, 2, '0'), '0.1.0', {start},
                      {end} - CASE WHEN i % 50 = 0 THEN 3600000 ELSE 30000 END, '\\x00', '\\x00',
                      (ARRAY['locked', 'active', 'warning', 'guard_lost'])[i % 4 + 1], {end}, 0, 1, TRUE
               FROM generate_series(0::bigint, {w}) i;
             INSERT INTO audit (workstation, seq, time_ms, kind, usr, details, prev_hash, hash, received_ms)
               SELECT 'ws-' || lpad((i % {workstations})::text, 5, '0'), i / {workstations} + 1,
                      {start} + i * {step}, (ARRAY[{kinds}])[(i + i / {workstations}) % {n_kinds} + 1],
                      'u-' || lpad((i % 500)::text, 4, '0'),
                      CASE WHEN (ARRAY[{kinds}])[(i + i / {workstations}) % {n_kinds} + 1] = 'locked'
                           THEN '{{\"reason\":\"idle\",\"idle_secs\":\"' || (300 + i % 45) || '\",\"timeout_secs\":\"300\"}}'
                           ELSE '{{}}' END,
                      '\\x00', '\\x00', {start} + i * {step}
               FROM generate_series(0::bigint, {n}) i;
             {HOUR_COUNTS}
             ANALYZE;",
            end = start + 30 * DAY,
            w = workstations - 1,
            step = (30 * DAY) / rows as i64,
            n_kinds = KINDS.len(),
            n = rows - 1,
        ))
        .unwrap();
    println!("(PostgreSQL filled in {:.1} s)", began.elapsed().as_secs_f64());
}
