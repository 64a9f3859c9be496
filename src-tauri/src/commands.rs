//! The IPC commands the web front end may call. Which window may call which is set by
//! the capabilities in `capabilities/` (a lock window can only read its state and try an
//! unlock). Errors reach the page as `{code, message}` and never carry a secret.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tauri::{AppHandle, Manager, State, WebviewWindow};
use tokio::sync::mpsc;

use wardlock_core::clock::UtcMillis;
use wardlock_core::protocol::local::{
    AdminCredentials, ClientRole, EnrollReply, EnrollRequest, HoldReply, QuitReply, Request, Response,
    UnlockReply, UnlockRequest,
};
use wardlock_core::secret::SecretString;

use crate::guard::{Command, Status};
use crate::link::{LinkError, ServiceLink};
use crate::screen::TauriScreen;

/// User IDs offered on the lock screen: the last few who unlocked this session.
const RECENT_USERS: usize = 5;

pub struct AppState {
    pub link: ServiceLink,
    pub socket: std::path::PathBuf,
    pub guard: mpsc::UnboundedSender<Command>,
    pub status: Arc<Mutex<Status>>,
    pub screen: Arc<TauriScreen>,
    pub recent_users: Mutex<VecDeque<String>>,
    /// The enrollment window's own connection: its ticket is valid on it alone.
    pub enroll_link: tokio::sync::Mutex<Option<ServiceLink>>,
}

#[derive(Debug, Serialize)]
pub struct CommandError {
    code: &'static str,
    message: String,
}

impl CommandError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

impl From<LinkError> for CommandError {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::Unavailable => Self::new(
                "service_unavailable",
                "Unlock is unavailable: the Wardlock service is not running. Call IT.",
            ),
            LinkError::Refused(why) => Self::new("refused", why),
        }
    }
}

fn unexpected(response: &Response) -> CommandError {
    let kind = serde_json::to_value(response)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
        .unwrap_or_default();
    CommandError::new("protocol", format!("unexpected answer from the service ({kind})"))
}

/// An empty field is no factor at all.
fn secret(value: Option<SecretString>) -> Option<SecretString> {
    value.filter(|v| !v.is_empty())
}

#[derive(Debug, Serialize)]
pub struct LockScreenState {
    pub status: Status,
    pub recent_users: Vec<String>,
}

#[tauri::command]
pub fn lock_screen_state(state: State<'_, AppState>) -> LockScreenState {
    let status = state.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let recent_users = state.recent_users.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
    LockScreenState { status, recent_users }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UnlockInput {
    user: String,
    // Secrets arrive as SecretString: wiped on drop, never shown by Debug.
    pin: Option<SecretString>,
    totp: Option<SecretString>,
    emergency_reason: Option<String>,
}

impl UnlockInput {
    /// What `wardlockd` is asked (an unlock, a sign-out, a hold): an empty user ID is
    /// refused here, an empty field is no factor. The service ignores a break-glass
    /// reason where break-glass does not apply.
    fn request(self) -> Result<UnlockRequest, CommandError> {
        let user = self.user.trim().to_owned();
        if user.is_empty() {
            return Err(CommandError::new("bad_input", "Enter your user ID."));
        }
        Ok(UnlockRequest {
            user,
            pin: secret(self.pin),
            totp: secret(self.totp),
            emergency_reason: self.emergency_reason.filter(|r| !r.trim().is_empty()),
        })
    }
}

impl AppState {
    /// Offered first on the lock screen next time.
    fn remember_user(&self, user: &str) {
        let mut recent = self.recent_users.lock().unwrap_or_else(|p| p.into_inner());
        recent.retain(|u| u != user);
        recent.push_front(user.to_owned());
        recent.truncate(RECENT_USERS);
    }
}

#[derive(Debug, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum UnlockOutcome {
    Granted {
        display_name: String,
    },
    Refused {
        attempts_left: u32,
        retry_after_secs: Option<u64>,
        /// Break-glass is closed here until the workstation's lockout ends.
        emergency_closed: bool,
    },
}

#[tauri::command]
pub async fn unlock(input: UnlockInput, state: State<'_, AppState>) -> Result<UnlockOutcome, CommandError> {
    match state.link.call(Request::Unlock(input.request()?)).await? {
        Response::Unlock(UnlockReply::Granted {
            user,
            display_name,
            emergency,
            last_unlock,
            failures_since_last_unlock,
        }) => {
            state.remember_user(&user);
            // The lock windows go only now: `granted` is sent after the audit entry is durable.
            let _ = state.guard.send(Command::Unlocked { user, display_name: display_name.clone() });
            state.screen.notice(welcome(&display_name, emergency, last_unlock, failures_since_last_unlock));
            Ok(UnlockOutcome::Granted { display_name })
        }
        Response::Unlock(UnlockReply::Refused { attempts_left, retry_after_secs, emergency_closed }) => {
            Ok(UnlockOutcome::Refused { attempts_left, retry_after_secs, emergency_closed })
        }
        other => Err(unexpected(&other)),
    }
}

/// "Sign out" at the lock screen: the clinician's PIN (or code), checked by `wardlockd`;
/// their PHI applications close and the lock stays for the next clinician.
#[tauri::command]
pub async fn sign_out(input: UnlockInput, state: State<'_, AppState>) -> Result<UnlockOutcome, CommandError> {
    match state.link.call(Request::SignOut(input.request()?)).await? {
        Response::Unlock(UnlockReply::Granted { user, display_name, .. }) => {
            let _ = state.guard.send(Command::SignedOut { user });
            Ok(UnlockOutcome::Granted { display_name })
        }
        Response::Unlock(UnlockReply::Refused { attempts_left, retry_after_secs, emergency_closed }) => {
            Ok(UnlockOutcome::Refused { attempts_left, retry_after_secs, emergency_closed })
        }
        other => Err(unexpected(&other)),
    }
}

#[derive(Debug, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum HoldOutcome {
    Granted { display_name: String, hold_secs: u64 },
    Refused { attempts_left: u32, retry_after_secs: Option<u64> },
    NotAllowed { why: String },
}

/// "Keep open" at the lock screen: an unlock that also holds the session open for the
/// policy's length, where it allows holds. `wardlockd` decides and audits.
#[tauri::command]
pub async fn hold(input: UnlockInput, state: State<'_, AppState>) -> Result<HoldOutcome, CommandError> {
    match state.link.call(Request::Hold(input.request()?)).await? {
        Response::Hold(HoldReply::Granted { user, display_name, hold_secs, .. }) => {
            state.remember_user(&user);
            let length = std::time::Duration::from_secs(hold_secs);
            let _ = state.guard.send(Command::Held { user, display_name: display_name.clone(), length });
            let minutes = hold_secs.div_ceil(60);
            let name = gtk::glib::markup_escape_text(&display_name);
            state
                .screen
                .notice(format!("<b>Held open for {minutes} min by {name}.</b>\nThis hold is audited."));
            Ok(HoldOutcome::Granted { display_name, hold_secs })
        }
        Response::Hold(HoldReply::Refused { attempts_left, retry_after_secs }) => {
            Ok(HoldOutcome::Refused { attempts_left, retry_after_secs })
        }
        Response::Hold(HoldReply::NotAllowed { why }) => Ok(HoldOutcome::NotAllowed { why }),
        other => Err(unexpected(&other)),
    }
}

/// "Welcome back", with the last unlock and the failures since (NIST AC-9).
fn welcome(name: &str, emergency: bool, last: Option<UtcMillis>, failures: u32) -> String {
    let name = gtk::glib::markup_escape_text(name);
    let mut text = format!("<b>Welcome, {name}.</b>");
    if emergency {
        text.push_str("\nEmergency access: this session is flagged for review.");
    }
    match last {
        Some(at) => text.push_str(&format!("\nYour last unlock here: {}", local_time(at))),
        None => text.push_str("\nThis is your first unlock on this workstation."),
    }
    if failures > 0 {
        let s = if failures == 1 { "" } else { "s" };
        text.push_str(&format!(
            "\n<b>{failures} failed attempt{s} with your ID since then.</b> Not you? Tell IT."
        ));
    }
    text
}

fn local_time(at: UtcMillis) -> String {
    i64::try_from(at.unix_seconds())
        .ok()
        .and_then(|secs| gtk::glib::DateTime::from_unix_local(secs).ok())
        .and_then(|t| t.format("%Y-%m-%d %H:%M").ok())
        .map_or_else(|| at.to_rfc3339(), |t| t.to_string())
}

// --- Enrollment -----------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AdminInput {
    admin_user: String,
    admin_pin: Option<SecretString>,
    admin_totp: Option<SecretString>,
}

impl AdminInput {
    fn credentials(self) -> AdminCredentials {
        AdminCredentials {
            user: self.admin_user.trim().to_owned(),
            pin: secret(self.admin_pin),
            totp: secret(self.admin_totp),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum EnrollOutcome {
    Authorized { ticket: String, expires_in_secs: u64 },
    NotAuthorized { attempts_left: u32, retry_after_secs: Option<u64> },
    PinSet,
    TotpStarted { qr_svg: String, secret_uri: String },
    TotpConfirmed,
    Refused { message: String },
}

async fn enroll_call(state: &AppState, step: EnrollRequest) -> Result<EnrollOutcome, CommandError> {
    let mut slot = state.enroll_link.lock().await;
    if slot.is_none() {
        // Pushes to a tool connection are of no interest; the receiver is dropped.
        let (tx, _rx) = mpsc::unbounded_channel();
        *slot = Some(ServiceLink::spawn(state.socket.clone(), ClientRole::Tool, tx));
    }
    let link = slot.as_ref().cloned().ok_or_else(|| CommandError::new("internal", "no connection"))?;
    drop(slot);
    let response = link.call(Request::Enroll(step)).await?;
    Ok(match response {
        Response::Enroll(EnrollReply::Authorized { ticket, expires_in_secs }) => {
            EnrollOutcome::Authorized { ticket, expires_in_secs }
        }
        Response::Enroll(EnrollReply::NotAuthorized { attempts_left, retry_after_secs }) => {
            EnrollOutcome::NotAuthorized { attempts_left, retry_after_secs }
        }
        Response::Enroll(EnrollReply::PinSet) => EnrollOutcome::PinSet,
        Response::Enroll(EnrollReply::TotpStarted { otpauth_uri }) => {
            let qr_svg = qr_svg(&otpauth_uri)?;
            EnrollOutcome::TotpStarted { qr_svg, secret_uri: otpauth_uri }
        }
        Response::Enroll(EnrollReply::TotpConfirmed) => EnrollOutcome::TotpConfirmed,
        Response::Enroll(EnrollReply::Refused { message }) => EnrollOutcome::Refused { message },
        other => return Err(unexpected(&other)),
    })
}

fn qr_svg(uri: &str) -> Result<String, CommandError> {
    let code = qrcode::QrCode::new(uri.as_bytes())
        .map_err(|e| CommandError::new("internal", format!("the QR code could not be made: {e}")))?;
    Ok(code.render::<qrcode::render::svg::Color<'_>>().min_dimensions(240, 240).quiet_zone(true).build())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthorizeInput {
    #[serde(flatten)]
    admin: AdminInput,
    user: String,
    display_name: Option<String>,
}

#[tauri::command]
pub async fn enroll_authorize(
    input: AuthorizeInput,
    state: State<'_, AppState>,
) -> Result<EnrollOutcome, CommandError> {
    let user = input.user.trim().to_owned();
    if user.is_empty() {
        return Err(CommandError::new("bad_input", "Enter the clinician's user ID."));
    }
    let display_name = input.display_name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    enroll_call(&state, EnrollRequest::Authorize { admin: input.admin.credentials(), user, display_name })
        .await
}

#[tauri::command]
pub async fn enroll_set_pin(
    ticket: String,
    pin: SecretString,
    state: State<'_, AppState>,
) -> Result<EnrollOutcome, CommandError> {
    enroll_call(&state, EnrollRequest::SetPin { ticket, pin }).await
}

#[tauri::command]
pub async fn enroll_start_totp(
    ticket: String,
    state: State<'_, AppState>,
) -> Result<EnrollOutcome, CommandError> {
    enroll_call(&state, EnrollRequest::StartTotp { ticket }).await
}

#[tauri::command]
pub async fn enroll_confirm_totp(
    ticket: String,
    code: SecretString,
    state: State<'_, AppState>,
) -> Result<EnrollOutcome, CommandError> {
    enroll_call(&state, EnrollRequest::ConfirmTotp { ticket, code }).await
}

#[tauri::command]
pub async fn enroll_close(window: WebviewWindow, state: State<'_, AppState>) -> Result<(), CommandError> {
    // Dropping the connection ends the ticket with it.
    state.enroll_link.lock().await.take();
    let _ = window.destroy();
    crate::webkit::end_network_process_when_unused(window.app_handle());
    Ok(())
}

// --- Administrator: quit --------------------------------------------------------------

#[derive(Debug, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum QuitOutcome {
    Quitting,
    Refused { attempts_left: u32, retry_after_secs: Option<u64> },
}

#[tauri::command]
pub async fn admin_quit(
    input: AdminInput,
    app: AppHandle,
    state: State<'_, AppState>,
) -> Result<QuitOutcome, CommandError> {
    if state.screen.is_locked() {
        return Err(CommandError::new("locked", "Unlock the workstation first."));
    }
    match state.link.call(Request::Quit(input.credentials())).await? {
        Response::Quit(QuitReply::Authorized) => {
            tracing::info!(event = "quit_approved", "quitting with an administrator's approval");
            app.exit(0);
            Ok(QuitOutcome::Quitting)
        }
        Response::Quit(QuitReply::Refused { attempts_left, retry_after_secs }) => {
            Ok(QuitOutcome::Refused { attempts_left, retry_after_secs })
        }
        other => Err(unexpected(&other)),
    }
}

#[tauri::command]
pub fn admin_close(window: WebviewWindow) {
    let _ = window.destroy();
    crate::webkit::end_network_process_when_unused(window.app_handle());
}

pub fn state(app: &AppHandle) -> State<'_, AppState> {
    app.state::<AppState>()
}
