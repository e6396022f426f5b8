//! Settings as stored: a workspace's (JSON, the defaults until an admin changes one) and each person's time zone.

use chrono::{DateTime, Utc};

use super::{Pool, Store, StoreError};
use crate::domain::{UserId, WorkspaceId, WorkspaceSettings};

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
}
