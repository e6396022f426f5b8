//! The rules of the review, decided once: what each command does to a pilot, as a pure function of the pilot as it
//! is when the turn is committed (with its evidence state and schedule), and `now`. The store writes the
//! [`Changes`] it is given and knows none of this.

use chrono::{DateTime, Utc};

use super::change::{AuditRecord, Change, Changes, Command, Decision, EvidenceRecord};
use super::pilot::abandoned_from;
use super::{DecisionKind, EvidenceKind, OwnerStatus, Pilot, PilotId, PnlTarget, Stage, UserId};

/// A P&L line as the audit trail and the evidence records write it.
pub fn pnl_text(p: &PnlTarget) -> String {
    serde_json::json!({"line": p.line, "unit": p.unit, "baseline": p.baseline, "target": p.target}).to_string()
}

/// The value a change writes, as the audit trail shows it.
pub fn audit_new_value(change: &Change) -> Option<String> {
    match change {
        Change::Name(n) => Some(n.as_str().to_owned()),
        Change::Workflow(t) => Some(t.clone()),
        Change::Owner(u) => Some(u.0.clone()),
        Change::Sponsor(u) => u.as_ref().map(|u| u.0.clone()),
        Change::Pnl(p) => Some(pnl_text(p)),
        Change::ReviewDate(d) => Some(d.to_string()),
    }
}

/// The value a change replaces, as the audit trail shows it.
fn audit_old_value(before: &Pilot, change: &Change) -> Option<String> {
    match change {
        Change::Name(_) => Some(before.name.clone()),
        Change::Workflow(_) => before.workflow.clone(),
        Change::Owner(_) => before.owner.as_ref().map(|u| u.0.clone()),
        Change::Sponsor(_) => before.sponsor.as_ref().map(|u| u.0.clone()),
        Change::Pnl(_) => before.pnl.as_ref().map(pnl_text),
        Change::ReviewDate(_) => before.review_date.map(|d| d.to_string()),
    }
}

/// A decision as the audit trail records it.
pub fn decision_audit(d: &Decision) -> String {
    match (d.kind, d.category, d.new_date) {
        (DecisionKind::Kill, Some(c), _) => format!("kill ({}): {}", c.as_str(), d.reason),
        (DecisionKind::Extend, _, Some(date)) => format!("extend to {date}: {}", d.reason),
        (DecisionKind::Scale, _, _) if d.override_evidence => format!("scale (override): {}", d.reason),
        _ => d.kind.as_str().to_owned(),
    }
}

/// An owner's answer as the audit trail records it.
pub fn owner_status_audit(status: OwnerStatus, reason: Option<&str>) -> String {
    match reason {
        Some(r) => format!("{}: {r}", status.as_str()),
        None => status.as_str().to_owned(),
    }
}

fn audit(action: &'static str, field: Option<&'static str>, old: Option<String>, new: Option<String>) -> AuditRecord {
    AuditRecord { action, field, old, new }
}

/// What `cmd` changes on `p`, decided on the pilot as it is now.
pub fn apply(p: &Pilot, cmd: &Command, now: DateTime<Utc>) -> Changes {
    let mut next = p.clone();
    let mut records = Vec::new();
    let mut evidence = Vec::new();
    match cmd {
        Command::Set(change) => {
            records.push(audit(
                "set",
                Some(change.step().as_str()),
                audit_old_value(p, change),
                audit_new_value(change),
            ));
            match change {
                Change::Name(n) => next.name = n.as_str().to_owned(),
                Change::Workflow(t) => next.workflow = Some(t.clone()),
                Change::Owner(u) => next.owner = Some(u.clone()),
                Change::Sponsor(u) => next.sponsor = u.clone(),
                Change::Pnl(t) => next.pnl = Some(t.clone()),
                Change::ReviewDate(d) => {
                    next.review_date = Some(*d);
                    // Before any extension, the review date in force is the first one.
                    if p.extensions == 0 {
                        next.next_review_date = Some(*d);
                    }
                }
            }
            next.updated_at = now;
        }
        Command::SetStage(stage) => {
            records.push(audit("stage", Some("stage"), Some(p.stage.as_str().into()), Some(stage.as_str().into())));
            next.stage = *stage;
            next.updated_at = now;
        }
        Command::AddEvidence(item) => {
            evidence.push(EvidenceRecord {
                kind: item.kind,
                note: item.note.clone(),
                value: item.value,
                period: item.period.clone(),
                source: item.source.clone(),
                proves: None,
            });
            match item.kind {
                EvidenceKind::WorkflowLive => next.evidence.workflow_live = true,
                EvidenceKind::OwnerRunning => next.evidence.owner_running = true,
                EvidenceKind::PnlMoved => next.evidence.pnl_realised = item.value,
            }
            records.push(audit("evidence", Some(item.kind.as_str()), None, Some(item.note.clone())));
            next.updated_at = now;
        }
        Command::Decide(d) => {
            records.push(audit("decision", Some("stage"), Some(p.stage.as_str().into()), Some(decision_audit(d))));
            next.decision = Some(d.kind);
            next.decision_reason = Some(d.reason.clone());
            match d.kind {
                DecisionKind::Scale => {
                    next.stage = Stage::InProduction;
                    next.scale_override = d.override_evidence;
                }
                DecisionKind::Extend => {
                    next.next_review_date = d.new_date;
                    next.extensions = p.extensions + 1;
                }
                DecisionKind::Kill => {
                    next.stage = Stage::Killed;
                    next.kill_category = d.category;
                }
            }
            next.updated_at = now;
        }
        Command::SetOwnerStatus { status, reason } => {
            if p.owner_status != *status || reason.is_some() {
                let new = owner_status_audit(*status, reason.as_deref());
                records.push(audit(
                    "owner_status",
                    Some("owner_status"),
                    Some(p.owner_status.as_str().into()),
                    Some(new),
                ));
                next.owner_status = *status;
                next.updated_at = now;
            }
        }
        Command::NudgeAnswered => next.schedule.unanswered = 0,
        Command::Snooze { until } => {
            next.schedule.snoozes = p.schedule.snoozes + 1;
            next.schedule.snoozed_until = Some(*until);
            records.push(audit("snooze", Some("snoozed_until"), None, Some(until.to_rfc3339())));
        }
    }
    Changes { pilot: next, audit: records, evidence, voided: Vec::new() }
}

/// The pilot that holds a name, as read when a turn claims that name.
#[derive(Debug, Clone, PartialEq)]
pub struct NameHolder {
    pub id: PilotId,
    pub name: String,
    pub stage: Stage,
    pub registered_by: UserId,
    pub version: i64,
    /// The registration's last answer: its pilot's or its conversation's, whichever is later.
    pub last_answer: DateTime<Utc>,
}

/// Whether a turn may take a name.
#[derive(Debug, Clone, PartialEq)]
pub enum NameClaim {
    Free,
    /// Held by a registration abandoned since [`super::pilot::DRAFT_ABANDONED_AFTER`]: it is removed first.
    Release(NameHolder),
    Taken(NameHolder),
}

/// Decides whether the name `holder` holds (if any) can be had by a turn on pilot `own`.
pub fn claim_name(holder: Option<NameHolder>, own: Option<PilotId>, now: DateTime<Utc>) -> NameClaim {
    match holder {
        None => NameClaim::Free,
        Some(h) if Some(h.id) == own => NameClaim::Free,
        Some(h) if h.stage == Stage::Draft && abandoned_from(h.last_answer) <= now => NameClaim::Release(h),
        Some(h) => NameClaim::Taken(h),
    }
}

/// The audit line of a registration removed because another took its name.
pub fn released_audit(holder: &NameHolder) -> AuditRecord {
    audit("abandoned", Some("name"), Some(holder.name.clone()), None)
}

/// The audit line of a new draft.
pub fn created_audit(name: &str) -> AuditRecord {
    audit("created", Some("name"), None, Some(name.to_owned()))
}

/// The audit line of a cancelled registration.
pub fn deleted_audit(name: &str) -> AuditRecord {
    audit("deleted", None, Some(name.to_owned()), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::pilot::sample;

    fn now() -> DateTime<Utc> {
        "2026-12-01T10:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_review_date_moves_the_date_in_force_only_before_any_extension() {
        let d = "2027-02-01".parse().unwrap();
        let p = sample("P", Stage::Scoped);
        let c = apply(&p, &Command::Set(Change::ReviewDate(d)), now());
        assert_eq!((c.pilot.review_date, c.pilot.next_review_date), (Some(d), Some(d)));
        assert_eq!(c.audit[0].old.as_deref(), Some("2027-01-06"));
        let extended = Pilot { extensions: 1, ..p };
        let c = apply(&extended, &Command::Set(Change::ReviewDate(d)), now());
        assert_eq!(c.pilot.next_review_date, extended.next_review_date);
    }

    #[test]
    fn an_unchanged_owner_status_without_a_reason_changes_nothing() {
        let p = sample("P", Stage::Scoped);
        let same = apply(&p, &Command::SetOwnerStatus { status: OwnerStatus::Pending, reason: None }, now());
        assert_eq!(same, Changes::none(&p));
        let declined =
            apply(&p, &Command::SetOwnerStatus { status: OwnerStatus::Declined, reason: Some("moving".into()) }, now());
        assert_eq!(declined.audit[0].new.as_deref(), Some("declined: moving"));
    }

    #[test]
    fn a_name_is_free_taken_or_released_from_an_abandoned_draft() {
        let holder = NameHolder {
            id: PilotId(7),
            name: "Claims".into(),
            stage: Stage::Draft,
            registered_by: UserId::new("bob"),
            version: 3,
            last_answer: now() - chrono::Duration::days(7),
        };
        assert_eq!(claim_name(None, None, now()), NameClaim::Free);
        assert_eq!(claim_name(Some(holder.clone()), Some(PilotId(7)), now()), NameClaim::Free);
        assert!(matches!(claim_name(Some(holder.clone()), None, now()), NameClaim::Release(_)));
        let recent = NameHolder { last_answer: now() - chrono::Duration::days(6), ..holder.clone() };
        assert!(matches!(claim_name(Some(recent), None, now()), NameClaim::Taken(_)));
        let scoped = NameHolder { stage: Stage::Scoped, ..holder };
        assert!(matches!(claim_name(Some(scoped), None, now()), NameClaim::Taken(_)));
    }
}
