//! The central collector. This is a placeholder so the workspace layout is in place;
//! the HTTP API, storage and sync arrive with the collector issue.

fn main() {
    eprintln!(
        "wardlock-collector {}: not built yet (protocol v{}); see ARCHITECTURE.md",
        env!("CARGO_PKG_VERSION"),
        wardlock_core::protocol::collector::API_VERSION
    );
    std::process::exit(2);
}
