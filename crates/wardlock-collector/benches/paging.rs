//! Keyset paging on large tables: the first and the last page of 1,000,000 findings and
//! of 1,000,000 events, through the store as the API reads them. Pages are read along an
//! index from the previous page's key, so the last should cost what the first does.
//! Numbers: docs/benchmarks.md.
//!
//!   cargo bench -p wardlock-collector --bench paging                      # SQLite
//!   WARDLOCK_BENCH_DB=postgres://wardlock@127.0.0.1:5432/paging cargo bench -p wardlock-collector --bench paging
//!   knobs: WARDLOCK_BENCH_ROWS (1000000), _PAGE (1000)

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use wardlock_collector::store::{CollectorStore, EventQuery, FindingKey, SqlStore};

mod common;
use common::{knob, median};

fn main() {
    let rows = knob("WARDLOCK_BENCH_ROWS", 1_000_000);
    let page = knob("WARDLOCK_BENCH_PAGE", 1000) as u32;
    let dir = tempfile::tempdir().unwrap();
    let url = std::env::var("WARDLOCK_BENCH_DB").ok();
    let store = match &url {
        Some(url) => SqlStore::open_postgres(url).unwrap(),
        None => SqlStore::open_sqlite(&dir.path().join("paging.db")).unwrap(),
    };
    let start = Instant::now();
    fill(url.as_deref(), &dir.path().join("paging.db"), rows);
    println!(
        "{rows} findings and {rows} events on {} (filled in {:.1} s), pages of {page}",
        if url.is_some() { "PostgreSQL" } else { "SQLite" },
        start.elapsed().as_secs_f64()
    );

    let last_finding: FindingKey = {
        // The key just before the last page: where a client paging to the end would be.
        let all = rows as u64;
        let at = all - u64::from(page) - 1;
        (1_000_000 + at as i64, format!("ws-{:04}", at % 1000), at, "altered".into())
    };
    let (first, n1) = median(21, || store.findings(None, page + 1).unwrap().len());
    let (last, n2) = median(21, || store.findings(Some(&last_finding), page + 1).unwrap().len());
    println!(
        "findings: first page {:.2} ms ({n1} rows), last page {:.2} ms ({n2} rows)",
        ms(first),
        ms(last)
    );

    let query = |after: Option<i64>| EventQuery { after, limit: page + 1, ..EventQuery::default() };
    let (first, n1) = median(21, || store.events(&query(None)).unwrap().len());
    let before_last_page = rows as i64 - i64::from(page);
    let (last, n2) = median(21, || store.events(&query(Some(before_last_page))).unwrap().len());
    println!("events: first page {:.2} ms ({n1} rows), last page {:.2} ms ({n2} rows)", ms(first), ms(last));
    let by_user = |after: Option<i64>| EventQuery {
        user: Some("u-0007".into()),
        after,
        limit: page + 1,
        ..EventQuery::default()
    };
    let (first, n1) = median(21, || store.events(&by_user(None)).unwrap().len());
    let (last, n2) =
        median(21, || store.events(&by_user(Some(rows as i64 - 20 * i64::from(page)))).unwrap().len());
    println!(
        "events of one user (1 in 100): first page {:.2} ms ({n1} rows), a page near the end {:.2} ms ({n2} rows)",
        ms(first),
        ms(last)
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Rows written straight into the tables (the bench is about reading them): findings
/// one per millisecond over 1,000 workstations; events the same, 100 users.
fn fill(url: Option<&str>, sqlite: &std::path::Path, rows: usize) {
    let finding = |i: usize| (format!("ws-{:04}", i % 1000), i as i64, 1_000_000 + i as i64);
    match url {
        None => {
            let mut conn = rusqlite::Connection::open(sqlite).unwrap();
            let tx = conn.transaction().unwrap();
            {
                let mut f = tx
                    .prepare("INSERT INTO findings (workstation, seq, kind, detail, found_ms) VALUES (?1, ?2, 'altered', 'bench', ?3)")
                    .unwrap();
                let mut e = tx
                    .prepare(
                        "INSERT INTO audit (workstation, seq, time_ms, kind, usr, details, prev_hash, hash, received_ms)
                         VALUES (?1, ?2, ?3, 'locked', ?4, '{}', x'00', x'00', ?3)",
                    )
                    .unwrap();
                for i in 0..rows {
                    let (ws, seq, at) = finding(i);
                    f.execute(rusqlite::params![ws, seq, at]).unwrap();
                    e.execute(rusqlite::params![ws, seq, at, format!("u-{:04}", i % 100)]).unwrap();
                }
            }
            tx.commit().unwrap();
        }
        Some(url) => {
            let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
            client
                .batch_execute(&format!(
                    "INSERT INTO findings (workstation, seq, kind, detail, found_ms)
                       SELECT 'ws-' || lpad((i % 1000)::text, 4, '0'), i, 'altered', 'bench', 1000000 + i
                       FROM generate_series(0, {n}) i;
                     INSERT INTO audit (workstation, seq, time_ms, kind, usr, details, prev_hash, hash, received_ms)
                       SELECT 'ws-' || lpad((i % 1000)::text, 4, '0'), i, 1000000 + i, 'locked',
                              'u-' || lpad((i % 100)::text, 4, '0'), '{{}}', '\\x00', '\\x00', 1000000 + i
                       FROM generate_series(0, {n}) i;
                     ANALYZE findings; ANALYZE audit;",
                    n = rows - 1
                ))
                .unwrap();
        }
    }
}
