//! A turn, committed: the dialogue said what it wants done; the domain's rules decide what that changes on the pilot
//! as read (with its version), the schedule's next time is worked out from the result, and the store writes it all
//! in one transaction, or says the state moved meanwhile (then the request is decided again).

use minijinja::context;

use super::{Engine, Input, Reply, Request, ask_again};
use crate::dialogue::{Change, Conversation, Effect, Turn};
use crate::domain::change::{Changes, Command};
use crate::domain::rules::{self, NameClaim, NameHolder};
use crate::domain::{Pilot, PilotId, PilotName, Stage, WorkspaceSettings};
use crate::prompts::Key;
use crate::store::{
    AskWrite, ConversationGuard, ConversationWrite, NewDraft, PilotRef, PilotUpdate, StoreError, TurnWrite,
};

/// The pilot command an effect asks for, if it is one.
fn command(effect: &Effect) -> Option<Command> {
    Some(match effect {
        Effect::Set(change) => Command::Set(change.clone()),
        Effect::SetStage(stage) => Command::SetStage(*stage),
        Effect::AddEvidence(item) => Command::AddEvidence(item.clone()),
        Effect::Decide(d) => Command::Decide(d.clone()),
        Effect::SetOwnerStatus { status, reason } => {
            Command::SetOwnerStatus { status: *status, reason: reason.clone() }
        }
        Effect::NudgeAnswered => Command::NudgeAnswered,
        Effect::Snooze { until } => Command::Snooze { until: *until },
        _ => return None,
    })
}

impl Engine {
    /// Whether the name can be had by a turn on pilot `own`: Ok with the abandoned registration to remove first,
    /// if any; or the reply that says who holds it.
    async fn claim_name(
        &self,
        req: &Request,
        name: &PilotName,
        own: Option<PilotId>,
    ) -> Result<Result<Option<NameHolder>, Reply>, StoreError> {
        let holder = self.store.name_holder(&req.workspace, &name.key()).await?;
        Ok(match rules::claim_name(holder, own, req.now) {
            NameClaim::Free => Ok(None),
            NameClaim::Release(h) => Ok(Some(h)),
            NameClaim::Taken(h) => Err(self.ephemeral(req, self.name_taken(req, name.as_str(), Some(&h)))),
        })
    }

    /// Why a name cannot be had: another pilot has it, or someone's unfinished registration holds it until it
    /// has been left untouched for [`DRAFT_ABANDONED_AFTER`](crate::domain::pilot::DRAFT_ABANDONED_AFTER).
    pub(super) fn name_taken(&self, req: &Request, name: &str, holder: Option<&NameHolder>) -> String {
        match holder {
            Some(h) if h.stage == Stage::Draft && h.registered_by != req.user => self.prompts.render(
                Key::NameHeldByDraft,
                context! {
                    pilot => name, user => h.registered_by.mention(),
                    since => h.last_answer.format("%Y-%m-%d %H:%M UTC").to_string(),
                    until => crate::domain::pilot::abandoned_from(h.last_answer).format("%Y-%m-%d %H:%M UTC").to_string(),
                },
            ),
            _ => self.prompts.render(Key::NameTaken, context! { pilot => name }),
        }
    }

    /// A name refused: the question stays open. A registration started with a taken name still waits for a name.
    async fn name_refused(
        &self,
        req: &Request,
        settings: &WorkspaceSettings,
        conv: &Conversation,
        before: Option<&Pilot>,
        taken: Reply,
    ) -> Result<Vec<Reply>, StoreError> {
        if conv.pilot.is_none() {
            let mut wait = TurnWrite::new(req.workspace.clone(), req.user.clone(), req.now, ConversationGuard::Any);
            wait.conversation = ConversationWrite::Save { conversation: Box::new(conv.clone()), created: false };
            self.store.write(wait).await?;
        }
        Ok(vec![taken, self.ask(req, settings, conv.at, before, &conv.scratch)])
    }

    /// A rule refused the turn as it was committed: nothing of it is written. The question is asked again, or
    /// closed when the user can no longer answer it.
    async fn rule_refused(
        &self,
        req: &Request,
        settings: &WorkspaceSettings,
        conv: &Conversation,
        guard: ConversationGuard,
        pilot: &Pilot,
        refusal: rules::Refusal,
    ) -> Result<Vec<Reply>, StoreError> {
        let ends = refusal.ends_conversation();
        let open = matches!(guard, ConversationGuard::At(_));
        let mut write = TurnWrite::new(req.workspace.clone(), req.user.clone(), req.now, guard);
        if ends && open {
            write.conversation = ConversationWrite::End;
        }
        self.store.write(write).await?;
        let mut replies = vec![self.ephemeral(req, self.rule_refusal(&refusal, Some(pilot), true))];
        if open && !ends {
            // The question stays open: its controls come with the refusal, starting from the answer refused.
            let again = self.ask(req, settings, conv.at, Some(pilot), &conv.scratch);
            let refused = match &req.input {
                Input::Text(text) => Some(text.clone()),
                _ => None,
            };
            ask_again(&mut replies, again, refused);
        }
        Ok(replies)
    }

    /// What a turn's change took away from the evidence that counted: the user is told, and so is the owner (who
    /// records it again), unless they made the change.
    fn voided(&self, req: &Request, change: &str, before: &Pilot, after: &Pilot, out: &mut Vec<Reply>) {
        let lost = rules::lost_evidence(before, after);
        if lost.is_empty() || before.stage == Stage::Draft {
            return;
        }
        let items = lost
            .iter()
            .map(|k| self.prompts.text(crate::dialogue::evidence::label_key(*k)))
            .collect::<Vec<_>>()
            .join(", ");
        let pilot = after.name.clone();
        let text = self.prompts.render(Key::EvidenceVoided, context! { pilot, step => change, items });
        out.push(self.ephemeral(req, text));
        if let Some(owner) = after.owner.as_ref().filter(|o| **o != req.user) {
            let text = self.prompts.render(
                Key::EvidenceVoidedDm,
                context! { pilot => after.name, step => change, items, user => req.user.mention() },
            );
            out.push(self.dm(after, owner, text, Vec::new()));
        }
    }

    /// When the pilot's next scheduled message is due, as `pilot` now is (a draft has none).
    async fn next_action(
        &self,
        pilot: &Pilot,
        settings: &WorkspaceSettings,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
        if pilot.stage == Stage::Draft {
            return Ok(None);
        }
        let own = match &pilot.owner {
            Some(owner) => self.store.user_timezone(&pilot.workspace, owner).await?,
            None => None,
        };
        let tz = crate::domain::due::own_or_workspace_zone(own, settings);
        Ok(crate::domain::due::next_due_in(pilot, &pilot.schedule, settings, tz).map(|d| d.at))
    }

    /// Commits a turn, then says what the turn says about the pilot as written.
    pub(super) async fn run(
        &self,
        req: &Request,
        settings: &WorkspaceSettings,
        conv: &Conversation,
        guard: ConversationGuard,
        before: Option<Pilot>,
        turn: Turn,
    ) -> Result<Vec<Reply>, StoreError> {
        let Turn { effects, says } = turn;
        if let Some(p) = &before {
            tracing::Span::current().record("pilot", p.id.0);
        }
        let guarded = matches!(guard, ConversationGuard::At(_));
        // Where the conversation waits after this turn, if it still waits.
        let waits_at = effects
            .iter()
            .rev()
            .find_map(|e| match e {
                Effect::SaveConversation(c) => Some(Some(c.at)),
                Effect::EndConversation => Some(None),
                _ => None,
            })
            .unwrap_or_else(|| guarded.then_some(conv.at));
        let mut write = TurnWrite::new(req.workspace.clone(), req.user.clone(), req.now, guard);
        // A registration is only confirmed when every required answer is on record.
        if effects.contains(&Effect::SetStage(Stage::Scoped))
            && let Some(missing) = before.as_ref().and_then(|p| rules::first_missing(p, settings))
        {
            let back = Conversation { at: crate::dialogue::At::Ask(missing), ..conv.clone() };
            write.conversation = ConversationWrite::Save { conversation: Box::new(back), created: false };
            self.store.write(write).await?;
            return Ok(vec![self.ask(
                req,
                settings,
                crate::dialogue::At::Ask(missing),
                before.as_ref(),
                &conv.scratch,
            )]);
        }
        let channel = before.as_ref().map(|p| p.home_channel.clone()).unwrap_or_else(|| conv.channel.clone());
        let mut changes = before.as_ref().map(Changes::none);
        for effect in &effects {
            if let Some(cmd) = command(effect) {
                let Some(so_far) = changes.take() else { return Err(StoreError::PilotGone) };
                if let Command::Set(Change::Name(name)) = &cmd {
                    match self.claim_name(req, name, Some(so_far.pilot.id)).await? {
                        Ok(release) => write.release = release,
                        Err(taken) => {
                            return Ok(vec![taken, self.ask(req, settings, conv.at, before.as_ref(), &conv.scratch)]);
                        }
                    }
                }
                let actor = rules::Actor { user: &req.user, platform_admin: req.admin };
                // Beyond a registrant's answers to their own draft, who may do what depends on the settings: the
                // change is written only while the settings it was decided on are in force.
                if so_far.pilot.stage != Stage::Draft || matches!(cmd, Command::SetStage(_)) {
                    write.settings_revision = Some(settings.revision);
                }
                match rules::apply(&so_far.pilot, &cmd, &actor, settings, req.now) {
                    Ok(next) => changes = Some(so_far.then(next)),
                    Err(refusal) => {
                        return self.rule_refused(req, settings, conv, write.guard, &so_far.pilot, refusal).await;
                    }
                }
                continue;
            }
            match effect {
                Effect::CreateDraft(name) => match self.claim_name(req, name, None).await? {
                    Ok(release) => {
                        write.release = release;
                        write.create = Some(NewDraft { name: name.clone(), channel: channel.clone() });
                        write.audit.push((PilotRef::Created, rules::created_audit(name.as_str())));
                    }
                    Err(taken) => return self.name_refused(req, settings, conv, before.as_ref(), taken).await,
                },
                Effect::DeleteDraft => {
                    let Some(p) = changes.take() else { return Err(StoreError::PilotGone) };
                    write.delete = Some((p.pilot.id, p.pilot.version));
                    write.audit.push((PilotRef::Id(p.pilot.id), rules::deleted_audit(&p.pilot.name)));
                }
                Effect::SaveConversation(c) => {
                    let created = c.pilot.is_none() && write.create.is_some();
                    let mut c = c.clone();
                    if c.pilot.is_none() && !created {
                        c.pilot = changes.as_ref().map(|p| p.pilot.id);
                    }
                    write.conversation = ConversationWrite::Save { conversation: Box::new(c), created };
                }
                Effect::EndConversation => write.conversation = ConversationWrite::End,
                Effect::OpenAsk { user, kind } => {
                    let pilot = match (&changes, &write.create) {
                        (Some(p), _) => PilotRef::Id(p.pilot.id),
                        (None, Some(_)) => PilotRef::Created,
                        (None, None) => return Err(StoreError::PilotGone),
                    };
                    let payload = serde_json::to_string(kind).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    write.asks.push(AskWrite::Open { pilot, user: user.clone(), kind: kind.name(), payload });
                }
                Effect::CloseAsk(id) => write.asks.push(AskWrite::Close(*id)),
                _ => {}
            }
        }
        let mut after = None;
        if let (Some(before), Some(c)) = (&before, changes) {
            let Changes { mut pilot, audit, evidence, voided } = c;
            if pilot != *before {
                pilot.next_action_at = self.next_action(&pilot, settings).await?;
            }
            let id = PilotRef::Id(before.id);
            write.audit.extend(audit.into_iter().map(|a| (id, a)));
            write.evidence.extend(evidence.into_iter().map(|e| (id, e)));
            write.voided.extend(voided.into_iter().map(|k| (before.id, k)));
            if pilot != *before {
                write.update = Some(PilotUpdate { before: before.clone(), after: pilot.clone() });
                pilot.version = before.version + 1;
            }
            after = Some(pilot);
        }
        let released = write.release.clone();
        let written = match self.store.write(write).await {
            Ok(w) => w,
            // Taken meanwhile by a turn that was written first.
            Err(StoreError::NameTaken) => {
                let name = effects.iter().find_map(|e| match e {
                    Effect::CreateDraft(n) | Effect::Set(Change::Name(n)) => Some(n.as_str()),
                    _ => None,
                });
                let taken = self.ephemeral(req, self.name_taken(req, name.unwrap_or_default(), None));
                return self.name_refused(req, settings, conv, before.as_ref(), taken).await;
            }
            Err(e) => return Err(e),
        };
        if let Some(created) = written.created {
            after = Some(created);
        }
        // Questions asked next may quote answers the conversation keeps (an extension's date, a kill's category).
        let scratch = effects
            .iter()
            .rev()
            .find_map(|e| match e {
                Effect::SaveConversation(c) => Some(c.scratch.clone()),
                _ => None,
            })
            .unwrap_or_else(|| conv.scratch.clone());
        let mut replies = Vec::new();
        for say in says {
            self.say(req, settings, say, before.as_ref(), after.as_ref(), &scratch, &mut replies);
        }
        if let (Some(b), Some(a)) = (&before, &after) {
            let change = effects.iter().find_map(|e| match e {
                Effect::Set(c) => Some(lower_first(&self.prompts.text(Key::for_step(c.step())))),
                _ => None,
            });
            if let Some(change) = change {
                self.voided(req, &change, b, a, &mut replies);
            }
        }
        if let Some(at) = waits_at {
            // A refused or vague answer leaves the question open: say how to answer it again, starting from the
            // text just given when it was refused as typed.
            let again = self.ask(req, settings, at, after.as_ref().or(before.as_ref()), &scratch);
            // A partial answer kept for combining is not offered again: the question now asks for the rest.
            let partial = scratch.pnl.is_some() || scratch.workflow.is_some() || scratch.date_part.is_some();
            let refused = match &req.input {
                Input::Text(text) if at == conv.at && !partial => Some(text.clone()),
                _ => None,
            };
            ask_again(&mut replies, again, refused);
        }
        // Whoever left the registration whose name this one took is told, by direct message.
        if let (Some(r), Some(pilot)) = (released, &after) {
            let text =
                self.prompts.render(Key::DraftTakenOver, context! { pilot => r.name, user => req.user.mention() });
            replies.push(self.dm(pilot, &r.registered_by, text, Vec::new()));
        }
        Ok(replies)
    }
}

/// `Workflow` -> `workflow`, for a label inside a sentence; `P&L line` stays as it is.
fn lower_first(label: &str) -> String {
    let mut chars = label.chars();
    match (chars.next(), chars.next()) {
        (Some(first), Some(second)) if second.is_lowercase() => {
            first.to_lowercase().chain(label.chars().skip(1)).collect()
        }
        _ => label.to_owned(),
    }
}
