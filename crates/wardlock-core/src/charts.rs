//! What the console's charts mean, computed from audit entries: how late idle locks came
//! after their timeout, and how long screens stood unattended between warning and lock.

use std::collections::BTreeMap;

use crate::audit::AuditKind;
use crate::clock::UtcMillis;
use crate::protocol::collector::{DelayBucket, UnattendedDay};

/// The lateness buckets, in the order the chart shows them.
pub const DELAY_BUCKETS: &[&str] =
    &["before the timeout", "0–5 s", "5–15 s", "15–30 s", "30–60 s", "1–5 min", "over 5 min"];

/// The bucket of an idle lock that came `idle_secs` after the last input, with a timeout of
/// `timeout_secs`.
pub fn delay_bucket(idle_secs: u64, timeout_secs: u64) -> &'static str {
    if idle_secs < timeout_secs {
        return DELAY_BUCKETS[0];
    }
    match idle_secs - timeout_secs {
        0..5 => DELAY_BUCKETS[1],
        5..15 => DELAY_BUCKETS[2],
        15..30 => DELAY_BUCKETS[3],
        30..60 => DELAY_BUCKETS[4],
        60..300 => DELAY_BUCKETS[5],
        _ => DELAY_BUCKETS[6],
    }
}

/// Counts per bucket (every bucket, zero ones too) of `(idle_secs, timeout_secs)` pairs.
pub fn lock_delays(locks: impl IntoIterator<Item = (u64, u64)>) -> Vec<DelayBucket> {
    let mut counts = [0u64; 7];
    for (idle, timeout) in locks {
        let bucket = delay_bucket(idle, timeout);
        if let Some(i) = DELAY_BUCKETS.iter().position(|b| *b == bucket) {
            counts[i] += 1;
        }
    }
    DELAY_BUCKETS
        .iter()
        .zip(counts)
        .map(|(label, locks)| DelayBucket { label: (*label).to_owned(), locks })
        .collect()
}

const DAY_MS: i64 = 24 * 3600 * 1000;

/// Minutes from each warning to the lock that followed it (the next state entry of the
/// same workstation), summed per workstation and UTC day of the lock; the `top`
/// workstations with the most. `entries` are (workstation, seq, kind, time), sorted by
/// workstation and seq; a warning followed by anything but a lock (an input cancelled it)
/// counts nothing.
pub fn unattended(entries: &[(String, u64, AuditKind, UtcMillis)], top: usize) -> Vec<UnattendedDay> {
    let mut per_day: BTreeMap<(String, i64), u64> = BTreeMap::new();
    for pair in entries.windows(2) {
        let [(ws_a, seq_a, kind_a, warned), (ws_b, seq_b, kind_b, locked)] = pair else { continue };
        if ws_a == ws_b && seq_a < seq_b && *kind_a == AuditKind::WarningShown && *kind_b == AuditKind::Locked
        {
            let ms = (locked.unix_millis() - warned.unix_millis()).max(0) as u64;
            let day = locked.unix_millis().div_euclid(DAY_MS) * DAY_MS;
            *per_day.entry((ws_a.clone(), day)).or_default() += ms;
        }
    }
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for ((ws, _), ms) in &per_day {
        *totals.entry(ws.as_str()).or_default() += ms;
    }
    let mut ranked: Vec<(&str, u64)> = totals.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let kept: Vec<&str> = ranked.into_iter().take(top).map(|(ws, _)| ws).collect();
    per_day
        .iter()
        .filter(|((ws, _), _)| kept.contains(&ws.as_str()))
        .map(|((ws, day), ms)| UnattendedDay {
            workstation: ws.clone(),
            day: UtcMillis::from_unix_millis(*day),
            minutes: ms.div_ceil(60_000),
        })
        .collect()
}

const HOUR_MS: i64 = 3600 * 1000;

/// Locks and unlocks per clock hour (its start, UTC) among `entries`, for the heat map's
/// counts kept at intake.
pub fn hour_counts(entries: impl IntoIterator<Item = (AuditKind, UtcMillis)>) -> Vec<(i64, u64, u64)> {
    let mut hours: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
    for (kind, time) in entries {
        let hour = time.unix_millis().div_euclid(HOUR_MS) * HOUR_MS;
        match kind {
            AuditKind::Locked => hours.entry(hour).or_default().0 += 1,
            AuditKind::UnlockSucceeded => hours.entry(hour).or_default().1 += 1,
            _ => {}
        }
    }
    hours.into_iter().map(|(hour, (locks, unlocks))| (hour, locks, unlocks)).collect()
}

/// The start of the week (Monday 00:00 UTC) holding `ms`.
pub fn week_of(ms: i64) -> i64 {
    const WEEK: i64 = 7 * DAY_MS;
    // 1970-01-01 was a Thursday: Monday was three days later.
    const MONDAY: i64 = 4 * DAY_MS;
    (ms - MONDAY).div_euclid(WEEK) * WEEK + MONDAY
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_is_counted_by_how_far_past_its_timeout_it_came() {
        assert_eq!(delay_bucket(299, 300), "before the timeout");
        assert_eq!(delay_bucket(300, 300), "0–5 s");
        assert_eq!(delay_bucket(320, 300), "15–30 s");
        assert_eq!(delay_bucket(900, 300), "over 5 min");
        let buckets = lock_delays([(300, 300), (302, 300), (400, 300)]);
        assert_eq!(buckets.len(), DELAY_BUCKETS.len());
        assert_eq!(buckets[1].locks, 2);
        assert_eq!(buckets[5].locks, 1);
    }

    #[test]
    fn unattended_time_runs_from_a_warning_to_the_lock_that_followed_it() {
        let t = |s: i64| UtcMillis::from_unix_millis(10 * DAY_MS + s * 1000);
        let entries = vec![
            ("a".to_owned(), 1, AuditKind::WarningShown, t(0)),
            ("a".to_owned(), 2, AuditKind::Locked, t(90)),
            // A warning an input cancelled: nothing.
            ("a".to_owned(), 3, AuditKind::WarningShown, t(500)),
            ("a".to_owned(), 5, AuditKind::UnlockSucceeded, t(510)),
            // Another workstation's lock does not pair with a's warning.
            ("b".to_owned(), 1, AuditKind::Locked, t(600)),
        ];
        let days = unattended(&entries, 10);
        assert_eq!(days.len(), 1);
        assert_eq!((days[0].workstation.as_str(), days[0].minutes), ("a", 2));
        assert_eq!(days[0].day.unix_millis(), 10 * DAY_MS);
    }

    #[test]
    fn locks_and_unlocks_are_counted_per_clock_hour() {
        let at = |ms: i64| UtcMillis::from_unix_millis(ms);
        let counts = hour_counts([
            (AuditKind::Locked, at(HOUR_MS + 5)),
            (AuditKind::UnlockSucceeded, at(2 * HOUR_MS - 1)),
            (AuditKind::Locked, at(2 * HOUR_MS)),
            (AuditKind::WarningShown, at(2 * HOUR_MS + 1)),
        ]);
        assert_eq!(counts, vec![(HOUR_MS, 1, 1), (2 * HOUR_MS, 1, 0)]);
    }

    #[test]
    fn weeks_start_on_monday() {
        // 2026-12-07 was a Monday.
        let monday = 1_796_601_600_000;
        assert_eq!(week_of(monday), monday);
        assert_eq!(week_of(monday + 6 * DAY_MS + 1), monday);
        assert_eq!(week_of(monday - 1), monday - 7 * DAY_MS);
    }
}
