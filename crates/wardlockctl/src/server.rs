//! Talking to a collector (`--server URL --token TOKEN`): the central directory, policy
//! pushes, enrollment secrets, events and reports.

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use serde_json::Value;

use wardlock_core::protocol::collector::{
    ConflictOut, EmergencyOut, EmergencyReview, EmergencyReviewRequest, EnrollSecretCreated,
    EnrollSecretInfo, EnrollSecretRequest, EventOut, EventPage, FailureCount, Finding, FleetWorkstation,
    PolicyStored, ReenrollApproved, ReenrollRequest, StaleUser, WorkstationOut,
};

use crate::Verdict;

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Collector base URL, e.g. https://collector.hospital.example:8443
    #[arg(long, global = true, env = "WARDLOCK_SERVER")]
    pub server: Option<String>,
    /// API token (admin for changes, auditor for events and reports)
    #[arg(long, global = true, env = "WARDLOCK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM of the CA (or self-signed certificate) the collector's certificate chains to
    /// [default: the system's trusted roots]
    #[arg(long, global = true, env = "WARDLOCK_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

pub struct Server {
    base: String,
    token: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl ServerArgs {
    pub fn connect(&self) -> Result<Option<Server>> {
        let Some(base) = &self.server else { return Ok(None) };
        let token = self.token.clone().context("--server needs --token (or WARDLOCK_TOKEN)")?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(120))
            .user_agent(concat!("wardlockctl/", env!("CARGO_PKG_VERSION")));
        match &self.ca_file {
            Some(path) => {
                let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                let cert = reqwest::Certificate::from_pem(&pem)
                    .with_context(|| format!("{}: not a PEM certificate", path.display()))?;
                builder = builder.add_root_certificate(cert);
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    if let Ok(c) = reqwest::Certificate::from_der(&cert) {
                        builder = builder.add_root_certificate(c);
                    }
                }
            }
        }
        Ok(Some(Server {
            base: base.trim_end_matches('/').to_owned(),
            token,
            client: builder.build()?,
            runtime: tokio::runtime::Builder::new_current_thread().enable_all().build()?,
        }))
    }

    pub fn require(&self) -> Result<Server> {
        self.connect()?.context("this command talks to a collector: give --server URL --token TOKEN")
    }
}

impl Server {
    /// One request; the body of a 2xx answer, or an error with the collector's message.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        accept: Option<&str>,
    ) -> Result<(String, Option<String>)> {
        let url = format!("{}{path}", self.base);
        self.runtime.block_on(async {
            let mut request = self.client.request(method.parse()?, &url).bearer_auth(&self.token);
            if let Some(body) = body {
                request = request.header("content-type", "application/json").body(body);
            }
            if let Some(accept) = accept {
                request = request.header("accept", accept);
            }
            let response = request.send().await.with_context(|| format!("{method} {url}"))?;
            let status = response.status();
            let next =
                response.headers().get("x-next-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let text = response.text().await?;
            if !status.is_success() {
                let message = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_owned))
                    .unwrap_or(text);
                bail!("the collector answered {status}: {message}");
            }
            Ok((text, next))
        })
    }

    /// A list, every page of it (`X-Next-After`): each page is a JSON array of `T`.
    pub fn all_pages<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<Vec<T>> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let url = match &after {
                Some(a) => format!("{path}{sep}limit=10000&after={}", encode(a)),
                None => path.to_owned(),
            };
            let (text, next) = self.call("GET", &url, None, None)?;
            let page: Vec<T> = serde_json::from_str(&text)
                .with_context(|| format!("the collector's answer to GET {url}"))?;
            items.extend(page);
            match next {
                Some(n) => after = Some(n),
                None => return Ok(items),
            }
        }
    }

    /// One request with a typed body and answer (the collector's wire types).
    pub fn typed<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<T> {
        let body = body.map(serde_json::to_string).transpose()?;
        let (text, _) = self.call(method, path, body, None)?;
        serde_json::from_str(&text).with_context(|| format!("the collector's answer to {method} {path}"))
    }
}

#[derive(Debug, Subcommand)]
pub enum EnrollSecretCommand {
    /// Make an enrollment secret for workstations (printed once)
    #[command(
        after_help = "Example:\n  wardlockctl --server https://collector:8443 --token $TOKEN enroll-secret create --label ward-4 --group ward4 --expires 7d --uses 40"
    )]
    Create {
        /// What it is for (a ward, a rollout)
        #[arg(long)]
        label: String,
        /// The workstation group it enrolls into (a workstation whose policy names
        /// another group is refused)
        #[arg(long)]
        group: String,
        /// How long it enrolls workstations [default: 30d]
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<std::time::Duration>,
        /// How many workstations it may enroll [default: 1000]
        #[arg(long)]
        uses: Option<u64>,
    },
    /// List the enrollment secrets: id, label, uses, expiry, state (never the secrets)
    List,
    /// Revoke one (by the id `list` shows): it enrolls nothing more
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum WorkstationCommand {
    /// Approve enrolling this ID again (a reinstalled workstation, a move to another
    /// group): prints a one-time code, valid 24 h, to put where the workstation reads its
    /// enrollment secret
    #[command(
        name = "re-enroll",
        after_help = "Example:\n  wardlockctl --server https://collector:8443 --token $TOKEN workstation re-enroll ward4-pc2 --group icu > /etc/wardlock/enroll-secret"
    )]
    ReEnroll {
        id: String,
        /// Move it to this group [default: the group it has]
        #[arg(long)]
        group: Option<String>,
    },
    /// Revoke a workstation: its node key stops working at once
    Revoke { id: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventFormat {
    Json,
    Csv,
    Fhir,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  wardlockctl --server https://collector:8443 --token $TOKEN events --user n.nurse --since 2026-11-01T00:00:00Z --format csv"
)]
pub struct EventsArgs {
    #[arg(long)]
    workstation: Option<String>,
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    kind: Option<String>,
    /// RFC 3339
    #[arg(long)]
    since: Option<String>,
    /// RFC 3339
    #[arg(long)]
    until: Option<String>,
    #[arg(long, value_enum, default_value = "json")]
    format: EventFormat,
    /// Write here instead of standard output
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Workstations not heard from for this long
    Silent {
        #[arg(long, default_value = "30")]
        minutes: u64,
    },
    /// Failed attempts and lockouts per user
    Failed {
        #[arg(long)]
        since: Option<String>,
    },
    /// Directory users with no unlock in N days (orphaned accounts)
    Stale {
        #[arg(long, default_value = "90")]
        days: u32,
    },
    /// Break-glass accesses with their reasons
    Emergency {
        #[arg(long)]
        since: Option<String>,
    },
    /// Every workstation with its state now (silent, unguarded, logged off, warning,
    /// active, locked), backlog and policy serial; silent and unguarded first
    Fleet {
        /// Only this workstation group
        #[arg(long)]
        group: Option<String>,
    },
    /// Mark one break-glass access reviewed, with what the review found (kept once)
    Review {
        /// The workstation the access was at
        workstation: String,
        /// The access's sequence number in that workstation's log
        seq: u64,
        #[arg(long)]
        note: String,
    },
    /// Chain breaks, rewritten histories, truncated logs and refused enrollments found at
    /// the collector
    Chain,
    /// Entries received under a stored seq with another content: both versions
    Conflicts {
        #[arg(long)]
        workstation: Option<String>,
    },
}

fn query(pairs: &[(&str, &Option<String>)]) -> String {
    let parts: Vec<String> =
        pairs.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v)))).collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// Percent-encodes a query value.
pub fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn enroll_secret(server: &Server, cmd: EnrollSecretCommand) -> Result<Verdict> {
    match cmd {
        EnrollSecretCommand::Create { label, group, expires, uses } => {
            let request = EnrollSecretRequest {
                label,
                group,
                expires_in_secs: expires.map(|d| d.as_secs()),
                max_uses: uses,
            };
            let created: EnrollSecretCreated =
                server.typed("POST", "/api/v1/admin/enroll-secrets", Some(&request))?;
            println!("{}", created.secret);
            eprintln!(
                "enrollment secret {}: enrolls up to {} workstations until {}",
                created.id,
                created.max_uses,
                created.expires.to_rfc3339()
            );
        }
        EnrollSecretCommand::List => {
            let secrets: Vec<EnrollSecretInfo> = server.all_pages("/api/v1/admin/enroll-secrets")?;
            println!(
                "{:<12}  {:<9}  {:>11}  {:<20}  {:<12}  label",
                "id", "state", "uses", "expires", "group"
            );
            for s in secrets {
                let uses = match s.max_uses {
                    Some(max) => format!("{}/{max}", s.uses),
                    None => s.uses.to_string(),
                };
                let expires = s.expires.map_or_else(|| "never".to_owned(), |e| e.to_rfc3339());
                let group = s.group.as_deref().unwrap_or("(none)");
                println!("{:<12}  {:<9}  {uses:>11}  {expires:<20}  {group:<12}  {}", s.id, s.state, s.label);
            }
        }
        EnrollSecretCommand::Revoke { id } => {
            server.call("DELETE", &format!("/api/v1/admin/enroll-secrets/{}", encode(&id)), None, None)?;
            eprintln!("enrollment secret {id} revoked");
        }
    }
    Ok(Verdict::Ok)
}

pub fn workstation(server: &Server, cmd: WorkstationCommand) -> Result<Verdict> {
    match cmd {
        WorkstationCommand::ReEnroll { id, group } => {
            let path = format!("/api/v1/admin/workstations/{}/re-enroll", encode(&id));
            let approved: ReenrollApproved = server.typed("POST", &path, Some(&ReenrollRequest { group }))?;
            println!("{}", approved.code);
            eprintln!(
                "workstation {id} may enroll again once with this code (as its enrollment secret) until {}",
                approved.expires.to_rfc3339()
            );
        }
        WorkstationCommand::Revoke { id } => {
            server.call("POST", &format!("/api/v1/admin/workstations/{}/revoke", encode(&id)), None, None)?;
            eprintln!("workstation {id} revoked: its node key no longer works");
        }
    }
    Ok(Verdict::Ok)
}

pub fn events(server: &Server, args: EventsArgs) -> Result<Verdict> {
    let filters = query(&[
        ("workstation", &args.workstation),
        ("user", &args.user),
        ("kind", &args.kind),
        ("since", &args.since),
        ("until", &args.until),
    ]);
    let sep = if filters.is_empty() { "?" } else { "&" };
    let accept = match args.format {
        EventFormat::Json => None,
        EventFormat::Csv => Some("text/csv"),
        EventFormat::Fhir => Some("application/fhir+json"),
    };
    // Follow the pages; JSON and FHIR pages are merged, CSV pages concatenated.
    let mut after: Option<String> = None;
    let mut csv = String::new();
    let mut events: Vec<EventOut> = Vec::new();
    let mut fhir_entries: Vec<Value> = Vec::new();
    loop {
        let page = match &after {
            Some(a) => format!("/api/v1/events{filters}{sep}limit=10000&after={a}"),
            None => format!("/api/v1/events{filters}{sep}limit=10000"),
        };
        let (text, next_header) = server.call("GET", &page, None, accept)?;
        let next = match args.format {
            EventFormat::Csv => {
                let body =
                    if csv.is_empty() { text.as_str() } else { text.split_once('\n').map_or("", |x| x.1) };
                csv.push_str(body);
                next_header
            }
            EventFormat::Fhir => {
                let bundle: FhirBundle =
                    serde_json::from_str(&text).context("the collector's FHIR bundle")?;
                fhir_entries.extend(bundle.entry);
                next_header
            }
            EventFormat::Json => {
                let page: EventPage =
                    serde_json::from_str(&text).context("the collector's page of events")?;
                events.extend(page.events);
                page.next.map(|n| n.to_string())
            }
        };
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let output = match args.format {
        EventFormat::Csv => csv,
        EventFormat::Json => serde_json::to_string_pretty(&events)?,
        EventFormat::Fhir => serde_json::to_string_pretty(&FhirBundle::collection(fhir_entries))?,
    };
    match args.out {
        Some(path) => {
            std::fs::write(&path, output).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{output}"),
    }
    Ok(Verdict::Ok)
}

pub fn report(server: &Server, cmd: ReportCommand) -> Result<Verdict> {
    match cmd {
        ReportCommand::Silent { minutes } => {
            print_list::<WorkstationOut>(server, &format!("/api/v1/reports/silent?minutes={minutes}"))
        }
        ReportCommand::Failed { since } => print_list::<FailureCount>(
            server,
            &format!("/api/v1/reports/failed{}", query(&[("since", &since)])),
        ),
        ReportCommand::Stale { days } => {
            print_list::<StaleUser>(server, &format!("/api/v1/reports/stale?days={days}"))
        }
        ReportCommand::Fleet { group } => {
            print_list::<FleetWorkstation>(server, &format!("/api/v1/fleet{}", query(&[("group", &group)])))
        }
        ReportCommand::Review { workstation, seq, note } => {
            let path = format!("/api/v1/reports/emergency/{}/{seq}/review", encode(&workstation));
            let review: EmergencyReview =
                server.typed("POST", &path, Some(&EmergencyReviewRequest { note }))?;
            println!("{}", serde_json::to_string_pretty(&review)?);
            Ok(())
        }
        ReportCommand::Emergency { since } => print_list::<EmergencyOut>(
            server,
            &format!("/api/v1/reports/emergency{}", query(&[("since", &since)])),
        ),
        ReportCommand::Chain => print_list::<Finding>(server, "/api/v1/reports/chain"),
        ReportCommand::Conflicts { workstation } => print_list::<ConflictOut>(
            server,
            &format!("/api/v1/reports/conflicts{}", query(&[("workstation", &workstation)])),
        ),
    }?;
    // A report that finds something is not a failure of the command.
    Ok(Verdict::Ok)
}

/// Every page of a report, read as the collector's wire type, printed as one JSON array.
fn print_list<T: serde::de::DeserializeOwned + serde::Serialize>(server: &Server, path: &str) -> Result<()> {
    let items: Vec<T> = server.all_pages(path)?;
    println!("{}", serde_json::to_string_pretty(&items)?);
    Ok(())
}

/// A FHIR R4 Bundle of AuditEvents, as `GET /api/v1/events` gives it (HL7's format, so its
/// entries stay JSON).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct FhirBundle {
    #[serde(rename = "resourceType")]
    resource_type: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    entry: Vec<Value>,
}

impl FhirBundle {
    fn collection(entry: Vec<Value>) -> Self {
        Self { resource_type: "Bundle".into(), kind: "collection".into(), entry }
    }
}

pub fn policy_push(server: &Server, file: &std::path::Path, group: &str) -> Result<Verdict> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    wardlock_core::policy::SignedPolicy::from_json(&text).with_context(|| format!("{}", file.display()))?;
    // Sent as written: the signature covers the body bytes, not a re-encoding.
    let (answer, _) =
        server.call("PUT", &format!("/api/v1/admin/policies/{}", encode(group)), Some(text), None)?;
    let stored: PolicyStored = serde_json::from_str(&answer).context("the collector's answer to the push")?;
    println!("pushed serial {} for group {}", stored.serial, stored.group);
    Ok(Verdict::Ok)
}
