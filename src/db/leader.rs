//! The leader lease of highly available masters on PostgreSQL.
//!
//! Masters on one database compete for a session-level advisory lock, held on a
//! connection of its own by the `LeaderActor` (`actors/leader.rs`). PostgreSQL releases
//! it the moment that session ends — a killed master's socket closes — so a follower's
//! next try takes it. The winner increments the `leader_lease` row's `epoch` and writes
//! the URL followers redirect to. Every write transaction of the leader first checks,
//! with the row share-locked, that the epoch is still its own ([`epoch_for_write`]): a
//! deposed leader that has not noticed yet cannot commit anything, and a new leader's
//! increment waits for any transaction of the old one that passed the check.

use super::schema::leader_lease;
use super::{Conn, DbResult, now_micros};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool};

/// The advisory lock whose holder leads (one per database: locks are per database).
pub const LEADER_LOCK: i64 = 0x6666_726d_7001;
/// Held while a master runs the migrations, so masters starting together take turns.
pub const MIGRATION_LOCK: i64 = 0x6666_726d_7002;

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

/// Who leads, as the lease row says.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct Lease {
    pub epoch: i64,
    pub leader_url: String,
    pub acquired_at: i64,
}

/// Try to take the leader lock on this session (never waits).
pub fn try_lock(conn: &mut Conn) -> DbResult<bool> {
    let r: Locked = diesel::sql_query("SELECT pg_try_advisory_lock($1) AS locked")
        .bind::<BigInt, _>(LEADER_LOCK)
        .get_result(conn)?;
    Ok(r.locked)
}

/// Record this master as the leader: a new epoch, its URL. Call only holding the lock.
pub fn take_over(conn: &mut Conn, url: &str) -> DbResult<i64> {
    Ok(diesel::update(leader_lease::table.find(1))
        .set((
            leader_lease::epoch.eq(leader_lease::epoch + 1),
            leader_lease::leader_url.eq(url),
            leader_lease::acquired_at.eq(now_micros()),
        ))
        .returning(leader_lease::epoch)
        .get_result(conn)?)
}

/// The lease row as it stands.
pub fn current(conn: &mut Conn) -> DbResult<Lease> {
    Ok(leader_lease::table
        .find(1)
        .select((leader_lease::epoch, leader_lease::leader_url, leader_lease::acquired_at))
        .first(conn)?)
}

/// Inside a write transaction: the lease's epoch, with the row share-locked until
/// COMMIT so that a take-over waits for this transaction (the leader's fence: it goes on
/// only if this is still its own epoch).
pub fn epoch_for_write(conn: &mut Conn) -> DbResult<i64> {
    let row = leader_lease::table.find(1).select(leader_lease::epoch);
    Ok(match conn {
        Conn::Postgresql(c) => row.for_share().first(c)?,
        // SQLite has one master and no row locks; its writer holds the database lock.
        Conn::Sqlite(c) => row.first(c)?,
    })
}
