//! Token buckets: how many unlock and enrollment attempts `wardlockd` considers per
//! minute. Attempts past one are refused without being checked or audited one by one;
//! their number goes into one audit entry, so a script hammering the socket can neither
//! guess faster nor fill the disk. The admitted guards have a bucket of their own that
//! no other client can empty: a script cannot starve the clinician at the lock screen.

use std::time::{Duration, Instant};

use wardlock_core::protocol::local::ClientRole;

/// One bucket per kind of client.
#[derive(Debug)]
pub struct AttemptBudgets {
    guards: AttemptBudget,
    tools: AttemptBudget,
}

impl AttemptBudgets {
    pub fn new(per_minute: u32, now: Instant) -> Self {
        Self { guards: AttemptBudget::new(per_minute, now), tools: AttemptBudget::new(per_minute, now) }
    }

    pub fn of(&mut self, role: ClientRole) -> &mut AttemptBudget {
        match role {
            ClientRole::Guard => &mut self.guards,
            ClientRole::Tool => &mut self.tools,
        }
    }

    pub fn set_rate(&mut self, per_minute: u32, now: Instant) {
        self.guards.set_rate(per_minute, now);
        self.tools.set_rate(per_minute, now);
    }
}

#[derive(Debug)]
pub struct AttemptBudget {
    per_minute: u32,
    tokens: f64,
    refilled_at: Instant,
    /// Attempts refused unheard since the last audit entry about them.
    suppressed: u64,
}

/// What to do with one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Check it. `suppressed_before` attempts were refused unheard since the last one
    /// admitted: audit that number first.
    Admit { suppressed_before: u64 },
    /// Refuse it unheard; a token is due after `retry_after`.
    Refuse { retry_after: Duration },
}

impl AttemptBudget {
    pub fn new(per_minute: u32, now: Instant) -> Self {
        Self {
            per_minute: per_minute.max(1),
            tokens: f64::from(per_minute.max(1)),
            refilled_at: now,
            suppressed: 0,
        }
    }

    /// Follows a policy change; the bucket never holds more than the new rate allows.
    pub fn set_rate(&mut self, per_minute: u32, now: Instant) {
        self.refill(now);
        self.per_minute = per_minute.max(1);
        self.tokens = self.tokens.min(f64::from(self.per_minute));
    }

    pub fn admit(&mut self, now: Instant) -> Admission {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Admission::Admit { suppressed_before: std::mem::take(&mut self.suppressed) }
        } else {
            self.suppressed += 1;
            let missing = 1.0 - self.tokens;
            Admission::Refuse {
                retry_after: Duration::from_secs_f64(missing * 60.0 / f64::from(self.per_minute)),
            }
        }
    }

    /// Attempts refused unheard and not yet audited (for the entry written at shutdown).
    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled_at).as_secs_f64();
        self.tokens =
            (self.tokens + elapsed * f64::from(self.per_minute) / 60.0).min(f64::from(self.per_minute));
        self.refilled_at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_beyond_the_rate_is_refused_and_counted() {
        let t0 = Instant::now();
        let mut budget = AttemptBudget::new(6, t0);
        for _ in 0..6 {
            assert_eq!(budget.admit(t0), Admission::Admit { suppressed_before: 0 });
        }
        let Admission::Refuse { retry_after } = budget.admit(t0) else { panic!("7th admitted") };
        assert_eq!(retry_after, Duration::from_secs(10), "6 per minute: one token every 10 s");
        assert!(matches!(budget.admit(t0), Admission::Refuse { .. }));
        // After 10 s one token is back, and the two refusals are reported once.
        assert_eq!(budget.admit(t0 + Duration::from_secs(10)), Admission::Admit { suppressed_before: 2 });
        assert!(matches!(budget.admit(t0 + Duration::from_secs(10)), Admission::Refuse { .. }));
        assert_eq!(budget.take_suppressed(), 1);
        assert_eq!(budget.take_suppressed(), 0);
    }

    #[test]
    fn tools_emptying_their_bucket_leave_the_guards_alone() {
        let t0 = Instant::now();
        let mut budgets = AttemptBudgets::new(5, t0);
        for _ in 0..5 {
            assert!(matches!(budgets.of(ClientRole::Tool).admit(t0), Admission::Admit { .. }));
        }
        assert!(matches!(budgets.of(ClientRole::Tool).admit(t0), Admission::Refuse { .. }));
        assert_eq!(budgets.of(ClientRole::Guard).admit(t0), Admission::Admit { suppressed_before: 0 });
    }

    #[test]
    fn lowering_the_rate_drops_saved_up_tokens() {
        let t0 = Instant::now();
        let mut budget = AttemptBudget::new(60, t0);
        budget.set_rate(2, t0);
        assert!(matches!(budget.admit(t0), Admission::Admit { .. }));
        assert!(matches!(budget.admit(t0), Admission::Admit { .. }));
        assert!(matches!(budget.admit(t0), Admission::Refuse { .. }));
    }
}
