//! The values a copy carries, read from either dialect into one form, written back in the form each dialect's
//! own writes use, and reduced to a canonical text that is the same in both: the checksum of a table is computed
//! from it, so a table copied from SQLite to PostgreSQL checks equal when its values are.

use std::borrow::Cow;

use chrono::{DateTime, NaiveDate, SecondsFormat, SubsecRound, Utc};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Postgres, Row, Sqlite, TypeInfo, ValueRef};

/// What a column holds, whatever each dialect calls it. SQLite stores timestamps and dates as text; when one side
/// of a copy is PostgreSQL its types say which text columns are which.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Int,
    Real,
    Bool,
    Text,
    Timestamp,
    Date,
}

impl Kind {
    /// The kind of a PostgreSQL column, from its `information_schema` data type (None: one copy does not carry).
    pub fn of_postgres(data_type: &str) -> Option<Kind> {
        Some(match data_type {
            "bigint" | "integer" | "smallint" => Kind::Int,
            "double precision" => Kind::Real,
            "boolean" => Kind::Bool,
            "text" | "character varying" => Kind::Text,
            "timestamp with time zone" => Kind::Timestamp,
            "date" => Kind::Date,
            _ => return None,
        })
    }

    /// The kind of an SQLite column, from its declared type (SQLite's own affinity rules, plus BOOLEAN).
    pub fn of_sqlite(declared: &str) -> Option<Kind> {
        let t = declared.to_ascii_uppercase();
        if t.contains("INT") {
            Some(Kind::Int)
        } else if t.contains("BOOL") {
            Some(Kind::Bool)
        } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
            Some(Kind::Text)
        } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
            Some(Kind::Real)
        } else {
            None
        }
    }
}

/// One value of one row.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Bool(bool),
    Text(String),
    /// To the microsecond: PostgreSQL keeps no finer time, so a copy to it cannot either.
    Timestamp(DateTime<Utc>),
    Date(NaiveDate),
}

impl Cell {
    /// The value as text, the same whichever database it was read from (None: NULL).
    pub fn canonical(&self) -> Option<Cow<'_, str>> {
        Some(match self {
            Cell::Null => return None,
            Cell::Int(i) => Cow::Owned(i.to_string()),
            // Rust prints the shortest text that reads back as the same f64, in either database.
            Cell::Real(r) => Cow::Owned(format!("{r:?}")),
            Cell::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Cell::Text(s) => Cow::Borrowed(s.as_str()),
            Cell::Timestamp(t) => Cow::Owned(t.to_rfc3339_opts(SecondsFormat::Micros, true)),
            Cell::Date(d) => Cow::Owned(d.format("%F").to_string()),
        })
    }
}

/// Reads column `i` of an SQLite row as a value of `kind`; the error says what was found instead.
pub fn read_sqlite(row: &SqliteRow, i: usize, kind: Kind) -> Result<Cell, String> {
    let raw = row.try_get_raw(i).map_err(|e| e.to_string())?;
    if raw.is_null() {
        return Ok(Cell::Null);
    }
    let storage = raw.type_info().name().to_owned();
    let unexpected = || format!("expected {kind:?}, found an SQLite {storage} value");
    let decode_error = |e: sqlx::Error| format!("expected {kind:?}: {e}");
    match (kind, storage.as_str()) {
        (Kind::Int, "INTEGER") => row.try_get::<i64, _>(i).map(Cell::Int).map_err(decode_error),
        (Kind::Real, "INTEGER" | "REAL") => row.try_get_unchecked::<f64, _>(i).map(Cell::Real).map_err(decode_error),
        (Kind::Bool, "INTEGER") => match row.try_get::<i64, _>(i).map_err(decode_error)? {
            0 => Ok(Cell::Bool(false)),
            1 => Ok(Cell::Bool(true)),
            n => Err(format!("expected a boolean (0 or 1), found {n}")),
        },
        (Kind::Text, "TEXT") => row.try_get::<String, _>(i).map(Cell::Text).map_err(decode_error),
        // Read as sqlx reads the bot's own timestamps and dates.
        (Kind::Timestamp, "TEXT") => row
            .try_get_unchecked::<DateTime<Utc>, _>(i)
            .map(|t| Cell::Timestamp(t.trunc_subsecs(6)))
            .map_err(decode_error),
        (Kind::Date, "TEXT") => row.try_get_unchecked::<NaiveDate, _>(i).map(Cell::Date).map_err(decode_error),
        _ => Err(unexpected()),
    }
}

/// Reads column `i` of a PostgreSQL row, of the `information_schema` data type `data_type`.
pub fn read_postgres(row: &PgRow, i: usize, data_type: &str) -> Result<Cell, String> {
    fn get<'r, T>(row: &'r PgRow, i: usize, cell: impl FnOnce(T) -> Cell) -> Result<Cell, String>
    where
        T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
    {
        let value: Option<T> = row.try_get(i).map_err(|e| e.to_string())?;
        Ok(value.map_or(Cell::Null, cell))
    }
    match data_type {
        "bigint" => get(row, i, Cell::Int),
        "integer" => get(row, i, |v: i32| Cell::Int(v.into())),
        "smallint" => get(row, i, |v: i16| Cell::Int(v.into())),
        "double precision" => get(row, i, Cell::Real),
        "boolean" => get(row, i, Cell::Bool),
        "text" | "character varying" => get(row, i, Cell::Text),
        "timestamp with time zone" => get(row, i, Cell::Timestamp),
        "date" => get(row, i, Cell::Date),
        other => Err(format!("a PostgreSQL {other} column, which copy does not carry")),
    }
}

/// Binds a value for SQLite as the bot's own writes store it: timestamps and dates as sqlx writes them (RFC 3339
/// and `%F` text, which SQLite compares as text), booleans as 0 and 1.
pub fn bind_sqlite<'q>(
    q: Query<'q, Sqlite, SqliteArguments<'q>>,
    cell: &'q Cell,
) -> Query<'q, Sqlite, SqliteArguments<'q>> {
    match cell {
        Cell::Null => q.bind(None::<i64>),
        Cell::Int(v) => q.bind(*v),
        Cell::Real(v) => q.bind(*v),
        Cell::Bool(v) => q.bind(*v),
        Cell::Text(v) => q.bind(v.as_str()),
        Cell::Timestamp(v) => q.bind(*v),
        Cell::Date(v) => q.bind(*v),
    }
}

/// Binds a value for PostgreSQL (the statement casts each parameter to its column's type).
pub fn bind_postgres<'q>(q: Query<'q, Postgres, PgArguments>, cell: &'q Cell) -> Query<'q, Postgres, PgArguments> {
    match cell {
        Cell::Null => q.bind(None::<String>),
        Cell::Int(v) => q.bind(*v),
        Cell::Real(v) => q.bind(*v),
        Cell::Bool(v) => q.bind(*v),
        Cell::Text(v) => q.bind(v.as_str()),
        Cell::Timestamp(v) => q.bind(*v),
        Cell::Date(v) => q.bind(*v),
    }
}

/// A table's rows, counted and hashed in primary-key order: FNV-1a (64 bits) over each value's canonical text,
/// length-prefixed, NULL told apart from every text. It finds a copy that differs; it is no defence against
/// anyone forging one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checksum {
    pub rows: u64,
    hash: u64,
}

impl Default for Checksum {
    fn default() -> Self {
        Checksum { rows: 0, hash: 0xcbf2_9ce4_8422_2325 }
    }
}

impl Checksum {
    pub fn add_row(&mut self, row: &[Cell]) {
        self.rows += 1;
        for cell in row {
            match cell.canonical() {
                None => self.feed(&[0]),
                Some(text) => {
                    self.feed(&[1]);
                    self.feed(&(text.len() as u64).to_le_bytes());
                    self.feed(text.as_bytes());
                }
            }
        }
        self.feed(&[2]);
    }

    fn feed(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.hash ^= u64::from(*b);
            self.hash = self.hash.wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub fn hex(&self) -> String {
        format!("{:016x}", self.hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_text_is_one_form_per_value() {
        let t: DateTime<Utc> = "2026-11-25T10:00:00+00:00".parse().unwrap();
        assert_eq!(Cell::Timestamp(t).canonical().unwrap(), "2026-11-25T10:00:00.000000Z");
        assert_eq!(Cell::Real(4_200_000.0).canonical().unwrap(), "4200000.0");
        assert_eq!(Cell::Real(0.1).canonical().unwrap(), "0.1");
        assert_eq!(Cell::Bool(true).canonical().unwrap(), "true");
        assert_eq!(Cell::Date(NaiveDate::from_ymd_opt(2027, 1, 6).unwrap()).canonical().unwrap(), "2027-01-06");
        assert_eq!(Cell::Null.canonical(), None);
    }

    #[test]
    fn a_checksum_tells_null_from_text_and_where_values_end() {
        let sum = |rows: &[Vec<Cell>]| {
            let mut c = Checksum::default();
            rows.iter().for_each(|r| c.add_row(r));
            c
        };
        let text = |s: &str| Cell::Text(s.into());
        assert_ne!(sum(&[vec![Cell::Null]]), sum(&[vec![text("")]]));
        assert_ne!(sum(&[vec![text("ab"), text("c")]]), sum(&[vec![text("a"), text("bc")]]));
        assert_ne!(sum(&[vec![text("a")], vec![text("b")]]), sum(&[vec![text("b")], vec![text("a")]]));
        assert_eq!(sum(&[vec![Cell::Int(1)]]), sum(&[vec![Cell::Int(1)]]));
    }

    #[test]
    fn kinds_of_the_migrations_column_types() {
        assert_eq!(Kind::of_sqlite("BIGINT"), Some(Kind::Int));
        assert_eq!(Kind::of_sqlite("BOOLEAN"), Some(Kind::Bool));
        assert_eq!(Kind::of_sqlite("REAL"), Some(Kind::Real));
        assert_eq!(Kind::of_sqlite("TEXT"), Some(Kind::Text));
        assert_eq!(Kind::of_sqlite("BLOB"), None);
        assert_eq!(Kind::of_postgres("timestamp with time zone"), Some(Kind::Timestamp));
        assert_eq!(Kind::of_postgres("jsonb"), None);
    }
}
