//! The domain's enums as `Text` columns: written by their one spelling (`as_str`), read
//! back by parsing it. A value no variant spells is a deserialization error naming the
//! column's type, never a silent default. (The domain imports no diesel, so these impls
//! are written here, once, by a macro instead of derived on the enums.)

use crate::domain::node::NodeState;
use crate::domain::params::Engine;
use crate::domain::queue::{Priority, QueueName};
use crate::domain::state::{FailureReason, JobState};
use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql, Queryable};
use diesel::expression::AsExpression;
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::{Nullable, SingleValue, Text};

macro_rules! text_columns {
    ($($ty:ident),* $(,)?) => {$(
        impl<DB: Backend> ToSql<Text, DB> for $ty
        where
            str: ToSql<Text, DB>,
        {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, DB>) -> serialize::Result {
                <str as ToSql<Text, DB>>::to_sql(self.as_str(), out)
            }
        }

        impl<DB: Backend> FromSql<Text, DB> for $ty
        where
            String: FromSql<Text, DB>,
        {
            fn from_sql(bytes: DB::RawValue<'_>) -> deserialize::Result<Self> {
                let stored = <String as FromSql<Text, DB>>::from_sql(bytes)?;
                stored
                    .parse::<$ty>()
                    .map_err(|_| format!("unknown {} '{stored}' in the database", stringify!($ty)).into())
            }
        }

        impl<DB: Backend, ST: SingleValue> Queryable<ST, DB> for $ty
        where
            $ty: FromSql<ST, DB>,
        {
            type Row = Self;
            fn build(row: Self) -> deserialize::Result<Self> {
                Ok(row)
            }
        }

        // Bound as its spelling: the expression is exactly the `&'static str` one.
        impl AsExpression<Text> for $ty {
            type Expression = <&'static str as AsExpression<Text>>::Expression;
            fn as_expression(self) -> Self::Expression {
                AsExpression::<Text>::as_expression(self.as_str())
            }
        }

        impl AsExpression<Nullable<Text>> for $ty {
            type Expression = <&'static str as AsExpression<Nullable<Text>>>::Expression;
            fn as_expression(self) -> Self::Expression {
                AsExpression::<Nullable<Text>>::as_expression(self.as_str())
            }
        }

        impl AsExpression<Text> for &$ty {
            type Expression = <&'static str as AsExpression<Text>>::Expression;
            fn as_expression(self) -> Self::Expression {
                AsExpression::<Text>::as_expression(self.as_str())
            }
        }

        impl AsExpression<Nullable<Text>> for &$ty {
            type Expression = <&'static str as AsExpression<Nullable<Text>>>::Expression;
            fn as_expression(self) -> Self::Expression {
                AsExpression::<Nullable<Text>>::as_expression(self.as_str())
            }
        }
    )*};
}

text_columns!(JobState, QueueName, Priority, Engine, FailureReason, NodeState);

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::prelude::*;
    use diesel::sql_query;

    #[derive(QueryableByName, Debug)]
    struct One {
        #[diesel(sql_type = Text)]
        state: JobState,
    }

    #[test]
    fn columns_round_trip_and_unknown_values_are_errors() {
        let mut c = SqliteConnection::establish(":memory:").unwrap();
        for &s in JobState::ALL {
            let row: One = sql_query("SELECT ? AS state").bind::<Text, _>(s).get_result(&mut c).unwrap();
            assert_eq!(row.state, s);
        }
        let err = sql_query("SELECT 'running' AS state").get_result::<One>(&mut c).unwrap_err();
        assert!(err.to_string().contains("unknown JobState 'running'"), "{err}");
    }
}
