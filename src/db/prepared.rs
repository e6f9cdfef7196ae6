//! PostgreSQL statements of fixed text kept prepared on their connection.
//!
//! diesel prepares a statement once per connection only when its text cannot vary: a
//! multi-row `VALUES` list, an `UPDATE` and any `sql_query` are parsed and planned by the
//! server at every execution. The writer's per-batch statements take their rows as one
//! array per column (`unnest`), so their text is the same for one row or a thousand; a
//! [`Prepared`] names such a text by a marker type, which is diesel's cache key, and the
//! server parses it once per connection instead of at each group commit (bench P18: the
//! parse and bind of those statements were a fifth of PostgreSQL's time per job).

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::Untyped;
use diesel::{QueryResult, RunQueryDsl};
use std::marker::PhantomData;

/// `sql` with its `$1`, `$2`, … bound to `binds` in order. `M` must name this one text:
/// two texts under one marker would run the first one prepared.
pub struct Prepared<'a, M> {
    sql: &'static str,
    binds: Vec<Box<dyn QueryFragment<Pg> + 'a>>,
    marker: PhantomData<M>,
}

impl<'a, M> Prepared<'a, M> {
    pub fn new(sql: &'static str) -> Self {
        Prepared { sql, binds: Vec::new(), marker: PhantomData }
    }

    /// The next placeholder's value, as SQL type `ST`.
    pub fn bind<ST, T>(mut self, value: T) -> Self
    where
        T: diesel::expression::AsExpression<ST>,
        T::Expression: QueryFragment<Pg> + 'a,
        ST: diesel::sql_types::SqlType + diesel::sql_types::SingleValue,
    {
        self.binds.push(Box::new(value.as_expression()));
        self
    }
}

/// The text between placeholders: `sql` split at each `$<digits>`.
fn pieces(sql: &str) -> impl Iterator<Item = &str> {
    let mut rest = sql;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        match rest.find('$') {
            Some(at) => {
                let digits = rest[at + 1..].bytes().take_while(u8::is_ascii_digit).count();
                let piece = &rest[..at];
                rest = &rest[at + 1 + digits..];
                Some(piece)
            }
            None => {
                done = true;
                Some(rest)
            }
        }
    })
}

impl<M> QueryFragment<Pg> for Prepared<'_, M> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let mut binds = self.binds.iter();
        let mut first = true;
        for piece in pieces(self.sql) {
            if !first {
                // diesel numbers the placeholders it writes, in the same order.
                let bind = binds.next().ok_or_else(|| {
                    diesel::result::Error::QueryBuilderError(format!("too few binds for: {}", self.sql).into())
                })?;
                bind.walk_ast(out.reborrow())?;
            }
            first = false;
            out.push_sql(piece);
        }
        match binds.next() {
            Some(_) => {
                Err(diesel::result::Error::QueryBuilderError(format!("too many binds for: {}", self.sql).into()))
            }
            None => Ok(()),
        }
    }
}

impl<M: 'static> QueryId for Prepared<'_, M> {
    type QueryId = M;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<M> Query for Prepared<'_, M> {
    type SqlType = Untyped;
}

impl<M, C> RunQueryDsl<C> for Prepared<'_, M> {}

#[cfg(test)]
mod tests {
    use super::pieces;

    #[test]
    fn placeholders_split_the_text_in_order() {
        let cases: &[(&str, &[&str])] = &[
            ("SELECT 1", &["SELECT 1"]),
            ("SELECT $1", &["SELECT ", ""]),
            ("a = $1::text[] AND b = $12 LIMIT 3", &["a = ", "::text[] AND b = ", " LIMIT 3"]),
            ("$1,$2", &["", ",", ""]),
        ];
        for (sql, want) in cases {
            assert_eq!(pieces(sql).collect::<Vec<_>>(), *want, "{sql}");
        }
    }
}
