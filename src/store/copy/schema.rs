//! The tables a copy carries, read from both databases' catalogs (every table but sqlx's own): their columns and
//! the kind of value each holds, the primary key that orders their rows, the foreign keys that order the tables,
//! and the sequences that number their ids.

use std::collections::{BTreeMap, BTreeSet};

use super::CopyError;
use super::cells::Kind;
use crate::store::Pool;

/// A column as the copy reads and writes it.
#[derive(Clone, Debug)]
pub struct Column {
    pub name: String,
    pub kind: Kind,
    /// Its PostgreSQL type (`information_schema` spelling) when a side is PostgreSQL: reads decode it, writes cast to it.
    pub pg_type: Option<String>,
}

/// Where a table's next id comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sequence {
    /// SQLite's `AUTOINCREMENT`: the last id given is in `sqlite_sequence`.
    SqliteAutoincrement,
    /// A PostgreSQL sequence (a `BIGSERIAL` or identity column's), by its qualified name.
    Postgres(String),
}

/// An id column numbered by a sequence.
#[derive(Clone, Debug)]
pub struct Numbered {
    pub column: String,
    pub source: Option<Sequence>,
    pub target: Sequence,
}

#[derive(Clone, Debug)]
pub struct Table {
    pub name: String,
    pub columns: Vec<Column>,
    /// Positions in `columns` of the primary key's columns, in key order.
    pub key: Vec<usize>,
    pub numbered: Option<Numbered>,
}

/// One database's own description of a table.
#[derive(Debug)]
pub struct Described {
    pub name: String,
    /// Name and declared type, in the table's order.
    columns: Vec<(String, String)>,
    key: Vec<String>,
    references: BTreeSet<String>,
    sequence: Option<(String, Sequence)>,
}

const SKIPPED: &str = "_sqlx_migrations";

/// The tables of a database as its catalog describes them, by name.
pub async fn describe(pool: &Pool) -> Result<Vec<Described>, sqlx::Error> {
    match pool {
        Pool::Sqlite(pool) => describe_sqlite(pool).await,
        Pool::Postgres(pool) => describe_postgres(pool).await,
    }
}

async fn describe_sqlite(pool: &sqlx::SqlitePool) -> Result<Vec<Described>, sqlx::Error> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
         AND name <> $1 ORDER BY name",
    )
    .bind(SKIPPED)
    .fetch_all(pool)
    .await?;
    let mut tables = Vec::new();
    for name in names {
        let cols: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT name, type, pk FROM pragma_table_info($1) ORDER BY cid")
                .bind(&name)
                .fetch_all(pool)
                .await?;
        let mut key: Vec<(i64, String)> = cols.iter().filter(|c| c.2 > 0).map(|c| (c.2, c.0.clone())).collect();
        key.sort();
        let key: Vec<String> = key.into_iter().map(|(_, n)| n).collect();
        let references: Vec<String> =
            sqlx::query_scalar("SELECT \"table\" FROM pragma_foreign_key_list($1)").bind(&name).fetch_all(pool).await?;
        let sql: String = sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = $1")
            .bind(&name)
            .fetch_one(pool)
            .await?;
        // AUTOINCREMENT belongs to the one INTEGER PRIMARY KEY column.
        let sequence = match key.as_slice() {
            [id] if sql.to_ascii_uppercase().contains("AUTOINCREMENT") => {
                Some((id.clone(), Sequence::SqliteAutoincrement))
            }
            _ => None,
        };
        tables.push(Described {
            name,
            columns: cols.into_iter().map(|(n, t, _)| (n, t)).collect(),
            key,
            references: references.into_iter().collect(),
            sequence,
        });
    }
    Ok(tables)
}

async fn describe_postgres(pool: &sqlx::PgPool) -> Result<Vec<Described>, sqlx::Error> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' AND table_name <> $1 ORDER BY 1",
    )
    .bind(SKIPPED)
    .fetch_all(pool)
    .await?;
    let mut tables = Vec::new();
    for name in names {
        let cols: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT column_name::text, data_type::text, \
                    pg_get_serial_sequence(quote_ident(table_name::text), column_name::text) \
             FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 \
             ORDER BY ordinal_position",
        )
        .bind(&name)
        .fetch_all(pool)
        .await?;
        let key: Vec<String> = sqlx::query_scalar(
            "SELECT k.column_name::text FROM information_schema.table_constraints c \
             JOIN information_schema.key_column_usage k ON k.constraint_schema = c.constraint_schema \
                 AND k.constraint_name = c.constraint_name AND k.table_name = c.table_name \
             WHERE c.constraint_type = 'PRIMARY KEY' AND c.table_schema = current_schema() AND c.table_name = $1 \
             ORDER BY k.ordinal_position",
        )
        .bind(&name)
        .fetch_all(pool)
        .await?;
        let references: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT u.table_name::text FROM information_schema.table_constraints c \
             JOIN information_schema.constraint_column_usage u ON u.constraint_schema = c.constraint_schema \
                 AND u.constraint_name = c.constraint_name \
             WHERE c.constraint_type = 'FOREIGN KEY' AND c.table_schema = current_schema() AND c.table_name = $1",
        )
        .bind(&name)
        .fetch_all(pool)
        .await?;
        let sequence = cols.iter().find_map(|(n, _, s)| s.clone().map(|s| (n.clone(), Sequence::Postgres(s))));
        tables.push(Described {
            name,
            columns: cols.into_iter().map(|(n, t, _)| (n, t)).collect(),
            key,
            references: references.into_iter().collect(),
            sequence,
        });
    }
    Ok(tables)
}

/// The tables to copy: every table of the source, which the target must have with the same columns and key (the
/// same migrations made both). A column's kind comes from the PostgreSQL side when there is one (SQLite's text
/// holds timestamps and dates alike). In an order that copies a referenced table before those referring to it.
pub fn plan(
    source: &[Described],
    source_is_pg: bool,
    target: &[Described],
    target_is_pg: bool,
) -> Result<Vec<Table>, CopyError> {
    let targets: BTreeMap<&str, &Described> = target.iter().map(|t| (t.name.as_str(), t)).collect();
    let missing: Vec<&str> = source.iter().map(|t| t.name.as_str()).filter(|n| !targets.contains_key(n)).collect();
    if !missing.is_empty() {
        return Err(CopyError::Schema(format!("the target has no table {}", missing.join(", "))));
    }
    let mut tables = BTreeMap::new();
    for s in source {
        let t = targets[s.name.as_str()];
        let theirs: BTreeMap<&str, &str> = t.columns.iter().map(|(n, ty)| (n.as_str(), ty.as_str())).collect();
        let ours: BTreeSet<&str> = s.columns.iter().map(|(n, _)| n.as_str()).collect();
        let differ: Vec<&str> = ours.symmetric_difference(&theirs.keys().copied().collect()).copied().collect();
        if !differ.is_empty() {
            return Err(CopyError::Schema(format!(
                "table {}: column {} is not in both databases",
                s.name,
                differ.join(", ")
            )));
        }
        if s.key != t.key {
            return Err(CopyError::Schema(format!(
                "table {}: primary key ({}) in the source, ({}) in the target",
                s.name,
                s.key.join(", "),
                t.key.join(", ")
            )));
        }
        if s.key.is_empty() {
            return Err(CopyError::Schema(format!("table {} has no primary key to order its rows by", s.name)));
        }
        let mut columns = Vec::new();
        for (name, declared) in &s.columns {
            let target_type = theirs[name.as_str()];
            let pg_type = match (source_is_pg, target_is_pg) {
                (true, true) if declared != target_type => {
                    return Err(CopyError::Schema(format!(
                        "column {}.{name} is {declared} in the source and {target_type} in the target",
                        s.name
                    )));
                }
                (_, true) => Some(target_type.to_owned()),
                (true, false) => Some(declared.clone()),
                (false, false) => None,
            };
            let kind = match &pg_type {
                Some(ty) => Kind::of_postgres(ty),
                None => Kind::of_sqlite(declared),
            };
            let Some(kind) = kind else {
                return Err(CopyError::Schema(format!(
                    "column {}.{name} has type {}, which copy does not know how to carry",
                    s.name,
                    pg_type.as_deref().unwrap_or(declared)
                )));
            };
            columns.push(Column { name: name.clone(), kind, pg_type });
        }
        let key = s.key.iter().filter_map(|k| s.columns.iter().position(|(n, _)| n == k)).collect();
        let numbered = t.sequence.as_ref().map(|(column, target)| Numbered {
            column: column.clone(),
            source: s.sequence.as_ref().filter(|(c, _)| c == column).map(|(_, seq)| seq.clone()),
            target: target.clone(),
        });
        tables.insert(s.name.clone(), (Table { name: s.name.clone(), columns, key, numbered }, &t.references));
    }
    // Referenced tables first; among tables free to go, by name.
    let mut ordered = Vec::new();
    let mut done = BTreeSet::new();
    while ordered.len() < tables.len() {
        let ready = tables.iter().find(|(name, (_, refs))| {
            !done.contains(*name) && refs.iter().all(|r| r == *name || done.contains(r) || !tables.contains_key(r))
        });
        let Some((name, (table, _))) = ready else {
            return Err(CopyError::Schema("the tables' foreign keys form a cycle".into()));
        };
        done.insert(name.clone());
        ordered.push(table.clone());
    }
    Ok(ordered)
}
