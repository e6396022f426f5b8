//! Rows as stored, and their translation to and from domain values.

use chrono::{DateTime, NaiveDate, Utc};

use super::StoreError;
use crate::dialogue::{Ask, AskKind, Scratch};
use crate::dialogue::{At, Conversation, Flow};
use crate::domain::{
    ChannelId, DecisionKind, EvidenceState, KillCategory, OwnerStatus, Pilot, PilotId, PnlTarget, ScheduleState, Stage,
    UserId, WorkspaceId,
};

/// The columns of a [`PilotRow`].
pub const PILOT_COLUMNS: &str = "id, workspace, name, stage, registered_by, registered_at, home_channel, workflow, owner, \
     sponsor, pnl_line, pnl_unit, pnl_baseline, pnl_target, review_date, owner_status, next_review_date, decision, \
     decision_reason, owner_decline_reason, kill_category, scale_override, evidence_due, extensions, evidence_workflow_live, evidence_owner_running, \
     pnl_realised, nudges_sent, cycle, heads_up_sent, cycle_nudges, unanswered, last_nudge_at, escalated, posted, \
     snoozes, snoozed_until, next_action_at, updated_at, version";

/// A pilot's row as read.
#[derive(sqlx::FromRow)]
pub struct PilotRow {
    id: i64,
    workspace: String,
    name: String,
    stage: String,
    registered_by: String,
    registered_at: DateTime<Utc>,
    home_channel: String,
    workflow: Option<String>,
    owner: Option<String>,
    sponsor: Option<String>,
    pnl_line: Option<String>,
    pnl_unit: Option<String>,
    pnl_baseline: Option<f64>,
    pnl_target: Option<f64>,
    review_date: Option<NaiveDate>,
    owner_status: String,
    next_review_date: Option<NaiveDate>,
    decision: Option<String>,
    decision_reason: Option<String>,
    owner_decline_reason: Option<String>,
    kill_category: Option<String>,
    scale_override: bool,
    evidence_due: Option<NaiveDate>,
    extensions: i32,
    evidence_workflow_live: bool,
    evidence_owner_running: bool,
    pnl_realised: Option<f64>,
    nudges_sent: i32,
    #[sqlx(flatten)]
    schedule: ScheduleRow,
    next_action_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    version: i64,
}

impl PilotRow {
    pub fn into_domain(self) -> Result<Pilot, StoreError> {
        let corrupt = |what: &str, value: &str| StoreError::Corrupt(format!("pilot {}: {what} {value}", self.id));
        let stage = Stage::parse(&self.stage).ok_or_else(|| corrupt("stage", &self.stage))?;
        let owner_status =
            OwnerStatus::parse(&self.owner_status).ok_or_else(|| corrupt("owner_status", &self.owner_status))?;
        let decision = match &self.decision {
            Some(d) => Some(DecisionKind::parse(d).ok_or_else(|| corrupt("decision", d))?),
            None => None,
        };
        let kill_category = match &self.kill_category {
            Some(k) => Some(KillCategory::parse(k).ok_or_else(|| corrupt("kill_category", k))?),
            None => None,
        };
        let pnl = match (self.pnl_line, self.pnl_unit, self.pnl_baseline, self.pnl_target) {
            (Some(line), Some(unit), Some(baseline), Some(target)) => Some(PnlTarget { line, unit, baseline, target }),
            _ => None,
        };
        Ok(Pilot {
            id: PilotId(self.id),
            workspace: WorkspaceId(self.workspace),
            name: self.name,
            stage,
            registered_by: UserId(self.registered_by),
            registered_at: self.registered_at,
            home_channel: ChannelId(self.home_channel),
            workflow: self.workflow,
            owner: self.owner.map(UserId),
            sponsor: self.sponsor.map(UserId),
            pnl,
            review_date: self.review_date,
            owner_status,
            next_review_date: self.next_review_date,
            decision,
            decision_reason: self.decision_reason,
            owner_decline_reason: self.owner_decline_reason,
            kill_category,
            scale_override: self.scale_override,
            evidence_due: self.evidence_due,
            extensions: u32::try_from(self.extensions).unwrap_or(0),
            evidence: EvidenceState {
                workflow_live: self.evidence_workflow_live,
                owner_running: self.evidence_owner_running,
                pnl_realised: self.pnl_realised,
            },
            nudges_sent: u32::try_from(self.nudges_sent).unwrap_or(0),
            schedule: self.schedule.into_domain(),
            next_action_at: self.next_action_at,
            updated_at: self.updated_at,
            version: self.version,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct ConversationRow {
    flow: String,
    at: String,
    pilot_id: Option<i64>,
    channel: String,
    return_to_confirm: bool,
    scratch: String,
}

impl ConversationRow {
    pub fn into_domain(self) -> Result<Conversation, StoreError> {
        let flow =
            Flow::parse(&self.flow).ok_or_else(|| StoreError::Corrupt(format!("conversation flow {}", self.flow)))?;
        let scratch: Scratch = serde_json::from_str(&self.scratch)
            .map_err(|e| StoreError::Corrupt(format!("conversation scratch: {e}")))?;
        let at = At::parse(&self.at).ok_or_else(|| StoreError::Corrupt(format!("conversation step {}", self.at)))?;
        Ok(Conversation {
            flow,
            at,
            pilot: self.pilot_id.map(PilotId),
            channel: ChannelId(self.channel),
            return_to_confirm: self.return_to_confirm,
            scratch,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct AskRow {
    id: i64,
    user_id: String,
    pilot_id: i64,
    payload: String,
}

impl AskRow {
    pub fn into_domain(self) -> Result<Ask, StoreError> {
        let kind: AskKind =
            serde_json::from_str(&self.payload).map_err(|e| StoreError::Corrupt(format!("ask {}: {e}", self.id)))?;
        Ok(Ask { id: self.id, user: UserId(self.user_id), pilot: PilotId(self.pilot_id), kind })
    }
}

/// One line of the audit trail.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AuditEntry {
    pub pilot_id: Option<i64>,
    pub actor: String,
    pub action: String,
    pub field: Option<String>,
    pub old_value: Option<String>,
    pub new_value: Option<String>,
    pub at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
pub struct ScheduleRow {
    cycle: Option<NaiveDate>,
    heads_up_sent: bool,
    cycle_nudges: i32,
    unanswered: i32,
    last_nudge_at: Option<DateTime<Utc>>,
    escalated: bool,
    posted: bool,
    snoozes: i32,
    snoozed_until: Option<DateTime<Utc>>,
}

impl ScheduleRow {
    pub fn into_domain(self) -> ScheduleState {
        let n = |v: i32| u32::try_from(v).unwrap_or(0);
        ScheduleState {
            cycle: self.cycle,
            heads_up_sent: self.heads_up_sent,
            cycle_nudges: n(self.cycle_nudges),
            unanswered: n(self.unanswered),
            last_nudge_at: self.last_nudge_at,
            escalated: self.escalated,
            posted: self.posted,
            snoozes: n(self.snoozes),
            snoozed_until: self.snoozed_until,
        }
    }
}
