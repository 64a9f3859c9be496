use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::{Subcommand, ValueEnum};
use wardlock_core::audit::AuditEntry;
use wardlock_core::protocol::collector::AuditRecord;
use wardlock_store::private_fs;
use wardlock_store::store::{OpenOptions, Store, VerifyError};

use crate::context::Global;
use crate::Verdict;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the hash chain; exits 1 and names the first bad entry on tampering
    #[command(after_help = "Example:\n  wardlockctl audit verify --db /var/lib/wardlock/wardlock.db")]
    Verify,
    /// Export the audit log
    #[command(after_help = "Example:\n  wardlockctl audit export --format csv --out audit.csv")]
    Export {
        #[arg(long, value_enum, default_value = "json")]
        format: Format,
        /// Write here instead of standard output
        #[arg(long)]
        out: Option<PathBuf>,
        /// Only entries with this seq or later
        #[arg(long, default_value = "1")]
        from_seq: u64,
    },
    /// Keep every audit entry that has not reached the collector before the workstation's
    /// state is deleted (the package runs it when it is removed). Each database in the data
    /// directory whose chain the collector has not acknowledged to its end is copied there,
    /// audit log only, and the copy verified. A clearance note is then left for `apt-get
    /// purge`, which deletes the state only with it.
    #[command(
        after_help = "Example:\n  wardlockctl audit preserve --data-dir /var/lib/wardlock --into /var/backups/wardlock\n\n\
                      Check a copy later with: wardlockctl audit verify --db FILE"
    )]
    Preserve {
        #[arg(long, value_name = "DIR", default_value = "/var/lib/wardlock")]
        data_dir: PathBuf,
        #[arg(long, value_name = "DIR", default_value = "/var/backups/wardlock")]
        into: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Json,
    Csv,
}

pub fn run(global: &Global, cmd: AuditCommand) -> Result<Verdict> {
    if let AuditCommand::Preserve { data_dir, into } = &cmd {
        return preserve(data_dir, into);
    }
    let store = global.open_store(false)?;
    match cmd {
        AuditCommand::Verify => match store.verify_audit() {
            Ok(v) => {
                println!(
                    "{}: audit log intact: {} entries, head seq {} hash {}",
                    store.path().display(),
                    v.entries,
                    v.head.0,
                    hex(&v.head.1)
                );
                Ok(Verdict::Ok)
            }
            Err(VerifyError::Chain(e)) => {
                eprintln!("{}: AUDIT LOG TAMPERED: {e} (first bad seq: {})", store.path().display(), e.seq());
                Ok(Verdict::Failed)
            }
            Err(VerifyError::Store(e)) => Err(e).context("reading the audit log"),
        },
        AuditCommand::Export { format, out, from_seq } => {
            let sink: Box<dyn Write> = match &out {
                // Exports name users and workstations: readable by their creator only
                // until shared on purpose.
                Some(path) => Box::new(
                    private_fs::create_or_truncate(path)
                        .with_context(|| format!("creating {}", path.display()))?,
                ),
                None => Box::new(std::io::stdout().lock()),
            };
            let mut sink = BufWriter::new(sink);
            let count = match format {
                Format::Json => export_json(&store, from_seq, &mut sink)?,
                Format::Csv => export_csv(&store, from_seq, &mut sink)?,
            };
            sink.flush()?;
            if let Some(path) = out {
                eprintln!("exported {count} entries to {}", path.display());
            }
            Ok(Verdict::Ok)
        }
        AuditCommand::Preserve { .. } => unreachable!("handled before the store is opened"),
    }
}

/// The workstation's databases in `data_dir`: its own and any an image carried along.
fn databases_in(data_dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(data_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", data_dir.display())),
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            name == "wardlock.db"
                || (name.starts_with("wardlock.db.from-machine-")
                    && !name.ends_with("-wal")
                    && !name.ends_with("-shm"))
        })
        .collect();
    found.sort();
    Ok(found)
}

fn preserve(data_dir: &Path, into: &Path) -> Result<Verdict> {
    let databases = databases_in(data_dir)?;
    if databases.is_empty() {
        println!("{}: no Wardlock database; nothing to keep", data_dir.display());
        return Ok(Verdict::Ok);
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut notes = Vec::new();
    for db in &databases {
        let store = Store::open(db, &OpenOptions { create: false, workstation_id: String::new() })
            .with_context(|| format!("opening {}", db.display()))?;
        let (last, acked) = (store.last_seq()?, store.acked_seq()?);
        let verified = store.verify_audit();
        if acked >= last && verified.is_ok() {
            notes.push(format!("{}: all {last} entries reached the collector", db.display()));
            continue;
        }
        private_fs::create_dir(into).with_context(|| format!("creating {}", into.display()))?;
        let name = db.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        // The ID is a host name or what IT set; nothing in it may lead out of `into`.
        let workstation: String = store
            .workstation_id()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
            .collect();
        let to = into.join(format!("{}-{name}-{stamp}.db", workstation.trim_start_matches('.')));
        store.copy_audit_to(&to).with_context(|| format!("copying the audit log to {}", to.display()))?;
        let copy = Store::open(&to, &OpenOptions { create: false, workstation_id: String::new() })?;
        let state = match (verified, copy.verify_audit()) {
            (Ok(_), Ok(v)) if v.entries == last => {
                format!("verified: {} entries, the whole chain", v.entries)
            }
            (Ok(_), copied) => {
                anyhow::bail!("the copy {} does not verify as the original does: {copied:?}", to.display())
            }
            // Kept as found: the copy holds what the original holds, tampering included.
            (Err(e), _) => format!("kept as found; the chain does NOT verify: {e}"),
        };
        notes.push(format!(
            "{}: {} of {last} entries had not reached the collector; the audit log is kept in {} ({state})",
            db.display(),
            last - acked.min(last),
            to.display()
        ));
    }
    let clearance = data_dir.join(wardlock_store::store::PURGE_CLEARANCE);
    private_fs::replace(&clearance, (notes.join("\n") + "\n").as_bytes())
        .with_context(|| format!("writing {}", clearance.display()))?;
    for note in &notes {
        println!("{note}");
    }
    Ok(Verdict::Ok)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn export_json(store: &wardlock_store::Store, from: u64, out: &mut impl Write) -> Result<u64> {
    let mut count = 0u64;
    out.write_all(b"[")?;
    store.for_each_entry(from, |entry: AuditEntry| -> Result<()> {
        if count > 0 {
            out.write_all(b",")?;
        }
        out.write_all(b"\n")?;
        serde_json::to_writer(&mut *out, &AuditRecord::from(&entry))?;
        count += 1;
        Ok(())
    })?;
    out.write_all(b"\n]\n")?;
    Ok(count)
}

/// Spreadsheets run cells that start like a formula (the core's rule); the JSON export
/// is the exact form.
fn csv_cell(value: &str) -> String {
    wardlock_core::audit::spreadsheet_safe(value).into_owned()
}

fn export_csv(store: &wardlock_store::Store, from: u64, out: &mut impl Write) -> Result<u64> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record([
        "seq",
        "time",
        "kind",
        "user",
        "os_account",
        "workstation",
        "policy_hash",
        "details",
        "prev_hash",
        "hash",
    ])?;
    let mut count = 0u64;
    store.for_each_entry(from, |e: AuditEntry| -> Result<()> {
        let details = serde_json::to_string(&e.details)?;
        w.write_record([
            e.seq.to_string(),
            e.time.to_rfc3339(),
            e.kind.as_str().to_owned(),
            csv_cell(e.user.as_deref().unwrap_or_default()),
            csv_cell(e.os_account.as_deref().unwrap_or_default()),
            csv_cell(&e.workstation),
            e.policy_hash.clone().unwrap_or_default(),
            csv_cell(&details),
            hex(&e.prev_hash),
            hex(&e.hash),
        ])?;
        count += 1;
        Ok(())
    })?;
    w.flush()?;
    Ok(count)
}
