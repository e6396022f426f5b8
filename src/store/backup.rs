//! `lastmile backup`: a consistent copy of an SQLite database, taken while the bot runs on it. SQLite's
//! `VACUUM INTO` writes one snapshot of the database to a new file, without stopping the writers (WAL). PostgreSQL
//! has its own tools (`pg_dump`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::{ConnectOptions, Connection};

use super::{StoreError, sqlite_options};

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "backup copies SQLite databases only: back up a PostgreSQL database with its own tools (pg_dump), or copy it with `lastmile copy`"
    )]
    Postgres,
    #[error("{0} already exists: backup writes a new file and overwrites none (name another file, or move this one)")]
    Exists(PathBuf),
    #[error("the backup file name {0:?} is not valid UTF-8")]
    NotUtf8(PathBuf),
    #[error("cannot read the database: {0}")]
    Source(StoreError),
    #[error("cannot write the backup to {path}: {error}")]
    Write { path: PathBuf, error: sqlx::Error },
}

/// Writes a copy of the SQLite database named by `url` to the new file `to`, as one consistent snapshot. The
/// database is opened read only: nothing is created, migrated or written there, whatever version it is at.
pub async fn backup_sqlite(url: &str, to: &Path) -> Result<(), BackupError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Err(BackupError::Postgres);
    }
    let target = to.to_str().ok_or_else(|| BackupError::NotUtf8(to.to_owned()))?;
    // VACUUM INTO refuses an existing non-empty file itself; an empty one it would fill: refuse both, first.
    if to.exists() {
        return Err(BackupError::Exists(to.to_owned()));
    }
    let options = sqlite_options(url)
        .map_err(BackupError::Source)?
        .read_only(true)
        .create_if_missing(false)
        .busy_timeout(Duration::from_secs(10));
    let mut conn = options.connect().await.map_err(|e| BackupError::Source(e.into()))?;
    let written = sqlx::query("VACUUM INTO $1").bind(target).execute(&mut conn).await;
    conn.close().await.ok();
    written.map_err(|error| BackupError::Write { path: to.to_owned(), error })?;
    Ok(())
}
