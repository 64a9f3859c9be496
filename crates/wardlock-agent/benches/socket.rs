//! Round trips through wardlockd's real socket server (in process, on a real socket and
//! a real SQLite file): what the guard waits for. Numbers: docs/benchmarks.md.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use criterion::{criterion_group, criterion_main, Criterion};
use wardlock_agent::config::ServiceConfig;
use wardlock_agent::secrets::{self, DataKey};
use wardlock_agent::service::directory::{self, Actor, NewUser};
use wardlock_agent::service::{utc_now, Service};
use wardlock_core::policy::Policy;
use wardlock_core::secret::SecretString;

struct Client {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    line: String,
}

impl Client {
    fn ask(&mut self, request: &[u8]) -> &str {
        self.writer.write_all(request).unwrap();
        self.line.clear();
        self.reader.read_line(&mut self.line).unwrap();
        &self.line
    }
}

fn round_trips(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), "[lockout]\nthrottle = \"0s\"\nmax_failures = 20\nworkstation_max_failures = 1000\n[service]\nmax_attempts_per_minute = 600\n").unwrap();
    let mut config = ServiceConfig::dev(dir.path());
    config.key_store = format!("file:{}", dir.path().join("keys").display());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let service = Service::start(config.clone(), wardlock_agent::os_session::platform()).unwrap();
    {
        let mut store = wardlock_agent::Store::open(
            &config.db_path(),
            &wardlock_agent::store::OpenOptions { create: false, workstation_id: "b".into() },
        )
        .unwrap();
        let key =
            DataKey::open_or_create(secrets::from_spec(&config.key_store).unwrap().as_ref(), &store).unwrap();
        let new = NewUser {
            id: "n.nurse".into(),
            display_name: "Nora".into(),
            role: "nurse".into(),
            pin: Some(SecretString::new("730284")),
            totp: false,
        };
        directory::add_user(&mut store, &key, &Policy::default(), new, &Actor::default(), utc_now()).unwrap();
    }
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    runtime.block_on(async {
        let listener = wardlock_agent::server::bind(&config.socket).await.unwrap();
        tokio::spawn(wardlock_agent::server::serve(service.clone(), listener, stop_rx));
    });
    let stream = UnixStream::connect(&config.socket).unwrap();
    let mut client =
        Client { reader: BufReader::new(stream.try_clone().unwrap()), writer: stream, line: String::new() };
    assert!(client.ask(b"{\"type\":\"hello\",\"version\":1,\"client\":\"bench\"}\n").contains("hello"));

    let mut g = c.benchmark_group("wardlockd_socket");
    g.bench_function("heartbeat_round_trip", |b| {
        b.iter(|| assert!(client.ask(b"{\"type\":\"heartbeat\"}\n").contains("ack")))
    });
    g.bench_function("status_round_trip", |b| {
        b.iter(|| assert!(client.ask(b"{\"type\":\"status\"}\n").contains("status")))
    });
    g.sample_size(20);
    let unlock = b"{\"type\":\"unlock\",\"user\":\"n.nurse\",\"pin\":\"730284\",\"totp\":null,\"emergency_reason\":null}\n";
    g.bench_function("unlock_granted_round_trip", |b| {
        b.iter(|| assert!(client.ask(unlock).contains("granted")))
    });
    g.finish();
}

criterion_group!(benches, round_trips);
criterion_main!(benches);
