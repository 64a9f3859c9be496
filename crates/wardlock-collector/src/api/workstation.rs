//! The workstations' side: audit batches in (within their quota), the signed policy,
//! heartbeats, and the directory sealed for each.

use super::*;

#[utoipa::path(post, path = "/api/v1/audit", summary = "Push a batch of audit entries (idempotent by workstation and seq)", request_body = AuditBatch, responses((status = 200, body = wardlock_core::protocol::collector::AuditAck), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, description = "over this workstation's quota; `Retry-After` says when to send again", body = ErrorBody)), security(("node_key" = [])))]
pub(super) async fn audit(
    State(state): State<AppState>,
    Node(ws): Node,
    body: Bytes,
) -> Result<Response, ApiError> {
    let batch: AuditBatch = parse(&body)?;
    is_workstation(&ws, &batch.workstation_id)?;
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
        // Names with control characters would forge lines in logs, CSV and syslog.
        for (field, value) in [("user", &record.user), ("os_account", &record.os_account)] {
            if value.as_deref().is_some_and(|v| v.chars().any(char::is_control)) {
                return Err(ApiError::bad(format!(
                    "entry {}: {field} contains control characters",
                    record.seq
                )));
            }
        }
        entries.push(Received::new(AuditEntry::try_from(record).map_err(|e| ApiError::bad(e.to_string()))?));
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
    let used = used_totp_steps(&entries, now());
    let store = state.store.clone();
    let id = ws.id.clone();
    let ingest = blocking(move || {
        let ingest = store.ingest(&id, entries, now())?;
        if !used.is_empty() {
            store.note_totp_steps(&used, now())?;
        }
        Ok(ingest)
    })
    .await?;
    let m = &state.metrics;
    m.batches.fetch_add(1, Ordering::Relaxed);
    m.entries_stored.fetch_add(ingest.stored, Ordering::Relaxed);
    m.entries_duplicate.fetch_add(ingest.duplicates, Ordering::Relaxed);
    m.chain_findings.fetch_add(ingest.findings, Ordering::Relaxed);
    if ingest.stored > 0 {
        state.stored.notify_one();
        state.tail.send_modify(|batches| *batches = batches.wrapping_add(1));
    }
    if ingest.findings > 0 {
        tracing::warn!(
            event = "chain_findings",
            workstation = ws.id,
            findings = ingest.findings,
            "workstation {:?}: {} chain problem(s) flagged",
            ws.id,
            ingest.findings
        );
    }
    Ok(Json(ingest.ack).into_response())
}

#[utoipa::path(get, path = "/api/v1/policy", summary = "The signed policy of this workstation's group (ETag; 304 when unchanged)", params(("If-None-Match" = Option<String>, Header, description = "ETag of the policy held")), responses((status = 200, body = SignedPolicy), (status = 304, description = "unchanged"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)), security(("node_key" = [])))]
pub(super) async fn policy(
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

/// How long a TOTP step used somewhere is passed on to the other workstations: longer
/// than any code stays valid (a step of at most 2 minutes, two steps of skew).
const USED_TOTP_STEPS_FOR: std::time::Duration = std::time::Duration::from_secs(10 * 60);

#[utoipa::path(post, path = "/api/v1/heartbeat", summary = "A workstation says it is alive and how long its log is; the answer lists TOTP steps used lately at any workstation by users of its group", request_body = Heartbeat, responses((status = 200, body = wardlock_core::protocol::collector::HeartbeatAck), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)), security(("node_key" = [])))]
pub(super) async fn heartbeat(
    State(state): State<AppState>,
    Node(ws): Node,
    body: Bytes,
) -> Result<Json<wardlock_core::protocol::collector::HeartbeatAck>, ApiError> {
    use wardlock_core::protocol::collector::{HeartbeatAck, UsedTotpStep};
    let beat: Heartbeat = parse(&body)?;
    is_workstation(&ws, &beat.workstation_id)?;
    let store = state.store.clone();
    let used = blocking(move || {
        let at = now();
        store.heartbeat(&ws.id, &beat, at)?;
        let since = UtcMillis::from_unix_millis(at.unix_millis() - USED_TOTP_STEPS_FOR.as_millis() as i64);
        let mut used = Vec::new();
        for (user, at) in store.recent_totp_steps(since)? {
            // Only users who work in this workstation's group: others are none of its business.
            if store.user(&user)?.is_some_and(|u| u.works_in(&ws.group)) {
                used.push(UsedTotpStep { user, at });
            }
        }
        Ok(used)
    })
    .await?;
    Ok(Json(HeartbeatAck { used_totp_steps: used }))
}

/// TOTP steps the batch says were used (`totp_step_at` on a grant), within
/// [`USED_TOTP_STEPS_FOR`] of now. A workstation's word: a rogue one can at most make a
/// user's codes of the next minute or so useless elsewhere (workstations take no step
/// beyond what their clock allows now), never lock their codes out for long.
fn used_totp_steps(entries: &[Received], now: UtcMillis) -> Vec<(String, UtcMillis)> {
    let window = USED_TOTP_STEPS_FOR.as_millis() as i64;
    entries
        .iter()
        .map(Received::entry)
        .filter_map(|e| {
            let at = UtcMillis::parse_rfc3339(e.details.get("totp_step_at")?).ok()?;
            let near = (at.unix_millis() - now.unix_millis()).abs() <= window;
            Some((e.user.clone()?, at)).filter(|_| near)
        })
        .collect()
}

#[utoipa::path(get, path = "/api/v1/directory", summary = "The directory for this workstation, TOTP seeds sealed to its transport key (ETag)", params(("If-None-Match" = Option<String>, Header)), responses((status = 200, body = Directory), (status = 304, description = "unchanged"), (status = 401, body = ErrorBody)), security(("node_key" = [])))]
/// The directory for one workstation: TOTP seeds opened with the collector's key and
/// sealed again to that workstation's transport key. ETag: the directory's version.
pub(super) async fn directory(
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
                    tracing::error!(event = "seed_unopened", user = u.id, error = %e, "the TOTP secret of a user does not open");
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("the TOTP secret of user {:?} does not open; see the collector's log", u.id),
                    )
                })?;
                let for_ws =
                    wardlock_core::transport::seal(&ws.transport_key, &seed, u.id.as_bytes(), &mut rng)
                        .map_err(internal)?;
                Some(B64.encode(for_ws))
            }
            None => None,
        };
        let pin_sealed = match &u.pin_sealed {
            Some(stored) => {
                let phc = crate::secret::open_pin_hash(&state.data_key, &u.id, stored).map_err(|e| {
                    tracing::error!(event = "pin_hash_unopened", user = u.id, error = %e, "the PIN hash of a user does not open");
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("the PIN hash of user {:?} does not open; see the collector's log", u.id),
                    )
                })?;
                let context = wardlock_core::protocol::collector::pin_hash_context(&u.id);
                let sealed =
                    wardlock_core::transport::seal(&ws.transport_key, phc.as_bytes(), &context, &mut rng)
                        .map_err(internal)?;
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
    let body =
        Arc::new(serde_json::to_vec(&Directory { version: version.clone(), users: out }).map_err(internal)?);
    state.snapshots.put(&ws.id, &version, body.clone());
    Ok(json(body))
}

/// A body that names a workstation must name the one whose node key sent it.
fn is_workstation(ws: &Workstation, claimed: &str) -> Result<(), ApiError> {
    if claimed != ws.id {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "this node key belongs to another workstation"));
    }
    Ok(())
}
