//! Job graphs, pure: the order (and cycle check) of a submitted graph, which waiting
//! jobs a settled one releases or fails, and a parent's state and progress derived
//! from its children. The `GraphActor` holds the live index; this module decides.

use super::state::JobState;
use std::collections::HashMap;

/// Most children one graph may have (a 10-rung ladder with audio, thumbnails and a
/// package is 14; hand-written graphs get room, not unbounded fan-out).
pub const MAX_CHILDREN: usize = 64;
/// Most jobs one job may wait for.
pub const MAX_AFTER: usize = 64;

/// What is wrong with a submitted graph.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    #[error("job '{0}' waits for '{1}', which is neither a job of this graph nor an existing job id")]
    UnknownRef(String, String),
    #[error("jobs {0:?} wait for each other (a cycle)")]
    Cycle(Vec<String>),
    #[error("two jobs of this graph are both called '{0}'")]
    DuplicateRef(String),
}

/// Submission order of a graph's jobs: every job after the jobs of the graph it waits
/// for (Kahn's algorithm, stable: ties keep the given order). `nodes` are (ref, refs
/// it waits for inside the graph); `external(r)` says whether a reference outside the
/// graph names an existing job.
pub fn order(nodes: &[(String, Vec<String>)], external: impl Fn(&str) -> bool) -> Result<Vec<usize>, GraphError> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, (r, _)) in nodes.iter().enumerate() {
        if index.insert(r.as_str(), i).is_some() {
            return Err(GraphError::DuplicateRef(r.clone()));
        }
    }
    let mut waiting_on = vec![0usize; nodes.len()];
    let mut dependants: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, (r, after)) in nodes.iter().enumerate() {
        for a in after {
            match index.get(a.as_str()) {
                Some(&j) => {
                    waiting_on[i] += 1;
                    dependants[j].push(i);
                }
                None if external(a) => {}
                None => return Err(GraphError::UnknownRef(r.clone(), a.clone())),
            }
        }
    }
    let mut ready: std::collections::VecDeque<usize> = (0..nodes.len()).filter(|&i| waiting_on[i] == 0).collect();
    let mut out = Vec::with_capacity(nodes.len());
    while let Some(i) = ready.pop_front() {
        out.push(i);
        for &d in &dependants[i] {
            waiting_on[d] -= 1;
            if waiting_on[d] == 0 {
                ready.push_back(d);
            }
        }
    }
    if out.len() < nodes.len() {
        let stuck = (0..nodes.len()).filter(|i| waiting_on[*i] > 0).map(|i| nodes[i].0.clone()).collect();
        return Err(GraphError::Cycle(stuck));
    }
    Ok(out)
}

/// What a dependency's state means for the jobs waiting on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DependencyOutcome {
    /// Done: one fewer to wait for.
    Satisfied,
    /// Failed or canceled for good: the dependants fail (`dependency_failed`).
    Broken,
    /// Still on its way.
    Pending,
}

pub fn dependency_outcome(state: JobState) -> DependencyOutcome {
    match state {
        JobState::Completed => DependencyOutcome::Satisfied,
        JobState::Failed | JobState::Canceled | JobState::Rejected => DependencyOutcome::Broken,
        _ => DependencyOutcome::Pending,
    }
}

/// A parent's state from its children's: processing while any child runs (paused when
/// a child is paused and none runs; the rest wait), completed when all completed, failed when none
/// is left to run and any failed, canceled when none failed but any was canceled; a
/// parent none of whose children started keeps `current`.
pub fn parent_state(children: &[JobState], current: JobState) -> JobState {
    use JobState::*;
    if children.is_empty() {
        return current;
    }
    let unfinished: Vec<JobState> = children.iter().copied().filter(|s| !s.is_terminal()).collect();
    if unfinished.is_empty() {
        return if children.iter().all(|s| *s == Completed) {
            Completed
        } else if children.iter().any(|s| matches!(s, Failed | Rejected)) {
            Failed
        } else {
            Canceled
        };
    }
    let started = unfinished.iter().any(|s| s.is_live()) || children.iter().any(|s| s.is_terminal());
    let running = unfinished.iter().any(|s| s.is_live() && *s != Paused);
    if unfinished.contains(&Paused) && !running {
        Paused
    } else if (started && current != Queued) || unfinished.iter().any(|s| s.is_live()) {
        Processing
    } else {
        current
    }
}

/// The legal steps from a parent's `from` to its derived `to` (empty when equal):
/// directly when allowed, else through `processing` (a restart that missed the start),
/// or through `queued` (a retried parent whose child already finished again).
pub fn parent_path(from: JobState, to: JobState) -> Vec<JobState> {
    if from == to {
        return vec![];
    }
    if from.check_transition(to).is_ok() {
        return vec![to];
    }
    for via in [JobState::Processing, JobState::Queued] {
        if from.check_transition(via).is_ok() && via.check_transition(to).is_ok() {
            return vec![via, to];
        }
    }
    if from.check_transition(JobState::Queued).is_ok()
        && JobState::Queued.check_transition(JobState::Processing).is_ok()
    {
        let mut p = vec![JobState::Queued, JobState::Processing];
        if JobState::Processing.check_transition(to).is_ok() {
            p.push(to);
            return p;
        }
    }
    vec![]
}

/// A parent's progress in percent: its children's, weighted by the work each is
/// expected to do (a completed child counts whole).
pub fn weighted_progress(children: &[(f64, f64, JobState)]) -> f64 {
    let total: f64 = children.iter().map(|(w, _, _)| w.max(0.0)).sum();
    if total <= 0.0 {
        return 0.0;
    }
    let done: f64 = children
        .iter()
        .map(|(w, p, s)| w.max(0.0) * if *s == JobState::Completed { 100.0 } else { p.clamp(0.0, 100.0) })
        .sum();
    done / total
}

#[cfg(test)]
mod tests {
    use super::JobState::*;
    use super::*;

    fn n(r: &str, after: &[&str]) -> (String, Vec<String>) {
        (r.to_string(), after.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn order_puts_dependencies_first_and_refuses_cycles() {
        let g = [n("pkg", &["a", "b"]), n("a", &[]), n("b", &["a"])];
        assert_eq!(order(&g, |_| false).unwrap(), vec![1, 2, 0]);
        let ext = [n("a", &["0190e0c0-0000-7000-8000-000000000000"])];
        assert!(order(&ext, |_| true).is_ok());
        assert_eq!(order(&ext, |_| false), Err(GraphError::UnknownRef("a".into(), ext[0].1[0].clone())));
        let cycle = [n("a", &["c"]), n("b", &["a"]), n("c", &["b"]), n("d", &[])];
        assert_eq!(order(&cycle, |_| false), Err(GraphError::Cycle(vec!["a".into(), "b".into(), "c".into()])));
        assert_eq!(order(&[n("a", &["a"])], |_| false), Err(GraphError::Cycle(vec!["a".into()])));
        assert_eq!(order(&[n("a", &[]), n("a", &[])], |_| false), Err(GraphError::DuplicateRef("a".into())));
    }

    #[test]
    fn parent_state_table() {
        let cases: &[(&[JobState], JobState, JobState)] = &[
            (&[Pending, Pending], Pending, Pending),
            (&[Processing, Pending], Pending, Processing),
            (&[Completed, Pending], Processing, Processing),
            (&[Completed, Completed], Processing, Completed),
            (&[Completed, Failed], Processing, Failed),
            (&[Failed, Processing], Processing, Processing),
            (&[Canceled, Completed], Processing, Canceled),
            (&[Failed, Canceled], Processing, Failed),
            (&[Paused, Completed], Processing, Paused),
            (&[Paused, Paused, Pending], Processing, Paused),
            (&[Paused, Processing, Pending], Paused, Processing),
            (&[Paused, Processing], Paused, Processing),
            (&[Retrying, Completed], Processing, Processing),
            // A retried parent is queued until a child runs again.
            (&[Queued, Completed], Queued, Queued),
            (&[Processing, Completed], Queued, Processing),
            (&[], Pending, Pending),
        ];
        for (children, current, want) in cases {
            assert_eq!(parent_state(children, *current), *want, "{children:?} from {current}");
        }
    }

    #[test]
    fn parent_paths_are_legal() {
        assert_eq!(parent_path(Pending, Processing), vec![Processing]);
        assert_eq!(parent_path(Pending, Completed), vec![Processing, Completed]);
        assert_eq!(parent_path(Failed, Processing), vec![Queued, Processing]);
        assert_eq!(parent_path(Failed, Completed), vec![Queued, Processing, Completed]);
        assert_eq!(parent_path(Processing, Processing), Vec::<JobState>::new());
        for &from in JobState::ALL {
            for &to in JobState::ALL {
                let mut at = from;
                for step in parent_path(from, to) {
                    assert!(at.check_transition(step).is_ok(), "{at} -> {step} on the way {from} -> {to}");
                    at = step;
                }
            }
        }
    }

    #[test]
    fn outcomes_and_progress() {
        assert_eq!(dependency_outcome(Completed), DependencyOutcome::Satisfied);
        assert_eq!(dependency_outcome(Canceled), DependencyOutcome::Broken);
        assert_eq!(dependency_outcome(Retrying), DependencyOutcome::Pending);
        assert_eq!(weighted_progress(&[(3.0, 50.0, Processing), (1.0, 0.0, Completed)]), 62.5);
        assert_eq!(weighted_progress(&[]), 0.0);
    }
}
