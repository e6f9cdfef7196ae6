//! `OutboxReader` (SyncArbiter, one thread): hands the outbox rows each COMMIT stored
//! to the event bus, in id order — as the writer gives them, or read back from the
//! database.
//!
//! The writer says which ids its COMMIT stored (`OutboxCommitted`, read as the outbox's
//! newest id on its own connection, so the ranges are exact and consecutive), with the
//! rows themselves when the ones its batch appended are exactly those
//! (`db::events::take_appended`): reading them back — about two per job of a group
//! commit — cost the master ~2–3 µs of CPU per job (bench P2). Otherwise (a parent set
//! after the INSERT, ids that skip, PostgreSQL) they are read here, off the writer's
//! thread, the one every write waits for. Either way they go to the bus through this
//! one mailbox, so they reach it in id order.

use super::messages::{EventsCommitted, OutboxCommitted};
use crate::db::{self, DbPool, PooledConn};
use actix::prelude::*;
use std::sync::Arc;

/// Most rows read (and handed on) at once.
const ROWS_PER_READ: i64 = 10_000;

pub struct OutboxReader {
    pool: DbPool,
    /// Kept between reads (prepared statements warm, no pool check-out query each
    /// time); dropped after an error, so the next read starts on a fresh connection.
    conn: Option<PooledConn>,
    to: Recipient<EventsCommitted>,
    /// The newest id handed on. After a failed read it stays behind, so the next range
    /// read starts there and the missed rows are handed on late, not lost.
    handed_on: Option<i64>,
}

impl OutboxReader {
    pub fn new(pool: DbPool, to: Recipient<EventsCommitted>) -> Self {
        OutboxReader { pool, conn: None, to, handed_on: None }
    }

    fn read(&mut self, mut after: i64, upto: i64) -> Result<(), db::DbError> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => self.pool.get()?,
        };
        while after < upto {
            let rows = db::events::between(&mut conn, after, upto, ROWS_PER_READ)?;
            let Some(last) = rows.last().map(|r| r.id) else { break };
            after = last;
            self.handed_on = Some(last);
            self.to.do_send(EventsCommitted(Arc::new(rows)));
        }
        self.handed_on = Some(upto);
        self.conn = Some(conn);
        Ok(())
    }
}

impl Actor for OutboxReader {
    type Context = SyncContext<Self>;
}

impl Handler<OutboxCommitted> for OutboxReader {
    type Result = ();

    fn handle(&mut self, OutboxCommitted { after, upto, rows }: OutboxCommitted, _: &mut Self::Context) {
        let from = self.handed_on.map_or(after, |h| h.min(after));
        if let Some(rows) = rows.filter(|_| from == after) {
            // As the writer stored them, and nothing before them is missing.
            self.handed_on = Some(upto);
            self.to.do_send(EventsCommitted(rows));
            return;
        }
        self.handed_on = Some(from);
        if let Err(e) = self.read(from, upto) {
            log::warn!(
                "committed events after {from} up to {upto} not read back for the event bus (retried with the next commit's): {e}"
            );
        }
    }
}
