//! `GroupCommit`: gathers writes into batches for the [`DbExecutor`].
//!
//! At most one batch is in flight. A write arriving while the executor is idle goes
//! out at once (no added latency when the load is light); writes arriving while a batch
//! commits wait and form the next batch. Under load this turns N fsyncs into one per
//! batch without any timer. The next batch goes out when the executor says the last
//! one's transaction ended, which it does before answering that batch's writes.
//!
//! [`DbExecutor`]: super::db_executor::DbExecutor

use super::db_executor::DbExecutor;
use super::messages::{CommitBatch, MetricEvent, MetricRecorded, SubmitWrite, WriteOp};
use super::metrics::MetricsActor;
use actix::prelude::*;

/// Upper bound on writes per transaction, so one batch never holds the lock for long.
const MAX_BATCH: usize = 512;

pub struct GroupCommit {
    executor: Addr<DbExecutor>,
    metrics: Addr<MetricsActor>,
    pending: Vec<WriteOp>,
    in_flight: bool,
}

impl GroupCommit {
    pub fn new(executor: Addr<DbExecutor>, metrics: Addr<MetricsActor>) -> Self {
        GroupCommit { executor, metrics, pending: Vec::new(), in_flight: false }
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.pending.is_empty() {
            self.in_flight = false;
            return;
        }
        self.in_flight = true;
        let take = self.pending.len().min(MAX_BATCH);
        let batch: Vec<WriteOp> = self.pending.drain(..take).collect();
        self.metrics.do_send(MetricRecorded(MetricEvent::Committed { writes: batch.len() }));
        let (ended, rx) = tokio::sync::oneshot::channel();
        self.executor.do_send(CommitBatch { ops: batch, ended });
        rx.into_actor(self)
            .map(|res, act, ctx| {
                if res.is_err() {
                    log::error!("database executor unreachable: a batch was dropped unanswered");
                }
                act.flush(ctx);
            })
            .spawn(ctx);
    }
}

impl Actor for GroupCommit {
    type Context = Context<Self>;
}

impl Handler<SubmitWrite> for GroupCommit {
    type Result = ();

    fn handle(&mut self, SubmitWrite(op): SubmitWrite, ctx: &mut Context<Self>) {
        self.pending.push(op);
        if !self.in_flight {
            self.flush(ctx);
        }
    }
}
