fn main() {
    // The pages are embedded at compile time; a rebuilt front end must rebuild the guard
    // (without this, `make test` after a change to ui/ tests the previous pages).
    println!("cargo:rerun-if-changed=../ui/dist");
    // Every command the front end may call gets allow-/deny- permissions, which the
    // capabilities in ./capabilities hand out per window (a lock window can only unlock).
    let commands = &[
        "lock_screen_state",
        "unlock",
        "sign_out",
        "hold",
        "enroll_authorize",
        "enroll_set_pin",
        "enroll_start_totp",
        "enroll_confirm_totp",
        "enroll_close",
        "admin_quit",
        "admin_close",
    ];
    tauri_build::try_build(
        tauri_build::Attributes::new().app_manifest(tauri_build::AppManifest::new().commands(commands)),
    )
    .expect("tauri-build failed: check tauri.conf.json and capabilities/");
}
