//! `LeaderActor` (own thread): the leader lease of highly available masters on
//! PostgreSQL (see `db/leader.rs` for the lock and the epoch).
//!
//! It keeps one database session of its own. A follower tries the advisory lock every
//! [`POLL`]; the try that wins records a new epoch and this master's URL, and tells the
//! master (`elected`), which then starts its actors — rebuilding its state from the
//! database exactly as after a restart — and its API. A leader checks every [`POLL`]
//! that its session is alive and the epoch still its own; if not, another master may
//! already lead, so it stops the process at once (fail-stop: its supervisor restarts
//! it as a follower). Its writes are fenced meanwhile: the `DbExecutor` checks the
//! epoch inside every transaction.
//!
//! Followers ask it (`GetLeadership`) whom to redirect to.

use super::messages::{GetLeadership, Leadership};
use crate::db::{self, AnyConnection, DatabaseUrl, Synchronous};
use actix::prelude::*;
use std::time::Duration;
use tokio::sync::oneshot;

/// How often a follower tries the lock and a leader checks its lease.
pub const POLL: Duration = Duration::from_millis(250);

pub struct LeaderActor {
    url: DatabaseUrl,
    /// The URL this master advertises to followers' clients.
    me: String,
    /// The session that holds (or tries for) the lock; None after it broke.
    session: Option<AnyConnection>,
    /// This master's epoch while it leads.
    epoch: Option<i64>,
    /// The lease row as last read.
    lease: Option<db::leader::Lease>,
    elected: Option<oneshot::Sender<i64>>,
}

impl LeaderActor {
    /// Start competing for the lease on a thread of its own (its database calls block).
    pub fn start_competing(url: DatabaseUrl, me: String, elected: oneshot::Sender<i64>) -> Addr<LeaderActor> {
        let actor = LeaderActor { url, me, session: None, epoch: None, lease: None, elected: Some(elected) };
        LeaderActor::start_in_arbiter(&Arbiter::new().handle(), move |_| actor)
    }

    fn tick(&mut self) {
        if self.session.is_none() {
            match db::connect(&self.url, Synchronous::Full) {
                Ok(c) => self.session = Some(c),
                Err(e) => {
                    if let Some(epoch) = self.epoch {
                        deposed(&format!("the lease session of epoch {epoch} broke and cannot reconnect: {e}"));
                    }
                    log::warn!("leader lease: cannot connect to {}: {e}", self.url.display());
                    return;
                }
            }
        }
        let Some(session) = self.session.as_mut() else { return };
        match self.epoch {
            Some(epoch) => match db::leader::current(session) {
                Ok(lease) if lease.epoch == epoch => self.lease = Some(lease),
                Ok(lease) => {
                    deposed(&format!("epoch {epoch} was taken over by {} (epoch {})", lease.leader_url, lease.epoch))
                }
                Err(e) => deposed(&format!("the lease session of epoch {epoch} broke: {e}")),
            },
            None => match db::leader::try_lock(session) {
                Ok(true) => match db::leader::take_over(session, &self.me) {
                    Ok(epoch) => {
                        log::info!("leading the farm (epoch {epoch}) as {}", self.me);
                        self.epoch = Some(epoch);
                        self.lease = db::leader::current(session).ok();
                        if let Some(tx) = self.elected.take() {
                            let _ = tx.send(epoch);
                        }
                    }
                    // Holding the lock without a recorded epoch would lead unfenced: drop
                    // the session (and with it the lock) and try again.
                    Err(e) => {
                        log::warn!("leader lease: lock taken but the lease not written: {e}");
                        self.session = None;
                    }
                },
                Ok(false) => match db::leader::current(session) {
                    Ok(lease) => self.lease = Some(lease),
                    Err(e) => {
                        log::warn!("leader lease: cannot read the lease: {e}");
                        self.session = None;
                    }
                },
                Err(e) => {
                    log::warn!("leader lease: cannot try the lock: {e}");
                    self.session = None;
                }
            },
        }
    }
}

/// This master may no longer be the leader: stop at once, before it acts on stale
/// state (its writes are fenced anyway); its supervisor restarts it as a follower.
pub fn deposed(why: &str) -> ! {
    log::error!("no longer the leader: {why}; exiting so that a restart rejoins as a follower");
    std::process::exit(3)
}

impl Actor for LeaderActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.tick();
        ctx.run_interval(POLL, |a, _| a.tick());
    }
}

impl Handler<GetLeadership> for LeaderActor {
    type Result = MessageResult<GetLeadership>;

    fn handle(&mut self, _: GetLeadership, _: &mut Self::Context) -> Self::Result {
        let known = self.lease.as_ref().filter(|l| !l.leader_url.is_empty() && l.epoch > 0);
        MessageResult(Leadership {
            leading: self.epoch.is_some(),
            epoch: known.map(|l| l.epoch),
            leader_url: known.map(|l| l.leader_url.clone()),
        })
    }
}
