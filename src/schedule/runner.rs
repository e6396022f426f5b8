//! The runner: claims pilots whose next message is due, sends it through an [`Outbox`], and records it under
//! its idempotency key. At-least-once: a message is recorded after it was handed over, so a crash in between
//! re-sends it once, after the claim's lease expires. Two processes never both hold a pilot's claim.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use minijinja::context;

use crate::dialogue::AskKind;
use crate::domain::Due;
use crate::domain::due::{DueKind, Escalation, ScheduleState, escalation, next_due_in, own_or_workspace_zone};
use crate::domain::lifecycle::outcome;
use crate::domain::{Pilot, WorkspaceId, WorkspaceSettings};
use crate::engine::{Engine, Reply};
use crate::prompts::Key;
use crate::store::StoreError;

/// How long a claim holds before another process may take the pilot over.
pub const LEASE: Duration = Duration::minutes(5);
const BATCH: i64 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryError {
    /// The user does not accept direct messages (Discord error 50007): use the reply's fallback.
    DmClosed,
    /// Anything else: the message is not recorded and is retried after the lease.
    Failed(String),
}

/// Where the runner hands messages over: a chat platform, the console, a test.
pub trait Outbox: Sync {
    /// Hands over `reply`, sent on behalf of `workspace` (a platform may need it to route the answers).
    fn deliver(
        &self,
        at: DateTime<Utc>,
        workspace: &WorkspaceId,
        reply: &Reply,
    ) -> impl Future<Output = Result<(), DeliveryError>> + Send;
}

/// What one run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// This many messages were sent and recorded.
    Sent(usize),
    NothingDue,
}

impl Engine {
    /// Sends every message due at `now` (optionally in one workspace), as `worker`.
    pub async fn run_due<O: Outbox>(
        &self,
        now: DateTime<Utc>,
        worker: &str,
        outbox: &O,
        ws: Option<&WorkspaceId>,
    ) -> Result<RunOutcome, StoreError> {
        let mut settings: HashMap<String, WorkspaceSettings> = HashMap::new();
        let mut sent = 0;
        loop {
            let claimed = self.store().claim_due(now, now + LEASE, worker, BATCH, ws).await?;
            if claimed.is_empty() {
                break;
            }
            for pilot in claimed {
                let state = pilot.schedule.clone();
                let key = pilot.workspace.as_str().to_owned();
                if !settings.contains_key(&key) {
                    settings.insert(key.clone(), self.store().settings(&pilot.workspace).await?);
                }
                let s = &settings[&key];
                let tz = self.owner_zone(&pilot, s).await?;
                let mut state = state;
                let mut due = next_due_in(&pilot, &state, s, tz);
                // A heads-up that comes due only after the review date has begun is pointless: skip it.
                if let Some(d) = due
                    && d.kind == DueKind::HeadsUp
                    && now.date_naive() >= d.cycle
                {
                    state = ScheduleState { heads_up_sent: true, ..state.for_cycle(d.cycle) };
                    due = next_due_in(&pilot, &state, s, tz);
                }
                match due {
                    Some(due) if due.at <= now => {
                        if self.send_due(&pilot, &state, &due, s, tz, now, worker, outbox).await? {
                            sent += 1;
                        }
                    }
                    other => {
                        self.store().set_next_action(&pilot.workspace, pilot.id, other.map(|d| d.at), true).await?
                    }
                }
            }
        }
        Ok(if sent == 0 { RunOutcome::NothingDue } else { RunOutcome::Sent(sent) })
    }

    #[allow(clippy::too_many_arguments)]
    async fn send_due<O: Outbox>(
        &self,
        pilot: &Pilot,
        state: &ScheduleState,
        due: &Due,
        settings: &WorkspaceSettings,
        tz: chrono_tz::Tz,
        now: DateTime<Utc>,
        worker: &str,
        outbox: &O,
    ) -> Result<bool, StoreError> {
        let esc = escalation(state, due, settings);
        for reply in self.due_messages(pilot, state, due, esc, settings, now) {
            match outbox.deliver(now, &pilot.workspace, &reply).await {
                Ok(()) => {}
                Err(DeliveryError::DmClosed) => {
                    if let Some(fallback) = &reply.fallback
                        && let Err(e) = outbox.deliver(now, &pilot.workspace, fallback).await
                    {
                        tracing::warn!(pilot = pilot.id.0, error = ?e, "fallback delivery failed; retried after the lease");
                        return Ok(false);
                    }
                }
                Err(DeliveryError::Failed(e)) => {
                    tracing::warn!(pilot = pilot.id.0, error = %e, "delivery failed; retried after the lease");
                    return Ok(false);
                }
            }
        }
        let mut next_state = state.for_cycle(due.cycle);
        match due.kind {
            DueKind::HeadsUp => next_state.heads_up_sent = true,
            DueKind::Nudge => {
                next_state.cycle_nudges += 1;
                next_state.unanswered += 1;
                next_state.last_nudge_at = Some(now);
                next_state.escalated |= esc.escalate;
                next_state.posted |= esc.post;
            }
        }
        let next = next_due_in(pilot, &next_state, settings, tz).map(|d| d.at);
        let mut extra = Vec::new();
        if esc.escalate {
            extra.push("escalation");
        }
        if esc.post {
            extra.push("review_post");
        }
        // The nudge's actions wait for the owner's answer as an ask, opened with the record of the nudge.
        let ask = match (due.kind, &pilot.owner) {
            (DueKind::Nudge, Some(owner)) => Some((owner.clone(), AskKind::Nudge { cycle: due.cycle })),
            _ => None,
        };
        self.store().record_sent(pilot, due, &next_state, next, &extra, ask, now, worker).await
    }

    /// The messages a due item sends: a heads-up or a nudge to the owner, and what escalation adds.
    fn due_messages(
        &self,
        pilot: &Pilot,
        state: &ScheduleState,
        due: &Due,
        esc: Escalation,
        settings: &WorkspaceSettings,
        now: DateTime<Utc>,
    ) -> Vec<Reply> {
        let p = self.prompts();
        let Some(owner) = pilot.owner.clone() else { return vec![] };
        let today = now.date_naive();
        let missing = self.missing_evidence(pilot);
        let date = due.cycle.to_string();
        let dm = |user: &crate::domain::UserId, text: String, choices: Vec<String>| self.dm(pilot, user, text, choices);
        let mut out = Vec::new();
        match due.kind {
            DueKind::HeadsUp => {
                let text = p.render(
                    Key::HeadsUp,
                    context! { pilot => pilot.name, date, count => pilot.evidence_count(), missing },
                );
                let evidence = crate::engine::Shortcut {
                    label: p.text(Key::ShortcutEvidence),
                    command: format!("/pilot evidence #{}", pilot.id.0),
                };
                out.push(Engine::with_shortcuts(dm(&owner, text, vec![]), vec![evidence]));
            }
            DueKind::Nudge => {
                let st = state.for_cycle(due.cycle);
                let text = p.render(
                    Key::NudgeDm,
                    context! {
                        pilot => pilot.name, date, count => pilot.evidence_count(), missing, nudge => st.cycle_nudges + 1,
                        snooze_days => settings.snooze_days,
                    },
                );
                out.push(self.ask_dm(pilot, &owner, &AskKind::Nudge { cycle: due.cycle }, text));
                let unanswered = st.unanswered + 1;
                if esc.escalate {
                    let to = pilot.sponsor.clone().unwrap_or_else(|| pilot.registered_by.clone());
                    let text = p.render(
                        Key::EscalationDm,
                        context! {
                            pilot => pilot.name, date, owner => owner.mention(), nudges => unanswered,
                            count => pilot.evidence_count(), missing,
                        },
                    );
                    out.push(Engine::with_shortcuts(dm(&to, text, vec![]), self.decide_shortcuts(pilot)));
                }
                if esc.post {
                    let (_, reasons) = outcome(pilot, today.max(due.cycle.succ_opt().unwrap_or(due.cycle)));
                    let channel = settings.review_channel.clone().map(crate::domain::ChannelId::new);
                    let mut ping = vec![owner.clone()];
                    ping.extend(pilot.sponsor.clone());
                    let text = p.render(
                        Key::RiskPost,
                        context! {
                            pilot => pilot.name, date, owner => owner.mention(),
                            sponsor => self.person(pilot.sponsor.as_ref()), nudges => unanswered,
                            reasons => self.reason_labels(&reasons),
                        },
                    );
                    let post = Reply::post(channel.unwrap_or_else(|| pilot.home_channel.clone()), text, ping);
                    out.push(Reply { shortcuts: self.decide_shortcuts(pilot), ..post });
                }
            }
        }
        out
    }

    /// The zone messages to a pilot's owner follow: their own when they set one, else the workspace's.
    async fn owner_zone(&self, pilot: &Pilot, settings: &WorkspaceSettings) -> Result<chrono_tz::Tz, StoreError> {
        let own = match &pilot.owner {
            Some(owner) => self.store().user_timezone(&pilot.workspace, owner).await?,
            None => None,
        };
        Ok(own_or_workspace_zone(own, settings))
    }
}
