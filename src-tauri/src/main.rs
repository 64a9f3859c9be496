//! `wardlock`, the session guard: a tray app that warns, locks every monitor and asks
//! `wardlockd` whether an unlock is good. It holds no secret and opens no database.

mod commands;
mod guard;
mod idle;
mod instance;
mod keymap;
mod link;
mod phi;
mod platform;
mod screen;
mod session;
mod tray;
mod webkit;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context, Result};
use clap::Parser;
use tauri::Manager;
use tokio::sync::mpsc;

use wardlock_core::lock::LockReason;
use wardlock_core::protocol::local::ClientRole;

use crate::commands::AppState;
use crate::guard::{Command, GuardLoop, Screen};
use crate::link::ServiceLink;
use crate::screen::TauriScreen;

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

const DEFAULT_SOCKET: &str = "/run/wardlock/agent.sock";

/// Wardlock's session guard: locks this session when it is left idle and unlocks it for
/// a clinician's user ID and PIN or TOTP code, as decided by the Wardlock service.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Examples:\n  wardlock                       start the guard (once per session)\n  wardlock --lock                lock now (a keyboard shortcut can run this)\n  wardlock --socket demo/agent/agent.sock   use a wardlockd started with --dev"
)]
struct Args {
    /// wardlockd's socket.
    #[arg(long, env = "WARDLOCK_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Ask the guard already running in this session to lock now, then exit.
    #[arg(long, group = "ask")]
    lock: bool,
    /// Open the running guard's enrollment window (as its tray menu does), then exit.
    #[arg(long, group = "ask")]
    enroll: bool,
    /// Open the running guard's quit window (as its tray menu does), then exit. Only an
    /// administrator's credentials, checked by wardlockd, end the guard.
    #[arg(long, group = "ask")]
    quit: bool,
}

fn main() {
    wardlock_cli_docs::generate_if_asked::<Args>();
    // Before any thread exists. The guard needs no GPU: without WebKit's compositing mode
    // the lock page's web process takes about half the memory (183 → 101 MB PSS measured
    // under Xvfb), and without GDK's GL the waiting guard does not load Mesa and LLVM
    // (94 → 61 MB PSS). A thin client's GPU memory is not spent on a PIN pad.
    std::env::set_var("WEBKIT_DISABLE_COMPOSITING_MODE", "1");
    std::env::set_var("GDK_GL", "disable");
    only_the_systems_modules();
    // Structured lines on standard error (the journal keeps them under the guard's
    // unit); `WARDLOCK_LOG` filters, `info` by default.
    let filter = tracing_subscriber::EnvFilter::try_from_env("WARDLOCK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
    if let Err(e) = run() {
        eprintln!("wardlock: {e:#}");
        std::process::exit(1);
    }
}

/// Variables that make GTK, GIO, GDK-Pixbuf, GStreamer or WebKit load code (or a web
/// process) from where they say: the process that holds the lock runs only its own code
/// and the system's. (wardlockd refuses a guard with any user-writable code mapped in.)
const MODULE_VARIABLES: &[&str] = &[
    "GTK_MODULES",
    "GTK3_MODULES",
    "GTK_PATH",
    "GTK_EXE_PREFIX",
    "GTK_DATA_PREFIX",
    "GTK_IM_MODULE_FILE",
    "GIO_EXTRA_MODULES",
    "GIO_MODULE_DIR",
    "GDK_PIXBUF_MODULE_FILE",
    "GDK_PIXBUF_MODULEDIR",
    "GST_PLUGIN_PATH",
    "GST_PLUGIN_PATH_1_0",
    "GST_PLUGIN_SYSTEM_PATH",
    "GST_PLUGIN_SYSTEM_PATH_1_0",
    "WEBKIT_EXEC_PATH",
    "WEBKIT_INJECTED_BUNDLE_PATH",
];

/// GTK also loads the modules its settings name (`gtk-modules` in `settings.ini` under
/// `$XDG_CONFIG_HOME`, which the shared account writes, and any folder the guard made
/// would be the shared account's too): the guard's configuration comes from the
/// system's folder only (`/etc/xdg`, root's). Runs before any thread exists.
fn only_the_systems_modules() {
    for variable in MODULE_VARIABLES {
        std::env::remove_var(variable);
    }
    std::env::set_var("XDG_CONFIG_HOME", "/etc/xdg");
    std::env::set_var("XDG_CONFIG_DIRS", "/etc/xdg");
}

fn run() -> Result<()> {
    let args = Args::parse();
    let ask = if args.lock {
        Some(instance::Request::Lock)
    } else if args.enroll {
        Some(instance::Request::Enroll)
    } else if args.quit {
        Some(instance::Request::Quit)
    } else {
        check_display()?;
        None
    };
    let listener = match (instance::claim(ask)?, ask) {
        (instance::Instance::Forwarded, ask) => {
            let what = match ask {
                Some(instance::Request::Lock) => "the running guard was asked to lock",
                Some(instance::Request::Enroll) => "the running guard opens its enrollment window",
                Some(instance::Request::Quit) => "the running guard opens its quit window",
                None => "a guard already runs in this session",
            };
            eprintln!("wardlock: {what}");
            return Ok(());
        }
        (instance::Instance::First(_), Some(_)) => {
            anyhow::bail!("no guard runs in this session; start `wardlock` first");
        }
        (instance::Instance::First(listener), None) => listener,
    };

    // One worker is plenty for a socket, a timer and the IPC commands, and keeps the
    // guard's footprint small.
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("wardlock-async")
            .enable_all()
            .build()
            .expect("the async runtime cannot start")
    });
    tauri::async_runtime::set(runtime.handle().clone());

    let socket = args.socket;
    tauri::Builder::default()
        .invoke_handler(tauri::generate_handler![
            commands::lock_screen_state,
            commands::unlock,
            commands::sign_out,
            commands::hold,
            commands::enroll_authorize,
            commands::enroll_set_pin,
            commands::enroll_start_totp,
            commands::enroll_confirm_totp,
            commands::enroll_close,
            commands::admin_quit,
            commands::admin_close,
        ])
        .setup(move |app| {
            platform::survive_x_errors();
            platform::pin_gtk_modules();
            let handle = app.handle().clone();
            let (link_tx, link_rx) = mpsc::unbounded_channel();
            let link = ServiceLink::spawn(socket.clone(), ClientRole::Guard, link_tx);
            let status = Arc::new(Mutex::new(guard::initial_status()));
            let screen = Arc::new(TauriScreen::new(handle.clone(), link.clone()));
            let (guard_tx, guard_rx) = mpsc::unbounded_channel();
            let status_item = tray::build(&handle)?;
            screen.on_status(move |status| {
                let _ = status_item.set_text(tray::status_line(status));
            });
            screen::watch_monitors(&handle, screen.clone());
            app.manage(AppState {
                link: link.clone(),
                socket: socket.clone(),
                guard: guard_tx.clone(),
                status: status.clone(),
                screen: screen.clone(),
                recent_users: Mutex::new(Default::default()),
                enroll_link: tokio::sync::Mutex::new(None),
            });
            let (lock_tx, enroll_app) = (guard_tx.clone(), handle.clone());
            instance::serve(listener, move |request| match request {
                instance::Request::Lock => {
                    let _ = lock_tx.send(Command::LockNow(LockReason::Manual));
                }
                instance::Request::Enroll => {
                    let app = enroll_app.clone();
                    let _ = enroll_app.run_on_main_thread(move || tray::open_enrollment(&app));
                }
                instance::Request::Quit => {
                    let app = enroll_app.clone();
                    let _ = enroll_app.run_on_main_thread(move || tray::open_quit(&app));
                }
            });
            let phi = phi::Phi::start(link.clone(), guard_tx.clone());
            let guard_loop = GuardLoop::new(screen.clone() as Arc<dyn Screen>, link, status, phi);
            tauri::async_runtime::spawn(guard_loop.run(guard_rx, link_rx));
            tauri::async_runtime::spawn(session::watch(guard_tx));
            tracing::info!(event = "guarding", "guarding this session (service socket {})", socket.display());
            Ok(())
        })
        .build(tauri::generate_context!())
        .context("the guard's windows could not be set up")?
        .run(|_, event| {
            // The guard lives in the tray: closing its last window must not end it.
            if let tauri::RunEvent::ExitRequested { code: None, api, .. } = event {
                api.prevent_exit();
            }
        });
    Ok(())
}

/// GTK aborts the process without a display; say so plainly instead.
fn check_display() -> Result<()> {
    let has_display = std::env::var_os("DISPLAY").is_some_and(|d| !d.is_empty())
        || std::env::var_os("WAYLAND_DISPLAY").is_some_and(|d| !d.is_empty());
    if !has_display {
        anyhow::bail!(
            "no graphical display here (DISPLAY and WAYLAND_DISPLAY are unset). The guard runs in a desktop session; to see it on a server, run `make demo-headless`, which starts it under Xvfb and saves screenshots"
        );
    }
    Ok(())
}
