//! `/portfolio` and the scheduled digest: the portfolio summary with its funnel chart.

use chrono::{DateTime, Utc};
use minijinja::context;
use serde::Serialize;

use super::{Attachment, Engine, Reply, Request};
use crate::domain::portfolio::Portfolio;
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
    /// The summary text for a portfolio, with at most `limit` items per list.
    fn summary_text(&self, p: &Portfolio, limit: usize) -> String {
        let prompts = self.prompts();
        let funnel: Vec<_> = p
            .funnel
            .steps()
            .iter()
            .zip(FUNNEL_KEYS)
            .map(|((_, n), k)| context! { label => prompts.text(k), count => n })
            .collect();
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
        let pnl: Vec<_> = p
            .pnl
            .iter()
            .take(limit)
            .map(|m| {
                context! {
                    line => m.line, pilots => m.pilots, measured => m.measured,
                    targeted => format_quantity(m.targeted, &m.unit), realised => format_quantity(m.realised, &m.unit),
                }
            })
            .collect();
        let more = |total: u64, shown: usize| total.saturating_sub(shown as u64);
        prompts.render(
            Key::PortfolioSummary,
            context! {
                overdue_more => more(p.overdue_total, overdue.len()), risks_more => more(p.risks_total, risks.len()),
                bets_more => more(p.bets_total, bets.len()), pnl_more => more(p.pnl.len() as u64, pnl.len()),
                debts_more => more(p.debts_total, debts.len()),
                funnel, overdue, risks, bets, debts, healthy_kills => p.healthy_kills,
                absorption_failures => p.absorption_failures, pnl,
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
        let steps: Vec<(String, u64)> =
            p.funnel.steps().iter().zip(FUNNEL_KEYS).map(|((_, n), k)| (self.prompts().text(k), *n)).collect();
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
