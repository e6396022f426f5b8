//! What the engine says: the scoping questions with the controls that answer them, refusals, and what a turn says
//! about the pilot as written. The review lifecycle's own replies are in `review_replies`.

use minijinja::context;

use super::{Destination, Engine, Expect, Reply, Request};
use crate::dialogue::{At, Refusal, Say, Scratch, scoping};
use crate::domain::answer::MAX_ANSWER_CHARS;
use crate::domain::pilot::NAME_MAX_CHARS;
use crate::domain::rules;
use crate::domain::{
    AnswerError, PersonError, Pilot, PilotNameError, PnlError, ReviewDateError, ReviewWindow, Stage, Step, UserId,
    WorkspaceSettings,
};
use crate::prompts::{Key, echo};

impl Engine {
    /// Why a rule refused: `now`, when the change was refused as it was committed (or a command started), rather
    /// than at a question that is asked again.
    pub(super) fn rule_refusal(&self, r: &rules::Refusal, pilot: Option<&Pilot>, now: bool) -> String {
        super::metric::refused(format!("rule_{}", r.name()));
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

    #[allow(clippy::too_many_arguments)]
    pub(super) fn say(
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
                super::metric::refused(format!("vague_{rule}"));
                let rule = p.rules().iter().find(|r| r.id == rule);
                if let Some(rule) = rule {
                    out.push(self.ephemeral(
                        req,
                        p.render_rule(
                            rule,
                            context! { pilot => name.clone().unwrap_or_default(), answer => echo(&answer) },
                        ),
                    ));
                }
            }
            Say::PnlMissing { understood, needs } => {
                use crate::domain::PnlField;
                let text = p.render(
                    Key::PnlMissing,
                    context! {
                        pilot => name.clone().unwrap_or_default(), understood,
                        line => needs.contains(&PnlField::Line), baseline => needs.contains(&PnlField::Baseline),
                        target => needs.contains(&PnlField::Target), unit => needs.contains(&PnlField::Unit),
                    },
                );
                out.push(self.ephemeral(req, text));
            }
            Say::DuplicateStopped { id, name: other } => {
                let text = p.render(
                    Key::DuplicateStopped,
                    context! { pilot => before.map(|b| b.name.clone()), id => id.0, other },
                );
                let open =
                    super::Shortcut { label: p.text(Key::ShortcutStatus), command: format!("/pilot status #{}", id.0) };
                out.push(Engine::with_shortcuts(self.ephemeral(req, text), vec![open]));
            }
            Say::DateMissing { part } => {
                let month = part
                    .month
                    .and_then(|m| chrono::NaiveDate::from_ymd_opt(2000, m, 1))
                    .map(|d| d.format("%B").to_string());
                let text = p.render(
                    Key::DateMissing,
                    context! { pilot => name.clone().unwrap_or_default(), month, day => part.day, year => part.year },
                );
                out.push(self.ephemeral(req, text));
            }
            Say::Understood { step, answer } => {
                let step = p.text(Key::for_step(step));
                out.push(self.ephemeral(req, p.render(
                    Key::Understood,
                    context! { step, answer => crate::prompts::echo_up_to(&answer, crate::prompts::UNDERSTOOD_MAX_CHARS) },
                )));
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
            other => self.say_lifecycle(req, other, before, after, out),
        }
    }

    pub(super) fn refusal(&self, req: &Request, r: Refusal, pilot: Option<&Pilot>) -> String {
        if let Some(reason) = refusal_reason(&r) {
            super::metric::refused(reason);
        }
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
                ReviewDateError::Unparseable => p.render(Key::DateUnparseable, context! { answer => echo(&answer) }),
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
                p.render(Key::ChoiceUnknown, context! { answer => echo(&answer), choices => choices.join(", ") })
            }
        }
    }

    /// The question at a position, with what the user can answer.
    pub(super) fn ask(
        &self,
        req: &Request,
        settings: &WorkspaceSettings,
        at: At,
        pilot: Option<&Pilot>,
        scratch: &Scratch,
    ) -> Reply {
        Reply { question: Some(at.as_str().to_owned()), ..self.question(req, settings, at, pilot, scratch) }
    }

    pub(super) fn question(
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
                        let default_date =
                            crate::domain::review_date::default_review_date(today, self.settings.default_review_weeks);
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
            At::Duplicate => {
                let Some(dup) = &scratch.duplicate else {
                    return self.ask(req, settings, At::Confirm, pilot, scratch);
                };
                let choices = scoping::DUPLICATE_CHOICES.iter().map(|k| p.text(*k)).collect();
                let text = p.render(
                    Key::AskDuplicate,
                    context! {
                        pilot => name, id => dup.id.0, other => dup.name, owner => self.person(dup.owner.as_ref()),
                        same_line => dup.same_line,
                    },
                );
                Reply { choices, expect: Some(Expect::Choice), ..self.ephemeral(req, text) }
            }
            other => self.ask_lifecycle(req, settings, other, pilot, scratch),
        }
    }

    pub(super) fn position_label(&self, at: At) -> String {
        self.prompts.text(match at {
            At::Ask(step) => Key::for_step(step),
            At::Confirm => Key::ChoiceConfirm,
            At::PickEdit => Key::ChoiceEdit,
            At::PickEvidence | At::Evidence(_) => Key::DescEvidence,
            At::Duplicate => Key::StepDuplicate,
            _ => Key::DescReview,
        })
    }

    /// An answer on record, as shown to users.
    pub(super) fn value(&self, pilot: &Pilot, step: Step) -> Option<String> {
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

    pub(super) fn date(&self, date: Option<chrono::NaiveDate>) -> String {
        date.map(|d| d.to_string()).unwrap_or_else(|| self.prompts.text(Key::NotSet))
    }

    pub(super) fn stage(&self, stage: Stage) -> String {
        self.prompts.text(match stage {
            Stage::Draft => Key::StageDraft,
            Stage::Scoped => Key::StageScoped,
            Stage::InProduction => Key::StageInProduction,
            Stage::Killed => Key::StageKilled,
        })
    }

    pub(crate) fn ephemeral(&self, req: &Request, text: String) -> Reply {
        Reply::new(Destination::Ephemeral(req.user.clone()), text)
    }
}

/// When no reply asks anything, the last reply to the user carries the controls of `again` (the open question),
/// with `refused` as the text to start from.
pub(super) fn ask_again(replies: &mut [Reply], again: Reply, refused: Option<String>) {
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

/// The name a refusal is counted under; a rule's refusal is counted where it is rendered.
fn refusal_reason(r: &Refusal) -> Option<&'static str> {
    Some(match r {
        Refusal::Answer(_) => "answer",
        Refusal::Name(_) => "name",
        Refusal::Person { .. } => "person",
        Refusal::Pnl(_) => "pnl",
        Refusal::Date { .. } => "date",
        Refusal::Choice { .. } => "choice",
        Refusal::EvidenceFormat => "evidence_format",
        Refusal::EvidenceUnit { .. } => "evidence_unit",
        Refusal::NoSponsorForExtension { .. } => "no_sponsor_for_extension",
        Refusal::Rule(_) => return None,
    })
}
