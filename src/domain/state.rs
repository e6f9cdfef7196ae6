//! Job states and the transitions between them.
//!
//! The wire names are the seed system's (its clients, dashboards and PromQL compare
//! against them). Every change of a job's state in the master goes through
//! [`JobState::check_transition`], so an illegal move is refused with an error that
//! names the current state instead of silently overwriting it (seed bug B8).

spelled_enum! {
/// Every state a job can be in. Each spelling is the variant's name in snake_case,
/// written once for serde, strum (the database column) and the API.
#[derive(PartialOrd, Ord, Default)]
pub enum JobState {
    /// Accepted and runnable, never placed yet.
    #[default]
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
}

impl JobState {
    /// The state `s` names exactly, if any.
    pub fn parse(s: &str) -> Option<JobState> {
        s.parse().ok()
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
            // → failed: a job it waits for failed (`dependency_failed`); it never ran.
            Pending | Queued => &[Assigned, Processing, Canceled, Rejected, Failed],
            Assigned => &[Processing, Canceled, Retrying, Failed, Queued],
            // → queued: the lease is handed back (claim undelivered, worker draining).
            Processing => &[Paused, Completed, Failed, Canceled, Retrying, TimedOut, Queued],
            Paused => &[Processing, Canceled, Retrying, Failed, TimedOut, Queued],
            Retrying => &[Queued, Canceled, Failed],
            // An operator's cancel wins over a timeout being settled.
            TimedOut => &[Retrying, Failed, Canceled],
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

/// A refused state change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot move a job from '{from}' to '{to}'")]
pub struct InvalidTransition {
    pub from: JobState,
    pub to: JobState,
}

spelled_enum! {
/// What an operator asks of a job.
pub enum UserAction {
    Pause,
    Resume,
    Cancel,
    Retry,
}
}

impl UserAction {
    /// The reason logged with the transition.
    pub fn reason(self) -> &'static str {
        match self {
            UserAction::Pause => "User requested pause",
            UserAction::Resume => "User requested resume",
            UserAction::Cancel => "User requested cancel",
            UserAction::Retry => "User requested retry",
        }
    }

    /// The word the API answers with once the action is done (the seed's words).
    pub fn done(self) -> &'static str {
        match self {
            UserAction::Pause => "paused",
            UserAction::Resume => "resumed",
            UserAction::Cancel => "canceled",
            UserAction::Retry => "queued",
        }
    }
}

/// Why an operator's action was refused, as data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("cannot {action} a job that is '{current}'")]
    Invalid { current: JobState, action: UserAction },
    #[error("only failed or canceled jobs can be retried; job is '{current}'")]
    NotRetryable { current: JobState },
}

/// The one gate for operators' actions: the state `action` moves a job in `current`
/// to, or why it cannot. `on_node`: the job holds a lease on a node (a paused job whose
/// node was lost holds none, and resuming it queues it again). Both the scheduler (jobs
/// in the index or only in the database) and the job actor (live jobs) ask it; the move
/// it allows is always legal in [`JobState::allowed_next`], and the database write
/// re-checks both.
pub fn control(current: JobState, on_node: bool, action: UserAction) -> Result<JobState, Refusal> {
    use JobState::*;
    let to = match (action, current) {
        (UserAction::Pause, Processing) => Paused,
        (UserAction::Resume, Paused) if on_node => Processing,
        (UserAction::Resume, Paused) => Queued,
        (UserAction::Cancel, s) if !s.is_terminal() => Canceled,
        (UserAction::Retry, Failed | Canceled) => Queued,
        (UserAction::Retry, current) => return Err(Refusal::NotRetryable { current }),
        (action, current) => return Err(Refusal::Invalid { current, action }),
    };
    debug_assert!(current.check_transition(to).is_ok(), "{current} -> {to}");
    Ok(to)
}

spelled_enum! {
/// Why a job failed: the seed's `failure_reason` enum, plus `storage_error`.
pub enum FailureReason {
    /// No node can run what the job asks for (encoder, engine, GPU).
    CapabilityMismatch,
    RuntimeError,
    /// Ran past its wall-clock limit or stalled.
    Timeout,
    /// The job's own parameters are wrong (unknown encoder, bad option).
    UserError,
    NetworkError,
    /// The input cannot be read or decoded.
    InputError,
    /// The worker or master failed around the job (lost node, spawn failure).
    PlatformError,
    /// Disk, memory or a resource limit ran out.
    ResourceError,
    /// An output could not be stored (artifact store or bucket down or refusing).
    StorageError,
    /// A job it waited for (`after`) failed or was canceled; retrying that one makes
    /// this one wait again.
    DependencyFailed,
}
}

impl FailureReason {
    pub fn parse(s: &str) -> Option<FailureReason> {
        s.parse().ok()
    }

    /// Retrying cannot help: the same job would fail the same way anywhere.
    pub fn is_permanent(self) -> bool {
        matches!(self, FailureReason::UserError | FailureReason::InputError | FailureReason::CapabilityMismatch)
    }
}

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
            (Pending, Failed),
            (Queued, Failed),
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
    fn operator_actions_through_the_gate() {
        use UserAction::*;
        for &s in JobState::ALL {
            for action in [Pause, Resume, Cancel, Retry] {
                let want = match (action, s) {
                    (Pause, Processing) => Ok(Paused),
                    (Resume, Paused) => Ok(Processing),
                    (Cancel, s) if !s.is_terminal() => Ok(Canceled),
                    (Retry, Failed | Canceled) => Ok(Queued),
                    (Retry, current) => Err(Refusal::NotRetryable { current }),
                    (action, current) => Err(Refusal::Invalid { current, action }),
                };
                let got = control(s, true, action);
                assert_eq!(got, want, "{action} on {s}");
                if let Ok(to) = got {
                    assert!(s.check_transition(to).is_ok(), "the gate allowed an illegal {s} -> {to}");
                }
            }
        }
        // A paused job that lost its node is queued again when resumed.
        assert_eq!(control(Paused, false, Resume), Ok(Queued));
        assert_eq!(control(Paused, false, Cancel), Ok(Canceled));
        assert_eq!(
            control(Completed, false, Retry).unwrap_err().to_string(),
            "only failed or canceled jobs can be retried; job is 'completed'"
        );
    }

    #[test]
    fn names_round_trip() {
        for &s in JobState::ALL {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", s.as_str()));
        }
        assert_eq!(JobState::parse("running"), None);
        for r in FailureReason::ALL {
            assert_eq!(FailureReason::parse(r.as_str()), Some(*r));
            assert_eq!(serde_json::to_string(r).unwrap(), format!("\"{}\"", r.as_str()));
        }
        // The seed's eight reasons, plus storage_error (outputs that could not be stored)
        // and dependency_failed (job graphs).
        assert_eq!(FailureReason::ALL.len(), 10);
        assert!(!FailureReason::StorageError.is_permanent(), "a store that comes back succeeds on retry");
        assert_eq!(FailureReason::parse("because"), None);
    }

    #[test]
    fn classes_are_disjoint() {
        for &s in JobState::ALL {
            let n = [s.is_terminal(), s.is_runnable(), s.is_live()].iter().filter(|b| **b).count();
            assert_eq!(n, 1, "{s} must be in exactly one class");
        }
    }
}
