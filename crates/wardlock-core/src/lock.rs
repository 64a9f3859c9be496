//! The guard state machine: Active → Warning → Locked → Active.
//!
//! It is driven only by readings handed in (monotonic time, input idle time) and answers
//! with actions for the shell to carry out plus the time it next needs to be woken, so
//! the shell sleeps until a deadline instead of polling.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::MonoTime;

/// How often idle is re-read during the warning countdown, to notice input that cancels it.
pub const WARNING_POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardTimings {
    pub idle_timeout: Duration,
    /// Countdown shown before locking; part of `idle_timeout`, so shorter than it.
    pub warning: Duration,
    pub lock_on_resume: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockReason {
    Idle,
    Manual,
    Resume,
    /// The OS session itself was locked (screen saver, Win+L).
    OsSession,
    /// `wardlockd` asked for it (policy, remote "lock now").
    Policy,
    /// The guard was lost while its session was locked; the new guard locks again at once.
    GuardRestarted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardState {
    Active,
    Warning { lock_at: MonoTime },
    Locked { reason: LockReason },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Show (or update) the countdown: the session locks at `lock_at`.
    ShowWarning {
        lock_at: MonoTime,
    },
    CancelWarning,
    Lock {
        reason: LockReason,
    },
    /// Take the lock windows down (only after `wardlockd` granted an unlock).
    Unlock,
}

/// What the shell must do now and when to call again. `wake_at: None` means nothing
/// happens until an event (such as an unlock) arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub actions: Vec<Action>,
    pub wake_at: Option<MonoTime>,
}

#[derive(Debug, Clone)]
pub struct Guard {
    timings: GuardTimings,
    state: GuardState,
    /// Input idle is never taken as longer than the time since the last unlock: some
    /// input (a touch screen, the lock screen's own keys) may not reset the OS reading.
    /// During a hold it lies in the future: idle counts from the hold's end.
    active_since: MonoTime,
}

impl Guard {
    pub fn new(timings: GuardTimings, now: MonoTime) -> Self {
        Self { timings, state: GuardState::Active, active_since: now }
    }

    pub fn state(&self) -> GuardState {
        self.state
    }

    pub fn timings(&self) -> GuardTimings {
        self.timings
    }

    /// A new policy applies from the next reading on; a pending countdown restarts.
    pub fn set_timings(&mut self, timings: GuardTimings, now: MonoTime, idle: Duration) -> Step {
        self.timings = timings;
        let mut actions = Vec::new();
        if let GuardState::Warning { .. } = self.state {
            self.state = GuardState::Active;
            actions.push(Action::CancelWarning);
        }
        let mut step = self.tick(now, idle);
        actions.append(&mut step.actions);
        Step { actions, wake_at: step.wake_at }
    }

    /// A fresh idle reading: input idle time as the OS reports it at `now`.
    pub fn tick(&mut self, now: MonoTime, reported_idle: Duration) -> Step {
        let idle = reported_idle.min(now.saturating_since(self.active_since));
        let t = self.timings;
        let warn_after = t.idle_timeout.saturating_sub(t.warning);
        match self.state {
            GuardState::Locked { .. } => Step { actions: vec![], wake_at: None },
            GuardState::Active => {
                if idle >= t.idle_timeout {
                    self.lock(LockReason::Idle)
                } else if idle >= warn_after {
                    let lock_at = now + (t.idle_timeout - idle);
                    self.state = GuardState::Warning { lock_at };
                    Step {
                        actions: vec![Action::ShowWarning { lock_at }],
                        wake_at: Some(lock_at.min(now + WARNING_POLL)),
                    }
                } else {
                    // During a hold, the first warning is due after it.
                    let wake = (now + (warn_after - idle)).max(self.active_since + warn_after);
                    Step { actions: vec![], wake_at: Some(wake) }
                }
            }
            GuardState::Warning { lock_at } => {
                if idle < warn_after {
                    // Input arrived: idle dropped back below the warning threshold.
                    self.state = GuardState::Active;
                    Step { actions: vec![Action::CancelWarning], wake_at: Some(now + (warn_after - idle)) }
                } else if now >= lock_at || idle >= t.idle_timeout {
                    self.lock(LockReason::Idle)
                } else {
                    Step { actions: vec![], wake_at: Some(lock_at.min(now + WARNING_POLL)) }
                }
            }
        }
    }

    /// "Lock now" from the tray, or a lock ordered by `wardlockd` or the OS.
    pub fn lock_now(&mut self, reason: LockReason) -> Step {
        match self.state {
            GuardState::Locked { .. } => Step { actions: vec![], wake_at: None },
            _ => self.lock(reason),
        }
    }

    /// The machine resumed from suspend or hibernation.
    pub fn resumed(&mut self, now: MonoTime, idle: Duration) -> Step {
        if self.timings.lock_on_resume {
            self.lock_now(LockReason::Resume)
        } else {
            self.tick(now, idle)
        }
    }

    /// `wardlockd` granted an unlock (its audit entry is already durable).
    pub fn unlocked(&mut self, now: MonoTime) -> Step {
        if !matches!(self.state, GuardState::Locked { .. }) {
            return Step { actions: vec![], wake_at: None };
        }
        self.state = GuardState::Active;
        self.active_since = now;
        let warn_after = self.timings.idle_timeout.saturating_sub(self.timings.warning);
        Step { actions: vec![Action::Unlock], wake_at: Some(now + warn_after) }
    }

    /// `wardlockd` granted an unlock with a hold: no warning and no idle lock until
    /// `hold` has passed; idle counts from its end.
    pub fn unlocked_held(&mut self, now: MonoTime, hold: Duration) -> Step {
        let mut step = self.unlocked(now);
        if !step.actions.is_empty() {
            self.active_since = now + hold;
            step.wake_at =
                Some(self.active_since + self.timings.idle_timeout.saturating_sub(self.timings.warning));
        }
        step
    }

    /// The end of the hold in force, if one is.
    pub fn held_until(&self, now: MonoTime) -> Option<MonoTime> {
        (self.active_since > now && matches!(self.state, GuardState::Active)).then_some(self.active_since)
    }

    /// An application the policy lets keep the session awake has the focus now: as input
    /// would, this cancels a countdown and starts the idle time again.
    pub fn kept_awake(&mut self, now: MonoTime) -> Step {
        if let GuardState::Locked { .. } = self.state {
            return Step { actions: vec![], wake_at: None };
        }
        let mut actions = Vec::new();
        if let GuardState::Warning { .. } = self.state {
            self.state = GuardState::Active;
            actions.push(Action::CancelWarning);
        }
        self.active_since = self.active_since.max(now);
        let warn_after = self.timings.idle_timeout.saturating_sub(self.timings.warning);
        Step { actions, wake_at: Some(self.active_since + warn_after) }
    }

    fn lock(&mut self, reason: LockReason) -> Step {
        let mut actions = Vec::new();
        if let GuardState::Warning { .. } = self.state {
            actions.push(Action::CancelWarning);
        }
        self.state = GuardState::Locked { reason };
        actions.push(Action::Lock { reason });
        Step { actions, wake_at: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn at(secs: u64) -> MonoTime {
        MonoTime::from_duration(S(secs))
    }

    fn guard() -> Guard {
        let timings = GuardTimings { idle_timeout: S(300), warning: S(30), lock_on_resume: true };
        Guard::new(timings, at(0))
    }

    #[test]
    fn sleeps_until_the_warning_is_due_instead_of_polling() {
        let mut g = guard();
        let step = g.tick(at(100), S(100));
        assert!(step.actions.is_empty());
        assert_eq!(step.wake_at, Some(at(270)));
    }

    #[test]
    fn idle_warns_then_locks_at_the_timeout() {
        let mut g = guard();
        let step = g.tick(at(270), S(270));
        assert_eq!(step.actions, vec![Action::ShowWarning { lock_at: at(300) }]);
        assert_eq!(step.wake_at, Some(at(270) + WARNING_POLL));
        let step = g.tick(at(299), S(299));
        assert!(step.actions.is_empty());
        assert_eq!(step.wake_at, Some(at(299) + WARNING_POLL));
        let step = g.tick(at(300), S(300));
        assert_eq!(step.actions, vec![Action::CancelWarning, Action::Lock { reason: LockReason::Idle }]);
        assert_eq!(step.wake_at, None);
        assert_eq!(g.state(), GuardState::Locked { reason: LockReason::Idle });
    }

    #[test]
    fn input_during_warning_cancels_it() {
        let mut g = guard();
        g.tick(at(280), S(280));
        let step = g.tick(at(290), S(1));
        assert_eq!(step.actions, vec![Action::CancelWarning]);
        assert_eq!(g.state(), GuardState::Active);
        assert_eq!(step.wake_at, Some(at(290 + 269)));
    }

    #[test]
    fn a_late_wake_up_locks_at_once() {
        let mut g = guard();
        let step = g.tick(at(1000), S(1000));
        assert_eq!(step.actions, vec![Action::Lock { reason: LockReason::Idle }]);
    }

    #[test]
    fn locked_ignores_idle_until_unlocked() {
        let mut g = guard();
        g.lock_now(LockReason::Manual);
        assert_eq!(g.tick(at(5), S(0)).actions, vec![]);
        assert_eq!(g.lock_now(LockReason::Manual).actions, vec![], "no second lock");
        let step = g.unlocked(at(10));
        assert_eq!(step.actions, vec![Action::Unlock]);
        assert_eq!(step.wake_at, Some(at(280)));
    }

    #[test]
    fn stale_idle_after_unlock_does_not_relock_at_once() {
        let mut g = guard();
        g.tick(at(400), S(400));
        g.unlocked(at(410));
        // The OS still reports the old idle time (the unlock was typed into the lock window).
        let step = g.tick(at(411), S(411));
        assert!(step.actions.is_empty(), "{step:?}");
        assert_eq!(step.wake_at, Some(at(410 + 270)));
    }

    #[test]
    fn resume_locks_when_policy_says_so() {
        let mut g = guard();
        assert_eq!(g.resumed(at(10), S(0)).actions, vec![Action::Lock { reason: LockReason::Resume }]);
        let mut g = Guard::new(GuardTimings { lock_on_resume: false, ..g.timings() }, at(0));
        assert!(g.resumed(at(10), S(0)).actions.is_empty());
    }

    #[test]
    fn zero_warning_locks_without_countdown() {
        let timings = GuardTimings { idle_timeout: S(60), warning: S(0), lock_on_resume: true };
        let mut g = Guard::new(timings, at(0));
        assert_eq!(g.tick(at(59), S(59)).wake_at, Some(at(60)));
        assert_eq!(g.tick(at(60), S(60)).actions, vec![Action::Lock { reason: LockReason::Idle }]);
    }

    #[test]
    fn new_timings_restart_a_pending_countdown() {
        let mut g = guard();
        g.tick(at(280), S(280));
        let shorter = GuardTimings { idle_timeout: S(600), warning: S(30), lock_on_resume: true };
        let step = g.set_timings(shorter, at(281), S(281));
        assert_eq!(step.actions, vec![Action::CancelWarning]);
        assert_eq!(step.wake_at, Some(at(281 + 289)));
    }

    #[test]
    fn a_hold_keeps_the_session_open_for_its_length_then_idle_counts_from_its_end() {
        let mut g = guard();
        g.lock_now(LockReason::Manual);
        let step = g.unlocked_held(at(100), S(300));
        assert_eq!(step.actions, vec![Action::Unlock]);
        assert_eq!(step.wake_at, Some(at(400 + 270)), "first warning 270 s after the hold ends");
        assert_eq!(g.held_until(at(101)), Some(at(400)));
        // No input at all during the hold: nothing happens, however idle the OS says.
        let step = g.tick(at(399), S(299));
        assert!(step.actions.is_empty(), "{step:?}");
        assert_eq!(step.wake_at, Some(at(670)));
        assert_eq!(g.tick(at(669), S(569)).actions, vec![]);
        assert_eq!(g.tick(at(670), S(570)).actions, vec![Action::ShowWarning { lock_at: at(700) }]);
        assert_eq!(g.held_until(at(670)), None);
        // "Lock now" still locks during a hold.
        let mut g = guard();
        g.lock_now(LockReason::Manual);
        g.unlocked_held(at(0), S(300));
        assert_eq!(g.lock_now(LockReason::Manual).actions, vec![Action::Lock { reason: LockReason::Manual }]);
    }

    #[test]
    fn a_focused_keep_awake_app_cancels_the_countdown_and_restarts_idle_like_input() {
        let mut g = guard();
        g.tick(at(280), S(280));
        let step = g.kept_awake(at(285));
        assert_eq!(step.actions, vec![Action::CancelWarning]);
        assert_eq!(step.wake_at, Some(at(285 + 270)));
        assert_eq!(g.tick(at(300), S(300)).actions, vec![], "idle counts from the keep-awake");
        g.lock_now(LockReason::Manual);
        assert_eq!(g.kept_awake(at(400)).actions, vec![], "it never unlocks");
    }
}
