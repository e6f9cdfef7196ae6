//! Jobs finished per interval over the last hour, counted as they finish: what the
//! console's overview charts. Kept in memory (by `MetricsActor`, seeded from the job log
//! at start) so that no index on `jobs.completed_at` is needed — every completion paid
//! for one — and a page view reads no table.

use std::collections::VecDeque;

/// The chart's interval (five minutes) and how many it shows (an hour).
pub const FINISHED_INTERVAL_MICROS: i64 = 5 * 60 * 1_000_000;
pub const FINISHED_INTERVALS: usize = 12;

/// Counts per interval of `interval` µs, aligned to multiples of it (wall clock), for
/// the `kept` most recent intervals.
#[derive(Debug, Clone)]
pub struct FinishedSeries {
    interval: i64,
    kept: usize,
    /// (interval number = time / interval, completed, failed), oldest first.
    slots: VecDeque<(i64, u64, u64)>,
}

impl FinishedSeries {
    pub fn new(interval_micros: i64, kept: usize) -> Self {
        FinishedSeries { interval: interval_micros.max(1), kept: kept.max(1), slots: VecDeque::new() }
    }

    /// The interval a time falls in.
    pub fn slot_of(&self, at_micros: i64) -> i64 {
        at_micros.div_euclid(self.interval)
    }

    /// Count `completed` and `failed` finishes in interval `slot`. Older than the window
    /// kept (measured from the newest interval seen): dropped.
    pub fn add(&mut self, slot: i64, completed: u64, failed: u64) {
        let newest = self.slots.back().map_or(slot, |s| s.0.max(slot));
        if slot <= newest - self.kept as i64 {
            return;
        }
        match self.slots.iter().position(|s| s.0 >= slot) {
            Some(i) if self.slots[i].0 == slot => {
                self.slots[i].1 += completed;
                self.slots[i].2 += failed;
            }
            Some(i) => self.slots.insert(i, (slot, completed, failed)),
            None => self.slots.push_back((slot, completed, failed)),
        }
        while self.slots.front().is_some_and(|s| s.0 <= newest - self.kept as i64) {
            self.slots.pop_front();
        }
    }

    /// One finish at `at_micros`.
    pub fn record(&mut self, at_micros: i64, completed: bool) {
        let slot = self.slot_of(at_micros);
        self.add(slot, completed as u64, !completed as u64);
    }

    /// (completed, failed) for each of the `kept` intervals ending with the one `now`
    /// falls in, oldest first; intervals without finishes count zero.
    pub fn window(&self, now_micros: i64) -> Vec<(u64, u64)> {
        let last = self.slot_of(now_micros);
        let first = last - self.kept as i64 + 1;
        let mut out = vec![(0, 0); self.kept];
        for &(slot, ok, bad) in &self.slots {
            if (first..=last).contains(&slot) {
                out[(slot - first) as usize] = (ok, bad);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN5: i64 = 300_000_000;

    #[test]
    fn finishes_are_counted_in_the_interval_they_fall_in_over_the_window_that_ends_now() {
        // (finishes as (at, completed), now, expected window of 3 intervals)
        type Case<'a> = (&'a [(i64, bool)], i64, [(u64, u64); 3]);
        let cases: &[Case] = &[
            (&[], 10 * MIN5, [(0, 0); 3]),
            (&[(10 * MIN5, true), (10 * MIN5 + 1, false)], 10 * MIN5 + 5, [(0, 0), (0, 0), (1, 1)]),
            // Intervals are aligned to the clock, not to `now`.
            (&[(9 * MIN5 - 1, true), (9 * MIN5, true)], 10 * MIN5, [(1, 0), (1, 0), (0, 0)]),
            // Older than the window: not shown.
            (&[(7 * MIN5, true), (8 * MIN5, false)], 10 * MIN5, [(0, 1), (0, 0), (0, 0)]),
            // The window moves on with `now`, finishes or not.
            (&[(10 * MIN5, true)], 13 * MIN5, [(0, 0); 3]),
            // Out of order (a seed after live counts) lands in its own interval.
            (&[(10 * MIN5, true), (9 * MIN5, false), (10 * MIN5 + 7, true)], 10 * MIN5, [(0, 0), (0, 1), (2, 0)]),
        ];
        for (finishes, now, want) in cases {
            let mut s = FinishedSeries::new(MIN5, 3);
            for &(at, ok) in finishes.iter() {
                s.record(at, ok);
            }
            assert_eq!(s.window(*now), want.to_vec(), "{finishes:?} at {now}");
        }
    }

    #[test]
    fn only_the_intervals_of_the_window_are_kept() {
        let mut s = FinishedSeries::new(MIN5, 12);
        for i in 0..1_000 {
            s.record(i * MIN5, true);
        }
        assert_eq!(s.slots.len(), 12);
        s.add(0, 5, 5);
        assert_eq!(s.slots.len(), 12, "an interval older than the window is dropped");
        assert_eq!(s.window(999 * MIN5).iter().map(|w| w.0).sum::<u64>(), 12);
    }
}
