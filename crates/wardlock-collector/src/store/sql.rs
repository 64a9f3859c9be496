//! The narrow SQL layer both backends speak, so that every query is written once
//! (`store/queries.rs`, `store/intake.rs`).
//!
//! SQL text is the common subset of SQLite and PostgreSQL: placeholders `$1`, `$2`… (given
//! to SQLite as `?1`, `?2`…, so that each is bound by its number; the text has no other
//! `$`), `ON CONFLICT … DO
//! UPDATE/NOTHING` upserts, `RETURNING`, row-value comparisons and no casts. What really
//! differs per backend stays with the backend: how a row of another transaction is locked
//! ([`Sql::for_update`], [`Sql::serialise`]), connections, TLS, DDL and the SQLite intake
//! writer. Rows are read into [`Row`], whose getters answer a typed error, never a panic,
//! for a NULL or a value of another type.

use std::borrow::Cow;

use wardlock_core::clock::UtcMillis;

use super::{Hash, StoreError};

/// A value bound to a placeholder or read from a column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    Null,
    Int(i64),
    Bool(bool),
    Text(Cow<'a, str>),
    Blob(Cow<'a, [u8]>),
}

impl Value<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Int(_) => "an integer",
            Value::Bool(_) => "a boolean",
            Value::Text(_) => "text",
            Value::Blob(_) => "bytes",
        }
    }
}

impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<bool> for Value<'_> {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl From<UtcMillis> for Value<'_> {
    fn from(t: UtcMillis) -> Self {
        Value::Int(t.unix_millis())
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Text(Cow::Borrowed(v))
    }
}

impl<'a> From<&'a String> for Value<'a> {
    fn from(v: &'a String) -> Self {
        Value::Text(Cow::Borrowed(v))
    }
}

impl From<String> for Value<'_> {
    fn from(v: String) -> Self {
        Value::Text(Cow::Owned(v))
    }
}

impl<'a> From<&'a [u8]> for Value<'a> {
    fn from(v: &'a [u8]) -> Self {
        Value::Blob(Cow::Borrowed(v))
    }
}

impl<'a> From<&'a Vec<u8>> for Value<'a> {
    fn from(v: &'a Vec<u8>) -> Self {
        Value::Blob(Cow::Borrowed(v))
    }
}

impl<'a> From<&'a Hash> for Value<'a> {
    fn from(v: &'a Hash) -> Self {
        Value::Blob(Cow::Borrowed(&v[..]))
    }
}

impl<'a, T: Into<Value<'a>>> From<Option<T>> for Value<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// A seq or count as the columns hold it (SQL has no unsigned 64-bit integer).
pub fn int(n: u64) -> Value<'static> {
    Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

/// The arguments of a statement: `[a.into(), b.into(), …]`.
macro_rules! args {
    ($($v:expr),* $(,)?) => { &[$($crate::store::sql::Value::from($v)),*] };
}
pub(crate) use args;

/// Arguments gathered while a statement is built (filters that are there or not).
#[derive(Debug, Default)]
pub struct Args<'a>(pub Vec<Value<'a>>);

impl<'a> Args<'a> {
    /// Adds a value; answers its placeholder.
    pub fn bind(&mut self, v: impl Into<Value<'a>>) -> String {
        self.push(v);
        format!("${}", self.0.len())
    }

    /// Adds a value for a statement whose placeholders are numbered already.
    pub fn push(&mut self, v: impl Into<Value<'a>>) {
        self.0.push(v.into());
    }

    /// Adds each value; answers `($n, $m, …)` for an `IN` list (never empty: an empty set
    /// is `(NULL)`, which matches nothing).
    pub fn list<V: Into<Value<'a>>>(&mut self, values: impl IntoIterator<Item = V>) -> String {
        let placeholders: Vec<String> = values.into_iter().map(|v| self.bind(v)).collect();
        if placeholders.is_empty() {
            "(NULL)".to_owned()
        } else {
            format!("({})", placeholders.join(", "))
        }
    }
}

/// One row read, with typed getters by column index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row(pub Vec<Value<'static>>);

impl Row {
    fn at(&self, i: usize) -> Result<&Value<'static>, StoreError> {
        self.0.get(i).ok_or(StoreError::Row { column: i, expected: "a column", found: "none" })
    }

    fn wrong(i: usize, expected: &'static str, found: &Value<'_>) -> StoreError {
        StoreError::Row { column: i, expected, found: found.type_name() }
    }

    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Int(n) => Ok(Some(*n)),
            other => Err(Self::wrong(i, "an integer", other)),
        }
    }

    pub fn int(&self, i: usize) -> Result<i64, StoreError> {
        self.opt_int(i)?.ok_or(StoreError::Row { column: i, expected: "an integer", found: "NULL" })
    }

    pub fn opt_uint(&self, i: usize) -> Result<Option<u64>, StoreError> {
        self.opt_int(i)?
            .map(|n| {
                u64::try_from(n).map_err(|_| StoreError::Row {
                    column: i,
                    expected: "a count or seq",
                    found: "a negative number",
                })
            })
            .transpose()
    }

    pub fn uint(&self, i: usize) -> Result<u64, StoreError> {
        self.opt_uint(i)?.ok_or(StoreError::Row { column: i, expected: "a count or seq", found: "NULL" })
    }

    pub fn opt_time(&self, i: usize) -> Result<Option<UtcMillis>, StoreError> {
        Ok(self.opt_int(i)?.map(UtcMillis::from_unix_millis))
    }

    pub fn time(&self, i: usize) -> Result<UtcMillis, StoreError> {
        Ok(UtcMillis::from_unix_millis(self.int(i)?))
    }

    pub fn opt_bool(&self, i: usize) -> Result<Option<bool>, StoreError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            _ => self.bool(i).map(Some),
        }
    }

    /// SQLite keeps booleans as integers.
    pub fn bool(&self, i: usize) -> Result<bool, StoreError> {
        match self.at(i)? {
            Value::Bool(b) => Ok(*b),
            Value::Int(n) => Ok(*n != 0),
            other => Err(Self::wrong(i, "a boolean", other)),
        }
    }

    pub fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s.clone().into_owned())),
            other => Err(Self::wrong(i, "text", other)),
        }
    }

    pub fn text(&self, i: usize) -> Result<String, StoreError> {
        self.opt_text(i)?.ok_or(StoreError::Row { column: i, expected: "text", found: "NULL" })
    }

    pub fn opt_blob(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Blob(b) => Ok(Some(b.clone().into_owned())),
            other => Err(Self::wrong(i, "bytes", other)),
        }
    }

    pub fn blob(&self, i: usize) -> Result<Vec<u8>, StoreError> {
        self.opt_blob(i)?.ok_or(StoreError::Row { column: i, expected: "bytes", found: "NULL" })
    }

    /// A stored 32-byte hash; another length reads as zeros, which the chain check then
    /// flags (a tampered row is evidence, not an error that hides the rest).
    pub fn hash(&self, i: usize) -> Result<Hash, StoreError> {
        Ok(self.blob(i)?.try_into().unwrap_or([0; 32]))
    }
}

/// A connection or transaction of either backend.
pub trait Sql {
    /// Runs a statement; answers how many rows it changed.
    fn execute(&mut self, sql: &str, args: &[Value<'_>]) -> Result<u64, StoreError>;
    /// Runs a query; answers its rows.
    fn query(&mut self, sql: &str, args: &[Value<'_>]) -> Result<Vec<Row>, StoreError>;
    /// What a `SELECT` appends to lock the rows it read until commit (`FOR UPDATE` on
    /// PostgreSQL; nothing on SQLite, whose write transactions exclude each other).
    fn for_update(&self) -> &'static str;
    /// Makes other transactions that serialise on the same `key` wait for this one.
    fn serialise(&mut self, key: &str) -> Result<(), StoreError>;
    /// How many rows one `INSERT` of a batch should carry: many where each statement is
    /// a round trip to a server, one in-process (SQLite runs a cached one-row statement
    /// faster than a multi-row one, which also buffers its `RETURNING` rows).
    fn rows_per_insert(&self) -> usize;

    fn query_opt(&mut self, sql: &str, args: &[Value<'_>]) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, args)?.into_iter().next())
    }

    fn query_one(&mut self, sql: &str, args: &[Value<'_>]) -> Result<Row, StoreError> {
        self.query_opt(sql, args)?.ok_or(StoreError::Row { column: 0, expected: "a row", found: "none" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getters_answer_a_typed_error_for_null_and_other_types_instead_of_panicking() {
        let row = Row(vec![Value::Null, Value::Text("x".into()), Value::Int(-1), Value::Int(1)]);
        assert!(matches!(row.int(0), Err(StoreError::Row { column: 0, found: "NULL", .. })));
        assert!(matches!(row.int(1), Err(StoreError::Row { column: 1, found: "text", .. })));
        assert!(matches!(row.uint(2), Err(StoreError::Row { column: 2, .. })));
        assert!(matches!(row.text(9), Err(StoreError::Row { column: 9, .. })));
        assert_eq!(row.opt_text(0).unwrap(), None);
        assert!(row.bool(3).unwrap());
        assert_eq!(row.uint(3).unwrap(), 1);
    }

    #[test]
    fn lists_bind_each_value_and_an_empty_one_matches_nothing() {
        let mut args = Args::default();
        assert_eq!(args.bind(1i64), "$1");
        assert_eq!(args.list(["a", "b"]), "($2, $3)");
        assert_eq!(args.list(Vec::<&str>::new()), "(NULL)");
        assert_eq!(args.0.len(), 3);
    }
}
