//! WebKit's helper processes around our webviews. WebKit keeps its network process for
//! the life of the guard once any webview existed (~30 MB PSS measured), though the
//! guard waits hours between locks with no webview at all: it is ended when no webview
//! is left, and WebKit starts a new one with the next page.

use std::time::Duration;

use tauri::{AppHandle, Manager};

/// Long enough for a destroyed window's webview to be gone.
const SETTLE: Duration = Duration::from_secs(2);

/// Ends WebKit's network process a moment from now if no webview is left by then.
pub fn end_network_process_when_unused(app: &AppHandle) {
    let app_main = app.clone();
    let _ = app.run_on_main_thread(move || {
        gtk::glib::timeout_add_local_once(SETTLE, move || {
            // On the main thread, as every webview is built: none can appear meanwhile.
            if app_main.webview_windows().is_empty() {
                for pid in children_named("WebKitNetworkPr") {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
            }
        });
    });
}

/// Our child processes whose name (`comm`, 15 characters at most) starts so.
fn children_named(prefix: &str) -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // "pid (comm) state ppid …": comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let comm = &stat[open + 1..close];
        let ppid = stat[close + 1..].split_whitespace().nth(1);
        if ppid == Some(me.as_str()) && comm.starts_with(prefix) {
            found.push(pid);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_its_own_children_by_name_and_no_one_else() {
        let mut child =
            std::process::Command::new("sleep").arg("30").spawn().unwrap_or_else(|e| panic!("{e}"));
        let pid = i32::try_from(child.id()).unwrap_or_default();
        assert_eq!(children_named("sleep"), vec![pid]);
        assert!(children_named("WebKitNetworkPr").is_empty());
        let _ = child.kill();
        let _ = child.wait();
    }
}
