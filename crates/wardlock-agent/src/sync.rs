//! The sync client: enrolls with the collector once, sends the audit log in bounded
//! batches and marks entries sent only once the collector acknowledged them, pulls the
//! signed central policy, and says it is alive. Failures back off exponentially with
//! full jitter (capped at `sync.interval`); nothing is dropped, and after any outage
//! (network, collector, this service) it resumes from the last acknowledged seq.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{header, StatusCode};
use tokio::sync::watch;

use zeroize::Zeroizing;

use wardlock_core::policy::Policy;
use wardlock_core::protocol::collector::{
    AuditAck, AuditBatch, AuditRecord, EnrollRequest, EnrollResponse, Heartbeat,
};

use crate::service::{utc_now, CentralOutcome, CollectorContact, Outbox, ServiceError};
/// Batches sent per cycle at most, so a huge backlog does not keep heartbeats and
/// policy pulls waiting.
const MAX_BATCHES_PER_CYCLE: usize = 200;

/// A collector's `Retry-After` is honoured up to this; a longer one (a quota of bytes per
/// day) is asked again after it.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{0}")]
    Http(String),
    #[error("the collector answered {status}: {message}")]
    Refused { status: StatusCode, message: String },
    /// Over this workstation's quota at the collector: send again after `retry_after`.
    #[error("the collector asks to wait {} s: {message}", retry_after.as_secs())]
    Throttled { retry_after: Duration, message: String },
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("{0}")]
    Setup(String),
}

impl From<reqwest::Error> for SyncError {
    fn from(e: reqwest::Error) -> Self {
        // Show the cause chain (connection refused, certificate unknown…), not just "error sending request".
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        SyncError::Http(text)
    }
}

/// What the client remembers between cycles.
#[derive(Debug, Default)]
struct State {
    client: Option<(String, Option<String>, reqwest::Client)>,
    policy_etag: Option<String>,
    directory_etag: Option<String>,
    refused_etag: Option<String>,
    backlog_warned: bool,
    reported_break: Option<u64>,
    failures: u32,
    /// The collector's `Retry-After`, to wait before the next cycle.
    retry_after: Option<Duration>,
}

pub async fn run(outbox: Outbox, mut shutdown: watch::Receiver<bool>) {
    let mut policy_rx = outbox.subscribe_policy();
    let mut state = State::default();
    loop {
        let policy = outbox.policy();
        let Some(endpoint) = policy.sync.endpoint.clone() else {
            outbox.set_contact(CollectorContact::None);
            tokio::select! {
                _ = policy_rx.changed() => continue,
                _ = shutdown.changed() => return,
            }
        };
        let ok = match cycle(&outbox, &policy, &endpoint, &mut state).await {
            Ok(()) => {
                outbox.set_contact(CollectorContact::Reachable);
                if state.failures > 0 {
                    tracing::info!(
                        event = "collector_reachable",
                        endpoint,
                        "collector {endpoint} reachable again"
                    );
                }
                state.failures = 0;
                true
            }
            Err(SyncError::Throttled { retry_after, message }) => {
                // Reachable and working, only over its quota: wait as asked, not as for a failure.
                outbox.set_contact(CollectorContact::Throttled { retry_after_secs: retry_after.as_secs() });
                tracing::info!(
                    event = "collector_busy",
                    endpoint,
                    retry_after_secs = retry_after.as_secs(),
                    "the collector {endpoint} asks to wait {} s before sending more ({message})",
                    retry_after.as_secs()
                );
                state.retry_after = Some(retry_after.clamp(Duration::from_secs(1), MAX_RETRY_AFTER));
                true
            }
            Err(e) => {
                outbox.set_contact(CollectorContact::Failed { error: e.to_string() });
                state.failures = state.failures.saturating_add(1);
                tracing::warn!(event = "sync_failed", endpoint, attempt = state.failures, error = %e, "sync with {endpoint} failed (attempt {}): {e}", state.failures);
                false
            }
        };
        let asked = state.retry_after.take();
        let wait = match asked {
            Some(asked) => asked,
            None if ok => policy.sync.interval,
            None => full_jitter(state.failures, policy.sync.interval),
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            // New entries: send them soon, but gather a second's worth first (not while
            // the collector asked to wait).
            _ = outbox.wakeup(), if ok && asked.is_none() => tokio::time::sleep(Duration::from_secs(1)).await,
            _ = policy_rx.changed() => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// At a stop, after the service's last entry (`service_stopped`) is written: one more try
/// to deliver what is unsent, so that a workstation stopped for removal leaves nothing
/// behind that exists only here. Never enrolls; the caller bounds how long it may take.
pub async fn deliver_last(outbox: &Outbox) -> Result<(), SyncError> {
    let policy = outbox.policy();
    let Some(endpoint) = policy.sync.endpoint.clone() else { return Ok(()) };
    let base = endpoint.trim_end_matches('/');
    let Some(node_key) = outbox.node_key(base).await? else { return Ok(()) };
    let mut state = State::default();
    let client = client(&policy, &endpoint, &mut state)?;
    let auth = Zeroizing::new(format!("Bearer {}", node_key.as_str()));
    upload(outbox, &policy, &client, base, &auth, &mut state).await
}

/// Exponential back-off with full jitter: uniformly random in [0, min(cap, 1 s · 2^n)].
fn full_jitter(failures: u32, cap: Duration) -> Duration {
    let ceiling = Duration::from_secs(1u64 << failures.min(16)).min(cap);
    let mut bytes = [0u8; 8];
    let fraction = match getrandom::getrandom(&mut bytes) {
        Ok(()) => (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    };
    ceiling.mul_f64(fraction).max(Duration::from_millis(100))
}

async fn cycle(outbox: &Outbox, policy: &Policy, endpoint: &str, state: &mut State) -> Result<(), SyncError> {
    check_backlog(outbox, policy, state).await?;
    let client = client(policy, endpoint, state)?;
    let base = endpoint.trim_end_matches('/');
    let node_key = node_key(outbox, policy, &client, base).await?;
    let auth = Zeroizing::new(format!("Bearer {}", node_key.as_str()));

    upload(outbox, policy, &client, base, &auth, state).await?;

    let status = outbox.status().await?;
    let beat = Heartbeat {
        workstation_id: status.workstation_id,
        time: utc_now(),
        last_seq: status.audit_last_seq,
        unsent: status.audit_unsent,
        policy_serial: outbox.central().1,
        guard_connected: status.guards_connected > 0,
    };
    let response = client
        .post(format!("{base}/api/v1/heartbeat"))
        .header(header::AUTHORIZATION, auth.as_str())
        .json(&beat)
        .send()
        .await?;
    let response = ok_or_refused(outbox, response).await?;
    // An older collector answers 204 without a body.
    if response.status() == StatusCode::OK {
        let ack: wardlock_core::protocol::collector::HeartbeatAck = response.json().await?;
        if !ack.used_totp_steps.is_empty() {
            let taken = outbox.used_elsewhere(ack.used_totp_steps).await?;
            if taken > 0 {
                tracing::info!(
                    event = "totp_steps_taken",
                    count = taken,
                    "{taken} TOTP step(s) used at other workstations are refused here too"
                );
            }
        }
    }

    pull_policy(outbox, &client, base, &auth, state).await?;
    pull_directory(outbox, &client, base, &auth, state).await
}

/// A GET that says which version we hold, so an unchanged answer is a bodiless 304.
async fn conditional_get(
    client: &reqwest::Client,
    url: &str,
    auth: &str,
    etag: &Option<String>,
) -> Result<reqwest::Response, SyncError> {
    let mut request = client.get(url).header(header::AUTHORIZATION, auth);
    if let Some(etag) = etag {
        request = request.header(header::IF_NONE_MATCH, etag);
    }
    Ok(request.send().await?)
}

/// The user directory, so unlock works offline with the collector's users; a user the
/// collector disabled is refused here from the next sync on.
async fn pull_directory(
    outbox: &Outbox,
    client: &reqwest::Client,
    base: &str,
    auth: &str,
    state: &mut State,
) -> Result<(), SyncError> {
    let response =
        conditional_get(client, &format!("{base}/api/v1/directory"), auth, &state.directory_etag).await?;
    let response = ok_or_refused(outbox, response).await?;
    if response.status() == StatusCode::NOT_MODIFIED {
        return Ok(());
    }
    let etag = response.headers().get(header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let directory: wardlock_core::protocol::collector::Directory = response.json().await?;
    let changes = outbox.apply_directory(directory).await?;
    if changes.added + changes.changed + changes.disabled > 0 || !changes.rejected.is_empty() {
        tracing::info!(
            event = "directory_synced",
            added = changes.added,
            changed = changes.changed,
            disabled = changes.disabled,
            "directory synced: {} added, {} changed, {} disabled, {} refused",
            changes.added,
            changes.changed,
            changes.disabled,
            changes.rejected.len()
        );
    }
    state.directory_etag = etag;
    Ok(())
}

fn client(policy: &Policy, endpoint: &str, state: &mut State) -> Result<reqwest::Client, SyncError> {
    if let Some((e, ca, client)) = &state.client {
        if e == endpoint && *ca == policy.sync.ca_file {
            return Ok(client.clone());
        }
    }
    let mut roots = rustls::RootCertStore::empty();
    match &policy.sync.ca_file {
        Some(path) => {
            use rustls_pki_types::pem::PemObject;
            for cert in rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| SyncError::Setup(format!("sync.ca_file {path}: {e}")))?
            {
                let cert = cert.map_err(|e| SyncError::Setup(format!("sync.ca_file {path}: {e}")))?;
                roots.add(cert).map_err(|e| SyncError::Setup(format!("sync.ca_file {path}: {e}")))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| SyncError::Setup(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .user_agent(concat!("wardlockd/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(SyncError::from)?;
    state.client = Some((endpoint.to_owned(), policy.sync.ca_file.clone(), client.clone()));
    Ok(client)
}

/// The node key (kept sealed by the service); enrolls to get one.
async fn node_key(
    outbox: &Outbox,
    policy: &Policy,
    client: &reqwest::Client,
    base: &str,
) -> Result<Zeroizing<String>, SyncError> {
    if let Some(key) = outbox.node_key(base).await? {
        return Ok(key);
    }
    let secret = outbox.enroll_secret().await.map_err(SyncError::Setup)?;
    // A fresh transport key pair: the collector seals directory secrets to its public half.
    let mut ikm = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::getrandom(&mut ikm[..]).map_err(|e| SyncError::Setup(format!("OS random: {e}")))?;
    let (transport_secret, transport_public) = wardlock_core::transport::keypair(&ikm);
    let request = EnrollRequest {
        transport_key: {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(transport_public)
        },
        enroll_secret: secret.as_str().to_owned(),
        workstation_id: outbox.workstation_id().to_owned(),
        hostname: gethostname::gethostname().to_string_lossy().into_owned(),
        group: policy.workstation.group.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let response = client.post(format!("{base}/api/v1/enroll")).json(&request).send().await?;
    let enrolled: EnrollResponse = ok_or_refused(outbox, response).await?.json().await?;
    let node_key = Zeroizing::new(enrolled.node_key.clone());
    outbox.enrolled(base, node_key.clone(), transport_secret).await?;
    tracing::info!(event = "enrolled", collector = base, "enrolled with the collector at {base}");
    Ok(node_key)
}

/// Turns an error status into an error with the collector's message. A refused node key
/// is forgotten, so the next cycle enrolls again.
async fn ok_or_refused(outbox: &Outbox, response: reqwest::Response) -> Result<reqwest::Response, SyncError> {
    let status = response.status();
    if status.is_success() || status == StatusCode::NOT_MODIFIED {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or(body);
    if status == StatusCode::UNAUTHORIZED {
        outbox.forget_node_key().await?;
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Err(SyncError::Throttled {
            retry_after: retry_after.unwrap_or(Duration::from_secs(60)),
            message,
        });
    }
    Err(SyncError::Refused { status, message })
}

async fn upload(
    outbox: &Outbox,
    policy: &Policy,
    client: &reqwest::Client,
    base: &str,
    auth: &str,
    state: &mut State,
) -> Result<(), SyncError> {
    let batch_size = policy.sync.batch_size;
    for _ in 0..MAX_BATCHES_PER_CYCLE {
        let (acked, entries) = outbox.next_batch(batch_size).await?;
        let Some(last) = entries.last().map(|e| e.seq) else { return Ok(()) };
        let batch = AuditBatch {
            workstation_id: entries[0].workstation.clone(),
            entries: entries.iter().map(AuditRecord::from).collect(),
        };
        let response = client
            .post(format!("{base}/api/v1/audit"))
            .header(header::AUTHORIZATION, auth)
            .json(&batch)
            .send()
            .await?;
        let ack: AuditAck = ok_or_refused(outbox, response).await?.json().await?;
        if let Some(at) = ack.chain_break_at.filter(|at| state.reported_break != Some(*at)) {
            state.reported_break = Some(at);
            outbox.chain_break(at).await?;
        }
        for seq in ack.conflicts.iter().copied().filter(|seq| (entries[0].seq..=last).contains(seq)) {
            outbox.conflict(seq).await?;
        }
        let acknowledged = ack.highest_contiguous_seq.min(last);
        if acknowledged <= acked {
            return Err(SyncError::Http(format!(
                "the collector did not take entry {} (it holds up to {}; gaps {:?})",
                acked + 1,
                ack.highest_contiguous_seq,
                ack.gaps
            )));
        }
        outbox.acknowledged(acknowledged).await?;
        if (entries.len() as u32) < batch_size {
            return Ok(());
        }
    }
    Ok(())
}

async fn pull_policy(
    outbox: &Outbox,
    client: &reqwest::Client,
    base: &str,
    auth: &str,
    state: &mut State,
) -> Result<(), SyncError> {
    let response =
        conditional_get(client, &format!("{base}/api/v1/policy"), auth, &state.policy_etag).await?;
    if response.status() == StatusCode::NOT_FOUND || response.status() == StatusCode::NOT_MODIFIED {
        return Ok(());
    }
    let response = ok_or_refused(outbox, response).await?;
    let etag = response.headers().get(header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let envelope = response.text().await?;
    if etag.is_some() && etag == state.refused_etag {
        return Ok(()); // refused and audited once already
    }
    let unchanged = envelope.trim() == outbox.central().0.unwrap_or_default().trim();
    if unchanged {
        state.policy_etag = etag;
        return Ok(());
    }
    let body = envelope.clone();
    match outbox.apply_central(body).await? {
        CentralOutcome::Applied { serial } => {
            tracing::info!(
                event = "central_policy_applied",
                serial,
                "central policy applied (serial {serial})"
            );
            state.policy_etag = etag;
        }
        CentralOutcome::Refused { why } => {
            tracing::warn!(event = "central_policy_refused", why, "central policy refused: {why}");
            state.refused_etag = etag;
        }
    }
    Ok(())
}

/// Audits, once per crossing, that the unsent backlog passed the policy's threshold.
async fn check_backlog(outbox: &Outbox, policy: &Policy, state: &mut State) -> Result<(), SyncError> {
    let unsent = outbox.status().await?.audit_unsent;
    let over = unsent > policy.sync.backlog_warning;
    if over && !state.backlog_warned {
        let threshold = policy.sync.backlog_warning;
        outbox.backlog(unsent, threshold).await?;
        tracing::warn!(
            event = "sync_backlog",
            unsent,
            threshold,
            "{unsent} audit entries wait for the collector (warning threshold {threshold})"
        );
    }
    state.backlog_warned = over;
    Ok(())
}
