//! The HTTP API under `/api/v1`: the workstation side (enroll, audit, policy, heartbeat)
//! authenticated by node keys, and the people side (admin, compliance) by API tokens
//! with a role. Handlers check and translate; the store decides and keeps.

mod admin;
mod auth;
mod compliance;
pub mod console;
mod enrollment;
pub mod gate;
mod metrics;
mod paging;
mod policies;
pub mod quota;
pub mod snapshots;
mod workstation;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::{header, request::Parts, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use wardlock_core::audit::{AuditEntry, AuditKind};
use wardlock_core::clock::UtcMillis;
use wardlock_core::policy::{PinPolicy, SignedPolicy};
use wardlock_core::protocol::collector::{AuditBatch, AuditRecord, Directory, DirectoryUser, Heartbeat};
use wardlock_core::unlock::{self, TotpSeed};

use crate::secret;

use crate::store::{
    AdminAction, CollectorStore, EventQuery, PolicyPut, Received, Role, StoreError, UserRecord, Workstation,
};
use auth::{admin_action, bearer};
pub use auth::{Caller, Node};

/// Largest request body: a 10,000-entry batch of ordinary entries fits with room.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
pub const MAX_BATCH_ENTRIES: usize = 10_000;
/// A body over `MAX_BODY_BYTES` is still read, and thrown away, up to this much, so that
/// the client, which is still sending, receives the 413.
const DRAIN_AT_MOST: usize = 4 * MAX_BODY_BYTES;
const MAX_PAGE: u32 = 10_000;

#[derive(Debug, Default)]
pub struct Metrics {
    pub entries_stored: AtomicU64,
    pub entries_duplicate: AtomicU64,
    pub chain_findings: AtomicU64,
    pub batches: AtomicU64,
    pub enrollments: AtomicU64,
    pub auth_failures: AtomicU64,
    /// Batches refused with 429 (a workstation over its quota).
    pub throttled: AtomicU64,
}

#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Arc<dyn CollectorStore>,
    pub metrics: Arc<Metrics>,
    pub data_key: Arc<secret::DataKey>,
    /// Rung when entries were stored (the syslog forwarder waits on it).
    pub stored: Arc<tokio::sync::Notify>,
    /// Bumped when entries were stored: the console's live tails wait on it.
    pub tail: Arc<tokio::sync::watch::Sender<u64>>,
    /// What one workstation may send.
    pub quota: Arc<quota::Quota>,
    /// The sealed directories last served.
    pub snapshots: Arc<snapshots::Snapshots>,
    /// What any client may hold of the collector before and while it is answered.
    pub gate: Arc<gate::Gate>,
    /// Console sign-ins: the rules they are decided by and the counters kept in memory.
    pub sign_in_policy: Arc<wardlock_core::policy::ValidPolicy>,
    pub sign_ins: Arc<console::SignIns>,
    /// The time zone the console shows times in (IANA name).
    pub time_zone: Arc<str>,
    /// A workstation not heard from for this long is silent on the fleet page.
    pub silent_after: std::time::Duration,
}

pub fn now() -> UtcMillis {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    UtcMillis::from_unix_millis(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

/// The body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong and how to fix it.
    pub error: String,
}

/// An error answer: a status and a message that says what to fix. Never a secret.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorBody { error: self.message })).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(event = "database_failed", error = %e, "the database failed");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the collector's database failed; try again later")
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(e) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("worker failed: {e}"))),
    }
}

/// Query parameters, with a JSON 400 (not axum's plain text) when they do not parse.
#[derive(Debug)]
pub struct Q<T>(pub T);

impl<T: serde::de::DeserializeOwned + Send> FromRequestParts<AppState> for Q<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Q(value)),
            Err(e) => Err(ApiError::bad(e.body_text())),
        }
    }
}

/// The JSON body, with a clear 400 (not axum's plain text) when it does not parse.
/// Every request body of this API is a JSON object: serde would also build a struct from
/// an array of its fields, which the schema does not allow.
fn parse<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad("request body: expected a JSON object"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("request body: {e}")))
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/enroll", post(enrollment::enroll))
        .route("/api/v1/audit", post(workstation::audit))
        .route("/api/v1/policy", get(workstation::policy))
        .route("/api/v1/heartbeat", post(workstation::heartbeat))
        .route("/api/v1/admin/policies/{group}", put(admin::put_policy))
        .route(
            "/api/v1/admin/enroll-secrets",
            post(enrollment::create_enroll_secret).get(enrollment::list_enroll_secrets),
        )
        .route("/api/v1/admin/enroll-secrets/{id}", delete(enrollment::revoke_enroll_secret))
        .route("/api/v1/admin/workstations/{id}/re-enroll", post(enrollment::approve_reenroll))
        .route("/api/v1/admin/workstations/{id}/revoke", post(enrollment::revoke_workstation))
        .route("/api/v1/admin/tokens", post(admin::create_token))
        .route("/api/v1/admin/log", get(admin::admin_log))
        .route("/api/v1/events", get(compliance::events))
        .route("/api/v1/events/stream", get(compliance::events_stream))
        .route("/api/v1/reports/chain", get(compliance::report_chain))
        .route("/api/v1/reports/conflicts", get(compliance::report_conflicts))
        .route("/api/v1/reports/silent", get(compliance::report_silent))
        .route("/api/v1/reports/failed", get(compliance::report_failed))
        .route("/api/v1/reports/emergency", get(compliance::report_emergency))
        .route("/api/v1/reports/emergency/{workstation}/{seq}/review", post(compliance::review_emergency))
        .route("/api/v1/reports/stale", get(compliance::report_stale))
        .route("/api/v1/workstations", get(compliance::workstations))
        .route("/api/v1/fleet", get(compliance::fleet))
        .route("/api/v1/charts", get(compliance::charts))
        .route("/api/v1/policies", get(policies::policies))
        .route("/api/v1/policies/check", post(policies::check))
        .route("/api/v1/admin/policy-drafts", post(policies::add_draft))
        .route("/api/v1/policy-drafts", get(policies::drafts))
        .route("/api/v1/policy-drafts/{id}", get(policies::draft))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/directory", get(workstation::directory))
        .route("/api/v1/admin/users", post(admin::add_user).get(admin::list_users))
        .route("/api/v1/admin/users/{id}", put(admin::update_user))
        .route("/api/v1/admin/users/{id}/disable", post(admin::disable_user))
        .route("/api/v1/admin/users/{id}/totp", post(admin::new_totp))
        .route("/api/v1/admin/users/{id}/admin-grant", post(admin::put_admin_grant))
        .route(
            "/api/v1/console/session",
            post(console::sign_in).get(console::session).delete(console::sign_out),
        )
        .route("/", get(|| async { axum::response::Redirect::to("/console/") }))
        .route("/console", get(|| async { axum::response::Redirect::to("/console/") }))
        .route("/console/", get(console::page))
        .route("/console/{*path}", get(console::page))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(state.clone(), gate::admit))
        .layer(axum::middleware::from_fn(console::secure_headers))
        .with_state(state)
}

#[utoipa::path(get, path = "/healthz", summary = "Liveness: the database answers", responses((status = 200, description = "ok", body = String, content_type = "text/plain"), (status = 503, body = ErrorBody)))]
async fn healthz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    let store = state.store.clone();
    blocking(move || store.entry_count()).await?;
    Ok("ok\n")
}

fn check_name(field: &str, value: &str) -> Result<(), ApiError> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad(format!("{field} must be 1–128 letters, digits, '.', '_', '-' or '@'")))
    }
}

/// A label that says who or what something is for: 1–128 bytes, not blank.
fn check_label(label: &str, for_what: &str) -> Result<(), ApiError> {
    if label.trim().is_empty() || label.len() > 128 {
        return Err(ApiError::bad(format!("label must be 1–128 characters ({for_what})")));
    }
    Ok(())
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// The OpenAPI document, generated from the handlers and types above.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    info(title = "Wardlock collector", description = "Workstations enroll, push audit logs and pull signed policies and the directory; compliance queries events and reports."),
    paths(
        healthz, metrics::metrics, enrollment::enroll, workstation::audit, workstation::policy, workstation::heartbeat, workstation::directory, admin::put_policy, enrollment::create_enroll_secret, enrollment::list_enroll_secrets, enrollment::revoke_enroll_secret, enrollment::approve_reenroll, enrollment::revoke_workstation, admin::create_token, admin::admin_log, admin::add_user, admin::list_users, admin::update_user, admin::disable_user, admin::new_totp, admin::put_admin_grant, console::sign_in, console::session, console::sign_out, compliance::events, compliance::events_stream, compliance::report_chain, compliance::report_conflicts, compliance::report_silent, compliance::report_failed, compliance::report_emergency, compliance::review_emergency, compliance::report_stale, compliance::workstations, compliance::fleet, compliance::charts, policies::policies, policies::check, policies::add_draft, policies::drafts, policies::draft
    ),
    components(schemas(ErrorBody, AuditKind, UtcMillis, crate::store::Role, wardlock_core::audit::WorkstationState)),
    modifiers(&Security)
)]
pub struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |what: &str| {
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some(what)).build(),
            )
        };
        components.add_security_scheme("node_key", bearer("A workstation's node key from /api/v1/enroll"));
        components.add_security_scheme("token", bearer("An API token (role admin or auditor)"));
        // The console's session: a cookie set by the sign-in; changes carry X-CSRF-Token.
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Cookie(
                utoipa::openapi::security::ApiKeyValue::with_description(
                    "__Host-wardlock-session",
                    "A console session (POST /api/v1/console/session); changes also need X-CSRF-Token",
                ),
            )),
        );
    }
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    use utoipa::OpenApi as _;
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi as _;

    #[test]
    fn docs_openapi_json_is_the_generated_document() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        let generated = super::ApiDoc::openapi().to_pretty_json().unwrap_or_default();
        assert!(
            committed.trim() == generated.trim(),
            "docs/openapi.json is out of date: run `cargo run -p wardlock-collector -- openapi > docs/openapi.json`"
        );
    }

    #[test]
    fn every_change_under_admin_is_tagged_admin_for_the_role_test() {
        let doc = super::ApiDoc::openapi();
        for (path, item) in doc.paths.paths.iter().filter(|(p, _)| p.starts_with("/api/v1/admin/")) {
            for op in [&item.put, &item.post, &item.delete].into_iter().flatten() {
                let tags = op.tags.clone().unwrap_or_default();
                assert!(
                    tags.iter().any(|t| t == "admin role"),
                    "{path} changes something but is not tagged \"admin role\""
                );
            }
        }
    }

    #[test]
    fn every_operation_is_documented() {
        let doc = super::ApiDoc::openapi();
        let documented: usize = doc
            .paths
            .paths
            .values()
            .map(|item| {
                [&item.get, &item.put, &item.post, &item.delete].iter().filter(|op| op.is_some()).count()
            })
            .sum();
        // The routes in `router` (the OpenAPI document itself aside).
        assert_eq!(documented, 41);
    }
}
