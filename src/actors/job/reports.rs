//! What a job's worker reports: progress (fenced by node and attempt, kept in memory,
//! stamped in the database at most every few seconds, published as `job.progress` and
//! `job.log`) and the result that ends the attempt (accepted once; a repeat of the
//! same result is answered as before, a stale or foreign one refused).

use super::*;

/// Log lines of the running attempt a job keeps for readers (`GET /jobs/{id}`).
const LIVE_LOG_LINES: usize = 200;

impl JobActor {
    /// `job.progress` (at most one a second, and the last before a state change is
    /// never held back for long: the next report sends it) and `job.log`.
    fn publish_live(&mut self, detail: &ProgressDetail, log_lines: Vec<String>) {
        if self.log_tail.0 != self.row.attempt {
            self.log_tail = (self.row.attempt, Default::default());
        }
        for line in &log_lines {
            if self.log_tail.1.len() == LIVE_LOG_LINES {
                self.log_tail.1.pop_front();
            }
            self.log_tail.1.push_back(line.clone());
        }
        let Some(to) = &self.events else { return };
        let node_id = self.row.node_id.clone();
        if !log_lines.is_empty() {
            to.do_send(PublishTransient {
                kind: "job.log",
                job_id: self.row.id.clone(),
                node_id: node_id.clone(),
                data: serde_json::json!({ "attempt": self.row.attempt, "lines": log_lines }),
            });
        }
        if self.last_progress_event.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return;
        }
        self.last_progress_event = Some(Instant::now());
        to.do_send(PublishTransient {
            kind: "job.progress",
            job_id: self.row.id.clone(),
            node_id,
            data: serde_json::json!({ "attempt": self.row.attempt, "status": self.state(), "progress": detail }),
        });
    }
}

impl Handler<ReportProgress> for JobActor {
    type Result = AppResult<ControlAction>;

    fn handle(&mut self, m: ReportProgress, ctx: &mut Context<Self>) -> Self::Result {
        self.check_owner(&m.node_id, m.attempt)?;
        match self.state() {
            JobState::Canceled | JobState::TimedOut => return Ok(ControlAction::Cancel),
            s if !s.is_leased() => {
                return Err(AppError::stale_attempt(format!("job {} is '{s}'; its lease is gone", self.id)));
            }
            _ => {}
        }
        if let Some(info) = m.input_info
            && let Ok(text) = serde_json::to_string(&info)
        {
            let (db, id) = (self.db.clone(), self.row.id.clone());
            ctx.spawn(
                async move { db.write(move |c| crate::db::outputs::record_input_info(c, &id, &text, now_micros())).await }
                    .into_actor(self)
                    .map(|res, act, _| {
                        if let Err(e) = res {
                            log::warn!("job {}: input info not stored: {e}", act.id);
                        }
                    }),
            );
        }
        let mut detail = m.detail;
        detail.percent = detail.percent.clamp(0.0, 100.0);
        // Progress never goes backwards within an attempt.
        if let Some(prev) = &self.progress {
            detail.percent = detail.percent.max(prev.percent);
            // A transfer phase's report keeps the encode's last figures beside it.
            if detail.phase.is_some() {
                detail.fps = detail.fps.or(prev.fps);
                detail.speed = detail.speed.or(prev.speed);
                detail.bitrate_kbps = detail.bitrate_kbps.or(prev.bitrate_kbps);
                detail.frames = detail.frames.or(prev.frames);
                detail.out_time_seconds = detail.out_time_seconds.or(prev.out_time_seconds);
            }
        }
        self.progress = Some(detail.clone());
        self.publish_live(&detail, crate::domain::limits::bound_log_lines(m.log_lines));
        self.metrics.do_send(MetricRecorded(MetricEvent::ProgressUpdated));
        if self.last_persist.elapsed() >= self.policy.progress_persist_every {
            self.last_persist = Instant::now();
            let (db, id, attempt) = (self.db.clone(), self.row.id.clone(), self.row.attempt);
            let (percent, at) = (detail.percent, now_micros());
            // Keep the row equal to what is stored (the next transition writes it whole).
            (self.row.progress, self.row.last_activity_at) = (percent, Some(at));
            ctx.spawn(
                async move { db.write(move |c| db_transitions::record_activity(c, &id, attempt, percent, at)).await }
                    .into_actor(self)
                    .map(|res, act, _| {
                        if let Err(e) = res {
                            log::warn!("job {}: progress not persisted: {e}", act.id);
                        }
                    }),
            );
        }
        Ok(match self.state() {
            JobState::Paused => ControlAction::Pause,
            _ => ControlAction::Run,
        })
    }
}

fn bounded_logs(logs: Option<String>) -> Option<String> {
    logs.map(|l| {
        if l.len() <= MAX_LOG_BYTES {
            l
        } else {
            let mut start = l.len() - MAX_LOG_BYTES;
            while !l.is_char_boundary(start) {
                start += 1;
            }
            format!("[… {start} bytes cut …]\n{}", &l[start..])
        }
    })
}

fn fingerprint(r: &JobResult) -> String {
    format!("{}|{}|{:?}|{:?}", r.node_id, r.status, r.attempt, r.error)
}

impl Handler<ReportResult> for JobActor {
    type Result = ResponseActFuture<Self, AppResult<ResultResponse>>;

    fn handle(&mut self, ReportResult(r): ReportResult, _: &mut Context<Self>) -> Self::Result {
        let fail = |e: AppError| -> Self::Result { Box::pin(actix::fut::ready(Err(e))) };
        // A retried identical report from the attempt's node gets the same answer, even
        // once the job has left that node (waiting for its retry).
        if let Some((fp, resp)) = &self.last_result
            && *fp == fingerprint(&r)
            && self.placed_node.as_deref() == Some(r.node_id.as_str())
        {
            return Box::pin(actix::fut::ready(Ok(resp.clone())));
        }
        if let Err(e) = self.check_owner(&r.node_id, r.attempt) {
            return fail(e);
        }
        let state = self.state();
        if state == JobState::Canceled {
            // The worker's end of the job answers the cancel even when its ack was lost.
            self.control_took_effect(ControlAction::Cancel);
            // The kill raced the worker's own end: the job stays canceled.
            let resp = ResultResponse {
                status: "success".into(),
                job_status: JobState::Canceled,
                retry: None,
                max_retries: None,
            };
            return Box::pin(actix::fut::ready(Ok(resp)).map(
                |res: AppResult<ResultResponse>, act: &mut Self, ctx: &mut Context<Self>| {
                    act.stop_with_release(ctx);
                    res
                },
            ));
        }
        if !state.is_leased() {
            return fail(AppError::stale_attempt(format!(
                "job {} is '{state}'; this attempt's lease is gone",
                self.id
            )));
        }
        let fp = fingerprint(&r);
        let metrics_json = r.metrics.as_ref().map(|m| serde_json::Value::Object(m.clone()).to_string());
        let (logs, scores) =
            (bounded_logs(r.logs.clone()), (r.qoe_score, r.efficiency_score, r.energy_joules, r.vmaf_score));
        let record = move |row: &mut JobRow| {
            row.logs = logs;
            row.metrics = metrics_json;
            (row.qoe_score, row.efficiency_score, row.energy_joules, row.vmaf_score) = scores;
            row.last_activity_at = Some(now_micros());
        };
        let reported = JobState::parse(&r.status);
        let fut: Self::Result = match reported {
            Some(JobState::Completed) => {
                let promised = r.outputs.clone().unwrap_or_default();
                if promised.is_empty() {
                    self.complete(record)
                } else {
                    // Completed only once every output the worker names is stored for
                    // this attempt: never a `completed` job whose file is not there.
                    let (id, attempt) = (self.row.id.clone(), self.row.attempt);
                    let db = self.db.clone();
                    let stored =
                        async move { db.read(move |c| crate::db::outputs::names_of_attempt(c, &id, attempt)).await };
                    Box::pin(stored.into_actor(self).then(move |stored, act, _| -> Self::Result {
                        let missing: Vec<String> = match stored {
                            Err(e) => return Box::pin(actix::fut::ready(Err(e.into()))),
                            Ok(names) => promised.into_iter().filter(|p| !names.contains(p)).collect(),
                        };
                        if missing.is_empty() {
                            return act.complete(record);
                        }
                        Box::pin(actix::fut::ready(Err(AppError::Conflict {
                            code: "outputs_missing",
                            message: format!(
                                "attempt {} has not stored {}: upload them (PUT /jobs/{}/outputs/{{name}}) before reporting completed",
                                act.row.attempt,
                                missing.join(", "),
                                act.id
                            ),
                        })))
                    }))
                }
            }
            Some(ended @ (JobState::Failed | JobState::TimedOut | JobState::Canceled)) => {
                // Checked against the known reasons when the body was read.
                let reason = r.failure_reason.as_deref().and_then(FailureReason::parse).unwrap_or(
                    if ended == JobState::TimedOut { FailureReason::Timeout } else { FailureReason::RuntimeError },
                );
                let retryable = r.retryable.unwrap_or(!reason.is_permanent()) && ended != JobState::Canceled;
                let error = r
                    .error
                    .clone()
                    .filter(|e| !e.is_empty())
                    .unwrap_or_else(|| format!("worker reported {}", r.status));
                Box::pin(self.fail_or_retry(error, reason, retryable, record))
            }
            _ => fail(AppError::bad_request(
                "invalid_status",
                format!("invalid result status '{}'; valid values: completed, failed, timed_out, canceled", r.status),
            )),
        };
        Box::pin(fut.map(move |res, act, _| {
            if let Ok(resp) = &res {
                act.last_result = Some((fp, resp.clone()));
            }
            res
        }))
    }
}
