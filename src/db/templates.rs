//! Stored job templates: every version kept (name, version), the highest current.

use super::schema::templates;
use super::{Conn, DbResult, now_micros};
use diesel::prelude::*;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = templates)]
pub struct TemplateRow {
    pub name: String,
    pub version: i32,
    pub description: String,
    /// The parameters (JSON object).
    pub body: String,
    pub created_at: i64,
    pub deleted: bool,
}

/// The current version of each stored template, by name.
pub fn list(conn: &mut Conn) -> DbResult<Vec<TemplateRow>> {
    let all: Vec<TemplateRow> = templates::table
        .order((templates::name.asc(), templates::version.desc()))
        .select(TemplateRow::as_select())
        .load(conn)?;
    let mut out: Vec<TemplateRow> = Vec::new();
    for t in all {
        if out.last().is_none_or(|l| l.name != t.name) {
            out.push(t);
        }
    }
    Ok(out)
}

/// A template's current version, or the one asked for.
pub fn get(conn: &mut Conn, name: &str, version: Option<i32>) -> DbResult<Option<TemplateRow>> {
    let mut q = templates::table.filter(templates::name.eq(name)).into_boxed();
    if let Some(v) = version {
        q = q.filter(templates::version.eq(v));
    }
    Ok(q.order(templates::version.desc()).select(TemplateRow::as_select()).first(conn).optional()?)
}

/// Store a new version (1 for a new name); refused past `max_rows` stored versions.
pub fn put(conn: &mut Conn, name: &str, description: &str, body: &str, max_rows: i64) -> DbResult<TemplateRow> {
    let count: i64 = templates::table.count().get_result(conn)?;
    if count >= max_rows {
        return Err(super::DbError::Conflict {
            current: None,
            message: format!("at most {max_rows} template versions are stored; delete some"),
        });
    }
    let version = get(conn, name, None)?.map_or(1, |t| t.version + 1);
    let row = TemplateRow {
        name: name.into(),
        version,
        description: description.into(),
        body: body.into(),
        created_at: now_micros(),
        deleted: false,
    };
    crate::on_backend!(conn, |c| diesel::insert_into(templates::table).values(&row).execute(c))?;
    Ok(row)
}

/// Delete every version of a template; false if there was none.
pub fn delete(conn: &mut Conn, name: &str) -> DbResult<bool> {
    Ok(diesel::delete(templates::table.filter(templates::name.eq(name))).execute(conn)? > 0)
}
