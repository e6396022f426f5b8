//! `/pilot review <pilot> scale|extend|kill`: a decision and what it needs. Scale needs 3/3 evidence or an
//! explicit override with a reason; extend a new review date and a reason (beyond the limit, the sponsor's
//! confirmation); kill a reason category (healthy kill or absorption failure) and a reason.

use super::{AskKind, At, Conversation, Ctx, Decision, Effect, Flow, Refusal, Say, Turn, pick};
use crate::domain::{Answer, ChannelId, DecisionKind, KillCategory, Pilot, ReviewWindow};
use crate::prompts::Key;

pub const KILL_CHOICES: [(KillCategory, Key); 2] = [
    (KillCategory::NotWorthScaling, Key::KillNotWorthScaling),
    (KillCategory::StalledInHandoff, Key::KillStalledInHandoff),
];

fn conversation(pilot: &Pilot, at: At, channel: ChannelId) -> Conversation {
    Conversation {
        flow: Flow::Review,
        at,
        pilot: Some(pilot.id),
        channel,
        return_to_confirm: false,
        scratch: Default::default(),
    }
}

/// Starts a decision, once the engine has checked the user may decide and the pilot is undecided.
pub fn start(pilot: &Pilot, kind: DecisionKind, channel: ChannelId) -> Turn {
    let at = match kind {
        DecisionKind::Scale if pilot.evidence_count() == 3 => {
            let decision =
                Decision { kind, reason: String::new(), category: None, new_date: None, override_evidence: false };
            return Turn { effects: vec![Effect::Decide(decision)], says: vec![Say::Decided(kind)] };
        }
        DecisionKind::Scale => At::ScaleOverride,
        DecisionKind::Extend => At::ExtendDate,
        DecisionKind::Kill => At::KillCategory,
    };
    Turn { effects: vec![Effect::SaveConversation(conversation(pilot, at, channel))], says: vec![Say::Ask(at)] }
}

fn move_to(conv: &Conversation, at: At) -> Effect {
    Effect::SaveConversation(Conversation { at, ..conv.clone() })
}

fn vague(ctx: &Ctx, question: &str, text: &str) -> Option<Turn> {
    ctx.rules.check(question, text).map(|r| Turn::say(vec![Say::Vague { rule: r.id.clone(), answer: text.to_owned() }]))
}

pub fn answer(conv: &Conversation, pilot: Option<&Pilot>, answer: &Answer, ctx: &Ctx) -> Turn {
    let Some(pilot) = pilot else {
        return Turn::say(vec![Say::AskVoid]);
    };
    // A decision is final, but for a kill of a pilot in production on credit (the rules check it again).
    let killing = matches!(conv.at, At::KillCategory | At::KillReason);
    if pilot.is_decided() && !(killing && crate::domain::rules::on_credit(pilot)) {
        return Turn { effects: vec![Effect::EndConversation], says: vec![Say::AskVoid] };
    }
    let text = answer.as_str();
    let back = |at: At| Turn { effects: vec![move_to(conv, at)], says: vec![Say::Ask(at)] };
    match conv.at {
        At::ScaleOverride => {
            if answer.is_keyword("back") {
                return Turn::say(vec![Say::EditNoBack, Say::Ask(conv.at)]);
            }
            if let Some(t) = vague(ctx, "scale_override", text) {
                return t;
            }
            // An override is a debt: the missing evidence is due a review interval from now.
            let decision = Decision {
                kind: DecisionKind::Scale,
                reason: text.to_owned(),
                category: None,
                new_date: Some(crate::domain::review_date::default_review_date(ctx.today, ctx.default_review_weeks)),
                override_evidence: true,
            };
            Turn {
                effects: vec![Effect::Decide(decision), Effect::EndConversation],
                says: vec![Say::Decided(DecisionKind::Scale)],
            }
        }
        At::ExtendDate => {
            if answer.is_keyword("back") {
                return Turn::say(vec![Say::EditNoBack, Say::Ask(conv.at)]);
            }
            let window = ReviewWindow::new(ctx.today, ctx.horizon_days);
            match window.parse(text) {
                Ok(date) => {
                    let mut next = conv.clone();
                    next.at = At::ExtendReason;
                    next.scratch.date = Some(date);
                    Turn { effects: vec![Effect::SaveConversation(next)], says: vec![Say::Ask(At::ExtendReason)] }
                }
                Err(error) => Turn::say(vec![Say::Refused(Refusal::Date { answer: text.to_owned(), error })]),
            }
        }
        At::ExtendReason => {
            if answer.is_keyword("back") {
                return back(At::ExtendDate);
            }
            if let Some(t) = vague(ctx, "extend_reason", text) {
                return t;
            }
            let Some(date) = conv.scratch.date else {
                return back(At::ExtendDate);
            };
            let limit = ctx.settings.extension_limit;
            // An owner's request, or an extension beyond the limit, needs the sponsor's confirmation (the registrant's
            // when there is no sponsor for a request); beyond the limit without a sponsor, nobody can confirm it.
            let beyond = pilot.extensions >= limit;
            let approver = match (&pilot.sponsor, beyond) {
                // The same approver as `rules::extension_approver`, but beyond the limit only a sponsor confirms.
                (Some(sponsor), _) => Some(sponsor.clone()),
                (None, false) => Some(pilot.registered_by.clone()),
                (None, true) => None,
            };
            if (conv.scratch.request || beyond) && approver.as_ref() != Some(ctx.user) {
                let Some(approver) = approver else {
                    return Turn {
                        effects: vec![Effect::EndConversation],
                        says: vec![Say::Refused(Refusal::NoSponsorForExtension { limit })],
                    };
                };
                let kind = AskKind::ApproveExtension { date, reason: text.to_owned(), requested_by: ctx.user.clone() };
                return Turn {
                    effects: vec![Effect::OpenAsk { user: approver.clone(), kind }, Effect::EndConversation],
                    says: vec![Say::ExtensionAwaitsSponsor { date, reason: text.to_owned(), limit, approver }],
                };
            }
            let decision = Decision {
                kind: DecisionKind::Extend,
                reason: text.to_owned(),
                category: None,
                new_date: Some(date),
                override_evidence: false,
            };
            Turn {
                effects: vec![Effect::Decide(decision), Effect::EndConversation],
                says: vec![Say::Decided(DecisionKind::Extend)],
            }
        }
        At::KillCategory => {
            if answer.is_keyword("back") {
                return Turn::say(vec![Say::EditNoBack, Say::Ask(conv.at)]);
            }
            let options: Vec<(KillCategory, String)> =
                KILL_CHOICES.iter().map(|(c, k)| (*c, ctx.labels.label(*k))).collect();
            match pick(text, &options, KillCategory::parse) {
                Some(category) => {
                    let mut next = conv.clone();
                    next.at = At::KillReason;
                    next.scratch.category = Some(category);
                    Turn { effects: vec![Effect::SaveConversation(next)], says: vec![Say::Ask(At::KillReason)] }
                }
                None => Turn::say(vec![Say::Refused(Refusal::Choice {
                    answer: text.to_owned(),
                    choices: options.into_iter().map(|(_, l)| l).collect(),
                })]),
            }
        }
        At::KillReason => {
            if answer.is_keyword("back") {
                return back(At::KillCategory);
            }
            if let Some(t) = vague(ctx, "kill_reason", text) {
                return t;
            }
            let Some(category) = conv.scratch.category else {
                return back(At::KillCategory);
            };
            let decision = Decision {
                kind: DecisionKind::Kill,
                reason: text.to_owned(),
                category: Some(category),
                new_date: None,
                override_evidence: false,
            };
            Turn {
                effects: vec![Effect::Decide(decision), Effect::EndConversation],
                says: vec![Say::Decided(DecisionKind::Kill)],
            }
        }
        _ => Turn::say(vec![Say::AskVoid]),
    }
}
