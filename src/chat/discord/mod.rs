//! The Discord adapter: slash commands, buttons, user menus and forms in, engine replies out, through serenity.
//!
//! It decides nothing: every interaction becomes one engine [`Request`] and its replies become Discord calls
//! ([`render`] says how a reply looks). Text answers are given in forms (modals) opened by an "Answer" button;
//! people are picked in a user menu; choices are buttons. Direct messages that Discord refuses (error 50007) go
//! to the reply's fallback, a mention in the pilot's channel. The scheduler runs in the same process and sends
//! nudges and digests through the same REST client; under `lastmile serve` the adapter runs without one and the
//! process's one scheduler sends through [`Running::outbox`].

pub mod endpoint;
pub mod ids;
pub mod render;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serenity::all::{
    ActionRowComponent, AutocompleteChoice, ChannelId as DiscordChannel, Client, ClientBuilder,
    Command as DiscordCommand, CommandDataOption, CommandDataOptionValue, CommandInteraction, ComponentInteraction,
    ComponentInteractionDataKind, Context, CreateAutocompleteResponse, CreateInteractionResponse,
    CreateInteractionResponseFollowup, CreateInteractionResponseMessage, CreateMessage, EditInteractionResponse,
    EventHandler, GatewayIntents, GuildId, Http, HttpBuilder, HttpError, Interaction, InteractionId, Member,
    ModalInteraction, Ready, ShardManager, ShardStageUpdateEvent, UserId as DiscordUser,
};
use serenity::builder::Builder;
use serenity::gateway::ConnectionStage;
use tokio::sync::watch;
use tracing::Instrument as _;

use self::ids::{Action, Kind};
use self::render::Message;
use crate::chat::inflight::InFlight;
use crate::chat::ops::Health;
use crate::commands::{self, Command};
use crate::config::Secret;
use crate::domain::{ChannelId, UserId, WorkspaceId};
use crate::engine::{Destination, Engine, Input, Reply, Request, metric};
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
    /// How long the scheduler holds what it claimed (see `Scheduler::with_lease`).
    pub scheduler_lease: std::time::Duration,
    /// Run a scheduler of its own; false under `lastmile serve`, whose one scheduler sends through
    /// [`Running::outbox`].
    pub scheduler: bool,
    pub clock: Clock,
    /// This process's gateway shard, when several processes share the token; one shard when `None`.
    pub shard: Option<crate::config::Shard>,
    /// Receive interactions over HTTP (no gateway) when set.
    pub endpoint: Option<EndpointOptions>,
    /// Where the adapter says whether it is connected (`/readyz`).
    pub health: Arc<Health>,
}

impl std::fmt::Debug for DiscordOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscordOptions")
            .field("token", &self.token)
            .field("api_url", &self.api_url)
            .field("guild_id", &self.guild_id)
            .field("scheduler_interval", &self.scheduler_interval)
            .field("scheduler_lease", &self.scheduler_lease)
            .field("scheduler", &self.scheduler)
            .field("shard", &self.shard)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// A running bot: its connection (the gateway, or the HTTP endpoint), the interaction handler and the scheduler.
pub struct Running {
    connection: Connection,
    scheduler: Option<tokio::task::JoinHandle<()>>,
    outbox: DiscordOutbox,
    stop: watch::Sender<bool>,
    inflight: Arc<InFlight>,
    ready: watch::Receiver<Option<String>>,
    engine: Engine,
    runs: Arc<std::sync::atomic::AtomicU64>,
}

enum Connection {
    Gateway { shards: Arc<ShardManager>, client: tokio::task::JoinHandle<Result<(), serenity::Error>> },
    Endpoint { addr: SocketAddr, server: tokio::task::JoinHandle<std::io::Result<()>> },
}

/// Receive interactions over HTTP instead of the gateway.
#[derive(Clone, Debug)]
pub struct EndpointOptions {
    /// Where to listen (port 0: any free one; [`Running::endpoint_addr`] says which).
    pub listen: SocketAddr,
    /// The application's public key, which verifies every request.
    pub public_key: endpoint::PublicKey,
}

impl Running {
    /// Waits until the bot is connected and its commands are registered; returns the bot's user name.
    pub async fn ready(&mut self) -> anyhow::Result<String> {
        let name =
            self.ready.wait_for(Option::is_some).await.context("the Discord client stopped before it was ready")?;
        Ok(name.clone().unwrap_or_default())
    }

    /// How many times the scheduler has looked for due messages so far.
    pub fn scheduler_runs(&self) -> u64 {
        self.runs.load(Ordering::SeqCst)
    }

    /// Where scheduled messages for this bot's servers go (for a scheduler outside the adapter).
    pub fn outbox(&self) -> DiscordOutbox {
        self.outbox.clone()
    }

    /// The address the HTTP interactions endpoint listens on, when the bot runs that way.
    pub fn endpoint_addr(&self) -> Option<SocketAddr> {
        match &self.connection {
            Connection::Endpoint { addr, .. } => Some(*addr),
            Connection::Gateway { .. } => None,
        }
    }

    /// Whether the client stopped on its own (an invalid token, for example).
    pub fn is_finished(&self) -> bool {
        match &self.connection {
            Connection::Gateway { client, .. } => client.is_finished(),
            Connection::Endpoint { server, .. } => server.is_finished(),
        }
    }

    /// Stops taking new work, finishes what is in flight, disconnects and closes the store.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        if tokio::time::timeout(DRAIN, self.inflight.close_and_wait()).await.is_err() {
            let left = self.inflight.left();
            tracing::warn!(left, "interactions still in progress after the drain time; shutting down anyway");
        }
        if let Some(scheduler) = self.scheduler {
            let _ = scheduler.await;
        }
        let result = match self.connection {
            Connection::Gateway { shards, client } => {
                shards.shutdown_all().await;
                match client.await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(anyhow::anyhow!(e).context("the Discord client failed")),
                    Err(e) => Err(anyhow::anyhow!(e).context("the Discord client panicked")),
                }
            }
            Connection::Endpoint { server, .. } => match server.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(anyhow::anyhow!(e).context("the interactions endpoint failed")),
                Err(e) => Err(anyhow::anyhow!(e).context("the interactions endpoint panicked")),
            },
        };
        self.engine.store().close().await;
        result
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
    opts.health.expect(PLATFORM);
    let handler = Handler {
        engine: engine.clone(),
        clock: opts.clock.clone(),
        guild: opts.guild_id.map(GuildId::new),
        registered: AtomicBool::new(false),
        inflight: inflight.clone(),
        ready: ready_tx,
        dms: dms.clone(),
        health: opts.health.clone(),
    };
    let (stop, stop_rx) = watch::channel(false);
    let runs = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (connection, rest) = match &opts.endpoint {
        Some(endpoint) => {
            let http = Arc::new(http);
            // No gateway says which application this is (commands and follow-ups are sent under its id): asking
            // also proves the token before anything else is done.
            let app = http
                .get_current_application_info()
                .await
                .context("Discord refused the token (GET /oauth2/applications/@me)")?;
            http.set_application_id(app.id);
            let listener = tokio::net::TcpListener::bind(endpoint.listen)
                .await
                .with_context(|| format!("cannot listen on {} for Discord's interactions", endpoint.listen))?;
            let addr = listener.local_addr()?;
            let registered = register_commands(&http, handler.guild, engine.prompts()).await;
            handler.registered.store(registered, Ordering::SeqCst);
            let health = handler.health.clone();
            let name = app.name.clone();
            let ready_tx = handler.ready.clone();
            let app = endpoint::router(Arc::new(handler), http.clone(), endpoint.public_key.clone());
            let mut stopped = stop_rx.clone();
            let server = tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    })
                    .await
            });
            tracing::info!(%addr, bot = %name, "listening for Discord's interactions over HTTP");
            health.connected(PLATFORM);
            let _ = ready_tx.send(Some(name));
            (Connection::Endpoint { addr, server }, http)
        }
        None => {
            let mut client: Client = ClientBuilder::new_with_http(http, GatewayIntents::empty())
                .event_handler(handler)
                .await
                .context("cannot build the Discord client")?;
            let shards = client.shard_manager.clone();
            let rest = client.http.clone();
            // Each process on a shard of its own receives its servers' events only, so an interaction is answered
            // once.
            let client = match opts.shard {
                Some(shard) => tokio::spawn(async move { client.start_shard(shard.id, shard.count).await }),
                None => tokio::spawn(async move { client.start().await }),
            };
            (Connection::Gateway { shards, client }, rest)
        }
    };
    let outbox = DiscordOutbox { http: rest, engine: engine.clone(), dms };
    let scheduler = opts
        .scheduler
        .then(|| tokio::spawn(scheduler(engine.clone(), outbox.clone(), opts.clone(), stop_rx, runs.clone())));
    Ok(Running { connection, scheduler, outbox, stop, inflight, ready, engine, runs })
}

/// Runs the bot until SIGINT or SIGTERM, then shuts down cleanly.
pub async fn run(engine: Engine, opts: DiscordOptions) -> anyhow::Result<()> {
    let mut bot = start(engine, opts).await?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        name = bot.ready() => {
            let name = name?;
            tracing::info!(bot = %name, "ready");
            match bot.endpoint_addr() {
                Some(addr) => super::status(&format!(
                    "lastmile is answering Discord's interactions on http://{addr}/interactions as {name}; stop with Ctrl-C"
                )),
                None => super::status(&format!("lastmile is connected to Discord as {name}; stop with Ctrl-C")),
            }
        }
        _ = tokio::signal::ctrl_c() => return bot.shutdown().await,
        _ = terminate.recv() => return bot.shutdown().await,
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
        _ = wait_finished(&bot) => {}
    }
    super::status("lastmile is shutting down");
    bot.shutdown().await
}

async fn wait_finished(bot: &Running) {
    while !bot.is_finished() {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

async fn scheduler(
    engine: Engine,
    outbox: DiscordOutbox,
    opts: DiscordOptions,
    stop: watch::Receiver<bool>,
    runs: Arc<std::sync::atomic::AtomicU64>,
) {
    let worker = format!("discord-{}-{}", std::process::id(), chrono::Utc::now().timestamp_micros());
    let (clock, interval) = (opts.clock, opts.scheduler_interval);
    let lease = chrono::Duration::from_std(opts.scheduler_lease).unwrap_or(crate::schedule::LEASE);
    let scheduler = Scheduler::new(engine, worker).with_lease(lease);
    scheduler.run_every(clock.as_ref(), &outbox, None, interval, stop, &runs).await;
}

/// Scheduled messages, sent over REST.
#[derive(Clone)]
pub struct DiscordOutbox {
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
    health: Arc<Health>,
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
    /// Where the response goes when the interaction came over HTTP: the body of the answer to Discord's request.
    body: Option<Body>,
}

/// The response to an interaction received over HTTP, for the endpoint to write as its answer.
pub(crate) type Body = tokio::sync::oneshot::Sender<CreateInteractionResponse>;

impl<'a> Origin<'a> {
    fn new(id: InteractionId, token: &'a str, channel: DiscordChannel, body: Option<Body>) -> Self {
        Origin { id, token, channel, responded: false, deferred: false, edited: false, body }
    }
}

#[serenity::async_trait]
impl EventHandler for Handler {
    async fn ready(&self, ctx: Context, ready: Ready) {
        if !self.registered.load(Ordering::SeqCst) {
            let done = register_commands(&ctx.http, self.guild, self.engine.prompts()).await;
            self.registered.store(done, Ordering::SeqCst);
        }
        tracing::info!(user = %ready.user.name, guilds = ready.guilds.len(), "gateway ready");
        // The servers the bot is in are Discord workspaces: their scheduled messages come back here.
        for guild in &ready.guilds {
            let ws = WorkspaceId::new(guild.id.to_string());
            if let Err(e) = self.engine.platform_seen(&ws, crate::domain::Platform::Discord, (self.clock)()).await {
                tracing::warn!(error = %e, "could not record a server's platform");
            }
        }
        self.health.connected(PLATFORM);
        let _ = self.ready.send(Some(ready.user.name.clone()));
    }

    async fn shard_stage_update(&self, _ctx: Context, event: ShardStageUpdateEvent) {
        if event.new == ConnectionStage::Connected {
            self.health.connected(PLATFORM);
        } else {
            self.health.disconnected(PLATFORM, format!("gateway shard {} is {}", event.shard_id, event.new));
        }
    }

    async fn interaction_create(&self, ctx: Context, interaction: Interaction) {
        self.interaction(&ctx.http, interaction, None).await;
    }
}

/// The platform's name in metrics and readiness.
const PLATFORM: &str = "discord";

/// Registers the slash commands (in one server, or globally); whether it worked. Without them the bot is
/// unusable: it tries a few times before saying so loudly.
async fn register_commands(http: &Http, guild: Option<GuildId>, prompts: &crate::prompts::Prompts) -> bool {
    for attempt in 1..=3 {
        let commands = render::commands(prompts);
        let result = match guild {
            Some(guild) => guild.set_commands(http, commands).await.map(|_| ()),
            None => DiscordCommand::set_global_commands(http, commands).await.map(|_| ()),
        };
        match result {
            Ok(()) => return true,
            Err(e) if attempt < 3 => {
                tracing::warn!(error = %e, attempt, "cannot register the slash commands yet");
                tokio::time::sleep(std::time::Duration::from_secs(2 * attempt)).await;
            }
            Err(e) => tracing::error!(error = %e, "cannot register the slash commands: they will not appear"),
        }
    }
    false
}

impl Handler {
    /// One interaction, from the gateway or from the HTTP endpoint (`body`: where its response goes then).
    async fn interaction(&self, http: &Http, interaction: Interaction, body: Option<Body>) {
        let (kind, channel) = match &interaction {
            Interaction::Command(c) => ("command", c.channel_id),
            Interaction::Autocomplete(c) => ("autocomplete", c.channel_id),
            Interaction::Component(c) => (
                match c.data.kind {
                    ComponentInteractionDataKind::Button => "button",
                    _ => "menu",
                },
                c.channel_id,
            ),
            Interaction::Modal(m) => ("form", m.channel_id),
            other => {
                tracing::debug!(kind = ?other.kind(), "interaction ignored");
                return;
            }
        };
        let token = interaction.token().to_owned();
        let mut origin = Origin::new(interaction.id(), &token, channel, body);
        let workspace = match &interaction {
            Interaction::Command(c) | Interaction::Autocomplete(c) => c.guild_id,
            Interaction::Component(c) => c.guild_id,
            Interaction::Modal(m) => m.guild_id,
            _ => None,
        };
        let span = tracing::info_span!(
            "interaction",
            id = %interaction.id(),
            kind,
            workspace = workspace.map(|g| g.to_string()).unwrap_or_default()
        );
        self.interaction_in(http, interaction, kind, &mut origin).instrument(span).await;
    }

    async fn interaction_in(&self, http: &Http, interaction: Interaction, kind: &'static str, origin: &mut Origin<'_>) {
        let Some(_ticket) = self.inflight.enter() else {
            // Shutting down: say so rather than let the interaction fail.
            let result = match interaction {
                Interaction::Autocomplete(_) => {
                    let empty = CreateInteractionResponse::Autocomplete(CreateAutocompleteResponse::new());
                    self.respond(http, origin, empty).await
                }
                _ => self.say_ephemeral(http, origin, Key::DiscordRestarting).await,
            };
            if let Err(e) = result {
                tracing::warn!(error = %format!("{e:#}"), "could not refuse an interaction while shutting down");
            }
            return;
        };
        metric::interaction(PLATFORM, kind);
        let result = match interaction {
            Interaction::Command(c) => self.on_command(http, &c, origin).await,
            Interaction::Autocomplete(c) => self.on_autocomplete(http, &c, origin).await,
            Interaction::Component(c) => self.on_component(http, &c, origin).await,
            Interaction::Modal(m) => self.on_modal(http, &m, origin).await,
            _ => Ok(()),
        };
        if let Err(e) = result {
            tracing::error!(error = %format!("{e:#}"), "interaction failed");
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
                // A person picked in the option: as a mention, the way a typed answer names them.
                CommandDataOptionValue::User(user) => format!("<@{user}>"),
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
            platform: Some(crate::domain::Platform::Discord),
        }
    }

    /// The interaction's response: in the body of Discord's HTTP request when it came that way, over REST otherwise.
    async fn respond(&self, http: &Http, origin: &mut Origin<'_>, r: CreateInteractionResponse) -> anyhow::Result<()> {
        if let Some(body) = origin.body.take() {
            return body.send(r).map_err(|_| anyhow::anyhow!("Discord's request was gone before its response"));
        }
        r.execute(http, (origin.id, origin.token)).await.context("interaction response")
    }

    async fn say_ephemeral(&self, http: &Http, origin: &mut Origin<'_>, key: Key) -> anyhow::Result<()> {
        let msg = CreateInteractionResponseMessage::new()
            .content(self.engine.prompts().text(key))
            .ephemeral(true)
            .allowed_mentions(render::mentions(&[]));
        self.respond(http, origin, CreateInteractionResponse::Message(msg)).await
    }

    async fn on_command(&self, http: &Http, c: &CommandInteraction, origin: &mut Origin<'_>) -> anyhow::Result<()> {
        let Some(guild) = c.guild_id else {
            return self.say_ephemeral(http, origin, Key::DiscordGuildOnly).await;
        };
        let (sub, values) = options(&c.data.options);
        let parsed = commands::from_options(&c.data.name, &sub, &values);
        let admin = manages_server(c.member.as_deref());
        let input = match &parsed {
            Ok(cmd) => Input::Command(cmd.clone()),
            Err(_) => Input::CommandLine(String::new()),
        };
        let req = self.request(guild.to_string(), c.user.id, c.channel_id, input, admin);
        let replies = match parsed {
            Ok(cmd) => {
                // Summaries render a chart: defer at once rather than risk Discord's 3 seconds.
                if matches!(cmd, Command::Portfolio) {
                    self.defer(http, origin).await;
                }
                self.handle(http, origin, req.clone()).await
            }
            Err(e) => vec![self.engine.parse_error(&req, e)],
        };
        self.deliver(http, origin, req.workspace.as_str(), replies).await
    }

    async fn on_autocomplete(
        &self,
        http: &Http,
        c: &CommandInteraction,
        origin: &mut Origin<'_>,
    ) -> anyhow::Result<()> {
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
        self.respond(http, origin, response).await
    }

    async fn on_component(&self, http: &Http, c: &ComponentInteraction, origin: &mut Origin<'_>) -> anyhow::Result<()> {
        let Some(action) = Action::decode(&c.data.custom_id) else {
            return self.say_ephemeral(http, origin, Key::DiscordStale).await;
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
                return self.respond(http, origin, CreateInteractionResponse::Modal(modal)).await;
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
                _ => return self.say_ephemeral(http, origin, Key::DiscordStale).await,
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
                let replies = self.handle(http, origin, req.clone()).await;
                return self.deliver(http, origin, req.workspace.as_str(), replies).await;
            }
            Kind::Submit => return self.say_ephemeral(http, origin, Key::DiscordStale).await,
        };
        let mut req =
            self.request(workspace, c.user.id, c.channel_id, Input::Text(text), manages_server(c.member.as_ref()));
        req.bots = bots;
        req.answers = action.answers();
        let replies = self.handle(http, origin, req.clone()).await;
        self.deliver(http, origin, req.workspace.as_str(), replies).await
    }

    async fn on_modal(&self, http: &Http, m: &ModalInteraction, origin: &mut Origin<'_>) -> anyhow::Result<()> {
        let Some(action) = Action::decode(&m.data.custom_id).filter(|a| a.kind == Kind::Submit) else {
            return self.say_ephemeral(http, origin, Key::DiscordStale).await;
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
        let replies = self.handle(http, origin, req.clone()).await;
        self.deliver(http, origin, req.workspace.as_str(), replies).await
    }

    /// Runs the engine; when it takes longer than Discord allows for a first answer, defers meanwhile.
    async fn handle(&self, http: &Http, origin: &mut Origin<'_>, req: Request) -> Vec<Reply> {
        let work = self.engine.handle(req);
        tokio::pin!(work);
        tokio::select! {
            replies = &mut work => replies,
            _ = tokio::time::sleep(DEFER_AFTER), if !origin.responded => {
                self.defer(http, origin).await;
                work.await
            }
        }
    }

    /// Acknowledges the interaction with an ephemeral "thinking…", to be replaced by the first reply.
    async fn defer(&self, http: &Http, origin: &mut Origin<'_>) {
        let defer = CreateInteractionResponse::Defer(CreateInteractionResponseMessage::new().ephemeral(true));
        match self.respond(http, origin, defer).await {
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
        http: &Http,
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
            if let Err(e) = self.answer(http, origin, message, ephemeral).await {
                tracing::warn!(error = %format!("{e:#}"), "a reply could not be sent");
            }
        }
        // Whatever happened, the interaction gets an answer.
        if !origin.responded || (origin.deferred && !origin.edited) {
            self.answer(http, origin, plain(prompts.text(Key::DiscordDone)), true).await?;
        }
        for reply in elsewhere {
            let message = render::message(&reply, workspace, prompts);
            let result = match &reply.to {
                Destination::Channel(c) => post(http, c, message).await.context("channel post"),
                Destination::Dm(user) => match send_dm(http, &self.dms, user, message).await {
                    Err(e) if dm_closed(&e) => match reply.fallback.as_deref() {
                        Some(fallback @ Reply { to: Destination::Channel(c), .. }) => {
                            post(http, c, render::message(fallback, workspace, prompts)).await.context("fallback")
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
    async fn answer(&self, http: &Http, origin: &mut Origin<'_>, m: Message, ephemeral: bool) -> anyhow::Result<()> {
        if !origin.responded && m.file.is_some() && origin.body.is_some() {
            // A file cannot ride in the JSON answer to Discord's request: acknowledge, then send it over REST.
            self.defer(http, origin).await;
        }
        if !origin.responded {
            let b = with_message!(CreateInteractionResponseMessage::new(), m, add_file).ephemeral(ephemeral);
            let first = self.respond(http, origin, CreateInteractionResponse::Message(b)).await;
            if let Err(e) = first {
                tracing::warn!(error = %format!("{e:#}"), "response refused; answering with the apology");
                let apology = plain(self.engine.prompts().text(Key::InternalError));
                let b = with_message!(CreateInteractionResponseMessage::new(), apology, add_file).ephemeral(true);
                self.respond(http, origin, CreateInteractionResponse::Message(b)).await?;
            }
            origin.responded = true;
            return Ok(());
        }
        if origin.deferred && !origin.edited && ephemeral {
            origin.edited = true;
            let b = with_message!(EditInteractionResponse::new(), m, new_attachment);
            return b.execute(http, origin.token).await.map(|_| ()).context("deferred response");
        }
        let b = with_message!(CreateInteractionResponseFollowup::new(), m, add_file).ephemeral(ephemeral);
        b.execute(http, (None, origin.token)).await.map(|_| ()).context("follow-up")
    }
}
