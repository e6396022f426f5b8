//! The schedule's rows: when each pilot's next message is due, the claims (leases) that keep two processes from
//! sending it twice, the record of what was sent under its idempotency key, and the digests' periods. What is due
//! and why is the domain's (`domain::due`); the scheduler decides, this writes.

use chrono::{DateTime, Utc};

use super::rows::{self, PilotRow};
use super::{BeginWrite, Pool, Store, StoreError};
use crate::domain::{Due, Pilot, PilotId, ScheduleState, UserId, WorkspaceId};

/// Pilots whose next message is due at `$3` and not claimed by a live lease (`$5`: one workspace, or all).
const CLAIM_DUE: &str =
    "next_action_at <= $3 AND (claimed_until IS NULL OR claimed_until < $3) AND ($5 IS NULL OR workspace = $5)";

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

/// Pilots whose scheduled look is due now and the oldest such moment: how far behind the scheduler is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub due: i64,
    pub oldest: Option<DateTime<Utc>>,
}

impl Store {
    /// How many pilots are due at `now` (claimed or not), and since when the oldest has been.
    pub async fn due_backlog(&self, now: DateTime<Utc>) -> Result<Backlog, StoreError> {
        let sql = "SELECT COUNT(*), MIN(next_action_at) FROM pilots WHERE next_action_at <= $1";
        let (due, oldest): (i64, Option<DateTime<Utc>>) = match &self.pool {
            Pool::Sqlite(pool) => sqlx::query_as(sql).bind(now).fetch_one(pool).await?,
            Pool::Postgres(pool) => sqlx::query_as(sql).bind(now).fetch_one(pool).await?,
        };
        Ok(Backlog { due, oldest })
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
}
