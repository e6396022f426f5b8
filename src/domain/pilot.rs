//! A pilot and the validated values it is made of.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::due::ScheduleState;
use super::lifecycle::{DecisionKind, EvidenceState, KillCategory, OwnerStatus};
use super::{PnlTarget, UserId};

/// A workspace: a Discord guild, a Slack team or a console workspace. Every row belongs to one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkspaceId(pub String);

impl WorkspaceId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A channel in a workspace, where a pilot was registered and its announcements go.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChannelId(pub String);

impl ChannelId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PilotId(pub i64);

impl std::fmt::Display for PilotId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where a pilot is on its way to production.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Being registered: some answers are still missing.
    Draft,
    /// All three scoping answers given and confirmed.
    Scoped,
    /// Scaled: a review decided to take it into production.
    InProduction,
    /// Stopped by a review decision.
    Killed,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Draft => "draft",
            Stage::Scoped => "scoped",
            Stage::InProduction => "in_production",
            Stage::Killed => "killed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [Stage::Draft, Stage::Scoped, Stage::InProduction, Stage::Killed].into_iter().find(|st| st.as_str() == s)
    }
}

pub const NAME_MIN_CHARS: usize = 3;
pub const NAME_MAX_CHARS: usize = 80;

/// A registration left untouched this long no longer holds its pilot's name: registering that name again (or
/// renaming a pilot to it) removes the abandoned draft, and its registrant's unfinished conversation with it.
/// What counts is the registration's last answer, not its start.
pub const DRAFT_ABANDONED_AFTER: chrono::Duration = chrono::Duration::days(7);

/// A draft whose registration last moved at `last_answer` is abandoned from this moment on.
pub fn abandoned_from(last_answer: DateTime<Utc>) -> DateTime<Utc> {
    last_answer + DRAFT_ABANDONED_AFTER
}

/// A pilot's name: 3-80 characters on one line, with at least one letter so it never reads as an id.
/// Stored exactly as typed (mentions included: they are only ever echoed without pinging).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PilotName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PilotNameError {
    #[error("name shorter than {min} characters")]
    TooShort { min: usize },
    #[error("name longer than {max} characters")]
    TooLong { max: usize, length: usize },
    #[error("name spans several lines")]
    MultiLine,
    #[error("name has no letter")]
    NoLetter,
}

impl PilotName {
    pub fn parse(raw: &str) -> Result<Self, PilotNameError> {
        let name = raw.trim();
        let length = name.chars().count();
        if name.contains('\n') {
            return Err(PilotNameError::MultiLine);
        }
        if length < NAME_MIN_CHARS {
            return Err(PilotNameError::TooShort { min: NAME_MIN_CHARS });
        }
        if length > NAME_MAX_CHARS {
            return Err(PilotNameError::TooLong { max: NAME_MAX_CHARS, length });
        }
        if !name.chars().any(char::is_alphabetic) {
            return Err(PilotNameError::NoLetter);
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key names are unique by within a workspace: case and surrounding space ignored.
    pub fn key(&self) -> String {
        name_key(&self.0)
    }
}

/// Normalises a name or a typed reference to a name for case-insensitive comparison.
pub fn name_key(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// A pilot reference as typed: `#12`, `12`, or a name (case ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PilotQuery<'a> {
    Id(i64),
    Name(&'a str),
}

impl<'a> PilotQuery<'a> {
    pub fn parse(text: &'a str) -> Self {
        let t = text.trim();
        match t.trim_start_matches('#').parse::<i64>() {
            Ok(id) if !t.is_empty() => PilotQuery::Id(id),
            _ => PilotQuery::Name(t),
        }
    }
}

/// A pilot as stored: the draft's answers are filled in one step at a time.
#[derive(Debug, Clone, PartialEq)]
pub struct Pilot {
    pub id: PilotId,
    pub workspace: WorkspaceId,
    pub name: String,
    pub stage: Stage,
    pub registered_by: UserId,
    pub registered_at: DateTime<Utc>,
    pub home_channel: ChannelId,
    pub workflow: Option<String>,
    pub owner: Option<UserId>,
    pub sponsor: Option<UserId>,
    pub pnl: Option<PnlTarget>,
    /// The first review date, as scoped.
    pub review_date: Option<NaiveDate>,
    pub owner_status: OwnerStatus,
    /// The review date in force: the first one, or the latest extension's.
    pub next_review_date: Option<NaiveDate>,
    /// The latest decision (extend may come several times; scale and kill are final).
    pub decision: Option<DecisionKind>,
    pub decision_reason: Option<String>,
    /// Why the owner declined, while they stand declined.
    pub owner_decline_reason: Option<String>,
    pub kill_category: Option<KillCategory>,
    /// Scaled without 3/3 evidence, by an explicit override.
    pub scale_override: bool,
    /// An override is a debt: the date by which the missing evidence is due (until it is recorded).
    pub evidence_due: Option<NaiveDate>,
    pub extensions: u32,
    pub evidence: EvidenceState,
    pub nudges_sent: u32,
    /// The counters of the current review cycle (what has been sent, answered, snoozed).
    pub schedule: ScheduleState,
    /// When the next scheduled message is due (None: nothing is).
    pub next_action_at: Option<DateTime<Utc>>,
    /// When the pilot's answers last changed (a draft's last answer counts for abandonment).
    pub updated_at: DateTime<Utc>,
    /// Counts every write: a change computed from an older version is not written (it is computed again).
    pub version: i64,
}

impl Pilot {
    /// A new draft: named and registered, nothing else on record yet.
    pub fn draft(
        id: PilotId,
        workspace: WorkspaceId,
        name: &str,
        registered_by: UserId,
        registered_at: DateTime<Utc>,
        home_channel: ChannelId,
    ) -> Pilot {
        Pilot {
            id,
            workspace,
            name: name.to_owned(),
            stage: Stage::Draft,
            registered_by,
            registered_at,
            home_channel,
            workflow: None,
            owner: None,
            sponsor: None,
            pnl: None,
            review_date: None,
            owner_status: OwnerStatus::Pending,
            next_review_date: None,
            decision: None,
            decision_reason: None,
            owner_decline_reason: None,
            kill_category: None,
            scale_override: false,
            evidence_due: None,
            extensions: 0,
            evidence: EvidenceState::default(),
            nudges_sent: 0,
            schedule: ScheduleState::default(),
            next_action_at: None,
            updated_at: registered_at,
            version: 1,
        }
    }

    /// Registrant, owner and sponsor may change a pilot's answers.
    pub fn may_edit(&self, user: &UserId) -> bool {
        &self.registered_by == user || self.owner.as_ref() == Some(user) || self.sponsor.as_ref() == Some(user)
    }
}

/// A scoped pilot for tests: owned by @alice, registered by @bob, reviewed on 2027-01-06, £100 -> £80.
#[cfg(test)]
pub(crate) fn sample(name: &str, stage: Stage) -> Pilot {
    let date: NaiveDate = "2027-01-06".parse().unwrap_or_default();
    let registered = DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z").map(|d| d.to_utc()).unwrap_or_default();
    let draft = Pilot::draft(
        PilotId(1),
        WorkspaceId::new("w"),
        name,
        UserId::new("bob"),
        registered,
        ChannelId::new("general"),
    );
    Pilot {
        stage,
        workflow: Some("w".into()),
        owner: Some(UserId::new("alice")),
        pnl: Some(PnlTarget { line: "Claims cost".into(), unit: "GBP".into(), baseline: 100.0, target: 80.0 }),
        review_date: Some(date),
        next_review_date: Some(date),
        ..draft
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_kept_as_typed() {
        assert_eq!(PilotName::parse(" Claims triage ").unwrap().as_str(), "Claims triage");
        assert_eq!(PilotName::parse("ab"), Err(PilotNameError::TooShort { min: 3 }));
        assert!(matches!(PilotName::parse(&"a".repeat(81)), Err(PilotNameError::TooLong { .. })));
        assert!(PilotName::parse(&"a".repeat(80)).is_ok());
        assert_eq!(PilotName::parse("12345"), Err(PilotNameError::NoLetter));
        assert_eq!(PilotName::parse("one\ntwo"), Err(PilotNameError::MultiLine));
        assert_eq!(PilotName::parse("@everyone bot").unwrap().as_str(), "@everyone bot");
        assert_eq!(PilotName::parse("Ünïcode  Pilot").unwrap().key(), "ünïcode pilot");
    }
}
