//! `wardlockctl`: the command line for IT and compliance. A thin shell: parsing and
//! printing here, every rule in `wardlock-core` and every file through `wardlock-store`.

mod agent_cmd;
mod audit_cmd;
mod context;
mod policy_cmd;
mod server;
mod user_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "wardlockctl", version, about = "Manage Wardlock policies, users and audit logs")]
struct Cli {
    #[command(flatten)]
    global: context::Global,
    #[command(flatten)]
    server: server::ServerArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check, sign and verify policies
    #[command(subcommand)]
    Policy(policy_cmd::PolicyCommand),
    /// Enroll, change, disable and list users on this workstation (or, with --server, in
    /// the collector's directory)
    #[command(subcommand)]
    User(user_cmd::UserCommand),
    /// Enrollment secrets for workstations (needs --server)
    #[command(subcommand, name = "enroll-secret")]
    EnrollSecret(server::EnrollSecretCommand),
    /// Workstations at the collector: approve a re-enrollment, revoke (needs --server)
    #[command(subcommand)]
    Workstation(server::WorkstationCommand),
    /// Audit events at the collector, as JSON, CSV or FHIR (needs --server)
    Events(server::EventsArgs),
    /// Compliance reports from the collector (needs --server)
    #[command(subcommand)]
    Report(server::ReportCommand),
    /// Verify and export the audit log
    #[command(subcommand)]
    Audit(audit_cmd::AuditCommand),
    /// Ask the running wardlockd: status, or try an unlock
    Agent(agent_cmd::AgentArgs),
}

/// The outcome of a command that checks something: `Failed` exits 1 after the command
/// printed why.
#[derive(Debug)]
pub enum Verdict {
    Ok,
    Failed,
}

fn main() -> ExitCode {
    wardlock_cli_docs::generate_if_asked::<Cli>();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Policy(cmd) => policy_cmd::run(cmd, &cli.server),
        Command::User(cmd) => match cli.server.connect() {
            Ok(Some(server)) => user_cmd::run_on_server(&server, cmd),
            Ok(None) => user_cmd::run(&cli.global, cmd),
            Err(e) => Err(e),
        },
        Command::EnrollSecret(cmd) => cli.server.require().and_then(|s| server::enroll_secret(&s, cmd)),
        Command::Workstation(cmd) => cli.server.require().and_then(|s| server::workstation(&s, cmd)),
        Command::Events(args) => cli.server.require().and_then(|s| server::events(&s, args)),
        Command::Report(cmd) => cli.server.require().and_then(|s| server::report(&s, cmd)),
        Command::Audit(cmd) => audit_cmd::run(&cli.global, cmd),
        Command::Agent(args) => agent_cmd::run(args),
    };
    match result {
        Ok(Verdict::Ok) => ExitCode::SUCCESS,
        Ok(Verdict::Failed) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Used by `--help` texts and defaults.
pub fn default_data_dir() -> PathBuf {
    if cfg!(windows) {
        PathBuf::from(r"C:\ProgramData\Wardlock")
    } else if cfg!(target_os = "macos") {
        PathBuf::from("/Library/Application Support/Wardlock")
    } else {
        PathBuf::from("/var/lib/wardlock")
    }
}
