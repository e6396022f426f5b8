//! The Discord adapter: slash commands, buttons, user menus and forms in, engine replies out, through serenity.
//!
//! It decides nothing: every interaction becomes one engine [`Request`] and its replies become Discord calls
//! ([`render`] says how a reply looks). Text answers are given in forms (modals) opened by an "Answer" button;
//! people are picked in a user menu; choices are buttons. Direct messages that Discord refuses (error 50007) go
//! to the reply's fallback, a mention in the pilot's channel. The scheduler runs in the same process and sends
//! nudges and digests through the same REST client.

pub mod ids;
pub mod render;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serenity::all::{
    ActionRowComponent, AutocompleteChoice, ChannelId as DiscordChannel, Client, ClientBuilder,
    Command as DiscordCommand, CommandDataOption, CommandDataOptionValue, CommandInteraction, ComponentInteraction,
    ComponentInteractionDataKind, Context, CreateAutocompleteResponse, CreateInteractionResponse,
    CreateInteractionResponseFollowup, CreateInteractionResponseMessage, CreateMessage, EditInteractionResponse,
    EventHandler, GatewayIntents, GuildId, Http, HttpBuilder, HttpError, Interaction, InteractionId, Member,
    ModalInteraction, Ready, ShardManager, UserId as DiscordUser,
};
use serenity::builder::Builder;
use tokio::sync::{Notify, watch};

use self::ids::{Action, Kind};
use self::render::Message;
use crate::commands::{self, Command};
use crate::config::Secret;
use crate::domain::{ChannelId, UserId, WorkspaceId};
use crate::engine::{Destination, Engine, Input, Reply, Request};
use crate::prompts::Key;
use crate::schedule::{DeliveryError, Outbox, Scheduler};

/// The clock the adapter reads for every request and scheduler run.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// How to reach Discord.
#[derive(Clone)]
pub struct DiscordOptions {
    pub token: Secret,
    /// Send REST calls to this base instead of discord.com (a shared rate-limiting proxy, or a test double).
    /// Discord's own rate limiter is then left to the proxy.
    pub api_url: Option<String>,
    /// Register the commands in this server only (instant updates while testing); globally otherwise.
    pub guild_id: Option<u64>,
    /// How often the scheduler looks for due nudges and digests.
    pub scheduler_interval: std::time::Duration,
    pub clock: Clock,
    /// This process's gateway shard, when several processes share the token; one shard when `None`.
    pub shard: Option<crate::config::Shard>,
}

impl std::fmt::Debug for DiscordOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscordOptions")
            .field("token", &self.token)
            .field("api_url", &self.api_url)
            .field("guild_id", &self.guild_id)
            .field("scheduler_interval", &self.scheduler_interval)
            .field("shard", &self.shard)
            .finish_non_exhaustive()
    }
}

/// Requests being handled, so that shutting down can wait for them.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    closed: AtomicBool,
    idle: Notify,
}

struct Ticket<'a>(&'a InFlight);

impl InFlight {
    /// None once shutting down: new work is refused, work in progress finishes.
    fn enter(&self) -> Option<Ticket<'_>> {
        self.count.fetch_add(1, Ordering::SeqCst);
        if self.closed.load(Ordering::SeqCst) {
            self.leave();
            return None;
        }
        Some(Ticket(self))
    }

    fn leave(&self) {
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }

    async fn close_and_wait(&self) {
        self.closed.store(true, Ordering::SeqCst);
        loop {
            let idle = self.idle.notified();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

/// A running bot: the gateway connection, the interaction handler and the scheduler.
pub struct Running {
    shards: Arc<ShardManager>,
    client: tokio::task::JoinHandle<Result<(), serenity::Error>>,
    scheduler: tokio::task::JoinHandle<()>,
    stop: watch::Sender<bool>,
    inflight: Arc<InFlight>,
    ready: watch::Receiver<Option<String>>,
    engine: Engine,
    runs: Arc<std::sync::atomic::AtomicU64>,
}

impl Running {
    /// Waits until the gateway said READY and the commands were registered; returns the bot's user name.
    pub async fn ready(&mut self) -> anyhow::Result<String> {
        let name =
            self.ready.wait_for(Option::is_some).await.context("the Discord client stopped before it was ready")?;
        Ok(name.clone().unwrap_or_default())
    }

    /// How many times the scheduler has looked for due messages so far.
    pub fn scheduler_runs(&self) -> u64 {
        self.runs.load(Ordering::SeqCst)
    }

    /// Whether the client stopped on its own (an invalid token, for example).
    pub fn is_finished(&self) -> bool {
        self.client.is_finished()
    }

    /// Stops taking new work, finishes what is in flight, disconnects and closes the store.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        if tokio::time::timeout(DRAIN, self.inflight.close_and_wait()).await.is_err() {
            let left = self.inflight.count.load(Ordering::SeqCst);
            tracing::warn!(left, "interactions still in progress after the drain time; shutting down anyway");
        }
        let _ = self.scheduler.await;
        self.shards.shutdown_all().await;
        let result = self.client.await;
        self.engine.store().close().await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::anyhow!(e).context("the Discord client failed")),
            Err(e) => Err(anyhow::anyhow!(e).context("the Discord client panicked")),
        }
    }
}

/// Builds the REST client: through the proxy when one is set (its rate limiter then does the limiting).
pub fn http(opts: &DiscordOptions) -> Http {
    let mut builder = HttpBuilder::new(opts.token.expose());
    if let Some(url) = &opts.api_url {
        builder = builder.proxy(url.trim_end_matches('/')).ratelimiter_disabled(true);
    }
    builder.build()
}

/// Connects to Discord and starts handling interactions and running the scheduler.
pub async fn start(engine: Engine, opts: DiscordOptions) -> anyhow::Result<Running> {
    let http = http(&opts);
    let (ready_tx, ready) = watch::channel(None);
    let inflight = Arc::new(InFlight::default());
    let dms = Arc::new(DmChannels::default());
    let handler = Handler {
        engine: engine.clone(),
        clock: opts.clock.clone(),
        guild: opts.guild_id.map(GuildId::new),
        registered: AtomicBool::new(false),
        inflight: inflight.clone(),
        ready: ready_tx,
        dms: dms.clone(),
    };
    let mut client: Client = ClientBuilder::new_with_http(http, GatewayIntents::empty())
        .event_handler(handler)
        .await
        .context("cannot build the Discord client")?;
    let shards = client.shard_manager.clone();
    let rest = client.http.clone();
    let (stop, stop_rx) = watch::channel(false);
    let runs = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let scheduler = tokio::spawn(scheduler(
        engine.clone(),
        rest,
        dms,
        opts.clock.clone(),
        opts.scheduler_interval,
        stop_rx,
        runs.clone(),
    ));
    // Each process on a shard of its own receives its servers' events only, so an interaction is answered once.
    let client = match opts.shard {
        Some(shard) => tokio::spawn(async move { client.start_shard(shard.id, shard.count).await }),
        None => tokio::spawn(async move { client.start().await }),
    };
    Ok(Running { shards, client, scheduler, stop, inflight, ready, engine, runs })
}

/// Runs the bot until SIGINT or SIGTERM, then shuts down cleanly.
pub async fn run(engine: Engine, opts: DiscordOptions) -> anyhow::Result<()> {
    let mut bot = start(engine, opts).await?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        name = bot.ready() => {
            let name = name?;
            tracing::info!(bot = %name, "ready");
            eprintln!("lastmile is connected to Discord as {name}; stop with Ctrl-C");
        }
        _ = tokio::signal::ctrl_c() => return bot.shutdown().await,
        _ = terminate.recv() => return bot.shutdown().await,
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
        _ = wait_finished(&bot) => {}
    }
    eprintln!("lastmile is shutting down");
    bot.shutdown().await
}

async fn wait_finished(bot: &Running) {
    while !bot.is_finished() {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

async fn scheduler(
    engine: Engine,
    http: Arc<Http>,
    dms: Arc<DmChannels>,
    clock: Clock,
    interval: std::time::Duration,
    mut stop: watch::Receiver<bool>,
    runs: Arc<std::sync::atomic::AtomicU64>,
) {
    let worker = format!("discord-{}-{}", std::process::id(), chrono::Utc::now().timestamp_micros());
    let outbox = DiscordOutbox { http, engine: engine.clone(), dms };
    let scheduler = Scheduler::new(engine, worker);
    loop {
        if let Err(e) = scheduler.run_due(clock.as_ref(), &outbox, None).await {
            tracing::error!(error = %e, "scheduler run failed");
        }
        if let Err(e) = scheduler.run_digests(clock(), &outbox, None).await {
            tracing::error!(error = %e, "digest run failed");
        }
        runs.fetch_add(1, Ordering::SeqCst);
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Scheduled messages, sent over REST.
struct DiscordOutbox {
    http: Arc<Http>,
    engine: Engine,
    dms: Arc<DmChannels>,
}

impl Outbox for DiscordOutbox {
    async fn deliver(&self, _at: DateTime<Utc>, workspace: &WorkspaceId, reply: &Reply) -> Result<(), DeliveryError> {
        let message = render::message(reply, workspace.as_str(), self.engine.prompts());
        let sent = match &reply.to {
            Destination::Dm(user) => send_dm(&self.http, &self.dms, user, message).await,
            Destination::Channel(channel) => post(&self.http, channel, message).await,
            Destination::Ephemeral(_) => {
                return Err(DeliveryError::Failed("an ephemeral reply has no interaction".into()));
            }
        };
        match sent {
            Ok(()) => Ok(()),
            Err(e) if dm_closed(&e) => Err(DeliveryError::DmClosed),
            Err(e) => Err(DeliveryError::Failed(e.to_string())),
        }
    }
}

/// Puts a message on one of serenity's message builders (they share method names, not a trait); `$attach` is
/// the builder's method for a new file.
macro_rules! with_message {
    ($builder:expr, $m:expr, $attach:ident) => {{
        let m: Message = $m;
        let mut b = $builder.embeds(m.embeds).components(m.components).allowed_mentions(m.mentions);
        if !m.content.is_empty() {
            b = b.content(m.content);
        }
        if let Some(f) = m.file {
            b = b.$attach(f);
        }
        b
    }};
}

/// A message of plain text that pings nobody.
fn plain(text: String) -> Message {
    Message { content: text, embeds: vec![], components: vec![], mentions: render::mentions(&[]), file: None }
}

/// Discord's "Cannot send messages to this user".
fn dm_closed(e: &serenity::Error) -> bool {
    matches!(e, serenity::Error::Http(HttpError::UnsuccessfulRequest(r)) if r.error.code == 50007)
}

fn snowflake(id: &str) -> Option<u64> {
    id.parse::<u64>().ok().filter(|n| *n != 0)
}

fn create_message(m: Message) -> CreateMessage {
    with_message!(CreateMessage::new(), m, add_file)
}

async fn post(http: &Http, channel: &ChannelId, m: Message) -> Result<(), serenity::Error> {
    let Some(id) = snowflake(channel.as_str()) else {
        return Err(serenity::Error::Other("not a Discord channel"));
    };
    DiscordChannel::new(id).send_message(http, create_message(m)).await.map(|_| ())
}

async fn send_dm(http: &Http, dms: &DmChannels, user: &UserId, m: Message) -> Result<(), serenity::Error> {
    let Some(id) = snowflake(user.as_str()) else {
        return Err(serenity::Error::Other("not a Discord user"));
    };
    let channel = dms.open(http, id).await?;
    channel.send_message(http, create_message(m)).await.map(|_| ())
}

/// Direct-message channels already opened, by user. A person's DM channel with the bot never changes, so it is
/// opened (one REST call) once per person, not before every message.
#[derive(Default)]
struct DmChannels(std::sync::Mutex<std::collections::HashMap<u64, DiscordChannel>>);

/// People whose DM channel is remembered; past this the memory starts again (it only saves REST calls).
const DM_CHANNELS_KEPT: usize = 10_000;

impl DmChannels {
    async fn open(&self, http: &Http, user: u64) -> Result<DiscordChannel, serenity::Error> {
        if let Some(channel) = self.known(user) {
            return Ok(channel);
        }
        let channel = DiscordUser::new(user).create_dm_channel(http).await?.id;
        let mut known = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if known.len() >= DM_CHANNELS_KEPT {
            known.clear();
        }
        known.insert(user, channel);
        Ok(channel)
    }

    fn known(&self, user: u64) -> Option<DiscordChannel> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&user).copied()
    }
}

struct Handler {
    engine: Engine,
    clock: Clock,
    guild: Option<GuildId>,
    registered: AtomicBool,
    inflight: Arc<InFlight>,
    ready: watch::Sender<Option<String>>,
    dms: Arc<DmChannels>,
}

/// Discord invalidates an interaction not answered within 3 seconds: past this, the bot defers and follows up.
const DEFER_AFTER: std::time::Duration = std::time::Duration::from_millis(2000);
/// How long shutting down waits for interactions in progress.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(20);

/// The interaction being answered: its first reply is the interaction's response, the rest follow up.
struct Origin<'a> {
    id: InteractionId,
    token: &'a str,
    channel: DiscordChannel,
    /// The interaction was acknowledged (answered or deferred).
    responded: bool,
    /// It was deferred (ephemerally): the first reply for the user replaces the "thinking…" message.
    deferred: bool,
    /// The deferred message was replaced.
    edited: bool,
}

impl<'a> Origin<'a> {
    fn new(id: InteractionId, token: &'a str, channel: DiscordChannel) -> Self {
        Origin { id, token, channel, responded: false, deferred: false, edited: false }
    }
}

#[serenity::async_trait]
impl EventHandler for Handler {
    async fn ready(&self, ctx: Context, ready: Ready) {
        // Without its commands the bot is unusable: try a few times before saying so loudly.
        for attempt in 1..=3 {
            if self.registered.load(Ordering::SeqCst) {
                break;
            }
            let commands = render::commands(self.engine.prompts());
            let result = match self.guild {
                Some(guild) => guild.set_commands(&ctx.http, commands).await.map(|_| ()),
                None => DiscordCommand::set_global_commands(&ctx.http, commands).await.map(|_| ()),
            };
            match result {
                Ok(()) => self.registered.store(true, Ordering::SeqCst),
                Err(e) if attempt < 3 => {
                    tracing::warn!(error = %e, attempt, "cannot register the slash commands yet");
                    tokio::time::sleep(std::time::Duration::from_secs(2 * attempt)).await;
                }
                Err(e) => tracing::error!(error = %e, "cannot register the slash commands: they will not appear"),
            }
        }
        tracing::info!(user = %ready.user.name, guilds = ready.guilds.len(), "gateway ready");
        let _ = self.ready.send(Some(ready.user.name.clone()));
    }

    async fn interaction_create(&self, ctx: Context, interaction: Interaction) {
        let Some(_ticket) = self.inflight.enter() else {
            // Shutting down: say so rather than let the interaction fail.
            let (id, token) = (interaction.id(), interaction.token().to_owned());
            let result = match interaction {
                Interaction::Autocomplete(_) => {
                    let empty = CreateInteractionResponse::Autocomplete(CreateAutocompleteResponse::new());
                    self.respond(&ctx, id, &token, empty).await
                }
                Interaction::Command(_) | Interaction::Component(_) | Interaction::Modal(_) => {
                    self.say_ephemeral(&ctx, id, &token, Key::DiscordRestarting).await
                }
                _ => Ok(()),
            };
            if let Err(e) = result {
                tracing::warn!(error = %format!("{e:#}"), "could not refuse an interaction while shutting down");
            }
            return;
        };
        let result = match interaction {
            Interaction::Command(c) => self.on_command(&ctx, &c).await,
            Interaction::Autocomplete(c) => self.on_autocomplete(&ctx, &c).await,
            Interaction::Component(c) => self.on_component(&ctx, &c).await,
            Interaction::Modal(m) => self.on_modal(&ctx, &m).await,
            other => {
                tracing::debug!(kind = ?other.kind(), "interaction ignored");
                Ok(())
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "interaction failed");
        }
    }
}

/// Whether Discord counts the member as a server administrator (Manage Server).
fn manages_server(member: Option<&Member>) -> bool {
    member.and_then(|m| m.permissions).is_some_and(|p| p.manage_guild())
}

/// A command's subcommand and its options as text.
fn options(data: &[CommandDataOption]) -> (String, BTreeMap<String, String>) {
    let mut sub = String::new();
    let mut values = BTreeMap::new();
    let collect = |opts: &[CommandDataOption], values: &mut BTreeMap<String, String>| {
        for o in opts {
            let v = match &o.value {
                CommandDataOptionValue::String(s) => s.clone(),
                CommandDataOptionValue::Integer(n) => n.to_string(),
                CommandDataOptionValue::Number(n) => n.to_string(),
                CommandDataOptionValue::Boolean(b) => b.to_string(),
                CommandDataOptionValue::Autocomplete { value, .. } => value.clone(),
                _ => continue,
            };
            values.insert(o.name.clone(), v);
        }
    };
    for o in data {
        match &o.value {
            CommandDataOptionValue::SubCommand(inner) => {
                sub = o.name.clone();
                collect(inner, &mut values);
            }
            CommandDataOptionValue::SubCommandGroup(_) => {}
            _ => collect(std::slice::from_ref(o), &mut values),
        }
    }
    (sub, values)
}

impl Handler {
    fn request(
        &self,
        workspace: String,
        user: DiscordUser,
        channel: DiscordChannel,
        input: Input,
        admin: bool,
    ) -> Request {
        Request {
            workspace: WorkspaceId::new(workspace),
            user: UserId::new(user.to_string()),
            channel: ChannelId::new(channel.to_string()),
            now: (self.clock)(),
            input,
            bots: vec![],
            admin,
            answers: None,
        }
    }

    async fn respond(
        &self,
        ctx: &Context,
        id: InteractionId,
        token: &str,
        r: CreateInteractionResponse,
    ) -> anyhow::Result<()> {
        r.execute(&ctx.http, (id, token)).await.context("interaction response")
    }

    async fn say_ephemeral(&self, ctx: &Context, id: InteractionId, token: &str, key: Key) -> anyhow::Result<()> {
        let msg = CreateInteractionResponseMessage::new()
            .content(self.engine.prompts().text(key))
            .ephemeral(true)
            .allowed_mentions(render::mentions(&[]));
        self.respond(ctx, id, token, CreateInteractionResponse::Message(msg)).await
    }

    async fn on_command(&self, ctx: &Context, c: &CommandInteraction) -> anyhow::Result<()> {
        let Some(guild) = c.guild_id else {
            return self.say_ephemeral(ctx, c.id, &c.token, Key::DiscordGuildOnly).await;
        };
        let (sub, values) = options(&c.data.options);
        let parsed = commands::from_options(&c.data.name, &sub, &values);
        let admin = manages_server(c.member.as_deref());
        let input = match &parsed {
            Ok(cmd) => Input::Command(cmd.clone()),
            Err(_) => Input::CommandLine(String::new()),
        };
        let req = self.request(guild.to_string(), c.user.id, c.channel_id, input, admin);
        let mut origin = Origin::new(c.id, &c.token, c.channel_id);
        let replies = match parsed {
            Ok(cmd) => {
                // Summaries render a chart: defer at once rather than risk Discord's 3 seconds.
                if matches!(cmd, Command::Portfolio) {
                    self.defer(ctx, &mut origin).await;
                }
                self.handle(ctx, &mut origin, req.clone()).await
            }
            Err(e) => vec![self.engine.parse_error(&req, e)],
        };
        self.deliver(ctx, &mut origin, req.workspace.as_str(), replies).await
    }

    async fn on_autocomplete(&self, ctx: &Context, c: &CommandInteraction) -> anyhow::Result<()> {
        let mut choices = Vec::new();
        if let (Some(guild), Some(focused)) = (c.guild_id, c.data.autocomplete())
            && focused.name == "pilot"
        {
            let ws = WorkspaceId::new(guild.to_string());
            // A failing store offers no names, but still answers.
            let names =
                match self.engine.store().suggest_pilots(&ws, focused.value, render::MAX_AUTOCOMPLETE as i64).await {
                    Ok(names) => names,
                    Err(e) => {
                        tracing::error!(error = %e, "autocomplete failed");
                        vec![]
                    }
                };
            choices =
                names.into_iter().map(|n| AutocompleteChoice::new(ids::cut(&n, 100), ids::cut(&n, 100))).collect();
        }
        let response = CreateInteractionResponse::Autocomplete(CreateAutocompleteResponse::new().set_choices(choices));
        self.respond(ctx, c.id, &c.token, response).await
    }

    async fn on_component(&self, ctx: &Context, c: &ComponentInteraction) -> anyhow::Result<()> {
        let Some(action) = Action::decode(&c.data.custom_id) else {
            return self.say_ephemeral(ctx, c.id, &c.token, Key::DiscordStale).await;
        };
        // In a server the server is the workspace; in a direct message the button says which.
        let workspace = c.guild_id.map(|g| g.to_string()).unwrap_or_else(|| action.workspace.clone());
        let mut bots = Vec::new();
        let text = match &action.kind {
            Kind::Answer { multiline, max_chars, label } => {
                // The form starts from the answer shown with the question: the one on record or the one refused.
                let current = self.engine.prompts().text(Key::DiscordCurrent);
                let prefill = c
                    .message
                    .embeds
                    .iter()
                    .find(|e| e.title.as_deref() == Some(ids::cut(&current, render::MAX_EMBED_TITLE).as_str()))
                    .and_then(|e| e.description.clone());
                let modal = render::modal(
                    &workspace,
                    action.answers().as_deref(),
                    label,
                    *multiline,
                    *max_chars,
                    prefill.as_deref(),
                    self.engine.prompts(),
                );
                return self.respond(ctx, c.id, &c.token, CreateInteractionResponse::Modal(modal)).await;
            }
            // Choices are answered by their number: the button names its question, so the number cannot land on
            // another one, and a label cut to fit a button still picks its choice.
            Kind::Choice { index } => (index + 1).to_string(),
            Kind::Person => match &c.data.kind {
                ComponentInteractionDataKind::UserSelect { values } if !values.is_empty() => {
                    let user = values[0];
                    if c.data.resolved.users.get(&user).is_some_and(|u| u.bot) {
                        bots.push(UserId::new(user.to_string()));
                    }
                    format!("<@{user}>")
                }
                _ => return self.say_ephemeral(ctx, c.id, &c.token, Key::DiscordStale).await,
            },
            Kind::Skip { word } => word.clone(),
            Kind::Run { command } => {
                // A shortcut: the command as if typed, with every check a typed one gets.
                let req = self.request(
                    workspace,
                    c.user.id,
                    c.channel_id,
                    Input::CommandLine(command.clone()),
                    manages_server(c.member.as_ref()),
                );
                let mut origin = Origin::new(c.id, &c.token, c.channel_id);
                let replies = self.handle(ctx, &mut origin, req.clone()).await;
                return self.deliver(ctx, &mut origin, req.workspace.as_str(), replies).await;
            }
            Kind::Submit => return self.say_ephemeral(ctx, c.id, &c.token, Key::DiscordStale).await,
        };
        let mut req =
            self.request(workspace, c.user.id, c.channel_id, Input::Text(text), manages_server(c.member.as_ref()));
        req.bots = bots;
        req.answers = action.answers();
        let mut origin = Origin::new(c.id, &c.token, c.channel_id);
        let replies = self.handle(ctx, &mut origin, req.clone()).await;
        self.deliver(ctx, &mut origin, req.workspace.as_str(), replies).await
    }

    async fn on_modal(&self, ctx: &Context, m: &ModalInteraction) -> anyhow::Result<()> {
        let Some(action) = Action::decode(&m.data.custom_id).filter(|a| a.kind == Kind::Submit) else {
            return self.say_ephemeral(ctx, m.id, &m.token, Key::DiscordStale).await;
        };
        let workspace = m.guild_id.map(|g| g.to_string()).unwrap_or_else(|| action.workspace.clone());
        let text = m
            .data
            .components
            .iter()
            .flat_map(|row| &row.components)
            .find_map(|comp| match comp {
                ActionRowComponent::InputText(t) if t.custom_id == render::INPUT_ID => t.value.clone(),
                _ => None,
            })
            .unwrap_or_default();
        let mut req =
            self.request(workspace, m.user.id, m.channel_id, Input::Text(text), manages_server(m.member.as_ref()));
        req.answers = action.answers();
        let mut origin = Origin::new(m.id, &m.token, m.channel_id);
        let replies = self.handle(ctx, &mut origin, req.clone()).await;
        self.deliver(ctx, &mut origin, req.workspace.as_str(), replies).await
    }

    /// Runs the engine; when it takes longer than Discord allows for a first answer, defers meanwhile.
    async fn handle(&self, ctx: &Context, origin: &mut Origin<'_>, req: Request) -> Vec<Reply> {
        let work = self.engine.handle(req);
        tokio::pin!(work);
        tokio::select! {
            replies = &mut work => replies,
            _ = tokio::time::sleep(DEFER_AFTER), if !origin.responded => {
                self.defer(ctx, origin).await;
                work.await
            }
        }
    }

    /// Acknowledges the interaction with an ephemeral "thinking…", to be replaced by the first reply.
    async fn defer(&self, ctx: &Context, origin: &mut Origin<'_>) {
        let defer = CreateInteractionResponse::Defer(CreateInteractionResponseMessage::new().ephemeral(true));
        match self.respond(ctx, origin.id, origin.token, defer).await {
            Ok(()) => {
                origin.responded = true;
                origin.deferred = true;
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "could not defer an interaction"),
        }
    }

    /// Sends an interaction's replies: those for the user and for the channel it came from answer the interaction
    /// (the first one is its response, the others follow up), then posts elsewhere and direct messages go over
    /// REST, so that the response never waits for them.
    async fn deliver(
        &self,
        ctx: &Context,
        origin: &mut Origin<'_>,
        workspace: &str,
        replies: Vec<Reply>,
    ) -> anyhow::Result<()> {
        let prompts = self.engine.prompts();
        let here = |r: &Reply| match &r.to {
            Destination::Ephemeral(_) => Some(true),
            Destination::Channel(c) if snowflake(c.as_str()) == Some(origin.channel.get()) => Some(false),
            _ => None,
        };
        let (mine, elsewhere): (Vec<Reply>, Vec<Reply>) = replies.into_iter().partition(|r| here(r).is_some());
        for reply in mine {
            let ephemeral = matches!(reply.to, Destination::Ephemeral(_));
            let message = render::message(&reply, workspace, prompts);
            if let Err(e) = self.answer(ctx, origin, message, ephemeral).await {
                tracing::warn!(error = %format!("{e:#}"), "a reply could not be sent");
            }
        }
        // Whatever happened, the interaction gets an answer.
        if !origin.responded || (origin.deferred && !origin.edited) {
            self.answer(ctx, origin, plain(prompts.text(Key::DiscordDone)), true).await?;
        }
        for reply in elsewhere {
            let message = render::message(&reply, workspace, prompts);
            let result = match &reply.to {
                Destination::Channel(c) => post(&ctx.http, c, message).await.context("channel post"),
                Destination::Dm(user) => match send_dm(&ctx.http, &self.dms, user, message).await {
                    Err(e) if dm_closed(&e) => match reply.fallback.as_deref() {
                        Some(fallback @ Reply { to: Destination::Channel(c), .. }) => {
                            post(&ctx.http, c, render::message(fallback, workspace, prompts)).await.context("fallback")
                        }
                        _ => Ok(()),
                    },
                    other => other.context("direct message"),
                },
                Destination::Ephemeral(_) => Ok(()),
            };
            // One failed message must not keep the others from being sent.
            if let Err(e) = result {
                tracing::warn!(error = %format!("{e:#}"), "a reply could not be sent");
            }
        }
        Ok(())
    }

    /// Answers the interaction itself: the response first (or the deferred message), follow-ups after. A first
    /// response Discord refuses is replaced by the plain apology, so the user is never left with a failure.
    async fn answer(&self, ctx: &Context, origin: &mut Origin<'_>, m: Message, ephemeral: bool) -> anyhow::Result<()> {
        if !origin.responded {
            let b = with_message!(CreateInteractionResponseMessage::new(), m, add_file).ephemeral(ephemeral);
            let first = self.respond(ctx, origin.id, origin.token, CreateInteractionResponse::Message(b)).await;
            if let Err(e) = first {
                tracing::warn!(error = %format!("{e:#}"), "response refused; answering with the apology");
                let apology = plain(self.engine.prompts().text(Key::InternalError));
                let b = with_message!(CreateInteractionResponseMessage::new(), apology, add_file).ephemeral(true);
                self.respond(ctx, origin.id, origin.token, CreateInteractionResponse::Message(b)).await?;
            }
            origin.responded = true;
            return Ok(());
        }
        if origin.deferred && !origin.edited && ephemeral {
            origin.edited = true;
            let b = with_message!(EditInteractionResponse::new(), m, new_attachment);
            return b.execute(&ctx.http, origin.token).await.map(|_| ()).context("deferred response");
        }
        let b = with_message!(CreateInteractionResponseFollowup::new(), m, add_file).ephemeral(ephemeral);
        b.execute(&ctx.http, (None, origin.token)).await.map(|_| ()).context("follow-up")
    }
}
