//! A flood of random and malformed frames over many connections: the service stays up,
//! keeps answering a well-behaved guard, and its audit log still verifies.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::util::{Daemon, PATIENCE};

const THREADS: usize = 8;
const CONNECTIONS_PER_THREAD: usize = 150;
const HUGE_FRAMES: usize = 4;

/// xorshift64*: reproducible noise without another dependency.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const TEMPLATES: &[&str] = &[
    r#"{"type":"hello","version":1,"client":"fuzz","role":"guard"}"#,
    r#"{"type":"hello","version":1,"client":"fuzz"}"#,
    r#"{"type":"unlock","user":"x.fuzz","pin":"000000","totp":null,"emergency_reason":null}"#,
    r#"{"type":"unlock","user":"x.fuzz","pin":null,"totp":"123456","emergency_reason":"fuzzing the service"}"#,
    r#"{"type":"event","event":{"kind":"phi_app_hidden","app":"EHR"}}"#,
    r#"{"type":"event","event":{"kind":"locked","reason":"idle"}}"#,
    r#"{"type":"enroll","step":"authorize","admin":{"user":"it","pin":"1","totp":null},"user":"x","display_name":"X"}"#,
    r#"{"type":"enroll","step":"set_pin","ticket":"00","pin":"482916"}"#,
    r#"{"type":"quit","user":"it","pin":"1","totp":null}"#,
    r#"{"type":"status"}"#,
    r#"{"type":"heartbeat"}"#,
    r#"{"type":"policy"}"#,
];

fn frame(noise: &mut Noise) -> Vec<u8> {
    let mut bytes = TEMPLATES[noise.below(TEMPLATES.len())].as_bytes().to_vec();
    match noise.below(8) {
        0 => {} // well-formed
        1 => bytes.truncate(noise.below(bytes.len())),
        2 => {
            for _ in 0..1 + noise.below(4) {
                let i = noise.below(bytes.len());
                bytes[i] = noise.next() as u8;
            }
        }
        3 => bytes = (0..noise.below(300)).map(|_| noise.next() as u8).collect(),
        4 => bytes = format!("{}1{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
        5 => {
            let i = noise.below(bytes.len());
            bytes.splice(i..i, b"\"x\":1e999999,\"\\ud800\":".iter().copied());
        }
        6 => {
            bytes = format!(
                r#"{{"type":"unlock","user":"{}","pin":"1","totp":null,"emergency_reason":null}}"#,
                "u".repeat(noise.below(60_000))
            )
            .into_bytes()
        }
        _ => bytes.extend_from_slice(b"\r\n\n\n"),
    }
    bytes.retain(|b| *b != b'\n');
    bytes.push(b'\n');
    bytes
}

fn fuzz_one_connection(socket: &std::path::Path, noise: &mut Noise) -> usize {
    let Ok(stream) = UnixStream::connect(socket) else { return 0 };
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut sent = 0;
    // Most connections get past hello, so the noise reaches the request handlers.
    let mut frames: Vec<Vec<u8>> = Vec::new();
    if noise.below(4) > 0 {
        frames.push(format!("{}\n", TEMPLATES[noise.below(2)]).into_bytes());
    }
    frames.extend((0..1 + noise.below(5)).map(|_| frame(noise)));
    for f in frames {
        if writer.write_all(&f).is_err() {
            break;
        }
        sent += 1;
        // Wait for the answer (or the close) so the service really handles each frame.
        let mut answer = String::new();
        if !matches!(reader.read_line(&mut answer), Ok(n) if n > 0) {
            break;
        }
    }
    sent
}

#[test]
fn thousands_of_bad_frames_do_not_hurt_the_service() {
    let mut d = Daemon::new(
        "[lockout]\nthrottle = \"0s\"\nworkstation_max_failures = 1000\n[service]\nmax_attempts_per_minute = 600\n");
    d.add_user("n.nurse", "Nora Nurse", "nurse", Some("730284"), false);
    d.start();
    let socket = d.socket();
    // The guard is connected first, as it is all session long.
    let mut guard = d.client("guard");
    let frames = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));

    let mut workers = Vec::new();
    for t in 0..THREADS {
        let (socket, frames) = (socket.clone(), frames.clone());
        workers.push(std::thread::spawn(move || {
            let mut noise = Noise(0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1));
            for _ in 0..CONNECTIONS_PER_THREAD {
                frames.fetch_add(fuzz_one_connection(&socket, &mut noise), Ordering::Relaxed);
            }
        }));
    }
    for _ in 0..HUGE_FRAMES {
        let socket = socket.clone();
        workers.push(std::thread::spawn(move || {
            if let Ok(mut s) = UnixStream::connect(&socket) {
                s.set_write_timeout(Some(PATIENCE)).unwrap();
                let _ = s.write_all(&vec![b'{'; 4 << 20]);
            }
        }));
    }

    // The well-behaved guard is answered all along.
    let mut answered = 0;
    let watcher = {
        let done = done.clone();
        std::thread::spawn(move || {
            for w in workers {
                w.join().unwrap();
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    while !done.load(Ordering::SeqCst) || answered < 10 {
        assert_eq!(guard.request(json!({"type": "heartbeat"}))["type"], "ack");
        let status = guard.request(json!({"type": "status"}));
        assert_eq!(status["type"], "status", "{status}");
        answered += 1;
        assert!(answered < 100_000, "the flood never ended");
        std::thread::sleep(Duration::from_millis(5)); // the guard's own pacing
    }
    watcher.join().unwrap();
    let frames = frames.load(Ordering::Relaxed);
    // A flood, not a trickle: on average at least one frame through per connection. (How
    // many more depends on how soon the service closes a connection for its errors.)
    let connections = THREADS * CONNECTIONS_PER_THREAD;
    assert!(frames >= connections, "only {frames} frames were sent over {connections} connections");

    // Still up, still deciding, and the log is intact.
    assert_eq!(guard.unlock("n.nurse", Some("730284"), None)["result"], "granted");
    d.stop();
    d.open_store().verify_audit().unwrap();
    // Some of the noise got past hello and was decided, so the flood reached the logic.
    let kinds = d.kinds();
    let decided =
        kinds.iter().filter(|k| ["unlock_failed", "phi_app_hidden", "locked"].contains(&k.as_str())).count();
    eprintln!("fuzz: {frames} frames, {decided} decided and audited");
    assert!(decided >= 10, "only {decided} fuzz requests reached the service's logic");
}
