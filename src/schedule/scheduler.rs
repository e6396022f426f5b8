//! The scheduler: claims pilots whose next message is due, hands each message over through an [`Outbox`], and
//! records it under its idempotency key. At-least-once: a message is recorded only after the outbox took it, and
//! only while this process still holds the pilot's claim. A claim is a lease that counts from when it is taken and
//! is renewed before each send; a sender whose lease ran out (another process may have the pilot now) sends and
//! records nothing. A crash between a send and its record re-sends it once, after the lease.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use minijinja::context;
use tracing::Instrument as _;

use crate::dialogue::AskKind;
use crate::domain::Due;
use crate::domain::due::{DueKind, Escalation, ScheduleState, escalation, next_due_in, own_or_workspace_zone};
use crate::domain::lifecycle::outcome;
use crate::domain::{OwnerStatus, Pilot, PilotId, Stage, UserId, WorkspaceId, WorkspaceSettings};
use crate::engine::{Engine, Reply, metric};
use crate::prompts::Key;
use crate::store::{Recorded, StoreError};

/// How long a claim holds before another process may take the pilot over.
pub const LEASE: Duration = Duration::minutes(5);
/// Pilots claimed at once.
const BATCH: i64 = 100;

/// The time, as the scheduler reads it: the real clock, or a test's.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryError {
    /// The user does not accept direct messages (Discord error 50007): use the reply's fallback.
    DmClosed,
    /// Anything else: the message is not recorded and is retried after the lease.
    Failed(String),
}

/// Where the scheduler hands messages over: a chat platform, the console, a test.
pub trait Outbox: Sync {
    /// Hands over `reply`, sent on behalf of `workspace` (a platform may need it to route the answers). Ok means
    /// the platform took it (the console printed it).
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

/// The scheduler of one process: sends what is due, as `worker` (a name no other process uses).
#[derive(Clone)]
pub struct Scheduler {
    engine: Engine,
    worker: String,
    lease: Duration,
}

impl Scheduler {
    pub fn new(engine: Engine, worker: impl Into<String>) -> Self {
        Self { engine, worker: worker.into(), lease: LEASE }
    }

    /// The same scheduler with another lease (tests with slow outboxes).
    pub fn with_lease(self, lease: Duration) -> Self {
        Self { lease, ..self }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// One pass: the due messages, then the due digests (optionally of one workspace). A failure is logged; the
    /// next pass tries again.
    pub async fn sweep<O: Outbox>(
        &self,
        clock: &(dyn Fn() -> DateTime<Utc> + Send + Sync),
        outbox: &O,
        ws: Option<&WorkspaceId>,
    ) {
        let workspace = ws.map(WorkspaceId::as_str);
        if let Err(e) = self.run_due(clock, outbox, ws).await {
            tracing::error!(error = %e, workspace, "scheduler run failed");
        }
        if let Err(e) = self.run_digests(clock(), outbox, ws).await {
            tracing::error!(error = %e, workspace, "digest run failed");
        }
    }

    /// Sweeps every `interval` until `stop` turns true, counting the passes in `runs`.
    pub async fn run_every<O: Outbox>(
        &self,
        clock: &(dyn Fn() -> DateTime<Utc> + Send + Sync),
        outbox: &O,
        ws: Option<&WorkspaceId>,
        interval: std::time::Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
        runs: &std::sync::atomic::AtomicU64,
    ) {
        loop {
            self.sweep(clock, outbox, ws).await;
            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Sends every message due at `clock()` (optionally in one workspace). The clock is read again for each claim,
    /// renewal and record: a lease counts from when it is taken.
    pub async fn run_due<O: Outbox>(
        &self,
        clock: &(dyn Fn() -> DateTime<Utc> + Send + Sync),
        outbox: &O,
        ws: Option<&WorkspaceId>,
    ) -> Result<RunOutcome, StoreError> {
        let store = self.engine.store();
        let mut settings: HashMap<String, WorkspaceSettings> = HashMap::new();
        let mut tried: HashSet<PilotId> = HashSet::new();
        let mut sent = 0;
        loop {
            let now = clock();
            let claimed = store.claim_due(now, now + self.lease, &self.worker, BATCH, ws).await?;
            // A pilot tried once in this run is not tried again by it (its send or record failed): its claim is
            // given back at once, for the next sweep or another process.
            let (claimed, again): (Vec<Pilot>, Vec<Pilot>) = claimed.into_iter().partition(|p| tried.insert(p.id));
            for pilot in again {
                store.set_next_action(&pilot.workspace, pilot.id, pilot.next_action_at, Some(&self.worker)).await?;
            }
            if claimed.is_empty() {
                break;
            }
            metrics::histogram!(metric::SWEEP_BATCH_SIZE).record(claimed.len() as f64);
            for pilot in claimed {
                let span = tracing::info_span!("due", workspace = pilot.workspace.as_str(), pilot = pilot.id.0);
                async {
                    let key = pilot.workspace.as_str().to_owned();
                    if !settings.contains_key(&key) {
                        settings.insert(key.clone(), store.settings(&pilot.workspace).await?);
                    }
                    let s = &settings[&key];
                    let tz = self.owner_zone(&pilot, s).await?;
                    let now = clock();
                    let mut state = pilot.schedule.clone();
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
                            if self.send_due(&pilot, &state, &due, s, tz, clock, outbox).await? {
                                sent += 1;
                            }
                        }
                        other => {
                            store
                                .set_next_action(&pilot.workspace, pilot.id, other.map(|d| d.at), Some(&self.worker))
                                .await?
                        }
                    }
                    Ok::<(), StoreError>(())
                }
                .instrument(span)
                .await?;
            }
        }
        Ok(if sent == 0 { RunOutcome::NothingDue } else { RunOutcome::Sent(sent) })
    }

    /// Sends one due item's messages and records them, if this process still holds the pilot's claim; whether it
    /// did.
    #[allow(clippy::too_many_arguments)]
    async fn send_due<O: Outbox>(
        &self,
        pilot: &Pilot,
        state: &ScheduleState,
        due: &Due,
        settings: &WorkspaceSettings,
        tz: chrono_tz::Tz,
        clock: &(dyn Fn() -> DateTime<Utc> + Send + Sync),
        outbox: &O,
    ) -> Result<bool, StoreError> {
        let store = self.engine.store();
        let esc = escalation(state, due, settings);
        for reply in self.due_messages(pilot, state, due, esc, settings, clock()) {
            // The claim is checked (and renewed) before each send: one that ran out sends nothing.
            let now = clock();
            if !store.renew_claim(&pilot.workspace, pilot.id, &self.worker, now, now + self.lease).await? {
                tracing::warn!(pilot = pilot.id.0, "the claim ran out before sending; another process may send it");
                return Ok(false);
            }
            let kind = match due.kind {
                DueKind::HeadsUp => "heads_up",
                DueKind::Nudge => "nudge",
            };
            match outbox.deliver(now, &pilot.workspace, &reply).await {
                Ok(()) => metric::scheduled(kind, "sent"),
                Err(DeliveryError::DmClosed) => {
                    if let Some(fallback) = &reply.fallback {
                        if let Err(e) = outbox.deliver(now, &pilot.workspace, fallback).await {
                            metric::scheduled(kind, "failed");
                            tracing::warn!(pilot = pilot.id.0, error = ?e, "fallback delivery failed; retried after the lease");
                            return Ok(false);
                        }
                        metric::scheduled(kind, "fallback");
                    }
                }
                Err(DeliveryError::Failed(e)) => {
                    metric::scheduled(kind, "failed");
                    tracing::warn!(pilot = pilot.id.0, error = %e, "delivery failed; retried after the lease");
                    return Ok(false);
                }
            }
        }
        let now = clock();
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
        // A nudge's actions wait for the owner's answer as an ask, opened with the record of the nudge; there is
        // none without an owner who accepted, nor for a pilot already in production (its evidence is owed).
        let ask = match (due.kind, accepted_owner(pilot), pilot.stage) {
            (DueKind::Nudge, Some(owner), Stage::Scoped) => Some((owner.clone(), AskKind::Nudge { cycle: due.cycle })),
            _ => None,
        };
        match store.record_sent(pilot, due, &next_state, next, &extra, ask, now, &self.worker).await? {
            Recorded::Sent => {
                tracing::info!(kind = ?due.kind, cycle = %due.cycle, "scheduled message sent and recorded");
                Ok(true)
            }
            Recorded::AlreadySent => Ok(false),
            Recorded::ClaimLost => {
                tracing::warn!(
                    pilot = pilot.id.0,
                    "sent, but the claim ran out before it was recorded: sent again later"
                );
                Ok(false)
            }
        }
    }

    /// The messages a due item sends. To an owner who accepted: a heads-up, then nudges with their actions, and what
    /// escalation adds. Without one (never accepted, declined), the registrant and the sponsor are asked to name an
    /// owner instead, and escalations say that no one has accepted ownership. A pilot scaled by override is reminded
    /// of the evidence it owes.
    fn due_messages(
        &self,
        pilot: &Pilot,
        state: &ScheduleState,
        due: &Due,
        esc: Escalation,
        settings: &WorkspaceSettings,
        now: DateTime<Utc>,
    ) -> Vec<Reply> {
        let e = &self.engine;
        let p = e.prompts();
        let today = now.date_naive();
        let missing = e.missing_evidence(pilot);
        let count = pilot.evidence_count();
        let date = due.cycle.to_string();
        let dm = |user: &UserId, text: String| e.dm(pilot, user, text, vec![]);
        let evidence = vec![crate::engine::Shortcut {
            label: p.text(Key::ShortcutEvidence),
            command: format!("/pilot evidence #{}", pilot.id.0),
        }];
        let owner = accepted_owner(pilot).cloned();
        // Who is asked to name an owner when there is none: the registrant and the sponsor.
        let namers: Vec<UserId> = std::iter::once(pilot.registered_by.clone())
            .chain(pilot.sponsor.clone().filter(|s| *s != pilot.registered_by))
            .collect();
        let owner_needed = |out: &mut Vec<Reply>| {
            for to in &namers {
                let text = p.render(
                    Key::OwnerNeededDm,
                    context! {
                        pilot => pilot.name, date, owner => e.person(pilot.owner.as_ref()),
                        declined => pilot.owner_status == OwnerStatus::Declined, overdue => due.kind == DueKind::Nudge,
                    },
                );
                let name = crate::engine::Shortcut {
                    label: p.text(Key::ShortcutNameOwner),
                    command: format!("/pilot edit #{} owner", pilot.id.0),
                };
                out.push(Engine::with_shortcuts(dm(to, text), vec![name]));
            }
        };
        let mut out = Vec::new();
        let st = state.for_cycle(due.cycle);
        let unanswered = st.unanswered + 1;
        let debt = pilot.stage == Stage::InProduction;
        match (due.kind, &owner) {
            (_, None) => owner_needed(&mut out),
            (DueKind::HeadsUp, Some(owner)) if !debt => {
                let text = p.render(Key::HeadsUp, context! { pilot => pilot.name, date, count, missing });
                out.push(Engine::with_shortcuts(dm(owner, text), evidence));
            }
            (_, Some(owner)) if debt => {
                let overdue = due.kind == DueKind::Nudge;
                let text =
                    p.render(Key::EvidenceDebtDm, context! { pilot => pilot.name, date, count, missing, overdue });
                out.push(Engine::with_shortcuts(dm(owner, text), evidence));
            }
            (_, Some(owner)) => {
                let text = p.render(
                    Key::NudgeDm,
                    context! {
                        pilot => pilot.name, date, count, missing, nudge => st.cycle_nudges + 1,
                        snooze_days => settings.snooze_days,
                    },
                );
                out.push(e.ask_dm(pilot, owner, &AskKind::Nudge { cycle: due.cycle }, text));
            }
        }
        if esc.escalate {
            // The sponsor steps in (the registrant when there is none); never the owner who did not answer.
            let to = pilot.sponsor.clone().filter(|s| pilot.owner.as_ref() != Some(s));
            let to = to.unwrap_or_else(|| pilot.registered_by.clone());
            let text = p.render(
                Key::EscalationDm,
                context! {
                    pilot => pilot.name, date, owner => e.person(owner.as_ref()), nudges => unanswered, count,
                    missing, owner_accepted => owner.is_some(), debt,
                },
            );
            // A pilot in production on credit may still be killed; nothing else is left to decide.
            let shortcuts = e.decide_shortcuts(pilot).into_iter().filter(|s| !debt || s.command.ends_with(" kill"));
            let shortcuts = shortcuts.collect();
            out.push(Engine::with_shortcuts(dm(&to, text), shortcuts));
        }
        if esc.post && !debt {
            let (_, reasons) = outcome(pilot, today.max(due.cycle.succ_opt().unwrap_or(due.cycle)));
            let channel = settings.review_channel.clone().map(crate::domain::ChannelId::new);
            let ping: Vec<UserId> = owner.iter().cloned().chain(pilot.sponsor.clone()).collect();
            let text = p.render(
                Key::RiskPost,
                context! {
                    pilot => pilot.name, date, owner => e.person(owner.as_ref()),
                    sponsor => e.person(pilot.sponsor.as_ref()), nudges => unanswered,
                    reasons => e.reason_labels(&reasons), owner_accepted => owner.is_some(),
                },
            );
            let post = Reply::post(channel.unwrap_or_else(|| pilot.home_channel.clone()), text, ping);
            out.push(Reply { shortcuts: e.decide_shortcuts(pilot), ..post });
        }
        out
    }

    /// The zone messages to a pilot's owner follow: their own when they set one, else the workspace's.
    async fn owner_zone(&self, pilot: &Pilot, settings: &WorkspaceSettings) -> Result<chrono_tz::Tz, StoreError> {
        let own = match &pilot.owner {
            Some(owner) => self.engine.store().user_timezone(&pilot.workspace, owner).await?,
            None => None,
        };
        Ok(own_or_workspace_zone(own, settings))
    }
}

/// The owner of a pilot, once they accepted: a declined or pending owner is no owner yet.
fn accepted_owner(pilot: &Pilot) -> Option<&UserId> {
    pilot.owner.as_ref().filter(|_| pilot.owner_status == OwnerStatus::Accepted)
}
