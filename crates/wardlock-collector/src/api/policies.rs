//! The policies as the console shows them (in force per group, the one before, the
//! timeouts they set) and drafts: an admin drafts a change, core's validation checks it
//! as they type, and IT signs it offline with `wardlockctl policy sign --draft ID`. The
//! collector never holds the signing key.

use wardlock_core::policy::check_central;
use wardlock_core::protocol::collector::{
    PolicyCheck, PolicyDraft, PolicyInForce, PolicyText, PreviousPolicy,
};

use super::*;

/// The TOML a stored envelope carries, and its signer and issue time (not verified here).
fn document(envelope: &str) -> Option<(String, String, UtcMillis)> {
    let signed = SignedPolicy::from_json(envelope).ok()?;
    let body = signed.unverified_body().ok()?;
    Some((body.policy, signed.key_id, body.issued_at))
}

#[utoipa::path(get, path = "/api/v1/policies", summary = "Each group's policy in force: serial, signing key, who stored it and when, the policy it replaced, and the timeouts per PHI tier", responses((status = 200, body = Vec<PolicyInForce>), (status = 401, body = ErrorBody)), security(("token" = []), ("session" = [])))]
pub(super) async fn policies(State(state): State<AppState>, _caller: Caller) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let stored = blocking(move || store.policies_in_force()).await?;
    let out: Vec<PolicyInForce> = stored
        .into_iter()
        .map(|p| {
            let (policy, key_id, issued_at) = document(&p.envelope)
                .map(|(text, key, issued)| (text, key, Some(issued)))
                .unwrap_or_else(|| (String::new(), String::new(), None));
            let previous = p.previous.map(|(serial, envelope, stored_by, stored)| PreviousPolicy {
                serial,
                policy: document(&envelope).map(|(text, _, _)| text).unwrap_or_default(),
                stored_by,
                stored,
            });
            PolicyInForce {
                timeouts: check_central(&policy).timeouts,
                group: p.group,
                serial: p.serial,
                key_id,
                issued_at,
                stored_by: p.stored_by,
                stored: p.stored,
                policy,
                previous,
            }
        })
        .collect();
    Ok(Json(out).into_response())
}

const MAX_POLICY_BYTES: usize = 64 * 1024;

fn policy_text(body: &Bytes) -> Result<PolicyText, ApiError> {
    let req: PolicyText = parse(body)?;
    if req.policy.len() > MAX_POLICY_BYTES {
        return Err(ApiError::bad(format!("a policy is at most {MAX_POLICY_BYTES} bytes")));
    }
    Ok(req)
}

#[utoipa::path(post, path = "/api/v1/policies/check", summary = "Check a central policy document with core's validation (what a workstation would refuse), and the timeouts it sets", request_body = PolicyText, responses((status = 200, body = PolicyCheck), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)), security(("token" = []), ("session" = [])))]
pub(super) async fn check(_caller: Caller, body: Bytes) -> Result<Response, ApiError> {
    let req = policy_text(&body)?;
    Ok(Json(check_central(&req.policy)).into_response())
}

#[utoipa::path(post, tag = "admin role", path = "/api/v1/admin/policy-drafts", summary = "Keep a drafted policy change for a group (it must pass core's validation); IT signs it offline with `wardlockctl policy sign --draft ID`", request_body = PolicyText, responses((status = 201, body = PolicyDraft), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = PolicyCheck)), security(("token" = []), ("session" = [])))]
pub(super) async fn add_draft(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let req = policy_text(&body)?;
    let group =
        req.group.clone().ok_or_else(|| ApiError::bad("group: the workstation group the draft is for"))?;
    check_name("group", &group)?;
    let checked = check_central(&req.policy);
    if !checked.valid {
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(checked)).into_response());
    }
    let log = admin_action(&caller, "policy_draft", String::new());
    let (store, author, now) = (state.store.clone(), caller.label.clone(), now());
    let (g, text, a) = (group.clone(), req.policy.clone(), author.clone());
    let id = blocking(move || store.add_policy_draft(&g, &text, &a, now, &log)).await?;
    let draft = PolicyDraft { id, group, policy: req.policy, author, created: now };
    Ok((StatusCode::CREATED, Json(draft)).into_response())
}

#[utoipa::path(get, path = "/api/v1/policy-drafts", summary = "Drafted policy changes, newest first, in pages", params(paging::PageParams), responses((status = 200, body = Vec<PolicyDraft>, headers(("x-next-after" = String, description = "cursor of the next page, if any"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)), security(("token" = []), ("session" = [])))]
pub(super) async fn drafts(
    State(state): State<AppState>,
    _caller: Caller,
    Q(params): Q<paging::PageParams>,
) -> Result<Response, ApiError> {
    let (before, limit) = paging::key_after::<i64>(&params)?;
    let store = state.store.clone();
    let page = blocking(move || store.policy_drafts(before, limit + 1)).await?;
    Ok(paging::keyed(page, limit, |d: &PolicyDraft| d.id, |d| d))
}

#[utoipa::path(get, path = "/api/v1/policy-drafts/{id}", summary = "One drafted policy change", params(("id" = i64, Path)), responses((status = 200, body = PolicyDraft), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)), security(("token" = []), ("session" = [])))]
pub(super) async fn draft(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: i64 = id.parse().map_err(|_| ApiError::bad(format!("{id:?} is not a draft ID (a number)")))?;
    let store = state.store.clone();
    match blocking(move || store.policy_draft(id)).await? {
        Some(draft) => Ok(Json(draft).into_response()),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, format!("no policy draft {id}"))),
    }
}
