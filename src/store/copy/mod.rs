//! `lastmile copy`: every row of one database written into another (SQLite to PostgreSQL, either way, or the same
//! dialect), so that the bot continues on the target where it stopped: pilots, conversations at their question,
//! asks, every delivery record and each pilot's schedule and claim as they are, audit and evidence (voided too),
//! settings; ids as they are, and each id sequence where the source's was.
//!
//! The source is read in one snapshot. Each table is copied in its own transaction, in primary-key order pages of
//! rows sent as one multi-row statement, then read back from the target and checked (row count and a checksum of
//! the canonical values, see [`cells`]) before it commits. So an interrupted copy leaves whole tables behind and
//! empty ones: run again, it checks the tables that are there against the source and copies the empty ones. A
//! table with rows that are not exactly the source's is refused before anything is written.

mod cells;
mod schema;

use cells::{Cell, Checksum, bind_postgres, bind_sqlite, read_postgres, read_sqlite};
use schema::{Sequence, Table};
use sqlx::{Postgres, Sqlite};

use super::{Pool, Store, StoreError};

/// What the copy found or did for one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCopied {
    pub table: String,
    pub rows: u64,
    pub checksum: String,
    /// The id the target gives its next row, for a table numbered by a sequence.
    pub next_id: Option<i64>,
    /// False: the table was in the target already, equal to the source's (a copy interrupted after it).
    pub copied: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(
        "the source database is at migration {applied:?} and this build at {known:?}: copy with the lastmile that migrated it, or migrate it with this one first"
    )]
    SourceVersion { applied: Option<i64>, known: Option<i64> },
    #[error(
        "the target database has rows (table {table}) and is at migration {applied:?}, not this build's {known:?}: copy needs an empty database; nothing was changed"
    )]
    TargetInUse { table: String, applied: Option<i64>, known: Option<i64> },
    #[error(
        "the target database already has {target_rows} rows in table {table} that are not the source's ({source_rows} rows there): copy fills an empty database, or finishes an interrupted copy of the same source while the source is unchanged; nothing was written. Copy into an empty database"
    )]
    TargetDiffers { table: String, target_rows: u64, source_rows: u64 },
    #[error("the two databases' tables differ: {0}")]
    Schema(String),
    #[error("table {table}, column {column}, row with key ({key}): {problem}")]
    BadValue { table: String, column: String, key: String, problem: String },
    #[error(
        "table {table}: the target read back {target_rows} rows (checksum {target_sum}) where the source has {source_rows} (checksum {source_sum}); nothing of this table was kept"
    )]
    Mismatch { table: String, source_rows: u64, source_sum: String, target_rows: u64, target_sum: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for CopyError {
    fn from(e: sqlx::Error) -> Self {
        CopyError::Store(e.into())
    }
}

/// Rows per statement: within both dialects' limits on parameters (SQLite 32766, PostgreSQL 65535).
fn page_size(t: &Table) -> usize {
    (30_000 / t.columns.len().max(1)).clamp(1, 500)
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Store {
    /// Copies every row of this database into `target`, migrated first; see the module's documentation. Returns
    /// what each table holds, checked.
    pub async fn copy_to(&self, target: &Store) -> Result<Vec<TableCopied>, CopyError> {
        let known = self.known_migration();
        let applied = self.applied_migration().await;
        if applied != known {
            return Err(CopyError::SourceVersion { applied, known });
        }
        let described = schema::describe(self.pool()).await?;
        // Migrating a database that holds rows would change it before it is refused.
        let target_applied = target.applied_migration().await;
        if target_applied != target.known_migration() {
            for t in schema::describe(target.pool()).await? {
                if described.iter().any(|d| d.name == t.name) && count(target.pool(), &t.name).await? > 0 {
                    return Err(CopyError::TargetInUse {
                        table: t.name,
                        applied: target_applied,
                        known: target.known_migration(),
                    });
                }
            }
        }
        target.migrate().await?;
        let tables = schema::plan(
            &described,
            matches!(self.pool(), Pool::Postgres(_)),
            &schema::describe(target.pool()).await?,
            matches!(target.pool(), Pool::Postgres(_)),
        )?;

        // One snapshot of the source for every table: a bot still writing to it writes after it, not into it.
        let mut source = Tx::snapshot(self.pool()).await?;
        // First the check, so that a refusal writes nothing: a table with rows must be the source's exactly.
        let mut present = Vec::new();
        for t in &tables {
            if count(target.pool(), &t.name).await? == 0 {
                present.push(None);
                continue;
            }
            let theirs = Tx::snapshot(target.pool()).await?.checksum(t).await?;
            let ours = source.checksum(t).await?;
            if theirs != ours {
                return Err(CopyError::TargetDiffers {
                    table: t.name.clone(),
                    target_rows: theirs.rows,
                    source_rows: ours.rows,
                });
            }
            present.push(Some(ours));
        }
        let mut report = Vec::new();
        for (t, present) in tables.iter().zip(present) {
            let (sum, copied) = match present {
                Some(sum) => (sum, false),
                None => (copy_table(&mut source, target.pool(), t).await?, true),
            };
            let next_id = match &t.numbered {
                Some(n) => Some(carry_sequence(&mut source, target.pool(), t, n).await?),
                None => None,
            };
            report.push(TableCopied { table: t.name.clone(), rows: sum.rows, checksum: sum.hex(), next_id, copied });
        }
        Ok(report)
    }
}

/// Copies one table in one transaction of the target, checked before it commits.
async fn copy_table(source: &mut Tx, target: &Pool, t: &Table) -> Result<Checksum, CopyError> {
    let mut written = Tx::write(target).await?;
    let mut sum = Checksum::default();
    let mut after: Option<Vec<Cell>> = None;
    loop {
        let rows = source.page(t, after.as_deref()).await?;
        for row in &rows {
            sum.add_row(row);
        }
        if !rows.is_empty() {
            written.insert(t, &rows).await?;
        }
        match rows.last() {
            Some(last) if rows.len() == page_size(t) => after = Some(t.key.iter().map(|&k| last[k].clone()).collect()),
            _ => break,
        }
    }
    let back = written.checksum(t).await?;
    if back != sum {
        // Dropping the transaction rolls it back.
        return Err(CopyError::Mismatch {
            table: t.name.clone(),
            source_rows: sum.rows,
            source_sum: sum.hex(),
            target_rows: back.rows,
            target_sum: back.hex(),
        });
    }
    written.commit().await?;
    Ok(sum)
}

/// Sets the target's sequence of a numbered table where the source's was (never below its largest id), so the
/// next row gets the id it would have had on the source. Returns that next id.
async fn carry_sequence(source: &mut Tx, target: &Pool, t: &Table, n: &schema::Numbered) -> Result<i64, CopyError> {
    let given = match (&n.source, &mut *source) {
        (Some(Sequence::SqliteAutoincrement), Tx::Sqlite(tx)) => {
            sqlx::query_scalar::<_, i64>("SELECT seq FROM sqlite_sequence WHERE name = $1")
                .bind(&t.name)
                .fetch_optional(&mut **tx)
                .await?
        }
        (Some(Sequence::Postgres(seq)), Tx::Postgres(tx)) => {
            let (last, called): (i64, bool) =
                sqlx::query_as(&format!("SELECT last_value, is_called FROM {seq}")).fetch_one(&mut **tx).await?;
            Some(if called { last } else { last - 1 })
        }
        _ => None,
    };
    let max_sql = format!("SELECT MAX({}) FROM {}", quote(&n.column), quote(&t.name));
    let last = match target {
        Pool::Sqlite(pool) => {
            let max: Option<i64> = sqlx::query_scalar(&max_sql).fetch_one(pool).await?;
            let last = given.unwrap_or(0).max(max.unwrap_or(0));
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            let seq: Option<i64> = sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = $1")
                .bind(&t.name)
                .fetch_optional(&mut *tx)
                .await?;
            match seq {
                Some(s) if s >= last => {}
                Some(_) => {
                    sqlx::query("UPDATE sqlite_sequence SET seq = $2 WHERE name = $1")
                        .bind(&t.name)
                        .bind(last)
                        .execute(&mut *tx)
                        .await?;
                }
                None if last > 0 => {
                    sqlx::query("INSERT INTO sqlite_sequence (name, seq) VALUES ($1, $2)")
                        .bind(&t.name)
                        .bind(last)
                        .execute(&mut *tx)
                        .await?;
                }
                None => {}
            }
            tx.commit().await?;
            last.max(seq.unwrap_or(0))
        }
        Pool::Postgres(pool) => {
            let Sequence::Postgres(seq) = &n.target else {
                return Err(CopyError::Schema(format!("table {}: no sequence in the target", t.name)));
            };
            let max: Option<i64> = sqlx::query_scalar(&max_sql).fetch_one(pool).await?;
            let last = given.unwrap_or(0).max(max.unwrap_or(0));
            // A sequence starts at 1: "nothing given yet" is 1, not yet called.
            sqlx::query("SELECT setval($1::regclass, $2, $3)")
                .bind(seq)
                .bind(last.max(1))
                .bind(last >= 1)
                .execute(pool)
                .await?;
            last
        }
    };
    Ok(last + 1)
}

async fn count(pool: &Pool, table: &str) -> Result<i64, sqlx::Error> {
    let sql = format!("SELECT COUNT(*) FROM {}", quote(table));
    with_pool!(pool, pool => sqlx::query_scalar(&sql).fetch_one(pool).await)
}

/// A transaction on either dialect: a snapshot to read, or the writing of one table.
enum Tx {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

impl Tx {
    /// Every table read as of one moment (SQLite: WAL's snapshot, taken at the first read).
    async fn snapshot(pool: &Pool) -> Result<Tx, sqlx::Error> {
        Ok(match pool {
            Pool::Sqlite(p) => Tx::Sqlite(p.begin().await?),
            Pool::Postgres(p) => Tx::Postgres(p.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY").await?),
        })
    }

    async fn write(pool: &Pool) -> Result<Tx, sqlx::Error> {
        Ok(match pool {
            Pool::Sqlite(p) => Tx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
            Pool::Postgres(p) => Tx::Postgres(p.begin().await?),
        })
    }

    async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await,
            Tx::Postgres(tx) => tx.commit().await,
        }
    }

    /// The table's rows after the key `after` (from the first without), in primary-key order, one page.
    /// PostgreSQL orders text keys by bytes (`COLLATE "C"`), as SQLite does, so both read rows in one order.
    async fn page(&mut self, t: &Table, after: Option<&[Cell]>) -> Result<Vec<Vec<Cell>>, CopyError> {
        let pg = matches!(self, Tx::Postgres(_));
        let key_expr: Vec<String> = t
            .key
            .iter()
            .map(|&k| {
                let c = &t.columns[k];
                match (pg, c.kind) {
                    (true, cells::Kind::Text) => format!("{} COLLATE \"C\"", quote(&c.name)),
                    _ => quote(&c.name),
                }
            })
            .collect();
        let columns: Vec<String> = t.columns.iter().map(|c| quote(&c.name)).collect();
        let mut sql = format!("SELECT {} FROM {}", columns.join(", "), quote(&t.name));
        if after.is_some() {
            let params: Vec<String> =
                t.key.iter().enumerate().map(|(i, &k)| placeholder(pg, i + 1, &t.columns[k])).collect();
            sql.push_str(&format!(" WHERE ({}) > ({})", key_expr.join(", "), params.join(", ")));
        }
        sql.push_str(&format!(" ORDER BY {} LIMIT {}", key_expr.join(", "), page_size(t)));
        let bad = |row: &[Cell], column: &str, problem: String| CopyError::BadValue {
            table: t.name.clone(),
            column: column.to_owned(),
            key: t
                .key
                .iter()
                .filter_map(|&k| row.get(k)?.canonical().map(|c| c.into_owned()))
                .collect::<Vec<_>>()
                .join(", "),
            problem,
        };
        let mut out = Vec::new();
        match self {
            Tx::Sqlite(tx) => {
                let mut q = sqlx::query(&sql);
                for cell in after.unwrap_or_default() {
                    q = bind_sqlite(q, cell);
                }
                for row in q.fetch_all(&mut **tx).await? {
                    let mut cells = Vec::with_capacity(t.columns.len());
                    for (i, c) in t.columns.iter().enumerate() {
                        let cell = read_sqlite(&row, i, c.kind).map_err(|p| bad(&cells, &c.name, p))?;
                        cells.push(cell);
                    }
                    out.push(cells);
                }
            }
            Tx::Postgres(tx) => {
                let mut q = sqlx::query(&sql);
                for cell in after.unwrap_or_default() {
                    q = bind_postgres(q, cell);
                }
                for row in q.fetch_all(&mut **tx).await? {
                    let mut cells = Vec::with_capacity(t.columns.len());
                    for (i, c) in t.columns.iter().enumerate() {
                        let ty = c.pg_type.as_deref().unwrap_or_default();
                        let cell = read_postgres(&row, i, ty).map_err(|p| bad(&cells, &c.name, p))?;
                        cells.push(cell);
                    }
                    out.push(cells);
                }
            }
        }
        Ok(out)
    }

    /// Inserts rows in one statement (at most a page of them).
    async fn insert(&mut self, t: &Table, rows: &[Vec<Cell>]) -> Result<(), sqlx::Error> {
        let pg = matches!(self, Tx::Postgres(_));
        let columns: Vec<String> = t.columns.iter().map(|c| quote(&c.name)).collect();
        let n = t.columns.len();
        let values: Vec<String> = (0..rows.len())
            .map(|r| {
                let row: Vec<String> =
                    t.columns.iter().enumerate().map(|(i, c)| placeholder(pg, r * n + i + 1, c)).collect();
                format!("({})", row.join(", "))
            })
            .collect();
        let sql = format!("INSERT INTO {} ({}) VALUES {}", quote(&t.name), columns.join(", "), values.join(", "));
        match self {
            Tx::Sqlite(tx) => {
                let mut q = sqlx::query(&sql).persistent(false);
                for cell in rows.iter().flatten() {
                    q = bind_sqlite(q, cell);
                }
                q.execute(&mut **tx).await?;
            }
            Tx::Postgres(tx) => {
                let mut q = sqlx::query(&sql).persistent(false);
                for cell in rows.iter().flatten() {
                    q = bind_postgres(q, cell);
                }
                q.execute(&mut **tx).await?;
            }
        }
        Ok(())
    }

    /// The table's row count and checksum, read in primary-key order.
    async fn checksum(&mut self, t: &Table) -> Result<Checksum, CopyError> {
        let mut sum = Checksum::default();
        let mut after: Option<Vec<Cell>> = None;
        loop {
            let rows = self.page(t, after.as_deref()).await?;
            for row in &rows {
                sum.add_row(row);
            }
            match rows.last() {
                Some(last) if rows.len() == page_size(t) => {
                    after = Some(t.key.iter().map(|&k| last[k].clone()).collect())
                }
                _ => return Ok(sum),
            }
        }
    }
}

/// Parameter `i` for column `c`: PostgreSQL casts it to the column's type (a NULL, or an int8 for an integer).
fn placeholder(pg: bool, i: usize, c: &schema::Column) -> String {
    match (&c.pg_type, pg) {
        (Some(ty), true) => format!("${i}::{ty}"),
        _ => format!("${i}"),
    }
}
