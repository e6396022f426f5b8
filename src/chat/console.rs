//! The local chat console: a terminal that behaves like the bot in a channel, interactive or scripted.
//!
//! Input: `/...` is a slash command, `:...` a console control, anything else answers the pending question.
//! People are written `@name` (translated to the neutral `<@name>` for the engine), roles `@&name`.
//! Output: each reply starts with its destination: `[ephemeral @alice]`, `[#channel]` or `[dm @bob]`.

use std::io::Write;
use std::sync::LazyLock;

use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};
use minijinja::context;
use regex::Regex;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::domain::{ChannelId, UserId, WorkspaceId};
use crate::engine::{Destination, Engine, Input, Reply, Request};
use crate::prompts::Key;
use crate::schedule::{DeliveryError, Outbox, Scheduler};

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
    /// Console users whose direct messages are closed (`:dms closed`), to try the fallback.
    pub closed_dms: Vec<String>,
    /// Console users who are workspace admins (as Manage Server makes one in Discord).
    pub admins: Vec<String>,
    /// Where charts are written.
    pub chart_dir: std::path::PathBuf,
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
    if !reply.shortcuts.is_empty() {
        let shortcuts: Vec<String> = reply.shortcuts.iter().map(|s| format!("{}: `{}`", s.label, s.command)).collect();
        out.push_str(&format!("\n  ▸ {}", shortcuts.join("  ")));
    }
    out
}

/// Messages the scheduler hands over, printed with their time as they are handed over (a message is recorded as sent
/// only once printed); DMs to users who closed them are refused.
struct ConsoleOutbox<'a, W: Write> {
    engine: &'a Engine,
    opts: &'a ConsoleOptions,
    out: Mutex<&'a mut W>,
}

impl<W: Write + Send> Outbox for ConsoleOutbox<'_, W> {
    async fn deliver(&self, at: DateTime<Utc>, _workspace: &WorkspaceId, reply: &Reply) -> Result<(), DeliveryError> {
        if let Destination::Dm(u) = &reply.to
            && self.opts.closed_dms.iter().any(|c| c == u.as_str())
        {
            return Err(DeliveryError::DmClosed);
        }
        let mut out = self.out.lock().map_err(|e| DeliveryError::Failed(e.to_string()))?;
        let printed = writeln!(out, "[{}] {}", at.format("%Y-%m-%d %H:%M"), format_reply(reply))
            .and_then(|()| write_attachment(self.engine, self.opts, reply, at, &mut **out))
            .and_then(|()| out.flush());
        printed.map_err(|e| DeliveryError::Failed(e.to_string()))
    }
}

/// `14d`, `3h`, `2w`, `30m`.
fn parse_span(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = n.parse().ok().filter(|n| *n > 0 && *n <= 3650)?;
    match unit.trim() {
        "m" | "min" => Some(Duration::minutes(n)),
        "h" => Some(Duration::hours(n)),
        "d" => Some(Duration::days(n)),
        "w" => Some(Duration::weeks(n)),
        _ => None,
    }
}

/// Runs everything the scheduler would have sent up to `now`, printing each message with its time as it goes.
async fn run_scheduler<W: Write + Send>(
    engine: &Engine,
    opts: &ConsoleOptions,
    now: DateTime<Utc>,
    out: &mut W,
) -> std::io::Result<()> {
    let outbox = ConsoleOutbox { engine, opts, out: Mutex::new(out) };
    let ws = WorkspaceId::new(opts.workspace.clone());
    let scheduler = Scheduler::new(engine.clone(), "console");
    scheduler.sweep(&move || now, &outbox, Some(&ws)).await;
    Ok(())
}

/// The console cannot show a picture: it writes the attachment to a file and prints its path.
fn write_attachment<W: Write + ?Sized>(
    engine: &Engine,
    opts: &ConsoleOptions,
    reply: &Reply,
    at: DateTime<Utc>,
    out: &mut W,
) -> std::io::Result<()> {
    let Some(attachment) = &reply.attachment else { return Ok(()) };
    std::fs::create_dir_all(&opts.chart_dir)?;
    let stem = attachment.filename.trim_end_matches(".png");
    let name = format!(
        "{stem}-{}-{}.png",
        opts.workspace.replace(|c: char| !c.is_alphanumeric(), "_"),
        at.format("%Y%m%d-%H%M")
    );
    let path = opts.chart_dir.join(name);
    std::fs::write(&path, &attachment.bytes)?;
    let text = engine.prompts().render(Key::ConsoleChart, context! { path => path.display().to_string() });
    writeln!(out, "  {text}")
}

/// Moves the simulated clock forward by `span`, firing each due item at its due time, in order.
async fn advance<W: Write + Send>(
    engine: &Engine,
    opts: &mut ConsoleOptions,
    span: Duration,
    out: &mut W,
) -> std::io::Result<()> {
    let mut clock = opts.now.unwrap_or_else(Utc::now);
    let target = clock + span;
    let ws = WorkspaceId::new(opts.workspace.clone());
    // Bounded: every step either sends or moves the clock; the bound only guards against a stuck item.
    for _ in 0..10_000 {
        let next = match engine.store().next_action_at(Some(&ws)).await {
            Ok(next) => {
                let digest = Scheduler::new(engine.clone(), "console").next_digest_at(&ws, clock).await.ok().flatten();
                [next, digest].into_iter().flatten().min()
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the schedule");
                break;
            }
        };
        match next {
            Some(t) if t <= target => {
                clock = clock.max(t);
                run_scheduler(engine, opts, clock, out).await?;
                if engine.store().next_action_at(Some(&ws)).await.ok().flatten() == Some(t) && t <= clock {
                    // The item could not be sent (for example a failing delivery): wait for its lease.
                    clock += crate::schedule::LEASE;
                }
            }
            _ => break,
        }
    }
    opts.now = Some(target);
    Ok(())
}

/// Runs the console until the input ends. Returns the options as the input left them (speaking user, channel).
pub async fn run<R: AsyncBufRead + Unpin, W: Write + Send>(
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
        let trimmed = line.trim();
        // A script's comments are narration: shown, never sent.
        if trimmed.starts_with('#') && !opts.interactive {
            writeln!(out, "{trimmed}")?;
            continue;
        }
        if !opts.interactive {
            writeln!(out, "> {line}")?;
        }
        if let Some(control) = trimmed.strip_prefix(':') {
            let mut words = control.split_whitespace();
            let text = match (words.next(), words.next(), words.next()) {
                (Some("as"), Some(user), None) => {
                    opts.user = user.trim_start_matches('@').to_owned();
                    prompts.render(Key::ConsoleUser, context! { user => format!("@{}", opts.user) })
                }
                (Some("in"), Some(channel), None) => {
                    opts.channel = channel.trim_start_matches('#').to_owned();
                    prompts.render(Key::ConsoleChannel, context! { channel => format!("#{}", opts.channel) })
                }
                (Some("advance"), Some(span), None) => match parse_span(span) {
                    Some(span) => {
                        advance(engine, &mut opts, span, out).await?;
                        let now = opts.now.unwrap_or_else(Utc::now).format("%Y-%m-%d %H:%M UTC").to_string();
                        prompts.render(Key::ConsoleNow, context! { now })
                    }
                    None => prompts.render(Key::ConsoleBadSpan, context! { span }),
                },
                (Some("dms"), Some(state @ ("open" | "closed")), None) => {
                    opts.closed_dms.retain(|u| u != &opts.user);
                    if state == "closed" {
                        opts.closed_dms.push(opts.user.clone());
                    }
                    prompts.render(
                        Key::ConsoleDms,
                        context! { user => format!("@{}", opts.user), closed => state == "closed" },
                    )
                }
                (Some("help"), None, None) => prompts.text(Key::ConsoleHelp),
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
        let command = text.starts_with('/');
        crate::engine::metric::interaction("console", if command { "command" } else { "text" });
        let input = if command { Input::CommandLine(text) } else { Input::Text(text) };
        let now = opts.now.unwrap_or_else(Utc::now);
        let req = Request {
            workspace: WorkspaceId::new(opts.workspace.clone()),
            user: UserId::new(opts.user.clone()),
            channel: ChannelId::new(opts.channel.clone()),
            now,
            input,
            bots,
            admin: opts.admins.iter().any(|a| a == &opts.user),
            answers: None,
            platform: None,
        };
        for reply in engine.handle(req).await {
            // A direct message to someone who closed theirs goes where the engine says instead.
            let closed = matches!(&reply.to, Destination::Dm(u) if opts.closed_dms.iter().any(|c| c == u.as_str()));
            let shown = match (&reply.fallback, closed) {
                (Some(fallback), true) => fallback.as_ref(),
                _ => &reply,
            };
            writeln!(out, "{}", format_reply(shown))?;
            write_attachment(engine, &opts, shown, now, out)?;
        }
        // The bot keeps running between messages: anything due by now is sent.
        run_scheduler(engine, &opts, now, out).await?;
        out.flush()?;
    }
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that refuses everything, as a closed terminal would.
    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "closed"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The console hands a message over by printing it: one it could not print is not handed over, so the
    /// scheduler does not record it as sent.
    #[tokio::test]
    async fn a_message_the_console_cannot_print_is_not_handed_over() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("c.db").display());
        let store = crate::open_store(&url).await.unwrap();
        let prompts = std::sync::Arc::new(crate::prompts::Prompts::embedded().unwrap());
        let engine = Engine::new(store, prompts, crate::engine::EngineSettings::default());
        let opts = ConsoleOptions {
            workspace: "w".into(),
            user: "bob".into(),
            channel: "general".into(),
            now: None,
            bots: vec![],
            interactive: false,
            closed_dms: vec![],
            admins: vec![],
            chart_dir: dir.path().to_owned(),
        };
        let (mut closed, mut open) = (Closed, Vec::new());
        let reply = Reply::new(Destination::Dm(UserId::new("alice")), "Heads-up".into());
        let at = Utc::now();
        let ws = WorkspaceId::new("w");
        let outbox = ConsoleOutbox { engine: &engine, opts: &opts, out: Mutex::new(&mut closed) };
        assert!(matches!(outbox.deliver(at, &ws, &reply).await, Err(DeliveryError::Failed(_))));
        let outbox = ConsoleOutbox { engine: &engine, opts: &opts, out: Mutex::new(&mut open) };
        assert_eq!(outbox.deliver(at, &ws, &reply).await, Ok(()));
        assert!(String::from_utf8(open).unwrap().contains("[dm @alice] Heads-up"));
        engine.store().close().await;
    }

    #[test]
    fn mentions_translate_both_ways() {
        assert_eq!(mentions_in("@alice and @&leads"), "<@alice> and <@&leads>");
        assert_eq!(mentions_in("@everyone @here bob@example.com"), "@everyone @here bob@example.com");
        assert_eq!(mentions_in("(@bob.smith)."), "(<@bob.smith>).");
        assert_eq!(mentions_out("owner <@alice>, role <@&leads>"), "owner @alice, role @&leads");
    }
}
