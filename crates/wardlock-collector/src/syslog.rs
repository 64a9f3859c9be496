//! Forwarding to a SIEM: every stored audit entry as an RFC 5424 message with the entry
//! in structured data, over TLS (RFC 5425, octet-counted frames).
//!
//! Delivery is at least once: a cursor in the database says how far delivery got, and
//! it is saved one batch behind what was written, because a TLS write succeeds before
//! the receiver has the data. After a broken connection (the receiver restarted) the
//! last batch is sent again; receivers can drop repeats by MSGID-independent `seq`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};

use wardlock_core::audit::{AuditEntry, AuditKind};

use crate::store::{CollectorStore, EventQuery};

const CURSOR: &str = "syslog";
const BATCH: u32 = 500;
/// IANA's example enterprise number (RFC 5612) until Wardlock has its own.
const SD_ID: &str = "wardlock@32473";

#[derive(Debug, Clone)]
pub struct SyslogTarget {
    /// `host:port` of the receiver.
    pub address: String,
    /// CA (or self-signed certificate) the receiver's certificate must chain to.
    pub ca: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum SyslogError {
    #[error("--syslog-ca {path}: {why}")]
    Ca { path: String, why: String },
    #[error("--syslog-tls {0}: expected HOST:PORT")]
    Address(String),
}

fn client_config(ca: &Path) -> Result<rustls::ClientConfig, SyslogError> {
    let err = |why: String| SyslogError::Ca { path: ca.display().to_string(), why };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| err(e.to_string()))? {
        roots.add(cert.map_err(|e| err(e.to_string()))?).map_err(|e| err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(err("no certificate in it".into()));
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| err(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Checks the target before the server starts, so a typo fails at once.
pub fn check(target: &SyslogTarget) -> Result<(), SyslogError> {
    let (host, port) =
        target.address.rsplit_once(':').ok_or_else(|| SyslogError::Address(target.address.clone()))?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(SyslogError::Address(target.address.clone()));
    }
    client_config(&target.ca).map(drop)
}

/// Forwards until `shutdown`; `wakeup` is rung when entries were stored.
pub async fn run(
    store: Arc<dyn CollectorStore>,
    target: SyslogTarget,
    wakeup: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failures: u32 = 0;
    loop {
        let result = tokio::select! {
            r = deliver(&store, &target, &wakeup) => r,
            _ = shutdown.changed() => return,
        };
        if let Err(e) = result {
            failures = failures.saturating_add(1);
            if failures == 1 || failures.is_power_of_two() {
                tracing::warn!(event = "syslog_failed", target = target.address, attempt = failures, error = %e, "syslog to {}: {e} (attempt {failures}; entries wait in the database)", target.address);
            }
        }
        let wait = Duration::from_millis(250u64 << failures.min(7)).min(Duration::from_secs(30));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One connection's life: sends everything after the cursor, then waits for more.
async fn deliver(
    store: &Arc<dyn CollectorStore>,
    target: &SyslogTarget,
    wakeup: &Notify,
) -> Result<(), String> {
    let config = client_config(&target.ca).map_err(|e| e.to_string())?;
    let host = target.address.rsplit_once(':').map_or(target.address.as_str(), |(h, _)| h);
    let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&target.address))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect: {e}"))?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    tracing::info!(
        event = "syslog_forwarding",
        target = target.address,
        "forwarding to syslog at {}",
        target.address
    );
    // Resend from the saved cursor: it trails what was written by one batch.
    let mut confirmed = blocking(store, |s| s.forward_cursor(CURSOR)).await?;
    let mut written = confirmed;
    loop {
        let after = written;
        let query = EventQuery { after: Some(after), limit: BATCH, ..EventQuery::default() };
        let events = blocking(store, move |s| s.events(&query)).await?;
        let Some(last) = events.last().map(|e| e.id) else {
            // Caught up: what was written went through if the connection still stands.
            if written != confirmed {
                confirmed = written;
                blocking(store, move |s| s.set_forward_cursor(CURSOR, confirmed)).await?;
            }
            tokio::select! {
                _ = wakeup.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            continue;
        };
        let mut frames = Vec::with_capacity(events.len() * 400);
        for e in &events {
            let message = format_5424(&e.entry);
            frames.extend_from_slice(format!("{} ", message.len()).as_bytes());
            frames.extend_from_slice(message.as_bytes());
        }
        tls.write_all(&frames).await.map_err(|e| format!("write: {e}"))?;
        tls.flush().await.map_err(|e| format!("write: {e}"))?;
        // This write succeeding means the previous batch reached the receiver's socket.
        let previous = written;
        written = last;
        if previous != confirmed {
            confirmed = previous;
            blocking(store, move |s| s.set_forward_cursor(CURSOR, confirmed)).await?;
        }
    }
}

async fn blocking<T: Send + 'static>(
    store: &Arc<dyn CollectorStore>,
    f: impl FnOnce(&dyn CollectorStore) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, String> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Facility 10 (authpriv); severity by what happened.
fn priority(kind: AuditKind) -> u8 {
    let severity = match kind {
        AuditKind::EmergencyAccess
        | AuditKind::EmergencyAccessClosed
        | AuditKind::TamperDetected
        | AuditKind::GuardLost
        | AuditKind::SyncGap
        | AuditKind::ServiceUncleanStop => 1, // alert
        AuditKind::UnlockFailed
        | AuditKind::UserLockedOut
        | AuditKind::WorkstationLockedOut
        | AuditKind::LockFailed
        | AuditKind::PolicyRefused
        | AuditKind::AttemptsRateLimited
        | AuditKind::SyncBacklog => 4, // warning
        _ => 5, // notice
    };
    10 * 8 + severity
}

/// PRINTUSASCII without spaces, at most `max` characters; `-` when empty.
fn header_field(text: &str, max: usize) -> String {
    let clean: String = text.chars().filter(|c| c.is_ascii_graphic()).take(max).collect();
    if clean.is_empty() {
        "-".into()
    } else {
        clean
    }
}

/// SD-NAME: printable ASCII except `=`, space, `]`, `"`; at most 32.
fn sd_name(text: &str) -> String {
    text.chars().filter(|c| c.is_ascii_graphic() && !matches!(c, '=' | ']' | '"')).take(32).collect()
}

/// PARAM-VALUE escapes `"`, `\` and `]`.
fn sd_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One entry as an RFC 5424 message.
pub fn format_5424(e: &AuditEntry) -> String {
    let mut sd = format!(
        "[{SD_ID} workstation=\"{}\" seq=\"{}\" kind=\"{}\" hash=\"{}\"",
        sd_value(&e.workstation),
        e.seq,
        e.kind.as_str(),
        hex::encode(e.hash)
    );
    if let Some(user) = &e.user {
        sd.push_str(&format!(" user=\"{}\"", sd_value(user)));
    }
    if let Some(account) = &e.os_account {
        sd.push_str(&format!(" os_account=\"{}\"", sd_value(account)));
    }
    for (k, v) in &e.details {
        let name = sd_name(&format!("d.{k}"));
        if !name.is_empty() {
            sd.push_str(&format!(" {name}=\"{}\"", sd_value(v)));
        }
    }
    sd.push(']');
    let who = e.user.as_deref().map(|u| format!(" user {u}")).unwrap_or_default();
    format!(
        "<{}>1 {} {} wardlock - {} {sd} \u{feff}{}{who} on {}",
        priority(e.kind),
        e.time.to_rfc3339(),
        header_field(&e.workstation, 255),
        header_field(e.kind.as_str(), 32),
        e.kind.as_str(),
        e.workstation
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use wardlock_core::audit::AuditDraft;
    use wardlock_core::clock::UtcMillis;

    #[test]
    fn structured_data_is_escaped_and_the_header_is_rfc_5424() {
        let entry = AuditEntry::chain(
            AuditDraft::new(UtcMillis::from_unix_millis(1_795_000_000_000), AuditKind::EmergencyAccess)
                .user("n.nurse")
                .detail("reason", "bed 4 \"crash\" ] now \\ here"),
            "ward 4/ws-7",
            None,
        );
        let m = format_5424(&entry);
        assert!(m.starts_with("<81>1 2026-11-18T"), "{m}");
        assert!(m.contains(" ward4/ws-7 wardlock - emergency_access [wardlock@32473 "), "{m}");
        assert!(m.contains(r#"d.reason="bed 4 \"crash\" \] now \\ here""#), "{m}");
        assert!(m.contains(r#"user="n.nurse""#));
    }
}
