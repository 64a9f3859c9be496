//! The administrators' side: policies, API tokens, the admin log and the central
//! directory (users, their PINs and TOTP seeds, IT's admin grants).

use wardlock_core::protocol::collector::{
    NewUserRequest, PolicyStored, TokenCreated, TokenRequest, UserCreated, UserOut,
};

use super::*;

#[utoipa::path(put, tag = "admin role", path = "/api/v1/admin/policies/{group}", summary = "Store a signed policy for a group (the serial must increase)", params(("group" = String, Path)), request_body = SignedPolicy, responses((status = 201, body = PolicyStored), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)), security(("token" = []), ("session" = [])))]
pub(super) async fn put_policy(
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
    let log = admin_action(
        &caller,
        "policy_push",
        format!("group {group} serial {serial} key {}", envelope.key_id),
    );
    match blocking(move || store.put_policy(&g, serial, &json, now(), Some(&log))).await? {
        PolicyPut::Stale { current } => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "group {group:?} already has serial {current}; sign the new policy with a higher --serial"
            ),
        )),
        PolicyPut::Stored => Ok((StatusCode::CREATED, Json(PolicyStored { group, serial })).into_response()),
    }
}

#[utoipa::path(post, tag = "admin role", path = "/api/v1/admin/tokens", summary = "Make an API token with a role (shown once)", request_body = TokenRequest, responses((status = 201, body = TokenCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)), security(("token" = []), ("session" = [])))]
pub(super) async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let req: TokenRequest = parse(&body)?;
    check_label(&req.label, "who the token is for")?;
    let token = secret::generate().map_err(internal)?;
    let (hash, role, label) = (secret::hash(&token), req.role, req.label.clone());
    let store = state.store.clone();
    let log =
        admin_action(&caller, "token_create", format!("role {} label {}", req.role.as_str(), req.label));
    blocking(move || store.add_token(&hash, role, &label, now(), Some(&log))).await?;
    Ok((StatusCode::CREATED, Json(TokenCreated { token, role: req.role })).into_response())
}

#[utoipa::path(get, path = "/api/v1/admin/log", summary = "What administrators did on this collector, in pages", params(paging::PageParams), responses((status = 200, body = Vec<crate::store::AdminAction>, headers(("x-next-after" = String, description = "cursor of the next page, if any"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)), security(("token" = []), ("session" = [])))]
/// What administrators did here (auditors may read it too).
pub(super) async fn admin_log(
    State(state): State<AppState>,
    _caller: Caller,
    Q(params): Q<paging::PageParams>,
) -> Result<Response, ApiError> {
    let (after, limit) = paging::key_after::<i64>(&params)?;
    let store = state.store.clone();
    // In the order written.
    let log = blocking(move || store.admin_log(after, limit + 1)).await?;
    Ok(paging::keyed(log, limit, |(id, _)| *id, |(_, action)| action))
}

#[utoipa::path(post, tag = "admin role", path = "/api/v1/admin/users", summary = "Add a user to the central directory", request_body = NewUserRequest, responses((status = 201, body = UserCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)), security(("token" = []), ("session" = [])))]
pub(super) async fn add_user(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let req: NewUserRequest = parse(&body)?;
    check_name("id", &req.id)?;
    if req.id.len() > 64 {
        return Err(ApiError::bad("id must be at most 64 characters (what workstations accept)"));
    }
    check_user_text(&req.display_name, &req.role)?;
    check_groups(&req.groups)?;
    let pin_hash = match &req.pin {
        Some(pin) => {
            let (store, groups) = (state.store.clone(), req.groups.clone());
            let rules = blocking(move || pin_rules_reached(store.as_ref(), &groups)).await?;
            for (whose, rules) in rules {
                unlock::check_pin_rules(pin, &rules)
                    .map_err(|e| ApiError::bad(format!("PIN refused by the PIN rules of {whose}: {e}")))?;
            }
            let mut salt = [0u8; 16];
            getrandom::getrandom(&mut salt).map_err(internal)?;
            let pin = pin.clone();
            let hash =
                tokio::task::spawn_blocking(move || unlock::hash_pin(&pin, &salt)).await.map_err(internal)?;
            let hash = hash.map_err(internal)?;
            Some(crate::secret::seal_pin_hash(&state.data_key, &req.id, hash.as_phc()).map_err(internal)?)
        }
        None => None,
    };
    let (totp_sealed, otpauth_uri) = match req.totp {
        true => new_totp_seed(&state, &req.id).map(|(sealed, uri)| (Some(sealed), Some(uri)))?,
        false => (None, None),
    };
    let record = UserRecord {
        id: req.id.clone(),
        display_name: req.display_name,
        role: req.role.clone(),
        disabled: false,
        pin_sealed: pin_hash,
        totp_sealed,
        updated: now(),
        admin_grant: None,
        groups: req.groups.clone(),
    };
    let store = state.store.clone();
    let log = admin_action(&caller, "user_add", format!("user {} role {}", req.id, req.role));
    if !blocking(move || store.put_user(&record, true, Some(&log))).await? {
        return Err(ApiError::new(StatusCode::CONFLICT, format!("user {:?} exists already", req.id)));
    }
    Ok((StatusCode::CREATED, Json(UserCreated { id: req.id, otpauth_uri })).into_response())
}

#[utoipa::path(post, tag = "admin role", path = "/api/v1/admin/users/{id}/disable", summary = "Disable a user; workstations refuse them from their next sync", params(("id" = String, Path)), responses((status = 204, description = "disabled"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("token" = []), ("session" = [])))]
pub(super) async fn disable_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let mut user = existing_user(&state, &id).await?;
    user.disabled = true;
    user.updated = now();
    let store = state.store.clone();
    let log = admin_action(&caller, "user_disable", format!("user {id}"));
    blocking(move || store.put_user(&user, false, Some(&log))).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(put, tag = "admin role", path = "/api/v1/admin/users/{id}", summary = "Change a directory user's display name, role and groups; workstations take it at their next sync", params(("id" = String, Path)), request_body = wardlock_core::protocol::collector::UserUpdate, responses((status = 204, description = "changed"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("token" = []), ("session" = [])))]
pub(super) async fn update_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let req: wardlock_core::protocol::collector::UserUpdate = parse(&body)?;
    check_user_text(&req.display_name, &req.role)?;
    check_groups(&req.groups)?;
    let mut user = existing_user(&state, &id).await?;
    user.display_name = req.display_name;
    user.role = req.role.clone();
    user.groups = req.groups.clone();
    user.updated = now();
    let detail = format!("user {id} role {} groups {}", req.role, req.groups.join(","));
    let log = admin_action(&caller, "user_change", detail);
    let store = state.store.clone();
    blocking(move || store.put_user(&user, false, Some(&log))).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(post, tag = "admin role", path = "/api/v1/admin/users/{id}/totp", summary = "Issue a new TOTP enrolment for a directory user (the old code stops working at the workstations' next sync); the otpauth URI is shown once", params(("id" = String, Path)), responses((status = 201, body = UserCreated), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("token" = []), ("session" = [])))]
pub(super) async fn new_totp(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let mut user = existing_user(&state, &id).await?;
    let (sealed, uri) = new_totp_seed(&state, &id)?;
    user.totp_sealed = Some(sealed);
    user.updated = now();
    let log = admin_action(&caller, "user_totp_reissue", format!("user {id}"));
    let store = state.store.clone();
    blocking(move || store.put_user(&user, false, Some(&log))).await?;
    Ok((StatusCode::CREATED, Json(UserCreated { id, otpauth_uri: Some(uri) })).into_response())
}

async fn existing_user(state: &AppState, id: &str) -> Result<UserRecord, ApiError> {
    let (store, lookup) = (state.store.clone(), id.to_owned());
    blocking(move || store.user(&lookup))
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no user {id:?} in the directory")))
}

/// A new TOTP seed for `id`, sealed with the data key, and its `otpauth://` URI.
fn new_totp_seed(state: &AppState, id: &str) -> Result<(Vec<u8>, String), ApiError> {
    let mut bytes = zeroize::Zeroizing::new(vec![0u8; 20]);
    getrandom::getrandom(&mut bytes).map_err(internal)?;
    let seed = TotpSeed::new(bytes.to_vec()).map_err(internal)?;
    let uri = unlock::totp_uri(&wardlock_core::policy::TotpPolicy::default(), &seed, id).map_err(internal)?;
    Ok((state.data_key.seal(seed.expose(), id.as_bytes()).map_err(internal)?, uri))
}

fn check_user_text(display_name: &str, role: &str) -> Result<(), ApiError> {
    let text_ok =
        |t: &str| !t.trim().is_empty() && t.chars().count() <= 128 && !t.chars().any(char::is_control);
    if !text_ok(display_name) || !text_ok(role) {
        return Err(ApiError::bad("display_name and role must be 1–128 printable characters"));
    }
    Ok(())
}

fn check_groups(groups: &[String]) -> Result<(), ApiError> {
    if groups.len() > 64 {
        return Err(ApiError::bad("at most 64 groups"));
    }
    for group in groups {
        check_name("group", group)?;
    }
    Ok(())
}

#[utoipa::path(post, tag = "admin role", path = "/api/v1/admin/users/{id}/admin-grant", summary = "Store IT's signed grant of the admin role for a user (`wardlockctl user grant-admin`); workstations take the role only with it", params(("id" = String, Path)), request_body = wardlock_core::protocol::collector::AdminGrantRequest, responses((status = 204, description = "stored"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("token" = []), ("session" = [])))]
pub(super) async fn put_admin_grant(
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
    let log = admin_action(&caller, "user_admin_grant", format!("user {id}"));
    if !blocking(move || store.set_admin_grant(&user, &req.grant, now(), Some(&log))).await? {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no user {id:?} in the directory")));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(get, path = "/api/v1/admin/users", summary = "The central directory (no secrets), in pages", params(paging::PageParams), responses((status = 200, body = Vec<UserOut>, headers(("x-next-after" = String, description = "cursor of the next page, if any"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)), security(("token" = []), ("session" = [])))]
pub(super) async fn list_users(
    State(state): State<AppState>,
    _caller: Caller,
    Q(params): Q<paging::PageParams>,
) -> Result<Response, ApiError> {
    let (after, limit) = paging::key_after::<String>(&params)?;
    let (store, key) = (state.store.clone(), state.data_key.clone());
    let users = blocking(move || store.users_page(after.as_deref(), limit + 1)).await?;
    Ok(paging::keyed(
        users,
        limit,
        |u| u.id.clone(),
        |u| UserOut {
            credential_digest: crate::secret::credential_digest(&key, &u),
            has_pin: u.pin_sealed.is_some(),
            has_totp: u.totp_sealed.is_some(),
            id: u.id,
            display_name: u.display_name,
            role: u.role,
            disabled: u.disabled,
            updated: u.updated,
            groups: u.groups,
        },
    ))
}

/// The PIN rules the user's PIN must meet: the built-in ones, and those of the central
/// policy pushed for each group the user reaches (every group a workstation is enrolled
/// in, when the user names none). A workstation holds only the hash, so this is the one
/// place a PIN can be checked against its ward's rules. (A ward's machine layer may be
/// stricter still; the collector cannot see it.)
fn pin_rules_reached(
    store: &dyn crate::store::CollectorStore,
    groups: &[String],
) -> Result<Vec<(String, PinPolicy)>, crate::store::StoreError> {
    let mut reached: Vec<String> = groups.to_vec();
    if reached.is_empty() {
        reached = store.workstation_groups()?;
    }
    let mut rules = vec![("the built-in defaults".to_owned(), PinPolicy::default())];
    for group in reached {
        let Some((envelope, _)) = store.policy(&group)? else { continue };
        // IT signed it; the collector reads it only to refuse a PIN the ward would not take.
        let text = wardlock_core::policy::SignedPolicy::from_json(&envelope)
            .and_then(|signed| signed.unverified_body())
            .map(|body| body.policy);
        let policy = text.ok().and_then(|text| {
            let doc = wardlock_core::policy::PolicyDocument::parse(
                "central",
                wardlock_core::policy::Layer::Central,
                &text,
            )
            .ok()?;
            wardlock_core::policy::Policy::layered(&[doc]).ok()
        });
        if let Some(policy) = policy {
            rules.push((format!("group {group:?}"), policy.into_inner().pin));
        }
    }
    Ok(rules)
}
