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

use crate::dialogue::Ask;
use crate::dialogue::{Conversation, Effect};
use crate::domain::portfolio::{Bet, Funnel, Overdue, PnlMovement, Portfolio, Risk};
use crate::domain::{Pilot, PilotId, UserId, WorkspaceId, WorkspaceSettings, pilot::name_key};
use rows::{AskRow, ClaimedRow, ConversationRow, PilotRow, ScheduleRow};

use crate::schedule::{Due, ScheduleState};

pub use rows::AuditEntry;

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

/// The conversation a turn saves, when saving it can be the guard's write: the turn saves it once, does not end
/// it, and neither creates nor deletes the pilot it points to. Returns it with its pilot id.
fn merged_save(effects: &[Effect], pilot: Option<PilotId>) -> Option<(&Conversation, Option<i64>)> {
    let mut saves = effects.iter().filter_map(|e| match e {
        Effect::SaveConversation(c) => Some(c),
        _ => None,
    });
    let save = saves.next()?;
    let single = saves.next().is_none();
    let simple =
        !effects.iter().any(|e| matches!(e, Effect::EndConversation | Effect::CreateDraft(_) | Effect::DeleteDraft));
    (single && simple).then(|| (save, save.pilot.or(pilot).map(|p| p.0)))
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

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

fn scratch_json(c: &Conversation) -> String {
    serde_json::to_string(&c.scratch).unwrap_or_else(|_| "{}".into())
}

/// Writes one line of the audit trail in the transaction `$tx` (a macro: the same code serves both dialects).
macro_rules! audit_row {
    ($tx:expr, $w:expr, $pilot:expr, $actor:expr, $action:expr, $field:expr, $old:expr, $new:expr, $now:expr) => {
        sqlx::query(
            "INSERT INTO audit (workspace, pilot_id, actor, action, field, old_value, new_value, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind($w)
        .bind($pilot)
        .bind($actor)
        .bind($action)
        .bind($field)
        .bind($old)
        .bind($new)
        .bind($now)
        .execute($tx)
    };
}

mod batch;
mod commit;
mod reads;

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

/// A review cycle's date, as the deliveries table keys it.
pub type NaiveDateKey = chrono::NaiveDate;

/// What a turn's writes left behind.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The turn's pilot afterwards (a created draft's included; None once deleted).
    pub id: Option<PilotId>,
    /// The pilot as written, when the turn's last change to it returned it (else read it when needed).
    pub pilot: Option<Pilot>,
    /// The abandoned registration whose name this turn took over, if it did.
    pub released: Option<Released>,
}

/// A registration removed because it was abandoned and another took its name: who had started it, and the name
/// as they had written it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    pub registrant: UserId,
    pub name: String,
}

/// What the conversation must still be for a turn's effects to apply.
#[derive(Debug, Clone, Copy)]
pub enum Guard<'a> {
    /// Apply whatever the conversation is.
    Any,
    /// The user must have no conversation (a command starting one).
    NoConversation,
    /// The conversation must still be exactly this one (an answer to it).
    At(&'a Conversation),
}

/// A pilot reference as typed: `#12`, `12`, or a name (case ignored).
pub enum PilotQuery<'a> {
    Id(i64),
    Name(&'a str),
}

impl<'a> PilotQuery<'a> {
    pub fn parse(text: &'a str) -> Self {
        let t = text.trim();
        match t.trim_start_matches('#').parse::<i64>() {
            Ok(id) if !t.is_empty() => PilotQuery::Id(id),
            _ => PilotQuery::Name(t),
        }
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

    /// When an unfinished registration holds the name `key`: who started it, and when it last moved (its last
    /// answer, whether that changed the draft or only the conversation).
    pub async fn draft_holding(
        &self,
        ws: &WorkspaceId,
        key: &str,
    ) -> Result<Option<(UserId, DateTime<Utc>)>, StoreError> {
        let sql = "SELECT p.registered_by, p.updated_at, \
                   (SELECT MAX(c.updated_at) FROM conversations c WHERE c.pilot_id = p.id) \
                   FROM pilots p WHERE p.workspace = $1 AND p.name_key = $2 AND p.stage = 'draft'";
        type Row = (String, DateTime<Utc>, Option<DateTime<Utc>>);
        let row: Option<Row> = with_pool!(self, pool => {
            sqlx::query_as(sql).bind(ws.as_str()).bind(key).fetch_optional(pool).await?
        });
        Ok(row.map(|(by, pilot, conversation)| (UserId::new(by), conversation.map_or(pilot, |c| c.max(pilot)))))
    }

    /// Finds a pilot by id or name; when none matches, the closest name as a suggestion.
    pub async fn find_pilot(&self, ws: &WorkspaceId, query: &str) -> Result<Result<Pilot, Option<String>>, StoreError> {
        let found = match PilotQuery::parse(query) {
            PilotQuery::Id(id) => self.pilot(ws, PilotId(id)).await?,
            PilotQuery::Name(name) => {
                let sql = format!("SELECT {} FROM pilots WHERE workspace = $1 AND name_key = $2", rows::PILOT_COLUMNS);
                let row: Option<PilotRow> = with_pool!(self, pool => {
                    sqlx::query_as(&sql).bind(ws.as_str()).bind(name_key(name)).fetch_optional(pool).await?
                });
                row.map(PilotRow::into_domain).transpose()?
            }
        };
        if let Some(p) = found {
            return Ok(Ok(p));
        }
        let names = self.pilot_names(ws).await?;
        Ok(Err(crate::commands::closest(query, names.iter().map(String::as_str)).map(str::to_owned)))
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

    /// The schedule counters of a pilot's current review cycle.
    pub async fn schedule_state(&self, ws: &WorkspaceId, id: PilotId) -> Result<ScheduleState, StoreError> {
        let sql = format!("SELECT {} FROM pilots WHERE workspace = $1 AND id = $2", rows::SCHEDULE_COLUMNS);
        let row: Option<ScheduleRow> = with_pool!(self, pool => {
            sqlx::query_as(&sql).bind(ws.as_str()).bind(id.0).fetch_optional(pool).await?
        });
        Ok(row.map(ScheduleRow::into_domain).unwrap_or_default())
    }

    /// What working out a pilot's next message needs, read in one query: the schedule counters of its review cycle,
    /// the workspace's settings, and the time zone `owner` set for themselves, if any.
    pub async fn schedule_inputs(
        &self,
        ws: &WorkspaceId,
        id: PilotId,
        owner: Option<&UserId>,
    ) -> Result<(ScheduleState, WorkspaceSettings, Option<String>), StoreError> {
        use sqlx::{FromRow, Row};
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            let schedule = rows::SCHEDULE_COLUMNS.split(", ").map(|c| format!("p.{}", c.trim())).collect::<Vec<_>>();
            format!(
                "SELECT p.id, {}, s.settings AS workspace_settings, u.timezone AS owner_timezone FROM (SELECT 1 AS one) k \
                 LEFT JOIN pilots p ON p.workspace = $1 AND p.id = $2 \
                 LEFT JOIN workspace_settings s ON s.workspace = $1 \
                 LEFT JOIN user_settings u ON u.workspace = $1 AND u.user_id = $3",
                schedule.join(", ")
            )
        });
        let owner = owner.map(|o| o.as_str());
        let (state, settings, zone): (Option<ScheduleRow>, Option<String>, Option<String>) = with_pool!(self, pool => {
            let row = sqlx::query(&SQL).bind(ws.as_str()).bind(id.0).bind(owner).fetch_one(pool).await?;
            let found: Option<i64> = row.try_get("id")?;
            let state = found.is_some().then(|| ScheduleRow::from_row(&row)).transpose()?;
            (state, row.try_get("workspace_settings")?, row.try_get("owner_timezone")?)
        });
        Ok((state.map(ScheduleRow::into_domain).unwrap_or_default(), parse_settings(ws, settings)?, zone))
    }

    /// Sets when a pilot's next message is due (None: nothing is); `release` also gives up a claim on it.
    pub async fn set_next_action(
        &self,
        ws: &WorkspaceId,
        id: PilotId,
        at: Option<DateTime<Utc>>,
        release: bool,
    ) -> Result<(), StoreError> {
        let sql = if release {
            "UPDATE pilots SET next_action_at = $3, claimed_until = NULL, claimed_by = NULL WHERE workspace = $1 AND id = $2"
        } else {
            "UPDATE pilots SET next_action_at = $3 WHERE workspace = $1 AND id = $2"
        };
        with_pool!(self, pool => {
            sqlx::query(sql).bind(ws.as_str()).bind(id.0).bind(at).execute(pool).await?;
        });
        Ok(())
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
        type Counts = (i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64);
        type PnlRow = (Option<String>, Option<String>, i64, Option<f64>, Option<f64>, i64);
        // The two scans and the lists are independent reads: run them at once, each on its own connection.
        let (c, pnl_rows, overdue, risks, bets): (Counts, Vec<PnlRow>, Vec<PilotRow>, Vec<PilotRow>, Vec<PilotRow>) = with_pool!(self, pool => {
            tokio::try_join!(
                sqlx::query_as(&counts).bind(ws.as_str()).bind(today).fetch_one(pool),
                sqlx::query_as(pnl).bind(ws.as_str()).fetch_all(pool),
                sqlx::query_as(&overdue_sql).bind(ws.as_str()).bind(today).bind(limit).fetch_all(pool),
                sqlx::query_as(&risks_sql).bind(ws.as_str()).bind(today).bind(limit).fetch_all(pool),
                sqlx::query_as(&bets_sql).bind(ws.as_str()).bind(today).bind(limit).fetch_all(pool),
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
    ) -> Result<Vec<(Pilot, ScheduleState)>, StoreError> {
        let due =
            "next_action_at <= $3 AND (claimed_until IS NULL OR claimed_until < $3) AND ($5 IS NULL OR workspace = $5)";
        let columns = format!("{}, {}", rows::PILOT_COLUMNS, rows::SCHEDULE_COLUMNS);
        // The outer condition repeats the inner one: PostgreSQL re-checks it on a row another worker just claimed.
        let rows: Vec<ClaimedRow> = match &self.pool {
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
        rows.into_iter().map(|r| Ok((r.pilot.into_domain()?, r.schedule.into_domain()))).collect()
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

    /// Records a message as sent under its idempotency key, with the pilot's new counters and next due time,
    /// and releases the claim. Returns false when the key was already recorded (sent before): nothing changes.
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
    ) -> Result<bool, StoreError> {
        let w = p.workspace.as_str();
        let insert = "INSERT INTO deliveries (workspace, pilot_id, kind, cycle, seq, sent_at, sent_by) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                      ON CONFLICT (pilot_id, kind, cycle, seq) DO NOTHING";
        let update = "UPDATE pilots SET cycle = $3, heads_up_sent = $4, cycle_nudges = $5, unanswered = $6, last_nudge_at = $7, \
                      escalated = $8, posted = $9, snoozes = $10, snoozed_until = $11, next_action_at = $12, \
                      nudges_sent = nudges_sent + $13, claimed_until = NULL, claimed_by = NULL WHERE workspace = $1 AND id = $2";
        let n = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
        let nudged = i32::from(due.kind == crate::schedule::DueKind::Nudge);
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let inserted = sqlx::query(insert).bind(w).bind(p.id.0).bind(due.kind.as_str()).bind(due.cycle).bind(n(due.seq)).bind(now).bind(worker)
                .execute(&mut *tx).await?.rows_affected() == 1;
            if !inserted {
                return Ok(false);
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
            sqlx::query(update).bind(w).bind(p.id.0).bind(state.cycle).bind(state.heads_up_sent).bind(n(state.cycle_nudges))
                .bind(n(state.unanswered)).bind(state.last_nudge_at).bind(state.escalated).bind(state.posted)
                .bind(n(state.snoozes)).bind(state.snoozed_until).bind(next).bind(nudged)
                .execute(&mut *tx).await?;
            tx.commit().await?;
        });
        Ok(true)
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

    /// Applies one turn's effects in one transaction, with an audit row for every change.
    /// `pilot` is the conversation's pilot; returns the pilot afterwards (a created draft's id included).
    /// `guard` is the conversation the turn was computed from: when another request of the same user moved it
    /// first, nothing is written and [`StoreError::Conflict`] says to compute the turn again.
    /// Turns arriving together share one commit ([`commit`]); each is answered once that commit is durable.
    #[allow(clippy::too_many_arguments)]
    pub async fn apply(
        &self,
        ws: &WorkspaceId,
        actor: &UserId,
        now: DateTime<Utc>,
        pilot: Option<PilotId>,
        channel: &str,
        guard: Guard<'_>,
        effects: &[Effect],
    ) -> Result<Applied, StoreError> {
        let turn = commit::Turn {
            ws: ws.clone(),
            actor: actor.clone(),
            now,
            pilot,
            channel: channel.to_owned(),
            guard: guard.into(),
            effects: effects.to_vec(),
        };
        self.commits().apply(turn).await
    }
}
