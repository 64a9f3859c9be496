//! Enrollment that identifies a workstation: expiring, counted, revocable enrollment
//! secrets; an ID that is enrolled already is enrolled again only with an
//! administrator's approval for that ID or the workstation's current node key; a
//! revoked workstation's node key stops working at once.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{request::Parts, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;

use wardlock_core::protocol::collector::{
    EnrollRequest, EnrollResponse, EnrollSecretCreated, EnrollSecretInfo, EnrollSecretRequest,
    ReenrollApproved, ReenrollRequest,
};

use super::{
    admin_action, blocking, check_label, check_name, internal, now, paging, parse, ApiError, AppState,
    Caller, ErrorBody, B64, Q,
};
use crate::secret;
use crate::store::{EnrollAttempt, EnrollResult, NewEnrollSecret, NewWorkstation};

const MAX_SECRET_LIFETIME: Duration = Duration::from_secs(366 * 24 * 3600);
/// How long an administrator's approval to re-enroll one workstation lasts.
const REENROLL_LIFETIME: Duration = Duration::from_secs(24 * 3600);

#[utoipa::path(post, path = "/api/v1/enroll", summary = "Enroll a workstation: enrollment secret in, node key out", description = "The workstation's group is the enrollment secret's (or an approval's): a request naming another group is refused (403). An ID that is enrolled already needs an administrator's re-enrollment code for that ID as `enroll_secret`, or the workstation's current node key as `Authorization: Bearer`; otherwise 409, and a finding `enroll_conflict` on that workstation.", request_body = EnrollRequest, responses((status = 200, body = EnrollResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn enroll(
    State(state): State<AppState>,
    parts: Parts,
    body: Bytes,
) -> Result<Json<EnrollResponse>, ApiError> {
    let req: EnrollRequest = parse(&body)?;
    check_name("workstation_id", &req.workstation_id)?;
    check_name("group", &req.group)?;
    if req.hostname.len() > 255 || req.agent_version.len() > 64 {
        return Err(ApiError::bad("hostname or agent_version too long"));
    }
    let transport_key = B64
        .decode(&req.transport_key)
        .ok()
        .filter(|k| k.len() == 32)
        .ok_or_else(|| ApiError::bad("transport_key must be 32 bytes (X25519 public key), base64"))?;
    let node_key = secret::generate().map_err(internal)?;
    let attempt = EnrollAttempt {
        secret: secret::hash(&req.enroll_secret),
        workstation: NewWorkstation {
            id: req.workstation_id.clone(),
            hostname: req.hostname,
            group: req.group,
            agent_version: req.agent_version,
            transport_key,
        },
        node_key: secret::hash(&node_key),
        presented_key: super::bearer(&parts).map(secret::hash),
    };
    let store = state.store.clone();
    match blocking(move || store.enroll(&attempt, now())).await? {
        EnrollResult::Enrolled => {
            state.metrics.enrollments.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                event = "enrolled",
                workstation = req.workstation_id,
                "enrolled workstation {:?}",
                req.workstation_id
            );
            Ok(Json(EnrollResponse { node_key }))
        }
        EnrollResult::Unauthorized(why) => {
            state.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
            Err(ApiError::new(StatusCode::UNAUTHORIZED, why))
        }
        EnrollResult::WrongGroup(message) => {
            state.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
            Err(ApiError::new(StatusCode::FORBIDDEN, message))
        }
        EnrollResult::Conflict(message) => {
            tracing::warn!(
                event = "enroll_conflict",
                workstation = req.workstation_id,
                "refused an enrollment as {:?}: enrolled already",
                req.workstation_id
            );
            Err(ApiError::new(StatusCode::CONFLICT, message))
        }
    }
}

#[utoipa::path(post, tag = "admin role", path = "/api/v1/admin/enroll-secrets", summary = "Make an enrollment secret (shown once) with a label, an expiry and a use limit", request_body = EnrollSecretRequest, responses((status = 201, body = EnrollSecretCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)), security(("token" = []), ("session" = [])))]
pub(super) async fn create_enroll_secret(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let req: EnrollSecretRequest = parse(&body)?;
    check_label(&req.label, "what the secret is for")?;
    check_name("group", &req.group)?;
    let lifetime = req.expires_in_secs.map_or(NewEnrollSecret::DEFAULT_LIFETIME, Duration::from_secs);
    if lifetime.is_zero() || lifetime > MAX_SECRET_LIFETIME {
        return Err(ApiError::bad("expires_in_secs must be between 1 and 31622400 (a year)"));
    }
    let max_uses = req.max_uses.unwrap_or(NewEnrollSecret::DEFAULT_USES);
    if max_uses == 0 || max_uses > 1_000_000 {
        return Err(ApiError::bad("max_uses must be between 1 and 1000000"));
    }
    let secret = secret::generate().map_err(internal)?;
    let hash = secret::hash(&secret);
    let created = now();
    let expires = created.saturating_add(lifetime);
    let new = NewEnrollSecret {
        label: req.label.clone(),
        group: req.group.clone(),
        expires: Some(expires),
        max_uses: Some(max_uses),
    };
    let id = hex::encode(&hash[..6]);
    let detail = format!(
        "id {id} label {} group {} expires {} max_uses {max_uses}",
        req.label,
        req.group,
        expires.to_rfc3339()
    );
    let log = admin_action(&caller, "enroll_secret_create", detail);
    let store = state.store.clone();
    blocking(move || store.add_enroll_secret(&hash, &new, created, Some(&log))).await?;
    Ok((StatusCode::CREATED, Json(EnrollSecretCreated { secret, id, expires, max_uses })).into_response())
}

#[utoipa::path(get, tag = "admin role", path = "/api/v1/admin/enroll-secrets", summary = "The enrollment secrets (never the secrets themselves), in pages", params(paging::PageParams), responses((status = 200, body = Vec<EnrollSecretInfo>, headers(("x-next-after" = String, description = "cursor of the next page, if any"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)), security(("token" = []), ("session" = [])))]
pub(super) async fn list_enroll_secrets(
    State(state): State<AppState>,
    caller: Caller,
    Q(params): Q<paging::PageParams>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let (after, limit) = paging::key_after::<crate::store::SecretKey>(&params)?;
    let store = state.store.clone();
    let at = now();
    let secrets = blocking(move || store.enroll_secrets(after.as_ref(), limit + 1)).await?;
    let key = |s: &crate::store::EnrollSecret| (s.created.unix_millis(), s.hash.to_vec());
    Ok(paging::keyed(secrets, limit, key, |s| EnrollSecretInfo {
        id: s.id(),
        state: s.unusable(at).unwrap_or("usable").to_owned(),
        label: s.label,
        group: s.group,
        created: s.created,
        expires: s.expires,
        max_uses: s.max_uses,
        uses: s.uses,
        revoked: s.revoked,
    }))
}

#[utoipa::path(delete, tag = "admin role", path = "/api/v1/admin/enroll-secrets/{id}", summary = "Revoke an enrollment secret: it enrolls nothing more", params(("id" = String, Path, description = "as `GET /api/v1/admin/enroll-secrets` lists it")), responses((status = 204, description = "revoked"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("token" = []), ("session" = [])))]
pub(super) async fn revoke_enroll_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let store = state.store.clone();
    let wanted = id.clone();
    let found = blocking(move || store.enroll_secret(&wanted)).await?;
    let Some(found) = found else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no enrollment secret {id:?}")));
    };
    let store = state.store.clone();
    let log = admin_action(&caller, "enroll_secret_revoke", format!("id {id}"));
    blocking(move || store.revoke_enroll_secret(&found.hash, now(), Some(&log))).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(post, tag = "admin role", path = "/api/v1/admin/workstations/{id}/re-enroll", summary = "Approve enrolling this workstation ID again (a reinstalled machine, a move to another group): a one-time code, valid 24 h, to use as its enrollment secret", params(("id" = String, Path)), request_body(content = Option<ReenrollRequest>, description = "the group to enroll it into; empty body: the group it has"), responses((status = 201, body = ReenrollApproved), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)), security(("token" = []), ("session" = [])))]
pub(super) async fn approve_reenroll(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    check_name("workstation id", &id)?;
    // No body, `null`, or an object.
    let req: ReenrollRequest = match std::str::from_utf8(&body).map(str::trim) {
        Ok("" | "null") => ReenrollRequest::default(),
        _ => parse(&body)?,
    };
    if let Some(group) = &req.group {
        check_name("group", group)?;
    }
    let code = secret::generate().map_err(internal)?;
    let hash = secret::hash(&code);
    let created = now();
    let expires = created.saturating_add(REENROLL_LIFETIME);
    let detail = match &req.group {
        Some(group) => format!("workstation {id} into group {group}"),
        None => format!("workstation {id} (its group unchanged)"),
    };
    let log = admin_action(&caller, "workstation_reenroll_approve", detail);
    let (store, ws, group) = (state.store.clone(), id.clone(), req.group.clone());
    blocking(move || store.approve_reenroll(&ws, &hash, group.as_deref(), expires, created, Some(&log)))
        .await?;
    Ok((StatusCode::CREATED, Json(ReenrollApproved { workstation: id, group: req.group, code, expires }))
        .into_response())
}

#[utoipa::path(post, tag = "admin role", path = "/api/v1/admin/workstations/{id}/revoke", summary = "Revoke a workstation: its node key stops working at once; only an approved re-enrollment brings it back", params(("id" = String, Path)), responses((status = 204, description = "revoked"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("token" = []), ("session" = [])))]
pub(super) async fn revoke_workstation(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    // A key nobody holds: the column stays unique and no bearer matches it.
    let dead_key = secret::hash(&secret::generate().map_err(internal)?);
    let (store, ws) = (state.store.clone(), id.clone());
    let log = admin_action(&caller, "workstation_revoke", format!("workstation {id}"));
    if !blocking(move || store.revoke_workstation(&ws, &dead_key, now(), Some(&log))).await? {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no workstation {id:?}")));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
