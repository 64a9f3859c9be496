//! Collector intake under a fleet's load: many simulated workstations push hash-chained
//! batches over HTTPS to the real API (in process, real TLS, real database). Prints
//! entries/s and the audit endpoint's latency percentiles. Numbers: docs/benchmarks.md.
//!
//!   cargo bench -p wardlock-collector --bench ingest                      # SQLite
//!   WARDLOCK_BENCH_DB=postgres://wardlock@127.0.0.1:5432/bench cargo bench -p wardlock-collector --bench ingest
//!   WARDLOCK_BENCH_WORKSTATIONS=1 WARDLOCK_BENCH_ENTRIES=100000 …         # one workstation draining a backlog

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use wardlock_collector::api::{self, AppState, Metrics};
use wardlock_collector::secret;
use wardlock_collector::store::{
    CollectorStore, EnrollAttempt, EnrollResult, NewEnrollSecret, NewWorkstation,
};
use wardlock_core::audit::{AuditDraft, AuditEntry, AuditKind};
use wardlock_core::clock::UtcMillis;
use wardlock_core::protocol::collector::AuditRecord;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let workstations = env("WARDLOCK_BENCH_WORKSTATIONS", 1000);
    let per_workstation = env("WARDLOCK_BENCH_ENTRIES", 100);
    let batch = env("WARDLOCK_BENCH_BATCH", 50);
    let concurrency = env("WARDLOCK_BENCH_CONCURRENCY", 64);
    wardlock_collector::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn CollectorStore> = match std::env::var("WARDLOCK_BENCH_DB") {
        Ok(url) => Arc::new(wardlock_collector::store::pg::PgStore::open(&url).unwrap()),
        Err(_) => {
            Arc::new(wardlock_collector::store::sqlite::SqliteStore::open(&dir.path().join("c.db")).unwrap())
        }
    };
    let backend = if std::env::var("WARDLOCK_BENCH_DB").is_ok() { "PostgreSQL" } else { "SQLite" };

    // Enrolled workstations and their logs, made before the clock starts.
    let enroll_secret = secret::hash("bench");
    let unlimited = NewEnrollSecret { label: "bench".into(), expires: None, max_uses: None };
    store.add_enroll_secret(&enroll_secret, &unlimited, api::now()).unwrap();
    let mut fleet = Vec::new();
    for w in 0..workstations {
        let id = format!("ws-{w:05}");
        let key = secret::generate().unwrap();
        let ws = NewWorkstation {
            id: id.clone(),
            hostname: id.clone(),
            group: "default".into(),
            agent_version: "bench".into(),
            transport_key: vec![7; 32],
        };
        let attempt = EnrollAttempt {
            secret: enroll_secret,
            workstation: ws,
            node_key: secret::hash(&key),
            presented_key: None,
        };
        assert_eq!(store.enroll(&attempt, api::now()).unwrap(), EnrollResult::Enrolled);
        let mut log: Vec<AuditEntry> = Vec::with_capacity(per_workstation);
        for i in 0..per_workstation {
            let prev = log.last().map(|e| (e.seq, e.hash));
            // Times rise across the fleet as the batches go out, as in real traffic.
            let time = 1_795_000_000_000 + (i * workstations + w) as i64;
            let draft = AuditDraft::new(UtcMillis::from_unix_millis(time), AuditKind::UnlockSucceeded)
                .user(format!("clinician.{}", i % 40))
                .os_account(Some("ward-shared".into()))
                .policy_hash("0cc66f583cb75354f0f362c2dde680452e3351e9337f4a4ef71d1e24a94f4031")
                .detail("method", "pin");
            log.push(AuditEntry::chain(draft, &id, prev));
        }
        let bodies: Vec<String> = log
            .chunks(batch)
            .map(|c| serde_json::json!({"workstation_id": id, "entries": c.iter().map(AuditRecord::from).collect::<Vec<_>>()}).to_string())
            .collect();
        fleet.push((key, bodies));
    }
    let total = (workstations * per_workstation) as f64;

    // Dropped after the runtime: a database client that blocks on drop must not go on its threads.
    let keep = store.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let (elapsed, mut latencies) = runtime.block_on(async move {
        let (cert, key) = wardlock_collector::tls::dev_certificate(&dir.path().join("tls")).unwrap();
        let config = wardlock_collector::tls::server_config(&cert, &key).unwrap();
        let data_key = Arc::new(secret::DataKey::create_file(&dir.path().join("data.key")).unwrap());
        let state = AppState {
            store,
            metrics: Arc::new(Metrics::default()),
            data_key,
            stored: Arc::new(tokio::sync::Notify::new()),
            // The bench is a whole fleet's backlog at once: no per-workstation limit.
            quota: Arc::new(wardlock_collector::api::quota::Quota::new(
                wardlock_collector::api::quota::Limits {
                    entries_per_minute: u32::MAX,
                    bytes_per_day: u64::MAX,
                },
            )),
            snapshots: Arc::default(),
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config));
        tokio::spawn(
            axum_server::from_tcp_rustls(listener, tls)
                .unwrap()
                .serve(api::router(state).into_make_service()),
        );
        let pem = std::fs::read(&cert).unwrap();
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .pool_max_idle_per_host(concurrency)
            .build()
            .unwrap();
        let url = format!("https://localhost:{}/api/v1/audit", addr.port());
        // Workstations take turns per batch, so many are in flight at once, as in a reconnect storm.
        let jobs: Vec<(String, Vec<String>)> = fleet;
        let queue = Arc::new(tokio::sync::Mutex::new(
            jobs.into_iter().map(|(k, b)| (k, b.into_iter())).collect::<Vec<_>>(),
        ));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for worker in 0..concurrency {
            let (client, url, queue) = (client.clone(), url.clone(), queue.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut slot = worker;
                loop {
                    // Each worker owns the workstations worker, worker + n, …: batches of one workstation stay in order.
                    let next = {
                        let mut q = queue.lock().await;
                        if slot >= q.len() {
                            None
                        } else {
                            let (key, bodies) = &mut q[slot];
                            bodies.next().map(|b| (key.clone(), b))
                        }
                    };
                    let Some((key, body)) = next else {
                        slot += concurrency;
                        let len = queue.lock().await.len();
                        if slot >= len {
                            break;
                        } else {
                            continue;
                        }
                    };
                    let t = Instant::now();
                    let response = client
                        .post(&url)
                        .bearer_auth(&key)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    assert!(response.status().is_success(), "{}", response.text().await.unwrap());
                    let _ = response.bytes().await;
                    latencies.push(t.elapsed());
                }
                latencies
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        (start.elapsed(), all)
    });
    drop(runtime);
    drop(keep);
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "{backend}: {workstations} workstations x {per_workstation} entries in batches of {batch}, {concurrency} concurrent: \
         {:.0} entries/s ({:.2} s); audit POST latency p50 {:?} p99 {:?} max {:?}",
        total / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        latencies.last().copied().unwrap_or(Duration::ZERO)
    );
}
