//! `/portfolio` and the scheduled digest: the portfolio summary with its funnel chart.

use chrono::{DateTime, Utc};
use minijinja::context;
use serde::Serialize;

use super::{Attachment, Engine, Reply, Request};
use crate::domain::portfolio::{Direction, Portfolio};
use crate::domain::{ChannelId, UserId, WorkspaceId, pnl::format_quantity};
use crate::prompts::Key;
use crate::store::StoreError;

/// Discord's limit on message content; summaries are cut to fit with "and N more".
const MAX_CHARS: usize = 2000;

#[derive(Serialize)]
struct Item {
    pilot: String,
    owner: String,
    date: String,
    detail: String,
}

const FUNNEL_KEYS: [Key; 8] = [
    Key::FunnelRegistered,
    Key::FunnelScoped,
    Key::FunnelOwnerAccepted,
    Key::FunnelEvidence1,
    Key::FunnelEvidence2,
    Key::FunnelEvidence3,
    Key::FunnelInProduction,
    Key::FunnelKilled,
];

impl Engine {
    /// The stages of the path to production a pilot reached, with their counts: from scoped to in production.
    /// Drafts are not yet in the funnel and killed pilots are beside it, not its last stage.
    fn funnel_steps(&self, p: &Portfolio) -> Vec<(String, u64)> {
        p.funnel
            .steps()
            .iter()
            .zip(FUNNEL_KEYS)
            .filter(|((name, _), _)| *name != "registered" && *name != "killed")
            .map(|((_, n), k)| (self.prompts().text(k), *n))
            .collect()
    }

    /// The summary text for a portfolio, with at most `limit` items per list.
    fn summary_text(&self, p: &Portfolio, limit: usize) -> String {
        let prompts = self.prompts();
        let funnel: Vec<_> = self.funnel_steps(p).into_iter().map(|(label, count)| context! { label, count }).collect();
        let overdue: Vec<Item> = p
            .overdue
            .iter()
            .take(limit)
            .map(|o| Item {
                pilot: o.name.clone(),
                owner: self.person(o.owner.as_ref()),
                date: o.due.to_string(),
                detail: format!("{}/3", o.evidence),
            })
            .collect();
        let risks: Vec<Item> = p
            .risks
            .iter()
            .take(limit)
            .map(|r| Item {
                pilot: r.name.clone(),
                owner: String::new(),
                date: String::new(),
                detail: self.reason_labels(&r.reasons),
            })
            .collect();
        let bets: Vec<Item> = p
            .bets
            .iter()
            .take(limit)
            .map(|b| Item {
                pilot: b.name.clone(),
                owner: String::new(),
                date: b.due.map(|d| d.to_string()).unwrap_or_default(),
                detail: b.extensions.to_string(),
            })
            .collect();
        let debts: Vec<Item> = p
            .debts
            .iter()
            .take(limit)
            .map(|d| Item {
                pilot: d.name.clone(),
                owner: self.person(d.owner.as_ref()),
                date: d.due.to_string(),
                detail: format!("{}/3", d.evidence),
            })
            .collect();
        let signed = |v: f64, unit: &str| {
            let text = format_quantity(v.abs(), unit);
            if v < 0.0 { format!("−{text}") } else { format!("+{text}") }
        };
        let pnl: Vec<_> = p
            .pnl
            .iter()
            .take(limit)
            .map(|m| {
                let direction = match m.direction {
                    Direction::Down => "down",
                    Direction::Up => "up",
                    Direction::Mixed => "mixed",
                };
                // Realised is shown as the line moved: a cost cut is negative, a cost that rose positive.
                let sign = if m.direction == Direction::Down { -1.0 } else { 1.0 };
                let realised = m.realised.unwrap_or(0.0);
                context! {
                    line => m.line, pilots => m.pilots, measured => m.measured, direction,
                    targeted => signed(m.targeted, &m.unit), realised => signed(sign * realised, &m.unit),
                    away => realised < 0.0, share => m.share().map(|s| format!("{s:.0}").replace('-', "−")).unwrap_or_default(),
                    first => m.first_pilot, last => m.last_pilot,
                }
            })
            .collect();
        let decided = p.funnel.in_production + p.funnel.killed;
        let production_rate = (100 * p.funnel.in_production + decided / 2).checked_div(decided).unwrap_or(0);
        let more = |total: u64, shown: usize| total.saturating_sub(shown as u64);
        prompts.render(
            Key::PortfolioSummary,
            context! {
                overdue_more => more(p.overdue_total, overdue.len()), risks_more => more(p.risks_total, risks.len()),
                bets_more => more(p.bets_total, bets.len()), pnl_more => more(p.pnl.len() as u64, pnl.len()),
                debts_more => more(p.debts_total, debts.len()),
                funnel, killed => p.funnel.killed, overdue, risks, bets, debts, healthy_kills => p.healthy_kills,
                absorption_failures => p.absorption_failures, in_production => p.funnel.in_production, decided,
                production_rate, pnl,
            },
        )
    }

    /// The portfolio summary of a workspace as a channel post with the funnel chart attached.
    pub async fn portfolio_post(
        &self,
        ws: &WorkspaceId,
        channel: ChannelId,
        now: DateTime<Utc>,
    ) -> Result<Reply, StoreError> {
        // Aggregated by the database: a workspace of 100,000 pilots is not loaded row by row.
        let p = self.store().portfolio(ws, now.date_naive(), 10).await?;
        // Lists shrink until the summary fits a chat message; the full lists are one `/pilot list` away.
        let mut text = String::new();
        for limit in [10, 5, 3, 1, 0] {
            text = self.summary_text(&p, limit);
            if text.chars().count() <= MAX_CHARS {
                break;
            }
        }
        if text.chars().count() > MAX_CHARS {
            text = text.chars().take(MAX_CHARS - 1).collect::<String>() + "…";
        }
        // The chart shows the stages the text lists, in the same words.
        let steps = self.funnel_steps(&p);
        let attachment = match crate::render::chart::funnel_png(&self.prompts().text(Key::PortfolioChartTitle), &steps)
        {
            Ok(bytes) => Some(Attachment { filename: "funnel.png".into(), bytes }),
            Err(e) => {
                tracing::error!(error = %e, "funnel chart failed");
                None
            }
        };
        // Only the owners of overdue pilots are mentioned, so only they are notified.
        let mut ping: Vec<UserId> = p.overdue.iter().filter_map(|o| o.owner.clone()).collect();
        ping.sort();
        ping.dedup();
        Ok(Reply { attachment, card: true, ..Reply::post(channel, text, ping) })
    }

    pub(super) async fn portfolio_command(&self, req: &Request) -> Result<Vec<Reply>, StoreError> {
        Ok(vec![self.portfolio_post(&req.workspace, req.channel.clone(), req.now).await?])
    }
}
