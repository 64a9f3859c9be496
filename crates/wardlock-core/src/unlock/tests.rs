use super::*;
use crate::policy::ValidPolicy;

/// The decision, over a test's policy once it passed the rules (as every policy must).
fn decide(
    policy: &Policy,
    now: UtcMillis,
    user: Option<UserCredentials<'_>>,
    user_state: &UserAuthState,
    workstation_state: &WorkstationAuthState,
    attempt: &Attempt,
) -> Decision {
    let valid = ValidPolicy::try_from(policy.clone()).expect("a test policy that passes the rules");
    super::decide(&valid, now, user, user_state, workstation_state, attempt)
}
use crate::policy::Policy;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn t(ms: i64) -> UtcMillis {
    UtcMillis::from_unix_millis(ms)
}

fn pin(p: &str) -> SecretString {
    SecretString::new(p)
}

#[test]
fn totp_matches_rfc6238_appendix_b() {
    let cases: [(TotpAlgorithm, &[u8], [&str; 6]); 3] = [
        (
            TotpAlgorithm::Sha1,
            b"12345678901234567890",
            ["94287082", "07081804", "14050471", "89005924", "69279037", "65353130"],
        ),
        (
            TotpAlgorithm::Sha256,
            b"12345678901234567890123456789012",
            ["46119246", "68084774", "67062674", "91819424", "90698825", "77737706"],
        ),
        (
            TotpAlgorithm::Sha512,
            b"1234567890123456789012345678901234567890123456789012345678901234",
            ["90693936", "25091201", "99943326", "93441116", "38618901", "47863826"],
        ),
    ];
    let times = [59i64, 1_111_111_109, 1_111_111_111, 1_234_567_890, 2_000_000_000, 20_000_000_000];
    for (algorithm, seed, expected) in cases {
        let policy = TotpPolicy { digits: 8, algorithm, ..TotpPolicy::default() };
        let seed = TotpSeed::new(seed.to_vec()).unwrap();
        for (time, code) in times.iter().zip(expected) {
            assert_eq!(totp_code(&policy, &seed, t(time * 1000)).unwrap(), code, "{algorithm:?} at {time}");
            let check = check_totp(&policy, &seed, &pin(code), t(time * 1000), None);
            assert!(matches!(check, TotpCheck::Accepted { .. }), "{algorithm:?} at {time}");
        }
    }
}

#[test]
fn totp_step_is_accepted_once() {
    let policy = TotpPolicy::default();
    let seed = TotpSeed::new(vec![42; 20]).unwrap();
    let now = t(1_795_000_000_000);
    let code = pin(&totp_code(&policy, &seed, now).unwrap());
    let TotpCheck::Accepted { step } = check_totp(&policy, &seed, &code, now, None) else { panic!() };
    assert_eq!(check_totp(&policy, &seed, &code, now, Some(step)), TotpCheck::Replayed);
    // A code from an earlier step within the skew is a replay too once a later one was used.
    let earlier = pin(&totp_code(&policy, &seed, t(1_795_000_000_000 - 30_000)).unwrap());
    assert_eq!(check_totp(&policy, &seed, &earlier, now, Some(step)), TotpCheck::Replayed);
}

#[test]
fn totp_allows_one_step_of_skew_not_two() {
    let policy = TotpPolicy::default();
    let seed = TotpSeed::new(vec![7; 20]).unwrap();
    let now = t(1_795_000_020_000);
    let prev = pin(&totp_code(&policy, &seed, t(1_795_000_020_000 - 30_000)).unwrap());
    let old = pin(&totp_code(&policy, &seed, t(1_795_000_020_000 - 60_000)).unwrap());
    assert!(matches!(check_totp(&policy, &seed, &prev, now, None), TotpCheck::Accepted { .. }));
    assert_eq!(check_totp(&policy, &seed, &old, now, None), TotpCheck::Wrong);
}

#[test]
fn short_seeds_are_refused() {
    assert!(TotpSeed::new(vec![1; 10]).is_err());
}

#[test]
fn pin_hash_is_argon2id_and_verifies() {
    let hash = hash_pin(&pin("482916"), &[3; 16]).unwrap();
    assert!(hash.as_phc().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{}", hash.as_phc());
    assert!(!hash.as_phc().contains("482916"));
    assert!(verify_pin(&pin("482916"), &hash));
    assert!(!verify_pin(&pin("482917"), &hash));
    assert!(!format!("{hash:?}").contains("argon2"));
}

#[test]
fn pin_rules_refuse_common_and_malformed_pins() {
    let rules = PinPolicy::default();
    for bad in ["1234", "0000", "123456", "000000", "654321", "121212", "111111", "123123", "987654"] {
        assert!(check_pin_rules(&pin(bad), &rules).is_err(), "{bad} accepted");
    }
    assert_eq!(check_pin_rules(&pin("48a916"), &rules), Err(PinRuleError::NotDigits));
    assert_eq!(check_pin_rules(&pin("4829"), &rules), Err(PinRuleError::TooShort(6)));
    assert!(check_pin_rules(&pin("482916"), &rules).is_ok());
    assert!(check_pin_rules(&pin("730284"), &rules).is_ok());
}

struct Fixture {
    policy: Policy,
    hash: PinHash,
    seed: TotpSeed,
}

impl Fixture {
    fn new() -> Self {
        Self {
            policy: Policy::default(),
            hash: hash_pin(&pin("482916"), &[1; 16]).unwrap(),
            seed: TotpSeed::new(vec![9; 20]).unwrap(),
        }
    }

    fn user(&self) -> UserCredentials<'_> {
        UserCredentials { disabled: false, pin_hash: Some(&self.hash), totp_seed: Some(&self.seed) }
    }

    fn attempt_pin(&self, p: &str) -> Attempt {
        Attempt { user_id: "n.nurse".into(), pin: Some(pin(p)), ..Attempt::default() }
    }
}

#[test]
fn right_pin_is_granted_and_reports_failures_since_last_unlock() {
    let f = Fixture::new();
    let ws = WorkstationAuthState::default();
    let first =
        decide(&f.policy, t(1_000), Some(f.user()), &UserAuthState::default(), &ws, &f.attempt_pin("000001"));
    assert!(matches!(
        first.outcome,
        Outcome::Refused { reason: RefusalReason::BadCredentials, attempts_left: 4, .. }
    ));
    let later = t(1_000).saturating_add(secs(5));
    let ok = decide(
        &f.policy,
        later,
        Some(f.user()),
        &first.user_state,
        &first.workstation_state,
        &f.attempt_pin("482916"),
    );
    assert_eq!(
        ok.outcome,
        Outcome::Granted { method: GrantMethod::Pin, previous_unlock: None, failures_since_last_unlock: 1 }
    );
    assert_eq!(ok.user_state.last_unlock, Some(later));
    assert_eq!(ok.user_state.failures, 0);
}

#[test]
fn wrong_pin_five_times_locks_user_out_for_backoff() {
    let f = Fixture::new();
    let mut user = UserAuthState::default();
    let mut ws = WorkstationAuthState::default();
    let mut now = t(1_000_000);
    for i in 1..=5u32 {
        let d = decide(&f.policy, now, Some(f.user()), &user, &ws, &f.attempt_pin("000001"));
        let Outcome::Refused { attempts_left, retry_after, locked_out_now, .. } = d.outcome else { panic!() };
        assert_eq!(attempts_left, 5 - i);
        assert_eq!(locked_out_now, i == 5);
        if i == 5 {
            assert_eq!(retry_after, Some(secs(60)), "first lockout is lockout.lockout");
        } else {
            assert_eq!(retry_after, Some(secs(1 << (i - 1))), "throttle doubles");
        }
        user = d.user_state;
        ws = d.workstation_state;
        now = now.saturating_add(retry_after.unwrap());
    }
    // While locked out even the right PIN is refused, without counting.
    let early = t(1_000_000 + 15_000 + 30_000);
    let d = decide(&f.policy, early, Some(f.user()), &user, &ws, &f.attempt_pin("482916"));
    assert!(matches!(d.outcome, Outcome::Refused { reason: RefusalReason::UserLockedOut, .. }));
    assert_eq!(d.user_state, user);
    // After the back-off it works.
    let d = decide(&f.policy, now, Some(f.user()), &user, &ws, &f.attempt_pin("482916"));
    assert!(matches!(d.outcome, Outcome::Granted { failures_since_last_unlock: 5, .. }));
}

#[test]
fn consecutive_lockouts_double_up_to_the_maximum() {
    let f = Fixture::new();
    let mut user = UserAuthState::default();
    let ws = WorkstationAuthState::default();
    let mut now = t(0);
    let mut lockouts = Vec::new();
    for _ in 0..(5 * 7) {
        let d = decide(&f.policy, now, Some(f.user()), &user, &ws, &f.attempt_pin("000001"));
        let Outcome::Refused { retry_after, locked_out_now, .. } = d.outcome else { panic!() };
        if locked_out_now {
            lockouts.push(retry_after.unwrap().as_secs());
        }
        user = d.user_state;
        now = now.saturating_add(retry_after.unwrap());
    }
    assert_eq!(lockouts, [60, 120, 240, 480, 960, 1800, 1800]);
}

#[test]
fn cycling_user_ids_locks_the_workstation() {
    let f = Fixture::new();
    let mut ws = WorkstationAuthState::default();
    let now = t(0);
    for i in 0..20 {
        let attempt =
            Attempt { user_id: format!("guess{i}"), pin: Some(pin("000001")), ..Attempt::default() };
        let d = decide(&f.policy, now, None, &UserAuthState::default(), &ws, &attempt);
        assert!(matches!(d.outcome, Outcome::Refused { reason: RefusalReason::UnknownUser, .. }));
        ws = d.workstation_state;
    }
    let d = decide(&f.policy, now, Some(f.user()), &UserAuthState::default(), &ws, &f.attempt_pin("482916"));
    assert!(matches!(
        d.outcome,
        Outcome::Refused { reason: RefusalReason::WorkstationLockedOut, retry_after: Some(r), .. } if r == secs(300)
    ));
}

#[test]
fn unknown_user_and_wrong_pin_look_the_same_to_the_guard() {
    let f = Fixture::new();
    let ws = WorkstationAuthState::default();
    let known =
        decide(&f.policy, t(0), Some(f.user()), &UserAuthState::default(), &ws, &f.attempt_pin("000001"));
    let unknown = decide(&f.policy, t(0), None, &UserAuthState::default(), &ws, &f.attempt_pin("000001"));
    let strip = |o: Outcome| match o {
        Outcome::Refused { attempts_left, retry_after, .. } => (attempts_left, retry_after),
        Outcome::Granted { .. } => panic!(),
    };
    assert_eq!(strip(known.outcome), strip(unknown.outcome));
}

#[test]
fn pin_and_totp_both_required_when_policy_says_so() {
    let mut f = Fixture::new();
    f.policy.unlock.methods = vec![UnlockMethod::PinTotp];
    let now = t(1_795_000_000_000);
    let ws = WorkstationAuthState::default();
    let user = UserAuthState::default();
    let d = decide(&f.policy, now, Some(f.user()), &user, &ws, &f.attempt_pin("482916"));
    assert!(matches!(d.outcome, Outcome::Refused { reason: RefusalReason::MethodNotAllowed, .. }));

    let code = totp_code(&f.policy.totp, &f.seed, now).unwrap();
    let both = |p: &str, c: &str| Attempt {
        user_id: "n".into(),
        pin: Some(pin(p)),
        totp: Some(pin(c)),
        emergency_reason: None,
    };
    let d = decide(&f.policy, now, Some(f.user()), &user, &ws, &both("000001", &code));
    assert!(
        matches!(d.outcome, Outcome::Refused { reason: RefusalReason::BadCredentials, .. }),
        "right TOTP, wrong PIN"
    );
    let d = decide(&f.policy, now, Some(f.user()), &user, &ws, &both("482916", "000000"));
    assert!(
        matches!(d.outcome, Outcome::Refused { reason: RefusalReason::BadCredentials, .. }),
        "right PIN, wrong TOTP"
    );
    let d = decide(&f.policy, now, Some(f.user()), &user, &ws, &both("482916", &code));
    assert!(matches!(d.outcome, Outcome::Granted { method: GrantMethod::PinTotp, .. }));
    let step = d.user_state.last_totp_step.expect("step persisted");
    let again = decide(&f.policy, now, Some(f.user()), &d.user_state, &ws, &both("482916", &code));
    assert!(matches!(again.outcome, Outcome::Refused { reason: RefusalReason::TotpReplayed, .. }));
    assert_eq!(again.user_state.last_totp_step, Some(step));
}

#[test]
fn disabled_user_is_refused_with_the_right_pin() {
    let f = Fixture::new();
    let user = UserCredentials { disabled: true, ..f.user() };
    let d = decide(
        &f.policy,
        t(0),
        Some(user),
        &UserAuthState::default(),
        &WorkstationAuthState::default(),
        &f.attempt_pin("482916"),
    );
    assert!(matches!(d.outcome, Outcome::Refused { reason: RefusalReason::UserDisabled, .. }));
}

#[test]
fn emergency_access_requires_a_reason_and_the_pin() {
    let f = Fixture::new();
    let ws = WorkstationAuthState::default();
    let user = UserAuthState::default();
    let emergency = |p: &str, reason: &str| Attempt {
        user_id: "n.nurse".into(),
        pin: Some(pin(p)),
        totp: None,
        emergency_reason: Some(reason.into()),
    };
    let d = decide(&f.policy, t(0), Some(f.user()), &user, &ws, &emergency("482916", "   "));
    assert!(matches!(d.outcome, Outcome::Refused { reason: RefusalReason::EmergencyReasonMissing, .. }));
    let d = decide(&f.policy, t(0), Some(f.user()), &user, &ws, &emergency("000001", "code blue bed 4"));
    assert!(matches!(d.outcome, Outcome::Refused { reason: RefusalReason::BadCredentials, .. }));
    let d = decide(&f.policy, t(0), Some(f.user()), &user, &ws, &emergency("482916", "code blue bed 4"));
    assert!(matches!(d.outcome, Outcome::Granted { method: GrantMethod::Emergency, .. }));

    // Too long is cut for the log, never refused; padding and control characters do not
    // count towards the minimum.
    let essay = format!("  {}\n", "x".repeat(MAX_EMERGENCY_REASON_CHARS + 50));
    let d = decide(&f.policy, t(0), Some(f.user()), &user, &ws, &emergency("482916", &essay));
    assert!(matches!(d.outcome, Outcome::Granted { method: GrantMethod::Emergency, .. }));
    assert_eq!(emergency_reason_text(&essay).chars().count(), MAX_EMERGENCY_REASON_CHARS);
    assert_eq!(emergency_reason_text("  code\u{7}\u{1b} blue \n"), "code blue");
    let d = decide(
        &f.policy,
        t(0),
        Some(f.user()),
        &user,
        &ws,
        &emergency("482916", "\u{7}\u{7}\u{7}\u{7}\u{7}\u{7}\u{7}\u{7}\u{7}\u{7}x"),
    );
    assert!(matches!(d.outcome, Outcome::Refused { reason: RefusalReason::EmergencyReasonMissing, .. }));

    let mut off = Policy::default();
    off.emergency.enabled = false;
    let d = decide(&off, t(0), Some(f.user()), &user, &ws, &emergency("482916", "code blue bed 4"));
    assert!(matches!(d.outcome, Outcome::Refused { reason: RefusalReason::EmergencyDisabled, .. }));
}

#[test]
fn audit_names_match_the_serialised_names() {
    for m in [GrantMethod::Pin, GrantMethod::Totp, GrantMethod::PinTotp, GrantMethod::Emergency] {
        assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{}\"", m.as_str()));
    }
    for r in [RefusalReason::UnknownUser, RefusalReason::TotpReplayed, RefusalReason::EmergencyLimitReached] {
        assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{}\"", r.as_str()));
    }
}

#[test]
fn a_successful_unlock_does_not_reset_the_workstation_window() {
    // 19 wrong guesses and one own unlock, five times over: 95 failures in minutes.
    let f = Fixture::new();
    let mut ws = WorkstationAuthState::default();
    let mut own = UserAuthState::default();
    let mut now = t(0);
    let mut tripped = None;
    'rounds: for round in 0..5 {
        for i in 0..19 {
            let attempt =
                Attempt { user_id: format!("guess{i}"), pin: Some(pin("000001")), ..Attempt::default() };
            let d = decide(&f.policy, now, None, &UserAuthState::default(), &ws, &attempt);
            ws = d.workstation_state;
            if let Outcome::Refused { reason: RefusalReason::WorkstationLockedOut, .. } = d.outcome {
                tripped = Some((round, i));
                break 'rounds;
            }
            now = now.saturating_add(secs(1));
        }
        let d = decide(&f.policy, now, Some(f.user()), &own, &ws, &f.attempt_pin("482916"));
        if let Outcome::Refused { reason: RefusalReason::WorkstationLockedOut, .. } = d.outcome {
            tripped = Some((round, 19));
            break;
        }
        assert!(matches!(d.outcome, Outcome::Granted { .. }), "round {round}: {:?}", d.outcome);
        own = d.user_state;
        ws = d.workstation_state;
    }
    let (round, _) = tripped.expect("the workstation lockout never tripped");
    assert!(round <= 1, "tripped only in round {round}");
    assert!(ws.blocked_until.is_some_and(|u| u > now));
}

#[test]
fn workstation_failures_leave_the_window_with_time() {
    let f = Fixture::new();
    let mut ws = WorkstationAuthState::default();
    let window = f.policy.lockout.workstation_window;
    for i in 0..19 {
        let attempt = Attempt { user_id: format!("g{i}"), pin: Some(pin("000001")), ..Attempt::default() };
        ws = decide(&f.policy, t(0), None, &UserAuthState::default(), &ws, &attempt).workstation_state;
    }
    assert_eq!(ws.failures_in_window(window, t(0)), 19);
    // One more after the window has passed does not trip it.
    let later = t(0).saturating_add(window);
    let attempt = Attempt { user_id: "g-late".into(), pin: Some(pin("000001")), ..Attempt::default() };
    let d = decide(&f.policy, later, None, &UserAuthState::default(), &ws, &attempt);
    assert!(matches!(d.outcome, Outcome::Refused { reason: RefusalReason::UnknownUser, .. }));
    assert_eq!(d.workstation_state.failures_in_window(window, later), 1);
    assert_eq!(d.workstation_state.blocked_until, None);
}

#[test]
fn emergency_access_passes_a_workstation_lockout_three_times_a_day() {
    let f = Fixture::new();
    let now = t(1_000_000);
    let ws = WorkstationAuthState {
        blocked_until: Some(now.saturating_add(secs(300))),
        ..WorkstationAuthState::default()
    };
    let plain =
        decide(&f.policy, now, Some(f.user()), &UserAuthState::default(), &ws, &f.attempt_pin("482916"));
    assert!(matches!(plain.outcome, Outcome::Refused { reason: RefusalReason::WorkstationLockedOut, .. }));

    let emergency = |p: &str| Attempt {
        user_id: "n.nurse".into(),
        pin: Some(pin(p)),
        totp: None,
        emergency_reason: Some("code blue bed 4".into()),
    };
    // A wrong PIN is still a failure of this user's own.
    let wrong = decide(&f.policy, now, Some(f.user()), &UserAuthState::default(), &ws, &emergency("000001"));
    assert!(matches!(wrong.outcome, Outcome::Refused { reason: RefusalReason::BadCredentials, .. }));
    assert_eq!(wrong.user_state.failures, 1);

    let mut user = UserAuthState::default();
    let mut at = now;
    for _ in 0..3 {
        let d = decide(&f.policy, at, Some(f.user()), &user, &ws, &emergency("482916"));
        assert!(
            matches!(d.outcome, Outcome::Granted { method: GrantMethod::Emergency, .. }),
            "{:?}",
            d.outcome
        );
        user = d.user_state;
        at = at.saturating_add(secs(3600));
    }
    let fourth = decide(&f.policy, at, Some(f.user()), &user, &ws, &emergency("482916"));
    let Outcome::Refused { reason, retry_after, .. } = fourth.outcome else { panic!("{:?}", fourth.outcome) };
    assert_eq!(reason, RefusalReason::EmergencyLimitReached);
    assert_eq!(retry_after, Some(secs(21 * 3600)), "until the first grant is a day old");
    assert_eq!(fourth.user_state.failures, 0, "the right PIN is no failure");
    // A day after the first, one more is allowed.
    let next_day = now.saturating_add(secs(24 * 3600));
    let d = decide(
        &f.policy,
        next_day,
        Some(f.user()),
        &user,
        &WorkstationAuthState::default(),
        &emergency("482916"),
    );
    assert!(matches!(d.outcome, Outcome::Granted { method: GrantMethod::Emergency, .. }));
}

fn emergency_attempt(p: &str, totp: Option<&str>) -> Attempt {
    Attempt {
        user_id: "n.nurse".into(),
        pin: Some(pin(p)),
        totp: totp.map(pin),
        emergency_reason: Some("code blue bed 4".into()),
    }
}

#[test]
fn break_glass_during_a_workstation_lockout_closes_after_three_failures_until_it_ends() {
    let f = Fixture::new();
    let now = t(1_000_000);
    let until = now.saturating_add(secs(300));
    let mut ws = WorkstationAuthState { blocked_until: Some(until), ..WorkstationAuthState::default() };
    // The guesser who locked the workstation types a reason: three guesses are checked...
    for n in 1..=3 {
        let d =
            decide(&f.policy, now, None, &UserAuthState::default(), &ws, &emergency_attempt("000001", None));
        assert!(matches!(d.outcome, Outcome::Refused { reason: RefusalReason::UnknownUser, .. }));
        assert_eq!(d.workstation_state.emergency_failures_in_lockout, n);
        assert_eq!(d.workstation_state.blocked_until, Some(until), "the lockout is not restarted");
        ws = d.workstation_state;
    }
    // ...then nothing is, not even the right PIN of a real clinician, until the lockout ends.
    let closed = decide(
        &f.policy,
        now,
        Some(f.user()),
        &UserAuthState::default(),
        &ws,
        &emergency_attempt("482916", None),
    );
    let Outcome::Refused { reason, retry_after, .. } = closed.outcome else { panic!("{:?}", closed.outcome) };
    assert_eq!(reason, RefusalReason::EmergencyClosedDuringLockout);
    assert_eq!(retry_after, Some(secs(300)));
    assert_eq!(closed.user_state, UserAuthState::default(), "refused unchecked: nobody's failure");
    assert!(ws.emergency_closed(f.policy.emergency.max_failures_during_lockout, now));

    let after = until.saturating_add(secs(1));
    assert!(!ws.emergency_closed(3, after));
    let open = decide(
        &f.policy,
        after,
        Some(f.user()),
        &UserAuthState::default(),
        &ws,
        &emergency_attempt("482916", None),
    );
    assert!(
        matches!(open.outcome, Outcome::Granted { method: GrantMethod::Emergency, .. }),
        "{:?}",
        open.outcome
    );

    // A failure after the lockout ended starts no count toward the next one.
    let wrong =
        decide(&f.policy, after, None, &UserAuthState::default(), &ws, &emergency_attempt("000001", None));
    assert_eq!(wrong.workstation_state.emergency_failures_in_lockout, 0);
}

#[test]
fn break_glass_in_a_pin_totp_ward_needs_the_second_factor_too() {
    let f = Fixture::new();
    let mut mfa = f.policy.clone();
    mfa.unlock.methods = vec![UnlockMethod::PinTotp];
    let now = t(1_795_000_000_000);
    let (user, ws) = (UserAuthState::default(), WorkstationAuthState::default());
    let pin_only = decide(&mfa, now, Some(f.user()), &user, &ws, &emergency_attempt("482916", None));
    assert!(matches!(pin_only.outcome, Outcome::Refused { reason: RefusalReason::BadCredentials, .. }));
    let code = totp_code(&mfa.totp, &f.seed, now).unwrap();
    let both = decide(&mfa, now, Some(f.user()), &user, &ws, &emergency_attempt("482916", Some(&code)));
    assert!(
        matches!(both.outcome, Outcome::Granted { method: GrantMethod::Emergency, .. }),
        "{:?}",
        both.outcome
    );
    assert!(both.user_state.last_totp_step.is_some(), "the code is used up like any other");

    // Where PIN alone is allowed, break-glass asks for the PIN only (unless policy says otherwise).
    let d = decide(&f.policy, now, Some(f.user()), &user, &ws, &emergency_attempt("482916", None));
    assert!(matches!(d.outcome, Outcome::Granted { .. }));
    let mut strict = f.policy.clone();
    strict.emergency.require_totp = Some(true);
    let d = decide(&strict, now, Some(f.user()), &user, &ws, &emergency_attempt("482916", None));
    assert!(matches!(d.outcome, Outcome::Refused { .. }));
}

#[test]
fn an_emergency_cap_of_zero_cannot_reach_the_decision() {
    let mut policy = Fixture::new().policy;
    policy.emergency.max_per_user_per_day = 0;
    let refused = ValidPolicy::try_from(policy).unwrap_err();
    assert_eq!(refused.problems[0].field, "emergency.max_per_user_per_day");
}
