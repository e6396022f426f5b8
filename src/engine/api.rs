//! What adapters exchange with the engine: a [`Request`] in (who, where, when, what), [`Reply`]s out (to whom, what
//! to show and which controls), and the settings the engine runs with.

use chrono::{DateTime, Utc};

use crate::commands::Command;
use crate::domain::{ChannelId, Platform, UserId, WorkspaceId};

/// Settings the rules depend on.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// How far ahead a review date may be set, in days.
    pub review_horizon_days: u32,
    /// The review date proposed by default, in weeks from now.
    pub default_review_weeks: u32,
    /// Pilots shown by `/pilot list` before "and N more".
    pub list_limit: i64,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self { review_horizon_days: 365, default_review_weeks: 6, list_limit: 25 }
    }
}

/// What a user did.
#[derive(Debug, Clone)]
pub enum Input {
    /// A slash command typed as text (`/pilot status Claims triage`).
    CommandLine(String),
    /// A command the platform already parsed into options.
    Command(Command),
    /// Any other message, button or menu choice: the answer to the user's pending question.
    Text(String),
}

#[derive(Debug, Clone)]
pub struct Request {
    pub workspace: WorkspaceId,
    pub user: UserId,
    pub channel: ChannelId,
    pub now: DateTime<Utc>,
    pub input: Input,
    /// Users mentioned in the input whom the platform knows to be bots.
    pub bots: Vec<UserId>,
    /// Whether the platform counts this user as a workspace administrator (Discord: Manage Server).
    pub admin: bool,
    /// The question a text answer was given to, when the platform knows it (a button or form made for that
    /// question: [`Reply::question`]). An answer to a question no longer open changes nothing.
    pub answers: Option<String>,
    /// The platform the request came from (None: the console, a test): recorded as the workspace's, so that
    /// scheduled messages go back through it.
    pub platform: Option<Platform>,
}

/// Where a reply goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Only this user sees it.
    Ephemeral(UserId),
    /// Posted in the channel for everyone.
    Channel(ChannelId),
    /// A direct message.
    Dm(UserId),
}

/// What kind of answer a reply asks for, so an adapter can offer the right control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Free text. `label` names the answer (a form field's label); `current` is the text to start from: the
    /// answer on record, or the answer just refused, to correct rather than retype.
    Text { label: String, current: Option<String>, max_chars: usize, multiline: bool },
    /// One person (a user picker where the platform has one); `skip` is the answer that leaves it unset.
    Person { label: String, skip: Option<String> },
    /// One of the reply's choices.
    Choice,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub to: Destination,
    /// Text with mentions in the neutral form `<@id>`.
    pub text: String,
    /// Choices offered, in order (buttons, or numbered in the console).
    pub choices: Vec<String>,
    /// The only users this reply may notify. Never roles, @everyone or @here.
    pub ping: Vec<UserId>,
    pub expect: Option<Expect>,
    /// For a direct message: what to post instead when the user does not accept direct messages.
    pub fallback: Option<Box<Reply>>,
    /// A file sent with the message (the funnel chart).
    pub attachment: Option<Attachment>,
    /// A pilot card or a summary: the first line is its title (an embed where the platform has them).
    pub card: bool,
    /// The conversation question this reply's controls answer, to give back in [`Request::answers`].
    pub question: Option<String>,
    /// Commands offered as one-click shortcuts (buttons where the platform has them).
    pub shortcuts: Vec<Shortcut>,
}

/// A command offered with a reply: `label` shown, `command` run as if typed (`/pilot review #3 kill`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortcut {
    pub label: String,
    pub command: String,
}

impl Reply {
    /// A post in a channel that notifies only `ping`.
    pub fn post(channel: ChannelId, text: String, ping: Vec<UserId>) -> Self {
        Self { ping, ..Self::new(Destination::Channel(channel), text) }
    }

    /// Plain text to `to`: no choices, no pings, nothing attached.
    pub fn new(to: Destination, text: String) -> Self {
        Self {
            to,
            text,
            choices: vec![],
            ping: vec![],
            expect: None,
            fallback: None,
            attachment: None,
            card: false,
            question: None,
            shortcuts: vec![],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub filename: String,
    pub bytes: Vec<u8>,
}

/// The reference a question by direct message gives its buttons (`Reply::question`): which kind of ask, about
/// which pilot, to whom. An answer carrying it goes to that ask only, never to a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AskRef {
    pub kind: String,
    pub pilot: crate::domain::PilotId,
    pub user: UserId,
}

impl std::fmt::Display for AskRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ask-{}-{}-{}", self.kind, self.pilot.0, self.user.as_str())
    }
}

impl AskRef {
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.splitn(4, '-');
        if parts.next()? != "ask" {
            return None;
        }
        let kind = parts.next()?.to_owned();
        let pilot = crate::domain::PilotId(parts.next()?.parse().ok()?);
        let user = UserId::new(parts.next().filter(|u| !u.is_empty())?);
        Some(AskRef { kind, pilot, user })
    }
}
