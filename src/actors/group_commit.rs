//! `GroupCommit`: gathers writes into batches for the [`DbExecutor`].
//!
//! At most one batch is in flight. A write arriving while the executor is idle goes
//! out at once (no added latency when the load is light); writes arriving while a batch
//! commits wait and form the next batch. Under load this turns N fsyncs into one per
//! batch without any timer.
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
        self.executor
            .send(CommitBatch(batch))
            .into_actor(self)
            .map(|res, act, ctx| {
                if let Err(e) = res {
                    log::error!("database executor unreachable: {e}");
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
