//! A real `wardlockd` process in `--dev` mode in a temp dir, and a plain socket client
//! that speaks the protocol as JSON lines, as any guard would.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use wardlock_core::audit::AuditEntry;
use wardlock_core::policy::Policy;
use wardlock_core::secret::SecretString;
use wardlock_store::directory::{self, Actor, NewUser};
use wardlock_store::secrets::{self, DataKey};
use wardlock_store::store::OpenOptions;
use wardlock_store::Store;

/// Longest any single step of a test may wait for the service.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Machine policy for tests: no throttle between attempts, so tests need not wait.
pub const FAST_POLICY: &str = "[lockout]\nthrottle = \"0s\"\n";

#[derive(Debug)]
pub struct Daemon {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    /// What the service logged, for the failure message of a start that did not work.
    log: Arc<Mutex<Vec<String>>>,
    env: Vec<(String, String)>,
    workstation_id: String,
    machine_id: Option<PathBuf>,
    guard_executable: Option<PathBuf>,
}

impl Daemon {
    /// A workstation directory with `policy` as its machine policy; not started yet.
    pub fn new(policy: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("policy.toml"), policy).unwrap();
        Self {
            dir,
            child: None,
            log: Arc::default(),
            env: Vec::new(),
            workstation_id: "ws-test".into(),
            machine_id: None,
            guard_executable: None,
        }
    }

    /// The program that may connect as the guard (this test process otherwise).
    pub fn guard_executable(mut self, path: &Path) -> Self {
        self.guard_executable = Some(path.to_owned());
        self
    }

    /// This machine's `/etc/machine-id`, as a file of the workstation's directory (the
    /// host's own otherwise).
    pub fn machine_id(mut self, id: &str) -> Self {
        let file = self.dir.path().join("machine-id");
        std::fs::write(&file, format!("{id}\n")).unwrap();
        self.machine_id = Some(file);
        self
    }

    /// A copy of this stopped workstation's whole directory, as an image cloned onto
    /// another machine carries it: database, keys, policy and enrollment secret.
    pub fn cloned(&self) -> Daemon {
        assert!(self.child.is_none(), "clone a stopped workstation");
        let mut copy = Daemon::new("");
        let copied = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", self.dir.path().display()))
            .arg(copy.dir.path())
            .status()
            .unwrap();
        assert!(copied.success());
        copy.env = self.env.clone();
        copy.workstation_id = self.workstation_id.clone();
        copy
    }

    /// Another workstation ID (set before the first start: the database keeps it).
    pub fn id(mut self, id: &str) -> Self {
        self.workstation_id = id.into();
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("data").join("wardlock.db")
    }

    pub fn policy_path(&self) -> PathBuf {
        self.dir.path().join("policy.toml")
    }

    /// Starts the service and returns once it answers `status` on its socket.
    pub fn start(&mut self) -> &mut Self {
        assert!(self.child.is_none(), "already running");
        let mut child = Command::new(crate::bin("wardlockd"))
            .arg("--dev")
            .arg(self.dir.path())
            .args(["--workstation-id", &self.workstation_id])
            // This test process speaks as the guard: it is the guard executable here.
            .arg("--guard-executable")
            .arg(self.guard_executable.clone().unwrap_or_else(|| std::env::current_exe().unwrap()))
            .args(
                self.machine_id
                    .iter()
                    .flat_map(|f| [std::ffi::OsStr::new("--machine-id-file"), f.as_os_str()]),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[wardlockd] {line}");
                log.lock().unwrap().push(line);
            }
        });
        self.child = Some(child);
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.try_status() {
                assert_eq!(status["type"], "status", "{status}");
                return self;
            }
            if let Some(exit) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("wardlockd exited with {exit}:\n{}", self.log.lock().unwrap().join("\n"));
            }
            assert!(
                std::time::Instant::now() < deadline,
                "wardlockd never answered on {}",
                self.socket().display()
            );
            std::thread::sleep(Duration::from_millis(20)); // polling for a socket another process binds
        }
    }

    /// The service's `status` answer, if it answers now.
    fn try_status(&self) -> Option<Value> {
        let inner = wardlock_client::blocking::Client::connect(&self.socket()).ok()?;
        let mut client = Client { inner };
        client.send(json!({"type": "hello", "version": 1, "client": "testkit", "role": "tool"}));
        client.read().filter(|hello| hello["type"] == "hello")?;
        client.send(json!({"type": "status"}));
        client.read()
    }

    /// Everything the service has logged so far (to check what it must never log).
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The service's `status` answer.
    pub fn status(&self) -> Value {
        self.client("tool").request(json!({"type": "status"}))
    }

    /// Waits until the `status` answer satisfies `wanted` (described by `what`); returns it.
    pub fn wait_for_status(&self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let status = self.status();
            if wanted(&status) {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "the status never showed {what}: {status}");
            std::thread::sleep(Duration::from_millis(50)); // polling the service's answer
        }
    }

    /// Waits until the audit log holds at least `count` entries of `kind`; returns them.
    /// Reads the database (the service's word on disk), never its log wording.
    pub fn wait_for_audit(&self, kind: &str, count: usize) -> Vec<AuditEntry> {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let found: Vec<_> = self.audit().into_iter().filter(|e| e.kind.as_str() == kind).collect();
            if found.len() >= count {
                return found;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the audit log never held {count} {kind} entries (it has {})",
                found.len()
            );
            std::thread::sleep(Duration::from_millis(50)); // polling a file another process writes
        }
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.as_ref().expect("not running").id() as i32)
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), signal).unwrap();
    }

    /// `kill -9`: no chance to write anything more.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("not running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let status = self.child.take().unwrap().wait().unwrap();
        assert!(status.success(), "wardlockd exited with {status}");
    }

    pub fn restart(&mut self) {
        self.stop();
        self.start();
    }

    pub fn open_store(&self) -> Store {
        Store::open(
            &self.db_path(),
            &OpenOptions { create: true, workstation_id: self.workstation_id.clone() },
        )
        .unwrap()
    }

    fn key(&self, store: &Store) -> DataKey {
        let spec = format!("file:{}", self.dir.path().join("credentials").display());
        DataKey::open_or_create(secrets::from_spec(&spec).unwrap().as_ref(), store).unwrap()
    }

    /// Enrolls a user straight into the database, as IT does with `wardlockctl`.
    /// Returns the TOTP secret (base32) when `totp`.
    pub fn add_user(
        &self,
        id: &str,
        name: &str,
        role: &str,
        pin: Option<&str>,
        totp: bool,
    ) -> Option<String> {
        let mut store = self.open_store();
        let key = self.key(&store);
        let new = NewUser {
            id: id.into(),
            display_name: name.into(),
            role: role.into(),
            pin: pin.map(SecretString::new),
            totp,
        };
        let policy = Policy::default();
        let enrollment =
            directory::add_user(&mut store, &key, &policy, new, &Actor::default(), now()).unwrap();
        enrollment.totp_uri.map(|uri| totp_secret(&uri))
    }

    /// Every audit entry so far (the service may be running: WAL readers do not block it).
    pub fn audit(&self) -> Vec<AuditEntry> {
        let store = self.open_store();
        let mut entries = Vec::new();
        store
            .for_each_entry::<wardlock_store::StoreError>(1, |e| {
                entries.push(e);
                Ok(())
            })
            .unwrap();
        entries
    }

    pub fn kinds(&self) -> Vec<String> {
        self.audit().iter().map(|e| e.kind.as_str().to_owned()).collect()
    }

    pub fn connect(&self) -> Client {
        Client::connect(&self.socket())
    }

    /// A client that has said hello in `role` ("guard" or "tool").
    pub fn client(&self, role: &str) -> Client {
        let mut c = self.connect();
        let hello = c.request(json!({"type": "hello", "version": 1, "client": "test", "role": role}));
        assert_eq!(hello["type"], "hello", "{hello}");
        c
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn now() -> wardlock_core::clock::UtcMillis {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    wardlock_core::clock::UtcMillis::from_unix_millis(since.as_millis() as i64)
}

/// The base32 secret of an `otpauth://` URI.
pub fn totp_secret(uri: &str) -> String {
    let query = uri.split_once('?').unwrap().1;
    query.split('&').find_map(|kv| kv.strip_prefix("secret=")).unwrap().to_owned()
}

/// The current code by an independent implementation (`oathtool`).
pub fn oathtool(secret: &str) -> String {
    let out = Command::new("oathtool")
        .args(["--totp", "-b", secret])
        .output()
        .expect("oathtool is needed (apt-get install oathtool; `make setup` does it)");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The protocol's one client (`wardlock-client`), at the wire level: tests send JSON
/// as any program might, garbage included, and read what comes back.
#[derive(Debug)]
pub struct Client {
    inner: wardlock_client::blocking::Client,
}

impl Client {
    pub fn connect(socket: &Path) -> Client {
        Client { inner: wardlock_client::blocking::Client::connect(socket).unwrap() }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.inner.send_raw(bytes).map_err(|e| match e {
            wardlock_client::ClientError::Io(e) => e,
            other => std::io::Error::other(other.to_string()),
        })
    }

    pub fn send(&mut self, message: Value) {
        let mut line = serde_json::to_vec(&message).unwrap();
        line.push(b'\n');
        self.send_raw(&line).unwrap();
    }

    /// The next message, or `None` once the service closed the connection.
    pub fn read(&mut self) -> Option<Value> {
        match self.inner.next_frame(PATIENCE) {
            Ok(frame) => Some(serde_json::from_slice(&frame).unwrap()),
            Err(wardlock_client::ClientError::Closed) => None,
            Err(e) => panic!("reading from wardlockd: {e}"),
        }
    }

    pub fn request(&mut self, message: Value) -> Value {
        self.send(message);
        self.read().expect("wardlockd closed the connection")
    }

    pub fn unlock(&mut self, user: &str, pin: Option<&str>, totp: Option<&str>) -> Value {
        self.request(
            json!({"type": "unlock", "user": user, "pin": pin, "totp": totp, "emergency_reason": null}),
        )
    }

    /// True once the service has closed the connection (after reading what it still sent).
    pub fn closed(&mut self) -> bool {
        loop {
            match self.inner.next_frame(PATIENCE) {
                Ok(_) => continue,
                Err(wardlock_client::ClientError::Closed) => return true,
                Err(_) => return false,
            }
        }
    }
}

pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
