//! The portfolio digest: posted on each workspace's cron schedule (in its time zone), at most once per period
//! however many processes run: the period is recorded first, and only the process that records it posts.

use chrono::{DateTime, Duration, Utc};
use croner::Cron;

use super::scheduler::{Outbox, Scheduler};
use crate::domain::due::zone;
use crate::domain::{ChannelId, WorkspaceId, WorkspaceSettings};
use crate::engine::metric;
use crate::store::StoreError;

fn schedule(settings: &WorkspaceSettings) -> Option<Cron> {
    if settings.digest_cron.eq_ignore_ascii_case("off") {
        return None;
    }
    Cron::new(&settings.digest_cron).parse().ok()
}

/// The occurrences of `cron` after `from` up to and including `until`, in the workspace's zone; the last one.
fn latest_between(
    cron: &Cron,
    settings: &WorkspaceSettings,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let tz = zone(settings);
    let mut latest = None;
    // Bounded: a digest more frequent than every minute is not a digest.
    for t in cron.iter_after(from.with_timezone(&tz)).take(20_000) {
        let t = t.with_timezone(&Utc);
        if t > until {
            break;
        }
        latest = Some(t);
    }
    latest
}

impl Scheduler {
    /// When the next digest of a workspace is due after `after`.
    pub async fn next_digest_at(
        &self,
        ws: &WorkspaceId,
        after: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let settings = self.engine().store().settings(ws).await?;
        let Some(cron) = schedule(&settings) else { return Ok(None) };
        let Some((start, _)) = self.engine().store().workspace_start(ws).await? else { return Ok(None) };
        let last = self.engine().store().last_digest(ws).await?;
        let from = [Some(after), Some(start), last].into_iter().flatten().max().unwrap_or(after);
        let tz = zone(&settings);
        Ok(cron.find_next_occurrence(&from.with_timezone(&tz), false).ok().map(|t| t.with_timezone(&Utc)))
    }

    /// Posts each due digest once: the latest period that has passed since the last digest (a bot that was down
    /// posts one digest, not one per missed period). Returns how many were posted.
    pub async fn run_digests<O: Outbox>(
        &self,
        now: DateTime<Utc>,
        outbox: &O,
        only: Option<&WorkspaceId>,
    ) -> Result<usize, StoreError> {
        let workspaces = match only {
            Some(ws) => vec![ws.clone()],
            None => self.engine().store().workspaces().await?,
        };
        let mut posted = 0;
        for ws in workspaces {
            let settings = self.engine().store().settings(&ws).await?;
            let Some(cron) = schedule(&settings) else { continue };
            let Some((start, home)) = self.engine().store().workspace_start(&ws).await? else { continue };
            let last = self.engine().store().last_digest(&ws).await?;
            let from = [Some(start), last, Some(now - Duration::days(8))].into_iter().flatten().max().unwrap_or(now);
            let Some(period) = latest_between(&cron, &settings, from, now) else { continue };
            if !self.engine().store().claim_digest(&ws, period, now).await? {
                continue;
            }
            let channel = ChannelId::new(settings.review_channel.clone().unwrap_or(home));
            let post = self.engine().portfolio_post(&ws, channel, now).await?;
            if let Err(e) = outbox.deliver(now, &ws, &post).await {
                metric::scheduled("digest", "failed");
                tracing::warn!(workspace = ws.as_str(), error = ?e, "digest could not be posted");
                continue;
            }
            metric::scheduled("digest", "sent");
            posted += 1;
        }
        Ok(posted)
    }
}
