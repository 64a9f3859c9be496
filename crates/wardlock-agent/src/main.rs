//! `wardlockd`: the workstation service. Holds the secrets, decides unlocks, keeps the
//! audit log, and answers the session guard on a local socket.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Parser;

#[cfg(not(target_os = "linux"))]
compile_error!("wardlockd is built for Linux only so far (README: Windows and macOS are not built yet)");

mod central;
mod config;
mod identity;
mod os_session;
mod peer;
mod server;
mod service;
mod sync;
mod throttle;

use config::{ConfigFile, ServiceConfig};
use service::Service;

#[derive(Debug, Parser)]
#[command(
    name = "wardlockd",
    version,
    about = "Wardlock workstation service: unlock decisions, secrets and the audit log, behind a local socket",
    after_help = "Examples:\n  wardlockd                       # production: /var/lib/wardlock, /run/wardlock/agent.sock\n  wardlockd --dev ./demo/agent    # everything under one directory, no root needed\n\n\
                  Signals: SIGHUP reloads the machine policy; SIGTERM/SIGINT stop cleanly."
)]
struct Cli {
    /// Configuration file (TOML: data_dir, socket, policy, key_store, workstation_id,
    /// enroll_secret, guard_executable, machine_id_file)
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory of the workstation database [default: /var/lib/wardlock]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Socket to listen on [default: /run/wardlock/agent.sock]
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Machine policy file [default: /etc/wardlock/policy.toml; built-in defaults while it does not exist]
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Where the data key lives: file:DIR, keyring or systemd-credentials [default: file:/etc/wardlock/credentials]
    #[arg(long, value_name = "SPEC")]
    key_store: Option<String>,
    /// Workstation ID recorded in the audit log when the database is created [default: host name]
    #[arg(long, value_name = "ID")]
    workstation_id: Option<String>,
    /// File holding the collector's enrollment secret, read once at first sync
    /// [default: /etc/wardlock/enroll-secret, or the systemd credential wardlock-enroll-secret]
    #[arg(long, value_name = "FILE")]
    enroll_secret: Option<PathBuf>,
    /// The guard executable, where the machine policy's service.guard_executable names
    /// none [default: the wardlock beside this wardlockd]
    #[arg(long, value_name = "FILE")]
    guard_executable: Option<PathBuf>,
    /// The machine's ID; when it is not the one the database was made on (an image cloned
    /// onto another machine), the database is set aside and a new identity made
    /// [default: /etc/machine-id]
    #[arg(long, value_name = "FILE")]
    machine_id_file: Option<PathBuf>,
    /// Development mode: data, socket, policy and key all under DIR, run as any user.
    /// An unguarded session is then only locked, never logged off, unless the policy
    /// file sets lock.when_unguarded
    #[arg(long, value_name = "DIR")]
    dev: Option<PathBuf>,
}

/// How long a stopping service tries to deliver its last entries; well inside systemd's
/// stop timeout.
const LAST_DELIVERY: std::time::Duration = std::time::Duration::from_secs(5);

fn main() -> ExitCode {
    wardlock_cli_docs::generate_if_asked::<Cli>();
    init_logging();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(event = "failed", error = format!("{e:#}"), "wardlockd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Structured logs: to the journal with its fields when systemd started the service
/// (`JOURNAL_STREAM`), else lines on standard error. `WARDLOCK_LOG` filters
/// (`info` by default; `wardlockd=debug`, ...).
fn init_logging() {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::EnvFilter;

    let filter = || EnvFilter::try_from_env("WARDLOCK_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(journald) = tracing_journald::layer() {
            tracing_subscriber::registry()
                .with(filter())
                .with(journald.with_syslog_identifier("wardlockd".to_owned()))
                .init();
            return;
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let file = match &cli.config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            ConfigFile::parse(path, &text).map_err(anyhow::Error::msg)?
        }
        None => ConfigFile::default(),
    };
    let config = ServiceConfig::resolve(
        cli.dev.as_deref(),
        file,
        ConfigFile {
            data_dir: cli.data_dir,
            socket: cli.socket,
            policy: cli.policy,
            key_store: cli.key_store,
            workstation_id: cli.workstation_id,
            enroll_secret: cli.enroll_secret,
            guard_executable: cli.guard_executable,
            machine_id_file: cli.machine_id_file,
        },
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: ServiceConfig) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};

    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;

    let socket = config.socket.clone();
    // Bind before opening the database: a second instance must not touch it.
    let listener = crate::server::bind(&socket).await?;
    let started = service::blocking(move |b| Service::start(b, config, crate::os_session::platform())).await;
    let service = match started {
        Ok(service) => service,
        Err(e) => {
            // Leave no socket behind that looks like a service.
            let _ = tokio::fs::remove_file(&socket).await;
            return Err(anyhow::Error::new(e).context("not started"));
        }
    };
    let policy = service.policy();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let supervisor = tokio::spawn(service.clone().supervise(stop_rx.clone()));
    let sync = tokio::spawn(crate::sync::run(service.outbox(), stop_rx.clone()));
    tracing::info!(
        event = "listening",
        version = env!("CARGO_PKG_VERSION"),
        socket = %socket.display(),
        workstation = service.workstation_id(),
        database = %service.config().db_path().display(),
        policy = &policy.hash()[..12],
        "wardlockd {}: listening on {} (workstation {:?}, database {}, policy {})",
        env!("CARGO_PKG_VERSION"),
        socket.display(),
        service.workstation_id(),
        service.config().db_path().display(),
        &policy.hash()[..12],
    );

    let server = tokio::spawn(crate::server::serve(service.clone(), listener, stop_rx));
    let why = loop {
        tokio::select! {
            _ = terminate.recv() => break "SIGTERM",
            _ = interrupt.recv() => break "SIGINT",
            _ = hangup.recv() => {
                let s = service.clone();
                match service::blocking(move |b| s.reload_policy(b)).await {
                    Ok(true) => tracing::info!(event = "policy_reloaded", policy = &service.policy().hash()[..12], "machine policy reloaded"),
                    Ok(false) => tracing::info!(event = "policy_unchanged", "machine policy unchanged or refused (see the audit log)"),
                    Err(e) => tracing::error!(event = "policy_reload_failed", error = %e, "reloading the policy failed"),
                }
            }
        }
    };
    let _ = stop_tx.send(true);
    let _ = server.await;
    let _ = sync.await;
    let _ = supervisor.await;
    let _ = tokio::fs::remove_file(&socket).await;
    let s = service.clone();
    service::blocking(move |b| s.stop(b, why)).await.context("auditing the stop")?;
    // The stop entry and anything else unsent, delivered if the collector answers soon.
    match tokio::time::timeout(LAST_DELIVERY, crate::sync::deliver_last(&service.outbox())).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::info!(event = "last_delivery_failed", error = %e, "unsent entries stay for the next start: {e}")
        }
        Err(_) => tracing::info!(
            event = "last_delivery_failed",
            "unsent entries stay for the next start: the collector did not answer in time"
        ),
    }
    tracing::info!(event = "stopped", why, "wardlockd stopped ({why})");
    Ok(())
}
