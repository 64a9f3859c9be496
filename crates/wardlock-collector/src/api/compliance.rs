//! The compliance side: events (JSON, CSV, FHIR) and reports, every list in pages.

use wardlock_core::protocol::collector::{ConflictOut, EventOut, EventPage, StaleUser, WorkstationOut};

use crate::store::{Conflict, ConflictKey, FailureCount, FailureKey, Finding, FindingKey};

use super::*;

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct EventParams {
    workstation: Option<String>,
    user: Option<String>,
    kind: Option<String>,
    /// Events at or after this time (RFC 3339).
    #[param(format = DateTime)]
    since: Option<String>,
    /// Events before this time (RFC 3339).
    #[param(format = DateTime)]
    until: Option<String>,
    /// Events the collector received at or after this time (RFC 3339): unlike an entry's
    /// own time, no workstation can set it.
    #[param(format = DateTime)]
    received_since: Option<String>,
    /// Events the collector received before this time (RFC 3339).
    #[param(format = DateTime)]
    received_until: Option<String>,
    /// Cursor: the `next` of the previous page.
    after: Option<i64>,
    /// Page size (default 1000).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
}

fn time_param(name: &str, value: Option<&str>) -> Result<Option<UtcMillis>, ApiError> {
    value
        .map(|v| {
            UtcMillis::parse_rfc3339(v)
                .map_err(|e| ApiError::bad(format!("{name}: not an RFC 3339 time ({e})")))
        })
        .transpose()
}

#[utoipa::path(get, path = "/api/v1/events", summary = "Audit events, filtered and paged; JSON, CSV (Accept: text/csv) or a FHIR R4 Bundle (Accept: application/fhir+json)", params(EventParams), responses((status = 200, content((EventPage = "application/json"), (String = "text/csv"), (serde_json::Value = "application/fhir+json"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)), security(("token" = []), ("session" = [])))]
pub(super) async fn events(
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
        received_since: time_param("received_since", p.received_since.as_deref())?,
        received_until: time_param("received_until", p.received_until.as_deref())?,
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

/// CSV for spreadsheets: a cell that would run as a formula is prefixed with `'`
/// (`wardlock_core::audit::spreadsheet_safe`).
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
        out.write_record(cells.iter().map(|c| wardlock_core::audit::spreadsheet_safe(c).into_owned()))
            .map_err(fail)?;
    }
    let bytes = out.into_inner().map_err(internal)?;
    let mut response = ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], bytes).into_response();
    if let Some(next) = next {
        if let Ok(v) = next.to_string().parse() {
            response.headers_mut().insert("x-next-after", v);
        }
    }
    Ok(response)
}

#[utoipa::path(get, path = "/api/v1/reports/chain", summary = "Chain breaks, rewritten histories, truncated logs and refused enrollments, in pages", params(paging::PageParams), responses((status = 200, body = Vec<crate::store::Finding>, headers(("x-next-after" = String, description = "cursor of the next page, if any"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)), security(("token" = []), ("session" = [])))]
pub(super) async fn report_chain(
    State(state): State<AppState>,
    _caller: Caller,
    Q(params): Q<paging::PageParams>,
) -> Result<Response, ApiError> {
    let (after, limit) = paging::key_after::<FindingKey>(&params)?;
    let store = state.store.clone();
    let findings = blocking(move || store.findings(after.as_ref(), limit + 1)).await?;
    let key = |f: &Finding| (f.found.unix_millis(), f.workstation.clone(), f.seq, f.kind.clone());
    Ok(paging::keyed(findings, limit, key, |f| f))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ConflictParams {
    /// Only this workstation's.
    workstation: Option<String>,
    /// Cursor: the `X-Next-After` of the previous page.
    after: Option<String>,
    /// Page size (default 1000).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/reports/conflicts", summary = "Entries received under a stored seq with another content: both versions, in full", params(ConflictParams), responses((status = 200, body = Vec<ConflictOut>, headers(("x-next-after" = String, description = "cursor of the next page, if any"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)), security(("token" = []), ("session" = [])))]
pub(super) async fn report_conflicts(
    State(state): State<AppState>,
    _caller: Caller,
    Q(params): Q<ConflictParams>,
) -> Result<Response, ApiError> {
    let page = paging::PageParams { after: params.after, limit: params.limit };
    let (after, limit) = paging::key_after::<ConflictKey>(&page)?;
    let store = state.store.clone();
    let conflicts =
        blocking(move || store.conflicts(params.workstation.as_deref(), after.as_ref(), limit + 1)).await?;
    let key =
        |c: &Conflict| (c.workstation.clone(), c.seq, c.received_at.unix_millis(), c.received.hash.to_vec());
    Ok(paging::keyed(conflicts, limit, key, |c| ConflictOut {
        stored: AuditRecord::from(&c.stored),
        received: AuditRecord::from(&c.received),
        workstation: c.workstation,
        seq: c.seq,
        received_at: c.received_at,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct SilentParams {
    #[param(maximum = 10000000)]
    minutes: u64,
    /// Cursor: the `X-Next-After` of the previous page.
    after: Option<String>,
    /// Page size (default 1000).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
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

#[utoipa::path(get, path = "/api/v1/reports/silent", summary = "Workstations not heard from for N minutes", params(SilentParams), responses((status = 200, body = Vec<WorkstationOut>, headers(("x-next-after" = String, description = "cursor of the next page, if any"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)), security(("token" = []), ("session" = [])))]
pub(super) async fn report_silent(
    State(state): State<AppState>,
    _caller: Caller,
    Q(p): Q<SilentParams>,
) -> Result<Response, ApiError> {
    if p.minutes > 10_000_000 {
        return Err(ApiError::bad("minutes must be at most 10000000"));
    }
    let cutoff = UtcMillis::from_unix_millis(now().unix_millis().saturating_sub((p.minutes * 60_000) as i64));
    workstation_page(&state, Some(cutoff), &paging::PageParams { after: p.after, limit: p.limit }).await
}

#[utoipa::path(get, path = "/api/v1/workstations", summary = "Enrolled workstations, in pages", params(paging::PageParams), responses((status = 200, body = Vec<WorkstationOut>, headers(("x-next-after" = String, description = "cursor of the next page, if any"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)), security(("token" = []), ("session" = [])))]
pub(super) async fn workstations(
    State(state): State<AppState>,
    _caller: Caller,
    Q(params): Q<paging::PageParams>,
) -> Result<Response, ApiError> {
    workstation_page(&state, None, &params).await
}

async fn workstation_page(
    state: &AppState,
    silent_before: Option<UtcMillis>,
    params: &paging::PageParams,
) -> Result<Response, ApiError> {
    let (after, limit) = paging::key_after::<String>(params)?;
    let store = state.store.clone();
    let page = blocking(move || store.workstations(silent_before, after.as_deref(), limit + 1)).await?;
    Ok(paging::keyed(page, limit, |w: &Workstation| w.id.clone(), WorkstationOut::from))
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct SinceParams {
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

#[utoipa::path(get, path = "/api/v1/reports/failed", summary = "Failed attempts and lockouts per user", params(SinceParams), responses((status = 200, body = Vec<crate::store::FailureCount>, headers(("x-next-after" = String, description = "cursor of the next page, if any"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)), security(("token" = []), ("session" = [])))]
/// Failed attempts and lockouts per user and workstation.
pub(super) async fn report_failed(
    State(state): State<AppState>,
    _caller: Caller,
    Q(p): Q<SinceParams>,
) -> Result<Response, ApiError> {
    let since = since_or_default(&p, 30)?;
    let (after, limit) =
        paging::key_after::<FailureKey>(&paging::PageParams { after: p.after.clone(), limit: p.limit })?;
    let store = state.store.clone();
    let page = blocking(move || store.failures_by_user(since, after.as_ref(), limit + 1)).await?;
    let key = |f: &FailureCount| (f.failed_attempts, f.user.clone(), f.workstation.clone());
    Ok(paging::keyed(page, limit, key, |f| f))
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct EmergencyParams {
    /// RFC 3339; default: 30 days ago.
    #[param(format = DateTime)]
    since: Option<String>,
    /// What `since` is compared with: `time` (default), the entry's own time, or
    /// `received`, when the collector received it (which no workstation can set).
    by: Option<String>,
    /// Cursor: the `X-Next-After` of the previous page.
    after: Option<String>,
    /// Page size (default 1000).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/reports/emergency", summary = "Break-glass accesses with their reasons, in arrival order, paged in the database", params(EmergencyParams), responses((status = 200, body = Vec<EventOut>, headers(("x-next-after" = String, description = "cursor of the next page, if any"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)), security(("token" = []), ("session" = [])))]
/// Every break-glass access, with its reason. Paged by arrival in the database: no
/// number of entries (dated in the future, say) can push a later one off every page.
pub(super) async fn report_emergency(
    State(state): State<AppState>,
    _caller: Caller,
    Q(p): Q<EmergencyParams>,
) -> Result<Response, ApiError> {
    let since = time_param("since", p.since.as_deref())?
        .unwrap_or_else(|| UtcMillis::from_unix_millis(now().unix_millis() - 30 * 24 * 3600 * 1000));
    let by_received = match p.by.as_deref() {
        None | Some("time") => false,
        Some("received") => true,
        Some(other) => {
            return Err(ApiError::bad(format!("by: {other:?} is neither \"time\" nor \"received\"")))
        }
    };
    let (after, limit) = paging::id_after(&paging::PageParams { after: p.after, limit: p.limit })?;
    let query = EventQuery {
        kind: Some(AuditKind::EmergencyAccess.as_str().into()),
        since: (!by_received).then_some(since),
        received_since: by_received.then_some(since),
        after,
        limit,
        ..EventQuery::default()
    };
    let store = state.store.clone();
    let rows = blocking(move || store.events(&query)).await?;
    let last = rows.last().map(|r| r.id);
    let out: Vec<EventOut> = rows
        .iter()
        .map(|r| EventOut { id: r.id, received: r.received, record: AuditRecord::from(&r.entry) })
        .collect();
    Ok(paging::by_id(out, last, limit))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct StaleParams {
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

#[utoipa::path(get, path = "/api/v1/reports/stale", summary = "Directory users who have not used their account for N days (no unlock, hold, break-glass, sign-out or approval)", params(StaleParams), responses((status = 200, body = Vec<StaleUser>, headers(("x-next-after" = String, description = "cursor of the next page, if any"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)), security(("token" = []), ("session" = [])))]
/// Directory users who have not used their account anywhere for `days` (orphaned
/// accounts): no kind of `AuditKind::ACCOUNT_USED`.
pub(super) async fn report_stale(
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
    let (after, limit) = paging::key_after::<String>(&paging::PageParams { after: p.after, limit: p.limit })?;
    let store = state.store.clone();
    let page = blocking(move || store.stale_users(cutoff, after.as_deref(), limit + 1)).await?;
    Ok(paging::keyed(
        page,
        limit,
        |(u, _)| u.id.clone(),
        |(u, last)| StaleUser { last_unlock: last, id: u.id, display_name: u.display_name, role: u.role },
    ))
}
