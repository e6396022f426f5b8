//! Answers to questions sent by direct message: the owner accepting or declining ownership, the sponsor
//! confirming an extension beyond the limit. Buttons answer by choice; typed answers by label or number,
//! a decline may carry its reason (`Decline: moving teams`).

use super::{Ask, AskKind, Ctx, Decision, Effect, OwnerStatus, Refusal, Say, Turn};
use crate::domain::{DecisionKind, Pilot, Stage};
use crate::prompts::Key;

/// The choices of an ask, in order.
pub fn choices(kind: &AskKind) -> [Key; 2] {
    match kind {
        AskKind::AcceptOwnership => [Key::ChoiceAccept, Key::ChoiceDecline],
        AskKind::ApproveExtension { .. } => [Key::ChoiceApprove, Key::ChoiceRefuse],
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
                // Keep the reason as typed when the label's lower-casing kept its length; else the lower-cased rest.
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

pub fn answer(ask: &Ask, pilot: Option<&Pilot>, text: &str, ctx: &Ctx) -> Turn {
    // Closing the ask comes first: it settles a race between two answers to the same ask.
    let close = Effect::CloseAsk(ask.id);
    let Some(pilot) = pilot else {
        return Turn {
            effects: vec![close],
            says: vec![Say::AskVoid],
        };
    };
    let labels: Vec<String> = choices(&ask.kind).iter().map(|k| ctx.labels.label(*k)).collect();
    let Some((choice, rest)) = read(text, &labels) else {
        return Turn::say(vec![Say::Refused(Refusal::Choice {
            answer: text.to_owned(),
            choices: labels,
        })]);
    };
    match &ask.kind {
        AskKind::AcceptOwnership => {
            // A scaled pilot still needs its owner; a killed one no longer does.
            if pilot.owner.as_ref() != Some(&ask.user) || pilot.stage == Stage::Killed {
                return Turn {
                    effects: vec![close],
                    says: vec![Say::AskVoid],
                };
            }
            if choice == 0 {
                let accept = Effect::SetOwnerStatus {
                    status: OwnerStatus::Accepted,
                    reason: None,
                };
                Turn {
                    effects: vec![close, accept],
                    says: vec![Say::OwnerAccepted],
                }
            } else {
                let decline = Effect::SetOwnerStatus {
                    status: OwnerStatus::Declined,
                    reason: rest.clone(),
                };
                Turn {
                    effects: vec![close, decline],
                    says: vec![Say::OwnerDeclined { reason: rest }],
                }
            }
        }
        AskKind::ApproveExtension {
            date,
            reason,
            requested_by,
        } => {
            if pilot.is_decided() || pilot.sponsor.as_ref() != Some(&ask.user) {
                return Turn {
                    effects: vec![close],
                    says: vec![Say::AskVoid],
                };
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
                    says: vec![Say::ExtensionApproved {
                        requested_by: requested_by.clone(),
                    }],
                }
            } else {
                Turn {
                    effects: vec![close],
                    says: vec![Say::ExtensionRefused {
                        requested_by: requested_by.clone(),
                    }],
                }
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
        assert_eq!(
            read("Decline: I am moving teams", &labels),
            Some((1, Some("I am moving teams".into())))
        );
        assert_eq!(read("declined", &labels), None);
        assert_eq!(read("maybe", &labels), None);
    }
}
