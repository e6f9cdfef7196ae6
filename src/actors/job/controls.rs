//! The operator's controls of a leased job (pause, resume, cancel, retry — their
//! acknowledgement by the worker) and the lease itself: lost with its node, checked
//! against what a worker reports it runs, handed back when a worker drains.

use super::*;

impl Handler<ApplyControl> for JobActor {
    type Result = ResponseActFuture<Self, AppResult<ControlResponse>>;

    fn handle(&mut self, ApplyControl(action): ApplyControl, _: &mut Context<Self>) -> Self::Result {
        let from = self.state();
        let on_node = self.row.node_id.is_some();
        let to = match state::control(from, on_node, action) {
            Ok(to) => to,
            Err(refusal) => return Box::pin(actix::fut::ready(Err(refusal.into()))),
        };
        if matches!(action, UserAction::Pause | UserAction::Cancel) {
            self.pause_clock();
        }
        let node = self.node_id();
        let id = self.row.id.clone();
        let requeue = to == JobState::Queued && action == UserAction::Resume;
        let change = move |row: &mut JobRow| {
            db_transitions::apply_control(row, action);
            if requeue {
                queued_again(row);
            }
        };
        Box::pin(self.transition(to, change, action.reason().into()).map(move |res, act, ctx| {
            res?;
            let mut retry_count = None;
            match action {
                UserAction::Pause => {
                    act.pending_control = Some((ControlAction::Pause, Instant::now()));
                    act.deliver(ControlAction::Pause);
                }
                // Paused when its node was lost: back to the index, to run anew.
                UserAction::Resume if requeue => act.hand_to_index(node, ctx),
                UserAction::Resume => {
                    act.run_since = Some(Instant::now());
                    act.pending_control = Some((ControlAction::Resume, Instant::now()));
                    act.deliver(ControlAction::Resume);
                }
                UserAction::Cancel if from.is_leased() && on_node => {
                    // Keep the slot until the worker confirms the kill (or a deadline).
                    act.pending_control = Some((ControlAction::Cancel, Instant::now()));
                    act.deliver(ControlAction::Cancel);
                    ctx.run_later(act.policy.cancel_ack_wait, |act, ctx| act.stop_with_release(ctx));
                }
                UserAction::Cancel => act.stop_with_release(ctx),
                UserAction::Retry => {
                    retry_count = Some(act.row.retry_count);
                    act.hand_to_index(node, ctx);
                }
            }
            Ok(ControlResponse { job_id: id, status: action.done().into(), retry_count })
        }))
    }
}

impl Handler<AcknowledgeControl> for JobActor {
    type Result = AppResult<()>;

    fn handle(&mut self, m: AcknowledgeControl, ctx: &mut Context<Self>) -> Self::Result {
        self.check_owner(&m.node_id, Some(m.attempt))?;
        self.control_took_effect(m.action);
        if m.action == ControlAction::Cancel && self.state() == JobState::Canceled {
            self.stop_with_release(ctx);
        }
        Ok(())
    }
}

impl Handler<LeaseLost> for JobActor {
    type Result = ();

    fn handle(&mut self, m: LeaseLost, ctx: &mut Context<Self>) {
        let state = self.state();
        if state == JobState::Canceled {
            self.stop_with_release(ctx);
            return;
        }
        if !state.is_leased() || self.row.node_id.is_none() {
            return;
        }
        self.metrics.do_send(MetricRecorded(MetricEvent::LeaseExpired));
        if state == JobState::Paused {
            // Paused stays paused: the job leaves the lost node but is not run again
            // (nor counted as a retry) until an operator resumes it.
            let (db, row) = (self.db.clone(), self.row.clone());
            let why = format!("{}; stays paused until resumed", m.reason);
            let fut = async move { db.write(move |c| db_transitions::leave_node_paused(c, &row, &why)).await }
                .into_actor(self)
                .map(|res, act, _| match res {
                    Ok(row) => {
                        act.row = row;
                        act.pending_control = None;
                        act.release_slot();
                    }
                    Err(e) => log::warn!("job {}: could not release its lost node: {e}", act.id),
                });
            ctx.wait(fut);
            return;
        }
        let reason = if m.node_lost { FailureReason::NetworkError } else { FailureReason::PlatformError };
        let fut = self.fail_or_retry(m.reason, reason, true, unchanged).map(|res, act, _| {
            if let Err(e) = res {
                log::warn!("job {}: could not requeue after lease loss: {e}", act.id);
            }
        });
        ctx.wait(fut);
    }
}

impl Handler<CheckLease> for JobActor {
    type Result = bool;

    fn handle(&mut self, m: CheckLease, ctx: &mut Context<Self>) -> bool {
        let state = self.state();
        match m.reported_attempt {
            Some(a) => state.is_leased() && a == self.row.attempt,
            None => {
                if state.is_leased() && self.leased_at.elapsed() > self.policy.unreported_grace {
                    ctx.notify(LeaseLost { reason: "the worker no longer runs this job".into(), node_lost: false });
                }
                true
            }
        }
    }
}

impl Handler<VerifyLease> for JobActor {
    type Result = AppResult<()>;

    fn handle(&mut self, m: VerifyLease, _: &mut Context<Self>) -> Self::Result {
        self.check_owner(&m.node_id, Some(m.attempt))?;
        if !self.state().is_leased() {
            return Err(AppError::stale_attempt(format!("job {} is '{}'; its lease is gone", self.id, self.state())));
        }
        Ok(())
    }
}

impl Handler<HandBackJob> for JobActor {
    type Result = ();

    fn handle(&mut self, m: HandBackJob, ctx: &mut Context<Self>) {
        if !self.state().is_leased() {
            return;
        }
        self.pause_clock();
        let node = self.node_id();
        let fut = self.transition(JobState::Queued, queued_again, m.reason).map(move |res, act, ctx| match res {
            Ok(()) => act.hand_to_index(node, ctx),
            Err(e) => log::warn!("job {}: hand-back failed: {e}", act.id),
        });
        ctx.wait(fut);
    }
}

impl Handler<ReturnLease> for JobActor {
    type Result = AppResult<()>;

    fn handle(&mut self, m: ReturnLease, ctx: &mut Context<Self>) -> Self::Result {
        self.check_owner(&m.node_id, Some(m.attempt))?;
        if self.state().is_leased() {
            ctx.notify(HandBackJob { reason: format!("Node {} handed the lease back", m.node_id) });
        }
        Ok(())
    }
}
