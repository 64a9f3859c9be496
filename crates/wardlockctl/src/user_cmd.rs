use std::io::{BufRead, IsTerminal};

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use qrcode::render::unicode::Dense1x2;
use qrcode::QrCode;
use wardlock_core::protocol::collector::{NewUserRequest, UserCreated, UserOut};
use wardlock_core::secret::SecretString;
use wardlock_store::directory::{self, Actor, CredentialChange, NewUser};
use zeroize::Zeroizing;

use crate::context::{now, os_account, Global};
use crate::Verdict;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Enroll a user on this workstation
    #[command(
        after_help = "Example:\n  echo 730284 | wardlockctl user add n.nurse --name \"Nora Nurse\" --role nurse --pin-stdin --totp"
    )]
    Add {
        id: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        role: String,
        #[command(flatten)]
        pin: PinInput,
        /// Make a TOTP secret and print its otpauth:// URI and QR code (shown once)
        #[arg(long)]
        totp: bool,
        /// With --server: the workstation groups whose directory holds the user, comma
        /// separated [default: every group]
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
    },
    /// Reset a user's PIN and/or issue a new TOTP secret
    #[command(after_help = "Example:\n  wardlockctl user reset n.nurse --pin-prompt")]
    Reset {
        id: String,
        #[command(flatten)]
        pin: PinInput,
        /// Issue a new TOTP secret (the old one stops working)
        #[arg(long)]
        totp: bool,
    },
    /// Disable a user: their next unlock is refused
    #[command(after_help = "Example:\n  wardlockctl user disable n.nurse")]
    Disable { id: String },
    /// Sign IT's grant of the admin role for a user of the collector's directory (needs
    /// --server): workstations take the role only with a grant their sync.trusted_keys verify
    #[command(
        name = "grant-admin",
        after_help = "Example:\n  wardlockctl --server https://collector:8443 --token $TOKEN user grant-admin it.oncall --key it-keys/policy-signing.key"
    )]
    GrantAdmin {
        id: String,
        /// IT's private signing key (`policy keygen`), the one whose public half the
        /// workstations trust
        #[arg(long)]
        key: std::path::PathBuf,
        /// How long the role holds [default: 365d]; sign a new grant before then
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<std::time::Duration>,
    },
    /// List users (no secrets are shown)
    #[command(after_help = "Example:\n  wardlockctl user list --json")]
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct PinInput {
    /// Read the PIN from the first line of standard input
    #[arg(long, conflicts_with = "pin_prompt")]
    pin_stdin: bool,
    /// Ask for the PIN twice on the terminal, without echo
    #[arg(long)]
    pin_prompt: bool,
}

impl PinInput {
    fn read(&self) -> Result<Option<SecretString>> {
        if self.pin_stdin {
            let mut line = Zeroizing::new(String::new());
            std::io::stdin().lock().read_line(&mut line).context("reading the PIN from standard input")?;
            let pin = SecretString::new(line.trim_end_matches(['\r', '\n']));
            if pin.is_empty() {
                bail!("--pin-stdin: standard input had no PIN on its first line");
            }
            return Ok(Some(pin));
        }
        if self.pin_prompt {
            if !std::io::stdin().is_terminal() {
                bail!("--pin-prompt needs a terminal; use --pin-stdin in scripts");
            }
            let first = Zeroizing::new(rpassword::prompt_password("New PIN: ")?);
            let second = Zeroizing::new(rpassword::prompt_password("Repeat PIN: ")?);
            if first != second {
                bail!("the two PINs differ; nothing was changed");
            }
            return Ok(Some(SecretString::new(first.as_str())));
        }
        Ok(None)
    }
}

pub fn run(global: &Global, cmd: UserCommand) -> Result<Verdict> {
    let actor = Actor { admin: None, os_account: os_account() };
    match cmd {
        UserCommand::Add { id, name, role, pin, totp, groups } => {
            if !groups.is_empty() {
                bail!("--groups is for the collector's directory (give --server); a user added here works on this workstation");
            }
            let policy = global.load_policy()?;
            let pin = pin.read()?;
            if pin.is_none() && !totp {
                bail!("a user needs a PIN (--pin-stdin or --pin-prompt) or --totp to be able to unlock");
            }
            let mut store = global.open_store(true)?;
            let key = global.data_key(&store)?;
            let new = NewUser { id: id.clone(), display_name: name, role, pin, totp };
            let enrollment = directory::add_user(&mut store, &key, &policy, new, &actor, now())?;
            println!("added user {id}");
            if let Some(uri) = enrollment.totp_uri {
                show_totp(&uri)?;
            }
        }
        UserCommand::Reset { id, pin, totp } => {
            let policy = global.load_policy()?;
            let pin = pin.read()?;
            if pin.is_none() && !totp {
                bail!("nothing to reset: give --pin-stdin, --pin-prompt and/or --totp");
            }
            let mut store = global.open_store(false)?;
            let key = global.data_key(&store)?;
            let change = CredentialChange { pin, new_totp_seed: totp };
            let enrollment =
                directory::change_credentials(&mut store, &key, &policy, &id, &change, &actor, now())?;
            println!("reset user {id}");
            if let Some(uri) = enrollment.totp_uri {
                show_totp(&uri)?;
            }
        }
        UserCommand::GrantAdmin { .. } => {
            bail!("grant-admin signs a grant for the collector's directory: give --server URL --token TOKEN");
        }
        UserCommand::Disable { id } => {
            let policy = global.load_policy()?;
            let mut store = global.open_store(false)?;
            directory::disable_user(&mut store, &policy, &id, &actor, now())?;
            println!("disabled user {id}");
        }
        UserCommand::List { json } => {
            let store = global.open_store(false)?;
            let users = directory::list_users(&store)?;
            if json {
                let rows: Vec<UserRow<'_>> = users
                    .iter()
                    .map(|u| UserRow {
                        id: &u.id,
                        name: &u.display_name,
                        role: &u.role,
                        disabled: u.disabled,
                        pin: u.has_pin,
                        totp: u.has_totp,
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print_table(&users);
            }
        }
    }
    Ok(Verdict::Ok)
}

/// A local user as `user list --json` prints it (no secrets: whether there is a PIN or a
/// TOTP seed, never either).
#[derive(Debug, serde::Serialize)]
struct UserRow<'a> {
    id: &'a str,
    name: &'a str,
    role: &'a str,
    disabled: bool,
    pin: bool,
    totp: bool,
}

/// Prints the authenticator URI and its QR code. They are the secret itself: shown once.
fn print_table(users: &[directory::UserSummary]) {
    println!("{:<24} {:<28} {:<14} {:<9} {:<4} {:<4}", "ID", "NAME", "ROLE", "STATUS", "PIN", "TOTP");
    for u in users {
        let yes = |b: bool| if b { "yes" } else { "no" };
        let status = if u.disabled { "disabled" } else { "active" };
        println!(
            "{:<24} {:<28} {:<14} {:<9} {:<4} {:<4}",
            u.id,
            u.display_name,
            u.role,
            status,
            yes(u.has_pin),
            yes(u.has_totp)
        );
    }
}

fn show_totp(uri: &str) -> Result<()> {
    let code = QrCode::new(uri.as_bytes()).context("making the QR code")?;
    let qr = code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build();
    println!("\nScan this with the clinician's authenticator app. It is shown once and is a secret:");
    println!("{qr}");
    println!("{uri}");
    Ok(())
}

/// The same commands against the collector's directory (`--server`).
pub fn run_on_server(server: &crate::server::Server, cmd: UserCommand) -> Result<Verdict> {
    match cmd {
        UserCommand::Add { id, name, role, pin, totp, groups } => {
            let pin = pin.read()?;
            if pin.is_none() && !totp {
                bail!("a user needs a PIN (--pin-stdin or --pin-prompt) or --totp to be able to unlock");
            }
            // Typed, so the PIN goes out of a SecretString (wiped) and never through a JSON value.
            let request = NewUserRequest { id: id.clone(), display_name: name, role, pin, totp, groups };
            let created: UserCreated = server.typed("POST", "/api/v1/admin/users", Some(&request))?;
            println!("added user {id} to the collector's directory");
            if let Some(uri) = created.otpauth_uri {
                show_totp(&Zeroizing::new(uri))?;
            }
        }
        UserCommand::Reset { .. } => {
            bail!("resetting credentials at the collector is not supported yet; disable the user and add a new one")
        }
        UserCommand::Disable { id } => {
            let path = format!("/api/v1/admin/users/{}/disable", crate::server::encode(&id));
            server.call("POST", &path, None, None)?;
            println!(
                "disabled user {id} in the collector's directory (workstations apply it at their next sync)"
            );
        }
        UserCommand::GrantAdmin { id, key, expires } => {
            let key = crate::policy_cmd::read_signing_key(&key)?;
            // The grant binds the credentials the directory holds now: a later change at
            // the collector (a new PIN hash, another seed) is no administrator's.
            let users: Vec<UserOut> = server.all_pages("/api/v1/admin/users")?;
            let Some(user) = users.into_iter().find(|u| u.id == id) else {
                bail!("no user {id:?} in the collector's directory: add them first (user add {id} --role admin …)");
            };
            if !user.has_pin && !user.has_totp {
                bail!("user {id:?} has no PIN and no TOTP: a grant binds an administrator's credentials");
            }
            let Some(credential) = user.credential_digest else {
                bail!("the collector could not open {id:?}'s stored credentials; see its log");
            };
            let issued_at = now();
            let lifetime = expires.unwrap_or(std::time::Duration::from_secs(365 * 24 * 3600));
            let grant = wardlock_core::policy::AdminGrant {
                user: id.clone(),
                issued_at,
                expires: issued_at.saturating_add(lifetime),
                // Later grants have larger serials; a workstation refuses an older one.
                serial: u64::try_from(issued_at.unix_millis()).unwrap_or(0),
                credential,
            };
            let request = wardlock_core::protocol::collector::AdminGrantRequest { grant: grant.sign(&key) };
            let path = format!("/api/v1/admin/users/{}/admin-grant", crate::server::encode(&id));
            server.call("POST", &path, Some(serde_json::to_string(&request)?), None)?;
            println!(
                "granted the admin role to {id} with their current PIN and TOTP until {} (signed with key {})",
                grant.expires.to_rfc3339(),
                wardlock_core::policy::key_id(&key.verifying_key())
            );
        }
        UserCommand::List { json } => {
            let users: Vec<UserOut> = server.all_pages("/api/v1/admin/users")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&users)?);
            } else {
                let summaries: Vec<directory::UserSummary> = users
                    .into_iter()
                    .map(|u| directory::UserSummary {
                        id: u.id,
                        display_name: u.display_name,
                        role: u.role,
                        disabled: u.disabled,
                        has_pin: u.has_pin,
                        has_totp: u.has_totp,
                    })
                    .collect();
                print_table(&summaries);
            }
        }
    }
    Ok(Verdict::Ok)
}
