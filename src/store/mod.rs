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
use crate::dialogue::{Change, Conversation, Effect};
use crate::domain::portfolio::{Bet, Funnel, Overdue, PnlMovement, Portfolio, Risk};
use crate::domain::{
    DecisionKind, EvidenceKind, Pilot, PilotId, Stage, UserId, WorkspaceId, WorkspaceSettings, pilot::name_key,
};
use rows::{AskRow, ClaimedRow, ConversationRow, PilotRow, ScheduleRow};

use crate::schedule::{Due, ScheduleState};

pub use rows::AuditEntry;

#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same code against whichever pool the store has.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Sqlite($pool) => $body,
            Store::Postgres($pool) => $body,
        }
    };
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
            return Ok(Store::Postgres(pool));
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
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        Ok(Store::Sqlite(pool))
    }

    /// Applies the dialect's migrations that are not applied yet.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(pool) => sqlx::migrate!("migrations/sqlite").run(pool).await?,
            Store::Postgres(pool) => sqlx::migrate!("migrations/postgres").run(pool).await?,
        }
        Ok(())
    }

    pub fn dialect(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
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

    pub async fn pilot(&self, ws: &WorkspaceId, id: PilotId) -> Result<Option<Pilot>, StoreError> {
        let sql = format!("SELECT {} FROM pilots WHERE workspace = $1 AND id = $2", rows::PILOT_COLUMNS);
        let row: Option<PilotRow> = with_pool!(self, pool => {
            sqlx::query_as(&sql).bind(ws.as_str()).bind(id.0).fetch_optional(pool).await?
        });
        row.map(PilotRow::into_domain).transpose()
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
        let rows: Vec<ClaimedRow> = match self {
            Store::Sqlite(pool) => {
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
            Store::Postgres(pool) => {
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
        Ok(match self {
            Store::Sqlite(pool) => {
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
            Store::Postgres(pool) => {
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
        match json {
            Some(j) => {
                serde_json::from_str(&j).map_err(|e| StoreError::Corrupt(format!("settings of {}: {e}", ws.as_str())))
            }
            None => Ok(WorkspaceSettings::default()),
        }
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
    #[allow(clippy::too_many_arguments)]
    pub async fn apply(
        &self,
        ws: &WorkspaceId,
        actor: &UserId,
        now: DateTime<Utc>,
        mut pilot: Option<PilotId>,
        channel: &str,
        guard: Guard<'_>,
        effects: &[Effect],
    ) -> Result<Option<PilotId>, StoreError> {
        let w = ws.as_str();
        let a = actor.as_str();
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            // A turn that moves an existing conversation on saves it with the guard's own write: one statement.
            let mut merged = None;
            match guard {
                Guard::Any => {}
                Guard::NoConversation => {
                    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM conversations WHERE workspace = $1 AND user_id = $2")
                        .bind(w).bind(a).fetch_optional(&mut *tx).await?;
                    if exists.is_some() {
                        return Err(StoreError::Conflict);
                    }
                }
                Guard::At(c) if merged_save(effects, pilot).is_some() => {
                    let (new, pilot_id) = merged_save(effects, pilot).ok_or(StoreError::Conflict)?;
                    let moved = sqlx::query(
                        "UPDATE conversations SET flow = $8, at = $9, pilot_id = $10, channel = $11, return_to_confirm = $12, \
                         updated_at = $3, scratch = $13 WHERE workspace = $1 AND user_id = $2 AND flow = $4 AND at = $5 \
                         AND return_to_confirm = $6 AND pilot_id IS NOT DISTINCT FROM $7",
                    )
                    .bind(w).bind(a).bind(now).bind(rows::flow_str(c.flow)).bind(c.at.as_str()).bind(c.return_to_confirm)
                    .bind(c.pilot.map(|p| p.0))
                    .bind(rows::flow_str(new.flow)).bind(new.at.as_str()).bind(pilot_id).bind(new.channel.as_str())
                    .bind(new.return_to_confirm).bind(scratch_json(new))
                    .execute(&mut *tx).await?;
                    if moved.rows_affected() != 1 {
                        return Err(StoreError::Conflict);
                    }
                    merged = Some(new);
                }
                Guard::At(c) => {
                    // Writing first takes the row's lock, so a concurrent turn of the same user waits, then finds it moved.
                    let moved = sqlx::query(
                        "UPDATE conversations SET updated_at = $3 WHERE workspace = $1 AND user_id = $2 AND flow = $4 AND at = $5 \
                         AND return_to_confirm = $6 AND pilot_id IS NOT DISTINCT FROM $7",
                    )
                    .bind(w).bind(a).bind(now).bind(rows::flow_str(c.flow)).bind(c.at.as_str()).bind(c.return_to_confirm)
                    .bind(c.pilot.map(|p| p.0))
                    .execute(&mut *tx).await?;
                    if moved.rows_affected() != 1 {
                        return Err(StoreError::Conflict);
                    }
                }
            }
            for effect in effects {
                match effect {
                    Effect::CreateDraft(name) => {
                        // Checked first so a taken name consumes no id; the unique index still settles races.
                        let taken: Option<i64> = sqlx::query_scalar("SELECT id FROM pilots WHERE workspace = $1 AND name_key = $2")
                            .bind(w).bind(name.key()).fetch_optional(&mut *tx).await?;
                        if taken.is_some() {
                            return Err(StoreError::NameTaken);
                        }
                        let id: i64 = sqlx::query_scalar(
                            "INSERT INTO pilots (workspace, name, name_key, stage, registered_by, registered_at, home_channel, updated_at) \
                             VALUES ($1, $2, $3, 'draft', $4, $5, $6, $5) RETURNING id",
                        )
                        .bind(w).bind(name.as_str()).bind(name.key()).bind(a).bind(now).bind(channel)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(|e| if is_unique_violation(&e) { StoreError::NameTaken } else { e.into() })?;
                        pilot = Some(PilotId(id));
                        sqlx::query("INSERT INTO audit (workspace, pilot_id, actor, action, field, old_value, new_value, at) VALUES ($1, $2, $3, 'created', 'name', NULL, $4, $5)")
                            .bind(w).bind(id).bind(a).bind(name.as_str()).bind(now)
                            .execute(&mut *tx).await?;
                    }
                    Effect::Set(change) => {
                        let id = pilot.ok_or(StoreError::PilotGone)?.0;
                        let sql = format!("SELECT {} FROM pilots WHERE workspace = $1 AND id = $2", rows::PILOT_COLUMNS);
                        let before: PilotRow = sqlx::query_as(&sql).bind(w).bind(id).fetch_optional(&mut *tx).await?.ok_or(StoreError::PilotGone)?;
                        let before = before.into_domain()?;
                        if let Change::Name(n) = change {
                            let taken: Option<i64> = sqlx::query_scalar("SELECT id FROM pilots WHERE workspace = $1 AND name_key = $2 AND id <> $3")
                                .bind(w).bind(n.key()).bind(id).fetch_optional(&mut *tx).await?;
                            if taken.is_some() {
                                return Err(StoreError::NameTaken);
                            }
                        }
                        let (old, new) = rows::audit_values(&before, change);
                        let q = match change {
                            Change::Name(n) => sqlx::query("UPDATE pilots SET name = $3, name_key = $4, updated_at = $5 WHERE workspace = $1 AND id = $2")
                                .bind(w).bind(id).bind(n.as_str()).bind(n.key()).bind(now),
                            Change::Workflow(t) => sqlx::query("UPDATE pilots SET workflow = $3, updated_at = $4 WHERE workspace = $1 AND id = $2")
                                .bind(w).bind(id).bind(t.as_str()).bind(now),
                            Change::Owner(u) => sqlx::query("UPDATE pilots SET owner = $3, updated_at = $4 WHERE workspace = $1 AND id = $2")
                                .bind(w).bind(id).bind(u.as_str()).bind(now),
                            Change::Sponsor(u) => sqlx::query("UPDATE pilots SET sponsor = $3, updated_at = $4 WHERE workspace = $1 AND id = $2")
                                .bind(w).bind(id).bind(u.as_ref().map(UserId::as_str)).bind(now),
                            Change::Pnl(p) => sqlx::query("UPDATE pilots SET pnl_line = $3, pnl_unit = $4, pnl_baseline = $5, pnl_target = $6, updated_at = $7 WHERE workspace = $1 AND id = $2")
                                .bind(w).bind(id).bind(p.line.as_str()).bind(p.unit.as_str()).bind(p.baseline).bind(p.target).bind(now),
                            // Before any extension, the review date in force is the first one.
                            Change::ReviewDate(d) => sqlx::query("UPDATE pilots SET review_date = $3, next_review_date = CASE WHEN extensions = 0 THEN $3 ELSE next_review_date END, updated_at = $4 WHERE workspace = $1 AND id = $2")
                                .bind(w).bind(id).bind(*d).bind(now),
                        };
                        q.execute(&mut *tx).await.map_err(|e| if is_unique_violation(&e) { StoreError::NameTaken } else { e.into() })?;
                        sqlx::query("INSERT INTO audit (workspace, pilot_id, actor, action, field, old_value, new_value, at) VALUES ($1, $2, $3, 'set', $4, $5, $6, $7)")
                            .bind(w).bind(id).bind(a).bind(change.step().as_str()).bind(old).bind(new).bind(now)
                            .execute(&mut *tx).await?;
                    }
                    Effect::SetStage(stage) => {
                        let id = pilot.ok_or(StoreError::PilotGone)?.0;
                        let old: Option<String> = sqlx::query_scalar("SELECT stage FROM pilots WHERE workspace = $1 AND id = $2")
                            .bind(w).bind(id).fetch_optional(&mut *tx).await?;
                        let old = old.ok_or(StoreError::PilotGone)?;
                        sqlx::query("UPDATE pilots SET stage = $3, updated_at = $4 WHERE workspace = $1 AND id = $2")
                            .bind(w).bind(id).bind(stage.as_str()).bind(now).execute(&mut *tx).await?;
                        sqlx::query("INSERT INTO audit (workspace, pilot_id, actor, action, field, old_value, new_value, at) VALUES ($1, $2, $3, 'stage', 'stage', $4, $5, $6)")
                            .bind(w).bind(id).bind(a).bind(old).bind(stage.as_str()).bind(now)
                            .execute(&mut *tx).await?;
                    }
                    Effect::DeleteDraft => {
                        let id = pilot.ok_or(StoreError::PilotGone)?.0;
                        let name: Option<String> = sqlx::query_scalar("DELETE FROM pilots WHERE workspace = $1 AND id = $2 AND stage = $3 RETURNING name")
                            .bind(w).bind(id).bind(Stage::Draft.as_str()).fetch_optional(&mut *tx).await?;
                        sqlx::query("INSERT INTO audit (workspace, pilot_id, actor, action, field, old_value, new_value, at) VALUES ($1, $2, $3, 'deleted', NULL, $4, NULL, $5)")
                            .bind(w).bind(id).bind(a).bind(name).bind(now)
                            .execute(&mut *tx).await?;
                        pilot = None;
                    }
                    Effect::SaveConversation(c) if matches!(guard, Guard::NoConversation) => {
                        // A conversation that must be new: a concurrent start of the same user loses here.
                        let pilot_id = c.pilot.or(pilot).map(|p| p.0);
                        sqlx::query(
                            "INSERT INTO conversations (workspace, user_id, flow, at, pilot_id, channel, return_to_confirm, updated_at, scratch) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                        )
                        .bind(w).bind(a).bind(rows::flow_str(c.flow)).bind(c.at.as_str()).bind(pilot_id)
                        .bind(c.channel.as_str()).bind(c.return_to_confirm).bind(now).bind(scratch_json(c))
                        .execute(&mut *tx).await
                        .map_err(|e| if is_unique_violation(&e) { StoreError::Conflict } else { e.into() })?;
                    }
                    Effect::SaveConversation(c) if merged.is_some_and(|m| std::ptr::eq(m, c)) => {}
                    Effect::SaveConversation(c) => {
                        let pilot_id = c.pilot.or(pilot).map(|p| p.0);
                        sqlx::query(
                            "INSERT INTO conversations (workspace, user_id, flow, at, pilot_id, channel, return_to_confirm, updated_at, scratch) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                             ON CONFLICT (workspace, user_id) DO UPDATE SET flow = $3, at = $4, pilot_id = $5, channel = $6, \
                             return_to_confirm = $7, updated_at = $8, scratch = $9",
                        )
                        .bind(w).bind(a).bind(rows::flow_str(c.flow)).bind(c.at.as_str()).bind(pilot_id)
                        .bind(c.channel.as_str()).bind(c.return_to_confirm).bind(now).bind(scratch_json(c))
                        .execute(&mut *tx).await?;
                    }
                    Effect::EndConversation => {
                        sqlx::query("DELETE FROM conversations WHERE workspace = $1 AND user_id = $2")
                            .bind(w).bind(a).execute(&mut *tx).await?;
                    }
                    Effect::AddEvidence(item) => {
                        let id = pilot.ok_or(StoreError::PilotGone)?.0;
                        sqlx::query("INSERT INTO evidence (workspace, pilot_id, kind, note, value, period, source, recorded_by, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
                            .bind(w).bind(id).bind(item.kind.as_str()).bind(item.note.as_str()).bind(item.value)
                            .bind(item.period.as_deref()).bind(item.source.as_deref()).bind(a).bind(now)
                            .execute(&mut *tx).await?;
                        let update = match item.kind {
                            EvidenceKind::WorkflowLive => "UPDATE pilots SET evidence_workflow_live = TRUE, updated_at = $3 WHERE workspace = $1 AND id = $2",
                            EvidenceKind::OwnerRunning => "UPDATE pilots SET evidence_owner_running = TRUE, updated_at = $3 WHERE workspace = $1 AND id = $2",
                            EvidenceKind::PnlMoved => "UPDATE pilots SET pnl_realised = $4, updated_at = $3 WHERE workspace = $1 AND id = $2",
                        };
                        let q = sqlx::query(update).bind(w).bind(id).bind(now);
                        let q = if item.kind == EvidenceKind::PnlMoved { q.bind(item.value) } else { q };
                        q.execute(&mut *tx).await?;
                        audit_row!(&mut *tx, w, id, a, "evidence", Some(item.kind.as_str()), None::<&str>, Some(&item.note), now).await?;
                    }
                    Effect::Decide(d) => {
                        let id = pilot.ok_or(StoreError::PilotGone)?.0;
                        let old: Option<String> = sqlx::query_scalar("SELECT stage FROM pilots WHERE workspace = $1 AND id = $2")
                            .bind(w).bind(id).fetch_optional(&mut *tx).await?;
                        let old = old.ok_or(StoreError::PilotGone)?;
                        let q = match d.kind {
                            DecisionKind::Scale => sqlx::query("UPDATE pilots SET stage = 'in_production', decision = 'scale', decision_reason = $3, scale_override = $4, updated_at = $5 WHERE workspace = $1 AND id = $2")
                                .bind(w).bind(id).bind(d.reason.as_str()).bind(d.override_evidence).bind(now),
                            DecisionKind::Extend => sqlx::query("UPDATE pilots SET decision = 'extend', decision_reason = $3, next_review_date = $4, extensions = extensions + 1, updated_at = $5 WHERE workspace = $1 AND id = $2")
                                .bind(w).bind(id).bind(d.reason.as_str()).bind(d.new_date).bind(now),
                            DecisionKind::Kill => sqlx::query("UPDATE pilots SET stage = 'killed', decision = 'kill', decision_reason = $3, kill_category = $4, updated_at = $5 WHERE workspace = $1 AND id = $2")
                                .bind(w).bind(id).bind(d.reason.as_str()).bind(d.category.map(|c| c.as_str())).bind(now),
                        };
                        q.execute(&mut *tx).await?;
                        let detail = match (d.kind, d.category, d.new_date) {
                            (DecisionKind::Kill, Some(c), _) => format!("kill ({}): {}", c.as_str(), d.reason),
                            (DecisionKind::Extend, _, Some(date)) => format!("extend to {date}: {}", d.reason),
                            (DecisionKind::Scale, _, _) if d.override_evidence => format!("scale (override): {}", d.reason),
                            _ => d.kind.as_str().to_owned(),
                        };
                        audit_row!(&mut *tx, w, id, a, "decision", Some("stage"), Some(&old), Some(&detail), now).await?;
                    }
                    Effect::SetOwnerStatus { status, reason } => {
                        let id = pilot.ok_or(StoreError::PilotGone)?.0;
                        let old: Option<String> = sqlx::query_scalar("SELECT owner_status FROM pilots WHERE workspace = $1 AND id = $2")
                            .bind(w).bind(id).fetch_optional(&mut *tx).await?;
                        let old = old.ok_or(StoreError::PilotGone)?;
                        if old == status.as_str() && reason.is_none() {
                            continue;
                        }
                        sqlx::query("UPDATE pilots SET owner_status = $3, updated_at = $4 WHERE workspace = $1 AND id = $2")
                            .bind(w).bind(id).bind(status.as_str()).bind(now).execute(&mut *tx).await?;
                        let new = match reason {
                            Some(r) => format!("{}: {r}", status.as_str()),
                            None => status.as_str().to_owned(),
                        };
                        audit_row!(&mut *tx, w, id, a, "owner_status", Some("owner_status"), Some(&old), Some(&new), now).await?;
                    }
                    Effect::OpenAsk { user, kind } => {
                        let id = pilot.ok_or(StoreError::PilotGone)?.0;
                        // A new ask of the same kind about the same pilot supersedes the old one.
                        sqlx::query("UPDATE asks SET answered_at = $4 WHERE workspace = $1 AND pilot_id = $2 AND kind = $3 AND answered_at IS NULL")
                            .bind(w).bind(id).bind(kind.name()).bind(now).execute(&mut *tx).await?;
                        let payload = serde_json::to_string(kind).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                        sqlx::query("INSERT INTO asks (workspace, user_id, kind, pilot_id, payload, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
                            .bind(w).bind(user.as_str()).bind(kind.name()).bind(id).bind(payload).bind(now)
                            .execute(&mut *tx).await?;
                    }
                    Effect::NudgeAnswered => {
                        let id = pilot.ok_or(StoreError::PilotGone)?.0;
                        sqlx::query("UPDATE pilots SET unanswered = 0 WHERE workspace = $1 AND id = $2")
                            .bind(w).bind(id).execute(&mut *tx).await?;
                    }
                    Effect::Snooze { until } => {
                        let id = pilot.ok_or(StoreError::PilotGone)?.0;
                        sqlx::query("UPDATE pilots SET snoozes = snoozes + 1, snoozed_until = $3 WHERE workspace = $1 AND id = $2")
                            .bind(w).bind(id).bind(*until).execute(&mut *tx).await?;
                        audit_row!(&mut *tx, w, id, a, "snooze", Some("snoozed_until"), None::<&str>, Some(&until.to_rfc3339()), now).await?;
                    }
                    Effect::CloseAsk(ask) => {
                        // Answered once: a second answer racing the first finds it closed and is decided again.
                        let closed = sqlx::query("UPDATE asks SET answered_at = $3 WHERE workspace = $1 AND id = $2 AND answered_at IS NULL")
                            .bind(w).bind(*ask).bind(now).execute(&mut *tx).await?;
                        if closed.rows_affected() != 1 {
                            return Err(StoreError::Conflict);
                        }
                    }
                }
            }
            tx.commit().await?;
        });
        Ok(pilot)
    }
}
