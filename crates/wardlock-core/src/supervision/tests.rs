use super::*;

const S1: &str = "/org/freedesktop/login1/session/c1";
const S2: &str = "/org/freedesktop/login1/session/c2";

fn at(secs: u64) -> MonoTime {
    MonoTime::from_duration(Duration::from_secs(secs))
}

fn rules(when_unguarded: Unguarded) -> Rules {
    Rules { when_unguarded, grace: Duration::from_secs(10), heartbeat_timeout: Duration::from_secs(15) }
}

const LOGOFF: Rules = Rules {
    when_unguarded: Unguarded::Logoff,
    grace: Duration::from_secs(10),
    heartbeat_timeout: Duration::from_secs(15),
};

fn guard(account: &str, uid: u32, pid: u32, session: Option<&str>) -> NewGuard {
    NewGuard {
        account: account.into(),
        uid,
        pid: Some(pid),
        session: session.map(str::to_owned),
        client: "wardlock 0.1.0".into(),
    }
}

fn admit(s: &mut Supervision, g: NewGuard) -> ConnectionId {
    let (conn, effects) = s.admit(g).expect("admitted");
    assert!(matches!(effects.as_slice(), [Effect::Audit(Record::GuardStarted { .. })]));
    conn
}

fn audits(effects: &[Effect]) -> Vec<&Record> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Audit(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn lock_request(effects: &[Effect]) -> Option<(LadderId, Option<String>)> {
    effects.iter().find_map(|e| match e {
        Effect::RequestLock { ladder, session } => Some((*ladder, session.clone())),
        _ => None,
    })
}

fn terminate(effects: &[Effect]) -> Option<(LadderId, Option<String>, u32)> {
    effects.iter().find_map(|e| match e {
        Effect::Terminate { ladder, session, uid } => Some((*ladder, session.clone(), *uid)),
        _ => None,
    })
}

fn hint_read(effects: &[Effect]) -> Option<LadderId> {
    effects.iter().find_map(|e| match e {
        Effect::ReadLockedHint { ladder, .. } => Some(*ladder),
        _ => None,
    })
}

/// A guard of `ward` in session c1, lost: the ladder's first effects.
fn lost_guard(s: &mut Supervision, rules: Rules) -> (ConnectionId, Vec<Effect>) {
    let conn = admit(s, guard("ward", 1000, 42, Some(S1)));
    let effects =
        s.handle(at(0), rules, Input::ConnectionEnded { conn, how: Ending::Lost("heartbeat missed".into()) });
    (conn, effects)
}

#[test]
fn a_guard_lost_while_unlocked_is_audited_and_its_session_escalated() {
    let mut s = Supervision::default();
    let (_, effects) = lost_guard(&mut s, LOGOFF);
    assert_eq!(
        effects[0],
        Effect::Audit(Record::GuardLost {
            account: "ward".into(),
            pid: Some(42),
            why: "heartbeat missed".into(),
            when_unguarded: Unguarded::Logoff,
        })
    );
    assert!(effects.contains(&Effect::Persist { account: "ward".into(), locked: true }));
    assert_eq!(lock_request(&effects).map(|(_, s)| s), Some(Some(S1.to_owned())));
    assert!(s.must_lock("ward"), "a guard that starts again must lock first");
    assert_eq!(s.escalations_active(), 1);
    assert_eq!(s.guards_connected(), 0);
}

#[test]
fn a_guard_lost_while_locked_changes_no_persisted_state_but_still_escalates() {
    let mut s = Supervision::default();
    let conn = admit(&mut s, guard("ward", 1000, 42, Some(S1)));
    let locked = s.handle(at(0), LOGOFF, Input::GuardReported { conn, report: Report::Locked });
    assert_eq!(locked, vec![Effect::Persist { account: "ward".into(), locked: true }]);
    let effects = s.handle(at(1), LOGOFF, Input::ConnectionEnded { conn, how: Ending::Closed });
    assert!(matches!(
        audits(&effects).as_slice(),
        [Record::GuardLost { why, .. }] if why == "disconnected without an administrator's approval"
    ));
    assert!(!effects.iter().any(|e| matches!(e, Effect::Persist { .. })), "already locked: {effects:?}");
    assert!(lock_request(&effects).is_some());
    assert!(s.must_lock("ward"));
}

#[test]
fn a_quit_an_administrator_approved_ends_without_escalation() {
    let mut s = Supervision::default();
    let conn = admit(&mut s, guard("ward", 1000, 42, Some(S1)));
    s.handle(at(0), LOGOFF, Input::QuitApproved { conn, by: "it.admin".into() });
    let effects = s.handle(at(1), LOGOFF, Input::ConnectionEnded { conn, how: Ending::Closed });
    assert_eq!(
        effects,
        vec![Effect::Audit(Record::GuardStopped {
            account: "ward".into(),
            pid: Some(42),
            by: "it.admin".into()
        })]
    );
    assert_eq!(s.escalations_active(), 0);
}

#[test]
fn an_approved_quit_that_then_falls_silent_is_still_lost() {
    let mut s = Supervision::default();
    let conn = admit(&mut s, guard("ward", 1000, 42, Some(S1)));
    s.handle(at(0), LOGOFF, Input::QuitApproved { conn, by: "it.admin".into() });
    let effects = s.handle(
        at(1),
        LOGOFF,
        Input::ConnectionEnded { conn, how: Ending::Lost("heartbeat missed".into()) },
    );
    assert!(matches!(audits(&effects).as_slice(), [Record::GuardLost { .. }]));
    assert!(lock_request(&effects).is_some());
}

#[test]
fn a_service_stopping_neither_loses_nor_escalates() {
    let mut s = Supervision::default();
    let conn = admit(&mut s, guard("ward", 1000, 42, Some(S1)));
    let effects = s.handle(at(1), LOGOFF, Input::ConnectionEnded { conn, how: Ending::ServiceStopping });
    assert!(effects.is_empty());
    assert_eq!(s.guards_connected(), 0);
}

#[test]
fn the_ladder_unconfirmed_reads_the_hint_then_ends_the_session() {
    let mut s = Supervision::default();
    let (_, effects) = lost_guard(&mut s, LOGOFF);
    let (ladder, _) = lock_request(&effects).unwrap();
    let effects =
        s.handle(at(0), LOGOFF, Input::LockRequested { ladder, result: Ok(format!("session {S1}")) });
    assert!(matches!(
        audits(&effects).as_slice(),
        [Record::EscalationRequested { lock_request: Ok(_), then: Unguarded::Logoff, .. }]
    ));
    assert_eq!(s.next_deadline(), Some(at(10)));
    assert!(s.handle(at(9), LOGOFF, Input::Tick).is_empty(), "not before the grace has passed");
    let effects = s.handle(at(10), LOGOFF, Input::Tick);
    assert_eq!(hint_read(&effects), Some(ladder));
    assert_eq!(s.escalations_active(), 0, "decided: no longer waiting");
    let effects = s.handle(at(10), LOGOFF, Input::LockedHintRead { ladder, seen: "false".into() });
    assert!(matches!(
        audits(&effects).as_slice(),
        [Record::EscalationUnconfirmed { after, locked_hint, .. }] if *after == Duration::from_secs(10) && locked_hint == "false"
    ));
    assert_eq!(terminate(&effects), Some((ladder, Some(S1.to_owned()), 1000)));
    let effects = s.handle(at(11), LOGOFF, Input::Terminated { ladder, result: Ok(format!("session {S1}")) });
    assert!(matches!(audits(&effects).as_slice(), [Record::SessionTerminated { .. }]));
    assert_eq!(s.next_deadline(), None);
}

#[test]
fn a_failed_logoff_is_audited_as_such() {
    let mut s = Supervision::default();
    let (_, effects) = lost_guard(&mut s, LOGOFF);
    let (ladder, _) = lock_request(&effects).unwrap();
    s.handle(at(0), LOGOFF, Input::LockRequested { ladder, result: Ok("sent".into()) });
    s.handle(at(10), LOGOFF, Input::Tick);
    s.handle(at(10), LOGOFF, Input::LockedHintRead { ladder, seen: "false".into() });
    let effects = s.handle(at(11), LOGOFF, Input::Terminated { ladder, result: Err("access denied".into()) });
    assert!(matches!(
        audits(&effects).as_slice(),
        [Record::SessionTerminateFailed { error, .. }] if error == "access denied"
    ));
}

#[test]
fn a_locked_hint_the_sessions_owner_set_confirms_nothing() {
    let mut s = Supervision::default();
    let (_, effects) = lost_guard(&mut s, LOGOFF);
    let (ladder, _) = lock_request(&effects).unwrap();
    s.handle(at(0), LOGOFF, Input::LockRequested { ladder, result: Ok("sent".into()) });
    s.handle(at(10), LOGOFF, Input::Tick);
    let seen = "true (settable by the session's own account: not evidence)".to_owned();
    let effects = s.handle(at(10), LOGOFF, Input::LockedHintRead { ladder, seen: seen.clone() });
    assert!(matches!(
        audits(&effects).as_slice(),
        [Record::EscalationUnconfirmed { locked_hint, .. }] if *locked_hint == seen
    ));
    assert!(terminate(&effects).is_some(), "the session still ends: {effects:?}");
}

#[test]
fn a_new_guard_locking_within_the_grace_confirms_and_stops_the_ladder() {
    let mut s = Supervision::default();
    let (_, effects) = lost_guard(&mut s, LOGOFF);
    let (ladder, _) = lock_request(&effects).unwrap();
    s.handle(at(0), LOGOFF, Input::LockRequested { ladder, result: Ok("sent".into()) });
    let conn = admit(&mut s, guard("ward", 1000, 77, Some(S1)));
    assert!(s.must_lock("ward"), "the new guard is told to lock first");
    let effects = s.handle(at(3), LOGOFF, Input::GuardReported { conn, report: Report::Locked });
    assert_eq!(
        effects,
        vec![Effect::Audit(Record::EscalationConfirmed {
            account: "ward".into(),
            session: Some(S1.into()),
            after: Duration::from_secs(3),
            pid: Some(77),
        })]
    );
    assert!(s.handle(at(10), LOGOFF, Input::Tick).is_empty(), "nothing more happens");
    assert_eq!(s.next_deadline(), None);
}

#[test]
fn a_confirmation_while_the_lock_request_is_out_is_kept_until_it_is_recorded() {
    let mut s = Supervision::default();
    let (_, effects) = lost_guard(&mut s, LOGOFF);
    let (ladder, _) = lock_request(&effects).unwrap();
    let conn = admit(&mut s, guard("ward", 1000, 77, Some(S1)));
    assert!(
        audits(&s.handle(at(1), LOGOFF, Input::GuardReported { conn, report: Report::Locked })).is_empty()
    );
    let effects = s.handle(at(2), LOGOFF, Input::LockRequested { ladder, result: Ok("sent".into()) });
    assert!(matches!(
        audits(&effects).as_slice(),
        [Record::EscalationRequested { .. }, Record::EscalationConfirmed { pid: Some(77), .. }]
    ));
}

#[test]
fn a_lock_reported_by_a_guard_of_another_session_confirms_nothing() {
    let mut s = Supervision::default();
    let (_, effects) = lost_guard(&mut s, LOGOFF);
    let (ladder, _) = lock_request(&effects).unwrap();
    s.handle(at(0), LOGOFF, Input::LockRequested { ladder, result: Ok("sent".into()) });
    let other = admit(&mut s, guard("ward", 1000, 78, Some(S2)));
    let effects = s.handle(at(1), LOGOFF, Input::GuardReported { conn: other, report: Report::Locked });
    assert!(audits(&effects).is_empty());
    assert_eq!(s.escalations_active(), 1);
}

#[test]
fn without_logind_the_ladder_still_ends_the_account_s_sessions() {
    let mut s = Supervision::default();
    let conn = admit(&mut s, guard("ward", 1000, 42, None));
    let effects = s.handle(
        at(0),
        LOGOFF,
        Input::ConnectionEnded { conn, how: Ending::Lost("heartbeat missed".into()) },
    );
    let (ladder, session) = lock_request(&effects).unwrap();
    assert_eq!(session, None, "every session is asked to lock when the guard's is unknown");
    let effects = s.handle(
        at(5),
        LOGOFF,
        Input::LockRequested { ladder, result: Err("logind: no answer within 5 s".into()) },
    );
    assert!(matches!(
        audits(&effects).as_slice(),
        [Record::EscalationRequested { lock_request: Err(_), .. }]
    ));
    let effects = s.handle(at(10), LOGOFF, Input::Tick);
    assert!(matches!(
        audits(&effects).as_slice(),
        [Record::EscalationUnconfirmed { locked_hint, .. }] if locked_hint == "unknown (no session)"
    ));
    assert_eq!(terminate(&effects), Some((ladder, None, 1000)));
}

#[test]
fn a_lock_request_answered_after_the_grace_goes_straight_on() {
    let mut s = Supervision::default();
    let (_, effects) = lost_guard(&mut s, LOGOFF);
    let (ladder, _) = lock_request(&effects).unwrap();
    let effects = s.handle(at(12), LOGOFF, Input::LockRequested { ladder, result: Ok("sent".into()) });
    assert_eq!(hint_read(&effects), Some(ladder));
}

#[test]
fn lock_only_asks_and_records_but_ends_nothing() {
    let lock_only = rules(Unguarded::LockOnly);
    let mut s = Supervision::default();
    let (_, effects) = lost_guard(&mut s, lock_only);
    let (ladder, _) = lock_request(&effects).unwrap();
    s.handle(at(0), lock_only, Input::LockRequested { ladder, result: Ok("sent".into()) });
    s.handle(at(10), lock_only, Input::Tick);
    let effects = s.handle(at(10), lock_only, Input::LockedHintRead { ladder, seen: "false".into() });
    assert!(matches!(
        audits(&effects).as_slice(),
        [Record::EscalationUnconfirmed { then: Unguarded::LockOnly, .. }]
    ));
    assert!(terminate(&effects).is_none());
}

#[test]
fn audit_only_audits_the_loss_and_escalates_nothing() {
    let audit_only = rules(Unguarded::AuditOnly);
    let mut s = Supervision::default();
    let (_, effects) = lost_guard(&mut s, audit_only);
    assert!(matches!(audits(&effects).as_slice(), [Record::GuardLost { .. }]));
    assert!(lock_request(&effects).is_none());
    assert!(!s.must_lock("ward"));
}

#[test]
fn a_lock_failure_escalates_the_guard_s_session_while_the_guard_stays() {
    let mut s = Supervision::default();
    let conn = admit(&mut s, guard("ward", 1000, 42, Some(S1)));
    let effects = s.handle(
        at(0),
        LOGOFF,
        Input::GuardReported { conn, report: Report::LockFailed { what: "keyboard grab".into() } },
    );
    let (ladder, session) = lock_request(&effects).unwrap();
    assert_eq!(session.as_deref(), Some(S1));
    let effects = s.handle(at(0), LOGOFF, Input::LockRequested { ladder, result: Ok("sent".into()) });
    assert!(matches!(
        audits(&effects).as_slice(),
        [Record::EscalationRequested { why, .. }] if why == "lock_failed: keyboard grab"
    ));
    // The same guard's lock then holds: that confirms it.
    let effects = s.handle(at(2), LOGOFF, Input::GuardReported { conn, report: Report::Locked });
    assert!(matches!(audits(&effects).as_slice(), [Record::EscalationConfirmed { .. }]));
}

#[test]
fn one_undecided_ladder_per_session() {
    let mut s = Supervision::default();
    let conn = admit(&mut s, guard("ward", 1000, 42, Some(S1)));
    let fail = |what: &str| Input::GuardReported { conn, report: Report::LockFailed { what: what.into() } };
    assert!(lock_request(&s.handle(at(0), LOGOFF, fail("grab"))).is_some());
    assert!(lock_request(&s.handle(at(1), LOGOFF, fail("grab again"))).is_none());
    assert_eq!(s.escalations_active(), 1);
}

#[test]
fn two_sessions_at_once_have_their_own_ladders() {
    let mut s = Supervision::default();
    let a = admit(&mut s, guard("ward", 1000, 42, Some(S1)));
    let b = admit(&mut s, guard("icu", 1001, 43, Some(S2)));
    let lost = |conn| Input::ConnectionEnded { conn, how: Ending::Lost("heartbeat missed".into()) };
    let (la, _) = lock_request(&s.handle(at(0), LOGOFF, lost(a))).unwrap();
    let (lb, _) = lock_request(&s.handle(at(1), LOGOFF, lost(b))).unwrap();
    assert_ne!(la, lb);
    assert_eq!(s.escalations_active(), 2);
    s.handle(at(1), LOGOFF, Input::LockRequested { ladder: la, result: Ok("sent".into()) });
    s.handle(at(1), LOGOFF, Input::LockRequested { ladder: lb, result: Ok("sent".into()) });
    // icu's new guard confirms icu's ladder only; ward's runs out at 10 s, icu's would at 11 s.
    let icu = admit(&mut s, guard("icu", 1001, 44, Some(S2)));
    let effects = s.handle(at(2), LOGOFF, Input::GuardReported { conn: icu, report: Report::Locked });
    assert!(
        matches!(audits(&effects).as_slice(), [Record::EscalationConfirmed { account, .. }] if account == "icu")
    );
    assert_eq!(s.next_deadline(), Some(at(10)));
    assert_eq!(hint_read(&s.handle(at(10), LOGOFF, Input::Tick)), Some(la));
    assert!(s.must_lock("ward") && s.must_lock("icu"));
}

#[test]
fn an_unguarded_active_session_is_escalated_after_the_allowance_and_again_at_doubling_pauses() {
    let mut s = Supervision::default();
    let session = ActiveSession { path: S1.into(), uid: 1000, account: "ward".into() };
    let listed = || Input::ActiveSessions(vec![session.clone()]);
    assert!(lock_request(&s.handle(at(0), LOGOFF, listed())).is_none(), "time to start a guard");
    assert!(lock_request(&s.handle(at(29), LOGOFF, listed())).is_none());
    let (first, _) =
        lock_request(&s.handle(at(30), LOGOFF, listed())).expect("escalated at twice the timeout");
    // That ladder ends without a logoff (it failed); the session is still unguarded.
    s.handle(at(30), LOGOFF, Input::LockRequested { ladder: first, result: Ok("sent".into()) });
    s.handle(at(40), LOGOFF, Input::Tick);
    s.handle(at(40), LOGOFF, Input::LockedHintRead { ladder: first, seen: "false".into() });
    s.handle(at(41), LOGOFF, Input::Terminated { ladder: first, result: Err("denied".into()) });
    assert!(lock_request(&s.handle(at(59), LOGOFF, listed())).is_none());
    let (second, _) = lock_request(&s.handle(at(60), LOGOFF, listed())).expect("again after 30 s");
    s.handle(at(60), LOGOFF, Input::LockRequested { ladder: second, result: Err("no answer".into()) });
    s.handle(at(70), LOGOFF, Input::Tick);
    s.handle(at(70), LOGOFF, Input::LockedHintRead { ladder: second, seen: "false".into() });
    s.handle(at(71), LOGOFF, Input::Terminated { ladder: second, result: Err("denied".into()) });
    assert!(lock_request(&s.handle(at(119), LOGOFF, listed())).is_none());
    assert!(lock_request(&s.handle(at(120), LOGOFF, listed())).is_some(), "then after 60 s");
}

#[test]
fn a_guarded_session_is_not_escalated_by_the_watch() {
    let mut s = Supervision::default();
    admit(&mut s, guard("ward", 1000, 42, Some(S1)));
    let listed =
        Input::ActiveSessions(vec![ActiveSession { path: S1.into(), uid: 1000, account: "ward".into() }]);
    s.handle(at(0), LOGOFF, listed.clone());
    assert!(lock_request(&s.handle(at(100), LOGOFF, listed)).is_none());
}

#[test]
fn a_tool_s_unlock_does_not_change_whose_session_it_is() {
    let mut s = Supervision::new(["ward".to_owned()]);
    let unlock = |role, user: &str| Input::Granted {
        role,
        account: "ward".into(),
        grant: Grant::Unlock { user: user.into() },
    };
    let effects = s.handle(at(0), LOGOFF, unlock(ClientRole::Guard, "nurse.a"));
    assert_eq!(effects, vec![Effect::Persist { account: "ward".into(), locked: false }]);
    assert_eq!(s.clinician("ward"), Some("nurse.a"));
    let conn = admit(&mut s, guard("ward", 1000, 42, Some(S1)));
    s.handle(at(1), LOGOFF, Input::GuardReported { conn, report: Report::Locked });
    let effects = s.handle(at(2), LOGOFF, unlock(ClientRole::Tool, "nurse.b"));
    assert!(effects.is_empty(), "a tool's check opens no screen: {effects:?}");
    assert_eq!(s.clinician("ward"), Some("nurse.a"));
    assert!(s.must_lock("ward"), "the session is still behind the lock");
}

#[test]
fn holds_count_in_a_row_until_an_ordinary_unlock_and_sign_out_forgets_the_clinician() {
    let mut s = Supervision::default();
    let grant = |grant| Input::Granted { role: ClientRole::Guard, account: "ward".into(), grant };
    s.handle(at(0), LOGOFF, grant(Grant::Hold { user: "nurse.a".into(), in_a_row: 1 }));
    s.handle(at(1), LOGOFF, grant(Grant::Hold { user: "nurse.a".into(), in_a_row: 2 }));
    assert_eq!(s.holds_in_a_row("ward"), 2);
    s.handle(at(2), LOGOFF, grant(Grant::SignOut { user: "nurse.b".into() }));
    assert_eq!(s.clinician("ward"), Some("nurse.a"), "only the clinician's own sign-out forgets them");
    s.handle(at(3), LOGOFF, grant(Grant::SignOut { user: "nurse.a".into() }));
    assert_eq!(s.clinician("ward"), None);
    s.handle(at(4), LOGOFF, grant(Grant::Unlock { user: "nurse.b".into() }));
    assert_eq!(s.holds_in_a_row("ward"), 0);
}

#[test]
fn a_third_guard_of_one_account_is_refused_and_a_gone_one_makes_room() {
    let mut s = Supervision::default();
    let a = admit(&mut s, guard("ward", 1000, 1, Some(S1)));
    admit(&mut s, guard("ward", 1000, 2, Some(S1)));
    assert_eq!(s.admit(guard("ward", 1000, 3, Some(S1))), Err(TooManyGuards));
    admit(&mut s, guard("icu", 1001, 4, Some(S2)));
    s.handle(at(0), LOGOFF, Input::ConnectionEnded { conn: a, how: Ending::ServiceStopping });
    assert!(s.admit(guard("ward", 1000, 3, Some(S1))).is_ok());
}

#[test]
fn the_lock_state_of_a_previous_run_is_kept() {
    let s = Supervision::new(["ward".to_owned()]);
    assert!(s.must_lock("ward"));
    assert!(!s.must_lock("icu"));
}

#[test]
fn late_or_unknown_answers_change_nothing() {
    let mut s = Supervision::default();
    assert!(s.handle(at(0), LOGOFF, Input::LockRequested { ladder: 7, result: Ok("x".into()) }).is_empty());
    assert!(s.handle(at(0), LOGOFF, Input::Terminated { ladder: 7, result: Ok("x".into()) }).is_empty());
    assert!(s.handle(at(0), LOGOFF, Input::ConnectionEnded { conn: 7, how: Ending::Closed }).is_empty());
    let (_, effects) = lost_guard(&mut s, LOGOFF);
    let (ladder, _) = lock_request(&effects).unwrap();
    // An answer for a phase the ladder is not in (a hint before the request came back).
    assert!(s.handle(at(1), LOGOFF, Input::LockedHintRead { ladder, seen: "true".into() }).is_empty());
}
