//! `lastmile serve`: every configured platform in one process, with one scheduler. Each workspace's scheduled
//! messages go out through the platform recorded for it (the adapter that served it said which); a workspace
//! with none recorded (made in the console, say) is skipped with a warning rather than sent to the wrong place.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::discord::{self, DiscordOptions, DiscordOutbox};
use super::slack::{self, SlackOptions, SlackOutbox};
use crate::domain::{Platform, WorkspaceId};
use crate::engine::{Engine, Reply};
use crate::schedule::{Clock, DeliveryError, Outbox, Scheduler};

/// How long shutting down waits for a sweep in progress.
const SCHEDULER_DRAIN: std::time::Duration = std::time::Duration::from_secs(20);

/// The platforms to run (at least one) and the one scheduler's settings. The adapters' own `scheduler` option
/// is ignored: they run without one.
pub struct ServeOptions {
    pub discord: Option<DiscordOptions>,
    pub slack: Option<SlackOptions>,
    pub scheduler_interval: std::time::Duration,
    pub scheduler_lease: std::time::Duration,
    pub clock: Clock,
}

/// Every platform's outbox, and which workspace lives where.
#[derive(Clone)]
pub struct Routes {
    discord: Option<DiscordOutbox>,
    slack: Option<SlackOutbox>,
    workspaces: HashMap<String, Platform>,
}

impl Routes {
    fn runs(&self, platform: Platform) -> bool {
        match platform {
            Platform::Discord => self.discord.is_some(),
            Platform::Slack => self.slack.is_some(),
        }
    }
}

impl Outbox for Routes {
    async fn deliver(&self, at: DateTime<Utc>, workspace: &WorkspaceId, reply: &Reply) -> Result<(), DeliveryError> {
        match (self.workspaces.get(workspace.as_str()), &self.discord, &self.slack) {
            (Some(Platform::Discord), Some(discord), _) => discord.deliver(at, workspace, reply).await,
            (Some(Platform::Slack), _, Some(slack)) => slack.deliver(at, workspace, reply).await,
            (platform, _, _) => Err(DeliveryError::Failed(format!(
                "workspace {} has no platform this process runs ({})",
                workspace.as_str(),
                platform.map_or("none recorded", |p| p.as_str())
            ))),
        }
    }
}

/// The running platforms and their one scheduler.
pub struct Serving {
    pub discord: Option<discord::Running>,
    pub slack: Option<slack::Running>,
    scheduler: tokio::task::JoinHandle<()>,
    stop: watch::Sender<bool>,
    runs: Arc<AtomicU64>,
}

impl Serving {
    /// How many times the scheduler has looked for due messages so far.
    pub fn scheduler_runs(&self) -> u64 {
        self.runs.load(Ordering::SeqCst)
    }

    /// Stops the scheduler, then every platform (each finishes what it has in flight).
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        // A sweep stuck on a platform that does not answer must not keep the process from stopping.
        let mut scheduler = self.scheduler;
        if tokio::time::timeout(SCHEDULER_DRAIN, &mut scheduler).await.is_err() {
            tracing::warn!("the scheduler was still sending after the drain time; stopped");
            scheduler.abort();
        }
        let discord = async {
            match self.discord {
                Some(d) => d.shutdown().await,
                None => Ok(()),
            }
        };
        let slack = async {
            match self.slack {
                Some(s) => s.shutdown().await,
                None => Ok(()),
            }
        };
        let (d, s) = tokio::join!(discord, slack);
        d.and(s)
    }
}

/// Connects every configured platform and starts the one scheduler.
pub async fn start(engine: Engine, opts: ServeOptions) -> anyhow::Result<Serving> {
    if opts.discord.is_none() && opts.slack.is_none() {
        anyhow::bail!(
            "no platform is configured: set DISCORD_TOKEN, or SLACK_BOT_TOKEN and SLACK_APP_TOKEN (README, \"Running it in Discord\" and \"Running it in Slack\")"
        );
    }
    let slack = match opts.slack {
        Some(o) => Some(slack::start(engine.clone(), SlackOptions { scheduler: false, ..o }).await?),
        None => None,
    };
    let discord = match opts.discord {
        Some(o) => match discord::start(engine.clone(), DiscordOptions { scheduler: false, ..o }).await {
            Ok(d) => Some(d),
            Err(e) => {
                if let Some(s) = slack {
                    let _ = s.shutdown().await;
                }
                return Err(e);
            }
        },
        None => None,
    };
    let routes = Routes {
        discord: discord.as_ref().map(discord::Running::outbox),
        slack: slack.as_ref().map(slack::Running::outbox),
        workspaces: HashMap::new(),
    };
    let (stop, stop_rx) = watch::channel(false);
    let runs = Arc::new(AtomicU64::new(0));
    let lease = chrono::Duration::from_std(opts.scheduler_lease).unwrap_or(crate::schedule::LEASE);
    let worker = format!("serve-{}-{}", std::process::id(), Utc::now().timestamp_micros());
    let scheduler = Scheduler::new(engine, worker).with_lease(lease);
    let task = tokio::spawn(schedule(scheduler, routes, opts.clock, opts.scheduler_interval, stop_rx, runs.clone()));
    Ok(Serving { discord, slack, scheduler: task, stop, runs })
}

/// The one scheduler: each sweep sends the due messages of every workspace that lives on a platform this process
/// runs, through that platform.
async fn schedule(
    scheduler: Scheduler,
    mut routes: Routes,
    clock: Clock,
    interval: std::time::Duration,
    mut stop: watch::Receiver<bool>,
    runs: Arc<AtomicU64>,
) {
    let mut warned: HashSet<String> = HashSet::new();
    loop {
        if let Err(e) = sweep(&scheduler, &mut routes, &clock, &mut warned).await {
            tracing::error!(error = %e, "scheduler run failed");
        }
        runs.fetch_add(1, Ordering::SeqCst);
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

async fn sweep(
    scheduler: &Scheduler,
    routes: &mut Routes,
    clock: &Clock,
    warned: &mut HashSet<String>,
) -> anyhow::Result<()> {
    let engine = scheduler.engine();
    let platforms = engine.platforms().await?;
    routes.workspaces = platforms.iter().map(|(ws, p)| (ws.as_str().to_owned(), *p)).collect();
    // Only the workspaces this process can reach are claimed: another process (or platform) sends the others.
    for (ws, _) in platforms.iter().filter(|(_, p)| routes.runs(*p)) {
        scheduler.sweep(clock.as_ref(), &*routes, Some(ws)).await;
    }
    for ws in engine.due_without_platform(clock()).await? {
        if warned.insert(ws.as_str().to_owned()) {
            tracing::warn!(
                workspace = ws.as_str(),
                "messages are due in a workspace no chat platform has served (made in the console?): not sent"
            );
        }
    }
    Ok(())
}

/// Runs every configured platform until SIGINT or SIGTERM, then shuts down cleanly.
pub async fn run(engine: Engine, opts: ServeOptions) -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut serving = start(engine, opts).await?;
    if let Some(s) = &serving.slack {
        let install = s.install();
        super::status(&format!(
            "lastmile is connected to Slack (team {}) as {} in Socket Mode",
            install.team, install.bot_name
        ));
    }
    if let Some(d) = serving.discord.as_mut() {
        tokio::select! {
            name = d.ready() => {
                let name = name?;
                match d.endpoint_addr() {
                    Some(addr) => super::status(&format!(
                        "lastmile is answering Discord's interactions on http://{addr}/interactions as {name}"
                    )),
                    None => super::status(&format!("lastmile is connected to Discord as {name}")),
                }
            }
            _ = tokio::signal::ctrl_c() => return serving.shutdown().await,
            _ = terminate.recv() => return serving.shutdown().await,
        }
    }
    super::status("one scheduler sends each workspace's messages through its own platform; stop with Ctrl-C");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
        _ = discord_finished(&serving) => {}
    }
    super::status("lastmile is shutting down");
    serving.shutdown().await
}

/// Resolves when the Discord client stopped on its own (never when Discord is not run).
async fn discord_finished(serving: &Serving) {
    match &serving.discord {
        Some(d) => {
            while !d.is_finished() {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
        None => std::future::pending().await,
    }
}
