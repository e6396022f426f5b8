//! Settings as stored: a workspace's (JSON, the defaults until an admin changes one), the platform it lives on,
//! and each person's time zone.

use chrono::{DateTime, Utc};

use super::{Pool, Store, StoreError};
use crate::domain::{Platform, UserId, WorkspaceId, WorkspaceSettings};

/// A workspace's settings as stored (JSON, with their revision), or the defaults when it has none.
pub(super) fn parse_settings(ws: &WorkspaceId, stored: Option<(String, i64)>) -> Result<WorkspaceSettings, StoreError> {
    match stored {
        Some((json, revision)) => {
            let settings: WorkspaceSettings = serde_json::from_str(&json)
                .map_err(|e| StoreError::Corrupt(format!("settings of {}: {e}", ws.as_str())))?;
            Ok(WorkspaceSettings { revision, ..settings })
        }
        None => Ok(WorkspaceSettings::default()),
    }
}

impl Store {
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

    /// The workspace's settings (the defaults until an admin changes one).
    pub async fn settings(&self, ws: &WorkspaceId) -> Result<WorkspaceSettings, StoreError> {
        let sql = "SELECT settings, revision FROM workspace_settings WHERE workspace = $1";
        let stored: Option<(String, i64)> = with_pool!(self, pool => {
            sqlx::query_as(sql).bind(ws.as_str()).fetch_optional(pool).await?
        });
        parse_settings(ws, stored)
    }

    pub async fn save_settings(
        &self,
        ws: &WorkspaceId,
        settings: &WorkspaceSettings,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(settings).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let sql = "INSERT INTO workspace_settings (workspace, settings, updated_at, revision) VALUES ($1, $2, $3, 1) \
                   ON CONFLICT (workspace) DO UPDATE SET settings = $2, updated_at = $3, \
                   revision = workspace_settings.revision + 1";
        with_pool!(self, pool => {
            sqlx::query(sql).bind(ws.as_str()).bind(json).bind(now).execute(pool).await?;
        });
        Ok(())
    }

    /// Records the platform a workspace lives on (the last adapter that served it says).
    pub async fn record_platform(
        &self,
        ws: &WorkspaceId,
        platform: Platform,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let sql = "INSERT INTO workspace_platforms (workspace, platform, updated_at) VALUES ($1, $2, $3) \
                   ON CONFLICT (workspace) DO UPDATE SET platform = $2, updated_at = $3";
        with_pool!(self, pool => {
            sqlx::query(sql).bind(ws.as_str()).bind(platform.as_str()).bind(now).execute(pool).await?;
        });
        Ok(())
    }

    /// Every workspace whose platform is recorded, with it (a name this build does not know is left out).
    pub async fn platforms(&self) -> Result<Vec<(WorkspaceId, Platform)>, StoreError> {
        let sql = "SELECT workspace, platform FROM workspace_platforms ORDER BY workspace";
        let rows: Vec<(String, String)> = with_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await?);
        Ok(rows.into_iter().filter_map(|(ws, p)| Some((WorkspaceId::new(ws), Platform::parse(&p)?))).collect())
    }

    /// Workspaces with a message due at `now` and no recorded platform.
    pub async fn due_without_platform(&self, now: DateTime<Utc>) -> Result<Vec<WorkspaceId>, StoreError> {
        let sql = "SELECT DISTINCT p.workspace FROM pilots p WHERE p.next_action_at <= $1 \
                   AND NOT EXISTS (SELECT 1 FROM workspace_platforms w WHERE w.workspace = p.workspace) \
                   ORDER BY p.workspace";
        let rows: Vec<String> = with_pool!(self, pool => sqlx::query_scalar(sql).bind(now).fetch_all(pool).await?);
        Ok(rows.into_iter().map(WorkspaceId::new).collect())
    }
}
