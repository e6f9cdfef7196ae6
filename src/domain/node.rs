//! A node's status as the API, the metrics and the database name it.

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

#[cfg(test)]
mod tests {
    use super::NodeState::*;
    use super::*;

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
