//! The HTTP API under `/api/v1`: the workstation side (enroll, audit, policy, heartbeat)
//! authenticated by node keys, and the people side (admin, compliance) by API tokens
//! with a role. Handlers check and translate; the store decides and keeps.

mod enrollment;
mod paging;
pub mod quota;
pub mod snapshots;
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
use wardlock_core::secret::SecretString;
use wardlock_core::unlock::{self, TotpSeed};

use crate::secret;
use crate::store::{
    AdminAction, CollectorStore, EventQuery, PolicyPut, Role, StoreError, UserRecord, Workstation,
};

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
    /// What one workstation may send.
    pub quota: Arc<quota::Quota>,
    /// The sealed directories last served.
    pub snapshots: Arc<snapshots::Snapshots>,
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
        (self.status, Json(serde_json::json!({ "error": self.message }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        eprintln!("wardlock-collector: {e}");
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

fn bearer(parts: &Parts) -> Option<&str> {
    parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

/// A 401, counted for the metrics.
fn unauthorized(state: &AppState, why: &'static str) -> ApiError {
    state.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
    ApiError::new(StatusCode::UNAUTHORIZED, why)
}

/// The hash of the bearer credential, which is all the store ever sees of it.
fn bearer_hash(parts: &Parts, state: &AppState, why: &'static str) -> Result<crate::store::Hash, ApiError> {
    bearer(parts).map(secret::hash).ok_or_else(|| unauthorized(state, why))
}

/// A request from an enrolled workstation (`Authorization: Bearer NODE_KEY`).
#[derive(Debug)]
pub struct Node(pub Workstation);

impl FromRequestParts<AppState> for Node {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        const WHY: &str = "missing or unknown node key; enroll the workstation again";
        let hash = bearer_hash(parts, state, WHY)?;
        let store = state.store.clone();
        match blocking(move || store.workstation_by_key(&hash)).await? {
            Some(ws) => Ok(Node(ws)),
            None => Err(unauthorized(state, WHY)),
        }
    }
}

/// A person or tool with an API token; `role` says what it may do.
#[derive(Debug)]
pub struct Caller {
    pub role: Role,
    pub label: String,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        const WHY: &str = "missing or unknown API token (Authorization: Bearer TOKEN)";
        let hash = bearer_hash(parts, state, WHY)?;
        let store = state.store.clone();
        match blocking(move || store.token(&hash)).await? {
            Some((role, label)) => Ok(Caller { role, label }),
            None => Err(unauthorized(state, WHY)),
        }
    }
}

impl Caller {
    fn require_admin(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Auditor => {
                Err(ApiError::new(StatusCode::FORBIDDEN, "this needs an admin token; yours is an auditor's"))
            }
        }
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
fn parse<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("request body: {e}")))
}

/// Reads every request body before anything answers. A refusal sent while the client is
/// still sending (a wrong node key, a body too large) reaches an HTTP/2 client as a reset
/// stream instead of its status, and the agent's sync client re-enrolls only on seeing a
/// 401; once the body is in, every answer arrives, over HTTP/1.1 and HTTP/2 alike.
async fn body_first(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use http_body_util::BodyExt;
    let (parts, mut body) = request.into_parts();
    let mut kept = Vec::new();
    let mut received = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return ApiError::bad("the request body broke off before its end").into_response();
        };
        let Ok(data) = frame.into_data() else { continue };
        received += data.len();
        if received <= MAX_BODY_BYTES {
            kept.extend_from_slice(&data);
        } else if received > DRAIN_AT_MOST {
            break;
        } else {
            kept = Vec::new();
        }
    }
    if received > MAX_BODY_BYTES {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over {} MiB", MAX_BODY_BYTES / (1024 * 1024)),
        )
        .into_response();
    }
    next.run(axum::extract::Request::from_parts(parts, axum::body::Body::from(kept))).await
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/enroll", post(enrollment::enroll))
        .route("/api/v1/audit", post(audit))
        .route("/api/v1/policy", get(policy))
        .route("/api/v1/heartbeat", post(heartbeat))
        .route("/api/v1/admin/policies/{group}", put(put_policy))
        .route(
            "/api/v1/admin/enroll-secrets",
            post(enrollment::create_enroll_secret).get(enrollment::list_enroll_secrets),
        )
        .route("/api/v1/admin/enroll-secrets/{id}", delete(enrollment::revoke_enroll_secret))
        .route("/api/v1/admin/workstations/{id}/re-enroll", post(enrollment::approve_reenroll))
        .route("/api/v1/admin/workstations/{id}/revoke", post(enrollment::revoke_workstation))
        .route("/api/v1/admin/tokens", post(create_token))
        .route("/api/v1/admin/log", get(admin_log))
        .route("/api/v1/events", get(events))
        .route("/api/v1/reports/chain", get(report_chain))
        .route("/api/v1/reports/conflicts", get(report_conflicts))
        .route("/api/v1/reports/silent", get(report_silent))
        .route("/api/v1/reports/failed", get(report_failed))
        .route("/api/v1/reports/emergency", get(report_emergency))
        .route("/api/v1/reports/stale", get(report_stale))
        .route("/api/v1/workstations", get(workstations))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/directory", get(directory))
        .route("/api/v1/admin/users", post(add_user).get(list_users))
        .route("/api/v1/admin/users/{id}/disable", post(disable_user))
        .route("/api/v1/admin/users/{id}/admin-grant", post(put_admin_grant))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(body_first))
        .with_state(state)
}

#[utoipa::path(get, path = "/healthz", summary = "Liveness: the database answers", responses((status = 200, description = "ok", body = String, content_type = "text/plain"), (status = 503, body = ErrorBody)))]
async fn healthz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    let store = state.store.clone();
    blocking(move || store.entry_count()).await?;
    Ok("ok\n")
}

#[utoipa::path(get, path = "/metrics", summary = "Prometheus text metrics", responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let (entries, workstations) =
        blocking(move || Ok((store.entry_count()?, store.workstations()?.len()))).await?;
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

#[utoipa::path(post, path = "/api/v1/audit", summary = "Push a batch of audit entries (idempotent by workstation and seq)", request_body = AuditBatch, responses((status = 200, body = wardlock_core::protocol::collector::AuditAck), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, description = "over this workstation's quota; `Retry-After` says when to send again", body = ErrorBody)), security(("node_key" = [])))]
async fn audit(State(state): State<AppState>, Node(ws): Node, body: Bytes) -> Result<Response, ApiError> {
    let batch: AuditBatch = parse(&body)?;
    if batch.workstation_id != ws.id {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "this node key belongs to another workstation"));
    }
    if batch.entries.len() > MAX_BATCH_ENTRIES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("at most {MAX_BATCH_ENTRIES} entries per batch, got {}", batch.entries.len()),
        ));
    }
    let mut entries = Vec::with_capacity(batch.entries.len());
    for record in batch.entries {
        if record.workstation != ws.id {
            return Err(ApiError::bad(format!(
                "entry {} names workstation {:?}",
                record.seq, record.workstation
            )));
        }
        if record.seq == 0 {
            return Err(ApiError::bad("seq starts at 1"));
        }
        entries.push(AuditEntry::try_from(record).map_err(|e| ApiError::bad(e.to_string()))?);
    }
    let admitted =
        state.quota.admit(&ws.id, entries.len(), body.len(), std::time::Instant::now(), now().unix_millis());
    if let Err(over) = admitted {
        state.metrics.throttled.fetch_add(1, Ordering::Relaxed);
        let secs = over.retry_after.as_secs().max(1);
        let message = format!("{}; send again in {secs} s (nothing is lost: keep the entries)", over.why);
        let mut response = ApiError::new(StatusCode::TOO_MANY_REQUESTS, message).into_response();
        response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        return Ok(response);
    }
    let store = state.store.clone();
    let id = ws.id.clone();
    let ingest = blocking(move || store.ingest(&id, entries, now())).await?;
    let m = &state.metrics;
    m.batches.fetch_add(1, Ordering::Relaxed);
    m.entries_stored.fetch_add(ingest.stored, Ordering::Relaxed);
    m.entries_duplicate.fetch_add(ingest.duplicates, Ordering::Relaxed);
    m.chain_findings.fetch_add(ingest.findings, Ordering::Relaxed);
    if ingest.stored > 0 {
        state.stored.notify_one();
    }
    if ingest.findings > 0 {
        eprintln!(
            "wardlock-collector: workstation {:?}: {} chain problem(s) flagged",
            ws.id, ingest.findings
        );
    }
    Ok(Json(ingest.ack).into_response())
}

#[utoipa::path(get, path = "/api/v1/policy", summary = "The signed policy of this workstation's group (ETag; 304 when unchanged)", params(("If-None-Match" = Option<String>, Header, description = "ETag of the policy held")), responses((status = 200, body = SignedPolicy), (status = 304, description = "unchanged"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)), security(("node_key" = [])))]
async fn policy(
    State(state): State<AppState>,
    Node(ws): Node,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let group = ws.group.clone();
    let Some((envelope, etag)) = blocking(move || store.policy(&group)).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no policy has been pushed for group {:?}", ws.group),
        ));
    };
    let matches = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v == etag);
    if matches {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok(([(header::ETAG, etag.as_str()), (header::CONTENT_TYPE, "application/json")], envelope)
        .into_response())
}

#[utoipa::path(post, path = "/api/v1/heartbeat", summary = "A workstation says it is alive and how long its log is", request_body = Heartbeat, responses((status = 204, description = "noted"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)), security(("node_key" = [])))]
async fn heartbeat(
    State(state): State<AppState>,
    Node(ws): Node,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let beat: Heartbeat = parse(&body)?;
    if beat.workstation_id != ws.id {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "this node key belongs to another workstation"));
    }
    let store = state.store.clone();
    blocking(move || store.heartbeat(&ws.id, &beat, now())).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn admin_did(state: &AppState, caller: &Caller, action: &str, detail: String) -> Result<(), ApiError> {
    let entry = AdminAction { time: now(), actor: caller.label.clone(), action: action.to_owned(), detail };
    let store = state.store.clone();
    blocking(move || store.log_admin(&entry)).await
}

#[derive(Serialize, utoipa::ToSchema)]
struct PolicyStored {
    group: String,
    serial: u64,
}

#[utoipa::path(put, path = "/api/v1/admin/policies/{group}", summary = "Store a signed policy for a group (the serial must increase)", params(("group" = String, Path)), request_body = SignedPolicy, responses((status = 201, body = PolicyStored), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)), security(("token" = [])))]
async fn put_policy(
    State(state): State<AppState>,
    caller: Caller,
    Path(group): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    check_name("group", &group)?;
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::bad("the policy envelope is not UTF-8"))?;
    let envelope = SignedPolicy::from_json(text).map_err(|e| ApiError::bad(e.to_string()))?;
    let claims = envelope.unverified_body().map_err(|e| ApiError::bad(e.to_string()))?;
    if let Some(signed_for) = claims.group.as_deref().filter(|g| *g != group) {
        return Err(ApiError::bad(format!("the policy was signed for group {signed_for:?}, not {group:?}")));
    }
    let store = state.store.clone();
    let (g, serial, json) = (group.clone(), claims.serial, envelope.to_json());
    match blocking(move || store.put_policy(&g, serial, &json, now())).await? {
        PolicyPut::Stale { current } => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "group {group:?} already has serial {current}; sign the new policy with a higher --serial"
            ),
        )),
        PolicyPut::Stored => {
            admin_did(
                &state,
                &caller,
                "policy_push",
                format!("group {group} serial {serial} key {}", envelope.key_id),
            )
            .await?;
            Ok((StatusCode::CREATED, Json(PolicyStored { group, serial })).into_response())
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    role: Role,
    /// Who the token is for.
    #[schema(min_length = 1, max_length = 128, pattern = "\\S")]
    label: String,
}

#[derive(Serialize, utoipa::ToSchema)]
struct TokenCreated {
    token: String,
    role: Role,
}

#[utoipa::path(post, path = "/api/v1/admin/tokens", summary = "Make an API token with a role (shown once)", request_body = TokenRequest, responses((status = 201, body = TokenCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)), security(("token" = [])))]
async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let req: TokenRequest = parse(&body)?;
    if req.label.trim().is_empty() || req.label.len() > 128 {
        return Err(ApiError::bad("label must be 1–128 characters (who the token is for)"));
    }
    let token =
        secret::generate().map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let (hash, role, label) = (secret::hash(&token), req.role, req.label.clone());
    let store = state.store.clone();
    blocking(move || store.add_token(&hash, role, &label, now())).await?;
    admin_did(&state, &caller, "token_create", format!("role {} label {}", req.role.as_str(), req.label))
        .await?;
    Ok((StatusCode::CREATED, Json(TokenCreated { token, role: req.role })).into_response())
}

#[utoipa::path(get, path = "/api/v1/admin/log", summary = "What administrators did on this collector, in pages", params(paging::PageParams), responses((status = 200, body = Vec<crate::store::AdminAction>, headers(("x-next-after" = String, description = "cursor of the next page, if any"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)), security(("token" = [])))]
/// What administrators did here (auditors may read it too).
async fn admin_log(
    State(state): State<AppState>,
    _caller: Caller,
    Q(params): Q<paging::PageParams>,
) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let log = blocking(move || store.admin_log()).await?;
    // In the order written; actions of the same millisecond by their place.
    let mut same_ms = (i64::MIN, 0u32);
    let keyed = log
        .into_iter()
        .map(|a| {
            let ms = a.time.unix_millis();
            same_ms = if same_ms.0 == ms { (ms, same_ms.1 + 1) } else { (ms, 0) };
            (format!("{}\u{1}{}", paging::ordered(ms), paging::ordered(same_ms.1)), a)
        })
        .collect();
    paging::page(keyed, &paging::after_key(params))
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct EventParams {
    workstation: Option<String>,
    user: Option<String>,
    kind: Option<String>,
    /// Events at or after this time (RFC 3339).
    #[param(format = DateTime)]
    since: Option<String>,
    /// Events before this time (RFC 3339).
    #[param(format = DateTime)]
    until: Option<String>,
    /// Cursor: the `next` of the previous page.
    after: Option<i64>,
    /// Page size (default 1000).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct EventPage {
    events: Vec<EventOut>,
    /// Pass as `after` for the next page; absent on the last page.
    next: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct EventOut {
    id: i64,
    received: UtcMillis,
    #[serde(flatten)]
    record: AuditRecord,
}

fn time_param(name: &str, value: Option<&str>) -> Result<Option<UtcMillis>, ApiError> {
    value
        .map(|v| {
            UtcMillis::parse_rfc3339(v)
                .map_err(|e| ApiError::bad(format!("{name}: not an RFC 3339 time ({e})")))
        })
        .transpose()
}

#[utoipa::path(get, path = "/api/v1/events", summary = "Audit events, filtered and paged; JSON, CSV (Accept: text/csv) or a FHIR R4 Bundle (Accept: application/fhir+json)", params(EventParams), responses((status = 200, content((EventPage = "application/json"), (String = "text/csv"), (serde_json::Value = "application/fhir+json"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)), security(("token" = [])))]
async fn events(
    State(state): State<AppState>,
    _caller: Caller,
    headers: HeaderMap,
    Q(p): Q<EventParams>,
) -> Result<Response, ApiError> {
    let limit = p.limit.unwrap_or(1000);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad(format!("limit must be 1–{MAX_PAGE}")));
    }
    let query = EventQuery {
        since: time_param("since", p.since.as_deref())?,
        until: time_param("until", p.until.as_deref())?,
        workstation: p.workstation,
        user: p.user,
        kind: p.kind,
        after: p.after,
        limit,
    };
    let store = state.store.clone();
    let rows = blocking(move || store.events(&query)).await?;
    let next = if rows.len() == limit as usize { rows.last().map(|r| r.id) } else { None };
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if accept.contains("text/csv") {
        return csv_events(&rows, next);
    }
    if accept.contains("application/fhir+json") {
        let entries: Vec<&AuditEntry> = rows.iter().map(|r| &r.entry).collect();
        let mut response =
            ([(header::CONTENT_TYPE, "application/fhir+json")], Json(crate::fhir::bundle(&entries)))
                .into_response();
        if let Some(v) = next.and_then(|n| n.to_string().parse().ok()) {
            response.headers_mut().insert("x-next-after", v);
        }
        return Ok(response);
    }
    let events = rows
        .iter()
        .map(|r| EventOut { id: r.id, received: r.received, record: AuditRecord::from(&r.entry) })
        .collect();
    Ok(Json(EventPage { events, next }).into_response())
}

/// CSV for spreadsheets: a cell that would run as a formula is prefixed with `'`.
fn csv_events(rows: &[crate::store::StoredEvent], next: Option<i64>) -> Result<Response, ApiError> {
    let mut out = csv::Writer::from_writer(Vec::new());
    let fail = |e: csv::Error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    out.write_record(["id", "workstation", "seq", "time", "kind", "user", "os_account", "details", "hash"])
        .map_err(fail)?;
    for r in rows {
        let e = &r.entry;
        let details = serde_json::to_string(&e.details).unwrap_or_default();
        let cells = [
            r.id.to_string(),
            e.workstation.clone(),
            e.seq.to_string(),
            e.time.to_rfc3339(),
            e.kind.as_str().to_owned(),
            e.user.clone().unwrap_or_default(),
            e.os_account.clone().unwrap_or_default(),
            details,
            hex::encode(e.hash),
        ];
        out.write_record(cells.iter().map(|c| defuse(c))).map_err(fail)?;
    }
    let bytes =
        out.into_inner().map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut response = ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], bytes).into_response();
    if let Some(next) = next {
        if let Ok(v) = next.to_string().parse() {
            response.headers_mut().insert("x-next-after", v);
        }
    }
    Ok(response)
}

fn defuse(cell: &str) -> String {
    if cell.starts_with(['=', '+', '-', '@']) {
        format!("'{cell}")
    } else {
        cell.to_owned()
    }
}

#[utoipa::path(get, path = "/api/v1/reports/chain", summary = "Chain breaks, rewritten histories, truncated logs and refused enrollments, in pages", params(paging::PageParams), responses((status = 200, body = Vec<crate::store::Finding>, headers(("x-next-after" = String, description = "cursor of the next page, if any"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)), security(("token" = [])))]
async fn report_chain(
    State(state): State<AppState>,
    _caller: Caller,
    Q(params): Q<paging::PageParams>,
) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let findings = blocking(move || store.findings()).await?;
    let keyed = findings
        .into_iter()
        .map(|f| (format!("{}\u{1}{}\u{1}{}", f.workstation, paging::ordered(f.seq), f.kind), f))
        .collect();
    paging::page(keyed, &paging::after_key(params))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ConflictParams {
    /// Only this workstation's.
    workstation: Option<String>,
    /// Cursor: the `X-Next-After` of the previous page.
    after: Option<String>,
    /// Page size (default 1000).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
}

/// Two versions of one entry: what the collector stored first, and what came later
/// under the same seq.
#[derive(Serialize, utoipa::ToSchema)]
struct ConflictOut {
    workstation: String,
    seq: u64,
    stored: AuditRecord,
    received: AuditRecord,
    received_at: UtcMillis,
}

#[utoipa::path(get, path = "/api/v1/reports/conflicts", summary = "Entries received under a stored seq with another content: both versions, in full", params(ConflictParams), responses((status = 200, body = Vec<ConflictOut>, headers(("x-next-after" = String, description = "cursor of the next page, if any"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)), security(("token" = [])))]
async fn report_conflicts(
    State(state): State<AppState>,
    _caller: Caller,
    Q(params): Q<ConflictParams>,
) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let page_params = paging::after_key(paging::PageParams { after: params.after, limit: params.limit });
    let conflicts = blocking(move || store.conflicts(params.workstation.as_deref())).await?;
    let keyed = conflicts
        .into_iter()
        .map(|c| {
            let key = format!(
                "{}\u{1}{}\u{1}{}\u{1}{}",
                c.workstation,
                paging::ordered(c.seq),
                paging::ordered(c.received_at.unix_millis()),
                hex::encode(c.received.hash)
            );
            let out = ConflictOut {
                stored: AuditRecord::from(&c.stored),
                received: AuditRecord::from(&c.received),
                workstation: c.workstation,
                seq: c.seq,
                received_at: c.received_at,
            };
            (key, out)
        })
        .collect();
    paging::page(keyed, &page_params)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct SilentParams {
    #[param(maximum = 10000000)]
    minutes: u64,
    /// Cursor: the `X-Next-After` of the previous page.
    after: Option<String>,
    /// Page size (default 1000).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct WorkstationOut {
    id: String,
    hostname: String,
    group: String,
    agent_version: String,
    enrolled: UtcMillis,
    last_seen: Option<UtcMillis>,
    entries_received: u64,
    entries_reported: Option<u64>,
}

impl From<Workstation> for WorkstationOut {
    fn from(w: Workstation) -> Self {
        WorkstationOut {
            id: w.id,
            hostname: w.hostname,
            group: w.group,
            agent_version: w.agent_version,
            enrolled: w.enrolled,
            last_seen: w.last_seen,
            entries_received: w.contiguous_seq,
            entries_reported: w.reported_last_seq,
        }
    }
}

#[utoipa::path(get, path = "/api/v1/reports/silent", summary = "Workstations not heard from for N minutes", params(SilentParams), responses((status = 200, body = Vec<WorkstationOut>, headers(("x-next-after" = String, description = "cursor of the next page, if any"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)), security(("token" = [])))]
async fn report_silent(
    State(state): State<AppState>,
    _caller: Caller,
    Q(p): Q<SilentParams>,
) -> Result<Response, ApiError> {
    if p.minutes > 10_000_000 {
        return Err(ApiError::bad("minutes must be at most 10000000"));
    }
    let cutoff = UtcMillis::from_unix_millis(now().unix_millis().saturating_sub((p.minutes * 60_000) as i64));
    let store = state.store.clone();
    let silent: Vec<(String, WorkstationOut)> = blocking(move || store.workstations())
        .await?
        .into_iter()
        .filter(|w| w.last_seen.unwrap_or(w.enrolled) < cutoff)
        .map(|w| (w.id.clone(), WorkstationOut::from(w)))
        .collect();
    paging::page(silent, &paging::after_key(paging::PageParams { after: p.after, limit: p.limit }))
}

#[utoipa::path(get, path = "/api/v1/workstations", summary = "Enrolled workstations, in pages", params(paging::PageParams), responses((status = 200, body = Vec<WorkstationOut>, headers(("x-next-after" = String, description = "cursor of the next page, if any"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)), security(("token" = [])))]
async fn workstations(
    State(state): State<AppState>,
    _caller: Caller,
    Q(params): Q<paging::PageParams>,
) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let all: Vec<(String, WorkstationOut)> = blocking(move || store.workstations())
        .await?
        .into_iter()
        .map(|w| (w.id.clone(), WorkstationOut::from(w)))
        .collect();
    paging::page(all, &paging::after_key(params))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewUserRequest {
    #[schema(pattern = "^[A-Za-z0-9._@-]{1,64}$")]
    id: String,
    #[schema(min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001f]*\\S[^\\u0000-\\u001f]*$")]
    display_name: String,
    #[schema(min_length = 1, max_length = 128, pattern = "^[^\\u0000-\\u001f]*\\S[^\\u0000-\\u001f]*$")]
    role: String,
    /// Checked against the built-in PIN rules and stored only as Argon2id.
    #[schema(value_type = Option<String>, pattern = "^[0-9]{6,12}$")]
    pin: Option<SecretString>,
    /// Make a TOTP seed; the answer carries its `otpauth://` URI, once.
    #[serde(default)]
    totp: bool,
    /// Workstation groups whose directory holds the user; empty or left out: every group.
    #[serde(default)]
    #[schema(max_items = 64)]
    groups: Vec<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct UserCreated {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    otpauth_uri: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct UserOut {
    id: String,
    display_name: String,
    role: String,
    disabled: bool,
    has_pin: bool,
    has_totp: bool,
    updated: UtcMillis,
    /// Empty: every group.
    groups: Vec<String>,
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

#[utoipa::path(post, path = "/api/v1/admin/users", summary = "Add a user to the central directory", request_body = NewUserRequest, responses((status = 201, body = UserCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)), security(("token" = [])))]
async fn add_user(State(state): State<AppState>, caller: Caller, body: Bytes) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let req: NewUserRequest = parse(&body)?;
    check_name("id", &req.id)?;
    if req.id.len() > 64 {
        return Err(ApiError::bad("id must be at most 64 characters (what workstations accept)"));
    }
    let text_ok =
        |t: &str| !t.trim().is_empty() && t.chars().count() <= 128 && !t.chars().any(char::is_control);
    if !text_ok(&req.display_name) || !text_ok(&req.role) {
        return Err(ApiError::bad("display_name and role must be 1–128 printable characters"));
    }
    if req.groups.len() > 64 {
        return Err(ApiError::bad("at most 64 groups"));
    }
    for group in &req.groups {
        check_name("group", group)?;
    }
    let pin_hash = match &req.pin {
        Some(pin) => {
            unlock::check_pin_rules(pin, &PinPolicy::default())
                .map_err(|e| ApiError::bad(format!("PIN refused: {e}")))?;
            let mut salt = [0u8; 16];
            getrandom::getrandom(&mut salt).map_err(internal)?;
            let pin = pin.clone();
            let hash =
                tokio::task::spawn_blocking(move || unlock::hash_pin(&pin, &salt)).await.map_err(internal)?;
            Some(hash.map_err(internal)?.as_phc().to_owned())
        }
        None => None,
    };
    let (totp_sealed, otpauth_uri) = if req.totp {
        let mut bytes = zeroize::Zeroizing::new(vec![0u8; 20]);
        getrandom::getrandom(&mut bytes).map_err(internal)?;
        let seed = TotpSeed::new(bytes.to_vec()).map_err(internal)?;
        let uri = unlock::totp_uri(&wardlock_core::policy::TotpPolicy::default(), &seed, &req.id)
            .map_err(internal)?;
        (Some(state.data_key.seal(seed.expose(), req.id.as_bytes()).map_err(internal)?), Some(uri))
    } else {
        (None, None)
    };
    let record = UserRecord {
        id: req.id.clone(),
        display_name: req.display_name,
        role: req.role.clone(),
        disabled: false,
        pin_hash,
        totp_sealed,
        updated: now(),
        admin_grant: None,
        groups: req.groups.clone(),
    };
    let store = state.store.clone();
    if !blocking(move || store.put_user(&record, true)).await? {
        return Err(ApiError::new(StatusCode::CONFLICT, format!("user {:?} exists already", req.id)));
    }
    admin_did(&state, &caller, "user_add", format!("user {} role {}", req.id, req.role)).await?;
    Ok((StatusCode::CREATED, Json(UserCreated { id: req.id, otpauth_uri })).into_response())
}

#[utoipa::path(post, path = "/api/v1/admin/users/{id}/disable", summary = "Disable a user; workstations refuse them from their next sync", params(("id" = String, Path)), responses((status = 204, description = "disabled"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("token" = [])))]
async fn disable_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let store = state.store.clone();
    let lookup = id.clone();
    let Some(mut user) = blocking(move || store.user(&lookup)).await? else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no user {id:?} in the directory")));
    };
    user.disabled = true;
    user.updated = now();
    let store = state.store.clone();
    blocking(move || store.put_user(&user, false)).await?;
    admin_did(&state, &caller, "user_disable", format!("user {id}")).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(post, path = "/api/v1/admin/users/{id}/admin-grant", summary = "Store IT's signed grant of the admin role for a user (`wardlockctl user grant-admin`); workstations take the role only with it", params(("id" = String, Path)), request_body = wardlock_core::protocol::collector::AdminGrantRequest, responses((status = 204, description = "stored"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("token" = [])))]
async fn put_admin_grant(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let req: wardlock_core::protocol::collector::AdminGrantRequest = parse(&body)?;
    match wardlock_core::policy::AdminGrant::unverified_user(&req.grant) {
        Some(user) if user == id => {}
        Some(user) => return Err(ApiError::bad(format!("the grant is for {user:?}, not {id:?}"))),
        None => {
            return Err(ApiError::bad("not a signed admin grant (wardlockctl user grant-admin makes one)"))
        }
    }
    let (store, user) = (state.store.clone(), id.clone());
    if !blocking(move || store.set_admin_grant(&user, &req.grant, now())).await? {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no user {id:?} in the directory")));
    }
    admin_did(&state, &caller, "user_admin_grant", format!("user {id}")).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(get, path = "/api/v1/admin/users", summary = "The central directory (no secrets), in pages", params(paging::PageParams), responses((status = 200, body = Vec<UserOut>, headers(("x-next-after" = String, description = "cursor of the next page, if any"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)), security(("token" = [])))]
async fn list_users(
    State(state): State<AppState>,
    _caller: Caller,
    Q(params): Q<paging::PageParams>,
) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let users: Vec<(String, UserOut)> = blocking(move || store.users())
        .await?
        .into_iter()
        .map(|u| {
            let out = UserOut {
                has_pin: u.pin_hash.is_some(),
                has_totp: u.totp_sealed.is_some(),
                id: u.id.clone(),
                display_name: u.display_name,
                role: u.role,
                disabled: u.disabled,
                updated: u.updated,
                groups: u.groups,
            };
            (u.id, out)
        })
        .collect();
    paging::page(users, &paging::after_key(params))
}

#[utoipa::path(get, path = "/api/v1/directory", summary = "The directory for this workstation, TOTP seeds sealed to its transport key (ETag)", params(("If-None-Match" = Option<String>, Header)), responses((status = 200, body = Directory), (status = 304, description = "unchanged"), (status = 401, body = ErrorBody)), security(("node_key" = [])))]
/// The directory for one workstation: TOTP seeds opened with the collector's key and
/// sealed again to that workstation's transport key. ETag: the directory's version.
async fn directory(
    State(state): State<AppState>,
    Node(ws): Node,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    use sha2::{Digest, Sha256};
    let store = state.store.clone();
    let group = ws.group.clone();
    // Only the users who work in this workstation's group reach it.
    let users: Vec<UserRecord> =
        blocking(move || store.users()).await?.into_iter().filter(|u| u.works_in(&group)).collect();
    let mut digest = Sha256::new();
    for u in &users {
        digest.update(u.id.as_bytes());
        digest.update(u.updated.unix_millis().to_be_bytes());
        digest.update([u8::from(u.disabled)]);
    }
    digest.update(&ws.transport_key);
    let version = hex::encode(&digest.finalize()[..16]);
    let etag = format!("\"{version}\"");
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let json = |body: Arc<Vec<u8>>| {
        let headers = [(header::ETAG, etag.clone()), (header::CONTENT_TYPE, "application/json".to_owned())];
        (headers, body.as_ref().clone()).into_response()
    };
    if let Some(body) = state.snapshots.get(&ws.id, &version) {
        return Ok(json(body));
    }
    let mut out = Vec::with_capacity(users.len());
    let mut rng = rand_core::UnwrapErr(rand_core::OsRng);
    for u in users {
        let totp_sealed = match &u.totp_sealed {
            Some(sealed) => {
                let seed = state.data_key.open(sealed, u.id.as_bytes()).map_err(|e| {
                    eprintln!("wardlock-collector: user {:?}: {e}", u.id);
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("the TOTP secret of user {:?} does not open; see the collector's log", u.id),
                    )
                })?;
                let for_ws =
                    wardlock_core::transport::seal(&ws.transport_key, &seed, u.id.as_bytes(), &mut rng)
                        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
                Some(B64.encode(for_ws))
            }
            None => None,
        };
        let pin_sealed = match &u.pin_hash {
            Some(phc) => {
                let context = wardlock_core::protocol::collector::pin_hash_context(&u.id);
                let sealed =
                    wardlock_core::transport::seal(&ws.transport_key, phc.as_bytes(), &context, &mut rng)
                        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
                Some(B64.encode(sealed))
            }
            None => None,
        };
        out.push(DirectoryUser {
            id: u.id,
            display_name: u.display_name,
            role: u.role,
            disabled: u.disabled,
            pin_sealed,
            totp_sealed,
            admin_grant: u.admin_grant,
        });
    }
    let body = Arc::new(
        serde_json::to_vec(&Directory { version: version.clone(), users: out })
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
    );
    state.snapshots.put(&ws.id, &version, body.clone());
    Ok(json(body))
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct SinceParams {
    /// RFC 3339; default: 30 days ago.
    #[param(format = DateTime)]
    since: Option<String>,
    /// Cursor: the `X-Next-After` of the previous page.
    after: Option<String>,
    /// Page size (default 1000).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
}

fn since_or_default(p: &SinceParams, days: i64) -> Result<UtcMillis, ApiError> {
    Ok(time_param("since", p.since.as_deref())?
        .unwrap_or_else(|| UtcMillis::from_unix_millis(now().unix_millis() - days * 24 * 3600 * 1000)))
}

#[utoipa::path(get, path = "/api/v1/reports/failed", summary = "Failed attempts and lockouts per user", params(SinceParams), responses((status = 200, body = Vec<crate::store::FailureCount>, headers(("x-next-after" = String, description = "cursor of the next page, if any"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)), security(("token" = [])))]
/// Failed attempts and lockouts per user and workstation.
async fn report_failed(
    State(state): State<AppState>,
    _caller: Caller,
    Q(p): Q<SinceParams>,
) -> Result<Response, ApiError> {
    let since = since_or_default(&p, 30)?;
    let store = state.store.clone();
    let keyed = blocking(move || store.failures_by_user(since))
        .await?
        .into_iter()
        .map(|f| (format!("{}\u{1}{}", f.user, f.workstation), f))
        .collect();
    paging::page(keyed, &paging::after_key(paging::PageParams { after: p.after, limit: p.limit }))
}

#[utoipa::path(get, path = "/api/v1/reports/emergency", summary = "Break-glass accesses with their reasons", params(SinceParams), responses((status = 200, body = Vec<EventOut>, headers(("x-next-after" = String, description = "cursor of the next page, if any"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)), security(("token" = [])))]
/// Every break-glass access, with its reason.
async fn report_emergency(
    State(state): State<AppState>,
    _caller: Caller,
    Q(p): Q<SinceParams>,
) -> Result<Response, ApiError> {
    let since = since_or_default(&p, 30)?;
    let query = EventQuery {
        kind: Some("emergency_access".into()),
        since: Some(since),
        limit: MAX_PAGE,
        ..EventQuery::default()
    };
    let store = state.store.clone();
    let rows = blocking(move || store.events(&query)).await?;
    let out: Vec<(String, EventOut)> = rows
        .iter()
        .map(|r| {
            (
                paging::ordered(r.id),
                EventOut { id: r.id, received: r.received, record: AuditRecord::from(&r.entry) },
            )
        })
        .collect();
    paging::page(out, &paging::after_key(paging::PageParams { after: p.after, limit: p.limit }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct StaleParams {
    /// No unlock for this many days (default 90)…
    #[param(minimum = 0, maximum = 36500)]
    days: Option<u32>,
    /// …or none since this time (RFC 3339).
    #[param(format = DateTime)]
    since: Option<String>,
    /// Cursor: the `X-Next-After` of the previous page.
    after: Option<String>,
    /// Page size (default 1000).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct StaleUser {
    id: String,
    display_name: String,
    role: String,
    last_unlock: Option<UtcMillis>,
}

#[utoipa::path(get, path = "/api/v1/reports/stale", summary = "Directory users with no unlock for N days", params(StaleParams), responses((status = 200, body = Vec<StaleUser>, headers(("x-next-after" = String, description = "cursor of the next page, if any"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)), security(("token" = [])))]
/// Directory users who have not unlocked anywhere for `days` (orphaned accounts).
async fn report_stale(
    State(state): State<AppState>,
    _caller: Caller,
    Q(p): Q<StaleParams>,
) -> Result<Response, ApiError> {
    if p.days.is_some_and(|d| d > 36_500) {
        return Err(ApiError::bad("days must be at most 36500"));
    }
    let cutoff = match time_param("since", p.since.as_deref())? {
        Some(t) => t,
        None => UtcMillis::from_unix_millis(
            now().unix_millis() - i64::from(p.days.unwrap_or(90)) * 24 * 3600 * 1000,
        ),
    };
    let store = state.store.clone();
    let (users, last) = blocking(move || Ok((store.users()?, store.last_unlocks()?))).await?;
    let last: std::collections::HashMap<String, UtcMillis> = last.into_iter().collect();
    let stale: Vec<(String, StaleUser)> = users
        .into_iter()
        .filter(|u| !u.disabled)
        .filter(|u| last.get(&u.id).is_none_or(|t| *t < cutoff) && u.updated < cutoff)
        .map(|u| {
            let user = StaleUser {
                last_unlock: last.get(&u.id).copied(),
                id: u.id.clone(),
                display_name: u.display_name,
                role: u.role,
            };
            (u.id, user)
        })
        .collect();
    paging::page(stale, &paging::after_key(paging::PageParams { after: p.after, limit: p.limit }))
}

/// The OpenAPI document, generated from the handlers and types above.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    info(title = "Wardlock collector", description = "Workstations enroll, push audit logs and pull signed policies and the directory; compliance queries events and reports."),
    paths(
        healthz, metrics, enrollment::enroll, audit, policy, heartbeat, directory, put_policy,
        enrollment::create_enroll_secret, enrollment::list_enroll_secrets, enrollment::revoke_enroll_secret,
        enrollment::approve_reenroll, enrollment::revoke_workstation, create_token,
        admin_log, add_user, list_users, disable_user, put_admin_grant, events, report_chain, report_conflicts, report_silent, report_failed,
        report_emergency, report_stale, workstations
    ),
    components(schemas(ErrorBody, AuditKind, UtcMillis, crate::store::Role)),
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
        assert_eq!(documented, 27);
    }
}
