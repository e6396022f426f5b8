//! The `lastmile` command: reads configuration, opens the store and runs one adapter.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use lastmile::chat::console::{self, ConsoleOptions};
use lastmile::chat::discord::EndpointOptions;
use lastmile::chat::discord::endpoint::PublicKey;
use lastmile::chat::ops::{self, Health};
use lastmile::config::{Config, LogFormat};
use lastmile::domain::WorkspaceId;
use lastmile::export;

/// lastmile: scoping reviews of AI pilots, in the chat your organisation already uses.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (optional; see lastmile.example.toml).
    #[arg(long, global = true, default_value = "lastmile.toml")]
    config: PathBuf,
    /// Database URL: sqlite://FILE (created when missing) or postgres://... Overrides DATABASE_URL.
    #[arg(long, global = true)]
    db: Option<String>,
    /// Serve /healthz, /readyz and /metrics on this address (like 127.0.0.1:9090) while the bot runs.
    #[arg(long, global = true, value_name = "ADDR")]
    ops_listen: Option<std::net::SocketAddr>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Chat with the bot in this terminal, on the embedded database (reads a transcript when stdin is not a terminal).
    Console {
        /// Workspace to act in.
        #[arg(long)]
        workspace: Option<String>,
        /// User to speak as, like @alice.
        #[arg(long = "as")]
        user: Option<String>,
        /// Channel to speak in, like #general.
        #[arg(long)]
        channel: Option<String>,
        /// Pin the clock to this instant (RFC 3339), for reproducible transcripts.
        #[arg(long)]
        now: Option<DateTime<Utc>>,
    },
    /// Write every pilot to stdout as JSON or CSV.
    Export {
        /// Only this workspace's pilots.
        #[arg(long)]
        workspace: Option<String>,
        #[arg(long, value_enum)]
        format: export::Format,
        /// Compute outcomes and flags as of this instant (RFC 3339) instead of now.
        #[arg(long)]
        now: Option<DateTime<Utc>>,
    },
    /// Run the bot in Discord (needs DISCORD_TOKEN; see the README's Discord section).
    Discord {
        /// Receive interactions over HTTP on this address instead of the gateway (needs DISCORD_PUBLIC_KEY).
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Run the bot in Slack, in Socket Mode (needs SLACK_BOT_TOKEN and SLACK_APP_TOKEN; see the README's Slack section).
    Slack,
    /// Run every configured platform (Discord, Slack) in one process with one scheduler (plain `lastmile` does).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Write a consistent copy of the SQLite database to a new FILE, while the bot runs (PostgreSQL: use pg_dump).
    Backup {
        /// The file to write; it must not exist.
        file: PathBuf,
    },
    /// Copy every row of one database into another, e.g. SQLite to PostgreSQL; run again to finish an interrupted copy.
    Copy {
        /// The database to copy (only read): sqlite://FILE or postgres://...
        #[arg(long)]
        from: String,
        /// The database to copy into: migrated first, it must be empty (or hold an interrupted copy of --from).
        #[arg(long)]
        to: String,
    },
    /// Run a narrated scenario on a fresh temporary database: scoping, evidence, nudges, decisions, the portfolio.
    Demo,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, as text or one JSON object a line; `RUST_LOG` sets what is logged (warnings by default).
fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        // Each line carries the fields of the spans it happened in: the interaction, the workspace, the pilot.
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(false).with_span_list(true).init(),
    }
}

/// Starts the ops endpoints when an address is configured.
async fn start_ops(config: &Config, engine: &lastmile::engine::Engine) -> anyhow::Result<Arc<Health>> {
    let health = Health::new();
    if let Some(addr) = config.ops_listen {
        let ops = ops::Ops {
            engine: engine.clone(),
            health: health.clone(),
            metrics: ops::recorder(),
            clock: Arc::new(Utc::now),
        };
        let (bound, _task) = ops::spawn(addr, ops).await?;
        lastmile::chat::status(&format!("ops endpoints on http://{bound}: /healthz /readyz /metrics"));
    }
    Ok(health)
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut config =
        Config::load(&cli.config).with_context(|| format!("invalid configuration ({})", cli.config.display()))?;
    if let Some(db) = cli.db {
        config.database_url = db;
    }
    if let Some(addr) = cli.ops_listen {
        config.ops_listen = Some(addr);
    }
    init_logs(config.log_format);
    lastmile::chat::set_json_logs(config.log_format == LogFormat::Json);
    if config.ops_listen.is_some() {
        // Counting starts before anything is done.
        ops::recorder();
    }
    let slack_configured = config.slack_bot_token.is_some() || config.slack_app_token.is_some();
    let command = match cli.command {
        Some(c) => c,
        None if config.discord_token.is_some() || slack_configured => Cmd::Serve,
        None => Cmd::Console { workspace: None, user: None, channel: None, now: None },
    };
    match command {
        Cmd::Console { workspace, user, channel, now } => {
            let engine = lastmile::open(&config).await?;
            start_ops(&config, &engine).await?;
            let interactive = std::io::stdin().is_terminal();
            let opts = ConsoleOptions {
                workspace: workspace.unwrap_or(config.console.workspace.clone()),
                user: user.unwrap_or(config.console.user.clone()).trim_start_matches('@').to_owned(),
                channel: channel.unwrap_or(config.console.channel.clone()).trim_start_matches('#').to_owned(),
                now,
                bots: config.console.bots.clone(),
                interactive,
                closed_dms: vec![],
                admins: config.console.admins.clone(),
                chart_dir: config.console.chart_dir.clone(),
            };
            if interactive {
                println!("{}", engine.prompts().text(lastmile::prompts::Key::ConsoleHelp));
            }
            let stdin = tokio::io::BufReader::new(tokio::io::stdin());
            let mut stdout = std::io::stdout();
            console::run(&engine, opts, stdin, &mut stdout).await?;
            engine.store().close().await;
        }
        Cmd::Export { workspace, format, now } => {
            // Read only: an export may run on a database file this process cannot write.
            let store = lastmile::open_store_read_only(&config.database_url).await?;
            let ws = workspace.map(WorkspaceId::new);
            let pilots = store.all_pilots(ws.as_ref()).await?;
            let today = now.unwrap_or_else(Utc::now).date_naive();
            export::write(&pilots, today, format, std::io::stdout().lock())?;
            store.close().await;
        }
        Cmd::Demo => {
            let dir = std::env::temp_dir().join(format!("lastmile-demo-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let mut demo_config = config.clone();
            demo_config.database_url = format!("sqlite://{}", dir.join("demo.db").display());
            let engine = lastmile::open(&demo_config).await?;
            let script = match &config.prompts_dir {
                Some(d) if d.join("demo.txt").exists() => std::fs::read_to_string(d.join("demo.txt"))?,
                _ => include_str!("../prompts/demo.txt").to_owned(),
            };
            let opts = ConsoleOptions {
                workspace: "demo".into(),
                user: "bob".into(),
                channel: "general".into(),
                now: Some("2026-11-25T10:00:00Z".parse()?),
                bots: config.console.bots.clone(),
                interactive: false,
                closed_dms: vec![],
                admins: vec!["dana".into()],
                chart_dir: dir.clone(),
            };
            let mut stdout = std::io::stdout();
            console::run(&engine, opts, script.as_bytes(), &mut stdout).await?;
            engine.store().close().await;
            eprintln!("(the demo database and chart are in {})", dir.display());
        }
        Cmd::Discord { listen } => {
            if config.discord_token.is_none() {
                anyhow::bail!(
                    "DISCORD_TOKEN is not set: create a bot application first (README, section \"Running it in Discord\")"
                );
            }
            let engine = lastmile::open(&config).await?;
            let health = start_ops(&config, &engine).await?;
            let Some(opts) = discord_options(&config, listen, health)? else {
                anyhow::bail!("DISCORD_TOKEN is not set");
            };
            lastmile::chat::discord::run(engine, opts).await?;
        }
        Cmd::Slack => {
            slack_tokens(&config)?;
            let engine = lastmile::open(&config).await?;
            let health = start_ops(&config, &engine).await?;
            let Some(opts) = slack_options(&config, health)? else {
                anyhow::bail!("SLACK_BOT_TOKEN and SLACK_APP_TOKEN are not set");
            };
            lastmile::chat::slack::run(engine, opts).await?;
        }
        Cmd::Serve => {
            if config.discord_token.is_none() && !slack_configured {
                anyhow::bail!(
                    "no platform is configured: set DISCORD_TOKEN, or SLACK_BOT_TOKEN and SLACK_APP_TOKEN (README, \"Running it in Discord\" and \"Running it in Slack\")"
                );
            }
            if slack_configured {
                slack_tokens(&config)?;
            }
            // Checked before anything is opened: a wrong setting is said at once.
            discord_options(&config, None, Health::new())?;
            let engine = lastmile::open(&config).await?;
            let health = start_ops(&config, &engine).await?;
            let opts = lastmile::chat::serve::ServeOptions {
                discord: discord_options(&config, None, health.clone())?,
                slack: slack_options(&config, health)?,
                scheduler_interval: std::time::Duration::from_secs(config.scheduler_interval_secs.max(1)),
                scheduler_lease: std::time::Duration::from_secs(config.scheduler_lease_secs.max(1)),
                clock: Arc::new(Utc::now),
            };
            lastmile::chat::serve::run(engine, opts).await?;
        }
        Cmd::Backup { file } => {
            lastmile::backup(&config.database_url, &file).await?;
            eprintln!("backed up {} to {}", lastmile::config::redact_url(&config.database_url), file.display());
        }
        Cmd::Copy { from, to } => {
            let tables = lastmile::copy(&from, &to).await?;
            for t in &tables {
                let next = t.next_id.map(|n| format!(", next id {n}")).unwrap_or_default();
                let how = if t.copied { "copied" } else { "already there" };
                println!("{:<20} {:>8} rows  checksum {}{next}: ok ({how})", t.table, t.rows, t.checksum);
            }
            eprintln!(
                "copied {} to {}: {} tables, each with the source's row count and checksum",
                lastmile::config::redact_url(&from),
                lastmile::config::redact_url(&to),
                tables.len()
            );
        }
        Cmd::Migrate => {
            let store = lastmile::open_store(&config.database_url).await?;
            store.close().await;
            eprintln!("migrations applied");
        }
    }
    Ok(())
}

/// Discord's settings, when its token is set: the gateway, or the HTTP endpoint with `listen` (or the configured
/// address) and the public key.
fn discord_options(
    config: &Config,
    listen: Option<std::net::SocketAddr>,
    health: Arc<Health>,
) -> anyhow::Result<Option<lastmile::chat::discord::DiscordOptions>> {
    let Some(token) = config.discord_token.clone() else {
        return Ok(None);
    };
    let endpoint = match listen.or(config.discord_listen) {
        None => None,
        Some(listen) => {
            let Some(key) = config.discord_public_key.as_deref() else {
                anyhow::bail!(
                    "DISCORD_PUBLIC_KEY is not set: receiving interactions over HTTP needs the application's public key (README, \"Running in production\")"
                );
            };
            let public_key = PublicKey::parse(key).map_err(anyhow::Error::msg)?;
            Some(EndpointOptions { listen, public_key })
        }
    };
    Ok(Some(lastmile::chat::discord::DiscordOptions {
        token,
        api_url: config.discord_api_url.clone(),
        guild_id: config.discord_guild_id,
        scheduler_interval: std::time::Duration::from_secs(config.scheduler_interval_secs.max(1)),
        scheduler_lease: std::time::Duration::from_secs(config.scheduler_lease_secs.max(1)),
        scheduler: true,
        clock: Arc::new(Utc::now),
        shard: config.discord_shard,
        endpoint,
        health,
    }))
}

/// Both Slack tokens, or which one is missing.
fn slack_tokens(config: &Config) -> anyhow::Result<()> {
    let missing = |name: &str, what: &str| {
        anyhow::anyhow!(
            "{name} is not set: {what} (README, section \"Running it in Slack\": create the app from slack/manifest.yaml)"
        )
    };
    if config.slack_bot_token.is_none() {
        return Err(missing("SLACK_BOT_TOKEN", "the bot token, xoxb-..."));
    }
    if config.slack_app_token.is_none() {
        return Err(missing("SLACK_APP_TOKEN", "the app-level token for Socket Mode, xapp-..."));
    }
    Ok(())
}

/// Slack's settings, when both tokens are set.
fn slack_options(config: &Config, health: Arc<Health>) -> anyhow::Result<Option<lastmile::chat::slack::SlackOptions>> {
    let (Some(bot_token), Some(app_token)) = (config.slack_bot_token.clone(), config.slack_app_token.clone()) else {
        return Ok(None);
    };
    Ok(Some(lastmile::chat::slack::SlackOptions {
        bot_token,
        app_token,
        api_url: config.slack_api_url.clone(),
        socket_connections: 2,
        reconnect_backoff_secs: 5,
        scheduler_interval: std::time::Duration::from_secs(config.scheduler_interval_secs.max(1)),
        scheduler_lease: std::time::Duration::from_secs(config.scheduler_lease_secs.max(1)),
        scheduler: true,
        clock: Arc::new(Utc::now),
        health,
    }))
}
