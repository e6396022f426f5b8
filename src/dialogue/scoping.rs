//! The scoping conversation: `/pilot register` asks the questions in order and ends on a confirmation;
//! `/pilot edit` asks one question again. Every answer is validated before anything moves.

use chrono::Days;

use super::{At, Change, Conversation, Ctx, Effect, Flow, Refusal, Say, Turn};
use crate::domain::{Answer, ChannelId, PersonRef, PilotName, PnlTarget, ReviewWindow, Stage, Step};
use crate::domain::{Pilot, PilotId};
use crate::prompts::Key;

/// `/pilot register [name]`.
pub fn start_register(name: Option<&str>, channel: ChannelId, ctx: &Ctx) -> Turn {
    let fresh = Conversation {
        flow: Flow::Register,
        at: At::Ask(Step::Name),
        pilot: None,
        channel,
        return_to_confirm: false,
    };
    match name {
        None => Turn {
            effects: vec![Effect::SaveConversation(fresh)],
            says: vec![Say::Ask(At::Ask(Step::Name))],
        },
        Some(name) => {
            let turn = answer(&fresh, None, name, ctx);
            if turn.effects.is_empty() {
                // The name given with the command was refused: the conversation still starts, at the name.
                let mut says = turn.says;
                says.push(Say::Ask(At::Ask(Step::Name)));
                Turn {
                    effects: vec![Effect::SaveConversation(fresh)],
                    says,
                }
            } else {
                turn
            }
        }
    }
}

/// `/pilot edit <pilot> <step>`, once the engine has checked the user may edit this pilot.
pub fn start_edit(pilot: PilotId, step: Step, channel: ChannelId) -> Turn {
    let conv = Conversation {
        flow: Flow::Edit,
        at: At::Ask(step),
        pilot: Some(pilot),
        channel,
        return_to_confirm: false,
    };
    Turn {
        effects: vec![Effect::SaveConversation(conv)],
        says: vec![Say::Ask(At::Ask(step))],
    }
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
        At::Confirm => answer_confirm(conv, &answer, ctx),
        At::PickEdit => answer_pick(conv, &answer, ctx),
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
            Turn {
                effects,
                says: vec![Say::Cancelled],
            }
        }
        Flow::Edit => Turn {
            effects: vec![Effect::EndConversation],
            says: vec![Say::EditCancelled],
        },
    }
}

fn move_to(conv: &Conversation, at: At, return_to_confirm: bool) -> Effect {
    Effect::SaveConversation(Conversation {
        at,
        return_to_confirm,
        ..conv.clone()
    })
}

fn answer_step(conv: &Conversation, pilot: Option<&Pilot>, step: Step, answer: &Answer, ctx: &Ctx) -> Turn {
    if answer.is_keyword("back") {
        return match (conv.flow, conv.return_to_confirm, step.previous()) {
            (Flow::Edit, _, _) => Turn::say(vec![Say::EditNoBack, Say::Ask(conv.at)]),
            (Flow::Register, true, _) => Turn {
                effects: vec![move_to(conv, At::Confirm, false)],
                says: vec![Say::Ask(At::Confirm)],
            },
            (Flow::Register, false, None) => Turn::say(vec![Say::BackAtFirst, Say::Ask(conv.at)]),
            (Flow::Register, false, Some(prev)) => Turn {
                effects: vec![move_to(conv, At::Ask(prev), false)],
                says: vec![Say::Ask(At::Ask(prev))],
            },
        };
    }
    if answer.is_keyword("keep") && pilot.is_some_and(|p| has_answer(p, step)) {
        return match conv.flow {
            Flow::Edit => Turn {
                effects: vec![Effect::EndConversation],
                says: vec![Say::EditCancelled],
            },
            Flow::Register => {
                let next = next_position(conv, step);
                Turn {
                    effects: vec![move_to(conv, next, false)],
                    says: vec![Say::Ask(next)],
                }
            }
        };
    }
    let change = match read_answer(step, answer, ctx) {
        Ok(change) => change,
        Err(say) => return Turn::say(vec![say]),
    };
    let mut effects = Vec::new();
    match (&change, pilot) {
        (Change::Name(name), None) => effects.push(Effect::CreateDraft(name.clone())),
        _ => effects.push(Effect::Set(change)),
    }
    match conv.flow {
        Flow::Edit => {
            effects.push(Effect::EndConversation);
            Turn {
                effects,
                says: vec![Say::Updated(step)],
            }
        }
        Flow::Register => {
            let next = next_position(conv, step);
            effects.push(move_to(conv, next, false));
            Turn {
                effects,
                says: vec![Say::Ask(next)],
            }
        }
    }
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

/// Validates one answer into the change it makes, or says why not.
pub fn read_answer(step: Step, answer: &Answer, ctx: &Ctx) -> Result<Change, Say> {
    let text = answer.as_str();
    if step == Step::Sponsor && answer.is_keyword("skip") {
        return Ok(Change::Sponsor(None));
    }
    if let Some(rule) = ctx.rules.check(step, text) {
        return Err(Say::Vague {
            rule: rule.id.clone(),
            answer: text.to_owned(),
        });
    }
    let person = |step| {
        PersonRef::parse(text, |u| ctx.bots.contains(u))
            .map(|p| p.0)
            .map_err(|error| Say::Refused(Refusal::Person { step, error }))
    };
    match step {
        Step::Name => PilotName::parse(text)
            .map(Change::Name)
            .map_err(|e| Say::Refused(Refusal::Name(e))),
        Step::Workflow => Ok(Change::Workflow(text.to_owned())),
        Step::Owner => person(step).map(Change::Owner),
        Step::Sponsor => person(step).map(|p| Change::Sponsor(Some(p))),
        Step::Pnl => PnlTarget::parse(text)
            .map(Change::Pnl)
            .map_err(|e| Say::Refused(Refusal::Pnl(e))),
        Step::ReviewDate => {
            let window = ReviewWindow::new(ctx.today, ctx.horizon_days);
            if answer.is_keyword("default") {
                return Ok(Change::ReviewDate(default_review_date(ctx)));
            }
            window.parse(text).map(Change::ReviewDate).map_err(|error| {
                Say::Refused(Refusal::Date {
                    answer: text.to_owned(),
                    error,
                })
            })
        }
    }
}

/// The review date proposed when none is given.
pub fn default_review_date(ctx: &Ctx) -> chrono::NaiveDate {
    ctx.today + Days::new(7 * u64::from(ctx.default_review_weeks))
}

/// Matches an answer to one of the labels, by its number (1-based) or its label, ignoring case.
fn pick<T: Copy>(answer: &Answer, options: &[(T, String)], also: impl Fn(&str) -> Option<T>) -> Option<T> {
    let text = answer.as_str().trim().trim_end_matches('.');
    if let Ok(n) = text.parse::<usize>() {
        return n.checked_sub(1).and_then(|i| options.get(i)).map(|(t, _)| *t);
    }
    options
        .iter()
        .find(|(_, label)| label.eq_ignore_ascii_case(text))
        .map(|(t, _)| *t)
        .or_else(|| also(text))
}

/// The choices offered at the confirmation, in order.
pub const CONFIRM_CHOICES: [Key; 3] = [Key::ChoiceConfirm, Key::ChoiceEdit, Key::ChoiceCancel];

fn refuse_choice(answer: &Answer, labels: Vec<String>) -> Turn {
    Turn::say(vec![Say::Refused(Refusal::Choice {
        answer: answer.as_str().to_owned(),
        choices: labels,
    })])
}

fn answer_confirm(conv: &Conversation, answer: &Answer, ctx: &Ctx) -> Turn {
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
    match pick(answer, &options, also) {
        Some(Key::ChoiceConfirm) => Turn {
            effects: vec![Effect::SetStage(Stage::Scoped), Effect::EndConversation],
            says: vec![Say::Registered],
        },
        Some(Key::ChoiceEdit) => Turn {
            effects: vec![move_to(conv, At::PickEdit, false)],
            says: vec![Say::Ask(At::PickEdit)],
        },
        Some(_) => cancel(conv),
        None => refuse_choice(answer, options.into_iter().map(|(_, l)| l).collect()),
    }
}

fn answer_pick(conv: &Conversation, answer: &Answer, ctx: &Ctx) -> Turn {
    if answer.is_keyword("back") {
        return Turn {
            effects: vec![move_to(conv, At::Confirm, false)],
            says: vec![Say::Ask(At::Confirm)],
        };
    }
    let options: Vec<(Step, String)> = Step::ALL
        .iter()
        .map(|s| (*s, ctx.labels.label(Key::for_step(*s))))
        .collect();
    match pick(answer, &options, Step::parse) {
        Some(step) => Turn {
            effects: vec![move_to(conv, At::Ask(step), true)],
            says: vec![Say::Ask(At::Ask(step))],
        },
        None => refuse_choice(answer, options.into_iter().map(|(_, l)| l).collect()),
    }
}
