//! Job states and the transitions between them.
//!
//! The wire names are the seed system's (its clients, dashboards and PromQL compare
//! against them). Every change of a job's state in the master goes through
//! [`JobState::check_transition`], so an illegal move is refused with an error that
//! names the current state instead of silently overwriting it (seed bug B8).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Every state a job can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted and runnable, never placed yet.
    Pending,
    /// Runnable again after a retry, a requeue or a lost node.
    Queued,
    /// Placed on a node that has not taken it yet (reserved; `/jobs/next` hands out `processing`).
    Assigned,
    /// Leased to a worker that runs it.
    Processing,
    /// Leased, and its process is stopped (SIGSTOP) on request.
    Paused,
    Completed,
    Failed,
    Canceled,
    /// Waiting for its retry backoff to run out before it is queued again.
    Retrying,
    /// Refused at submission: no registered node could ever run it.
    Rejected,
    /// Ran past its wall-clock limit; becomes `retrying` or `failed`.
    TimedOut,
}

impl JobState {
    pub const ALL: [JobState; 11] = [
        JobState::Pending,
        JobState::Queued,
        JobState::Assigned,
        JobState::Processing,
        JobState::Paused,
        JobState::Completed,
        JobState::Failed,
        JobState::Canceled,
        JobState::Retrying,
        JobState::Rejected,
        JobState::TimedOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Queued => "queued",
            JobState::Assigned => "assigned",
            JobState::Processing => "processing",
            JobState::Paused => "paused",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Canceled => "canceled",
            JobState::Retrying => "retrying",
            JobState::Rejected => "rejected",
            JobState::TimedOut => "timed_out",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// No further transition except an operator's explicit retry.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Completed | JobState::Failed | JobState::Canceled | JobState::Rejected)
    }

    /// Waiting in the scheduler's runnable index.
    pub fn is_runnable(self) -> bool {
        matches!(self, JobState::Pending | JobState::Queued)
    }

    /// Owned by a live `JobActor` (leased, or waiting for a retry).
    pub fn is_live(self) -> bool {
        matches!(
            self,
            JobState::Assigned | JobState::Processing | JobState::Paused | JobState::Retrying | JobState::TimedOut
        )
    }

    /// Holds a lease on a node.
    pub fn is_leased(self) -> bool {
        matches!(self, JobState::Assigned | JobState::Processing | JobState::Paused)
    }

    /// The states this one may move to.
    pub fn allowed_next(self) -> &'static [JobState] {
        use JobState::*;
        match self {
            Pending | Queued => &[Assigned, Processing, Canceled, Rejected],
            Assigned => &[Processing, Canceled, Retrying, Failed, Queued],
            // → queued: the lease is handed back (claim undelivered, worker draining).
            Processing => &[Paused, Completed, Failed, Canceled, Retrying, TimedOut, Queued],
            Paused => &[Processing, Canceled, Retrying, Failed, TimedOut, Queued],
            Retrying => &[Queued, Canceled, Failed],
            TimedOut => &[Retrying, Failed],
            // An operator's retry puts a finished job back in the queue.
            Failed | Canceled => &[Queued],
            Completed | Rejected => &[],
        }
    }

    /// Ok when `self -> to` is legal; a same-state move is not a transition and is refused
    /// here (callers treat identical repeats as idempotent before asking).
    pub fn check_transition(self, to: JobState) -> Result<(), InvalidTransition> {
        if self.allowed_next().contains(&to) { Ok(()) } else { Err(InvalidTransition { from: self, to }) }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused state change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot move a job from '{from}' to '{to}'")]
pub struct InvalidTransition {
    pub from: JobState,
    pub to: JobState,
}

/// Why a job failed, as the seed's `failure_reason` enum names it.
pub const FAILURE_REASONS: [&str; 8] = [
    "capability_mismatch",
    "runtime_error",
    "timeout",
    "user_error",
    "network_error",
    "input_error",
    "platform_error",
    "resource_error",
];

#[cfg(test)]
mod tests {
    use super::JobState::*;
    use super::*;

    #[test]
    fn transition_table() {
        let legal = [
            (Pending, Processing),
            (Queued, Processing),
            (Pending, Canceled),
            (Pending, Rejected),
            (Processing, Paused),
            (Paused, Processing),
            (Processing, Completed),
            (Processing, Failed),
            (Processing, Retrying),
            (Processing, TimedOut),
            (Paused, Canceled),
            (Paused, Retrying),
            (Retrying, Queued),
            (Retrying, Canceled),
            (TimedOut, Retrying),
            (TimedOut, Failed),
            (Failed, Queued),
            (Canceled, Queued),
        ];
        for (from, to) in legal {
            assert!(from.check_transition(to).is_ok(), "{from} -> {to} must be legal");
        }
        let illegal = [
            (Completed, Processing),
            (Completed, Queued),
            (Canceled, Completed),
            (Failed, Completed),
            (Pending, Paused),
            (Pending, Completed),
            (Queued, Paused),
            (Paused, Paused),
            (Paused, Completed),
            (Rejected, Queued),
            (Retrying, Processing),
        ];
        for (from, to) in illegal {
            let err = from.check_transition(to).unwrap_err();
            assert_eq!(err.from, from);
            assert!(err.to_string().contains(from.as_str()));
        }
    }

    #[test]
    fn names_round_trip() {
        for s in JobState::ALL {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", s.as_str()));
        }
        assert_eq!(JobState::parse("running"), None);
    }

    #[test]
    fn classes_are_disjoint() {
        for s in JobState::ALL {
            let n = [s.is_terminal(), s.is_runnable(), s.is_live()].iter().filter(|b| **b).count();
            assert_eq!(n, 1, "{s} must be in exactly one class");
        }
    }
}
