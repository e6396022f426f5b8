//! What a turn asks of a pilot ([`Command`]), and what the rules make of it ([`Changes`]): the pilot as it is
//! afterwards and the records that say why. The store writes these as they are given; it decides nothing.

use chrono::{DateTime, NaiveDate, Utc};

use super::{DecisionKind, EvidenceKind, KillCategory, OwnerStatus, Pilot, PilotName, PnlTarget, Stage, Step, UserId};

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

/// One item of production evidence as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct EvidenceItem {
    pub kind: EvidenceKind,
    pub note: String,
    pub value: Option<f64>,
    pub period: Option<String>,
    pub source: Option<String>,
}

/// A review decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub kind: DecisionKind,
    pub reason: String,
    pub category: Option<KillCategory>,
    pub new_date: Option<NaiveDate>,
    /// Scaled without 3/3 evidence.
    pub override_evidence: bool,
}

/// What a turn asks of one pilot. Each is decided by [`super::rules::apply`] against the pilot as it is when the
/// turn is committed.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Set(Change),
    SetStage(Stage),
    AddEvidence(EvidenceItem),
    Decide(Decision),
    SetOwnerStatus {
        status: OwnerStatus,
        reason: Option<String>,
    },
    /// The owner acted on a nudge: the count of unanswered nudges starts again.
    NudgeAnswered,
    /// No nudge before `until`.
    Snooze {
        until: DateTime<Utc>,
    },
}

/// One line of the audit trail (the turn's workspace, pilot, actor and time go with it).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub action: &'static str,
    pub field: Option<&'static str>,
    pub old: Option<String>,
    pub new: Option<String>,
}

/// One item of evidence to add to a pilot's history (recorded by the turn's actor, at its time). `proves` is the
/// answer it proves, as the pilot had it when it was recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct EvidenceRecord {
    pub kind: EvidenceKind,
    pub note: String,
    pub value: Option<f64>,
    pub period: Option<String>,
    pub source: Option<String>,
    pub proves: Option<String>,
}

/// What a command changes: the pilot afterwards, its audit lines, evidence added, and the kinds of evidence
/// whose records stop counting (they stay in the history).
#[derive(Debug, Clone, PartialEq)]
pub struct Changes {
    pub pilot: Pilot,
    pub audit: Vec<AuditRecord>,
    pub evidence: Vec<EvidenceRecord>,
    pub voided: Vec<EvidenceKind>,
}

impl Changes {
    /// Nothing changed yet: the pilot as it is.
    pub fn none(pilot: &Pilot) -> Self {
        Self { pilot: pilot.clone(), audit: Vec::new(), evidence: Vec::new(), voided: Vec::new() }
    }

    /// Appends the changes of a later command, which applied to `self.pilot`.
    pub fn then(mut self, later: Changes) -> Self {
        self.pilot = later.pilot;
        self.audit.extend(later.audit);
        self.evidence.extend(later.evidence);
        for kind in later.voided {
            if !self.voided.contains(&kind) {
                self.voided.push(kind);
            }
        }
        self
    }
}
