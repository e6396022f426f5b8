//! lastmile: a chat bot that runs scoping reviews of AI pilots. See README.md for the map of this crate.

pub mod chat;
pub mod commands;
pub mod config;
pub mod dialogue;
pub mod domain;
pub mod engine;
pub mod export;
pub mod prompts;
pub mod store;

use std::sync::Arc;

use anyhow::Context;

/// Opens the store named by `database_url`, applies migrations, loads prompts and builds the engine.
pub async fn open(config: &config::Config) -> anyhow::Result<engine::Engine> {
    let prompts = match &config.prompts_dir {
        Some(dir) => prompts::Prompts::load_dir(dir)?,
        None => prompts::Prompts::embedded()?,
    };
    let store = open_store(&config.database_url).await?;
    Ok(engine::Engine::new(store, Arc::new(prompts), config.engine_settings()))
}

pub async fn open_store(url: &str) -> anyhow::Result<store::Store> {
    let shown = config::redact_url(url);
    let store = store::Store::connect(url).await.with_context(|| format!("cannot open database {shown}"))?;
    store.migrate().await.with_context(|| format!("cannot migrate database {shown}"))?;
    tracing::info!(database = %shown, dialect = store.dialect(), "store ready");
    Ok(store)
}
pub mod render;
pub mod schedule;

/// Opens the store named by `url` to read it only: nothing is created or migrated (`export` on a read-only file).
pub async fn open_store_read_only(url: &str) -> anyhow::Result<store::Store> {
    let shown = config::redact_url(url);
    store::Store::connect_read_only(url).await.with_context(|| format!("cannot read database {shown}"))
}

/// Writes a consistent copy of the SQLite database named by `url` to the new file `to` (`lastmile backup`).
pub async fn backup(url: &str, to: &std::path::Path) -> anyhow::Result<()> {
    let shown = config::redact_url(url);
    store::backup_sqlite(url, to).await.with_context(|| format!("cannot back up {shown}"))
}

/// Copies every row of the database `from` into the database `to` (`lastmile copy`): the source is only read,
/// the target is migrated first and must be empty, or hold an interrupted copy of the same source.
pub async fn copy(from: &str, to: &str) -> anyhow::Result<Vec<store::TableCopied>> {
    let (shown_from, shown_to) = (config::redact_url(from), config::redact_url(to));
    if from == to {
        anyhow::bail!("--from and --to name the same database ({shown_from})");
    }
    let source = open_store_read_only(from).await?;
    let target = store::Store::connect(to).await.with_context(|| format!("cannot open database {shown_to}"));
    let target = match target {
        Ok(t) => t,
        Err(e) => {
            source.close().await;
            return Err(e);
        }
    };
    let copied = source.copy_to(&target).await.with_context(|| format!("cannot copy {shown_from} to {shown_to}"));
    source.close().await;
    target.close().await;
    copied
}
