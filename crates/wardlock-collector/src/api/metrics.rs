//! Prometheus text metrics.

use super::*;

#[utoipa::path(get, path = "/metrics", summary = "Prometheus text metrics", responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub(super) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let (entries, workstations) =
        blocking(move || Ok((store.entry_count()?, store.workstation_count()?))).await?;
    let m = &state.metrics;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let text = format!(
        "# HELP wardlock_audit_entries Audit entries stored.\n# TYPE wardlock_audit_entries gauge\nwardlock_audit_entries {entries}\n\
         # HELP wardlock_workstations Enrolled workstations.\n# TYPE wardlock_workstations gauge\nwardlock_workstations {workstations}\n\
         # HELP wardlock_audit_entries_stored_total Entries stored since start.\n# TYPE wardlock_audit_entries_stored_total counter\nwardlock_audit_entries_stored_total {}\n\
         # HELP wardlock_audit_entries_duplicate_total Entries received again (already stored).\n# TYPE wardlock_audit_entries_duplicate_total counter\nwardlock_audit_entries_duplicate_total {}\n\
         # HELP wardlock_chain_findings_total Chain problems flagged since start.\n# TYPE wardlock_chain_findings_total counter\nwardlock_chain_findings_total {}\n\
         # HELP wardlock_audit_batches_total Audit batches accepted.\n# TYPE wardlock_audit_batches_total counter\nwardlock_audit_batches_total {}\n\
         # HELP wardlock_enrollments_total Workstation enrollments.\n# TYPE wardlock_enrollments_total counter\nwardlock_enrollments_total {}\n\
         # HELP wardlock_auth_failures_total Requests refused for a missing or unknown key or token.\n# TYPE wardlock_auth_failures_total counter\nwardlock_auth_failures_total {}\n\
         # HELP wardlock_audit_batches_throttled_total Audit batches refused with 429 (a workstation over its quota).\n# TYPE wardlock_audit_batches_throttled_total counter\nwardlock_audit_batches_throttled_total {}\n",
        get(&m.entries_stored),
        get(&m.entries_duplicate),
        get(&m.chain_findings),
        get(&m.batches),
        get(&m.enrollments),
        get(&m.auth_failures),
        get(&m.throttled),
    );
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}
