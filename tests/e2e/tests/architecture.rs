//! The architecture's invariants (ARCHITECTURE.md), checked on the source tree as
//! rust-analyzer's tidy tests do: a rule that nothing enforces drifts.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Every `.rs` file under `dir`, relative to the workspace.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The file's code before its `#[cfg(test)]` part (our tests modules come last).
fn product_code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    match text.find("#[cfg(test)]") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// Names in a manifest's `[dependencies]` tables (target-specific ones too).
fn dependencies(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).unwrap();
    let mut names = Vec::new();
    let mut in_deps = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_deps = line == "[dependencies]"
                || (line.starts_with("[target.") && line.ends_with(".dependencies]"));
            continue;
        }
        if in_deps {
            if let Some((name, _)) = line.split_once('=') {
                let name = name.trim().trim_end_matches(".workspace").to_owned();
                if !name.is_empty() && !name.starts_with('#') {
                    names.push(name);
                }
            }
        }
    }
    names
}

#[test]
fn the_core_has_no_io_dependency() {
    // Pure computation only: crypto, encodings, time arithmetic, serde formats. A new
    // dependency of the core is a decision: add it here with a reason, or put the code
    // in a shell.
    const PURE: &[&str] = &[
        "argon2",
        "base64",
        "chacha20poly1305",
        "ed25519-dalek",
        "hex",
        "hpke",
        "rand_core",
        "humantime",
        "humantime-serde",
        "serde",
        "serde_json",
        "sha2",
        "subtle",
        "thiserror",
        "time",
        "toml",
        "toml_edit",
        "totp-rs",
        "zeroize",
        "utoipa",
    ];
    let deps = dependencies(&workspace().join("crates/wardlock-core/Cargo.toml"));
    assert!(deps.contains(&"serde".to_owned()), "the manifest was not read: {deps:?}");
    let impure: Vec<_> = deps.iter().filter(|d| !PURE.contains(&d.as_str())).collect();
    assert!(impure.is_empty(), "wardlock-core gained dependencies that are not known to be pure: {impure:?}");
}

#[test]
fn the_core_does_no_io_of_its_own() {
    const IO: &[&str] = &[
        "std::fs",
        "std::net",
        "std::process",
        "std::thread",
        "std::env",
        "std::io::stdin",
        "SystemTime",
        "Instant::now",
        "getrandom",
        "OsRng",
        "thread_rng",
    ];
    let mut found = Vec::new();
    for file in rust_files(&workspace().join("crates/wardlock-core/src")) {
        let code = product_code(&file);
        for needle in IO {
            if code.contains(needle) {
                found.push(format!("{}: {needle}", file.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "the core must not do IO (time and randomness come in as arguments):\n{}",
        found.join("\n")
    );
}

#[test]
fn only_the_service_builds_audit_entries() {
    let root = workspace();
    let service = root.join("crates/wardlock-agent/src/service");
    let definition = root.join("crates/wardlock-core/src/audit.rs");
    let mut offenders = Vec::new();
    let mut in_service = 0;
    for dir in ["crates", "src-tauri/src"] {
        for file in rust_files(&root.join(dir)) {
            let relative = file.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
            // Tests and benchmarks make entries of their own to test with.
            if file == definition || relative.contains("/tests/") || relative.contains("/benches/") {
                continue;
            }
            let code = product_code(&file);
            let builds = code.contains("AuditDraft::new") || code.contains("AuditDraft {");
            if file.starts_with(&service) {
                in_service += usize::from(builds);
            } else if builds {
                offenders.push(relative);
            }
        }
    }
    assert!(in_service > 0, "no audit entry is built in service/: the check looks in the wrong place");
    assert!(offenders.is_empty(), "audit entries built outside wardlock-agent's service/: {offenders:?}");
}

#[test]
fn dependencies_point_inward() {
    let root = workspace();
    let deps = |crate_dir: &str| dependencies(&root.join(crate_dir).join("Cargo.toml"));
    let core = deps("crates/wardlock-core");
    assert!(!core.iter().any(|d| d.starts_with("wardlock")), "the core depends on {core:?}");
    for shell in ["src-tauri", "crates/wardlock-collector"] {
        let d = deps(shell);
        assert!(d.contains(&"wardlock-core".to_owned()), "{shell} does not use the core: {d:?}");
        assert!(
            !d.iter().any(|d| d == "wardlock-agent"),
            "{shell} must not link the workstation service: {d:?}"
        );
    }
    // The one client of the local protocol stands between the core and the shells.
    let client = deps("crates/wardlock-client");
    assert!(
        client.contains(&"wardlock-core".to_owned()) && !client.iter().any(|d| d == "wardlock-agent"),
        "{client:?}"
    );
    for user in ["src-tauri", "crates/wardlockctl"] {
        assert!(
            deps(user).contains(&"wardlock-client".to_owned()),
            "{user} talks to wardlockd without the client"
        );
    }
    // The test kit starts real processes for tests; nothing shipped links it.
    for shipped in [
        "crates/wardlock-core",
        "crates/wardlock-agent",
        "crates/wardlock-client",
        "crates/wardlockctl",
        "crates/wardlock-collector",
        "src-tauri",
    ] {
        assert!(!deps(shipped).iter().any(|d| d == "wardlock-testkit"), "{shipped} links the test kit");
    }
    // The guard, in the shared session, holds no database at all.
    let guard = deps("src-tauri");
    assert!(!guard.iter().any(|d| d == "rusqlite" || d == "keyring"), "the guard links storage: {guard:?}");
}
