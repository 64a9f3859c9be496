//! Which PHI windows are held behind the lock for whom, and what becomes of them at an
//! unlock, a sign-out, or when their clinician never comes back.
//!
//! The guard finds and moves the windows; this ledger only decides. A window is held
//! from the lock (hidden by the guard, or already minimised by its user) until it is
//! restored to its clinician or closed. A window whose clinician is not known (nobody
//! unlocked since the guard started) belongs to nobody, so every unlock is a switch.

use std::time::Duration;

use crate::clock::MonoTime;
use crate::policy::PhiSwitch;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held<W> {
    pub window: W,
    /// The PHI application's name from the policy.
    pub app: String,
    /// The clinician whose session it was at the lock.
    pub owner: Option<String>,
    pub since: MonoTime,
    /// The guard hid it (it was on screen); a window its user had minimised stays so.
    pub restore: bool,
    /// A close was ordered; it is not ordered again.
    pub closing: bool,
}

/// Why a PHI application is closed; audited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Another clinician unlocked (`phi.on_switch = "close"`).
    UserSwitch,
    /// Held longer than `phi.close_after`: the session was abandoned.
    Abandoned,
    /// Its clinician chose "Sign out" at the lock screen.
    SignedOut,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::UserSwitch => "user_switch",
            CloseReason::Abandoned => "abandoned",
            CloseReason::SignedOut => "signed_out",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhiStep<W> {
    Restore { window: W, app: String, owner: Option<String> },
    Close { window: W, app: String, owner: Option<String>, reason: CloseReason },
}

#[derive(Debug, Clone)]
pub struct PhiLedger<W> {
    held: Vec<Held<W>>,
}

impl<W> Default for PhiLedger<W> {
    fn default() -> Self {
        Self { held: Vec::new() }
    }
}

impl<W: Copy + Eq> PhiLedger<W> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn held(&self) -> &[Held<W>] {
        &self.held
    }

    pub fn is_held(&self, window: W) -> bool {
        self.held.iter().any(|h| h.window == window)
    }

    /// A window goes behind the lock (once; a window held already keeps its owner).
    pub fn hold(&mut self, window: W, app: &str, owner: Option<&str>, restore: bool, now: MonoTime) {
        if self.is_held(window) {
            return;
        }
        self.held.push(Held {
            window,
            app: app.to_owned(),
            owner: owner.map(str::to_owned),
            since: now,
            restore,
            closing: false,
        });
    }

    /// `user` unlocked: their windows come back; other clinicians' are closed or stay
    /// held, per `on_switch`.
    pub fn unlocked(&mut self, user: &str, on_switch: PhiSwitch) -> Vec<PhiStep<W>> {
        let mut steps = Vec::new();
        self.held.retain_mut(|h| {
            if h.owner.as_deref() == Some(user) {
                if h.restore {
                    steps.push(PhiStep::Restore {
                        window: h.window,
                        app: h.app.clone(),
                        owner: h.owner.clone(),
                    });
                }
                return false;
            }
            if on_switch == PhiSwitch::Close && !h.closing {
                h.closing = true;
                steps.push(close(h, CloseReason::UserSwitch));
            }
            true
        });
        steps
    }

    /// `user` signed out at the lock screen: their windows are closed, the lock stays.
    pub fn signed_out(&mut self, user: &str) -> Vec<PhiStep<W>> {
        self.close_where(|h| h.owner.as_deref() == Some(user), CloseReason::SignedOut)
    }

    /// Windows held at least `close_after` are closed.
    pub fn abandoned(&mut self, now: MonoTime, close_after: Duration) -> Vec<PhiStep<W>> {
        self.close_where(|h| now.saturating_since(h.since) >= close_after, CloseReason::Abandoned)
    }

    /// When [`PhiLedger::abandoned`] next has something to close.
    pub fn next_abandoned_at(&self, close_after: Duration) -> Option<MonoTime> {
        self.held.iter().filter(|h| !h.closing).map(|h| h.since + close_after).min()
    }

    /// The window is gone (closed, or its application quit).
    pub fn gone(&mut self, window: W) {
        self.held.retain(|h| h.window != window);
    }

    fn close_where(&mut self, pick: impl Fn(&Held<W>) -> bool, reason: CloseReason) -> Vec<PhiStep<W>> {
        let mut steps = Vec::new();
        for h in self.held.iter_mut().filter(|h| !h.closing && pick(h)) {
            h.closing = true;
            steps.push(close(h, reason));
        }
        steps
    }
}

fn close<W: Copy>(h: &Held<W>, reason: CloseReason) -> PhiStep<W> {
    PhiStep::Close { window: h.window, app: h.app.clone(), owner: h.owner.clone(), reason }
}

/// "Nora Nightingale" → "Nora N.": enough for a colleague to know whose session it is,
/// without the full name on a screen anyone can read.
pub fn short_name(display_name: &str) -> String {
    let mut words = display_name.split_whitespace();
    let Some(first) = words.next() else { return String::new() };
    match words.last().and_then(|last| last.chars().next()) {
        Some(initial) => format!("{first} {initial}."),
        None => first.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> MonoTime {
        MonoTime::from_duration(Duration::from_secs(secs))
    }

    fn ledger() -> PhiLedger<u32> {
        let mut l = PhiLedger::new();
        l.hold(1, "EHR", Some("nora"), true, at(0));
        l.hold(2, "PACS", Some("nora"), true, at(0));
        l.hold(3, "Lab", Some("nora"), false, at(0));
        l
    }

    #[test]
    fn the_same_clinician_gets_back_what_was_hidden_and_nothing_she_had_minimised() {
        let mut l = ledger();
        let steps = l.unlocked("nora", PhiSwitch::Close);
        let restored: Vec<u32> = steps
            .iter()
            .map(|s| match s {
                PhiStep::Restore { window, .. } => *window,
                PhiStep::Close { .. } => panic!("nothing is closed for its owner: {s:?}"),
            })
            .collect();
        assert_eq!(restored, vec![1, 2]);
        assert!(l.held().is_empty());
    }

    #[test]
    fn another_clinician_unlocking_closes_the_first_ones_apps_once() {
        let mut l = ledger();
        let steps = l.unlocked("omar", PhiSwitch::Close);
        assert_eq!(steps.len(), 3);
        assert!(steps.iter().all(|s| matches!(s, PhiStep::Close { reason: CloseReason::UserSwitch, owner: Some(o), .. } if o == "nora")));
        assert!(l.unlocked("omar", PhiSwitch::Close).is_empty(), "a close is ordered once");
        // Still held until the guard sees them gone; a failed close keeps them hidden.
        assert_eq!(l.held().len(), 3);
        l.gone(1);
        assert_eq!(l.held().len(), 2);
    }

    #[test]
    fn keep_hidden_holds_them_for_their_clinician_across_other_sessions() {
        let mut l = ledger();
        assert!(l.unlocked("omar", PhiSwitch::KeepHidden).is_empty());
        l.hold(9, "EHR", Some("omar"), true, at(100));
        let steps = l.unlocked("nora", PhiSwitch::KeepHidden);
        assert_eq!(steps.len(), 2, "nora's two hidden windows: {steps:?}");
        assert_eq!(l.held().len(), 1);
        assert_eq!(l.held()[0].owner.as_deref(), Some("omar"));
    }

    #[test]
    fn windows_of_nobody_known_are_never_restored_to_whoever_unlocks() {
        let mut l = PhiLedger::new();
        l.hold(1, "EHR", None, true, at(0));
        let steps = l.unlocked("nora", PhiSwitch::Close);
        assert!(matches!(steps.as_slice(), [PhiStep::Close { reason: CloseReason::UserSwitch, .. }]));
        let mut l = PhiLedger::new();
        l.hold(1, "EHR", None, true, at(0));
        assert!(l.unlocked("nora", PhiSwitch::KeepHidden).is_empty());
        assert!(l.is_held(1));
    }

    #[test]
    fn sign_out_closes_only_that_clinicians_apps() {
        let mut l = ledger();
        l.hold(9, "EHR", Some("omar"), true, at(0));
        let steps = l.signed_out("nora");
        assert_eq!(steps.len(), 3);
        assert!(steps.iter().all(|s| matches!(s, PhiStep::Close { reason: CloseReason::SignedOut, .. })));
        assert!(l.signed_out("nora").is_empty());
        assert!(l.signed_out("nobody").is_empty());
    }

    #[test]
    fn abandoned_windows_close_after_the_policy_time_and_not_before() {
        let mut l = ledger();
        l.hold(9, "EHR", Some("omar"), true, at(600));
        let close_after = Duration::from_secs(1800);
        assert_eq!(l.next_abandoned_at(close_after), Some(at(1800)));
        assert!(l.abandoned(at(1799), close_after).is_empty());
        assert_eq!(l.abandoned(at(1800), close_after).len(), 3);
        assert_eq!(l.next_abandoned_at(close_after), Some(at(2400)));
        assert_eq!(l.abandoned(at(2400), close_after).len(), 1);
        assert_eq!(l.next_abandoned_at(close_after), None);
    }

    #[test]
    fn a_window_is_held_once_with_its_first_owner() {
        let mut l = PhiLedger::new();
        l.hold(1, "EHR", Some("nora"), true, at(0));
        l.hold(1, "EHR", Some("omar"), true, at(5));
        assert_eq!(l.held().len(), 1);
        assert_eq!(l.held()[0].owner.as_deref(), Some("nora"));
    }

    #[test]
    fn short_names_keep_the_first_name_and_the_last_initial() {
        assert_eq!(short_name("Nora Nightingale"), "Nora N.");
        assert_eq!(short_name("  Omar  ibn  Said "), "Omar S.");
        assert_eq!(short_name("Cher"), "Cher");
        assert_eq!(short_name(""), "");
    }
}
