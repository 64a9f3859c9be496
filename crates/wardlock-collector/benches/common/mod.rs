//! What the collector's benches share: their knobs and how they time a read.

use std::time::{Duration, Instant};

/// A knob from the environment (`WARDLOCK_BENCH_…`), or its default.
pub fn knob(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The median of `runs` timings of `read`, and how many rows it read.
pub fn median(runs: usize, mut read: impl FnMut() -> usize) -> (Duration, usize) {
    let mut times = Vec::with_capacity(runs);
    let mut rows = 0;
    for _ in 0..runs {
        let start = Instant::now();
        rows = read();
        times.push(start.elapsed());
    }
    times.sort();
    (times[runs / 2], rows)
}
