//! Guided conversations as state machines: where a user is, what their answer does, what to say next.
//! Pure: the engine loads the conversation and the pilot, applies the effects in one transaction and renders
//! what is to be said.

pub mod asks;
pub mod evidence;
pub mod review;
pub mod scoping;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{
    ChannelId, DecisionKind, EvidenceKind, KillCategory, OwnerStatus, PilotId, PilotName, Rules, Stage, Step, UserId,
};
use crate::prompts::Key;

pub use crate::domain::change::{Change, Decision, EvidenceItem};

/// Which conversation a user is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flow {
    /// `/pilot register`: every question, then confirmation.
    Register,
    /// `/pilot edit`: one question about a scoped pilot.
    Edit,
    /// `/pilot evidence`: one item of production evidence.
    Evidence,
    /// `/pilot review`: a decision and what it needs.
    Review,
}

impl Flow {
    pub fn as_str(self) -> &'static str {
        match self {
            Flow::Register => "register",
            Flow::Edit => "edit",
            Flow::Evidence => "evidence",
            Flow::Review => "review",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [Flow::Register, Flow::Edit, Flow::Evidence, Flow::Review].into_iter().find(|f| f.as_str() == s)
    }
}

/// The question a conversation is waiting on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    Ask(Step),
    Confirm,
    PickEdit,
    /// Which evidence item to record.
    PickEvidence,
    /// The answer for one evidence item.
    Evidence(EvidenceKind),
    /// The reason to scale without 3/3 evidence.
    ScaleOverride,
    ExtendDate,
    ExtendReason,
    KillCategory,
    KillReason,
    /// Whether the pilot being registered is the same as an open one it overlaps (`Scratch::duplicate`).
    Duplicate,
}

impl At {
    pub fn as_str(self) -> &'static str {
        match self {
            At::Ask(step) => step.as_str(),
            At::Confirm => "confirm",
            At::PickEdit => "pick_edit",
            At::PickEvidence => "pick_evidence",
            At::Evidence(EvidenceKind::WorkflowLive) => "evidence_workflow_live",
            At::Evidence(EvidenceKind::OwnerRunning) => "evidence_owner_running",
            At::Evidence(EvidenceKind::PnlMoved) => "evidence_pnl_moved",
            At::ScaleOverride => "scale_override",
            At::ExtendDate => "extend_date",
            At::ExtendReason => "extend_reason",
            At::KillCategory => "kill_category",
            At::KillReason => "kill_reason",
            At::Duplicate => "duplicate",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        let fixed = [
            At::Confirm,
            At::PickEdit,
            At::PickEvidence,
            At::Evidence(EvidenceKind::WorkflowLive),
            At::Evidence(EvidenceKind::OwnerRunning),
            At::Evidence(EvidenceKind::PnlMoved),
            At::ScaleOverride,
            At::ExtendDate,
            At::ExtendReason,
            At::KillCategory,
            At::KillReason,
            At::Duplicate,
        ];
        fixed.into_iter().chain(Step::ALL.into_iter().map(At::Ask)).find(|a| a.as_str() == s)
    }
}

/// Answers a multi-question conversation keeps until its last question.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scratch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<KillCategory>,
    /// An owner asking for a new review date (from a nudge): the sponsor or registrant approves it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub request: bool,
    /// What is understood of a P&L answer given in parts, while its question is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pnl: Option<Box<crate::domain::PnlDraft>>,
    /// A workflow answer kept while its follow-up asks for the rest (the team, the step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// Part of a review date (a month, or a day) while its question asks for the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_part: Option<crate::domain::DatePart>,
    /// Answers given with `/pilot register`, not yet applied: each is taken when the registration reaches its step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefill: Vec<(Step, String)>,
    /// The people those answers mention whom the platform knew to be bots when they were given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefill_bots: Vec<UserId>,
    /// The open pilot a registration overlaps, while the user is asked whether it is the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<Box<DuplicateOf>>,
    /// Open pilots the user said this one is separate from (not asked about again).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub separate: Vec<PilotId>,
}

/// An open pilot that a registration overlaps, and what they share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuplicateOf {
    pub id: PilotId,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<UserId>,
    /// `true`: the same P&L line; `false`: a very similar workflow.
    pub same_line: bool,
    /// The question answered when it was found: the registration goes on from the next one.
    pub step: Step,
}

impl Scratch {
    /// Without the partial answers of a question: once the conversation moves on, they are gone.
    pub fn without_partials(&self) -> Scratch {
        Scratch { pnl: None, workflow: None, date_part: None, ..self.clone() }
    }

    /// The answer given in advance for `step`, if any.
    pub fn prefilled(&self, step: Step) -> Option<&str> {
        self.prefill.iter().find(|(s, _)| *s == step).map(|(_, v)| v.as_str())
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
    pub scratch: Scratch,
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
    AddEvidence(EvidenceItem),
    Decide(Decision),
    SetOwnerStatus {
        status: OwnerStatus,
        reason: Option<String>,
    },
    /// Ask a user, by direct message, a question about the conversation's pilot.
    OpenAsk {
        user: UserId,
        kind: AskKind,
    },
    /// The ask was answered (or is void).
    CloseAsk(i64),
    /// The owner acted on a nudge: the count of unanswered nudges starts again.
    NudgeAnswered,
    /// No nudge before `until`.
    Snooze {
        until: DateTime<Utc>,
    },
}

/// Questions asked by direct message, answered outside any conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AskKind {
    /// The named owner accepts or declines ownership.
    AcceptOwnership,
    /// The sponsor (or, without one, the registrant) confirms an extension.
    ApproveExtension { date: NaiveDate, reason: String, requested_by: UserId },
    /// A nudge: add evidence, ask for a new review date, or snooze.
    Nudge { cycle: NaiveDate },
}

impl AskKind {
    pub fn name(&self) -> &'static str {
        match self {
            AskKind::AcceptOwnership => "accept_ownership",
            AskKind::ApproveExtension { .. } => "approve_extension",
            AskKind::Nudge { .. } => "nudge",
        }
    }
}

/// An open ask, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    pub id: i64,
    pub user: UserId,
    pub pilot: PilotId,
    pub kind: AskKind,
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
    /// The P&L evidence did not read as `value; period; source`.
    EvidenceFormat,
    /// The measured value is in another unit than the line.
    EvidenceUnit {
        unit: String,
        line_unit: String,
    },
    /// A rule of the review refuses it (who may do what, what a pilot needs).
    Rule(crate::domain::rules::Refusal),
    /// An extension beyond the limit needs a sponsor, and there is none.
    NoSponsorForExtension {
        limit: u32,
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
    /// Part of a P&L line was understood: what is, and the question for what is missing.
    PnlMissing {
        understood: String,
        needs: Vec<crate::domain::PnlField>,
    },
    /// Part of a review date was understood: the question for the rest.
    DateMissing {
        part: crate::domain::DatePart,
    },
    /// The registration stopped: it is the open pilot it overlapped.
    DuplicateStopped {
        id: PilotId,
        name: String,
    },
    /// An answer given in parts, as combined and recorded.
    Understood {
        step: Step,
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
    /// The owner is asked, by direct message, to accept ownership.
    AskOwner,
    /// An evidence or review conversation was stopped; nothing recorded.
    Stopped,
    EvidenceRecorded(EvidenceKind),
    Decided(DecisionKind),
    /// An extension beyond the limit waits for the sponsor.
    ExtensionAwaitsSponsor {
        date: NaiveDate,
        reason: String,
        limit: u32,
        approver: UserId,
    },
    /// Answers to asks.
    OwnerAccepted,
    OwnerDeclined {
        reason: Option<String>,
    },
    ExtensionApproved {
        requested_by: UserId,
    },
    ExtensionRefused {
        requested_by: UserId,
    },
    /// The ask no longer applies (the owner changed, the pilot was decided).
    AskVoid,
    Snoozed {
        until: DateTime<Utc>,
    },
    SnoozeLimit {
        max: u32,
    },
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Turn {
    pub effects: Vec<Effect>,
    pub says: Vec<Say>,
}

impl Turn {
    pub fn say(says: Vec<Say>) -> Self {
        Self { effects: Vec::new(), says }
    }
}

/// Matches an answer to one of the labels, by its number (1-based) or its label, ignoring case.
pub fn pick<T: Copy>(answer: &str, options: &[(T, String)], also: impl Fn(&str) -> Option<T>) -> Option<T> {
    let text = answer.trim().trim_end_matches('.');
    if let Ok(n) = text.parse::<usize>() {
        return n.checked_sub(1).and_then(|i| options.get(i)).map(|(t, _)| *t);
    }
    options.iter().find(|(_, label)| label.eq_ignore_ascii_case(text)).map(|(t, _)| *t).or_else(|| also(text))
}

impl Ctx<'_> {
    /// The user, as the rules see who acts.
    pub fn actor(&self) -> crate::domain::rules::Actor<'_> {
        crate::domain::rules::Actor { user: self.user, platform_admin: self.admin }
    }
}

/// What a conversation needs to know about the world.
pub struct Ctx<'a> {
    pub user: &'a UserId,
    pub now: DateTime<Utc>,
    pub today: NaiveDate,
    pub horizon_days: u32,
    pub default_review_weeks: u32,
    pub rules: &'a Rules,
    /// Mentioned users the adapter knows to be bots.
    pub bots: &'a [UserId],
    /// Whether the platform counts the user as an admin (Discord's Manage Server, the console's `console.admins`).
    pub admin: bool,
    /// Choice labels as shown to users, so typed labels are recognised in any wording.
    pub labels: &'a dyn Labels,
    pub settings: &'a crate::domain::WorkspaceSettings,
    /// The workspace's open pilots, when the answer may overlap one (a registration's workflow or P&L line).
    pub open_pilots: &'a [crate::domain::overlap::OpenPilot],
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
