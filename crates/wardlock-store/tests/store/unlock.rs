use std::process::Command;
use std::time::Duration;

use wardlock_core::clock::UtcMillis;
use wardlock_core::policy::{Policy, UnlockMethod, ValidPolicy};
use wardlock_core::secret::SecretString;
use wardlock_core::unlock::{Attempt, GrantMethod, Outcome, RefusalReason};
use wardlock_store::auth::{attempt_unlock, Context, Purpose, UnlockResult};
use wardlock_store::directory::{add_user, disable_user, Actor, NewUser};
use wardlock_store::secrets::DataKey;
use wardlock_store::Store;

use crate::util::{all_db_bytes, contains_bytes, now, Workstation};

const PIN: &str = "730284";

struct Fixture {
    ws: Workstation,
    store: Store,
    key: DataKey,
    policy: ValidPolicy,
    totp_secret: String,
}

impl Fixture {
    fn new(policy: Policy) -> Self {
        let policy = ValidPolicy::try_from(policy).unwrap();
        let ws = Workstation::new();
        let mut store = ws.open();
        let key = ws.key(&store);
        let new = NewUser {
            id: "n.nurse".into(),
            display_name: "Nora Nurse".into(),
            role: "nurse".into(),
            pin: Some(SecretString::new(PIN)),
            totp: true,
        };
        let enrollment = add_user(&mut store, &key, &policy, new, &Actor::default(), now()).unwrap();
        let uri = enrollment.totp_uri.unwrap();
        let totp_secret = uri.split("secret=").nth(1).unwrap().split('&').next().unwrap().to_owned();
        Self { ws, store, key, policy, totp_secret }
    }

    /// Drops the database handle and opens it again, as a service restart does.
    fn restart(&mut self) {
        let placeholder = crate::util::open_store(&self.ws.dir.path().join("placeholder.db"));
        drop(std::mem::replace(&mut self.store, placeholder));
        self.store = self.ws.open();
        self.key = self.ws.key(&self.store);
    }

    fn attempt(&mut self, attempt: Attempt, at: UtcMillis) -> UnlockResult {
        attempt_unlock(
            &mut self.store,
            &self.key,
            &self.policy,
            &attempt,
            Purpose::Unlock,
            &Context { os_account: Some("ward4".into()), ..Context::default() },
            at,
        )
        .unwrap()
    }
}

fn with_pin(user: &str, pin: &str) -> Attempt {
    Attempt { user_id: user.into(), pin: Some(SecretString::new(pin)), ..Attempt::default() }
}

fn with_totp(code: &str) -> Attempt {
    Attempt { user_id: "n.nurse".into(), totp: Some(SecretString::new(code)), ..Attempt::default() }
}

/// The current code from `oathtool`, an implementation independent of ours.
fn oathtool(secret_base32: &str) -> String {
    let out = Command::new("oathtool")
        .args(["--totp", "-b", secret_base32])
        .output()
        .expect("oathtool is needed (apt-get install oathtool; `make setup` does it)");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn right_pin_is_granted_and_audited_before_the_answer() {
    let mut f = Fixture::new(Policy::default());
    let result = f.attempt(with_pin("n.nurse", PIN), now());
    assert!(matches!(result.outcome, Outcome::Granted { method: GrantMethod::Pin, .. }), "{result:?}");
    assert_eq!(result.display_name.as_deref(), Some("Nora Nurse"));
    // Another connection (another process) already sees the entry: it is committed.
    let conn = rusqlite::Connection::open(f.ws.db_path()).unwrap();
    let (kind, user): (String, String) = conn
        .query_row("SELECT kind, user FROM audit WHERE seq = ?1", [result.audit_seq as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((kind.as_str(), user.as_str()), ("unlock_succeeded", "n.nurse"));
}

#[test]
fn five_wrong_pins_lock_out_and_the_lockout_survives_a_restart() {
    let mut f = Fixture::new(Policy::default());
    let mut t = now();
    for i in 1..=5u32 {
        let r = f.attempt(with_pin("n.nurse", "591846"), t);
        let Outcome::Refused { attempts_left, retry_after, .. } = r.outcome else { panic!("{r:?}") };
        assert_eq!(attempts_left, 5 - i);
        if i < 5 {
            t = t.saturating_add(retry_after.unwrap());
        } else {
            assert_eq!(retry_after, Some(Duration::from_secs(60)));
        }
    }
    let locked_at = t;
    f.restart();
    let r = f.attempt(with_pin("n.nurse", PIN), locked_at.saturating_add(Duration::from_secs(10)));
    assert!(
        matches!(r.outcome, Outcome::Refused { reason: RefusalReason::UserLockedOut, retry_after: Some(d), .. } if d == Duration::from_secs(50)),
        "{r:?}"
    );
    let r = f.attempt(with_pin("n.nurse", PIN), locked_at.saturating_add(Duration::from_secs(61)));
    assert!(matches!(r.outcome, Outcome::Granted { failures_since_last_unlock: 5, .. }), "{r:?}");

    let kinds = audit_kinds(&f.store);
    assert_eq!(kinds.iter().filter(|k| *k == "unlock_failed").count(), 6);
    assert_eq!(kinds.iter().filter(|k| *k == "user_locked_out").count(), 1);
}

#[test]
fn totp_from_an_independent_implementation_is_accepted_once_even_across_restart() {
    let mut f = Fixture::new(Policy::default());
    let code = oathtool(&f.totp_secret);
    let r = f.attempt(with_totp(&code), now());
    assert!(matches!(r.outcome, Outcome::Granted { method: GrantMethod::Totp, .. }), "{r:?}");
    let r = f.attempt(with_totp(&code), now());
    assert!(matches!(r.outcome, Outcome::Refused { reason: RefusalReason::TotpReplayed, .. }), "{r:?}");
    f.restart();
    // Past the one-second throttle the replay earned, so the refusal is for the replay.
    let r = f.attempt(with_totp(&code), now().saturating_add(Duration::from_secs(2)));
    assert!(matches!(r.outcome, Outcome::Refused { reason: RefusalReason::TotpReplayed, .. }), "{r:?}");
}

#[test]
fn pin_and_totp_required_when_policy_says_so() {
    let mut policy = Policy::default();
    policy.unlock.methods = vec![UnlockMethod::PinTotp];
    let mut f = Fixture::new(policy);
    let r = f.attempt(with_pin("n.nurse", PIN), now());
    assert!(matches!(r.outcome, Outcome::Refused { reason: RefusalReason::MethodNotAllowed, .. }), "{r:?}");
    let both =
        Attempt { totp: Some(SecretString::new(oathtool(&f.totp_secret))), ..with_pin("n.nurse", PIN) };
    let r = f.attempt(both, now());
    assert!(matches!(r.outcome, Outcome::Granted { method: GrantMethod::PinTotp, .. }), "{r:?}");
}

#[test]
fn pin_is_never_stored_in_clear() {
    let mut f = Fixture::new(Policy::default());
    f.attempt(with_pin("n.nurse", "591846"), now());
    // A clinician typing the PIN into the user field must not leave it readable either.
    f.attempt(with_pin(PIN, PIN), now().saturating_add(Duration::from_secs(5)));
    f.attempt(with_pin("n.nurse", PIN), now().saturating_add(Duration::from_secs(10)));
    let bytes = all_db_bytes(&f.ws.db_path());
    assert!(!contains_bytes(&bytes, PIN.as_bytes()), "the PIN is in the database in clear");
    assert!(!contains_bytes(&bytes, b"591846"), "a wrong PIN is in the database in clear");
    let secret = f.totp_secret.as_bytes();
    assert!(!contains_bytes(&bytes, secret), "the TOTP secret is in the database in clear");
}

#[test]
fn disabled_user_is_refused_even_with_the_right_pin() {
    let mut f = Fixture::new(Policy::default());
    disable_user(&mut f.store, &f.policy, "n.nurse", &Actor::default(), now()).unwrap();
    let r = f.attempt(with_pin("n.nurse", PIN), now());
    assert!(matches!(r.outcome, Outcome::Refused { reason: RefusalReason::UserDisabled, .. }), "{r:?}");
}

#[test]
fn emergency_access_needs_a_reason_and_is_audited_for_compliance() {
    let mut f = Fixture::new(Policy::default());
    let emergency =
        |reason: &str| Attempt { emergency_reason: Some(reason.into()), ..with_pin("n.nurse", PIN) };
    let r = f.attempt(emergency(""), now());
    assert!(
        matches!(r.outcome, Outcome::Refused { reason: RefusalReason::EmergencyReasonMissing, .. }),
        "{r:?}"
    );
    let r = f.attempt(emergency("code blue, bed 4"), now());
    assert!(matches!(r.outcome, Outcome::Granted { method: GrantMethod::Emergency, .. }), "{r:?}");
    let conn = rusqlite::Connection::open(f.ws.db_path()).unwrap();
    let details: String = conn
        .query_row(
            "SELECT details FROM audit WHERE seq = ?1 AND kind = 'emergency_access'",
            [r.audit_seq as i64],
            |r| r.get(0),
        )
        .unwrap();
    assert!(details.contains("code blue, bed 4") && details.contains("compliance"), "{details}");
}

fn audit_kinds(store: &Store) -> Vec<String> {
    let mut kinds = Vec::new();
    store
        .for_each_entry(0, |e| -> Result<(), wardlock_store::StoreError> {
            kinds.push(e.kind.as_str().to_owned());
            Ok(())
        })
        .unwrap();
    kinds
}

#[test]
fn cycling_user_ids_locks_the_workstation_and_leaves_no_typed_ids_behind() {
    let mut f = Fixture::new(Policy::default());
    let t = now();
    for i in 0..20 {
        let r = f.attempt(with_pin(&format!("guess-{i:02}"), "591846"), t);
        assert!(matches!(r.outcome, Outcome::Refused { reason: RefusalReason::UnknownUser, .. }), "{r:?}");
    }
    let r = f.attempt(with_pin("n.nurse", PIN), t.saturating_add(Duration::from_secs(60)));
    assert!(
        matches!(r.outcome, Outcome::Refused { reason: RefusalReason::WorkstationLockedOut, .. }),
        "{r:?}"
    );
    let kinds = audit_kinds(&f.store);
    assert_eq!(kinds.iter().filter(|k| *k == "workstation_locked_out").count(), 1);
    let r = f.attempt(with_pin("n.nurse", PIN), t.saturating_add(Duration::from_secs(301)));
    assert!(matches!(r.outcome, Outcome::Granted { .. }), "{r:?}");
    let bytes = all_db_bytes(&f.ws.db_path());
    assert!(!contains_bytes(&bytes, b"guess-"), "typed unknown IDs must not be stored");
}
