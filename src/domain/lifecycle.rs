//! The review lifecycle: owner acceptance, production evidence, decisions, and the outcome each pilot is in.
//! Pure functions of a pilot and `today`.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::{Pilot, PnlTarget, Stage};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnerStatus {
    Pending,
    Accepted,
    Declined,
}

impl OwnerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerStatus::Pending => "pending",
            OwnerStatus::Accepted => "accepted",
            OwnerStatus::Declined => "declined",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [OwnerStatus::Pending, OwnerStatus::Accepted, OwnerStatus::Declined].into_iter().find(|o| o.as_str() == s)
    }
}

/// The three items of production evidence; each mirrors one scoping answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceKind {
    /// The redesigned workflow is in use.
    WorkflowLive,
    /// The last-mile owner runs it in operations.
    OwnerRunning,
    /// The P&L line moved.
    PnlMoved,
}

impl EvidenceKind {
    pub const ALL: [EvidenceKind; 3] = [EvidenceKind::WorkflowLive, EvidenceKind::OwnerRunning, EvidenceKind::PnlMoved];

    pub fn as_str(self) -> &'static str {
        match self {
            EvidenceKind::WorkflowLive => "workflow_live",
            EvidenceKind::OwnerRunning => "owner_running",
            EvidenceKind::PnlMoved => "pnl_moved",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim().to_lowercase().replace([' ', '-'], "_");
        Some(match s.as_str() {
            "workflow_live" | "workflow" | "1" => EvidenceKind::WorkflowLive,
            "owner_running" | "owner" | "2" => EvidenceKind::OwnerRunning,
            "pnl_moved" | "pnl" | "p&l" | "3" => EvidenceKind::PnlMoved,
            _ => return None,
        })
    }
}

/// Evidence on record, the latest of each kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvidenceState {
    pub workflow_live: bool,
    pub owner_running: bool,
    /// The latest measured value of the P&L line, in its unit.
    pub pnl_realised: Option<f64>,
}

/// Whether a measured value moved the line from its baseline towards its target.
pub fn pnl_moved(target: &PnlTarget, realised: f64) -> bool {
    if target.target > target.baseline { realised > target.baseline } else { realised < target.baseline }
}

impl Pilot {
    /// How many of the three evidence items count: 3 is Proof of Production.
    pub fn evidence_count(&self) -> u8 {
        let pnl = match (&self.pnl, self.evidence.pnl_realised) {
            (Some(t), Some(v)) => pnl_moved(t, v),
            _ => false,
        };
        u8::from(self.evidence.workflow_live) + u8::from(self.evidence.owner_running) + u8::from(pnl)
    }

    pub fn has_evidence(&self, kind: EvidenceKind) -> bool {
        match kind {
            EvidenceKind::WorkflowLive => self.evidence.workflow_live,
            EvidenceKind::OwnerRunning => self.evidence.owner_running,
            EvidenceKind::PnlMoved => match (&self.pnl, self.evidence.pnl_realised) {
                (Some(t), Some(v)) => pnl_moved(t, v),
                _ => false,
            },
        }
    }

    /// Scale and kill end a pilot's reviews.
    pub fn is_decided(&self) -> bool {
        matches!(self.stage, Stage::InProduction | Stage::Killed)
    }

    /// The date the next review is due (after extensions, the latest agreed date).
    pub fn due_date(&self) -> Option<NaiveDate> {
        self.next_review_date.or(self.review_date)
    }

    /// Past its review date with no decision: the review is overdue.
    pub fn is_overdue(&self, today: NaiveDate) -> bool {
        self.stage == Stage::Scoped && self.due_date().is_some_and(|d| d < today)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    Scale,
    Extend,
    Kill,
}

impl DecisionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Scale => "scale",
            DecisionKind::Extend => "extend",
            DecisionKind::Kill => "kill",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_lowercase().as_str() {
            "scale" => Some(DecisionKind::Scale),
            "extend" => Some(DecisionKind::Extend),
            "kill" => Some(DecisionKind::Kill),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KillCategory {
    /// A healthy kill: the pilot was never worth scaling; stopping it is the right call.
    NotWorthScaling,
    /// An absorption failure: the pilot worked but nobody took it into operations.
    StalledInHandoff,
}

impl KillCategory {
    pub fn as_str(self) -> &'static str {
        match self {
            KillCategory::NotWorthScaling => "not_worth_scaling",
            KillCategory::StalledInHandoff => "stalled_in_handoff",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_lowercase().replace([' ', '-'], "_").as_str() {
            "not_worth_scaling" => Some(KillCategory::NotWorthScaling),
            "stalled_in_handoff" | "stalled_in_hand_off" => Some(KillCategory::StalledInHandoff),
            _ => None,
        }
    }
}

/// What became of a pilot, told apart as the essay asks: a healthy kill, a slow-burning bet, an absorption failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Open,
    InProduction,
    SlowBurningBet,
    HealthyKill,
    AbsorptionFailure,
    AbsorptionRisk,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Open => "open",
            Outcome::InProduction => "in_production",
            Outcome::SlowBurningBet => "slow_burning_bet",
            Outcome::HealthyKill => "healthy_kill",
            Outcome::AbsorptionFailure => "absorption_failure",
            Outcome::AbsorptionRisk => "absorption_risk",
        }
    }
}

/// Why a pilot past its review date is an absorption risk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskReason {
    NoAcceptedOwner,
    NoLiveWorkflow,
    OwnerNotRunning,
    NoPnlMovement,
}

impl RiskReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RiskReason::NoAcceptedOwner => "no_accepted_owner",
            RiskReason::NoLiveWorkflow => "no_live_workflow",
            RiskReason::OwnerNotRunning => "owner_not_running",
            RiskReason::NoPnlMovement => "no_pnl_movement",
        }
    }
}

/// Conditions shown wherever a pilot is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    OwnerNotAccepted,
    Overdue,
    ScaledWithoutEvidence,
    /// Scoped without a sponsor (the workspace's `sponsor_required` was off).
    NoSponsor,
}

impl Flag {
    pub fn as_str(self) -> &'static str {
        match self {
            Flag::OwnerNotAccepted => "owner_not_accepted",
            Flag::Overdue => "overdue",
            Flag::ScaledWithoutEvidence => "scaled_without_evidence",
            Flag::NoSponsor => "no_sponsor",
        }
    }
}

/// The outcome of a pilot on `today`, with the reasons when it is an absorption risk.
pub fn outcome(p: &Pilot, today: NaiveDate) -> (Outcome, Vec<RiskReason>) {
    match p.stage {
        Stage::InProduction => (Outcome::InProduction, vec![]),
        Stage::Killed => match p.kill_category {
            Some(KillCategory::StalledInHandoff) => (Outcome::AbsorptionFailure, vec![]),
            _ => (Outcome::HealthyKill, vec![]),
        },
        Stage::Draft => (Outcome::Open, vec![]),
        Stage::Scoped if p.is_overdue(today) && p.evidence_count() < 3 => {
            let mut reasons = Vec::new();
            if p.owner_status != OwnerStatus::Accepted {
                reasons.push(RiskReason::NoAcceptedOwner);
            }
            if !p.has_evidence(EvidenceKind::WorkflowLive) {
                reasons.push(RiskReason::NoLiveWorkflow);
            }
            if !p.has_evidence(EvidenceKind::OwnerRunning) {
                reasons.push(RiskReason::OwnerNotRunning);
            }
            if !p.has_evidence(EvidenceKind::PnlMoved) {
                reasons.push(RiskReason::NoPnlMovement);
            }
            (Outcome::AbsorptionRisk, reasons)
        }
        Stage::Scoped if p.extensions > 0 => (Outcome::SlowBurningBet, vec![]),
        Stage::Scoped => (Outcome::Open, vec![]),
    }
}

/// The flags a pilot carries on `today`.
pub fn flags(p: &Pilot, today: NaiveDate) -> Vec<Flag> {
    let mut flags = Vec::new();
    if p.stage != Stage::Draft && p.stage != Stage::Killed && p.owner_status != OwnerStatus::Accepted {
        flags.push(Flag::OwnerNotAccepted);
    }
    if p.is_overdue(today) {
        flags.push(Flag::Overdue);
    }
    // Scaled by override: a debt until the missing evidence is on record.
    if p.stage == Stage::InProduction && p.scale_override && p.evidence_count() < 3 {
        flags.push(Flag::ScaledWithoutEvidence);
    }
    if matches!(p.stage, Stage::Scoped | Stage::InProduction) && p.sponsor.is_none() {
        flags.push(Flag::NoSponsor);
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn scoped() -> Pilot {
        Pilot { sponsor: Some(crate::domain::UserId::new("carol")), ..crate::domain::pilot::sample("P", Stage::Scoped) }
    }

    #[test]
    fn open_until_the_review_date_passes_then_an_absorption_risk_with_reasons() {
        let p = scoped();
        assert_eq!(outcome(&p, d("2027-01-06")), (Outcome::Open, vec![]));
        let (o, reasons) = outcome(&p, d("2027-01-07"));
        assert_eq!(o, Outcome::AbsorptionRisk);
        assert_eq!(
            reasons,
            vec![
                RiskReason::NoAcceptedOwner,
                RiskReason::NoLiveWorkflow,
                RiskReason::OwnerNotRunning,
                RiskReason::NoPnlMovement
            ]
        );
        let p = Pilot {
            owner_status: OwnerStatus::Accepted,
            evidence: EvidenceState { workflow_live: true, owner_running: false, pnl_realised: Some(90.0) },
            ..scoped()
        };
        assert_eq!(outcome(&p, d("2027-02-01")), (Outcome::AbsorptionRisk, vec![RiskReason::OwnerNotRunning]));
    }

    #[test]
    fn full_evidence_is_never_a_risk_and_pnl_must_move_towards_the_target() {
        let mut p = Pilot {
            owner_status: OwnerStatus::Accepted,
            evidence: EvidenceState { workflow_live: true, owner_running: true, pnl_realised: Some(90.0) },
            ..scoped()
        };
        assert_eq!(p.evidence_count(), 3);
        assert_eq!(outcome(&p, d("2027-03-01")).0, Outcome::Open);
        p.evidence.pnl_realised = Some(100.0);
        assert_eq!(p.evidence_count(), 2, "no movement from the baseline");
        p.evidence.pnl_realised = Some(120.0);
        assert_eq!(p.evidence_count(), 2, "moved the wrong way");
        let up = PnlTarget { line: "Revenue".into(), unit: "USD".into(), baseline: 0.0, target: 10.0 };
        assert!(pnl_moved(&up, 1.0) && !pnl_moved(&up, 0.0));
    }

    #[test]
    fn decisions_settle_the_outcome() {
        let extended = Pilot { extensions: 1, next_review_date: Some(d("2027-04-01")), ..scoped() };
        assert_eq!(outcome(&extended, d("2027-02-01")).0, Outcome::SlowBurningBet);
        assert_eq!(outcome(&extended, d("2027-04-02")).0, Outcome::AbsorptionRisk, "an extension that lapses again");
        let scaled = Pilot { stage: Stage::InProduction, scale_override: true, ..scoped() };
        assert_eq!(outcome(&scaled, d("2027-02-01")).0, Outcome::InProduction);
        assert!(flags(&scaled, d("2027-02-01")).contains(&Flag::ScaledWithoutEvidence));
        let healthy = Pilot { stage: Stage::Killed, kill_category: Some(KillCategory::NotWorthScaling), ..scoped() };
        assert_eq!(outcome(&healthy, d("2027-02-01")).0, Outcome::HealthyKill);
        let failure = Pilot { stage: Stage::Killed, kill_category: Some(KillCategory::StalledInHandoff), ..scoped() };
        assert_eq!(outcome(&failure, d("2027-02-01")).0, Outcome::AbsorptionFailure);
        assert!(flags(&failure, d("2027-02-01")).is_empty());
    }

    #[test]
    fn flags_follow_acceptance_and_the_calendar() {
        let p = scoped();
        assert_eq!(flags(&p, d("2027-01-01")), vec![Flag::OwnerNotAccepted]);
        assert_eq!(flags(&p, d("2027-01-07")), vec![Flag::OwnerNotAccepted, Flag::Overdue]);
        let accepted = Pilot { owner_status: OwnerStatus::Accepted, ..scoped() };
        assert!(flags(&accepted, d("2027-01-01")).is_empty());
        let draft = Pilot { stage: Stage::Draft, ..scoped() };
        assert!(flags(&draft, d("2027-01-01")).is_empty());
        let unsponsored = Pilot { sponsor: None, ..accepted };
        assert_eq!(flags(&unsponsored, d("2027-01-01")), vec![Flag::NoSponsor]);
    }
}
