//! The scoping conversation: `/pilot register` asks the questions in order and ends on a confirmation;
//! `/pilot edit` asks one question again. Every answer is validated before anything moves.

use super::{AskKind, At, Change, Conversation, Ctx, Effect, Flow, Refusal, Say, Turn, pick};
use crate::domain::{
    Answer, ChannelId, DatePart, Incomplete, OwnerStatus, PersonRef, PilotName, PnlDraft, PnlTarget, ReviewDateError,
    ReviewWindow, Stage, Step,
};
use crate::domain::{Pilot, PilotId};
use crate::prompts::Key;

/// `/pilot register [name] [answers…]`: the answers given with the command wait in the conversation and are
/// taken when it reaches their question ([`apply_prefill`]).
pub fn start_register(name: Option<&str>, prefill: Vec<(Step, String)>, channel: ChannelId, ctx: &Ctx) -> Turn {
    let prefill_bots = if prefill.is_empty() { vec![] } else { ctx.bots.to_vec() };
    let fresh = Conversation {
        flow: Flow::Register,
        at: At::Ask(Step::Name),
        pilot: None,
        channel,
        return_to_confirm: false,
        scratch: super::Scratch { prefill, prefill_bots, ..Default::default() },
    };
    match name {
        None => Turn { effects: vec![Effect::SaveConversation(fresh)], says: vec![Say::Ask(At::Ask(Step::Name))] },
        Some(name) => {
            let turn = answer(&fresh, None, name, ctx);
            if turn.effects.is_empty() {
                // The name given with the command was refused: the conversation still starts, at the name.
                let mut says = turn.says;
                says.push(Say::Ask(At::Ask(Step::Name)));
                Turn { effects: vec![Effect::SaveConversation(fresh)], says }
            } else {
                turn
            }
        }
    }
}

/// Takes the answers given in advance from the registration's current question on, each with the checks a typed
/// one gets: valid ones are recorded and the next question is taken, until one is missing (it is asked), vague or
/// refused (the follow-up or the refusal is said, and it waits there), or all are answered (the summary to
/// confirm). None when there is nothing to take: no answers left, or the pilot not created yet (its name first).
pub fn apply_prefill(conv: &Conversation, pilot: Option<&Pilot>, ctx: &Ctx) -> Option<Turn> {
    if conv.flow != Flow::Register || conv.scratch.prefill.is_empty() || pilot.is_none() {
        return None;
    }
    let At::Ask(first) = conv.at else { return None };
    if first == Step::Name {
        return None;
    }
    let mut plain = conv.clone();
    plain.scratch = conv.scratch.without_partials();
    plain.return_to_confirm = false;
    let mut effects = Vec::new();
    let mut says = Vec::new();
    let mut at = At::Ask(first);
    while let At::Ask(step) = at {
        let Some(text) = conv.scratch.prefilled(step).map(str::to_owned) else {
            says.push(Say::Ask(at));
            break;
        };
        // Taken once: a refused answer is then the user's to give, and going back does not bring it again.
        plain.scratch.prefill.retain(|(s, _)| *s != step);
        let text = text.as_str();
        let here = Conversation { at, ..plain.clone() };
        let turn = match Answer::parse(text) {
            Ok(answer) => answer_step(&here, pilot, step, &answer, ctx),
            Err(e) => Turn::say(vec![Say::Refused(Refusal::Answer(e))]),
        };
        let accepted = turn.effects.iter().any(|e| matches!(e, Effect::Set(_)));
        if !accepted {
            // Vague or refused: said as if typed, and the question waits (with what was understood of it).
            let saved = turn.effects.iter().any(|e| matches!(e, Effect::SaveConversation(_)));
            effects.extend(turn.effects);
            says.extend(turn.says);
            if !saved {
                effects.push(Effect::SaveConversation(here));
            }
            return Some(Turn { effects, says });
        }
        effects.extend(turn.effects.into_iter().filter(|e| !matches!(e, Effect::SaveConversation(_))));
        says.extend(turn.says.into_iter().filter(|s| !matches!(s, Say::Ask(_))));
        at = next_position(&here, step);
        if at == At::Confirm {
            says.push(Say::Ask(At::Confirm));
        }
    }
    effects.push(Effect::SaveConversation(Conversation { at, ..plain }));
    Some(Turn { effects, says })
}

/// `/pilot edit <pilot> <step>`, once the engine has checked the user may edit this pilot.
pub fn start_edit(pilot: PilotId, step: Step, channel: ChannelId) -> Turn {
    let conv = Conversation {
        flow: Flow::Edit,
        at: At::Ask(step),
        pilot: Some(pilot),
        channel,
        return_to_confirm: false,
        scratch: Default::default(),
    };
    Turn { effects: vec![Effect::SaveConversation(conv)], says: vec![Say::Ask(At::Ask(step))] }
}

/// Any text answer to the conversation's pending question.
pub fn answer(conv: &Conversation, pilot: Option<&Pilot>, text: &str, ctx: &Ctx) -> Turn {
    let answer = match Answer::parse(text) {
        Ok(a) => a,
        Err(e) => return Turn::say(vec![Say::Refused(Refusal::Answer(e))]),
    };
    if answer.is_keyword("cancel") {
        return cancel(conv);
    }
    match conv.at {
        At::Ask(step) => answer_step(conv, pilot, step, &answer, ctx),
        At::Confirm => answer_confirm(conv, pilot, &answer, ctx),
        At::PickEdit => answer_pick(conv, &answer, ctx),
        At::PickEvidence | At::Evidence(_) => super::evidence::answer(conv, pilot, &answer, ctx),
        At::ScaleOverride | At::ExtendDate | At::ExtendReason | At::KillCategory | At::KillReason => {
            super::review::answer(conv, pilot, &answer, ctx)
        }
        At::Duplicate => answer_duplicate(conv, &answer, ctx),
    }
}

fn cancel(conv: &Conversation) -> Turn {
    match conv.flow {
        Flow::Register => {
            let mut effects = Vec::new();
            if conv.pilot.is_some() {
                effects.push(Effect::DeleteDraft);
            }
            effects.push(Effect::EndConversation);
            Turn { effects, says: vec![Say::Cancelled] }
        }
        Flow::Edit => Turn { effects: vec![Effect::EndConversation], says: vec![Say::EditCancelled] },
        Flow::Evidence | Flow::Review => Turn { effects: vec![Effect::EndConversation], says: vec![Say::Stopped] },
    }
}

fn move_to(conv: &Conversation, at: At, return_to_confirm: bool) -> Effect {
    Effect::SaveConversation(Conversation {
        at,
        return_to_confirm,
        scratch: conv.scratch.without_partials(),
        ..conv.clone()
    })
}

/// The conversation still at its question, with what is understood of the answer so far.
fn keep_partial(conv: &Conversation, pnl: Option<PnlDraft>, workflow: Option<String>) -> Effect {
    let mut next = conv.clone();
    next.scratch.pnl = pnl.map(Box::new);
    next.scratch.workflow = workflow;
    Effect::SaveConversation(next)
}

/// An answer to the P&L question, combined with what earlier answers to it said: the change to make, or the turn
/// that asks for what is still missing.
fn read_pnl(conv: &Conversation, answer: &Answer, ctx: &Ctx) -> Result<(Change, Option<Say>), Turn> {
    let text = answer.as_str();
    let so_far = conv.scratch.pnl.as_deref().cloned();
    let awaiting = so_far.as_ref().map(PnlDraft::needs).unwrap_or_default();
    let read = PnlDraft::read(text, &awaiting).map_err(|e| Turn::say(vec![Say::Refused(Refusal::Pnl(e))]))?;
    // What this answer says on its own may already be wrong (a target equal to its baseline).
    if let Err(Incomplete::Refused(e)) = read.complete() {
        return Err(Turn::say(vec![Say::Refused(Refusal::Pnl(e))]));
    }
    let combined = so_far.clone().unwrap_or_default().fill(read.clone(), &awaiting);
    // A follow-up is judged with what it completes: `GBP` alone is not a line without numbers.
    let probe = if so_far.is_some() { format!("{} {text}", combined.describe()) } else { text.to_owned() };
    if let Some(rule) = ctx.rules.check(Step::Pnl.as_str(), &probe) {
        let vague = Say::Vague { rule: rule.id.clone(), answer: text.to_owned() };
        if rule.keep && !combined.is_empty() {
            return Err(Turn { effects: vec![keep_partial(conv, Some(combined), None)], says: vec![vague] });
        }
        return Err(Turn::say(vec![vague]));
    }
    match combined.complete() {
        Ok(target) => {
            // Shown back when it took more than this answer to understand it.
            let combined_from_parts = so_far.is_some() && read.complete().is_err();
            let understood =
                combined_from_parts.then(|| Say::Understood { step: Step::Pnl, answer: combined.describe() });
            Ok((Change::Pnl(target), understood))
        }
        Err(Incomplete::Refused(e)) => Err(Turn::say(vec![Say::Refused(Refusal::Pnl(e))])),
        Err(Incomplete::Needs(needs)) => Err(Turn {
            effects: vec![keep_partial(conv, Some(combined.clone()), None)],
            says: vec![Say::PnlMissing { understood: combined.describe(), needs }],
        }),
    }
}

/// A review date given in parts (`March`, then `31`): the change once the parts make a date, or the turn that
/// asks for the rest.
fn read_date(conv: &Conversation, answer: &Answer, ctx: &Ctx) -> Result<(Change, Option<Say>), Turn> {
    let text = answer.as_str();
    let window = ReviewWindow::new(ctx.today, ctx.horizon_days);
    let keep = |part: DatePart| {
        let mut next = conv.clone();
        next.scratch.date_part = Some(part);
        Turn { effects: vec![Effect::SaveConversation(next)], says: vec![Say::DateMissing { part }] }
    };
    if let (Some(kept), Some(part)) = (conv.scratch.date_part, DatePart::read(text)) {
        let whole = kept.with(part);
        let Some(date) = window.date_of(whole) else {
            return Err(keep(whole));
        };
        return match window.check(date) {
            Ok(date) => Ok((
                Change::ReviewDate(date),
                Some(Say::Understood { step: Step::ReviewDate, answer: date.to_string() }),
            )),
            Err(error) => Err(Turn::say(vec![Say::Refused(Refusal::Date { answer: date.to_string(), error })])),
        };
    }
    match read_answer(Step::ReviewDate, answer, ctx) {
        Ok(change) => Ok((change, None)),
        Err(say @ Say::Refused(Refusal::Date { error: ReviewDateError::Unparseable, .. })) => {
            match DatePart::read(text) {
                Some(part) => Err(keep(part)),
                None => Err(Turn::say(vec![say])),
            }
        }
        Err(say) => Err(Turn::say(vec![say])),
    }
}

/// A workflow answer, combined with the short answer its follow-up asked to complete.
fn combine_workflow(conv: &Conversation, text: &str) -> String {
    match conv.scratch.workflow.as_deref() {
        Some(kept) if !text.to_lowercase().contains(&kept.to_lowercase()) => format!("{kept}: {text}"),
        _ => text.to_owned(),
    }
}

fn answer_step(conv: &Conversation, pilot: Option<&Pilot>, step: Step, answer: &Answer, ctx: &Ctx) -> Turn {
    if answer.is_keyword("back") {
        return match (conv.flow, conv.return_to_confirm, step.previous()) {
            (Flow::Edit | Flow::Evidence | Flow::Review, _, _) => Turn::say(vec![Say::EditNoBack, Say::Ask(conv.at)]),
            (Flow::Register, true, _) => {
                Turn { effects: vec![move_to(conv, At::Confirm, false)], says: vec![Say::Ask(At::Confirm)] }
            }
            (Flow::Register, false, None) => Turn::say(vec![Say::BackAtFirst, Say::Ask(conv.at)]),
            (Flow::Register, false, Some(prev)) => {
                Turn { effects: vec![move_to(conv, At::Ask(prev), false)], says: vec![Say::Ask(At::Ask(prev))] }
            }
        };
    }
    if answer.is_keyword("keep") && pilot.is_some_and(|p| has_answer(p, step)) {
        return match conv.flow {
            Flow::Edit | Flow::Evidence | Flow::Review => {
                Turn { effects: vec![Effect::EndConversation], says: vec![Say::EditCancelled] }
            }
            Flow::Register => {
                let next = next_position(conv, step);
                Turn { effects: vec![move_to(conv, next, false)], says: vec![Say::Ask(next)] }
            }
        };
    }
    let mut understood = None;
    let change = match step {
        Step::Pnl => match read_pnl(conv, answer, ctx) {
            Ok((change, said)) => {
                understood = said;
                change
            }
            Err(turn) => return turn,
        },
        Step::ReviewDate => match read_date(conv, answer, ctx) {
            Ok((change, said)) => {
                understood = said;
                change
            }
            Err(turn) => return turn,
        },
        Step::Workflow if conv.scratch.workflow.is_some() => {
            let combined = combine_workflow(conv, answer.as_str());
            let whole = match Answer::parse(&combined) {
                Ok(a) => a,
                Err(e) => return Turn::say(vec![Say::Refused(Refusal::Answer(e))]),
            };
            match read_answer(step, &whole, ctx) {
                Ok(change) => {
                    if combined != answer.as_str() {
                        understood = Some(Say::Understood { step, answer: combined });
                    }
                    change
                }
                Err(say) => return Turn::say(vec![say]),
            }
        }
        _ => match read_answer(step, answer, ctx) {
            Ok(change) => change,
            Err(Say::Vague { rule, answer: said }) if step == Step::Workflow && keeps(ctx, &rule) => {
                return Turn {
                    effects: vec![keep_partial(conv, None, Some(said.clone()))],
                    says: vec![Say::Vague { rule, answer: said }],
                };
            }
            Err(say) => return Turn::say(vec![say]),
        },
    };
    let mut effects = Vec::new();
    match (&change, pilot) {
        (Change::Name(name), None) => effects.push(Effect::CreateDraft(name.clone())),
        _ => effects.push(Effect::Set(change)),
    }
    match conv.flow {
        Flow::Edit | Flow::Evidence | Flow::Review => {
            effects.push(Effect::EndConversation);
            let mut says = vec![Say::Updated(step)];
            // A new owner of a scoped pilot is asked to accept, as the first one was.
            if let (Some(Effect::Set(Change::Owner(owner))), Some(p)) = (effects.first(), pilot)
                && p.owner.as_ref() != Some(owner)
            {
                let (e, s) = owner_acceptance(&owner.clone(), ctx);
                effects.extend(e);
                says.extend(s);
            }
            Turn { effects, says }
        }
        Flow::Register => {
            // A workflow or a P&L line an open pilot already has: first, whether it is the same pilot.
            if let Some(duplicate) = overlapping(conv, pilot, step, &effects, ctx) {
                let mut next = conv.clone();
                next.at = At::Duplicate;
                next.scratch = conv.scratch.without_partials();
                next.scratch.duplicate = Some(Box::new(duplicate));
                effects.push(Effect::SaveConversation(next));
                return Turn { effects, says: understood.into_iter().chain([Say::Ask(At::Duplicate)]).collect() };
            }
            let next = next_position(conv, step);
            effects.push(move_to(conv, next, false));
            Turn { effects, says: understood.into_iter().chain([Say::Ask(next)]).collect() }
        }
    }
}

/// The open pilot this answer makes the registration overlap, if any (and the user has not called it separate).
fn overlapping(
    conv: &Conversation,
    pilot: Option<&Pilot>,
    step: Step,
    effects: &[Effect],
    ctx: &Ctx,
) -> Option<super::DuplicateOf> {
    let (line, workflow) = match effects.first() {
        Some(Effect::Set(Change::Pnl(t))) => (Some(t.line.as_str()), None),
        Some(Effect::Set(Change::Workflow(w))) => (None, Some(w.as_str())),
        _ => return None,
    };
    let (other, shared) =
        crate::domain::overlap::find(ctx.open_pilots, pilot.map(|p| p.id), &conv.scratch.separate, line, workflow)?;
    Some(super::DuplicateOf {
        id: other.id,
        name: other.name.clone(),
        owner: other.owner.clone(),
        same_line: shared == crate::domain::overlap::Shared::PnlLine,
        step,
    })
}

/// The choices when a registration overlaps an open pilot, in order.
pub const DUPLICATE_CHOICES: [Key; 2] = [Key::ChoiceSamePilot, Key::ChoiceSeparatePilot];

/// Same pilot: the registration stops (its draft goes) and the existing one is offered. Separate: it goes on.
fn answer_duplicate(conv: &Conversation, answer: &Answer, ctx: &Ctx) -> Turn {
    let Some(dup) = conv.scratch.duplicate.as_deref().cloned() else {
        // Nothing to decide any more: back to the confirmation.
        return Turn { effects: vec![move_to(conv, At::Confirm, false)], says: vec![Say::Ask(At::Confirm)] };
    };
    let options: Vec<(Key, String)> = DUPLICATE_CHOICES.iter().map(|k| (*k, ctx.labels.label(*k))).collect();
    let also = |t: &str| match t.to_lowercase().as_str() {
        "same" | "yes" => Some(Key::ChoiceSamePilot),
        "separate" | "no" => Some(Key::ChoiceSeparatePilot),
        _ => None,
    };
    match pick(answer.as_str(), &options, also) {
        Some(Key::ChoiceSamePilot) => Turn {
            effects: vec![Effect::DeleteDraft, Effect::EndConversation],
            says: vec![Say::DuplicateStopped { id: dup.id, name: dup.name }],
        },
        Some(_) => {
            let mut next = conv.clone();
            next.scratch.duplicate = None;
            next.scratch.separate.push(dup.id);
            next.at = next_position(&next, dup.step);
            let at = next.at;
            Turn { effects: vec![Effect::SaveConversation(next)], says: vec![Say::Ask(at)] }
        }
        None => refuse_choice(answer, options.into_iter().map(|(_, l)| l).collect()),
    }
}

/// Whether the rule with this id keeps the answer it found vague, to combine with the next one.
fn keeps(ctx: &Ctx, rule: &str) -> bool {
    ctx.rules.iter().any(|r| r.id == rule && r.keep)
}

/// Where a registration goes after answering `step`.
fn next_position(conv: &Conversation, step: Step) -> At {
    match step.next() {
        Some(next) if !conv.return_to_confirm => At::Ask(next),
        _ => At::Confirm,
    }
}

/// Whether the pilot has an answer on record for this step (`keep` keeps it).
pub fn has_answer(p: &Pilot, step: Step) -> bool {
    match step {
        Step::Name => true,
        Step::Workflow => p.workflow.is_some(),
        Step::Owner => p.owner.is_some(),
        Step::Pnl => p.pnl.is_some(),
        Step::Sponsor => p.sponsor.is_some(),
        Step::ReviewDate => p.review_date.is_some(),
    }
}

/// The answer that leaves the sponsor unset.
pub const SKIP: &str = "skip";

/// Validates one answer into the change it makes, or says why not.
pub fn read_answer(step: Step, answer: &Answer, ctx: &Ctx) -> Result<Change, Say> {
    let text = answer.as_str();
    if step == Step::Sponsor && answer.is_keyword(SKIP) {
        if ctx.settings.sponsor_required {
            return Err(Say::Refused(Refusal::Rule(crate::domain::rules::Refusal::SponsorRequired)));
        }
        return Ok(Change::Sponsor(None));
    }
    if let Some(rule) = ctx.rules.check(step.as_str(), text) {
        return Err(Say::Vague { rule: rule.id.clone(), answer: text.to_owned() });
    }
    let person = |step| {
        PersonRef::parse(text, |u| ctx.bots.contains(u))
            .map(|p| p.0)
            .map_err(|error| Say::Refused(Refusal::Person { step, error }))
    };
    match step {
        Step::Name => PilotName::parse(text).map(Change::Name).map_err(|e| Say::Refused(Refusal::Name(e))),
        Step::Workflow => Ok(Change::Workflow(text.to_owned())),
        Step::Owner => person(step).map(Change::Owner),
        Step::Sponsor => person(step).map(|p| Change::Sponsor(Some(p))),
        Step::Pnl => PnlTarget::parse(text).map(Change::Pnl).map_err(|e| Say::Refused(Refusal::Pnl(e))),
        Step::ReviewDate => {
            let window = ReviewWindow::new(ctx.today, ctx.horizon_days);
            if answer.is_keyword("default") {
                return Ok(Change::ReviewDate(crate::domain::review_date::default_review_date(
                    ctx.today,
                    ctx.default_review_weeks,
                )));
            }
            window
                .parse(text)
                .map(Change::ReviewDate)
                .map_err(|error| Say::Refused(Refusal::Date { answer: text.to_owned(), error }))
        }
    }
}

/// The choices offered at the confirmation, in order.
pub const CONFIRM_CHOICES: [Key; 3] = [Key::ChoiceConfirm, Key::ChoiceEdit, Key::ChoiceCancel];

fn refuse_choice(answer: &Answer, labels: Vec<String>) -> Turn {
    Turn::say(vec![Say::Refused(Refusal::Choice { answer: answer.as_str().to_owned(), choices: labels })])
}

/// Asks the pilot's owner to accept ownership, unless the owner is the one acting (who accepts by naming themselves).
pub fn owner_acceptance(owner: &crate::domain::UserId, ctx: &Ctx) -> (Vec<Effect>, Vec<Say>) {
    if owner == ctx.user {
        (vec![Effect::SetOwnerStatus { status: OwnerStatus::Accepted, reason: None }], vec![])
    } else {
        (
            vec![
                Effect::SetOwnerStatus { status: OwnerStatus::Pending, reason: None },
                Effect::OpenAsk { user: owner.clone(), kind: AskKind::AcceptOwnership },
            ],
            vec![Say::AskOwner],
        )
    }
}

fn answer_confirm(conv: &Conversation, pilot: Option<&Pilot>, answer: &Answer, ctx: &Ctx) -> Turn {
    if answer.is_keyword("back") {
        return Turn {
            effects: vec![move_to(conv, At::Ask(Step::ReviewDate), false)],
            says: vec![Say::Ask(At::Ask(Step::ReviewDate))],
        };
    }
    let options: Vec<(Key, String)> = CONFIRM_CHOICES.iter().map(|k| (*k, ctx.labels.label(*k))).collect();
    let also = |t: &str| match t.to_lowercase().as_str() {
        "yes" | "ok" | "confirm" => Some(Key::ChoiceConfirm),
        "edit" => Some(Key::ChoiceEdit),
        _ => None,
    };
    match pick(answer.as_str(), &options, also) {
        Some(Key::ChoiceConfirm) => {
            let mut effects = vec![Effect::SetStage(Stage::Scoped), Effect::EndConversation];
            let mut says = vec![Say::Registered];
            if let Some(owner) = pilot.and_then(|p| p.owner.as_ref()) {
                let (e, s) = owner_acceptance(owner, ctx);
                effects.extend(e);
                says.extend(s);
            }
            Turn { effects, says }
        }
        Some(Key::ChoiceEdit) => {
            Turn { effects: vec![move_to(conv, At::PickEdit, false)], says: vec![Say::Ask(At::PickEdit)] }
        }
        Some(_) => cancel(conv),
        None => refuse_choice(answer, options.into_iter().map(|(_, l)| l).collect()),
    }
}

fn answer_pick(conv: &Conversation, answer: &Answer, ctx: &Ctx) -> Turn {
    if answer.is_keyword("back") {
        return Turn { effects: vec![move_to(conv, At::Confirm, false)], says: vec![Say::Ask(At::Confirm)] };
    }
    let options: Vec<(Step, String)> = Step::ALL.iter().map(|s| (*s, ctx.labels.label(Key::for_step(*s)))).collect();
    match pick(answer.as_str(), &options, Step::parse) {
        Some(step) => Turn { effects: vec![move_to(conv, At::Ask(step), true)], says: vec![Say::Ask(At::Ask(step))] },
        None => refuse_choice(answer, options.into_iter().map(|(_, l)| l).collect()),
    }
}
