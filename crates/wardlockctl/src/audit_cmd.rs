use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Subcommand, ValueEnum};
use wardlock_core::audit::AuditEntry;
use wardlock_core::protocol::collector::AuditRecord;
use wardlock_store::private_fs;
use wardlock_store::store::VerifyError;

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
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Json,
    Csv,
}

pub fn run(global: &Global, cmd: AuditCommand) -> Result<Verdict> {
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
    }
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
