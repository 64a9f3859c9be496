//! The collector's intake against rsyslog, in one run, on the same events and the same
//! load. Each receiver is its own process (the real `wardlock-collector` binary; Debian's
//! `rsyslogd`), and this process is only the load: bodies and lines are built before the
//! clock starts and go out over many connections. Prints entries/s, latencies and the
//! ratio. Numbers: docs/benchmarks.md.
//!
//!   cargo bench -p wardlock-collector --bench ingest                      # SQLite
//!   WARDLOCK_BENCH_DB=postgres://wardlock@127.0.0.1:5432/bench WARDLOCK_BENCH_RUNS=1 cargo bench -p wardlock-collector --bench ingest
//!     (an empty database for each collector run: a second run would find the IDs enrolled)
//!   knobs: WARDLOCK_BENCH_WORKSTATIONS (1000), _ENTRIES per workstation (500), _BATCH (500),
//!          _CONNECTIONS (128: a fleet reconnecting after an outage), _RUNS (3, the median is compared), _ONLY=collector|rsyslog

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::io::AsyncWriteExt;
use wardlock_core::audit::{AuditDraft, AuditEntry, AuditKind};
use wardlock_core::clock::UtcMillis;
use wardlock_core::protocol::collector::{AuditBatch, AuditRecord, EnrollRequest, EnrollResponse};

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Load {
    workstations: usize,
    per_workstation: usize,
    batch: usize,
    connections: usize,
}

impl Load {
    fn total(&self) -> usize {
        self.workstations * self.per_workstation
    }
}

fn main() {
    let load = Load {
        workstations: knob("WARDLOCK_BENCH_WORKSTATIONS", 1000),
        per_workstation: knob("WARDLOCK_BENCH_ENTRIES", 500),
        batch: knob("WARDLOCK_BENCH_BATCH", 500),
        connections: knob("WARDLOCK_BENCH_CONNECTIONS", 128),
    };
    let runs = knob("WARDLOCK_BENCH_RUNS", 3).max(1);
    let only = std::env::var("WARDLOCK_BENCH_ONLY").unwrap_or_default();
    wardlock_collector::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let logs = fleet_logs(&load);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    println!(
        "{} workstations x {} entries ({} in all), {} connections, {runs} runs each, on {} cores",
        load.workstations,
        load.per_workstation,
        load.total(),
        load.connections,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    // Taken in turns, so that a slower spell of the machine falls on both.
    let (mut collector, mut rsyslog) = (Vec::new(), Vec::new());
    for run in 0..runs {
        if only != "rsyslog" {
            collector.push(runtime.block_on(collector_run(
                &load,
                &logs,
                &dir.path().join(format!("c{run}")),
            )));
        }
        if only != "collector" {
            rsyslog.push(runtime.block_on(rsyslog_run(
                &load,
                &logs,
                &dir.path().join(format!("r{run}")),
                false,
            )));
        }
    }
    let synced = (only != "collector" && only != "rsyslog")
        .then(|| runtime.block_on(rsyslog_run(&load, &logs, &dir.path().join("r-sync"), true)));
    if let (Some(c), Some(r)) = (median(&mut collector), median(&mut rsyslog)) {
        println!("median: collector {c:.0} entries/s, rsyslog {r:.0} messages/s; ratio collector / rsyslog = {:.2}", c / r);
        if let Some(s) = synced {
            println!("ratio collector / rsyslog synced after each batch = {:.2}", c / s);
        }
    }
}

fn median(rates: &mut [f64]) -> Option<f64> {
    rates.sort_by(f64::total_cmp);
    rates.get(rates.len() / 2).copied()
}

/// Every workstation's hash-chained log; times interleave across the fleet, as after an outage.
fn fleet_logs(load: &Load) -> Vec<(String, Vec<AuditEntry>)> {
    (0..load.workstations)
        .map(|w| {
            let id = format!("ws-{w:05}");
            let mut log: Vec<AuditEntry> = Vec::with_capacity(load.per_workstation);
            for i in 0..load.per_workstation {
                let prev = log.last().map(|e| (e.seq, e.hash));
                let time = 1_795_000_000_000 + (i * load.workstations + w) as i64;
                let draft = AuditDraft::new(UtcMillis::from_unix_millis(time), AuditKind::UnlockSucceeded)
                    .user(format!("clinician.{}", i % 40))
                    .os_account(Some("ward-shared".into()))
                    .policy_hash("0cc66f583cb75354f0f362c2dde680452e3351e9337f4a4ef71d1e24a94f4031")
                    .detail("method", "pin");
                log.push(AuditEntry::chain(draft, &id, prev));
            }
            (id, log)
        })
        .collect()
}

/// Stops a receiver when the run ends, however it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The collector as it ships (`serve --dev`: real TLS, a durable database), no quota:
/// the load is a whole fleet's backlog at once. Returns entries/s.
async fn collector_run(load: &Load, logs: &[(String, Vec<AuditEntry>)], dir: &Path) -> f64 {
    let dev = dir.join("collector");
    let mut command = Command::new(env!("CARGO_BIN_EXE_wardlock-collector"));
    command
        .arg("serve")
        .arg("--dev")
        .arg(&dev)
        .args(["--listen", "127.0.0.1:0", "--max-entries-per-minute", &u32::MAX.to_string()])
        .args(["--max-bytes-per-day", &u64::MAX.to_string()])
        // The whole fleet comes from one loopback address here; in a hospital each
        // workstation has its own, so the per-address cap would not bind.
        .args(["--max-requests-per-address", "0"]);
    let backend = match std::env::var("WARDLOCK_BENCH_DB") {
        Ok(url) => {
            command.args(["--db", &url]);
            "PostgreSQL"
        }
        Err(_) => "SQLite",
    };
    let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let _collector = Reaped(child);
    let addr = stderr
        .by_ref()
        .map_while(Result::ok)
        // Its port (it listens on 0): the `address` field of its `listening` event.
        .filter(|line| line.contains("event=\"listening\""))
        .find_map(|line| {
            line.split("address=").nth(1).and_then(|a| a.split_whitespace().next()).map(str::to_owned)
        })
        .expect("the collector did not start");
    // The rest of what it says goes on to ours.
    std::thread::spawn(move || {
        stderr
            .map_while(Result::ok)
            .filter(|l| !l.contains("enrolled workstation"))
            .for_each(|line| eprintln!("collector: {line}"))
    });
    let base = format!("https://localhost:{}", addr.trim().rsplit(':').next().unwrap());
    let secret = std::fs::read_to_string(dev.join("enroll-secret")).unwrap();
    let pem = std::fs::read(dev.join("tls/cert.pem")).unwrap();
    let client = || {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .build()
            .unwrap()
    };

    // Enrolled and the bodies built, before the clock starts.
    let enroller = client();
    let mut jobs: Vec<(String, Vec<Vec<u8>>)> = Vec::with_capacity(logs.len());
    for (id, log) in logs {
        let request = EnrollRequest {
            enroll_secret: secret.clone(),
            workstation_id: id.clone(),
            hostname: id.clone(),
            group: "default".into(),
            agent_version: "bench".into(),
            transport_key: base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
        };
        let response = enroller.post(format!("{base}/api/v1/enroll")).json(&request).send().await.unwrap();
        assert!(response.status().is_success(), "enroll: {}", response.text().await.unwrap());
        let key = response.json::<EnrollResponse>().await.unwrap().node_key;
        let bodies = log
            .chunks(load.batch)
            .map(|c| {
                let batch = AuditBatch {
                    workstation_id: id.clone(),
                    entries: c.iter().map(AuditRecord::from).collect(),
                };
                serde_json::to_vec(&batch).unwrap()
            })
            .collect();
        jobs.push((key, bodies));
    }
    let url = format!("{base}/api/v1/audit");
    // Each connection takes whole workstations off the queue, so a workstation's
    // batches stay in order, and many workstations are in flight at once.
    let next = Arc::new(AtomicUsize::new(0));
    let jobs = Arc::new(jobs);
    let cost = Cost::start(pid);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..load.connections {
        let (client, url, next, jobs) = (client(), url.clone(), next.clone(), jobs.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while let Some((key, bodies)) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                for body in bodies {
                    let t = Instant::now();
                    let response = client
                        .post(&url)
                        .bearer_auth(key)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                        .unwrap();
                    let status = response.status();
                    let answer = response.bytes().await.unwrap();
                    assert!(status.is_success(), "{status}: {}", String::from_utf8_lossy(&answer));
                    latencies.push(t.elapsed());
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    let cost = cost.describe(pid, load.total());
    let metrics = enroller.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let stored = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wardlock_audit_entries_stored_total "))
        .and_then(|v| v.trim().parse::<usize>().ok());
    assert_eq!(stored, Some(load.total()), "every entry stored once");
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let rate = load.total() as f64 / elapsed.as_secs_f64();
    println!(
        "collector ({backend}, batches of {}): {rate:.0} entries/s ({:.2} s); batch p50 {:.1} ms p99 {:.1} ms; {cost}",
        load.batch,
        elapsed.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3
    );
    rate
}

/// rsyslog receiving the same entries, one RFC 5424 line each with the record the
/// collector receives as its message, over plain TCP into a file. With `sync`, omfile
/// syncs the file after each batch. Returns messages/s, counted when the last line is in
/// the file.
async fn rsyslog_run(load: &Load, logs: &[(String, Vec<AuditEntry>)], dir: &Path, sync: bool) -> f64 {
    let dir = dir.to_owned();
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("messages");
    let port_file = dir.join("port");
    let conf = dir.join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            "global(workDirectory=\"{dir}\")\n\
             module(load=\"imtcp\" maxSessions=\"4096\")\n\
             input(type=\"imtcp\" address=\"127.0.0.1\" port=\"0\" listenPortFileName=\"{port}\")\n\
             action(type=\"omfile\" file=\"{out}\" sync=\"{sync}\" template=\"RSYSLOG_FileFormat\")\n",
            dir = dir.display(),
            port = port_file.display(),
            out = out.display(),
            sync = if sync { "on" } else { "off" },
        ),
    )
    .unwrap();
    let child = Command::new(rsyslogd())
        .args(["-n", "-i"])
        .arg(dir.join("pid"))
        .arg("-f")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id();
    let _rsyslog = Reaped(child);
    let port = wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&port_file).ok().and_then(|p| p.trim().parse::<u16>().ok())
    })
    .expect("rsyslogd did not listen");

    // The lines, built before the clock starts, spread over the connections by workstation.
    let mut streams: Vec<Vec<u8>> = vec![Vec::new(); load.connections];
    for (w, (id, log)) in logs.iter().enumerate() {
        let stream = &mut streams[w % load.connections];
        for e in log {
            let record = serde_json::to_string(&AuditRecord::from(e)).unwrap();
            stream.extend_from_slice(
                format!("<134>1 {} {id} wardlock - - - {record}\n", e.time.to_rfc3339()).as_bytes(),
            );
        }
    }
    let cost = Cost::start(pid);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for stream in streams {
        tasks.push(tokio::spawn(async move {
            let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            tcp.write_all(&stream).await.unwrap();
            tcp.shutdown().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = load.total();
    let mut counted = LineCounter::new(&out);
    wait_for(Duration::from_secs(600), || (counted.lines() >= total).then_some(()))
        .expect("rsyslog did not write every line");
    let elapsed = start.elapsed();
    let cost = cost.describe(pid, total);
    let rate = total as f64 / elapsed.as_secs_f64();
    println!(
        "rsyslog {} (TCP into a file{}): {rate:.0} messages/s ({:.2} s); {cost}",
        rsyslog_version(),
        if sync { ", synced after each batch" } else { ", no sync" },
        elapsed.as_secs_f64()
    );
    rate
}

fn rsyslogd() -> PathBuf {
    ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("rsyslogd not found: `WARDLOCK_SETUP_BENCH=1 bash scripts/setup.sh` installs it")
}

fn rsyslog_version() -> String {
    let out = Command::new(rsyslogd()).arg("-v").output().map(|o| o.stdout).unwrap_or_default();
    String::from_utf8_lossy(&out).split_whitespace().nth(1).unwrap_or("?").trim_end_matches(',').to_owned()
}

/// CPU time a process has used (user + system), from /proc (clock ticks of 10 ms).
fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// The machine's idle time so far (idle + iowait over all cores), from /proc/stat.
fn machine_idle() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu: Vec<u64> =
        stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    Duration::from_millis((cpu.get(3).unwrap_or(&0) + cpu.get(4).unwrap_or(&0)) * 10)
}

/// What a run cost: the receiver's and the load's CPU per entry, and how idle the machine was.
struct Cost {
    receiver: Duration,
    load: Duration,
    idle: Duration,
    wall: Instant,
}

impl Cost {
    fn start(receiver: u32) -> Self {
        Self {
            receiver: cpu_of(receiver),
            load: cpu_of(std::process::id()),
            idle: machine_idle(),
            wall: Instant::now(),
        }
    }

    fn describe(&self, receiver: u32, entries: usize) -> String {
        let per = |d: Duration| d.as_secs_f64() * 1e6 / entries as f64;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let idle = (machine_idle() - self.idle).as_secs_f64() / (self.wall.elapsed().as_secs_f64() * cores);
        format!(
            "CPU per entry: receiver {:.2} µs, load {:.2} µs; machine idle {:.0} %",
            per(cpu_of(receiver) - self.receiver),
            per(cpu_of(std::process::id()) - self.load),
            idle * 100.0
        )
    }
}

/// Polls a condition: a bench waits for a file another process writes.
fn wait_for<T>(limit: Duration, mut ready: impl FnMut() -> Option<T>) -> Option<T> {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if let Some(v) = ready() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

/// Counts the newlines of a growing file, reading each byte once.
struct LineCounter {
    path: PathBuf,
    file: Option<std::fs::File>,
    lines: usize,
}

impl LineCounter {
    fn new(path: &Path) -> Self {
        Self { path: path.to_owned(), file: None, lines: 0 }
    }

    fn lines(&mut self) -> usize {
        if self.file.is_none() {
            self.file = std::fs::File::open(&self.path).ok();
        }
        if let Some(file) = &mut self.file {
            let mut buf = [0u8; 1 << 16];
            while let Ok(n @ 1..) = file.read(&mut buf) {
                self.lines += buf[..n].iter().filter(|b| **b == b'\n').count();
            }
        }
        self.lines
    }
}
