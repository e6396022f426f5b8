//! Guided conversations as state machines: where a user is, what their answer does, what to say next.
//! Pure: the engine loads the conversation and the pilot, applies the effects in one transaction and renders
//! what is to be said.

pub mod scoping;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::domain::{ChannelId, PilotId, PilotName, PnlTarget, Rules, Stage, Step, UserId};
use crate::prompts::Key;

/// Which conversation a user is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flow {
    /// `/pilot register`: every question, then confirmation.
    Register,
    /// `/pilot edit`: one question about a scoped pilot.
    Edit,
}

/// The question a conversation is waiting on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    Ask(Step),
    Confirm,
    PickEdit,
}

impl At {
    pub fn as_str(self) -> &'static str {
        match self {
            At::Ask(step) => step.as_str(),
            At::Confirm => "confirm",
            At::PickEdit => "pick_edit",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "confirm" => Some(At::Confirm),
            "pick_edit" => Some(At::PickEdit),
            other => Step::ALL.into_iter().find(|st| st.as_str() == other).map(At::Ask),
        }
    }
}

/// A user's conversation in progress, saved after every answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub flow: Flow,
    pub at: At,
    /// None only while a registration still waits for the pilot's name.
    pub pilot: Option<PilotId>,
    pub channel: ChannelId,
    /// Set while a registration edits one answer from the confirmation: it returns there afterwards.
    pub return_to_confirm: bool,
}

/// One answer's worth of change to a pilot.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Name(PilotName),
    Workflow(String),
    Owner(UserId),
    Pnl(PnlTarget),
    Sponsor(Option<UserId>),
    ReviewDate(NaiveDate),
}

impl Change {
    pub fn step(&self) -> Step {
        match self {
            Change::Name(_) => Step::Name,
            Change::Workflow(_) => Step::Workflow,
            Change::Owner(_) => Step::Owner,
            Change::Pnl(_) => Step::Pnl,
            Change::Sponsor(_) => Step::Sponsor,
            Change::ReviewDate(_) => Step::ReviewDate,
        }
    }
}

/// What the store must do, all in one transaction, before anything is said.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Create the draft pilot; it becomes the conversation's pilot.
    CreateDraft(PilotName),
    Set(Change),
    SetStage(Stage),
    DeleteDraft,
    SaveConversation(Conversation),
    EndConversation,
}

/// Why an answer was refused; nothing changes.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    Answer(crate::domain::AnswerError),
    Name(crate::domain::PilotNameError),
    Person {
        step: Step,
        error: crate::domain::PersonError,
    },
    Pnl(crate::domain::PnlError),
    Date {
        answer: String,
        error: crate::domain::ReviewDateError,
    },
    Choice {
        answer: String,
        choices: Vec<String>,
    },
}

/// What to say, in order, once the effects are saved.
#[derive(Debug, Clone, PartialEq)]
pub enum Say {
    /// The question at this position, rendered from the pilot as saved.
    Ask(At),
    Refused(Refusal),
    /// A vague answer: the rule's follow-up question.
    Vague {
        rule: String,
        answer: String,
    },
    BackAtFirst,
    EditNoBack,
    Cancelled,
    EditCancelled,
    /// The registration is confirmed: tell the user and announce it in the channel.
    Registered,
    /// One answer of a scoped pilot changed.
    Updated(Step),
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Turn {
    pub effects: Vec<Effect>,
    pub says: Vec<Say>,
}

impl Turn {
    fn say(says: Vec<Say>) -> Self {
        Self {
            effects: Vec::new(),
            says,
        }
    }
}

/// What a conversation needs to know about the world.
pub struct Ctx<'a> {
    pub user: &'a UserId,
    pub today: NaiveDate,
    pub horizon_days: u32,
    pub default_review_weeks: u32,
    pub rules: &'a Rules,
    /// Mentioned users the adapter knows to be bots.
    pub bots: &'a [UserId],
    /// Choice labels as shown to users, so typed labels are recognised in any wording.
    pub labels: &'a dyn Labels,
}

/// Where choice labels come from (the prompts).
pub trait Labels {
    fn label(&self, key: Key) -> String;
}

impl Labels for crate::prompts::Prompts {
    fn label(&self, key: Key) -> String {
        self.text(key)
    }
}
