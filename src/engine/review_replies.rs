//! Rendering of the review lifecycle: evidence and decision questions, owner acceptance by direct message,
//! decisions announced in the channel, and the cards and list lines that show outcome and flags.

use chrono::NaiveDate;
use minijinja::context;

use super::{AskRef, Destination, Engine, Expect, Reply, Request, Shortcut};
use crate::dialogue::{AskKind, At, Say, Scratch, asks, evidence, review};
use crate::domain::answer::MAX_ANSWER_CHARS;
use crate::domain::lifecycle::{Flag, Outcome, RiskReason, flags, outcome};
use crate::domain::{
    DecisionKind, EvidenceKind, KillCategory, OwnerStatus, Pilot, ReviewWindow, UserId, WorkspaceSettings,
};
use crate::prompts::Key;

fn outcome_key(o: Outcome) -> Key {
    match o {
        Outcome::Open => Key::OutcomeOpen,
        Outcome::InProduction => Key::OutcomeInProduction,
        Outcome::SlowBurningBet => Key::OutcomeSlowBurningBet,
        Outcome::HealthyKill => Key::OutcomeHealthyKill,
        Outcome::AbsorptionFailure => Key::OutcomeAbsorptionFailure,
        Outcome::AbsorptionRisk => Key::OutcomeAbsorptionRisk,
    }
}

fn flag_key(f: Flag) -> Key {
    match f {
        Flag::OwnerNotAccepted => Key::FlagOwnerNotAccepted,
        Flag::Overdue => Key::FlagOverdue,
        Flag::ScaledWithoutEvidence => Key::FlagScaledWithoutEvidence,
        Flag::NoSponsor => Key::FlagNoSponsor,
    }
}

fn reason_key(r: RiskReason) -> Key {
    match r {
        RiskReason::NoAcceptedOwner => Key::ReasonNoAcceptedOwner,
        RiskReason::NoLiveWorkflow => Key::ReasonNoLiveWorkflow,
        RiskReason::OwnerNotRunning => Key::ReasonOwnerNotRunning,
        RiskReason::NoPnlMovement => Key::ReasonNoPnlMovement,
    }
}

fn kill_key(c: KillCategory) -> Key {
    match c {
        KillCategory::NotWorthScaling => Key::KillNotWorthScaling,
        KillCategory::StalledInHandoff => Key::KillStalledInHandoff,
    }
}

impl Engine {
    fn join_labels(&self, keys: impl IntoIterator<Item = Key>) -> String {
        keys.into_iter().map(|k| self.prompts.text(k)).collect::<Vec<_>>().join(", ")
    }

    /// `✓ Workflow live · ✗ Owner runs it · ✗ P&L moved`.
    fn evidence_line(&self, p: &Pilot) -> String {
        EvidenceKind::ALL
            .iter()
            .map(|k| {
                format!("{} {}", if p.has_evidence(*k) { "✓" } else { "✗" }, self.prompts.text(evidence::label_key(*k)))
            })
            .collect::<Vec<_>>()
            .join(" · ")
    }

    pub(crate) fn missing_evidence(&self, p: &Pilot) -> String {
        self.join_labels(EvidenceKind::ALL.into_iter().filter(|k| !p.has_evidence(*k)).map(evidence::label_key))
    }

    pub(crate) fn reason_labels(&self, reasons: &[RiskReason]) -> String {
        self.join_labels(reasons.iter().map(|r| reason_key(*r)))
    }

    /// A direct message, with a mention in the pilot's home channel to fall back on when DMs are closed.
    pub(crate) fn dm(&self, pilot: &Pilot, user: &UserId, text: String, choices: Vec<String>) -> Reply {
        let fallback_text =
            self.prompts.render(Key::DmFallback, context! { user => user.mention(), text => text.clone() });
        let expect = (!choices.is_empty()).then_some(Expect::Choice);
        let fallback = Reply {
            choices: choices.clone(),
            ping: vec![user.clone()],
            expect: expect.clone(),
            ..Reply::new(Destination::Channel(pilot.home_channel.clone()), fallback_text)
        };
        Reply {
            choices,
            ping: vec![user.clone()],
            expect,
            fallback: Some(Box::new(fallback)),
            ..Reply::new(Destination::Dm(user.clone()), text)
        }
    }

    /// A question by direct message (an ask): its choices, and the reference that routes a click to it alone.
    pub(crate) fn ask_dm(&self, pilot: &Pilot, user: &UserId, kind: &AskKind, text: String) -> Reply {
        let choices = asks::choices(kind).iter().map(|k| self.prompts.text(*k)).collect();
        let question = Some(AskRef { kind: kind.name().to_owned(), pilot: pilot.id, user: user.clone() }.to_string());
        let mut reply = self.dm(pilot, user, text, choices);
        reply.question = question.clone();
        if let Some(fallback) = reply.fallback.as_mut() {
            fallback.question = question;
        }
        reply
    }

    /// The decisions at a review, as shortcuts to `/pilot review` (whoever clicks must be allowed to decide).
    pub(crate) fn decide_shortcuts(&self, pilot: &Pilot) -> Vec<Shortcut> {
        [(Key::ShortcutScale, "scale"), (Key::ShortcutExtend, "extend"), (Key::ShortcutKill, "kill")]
            .into_iter()
            .map(|(key, decision)| Shortcut {
                label: self.prompts.text(key),
                command: format!("/pilot review #{} {decision}", pilot.id.0),
            })
            .collect()
    }

    /// `reply` and its fallback, with shortcuts.
    pub(crate) fn with_shortcuts(mut reply: Reply, shortcuts: Vec<Shortcut>) -> Reply {
        if let Some(fallback) = reply.fallback.as_mut() {
            fallback.shortcuts = shortcuts.clone();
        }
        reply.shortcuts = shortcuts;
        reply
    }

    fn decision_text(&self, p: &Pilot) -> Option<String> {
        let decision = p.decision?;
        let reason = p.decision_reason.clone().filter(|r| !r.is_empty());
        let head = match (decision, p.kill_category) {
            (DecisionKind::Kill, Some(c)) => format!("kill — {}", self.prompts.text(kill_key(c))),
            (d, _) => d.as_str().to_owned(),
        };
        Some(match reason {
            Some(r) => format!("{head}: {r}"),
            None => head,
        })
    }

    fn owner_status(&self, s: OwnerStatus) -> String {
        self.prompts.text(match s {
            OwnerStatus::Pending => Key::OwnerPending,
            OwnerStatus::Accepted => Key::OwnerAcceptedLabel,
            OwnerStatus::Declined => Key::OwnerDeclinedLabel,
        })
    }

    /// A pilot's card: answers, stage, outcome with its reasons, flags, evidence, decision.
    pub fn card(&self, pilot: &Pilot, today: NaiveDate) -> String {
        let not_set = || self.prompts.text(Key::NotSet);
        let (line, baseline, target, realised) = match &pilot.pnl {
            Some(t) => (
                t.line.clone(),
                Some(t.format_value(t.baseline)),
                Some(t.format_value(t.target)),
                pilot.evidence.pnl_realised.map(|v| t.format_value(v)),
            ),
            None => (not_set(), None, None, None),
        };
        let (o, reasons) = outcome(pilot, today);
        self.prompts.render(
            Key::Card,
            context! {
                id => pilot.id.0, pilot => pilot.name, stage => self.stage(pilot.stage),
                workflow => pilot.workflow.clone().unwrap_or_else(not_set),
                owner => self.person(pilot.owner.as_ref()), owner_status => self.owner_status(pilot.owner_status),
                sponsor => self.person(pilot.sponsor.as_ref()),
                pnl_line => line, baseline, target, realised, review_date => self.date(pilot.review_date),
                registrant => pilot.registered_by.mention(),
                registered_at => pilot.registered_at.format("%Y-%m-%d %H:%M UTC").to_string(),
                outcome => self.prompts.text(outcome_key(o)),
                reasons => self.join_labels(reasons.into_iter().map(reason_key)),
                flags => self.join_labels(flags(pilot, today).into_iter().map(flag_key)),
                evidence_count => pilot.evidence_count(), evidence => self.evidence_line(pilot),
                decision => self.decision_text(pilot), extensions => pilot.extensions,
                evidence_due => pilot.evidence_due.map(|d| d.to_string()),
                next_review_date => self.date(pilot.due_date()),
            },
        )
    }

    pub(super) fn list_item(&self, pl: &Pilot, today: NaiveDate) -> String {
        self.prompts.render(
            Key::ListItem,
            context! {
                id => pl.id.0, pilot => pl.name, stage => self.stage(pl.stage),
                owner => self.person(pl.owner.as_ref()), review_date => self.date(pl.due_date()),
                owner_status => (pl.owner.is_some() && pl.owner_status != OwnerStatus::Accepted)
                    .then(|| self.owner_status(pl.owner_status)),
                outcome => self.prompts.text(outcome_key(outcome(pl, today).0)),
                flags => self.join_labels(flags(pl, today).into_iter().map(flag_key)),
                evidence_count => pl.evidence_count(),
            },
        )
    }

    /// The questions of the evidence and review conversations.
    pub(super) fn ask_lifecycle(
        &self,
        req: &Request,
        settings: &WorkspaceSettings,
        at: At,
        pilot: Option<&Pilot>,
        scratch: &Scratch,
    ) -> Reply {
        let p = &self.prompts;
        let Some(pl) = pilot else {
            return self.ephemeral(req, p.text(Key::AskVoid));
        };
        let name = pl.name.clone();
        let (pnl_line, baseline, target) = match &pl.pnl {
            Some(t) => (t.line.clone(), t.format_value(t.baseline), t.format_value(t.target)),
            None => Default::default(),
        };
        let text_for = |label: Key, multiline| {
            Some(Expect::Text { label: p.text(label), current: None, max_chars: MAX_ANSWER_CHARS, multiline })
        };
        let reason = || text_for(Key::FieldReason, true);
        let (text, choices, expect) = match at {
            At::PickEvidence => (
                p.render(
                    Key::AskPickEvidence,
                    context! { pilot => name, count => pl.evidence_count(), items => self.evidence_line(pl) },
                ),
                EvidenceKind::ALL.iter().map(|k| p.text(evidence::label_key(*k))).collect(),
                Some(Expect::Choice),
            ),
            At::Evidence(EvidenceKind::WorkflowLive) => (
                p.render(Key::AskEvidenceWorkflowLive, context! { pilot => name, workflow => pl.workflow.clone() }),
                vec![],
                text_for(evidence::label_key(EvidenceKind::WorkflowLive), true),
            ),
            At::Evidence(EvidenceKind::OwnerRunning) => (
                p.render(Key::AskEvidenceOwnerRunning, context! { pilot => name }),
                vec![],
                text_for(evidence::label_key(EvidenceKind::OwnerRunning), true),
            ),
            At::Evidence(EvidenceKind::PnlMoved) => (
                p.render(Key::AskEvidencePnlMoved, context! { pilot => name, pnl_line, baseline, target }),
                vec![],
                text_for(evidence::label_key(EvidenceKind::PnlMoved), false),
            ),
            At::ScaleOverride => (
                p.render(
                    Key::AskScaleOverride,
                    context! { pilot => name, count => pl.evidence_count(), missing => self.missing_evidence(pl) },
                ),
                vec![],
                reason(),
            ),
            At::ExtendDate => {
                let window = ReviewWindow::new(req.now.date_naive(), self.settings.review_horizon_days);
                (
                    p.render(
                        Key::AskExtendDate,
                        context! {
                            pilot => name, extensions => pl.extensions, latest_date => window.latest.to_string(),
                        },
                    ),
                    vec![],
                    text_for(Key::StepReviewDate, false),
                )
            }
            At::ExtendReason => (
                p.render(Key::AskExtendReason, context! { pilot => name, date => self.date(scratch.date) }),
                vec![],
                reason(),
            ),
            At::KillCategory => (
                p.render(Key::AskKillCategory, context! { pilot => name }),
                review::KILL_CHOICES.iter().map(|(_, k)| p.text(*k)).collect(),
                Some(Expect::Choice),
            ),
            At::KillReason => (
                p.render(
                    Key::AskKillReason,
                    context! { pilot => name, category => scratch.category.map(|c| p.text(kill_key(c))) },
                ),
                vec![],
                reason(),
            ),
            At::Ask(_) | At::Confirm | At::PickEdit | At::Duplicate => {
                return self.question(req, settings, at, pilot, scratch);
            }
        };
        Reply { choices, expect, ..self.ephemeral(req, text) }
    }

    /// What the lifecycle says: evidence recorded, decisions announced, asks sent and answered.
    pub(super) fn say_lifecycle(
        &self,
        req: &Request,
        say: Say,
        before: Option<&Pilot>,
        after: Option<&Pilot>,
        out: &mut Vec<Reply>,
    ) {
        let p = &self.prompts;
        let Some(pilot) = after.or(before) else {
            out.push(self.ephemeral(req, p.text(Key::AskVoid)));
            return;
        };
        let name = pilot.name.clone();
        let dm = |user: &UserId, text: String, choices: Vec<String>| self.dm(pilot, user, text, choices);
        let channel = |text: String, ping: Vec<UserId>| Reply::post(pilot.home_channel.clone(), text, ping);
        match say {
            Say::AskOwner => {
                let Some(owner) = &pilot.owner else { return };
                let (pnl_line, baseline, target) = match &pilot.pnl {
                    Some(t) => (t.line.clone(), t.format_value(t.baseline), t.format_value(t.target)),
                    None => Default::default(),
                };
                let text = p.render(
                    Key::AskOwnerDm,
                    context! {
                        pilot => name, registrant => pilot.registered_by.mention(), workflow => pilot.workflow.clone(),
                        pnl_line, baseline, target, review_date => self.date(pilot.due_date()),
                    },
                );
                out.push(self.ask_dm(pilot, owner, &crate::dialogue::AskKind::AcceptOwnership, text));
            }
            Say::Stopped => out.push(self.ephemeral(req, p.render(Key::Stopped, context! { pilot => name }))),
            Say::EvidenceRecorded(EvidenceKind::PnlMoved) if !pilot.has_evidence(EvidenceKind::PnlMoved) => {
                let (baseline, target, realised) = match (&pilot.pnl, pilot.evidence.pnl_realised) {
                    (Some(t), Some(v)) => (t.format_value(t.baseline), t.format_value(t.target), t.format_value(v)),
                    _ => Default::default(),
                };
                let text = p.render(
                    Key::EvidenceNotMoved,
                    context! { pilot => name, realised, baseline, target, count => pilot.evidence_count() },
                );
                out.push(self.ephemeral(req, text));
            }
            Say::EvidenceRecorded(kind) => {
                let missing = self.missing_evidence(pilot);
                let text = p.render(
                    Key::EvidenceRecorded,
                    context! {
                        pilot => name, item => p.text(evidence::label_key(kind)),
                        count => pilot.evidence_count(), missing => (!missing.is_empty()).then_some(missing),
                    },
                );
                out.push(self.ephemeral(req, text));
            }
            Say::Decided(kind) => {
                let decider = req.user.mention();
                let reason = pilot.decision_reason.clone().unwrap_or_default();
                let text = match kind {
                    DecisionKind::Scale => p.render(
                        Key::AnnounceScaled,
                        context! {
                            pilot => name, decider, owner => self.person(pilot.owner.as_ref()),
                            override_reason => pilot.scale_override.then_some(reason),
                        },
                    ),
                    DecisionKind::Extend => p.render(
                        Key::AnnounceExtended,
                        context! {
                            pilot => name, decider, date => self.date(pilot.due_date()), reason,
                            extensions => pilot.extensions,
                        },
                    ),
                    DecisionKind::Kill => p.render(
                        Key::AnnounceKilled,
                        context! {
                            pilot => name, decider,
                            category => pilot.kill_category.map(|c| p.text(kill_key(c))), reason,
                        },
                    ),
                };
                out.push(channel(text, pilot.owner.iter().cloned().collect()));
            }
            Say::ExtensionAwaitsSponsor { date, reason, limit, approver } => {
                let text = if pilot.extensions >= limit {
                    p.render(
                        Key::ExtensionAwaitsSponsor,
                        context! { pilot => name, sponsor => approver.mention(), limit },
                    )
                } else {
                    let date = date.to_string();
                    p.render(Key::ExtensionRequested, context! { pilot => name, approver => approver.mention(), date })
                };
                out.push(self.ephemeral(req, text));
                let text = p.render(
                    Key::AskApproveExtension,
                    context! {
                        pilot => name, requester => req.user.mention(), date => date.to_string(), reason,
                        extensions => pilot.extensions, limit,
                    },
                );
                let kind = crate::dialogue::AskKind::ApproveExtension {
                    date,
                    reason: String::new(),
                    requested_by: req.user.clone(),
                };
                out.push(self.ask_dm(pilot, &approver, &kind, text));
            }
            Say::OwnerAccepted => {
                out.push(self.ephemeral(req, p.render(Key::OwnerAcceptedReply, context! { pilot => name })));
                if pilot.registered_by != req.user {
                    let text =
                        p.render(Key::OwnerAcceptedNotice, context! { pilot => name, owner => req.user.mention() });
                    out.push(dm(&pilot.registered_by, text, vec![]));
                }
            }
            Say::OwnerDeclined { reason } => {
                let sponsor = pilot.sponsor.as_ref().filter(|s| **s != pilot.registered_by);
                out.push(self.ephemeral(
                    req,
                    p.render(Key::OwnerDeclinedReply, context! { pilot => name, sponsor => sponsor.is_some() }),
                ));
                // No one owns the last mile now: those who can name an owner are asked to.
                let owner = req.user.mention();
                let text = p.render(Key::OwnerDeclinedNotice, context! { pilot => name, owner, reason });
                out.push(dm(&pilot.registered_by, text, vec![]));
                if let Some(sponsor) = sponsor {
                    let text = p.render(Key::OwnerDeclinedSponsorNotice, context! { pilot => name, owner, reason });
                    out.push(dm(sponsor, text, vec![]));
                }
            }
            Say::ExtensionApproved { requested_by } => {
                out.push(self.ephemeral(req, p.text(Key::AnswerRecorded)));
                let text = p.render(
                    Key::ExtensionApproved,
                    context! { pilot => name, sponsor => req.user.mention(), date => self.date(pilot.due_date()) },
                );
                out.push(dm(&requested_by, text, vec![]));
                self.say_lifecycle(req, Say::Decided(DecisionKind::Extend), before, after, out);
            }
            Say::ExtensionRefused { requested_by } => {
                out.push(self.ephemeral(req, p.text(Key::AnswerRecorded)));
                let text = p.render(Key::ExtensionRefused, context! { pilot => name, sponsor => req.user.mention() });
                out.push(dm(&requested_by, text, vec![]));
            }
            Say::AskVoid => out.push(self.ephemeral(req, p.text(Key::AskVoid))),
            Say::Snoozed { until } => {
                let until = until.format("%Y-%m-%d %H:%M UTC").to_string();
                out.push(self.ephemeral(req, p.render(Key::Snoozed, context! { pilot => name, until })));
            }
            Say::SnoozeLimit { max } => {
                out.push(self.ephemeral(req, p.render(Key::SnoozeLimit, context! { pilot => name, max })))
            }
            // The scoping conversation's own sayings are rendered by `say`.
            _ => {}
        }
    }
}
