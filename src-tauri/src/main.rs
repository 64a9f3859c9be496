//! The session guard. This is a placeholder so the workspace layout is in place;
//! the Tauri tray app arrives with the desktop guard issue.

fn main() {
    eprintln!(
        "wardlock {}: the session guard is not built yet (local protocol v{}); see ARCHITECTURE.md",
        env!("CARGO_PKG_VERSION"),
        wardlock_core::protocol::local::PROTOCOL_VERSION
    );
    std::process::exit(2);
}
