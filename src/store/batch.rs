//! PostgreSQL: a batch of turns written in one round trip, by the functions of
//! migrations/postgres/0012_apply_faster.sql (first written in 0009). Each turn becomes a plan: its guard and
//! effects with every value already prepared as text, so the function only writes. One outcome comes back per
//! turn, in order: the pilot's row as the turn left it, or why the turn was not written.

use chrono::SecondsFormat;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;

use super::commit::{OwnedGuard, Turn};
use super::rows::{PilotRow, flow_str};
use super::{Applied, Released, StoreError, merged_save, scratch_json};
use crate::dialogue::{Change, Conversation, Effect};
use crate::domain::{DecisionKind, EvidenceKind, PilotId, UserId};

/// A turn as the function reads it.
#[derive(Serialize)]
struct Plan {
    ws: String,
    actor: String,
    now: String,
    pilot: Option<i64>,
    channel: String,
    guard: Value,
    effects: Vec<Value>,
    /// For a turn that claims a name: a draft holding it whose last answer is no later than this is abandoned.
    #[serde(skip_serializing_if = "Option::is_none")]
    abandoned_before: Option<String>,
}

/// What the function answers for one turn.
#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    pilot: Option<i64>,
    #[serde(default)]
    row: Option<PilotRow>,
    /// The abandoned registration whose name the turn took over.
    #[serde(default)]
    released: Option<ReleasedAnswer>,
}

#[derive(Deserialize)]
struct ReleasedAnswer {
    registrant: String,
    name: String,
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> String {
    // Microseconds, as PostgreSQL keeps them (and as sqlx binds them).
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn conversation(c: &Conversation, pilot: Option<i64>) -> serde_json::Map<String, Value> {
    let v = json!({
        "flow": flow_str(c.flow),
        "at": c.at.as_str(),
        "pilot": pilot,
        "channel": c.channel.as_str(),
        "rtc": c.return_to_confirm,
        "scratch": scratch_json(c),
    });
    match v {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// The plan of one turn; an ask whose payload cannot be written fails the turn before anything is sent.
fn plan(turn: &Turn) -> Result<Plan, StoreError> {
    let effects = turn.effects.as_slice();
    // A turn that moves an existing conversation on saves it with the guard's own write.
    let merged = match &turn.guard {
        OwnedGuard::At(_) => merged_save(effects, turn.pilot),
        _ => None,
    };
    let guard = match &turn.guard {
        OwnedGuard::Any => json!({"kind": "any"}),
        OwnedGuard::NoConversation => json!({"kind": "none"}),
        OwnedGuard::At(c) => json!({
            "kind": "at",
            "flow": flow_str(c.flow),
            "at": c.at.as_str(),
            "rtc": c.return_to_confirm,
            "pilot": c.pilot.map(|p| p.0),
            "save": merged.map(|(new, pilot)| Value::Object(conversation(new, pilot))),
        }),
    };
    let merged = merged.map(|(c, _)| c);
    let mut planned = Vec::with_capacity(effects.len());
    for effect in effects {
        let e = match effect {
            Effect::CreateDraft(name) => json!({"kind": "create_draft", "name": name.as_str(), "key": name.key()}),
            Effect::Set(change) => {
                let mut e = json!({"kind": "set", "field": change.step().as_str(), "audit": super::rows::audit_new_value(change)});
                let extra = match change {
                    Change::Name(n) => json!({"value": n.as_str(), "key": n.key()}),
                    Change::Workflow(t) => json!({"value": t}),
                    Change::Owner(u) => json!({"value": u.as_str()}),
                    Change::Sponsor(u) => json!({"value": u.as_ref().map(UserId::as_str)}),
                    Change::Pnl(p) => {
                        json!({"line": p.line, "unit": p.unit, "baseline": p.baseline, "target": p.target})
                    }
                    Change::ReviewDate(d) => json!({"value": d.to_string()}),
                };
                if let (Value::Object(e), Value::Object(extra)) = (&mut e, extra) {
                    e.extend(extra);
                }
                e
            }
            Effect::SetStage(stage) => json!({"kind": "set_stage", "stage": stage.as_str()}),
            Effect::DeleteDraft => json!({"kind": "delete_draft"}),
            Effect::SaveConversation(c) if merged.is_some_and(|m| std::ptr::eq(m, c)) => continue,
            Effect::SaveConversation(c) => {
                let mut e = conversation(c, c.pilot.map(|p| p.0));
                e.insert("kind".into(), "save_conversation".into());
                e.insert("insert_only".into(), matches!(turn.guard, OwnedGuard::NoConversation).into());
                Value::Object(e)
            }
            Effect::EndConversation => json!({"kind": "end_conversation"}),
            Effect::AddEvidence(item) => json!({
                "kind": "add_evidence",
                "evidence": item.kind.as_str(),
                "marks": match item.kind {
                    EvidenceKind::WorkflowLive => "workflow_live",
                    EvidenceKind::OwnerRunning => "owner_running",
                    EvidenceKind::PnlMoved => "pnl_realised",
                },
                "note": item.note,
                "value": item.value,
                "period": item.period,
                "source": item.source,
            }),
            Effect::Decide(d) => json!({
                "kind": "decide",
                "decision": match d.kind {
                    DecisionKind::Scale => "scale",
                    DecisionKind::Extend => "extend",
                    DecisionKind::Kill => "kill",
                },
                "reason": d.reason,
                "override": d.override_evidence,
                "new_date": d.new_date.map(|d| d.to_string()),
                "category": d.category.map(|c| c.as_str()),
                "audit": super::rows::decision_audit(d),
            }),
            Effect::SetOwnerStatus { status, reason } => json!({
                "kind": "set_owner_status",
                "status": status.as_str(),
                "has_reason": reason.is_some(),
                "audit": super::rows::owner_status_audit(*status, reason.as_deref()),
            }),
            Effect::OpenAsk { user, kind } => json!({
                "kind": "open_ask",
                "user": user.as_str(),
                "ask": kind.name(),
                "payload": serde_json::to_string(kind).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            }),
            Effect::CloseAsk(ask) => json!({"kind": "close_ask", "ask": ask}),
            Effect::NudgeAnswered => json!({"kind": "nudge_answered"}),
            Effect::Snooze { until } => {
                json!({"kind": "snooze", "until": timestamp(*until), "audit": until.to_rfc3339()})
            }
        };
        planned.push(e);
    }
    let claims_name = effects.iter().any(|e| matches!(e, Effect::CreateDraft(_) | Effect::Set(Change::Name(_))));
    Ok(Plan {
        abandoned_before: claims_name.then(|| timestamp(turn.now - crate::domain::pilot::DRAFT_ABANDONED_AFTER)),
        ws: turn.ws.as_str().to_owned(),
        actor: turn.actor.as_str().to_owned(),
        now: timestamp(turn.now),
        pilot: turn.pilot.map(|p| p.0),
        channel: turn.channel.clone(),
        guard,
        effects: planned,
    })
}

fn outcome(answer: Answer) -> Result<Applied, StoreError> {
    match answer.error.as_deref() {
        None => Ok(Applied {
            id: answer.pilot.map(PilotId),
            pilot: answer.row.map(PilotRow::into_domain).transpose()?,
            released: answer.released.map(|r| Released { registrant: UserId::new(r.registrant), name: r.name }),
        }),
        Some("conflict") => Err(StoreError::Conflict),
        Some("name_taken") => Err(StoreError::NameTaken),
        Some("pilot_gone") => Err(StoreError::PilotGone),
        Some(_) => Err(StoreError::Refused(answer.message.unwrap_or_default())),
    }
}

/// How a call runs its turns.
#[derive(Clone, Copy)]
enum Mode {
    /// All in the call's transaction (`lastmile_apply_together`): the first failing turn fails the call.
    Together,
    /// Each in its own subtransaction (`lastmile_apply`): one outcome per turn, whatever the others did.
    Isolated,
}

/// Sends the plans in one call (one transaction); one outcome per plan, or the error of the call itself.
async fn call(pool: &PgPool, plans: &[&Plan], mode: Mode) -> Result<Vec<Result<Applied, StoreError>>, StoreError> {
    let body = serde_json::to_string(plans).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let sql = match mode {
        Mode::Together => "SELECT lastmile_apply_together($1::jsonb)::text",
        Mode::Isolated => "SELECT lastmile_apply($1::jsonb)::text",
    };
    let answers: String = sqlx::query_scalar(sql).bind(body).fetch_one(pool).await?;
    let answers: Vec<Answer> =
        serde_json::from_str(&answers).map_err(|e| StoreError::Corrupt(format!("lastmile_apply answered: {e}")))?;
    if answers.len() != plans.len() {
        return Err(StoreError::Corrupt(format!("lastmile_apply answered {} of {} turns", answers.len(), plans.len())));
    }
    Ok(answers.into_iter().map(outcome).collect())
}

/// Writes `turns` in one round trip when it can. Returns one outcome per turn and how many transactions committed.
/// A turn the batch could not write for a reason of the database's (a deadlock with another writer's batch, say),
/// and every turn when the call itself failed (a dropped connection), is tried once more on its own: as the SQLite
/// writer runs a failing turn alone.
pub(super) async fn write(pool: &PgPool, turns: &[Turn]) -> (Vec<Result<Applied, StoreError>>, u64) {
    let plans: Vec<Result<Plan, StoreError>> = turns.iter().map(plan).collect();
    let ready: Vec<&Plan> = plans.iter().filter_map(|p| p.as_ref().ok()).collect();
    let mut commits = 0;
    // None: to be tried again on its own.
    let mut outcomes: Vec<Option<Result<Applied, StoreError>>> = match ready.len() {
        0 => Vec::new(),
        // Most batches write cleanly: first without a subtransaction per turn, which costs every turn. When that
        // fails (a conflict, a taken name), nothing of it was kept, and the batch goes again turn by turn.
        n => match match n {
            1 => call(pool, &ready, Mode::Isolated).await,
            _ => match call(pool, &ready, Mode::Together).await {
                Ok(outcomes) => Ok(outcomes),
                Err(_) => call(pool, &ready, Mode::Isolated).await,
            },
        } {
            Ok(outcomes) => {
                commits += 1;
                outcomes
                    .into_iter()
                    .map(|o| (!matches!(o, Err(StoreError::Refused(_))) || ready.len() == 1).then_some(o))
                    .collect()
            }
            Err(e) if ready.len() == 1 => vec![Some(Err(e))],
            Err(e) => {
                tracing::warn!("a batch of {} turns failed ({e}); writing each on its own", ready.len());
                ready.iter().map(|_| None).collect()
            }
        },
    };
    for (plan, outcome) in ready.iter().zip(outcomes.iter_mut()) {
        if outcome.is_none() {
            *outcome = Some(match call(pool, &[plan], Mode::Isolated).await {
                Ok(mut one) => {
                    commits += 1;
                    one.pop().unwrap_or(Err(StoreError::Conflict))
                }
                Err(e) => Err(e),
            });
        }
    }
    let mut answered = outcomes.into_iter().map(|o| o.unwrap_or(Err(StoreError::Conflict)));
    let outcomes = plans
        .into_iter()
        .map(|p| match p {
            Ok(_) => answered.next().unwrap_or(Err(StoreError::Conflict)),
            Err(e) => Err(e),
        })
        .collect();
    (outcomes, commits)
}
