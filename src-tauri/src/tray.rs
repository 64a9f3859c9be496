//! The tray icon. Linux delivers no clicks on tray icons (libappindicator), so every
//! action is in its menu; the first line says what the guard is doing.

use tauri::menu::{Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::TrayIconBuilder;
use tauri::{AppHandle, Manager, WebviewUrl, WebviewWindowBuilder, Wry};

use wardlock_core::lock::LockReason;

use crate::commands;
use crate::guard::{Command, StateView, Status};

pub fn status_line(status: &Status) -> String {
    let state = match status.state {
        StateView::Active if status.hold.is_some() => {
            let (by, until) = status.hold.as_ref().map(|h| (h.by.as_str(), h.until_unix)).unwrap_or_default();
            let until = gtk::glib::DateTime::from_unix_local(until)
                .ok()
                .and_then(|t| t.format("%H:%M").ok())
                .map_or_else(|| "its end".to_owned(), |t| t.to_string());
            format!("Held open by {by} until {until} (audited)")
        }
        StateView::Active => match &status.policy {
            Some(p) => format!(
                "Active: locks after {} idle",
                clock(status.idle_timeout_secs.unwrap_or(p.idle_timeout_secs))
            ),
            None => "Active".to_owned(),
        },
        StateView::Warning { seconds_left } => format!("Locking in {}", clock(seconds_left)),
        StateView::Locked { .. } => "Locked".to_owned(),
    };
    let mut line = state;
    if status.idle_unavailable.is_some() {
        line.push_str(" · idle detection unavailable");
    }
    if !status.service_available {
        line.push_str(" · service unreachable");
    }
    line
}

fn clock(secs: u64) -> String {
    format!("{}:{:02}", secs / 60, secs % 60)
}

pub fn build(app: &AppHandle) -> tauri::Result<MenuItem<Wry>> {
    let status = MenuItem::with_id(app, "status", "Starting…", false, None::<&str>)?;
    let lock = MenuItem::with_id(app, "lock", "Lock now", true, None::<&str>)?;
    let enroll = MenuItem::with_id(app, "enroll", "Enroll a clinician…", true, None::<&str>)?;
    let about = MenuItem::with_id(
        app,
        "about",
        format!(
            "Wardlock {} (protocol v{})",
            env!("CARGO_PKG_VERSION"),
            wardlock_core::protocol::local::PROTOCOL_VERSION
        ),
        false,
        None::<&str>,
    )?;
    let quit = MenuItem::with_id(app, "quit", "Quit (administrator)…", true, None::<&str>)?;
    let menu = Menu::with_items(
        app,
        &[
            &status,
            &PredefinedMenuItem::separator(app)?,
            &lock,
            &enroll,
            &PredefinedMenuItem::separator(app)?,
            &about,
            &quit,
        ],
    )?;
    let mut tray =
        TrayIconBuilder::with_id("wardlock").menu(&menu).tooltip("Wardlock").on_menu_event(|app, event| {
            match event.id().as_ref() {
                "lock" => {
                    let _ = commands::state(app).guard.send(Command::LockNow(LockReason::Manual));
                }
                "enroll" => open_enrollment(app),
                "quit" => open_quit(app),
                _ => {}
            }
        });
    if let Some(icon) = app.default_window_icon() {
        tray = tray.icon(icon.clone());
    }
    tray.build(app)?;
    Ok(status)
}

pub fn open_quit(app: &AppHandle) {
    open_window(app, "admin", "Wardlock: administrator", 440.0, 460.0);
}

pub fn open_enrollment(app: &AppHandle) {
    open_window(app, "enroll", "Wardlock: enroll a clinician", 560.0, 760.0);
}

/// Opens (or brings forward) one of the guard's ordinary windows.
pub fn open_window(app: &AppHandle, label: &str, title: &str, width: f64, height: f64) {
    if commands::state(app).screen.is_locked() {
        return;
    }
    if let Some(window) = app.get_webview_window(label) {
        let _ = window.show();
        let _ = window.set_focus();
        return;
    }
    let built = WebviewWindowBuilder::new(app, label, WebviewUrl::App(format!("{label}.html").into()))
        .title(title)
        .inner_size(width, height)
        .center()
        // The window title follows the page's step, for screen readers (and tests).
        .on_document_title_changed(|window, title| {
            let _ = window.set_title(&title);
        })
        .build();
    match built {
        Ok(window) if label == "enroll" => {
            // However the window goes (its Close button or the window manager's), the
            // enrollment connection and its ticket go with it.
            let app = app.clone();
            window.on_window_event(move |event| {
                if let tauri::WindowEvent::Destroyed = event {
                    if let Ok(mut link) = commands::state(&app).enroll_link.try_lock() {
                        link.take();
                    }
                }
            });
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(event = "window_open_failed", "the {label} window could not be opened: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::{initial_status, HoldView};

    #[test]
    fn the_status_line_says_who_holds_the_session_open_and_until_when() {
        let mut status = initial_status();
        status.service_available = true;
        status.hold = Some(HoldView { by: "Nora N.".into(), until_unix: 1_795_000_000 });
        let line = status_line(&status);
        let clock = line
            .strip_prefix("Held open by Nora N. until ")
            .and_then(|rest| rest.strip_suffix(" (audited)"))
            .unwrap_or_else(|| panic!("{line}"));
        let digits: Vec<bool> = clock.chars().map(|c| c.is_ascii_digit()).collect();
        assert_eq!(digits, [true, true, false, true, true], "HH:MM, got {clock:?}");
        status.hold = None;
        assert_eq!(status_line(&status), "Active");
    }
}
