//! The Slack adapter: slash commands, buttons, user menus and modals in, engine replies out, through
//! slack-morphism in Socket Mode.
//!
//! It decides nothing: every event becomes one engine [`Request`] and its replies become Web API calls
//! ([`render`] says how a reply looks). A question asked in answer to a command or a button opens a modal
//! (`views.open` with the event's trigger id); a modal's submission is answered in its acknowledgement: a refused
//! answer as a field error on the same modal (the typed text stays), the next question as an updated modal.
//! Other replies for the user are ephemeral (the event's `response_url`, else `chat.postEphemeral`); channel posts
//! go through `chat.postMessage`; direct messages through `conversations.open`, falling back to the reply's
//! channel mention when Slack refuses. One Slack team is one lastmile workspace: events from another team are
//! refused. The scheduler runs in the same process and sends through the same client; under `lastmile serve` the
//! adapter runs without one and the process's one scheduler sends through [`Running::outbox`].

pub mod render;
pub mod signature;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde_json::Value;
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;
use tokio::sync::watch;

use self::render::{INPUT_ID, Metadata};
use crate::chat::discord::ids::{Action, Kind};
use crate::chat::inflight::InFlight;
use crate::chat::ops::Health;
use crate::config::Secret;
use crate::domain::{ChannelId, UserId, WorkspaceId};
use crate::engine::{Destination, Engine, Expect, Input, Reply, Request, metric};
use crate::prompts::Key;
use crate::schedule::{DeliveryError, Outbox, Scheduler};

/// The clock the adapter reads for every request and scheduler run.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

type Connector =
    SlackClientHyperConnector<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>>;
type Client = SlackClient<Connector>;

/// The platform's name in metrics and readiness.
const PLATFORM: &str = "slack";
/// Slack expects an answer to a modal's submission within 3 seconds; past this, the modal is closed and the
/// replies are posted ephemerally when they come.
const SUBMISSION_BUDGET: std::time::Duration = std::time::Duration::from_millis(2500);
/// How long shutting down waits for events in progress.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(20);

/// How to reach Slack.
#[derive(Clone)]
pub struct SlackOptions {
    /// The bot token, `xoxb-…`: every Web API call.
    pub bot_token: Secret,
    /// The app-level token, `xapp-…`: Socket Mode.
    pub app_token: Secret,
    /// The Web API's base URL instead of `https://slack.com/api` (a test double); plain `http` only then.
    pub api_url: Option<String>,
    /// Socket Mode connections kept open at once (Slack sends each event on one of them).
    pub socket_connections: u32,
    /// Seconds before reconnecting a dropped Socket Mode connection (doubled on each failure).
    pub reconnect_backoff_secs: u64,
    pub scheduler_interval: std::time::Duration,
    pub scheduler_lease: std::time::Duration,
    /// Run a scheduler of its own; false under `lastmile serve`, whose one scheduler sends through
    /// [`Running::outbox`].
    pub scheduler: bool,
    pub clock: Clock,
    pub health: Arc<Health>,
}

impl std::fmt::Debug for SlackOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackOptions")
            .field("bot_token", &self.bot_token)
            .field("app_token", &self.app_token)
            .field("api_url", &self.api_url)
            .field("socket_connections", &self.socket_connections)
            .field("scheduler_interval", &self.scheduler_interval)
            .field("scheduler", &self.scheduler)
            .finish_non_exhaustive()
    }
}

/// The installed app, as `auth.test` described it.
#[derive(Debug, Clone)]
pub struct Install {
    /// The Slack team: the lastmile workspace this process serves.
    pub team: String,
    /// The bot's own user.
    pub bot_user: String,
    pub bot_name: String,
}

/// A running bot: the Socket Mode listener, the event handler and the scheduler.
pub struct Running {
    listener: SlackClientSocketModeListener<Connector>,
    scheduler: Option<tokio::task::JoinHandle<()>>,
    outbox: SlackOutbox,
    stop: watch::Sender<bool>,
    inflight: Arc<InFlight>,
    engine: Engine,
    runs: Arc<AtomicU64>,
    install: Install,
}

impl Running {
    pub fn install(&self) -> &Install {
        &self.install
    }

    /// How many times the scheduler has looked for due messages so far.
    pub fn scheduler_runs(&self) -> u64 {
        self.runs.load(Ordering::SeqCst)
    }

    /// Where scheduled messages for the installed team go (for a scheduler outside the adapter).
    pub fn outbox(&self) -> SlackOutbox {
        self.outbox.clone()
    }

    /// Stops taking new events, finishes what is in flight, disconnects and closes the store.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        if tokio::time::timeout(DRAIN, self.inflight.close_and_wait()).await.is_err() {
            let left = self.inflight.left();
            tracing::warn!(left, "Slack events still in progress after the drain time; shutting down anyway");
        }
        if let Some(scheduler) = self.scheduler {
            let _ = scheduler.await;
        }
        self.listener.shutdown().await;
        self.engine.store().close().await;
        Ok(())
    }
}

/// The Web API client: HTTPS only, unless the API URL is set (a local fake may then speak plain HTTP).
fn client(api_url: Option<&str>) -> anyhow::Result<Arc<Client>> {
    let roots = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .context("no TLS root certificates found for Slack")?;
    let https = match api_url {
        Some(_) => roots.https_or_http().enable_http1().enable_http2().build(),
        None => roots.https_only().enable_http1().enable_http2().build(),
    };
    let mut connector = SlackClientHyperConnector::with_connector(https);
    if let Some(url) = api_url {
        connector = connector.with_slack_api_url(url.trim_end_matches('/'));
    }
    Ok(Arc::new(SlackClient::new(connector)))
}

fn token(secret: &Secret) -> SlackApiToken {
    SlackApiToken::new(SlackApiTokenValue::new(secret.expose().to_owned()))
}

/// Connects to Slack (proving the bot token with `auth.test` first) and starts handling events and running the
/// scheduler.
pub async fn start(engine: Engine, opts: SlackOptions) -> anyhow::Result<Running> {
    opts.health.expect(PLATFORM);
    let client = client(opts.api_url.as_deref())?;
    let bot = token(&opts.bot_token);
    let auth = client
        .open_session(&bot)
        .auth_test()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("Slack refused the bot token (auth.test)")?;
    let install = Install {
        team: auth.team_id.to_string(),
        bot_user: auth.user_id.to_string(),
        bot_name: auth.user.clone().unwrap_or_else(|| "lastmile".into()),
    };
    // The team is a Slack workspace: its scheduled messages come back here.
    let ws = WorkspaceId::new(install.team.clone());
    engine
        .platform_seen(&ws, crate::domain::Platform::Slack, (opts.clock)())
        .await
        .context("cannot record the Slack team's platform")?;
    let inflight = Arc::new(InFlight::default());
    let handler = Arc::new(Handler {
        engine: engine.clone(),
        clock: opts.clock.clone(),
        client: client.clone(),
        token: bot.clone(),
        team: install.team.clone(),
        inflight: inflight.clone(),
    });
    let env = Arc::new(
        SlackClientEventsListenerEnvironment::new(client.clone())
            .with_error_handler(on_error)
            .with_user_state(handler.clone()),
    );
    let callbacks =
        SlackSocketModeListenerCallbacks::new().with_command_events(on_command).with_interaction_events(on_interaction);
    let config = SlackClientSocketModeConfig::new()
        .with_max_connections_count(opts.socket_connections.max(1))
        .with_initial_backoff_in_seconds(opts.reconnect_backoff_secs.max(1));
    let listener = SlackClientSocketModeListener::new(&config, env, callbacks);
    listener
        .listen_for(&token(&opts.app_token))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("Slack refused the app token (apps.connections.open)")?;
    listener.start().await;
    opts.health.connected(PLATFORM);
    let (stop, stop_rx) = watch::channel(false);
    let runs = Arc::new(AtomicU64::new(0));
    let outbox = SlackOutbox { handler: handler.clone() };
    let scheduler =
        opts.scheduler.then(|| tokio::spawn(scheduler(engine.clone(), outbox.clone(), opts, stop_rx, runs.clone())));
    Ok(Running { listener, scheduler, outbox, stop, inflight, engine, runs, install })
}

/// Runs the bot until SIGINT or SIGTERM, then shuts down cleanly.
pub async fn run(engine: Engine, opts: SlackOptions) -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let bot = start(engine, opts).await?;
    super::status(&format!(
        "lastmile is connected to Slack (team {}) as {} in Socket Mode; stop with Ctrl-C",
        bot.install.team, bot.install.bot_name
    ));
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    super::status("lastmile is shutting down");
    bot.shutdown().await
}

async fn scheduler(
    engine: Engine,
    outbox: SlackOutbox,
    opts: SlackOptions,
    stop: watch::Receiver<bool>,
    runs: Arc<AtomicU64>,
) {
    let worker = format!("slack-{}-{}", std::process::id(), Utc::now().timestamp_micros());
    let (clock, interval) = (opts.clock, opts.scheduler_interval);
    let lease = chrono::Duration::from_std(opts.scheduler_lease).unwrap_or(crate::schedule::LEASE);
    let scheduler = Scheduler::new(engine, worker).with_lease(lease);
    let team = WorkspaceId::new(outbox.handler.team.clone());
    // One install serves one team: this process sends that team's messages only.
    scheduler.run_every(clock.as_ref(), &outbox, Some(&team), interval, stop, &runs).await;
}

/// Scheduled messages, sent through the Web API.
#[derive(Clone)]
pub struct SlackOutbox {
    handler: Arc<Handler>,
}

impl Outbox for SlackOutbox {
    async fn deliver(&self, _at: DateTime<Utc>, workspace: &WorkspaceId, reply: &Reply) -> Result<(), DeliveryError> {
        let h = &self.handler;
        if workspace.as_str() != h.team {
            return Err(DeliveryError::Failed(format!("workspace {} is not this Slack team", workspace.as_str())));
        }
        let sent = match &reply.to {
            Destination::Dm(user) => h.send_dm(user, reply).await,
            Destination::Channel(channel) => h.post(channel, reply).await,
            Destination::Ephemeral(_) => {
                return Err(DeliveryError::Failed("an ephemeral reply has no event to answer".into()));
            }
        };
        match sent {
            Ok(()) => Ok(()),
            Err(e) if dm_closed(&e) => Err(DeliveryError::DmClosed),
            Err(e) => Err(DeliveryError::Failed(e.to_string())),
        }
    }
}

/// Slack's answers for a user who cannot be sent a direct message.
fn dm_closed(e: &SlackClientError) -> bool {
    matches!(e, SlackClientError::ApiError(api) if matches!(
        api.code.as_str(),
        "user_disabled" | "channel_not_found" | "not_in_channel" | "cannot_dm_bot" | "user_not_found"
    ))
}

/// Any error a callback could not handle is logged; the envelope is still acknowledged (Slack would only send it
/// again, to fail the same way).
fn on_error(
    err: Box<dyn std::error::Error + Send + Sync>,
    _client: Arc<Client>,
    _states: SlackClientEventsUserState,
) -> axum::http::StatusCode {
    tracing::warn!(error = %err, "Slack event not handled");
    axum::http::StatusCode::OK
}

async fn handler_of(states: &SlackClientEventsUserState) -> Option<Arc<Handler>> {
    states.read().await.get_user_state::<Arc<Handler>>().cloned()
}

async fn on_command(
    ev: SlackCommandEvent,
    _client: Arc<Client>,
    states: SlackClientEventsUserState,
) -> UserCallbackResult<SlackCommandEventResponse> {
    let ephemeral = |text: String| {
        SlackCommandEventResponse::new(SlackMessageContent::new().with_text(text))
            .with_response_type(SlackMessageResponseType::Ephemeral)
    };
    let Some(h) = handler_of(&states).await else {
        return Ok(SlackCommandEventResponse::new(SlackMessageContent::new()));
    };
    if ev.team_id.to_string() != h.team {
        tracing::warn!(team = %ev.team_id, "command from another Slack team refused");
        return Ok(ephemeral(h.engine.prompts().text(Key::SlackOtherTeam)));
    }
    let Some(ticket) = h.inflight.enter() else {
        return Ok(ephemeral(h.engine.prompts().text(Key::SlackRestarting)));
    };
    metric::interaction(PLATFORM, "command");
    // The acknowledgement goes back at once; the work (and the modal it may open) follows.
    tokio::spawn(async move {
        let _ticket = ticket;
        h.command(ev).await;
    });
    Ok(SlackCommandEventResponse::new(SlackMessageContent::new()))
}

async fn on_interaction(
    ev: SlackInteractionEvent,
    _client: Arc<Client>,
    states: SlackClientEventsUserState,
) -> UserCallbackResult<SlackInteractionResponse> {
    let Some(h) = handler_of(&states).await else {
        return Ok(SlackInteractionResponse::Empty);
    };
    match ev {
        SlackInteractionEvent::BlockActions(ev) => {
            if ev.team.id.to_string() != h.team {
                tracing::warn!(team = %ev.team.id, "button from another Slack team refused");
                return Ok(SlackInteractionResponse::Empty);
            }
            let Some(ticket) = h.inflight.enter() else {
                return Ok(SlackInteractionResponse::Empty);
            };
            metric::interaction(PLATFORM, "button");
            tokio::spawn(async move {
                let _ticket = ticket;
                h.block_action(ev).await;
            });
            Ok(SlackInteractionResponse::Empty)
        }
        SlackInteractionEvent::ViewSubmission(ev) => {
            if ev.team.id.to_string() != h.team {
                tracing::warn!(team = %ev.team.id, "modal from another Slack team refused");
                return Ok(h.errors(h.engine.prompts().text(Key::SlackOtherTeam)).into());
            }
            let Some(_ticket) = h.inflight.enter() else {
                return Ok(h.errors(h.engine.prompts().text(Key::SlackRestarting)).into());
            };
            metric::interaction(PLATFORM, "form");
            Ok(h.submission(ev).await)
        }
        _ => Ok(SlackInteractionResponse::Empty),
    }
}

struct Handler {
    engine: Engine,
    clock: Clock,
    client: Arc<Client>,
    token: SlackApiToken,
    /// The installed team: the only one whose events are handled.
    team: String,
    inflight: Arc<InFlight>,
}

/// Where an event came from and how to answer its user.
struct Origin {
    user: UserId,
    channel: ChannelId,
    /// Opens a modal, once, within 3 seconds of the event.
    trigger: Option<SlackTriggerId>,
    /// Ephemeral answers to the event.
    response_url: Option<SlackResponseUrl>,
}

impl Handler {
    fn request(&self, user: &UserId, channel: &ChannelId, input: Input) -> Request {
        Request {
            workspace: WorkspaceId::new(self.team.clone()),
            user: user.clone(),
            channel: channel.clone(),
            now: (self.clock)(),
            input,
            bots: vec![],
            admin: false,
            answers: None,
            platform: Some(crate::domain::Platform::Slack),
        }
    }

    fn errors(&self, text: String) -> SlackViewSubmissionResponse {
        let errors = [(INPUT_ID.to_owned(), render::plain(&text))].into_iter().collect();
        SlackViewSubmissionResponse::Errors(SlackViewSubmissionErrorsResponse::new(errors))
    }

    /// What Slack says of a user: (workspace admin or owner, bot). Unknown when Slack does not answer: neither.
    async fn who(&self, user: &str) -> (bool, bool) {
        let req = SlackApiUsersInfoRequest::new(SlackUserId::new(user.to_owned()));
        match self.client.open_session(&self.token).users_info(&req).await {
            Ok(info) => {
                let f = &info.user.flags;
                let admin = [f.is_admin, f.is_owner, f.is_primary_owner].contains(&Some(true));
                (admin, f.is_bot == Some(true) || f.is_app_user == Some(true))
            }
            Err(e) => {
                tracing::warn!(error = %e, "users.info failed");
                (false, false)
            }
        }
    }

    async fn command(&self, ev: SlackCommandEvent) {
        let user = UserId::new(ev.user_id.to_string());
        let channel = ChannelId::new(ev.channel_id.to_string());
        let line = format!("{} {}", ev.command, ev.text.as_deref().unwrap_or_default());
        let mut req = self.request(&user, &channel, Input::CommandLine(line));
        // Only settings ask who is an admin: the other commands save Slack the call.
        if ev.command.to_string() == "/lastmile" {
            req.admin = self.who(user.as_str()).await.0;
        }
        let replies = self.engine.handle(req).await;
        let origin =
            Origin { user, channel, trigger: Some(ev.trigger_id.clone()), response_url: Some(ev.response_url.clone()) };
        self.deliver(origin, replies).await;
    }

    async fn block_action(&self, ev: SlackInteractionBlockActionsEvent) {
        let Some(user) = ev.user.as_ref().map(|u| UserId::new(u.id.to_string())) else {
            return;
        };
        let Some(info) = ev.actions.as_ref().and_then(|a| a.first()) else {
            return;
        };
        let in_view = match &ev.container {
            SlackInteractionActionContainer::View(v) => Some(v.view_id.clone()),
            _ => None,
        };
        let metadata = ev.view.as_ref().and_then(view_metadata);
        let channel = ev
            .channel
            .as_ref()
            .map(|c| c.id.to_string())
            .or_else(|| metadata.as_ref().map(|m| m.channel.clone()))
            .unwrap_or_default();
        let channel = ChannelId::new(channel);
        let origin = Origin {
            user: user.clone(),
            channel: channel.clone(),
            trigger: Some(ev.trigger_id.clone()),
            response_url: ev.response_url.clone(),
        };
        // A button made for another team, or not by lastmile, changes nothing.
        let action = Action::decode(info.action_id.as_ref()).filter(|a| a.workspace == self.team);
        let Some(action) = action else {
            self.say(&origin, self.engine.prompts().text(Key::SlackStale)).await;
            return;
        };
        let mut bots = Vec::new();
        let input = match &action.kind {
            Kind::Answer { multiline, max_chars, label } => {
                // The question stays in the message; the modal holds its input, starting from the answer given.
                let ask = Reply {
                    expect: Some(Expect::Text {
                        label: label.clone(),
                        current: info.value.clone(),
                        max_chars: *max_chars,
                        multiline: *multiline,
                    }),
                    question: action.answers(),
                    ..Reply::new(Destination::Ephemeral(user.clone()), String::new())
                };
                let view = render::modal(&[&ask], &self.team, channel.as_str(), self.engine.prompts());
                if let Err(e) = self.open_view(&ev.trigger_id, view).await {
                    tracing::warn!(error = %e, "could not open a modal");
                }
                return;
            }
            Kind::Choice { index } => Input::Text((index + 1).to_string()),
            Kind::Person => {
                let picked = ev.state.as_ref().and_then(|s| {
                    s.values.values().find_map(|block| {
                        block.get(&info.action_id).and_then(|v| v.selected_user.as_ref()).map(|u| u.to_string())
                    })
                });
                match picked {
                    Some(u) => {
                        if self.who(&u).await.1 {
                            bots.push(UserId::new(u.clone()));
                        }
                        Input::Text(format!("<@{u}>"))
                    }
                    None => {
                        self.say(&origin, self.engine.prompts().text(Key::SlackStale)).await;
                        return;
                    }
                }
            }
            Kind::Skip { word } => Input::Text(word.clone()),
            Kind::Run { command } => Input::CommandLine(command.clone()),
            Kind::Submit => {
                self.say(&origin, self.engine.prompts().text(Key::SlackStale)).await;
                return;
            }
        };
        let mut req = self.request(&user, &channel, input);
        req.bots = bots;
        if !matches!(action.kind, Kind::Run { .. }) {
            req.answers = action.answers();
        }
        let replies = self.engine.handle(req).await;
        match in_view {
            // A button inside a modal: the modal shows what comes next.
            Some(view_id) => {
                let (mine, elsewhere) = split(&user, replies);
                let refs: Vec<&Reply> = mine.iter().collect();
                let view = render::modal(&refs, &self.team, channel.as_str(), self.engine.prompts());
                if let Err(e) = self.update_view(&view_id, view).await {
                    tracing::warn!(error = %e, "could not update a modal");
                }
                self.deliver_elsewhere(elsewhere).await;
            }
            None => self.deliver(origin, replies).await,
        }
    }

    /// A modal's submission: answered within Slack's 3 seconds, in the acknowledgement.
    async fn submission(&self, ev: SlackInteractionViewSubmissionEvent) -> SlackInteractionResponse {
        let user = UserId::new(ev.user.id.to_string());
        let (callback, metadata) = match &ev.view.view {
            SlackView::Modal(m) => (m.callback_id.as_ref().map(|c| c.to_string()), view_metadata(&ev.view.view)),
            SlackView::Home(_) => (None, None),
        };
        let action = callback.as_deref().and_then(Action::decode).filter(|a| a.kind == Kind::Submit);
        let (Some(action), Some(metadata)) = (action.filter(|a| a.workspace == self.team), metadata) else {
            return self.errors(self.engine.prompts().text(Key::SlackStale)).into();
        };
        let value = ev
            .view
            .state_params
            .state
            .as_ref()
            .and_then(|s| s.values.get(&SlackBlockId::new(INPUT_ID.into())))
            .and_then(|b| b.get(&SlackActionId::new(INPUT_ID.into())));
        let mut bots = Vec::new();
        let text = match value {
            Some(v) => match (&v.value, &v.selected_user) {
                (_, Some(u)) => {
                    // A bot is refused as an owner or a sponsor: the engine must know which picks are bots.
                    if self.who(u.as_ref()).await.1 {
                        bots.push(UserId::new(u.to_string()));
                    }
                    format!("<@{u}>")
                }
                (Some(t), None) => t.clone(),
                (None, None) => metadata.skip.clone().unwrap_or_default(),
            },
            None => metadata.skip.clone().unwrap_or_default(),
        };
        let channel = ChannelId::new(metadata.channel.clone());
        let mut req = self.request(&user, &channel, Input::Text(text));
        req.answers = action.answers();
        req.bots = bots;
        let asked = req.answers.clone();
        let work = self.engine.handle(req);
        let replies = match tokio::time::timeout(SUBMISSION_BUDGET, work).await {
            Ok(replies) => replies,
            Err(_) => {
                // Too slow for the acknowledgement: the step was not completed in time; close and say so.
                tracing::warn!("a modal submission took longer than Slack allows");
                return SlackViewSubmissionResponse::Errors(SlackViewSubmissionErrorsResponse::new(
                    [(INPUT_ID.to_owned(), render::plain(&self.engine.prompts().text(Key::InternalError)))]
                        .into_iter()
                        .collect(),
                ))
                .into();
            }
        };
        let (mine, elsewhere) = split(&user, replies);
        // The same question asked again: the answer was refused. It stays on the modal, under the field.
        let refused = mine.last().filter(|r| r.expect.is_some() && r.question.is_some() && r.question == asked);
        let response = match refused {
            Some(_) => {
                let text = mine.iter().map(|r| r.text.as_str()).collect::<Vec<_>>().join("\n");
                self.errors(text)
            }
            None => {
                let refs: Vec<&Reply> = mine.iter().collect();
                let view = render::modal(&refs, &self.team, channel.as_str(), self.engine.prompts());
                match serde_json::from_value::<SlackView>(view) {
                    Ok(view) => SlackViewSubmissionResponse::Update(SlackViewSubmissionUpdateResponse::new(view)),
                    Err(e) => {
                        tracing::error!(error = %e, "a modal did not fit slack-morphism's model");
                        SlackViewSubmissionResponse::Clear(SlackViewSubmissionClearResponse::new())
                    }
                }
            }
        };
        if !elsewhere.is_empty() {
            let h = self.clone_for_spawn();
            tokio::spawn(async move { h.deliver_elsewhere(elsewhere).await });
        }
        response.into()
    }

    fn clone_for_spawn(&self) -> Handler {
        Handler {
            engine: self.engine.clone(),
            clock: self.clock.clone(),
            client: self.client.clone(),
            token: self.token.clone(),
            team: self.team.clone(),
            inflight: self.inflight.clone(),
        }
    }

    /// Sends an event's replies: the user's as a modal when they ask for text or a person and the event can
    /// still open one, as ephemeral messages otherwise; then channel posts and direct messages.
    async fn deliver(&self, origin: Origin, replies: Vec<Reply>) {
        let (mine, elsewhere) = split(&origin.user, replies);
        let asks_in_modal =
            mine.last().is_some_and(|r| matches!(r.expect, Some(Expect::Text { .. }) | Some(Expect::Person { .. })));
        let mut shown = false;
        if asks_in_modal && let Some(trigger) = &origin.trigger {
            let refs: Vec<&Reply> = mine.iter().collect();
            let view = render::modal(&refs, &self.team, origin.channel.as_str(), self.engine.prompts());
            match self.open_view(trigger, view).await {
                Ok(()) => shown = true,
                Err(e) => tracing::warn!(error = %e, "could not open a modal; answering with a message"),
            }
        }
        if !shown {
            for reply in &mine {
                if let Err(e) = self.ephemeral(&origin, reply).await {
                    tracing::warn!(error = %e, "an ephemeral reply could not be sent");
                }
            }
        }
        self.deliver_elsewhere(elsewhere).await;
    }

    /// Channel posts and direct messages; a refused direct message goes to its fallback.
    async fn deliver_elsewhere(&self, replies: Vec<Reply>) {
        for reply in replies {
            let result = match &reply.to {
                Destination::Channel(c) => self.post(c, &reply).await,
                Destination::Dm(user) => match self.send_dm(user, &reply).await {
                    Err(e) if dm_closed(&e) => match reply.fallback.as_deref() {
                        Some(fallback @ Reply { to: Destination::Channel(c), .. }) => self.post(c, fallback).await,
                        _ => Ok(()),
                    },
                    other => other,
                },
                Destination::Ephemeral(_) => Ok(()),
            };
            // One failed message must not keep the others from being sent.
            if let Err(e) = result {
                tracing::warn!(error = %e, "a reply could not be sent");
            }
        }
    }

    fn content(&self, reply: &Reply) -> SlackMessageContent {
        let m = render::message(reply, &self.team, self.engine.prompts());
        let content = SlackMessageContent::new().with_text(m.text);
        match serde_json::from_value::<Vec<SlackBlock>>(Value::Array(m.blocks)) {
            Ok(blocks) => content.with_blocks(blocks),
            Err(e) => {
                tracing::error!(error = %e, "blocks did not fit slack-morphism's model; sending the text only");
                content
            }
        }
    }

    async fn post(&self, channel: &ChannelId, reply: &Reply) -> Result<(), SlackClientError> {
        let req =
            SlackApiChatPostMessageRequest::new(SlackChannelId::new(channel.as_str().into()), self.content(reply));
        self.client.open_session(&self.token).chat_post_message(&req).await.map(|_| ())
    }

    async fn send_dm(&self, user: &UserId, reply: &Reply) -> Result<(), SlackClientError> {
        let session = self.client.open_session(&self.token);
        let open = SlackApiConversationsOpenRequest::new().with_users(vec![SlackUserId::new(user.as_str().into())]);
        let channel = session.conversations_open(&open).await?.channel.id;
        let req = SlackApiChatPostMessageRequest::new(channel, self.content(reply));
        session.chat_post_message(&req).await.map(|_| ())
    }

    /// An ephemeral answer to the event: through its `response_url` when it has one.
    async fn ephemeral(&self, origin: &Origin, reply: &Reply) -> Result<(), SlackClientError> {
        let content = self.content(reply);
        match &origin.response_url {
            Some(url) => {
                let req = SlackApiPostWebhookMessageRequest::new(content);
                self.client.respond_to_event(url, &req).await.map(|_| ())
            }
            None => {
                let req = SlackApiChatPostEphemeralRequest::new(
                    SlackChannelId::new(origin.channel.as_str().into()),
                    SlackUserId::new(origin.user.as_str().into()),
                    content,
                );
                self.client.open_session(&self.token).chat_post_ephemeral(&req).await.map(|_| ())
            }
        }
    }

    /// One sentence for the event's user.
    async fn say(&self, origin: &Origin, text: String) {
        let reply = Reply::new(Destination::Ephemeral(origin.user.clone()), text);
        if let Err(e) = self.ephemeral(origin, &reply).await {
            tracing::warn!(error = %e, "could not answer an event");
        }
    }

    async fn open_view(&self, trigger: &SlackTriggerId, view: Value) -> anyhow::Result<()> {
        let view: SlackView = serde_json::from_value(view).context("a modal did not fit slack-morphism's model")?;
        let req = SlackApiViewsOpenRequest::new(trigger.clone(), view);
        self.client.open_session(&self.token).views_open(&req).await.map_err(|e| anyhow::anyhow!("views.open: {e}"))?;
        Ok(())
    }

    async fn update_view(&self, id: &SlackViewId, view: Value) -> anyhow::Result<()> {
        let view: SlackView = serde_json::from_value(view).context("a modal did not fit slack-morphism's model")?;
        let req = SlackApiViewsUpdateRequest::new(view).with_view_id(id.clone());
        self.client
            .open_session(&self.token)
            .views_update(&req)
            .await
            .map_err(|e| anyhow::anyhow!("views.update: {e}"))?;
        Ok(())
    }
}

/// The replies for this user (ephemeral) apart from the rest.
fn split(user: &UserId, replies: Vec<Reply>) -> (Vec<Reply>, Vec<Reply>) {
    replies.into_iter().partition(|r| matches!(&r.to, Destination::Ephemeral(u) if u == user))
}

fn view_metadata(view: &SlackView) -> Option<Metadata> {
    match view {
        SlackView::Modal(m) => m.private_metadata.as_deref().and_then(|s| serde_json::from_str(s).ok()),
        SlackView::Home(_) => None,
    }
}
