//! The rules of the review, decided once: what each command does to a pilot, as a pure function of the pilot as it
//! is when the turn is committed (with its evidence state and schedule), and `now`. The store writes the
//! [`Changes`] it is given and knows none of this.

use chrono::{DateTime, Utc};

use super::change::{AuditRecord, Change, Changes, Command, Decision, EvidenceRecord};
use super::pilot::abandoned_from;
use super::{
    DecisionKind, EvidenceKind, OwnerStatus, Pilot, PilotId, PnlTarget, Stage, Step, UserId, WorkspaceSettings,
};

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

/// Who acts: a user, and whether their platform counts them as an admin (Discord's Manage Server, the console's
/// `console.admins`). A workspace's admins are those platform admins and the ones its `admins` setting names.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub user: &'a UserId,
    pub platform_admin: bool,
}

impl Actor<'_> {
    pub fn is_admin(&self, settings: &WorkspaceSettings) -> bool {
        self.platform_admin || settings.is_admin(self.user)
    }
}

/// Why a command is refused, as decided on the pilot when the change is committed. Nothing is written.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// Only the registrant, the owner, the sponsor or an admin change a scoped pilot's answers.
    NotAllowedToEdit,
    /// Once a pilot is scoped, only its sponsor or an admin changes who the sponsor is.
    SponsorChange,
    /// The sponsor and the owner are two people.
    SponsorIsOwner,
    /// Only the owner records that the owner runs it, or answers for the ownership.
    OnlyOwner,
    /// An owner who has not accepted ownership is not the owner yet.
    OwnerNotAccepted,
    /// Only the registrant, the owner, the sponsor or an admin record evidence.
    EvidenceNotAllowed,
    /// Evidence and decisions need a scoped pilot (or one in production, for evidence).
    NotOpen(Stage),
    /// A decision is final.
    AlreadyDecided(Stage),
    /// The workspace's `deciders` (these roles) do not include this user.
    NotDecider { deciders: Vec<String> },
    /// A pilot is scoped only with a sponsor, unless the workspace's `sponsor_required` is off.
    SponsorRequired,
    /// Scaling as Proof of Production needs 3/3 evidence on record when it is committed.
    NotProven,
}

impl Refusal {
    /// A stable name for the refusal (operators count refusals by it).
    pub fn name(&self) -> &'static str {
        match self {
            Refusal::NotAllowedToEdit => "not_allowed_to_edit",
            Refusal::SponsorChange => "sponsor_change",
            Refusal::SponsorIsOwner => "sponsor_is_owner",
            Refusal::OnlyOwner => "only_owner",
            Refusal::OwnerNotAccepted => "owner_not_accepted",
            Refusal::EvidenceNotAllowed => "evidence_not_allowed",
            Refusal::NotOpen(_) => "not_open",
            Refusal::AlreadyDecided(_) => "already_decided",
            Refusal::NotDecider { .. } => "not_decider",
            Refusal::SponsorRequired => "sponsor_required",
            Refusal::NotProven => "not_proven",
        }
    }

    /// Whether the question the user was answering can no longer be answered by them (it is closed), rather than
    /// being asked again.
    pub fn ends_conversation(&self) -> bool {
        !matches!(self, Refusal::SponsorIsOwner | Refusal::SponsorRequired)
    }
}

/// The registrant, the owner and the sponsor are accountable for a pilot; admins may act on any.
fn accountable(p: &Pilot, actor: &Actor, settings: &WorkspaceSettings) -> bool {
    p.may_edit(actor.user) || actor.is_admin(settings)
}

/// Whether `actor` may change a scoped pilot's answers (during registration, only its registrant talks to it).
pub fn check_edit(p: &Pilot, actor: &Actor, settings: &WorkspaceSettings) -> Result<(), Refusal> {
    match p.stage {
        Stage::Draft if &p.registered_by == actor.user => Ok(()),
        _ if p.stage != Stage::Draft && accountable(p, actor, settings) => Ok(()),
        _ => Err(Refusal::NotAllowedToEdit),
    }
}

/// Whether `actor` may name the sponsor of `p` (`new`, once known). During registration the registrant names
/// one; once a pilot is scoped, only its sponsor or an admin changes who decides, or, while it has none, an
/// accountable person names someone other than themself.
pub fn check_sponsor_change(
    p: &Pilot,
    actor: &Actor,
    settings: &WorkspaceSettings,
    new: Option<Option<&UserId>>,
) -> Result<(), Refusal> {
    if p.stage == Stage::Draft || actor.is_admin(settings) || p.sponsor.as_ref() == Some(actor.user) {
        return Ok(());
    }
    match (&p.sponsor, new) {
        (None, None) => Ok(()),
        (None, Some(Some(u))) if u != actor.user => Ok(()),
        _ => Err(Refusal::SponsorChange),
    }
}

/// Whether `actor` may record evidence on `p` (of `kind`, when it is known yet).
pub fn check_evidence(
    p: &Pilot,
    actor: &Actor,
    settings: &WorkspaceSettings,
    kind: Option<EvidenceKind>,
) -> Result<(), Refusal> {
    if !matches!(p.stage, Stage::Scoped | Stage::InProduction) {
        return Err(Refusal::NotOpen(p.stage));
    }
    if kind == Some(EvidenceKind::OwnerRunning) {
        if p.owner.as_ref() != Some(actor.user) {
            return Err(Refusal::OnlyOwner);
        }
        if p.owner_status != OwnerStatus::Accepted {
            return Err(Refusal::OwnerNotAccepted);
        }
    }
    if !accountable(p, actor, settings) {
        return Err(Refusal::EvidenceNotAllowed);
    }
    Ok(())
}

/// Whether a pilot went into production by override and still owes the evidence: it may be decided again, by a
/// kill.
pub fn on_credit(p: &Pilot) -> bool {
    p.stage == Stage::InProduction && p.evidence_due.is_some()
}

/// Whether `actor` may decide `kind` on `p` at a review, by the roles the workspace's `deciders` names. A decision is
/// final, but for a pilot in production on credit, which may still be killed.
pub fn check_decide(p: &Pilot, kind: DecisionKind, actor: &Actor, settings: &WorkspaceSettings) -> Result<(), Refusal> {
    match p.stage {
        Stage::InProduction if kind == DecisionKind::Kill && on_credit(p) => {}
        Stage::InProduction | Stage::Killed => return Err(Refusal::AlreadyDecided(p.stage)),
        Stage::Draft => return Err(Refusal::NotOpen(p.stage)),
        Stage::Scoped => {}
    }
    let decides = settings.deciders.iter().any(|role| match role.as_str() {
        "sponsor" => p.sponsor.as_ref() == Some(actor.user),
        "registrant" => &p.registered_by == actor.user,
        "owner" => p.owner.as_ref() == Some(actor.user),
        "admins" => actor.is_admin(settings),
        _ => false,
    });
    if decides { Ok(()) } else { Err(Refusal::NotDecider { deciders: settings.deciders.clone() }) }
}

/// Who confirms an extension beyond the limit, or one the owner asked for: the sponsor, or without one the
/// registrant.
pub fn extension_approver(p: &Pilot) -> &UserId {
    p.sponsor.as_ref().unwrap_or(&p.registered_by)
}

/// The first answer a registration still needs before it can be confirmed: the three scoping answers, the review
/// date, and the sponsor unless the workspace's `sponsor_required` is off.
pub fn first_missing(p: &Pilot, settings: &WorkspaceSettings) -> Option<Step> {
    if p.workflow.is_none() {
        Some(Step::Workflow)
    } else if p.owner.is_none() {
        Some(Step::Owner)
    } else if p.pnl.is_none() {
        Some(Step::Pnl)
    } else if p.sponsor.is_none() && settings.sponsor_required {
        Some(Step::Sponsor)
    } else if p.review_date.is_none() {
        Some(Step::ReviewDate)
    } else {
        None
    }
}

/// Whether a changed P&L answer is another line (its name, case and spacing aside, or its unit): a measurement of
/// the old line proves nothing about the new one. A new baseline or target keeps the line.
fn another_line(old: Option<&PnlTarget>, new: &PnlTarget) -> bool {
    old.is_none_or(|o| {
        crate::domain::pilot::name_key(&o.line) != crate::domain::pilot::name_key(&new.line) || o.unit != new.unit
    })
}

/// What `cmd` by `actor` changes on `p`, decided on the pilot as it is when the change is committed, or why not.
pub fn apply(
    p: &Pilot,
    cmd: &Command,
    actor: &Actor,
    settings: &WorkspaceSettings,
    now: DateTime<Utc>,
) -> Result<Changes, Refusal> {
    let mut next = p.clone();
    let mut records = Vec::new();
    let mut evidence = Vec::new();
    let mut voided = Vec::new();
    match cmd {
        Command::Set(change) => {
            check_edit(p, actor, settings)?;
            records.push(audit(
                "set",
                Some(change.step().as_str()),
                audit_old_value(p, change),
                audit_new_value(change),
            ));
            match change {
                Change::Name(n) => next.name = n.as_str().to_owned(),
                Change::Workflow(t) => {
                    if p.workflow.as_ref() != Some(t) {
                        voided.push(EvidenceKind::WorkflowLive);
                    }
                    next.workflow = Some(t.clone());
                }
                Change::Owner(u) => {
                    if p.sponsor.as_ref() == Some(u) {
                        return Err(Refusal::SponsorIsOwner);
                    }
                    if p.owner.as_ref() != Some(u) {
                        // Ownership is a handshake: a new owner has accepted nothing yet.
                        voided.push(EvidenceKind::OwnerRunning);
                        next.owner_status = OwnerStatus::Pending;
                    }
                    next.owner = Some(u.clone());
                }
                Change::Sponsor(u) => {
                    if u.is_some() && u.as_ref() == p.owner.as_ref() {
                        return Err(Refusal::SponsorIsOwner);
                    }
                    // Once scoped, who decides is not for the registrant or the owner to pick for themselves.
                    if p.sponsor.as_ref() != u.as_ref() {
                        check_sponsor_change(p, actor, settings, Some(u.as_ref()))?;
                    }
                    if u.is_none() && p.stage != Stage::Draft && settings.sponsor_required {
                        return Err(Refusal::SponsorRequired);
                    }
                    next.sponsor = u.clone();
                }
                Change::Pnl(t) => {
                    if another_line(p.pnl.as_ref(), t) {
                        voided.push(EvidenceKind::PnlMoved);
                    }
                    next.pnl = Some(t.clone());
                }
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
            if *stage == Stage::Scoped && p.sponsor.is_none() && settings.sponsor_required {
                return Err(Refusal::SponsorRequired);
            }
            records.push(audit("stage", Some("stage"), Some(p.stage.as_str().into()), Some(stage.as_str().into())));
            next.stage = *stage;
            next.updated_at = now;
        }
        Command::AddEvidence(item) => {
            check_evidence(p, actor, settings, Some(item.kind))?;
            let proves = match item.kind {
                EvidenceKind::WorkflowLive => p.workflow.clone(),
                EvidenceKind::OwnerRunning => p.owner.as_ref().map(|u| u.as_str().to_owned()),
                EvidenceKind::PnlMoved => p.pnl.as_ref().map(pnl_text),
            };
            // A later record of the same kind supersedes the earlier ones.
            voided.push(item.kind);
            evidence.push(EvidenceRecord {
                kind: item.kind,
                note: item.note.clone(),
                value: item.value,
                period: item.period.clone(),
                source: item.source.clone(),
                proves,
            });
            match item.kind {
                EvidenceKind::WorkflowLive => next.evidence.workflow_live = true,
                EvidenceKind::OwnerRunning => next.evidence.owner_running = true,
                EvidenceKind::PnlMoved => next.evidence.pnl_realised = item.value,
            }
            // The evidence an override owed is paid once 3/3 is on record.
            if next.evidence_count() == 3 {
                next.evidence_due = None;
            }
            records.push(audit("evidence", Some(item.kind.as_str()), None, Some(item.note.clone())));
            next.updated_at = now;
        }
        Command::Decide(d) => {
            let approves = d.kind == DecisionKind::Extend && extension_approver(p) == actor.user;
            match check_decide(p, d.kind, actor, settings) {
                Err(Refusal::NotDecider { .. }) if approves => {}
                other => other?,
            }
            if d.kind == DecisionKind::Scale && !d.override_evidence && p.evidence_count() < 3 {
                return Err(Refusal::NotProven);
            }
            let d = Decision { override_evidence: d.override_evidence && p.evidence_count() < 3, ..d.clone() };
            records.push(audit("decision", Some("stage"), Some(p.stage.as_str().into()), Some(decision_audit(&d))));
            next.decision = Some(d.kind);
            next.decision_reason = Some(d.reason.clone());
            match d.kind {
                DecisionKind::Scale => {
                    next.stage = Stage::InProduction;
                    next.scale_override = d.override_evidence;
                    // An override is a debt: the missing evidence is due by then.
                    next.evidence_due = d.override_evidence.then_some(d.new_date).flatten();
                }
                DecisionKind::Extend => {
                    next.next_review_date = d.new_date;
                    next.extensions = p.extensions + 1;
                }
                DecisionKind::Kill => {
                    next.stage = Stage::Killed;
                    next.kill_category = d.category;
                    next.evidence_due = None;
                }
            }
            next.updated_at = now;
        }
        Command::SetOwnerStatus { status, reason } => {
            let changes = p.owner_status != *status || reason.is_some();
            if changes && *status != OwnerStatus::Pending && p.owner.as_ref() != Some(actor.user) {
                return Err(Refusal::OnlyOwner);
            }
            if changes {
                let new = owner_status_audit(*status, reason.as_deref());
                records.push(audit(
                    "owner_status",
                    Some("owner_status"),
                    Some(p.owner_status.as_str().into()),
                    Some(new),
                ));
                next.owner_status = *status;
                next.owner_decline_reason = match status {
                    OwnerStatus::Declined => reason.clone().filter(|r| !r.trim().is_empty()),
                    _ => None,
                };
                next.updated_at = now;
                if *status != OwnerStatus::Accepted {
                    voided.push(EvidenceKind::OwnerRunning);
                }
            }
        }
        Command::NudgeAnswered => next.schedule.unanswered = 0,
        Command::Snooze { until } => {
            next.schedule.snoozes = p.schedule.snoozes + 1;
            next.schedule.snoozed_until = Some(*until);
            records.push(audit("snooze", Some("snoozed_until"), None, Some(until.to_rfc3339())));
        }
    }
    // What a changed answer voids stops counting (an evidence record supersedes its kind's earlier ones).
    let recorded: Vec<EvidenceKind> = evidence.iter().map(|e: &EvidenceRecord| e.kind).collect();
    for kind in &voided {
        if recorded.contains(kind) {
            continue;
        }
        match kind {
            EvidenceKind::WorkflowLive => next.evidence.workflow_live = false,
            EvidenceKind::OwnerRunning => next.evidence.owner_running = false,
            EvidenceKind::PnlMoved => next.evidence.pnl_realised = None,
        }
    }
    Ok(Changes { pilot: next, audit: records, evidence, voided })
}

/// The kinds of evidence a change took away from what counted (the owner is told to record them again).
pub fn lost_evidence(before: &Pilot, after: &Pilot) -> Vec<EvidenceKind> {
    EvidenceKind::ALL.into_iter().filter(|k| before.has_evidence(*k) && !after.has_evidence(*k)).collect()
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
    use crate::domain::change::{Decision, EvidenceItem};
    use crate::domain::pilot::sample;
    use crate::domain::{EvidenceState, KillCategory};

    fn now() -> DateTime<Utc> {
        "2026-12-01T10:00:00Z".parse().unwrap()
    }

    fn user(name: &str) -> UserId {
        UserId::new(name)
    }

    /// `who` acting, as a platform admin or not.
    fn run(p: &Pilot, cmd: Command, who: &str, settings: &WorkspaceSettings) -> Result<Changes, Refusal> {
        let u = user(who);
        apply(p, &cmd, &Actor { user: &u, platform_admin: false }, settings, now())
    }

    fn ok(p: &Pilot, cmd: Command, who: &str) -> Pilot {
        run(p, cmd, who, &WorkspaceSettings::default()).unwrap().pilot
    }

    /// A scoped pilot owned (accepted) by @alice, sponsored by @carol, registered by @bob, with 3/3 evidence.
    fn proven() -> Pilot {
        Pilot {
            sponsor: Some(user("carol")),
            owner_status: OwnerStatus::Accepted,
            evidence: EvidenceState { workflow_live: true, owner_running: true, pnl_realised: Some(90.0) },
            ..sample("P", Stage::Scoped)
        }
    }

    fn evidence(kind: EvidenceKind, value: Option<f64>) -> Command {
        Command::AddEvidence(EvidenceItem { kind, note: "note".into(), value, period: None, source: None })
    }

    fn decision(kind: DecisionKind, override_evidence: bool) -> Command {
        let category = (kind == DecisionKind::Kill).then_some(KillCategory::NotWorthScaling);
        let new_date = Some("2027-02-01".parse().unwrap());
        Command::Decide(Decision { kind, reason: "r".into(), category, new_date, override_evidence })
    }

    #[test]
    fn a_review_date_moves_the_date_in_force_only_before_any_extension() {
        let d = "2027-02-01".parse().unwrap();
        let p = proven();
        let c = run(&p, Command::Set(Change::ReviewDate(d)), "bob", &WorkspaceSettings::default()).unwrap();
        assert_eq!((c.pilot.review_date, c.pilot.next_review_date), (Some(d), Some(d)));
        assert_eq!(c.audit[0].old.as_deref(), Some("2027-01-06"));
        let extended = Pilot { extensions: 1, ..p };
        assert_eq!(
            ok(&extended, Command::Set(Change::ReviewDate(d)), "bob").next_review_date,
            extended.next_review_date
        );
    }

    #[test]
    fn a_new_owner_starts_pending_and_the_old_owners_evidence_stops_counting() {
        let p = proven();
        let c = run(&p, Command::Set(Change::Owner(user("erin"))), "bob", &WorkspaceSettings::default()).unwrap();
        assert_eq!((c.pilot.owner_status, c.pilot.evidence.owner_running), (OwnerStatus::Pending, false));
        assert_eq!(c.voided, vec![EvidenceKind::OwnerRunning]);
        assert_eq!(c.pilot.evidence_count(), 2);
        assert_eq!(lost_evidence(&p, &c.pilot), vec![EvidenceKind::OwnerRunning]);
        // Putting the real owner back does not bring the evidence back: it was recorded for someone else.
        let back = ok(&c.pilot, Command::Set(Change::Owner(user("alice"))), "bob");
        assert!(!back.evidence.owner_running);
        // The same owner named again changes nothing.
        let same = run(&p, Command::Set(Change::Owner(user("alice"))), "bob", &WorkspaceSettings::default()).unwrap();
        assert!(same.pilot.evidence.owner_running && same.voided.is_empty());
    }

    #[test]
    fn only_the_accepted_owner_records_that_the_owner_runs_it_checked_when_saved() {
        let s = WorkspaceSettings::default();
        let fresh = Pilot { evidence: EvidenceState::default(), ..proven() };
        assert_eq!(run(&fresh, evidence(EvidenceKind::OwnerRunning, None), "bob", &s), Err(Refusal::OnlyOwner));
        let pending = Pilot { owner_status: OwnerStatus::Pending, ..fresh.clone() };
        let r = run(&pending, evidence(EvidenceKind::OwnerRunning, None), "alice", &s);
        assert_eq!(r, Err(Refusal::OwnerNotAccepted));
        let declined = Pilot { owner_status: OwnerStatus::Declined, ..fresh.clone() };
        let r = run(&declined, evidence(EvidenceKind::OwnerRunning, None), "alice", &s);
        assert_eq!(r, Err(Refusal::OwnerNotAccepted));
        let c = run(&fresh, evidence(EvidenceKind::OwnerRunning, None), "alice", &s).unwrap();
        assert!(c.pilot.evidence.owner_running);
        assert_eq!(c.evidence[0].proves.as_deref(), Some("alice"));
        // Picked as owner, saved after the owner changed: refused then.
        let changed = ok(&fresh, Command::Set(Change::Owner(user("erin"))), "bob");
        assert_eq!(run(&changed, evidence(EvidenceKind::OwnerRunning, None), "alice", &s), Err(Refusal::OnlyOwner));
    }

    #[test]
    fn a_declined_owner_is_no_owner_and_their_evidence_stops_counting() {
        let p = proven();
        let declined = Command::SetOwnerStatus { status: OwnerStatus::Declined, reason: Some("moving".into()) };
        let c = run(&p, declined.clone(), "alice", &WorkspaceSettings::default()).unwrap();
        assert_eq!((c.pilot.owner_status, c.pilot.evidence.owner_running), (OwnerStatus::Declined, false));
        assert_eq!(c.audit[0].new.as_deref(), Some("declined: moving"));
        assert_eq!(run(&p, declined, "bob", &WorkspaceSettings::default()), Err(Refusal::OnlyOwner));
        let same = Command::SetOwnerStatus { status: OwnerStatus::Accepted, reason: None };
        assert_eq!(run(&p, same, "alice", &WorkspaceSettings::default()).unwrap(), Changes::none(&p));
    }

    #[test]
    fn a_measurement_counts_only_for_the_line_and_unit_it_measured() {
        let p = proven();
        let upsell = PnlTarget { line: "Upsell revenue".into(), unit: "GBP".into(), baseline: 1e6, target: 2e6 };
        let c = run(&p, Command::Set(Change::Pnl(upsell)), "bob", &WorkspaceSettings::default()).unwrap();
        assert_eq!((c.pilot.evidence.pnl_realised, c.voided.clone()), (None, vec![EvidenceKind::PnlMoved]));
        // A new target for the same line (case and spacing aside) keeps the measurement, judged against it.
        let retarget = PnlTarget { line: "claims  COST".into(), unit: "GBP".into(), baseline: 100.0, target: 95.0 };
        let c = run(&p, Command::Set(Change::Pnl(retarget)), "bob", &WorkspaceSettings::default()).unwrap();
        assert_eq!((c.pilot.evidence.pnl_realised, c.voided.is_empty()), (Some(90.0), true));
        let dollars = PnlTarget { line: "Claims cost".into(), unit: "USD".into(), baseline: 100.0, target: 80.0 };
        assert!(ok(&p, Command::Set(Change::Pnl(dollars)), "bob").evidence.pnl_realised.is_none());
        let c = run(&p, evidence(EvidenceKind::PnlMoved, Some(85.0)), "bob", &WorkspaceSettings::default()).unwrap();
        assert_eq!(c.evidence[0].proves, p.pnl.as_ref().map(pnl_text));
    }

    #[test]
    fn a_changed_workflow_voids_its_live_evidence() {
        let p = proven();
        let c =
            run(&p, Command::Set(Change::Workflow("another".into())), "bob", &WorkspaceSettings::default()).unwrap();
        assert!(!c.pilot.evidence.workflow_live);
        assert_eq!(c.voided, vec![EvidenceKind::WorkflowLive]);
    }

    #[test]
    fn the_sponsor_and_the_owner_are_two_people() {
        let s = WorkspaceSettings::default();
        let p = proven();
        assert_eq!(
            run(&p, Command::Set(Change::Sponsor(Some(user("alice")))), "carol", &s),
            Err(Refusal::SponsorIsOwner)
        );
        assert_eq!(run(&p, Command::Set(Change::Owner(user("carol"))), "bob", &s), Err(Refusal::SponsorIsOwner));
    }

    #[test]
    fn once_scoped_only_the_sponsor_or_an_admin_changes_the_sponsor() {
        let s = WorkspaceSettings { admins: vec![user("dana")], ..WorkspaceSettings::default() };
        let p = proven();
        let to = |who: &str| Command::Set(Change::Sponsor(Some(user(who))));
        assert_eq!(run(&p, to("bob"), "bob", &s), Err(Refusal::SponsorChange), "the registrant names themself");
        assert_eq!(run(&p, to("frank"), "bob", &s), Err(Refusal::SponsorChange), "the registrant names another");
        assert_eq!(run(&p, to("frank"), "alice", &s), Err(Refusal::SponsorChange), "the owner");
        assert_eq!(ok(&p, to("frank"), "carol").sponsor, Some(user("frank")), "the sponsor hands over");
        assert!(run(&p, to("frank"), "dana", &s).is_ok(), "a workspace admin");
        let platform = Actor { user: &user("zed"), platform_admin: true };
        assert!(apply(&p, &to("frank"), &platform, &s, now()).is_ok(), "a platform admin");
        // Without a sponsor, the accountable may name one, but not themselves.
        let none = Pilot { sponsor: None, ..p.clone() };
        assert!(run(&none, to("frank"), "bob", &s).is_ok());
        assert_eq!(run(&none, to("bob"), "bob", &s), Err(Refusal::SponsorChange));
        // During registration the registrant names anyone.
        let draft = Pilot { stage: Stage::Draft, sponsor: None, ..p };
        assert!(run(&draft, to("bob"), "bob", &s).is_ok());
    }

    #[test]
    fn a_pilot_is_scoped_only_with_a_sponsor_unless_the_workspace_says_otherwise() {
        let draft = Pilot { stage: Stage::Draft, sponsor: None, ..sample("P", Stage::Draft) };
        let s = WorkspaceSettings::default();
        assert_eq!(first_missing(&draft, &s), Some(Step::Sponsor));
        assert_eq!(run(&draft, Command::SetStage(Stage::Scoped), "bob", &s), Err(Refusal::SponsorRequired));
        let optional = WorkspaceSettings { sponsor_required: false, ..s };
        assert_eq!(first_missing(&draft, &optional), None);
        assert_eq!(run(&draft, Command::SetStage(Stage::Scoped), "bob", &optional).unwrap().pilot.stage, Stage::Scoped);
    }

    #[test]
    fn decisions_are_checked_against_the_deciders_and_the_pilot_when_committed() {
        let p = proven();
        let mut s = WorkspaceSettings { admins: vec![user("dana")], ..WorkspaceSettings::default() };
        assert!(run(&p, decision(DecisionKind::Kill, false), "bob", &s).is_ok(), "the registrant, by default");
        s.set("deciders", "sponsor").unwrap();
        assert!(matches!(run(&p, decision(DecisionKind::Kill, false), "bob", &s), Err(Refusal::NotDecider { .. })));
        assert!(run(&p, decision(DecisionKind::Kill, false), "carol", &s).is_ok());
        // Admins are one notion: named in the settings, or admins of the platform.
        s.set("deciders", "admins").unwrap();
        assert!(run(&p, decision(DecisionKind::Kill, false), "dana", &s).is_ok());
        let platform = Actor { user: &user("zed"), platform_admin: true };
        assert!(apply(&p, &decision(DecisionKind::Kill, false), &platform, &s, now()).is_ok());
        // An extension's approver approves even where they are not a decider.
        assert!(run(&p, decision(DecisionKind::Extend, false), "carol", &s).is_ok());
        // A pilot in production on credit may still be killed, and nothing else.
        let credit =
            run(&p, decision(DecisionKind::Scale, true), "carol", &WorkspaceSettings::default()).unwrap().pilot;
        let credit =
            Pilot { evidence: EvidenceState::default(), evidence_due: Some("2027-02-01".parse().unwrap()), ..credit };
        let r = run(&credit, decision(DecisionKind::Extend, false), "carol", &WorkspaceSettings::default());
        assert_eq!(r, Err(Refusal::AlreadyDecided(Stage::InProduction)));
        let killed = ok(&credit, decision(DecisionKind::Kill, false), "carol");
        assert_eq!((killed.stage, killed.evidence_due), (Stage::Killed, None));
        let killed = ok(&p, decision(DecisionKind::Kill, false), "carol");
        let r = run(&killed, decision(DecisionKind::Scale, false), "carol", &WorkspaceSettings::default());
        assert_eq!(r, Err(Refusal::AlreadyDecided(Stage::Killed)));
    }

    #[test]
    fn scaling_needs_the_evidence_on_record_when_committed_and_an_override_is_a_debt() {
        let s = WorkspaceSettings::default();
        let lost = Pilot { evidence: EvidenceState { owner_running: false, ..proven().evidence }, ..proven() };
        assert_eq!(run(&lost, decision(DecisionKind::Scale, false), "carol", &s), Err(Refusal::NotProven));
        let scaled = run(&lost, decision(DecisionKind::Scale, true), "carol", &s).unwrap().pilot;
        assert_eq!((scaled.stage, scaled.scale_override), (Stage::InProduction, true));
        assert_eq!(scaled.evidence_due, Some("2027-02-01".parse().unwrap()));
        // An override with 3/3 evidence on record by then is no override.
        let proven_scaled = run(&proven(), decision(DecisionKind::Scale, true), "carol", &s).unwrap().pilot;
        assert_eq!((proven_scaled.scale_override, proven_scaled.evidence_due), (false, None));
    }

    #[test]
    fn only_the_accountable_record_evidence_or_edit() {
        let s = WorkspaceSettings { admins: vec![user("dana")], ..WorkspaceSettings::default() };
        let p = proven();
        let live = evidence(EvidenceKind::WorkflowLive, None);
        assert_eq!(run(&p, live.clone(), "mallory", &s), Err(Refusal::EvidenceNotAllowed));
        assert!(run(&p, live.clone(), "dana", &s).is_ok());
        let draft = Pilot { stage: Stage::Draft, ..p.clone() };
        assert_eq!(run(&draft, live, "bob", &s), Err(Refusal::NotOpen(Stage::Draft)));
        let edit = Command::Set(Change::Workflow("x y z".into()));
        assert_eq!(run(&p, edit.clone(), "mallory", &s), Err(Refusal::NotAllowedToEdit));
        assert!(run(&p, edit, "dana", &s).is_ok());
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
