use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use wardlock_store::secrets::{
    systemd_creds_available, CredentialFileStore, DataKey, KeyringSecretStore, MemorySecretStore, Sealing,
    SecretError, SecretStore, DATA_KEY,
};

use crate::util::{contains_bytes, Workstation};

#[test]
fn data_key_is_made_once_and_reused() {
    let ws = Workstation::new();
    let store = ws.open();
    let key = DataKey::open_or_create(&ws.secrets, &store).unwrap();
    let sealed = key.seal(b"seed bytes", b"n.nurse").unwrap();
    drop(store);
    let store = ws.open();
    let again = DataKey::open_or_create(&ws.secrets, &store).unwrap();
    assert_eq!(&again.open(&sealed, b"n.nurse").unwrap()[..], b"seed bytes");
}

#[test]
fn sealed_value_is_bound_to_its_context_and_detects_changes() {
    let ws = Workstation::new();
    let key = ws.key(&ws.open());
    let mut sealed = key.seal(b"seed bytes", b"n.nurse").unwrap();
    assert!(matches!(key.open(&sealed, b"d.doctor"), Err(SecretError::Unseal)));
    let last = sealed.len() - 1;
    sealed[last] ^= 1;
    assert!(matches!(key.open(&sealed, b"n.nurse"), Err(SecretError::Unseal)));
}

#[test]
fn missing_key_is_an_error_never_a_new_key() {
    let ws = Workstation::new();
    let store = ws.open();
    ws.key(&store);
    let empty = MemorySecretStore::default();
    let err = DataKey::open_or_create(&empty, &store).unwrap_err();
    assert!(matches!(err, SecretError::MissingKey { .. }), "{err}");
    assert!(err.to_string().contains("Restore the key from backup"), "{err}");
    assert!(empty.load(DATA_KEY).unwrap().is_none(), "no key may be made silently");
}

#[test]
fn wrong_key_is_refused() {
    let ws = Workstation::new();
    let store = ws.open();
    ws.key(&store);
    let other = MemorySecretStore::default();
    other.save(DATA_KEY, &[0x42; 32]).unwrap();
    let err = DataKey::open_or_create(&other, &store).unwrap_err();
    assert!(matches!(err, SecretError::WrongKey { .. }), "{err}");
}

#[test]
fn credential_file_is_owner_only_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    let store = CredentialFileStore::new(&creds, Sealing::None);
    let secret = [0x5c; 32];
    store.save("wardlock-data-key", &secret).unwrap();
    assert_eq!(&store.load("wardlock-data-key").unwrap().unwrap()[..], &secret);
    assert!(store.load("absent").unwrap().is_none());
    assert_eq!(std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777, 0o700);
    let file = creds.join("wardlock-data-key.key");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    // A second store on the same directory (the service after a restart) reads it too.
    let again = CredentialFileStore::new(&creds, Sealing::None);
    assert_eq!(&again.load("wardlock-data-key").unwrap().unwrap()[..], &secret);
}

#[test]
fn credential_file_sealed_with_systemd_creds() {
    if !systemd_creds_available() {
        eprintln!("SKIPPED: systemd-creds cannot seal here (not installed, or not root so no host key); the plain credential file test covers the rest");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = CredentialFileStore::new(dir.path(), Sealing::SystemdCreds);
    let secret: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect();
    store.save("wardlock-data-key", &secret).unwrap();
    assert_eq!(&store.load("wardlock-data-key").unwrap().unwrap()[..], &secret[..]);
    let file = dir.path().join("wardlock-data-key.cred");
    let bytes = std::fs::read(&file).unwrap();
    assert!(!contains_bytes(&bytes, &secret), "sealed file holds the key in clear");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    // The credential is bound to its name: renamed, it does not open.
    std::fs::rename(&file, dir.path().join("other.cred")).unwrap();
    assert!(store.load("other").is_err());
}

/// Runs inside `keyctl session`, started by the test below.
#[test]
fn keyring_backend_child() {
    if std::env::var_os("WARDLOCK_TEST_KEYRING_CHILD").is_none() {
        return;
    }
    let service = format!("wardlock-test-{}", std::process::id());
    let keyring = KeyringSecretStore::new(&service);
    assert!(keyring.load(DATA_KEY).unwrap().is_none());
    let ws = Workstation::new();
    let store = ws.open();
    let key = DataKey::open_or_create(&keyring, &store).unwrap();
    let sealed = key.seal(b"seed", b"u").unwrap();
    // A fresh handle, as after a service restart within the same boot.
    let again = DataKey::open_or_create(&KeyringSecretStore::new(&service), &store).unwrap();
    assert_eq!(&again.open(&sealed, b"u").unwrap()[..], b"seed");
    println!("keyring-child-ok");
}

#[test]
fn keyring_backend_round_trips_under_a_keyctl_session() {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("keyctl")
        .args(["session", "-"])
        .arg(&exe)
        .args(["--exact", "secrets::keyring_backend_child", "--nocapture", "--test-threads", "1"])
        .env("WARDLOCK_TEST_KEYRING_CHILD", "1")
        .output()
        .expect("keyctl is needed (apt-get install keyutils; `make setup` does it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("keyring-child-ok"), "the child did not run the keyring test:\n{stdout}");
}

#[test]
fn processes_starting_together_agree_on_one_data_key() {
    // The service and wardlockctl opening a new database at once, many times over.
    for _ in 0..5 {
        let ws = Workstation::new();
        let db = ws.db_path();
        let keys = ws.dir.path().join("keys");
        drop(crate::util::open_store(&db));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (db, keys) = (db.clone(), keys.clone());
                std::thread::spawn(move || {
                    let store = crate::util::open_store(&db);
                    let files = CredentialFileStore::new(&keys, Sealing::None);
                    DataKey::open_or_create(&files, &store).unwrap()
                })
            })
            .collect();
        let keys: Vec<DataKey> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let sealed = keys[0].seal(b"seed", b"n.nurse").unwrap();
        for key in &keys[1..] {
            assert_eq!(&key.open(&sealed, b"n.nurse").unwrap()[..], b"seed", "two different keys were made");
        }
    }
}
