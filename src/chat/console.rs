//! The local chat console: a terminal that behaves like the bot in a channel, interactive or scripted.
//!
//! Input: `/...` is a slash command, `:...` a console control, anything else answers the pending question.
//! People are written `@name` (translated to the neutral `<@name>` for the engine), roles `@&name`.
//! Output: each reply starts with its destination: `[ephemeral @alice]`, `[#channel]` or `[dm @bob]`.

use std::io::Write;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use minijinja::context;
use regex::Regex;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::domain::{ChannelId, UserId, WorkspaceId};
use crate::engine::{Destination, Engine, Input, Reply, Request};
use crate::prompts::Key;

#[derive(Debug, Clone)]
pub struct ConsoleOptions {
    pub workspace: String,
    pub user: String,
    pub channel: String,
    /// A pinned clock for reproducible transcripts; the real clock when None.
    pub now: Option<DateTime<Utc>>,
    /// Console names that are bots.
    pub bots: Vec<String>,
    /// Print a prompt before each line (a terminal); otherwise echo each input line as `> line`.
    pub interactive: bool,
}

static MENTION_IN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(^|[^\w<@])@(&?)([\p{L}\p{N}_.-]*[\p{L}\p{N}_])").unwrap());
static MENTION_OUT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"<@(&?)!?([^<>\s]+)>").unwrap());

/// `@alice` -> `<@alice>`, `@&leads` -> `<@&leads>`; `@everyone` and `@here` stay as typed.
pub fn mentions_in(text: &str) -> String {
    MENTION_IN
        .replace_all(text, |c: &regex::Captures| {
            let name = &c[3];
            if c[2].is_empty() && (name.eq_ignore_ascii_case("everyone") || name.eq_ignore_ascii_case("here")) {
                c[0].to_owned()
            } else {
                format!("{}<@{}{}>", &c[1], &c[2], name)
            }
        })
        .into_owned()
}

/// `<@alice>` -> `@alice`, `<@&leads>` -> `@&leads`.
pub fn mentions_out(text: &str) -> String {
    MENTION_OUT.replace_all(text, "@$1$2").into_owned()
}

/// Formats one reply as the console prints it.
pub fn format_reply(reply: &Reply) -> String {
    let dest = match &reply.to {
        Destination::Ephemeral(u) => format!("[ephemeral @{u}]"),
        Destination::Channel(c) => format!("[#{}]", c.as_str()),
        Destination::Dm(u) => format!("[dm @{u}]"),
    };
    let text = mentions_out(&reply.text);
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        if i == 0 {
            out.push_str(&format!("{dest} {line}"));
        } else {
            out.push_str(&format!("\n  {line}"));
        }
    }
    if !reply.choices.is_empty() {
        let choices: Vec<String> = reply.choices.iter().enumerate().map(|(i, c)| format!("[{}] {c}", i + 1)).collect();
        out.push_str(&format!("\n  {}", choices.join("  ")));
    }
    out
}

/// Runs the console until the input ends. Returns the options as the input left them (speaking user, channel).
pub async fn run<R: AsyncBufRead + Unpin, W: Write>(
    engine: &Engine,
    mut opts: ConsoleOptions,
    input: R,
    out: &mut W,
) -> std::io::Result<ConsoleOptions> {
    let prompts = engine.prompts();
    let mut lines = input.lines();
    loop {
        if opts.interactive {
            write!(out, "@{} #{}> ", opts.user, opts.channel)?;
            out.flush()?;
        }
        let Some(line) = lines.next_line().await? else {
            break;
        };
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        if !opts.interactive {
            writeln!(out, "> {line}")?;
        }
        let trimmed = line.trim();
        if let Some(control) = trimmed.strip_prefix(':') {
            let mut words = control.split_whitespace();
            let text = match (words.next(), words.next()) {
                (Some("as"), Some(user)) => {
                    opts.user = user.trim_start_matches('@').to_owned();
                    prompts.render(Key::ConsoleUser, context! { user => format!("@{}", opts.user) })
                }
                (Some("in"), Some(channel)) => {
                    opts.channel = channel.trim_start_matches('#').to_owned();
                    prompts.render(Key::ConsoleChannel, context! { channel => format!("#{}", opts.channel) })
                }
                (Some("help"), None) => prompts.text(Key::ConsoleHelp),
                _ => prompts.render(Key::ConsoleUnknownControl, context! { control => format!(":{control}") }),
            };
            for (i, l) in text.lines().enumerate() {
                writeln!(out, "{}{l}", if i == 0 { "[console] " } else { "  " })?;
            }
            continue;
        }
        let text = mentions_in(trimmed);
        let bots = crate::domain::person::mentioned_users(&text)
            .into_iter()
            .filter(|u| opts.bots.iter().any(|b| b == u.as_str()))
            .collect();
        let input = if text.starts_with('/') { Input::CommandLine(text) } else { Input::Text(text) };
        let req = Request {
            workspace: WorkspaceId::new(opts.workspace.clone()),
            user: UserId::new(opts.user.clone()),
            channel: ChannelId::new(opts.channel.clone()),
            now: opts.now.unwrap_or_else(Utc::now),
            input,
            bots,
        };
        for reply in engine.handle(req).await {
            writeln!(out, "{}", format_reply(&reply))?;
        }
        out.flush()?;
    }
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_translate_both_ways() {
        assert_eq!(mentions_in("@alice and @&leads"), "<@alice> and <@&leads>");
        assert_eq!(mentions_in("@everyone @here bob@example.com"), "@everyone @here bob@example.com");
        assert_eq!(mentions_in("(@bob.smith)."), "(<@bob.smith>).");
        assert_eq!(mentions_out("owner <@alice>, role <@&leads>"), "owner @alice, role @&leads");
    }
}
