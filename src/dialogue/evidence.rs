//! `/pilot evidence`: production evidence, one item at a time, each mirroring a scoping answer.
//! `workflow_live` and `owner_running` are notes; `pnl_moved` is a measured value in the line's unit,
//! the period it covers and its source. Usage and adoption are not evidence (the vague-answer rules say so).

use super::{At, Conversation, Ctx, Effect, EvidenceItem, Flow, Refusal, Say, Turn, pick};
use crate::domain::{Answer, ChannelId, EvidenceKind, Pilot, Quantity, rules};
use crate::prompts::Key;

pub fn label_key(kind: EvidenceKind) -> Key {
    match kind {
        EvidenceKind::WorkflowLive => Key::EvidenceWorkflowLive,
        EvidenceKind::OwnerRunning => Key::EvidenceOwnerRunning,
        EvidenceKind::PnlMoved => Key::EvidencePnlMoved,
    }
}

/// `/pilot evidence <pilot>`, once the engine has checked who may record evidence.
pub fn start(pilot: &Pilot, channel: ChannelId) -> Turn {
    let conv = Conversation {
        flow: Flow::Evidence,
        at: At::PickEvidence,
        pilot: Some(pilot.id),
        channel,
        return_to_confirm: false,
        scratch: Default::default(),
    };
    Turn { effects: vec![Effect::SaveConversation(conv)], says: vec![Say::Ask(At::PickEvidence)] }
}

fn move_to(conv: &Conversation, at: At) -> Effect {
    Effect::SaveConversation(Conversation { at, ..conv.clone() })
}

pub fn answer(conv: &Conversation, pilot: Option<&Pilot>, answer: &Answer, ctx: &Ctx) -> Turn {
    let Some(pilot) = pilot else {
        return Turn::say(vec![Say::AskVoid]);
    };
    match conv.at {
        At::PickEvidence => {
            if answer.is_keyword("back") {
                return Turn::say(vec![Say::EditNoBack, Say::Ask(conv.at)]);
            }
            let options: Vec<(EvidenceKind, String)> =
                EvidenceKind::ALL.iter().map(|k| (*k, ctx.labels.label(label_key(*k)))).collect();
            match pick(answer.as_str(), &options, EvidenceKind::parse) {
                Some(kind) => {
                    // Checked again when the answer is saved, against the pilot as it is then.
                    match rules::check_evidence(pilot, &ctx.actor(), ctx.settings, Some(kind)) {
                        Ok(()) => {}
                        Err(r @ (rules::Refusal::OnlyOwner | rules::Refusal::OwnerNotAccepted)) => {
                            return Turn::say(vec![Say::Refused(Refusal::Rule(r)), Say::Ask(conv.at)]);
                        }
                        Err(r) => {
                            return Turn {
                                effects: vec![Effect::EndConversation],
                                says: vec![Say::Refused(Refusal::Rule(r))],
                            };
                        }
                    }
                    Turn { effects: vec![move_to(conv, At::Evidence(kind))], says: vec![Say::Ask(At::Evidence(kind))] }
                }
                None => Turn::say(vec![Say::Refused(Refusal::Choice {
                    answer: answer.as_str().to_owned(),
                    choices: options.into_iter().map(|(_, l)| l).collect(),
                })]),
            }
        }
        At::Evidence(kind) => {
            if answer.is_keyword("back") {
                return Turn { effects: vec![move_to(conv, At::PickEvidence)], says: vec![Say::Ask(At::PickEvidence)] };
            }
            let text = answer.as_str();
            if let Some(rule) = ctx.rules.check(kind.as_str(), text) {
                return Turn::say(vec![Say::Vague { rule: rule.id.clone(), answer: text.to_owned() }]);
            }
            let item = match kind {
                EvidenceKind::PnlMoved => match read_pnl(pilot, text) {
                    Ok(item) => item,
                    Err(refusal) => return Turn::say(vec![Say::Refused(refusal)]),
                },
                _ => EvidenceItem { kind, note: text.to_owned(), value: None, period: None, source: None },
            };
            Turn {
                effects: vec![Effect::AddEvidence(item), Effect::EndConversation],
                says: vec![Say::EvidenceRecorded(kind)],
            }
        }
        _ => Turn::say(vec![Say::AskVoid]),
    }
}

/// `£3.9m; Jan-Mar 2027; finance ledger`: value in the line's unit, period, source.
fn read_pnl(pilot: &Pilot, text: &str) -> Result<EvidenceItem, Refusal> {
    let parts: Vec<&str> = text.split([';', '\n', '|']).map(str::trim).filter(|p| !p.is_empty()).collect();
    let [value, period, source] = parts.as_slice() else {
        return Err(Refusal::EvidenceFormat);
    };
    let quantity = Quantity::parse(value).ok_or(Refusal::EvidenceFormat)?;
    let line_unit = pilot.pnl.as_ref().map(|t| t.unit.clone()).unwrap_or_default();
    if let Some(unit) = &quantity.unit
        && unit.trim_end_matches('s') != line_unit.trim_end_matches('s')
    {
        return Err(Refusal::EvidenceUnit { unit: unit.clone(), line_unit });
    }
    Ok(EvidenceItem {
        kind: EvidenceKind::PnlMoved,
        note: text.to_owned(),
        value: Some(quantity.value),
        period: Some((*period).to_owned()),
        source: Some((*source).to_owned()),
    })
}
