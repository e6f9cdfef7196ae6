//! Node rows.

use super::schema::nodes;
use super::{Conn, DbResult};
use diesel::prelude::*;

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset, PartialEq)]
#[diesel(table_name = nodes)]
pub struct NodeRow {
    pub id: String,
    pub name: String,
    pub address: String,
    pub node_type: String,
    pub cpu_threads: i32,
    pub cpu_model: String,
    pub cpu_load_percent: f64,
    pub has_gpu: bool,
    pub gpu_type: String,
    pub gpu_capabilities: String,
    pub ram_total_bytes: i64,
    pub ram_free_bytes: i64,
    pub labels: String,
    pub status: crate::domain::node::NodeState,
    pub draining: bool,
    pub max_concurrent_jobs: i32,
    pub hardware: String,
    pub last_heartbeat: i64,
    pub registered_at: i64,
    /// SHA-256 (hex) of the node's token; None for seed-style nodes.
    pub token_hash: Option<String>,
    /// The heartbeat interval the node declared (ms); None: a seed agent's 30 s.
    pub heartbeat_interval_ms: Option<i32>,
}

/// Insert or replace a node's row.
pub fn upsert(conn: &mut Conn, row: &NodeRow) -> DbResult<()> {
    let n = diesel::update(nodes::table.filter(nodes::id.eq(&row.id))).set(row).execute(conn)?;
    if n == 0 {
        diesel::insert_into(nodes::table).values(row).execute(conn)?;
    }
    Ok(())
}

pub fn delete(conn: &mut Conn, id: &str) -> DbResult<usize> {
    Ok(diesel::delete(nodes::table.filter(nodes::id.eq(id))).execute(conn)?)
}

pub fn load_all(conn: &mut Conn) -> DbResult<Vec<NodeRow>> {
    Ok(nodes::table.order(nodes::registered_at.asc()).select(NodeRow::as_select()).load(conn)?)
}
