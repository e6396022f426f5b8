//! The portfolio on one page: the funnel from registration to production, what is overdue or at risk, the
//! slow-burning bets, kills told apart, and P&L targeted against realised. A pure function of the pilots and today.

use chrono::NaiveDate;

use super::lifecycle::{Outcome, RiskReason, outcome};
use super::{OwnerStatus, Pilot, Stage, UserId};

/// How many pilots reached each step of the path to production.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Funnel {
    pub registered: u64,
    pub scoped: u64,
    pub owner_accepted: u64,
    pub evidence_1: u64,
    pub evidence_2: u64,
    pub evidence_3: u64,
    pub in_production: u64,
    pub killed: u64,
}

impl Funnel {
    /// The steps in order, with their keys (for labels and the chart).
    pub fn steps(&self) -> [(&'static str, u64); 8] {
        [
            ("registered", self.registered),
            ("scoped", self.scoped),
            ("owner_accepted", self.owner_accepted),
            ("evidence_1", self.evidence_1),
            ("evidence_2", self.evidence_2),
            ("evidence_3", self.evidence_3),
            ("in_production", self.in_production),
            ("killed", self.killed),
        ]
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Overdue {
    pub name: String,
    pub owner: Option<UserId>,
    pub due: NaiveDate,
    pub evidence: u8,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Risk {
    pub name: String,
    pub reasons: Vec<RiskReason>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Bet {
    pub name: String,
    pub extensions: u32,
    pub due: Option<NaiveDate>,
}

/// A pilot scaled by override that still owes evidence: by when, and how much it has.
#[derive(Debug, Clone, PartialEq)]
pub struct Debt {
    pub name: String,
    pub owner: Option<UserId>,
    pub due: NaiveDate,
    pub evidence: u8,
}

/// Which way a line must move to meet its targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A cost or a loss to cut: every target is below its baseline.
    Down,
    /// A revenue to grow: every target is above its baseline.
    Up,
    /// Its pilots pull it different ways.
    Mixed,
}

/// A P&L line and the pilots that must move it. Pilots naming the same line (case and spacing aside, in one
/// unit) claim the same movement: it is counted once, never summed.
#[derive(Debug, Clone, PartialEq)]
pub struct PnlMovement {
    pub line: String,
    pub unit: String,
    pub pilots: u32,
    pub direction: Direction,
    /// The largest movement one of its pilots targets, signed (a cost to cut is negative).
    pub targeted: f64,
    /// The most any measured pilot moved it towards its target (negative: away from it); None until measured.
    pub realised: Option<f64>,
    /// How many of its pilots have a measured value yet.
    pub measured: u32,
    /// The first and last of its pilots by name (the same one when it has one).
    pub first_pilot: String,
    pub last_pilot: String,
}

impl PnlMovement {
    /// The share of the target reached, in percent (negative when the line moved away).
    pub fn share(&self) -> Option<f64> {
        let realised = self.realised?;
        (self.targeted != 0.0).then(|| 100.0 * realised / self.targeted.abs())
    }
}

/// One pilot's movement of its line towards its target: positive towards it, negative away.
pub fn towards(baseline: f64, target: f64, measured: f64) -> f64 {
    let direction = if target < baseline { -1.0 } else { 1.0 };
    (measured - baseline) * direction
}

/// The portfolio's figures; the lists may hold only the first few items of their totals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Portfolio {
    pub funnel: Funnel,
    pub overdue: Vec<Overdue>,
    pub overdue_total: u64,
    pub risks: Vec<Risk>,
    pub risks_total: u64,
    pub bets: Vec<Bet>,
    pub bets_total: u64,
    /// Pilots in production by override whose evidence is still owed, soonest due first.
    pub debts: Vec<Debt>,
    pub debts_total: u64,
    pub healthy_kills: u64,
    pub absorption_failures: u64,
    pub pnl: Vec<PnlMovement>,
}

pub fn portfolio(pilots: &[Pilot], today: NaiveDate) -> Portfolio {
    let mut p = Portfolio::default();
    for pilot in pilots {
        let f = &mut p.funnel;
        f.registered += 1;
        if pilot.stage == Stage::Draft {
            continue;
        }
        f.scoped += 1;
        f.owner_accepted += u64::from(pilot.owner_status == OwnerStatus::Accepted);
        let evidence = pilot.evidence_count();
        f.evidence_1 += u64::from(evidence >= 1);
        f.evidence_2 += u64::from(evidence >= 2);
        f.evidence_3 += u64::from(evidence >= 3);
        f.in_production += u64::from(pilot.stage == Stage::InProduction);
        f.killed += u64::from(pilot.stage == Stage::Killed);
        let (o, reasons) = outcome(pilot, today);
        match o {
            Outcome::AbsorptionRisk => {
                p.risks.push(Risk { name: pilot.name.clone(), reasons });
            }
            Outcome::SlowBurningBet => {
                p.bets.push(Bet { name: pilot.name.clone(), extensions: pilot.extensions, due: pilot.due_date() })
            }
            Outcome::HealthyKill => p.healthy_kills += 1,
            Outcome::AbsorptionFailure => p.absorption_failures += 1,
            _ => {}
        }
        if pilot.is_overdue(today)
            && let Some(due) = pilot.due_date()
        {
            p.overdue.push(Overdue { name: pilot.name.clone(), owner: pilot.owner.clone(), due, evidence });
        }
        if pilot.stage == Stage::InProduction
            && let Some(due) = pilot.evidence_due
        {
            p.debts.push(Debt { name: pilot.name.clone(), owner: pilot.owner.clone(), due, evidence });
        }
        // Killed pilots target nothing any more; the others count towards their line.
        if pilot.stage != Stage::Killed
            && let Some(t) = &pilot.pnl
        {
            let key = (t.line.trim().to_lowercase(), t.unit.clone());
            let moved = pilot.evidence.pnl_realised.map(|v| towards(t.baseline, t.target, v));
            let direction = if t.target < t.baseline { Direction::Down } else { Direction::Up };
            let largest = (t.target - t.baseline).abs();
            match p.pnl.iter_mut().find(|m| (m.line.trim().to_lowercase(), m.unit.clone()) == key) {
                Some(m) => {
                    m.pilots += 1;
                    if m.direction != direction {
                        m.direction = Direction::Mixed;
                    }
                    let largest = largest.max(m.targeted.abs());
                    m.targeted = if m.direction == Direction::Down { -largest } else { largest };
                    m.realised = match (m.realised, moved) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        (a, b) => a.or(b),
                    };
                    m.measured += u32::from(moved.is_some());
                    if pilot.name < m.first_pilot {
                        m.first_pilot = pilot.name.clone();
                    }
                    if pilot.name > m.last_pilot {
                        m.last_pilot = pilot.name.clone();
                    }
                    // The line keeps the spelling of its first pilot by name, as the database's MIN does.
                    if t.line < m.line {
                        m.line = t.line.clone();
                    }
                }
                None => p.pnl.push(PnlMovement {
                    line: t.line.clone(),
                    unit: t.unit.clone(),
                    pilots: 1,
                    direction,
                    targeted: t.target - t.baseline,
                    realised: moved,
                    measured: u32::from(moved.is_some()),
                    first_pilot: pilot.name.clone(),
                    last_pilot: pilot.name.clone(),
                }),
            }
        }
    }
    p.overdue.sort_by(|a, b| a.due.cmp(&b.due).then_with(|| a.name.cmp(&b.name)));
    p.overdue_total = p.overdue.len() as u64;
    p.debts.sort_by(|a, b| a.due.cmp(&b.due).then_with(|| a.name.cmp(&b.name)));
    p.debts_total = p.debts.len() as u64;
    p.risks_total = p.risks.len() as u64;
    p.bets_total = p.bets.len() as u64;
    p.pnl.sort_by(|a, b| b.targeted.abs().total_cmp(&a.targeted.abs()).then_with(|| a.line.cmp(&b.line)));
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::KillCategory;
    use crate::domain::lifecycle::EvidenceState;

    fn pilot(name: &str, stage: Stage) -> Pilot {
        crate::domain::pilot::sample(name, stage)
    }

    #[test]
    fn a_cost_that_rose_moved_away_and_a_revenue_is_never_netted_with_a_cost() {
        let today: NaiveDate = "2027-02-01".parse().unwrap();
        let line = |name: &str, line: &str, baseline: f64, target: f64, measured: Option<f64>| Pilot {
            pnl: Some(crate::domain::PnlTarget { line: line.into(), unit: "GBP".into(), baseline, target }),
            evidence: EvidenceState { pnl_realised: measured, ..EvidenceState::default() },
            ..pilot(name, Stage::Scoped)
        };
        let p = portfolio(
            &[
                line("Cost", "Claims cost", 100.0, 80.0, Some(110.0)),
                line("Revenue", "Upsell revenue", 50.0, 70.0, Some(60.0)),
            ],
            today,
        );
        let cost = p.pnl.iter().find(|m| m.line == "Claims cost").unwrap();
        assert_eq!((cost.direction, cost.targeted, cost.realised), (Direction::Down, -20.0, Some(-10.0)));
        assert_eq!(cost.share(), Some(-50.0));
        let revenue = p.pnl.iter().find(|m| m.line == "Upsell revenue").unwrap();
        assert_eq!((revenue.direction, revenue.targeted, revenue.realised), (Direction::Up, 20.0, Some(10.0)));
        assert_eq!(revenue.share(), Some(50.0));
    }

    #[test]
    fn funnel_outcomes_and_pnl_add_up() {
        let today: NaiveDate = "2027-02-01".parse().unwrap();
        let on_credit = Pilot {
            scale_override: true,
            evidence_due: Some("2027-03-01".parse().unwrap()),
            ..pilot("Credit", Stage::InProduction)
        };
        let live = Pilot {
            stage: Stage::InProduction,
            owner_status: OwnerStatus::Accepted,
            evidence: EvidenceState { workflow_live: true, owner_running: true, pnl_realised: Some(85.0) },
            ..pilot("Live", Stage::InProduction)
        };
        let healthy = Pilot { kill_category: Some(KillCategory::NotWorthScaling), ..pilot("Healthy", Stage::Killed) };
        let failed = Pilot { kill_category: Some(KillCategory::StalledInHandoff), ..pilot("Failed", Stage::Killed) };
        let risk = pilot("Risky", Stage::Scoped);
        let bet = Pilot {
            extensions: 1,
            next_review_date: Some("2027-03-01".parse().unwrap()),
            ..pilot("Bet", Stage::Scoped)
        };
        let draft = pilot("Draft", Stage::Draft);
        let p = portfolio(&[live, healthy, failed, risk, bet, draft, on_credit], today);
        assert_eq!(
            p.funnel,
            Funnel {
                registered: 7,
                scoped: 6,
                owner_accepted: 1,
                evidence_1: 1,
                evidence_2: 1,
                evidence_3: 1,
                in_production: 2,
                killed: 2
            }
        );
        assert_eq!((p.debts.len(), p.debts[0].name.as_str(), p.debts[0].evidence), (1, "Credit", 0));
        assert_eq!((p.healthy_kills, p.absorption_failures), (1, 1));
        assert_eq!(p.risks.len(), 1);
        assert_eq!(p.risks[0].name, "Risky");
        assert_eq!(p.overdue.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), vec!["Risky"]);
        assert_eq!(p.bets.len(), 1);
        // Live, Risky, Bet and Credit all claim the same line, 100 -> 80 (drafts and kills do not count): the
        // movement is counted once, not four times; only Live measured it, 15 of the 20 towards the target.
        assert_eq!(p.pnl.len(), 1);
        let m = &p.pnl[0];
        assert_eq!(
            (m.pilots, m.direction, m.targeted, m.realised, m.measured),
            (4, Direction::Down, -20.0, Some(15.0), 1)
        );
        assert_eq!(m.share(), Some(75.0));
        assert_eq!((m.first_pilot.as_str(), m.last_pilot.as_str()), ("Bet", "Risky"));
    }
}
