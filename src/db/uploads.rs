//! Uploaded input files (`uploads`): what was stored where, for `upload://` inputs.

use super::outputs::OutputRow;
use super::schema::uploads as u;
use super::{Conn, DbResult};
use diesel::prelude::*;

/// Uploads kept at most (retention removes old ones; beyond this, uploads are refused).
pub const MAX_STORED: i64 = 100_000;

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = u)]
pub struct UploadRow {
    pub id: String,
    pub name: String,
    pub bytes: i64,
    pub sha256: String,
    pub content_type: String,
    /// Where the artifact store keeps it (`uploads/<id>/<name>`).
    pub location: String,
    pub created_at: i64,
}

impl UploadRow {
    /// What a job names as its `input` to read this file.
    pub fn input(&self) -> String {
        format!("upload://{}/{}", self.id, self.name)
    }

    /// As a stored file the output machinery serves and removes.
    pub fn as_output(&self) -> OutputRow {
        OutputRow {
            job_id: self.id.clone(),
            name: self.name.clone(),
            attempt: 0,
            bytes: self.bytes,
            sha256: self.sha256.clone(),
            content_type: self.content_type.clone(),
            location: self.location.clone(),
            created_at: self.created_at,
        }
    }

    pub fn to_wire(&self) -> crate::wire::Upload {
        crate::wire::Upload {
            id: self.id.clone(),
            name: self.name.clone(),
            bytes: self.bytes as u64,
            sha256: self.sha256.clone(),
            input: self.input(),
            created_at: crate::wire::rfc3339(self.created_at),
        }
    }
}

/// Record an upload; Ok(false) when [`MAX_STORED`] are kept already.
pub fn insert(conn: &mut Conn, row: &UploadRow) -> DbResult<bool> {
    let stored: i64 = u::table.count().get_result(conn)?;
    if stored >= MAX_STORED {
        return Ok(false);
    }
    diesel::insert_into(u::table).values(row).execute(conn)?;
    Ok(true)
}

pub fn get(conn: &mut Conn, id: &str, name: &str) -> DbResult<UploadRow> {
    Ok(u::table.filter(u::id.eq(id)).filter(u::name.eq(name)).select(UploadRow::as_select()).get_result(conn)?)
}

/// Forget up to `limit` uploads made before `cutoff` (micros); the removed rows, whose
/// files the caller deletes.
pub fn delete_before(conn: &mut Conn, cutoff: i64, limit: i64) -> DbResult<Vec<UploadRow>> {
    let rows: Vec<UploadRow> =
        u::table.filter(u::created_at.lt(cutoff)).select(UploadRow::as_select()).limit(limit).load(conn)?;
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    diesel::delete(u::table.filter(u::id.eq_any(ids))).execute(conn)?;
    Ok(rows)
}
