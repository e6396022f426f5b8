//! Pilots as read: one by id or name, the names a workspace has (and who holds one), lists, every pilot (export),
//! the questions waiting for a user's answer, and the audit trail.

use chrono::{DateTime, Utc};

use super::rows::{self, AskRow, PilotRow};
use super::{AuditEntry, Pool, Store, StoreError};
use crate::dialogue::Ask;
use crate::domain::pilot::{PilotQuery, name_key};
use crate::domain::rules::NameHolder;
use crate::domain::{Pilot, PilotId, Stage, UserId, WorkspaceId};

impl Store {
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
    /// The workspace's open pilots (scoped or in production), as a registration is compared with them.
    pub async fn open_pilots(&self, ws: &WorkspaceId) -> Result<Vec<crate::domain::overlap::OpenPilot>, StoreError> {
        let sql = "SELECT id, name, owner, workflow, pnl_line FROM pilots \
                   WHERE workspace = $1 AND stage IN ('scoped', 'in_production') ORDER BY id";
        type Row = (i64, String, Option<String>, Option<String>, Option<String>);
        let rows: Vec<Row> = with_pool!(self, pool => sqlx::query_as(sql).bind(ws.as_str()).fetch_all(pool).await?);
        Ok(rows
            .into_iter()
            .map(|(id, name, owner, workflow, pnl_line)| crate::domain::overlap::OpenPilot {
                id: crate::domain::PilotId(id),
                name,
                owner: owner.map(crate::domain::UserId),
                workflow,
                pnl_line,
            })
            .collect())
    }

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

    /// The user's questions by direct message that still wait for an answer, newest first.
    pub async fn open_asks(&self, ws: &WorkspaceId, user: &UserId) -> Result<Vec<Ask>, StoreError> {
        let sql = "SELECT id, user_id, pilot_id, payload FROM asks WHERE workspace = $1 AND user_id = $2 \
                   AND answered_at IS NULL ORDER BY id DESC LIMIT 20";
        let rows: Vec<AskRow> = with_pool!(self, pool => {
            sqlx::query_as(sql).bind(ws.as_str()).bind(user.as_str()).fetch_all(pool).await?
        });
        rows.into_iter().map(AskRow::into_domain).collect()
    }

    pub async fn audit(&self, ws: &WorkspaceId, pilot: Option<PilotId>) -> Result<Vec<AuditEntry>, StoreError> {
        let sql = "SELECT pilot_id, actor, action, field, old_value, new_value, at FROM audit \
                   WHERE workspace = $1 AND ($2 IS NULL OR pilot_id = $2) ORDER BY id";
        Ok(with_pool!(self, pool => {
            sqlx::query_as(sql).bind(ws.as_str()).bind(pilot.map(|p| p.0)).fetch_all(pool).await?
        }))
    }
}
