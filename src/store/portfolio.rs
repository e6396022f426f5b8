//! The portfolio of a workspace, aggregated in the database (a workspace of 100,000 pilots is not loaded row by
//! row): the funnel's counts, the lists, the P&L lines. `tests/portfolio.rs` holds it equal to `domain::portfolio`.

use super::rows::{self, PilotRow};
use super::{Pool, Store, StoreError};
use crate::domain::portfolio::{Bet, Debt, Direction, Funnel, Overdue, PnlMovement, Portfolio, Risk};
use crate::domain::{Pilot, WorkspaceId};

impl Store {
    /// The portfolio of a workspace on `today`, aggregated in the database; lists hold at most `limit` items.
    pub async fn portfolio(
        &self,
        ws: &WorkspaceId,
        today: chrono::NaiveDate,
        limit: i64,
    ) -> Result<Portfolio, StoreError> {
        // One row per pilot with its evidence count and due date, then sums over them. The count is the domain's
        // (`Pilot::evidence_count`), written with each change of the pilot: no rule is repeated here.
        let per_pilot = "SELECT stage, owner_status, kill_category, extensions, next_review_date AS due, \
                         evidence_count AS ev FROM pilots WHERE workspace = $1";
        let risky = "stage = 'scoped' AND due < $2 AND ev < 3";
        // COUNT(*) FILTER evaluates each condition once per row, a third cheaper than SUM(CASE ...) here.
        let counts = format!(
            "SELECT COUNT(*), \
             COUNT(*) FILTER (WHERE stage <> 'draft'), \
             COUNT(*) FILTER (WHERE stage <> 'draft' AND owner_status = 'accepted'), \
             COUNT(*) FILTER (WHERE stage <> 'draft' AND ev >= 1), \
             COUNT(*) FILTER (WHERE stage <> 'draft' AND ev >= 2), \
             COUNT(*) FILTER (WHERE stage <> 'draft' AND ev >= 3), \
             COUNT(*) FILTER (WHERE stage = 'in_production'), \
             COUNT(*) FILTER (WHERE stage = 'killed'), \
             COUNT(*) FILTER (WHERE stage = 'killed' AND COALESCE(kill_category, '') <> 'stalled_in_handoff'), \
             COUNT(*) FILTER (WHERE stage = 'killed' AND kill_category = 'stalled_in_handoff'), \
             COUNT(*) FILTER (WHERE stage = 'scoped' AND due < $2), \
             COUNT(*) FILTER (WHERE {risky}), \
             COUNT(*) FILTER (WHERE stage = 'scoped' AND extensions > 0 AND NOT ({risky})) \
             FROM ({per_pilot}) p"
        );
        // Per line: how many pilots, how many cut it, the largest movement one targets, and the most one measured
        // towards its target (`domain::portfolio::towards`, per row). Pilots naming one line are counted once.
        let pnl = "SELECT MIN(pnl_line), pnl_unit, COUNT(*), \
                   SUM(CASE WHEN pnl_target < pnl_baseline THEN 1 ELSE 0 END), \
                   MAX(ABS(pnl_target - pnl_baseline)), \
                   MAX(CASE WHEN pnl_realised IS NOT NULL THEN (pnl_realised - pnl_baseline) * \
                       (CASE WHEN pnl_target < pnl_baseline THEN -1.0 ELSE 1.0 END) END), \
                   SUM(CASE WHEN pnl_realised IS NOT NULL THEN 1 ELSE 0 END), MIN(name), MAX(name) \
                   FROM pilots WHERE workspace = $1 AND stage IN ('scoped', 'in_production') AND pnl_line IS NOT NULL \
                   GROUP BY LOWER(TRIM(pnl_line)), pnl_unit";
        // The lists read the review date in force directly, so the (workspace, stage, next_review_date) index
        // yields them in order and LIMIT stops early.
        let evidence = "evidence_count";
        let list = |condition: &str| {
            format!(
                "SELECT {} FROM pilots WHERE workspace = $1 AND stage = 'scoped' AND {condition} \
                 ORDER BY next_review_date, name LIMIT $3",
                rows::PILOT_COLUMNS
            )
        };
        let overdue_sql = list("next_review_date < $2");
        let risks_sql = list(&format!("next_review_date < $2 AND {evidence} < 3"));
        let bets_sql = list(&format!("extensions > 0 AND NOT (next_review_date < $2 AND {evidence} < 3)"));
        // Pilots in production on credit: the evidence an override owes, soonest due first.
        let debts_sql = format!(
            "SELECT {} FROM pilots WHERE workspace = $1 AND stage = 'in_production' AND evidence_due IS NOT NULL \
             ORDER BY evidence_due, name LIMIT $2",
            rows::PILOT_COLUMNS
        );
        let debts_count = "SELECT COUNT(*) FROM pilots WHERE workspace = $1 AND stage = 'in_production' \
                           AND evidence_due IS NOT NULL";
        type Counts = (i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64);
        type PnlRow =
            (Option<String>, Option<String>, i64, i64, Option<f64>, Option<f64>, i64, Option<String>, Option<String>);
        // The two scans and the lists are independent reads: run them at once, each on its own connection.
        type Lists = (Vec<PilotRow>, Vec<PilotRow>, Vec<PilotRow>, Vec<PilotRow>, i64);
        let (c, pnl_rows, (overdue, risks, bets, debts, debts_total)): (Counts, Vec<PnlRow>, Lists) = with_pool!(self, pool => {
            tokio::try_join!(
                sqlx::query_as(&counts).bind(ws.as_str()).bind(today).fetch_one(pool),
                sqlx::query_as(pnl).bind(ws.as_str()).fetch_all(pool),
                async {
                    tokio::try_join!(
                        sqlx::query_as(&overdue_sql).bind(ws.as_str()).bind(today).bind(limit).fetch_all(pool),
                        sqlx::query_as(&risks_sql).bind(ws.as_str()).bind(today).bind(limit).fetch_all(pool),
                        sqlx::query_as(&bets_sql).bind(ws.as_str()).bind(today).bind(limit).fetch_all(pool),
                        sqlx::query_as(&debts_sql).bind(ws.as_str()).bind(limit).fetch_all(pool),
                        sqlx::query_scalar(debts_count).bind(ws.as_str()).fetch_one(pool),
                    )
                },
            )?
        });
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        let pilots =
            |rows: Vec<PilotRow>| rows.into_iter().map(PilotRow::into_domain).collect::<Result<Vec<Pilot>, _>>();
        let mut p = Portfolio {
            funnel: Funnel {
                registered: n(c.0),
                scoped: n(c.1),
                owner_accepted: n(c.2),
                evidence_1: n(c.3),
                evidence_2: n(c.4),
                evidence_3: n(c.5),
                in_production: n(c.6),
                killed: n(c.7),
            },
            healthy_kills: n(c.8),
            absorption_failures: n(c.9),
            overdue_total: n(c.10),
            risks_total: n(c.11),
            bets_total: n(c.12),
            ..Portfolio::default()
        };
        p.overdue = pilots(overdue)?
            .into_iter()
            .filter_map(|pl| {
                let due = pl.due_date()?;
                Some(Overdue { evidence: pl.evidence_count(), name: pl.name, owner: pl.owner, due })
            })
            .collect();
        p.risks = pilots(risks)?
            .into_iter()
            .map(|pl| Risk { reasons: crate::domain::lifecycle::outcome(&pl, today).1, name: pl.name })
            .collect();
        p.bets = pilots(bets)?
            .into_iter()
            .map(|pl| Bet { extensions: pl.extensions, due: pl.due_date(), name: pl.name })
            .collect();
        p.debts = pilots(debts)?
            .into_iter()
            .filter_map(|pl| {
                let due = pl.evidence_due?;
                Some(Debt { evidence: pl.evidence_count(), name: pl.name, owner: pl.owner, due })
            })
            .collect();
        p.debts_total = n(debts_total);
        p.pnl = pnl_rows
            .into_iter()
            .map(|(line, unit, pilots, downs, largest, realised, measured, first, last)| {
                let direction = match downs {
                    0 => Direction::Up,
                    d if d == pilots => Direction::Down,
                    _ => Direction::Mixed,
                };
                let largest = largest.unwrap_or(0.0);
                PnlMovement {
                    line: line.unwrap_or_default(),
                    unit: unit.unwrap_or_default(),
                    pilots: u32::try_from(pilots).unwrap_or(u32::MAX),
                    direction,
                    targeted: if direction == Direction::Down { -largest } else { largest },
                    realised,
                    measured: u32::try_from(measured).unwrap_or(u32::MAX),
                    first_pilot: first.unwrap_or_default(),
                    last_pilot: last.unwrap_or_default(),
                }
            })
            .collect();
        p.pnl.sort_by(|a, b| b.targeted.abs().total_cmp(&a.targeted.abs()).then_with(|| a.line.cmp(&b.line)));
        Ok(p)
    }
}
