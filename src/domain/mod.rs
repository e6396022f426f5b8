//! Pilots, the people around them and the answers that scope them: types and pure rules, no I/O.

pub mod answer;
pub mod change;
pub mod due;
pub mod lifecycle;
pub mod overlap;
pub mod person;
pub mod pilot;
pub mod platform;
pub mod pnl;
pub mod portfolio;
pub mod review_date;
pub mod rules;
pub mod settings;
pub mod vagueness;

pub use answer::{Answer, AnswerError};
pub use change::{AuditRecord, Change, Changes, Command, Decision, EvidenceItem, EvidenceRecord};
pub use due::{Due, DueKind, ScheduleState};
pub use lifecycle::{DecisionKind, EvidenceKind, EvidenceState, Flag, KillCategory, Outcome, OwnerStatus, RiskReason};
pub use person::{PersonError, PersonRef, UserId};
pub use pilot::{ChannelId, Pilot, PilotId, PilotName, PilotNameError, Stage, WorkspaceId};
pub use platform::Platform;
pub use pnl::{Incomplete, PnlDraft, PnlError, PnlField, PnlTarget, Quantity};
pub use review_date::{DatePart, ReviewDateError, ReviewWindow};
pub use settings::WorkspaceSettings;
pub use vagueness::{Rule, Rules, Step};
