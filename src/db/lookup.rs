//! `column IN (?, …)` over a fixed number of ids ([`IDS_PER_LOOKUP`], a shorter list
//! padded with its last id): one statement text for any number of ids, so SQLite
//! prepares it once per connection. diesel's `eq_any` renders one placeholder per value
//! and is never cached, which is why the writer read a group commit's rows with one
//! prepared single-id statement per job; with this it reads them sixteen at a time.

use diesel::QueryResult;
use diesel::expression::{AppearsOnTable, Expression, SelectableExpression, ValidGrouping, is_aggregate};
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Bool, Text};
use diesel::sqlite::Sqlite;

/// Ids per lookup statement.
pub const IDS_PER_LOOKUP: usize = 16;

/// `column IN (…)` over 1 to [`IDS_PER_LOOKUP`] ids.
pub struct InIds<'a, C> {
    column: C,
    ids: [&'a str; IDS_PER_LOOKUP],
}

impl<'a, C> InIds<'a, C> {
    /// `chunk` holds 1 to [`IDS_PER_LOOKUP`] ids (`slice::chunks` gives such chunks).
    pub fn new(column: C, chunk: &'a [String]) -> Self {
        assert!(!chunk.is_empty() && chunk.len() <= IDS_PER_LOOKUP, "{} ids for one lookup", chunk.len());
        let last = chunk[chunk.len() - 1].as_str();
        InIds { column, ids: std::array::from_fn(|i| chunk.get(i).map_or(last, String::as_str)) }
    }
}

impl<C: Expression> Expression for InIds<'_, C> {
    type SqlType = Bool;
}

impl<C: AppearsOnTable<QS>, QS> AppearsOnTable<QS> for InIds<'_, C> {}

impl<C: SelectableExpression<QS>, QS> SelectableExpression<QS> for InIds<'_, C> {}

impl<C> ValidGrouping<()> for InIds<'_, C> {
    type IsAggregate = is_aggregate::Never;
}

impl<C: QueryId> QueryId for InIds<'_, C> {
    type QueryId = InIds<'static, C::QueryId>;
    const HAS_STATIC_QUERY_ID: bool = C::HAS_STATIC_QUERY_ID;
}

impl<C: QueryFragment<Sqlite>> QueryFragment<Sqlite> for InIds<'_, C> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        self.column.walk_ast(out.reborrow())?;
        out.push_sql(" IN (");
        for (i, id) in self.ids.iter().enumerate() {
            if i > 0 {
                out.push_sql(", ");
            }
            out.push_bind_param::<Text, _>(id)?;
        }
        out.push_sql(")");
        Ok(())
    }
}

/// Run `load` on each chunk of at most [`IDS_PER_LOOKUP`] ids (each becomes one
/// [`InIds`]) and gather the rows, in chunk order.
pub fn load_in_chunks<'a, T>(
    ids: &'a [String],
    mut load: impl FnMut(&'a [String]) -> QueryResult<Vec<T>>,
) -> QueryResult<Vec<T>> {
    let mut rows = Vec::new();
    for chunk in ids.chunks(IDS_PER_LOOKUP) {
        rows.extend(load(chunk)?);
    }
    Ok(rows)
}
