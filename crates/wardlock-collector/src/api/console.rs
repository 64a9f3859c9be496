//! The web console's sign-in, session and pages. A sign-in is decided by core's unlock
//! rules (`wardlock_core::console`): password and TOTP code together, throttled and locked
//! out per account and per client address as a workstation throttles per user and per
//! workstation. A session is a random cookie (`HttpOnly; Secure; SameSite=Strict`) whose
//! SHA-256 is all the store keeps; every change it makes carries `X-CSRF-Token`, derived
//! from the cookie, which a page of another site can neither read nor compute.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Method};
use wardlock_core::console::{self as rules, SessionState};
use wardlock_core::protocol::collector::{ConsoleSession, ConsoleSignIn};
use wardlock_core::unlock::{
    self, Attempt, Outcome, RefusalReason, UserAuthState, UserCredentials, WorkstationAuthState,
};

use super::*;
use crate::console::{open_secrets, Assets};

pub(super) const COOKIE: &str = "__Host-wardlock-session";
pub(super) const CSRF_HEADER: &str = "x-csrf-token";

/// Sign-in counters kept in memory: per client address (as a workstation's), and per
/// name that is no account (so an unknown name is refused as a known one is).
#[derive(Debug, Default)]
pub struct SignIns {
    addresses: Mutex<HashMap<IpAddr, WorkstationAuthState>>,
    unknown_names: Mutex<HashMap<String, UserAuthState>>,
    /// One sign-in decided at a time: counters are read, decided and written in turn.
    deciding: tokio::sync::Mutex<()>,
}

impl SignIns {
    fn note_unknown(&self, name: &str, state: UserAuthState, now: UtcMillis) {
        let mut unknown = self.unknown_names.lock().unwrap_or_else(|p| p.into_inner());
        prune(&mut unknown, |s| s.blocked_until.is_some_and(|u| u > now) || s.failures > 0);
        unknown.insert(name.to_owned(), state);
    }

    fn note_address(&self, address: IpAddr, state: WorkstationAuthState, now: UtcMillis) {
        let mut addresses = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        prune(&mut addresses, |s| s.locked_out(now) || !s.recent_failures.is_empty());
        addresses.insert(address, state);
    }

    fn unknown(&self, name: &str) -> UserAuthState {
        self.unknown_names.lock().unwrap_or_else(|p| p.into_inner()).get(name).cloned().unwrap_or_default()
    }

    fn address(&self, address: Option<IpAddr>) -> WorkstationAuthState {
        let Some(address) = address else { return WorkstationAuthState::default() };
        self.addresses.lock().unwrap_or_else(|p| p.into_inner()).get(&address).cloned().unwrap_or_default()
    }
}

/// Entries kept before the ones no longer holding anything back are dropped.
const MAX_TRACKED: usize = 10_000;

fn prune<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>, live: impl Fn(&V) -> bool) {
    if map.len() >= MAX_TRACKED {
        map.retain(|_, v| live(v));
    }
    if map.len() >= MAX_TRACKED {
        map.clear();
    }
}

/// The session cookie's value, if the request carries one.
pub(super) fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|line| {
        line.split(';').find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE && !value.is_empty()).then(|| value.to_owned())
        })
    })
}

/// The CSRF token of a session: a hash of its cookie, so nothing more is stored.
pub(super) fn csrf_token(session: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest([b"wardlock-console-csrf\0".as_slice(), session.as_bytes()].concat())[..16])
}

const NO_SESSION: &str = "not signed in, or the session has ended; sign in again at /console/";

/// The caller behind a session cookie, checked: live, its account enabled, and for a
/// change, the CSRF token.
pub(super) async fn caller_from_session(
    parts: &Parts,
    state: &AppState,
    session: &str,
) -> Result<Caller, ApiError> {
    let hash = secret::hash(session);
    let store = state.store.clone();
    let record = blocking(move || store.console_session(&hash)).await?;
    let Some(record) = record.filter(|r| !r.account_disabled) else {
        return Err(auth::unauthorized(state, NO_SESSION));
    };
    let now = now();
    let touch = match rules::session_state(record.signed_in, record.last_used, record.signed_out, now) {
        SessionState::Live { touch } => touch,
        _ => return Err(auth::unauthorized(state, NO_SESSION)),
    };
    if !matches!(parts.method, Method::GET | Method::HEAD) {
        use subtle::ConstantTimeEq;
        let sent = parts.headers.get(CSRF_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
        if !bool::from(sent.ct_eq(csrf_token(session).as_bytes())) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "this change needs the session's X-CSRF-Token header; reload the console",
            ));
        }
    }
    if touch {
        let store = state.store.clone();
        blocking(move || store.touch_console_session(&hash, now)).await?;
    }
    Ok(Caller { role: record.role, label: format!("{} (console)", record.account), session: Some(hash) })
}

/// Whether the session with this hash can still be used at `now`.
pub(super) fn session_live(
    store: &dyn CollectorStore,
    hash: &crate::store::Hash,
    now: UtcMillis,
) -> Result<bool, StoreError> {
    Ok(store.console_session(hash)?.is_some_and(|r| {
        !r.account_disabled
            && matches!(
                rules::session_state(r.signed_in, r.last_used, r.signed_out, now),
                SessionState::Live { .. }
            )
    }))
}

fn client_address(parts: &Parts) -> Option<IpAddr> {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

fn session_answer(
    name: &str,
    role: Role,
    session: &str,
    ends: UtcMillis,
    state: &AppState,
) -> ConsoleSession {
    ConsoleSession {
        name: name.to_owned(),
        role,
        csrf_token: csrf_token(session),
        ends,
        time_zone: state.time_zone.to_string(),
    }
}

fn set_cookie(value: &str, max_age: std::time::Duration) -> HeaderValue {
    let cookie =
        format!("{COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}", max_age.as_secs());
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn refusal_text(reason: RefusalReason) -> &'static str {
    match reason {
        RefusalReason::Throttled => "too many wrong attempts; wait before the next one",
        RefusalReason::UserLockedOut => {
            "this account is locked out after wrong attempts; wait until the lockout ends (each one lasts twice as long)"
        }
        RefusalReason::WorkstationLockedOut => {
            "too many wrong attempts from this address; wait before the next one"
        }
        // The rest say nothing of which factor, or whether the name exists.
        _ => "wrong name, password or code",
    }
}

#[utoipa::path(post, path = "/api/v1/console/session", summary = "Sign in to the console: name, password and TOTP code; sets the session cookie", request_body = ConsoleSignIn, responses((status = 200, body = ConsoleSession), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 415, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn sign_in(
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let address = client_address(&parts);
    // A page of another site can post a form as text/plain, which could sign the
    // browser in to the attacker's account; JSON it cannot send without asking first.
    let json = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
    });
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a sign-in is sent as Content-Type: application/json",
        ));
    }
    let body = axum::body::to_bytes(body, crate::api::gate::MAX_UNAUTHENTICATED_BODY)
        .await
        .map_err(|_| ApiError::bad("request body too large"))?;
    let form: ConsoleSignIn = parse(&body)?;
    check_name("name", &form.name)?;
    let _one_at_a_time = state.sign_ins.deciding.lock().await;
    let name = form.name.clone();
    let store = state.store.clone();
    let account = blocking(move || store.console_account(&name)).await?;
    let now = now();
    let key = state.data_key.clone();
    let (seen, user_state) = match &account {
        Some(a) => {
            let parsed: UserAuthState = serde_json::from_str(&a.auth_state).map_err(|_| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "this account's sign-in counters are unreadable; an admin must look at the database",
                )
            })?;
            (a.auth_state.clone(), parsed)
        }
        None => (String::new(), state.sign_ins.unknown(&form.name)),
    };
    let address_state = state.sign_ins.address(address);
    let policy = state.sign_in_policy.clone();
    let decide_account = account.clone();
    let before = user_state.clone();
    let decision = tokio::task::spawn_blocking(move || {
        let secrets = decide_account.as_ref().and_then(|a| open_secrets(&key, a).map(|s| (a.disabled, s)));
        let credentials = secrets.as_ref().map(|(disabled, (hash, seed))| UserCredentials {
            disabled: *disabled,
            pin_hash: Some(hash),
            totp_seed: Some(seed),
        });
        let attempt = Attempt {
            user_id: form.name.clone(),
            pin: Some(form.password.clone()),
            totp: Some(form.code.clone()),
            emergency_reason: None,
        };
        (unlock::decide(&policy, now, credentials, &user_state, &address_state, &attempt), form.name)
    })
    .await
    .map_err(internal)?;
    let (decision, name) = decision;
    if let Some(ip) = address {
        state.sign_ins.note_address(ip, decision.workstation_state.clone(), now);
    }
    let from = address.map(|a| a.to_string()).unwrap_or_else(|| "an unknown address".into());
    let new_state = serde_json::to_string(&decision.user_state).map_err(internal)?;
    match decision.outcome {
        Outcome::Granted { .. } => {
            let Some(account) = account else { return Err(internal("granted without an account")) };
            let session = secret::generate().map_err(internal)?;
            let hash = secret::hash(&session);
            let log = AdminAction {
                time: now,
                actor: format!("{name} (console)"),
                action: "console_sign_in".into(),
                detail: format!("role {} from {from}", account.role.as_str()),
            };
            let store = state.store.clone();
            let (n, s) = (name.clone(), new_state.clone());
            let recorded =
                blocking(move || store.console_sign_in(&n, &seen, &s, Some((&hash, now)), &log)).await?;
            if !recorded {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "another sign-in to this account was decided at the same time; try again",
                ));
            }
            tracing::info!(event = "console_signed_in", account = %name, role = account.role.as_str(), from = %from, "console sign-in");
            let answer = session_answer(&name, account.role, &session, rules::session_ends(now, now), &state);
            let mut response = Json(answer).into_response();
            response.headers_mut().insert(header::SET_COOKIE, set_cookie(&session, rules::MAX_LIFETIME));
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(response)
        }
        Outcome::Refused { reason, retry_after, locked_out_now, .. } => {
            state.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
            let blocked = matches!(
                reason,
                RefusalReason::Throttled | RefusalReason::UserLockedOut | RefusalReason::WorkstationLockedOut
            ) && decision.user_state == before;
            // Attempts refused unread (while held back) change nothing and are not logged
            // one by one: a flood of them cannot fill the admin log.
            if !blocked {
                let detail = format!(
                    "{} from {from}{}",
                    reason.as_str(),
                    if locked_out_now { "; locked out now" } else { "" }
                );
                let log = AdminAction {
                    time: now,
                    actor: format!("{name} (console)"),
                    action: "console_sign_in_refused".into(),
                    detail,
                };
                let store = state.store.clone();
                if account.is_some() {
                    let (n, s) = (name.clone(), new_state);
                    blocking(move || store.console_sign_in(&n, &seen, &s, None, &log)).await?;
                } else {
                    state.sign_ins.note_unknown(&name, decision.user_state.clone(), now);
                    blocking(move || store.log_admin(&log)).await?;
                }
                tracing::warn!(event = "console_sign_in_refused", account = %name, reason = reason.as_str(), from = %from, "console sign-in refused");
            }
            let status = if retry_after.is_some() && blocked || locked_out_now {
                StatusCode::TOO_MANY_REQUESTS
            } else {
                StatusCode::UNAUTHORIZED
            };
            let mut response = ApiError::new(status, refusal_text(reason)).into_response();
            if let Some(wait) = retry_after {
                let seconds = wait.as_secs().max(1).to_string();
                if let Ok(v) = HeaderValue::from_str(&seconds) {
                    response.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            Ok(response)
        }
    }
}

#[utoipa::path(get, path = "/api/v1/console/session", summary = "The signed-in console session: who, role, CSRF token, when it ends", responses((status = 200, body = ConsoleSession), (status = 401, body = ErrorBody)), security(("session" = [])))]
pub(super) async fn session(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let Some(session) = session_cookie(&headers) else { return Err(auth::unauthorized(&state, NO_SESSION)) };
    let hash = secret::hash(&session);
    let store = state.store.clone();
    let record = blocking(move || store.console_session(&hash)).await?;
    let now = now();
    let Some(record) = record.filter(|r| {
        !r.account_disabled
            && matches!(
                rules::session_state(r.signed_in, r.last_used, r.signed_out, now),
                SessionState::Live { .. }
            )
    }) else {
        return Err(auth::unauthorized(&state, NO_SESSION));
    };
    // Asking who is signed in is not using the console: it does not keep a session alive.
    let ends = rules::session_ends(record.signed_in, record.last_used);
    let mut response =
        Json(session_answer(&record.account, record.role, &session, ends, &state)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[utoipa::path(delete, path = "/api/v1/console/session", summary = "Sign out: the session ends on the server and the cookie is cleared", responses((status = 204, description = "signed out"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)), security(("session" = [])))]
pub(super) async fn sign_out(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let Some(hash) = caller.session else {
        return Err(ApiError::bad("only a console session signs out; an API token is revoked by an admin"));
    };
    let log = admin_action(&caller, "console_sign_out", String::new());
    let store = state.store.clone();
    blocking(move || store.sign_out_console_session(&hash, now(), &log)).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(header::SET_COOKIE, set_cookie("", std::time::Duration::ZERO));
    Ok(response)
}

/// The console's time zone: as given, else the machine's (`TZ`, `/etc/timezone`), else
/// UTC. A name the machine's zone database lacks is refused, so the console never shows
/// times in a zone it silently replaced.
pub fn time_zone(given: Option<String>) -> Result<String, String> {
    let zone = given
        .or_else(|| std::env::var("TZ").ok().map(|tz| tz.trim_start_matches(':').to_owned()))
        .or_else(|| std::fs::read_to_string("/etc/timezone").ok().map(|z| z.trim().to_owned()))
        .filter(|z| !z.is_empty())
        .unwrap_or_else(|| "UTC".to_owned());
    let well_formed = zone.len() <= 64
        && !zone.contains("..")
        && zone.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'));
    let database = std::path::Path::new("/usr/share/zoneinfo");
    if !well_formed || (zone != "UTC" && database.is_dir() && !database.join(&zone).is_file()) {
        return Err(format!("--time-zone {zone:?} is not a time zone this machine knows; use an IANA name such as Europe/Berlin (see /usr/share/zoneinfo)"));
    }
    Ok(zone)
}

/// What every console page is served with: scripts and styles only from the collector,
/// no framing, nothing sniffed, no referrer.
pub(super) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// `/console/…`: the built console (hash-routed, so only its files are served).
pub(super) async fn page(uri: axum::http::Uri) -> Response {
    let path = uri.path().trim_start_matches("/console").trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    let Some(file) = Assets::get(path) else {
        if path == "index.html" {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "This collector was built without its console. Build it with `make console` before `cargo build`.\n",
            )
                .into_response();
        }
        return ApiError::new(StatusCode::NOT_FOUND, "no such console file").into_response();
    };
    let mime = file.metadata.mimetype().to_owned();
    // Vite names its assets by content: they never change under a name.
    let cache = if path.starts_with("assets/") { "public, max-age=31536000, immutable" } else { "no-store" };
    let mut response = (StatusCode::OK, file.data.into_owned()).into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&mime) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

/// The headers every answer carries; the console's policy on all of them (an API answer
/// opened in a browser runs nothing either).
pub(super) async fn secure_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others_and_the_csrf_token_follows_it() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; __Host-wardlock-session=abc123; b=2"));
        assert_eq!(session_cookie(&headers).as_deref(), Some("abc123"));
        headers.insert(header::COOKIE, HeaderValue::from_static("__Host-wardlock-session="));
        assert_eq!(session_cookie(&headers), None);
        assert_ne!(csrf_token("abc123"), csrf_token("abc124"));
        assert_eq!(csrf_token("abc123").len(), 32);
        let cookie = set_cookie("abc123", rules::MAX_LIFETIME);
        let cookie = cookie.to_str().unwrap_or_default();
        for attribute in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
            assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
        }
    }
}
