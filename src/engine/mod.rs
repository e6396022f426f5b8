//! The one entry point of the bot: (workspace, user, channel, input, now) -> replies.
//! Adapters translate platform events into a [`Request`] and [`Reply`]s back into platform calls;
//! everything they must not decide is decided here, the dialogue and the domain.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use minijinja::context;

use crate::commands::{self, ParseError};
use crate::dialogue::{At, Conversation, Ctx, Effect, Flow, asks, scoping};
use crate::domain::{Pilot, Platform, Step, WorkspaceId, WorkspaceSettings};
use crate::prompts::{Key, Prompts};
use crate::store::{ConversationGuard, ConversationWrite, Store, StoreError, TurnWrite};

mod api;
mod handlers;
pub mod metric;
mod render;
mod review_replies;
mod settings_commands;
mod summary;
mod turn;

pub use crate::store::{Backlog, PoolUse};
pub use api::{AskRef, Attachment, Destination, EngineSettings, Expect, Input, Reply, Request, Shortcut};
use render::ask_again;

#[derive(Clone)]
pub struct Engine {
    store: Store,
    prompts: Arc<Prompts>,
    settings: EngineSettings,
    /// Workspaces whose platform this process has recorded, so it is written once, not on every request.
    platforms_recorded: Arc<std::sync::Mutex<std::collections::HashMap<String, Platform>>>,
}

/// Workspaces remembered as recorded; past this the memory starts again (it only saves writes).
const PLATFORMS_KEPT: usize = 10_000;

impl Engine {
    pub fn new(store: Store, prompts: Arc<Prompts>, settings: EngineSettings) -> Self {
        Self { store, prompts, settings, platforms_recorded: Arc::default() }
    }

    /// Records that `ws` lives on `platform` (an adapter served it), once per process unless it changes.
    pub async fn platform_seen(
        &self,
        ws: &WorkspaceId,
        platform: Platform,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let known = |m: &std::collections::HashMap<String, Platform>| m.get(ws.as_str()) == Some(&platform);
        if known(&self.platforms_recorded.lock().unwrap_or_else(std::sync::PoisonError::into_inner)) {
            return Ok(());
        }
        self.store.record_platform(ws, platform, now).await?;
        let mut recorded = self.platforms_recorded.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if recorded.len() >= PLATFORMS_KEPT {
            recorded.clear();
        }
        recorded.insert(ws.as_str().to_owned(), platform);
        Ok(())
    }

    /// Every workspace whose platform is recorded, with it.
    pub async fn platforms(&self) -> Result<Vec<(WorkspaceId, Platform)>, StoreError> {
        self.store.platforms().await
    }

    /// Workspaces with a message due at `now` whose platform nobody recorded (made in the console, say).
    pub async fn due_without_platform(&self, now: DateTime<Utc>) -> Result<Vec<WorkspaceId>, StoreError> {
        self.store.due_without_platform(now).await
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn prompts(&self) -> &Prompts {
        &self.prompts
    }

    /// Whether the database answers (readiness).
    pub async fn database_answers(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }

    /// Pilots due now and since when the oldest has been (how far behind the schedulers are).
    pub async fn due_backlog(&self, now: DateTime<Utc>) -> Result<Backlog, StoreError> {
        self.store.due_backlog(now).await
    }

    /// The database pool's connections.
    pub fn pool_use(&self) -> PoolUse {
        self.store.pool_use()
    }

    /// Handles one input. Never fails: what breaks is logged and the user gets a short apology.
    pub async fn handle(&self, req: Request) -> Vec<Reply> {
        let started = std::time::Instant::now();
        let replies = self.handle_timed(req).await;
        metrics::histogram!(metric::STEP_SECONDS).record(started.elapsed().as_secs_f64());
        replies
    }

    #[tracing::instrument(name = "request", skip_all, fields(workspace = req.workspace.as_str(), pilot))]
    async fn handle_timed(&self, req: Request) -> Vec<Reply> {
        if let Some(platform) = req.platform
            && let Err(e) = self.platform_seen(&req.workspace, platform, req.now).await
        {
            // The request is still answered; the next one tries again.
            tracing::warn!(error = %e, "could not record the workspace's platform");
        }
        let mut result = self.dispatch(&req).await;
        // Another request of this user moved the conversation first: decide again on the state as it is now.
        for _ in 0..3 {
            if !matches!(result, Err(StoreError::Conflict)) {
                break;
            }
            result = self.dispatch(&req).await;
        }
        match result {
            Ok(replies) => {
                tracing::info!(replies = replies.len(), "request handled");
                replies
            }
            Err(error) => {
                tracing::error!(workspace = req.workspace.as_str(), user = req.user.as_str(), %error, "request failed");
                vec![self.ephemeral(&req, self.prompts.text(Key::InternalError))]
            }
        }
    }

    async fn dispatch(&self, req: &Request) -> Result<Vec<Reply>, StoreError> {
        match &req.input {
            Input::CommandLine(line) => match commands::parse(line) {
                Ok(cmd) => self.command(req, cmd).await,
                Err(e) => Ok(vec![self.parse_error(req, e)]),
            },
            Input::Command(cmd) => self.command(req, cmd.clone()).await,
            Input::Text(text) => {
                // Settings, conversation and its pilot in one read: most answers need all three.
                let (settings, current) = self.store.answer_context(&req.workspace, &req.user).await?;
                // A button of a question sent by direct message answers that question only.
                if let Some(target) = req.answers.as_deref().and_then(AskRef::parse) {
                    if target.user != req.user {
                        let text =
                            self.prompts.render(Key::QuestionNotYours, context! { user => target.user.mention() });
                        return Ok(vec![self.ephemeral(req, text)]);
                    }
                    let open = self.store.open_asks(&req.workspace, &req.user).await?;
                    return match open.into_iter().find(|a| a.pilot == target.pilot && a.kind.name() == target.kind) {
                        Some(ask) => self.answer_ask(req, &settings, ask, text).await,
                        None => Ok(vec![self.ephemeral(req, self.prompts.text(Key::QuestionClosed))]),
                    };
                }
                let Some((conv, pilot)) = current else {
                    if req.answers.is_some() {
                        return Ok(vec![self.ephemeral(req, self.prompts.text(Key::QuestionClosed))]);
                    }
                    // A typed answer may be for a question sent by direct message. Several may be open (an
                    // ownership request and a nudge): it goes to the newest one it is a choice of, else the newest.
                    let open = self.store.open_asks(&req.workspace, &req.user).await?;
                    let ask = open
                        .iter()
                        .find(|a| asks::is_answer_to(&a.kind, text, self.prompts.as_ref()))
                        .or(open.first())
                        .cloned();
                    return match ask {
                        Some(ask) => self.answer_ask(req, &settings, ask, text).await,
                        None => Ok(vec![self.ephemeral(req, self.prompts.text(Key::NothingPending))]),
                    };
                };
                if let Some(question) = &req.answers
                    && question != conv.at.as_str()
                {
                    // A button or form of an earlier question: say where the conversation is instead.
                    let step = self.position_label(conv.at);
                    let text = self.prompts.render(Key::QuestionMoved, context! { step });
                    return Ok(vec![
                        self.ephemeral(req, text),
                        self.ask(req, &settings, conv.at, pilot.as_ref(), &conv.scratch),
                    ]);
                }
                if conv.pilot.is_some() && pilot.is_none() {
                    return self.abandon(req).await;
                }
                let open = self.open_pilots_for(req, &conv).await?;
                let turn = scoping::answer(
                    &conv,
                    pilot.as_ref(),
                    text,
                    &Ctx { open_pilots: &open, ..self.ctx(req, &settings) },
                );
                let prefilled = !conv.scratch.prefill.is_empty();
                let replies = self.run(req, &settings, &conv, ConversationGuard::At(conv.clone()), pilot, turn).await?;
                if prefilled { self.continue_prefill(req, &settings, replies).await } else { Ok(replies) }
            }
        }
    }

    /// Answers a question sent by direct message.
    async fn answer_ask(
        &self,
        req: &Request,
        settings: &WorkspaceSettings,
        ask: crate::dialogue::Ask,
        text: &str,
    ) -> Result<Vec<Reply>, StoreError> {
        let pilot = self.store.pilot(&req.workspace, ask.pilot).await?;
        let snoozes = pilot.as_ref().and_then(|p| Some(p.schedule.for_cycle(p.due_date()?).snoozes)).unwrap_or(0);
        let turn = asks::answer(&ask, pilot.as_ref(), text, snoozes, &self.ctx(req, settings));
        let still_open = !turn.effects.iter().any(|e| matches!(e, Effect::CloseAsk(_)));
        let conv = Conversation {
            flow: Flow::Review,
            at: At::Confirm,
            pilot: Some(ask.pilot),
            channel: req.channel.clone(),
            return_to_confirm: false,
            scratch: Default::default(),
        };
        let reference = pilot
            .as_ref()
            .map(|p| AskRef { kind: ask.kind.name().to_owned(), pilot: p.id, user: req.user.clone() }.to_string());
        let mut replies = self.run(req, settings, &conv, ConversationGuard::Any, pilot, turn).await?;
        if still_open {
            // The question is still open: offer its choices again with the answer.
            let choices = asks::choices(&ask.kind).iter().map(|k| self.prompts.text(*k)).collect();
            let again = Reply {
                choices,
                expect: Some(Expect::Choice),
                question: reference,
                ..self.ephemeral(req, String::new())
            };
            ask_again(&mut replies, again, None);
        }
        Ok(replies)
    }

    pub fn parse_error(&self, req: &Request, e: ParseError) -> Reply {
        let text = match e {
            ParseError::Unknown { command, suggestion } => self
                .prompts
                .render(Key::UnknownCommand, context! { command => crate::prompts::echo(&command), suggestion }),
            ParseError::Usage { usage } => self.prompts.render(Key::CommandUsage, context! { usage }),
        };
        self.ephemeral(req, text)
    }

    async fn conversation_pilot(&self, req: &Request, conv: &Conversation) -> Result<Option<Pilot>, StoreError> {
        match conv.pilot {
            Some(id) => self.store.pilot(&req.workspace, id).await,
            None => Ok(None),
        }
    }

    /// The workspace's settings: as already read, or read now.
    async fn settings_of(
        &self,
        req: &Request,
        known: Option<WorkspaceSettings>,
    ) -> Result<WorkspaceSettings, StoreError> {
        match known {
            Some(settings) => Ok(settings),
            None => self.store.settings(&req.workspace).await,
        }
    }

    /// After a registration turn, takes the answers given with `/pilot register` that the conversation has reached
    /// (see `scoping::apply_prefill`). The question the turn asked gives way to what the answers lead to; what it
    /// said before (a refusal, a note) stays.
    async fn continue_prefill(
        &self,
        req: &Request,
        settings: &WorkspaceSettings,
        replies: Vec<Reply>,
    ) -> Result<Vec<Reply>, StoreError> {
        let (_, current) = self.store.answer_context(&req.workspace, &req.user).await?;
        let Some((conv, pilot)) = current else { return Ok(replies) };
        // Who was a bot is what the platform said when the answers were given.
        let mut req = req.clone();
        req.bots.extend(conv.scratch.prefill_bots.iter().cloned());
        let open = self.open_pilots_for(&req, &conv).await?;
        let turn =
            scoping::apply_prefill(&conv, pilot.as_ref(), &Ctx { open_pilots: &open, ..self.ctx(&req, settings) });
        let Some(turn) = turn else {
            return Ok(replies);
        };
        let more = self.run(&req, settings, &conv, ConversationGuard::At(conv.clone()), pilot, turn).await?;
        let mut kept: Vec<Reply> = replies.into_iter().filter(|r| r.expect.is_none()).collect();
        kept.extend(more);
        Ok(kept)
    }

    /// The conversation's pilot disappeared: end the conversation rather than leave the user stuck.
    async fn abandon(&self, req: &Request) -> Result<Vec<Reply>, StoreError> {
        let mut end = TurnWrite::new(req.workspace.clone(), req.user.clone(), req.now, ConversationGuard::Any);
        end.conversation = ConversationWrite::End;
        self.store.write(end).await?;
        Ok(vec![self.ephemeral(req, self.prompts.text(Key::NothingToResume))])
    }

    /// The workspace's open pilots when an answer may make a registration overlap one: its workflow or P&L line
    /// (typed, or given with the command); none otherwise, without reading them.
    async fn open_pilots_for(
        &self,
        req: &Request,
        conv: &Conversation,
    ) -> Result<Vec<crate::domain::overlap::OpenPilot>, StoreError> {
        let overlapping_step = |s: &Step| matches!(s, Step::Workflow | Step::Pnl);
        let reaches = matches!(conv.at, At::Ask(s) if overlapping_step(&s))
            || conv.scratch.prefill.iter().any(|(s, _)| overlapping_step(s));
        if conv.flow != Flow::Register || !reaches {
            return Ok(vec![]);
        }
        self.store.open_pilots(&req.workspace).await
    }

    fn ctx<'a>(&'a self, req: &'a Request, settings: &'a WorkspaceSettings) -> Ctx<'a> {
        Ctx {
            settings,
            now: req.now,
            user: &req.user,
            today: req.now.date_naive(),
            horizon_days: self.settings.review_horizon_days,
            default_review_weeks: self.settings.default_review_weeks,
            rules: self.prompts.rules(),
            bots: &req.bots,
            admin: req.admin,
            labels: self.prompts.as_ref(),
            open_pilots: &[],
        }
    }
}
