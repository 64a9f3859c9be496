//! Per-workstation intake limits, so that one workstation cannot fill the collector:
//! entries per minute (a bucket that holds a minute's worth and refills steadily) and
//! bytes per UTC day. The defaults are far above what a ward sends; a workstation over
//! them gets `429` with `Retry-After`, and its agent waits that long before it sends
//! again (nothing is lost: the entries stay unsent on the workstation).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a collector lets one workstation send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub entries_per_minute: u32,
    pub bytes_per_day: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { entries_per_minute: 600, bytes_per_day: 64 * 1024 * 1024 }
    }
}

#[derive(Debug)]
pub struct Quota {
    limits: Limits,
    usage: Mutex<HashMap<String, Usage>>,
}

#[derive(Debug, Clone, Copy)]
struct Usage {
    /// Entries that may be sent now; below zero after a batch larger than the bucket.
    tokens: f64,
    refilled: Instant,
    /// The UTC day (days since the epoch) `bytes` counts.
    day: i64,
    bytes: u64,
}

/// A batch refused for now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverQuota {
    pub retry_after: Duration,
    pub why: String,
}

impl Default for Quota {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl Quota {
    pub fn new(limits: Limits) -> Self {
        Self { limits, usage: Mutex::new(HashMap::new()) }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Takes `entries` and `bytes` from `workstation`'s allowance, or says when to try
    /// again. `unix_millis` is the wall clock, for the day boundary.
    pub fn admit(
        &self,
        workstation: &str,
        entries: usize,
        bytes: usize,
        now: Instant,
        unix_millis: i64,
    ) -> Result<(), OverQuota> {
        let capacity = f64::from(self.limits.entries_per_minute.max(1));
        let per_second = capacity / 60.0;
        let day = unix_millis.div_euclid(86_400_000);
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let u = usage.entry(workstation.to_owned()).or_insert(Usage {
            tokens: capacity,
            refilled: now,
            day,
            bytes: 0,
        });
        u.tokens =
            (u.tokens + now.saturating_duration_since(u.refilled).as_secs_f64() * per_second).min(capacity);
        u.refilled = now;
        if u.day != day {
            u.day = day;
            u.bytes = 0;
        }
        if u.bytes.saturating_add(bytes as u64) > self.limits.bytes_per_day {
            let next_day_ms = (day + 1) * 86_400_000 - unix_millis;
            return Err(OverQuota {
                retry_after: Duration::from_millis(u64::try_from(next_day_ms).unwrap_or(0))
                    .max(Duration::from_secs(1)),
                why: format!(
                    "this workstation sent {} bytes today, the collector takes at most {} a day",
                    u.bytes, self.limits.bytes_per_day
                ),
            });
        }
        // A batch larger than the bucket needs it full, and leaves it owing the rest.
        let needed = (entries as f64).min(capacity);
        if u.tokens < needed {
            let wait = ((needed - u.tokens) / per_second).ceil().max(1.0);
            return Err(OverQuota {
                retry_after: Duration::from_secs_f64(wait),
                why: format!(
                    "more than {} entries a minute from this workstation",
                    self.limits.entries_per_minute
                ),
            });
        }
        u.tokens -= entries as f64;
        u.bytes = u.bytes.saturating_add(bytes as u64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn a_minutes_worth_goes_at_once_then_the_rate_and_others_are_not_held_back() {
        let q = Quota::new(Limits { entries_per_minute: 600, bytes_per_day: u64::MAX });
        let t0 = Instant::now();
        assert!(q.admit("a", 500, 0, t0, 0).is_ok());
        assert!(q.admit("a", 100, 0, t0, 0).is_ok());
        let refused = q.admit("a", 50, 0, t0, 0).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(5), "10 entries a second refill");
        assert!(refused.why.contains("600 entries a minute"));
        assert!(q.admit("b", 500, 0, t0, 0).is_ok(), "another workstation has its own allowance");
        assert!(q.admit("a", 50, 0, t0 + Duration::from_secs(5), 0).is_ok());
    }

    #[test]
    fn a_batch_larger_than_the_bucket_needs_it_full_and_then_waits_off_the_rest() {
        let q = Quota::new(Limits { entries_per_minute: 60, bytes_per_day: u64::MAX });
        let t0 = Instant::now();
        assert!(q.admit("a", 120, 0, t0, 0).is_ok());
        let refused = q.admit("a", 1, 0, t0 + Duration::from_secs(30), 0).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(31), "owed 60, 30 paid off, then 1 more");
    }

    #[test]
    fn bytes_per_day_reset_at_the_utc_day_and_say_so_in_retry_after() {
        let q = Quota::new(Limits { entries_per_minute: 1_000_000, bytes_per_day: 1000 });
        let t0 = Instant::now();
        let evening = 10 * DAY - 60_000;
        assert!(q.admit("a", 1, 900, t0, evening).is_ok());
        let refused = q.admit("a", 1, 200, t0, evening).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(60), "until midnight UTC");
        assert!(q.admit("a", 1, 200, t0, 10 * DAY).is_ok(), "a new day");
    }
}
