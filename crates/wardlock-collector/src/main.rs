//! `wardlock-collector`: the central endpoint workstations sync to and compliance
//! queries. `serve` runs it; `token create` and `enroll-secret create` bootstrap it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

use wardlock_collector::api::{self, AppState, Metrics};
use wardlock_collector::secret;
use wardlock_collector::store::SqlStore;
use wardlock_collector::store::{CollectorStore, Role};
use wardlock_collector::{syslog, tls};

#[derive(Debug, Parser)]
#[command(
    name = "wardlock-collector",
    version,
    about = "Wardlock's central collector: audit intake, signed policies, compliance queries"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API over HTTPS
    #[command(
        after_help = "Examples:\n  wardlock-collector serve --dev ./collector            # self-signed TLS, prints a secret and a token\n  wardlock-collector serve --listen 0.0.0.0:8443 --db sqlite:///var/lib/wardlock-collector/collector.db \\\n      --tls-cert /etc/wardlock-collector/cert.pem --tls-key /etc/wardlock-collector/key.pem"
    )]
    Serve {
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Database URL: sqlite://PATH, or postgres://USER@HOST:PORT/DB (TLS with
        /// ?sslmode=verify-full&sslrootcert=CA.pem) [default in --dev: DIR/collector.db]
        #[arg(long)]
        db: Option<String>,
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Key file that seals TOTP secrets in the database (made for a database without
        /// users; missing for one with users, an error; back it up apart from the
        /// database) [default in --dev: DIR/data.key]
        #[arg(long, value_name = "FILE")]
        data_key: Option<PathBuf>,
        /// Forward every audit entry to a SIEM as RFC 5424 over TLS (RFC 5425)
        #[arg(long, value_name = "HOST:PORT", requires = "syslog_ca")]
        syslog_tls: Option<String>,
        /// CA certificate (PEM) the syslog receiver's certificate must chain to
        #[arg(long, value_name = "FILE", requires = "syslog_tls")]
        syslog_ca: Option<PathBuf>,
        /// Audit entries one workstation may send per minute (a minute's worth at once);
        /// more gets 429 with Retry-After, and its agent waits
        #[arg(long, value_name = "N", default_value_t = api::quota::Limits::default().entries_per_minute)]
        max_entries_per_minute: u32,
        /// Bytes of audit batches one workstation may send per UTC day
        #[arg(long, value_name = "BYTES", default_value_t = api::quota::Limits::default().bytes_per_day)]
        max_bytes_per_day: u64,
        /// Requests in flight from all clients together; more get 503 with Retry-After
        #[arg(long, value_name = "N", default_value_t = api::gate::Limits::default().requests)]
        max_requests: usize,
        /// Requests in flight from one client address; more get 429 with Retry-After
        /// (0: no limit, for a collector behind a proxy that every request comes through)
        #[arg(long, value_name = "N", default_value_t = api::gate::Limits::default().requests_per_address)]
        max_requests_per_address: usize,
        /// Connections open at once; more are closed as they arrive
        #[arg(long, value_name = "N", default_value_t = wardlock_collector::connections::DEFAULT_MAX_CONNECTIONS)]
        max_connections: usize,
        /// The time zone the console shows times in (IANA name, e.g. Europe/Berlin)
        /// [default: TZ, else /etc/timezone, else UTC]
        #[arg(long, value_name = "ZONE")]
        time_zone: Option<String>,
        /// A workstation not heard from for this long shows as silent in the console
        /// (its heartbeat comes every minute by default)
        #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = humantime::parse_duration)]
        silent_after: std::time::Duration,
        /// Development mode: database and a self-signed certificate under DIR; prints a
        /// new enrollment secret and admin token (also written to DIR, 0600)
        #[arg(long, value_name = "DIR")]
        dev: Option<PathBuf>,
    },
    /// Print the OpenAPI document of the API (docs/openapi.json is this output)
    Openapi,
    /// Make an API token (shown once)
    #[command(
        after_help = "Example:\n  wardlock-collector token create --db sqlite:///var/lib/wardlock-collector/collector.db --role admin --label it-oncall"
    )]
    Token {
        #[command(subcommand)]
        action: Create,
    },
    /// Make the data key that seals TOTP secrets in the database, before the first start
    #[command(
        name = "data-key",
        after_help = "Example (the unit hands it in with LoadCredentialEncrypted=, apart from the database):\n  wardlock-collector data-key create | systemd-creds encrypt --name=data-key - /etc/credstore.encrypted/wardlock-collector.data-key"
    )]
    DataKey {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Console accounts: people who sign in to https://COLLECTOR/console/ with a password
    /// and a TOTP code
    #[command(
        after_help = "Example:\n  wardlock-collector account create privacy.officer --role auditor \\\n      --db sqlite:///var/lib/wardlock-collector/collector.db --data-key /etc/wardlock-collector/data.key"
    )]
    Account {
        #[command(subcommand)]
        action: AccountAction,
    },
    /// Make an enrollment secret for workstations (shown once)
    #[command(
        name = "enroll-secret",
        after_help = "Example:\n  wardlock-collector enroll-secret create --db sqlite:///var/lib/wardlock-collector/collector.db --label ward-4 --group ward4"
    )]
    EnrollSecret {
        #[command(subcommand)]
        action: Create,
    },
}

#[derive(Debug, Subcommand)]
enum KeyAction {
    /// Print a new data key (base64) on standard output, for
    /// `systemd-creds encrypt --name=data-key - /etc/credstore.encrypted/wardlock-collector.data-key`
    /// (the unit loads it with `LoadCredentialEncrypted=`), or write it to --out (0600)
    Create {
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum AccountAction {
    /// Make an account: its password is read from standard input (asked twice on a
    /// terminal); its TOTP enrolment is printed once, as a QR code and an otpauth:// URI
    Create {
        /// The name it signs in with (letters, digits, '.', '_', '-', '@')
        name: String,
        /// admin (users, policies, enrollment) or auditor (events and reports, reviews)
        #[arg(long)]
        role: String,
        #[arg(long)]
        db: String,
        /// The collector's data key, which seals the account's secrets
        #[arg(long, value_name = "FILE")]
        data_key: PathBuf,
    },
    /// New secrets for an account (a forgotten password, a lost phone): a new password from
    /// standard input and a new TOTP enrolment; its lockout is cleared and its sessions end
    Reset {
        name: String,
        #[arg(long)]
        db: String,
        /// The collector's data key, which seals the account's secrets
        #[arg(long, value_name = "FILE")]
        data_key: PathBuf,
    },
    /// Disable an account: it cannot sign in, and its sessions end at their next request
    Disable {
        name: String,
        #[arg(long)]
        db: String,
    },
}

#[derive(Debug, Subcommand)]
enum Create {
    /// Make one, recorded in the admin log with the OS account that ran this
    Create {
        #[arg(long)]
        db: String,
        #[arg(long)]
        label: String,
        /// For tokens: admin or auditor
        #[arg(long, default_value = "auditor")]
        role: String,
        /// For enrollment secrets: the workstation group it enrolls into
        #[arg(long)]
        group: Option<String>,
    },
}

fn main() -> ExitCode {
    wardlock_cli_docs::generate_if_asked::<Cli>();
    // Structured lines on standard error (the journal keeps them under the unit);
    // `WARDLOCK_LOG` filters, `info` by default.
    let filter = tracing_subscriber::EnvFilter::try_from_env("WARDLOCK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(event = "failed", error = format!("{e:#}"), "wardlock-collector: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn open_store(url: &str) -> Result<Arc<dyn CollectorStore>> {
    match url.split_once("://") {
        Some(("sqlite", path)) if !path.is_empty() => Ok(Arc::new(SqlStore::open_sqlite(Path::new(path))?)),
        Some(("postgres" | "postgresql", _)) => Ok(Arc::new(SqlStore::open_postgres(url)?)),
        _ => bail!("--db is not understood; use sqlite://PATH or postgres://USER@HOST:PORT/DATABASE"),
    }
}

fn run() -> Result<()> {
    tls::install_crypto_provider();
    // Everything the collector writes (database, keys, certificates, tokens) is its own.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    match Cli::parse().command {
        Command::Openapi => {
            use utoipa::OpenApi as _;
            println!("{}", api::ApiDoc::openapi().to_pretty_json()?);
            Ok(())
        }
        Command::Token { action: Create::Create { db, label, role, .. } } => {
            let role =
                Role::parse(&role).with_context(|| format!("--role {role:?}: use admin or auditor"))?;
            let token = secret::generate()?;
            let log = cli_action("token_create", format!("role {} label {label}", role.as_str()));
            open_store(&db)?.add_token(&secret::hash(&token), role, &label, api::now(), Some(&log))?;
            println!("{token}");
            Ok(())
        }
        Command::Account { action: AccountAction::Create { name, role, db, data_key } } => {
            account_secrets(&name, Some(&role), &db, &data_key)
        }
        Command::Account { action: AccountAction::Reset { name, db, data_key } } => {
            account_secrets(&name, None, &db, &data_key)
        }
        Command::Account { action: AccountAction::Disable { name, db } } => {
            let log = cli_action("console_account_disable", format!("account {name}"));
            if !open_store(&db)?.disable_console_account(&name, Some(&log))? {
                bail!("there is no enabled console account {name:?}");
            }
            eprintln!("console account {name:?} disabled; its sessions end at their next request");
            Ok(())
        }
        Command::DataKey { action: KeyAction::Create { out: Some(path) } } => {
            secret::DataKey::create_file(&path)?;
            eprintln!("data key written to {} (back it up apart from the database)", path.display());
            Ok(())
        }
        Command::DataKey { action: KeyAction::Create { out: None } } => {
            println!("{}", secret::DataKey::new_encoded()?.as_str());
            Ok(())
        }
        Command::EnrollSecret { action: Create::Create { db, label, group, .. } } => {
            let group = group.context(
                "--group is needed: the workstation group this secret enrolls into (a workstation cannot choose its own)",
            )?;
            let value = secret::generate()?;
            let new = wardlock_collector::store::NewEnrollSecret::standard(&label, &group, api::now());
            let hash = secret::hash(&value);
            let detail = format!("id {} label {label} group {group}", hex::encode(&hash[..6]));
            let log = cli_action("enroll_secret_create", detail);
            open_store(&db)?.add_enroll_secret(&hash, &new, api::now(), Some(&log))?;
            eprintln!("enrollment secret {label:?}: group {group:?}, valid 30 days, for up to 1000 workstations (wardlockctl enroll-secret list|revoke)");
            println!("{value}");
            Ok(())
        }
        Command::Serve {
            listen,
            db,
            tls_cert,
            tls_key,
            data_key,
            syslog_tls,
            syslog_ca,
            max_entries_per_minute,
            max_bytes_per_day,
            max_requests,
            max_requests_per_address,
            max_connections,
            time_zone,
            silent_after,
            dev,
        } => {
            let time_zone = api::console::time_zone(time_zone).map_err(anyhow::Error::msg)?;
            let sign_in_policy = wardlock_core::console::sign_in_policy()
                .map_err(|e| anyhow::anyhow!("the console's sign-in rules do not validate: {e}"))?;
            let syslog = match (syslog_tls, syslog_ca) {
                (Some(address), Some(ca)) => {
                    let target = syslog::SyslogTarget { address, ca };
                    syslog::check(&target)?;
                    Some(target)
                }
                _ => None,
            };
            let data_key = match (&dev, data_key) {
                (_, Some(path)) => path,
                (Some(dir), None) => dir.join("data.key"),
                (None, None) => {
                    bail!("--data-key FILE is needed: the key that seals TOTP secrets (made for a database without users)")
                }
            };
            let (db, cert, key) = match (&dev, db, tls_cert, tls_key) {
                (Some(dir), db, cert, key) => {
                    let (dev_cert, dev_key) = tls::dev_certificate(&dir.join("tls"))?;
                    let db = db.unwrap_or_else(|| format!("sqlite://{}", dir.join("collector.db").display()));
                    (db, cert.unwrap_or(dev_cert), key.unwrap_or(dev_key))
                }
                (None, Some(db), Some(cert), Some(key)) => (db, cert, key),
                (None, None, _, _) => bail!("--db is needed (or --dev DIR)"),
                (None, Some(_), _, _) => {
                    bail!("--tls-cert and --tls-key are needed (or --dev DIR for a self-signed one)")
                }
            };
            let store = open_store(&db)?;
            if let Some(dir) = &dev {
                std::fs::create_dir_all(dir)?;
            }
            let data_key = Arc::new(open_data_key(&data_key, store.as_ref())?);
            // Earlier releases kept PIN hashes in the clear: sealed before anything is served.
            let sealed = secret::seal_plain_pin_hashes(store.as_ref(), &data_key)
                .map_err(|e| anyhow::anyhow!("sealing the directory's PIN hashes: {e}"))?;
            if sealed > 0 {
                tracing::info!(
                    event = "pin_hashes_sealed",
                    count = sealed,
                    "sealed {sealed} PIN hash(es) an earlier release kept in the clear"
                );
            }
            if let Some(dir) = &dev {
                dev_credentials(dir, store.as_ref())?;
            }
            let config = tls::server_config(&cert, &key)?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            // The store outlives the runtime: a database client that blocks when it is
            // dropped (postgres) must not be dropped on the runtime's threads.
            let keep = store.clone();
            let state = AppState {
                store,
                metrics: Arc::new(Metrics::default()),
                data_key,
                stored: Arc::new(tokio::sync::Notify::new()),
                tail: Arc::new(tokio::sync::watch::Sender::new(0)),
                quota: Arc::new(api::quota::Quota::new(api::quota::Limits {
                    entries_per_minute: max_entries_per_minute,
                    bytes_per_day: max_bytes_per_day,
                })),
                snapshots: Arc::default(),
                gate: Arc::new(api::gate::Gate::new(api::gate::Limits {
                    requests: max_requests,
                    requests_per_address: max_requests_per_address,
                    ..api::gate::Limits::default()
                })),
                sign_in_policy: Arc::new(sign_in_policy),
                sign_ins: Arc::default(),
                time_zone: time_zone.into(),
                silent_after,
            };
            let served = runtime.block_on(serve(listen, state, config, syslog, max_connections));
            drop(runtime);
            drop(keep);
            served
        }
    }
}

/// The data key, made only for a database that holds no user yet: a new key for a
/// database with users would leave every secret sealed with the old one unreadable.
fn open_data_key(path: &Path, store: &dyn CollectorStore) -> Result<secret::DataKey> {
    if let Some(key) = secret::DataKey::open_file(path)? {
        return Ok(key);
    }
    // Handed in by systemd (LoadCredential[Encrypted]=): that directory is read-only, and
    // a key made anew there would not outlive the service.
    let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    if credentials.is_some_and(|dir| path.starts_with(dir)) {
        bail!(
            "the data key credential {} is missing. Make it once, apart from the database: \
             wardlock-collector data-key create | systemd-creds encrypt --name=data-key - \
             /etc/credstore.encrypted/wardlock-collector.data-key",
            path.display()
        );
    }
    let users = store.users()?.len();
    if users > 0 {
        bail!(
            "the data key {} is missing, but the database holds {users} user(s) whose TOTP secrets it sealed. \
             Restore the key file from its backup (it is kept apart from the database) and start again; \
             a new key would leave every sealed secret unreadable",
            path.display()
        );
    }
    Ok(secret::DataKey::create_file(path)?)
}

/// Makes an account (`role` given) or gives an existing one new secrets (`None`).
fn account_secrets(name: &str, role: Option<&str>, db: &str, data_key: &Path) -> Result<()> {
    use std::io::IsTerminal as _;
    let valid_name = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if !valid_name {
        bail!("the name {name:?} must be 1–128 letters, digits, '.', '_', '-' or '@'");
    }
    let key = secret::DataKey::open_file(data_key)?.with_context(|| {
        format!(
            "the data key {} is missing; it is the one the collector serves with (--data-key)",
            data_key.display()
        )
    })?;
    let store = open_store(db)?;
    let reset = role.is_none();
    let role = match role {
        Some(role) => Role::parse(role).with_context(|| format!("--role {role:?}: use admin or auditor"))?,
        None => {
            store
                .console_account(name)?
                .with_context(|| format!("there is no console account {name:?}"))?
                .role
        }
    };
    let password = if std::io::stdin().is_terminal() {
        let first = zeroize::Zeroizing::new(rpassword::prompt_password(format!("Password for {name}: "))?);
        let again = zeroize::Zeroizing::new(rpassword::prompt_password("The same password again: ")?);
        if first != again {
            bail!("the two passwords differ; nothing was made");
        }
        wardlock_core::secret::SecretString::new(first.as_str())
    } else {
        let mut line = zeroize::Zeroizing::new(String::new());
        std::io::stdin().read_line(&mut line).context("reading the password from standard input")?;
        wardlock_core::secret::SecretString::new(line.trim_end_matches(['\n', '\r']))
    };
    let (account, seed) = wardlock_collector::console::new_account(&key, name, role, &password)?;
    if reset {
        let log = cli_action("console_account_reset", format!("account {name}"));
        if !store.reset_console_account(&account, api::now(), Some(&log))? {
            bail!("there is no console account {name:?}");
        }
    } else {
        let log = cli_action("console_account_create", format!("account {name} role {}", role.as_str()));
        if !store.add_console_account(&account, api::now(), Some(&log))? {
            bail!("a console account {name:?} exists already; nothing was changed (account reset gives it new secrets)");
        }
    }
    let uri = wardlock_collector::console::totp_uri(&seed, name)?;
    let qr = qrcode::QrCode::new(uri.as_bytes()).context("making the QR code")?;
    let qr = qr
        .render::<qrcode::render::unicode::Dense1x2>()
        .dark_color(qrcode::render::unicode::Dense1x2::Light)
        .light_color(qrcode::render::unicode::Dense1x2::Dark)
        .quiet_zone(true)
        .build();
    let done = if reset { "given new secrets (its sessions ended)" } else { "made" };
    eprintln!(
        "console account {name:?} ({}) {done}. Scan this with its owner's authenticator app; it is shown once and is a secret:",
        role.as_str()
    );
    println!("{qr}");
    println!("{uri}");
    Ok(())
}

/// A fresh enrollment secret and admin token for development, printed and kept in DIR.
/// The admin log's entry for an action of this command line: the actor is the OS account
/// that ran it (`SUDO_USER` through sudo).
fn cli_action(action: &str, detail: String) -> wardlock_collector::store::AdminAction {
    let account = ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|a| !a.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned());
    wardlock_collector::store::AdminAction {
        time: api::now(),
        actor: format!("wardlock-collector command line ({account})"),
        action: action.to_owned(),
        detail,
    }
}

fn dev_credentials(dir: &Path, store: &dyn CollectorStore) -> Result<()> {
    let secret_value = secret::generate()?;
    // For development: no expiry, no use limit; the group every workstation has by default.
    let dev = wardlock_collector::store::NewEnrollSecret {
        label: "dev".into(),
        group: "default".into(),
        expires: None,
        max_uses: None,
    };
    let log = cli_action("enroll_secret_create", "label dev group default (serve --dev)".into());
    store.add_enroll_secret(&secret::hash(&secret_value), &dev, api::now(), Some(&log))?;
    let token = secret::generate()?;
    let log = cli_action("token_create", "role admin label dev admin (serve --dev)".into());
    store.add_token(&secret::hash(&token), Role::Admin, "dev admin", api::now(), Some(&log))?;
    for (name, value) in [("enroll-secret", &secret_value), ("admin-token", &token)] {
        let path = dir.join(name);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        std::io::Write::write_all(&mut options.open(&path)?, value.as_bytes())?;
    }
    println!("enrollment secret: {secret_value}");
    println!("admin token:       {token}");
    println!("certificate:       {}", dir.join("tls/cert.pem").display());
    Ok(())
}

async fn serve(
    listen: SocketAddr,
    state: AppState,
    config: rustls::ServerConfig,
    syslog: Option<syslog::SyslogTarget>,
    max_connections: usize,
) -> Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let forwarder = syslog.map(|target| {
        tokio::spawn(syslog::run(state.store.clone(), target, state.stored.clone(), stop_rx.clone()))
    });
    let app = api::router(state);
    let handle = axum_server::Handle::new();
    let shutdown = handle.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        shutdown.graceful_shutdown(Some(std::time::Duration::from_secs(10)));
    });
    #[cfg(unix)]
    {
        let shutdown = handle.clone();
        tokio::spawn(async move {
            if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                term.recv().await;
                shutdown.graceful_shutdown(Some(std::time::Duration::from_secs(10)));
            }
        });
    }
    let tls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config));
    let listening = handle.clone();
    tokio::spawn(async move {
        if let Some(addr) = listening.listening().await {
            tracing::info!(event = "listening", address = %addr, version = env!("CARGO_PKG_VERSION"), "listening on https://{addr}");
        }
    });
    axum_server::bind_rustls(listen, tls)
        .map(|tls| tls.acceptor(wardlock_collector::connections::ConnectionLimit::new(max_connections)))
        // A connection must send its first request soon after its TLS handshake.
        .first_request_timeout(std::time::Duration::from_secs(30))
        .handle(handle)
        .serve(app.into_make_service_with_connect_info::<SocketAddr>())
        .await
        .with_context(|| format!("serving on {listen}"))?;
    let _ = stop_tx.send(true);
    if let Some(forwarder) = forwarder {
        let _ = forwarder.await;
    }
    tracing::info!(event = "stopped", "wardlock-collector stopped");
    Ok(())
}
