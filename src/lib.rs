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
