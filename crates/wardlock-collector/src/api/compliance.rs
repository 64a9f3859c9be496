//! The compliance side: events (JSON, CSV, FHIR) and reports, every list in pages.

use wardlock_core::protocol::collector::{
    Charts, ConflictOut, EmergencyOut, EmergencyReview, EmergencyReviewRequest, EventOut, EventPage,
    FleetWorkstation, StaleUser, WorkstationOut,
};

use crate::store::{Conflict, ConflictKey, FailureCount, FailureKey, Finding, FindingKey};

use super::*;

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct EventParams {
    workstation: Option<String>,
    user: Option<String>,
    /// An audit kind, or several separated by commas.
    kind: Option<String>,
    /// Only the workstations of this group.
    group: Option<String>,
    /// `failure` (what went wrong or was refused) or `success` (everything else).
    outcome: Option<String>,
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
    caller: Caller,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Q(p): Q<EventParams>,
) -> Result<Response, ApiError> {
    let query = event_query(p)?;
    let limit = query.limit;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let export = [("text/csv", "csv"), ("application/fhir+json", "fhir")]
        .into_iter()
        .find_map(|(media, name)| accept.contains(media).then_some(name));
    let first_page = query.after.is_none();
    let store = state.store.clone();
    let rows = blocking(move || store.events(&query)).await?;
    // An export leaves the collector with what it holds: who took which, on record (once
    // per export, at its first page).
    if let (Some(format), true) = (export, first_page) {
        let filters = uri.query().unwrap_or_default().to_owned();
        let log = admin_action(&caller, "events_export", format!("{format}, filters [{filters}]"));
        let store = state.store.clone();
        blocking(move || store.log_admin(&log)).await?;
    }
    let next = if rows.len() == limit as usize { rows.last().map(|r| r.id) } else { None };
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

/// The store's query for the events' filters.
fn event_query(p: EventParams) -> Result<EventQuery, ApiError> {
    let limit = p.limit.unwrap_or(1000);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad(format!("limit must be 1–{MAX_PAGE}")));
    }
    let failures = match p.outcome.as_deref() {
        None | Some("") => None,
        Some("failure") => Some(true),
        Some("success") => Some(false),
        Some(other) => {
            return Err(ApiError::bad(format!("outcome: {other:?} is neither \"failure\" nor \"success\"")))
        }
    };
    // Several kinds, comma-separated (the escalations report asks for all of its own).
    let (kind, kinds) = match p.kind {
        Some(list) if list.contains(',') => {
            let kinds: Vec<String> =
                list.split(',').map(|k| k.trim().to_owned()).filter(|k| !k.is_empty()).collect();
            if kinds.len() > 64 {
                return Err(ApiError::bad("kind: at most 64 kinds"));
            }
            (None, kinds)
        }
        kind => (kind, Vec::new()),
    };
    let query = EventQuery {
        kind,
        kinds,
        group: p.group.filter(|g| !g.is_empty()),
        failures,
        since: time_param("since", p.since.as_deref())?,
        until: time_param("until", p.until.as_deref())?,
        received_since: time_param("received_since", p.received_since.as_deref())?,
        received_until: time_param("received_until", p.received_until.as_deref())?,
        workstation: p.workstation,
        user: p.user,
        after: p.after,
        limit,
    };
    for (field, value) in
        [("workstation", &query.workstation), ("user", &query.user), ("group", &query.group)]
    {
        if let Some(value) = value {
            check_name(field, value)?;
        }
    }
    Ok(query)
}

/// How long one live tail runs; the browser's `EventSource` connects again, and with
/// that its session is checked again (a signed-out session gets no more events).
const TAIL_LIFETIME: std::time::Duration = std::time::Duration::from_secs(5 * 60);
/// How often a live tail reads new entries at most.
const TAIL_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

#[utoipa::path(get, path = "/api/v1/events/stream", summary = "A live tail: server-sent events (`event: audit`, `id`: the cursor), each an EventOut as filtered, from `after` (default: from now)", params(EventParams), responses((status = 200, description = "text/event-stream of EventOut", content_type = "text/event-stream"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)), security(("token" = []), ("session" = [])))]
pub(super) async fn events_stream(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Q(p): Q<EventParams>,
) -> Result<Response, ApiError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let session = caller.session;
    let mut query = event_query(p)?;
    query.limit = 500;
    // Where the browser left off (it sends the last id it saw when it connects again).
    let resumed = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    if let Some(id) = resumed.or(query.after) {
        query.after = Some(id);
    } else {
        let store = state.store.clone();
        query.after = Some(blocking(move || store.last_event_id()).await?);
    }
    let mut changed = state.tail.subscribe();
    changed.borrow_and_update();
    let ends = tokio::time::Instant::now() + TAIL_LIFETIME;
    let start = (query, state.store.clone(), changed);
    let stream = futures_util::stream::unfold(start, move |(mut query, store, mut changed)| async move {
        loop {
            // A console session that ended (signed out, timed out, its account disabled)
            // gets nothing more, here as on every other request.
            if let Some(hash) = session {
                let s = store.clone();
                let live = tokio::task::spawn_blocking(move || {
                    super::console::session_live(s.as_ref(), &hash, now())
                });
                if !live.await.ok()?.ok()? {
                    return None;
                }
            }
            let (q, s) = (query.clone(), store.clone());
            let rows = tokio::task::spawn_blocking(move || s.events(&q)).await.ok()?.ok()?;
            if let Some(last) = rows.last() {
                query.after = Some(last.id);
                let events: Vec<Result<Event, std::convert::Infallible>> = rows
                    .iter()
                    .map(|r| {
                        let out =
                            EventOut { id: r.id, received: r.received, record: AuditRecord::from(&r.entry) };
                        Ok(Event::default()
                            .event("audit")
                            .id(r.id.to_string())
                            .json_data(out)
                            .unwrap_or_default())
                    })
                    .collect();
                return Some((futures_util::stream::iter(events), (query, store, changed)));
            }
            // Nothing new: wait for the next stored batch, until the tail's time is up.
            tokio::select! {
                r = changed.changed() => r.ok()?,
                _ = tokio::time::sleep_until(ends) => return None,
            }
            // A busy fleet stores many batches a second: a tail reads at most once a second.
            tokio::time::sleep(TAIL_EVERY).await;
        }
    });
    use futures_util::StreamExt as _;
    Ok(Sse::new(stream.flatten()).keep_alive(KeepAlive::default()).into_response())
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

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct FleetParams {
    /// Only this workstation group.
    group: Option<String>,
    /// Cursor: the `X-Next-After` of the previous page.
    after: Option<String>,
    /// Page size (default 1000).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/fleet", summary = "Every workstation with its state now (silent, unguarded, logged off, warning, active, locked), backlog, policy serial against its group's and findings; silent and unguarded first", params(FleetParams), responses((status = 200, body = Vec<FleetWorkstation>, headers(("x-next-after" = String, description = "cursor of the next page, if any"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)), security(("token" = []), ("session" = [])))]
pub(super) async fn fleet(
    State(state): State<AppState>,
    _caller: Caller,
    Q(p): Q<FleetParams>,
) -> Result<Response, ApiError> {
    if let Some(group) = &p.group {
        check_name("group", group)?;
    }
    let (after, limit) =
        paging::key_after::<crate::store::FleetKey>(&paging::PageParams { after: p.after, limit: p.limit })?;
    let silent_before = UtcMillis::from_unix_millis(
        now().unix_millis().saturating_sub(i64::try_from(state.silent_after.as_millis()).unwrap_or(i64::MAX)),
    );
    let store = state.store.clone();
    let page =
        blocking(move || store.fleet(p.group.as_deref(), silent_before, after.as_ref(), limit + 1)).await?;
    Ok(paging::keyed(page, limit, |(key, _)| key.clone(), |(_, ws)| ws))
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

#[utoipa::path(get, path = "/api/v1/reports/emergency", summary = "Break-glass accesses with their reasons, in arrival order, paged in the database", params(EmergencyParams), responses((status = 200, body = Vec<EmergencyOut>, headers(("x-next-after" = String, description = "cursor of the next page, if any"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)), security(("token" = []), ("session" = [])))]
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
    let (rows, reviews) = blocking(move || {
        let rows = store.events(&query)?;
        let keys: Vec<(String, u64)> =
            rows.iter().map(|r| (r.entry.workstation.clone(), r.entry.seq)).collect();
        Ok((rows, store.emergency_reviews(&keys)?))
    })
    .await?;
    let last = rows.last().map(|r| r.id);
    let out: Vec<EmergencyOut> = rows
        .iter()
        .map(|r| {
            let review = reviews
                .iter()
                .find(|(ws, seq, _)| *ws == r.entry.workstation && *seq == r.entry.seq)
                .map(|(_, _, review)| review.clone());
            EmergencyOut {
                event: EventOut { id: r.id, received: r.received, record: AuditRecord::from(&r.entry) },
                review,
            }
        })
        .collect();
    Ok(paging::by_id(out, last, limit))
}

#[utoipa::path(post, path = "/api/v1/reports/emergency/{workstation}/{seq}/review", summary = "Mark one break-glass access reviewed, with a note (an auditor's or an admin's; kept once, logged)", params(("workstation" = String, Path), ("seq" = u64, Path)), request_body = EmergencyReviewRequest, responses((status = 201, body = EmergencyReview), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), security(("token" = []), ("session" = [])))]
pub(super) async fn review_emergency(
    State(state): State<AppState>,
    caller: Caller,
    Path((workstation, seq)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let seq: u64 = seq.parse().map_err(|_| ApiError::bad(format!("{seq:?} is not a sequence number")))?;
    let req: EmergencyReviewRequest = parse(&body)?;
    let note = req.note.trim();
    if note.is_empty() || note.chars().count() > 2000 {
        return Err(ApiError::bad("note must be 1–2000 characters: what the review found"));
    }
    let review = EmergencyReview { reviewer: caller.label.clone(), note: note.to_owned(), reviewed: now() };
    let log = admin_action(&caller, "emergency_reviewed", format!("{workstation} #{seq}: {note}"));
    let store = state.store.clone();
    let (w, r) = (workstation.clone(), review.clone());
    let kept = tokio::task::spawn_blocking(move || store.review_emergency(&w, seq, &r, &log))
        .await
        .map_err(internal)?;
    match kept {
        Ok(None) => Ok((StatusCode::CREATED, Json(review)).into_response()),
        Ok(Some(earlier)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "already reviewed by {} at {}; a review is never replaced",
                earlier.reviewer,
                earlier.reviewed.to_rfc3339()
            ),
        )),
        Err(crate::store::StoreError::Conflict(why)) => Err(ApiError::new(StatusCode::NOT_FOUND, why)),
        Err(e) => Err(e.into()),
    }
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

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ChartParams {
    /// Entries dated at or after this time (RFC 3339); default: 7 days before `until`.
    #[param(format = DateTime)]
    since: Option<String>,
    /// Entries dated before this time (RFC 3339); default: now.
    #[param(format = DateTime)]
    until: Option<String>,
    /// Only this workstation group.
    group: Option<String>,
}

/// The longest span one chart request covers.
const MAX_CHART_DAYS: i64 = 92;

#[utoipa::path(get, path = "/api/v1/charts", summary = "What the console's charts draw: locks and unlocks per group and hour, idle locks by lateness past the timeout, unattended minutes per workstation and day, break-glass accesses per week", params(ChartParams), responses((status = 200, body = Charts), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)), security(("token" = []), ("session" = [])))]
pub(super) async fn charts(
    State(state): State<AppState>,
    _caller: Caller,
    Q(p): Q<ChartParams>,
) -> Result<Response, ApiError> {
    const DAY: i64 = 24 * 3600 * 1000;
    let until = time_param("until", p.until.as_deref())?.unwrap_or_else(now);
    let since = time_param("since", p.since.as_deref())?
        .unwrap_or_else(|| UtcMillis::from_unix_millis(until.unix_millis() - 7 * DAY));
    if since >= until {
        return Err(ApiError::bad("since must be before until"));
    }
    if until.unix_millis() - since.unix_millis() > MAX_CHART_DAYS * DAY {
        return Err(ApiError::bad(format!("a chart covers at most {MAX_CHART_DAYS} days")));
    }
    let group = p.group.filter(|g| !g.is_empty());
    if let Some(group) = &group {
        check_name("group", group)?;
    }
    let store = state.store.clone();
    let charts = blocking(move || store.charts(since, until, group.as_deref())).await?;
    Ok(Json(charts).into_response())
}
