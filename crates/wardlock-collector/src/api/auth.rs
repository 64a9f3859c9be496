//! Who is calling: a workstation by its node key (`Node`), a person by an API token with
//! a role or by a console session (`Caller`); what administrators do is logged with it
//! (`admin_action`).

use super::*;

pub(super) fn bearer(parts: &Parts) -> Option<&str> {
    parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

/// A 401, counted for the metrics.
pub(super) fn unauthorized(state: &AppState, why: &'static str) -> ApiError {
    state.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
    ApiError::new(StatusCode::UNAUTHORIZED, why)
}

/// The hash of the bearer credential, which is all the store ever sees of it.
pub(super) fn bearer_hash(
    parts: &Parts,
    state: &AppState,
    why: &'static str,
) -> Result<crate::store::Hash, ApiError> {
    bearer(parts).map(secret::hash).ok_or_else(|| unauthorized(state, why))
}

const UNKNOWN_NODE_KEY: &str = "missing or unknown node key; enroll the workstation again";
const UNKNOWN_TOKEN: &str =
    "missing or unknown API token (Authorization: Bearer TOKEN), and no console session";

/// A request from an enrolled workstation (`Authorization: Bearer NODE_KEY`). Looked up
/// once: the gate (`gate.rs`) looks it up before a body and leaves it to the handler.
#[derive(Debug, Clone)]
pub struct Node(pub Workstation);

impl FromRequestParts<AppState> for Node {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(node) = parts.extensions.remove::<Node>() {
            return Ok(node);
        }
        const WHY: &str = UNKNOWN_NODE_KEY;
        let hash = bearer_hash(parts, state, WHY)?;
        let store = state.store.clone();
        match blocking(move || store.workstation_by_key(&hash)).await? {
            Some(ws) => Ok(Node(ws)),
            None => Err(unauthorized(state, WHY)),
        }
    }
}

/// A person or tool with an API token; `role` says what it may do. Looked up once, like
/// [`Node`].
#[derive(Debug, Clone)]
pub struct Caller {
    pub role: Role,
    pub label: String,
    /// The hash of the console session it came with; `None` for an API token.
    pub session: Option<crate::store::Hash>,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(caller) = parts.extensions.remove::<Caller>() {
            return Ok(caller);
        }
        const WHY: &str = UNKNOWN_TOKEN;
        // A person in the console shows a session cookie instead of a token.
        if bearer(parts).is_none() {
            if let Some(session) = super::console::session_cookie(&parts.headers) {
                return super::console::caller_from_session(parts, state, &session).await;
            }
        }
        let hash = bearer_hash(parts, state, WHY)?;
        let store = state.store.clone();
        match blocking(move || store.token(&hash)).await? {
            Some((role, label)) => Ok(Caller { role, label, session: None }),
            None => Err(unauthorized(state, WHY)),
        }
    }
}

impl Caller {
    pub(super) fn require_admin(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Auditor => {
                Err(ApiError::new(StatusCode::FORBIDDEN, "this needs an admin token; yours is an auditor's"))
            }
        }
    }
}

/// The admin log's entry for `caller` doing `action`; the store writes it together with
/// the change.
pub(super) fn admin_action(caller: &Caller, action: &str, detail: String) -> AdminAction {
    AdminAction { time: now(), actor: caller.label.clone(), action: action.to_owned(), detail }
}
