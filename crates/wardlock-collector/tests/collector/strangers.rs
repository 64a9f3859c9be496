//! Load from strangers: what a client that can reach the port, with or without a
//! credential, can hold of the collector. Raw HTTP/1.1 over TLS, as an attacker writes it:
//! requests whose bodies are never finished hold their slots until the collector gives
//! up on them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use wardlock_testkit::collector::{Backend, Collector};

/// A TLS connection to the collector, trusting its development certificate.
fn connect(collector: &Collector) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let tcp = TcpStream::connect(("127.0.0.1", collector.port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    tls_over(collector, tcp)
}

/// TLS over `tcp`, trusting the collector's development certificate.
fn tls_over(
    collector: &Collector,
    tcp: TcpStream,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(collector.cert()).unwrap();
    for cert in rustls_pemfile_certs(&pem) {
        roots.add(cert).unwrap();
    }
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    rustls::StreamOwned::new(connection, tcp)
}

/// A TCP connection to the collector from the stranger's own loopback address (127.0.0.9),
/// so that the per-address cap is about the stranger, not the workstations on 127.0.0.1.
fn from_stranger(collector: &Collector) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&std::net::SocketAddr::from(([127, 0, 0, 9], 0)).into())?;
    socket.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], collector.port)).into())?;
    Ok(socket.into())
}

/// What a stranger got: an answer's status, or the connection closed without one.
fn outcome(stream: &mut impl Read) -> Option<u16> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 512];
    while !bytes.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    text.strip_prefix("HTTP/1.1 ").and_then(|rest| rest.get(..3)).and_then(|code| code.parse().ok())
}

/// Resident memory of a process, in KiB.
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem).map(Result::unwrap).collect()
}

/// Sends the headers of a POST and `sent` bytes of a body of `length`, then nothing more.
fn start_post(
    collector: &Collector,
    path: &str,
    key: &str,
    length: usize,
    sent: usize,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut stream = connect(collector);
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&vec![b' '; sent]).unwrap();
    stream.flush().unwrap();
    stream
}

/// Reads one HTTP/1.1 answer: its status line and headers (lower-cased names).
fn read_head(stream: &mut impl Read) -> (u16, Vec<(String, String)>) {
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    while !bytes.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "the answer ended early: {}",
            String::from_utf8_lossy(&bytes)
        );
        bytes.push(byte[0]);
    }
    let text = String::from_utf8(bytes).unwrap();
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn enrolled_node_key(collector: &Collector) -> String {
    let transport_key = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(wardlock_core::transport::keypair(&[7; 32]).1)
    };
    let body = json!({
        "enroll_secret": collector.secret, "workstation_id": "ws-gate", "hostname": "pc", "group": "default",
        "agent_version": "t", "transport_key": transport_key,
    });
    let (status, answer) = collector.call("POST", "/api/v1/enroll", None, Some(body.to_string()));
    assert_eq!(status, 200, "{answer}");
    serde_json::from_str::<Value>(&answer).unwrap()["node_key"].as_str().unwrap().to_owned()
}

#[test]
fn one_address_holding_its_slots_gets_429_and_a_full_collector_says_503() {
    let mut collector = Collector::start_new(Backend::Sqlite);
    let node_key = enrolled_node_key(&collector);
    collector.kill9();
    collector.extra_args = vec!["--max-requests-per-address".into(), "2".into()];
    collector.start();

    // Two requests whose bodies never finish hold this address's two slots.
    let held: Vec<_> = (0..2).map(|_| start_post(&collector, "/api/v1/audit", &node_key, 1000, 10)).collect();
    // The gate counts them as they arrive: a third, complete request is refused at once.
    let mut third = std::iter::repeat_with(|| {
        let mut s = start_post(&collector, "/api/v1/audit", &node_key, 2, 2);
        let head = read_head(&mut s);
        (s, head)
    })
    .take(50)
    .find(|(_, (status, _))| *status == 429)
    .expect("a third request from the same address was never refused");
    let (status, headers) = &third.1;
    assert_eq!(*status, 429);
    assert_eq!(header(headers, "retry-after"), Some("1"), "{headers:?}");
    let mut rest = String::new();
    let _ = third.0.read_to_string(&mut rest);
    assert!(rest.contains("in flight"), "{rest}");

    // Answered or given up, the held slots come back.
    drop(held);
    let mut fine = None;
    for _ in 0..100 {
        let (status, _) = collector.call("GET", "/api/v1/workstations", None, None);
        if status == 200 {
            fine = Some(status);
            break;
        }
        std::thread::sleep(Duration::from_millis(50)); // polling the collector's answer
    }
    assert_eq!(fine, Some(200), "the slots never came back");

    // All clients together: with one slot in all, a held request fills it.
    collector.kill9();
    collector.extra_args =
        vec!["--max-requests".into(), "1".into(), "--max-requests-per-address".into(), "0".into()];
    collector.start();
    let _held = start_post(&collector, "/api/v1/audit", &node_key, 1000, 10);
    let refused =
        std::iter::repeat_with(|| read_head(&mut start_post(&collector, "/api/v1/audit", &node_key, 2, 2)))
            .take(50)
            .find(|(status, _)| *status == 503)
            .expect("a full collector never said 503");
    assert_eq!(header(&refused.1, "retry-after"), Some("1"));
}

#[test]
fn a_stranger_s_body_is_never_kept_and_its_401_still_arrives() {
    let collector = Collector::start_new(Backend::Sqlite);
    // 15 MiB of a 16 MiB limit under a key nobody issued: the collector reads it and
    // throws it away (a known workstation's would be kept), then answers 401.
    let length = 15 * 1024 * 1024;
    let mut stranger = start_post(&collector, "/api/v1/audit", "not-a-node-key", length, 0);
    let chunk = vec![b' '; 1024 * 1024];
    for _ in 0..15 {
        stranger.write_all(&chunk).unwrap();
    }
    stranger.flush().unwrap();
    let (status, _) = read_head(&mut stranger);
    assert_eq!(status, 401);
    let (_, metrics) = collector.call("GET", "/metrics", None, None);
    assert!(
        metrics.lines().any(|l| l.starts_with("wardlock_auth_failures_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    // An enrollment (no credential before its body) takes a small body only.
    let mut big_enrollment = start_post(&collector, "/api/v1/enroll", "", 1024 * 1024, 0);
    big_enrollment.write_all(&chunk).unwrap();
    big_enrollment.flush().unwrap();
    assert_eq!(read_head(&mut big_enrollment).0, 413);
}

/// A GET over a new TLS connection: its status, or `None` when the connection was closed
/// before an answer (refused at the door).
fn try_get(collector: &Collector, path: &str) -> Option<u16> {
    let mut stream = connect(collector);
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// A TLS connection whose handshake is done (so the collector has taken it and holds its
/// slot), sending nothing more; `None` when the collector closed it at the door.
fn handshaken(collector: &Collector) -> Option<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let mut stream = connect(collector);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).ok()?;
    }
    Some(stream)
}

#[test]
fn connections_over_the_cap_are_closed_at_the_door_and_slots_free_as_they_close() {
    let mut collector = Collector::start_new(Backend::Sqlite);
    collector.kill9();
    collector.extra_args = vec!["--max-connections".into(), "3".into()];
    collector.start();
    // Connections that finish their handshake and then say nothing take the slots, one
    // by one, until the next is closed at the door.
    let mut held = Vec::new();
    let refused = loop {
        match handshaken(&collector) {
            Some(stream) if held.len() < 10 => held.push(stream),
            Some(_) => break false,
            None => break true,
        }
    };
    assert!(refused, "{} connections held at once, none closed at the door", held.len());
    assert!((1..=3).contains(&held.len()), "{} connections held at once with a cap of 3", held.len());
    // As they close, the slots come back.
    drop(held);
    let served = (0..100).any(|_| {
        let ok = try_get(&collector, "/healthz") == Some(200);
        if !ok {
            std::thread::sleep(Duration::from_millis(20)); // polling the collector's answer
        }
        ok
    });
    assert!(served, "the slots never came back");
}

/// What the collector's resident memory stays under with the crowd below at its door
/// (measured at 54 MiB; docs/benchmarks.md).
const CROWD_RSS_BOUND_KIB: u64 = 128 * 1024;

#[test]
fn a_crowd_of_strangers_at_the_door_does_not_keep_real_workstations_from_syncing() {
    use wardlock_core::audit::{AuditDraft, AuditKind};
    use wardlock_core::clock::UtcMillis;
    const IDLE: usize = 2_000;
    const SLOW: usize = 200;
    const ENTRIES: u64 = 2_000;
    // Each stranger is a descriptor here and one in the collector, which inherits this limit.
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let wanted = 8_192.min(hard);
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, wanted, hard).unwrap();
    assert!(wanted as usize > IDLE + SLOW + 200, "this test needs {} descriptors", IDLE + SLOW + 200);

    let collector = Collector::start_new(Backend::Sqlite);
    let pid = collector.pid().unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&[21; 32]);
    let mut workstations: Vec<_> = ["ws-crowd-a", "ws-crowd-b"]
        .map(|id| super::sync::workstation(&collector, &key, "batch_size = 100\n").id(id))
        .into_iter()
        .collect();
    for d in &mut workstations {
        d.start();
        d.wait_for_audit("collector_enrolled", 1);
    }
    let baseline = resident_kib(pid);

    // The crowd, all from one address: connections that never say a word, and requests
    // with a stranger's key whose bodies stop after 10 of the 1 MB they announce.
    let idle: Vec<TcpStream> = (0..IDLE).map_while(|_| from_stranger(&collector).ok()).collect();
    let mut slow: Vec<_> = (0..SLOW)
        .filter_map(|_| {
            let mut stream = tls_over(&collector, from_stranger(&collector).ok()?);
            let head = "POST /api/v1/audit HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer stranger\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n";
            stream.write_all(head.as_bytes()).ok()?;
            stream.write_all(&[b' '; 10]).ok()?;
            stream.flush().ok()?;
            Some(stream)
        })
        .collect();
    assert_eq!((idle.len(), slow.len()), (IDLE, SLOW), "the crowd could not even connect");

    // Meanwhile the workstations make entries and sync them.
    for (w, d) in workstations.iter().enumerate() {
        let mut store = d.open_store();
        let mut tx = store.write().unwrap();
        for n in 0..ENTRIES {
            let time = UtcMillis::from_unix_millis(1_795_000_000_000 + n as i64);
            tx.append(AuditDraft::new(time, AuditKind::Locked).detail("crowd_test", w * 10_000 + n as usize))
                .unwrap();
        }
        tx.commit().unwrap();
    }
    let mut peak = baseline;
    for d in &workstations {
        let last = d.open_store().last_seq().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while d.open_store().acked_seq().unwrap() < last {
            assert!(
                std::time::Instant::now() < deadline,
                "a workstation's batches were not all acknowledged"
            );
            peak = peak.max(resident_kib(pid));
            std::thread::sleep(Duration::from_millis(100)); // sampling memory while it syncs
        }
    }
    peak = peak.max(resident_kib(pid));
    assert!(peak < CROWD_RSS_BOUND_KIB, "resident {peak} KiB (before the crowd {baseline} KiB)");
    eprintln!("crowd: resident {baseline} KiB before, {peak} KiB at most with it");

    // Every stranger is refused or timed out: the slow ones get 401, 408 or 429 (or are
    // cut off), the idle ones are closed once their TLS handshake is overdue.
    let mut answers = std::collections::BTreeMap::new();
    for stream in &mut slow {
        stream.sock.set_read_timeout(Some(Duration::from_secs(150))).unwrap();
        let got = outcome(stream);
        assert!(matches!(got, None | Some(401 | 408 | 429)), "a stranger's request got {got:?}");
        *answers.entry(got).or_insert(0) += 1;
    }
    eprintln!("crowd: the slow strangers got {answers:?}");
    for mut stream in idle {
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut byte = [0u8; 1];
        let got = stream.read(&mut byte);
        let waited_out = got.as_ref().is_err_and(|e| {
            matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
        });
        assert!(matches!(got, Ok(0) | Err(_)) && !waited_out, "an idle connection was still open: {got:?}");
    }
    assert_eq!(collector.call("GET", "/healthz", None, None).0, 200);
}
