//! The commands: who may start what (checked again when the change is committed), and the conversation each
//! command starts or resumes; `/pilot status`, `list` and `help`.

use minijinja::context;

use super::{Engine, Reply, Request};
use crate::commands::{self, COMMANDS, Command, ListScope};
use crate::dialogue::{At, Conversation, Flow, evidence, review, scoping};
use crate::domain::pilot::PilotQuery;
use crate::domain::rules;
use crate::domain::{Pilot, Stage, Step, WorkspaceSettings};
use crate::prompts::{Key, echo};
use crate::store::{ConversationGuard, StoreError};

impl Engine {
    pub(super) async fn command(&self, req: &Request, cmd: Command) -> Result<Vec<Reply>, StoreError> {
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
            Command::Register { name, prefill } => {
                let settings = self.settings_of(req, settings).await?;
                if let Some((conv, _)) = pending {
                    return self.already_in_progress(req, &settings, &conv).await;
                }
                let has_prefill = !prefill.is_empty();
                let scratch = crate::dialogue::Scratch {
                    prefill: prefill.clone(),
                    prefill_bots: if has_prefill { req.bots.clone() } else { vec![] },
                    ..Default::default()
                };
                let turn =
                    scoping::start_register(name.as_deref(), prefill, req.channel.clone(), &self.ctx(req, &settings));
                let conv = Conversation {
                    flow: crate::dialogue::Flow::Register,
                    at: At::Ask(Step::Name),
                    pilot: None,
                    channel: req.channel.clone(),
                    return_to_confirm: false,
                    scratch,
                };
                let replies = self.run(req, &settings, &conv, ConversationGuard::Absent, None, turn).await?;
                if has_prefill { self.continue_prefill(req, &settings, replies).await } else { Ok(replies) }
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
                    return Ok(vec![self.ephemeral(
                        req,
                        self.prompts.render(Key::EditUnknownStep, context! { step => echo(&step), steps }),
                    )]);
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
                if let Err(r) = rules::check_decide(&p, decision, &self.actor(req), &settings) {
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
    pub(super) fn placeholder(&self, req: &Request, p: &Pilot) -> Conversation {
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
    pub(super) fn actor<'a>(&self, req: &'a Request) -> rules::Actor<'a> {
        rules::Actor { user: &req.user, platform_admin: req.admin }
    }

    pub(super) async fn already_in_progress(
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

    pub(super) async fn list(&self, req: &Request, scope: ListScope) -> Result<Vec<Reply>, StoreError> {
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
    pub(super) async fn find_pilot(&self, req: &Request, query: &str) -> Result<Result<Pilot, Reply>, StoreError> {
        if let Some(p) = self.store.find_pilot(&req.workspace, &PilotQuery::parse(query)).await? {
            return Ok(Ok(p));
        }
        let names = self.store.pilot_names(&req.workspace).await?;
        let suggestion = commands::closest(query, names.iter().map(String::as_str)).map(str::to_owned);
        Ok(Err(
            self.ephemeral(req, self.prompts.render(Key::PilotNotFound, context! { query => echo(query), suggestion }))
        ))
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
}
