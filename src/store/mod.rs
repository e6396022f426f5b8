//! Storage through sqlx: SQLite (the embedded default) or PostgreSQL, picked by the database URL. The store writes
//! the changes it is given and decides nothing. Queries are written once in SQL both dialects accept (`$1`
//! placeholders, `ON CONFLICT`, `RETURNING`); [`with_pool!`] expands each one for both pools, and where the
//! dialects differ it is visible. Rooms: `write` (a batch of turns, table by table) behind `commit` (the queue
//! that groups turns into commits), `reads` (what answers read, batched), `pilots`, `schedule`, `portfolio`,
//! `settings`, `rows` (rows and their domain values), and the operations on a whole database: `backup` (SQLite)
//! and `copy` (from one database to another).

mod rows;

use std::str::FromStr;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::dialogue::Conversation;
use crate::domain::{UserId, WorkspaceId};
use rows::ConversationRow;

pub use rows::AuditEntry;
pub use write::{AskWrite, ConversationGuard, ConversationWrite, NewDraft, PilotRef, PilotUpdate, TurnWrite, Written};

#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    commits: commit::Committer,
    reads: reads::Reader,
}

/// The metric of how many users' turns one commit wrote (the commit queue records it).
pub const COMMIT_BATCH_SIZE: &str = "lastmile_commit_batch_size";

/// A connection pool's use at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUse {
    pub open: u32,
    pub idle: u32,
}

/// The database a store writes to.
#[derive(Clone, Debug)]
pub enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same code against whichever pool the store (or pool) has.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store.pool() {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

impl Pool {
    pub fn pool(&self) -> &Pool {
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another pilot of the workspace has this name (case ignored).
    #[error("a pilot with this name already exists")]
    NameTaken,
    /// The conversation's pilot is gone (deleted, or in another workspace).
    #[error("pilot not found")]
    PilotGone,
    /// Another request of the same user changed the conversation first; nothing was written.
    #[error("conversation changed concurrently")]
    Conflict,
    #[error("unsupported database URL (expected sqlite:// or postgres://)")]
    UnsupportedUrl,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database is behind this build's migrations (read-only commands do not migrate it).
    #[error(
        "the database is not migrated to this version of lastmile (at {applied:?}, needs {known:?}): run `lastmile migrate` with write access first"
    )]
    NotMigrated { applied: Option<i64>, known: Option<i64> },
    #[error("stored row is invalid: {0}")]
    Corrupt(String),
    /// The database refused one turn's writes (PostgreSQL's batch function reports it per turn); nothing was written.
    #[error("database refused the write: {0}")]
    Refused(String),
}

mod backup;
mod commit;
mod copy;
mod pilots;
mod portfolio;
mod reads;
mod schedule;
mod settings;
mod write;

pub use backup::{BackupError, backup_sqlite};
pub use copy::{CopyError, TableCopied};
pub use reads::AnswerContext;
pub use schedule::{Backlog, NaiveDateKey, Recorded};
use settings::parse_settings;

/// Starting a transaction that will write. SQLite takes its write lock up front (`BEGIN IMMEDIATE`): a read
/// that later upgrades to a write could otherwise fail with "database is locked" under concurrency.
trait BeginWrite {
    type Db: sqlx::Database;
    fn begin_write(&self) -> impl Future<Output = Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>> + Send;
}

impl BeginWrite for SqlitePool {
    type Db = sqlx::Sqlite;
    fn begin_write(&self) -> impl Future<Output = Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>> + Send {
        self.begin_with("BEGIN IMMEDIATE")
    }
}

impl BeginWrite for PgPool {
    type Db = sqlx::Postgres;
    fn begin_write(&self) -> impl Future<Output = Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>> + Send {
        self.begin()
    }
}

/// The SQLite database a URL names (`sqlite://...`, or a bare path); any other scheme is not one this store knows.
fn sqlite_options(url: &str) -> Result<SqliteConnectOptions, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(SqliteConnectOptions::from_str(url)?)
    } else if url.contains("://") {
        Err(StoreError::UnsupportedUrl)
    } else {
        Ok(SqliteConnectOptions::new().filename(url))
    }
}

impl Store {
    /// Opens the database named by `url`, creating an SQLite file when missing. A bare path means SQLite.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)?;
            // One direct attempt first: an unreachable server fails at once with its real cause.
            sqlx::PgConnection::connect_with(&options).await?.close().await?;
            let pool = PgPoolOptions::new()
                .max_connections(10)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await?;
            return Ok(Store::new(Pool::Postgres(pool)));
        }
        let options = sqlite_options(url)?;
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        // A connection to a local file has nothing to check before use: no ping (a round trip to its thread).
        let pool_options = SqlitePoolOptions::new().max_connections(4).test_before_acquire(false);
        // Two processes creating a new file at once: switching it to WAL can find it locked, past the busy timeout.
        let mut tried = 0;
        let pool = loop {
            match pool_options.clone().connect_with(options.clone()).await {
                Ok(pool) => break pool,
                Err(sqlx::Error::Database(e)) if tried < 4 && e.message().contains("locked") => {
                    tried += 1;
                    tokio::time::sleep(Duration::from_millis(50 * tried)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        Ok(Store::new(Pool::Sqlite(pool)))
    }

    /// Opens a database only to read it (`export`): nothing is created, migrated or written, so a database file
    /// the process may not write (or a `?mode=ro` URL) can be read. It must be migrated already.
    pub async fn connect_read_only(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let store = Store::connect(url).await?;
            store.check_migrated().await?;
            return Ok(store);
        }
        let options = sqlite_options(url)?;
        let options = options.read_only(true).create_if_missing(false).busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(2).test_before_acquire(false).connect_with(options).await?;
        let store = Store::new(Pool::Sqlite(pool));
        store.check_migrated().await?;
        Ok(store)
    }

    /// Whether every migration this build knows is applied (a database read without migrating it must be current).
    async fn check_migrated(&self) -> Result<(), StoreError> {
        let known = self.known_migration();
        let applied = self.applied_migration().await;
        if applied < known {
            return Err(StoreError::NotMigrated { applied, known });
        }
        Ok(())
    }

    /// The latest migration this build has for the database's dialect.
    fn known_migration(&self) -> Option<i64> {
        match &self.pool {
            Pool::Sqlite(_) => sqlx::migrate!("migrations/sqlite").iter().map(|m| m.version).max(),
            Pool::Postgres(_) => sqlx::migrate!("migrations/postgres").iter().map(|m| m.version).max(),
        }
    }

    /// The latest migration applied to the database (None: none, or it cannot be read).
    async fn applied_migration(&self) -> Option<i64> {
        let sql = "SELECT MAX(version) FROM _sqlx_migrations WHERE success";
        with_pool!(self, pool => sqlx::query_scalar(sql).fetch_one(pool).await.ok().flatten())
    }

    fn new(pool: Pool) -> Self {
        let commits = commit::Committer::start(&pool);
        let reads = reads::Reader::start(&pool);
        Store { pool, commits, reads }
    }

    /// The database underneath (for benchmarks and tests that measure it directly).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Turns written and transactions committed since the store was opened: more turns than commits means
    /// users' answers shared commits.
    pub fn commit_stats(&self) -> (u64, u64) {
        self.commits.stats()
    }

    fn commits(&self) -> &commit::Committer {
        &self.commits
    }

    /// Applies the dialect's migrations that are not applied yet.
    /// Two processes starting together on a new database may both find a migration missing: the one that applies
    /// it second fails (SQLite has no lock for migrations), and on the next try finds it applied. A migration that
    /// fails on its own fails every try and is reported.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        const TRIES: u64 = 5;
        let mut tried = 0;
        loop {
            let outcome = match &self.pool {
                Pool::Sqlite(pool) => sqlx::migrate!("migrations/sqlite").run(pool).await,
                Pool::Postgres(pool) => sqlx::migrate!("migrations/postgres").run(pool).await,
            };
            match outcome {
                Ok(()) => return Ok(()),
                Err(e) if tried + 1 < TRIES => {
                    tried += 1;
                    tracing::info!(error = %e, "migrating failed; trying again (another process may be migrating)");
                    tokio::time::sleep(Duration::from_millis(50 * tried)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub fn dialect(&self) -> &'static str {
        match &self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }

    /// Whether the database answers a trivial query (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()).map_err(StoreError::from))
    }

    /// The pool's connections: how many are open, and how many of those are idle.
    pub fn pool_use(&self) -> PoolUse {
        with_pool!(self, pool => PoolUse { open: pool.size(), idle: pool.num_idle() as u32 })
    }

    pub async fn conversation(&self, ws: &WorkspaceId, user: &UserId) -> Result<Option<Conversation>, StoreError> {
        let sql = "SELECT flow, at, pilot_id, channel, return_to_confirm, scratch FROM conversations \
                   WHERE workspace = $1 AND user_id = $2";
        let row: Option<ConversationRow> = with_pool!(self, pool => {
            sqlx::query_as(sql).bind(ws.as_str()).bind(user.as_str()).fetch_optional(pool).await?
        });
        row.map(ConversationRow::into_domain).transpose()
    }

    /// What answering in a conversation needs, read in one query: the workspace's settings, the user's
    /// conversation, and the pilot it is about (None when it has none or it is gone). Requests arriving together
    /// share one query ([`reads`]).
    pub async fn answer_context(&self, ws: &WorkspaceId, user: &UserId) -> Result<AnswerContext, StoreError> {
        self.reads.answer_context(ws, user).await
    }

    /// Writes one turn's changes in one transaction, if what it was computed from still holds: its conversation
    /// ([`ConversationGuard`]) and the version of each pilot it changes. Otherwise nothing is written and
    /// [`StoreError::Conflict`] says to compute the turn again on the state as it is now. Turns arriving together
    /// share one commit ([`commit`]); each is answered once that commit is durable.
    pub async fn write(&self, turn: TurnWrite) -> Result<Written, StoreError> {
        self.commits().write(turn).await
    }
}
