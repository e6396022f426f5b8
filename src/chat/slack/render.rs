//! Replies as Slack Block Kit messages and modals, as JSON. Pure: no I/O.
//!
//! Text is mrkdwn with every `&`, `<` and `>` escaped, so nothing a user typed can form `<!channel>`, `<!here>`,
//! `<!everyone>`, `<!subteam^…>` or a link; only the engine's own mentions `<@U…>` are put back, and in a channel
//! post only those of the people the reply may notify. Every limit of Block Kit is kept here (50 blocks a
//! message, 100 a view, 3,000 characters a section, 24 a view title, 75 a button, 255 an action id); long text is
//! cut at a line with "…and N more".

use std::sync::LazyLock;

use minijinja::context;
use regex::Regex;
use serde_json::{Value, json};

use crate::chat::discord::ids::{Action, Kind, cut};
use crate::domain::UserId;
use crate::engine::{Destination, Expect, Reply};
use crate::prompts::{Key, Prompts};

pub const MAX_MESSAGE_BLOCKS: usize = 50;
pub const MAX_VIEW_BLOCKS: usize = 100;
pub const MAX_SECTION: usize = 3000;
pub const MAX_HEADER: usize = 150;
pub const MAX_VIEW_TITLE: usize = 24;
pub const MAX_BUTTON_TEXT: usize = 75;
pub const MAX_BUTTON_VALUE: usize = 2000;
pub const MAX_ACTIONS: usize = 25;
pub const MAX_ID: usize = 255;
pub const MAX_PLACEHOLDER: usize = 150;
pub const MAX_INPUT_LABEL: usize = 2000;
pub const MAX_INPUT_LENGTH: usize = 3000;
pub const MAX_METADATA: usize = 3000;
/// Slack refuses messages whose blocks hold much more than this (`msg_blocks_too_long`), under every other limit.
pub const MAX_MESSAGE_TEXT: usize = 12_000;
/// The notification text of a message (its blocks are what is shown).
pub const MAX_FALLBACK_TEXT: usize = 3000;
/// The block and action id of a modal's one input.
pub const INPUT_ID: &str = "answer";

static MENTION: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"&lt;@([UW][A-Z0-9]{1,30})&gt;").unwrap());
static BOLD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\*\*([^*\n]+)\*\*").unwrap());

/// The engine's text as mrkdwn: escaped, bold as Slack writes it, and only the mentions `allowed` says.
pub fn mrkdwn(text: &str, allowed: impl Fn(&str) -> bool) -> String {
    let escaped = text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let bold = BOLD.replace_all(&escaped, "*$1*");
    MENTION
        .replace_all(
            &bold,
            |c: &regex::Captures| {
                if allowed(&c[1]) { format!("<@{}>", &c[1]) } else { format!("@{}", &c[1]) }
            },
        )
        .into_owned()
}

/// The engine's text as plain text (field errors, titles): no markers, mentions as `@U…`.
pub fn plain(text: &str) -> String {
    let bold = BOLD.replace_all(text, "$1");
    let mentions = Regex::new(r"<@([UW][A-Z0-9]{1,30})>").map(|re| re.replace_all(&bold, "@$1").into_owned());
    mentions.unwrap_or_else(|_| bold.into_owned())
}

/// The reply's text in mrkdwn: in a channel only the reply's `ping` may be mentioned (a mention there notifies);
/// a direct message or an ephemeral message notifies no one else, so every mention the engine wrote stays.
pub fn reply_text(reply: &Reply) -> String {
    let ping = &reply.ping;
    match reply.to {
        Destination::Channel(_) => mrkdwn(&reply.text, |id| ping.iter().any(|u| u.as_str() == id)),
        Destination::Dm(_) | Destination::Ephemeral(_) => mrkdwn(&reply.text, |_| true),
    }
}

/// `text` within `max` characters: whole lines while they fit, then "…and N more lines".
pub fn fit(text: &str, max: usize, prompts: &Prompts) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() < 2 {
        return cut(text, max);
    }
    let note_room = prompts.render(Key::SlackMore, context! { count => lines.len() }).chars().count() + 1;
    let budget = max.saturating_sub(note_room);
    let mut out = String::new();
    let mut kept = 0;
    for line in &lines {
        if out.chars().count() + line.chars().count() + usize::from(kept > 0) > budget {
            break;
        }
        if kept > 0 {
            out.push('\n');
        }
        out.push_str(line);
        kept += 1;
    }
    if kept == 0 {
        out = cut(lines.first().copied().unwrap_or_default(), budget);
        kept = 1;
    }
    let note = prompts.render(Key::SlackMore, context! { count => lines.len() - kept });
    format!("{out}\n{note}")
}

/// Sections of at most 3,000 characters each, split at lines (a line longer than that is cut).
fn sections(mrkdwn: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in mrkdwn.lines() {
        let line = cut(line, MAX_SECTION);
        if !current.is_empty() && current.chars().count() + 1 + line.chars().count() > MAX_SECTION {
            out.push(section(&std::mem::take(&mut current)));
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(&line);
    }
    if !current.trim().is_empty() {
        out.push(section(&current));
    }
    out
}

fn section(text: &str) -> Value {
    json!({ "type": "section", "text": { "type": "mrkdwn", "text": text } })
}

fn plain_text(text: &str, max: usize) -> Value {
    json!({ "type": "plain_text", "text": cut(text, max), "emoji": true })
}

fn button(text: &str, action_id: String, value: Option<&str>, primary: bool) -> Value {
    let mut b = json!({ "type": "button", "text": plain_text(text, MAX_BUTTON_TEXT), "action_id": action_id });
    if let Some(v) = value {
        b["value"] = json!(cut(v, MAX_BUTTON_VALUE));
    }
    if primary {
        b["style"] = json!("primary");
    }
    b
}

/// One message as Slack takes it: the notification text and the blocks shown.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub text: String,
    pub blocks: Vec<Value>,
}

/// The blocks that answer a reply's question (buttons, a user menu, an "Answer" button that opens a modal).
fn controls(reply: &Reply, workspace: &str, prompts: &Prompts) -> Vec<Value> {
    let question = reply.question.as_deref();
    let action = |kind| Action::new(workspace, question, kind).encode();
    let mut elements = Vec::new();
    match &reply.expect {
        Some(Expect::Text { label, current, max_chars, multiline }) => {
            let id = action(Kind::Answer {
                multiline: *multiline,
                max_chars: (*max_chars).clamp(1, MAX_INPUT_LENGTH),
                label: cut(label, 40),
            });
            // The answer to start from rides in the button, for the modal it opens.
            elements.push(button(&prompts.text(Key::SlackAnswer), id, current.as_deref(), true));
        }
        Some(Expect::Person { label, skip }) => {
            let placeholder = prompts.render(Key::SlackPickPerson, context! { label => label.to_lowercase() });
            elements.push(json!({
                "type": "users_select",
                "action_id": action(Kind::Person),
                "placeholder": plain_text(&placeholder, MAX_PLACEHOLDER),
            }));
            if let Some(word) = skip {
                elements.push(button(
                    &prompts.text(Key::SlackSkip),
                    action(Kind::Skip { word: word.clone() }),
                    None,
                    false,
                ));
            }
        }
        Some(Expect::Choice) | None => {
            for (index, label) in reply.choices.iter().take(MAX_ACTIONS).enumerate() {
                elements.push(button(
                    label,
                    action(Kind::Choice { index }),
                    Some(&(index + 1).to_string()),
                    index == 0,
                ));
            }
        }
    }
    for s in &reply.shortcuts {
        if elements.len() >= MAX_ACTIONS {
            break;
        }
        let id = Action::new(workspace, None, Kind::Run { command: s.command.clone() }).encode();
        // A command too long for an action id is left out rather than cut into another command.
        if id.ends_with(&s.command) {
            elements.push(button(&s.label, id, None, false));
        }
    }
    if elements.is_empty() {
        return vec![];
    }
    vec![json!({ "type": "actions", "elements": elements })]
}

/// The text blocks of a reply: a card's first line becomes its header.
fn text_blocks(reply: &Reply, prompts: &Prompts) -> Vec<Value> {
    let text = fit(&reply_text(reply), MAX_MESSAGE_TEXT, prompts);
    let mut blocks = Vec::new();
    let body = if reply.card {
        let (title, body) = text.split_once('\n').unwrap_or((&text, ""));
        let title = plain(&title.replace('*', ""));
        if !title.trim().is_empty() {
            blocks.push(json!({ "type": "header", "text": plain_text(title.trim(), MAX_HEADER) }));
        }
        body.trim_matches('\n').to_owned()
    } else {
        text
    };
    blocks.extend(sections(&body));
    blocks
}

/// The message for a reply in `workspace`.
pub fn message(reply: &Reply, workspace: &str, prompts: &Prompts) -> Message {
    let mut blocks = text_blocks(reply, prompts);
    let controls = controls(reply, workspace, prompts);
    blocks.truncate(MAX_MESSAGE_BLOCKS - controls.len());
    blocks.extend(controls);
    let first = reply_text(reply);
    let text = fit(first.lines().next().unwrap_or_default(), MAX_FALLBACK_TEXT, prompts);
    Message { text, blocks }
}

/// What a modal carries from one submission to the next.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Metadata {
    /// The channel the conversation started in (replies for the channel go there).
    pub channel: String,
    /// The answer that leaves an optional person unset, when the input is left empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip: Option<String>,
}

/// A modal for the user's replies: their text, then the last one's question as an input (text or a user
/// menu, with Submit), or its choices as buttons; with nothing to answer, only a Close button.
pub fn modal(replies: &[&Reply], workspace: &str, channel: &str, prompts: &Prompts) -> Value {
    let asking = replies.last().filter(|r| r.expect.is_some() || !r.choices.is_empty());
    let mut blocks = Vec::new();
    for r in replies {
        blocks.extend(text_blocks(r, prompts));
    }
    let mut metadata = Metadata { channel: channel.to_owned(), skip: None };
    let mut submit = false;
    let mut tail = Vec::new();
    let mut label_for_title = String::new();
    if let Some(r) = asking {
        match &r.expect {
            Some(Expect::Text { label, current, max_chars, multiline }) => {
                let max = (*max_chars).clamp(1, MAX_INPUT_LENGTH);
                let mut element = json!({
                    "type": "plain_text_input",
                    "action_id": INPUT_ID,
                    "multiline": *multiline,
                    "max_length": max,
                });
                if let Some(c) = current.as_ref().filter(|c| !c.trim().is_empty()) {
                    element["initial_value"] = json!(cut(c, max));
                }
                tail.push(input(label, element, false, prompts));
                label_for_title = label.clone();
                submit = true;
            }
            Some(Expect::Person { label, skip }) => {
                let placeholder = prompts.render(Key::SlackPickPerson, context! { label => label.to_lowercase() });
                let element = json!({
                    "type": "users_select",
                    "action_id": INPUT_ID,
                    "placeholder": plain_text(&placeholder, MAX_PLACEHOLDER),
                });
                tail.push(input(label, element, skip.is_some(), prompts));
                metadata.skip = skip.clone();
                label_for_title = label.clone();
                submit = true;
            }
            Some(Expect::Choice) | None => tail.extend(controls(r, workspace, prompts)),
        }
    }
    blocks.truncate(MAX_VIEW_BLOCKS - tail.len());
    blocks.extend(tail);
    let title = if label_for_title.is_empty() {
        prompts.text(Key::SlackModalTitleDone)
    } else {
        prompts.render(Key::SlackModalTitle, context! { label => label_for_title })
    };
    let question = asking.and_then(|r| r.question.as_deref());
    let mut view = json!({
        "type": "modal",
        "callback_id": Action::new(workspace, question, Kind::Submit).encode(),
        "title": plain_text(&title, MAX_VIEW_TITLE),
        "close": plain_text(&prompts.text(Key::SlackClose), MAX_VIEW_TITLE),
        "private_metadata": cut(&serde_json::to_string(&metadata).unwrap_or_default(), MAX_METADATA),
        "blocks": blocks,
    });
    if submit {
        view["submit"] = plain_text(&prompts.text(Key::SlackSubmit), MAX_VIEW_TITLE);
    }
    view
}

fn input(label: &str, element: Value, optional: bool, prompts: &Prompts) -> Value {
    let label = if label.trim().is_empty() { prompts.text(Key::SlackAnswer) } else { label.to_owned() };
    let mut block = json!({
        "type": "input",
        "block_id": INPUT_ID,
        "label": plain_text(&label, MAX_INPUT_LABEL),
        "element": element,
    });
    if optional {
        block["optional"] = json!(true);
        block["hint"] = plain_text(&prompts.text(Key::SlackSkipHint), MAX_INPUT_LABEL);
    }
    block
}

/// Whether a user id is one of Slack's (`U…` or `W…`), as the engine's mentions of Slack people are.
pub fn is_user_id(id: &str) -> bool {
    id.len() > 1 && id.starts_with(['U', 'W']) && id.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// A user's neutral mention, as the engine reads a picked person.
pub fn mention(user: &UserId) -> String {
    user.mention()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ChannelId;

    fn prompts() -> Prompts {
        Prompts::embedded().unwrap()
    }

    #[test]
    fn typed_text_can_never_ping_many_and_only_allowed_mentions_stay() {
        let typed = "<!channel> <!here> <!everyone> <!subteam^S123> @channel & <https://evil|click> **bold**";
        let out = mrkdwn(&format!("{typed} <@U123> <@U999>"), |id| id == "U123");
        for bad in ["<!", "<https", "<@U999>"] {
            assert!(!out.contains(bad), "{bad} in {out}");
        }
        assert!(out.contains("<@U123>"), "{out}");
        assert!(out.contains("&lt;!channel&gt;") && out.contains("&amp;") && out.contains("*bold*"), "{out}");
        assert!(out.contains("@U999"), "{out}");
    }

    #[test]
    fn a_channel_post_mentions_only_its_ping() {
        let r = Reply::post(ChannelId::new("C1"), "<@U1> and <@U2>".into(), vec![UserId::new("U1")]);
        assert_eq!(reply_text(&r), "<@U1> and @U2");
        let dm = Reply { to: Destination::Dm(UserId::new("U3")), ..r };
        assert_eq!(reply_text(&dm), "<@U1> and <@U2>");
    }

    #[test]
    fn long_text_keeps_every_limit_and_says_what_was_left_out() {
        let p = prompts();
        let text: String = (0..3000).map(|i| format!("line {i} of the summary\n")).collect();
        let r = Reply {
            choices: (0..40).map(|i| format!("choice {i} {}", "x".repeat(100))).collect(),
            ..Reply::post(ChannelId::new("C1"), text, vec![])
        };
        let m = message(&r, "T1", &p);
        assert!(m.blocks.len() <= MAX_MESSAGE_BLOCKS);
        let mut total = 0;
        for b in &m.blocks {
            if b["type"] == "section" {
                let n = b["text"]["text"].as_str().unwrap().chars().count();
                assert!(n <= MAX_SECTION);
                total += n;
            }
        }
        assert!(total <= MAX_MESSAGE_TEXT + 10, "{total}");
        let last_section = m.blocks.iter().rev().find(|b| b["type"] == "section").unwrap();
        assert!(last_section["text"]["text"].as_str().unwrap().contains("more lines"));
        let actions = m.blocks.last().unwrap();
        let elements = actions["elements"].as_array().unwrap();
        assert_eq!(elements.len(), MAX_ACTIONS);
        for e in elements {
            assert!(e["text"]["text"].as_str().unwrap().chars().count() <= MAX_BUTTON_TEXT);
            assert!(Action::decode(e["action_id"].as_str().unwrap()).is_some());
        }
    }

    #[test]
    fn a_text_question_becomes_a_modal_input_starting_from_the_answer_to_correct() {
        let p = prompts();
        let expect =
            Expect::Text { label: "Workflow".into(), current: Some("TBD".into()), max_chars: 1000, multiline: true };
        let r = Reply {
            expect: Some(expect),
            question: Some("workflow".into()),
            ..Reply::new(Destination::Ephemeral(UserId::new("U1")), "Which **workflow**?".into())
        };
        let v = modal(&[&r], "T1", "C1", &p);
        assert!(v["title"]["text"].as_str().unwrap().chars().count() <= MAX_VIEW_TITLE);
        let input = v["blocks"].as_array().unwrap().last().unwrap();
        assert_eq!(input["block_id"], INPUT_ID);
        assert_eq!(input["element"]["initial_value"], "TBD");
        assert_eq!(input["element"]["max_length"], 1000);
        let action = Action::decode(v["callback_id"].as_str().unwrap()).unwrap();
        assert_eq!(
            (action.kind, action.question.as_str(), action.workspace.as_str()),
            (Kind::Submit, "workflow", "T1")
        );
        let meta: Metadata = serde_json::from_str(v["private_metadata"].as_str().unwrap()).unwrap();
        assert_eq!(meta.channel, "C1");
        assert!(v.get("submit").is_some());
    }
}
