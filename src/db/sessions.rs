//! Web console sessions (`console_sessions`): who signed in with which role, until
//! when, and the CSRF token their state-changing requests must carry. The cookie holds
//! a random token; the table holds only its SHA-256, so a leaked database signs nobody in.

use super::schema::console_sessions as s;
use super::{Conn, DbResult};
use diesel::prelude::*;

/// Live (unexpired, unrevoked) sessions at most: signing in beyond this is refused
/// until some expire, so the table stays bounded whatever clients do.
pub const MAX_LIVE: i64 = 10_000;

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = s, treat_none_as_default_value = false)]
pub struct SessionRow {
    /// SHA-256 (hex) of the cookie's token.
    pub id: String,
    /// admin or read-only.
    pub role: String,
    /// SHA-256 (hex) of the API key that signed in (per-key limits apply to the session).
    pub key_digest: String,
    pub csrf_token: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

/// Store a new session, first forgetting the ones that can no longer be used. Ok(false)
/// when [`MAX_LIVE`] sessions are live already.
pub fn create(conn: &mut Conn, row: &SessionRow) -> DbResult<bool> {
    let now = row.created_at;
    diesel::delete(s::table.filter(s::expires_at.le(now).or(s::revoked_at.is_not_null()))).execute(conn)?;
    let live: i64 = s::table.count().get_result(conn)?;
    if live >= MAX_LIVE {
        return Ok(false);
    }
    diesel::insert_into(s::table).values(row).execute(conn)?;
    Ok(true)
}

/// The session with this token digest, if it is still usable at `now`.
pub fn live(conn: &mut Conn, id: &str, now: i64) -> DbResult<Option<SessionRow>> {
    Ok(s::table
        .filter(s::id.eq(id))
        .filter(s::expires_at.gt(now))
        .filter(s::revoked_at.is_null())
        .select(SessionRow::as_select())
        .first(conn)
        .optional()?)
}

/// Revoke one session (sign-out); Ok(false) when it was not live.
pub fn revoke(conn: &mut Conn, id: &str, now: i64) -> DbResult<bool> {
    let n = diesel::update(s::table.filter(s::id.eq(id)).filter(s::revoked_at.is_null()))
        .set(s::revoked_at.eq(now))
        .execute(conn)?;
    Ok(n > 0)
}

/// Revoke every live session (an operator's "sign everybody out"); how many there were.
pub fn revoke_all(conn: &mut Conn, now: i64) -> DbResult<usize> {
    Ok(diesel::update(s::table.filter(s::revoked_at.is_null()).filter(s::expires_at.gt(now)))
        .set(s::revoked_at.eq(now))
        .execute(conn)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Synchronous, open_sqlite};

    fn row(id: &str, now: i64, ttl: i64) -> SessionRow {
        SessionRow {
            id: id.into(),
            role: "admin".into(),
            key_digest: "k".into(),
            csrf_token: "t".into(),
            created_at: now,
            expires_at: now + ttl,
            revoked_at: None,
        }
    }

    #[test]
    fn sessions_expire_are_revoked_and_do_not_pile_up() {
        let dir = tempfile::tempdir().unwrap();
        let pool = open_sqlite(&dir.path().join("s.db"), Synchronous::Normal, 1).unwrap();
        let c = &mut pool.get().unwrap();
        assert!(create(c, &row("a", 100, 10)).unwrap());
        assert!(live(c, "a", 105).unwrap().is_some());
        assert!(live(c, "a", 110).unwrap().is_none(), "expired at its end");
        assert!(live(c, "nobody", 105).unwrap().is_none());
        assert!(create(c, &row("b", 105, 10)).unwrap());
        assert!(revoke(c, "b", 106).unwrap());
        assert!(live(c, "b", 107).unwrap().is_none(), "signed out");
        assert!(!revoke(c, "b", 108).unwrap(), "already revoked");
        assert!(create(c, &row("c", 120, 10)).unwrap());
        assert!(create(c, &row("d", 120, 10)).unwrap());
        assert_eq!(revoke_all(c, 121).unwrap(), 2);
        assert!(live(c, "c", 122).unwrap().is_none() && live(c, "d", 122).unwrap().is_none());
        // A new sign-in forgets every expired or revoked row.
        assert!(create(c, &row("e", 200, 10)).unwrap());
        let left: i64 = s::table.count().get_result(c).unwrap();
        assert_eq!(left, 1);
    }
}
