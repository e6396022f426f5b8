//! The one entry point of the bot: (workspace, user, channel, input, now) -> replies.
//! Adapters translate platform events into a [`Request`] and [`Reply`]s back into platform calls;
//! everything they must not decide is decided here, the dialogue and the domain.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use minijinja::context;

use crate::commands::{self, COMMANDS, Command, ListScope, ParseError};
use crate::dialogue::{At, Conversation, Ctx, Effect, Flow, Refusal, Say, Scratch, asks, evidence, review, scoping};
use crate::domain::answer::MAX_ANSWER_CHARS;
use crate::domain::pilot::NAME_MAX_CHARS;
use crate::domain::pilot::PilotQuery;
use crate::domain::rules;
use crate::domain::{
    AnswerError, ChannelId, PersonError, Pilot, PilotNameError, PnlError, ReviewDateError, ReviewWindow, Stage, Step,
    UserId, WorkspaceId, WorkspaceSettings,
};
use crate::prompts::{Key, Prompts};
use crate::store::{ConversationGuard, ConversationWrite, Store, StoreError, TurnWrite};

mod lifecycle;
mod portfolio;
mod turn;

/// Settings the rules depend on.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// How far ahead a review date may be set, in days.
    pub review_horizon_days: u32,
    /// The review date proposed by default, in weeks from now.
    pub default_review_weeks: u32,
    /// Pilots shown by `/pilot list` before "and N more".
    pub list_limit: i64,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self { review_horizon_days: 365, default_review_weeks: 6, list_limit: 25 }
    }
}

/// What a user did.
#[derive(Debug, Clone)]
pub enum Input {
    /// A slash command typed as text (`/pilot status Claims triage`).
    CommandLine(String),
    /// A command the platform already parsed into options.
    Command(Command),
    /// Any other message, button or menu choice: the answer to the user's pending question.
    Text(String),
}

#[derive(Debug, Clone)]
pub struct Request {
    pub workspace: WorkspaceId,
    pub user: UserId,
    pub channel: ChannelId,
    pub now: DateTime<Utc>,
    pub input: Input,
    /// Users mentioned in the input whom the platform knows to be bots.
    pub bots: Vec<UserId>,
    /// Whether the platform counts this user as a workspace administrator (Discord: Manage Server).
    pub admin: bool,
    /// The question a text answer was given to, when the platform knows it (a button or form made for that
    /// question: [`Reply::question`]). An answer to a question no longer open changes nothing.
    pub answers: Option<String>,
}

/// Where a reply goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Only this user sees it.
    Ephemeral(UserId),
    /// Posted in the channel for everyone.
    Channel(ChannelId),
    /// A direct message.
    Dm(UserId),
}

/// What kind of answer a reply asks for, so an adapter can offer the right control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Free text. `label` names the answer (a form field's label); `current` is the text to start from: the
    /// answer on record, or the answer just refused, to correct rather than retype.
    Text { label: String, current: Option<String>, max_chars: usize, multiline: bool },
    /// One person (a user picker where the platform has one); `skip` is the answer that leaves it unset.
    Person { label: String, skip: Option<String> },
    /// One of the reply's choices.
    Choice,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub to: Destination,
    /// Text with mentions in the neutral form `<@id>`.
    pub text: String,
    /// Choices offered, in order (buttons, or numbered in the console).
    pub choices: Vec<String>,
    /// The only users this reply may notify. Never roles, @everyone or @here.
    pub ping: Vec<UserId>,
    pub expect: Option<Expect>,
    /// For a direct message: what to post instead when the user does not accept direct messages.
    pub fallback: Option<Box<Reply>>,
    /// A file sent with the message (the funnel chart).
    pub attachment: Option<Attachment>,
    /// A pilot card or a summary: the first line is its title (an embed where the platform has them).
    pub card: bool,
    /// The conversation question this reply's controls answer, to give back in [`Request::answers`].
    pub question: Option<String>,
    /// Commands offered as one-click shortcuts (buttons where the platform has them).
    pub shortcuts: Vec<Shortcut>,
}

/// A command offered with a reply: `label` shown, `command` run as if typed (`/pilot review #3 kill`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortcut {
    pub label: String,
    pub command: String,
}

impl Reply {
    /// A post in a channel that notifies only `ping`.
    pub fn post(channel: ChannelId, text: String, ping: Vec<UserId>) -> Self {
        Self { ping, ..Self::new(Destination::Channel(channel), text) }
    }

    /// Plain text to `to`: no choices, no pings, nothing attached.
    pub fn new(to: Destination, text: String) -> Self {
        Self {
            to,
            text,
            choices: vec![],
            ping: vec![],
            expect: None,
            fallback: None,
            attachment: None,
            card: false,
            question: None,
            shortcuts: vec![],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub filename: String,
    pub bytes: Vec<u8>,
}

/// The reference a question by direct message gives its buttons (`Reply::question`): which kind of ask, about
/// which pilot, to whom. An answer carrying it goes to that ask only, never to a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AskRef {
    pub kind: String,
    pub pilot: crate::domain::PilotId,
    pub user: UserId,
}

impl std::fmt::Display for AskRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ask-{}-{}-{}", self.kind, self.pilot.0, self.user.as_str())
    }
}

impl AskRef {
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.splitn(4, '-');
        if parts.next()? != "ask" {
            return None;
        }
        let kind = parts.next()?.to_owned();
        let pilot = crate::domain::PilotId(parts.next()?.parse().ok()?);
        let user = UserId::new(parts.next().filter(|u| !u.is_empty())?);
        Some(AskRef { kind, pilot, user })
    }
}

#[derive(Clone)]
pub struct Engine {
    store: Store,
    prompts: Arc<Prompts>,
    settings: EngineSettings,
}

impl Engine {
    pub fn new(store: Store, prompts: Arc<Prompts>, settings: EngineSettings) -> Self {
        Self { store, prompts, settings }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn prompts(&self) -> &Prompts {
        &self.prompts
    }

    /// Handles one input. Never fails: what breaks is logged and the user gets a short apology.
    pub async fn handle(&self, req: Request) -> Vec<Reply> {
        let mut result = self.dispatch(&req).await;
        // Another request of this user moved the conversation first: decide again on the state as it is now.
        for _ in 0..3 {
            if !matches!(result, Err(StoreError::Conflict)) {
                break;
            }
            result = self.dispatch(&req).await;
        }
        match result {
            Ok(replies) => replies,
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
                let turn = scoping::answer(&conv, pilot.as_ref(), text, &self.ctx(req, &settings));
                self.run(req, &settings, &conv, ConversationGuard::At(conv.clone()), pilot, turn).await
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
            ParseError::Unknown { command, suggestion } => {
                self.prompts.render(Key::UnknownCommand, context! { command, suggestion })
            }
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

    /// The conversation's pilot disappeared: end the conversation rather than leave the user stuck.
    async fn abandon(&self, req: &Request) -> Result<Vec<Reply>, StoreError> {
        let mut end = TurnWrite::new(req.workspace.clone(), req.user.clone(), req.now, ConversationGuard::Any);
        end.conversation = ConversationWrite::End;
        self.store.write(end).await?;
        Ok(vec![self.ephemeral(req, self.prompts.text(Key::NothingToResume))])
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
        }
    }

    async fn command(&self, req: &Request, cmd: Command) -> Result<Vec<Reply>, StoreError> {
        // Only the commands that start or resume a conversation need to know the user's pending one.
        let needs_pending = matches!(
            cmd,
            Command::Register { .. }
                | Command::Resume
                | Command::Edit { .. }
                | Command::Evidence { .. }
                | Command::Review { .. }
        );
        // Read with the workspace's settings and the conversation's pilot, as an answer's context is.
        let (settings, pending) = match needs_pending {
            true => self.store.answer_context(&req.workspace, &req.user).await.map(|(s, c)| (Some(s), c))?,
            false => (None, None),
        };
        match cmd {
            Command::Register { name } => {
                let settings = self.settings_of(req, settings).await?;
                if let Some((conv, _)) = pending {
                    return self.already_in_progress(req, &settings, &conv).await;
                }
                let turn = scoping::start_register(name.as_deref(), req.channel.clone(), &self.ctx(req, &settings));
                let conv = Conversation {
                    flow: crate::dialogue::Flow::Register,
                    at: At::Ask(Step::Name),
                    pilot: None,
                    channel: req.channel.clone(),
                    return_to_confirm: false,
                    scratch: Default::default(),
                };
                self.run(req, &settings, &conv, ConversationGuard::Absent, None, turn).await
            }
            Command::Resume => match pending {
                None => Ok(vec![self.ephemeral(req, self.prompts.text(Key::NothingToResume))]),
                Some((conv, pilot)) => {
                    if conv.pilot.is_some() && pilot.is_none() {
                        return self.abandon(req).await;
                    }
                    let settings = self.settings_of(req, settings).await?;
                    let name = pilot.as_ref().map(|p| p.name.clone()).unwrap_or_default();
                    let step = self.position_label(conv.at);
                    let mut replies = Vec::new();
                    if pilot.is_some() {
                        replies.push(
                            self.ephemeral(req, self.prompts.render(Key::Resuming, context! { pilot => name, step })),
                        );
                    }
                    replies.push(self.ask(req, &settings, conv.at, pilot.as_ref(), &conv.scratch));
                    Ok(replies)
                }
            },
            Command::Status { pilot } => match self.find_pilot(req, &pilot).await? {
                Ok(p) => Ok(vec![Reply { card: true, ..self.ephemeral(req, self.card(&p, req.now.date_naive())) }]),
                Err(not_found) => Ok(vec![not_found]),
            },
            Command::List { scope } => self.list(req, scope).await,
            Command::Edit { pilot, step } => {
                let Some(step) = Step::parse(&step) else {
                    let steps = Step::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
                    return Ok(vec![
                        self.ephemeral(req, self.prompts.render(Key::EditUnknownStep, context! { step, steps })),
                    ]);
                };
                let settings = self.settings_of(req, settings).await?;
                let p = match self.find_pilot(req, &pilot).await? {
                    Ok(p) => p,
                    Err(not_found) => return Ok(vec![not_found]),
                };
                if p.stage == Stage::Draft {
                    let text = self
                        .prompts
                        .render(Key::EditDraft, context! { pilot => p.name, registrant => p.registered_by.mention() });
                    return Ok(vec![self.ephemeral(req, text)]);
                }
                // Checked again when the answer is saved, against the pilot and the settings as they are then.
                let actor = self.actor(req);
                let allowed = rules::check_edit(&p, &actor, &settings).and_then(|()| match step {
                    Step::Sponsor => rules::check_sponsor_change(&p, &actor, &settings, None),
                    _ => Ok(()),
                });
                if let Err(r) = allowed {
                    return Ok(vec![self.ephemeral(req, self.rule_refusal(&r, Some(&p), true))]);
                }
                if let Some((conv, _)) = pending {
                    return self.already_in_progress(req, &settings, &conv).await;
                }
                let turn = scoping::start_edit(p.id, step, req.channel.clone());
                let conv = Conversation {
                    flow: crate::dialogue::Flow::Edit,
                    at: At::Ask(step),
                    pilot: Some(p.id),
                    channel: req.channel.clone(),
                    return_to_confirm: false,
                    scratch: Default::default(),
                };
                self.run(req, &settings, &conv, ConversationGuard::Absent, Some(p), turn).await
            }
            Command::Evidence { pilot } => {
                let settings = self.settings_of(req, settings).await?;
                let p = match self.find_pilot(req, &pilot).await? {
                    Ok(p) => p,
                    Err(not_found) => return Ok(vec![not_found]),
                };
                if let Err(r) = rules::check_evidence(&p, &self.actor(req), &settings, None) {
                    return Ok(vec![self.ephemeral(req, self.rule_refusal(&r, Some(&p), true))]);
                }
                if let Some((conv, _)) = pending {
                    return self.already_in_progress(req, &settings, &conv).await;
                }
                let turn = evidence::start(&p, req.channel.clone());
                let conv = self.placeholder(req, &p);
                self.run(req, &settings, &conv, ConversationGuard::Absent, Some(p), turn).await
            }
            Command::Review { pilot, decision } => {
                let settings = self.settings_of(req, settings).await?;
                let p = match self.find_pilot(req, &pilot).await? {
                    Ok(p) => p,
                    Err(not_found) => return Ok(vec![not_found]),
                };
                if let Err(r) = rules::check_decide(&p, &self.actor(req), &settings) {
                    return Ok(vec![self.ephemeral(req, self.rule_refusal(&r, Some(&p), true))]);
                }
                if let Some((conv, _)) = pending {
                    return self.already_in_progress(req, &settings, &conv).await;
                }
                let turn = review::start(&p, decision, req.channel.clone());
                let conv = self.placeholder(req, &p);
                self.run(req, &settings, &conv, ConversationGuard::Absent, Some(p), turn).await
            }
            Command::Help => Ok(vec![self.ephemeral(req, self.help())]),
            Command::Portfolio => self.portfolio_command(req).await,
            Command::Config { setting, value } => self.config_command(req, setting, value).await,
            Command::Timezone { zone } => self.timezone_command(req, zone).await,
        }
    }

    /// The conversation a command about `pilot` starts from (none is stored until the turn says so).
    fn placeholder(&self, req: &Request, p: &Pilot) -> Conversation {
        Conversation {
            flow: Flow::Review,
            at: At::Confirm,
            pilot: Some(p.id),
            channel: req.channel.clone(),
            return_to_confirm: false,
            scratch: Default::default(),
        }
    }

    /// The user, as the rules see who acts.
    fn actor<'a>(&self, req: &'a Request) -> rules::Actor<'a> {
        rules::Actor { user: &req.user, platform_admin: req.admin }
    }

    /// Why a rule refused: `now`, when the change was refused as it was committed (or a command started), rather
    /// than at a question that is asked again.
    pub(super) fn rule_refusal(&self, r: &rules::Refusal, pilot: Option<&Pilot>, now: bool) -> String {
        let p = &self.prompts;
        let name = pilot.map(|p| p.name.clone()).unwrap_or_default();
        let registrant = pilot.map(|p| p.registered_by.mention()).unwrap_or_default();
        let owner = self.person(pilot.and_then(|p| p.owner.as_ref()));
        let sponsor = self.person(pilot.and_then(|p| p.sponsor.as_ref()));
        match r {
            rules::Refusal::NotAllowedToEdit => {
                p.render(Key::EditNotAllowed, context! { pilot => name, registrant, owner, sponsor })
            }
            rules::Refusal::SponsorChange => {
                p.render(Key::SponsorChangeNotAllowed, context! { pilot => name, sponsor })
            }
            rules::Refusal::SponsorIsOwner => p.render(Key::SponsorIsOwner, context! { pilot => name, user => owner }),
            rules::Refusal::OnlyOwner if now => p.render(Key::OnlyOwnerNow, context! { pilot => name, owner }),
            rules::Refusal::OnlyOwner => p.render(Key::OnlyOwner, context! { owner }),
            rules::Refusal::OwnerNotAccepted => {
                let declined = pilot.is_some_and(|p| p.owner_status == crate::domain::OwnerStatus::Declined);
                p.render(Key::OwnerNotAcceptedEvidence, context! { pilot => name, declined })
            }
            rules::Refusal::EvidenceNotAllowed => p.render(Key::EvidenceNotAllowed, context! { pilot => name }),
            rules::Refusal::NotOpen(stage) => {
                p.render(Key::NotOpen, context! { pilot => name, stage => self.stage(*stage) })
            }
            rules::Refusal::AlreadyDecided(stage) => {
                p.render(Key::AlreadyDecided, context! { pilot => name, stage => self.stage(*stage) })
            }
            rules::Refusal::NotDecider { deciders } => p.render(
                Key::DecideNotAllowed,
                context! { pilot => name, registrant, sponsor, owner, deciders => deciders.clone() },
            ),
            rules::Refusal::SponsorRequired => p.render(Key::SponsorRequired, context! { pilot => name }),
            rules::Refusal::NotProven => {
                let (count, missing) =
                    pilot.map(|pl| (pl.evidence_count(), self.missing_evidence(pl))).unwrap_or_default();
                p.render(Key::NotProven, context! { pilot => name, count, missing })
            }
        }
    }

    async fn already_in_progress(
        &self,
        req: &Request,
        settings: &WorkspaceSettings,
        conv: &Conversation,
    ) -> Result<Vec<Reply>, StoreError> {
        let pilot = self.conversation_pilot(req, conv).await?;
        if conv.pilot.is_some() && pilot.is_none() {
            return self.abandon(req).await;
        }
        let name = pilot.as_ref().map(|p| p.name.clone()).unwrap_or_default();
        let text = self
            .prompts
            .render(Key::AlreadyInProgress, context! { pilot => name, step => self.position_label(conv.at) });
        Ok(vec![self.ephemeral(req, text), self.ask(req, settings, conv.at, pilot.as_ref(), &conv.scratch)])
    }

    #[allow(clippy::too_many_arguments)]
    fn say(
        &self,
        req: &Request,
        settings: &WorkspaceSettings,
        say: Say,
        before: Option<&Pilot>,
        after: Option<&Pilot>,
        scratch: &Scratch,
        out: &mut Vec<Reply>,
    ) {
        let p = &self.prompts;
        let name = after.or(before).map(|p| p.name.clone());
        match say {
            Say::Ask(at) => out.push(self.ask(req, settings, at, after.or(before), scratch)),
            Say::Refused(r) => out.push(self.ephemeral(req, self.refusal(req, r, after.or(before)))),
            Say::Vague { rule, answer } => {
                let rule = p.rules().iter().find(|r| r.id == rule);
                if let Some(rule) = rule {
                    out.push(self.ephemeral(
                        req,
                        p.render_rule(rule, context! { pilot => name.clone().unwrap_or_default(), answer }),
                    ));
                }
            }
            Say::BackAtFirst => out.push(self.ephemeral(req, p.text(Key::BackAtFirstStep))),
            Say::EditNoBack => out.push(self.ephemeral(req, p.text(Key::EditNoBack))),
            Say::Cancelled => out.push(
                self.ephemeral(req, p.render(Key::Cancelled, context! { pilot => before.map(|p| p.name.clone()) })),
            ),
            Say::EditCancelled => {
                out.push(self.ephemeral(req, p.render(Key::EditCancelled, context! { pilot => name })))
            }
            Say::Registered => {
                let Some(pilot) = after else { return };
                out.push(self.ephemeral(req, p.render(Key::Registered, context! { pilot => pilot.name })));
                let (line, baseline, target) = match &pilot.pnl {
                    Some(t) => (t.line.clone(), t.format_value(t.baseline), t.format_value(t.target)),
                    None => Default::default(),
                };
                let text = p.render(
                    Key::Announcement,
                    context! {
                        pilot => pilot.name, owner => self.person(pilot.owner.as_ref()),
                        registrant => pilot.registered_by.mention(), pnl_line => line, baseline, target,
                        review_date => self.date(pilot.review_date),
                    },
                );
                out.push(Reply::post(pilot.home_channel.clone(), text, pilot.owner.iter().cloned().collect()));
            }
            Say::Updated(step) => {
                let (Some(b), Some(a)) = (before, after) else {
                    return;
                };
                let text = p.render(
                    Key::Updated,
                    context! {
                        pilot => a.name, step => p.text(Key::for_step(step)),
                        old => self.value(b, step).unwrap_or_else(|| p.text(Key::NotSet)),
                        new => self.value(a, step).unwrap_or_else(|| p.text(Key::NotSet)),
                    },
                );
                out.push(self.ephemeral(req, text));
            }
            other => self.say_lifecycle(req, settings, other, before, after, out),
        }
    }

    fn refusal(&self, req: &Request, r: Refusal, pilot: Option<&Pilot>) -> String {
        let name = pilot.map(|p| p.name.clone()).unwrap_or_default();
        let p = &self.prompts;
        match r {
            Refusal::Answer(AnswerError::Empty) => p.text(Key::InputEmpty),
            Refusal::Answer(AnswerError::TooLong { length, limit }) => {
                p.render(Key::InputTooLong, context! { length, limit })
            }
            Refusal::Answer(AnswerError::ControlCharacters) => p.text(Key::InputControl),
            Refusal::Name(PilotNameError::TooShort { min }) => p.render(Key::NameTooShort, context! { min }),
            Refusal::Name(PilotNameError::TooLong { max, length }) => {
                p.render(Key::NameTooLong, context! { max, length })
            }
            Refusal::Name(PilotNameError::MultiLine) => p.text(Key::NameMultiLine),
            Refusal::Name(PilotNameError::NoLetter) => p.text(Key::NameNoLetter),
            Refusal::Person { step, error } => {
                let role = p.text(Key::for_step(step)).to_lowercase();
                match error {
                    PersonError::NoMention => p.render(Key::PersonNone, context! { role }),
                    PersonError::Several(count) => p.render(Key::PersonSeveral, context! { role, count }),
                    PersonError::Role => p.render(Key::PersonRole, context! { role }),
                    PersonError::Everyone => p.render(Key::PersonEveryone, context! { role }),
                    PersonError::Bot(user) => p.render(Key::PersonBot, context! { role, user => user.mention() }),
                }
            }
            Refusal::Pnl(PnlError::Format) => p.text(Key::PnlFormat),
            Refusal::Pnl(PnlError::NoLine) => p.text(Key::PnlNoLine),
            Refusal::Pnl(PnlError::NoUnit) => p.text(Key::PnlNoUnit),
            Refusal::Pnl(PnlError::UnitMismatch { baseline, target }) => {
                p.render(Key::PnlUnitMismatch, context! { baseline_unit => baseline, target_unit => target })
            }
            Refusal::Pnl(PnlError::SameTarget { value }) => p.render(Key::PnlSameTarget, context! { value }),
            Refusal::Date { answer, error } => match error {
                ReviewDateError::Unparseable => p.render(Key::DateUnparseable, context! { answer }),
                ReviewDateError::NotInFuture(date) => p.render(
                    Key::DateNotFuture,
                    context! { date => date.to_string(), today => req.now.date_naive().to_string() },
                ),
                ReviewDateError::BeyondHorizon { date, latest } => p.render(
                    Key::DateBeyondHorizon,
                    context! { date => date.to_string(), latest => latest.to_string() },
                ),
            },
            Refusal::EvidenceFormat => p.text(Key::EvidenceFormat),
            Refusal::EvidenceUnit { unit, line_unit } => p.render(Key::EvidenceUnit, context! { unit, line_unit }),
            Refusal::Rule(r) => self.rule_refusal(&r, pilot, false),
            Refusal::NoSponsorForExtension { limit } => {
                p.render(Key::NoSponsorForExtension, context! { pilot => name, limit })
            }
            Refusal::Choice { answer, choices } => {
                p.render(Key::ChoiceUnknown, context! { answer, choices => choices.join(", ") })
            }
        }
    }

    /// The question at a position, with what the user can answer.
    fn ask(
        &self,
        req: &Request,
        settings: &WorkspaceSettings,
        at: At,
        pilot: Option<&Pilot>,
        scratch: &Scratch,
    ) -> Reply {
        Reply { question: Some(at.as_str().to_owned()), ..self.question(req, settings, at, pilot, scratch) }
    }

    fn question(
        &self,
        req: &Request,
        settings: &WorkspaceSettings,
        at: At,
        pilot: Option<&Pilot>,
        scratch: &Scratch,
    ) -> Reply {
        let p = &self.prompts;
        let name = pilot.map(|p| p.name.clone()).unwrap_or_default();
        let sponsor_optional = !settings.sponsor_required;
        match at {
            At::Ask(step) => {
                let mut text = match step {
                    Step::Name => p.text(Key::AskName),
                    Step::Workflow => p.render(Key::AskWorkflow, context! { pilot => name }),
                    Step::Owner => p.render(Key::AskOwner, context! { pilot => name }),
                    Step::Pnl => p.render(Key::AskPnl, context! { pilot => name }),
                    Step::Sponsor => {
                        p.render(Key::AskSponsor, context! { pilot => name, optional => sponsor_optional })
                    }
                    Step::ReviewDate => {
                        let today = req.now.date_naive();
                        let window = ReviewWindow::new(today, self.settings.review_horizon_days);
                        let default_date = scoping::default_review_date(today, self.settings.default_review_weeks);
                        p.render(
                            Key::AskReviewDate,
                            context! {
                                pilot => name, default_date => default_date.to_string(),
                                latest_date => window.latest.to_string(),
                            },
                        )
                    }
                };
                let current =
                    pilot.and_then(|pl| self.value(pl, step)).filter(|_| step != Step::Name || pilot.is_some());
                if let Some(answer) = &current {
                    text.push('\n');
                    text.push_str(&p.render(Key::CurrentAnswer, context! { answer }));
                }
                let label = p.text(Key::for_step(step));
                let expect = match step {
                    Step::Owner => Expect::Person { label, skip: None },
                    Step::Sponsor => Expect::Person { label, skip: sponsor_optional.then(|| scoping::SKIP.to_owned()) },
                    _ => Expect::Text {
                        label,
                        current: pilot.and_then(|pl| self.value(pl, step)),
                        max_chars: if step == Step::Name { NAME_MAX_CHARS } else { MAX_ANSWER_CHARS },
                        multiline: matches!(step, Step::Workflow | Step::Pnl),
                    },
                };
                Reply { expect: Some(expect), ..self.ephemeral(req, text) }
            }
            At::Confirm => {
                let card = pilot.map(|pl| self.card(pl, req.now.date_naive())).unwrap_or_default();
                let choices = scoping::CONFIRM_CHOICES.iter().map(|k| p.text(*k)).collect();
                Reply {
                    choices,
                    expect: Some(Expect::Choice),
                    card: true,
                    ..self.ephemeral(req, p.render(Key::AskConfirm, context! { card }))
                }
            }
            At::PickEdit => {
                let choices = Step::ALL.iter().map(|s| p.text(Key::for_step(*s))).collect();
                Reply {
                    choices,
                    expect: Some(Expect::Choice),
                    ..self.ephemeral(req, p.render(Key::AskEditStep, context! { pilot => name }))
                }
            }
            other => self.ask_lifecycle(req, settings, other, pilot, scratch),
        }
    }

    fn position_label(&self, at: At) -> String {
        self.prompts.text(match at {
            At::Ask(step) => Key::for_step(step),
            At::Confirm => Key::ChoiceConfirm,
            At::PickEdit => Key::ChoiceEdit,
            At::PickEvidence | At::Evidence(_) => Key::DescEvidence,
            _ => Key::DescReview,
        })
    }

    /// An answer on record, as shown to users.
    fn value(&self, pilot: &Pilot, step: Step) -> Option<String> {
        match step {
            Step::Name => Some(pilot.name.clone()),
            Step::Workflow => pilot.workflow.clone(),
            Step::Owner => pilot.owner.as_ref().map(UserId::mention),
            Step::Sponsor => pilot.sponsor.as_ref().map(UserId::mention),
            Step::Pnl => pilot
                .pnl
                .as_ref()
                .map(|t| format!("{}: {} -> {}", t.line, t.format_value(t.baseline), t.format_value(t.target))),
            Step::ReviewDate => pilot.review_date.map(|d| d.to_string()),
        }
    }

    pub(crate) fn person(&self, user: Option<&UserId>) -> String {
        user.map(UserId::mention).unwrap_or_else(|| self.prompts.text(Key::NotSet))
    }

    fn date(&self, date: Option<chrono::NaiveDate>) -> String {
        date.map(|d| d.to_string()).unwrap_or_else(|| self.prompts.text(Key::NotSet))
    }

    fn stage(&self, stage: Stage) -> String {
        self.prompts.text(match stage {
            Stage::Draft => Key::StageDraft,
            Stage::Scoped => Key::StageScoped,
            Stage::InProduction => Key::StageInProduction,
            Stage::Killed => Key::StageKilled,
        })
    }

    async fn list(&self, req: &Request, scope: ListScope) -> Result<Vec<Reply>, StoreError> {
        let involving = matches!(scope, ListScope::Mine).then_some(&req.user);
        let scope_word = if involving.is_some() { "mine" } else { "all" };
        let (pilots, total) = self.store.list_pilots(&req.workspace, involving, self.settings.list_limit).await?;
        if pilots.is_empty() {
            return Ok(vec![
                self.ephemeral(req, self.prompts.render(Key::ListEmpty, context! { scope => scope_word })),
            ]);
        }
        let mut lines = vec![self.prompts.render(Key::ListHeader, context! { scope => scope_word, count => total })];
        let today = req.now.date_naive();
        for pl in &pilots {
            lines.push(self.list_item(pl, today));
        }
        let more = total - pilots.len() as i64;
        if more > 0 {
            lines.push(self.prompts.render(Key::ListMore, context! { count => more }));
        }
        Ok(vec![self.ephemeral(req, lines.join("\n"))])
    }

    /// The pilot a user named (`#3`, `3` or its name), or the reply that says none is called that, with the closest
    /// name as a suggestion.
    async fn find_pilot(&self, req: &Request, query: &str) -> Result<Result<Pilot, Reply>, StoreError> {
        if let Some(p) = self.store.find_pilot(&req.workspace, &PilotQuery::parse(query)).await? {
            return Ok(Ok(p));
        }
        let names = self.store.pilot_names(&req.workspace).await?;
        let suggestion = commands::closest(query, names.iter().map(String::as_str)).map(str::to_owned);
        Ok(Err(self.ephemeral(req, self.prompts.render(Key::PilotNotFound, context! { query, suggestion }))))
    }

    /// The help text, from the command description.
    pub fn help(&self) -> String {
        let lines: Vec<String> = COMMANDS
            .iter()
            .flat_map(|c| {
                c.subcommands.iter().map(move |s| {
                    self.prompts.render(
                        Key::HelpLine,
                        context! { usage => s.usage(c.name), description => self.prompts.text(s.description) },
                    )
                })
            })
            .collect();
        self.prompts.render(Key::Help, context! { commands => lines.join("\n") })
    }

    pub(crate) fn ephemeral(&self, req: &Request, text: String) -> Reply {
        Reply::new(Destination::Ephemeral(req.user.clone()), text)
    }
}

/// When no reply asks anything, the last reply to the user carries the controls of `again` (the open question),
/// with `refused` as the text to start from.
fn ask_again(replies: &mut [Reply], again: Reply, refused: Option<String>) {
    if replies.iter().any(|r| r.expect.is_some()) {
        return;
    }
    let Some(last) = replies.iter_mut().rev().find(|r| matches!(r.to, Destination::Ephemeral(_))) else { return };
    let mut expect = again.expect;
    if let (Some(Expect::Text { current, .. }), Some(text)) = (&mut expect, refused) {
        *current = Some(text);
    }
    last.expect = expect;
    last.choices = again.choices;
    last.question = again.question;
}
