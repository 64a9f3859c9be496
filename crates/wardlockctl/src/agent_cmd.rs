//! Talking to a running `wardlockd` over its socket, as the guard does: a health check
//! for IT, and a way to try an unlock without the desktop.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use zeroize::Zeroizing;

use wardlock_client::blocking::Client;
use wardlock_core::protocol::local::{ClientRole, Request, Response, UnlockReply, UnlockRequest};
use wardlock_core::secret::SecretString;

use crate::Verdict;

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// wardlockd's socket
    #[arg(long, global = true, env = "WARDLOCK_SOCKET", default_value = "/run/wardlock/agent.sock")]
    socket: PathBuf,
    #[command(subcommand)]
    command: AgentCommand,
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Show the service's status: workstation, policy, audit backlog, guards connected
    #[command(after_help = "Example:\n  wardlockctl agent status --socket /run/wardlock/agent.sock")]
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Try an unlock through the service (counted, throttled and audited like the guard's)
    #[command(after_help = "Example:\n  echo 730284 | wardlockctl agent unlock n.nurse --pin-stdin")]
    Unlock {
        user: String,
        /// Read the PIN from the first line of standard input (else it is asked for, if a terminal)
        #[arg(long)]
        pin_stdin: bool,
        /// A TOTP code as well, or instead (with --no-pin)
        #[arg(long, value_name = "CODE")]
        totp: Option<String>,
        /// Send no PIN (TOTP only)
        #[arg(long, conflicts_with = "pin_stdin")]
        no_pin: bool,
    },
}

fn connect(socket: &Path) -> Result<Client> {
    let name = format!("wardlockctl {}", env!("CARGO_PKG_VERSION"));
    Client::open(socket, &name, ClientRole::Tool).context("wardlockd refused the connection")
}

fn describe(response: &Response) -> String {
    match response {
        Response::Error { code, message } => {
            format!("{message} ({})", serde_json::to_string(code).unwrap_or_default())
        }
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

pub fn run(args: AgentArgs) -> Result<Verdict> {
    let mut client = connect(&args.socket)?;
    match args.command {
        AgentCommand::Status { json } => match client.call(&Request::Status {})? {
            Response::Status(s) => {
                if json {
                    println!("{}", serde_json::to_string_pretty(&s)?);
                } else {
                    println!("workstation       {}", s.workstation_id);
                    println!("policy            {}", &s.policy_hash[..16.min(s.policy_hash.len())]);
                    println!(
                        "audit entries     {} ({} not yet at the collector)",
                        s.audit_last_seq, s.audit_unsent
                    );
                    match (s.collector_reachable, &s.collector_error, s.collector_retry_after_secs) {
                        (None, _, _) => println!("collector         none configured (or not tried yet)"),
                        (Some(false), error, _) => {
                            println!(
                                "collector         unreachable: {}",
                                error.as_deref().unwrap_or("unknown")
                            )
                        }
                        (Some(true), _, Some(secs)) => {
                            println!("collector         reachable, asked to wait {secs} s (over its quota)")
                        }
                        (Some(true), _, None) => println!("collector         reachable"),
                    }
                    println!("guards connected  {}", s.guards_connected);
                    println!(
                        "escalations       {} (sessions asked to lock, not yet confirmed)",
                        s.escalations_active
                    );
                    match s.ptrace_scope {
                        Some(0) => println!(
                            "WARNING           kernel.yama.ptrace_scope = 0: any process of the session may take over the guard; set it to 1"
                        ),
                        Some(scope) => println!("ptrace_scope      {scope}"),
                        None => println!("ptrace_scope      no Yama in this kernel: nothing stops the session account attaching to the guard"),
                    }
                    if s.backlog_warning {
                        println!("WARNING           the audit backlog is over the policy's threshold");
                    }
                }
                Ok(Verdict::Ok)
            }
            other => bail!("unexpected answer: {}", describe(&other)),
        },
        AgentCommand::Unlock { user, pin_stdin, totp, no_pin } => {
            let pin = if no_pin { None } else { Some(read_pin(pin_stdin)?) };
            let request = Request::Unlock(UnlockRequest {
                user,
                pin,
                totp: totp.map(|t| SecretString::new(&t)),
                emergency_reason: None,
            });
            match client.call(&request)? {
                Response::Unlock(UnlockReply::Granted {
                    user,
                    display_name,
                    last_unlock,
                    failures_since_last_unlock,
                    ..
                }) => {
                    println!("granted: {display_name} ({user})");
                    match last_unlock {
                        Some(t) => println!("  last unlock here: {}", t.to_rfc3339()),
                        None => println!("  first unlock here"),
                    }
                    println!("  failed attempts since then: {failures_since_last_unlock}");
                    Ok(Verdict::Ok)
                }
                Response::Unlock(UnlockReply::Refused {
                    attempts_left,
                    retry_after_secs,
                    emergency_closed,
                }) => {
                    print!("refused: {attempts_left} attempt(s) left");
                    if emergency_closed {
                        print!(" (emergency access is closed here until the workstation's lockout ends)");
                    }
                    match retry_after_secs {
                        Some(s) if s > 0 => println!(", try again in {s} s"),
                        _ => println!(),
                    }
                    Ok(Verdict::Failed)
                }
                Response::Error { message, .. } => bail!("wardlockd refused the request: {message}"),
                other => bail!("unexpected answer: {}", describe(&other)),
            }
        }
    }
}

fn read_pin(from_stdin: bool) -> Result<SecretString> {
    if from_stdin {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin().lock().read_line(&mut line).context("reading the PIN from standard input")?;
        return Ok(SecretString::new(line.trim_end_matches(['\r', '\n'])));
    }
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to ask for the PIN on; use --pin-stdin in scripts");
    }
    let pin = Zeroizing::new(rpassword::prompt_password("PIN: ")?);
    Ok(SecretString::new(pin.as_str()))
}
