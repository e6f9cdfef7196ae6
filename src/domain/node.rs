//! A node's status as the API, the metrics and the database name it, and how long a
//! node may stay silent before it counts as lost.

use std::time::Duration;

/// Heartbeats a node may miss before it is declared lost.
pub const HEARTBEATS_MISSED: u32 = 3;

/// The seed agent's heartbeat interval (its `--heartbeat-interval` default), assumed for
/// a node that declares none: seed agents ignore the interval the master asks for.
pub const SEED_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);

/// A declared heartbeat interval in whole milliseconds, if it is one a node may keep
/// (50 ms to an hour).
pub fn heartbeat_interval_ms(seconds: f64) -> Result<i32, String> {
    if seconds.is_finite() && (0.05..=3600.0).contains(&seconds) {
        Ok((seconds * 1000.0).round() as i32)
    } else {
        Err(format!("heartbeat_interval_seconds must be between 0.05 and 3600, not {seconds}"))
    }
}

/// How long a node that declared `declared_ms` (None: nothing) may stay silent before
/// it is lost: three of its own intervals.
pub fn loss_window(declared_ms: Option<i32>) -> Duration {
    let interval =
        declared_ms.filter(|ms| *ms > 0).map(|ms| Duration::from_millis(ms as u64)).unwrap_or(SEED_HEARTBEAT_INTERVAL);
    interval * HEARTBEATS_MISSED
}

spelled_enum! {
/// Derived from liveness, drain and load; spelled in lower case, written once.
pub enum NodeState {
    /// Heartbeating, not draining, with a free slot.
    Available,
    /// Every slot holds a job.
    Busy,
    /// Finishing its jobs, taking no new ones.
    Draining,
    /// Missed its heartbeat deadline.
    Offline,
}
}

impl NodeState {
    /// The status of a node from what the supervisor knows of it: liveness first, then
    /// drain, then load (a node reporting no slots counts as one slot).
    pub fn of(offline: bool, draining: bool, running: usize, max_concurrent_jobs: i32) -> NodeState {
        if offline {
            NodeState::Offline
        } else if draining {
            NodeState::Draining
        } else if running as i64 >= i64::from(max_concurrent_jobs.max(1)) {
            NodeState::Busy
        } else {
            NodeState::Available
        }
    }

    /// Index in per-status count arrays (`ALL` order).
    pub fn slot(self) -> usize {
        self as usize
    }
}

/// `24h`, `90m`, `30s`, `7d` or plain seconds; `0` (or `never`) = None.
pub fn parse_forget_after(s: &str) -> Result<Option<std::time::Duration>, String> {
    let t = s.trim();
    if t == "0" || t.eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    let (num, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let scale = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err(format!("'{s}': use a number with s, m, h or d (e.g. 24h), or 0 for never")),
    };
    match num.trim().parse::<f64>() {
        Ok(n) if n > 0.0 && n * scale <= 365.0 * 86_400.0 => Ok(Some(std::time::Duration::from_secs_f64(n * scale))),
        _ => Err(format!("'{s}': a positive duration of at most a year (e.g. 24h), or 0 for never")),
    }
}

/// Is an offline node gone long enough to be forgotten? Never while it holds jobs.
pub fn forgettable(
    offline: bool,
    running: usize,
    last_contact_micros: i64,
    now_micros: i64,
    after: std::time::Duration,
) -> bool {
    offline && running == 0 && now_micros.saturating_sub(last_contact_micros) >= after.as_micros() as i64
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn offline_nodes_are_forgotten_after_the_operators_delay() {
        let day = Duration::from_secs(86_400);
        let now = 10 * 86_400 * 1_000_000;
        let cases = [
            ((true, 0, now - 86_400 * 1_000_000), true),
            ((true, 0, now - 86_399 * 1_000_000), false),
            ((false, 0, 0), false),
            ((true, 1, 0), false),
        ];
        for ((offline, running, last), want) in cases {
            assert_eq!(forgettable(offline, running, last, now, day), want, "{offline} {running} {last}");
        }
        let parsed = ["24h", "90m", "30s", "2d", "45", "0", "never"].map(|s| parse_forget_after(s).unwrap());
        let secs: Vec<Option<u64>> = parsed.iter().map(|d| d.map(|d| d.as_secs())).collect();
        assert_eq!(secs, [Some(86_400), Some(5_400), Some(30), Some(172_800), Some(45), None, None]);
        for bad in ["-1h", "1w", "h", "400d", ""] {
            assert!(parse_forget_after(bad).is_err(), "{bad}");
        }
    }

    use super::NodeState::*;
    use super::*;

    #[test]
    fn loss_window_is_three_of_the_nodes_own_intervals() {
        assert_eq!(loss_window(None), Duration::from_secs(90), "a seed agent: 3 × 30 s");
        assert_eq!(loss_window(Some(5000)), Duration::from_secs(15));
        assert_eq!(loss_window(Some(200)), Duration::from_millis(600));
        assert_eq!(heartbeat_interval_ms(0.2), Ok(200));
        for bad in [0.0, 0.01, 3601.0, f64::NAN, f64::INFINITY, -1.0] {
            assert!(heartbeat_interval_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_precedence() {
        // (offline, draining, running, max) → status
        let cases = [
            ((true, true, 9, 1), Offline),
            ((false, true, 9, 1), Draining),
            ((false, false, 1, 1), Busy),
            ((false, false, 1, 0), Busy),
            ((false, false, 1, 2), Available),
            ((false, false, 0, 0), Available),
        ];
        for ((offline, draining, running, max), want) in cases {
            assert_eq!(NodeState::of(offline, draining, running, max), want, "{offline} {draining} {running}/{max}");
        }
        for (i, s) in NodeState::ALL.iter().enumerate() {
            assert_eq!(s.slot(), i);
            assert_eq!(s.as_str().parse::<NodeState>().ok(), Some(*s));
        }
    }
}
