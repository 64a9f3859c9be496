//! A real `wardlock-collector` process over TLS on loopback, on its own SQLite file or on
//! a throwaway PostgreSQL cluster (Debian's `postgresql` package), and a plain HTTPS call.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use serde_json::Value;
use wardlock_core::audit::AuditEntry;
use wardlock_core::protocol::collector::AuditRecord;

use crate::agent::PATIENCE;

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Which database the collector runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A throwaway PostgreSQL cluster (Debian's `postgresql` package) on a loopback port,
/// stopped when dropped.
#[derive(Debug)]
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

impl PgCluster {
    pub fn start() -> PgCluster {
        Self::start_serving(None)
    }

    /// A cluster that also speaks TLS, with this certificate and key (PEM).
    pub fn start_with_tls(cert: &Path, key: &Path) -> PgCluster {
        Self::start_serving(Some((cert, key)))
    }

    pub fn start_serving(tls: Option<(&Path, &Path)>) -> PgCluster {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is needed (apt-get install postgresql; `make setup` does it)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("no initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::tempdir().unwrap();
        // PostgreSQL refuses to run as root; CI is root, so there it runs as `postgres`.
        let as_postgres = nix::unistd::geteuid().is_root();
        if as_postgres {
            let status = Command::new("chown").args(["-R", "postgres"]).arg(dir.path()).status().unwrap();
            assert!(status.success());
        }
        let cluster = PgCluster { dir, bin, port: free_port(), as_postgres };
        cluster.run("initdb", &["-D", &cluster.data(), "-A", "trust", "-U", "wardlock", "--no-sync"]);
        let mut options =
            format!("-p {} -k {} -c listen_addresses=127.0.0.1", cluster.port, cluster.dir.path().display());
        if let Some((cert, key)) = tls {
            // The server reads them as its own account, and the key only if no one else can.
            let (server_cert, server_key) =
                (cluster.dir.path().join("server.crt"), cluster.dir.path().join("server.key"));
            std::fs::copy(cert, &server_cert).unwrap();
            std::fs::copy(key, &server_key).unwrap();
            std::fs::set_permissions(&server_key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            if cluster.as_postgres {
                let status = Command::new("chown")
                    .arg("postgres")
                    .arg(&server_cert)
                    .arg(&server_key)
                    .status()
                    .unwrap();
                assert!(status.success());
            }
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                server_cert.display(),
                server_key.display()
            ));
        }
        let log = format!("{}/log", cluster.dir.path().display());
        cluster.run("pg_ctl", &["-D", &cluster.data(), "-o", &options, "-l", &log, "-w", "start"]);
        cluster
    }

    pub fn data(&self) -> String {
        format!("{}/data", self.dir.path().display())
    }

    pub fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    pub fn run(&self, tool: &str, args: &[&str]) {
        let out = self.command(tool).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{tool}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A new, empty database and its URL.
    pub fn database(&self, name: &str) -> String {
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "wardlock", "-d", "postgres", "-c"])
            .arg(format!("CREATE DATABASE {name}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        format!("postgres://wardlock@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self.command("pg_ctl").args(["-D", data.as_str(), "-m", "immediate", "stop"]).output();
    }
}

#[derive(Debug)]
pub struct Collector {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    pub token: String,
    pub secret: String,
    pub db: Option<String>,
    /// More arguments for `serve`.
    pub extra_args: Vec<String>,
    /// Kept running as long as this collector.
    _pg: Option<PgCluster>,
}

impl Collector {
    pub fn start_new(backend: Backend) -> Collector {
        match backend {
            Backend::Sqlite => Self::start_on(None, None),
            Backend::Postgres => {
                let pg = PgCluster::start();
                let url = pg.database("collector");
                Self::start_on(Some(pg), Some(url))
            }
        }
    }

    /// A collector on its own SQLite file, served with more `serve` arguments.
    pub fn start_with_args(args: &[&str]) -> Collector {
        Self::start_configured(None, None, args.iter().map(|a| (*a).to_owned()).collect())
    }

    /// A collector on `db` (`None`: its own SQLite file), keeping `pg` running.
    pub fn start_on(pg: Option<PgCluster>, db: Option<String>) -> Collector {
        Self::start_configured(pg, db, Vec::new())
    }

    fn start_configured(pg: Option<PgCluster>, db: Option<String>, extra_args: Vec<String>) -> Collector {
        let mut c = Collector {
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
            child: None,
            token: String::new(),
            secret: String::new(),
            db,
            extra_args,
            _pg: pg,
        };
        c.start();
        c.token = std::fs::read_to_string(c.dir.path().join("admin-token")).unwrap();
        c.secret = std::fs::read_to_string(c.dir.path().join("enroll-secret")).unwrap();
        c
    }

    /// Starts it (again, on the same database and certificate) and waits until it listens.
    pub fn start(&mut self) {
        let mut command = Command::new(crate::bin("wardlock-collector"));
        command
            .args(["serve", "--listen", &format!("127.0.0.1:{}", self.port), "--dev"])
            .arg(self.dir.path());
        if let Some(db) = &self.db {
            command.args(["--db", db]);
        }
        command.args(&self.extra_args);
        // Fault tests push backlogs far above a ward's rate; the quota test sets its own.
        if !self.extra_args.iter().any(|a| a == "--max-entries-per-minute") {
            command.args(["--max-entries-per-minute", "10000000"]);
        }
        let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[collector] {line}");
                let _ = tx.send(line);
            }
        });
        // Up once it answers: `/healthz` over its TLS (the database answers too).
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            if let Some(exit) = child.try_wait().unwrap() {
                let log: Vec<String> = rx.try_iter().collect();
                panic!("the collector exited with {exit}:\n{}", log.join("\n"));
            }
            if self.cert().exists() && healthy(&self.cert(), &format!("{}/healthz", self.url())) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the collector never answered /healthz");
            std::thread::sleep(std::time::Duration::from_millis(20)); // polling for a port another process binds
        }
        self.child = Some(child);
    }

    /// Runs `statement` on its database directly, as someone who has the database (not
    /// the API) would; answers what it printed.
    pub fn sql(&self, statement: &str) -> String {
        let out = match (&self._pg, &self.db) {
            (Some(pg), Some(url)) => Command::new("psql")
                .args(["-h", "127.0.0.1", "-p", &pg.port.to_string(), "-U", "wardlock", "-At", "-d"])
                .arg(url.rsplit('/').next().unwrap_or("collector"))
                .args(["-c", statement])
                .output(),
            _ => Command::new("sqlite3").arg(self.dir.path().join("collector.db")).arg(statement).output(),
        }
        .unwrap();
        assert!(out.status.success(), "{statement}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Stops it and starts it again on the same database.
    pub fn restart(&mut self) {
        self.kill9();
        self.start();
    }

    /// The running collector's process ID.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn kill9(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("tls/cert.pem")
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// One HTTPS request with the admin token (or `token`): status and body.
    pub fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<String>) -> (u16, String) {
        call(&self.cert(), method, &format!("{}{path}", self.url()), Some(token.unwrap_or(&self.token)), body)
    }

    /// Makes a console account with `wardlock-collector account create`; answers the
    /// base32 TOTP secret of its enrolment URI.
    pub fn create_account(&self, name: &str, role: &str, password: &str) -> String {
        self.try_create_account(name, role, password).unwrap()
    }

    /// As [`Self::create_account`]; `Err` holds what the command said when it refused.
    pub fn try_create_account(&self, name: &str, role: &str, password: &str) -> Result<String, String> {
        self.account_secrets(&["account", "create", name, "--role", role], password)
    }

    /// `wardlock-collector account reset NAME`: the new TOTP secret.
    pub fn reset_account(&self, name: &str, password: &str) -> String {
        self.account_secrets(&["account", "reset", name], password).unwrap()
    }

    fn account_secrets(&self, args: &[&str], password: &str) -> Result<String, String> {
        let mut child = Command::new(crate::bin("wardlock-collector"))
            .args(args)
            .args(["--db", &self.db_url(), "--data-key"])
            .arg(self.dir.path().join("data.key"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), format!("{password}\n").as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let uri = stdout.lines().find(|l| l.starts_with("otpauth://")).expect("an otpauth URI");
        Ok(uri.split(['?', '&']).find_map(|p| p.strip_prefix("secret=")).expect("a secret").to_owned())
    }

    /// Its database's URL, as `--db` takes it.
    pub fn db_url(&self) -> String {
        self.db
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.dir.path().join("collector.db").display()))
    }

    /// Runs `wardlock-collector ARGS --db DB` (a command-line tool on its database).
    pub fn run_collector(&self, args: &[&str]) -> std::process::Output {
        Command::new(crate::bin("wardlock-collector"))
            .args(args)
            .args(["--db", &self.db_url()])
            .output()
            .unwrap()
    }

    /// Every event the collector holds, through the paginated API.
    pub fn all_events(&self) -> Vec<AuditEntry> {
        let mut out = Vec::new();
        let mut after: Option<i64> = None;
        loop {
            let path = match after {
                Some(a) => format!("/api/v1/events?limit=5000&after={a}"),
                None => "/api/v1/events?limit=5000".to_owned(),
            };
            let (status, body) = self.call("GET", &path, None, None);
            assert_eq!(status, 200, "{body}");
            let page: Value = serde_json::from_str(&body).unwrap();
            for e in page["events"].as_array().unwrap() {
                let mut e = e.clone();
                let obj = e.as_object_mut().unwrap();
                obj.remove("id");
                obj.remove("received");
                let record: AuditRecord = serde_json::from_value(e).unwrap();
                out.push(AuditEntry::try_from(record).unwrap());
            }
            match page["next"].as_i64() {
                Some(n) => after = Some(n),
                None => return out,
            }
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether `url` answers 200 now.
fn healthy(ca: &Path, url: &str) -> bool {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let Ok(pem) = std::fs::read(ca) else { return false };
        let Ok(cert) = reqwest::Certificate::from_pem(&pem) else { return false };
        let client = reqwest::Client::builder()
            .add_root_certificate(cert)
            .timeout(std::time::Duration::from_secs(2))
            .build()
            .unwrap();
        client.get(url).send().await.is_ok_and(|r| r.status().is_success())
    })
}

pub fn call(ca: &Path, method: &str, url: &str, token: Option<&str>, body: Option<String>) -> (u16, String) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer.as_deref().map(|b| ("authorization", b)).into_iter().collect();
    let answer = request(ca, method, url, &headers, body.as_deref());
    (answer.status, answer.body)
}

/// One HTTPS request's answer: status, headers (names in lower case), body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// One HTTPS request with these headers; a body is JSON unless a header says otherwise.
pub fn request(ca: &Path, method: &str, url: &str, headers: &[(&str, &str)], body: Option<&str>) -> Answer {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let cert = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
        let client = reqwest::Client::builder().add_root_certificate(cert).build().unwrap();
        let mut request = client.request(method.parse().unwrap(), url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("content-type")) {
                request = request.header("content-type", "application/json");
            }
            request = request.body(body.to_owned());
        }
        let response = request.send().await.unwrap();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
            .collect();
        let status = response.status().as_u16();
        Answer { status, headers, body: response.text().await.unwrap() }
    })
}
