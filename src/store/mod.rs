//! Storage through sqlx: SQLite (the embedded default) or PostgreSQL, picked by the database URL.
//! Queries are written once in SQL both dialects accept (`$1` placeholders, `ON CONFLICT`, `RETURNING`);
//! [`with_pool!`] expands each one for both pools. Where the dialects differ it is visible here.

mod rows;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::dialogue::{Ask, Conversation};
use crate::domain::pilot::PilotQuery;
use crate::domain::portfolio::{Bet, Debt, Funnel, Overdue, PnlMovement, Portfolio, Risk};
use crate::domain::rules::NameHolder;
use crate::domain::{
    Due, Pilot, PilotId, ScheduleState, Stage, UserId, WorkspaceId, WorkspaceSettings, pilot::name_key,
};
use rows::{AskRow, ConversationRow, PilotRow};

pub use rows::AuditEntry;
pub use write::{AskWrite, ConversationGuard, ConversationWrite, NewDraft, PilotRef, PilotUpdate, TurnWrite, Written};

#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    commits: commit::Committer,
    reads: reads::Reader,
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
    #[error("stored row is invalid: {0}")]
    Corrupt(String),
    /// The database refused one turn's writes (PostgreSQL's batch function reports it per turn); nothing was written.
    #[error("database refused the write: {0}")]
    Refused(String),
}

/// A workspace's settings as stored (JSON), or the defaults when it has none.
fn parse_settings(ws: &WorkspaceId, json: Option<String>) -> Result<WorkspaceSettings, StoreError> {
    match json {
        Some(j) => {
            serde_json::from_str(&j).map_err(|e| StoreError::Corrupt(format!("settings of {}: {e}", ws.as_str())))
        }
        None => Ok(WorkspaceSettings::default()),
    }
}

mod commit;
mod reads;
mod write;

pub use reads::AnswerContext;

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

/// Pilots whose next message is due at `$3` and not claimed by a live lease (`$5`: one workspace, or all).
const CLAIM_DUE: &str =
    "next_action_at <= $3 AND (claimed_until IS NULL OR claimed_until < $3) AND ($5 IS NULL OR workspace = $5)";

/// A measured P&L value moved its line from the baseline towards the target (as `lifecycle::pnl_moved`).
const PNL_MOVED: &str = "pnl_realised IS NOT NULL AND ((pnl_target > pnl_baseline AND pnl_realised > pnl_baseline) \
     OR (pnl_target < pnl_baseline AND pnl_realised < pnl_baseline))";

/// What became of a message the scheduler sent, when it came to record it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Sent,
    /// Its idempotency key was recorded already: it had been sent before.
    AlreadySent,
    /// The sender's claim on the pilot ran out before it recorded: nothing was written.
    ClaimLost,
}

/// A review cycle's date, as the deliveries table keys it.
pub type NaiveDateKey = chrono::NaiveDate;

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
        let options = if url.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(url)?
        } else if url.contains("://") {
            return Err(StoreError::UnsupportedUrl);
        } else {
            SqliteConnectOptions::new().filename(url)
        };
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        // A connection to a local file has nothing to check before use: no ping (a round trip to its thread).
        let pool = SqlitePoolOptions::new().max_connections(4).test_before_acquire(false).connect_with(options).await?;
        Ok(Store::new(Pool::Sqlite(pool)))
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
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Sqlite(pool) => sqlx::migrate!("migrations/sqlite").run(pool).await?,
            Pool::Postgres(pool) => sqlx::migrate!("migrations/postgres").run(pool).await?,
        }
        Ok(())
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

    pub async fn pilot(&self, ws: &WorkspaceId, id: PilotId) -> Result<Option<Pilot>, StoreError> {
        let sql = format!("SELECT {} FROM pilots WHERE workspace = $1 AND id = $2", rows::PILOT_COLUMNS);
        let row: Option<PilotRow> = with_pool!(self, pool => {
            sqlx::query_as(&sql).bind(ws.as_str()).bind(id.0).fetch_optional(pool).await?
        });
        row.map(PilotRow::into_domain).transpose()
    }

    /// The pilot that holds the name `key` in a workspace, if one does, with what deciding whether it may be taken
    /// needs: a draft's last answer is its pilot's or its conversation's last change, whichever is later.
    pub async fn name_holder(&self, ws: &WorkspaceId, key: &str) -> Result<Option<NameHolder>, StoreError> {
        let sql = "SELECT p.id, p.name, p.stage, p.registered_by, p.version, p.updated_at, \
                   (SELECT MAX(c.updated_at) FROM conversations c WHERE c.pilot_id = p.id) \
                   FROM pilots p WHERE p.workspace = $1 AND p.name_key = $2";
        type Row = (i64, String, String, String, i64, DateTime<Utc>, Option<DateTime<Utc>>);
        let row: Option<Row> = with_pool!(self, pool => {
            sqlx::query_as(sql).bind(ws.as_str()).bind(key).fetch_optional(pool).await?
        });
        let Some((id, name, stage, by, version, pilot, conversation)) = row else { return Ok(None) };
        let stage = Stage::parse(&stage).ok_or_else(|| StoreError::Corrupt(format!("pilot {id}: stage {stage}")))?;
        Ok(Some(NameHolder {
            id: PilotId(id),
            name,
            stage,
            registered_by: UserId::new(by),
            version,
            last_answer: conversation.map_or(pilot, |c| c.max(pilot)),
        }))
    }

    /// Finds a pilot by id or name (case ignored).
    pub async fn find_pilot(&self, ws: &WorkspaceId, query: &PilotQuery<'_>) -> Result<Option<Pilot>, StoreError> {
        match query {
            PilotQuery::Id(id) => self.pilot(ws, PilotId(*id)).await,
            PilotQuery::Name(name) => {
                let sql = format!("SELECT {} FROM pilots WHERE workspace = $1 AND name_key = $2", rows::PILOT_COLUMNS);
                let row: Option<PilotRow> = with_pool!(self, pool => {
                    sqlx::query_as(&sql).bind(ws.as_str()).bind(name_key(name)).fetch_optional(pool).await?
                });
                row.map(PilotRow::into_domain).transpose()
            }
        }
    }

    /// Every pilot name of the workspace (for suggestions and autocomplete).
    pub async fn pilot_names(&self, ws: &WorkspaceId) -> Result<Vec<String>, StoreError> {
        let sql = "SELECT name FROM pilots WHERE workspace = $1 ORDER BY name_key";
        Ok(with_pool!(self, pool => {
            sqlx::query_scalar(sql).bind(ws.as_str()).fetch_all(pool).await?
        }))
    }

    /// Pilots of a workspace, oldest first; `involving` keeps those the user registered, owns or sponsors.
    /// Returns at most `limit` pilots and the total count.
    pub async fn list_pilots(
        &self,
        ws: &WorkspaceId,
        involving: Option<&UserId>,
        limit: i64,
    ) -> Result<(Vec<Pilot>, i64), StoreError> {
        let filter = "workspace = $1 AND ($2 IS NULL OR registered_by = $2 OR owner = $2 OR sponsor = $2)";
        let sql = format!("SELECT {} FROM pilots WHERE {filter} ORDER BY id LIMIT $3", rows::PILOT_COLUMNS);
        let count_sql = format!("SELECT COUNT(*) FROM pilots WHERE {filter}");
        let who = involving.map(UserId::as_str);
        let (rows, total): (Vec<PilotRow>, i64) = with_pool!(self, pool => {
            let rows = sqlx::query_as(&sql).bind(ws.as_str()).bind(who).bind(limit).fetch_all(pool).await?;
            let total = sqlx::query_scalar(&count_sql).bind(ws.as_str()).bind(who).fetch_one(pool).await?;
            (rows, total)
        });
        Ok((rows.into_iter().map(PilotRow::into_domain).collect::<Result<_, _>>()?, total))
    }

    /// Names of a workspace's pilots (drafts excepted) that contain `query`, ignoring case: those that start with
    /// it first, then in name order (for autocompletion).
    pub async fn suggest_pilots(&self, ws: &WorkspaceId, query: &str, limit: i64) -> Result<Vec<String>, StoreError> {
        let key = name_key(query);
        let escaped = key.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        let sql = "SELECT name FROM pilots WHERE workspace = $1 AND stage <> 'draft' AND name_key LIKE $2 ESCAPE '\\' \
                   ORDER BY CASE WHEN name_key LIKE $3 ESCAPE '\\' THEN 0 ELSE 1 END, name_key LIMIT $4";
        let names = with_pool!(self, pool => {
            sqlx::query_scalar(sql)
                .bind(ws.as_str())
                .bind(format!("%{escaped}%"))
                .bind(format!("{escaped}%"))
                .bind(limit)
                .fetch_all(pool)
                .await?
        });
        Ok(names)
    }

    /// Every pilot, optionally of one workspace, in id order (for export).
    pub async fn all_pilots(&self, ws: Option<&WorkspaceId>) -> Result<Vec<Pilot>, StoreError> {
        let sql =
            format!("SELECT {} FROM pilots WHERE ($1 IS NULL OR workspace = $1) ORDER BY id", rows::PILOT_COLUMNS);
        let rows: Vec<PilotRow> = with_pool!(self, pool => {
            sqlx::query_as(&sql).bind(ws.map(WorkspaceId::as_str)).fetch_all(pool).await?
        });
        rows.into_iter().map(PilotRow::into_domain).collect()
    }

    /// Sets when a pilot's next message is due (None: nothing is). With `claimed_by`, only while that worker holds
    /// the pilot's claim, which it then gives up.
    pub async fn set_next_action(
        &self,
        ws: &WorkspaceId,
        id: PilotId,
        at: Option<DateTime<Utc>>,
        claimed_by: Option<&str>,
    ) -> Result<(), StoreError> {
        let sql = match claimed_by {
            Some(_) => {
                "UPDATE pilots SET next_action_at = $3, claimed_until = NULL, claimed_by = NULL \
                 WHERE workspace = $1 AND id = $2 AND claimed_by = $4"
            }
            None => "UPDATE pilots SET next_action_at = $3 WHERE workspace = $1 AND id = $2",
        };
        with_pool!(self, pool => {
            sqlx::query(sql).bind(ws.as_str()).bind(id.0).bind(at).bind(claimed_by).execute(pool).await?;
        });
        Ok(())
    }

    /// Renews `worker`'s claim on a pilot until `until`, if it still holds it at `now` (its lease has not run out);
    /// whether it does.
    pub async fn renew_claim(
        &self,
        ws: &WorkspaceId,
        id: PilotId,
        worker: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE pilots SET claimed_until = $5 WHERE workspace = $1 AND id = $2 AND claimed_by = $3 \
                   AND claimed_until >= $4";
        Ok(with_pool!(self, pool => {
            sqlx::query(sql).bind(ws.as_str()).bind(id.0).bind(worker).bind(now).bind(until).execute(pool).await?
                .rows_affected() == 1
        }))
    }

    /// Makes every scheduled pilot of a workspace due for another look (its settings changed); the runner
    /// then computes each one's real next time.
    pub async fn reconsider_schedule(&self, ws: &WorkspaceId, now: DateTime<Utc>) -> Result<(), StoreError> {
        let sql = "UPDATE pilots SET next_action_at = $2 WHERE workspace = $1 AND stage = 'scoped' AND next_action_at IS NOT NULL";
        with_pool!(self, pool => {
            sqlx::query(sql).bind(ws.as_str()).bind(now).execute(pool).await?;
        });
        Ok(())
    }

    /// Every workspace with pilots (for digests).
    pub async fn workspaces(&self) -> Result<Vec<WorkspaceId>, StoreError> {
        let sql = "SELECT DISTINCT workspace FROM pilots ORDER BY workspace";
        let names: Vec<String> = with_pool!(self, pool => {
            sqlx::query_scalar(sql).fetch_all(pool).await?
        });
        Ok(names.into_iter().map(WorkspaceId).collect())
    }

    /// The first pilot's registration and home channel in a workspace (where a digest goes without a review channel).
    pub async fn workspace_start(&self, ws: &WorkspaceId) -> Result<Option<(DateTime<Utc>, String)>, StoreError> {
        let sql = "SELECT registered_at, home_channel FROM pilots WHERE workspace = $1 ORDER BY id LIMIT 1";
        Ok(with_pool!(self, pool => {
            sqlx::query_as(sql).bind(ws.as_str()).fetch_optional(pool).await?
        }))
    }

    /// Records a digest period for a workspace; false when it was recorded already (by this or another process).
    pub async fn claim_digest(
        &self,
        ws: &WorkspaceId,
        period: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let sql = "INSERT INTO digests (workspace, period, sent_at) VALUES ($1, $2, $3) ON CONFLICT (workspace, period) DO NOTHING";
        let period = period.to_rfc3339();
        Ok(with_pool!(self, pool => {
            sqlx::query(sql).bind(ws.as_str()).bind(period).bind(now).execute(pool).await?.rows_affected() == 1
        }))
    }

    /// The latest digest period recorded for a workspace.
    pub async fn last_digest(&self, ws: &WorkspaceId) -> Result<Option<DateTime<Utc>>, StoreError> {
        let sql = "SELECT MAX(period) FROM digests WHERE workspace = $1";
        let period: Option<String> = with_pool!(self, pool => {
            sqlx::query_scalar::<_, Option<String>>(sql).bind(ws.as_str()).fetch_one(pool).await?
        });
        Ok(period.and_then(|p| DateTime::parse_from_rfc3339(&p).ok()).map(|d| d.with_timezone(&Utc)))
    }

    /// A person's own time zone in a workspace, if they set one.
    pub async fn user_timezone(&self, ws: &WorkspaceId, user: &UserId) -> Result<Option<String>, StoreError> {
        let sql = "SELECT timezone FROM user_settings WHERE workspace = $1 AND user_id = $2";
        Ok(with_pool!(self, pool => {
            sqlx::query_scalar(sql).bind(ws.as_str()).bind(user.as_str()).fetch_optional(pool).await?
        }))
    }

    pub async fn set_user_timezone(
        &self,
        ws: &WorkspaceId,
        user: &UserId,
        tz: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let sql = "INSERT INTO user_settings (workspace, user_id, timezone, updated_at) VALUES ($1, $2, $3, $4) \
                   ON CONFLICT (workspace, user_id) DO UPDATE SET timezone = $3, updated_at = $4";
        with_pool!(self, pool => {
            sqlx::query(sql).bind(ws.as_str()).bind(user.as_str()).bind(tz).bind(now).execute(pool).await?;
        });
        Ok(())
    }

    /// Makes the scheduled pilots a person owns due for another look (their time zone changed).
    pub async fn reconsider_owner_schedule(
        &self,
        ws: &WorkspaceId,
        owner: &UserId,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let sql = "UPDATE pilots SET next_action_at = $3 WHERE workspace = $1 AND owner = $2 AND stage = 'scoped' \
                   AND next_action_at IS NOT NULL";
        with_pool!(self, pool => {
            sqlx::query(sql).bind(ws.as_str()).bind(owner.as_str()).bind(now).execute(pool).await?;
        });
        Ok(())
    }

    /// The portfolio of a workspace on `today`, aggregated in the database; lists hold at most `limit` items.
    pub async fn portfolio(
        &self,
        ws: &WorkspaceId,
        today: chrono::NaiveDate,
        limit: i64,
    ) -> Result<Portfolio, StoreError> {
        // One row per pilot with its evidence count and due date, then sums over them. The evidence count mirrors
        // Pilot::evidence_count (a P&L figure counts when it moved from the baseline towards the target); the
        // test `the_database_portfolio_equals_the_domain_one` holds the two together.
        let per_pilot = format!(
            "SELECT stage, owner_status, kill_category, extensions, next_review_date AS due, \
             (CASE WHEN evidence_workflow_live THEN 1 ELSE 0 END) + (CASE WHEN evidence_owner_running THEN 1 ELSE 0 END) + \
             (CASE WHEN {PNL_MOVED} THEN 1 ELSE 0 END) AS ev FROM pilots WHERE workspace = $1"
        );
        let risky = "stage = 'scoped' AND due < $2 AND ev < 3";
        // COUNT(*) FILTER evaluates each condition once per row, a third cheaper than SUM(CASE ...) here.
        let counts = format!(
            "SELECT COUNT(*), \
             COUNT(*) FILTER (WHERE stage <> 'draft'), \
             COUNT(*) FILTER (WHERE stage <> 'draft' AND owner_status = 'accepted'), \
             COUNT(*) FILTER (WHERE stage <> 'draft' AND ev >= 1), \
             COUNT(*) FILTER (WHERE stage <> 'draft' AND ev >= 2), \
             COUNT(*) FILTER (WHERE stage <> 'draft' AND ev >= 3), \
             COUNT(*) FILTER (WHERE stage = 'in_production'), \
             COUNT(*) FILTER (WHERE stage = 'killed'), \
             COUNT(*) FILTER (WHERE stage = 'killed' AND COALESCE(kill_category, '') <> 'stalled_in_handoff'), \
             COUNT(*) FILTER (WHERE stage = 'killed' AND kill_category = 'stalled_in_handoff'), \
             COUNT(*) FILTER (WHERE stage = 'scoped' AND due < $2), \
             COUNT(*) FILTER (WHERE {risky}), \
             COUNT(*) FILTER (WHERE stage = 'scoped' AND extensions > 0 AND NOT ({risky})) \
             FROM ({per_pilot}) p"
        );
        let pnl = "SELECT MIN(pnl_line), pnl_unit, COUNT(*), SUM(pnl_target - pnl_baseline), \
                   SUM(CASE WHEN pnl_realised IS NOT NULL THEN pnl_realised - pnl_baseline ELSE 0.0 END), \
                   SUM(CASE WHEN pnl_realised IS NOT NULL THEN 1 ELSE 0 END) \
                   FROM pilots WHERE workspace = $1 AND stage IN ('scoped', 'in_production') AND pnl_line IS NOT NULL \
                   GROUP BY LOWER(TRIM(pnl_line)), pnl_unit";
        // The lists read the review date in force directly, so the (workspace, stage, next_review_date) index
        // yields them in order and LIMIT stops early.
        let evidence = format!(
            "(CASE WHEN evidence_workflow_live THEN 1 ELSE 0 END) + (CASE WHEN evidence_owner_running THEN 1 ELSE 0 END) \
             + (CASE WHEN {PNL_MOVED} THEN 1 ELSE 0 END)"
        );
        let list = |condition: &str| {
            format!(
                "SELECT {} FROM pilots WHERE workspace = $1 AND stage = 'scoped' AND {condition} \
                 ORDER BY next_review_date, name LIMIT $3",
                rows::PILOT_COLUMNS
            )
        };
        let overdue_sql = list("next_review_date < $2");
        let risks_sql = list(&format!("next_review_date < $2 AND {evidence} < 3"));
        let bets_sql = list(&format!("extensions > 0 AND NOT (next_review_date < $2 AND {evidence} < 3)"));
        // Pilots in production on credit: the evidence an override owes, soonest due first.
        let debts_sql = format!(
            "SELECT {} FROM pilots WHERE workspace = $1 AND stage = 'in_production' AND evidence_due IS NOT NULL \
             ORDER BY evidence_due, name LIMIT $2",
            rows::PILOT_COLUMNS
        );
        let debts_count = "SELECT COUNT(*) FROM pilots WHERE workspace = $1 AND stage = 'in_production' \
                           AND evidence_due IS NOT NULL";
        type Counts = (i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64);
        type PnlRow = (Option<String>, Option<String>, i64, Option<f64>, Option<f64>, i64);
        // The two scans and the lists are independent reads: run them at once, each on its own connection.
        type Lists = (Vec<PilotRow>, Vec<PilotRow>, Vec<PilotRow>, Vec<PilotRow>, i64);
        let (c, pnl_rows, (overdue, risks, bets, debts, debts_total)): (Counts, Vec<PnlRow>, Lists) = with_pool!(self, pool => {
            tokio::try_join!(
                sqlx::query_as(&counts).bind(ws.as_str()).bind(today).fetch_one(pool),
                sqlx::query_as(pnl).bind(ws.as_str()).fetch_all(pool),
                async {
                    tokio::try_join!(
                        sqlx::query_as(&overdue_sql).bind(ws.as_str()).bind(today).bind(limit).fetch_all(pool),
                        sqlx::query_as(&risks_sql).bind(ws.as_str()).bind(today).bind(limit).fetch_all(pool),
                        sqlx::query_as(&bets_sql).bind(ws.as_str()).bind(today).bind(limit).fetch_all(pool),
                        sqlx::query_as(&debts_sql).bind(ws.as_str()).bind(limit).fetch_all(pool),
                        sqlx::query_scalar(debts_count).bind(ws.as_str()).fetch_one(pool),
                    )
                },
            )?
        });
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        let pilots =
            |rows: Vec<PilotRow>| rows.into_iter().map(PilotRow::into_domain).collect::<Result<Vec<Pilot>, _>>();
        let mut p = Portfolio {
            funnel: Funnel {
                registered: n(c.0),
                scoped: n(c.1),
                owner_accepted: n(c.2),
                evidence_1: n(c.3),
                evidence_2: n(c.4),
                evidence_3: n(c.5),
                in_production: n(c.6),
                killed: n(c.7),
            },
            healthy_kills: n(c.8),
            absorption_failures: n(c.9),
            overdue_total: n(c.10),
            risks_total: n(c.11),
            bets_total: n(c.12),
            ..Portfolio::default()
        };
        p.overdue = pilots(overdue)?
            .into_iter()
            .filter_map(|pl| {
                let due = pl.due_date()?;
                Some(Overdue { evidence: pl.evidence_count(), name: pl.name, owner: pl.owner, due })
            })
            .collect();
        p.risks = pilots(risks)?
            .into_iter()
            .map(|pl| Risk { reasons: crate::domain::lifecycle::outcome(&pl, today).1, name: pl.name })
            .collect();
        p.bets = pilots(bets)?
            .into_iter()
            .map(|pl| Bet { extensions: pl.extensions, due: pl.due_date(), name: pl.name })
            .collect();
        p.debts = pilots(debts)?
            .into_iter()
            .filter_map(|pl| {
                let due = pl.evidence_due?;
                Some(Debt { evidence: pl.evidence_count(), name: pl.name, owner: pl.owner, due })
            })
            .collect();
        p.debts_total = n(debts_total);
        p.pnl = pnl_rows
            .into_iter()
            .map(|(line, unit, pilots, targeted, realised, measured)| PnlMovement {
                line: line.unwrap_or_default(),
                unit: unit.unwrap_or_default(),
                pilots: u32::try_from(pilots).unwrap_or(u32::MAX),
                targeted: targeted.unwrap_or(0.0),
                realised: realised.unwrap_or(0.0),
                measured: u32::try_from(measured).unwrap_or(u32::MAX),
            })
            .collect();
        p.pnl.sort_by(|a, b| b.targeted.abs().total_cmp(&a.targeted.abs()).then_with(|| a.line.cmp(&b.line)));
        Ok(p)
    }

    /// The earliest time anything is due, in one workspace or all (for a simulated clock).
    pub async fn next_action_at(&self, ws: Option<&WorkspaceId>) -> Result<Option<DateTime<Utc>>, StoreError> {
        let sql = "SELECT MIN(next_action_at) FROM pilots WHERE next_action_at IS NOT NULL AND ($1 IS NULL OR workspace = $1)";
        Ok(with_pool!(self, pool => {
            sqlx::query_scalar::<_, Option<DateTime<Utc>>>(sql).bind(ws.map(WorkspaceId::as_str)).fetch_one(pool).await?
        }))
    }

    /// Claims up to `limit` pilots whose next message is due at `now`, for `worker`, until `lease_until`.
    /// A pilot claimed by another worker whose lease has not expired is skipped; so is one locked right now.
    pub async fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        worker: &str,
        limit: i64,
        ws: Option<&WorkspaceId>,
    ) -> Result<Vec<Pilot>, StoreError> {
        let due =
            "next_action_at <= $3 AND (claimed_until IS NULL OR claimed_until < $3) AND ($5 IS NULL OR workspace = $5)";
        let columns = rows::PILOT_COLUMNS;
        // The outer condition repeats the inner one: PostgreSQL re-checks it on a row another worker just claimed.
        let rows: Vec<PilotRow> = match &self.pool {
            Pool::Sqlite(pool) => {
                let sql = format!(
                    "UPDATE pilots SET claimed_until = $1, claimed_by = $2 WHERE id IN \
                     (SELECT id FROM pilots WHERE {due} ORDER BY next_action_at LIMIT $4) AND {due} RETURNING {columns}"
                );
                let mut tx = pool.begin_write().await?;
                let rows = sqlx::query_as(&sql)
                    .bind(lease_until)
                    .bind(worker)
                    .bind(now)
                    .bind(limit)
                    .bind(ws.map(WorkspaceId::as_str))
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                rows
            }
            Pool::Postgres(pool) => {
                let sql = format!(
                    "UPDATE pilots SET claimed_until = $1, claimed_by = $2 WHERE id IN \
                     (SELECT id FROM pilots WHERE {due} ORDER BY next_action_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
                     AND {due} RETURNING {columns}"
                );
                sqlx::query_as(&sql)
                    .bind(lease_until)
                    .bind(worker)
                    .bind(now)
                    .bind(limit)
                    .bind(ws.map(WorkspaceId::as_str))
                    .fetch_all(pool)
                    .await?
            }
        };
        rows.into_iter().map(PilotRow::into_domain).collect()
    }

    /// The query plan of the sweep's search for due pilots (benchmarks show it uses the index).
    pub async fn explain_claim_due(&self) -> Result<String, StoreError> {
        let select = format!("SELECT id FROM pilots WHERE {CLAIM_DUE} ORDER BY next_action_at LIMIT $4");
        let at: DateTime<Utc> = Utc::now();
        Ok(match &self.pool {
            Pool::Sqlite(pool) => {
                let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(&format!("EXPLAIN QUERY PLAN {select}"))
                    .bind(at)
                    .bind("w")
                    .bind(at)
                    .bind(1000_i64)
                    .bind(Option::<&str>::None)
                    .fetch_all(pool)
                    .await?;
                rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("\n")
            }
            Pool::Postgres(pool) => {
                let select = select.replace("$3", "now()").replace("$4", "1000").replace("$5", "NULL::text");
                let rows: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {select}")).fetch_all(pool).await?;
                rows.join("\n")
            }
        })
    }

    /// Records a message as sent under its idempotency key, with the pilot's new counters and next due time, and
    /// gives up the claim, if `worker` still holds it at `now`. Nothing changes when the key was recorded already
    /// (sent before) or the claim ran out (another process may hold the pilot now).
    #[allow(clippy::too_many_arguments)]
    pub async fn record_sent(
        &self,
        p: &Pilot,
        due: &Due,
        state: &ScheduleState,
        next: Option<DateTime<Utc>>,
        extra: &[&str],
        ask: Option<(UserId, crate::dialogue::AskKind)>,
        now: DateTime<Utc>,
        worker: &str,
    ) -> Result<Recorded, StoreError> {
        let w = p.workspace.as_str();
        let insert = "INSERT INTO deliveries (workspace, pilot_id, kind, cycle, seq, sent_at, sent_by) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                      ON CONFLICT (pilot_id, kind, cycle, seq) DO NOTHING";
        let update = "UPDATE pilots SET cycle = $3, heads_up_sent = $4, cycle_nudges = $5, unanswered = $6, last_nudge_at = $7, \
                      escalated = $8, posted = $9, snoozes = $10, snoozed_until = $11, next_action_at = $12, \
                      nudges_sent = nudges_sent + $13, claimed_until = NULL, claimed_by = NULL, version = version + 1 \
                      WHERE workspace = $1 AND id = $2 AND claimed_by = $14 AND claimed_until >= $15";
        let n = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
        let nudged = i32::from(due.kind == crate::domain::DueKind::Nudge);
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            // The claim first: a sender that no longer holds it records nothing.
            let held = sqlx::query(update).bind(w).bind(p.id.0).bind(state.cycle).bind(state.heads_up_sent).bind(n(state.cycle_nudges))
                .bind(n(state.unanswered)).bind(state.last_nudge_at).bind(state.escalated).bind(state.posted)
                .bind(n(state.snoozes)).bind(state.snoozed_until).bind(next).bind(nudged).bind(worker).bind(now)
                .execute(&mut *tx).await?.rows_affected() == 1;
            if !held {
                tx.rollback().await?;
                return Ok(Recorded::ClaimLost);
            }
            let inserted = sqlx::query(insert).bind(w).bind(p.id.0).bind(due.kind.as_str()).bind(due.cycle).bind(n(due.seq)).bind(now).bind(worker)
                .execute(&mut *tx).await?.rows_affected() == 1;
            if !inserted {
                tx.rollback().await?;
                return Ok(Recorded::AlreadySent);
            }
            for kind in extra {
                sqlx::query(insert).bind(w).bind(p.id.0).bind(*kind).bind(due.cycle).bind(0).bind(now).bind(worker)
                    .execute(&mut *tx).await?;
            }
            if let Some((user, kind)) = &ask {
                sqlx::query("UPDATE asks SET answered_at = $4 WHERE workspace = $1 AND pilot_id = $2 AND kind = $3 AND answered_at IS NULL")
                    .bind(w).bind(p.id.0).bind(kind.name()).bind(now).execute(&mut *tx).await?;
                let payload = serde_json::to_string(kind).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                sqlx::query("INSERT INTO asks (workspace, user_id, kind, pilot_id, payload, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
                    .bind(w).bind(user.as_str()).bind(kind.name()).bind(p.id.0).bind(payload).bind(now)
                    .execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(Recorded::Sent)
    }

    /// How many messages of a kind were recorded for a pilot (tests and the delivery guarantees).
    pub async fn deliveries(&self, ws: &WorkspaceId, kind: &str) -> Result<Vec<(i64, NaiveDateKey, i32)>, StoreError> {
        let sql = "SELECT pilot_id, cycle, seq FROM deliveries WHERE workspace = $1 AND kind = $2 ORDER BY pilot_id, cycle, seq";
        Ok(with_pool!(self, pool => {
            sqlx::query_as(sql).bind(ws.as_str()).bind(kind).fetch_all(pool).await?
        }))
    }

    /// The user's questions by direct message that still wait for an answer, newest first.
    pub async fn open_asks(&self, ws: &WorkspaceId, user: &UserId) -> Result<Vec<Ask>, StoreError> {
        let sql = "SELECT id, user_id, pilot_id, payload FROM asks WHERE workspace = $1 AND user_id = $2 \
                   AND answered_at IS NULL ORDER BY id DESC LIMIT 20";
        let rows: Vec<AskRow> = with_pool!(self, pool => {
            sqlx::query_as(sql).bind(ws.as_str()).bind(user.as_str()).fetch_all(pool).await?
        });
        rows.into_iter().map(AskRow::into_domain).collect()
    }

    /// The workspace's settings (the defaults until an admin changes one).
    pub async fn settings(&self, ws: &WorkspaceId) -> Result<WorkspaceSettings, StoreError> {
        let sql = "SELECT settings FROM workspace_settings WHERE workspace = $1";
        let json: Option<String> = with_pool!(self, pool => {
            sqlx::query_scalar(sql).bind(ws.as_str()).fetch_optional(pool).await?
        });
        parse_settings(ws, json)
    }

    pub async fn save_settings(
        &self,
        ws: &WorkspaceId,
        settings: &WorkspaceSettings,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(settings).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let sql = "INSERT INTO workspace_settings (workspace, settings, updated_at) VALUES ($1, $2, $3) \
                   ON CONFLICT (workspace) DO UPDATE SET settings = $2, updated_at = $3";
        with_pool!(self, pool => {
            sqlx::query(sql).bind(ws.as_str()).bind(json).bind(now).execute(pool).await?;
        });
        Ok(())
    }

    pub async fn audit(&self, ws: &WorkspaceId, pilot: Option<PilotId>) -> Result<Vec<AuditEntry>, StoreError> {
        let sql = "SELECT pilot_id, actor, action, field, old_value, new_value, at FROM audit \
                   WHERE workspace = $1 AND ($2 IS NULL OR pilot_id = $2) ORDER BY id";
        Ok(with_pool!(self, pool => {
            sqlx::query_as(sql).bind(ws.as_str()).bind(pilot.map(|p| p.0)).fetch_all(pool).await?
        }))
    }

    /// Writes one turn's changes in one transaction, if what it was computed from still holds: its conversation
    /// ([`ConversationGuard`]) and the version of each pilot it changes. Otherwise nothing is written and
    /// [`StoreError::Conflict`] says to compute the turn again on the state as it is now. Turns arriving together
    /// share one commit ([`commit`]); each is answered once that commit is durable.
    pub async fn write(&self, turn: TurnWrite) -> Result<Written, StoreError> {
        self.commits().write(turn).await
    }
}
