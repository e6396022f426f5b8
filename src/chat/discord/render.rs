//! Replies as Discord messages, and the command description as Discord slash commands. Pure: no I/O.
//!
//! Every limit in Discord's reference is kept here: 2000 characters of content, embed title 256 and description
//! 4096, button labels 80, 5 buttons per row and 5 rows, select placeholders 150, command descriptions 100.
//! Long text is cut at a line with "and N more"; nothing is ever refused for its size.

use minijinja::context;
use serenity::all::{
    ButtonStyle, CommandOptionType, CreateActionRow, CreateAllowedMentions, CreateAttachment, CreateButton,
    CreateCommand, CreateCommandOption, CreateEmbed, CreateInputText, CreateModal, CreateSelectMenu,
    CreateSelectMenuKind, InputTextStyle, UserId as DiscordUser,
};

use super::ids::{Action, Kind, cut};
use crate::commands::{COMMANDS, OptionKind};
use crate::domain::Step;
use crate::engine::{Expect, Reply};
use crate::prompts::{Key, Prompts};

pub const MAX_CONTENT: usize = 2000;
pub const MAX_EMBED_TITLE: usize = 256;
pub const MAX_EMBED_DESCRIPTION: usize = 4096;
pub const MAX_BUTTON_LABEL: usize = 80;
pub const MAX_BUTTONS_PER_ROW: usize = 5;
pub const MAX_ROWS: usize = 5;
pub const MAX_PLACEHOLDER: usize = 150;
pub const MAX_MODAL_TITLE: usize = 45;
pub const MAX_INPUT_LABEL: usize = 45;
pub const MAX_INPUT_LENGTH: usize = 4000;
pub const MAX_COMMAND_DESCRIPTION: usize = 100;
pub const MAX_AUTOCOMPLETE: usize = 25;
/// The text input of lastmile's forms.
pub const INPUT_ID: &str = "answer";

/// One message as Discord takes it, for any of the ways it is sent.
pub struct Message {
    pub content: String,
    pub embeds: Vec<CreateEmbed>,
    pub components: Vec<CreateActionRow>,
    pub mentions: CreateAllowedMentions,
    pub file: Option<CreateAttachment>,
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
    // The note's length depends on the count; reserve room for the longest it can be.
    let note_room = prompts.render(Key::DiscordMore, context! { count => lines.len() }).chars().count() + 1;
    let budget = max.saturating_sub(note_room);
    let mut out = String::new();
    let mut kept = 0;
    for line in &lines {
        let len = out.chars().count() + line.chars().count() + usize::from(kept > 0);
        if len > budget {
            break;
        }
        if kept > 0 {
            out.push('\n');
        }
        out.push_str(line);
        kept += 1;
    }
    if kept == 0 {
        // One line longer than the whole budget: cut inside it.
        out = cut(lines.first().copied().unwrap_or_default(), budget);
        kept = 1;
    }
    let note = prompts.render(Key::DiscordMore, context! { count => lines.len() - kept });
    format!("{out}\n{note}")
}

fn users(ids: &[crate::domain::UserId]) -> Vec<DiscordUser> {
    ids.iter().filter_map(|u| u.as_str().parse::<u64>().ok()).filter(|n| *n != 0).map(DiscordUser::new).collect()
}

/// Mentions that can notify only these users: never roles, @everyone or @here, whatever the text says.
pub fn mentions(ping: &[crate::domain::UserId]) -> CreateAllowedMentions {
    CreateAllowedMentions::new().users(users(ping)).replied_user(false)
}

/// A card: its first line is the title (bold markers dropped), the rest its description.
fn card_embed(text: &str, prompts: &Prompts) -> CreateEmbed {
    let (title, body) = text.split_once('\n').unwrap_or((text, ""));
    let title = title.replace("**", "");
    let body = body.trim_matches('\n');
    let mut embed = CreateEmbed::new().title(cut(title.trim(), MAX_EMBED_TITLE));
    if !body.is_empty() {
        embed = embed.description(fit(body, MAX_EMBED_DESCRIPTION, prompts));
    }
    embed
}

/// The message for a reply in `workspace`.
pub fn message(reply: &Reply, workspace: &str, prompts: &Prompts) -> Message {
    let mut embeds = Vec::new();
    let content = if reply.card {
        embeds.push(card_embed(&reply.text, prompts));
        // Mentions in an embed notify nobody: the people to notify are named in the content.
        reply.ping.iter().map(|u| u.mention()).collect::<Vec<_>>().join(" ")
    } else {
        fit(&reply.text, MAX_CONTENT, prompts)
    };
    let file = reply.attachment.as_ref().map(|a| {
        if let Some(card) = embeds.pop() {
            embeds.push(card.image(format!("attachment://{}", a.filename)));
        }
        CreateAttachment::bytes(a.bytes.clone(), a.filename.clone())
    });
    let mut components = Vec::new();
    let question = reply.question.as_deref();
    let action = |kind| Action::new(workspace, question, kind).encode();
    match &reply.expect {
        Some(Expect::Text { label, current, max_chars, multiline }) => {
            if let Some(current) = current.as_ref().filter(|c| !c.trim().is_empty()) {
                embeds.push(
                    CreateEmbed::new()
                        .title(cut(&prompts.text(Key::DiscordCurrent), MAX_EMBED_TITLE))
                        .description(cut(current, MAX_EMBED_DESCRIPTION)),
                );
            }
            let id = action(Kind::Answer {
                multiline: *multiline,
                max_chars: (*max_chars).clamp(1, MAX_INPUT_LENGTH),
                label: cut(label, MAX_INPUT_LABEL),
            });
            let button = CreateButton::new(id)
                .label(cut(&prompts.text(Key::DiscordAnswer), MAX_BUTTON_LABEL))
                .style(ButtonStyle::Primary);
            components.push(CreateActionRow::Buttons(vec![button]));
        }
        Some(Expect::Person { label, skip }) => {
            let placeholder = prompts.render(Key::DiscordPickPerson, context! { label => label.to_lowercase() });
            let menu = CreateSelectMenu::new(action(Kind::Person), CreateSelectMenuKind::User { default_users: None })
                .placeholder(cut(&placeholder, MAX_PLACEHOLDER))
                .min_values(1)
                .max_values(1);
            components.push(CreateActionRow::SelectMenu(menu));
            if let Some(word) = skip {
                let button = CreateButton::new(action(Kind::Skip { word: word.clone() }))
                    .label(cut(&prompts.text(Key::DiscordSkip), MAX_BUTTON_LABEL))
                    .style(ButtonStyle::Secondary);
                components.push(CreateActionRow::Buttons(vec![button]));
            }
        }
        Some(Expect::Choice) | None => {
            let buttons: Vec<CreateButton> = reply
                .choices
                .iter()
                .take(MAX_BUTTONS_PER_ROW * MAX_ROWS)
                .enumerate()
                .map(|(index, label)| {
                    CreateButton::new(action(Kind::Choice { index }))
                        .label(cut(label, MAX_BUTTON_LABEL))
                        .style(if index == 0 { ButtonStyle::Primary } else { ButtonStyle::Secondary })
                })
                .collect();
            for row in buttons.chunks(MAX_BUTTONS_PER_ROW) {
                components.push(CreateActionRow::Buttons(row.to_vec()));
            }
        }
    }
    // Shortcuts: one row of buttons, in the rows left (a command longer than a custom id allows is left out).
    let shortcuts: Vec<CreateButton> = reply
        .shortcuts
        .iter()
        .filter_map(|s| {
            let id = Action::new(workspace, None, Kind::Run { command: s.command.clone() }).encode();
            id.ends_with(&s.command)
                .then(|| CreateButton::new(id).label(cut(&s.label, MAX_BUTTON_LABEL)).style(ButtonStyle::Secondary))
        })
        .take(MAX_BUTTONS_PER_ROW)
        .collect();
    if !shortcuts.is_empty() && components.len() < MAX_ROWS {
        components.push(CreateActionRow::Buttons(shortcuts));
    }
    Message { content, embeds, components, mentions: mentions(&reply.ping), file }
}

/// The form for a text answer to `question`, starting from `prefill`.
pub fn modal(
    workspace: &str,
    question: Option<&str>,
    label: &str,
    multiline: bool,
    max_chars: usize,
    prefill: Option<&str>,
    prompts: &Prompts,
) -> CreateModal {
    let max_chars = max_chars.clamp(1, MAX_INPUT_LENGTH);
    let style = if multiline { InputTextStyle::Paragraph } else { InputTextStyle::Short };
    let label = if label.trim().is_empty() { prompts.text(Key::DiscordAnswer) } else { label.to_owned() };
    let mut input =
        CreateInputText::new(style, cut(&label, MAX_INPUT_LABEL), INPUT_ID).required(true).max_length(max_chars as u16);
    if let Some(text) = prefill.filter(|t| !t.is_empty()) {
        input = input.value(cut(text, max_chars));
    }
    let title = prompts.render(Key::DiscordModalTitle, context! { label });
    CreateModal::new(Action::new(workspace, question, Kind::Submit).encode(), cut(&title, MAX_MODAL_TITLE))
        .components(vec![CreateActionRow::InputText(input)])
}

/// lastmile's slash commands, from the one command description the console parses too.
pub fn commands(prompts: &Prompts) -> Vec<CreateCommand> {
    let describe = |key| cut(&prompts.text(key), MAX_COMMAND_DESCRIPTION);
    COMMANDS
        .iter()
        .map(|c| {
            let options: Vec<CreateCommandOption> = match c.subcommands {
                [only] if only.name.is_empty() => only.options.iter().map(|o| option(o, prompts)).collect(),
                subs => subs
                    .iter()
                    .map(|s| {
                        s.options.iter().fold(
                            CreateCommandOption::new(CommandOptionType::SubCommand, s.name, describe(s.description)),
                            |sub, o| sub.add_sub_option(option(o, prompts)),
                        )
                    })
                    .collect(),
            };
            CreateCommand::new(c.name).description(describe(c.description)).dm_permission(false).set_options(options)
        })
        .collect()
}

fn option(o: &crate::commands::OptionSpec, prompts: &Prompts) -> CreateCommandOption {
    let kind = match o.kind {
        OptionKind::Person => CommandOptionType::User,
        _ => CommandOptionType::String,
    };
    let mut opt = CreateCommandOption::new(kind, o.name, cut(&prompts.text(o.description), MAX_COMMAND_DESCRIPTION))
        .required(o.required);
    match o.kind {
        OptionKind::Pilot => opt = opt.set_autocomplete(true),
        OptionKind::Step => {
            for step in Step::ALL {
                opt = opt.add_string_choice(cut(&prompts.text(Key::for_step(step)), 100), step.as_str());
            }
        }
        OptionKind::Choice(words) => {
            for w in words {
                opt = opt.add_string_choice(*w, *w);
            }
        }
        OptionKind::Text | OptionKind::Word | OptionKind::Person => {}
    }
    opt
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UserId;
    use crate::engine::Destination;

    fn prompts() -> Prompts {
        Prompts::embedded().unwrap()
    }

    fn reply(text: &str) -> Reply {
        Reply::post(crate::domain::ChannelId::new("1"), text.to_owned(), vec![])
    }

    fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
        serde_json::to_value(v).unwrap()
    }

    #[test]
    fn long_text_is_cut_at_a_line_with_what_was_left_out() {
        let p = prompts();
        let text: String = (0..300).map(|i| format!("line {i} of the summary\n")).collect();
        let out = fit(&text, MAX_CONTENT, &p);
        assert!(out.chars().count() <= MAX_CONTENT, "{}", out.chars().count());
        let kept = out.lines().filter(|l| l.starts_with("line ")).count();
        assert!(out.ends_with(&p.render(Key::DiscordMore, context! { count => 300 - kept })), "{out}");
        // A single line longer than the limit is cut inside.
        let one = "x".repeat(5000);
        assert!(fit(&one, MAX_CONTENT, &p).chars().count() <= MAX_CONTENT);
        assert_eq!(fit("short", MAX_CONTENT, &p), "short");
    }

    #[test]
    fn mentions_never_allow_everyone_or_roles() {
        let v = json(&mentions(&[UserId::new("42"), UserId::new("not-a-snowflake")]));
        assert_eq!(v["parse"], serde_json::json!([]));
        assert_eq!(v["users"], serde_json::json!(["42"]));
        assert!(v.get("roles").is_none_or(|r| r == &serde_json::json!([])));
    }

    #[test]
    fn choices_become_rows_of_at_most_five_buttons() {
        let p = prompts();
        let r =
            Reply { choices: (1..=12).map(|i| format!("choice {i} {}", "x".repeat(100))).collect(), ..reply("Pick") };
        let m = message(&r, "7", &p);
        let rows = json(&m.components);
        let rows = rows.as_array().unwrap();
        assert_eq!(rows.len(), 3);
        for row in rows {
            for b in row["components"].as_array().unwrap() {
                assert!(b["label"].as_str().unwrap().chars().count() <= MAX_BUTTON_LABEL);
                let id = b["custom_id"].as_str().unwrap();
                assert!(matches!(Action::decode(id), Some(Action { kind: Kind::Choice { .. }, .. })));
            }
        }
    }

    #[test]
    fn a_text_question_offers_a_form_with_the_answer_to_correct() {
        let p = prompts();
        let expect =
            Expect::Text { label: "Workflow".into(), current: Some("TBD".into()), max_chars: 1000, multiline: true };
        let r =
            Reply { to: Destination::Ephemeral(UserId::new("1")), expect: Some(expect), ..reply("Which workflow?") };
        let m = message(&r, "7", &p);
        assert_eq!(m.content, "Which workflow?");
        let embeds = json(&m.embeds);
        assert_eq!(embeds[0]["description"], "TBD");
        let button = &json(&m.components)[0]["components"][0];
        let action = Action::decode(button["custom_id"].as_str().unwrap()).unwrap();
        assert_eq!(action.kind, Kind::Answer { multiline: true, max_chars: 1000, label: "Workflow".into() });
        assert_eq!(action.workspace, "7");
        let modal = json(&modal("7", Some("workflow"), "Workflow", true, 1000, Some("TBD"), &p));
        let input = &modal["components"][0]["components"][0];
        assert_eq!(input["value"], "TBD");
        assert_eq!(input["style"], 2);
        assert_eq!(input["max_length"], 1000);
        assert!(modal["title"].as_str().unwrap().chars().count() <= MAX_MODAL_TITLE);
    }

    #[test]
    fn commands_come_from_the_one_description() {
        let p = prompts();
        let cmds = json(&commands(&p));
        let names: Vec<&str> = cmds.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, COMMANDS.iter().map(|c| c.name).collect::<Vec<_>>());
        let pilot = &cmds[0];
        let subs: Vec<&str> =
            pilot["options"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(subs, ["register", "status", "list", "edit", "evidence", "review", "resume", "help"]);
        let status = &pilot["options"][1]["options"][0];
        assert_eq!(status["name"], "pilot");
        assert_eq!(status["autocomplete"], true);
        // `/portfolio` has no subcommand.
        assert_eq!(cmds[1]["options"], serde_json::json!([]));
    }
}
