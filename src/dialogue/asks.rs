//! Answers to questions sent by direct message: the owner accepting or declining ownership, the sponsor
//! confirming an extension, the owner acting on a nudge. Buttons answer by choice; typed answers by label or
//! number; a decline may carry its reason (`Decline: moving teams`).

use super::{Ask, AskKind, At, Conversation, Ctx, Decision, Effect, Flow, OwnerStatus, Refusal, Say, Scratch, Turn};
use crate::domain::{DecisionKind, Pilot, Stage};
use crate::prompts::Key;

/// The choices of an ask, in order.
pub fn choices(kind: &AskKind) -> Vec<Key> {
    match kind {
        AskKind::AcceptOwnership => vec![Key::ChoiceAccept, Key::ChoiceDecline],
        AskKind::ApproveExtension { .. } => vec![Key::ChoiceApprove, Key::ChoiceRefuse],
        AskKind::Nudge { .. } => vec![Key::ChoiceAddEvidence, Key::ChoiceNewDate, Key::ChoiceSnooze],
    }
}

/// Splits `Decline: moving teams` into the choice (by label or number) and the rest.
fn read(text: &str, labels: &[String]) -> Option<(usize, Option<String>)> {
    let text = text.trim();
    let lower = text.to_lowercase();
    for (i, label) in labels.iter().enumerate() {
        let l = label.to_lowercase();
        let number = (i + 1).to_string();
        for head in [l.as_str(), number.as_str()] {
            if let Some(rest) = lower.strip_prefix(head)
                && (rest.is_empty() || rest.starts_with([' ', ':', ',', '-', '.']))
            {
                // Keep the reason as typed when lower-casing kept the label's length; else the lower-cased rest.
                let typed = if text.is_char_boundary(head.len()) && text[..head.len()].to_lowercase() == head {
                    &text[head.len()..]
                } else {
                    rest
                };
                let rest = typed.trim_start_matches([' ', ':', ',', '-', '.']).trim();
                return Some((i, (!rest.is_empty()).then(|| rest.to_owned())));
            }
        }
    }
    None
}

/// Whether `text` answers an ask of this kind (one of its choices, by label or number).
pub fn is_answer_to(kind: &AskKind, text: &str, labels: &dyn super::Labels) -> bool {
    let labels: Vec<String> = choices(kind).iter().map(|k| labels.label(*k)).collect();
    read(text, &labels).is_some()
}

/// `snoozes`: how often the pilot's current review cycle was snoozed already.
pub fn answer(ask: &Ask, pilot: Option<&Pilot>, text: &str, snoozes: u32, ctx: &Ctx) -> Turn {
    // Closing the ask comes first: it settles a race between two answers to the same ask.
    let close = Effect::CloseAsk(ask.id);
    let Some(pilot) = pilot else { return Turn { effects: vec![close], says: vec![Say::AskVoid] } };
    let labels: Vec<String> = choices(&ask.kind).iter().map(|k| ctx.labels.label(*k)).collect();
    let Some((choice, rest)) = read(text, &labels) else {
        return Turn::say(vec![Say::Refused(Refusal::Choice { answer: text.to_owned(), choices: labels })]);
    };
    match &ask.kind {
        AskKind::AcceptOwnership => {
            // A scaled pilot still needs its owner; a killed one no longer does.
            if pilot.owner.as_ref() != Some(&ask.user) || pilot.stage == Stage::Killed {
                return Turn { effects: vec![close], says: vec![Say::AskVoid] };
            }
            if choice == 0 {
                let accept = Effect::SetOwnerStatus { status: OwnerStatus::Accepted, reason: None };
                Turn { effects: vec![close, accept], says: vec![Say::OwnerAccepted] }
            } else {
                let decline = Effect::SetOwnerStatus { status: OwnerStatus::Declined, reason: rest.clone() };
                Turn { effects: vec![close, decline], says: vec![Say::OwnerDeclined { reason: rest }] }
            }
        }
        AskKind::Nudge { cycle } => {
            if pilot.is_decided() || pilot.due_date() != Some(*cycle) || pilot.owner.as_ref() != Some(&ask.user) {
                return Turn { effects: vec![close], says: vec![Say::AskVoid] };
            }
            let conversation = |flow, at| {
                Effect::SaveConversation(Conversation {
                    flow,
                    at,
                    pilot: Some(pilot.id),
                    channel: pilot.home_channel.clone(),
                    return_to_confirm: false,
                    scratch: Scratch { request: flow == Flow::Review, ..Default::default() },
                })
            };
            match choice {
                0 => Turn {
                    effects: vec![close, Effect::NudgeAnswered, conversation(Flow::Evidence, At::PickEvidence)],
                    says: vec![Say::Ask(At::PickEvidence)],
                },
                1 => Turn {
                    effects: vec![close, Effect::NudgeAnswered, conversation(Flow::Review, At::ExtendDate)],
                    says: vec![Say::Ask(At::ExtendDate)],
                },
                _ if snoozes >= ctx.settings.max_snoozes => {
                    Turn::say(vec![Say::SnoozeLimit { max: ctx.settings.max_snoozes }])
                }
                _ => {
                    let until = ctx.now + chrono::Duration::days(i64::from(ctx.settings.snooze_days));
                    Turn {
                        effects: vec![close, Effect::NudgeAnswered, Effect::Snooze { until }],
                        says: vec![Say::Snoozed { until }],
                    }
                }
            }
        }
        AskKind::ApproveExtension { date, reason, requested_by } => {
            // The sponsor approves; a pilot without a sponsor has its registrant approve.
            let approver = pilot.sponsor.as_ref().unwrap_or(&pilot.registered_by);
            if pilot.is_decided() || approver != &ask.user {
                return Turn { effects: vec![close], says: vec![Say::AskVoid] };
            }
            if choice == 0 {
                let decision = Decision {
                    kind: DecisionKind::Extend,
                    reason: reason.clone(),
                    category: None,
                    new_date: Some(*date),
                    override_evidence: false,
                };
                Turn {
                    effects: vec![close, Effect::Decide(decision)],
                    says: vec![Say::ExtensionApproved { requested_by: requested_by.clone() }],
                }
            } else {
                Turn { effects: vec![close], says: vec![Say::ExtensionRefused { requested_by: requested_by.clone() }] }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::read;

    #[test]
    fn choices_read_by_label_or_number_with_a_reason() {
        let labels = vec!["Accept".to_owned(), "Decline".to_owned()];
        assert_eq!(read("accept", &labels), Some((0, None)));
        assert_eq!(read("2", &labels), Some((1, None)));
        assert_eq!(read("Decline: I am moving teams", &labels), Some((1, Some("I am moving teams".into()))));
        assert_eq!(read("declined", &labels), None);
        assert_eq!(read("maybe", &labels), None);
        // Lower-casing that changes byte lengths (İ) must not split a character.
        let labels = vec!["İ".to_owned()];
        let _ = read("İİİ x", &labels);
    }
}
