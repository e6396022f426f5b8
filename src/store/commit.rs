//! Group commit. Turns that arrive while a commit is under way are written together in the next transaction,
//! so many users' answers share one fsync (SQLite) or one commit (PostgreSQL). Each turn is still answered only
//! once the transaction that holds it is committed: every acknowledged answer is durable.
//!
//! Turns of one batch run in the order they arrived, each seeing the writes of those before it, exactly as if
//! they had been committed one by one. A turn that fails (a conflict, a taken name, a database error) rolls its
//! batch back: the turns before it are written again, then it runs alone, then the turns after it. So two turns
//! racing for one name or one answer are decided in the order they arrived. PostgreSQL does the same inside one
//! call (see `batch`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use sqlx::SqlitePool;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::rows::{self, PilotRow};
use super::{Applied, BeginWrite, Guard, Pool, Released, StoreError, is_unique_violation, merged_save, scratch_json};
use crate::dialogue::{Change, Conversation, Effect};
use crate::domain::pilot::DRAFT_ABANDONED_AFTER;
use crate::domain::{DecisionKind, EvidenceKind, PilotId, Stage, UserId, WorkspaceId};

/// The most turns one transaction carries: enough to share a commit widely, few enough that a failing turn
/// costs its batch little.
const MAX_BATCH: usize = 64;

/// One turn's writes, owned so that a writer task can carry them out.
#[derive(Debug)]
pub(super) struct Turn {
    pub ws: WorkspaceId,
    pub actor: UserId,
    pub now: DateTime<Utc>,
    pub pilot: Option<PilotId>,
    pub channel: String,
    pub guard: OwnedGuard,
    pub effects: Vec<Effect>,
}

#[derive(Debug)]
pub(super) enum OwnedGuard {
    Any,
    NoConversation,
    At(Conversation),
}

impl From<Guard<'_>> for OwnedGuard {
    fn from(g: Guard<'_>) -> Self {
        match g {
            Guard::Any => OwnedGuard::Any,
            Guard::NoConversation => OwnedGuard::NoConversation,
            Guard::At(c) => OwnedGuard::At(c.clone()),
        }
    }
}

impl OwnedGuard {
    fn as_guard(&self) -> Guard<'_> {
        match self {
            OwnedGuard::Any => Guard::Any,
            OwnedGuard::NoConversation => Guard::NoConversation,
            OwnedGuard::At(c) => Guard::At(c),
        }
    }
}

type Outcome = Result<Applied, StoreError>;

struct Job {
    turn: Turn,
    done: oneshot::Sender<Outcome>,
}

/// The queue in front of the writer tasks.
#[derive(Clone, Debug)]
pub(super) struct Committer {
    queue: mpsc::Sender<Job>,
    stats: Arc<Stats>,
}

/// Turns written and transactions committed so far (how widely commits are shared).
#[derive(Debug, Default)]
struct Stats {
    turns: AtomicU64,
    commits: AtomicU64,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.turn.fmt(f)
    }
}

impl Committer {
    /// Starts the writers: one for SQLite (it has one writer anyway), a fifth of the pool for PostgreSQL: two for
    /// the default pool of ten. A batch is one round trip there (see `batch`), so two writers keep one batch
    /// gathering while the other commits; more writers made smaller batches and cost more CPU per turn (figure 1
    /// in BENCHMARKS.md: 1, 2, 3 and 5 writers measured). They stop when the last handle is dropped.
    pub fn start(pool: &Pool) -> Self {
        let (queue, jobs) = mpsc::channel(4 * MAX_BATCH);
        let jobs = Arc::new(Mutex::new(jobs));
        let writers = match pool {
            Pool::Sqlite(_) => 1,
            Pool::Postgres(p) => (p.options().get_max_connections() / 5).max(1),
        };
        let stats = Arc::new(Stats::default());
        for _ in 0..writers {
            let (pool, jobs, stats) = (pool.clone(), jobs.clone(), stats.clone());
            // A writer that panics is replaced: the turns of its batch get an error, the queue goes on.
            tokio::spawn(async move {
                loop {
                    match tokio::spawn(writer(pool.clone(), jobs.clone(), stats.clone())).await {
                        Err(e) if e.is_panic() => tracing::error!("a store writer panicked; starting another"),
                        _ => return,
                    }
                }
            });
        }
        Self { queue, stats }
    }

    /// Turns written and transactions committed since the store was opened.
    pub fn stats(&self) -> (u64, u64) {
        (self.stats.turns.load(Ordering::Relaxed), self.stats.commits.load(Ordering::Relaxed))
    }

    pub async fn apply(&self, turn: Turn) -> Outcome {
        let (done, outcome) = oneshot::channel();
        self.queue.send(Job { turn, done }).await.map_err(|_| sqlx::Error::PoolClosed)?;
        outcome.await.map_err(|_| sqlx::Error::PoolClosed)?
    }
}

/// Waits for a job, then takes it with whatever else is queued, up to `max` jobs, without waiting for more; None
/// once the queue is closed. Shared by several tasks: one gathers while the others work.
pub(super) async fn next_batch<T>(jobs: &Mutex<mpsc::Receiver<T>>, max: usize) -> Option<Vec<T>> {
    let mut jobs = jobs.lock().await;
    let mut batch = vec![jobs.recv().await?];
    while batch.len() < max {
        match jobs.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// Takes what is queued (up to [`MAX_BATCH`] turns, without waiting for more), writes it, answers each turn.
async fn writer(pool: Pool, jobs: Arc<Mutex<mpsc::Receiver<Job>>>, stats: Arc<Stats>) {
    loop {
        let Some(batch) = next_batch(&jobs, MAX_BATCH).await else { return };
        let (turns, dones): (Vec<Turn>, Vec<_>) = batch.into_iter().map(|j| (j.turn, j.done)).unzip();
        stats.turns.fetch_add(turns.len() as u64, Ordering::Relaxed);
        for (done, outcome) in dones.into_iter().zip(write(&pool, &turns, &stats).await) {
            // The asker may have gone (a cancelled request); its turn is written all the same.
            let _ = done.send(outcome);
        }
    }
}

/// Writes `turns` in as few transactions as their failures allow; one outcome per turn, in order.
async fn write(pool: &Pool, turns: &[Turn], stats: &Stats) -> Vec<Outcome> {
    match pool {
        Pool::Sqlite(p) => write_sqlite(p, turns, stats).await,
        // One round trip for the whole batch: see `batch`.
        Pool::Postgres(p) => {
            let (outcomes, commits) = super::batch::write(p, turns).await;
            stats.commits.fetch_add(commits, Ordering::Relaxed);
            outcomes
        }
    }
}

/// SQLite: the turns in one transaction; a failing one rolls it back, runs alone, and the others go again.
async fn write_sqlite(pool: &SqlitePool, turns: &[Turn], stats: &Stats) -> Vec<Outcome> {
    let mut outcomes: Vec<Option<Outcome>> = turns.iter().map(|_| None).collect();
    let mut pending: Vec<usize> = (0..turns.len()).collect();
    while !pending.is_empty() {
        if let [only] = pending[..] {
            outcomes[only] = Some(alone(pool, &turns[only], stats).await);
            break;
        }
        match together(pool, turns, &pending, stats).await {
            Ok(ids) => {
                for (&i, id) in pending.iter().zip(ids) {
                    outcomes[i] = Some(Ok(id));
                }
                break;
            }
            // Rolled back. The turns before the failing one are written first (together, or one by one if that
            // fails now), then the failing one alone, then the rest together again: the batch keeps its order.
            Err(Some(position)) => {
                let before: Vec<usize> = pending.drain(..position).collect();
                let failing = pending.remove(0);
                match before.len() {
                    0 => {}
                    1 => outcomes[before[0]] = Some(alone(pool, &turns[before[0]], stats).await),
                    _ => match together(pool, turns, &before, stats).await {
                        Ok(ids) => {
                            for (&i, id) in before.iter().zip(ids) {
                                outcomes[i] = Some(Ok(id));
                            }
                        }
                        Err(_) => {
                            for &i in &before {
                                outcomes[i] = Some(alone(pool, &turns[i], stats).await);
                            }
                        }
                    },
                }
                outcomes[failing] = Some(alone(pool, &turns[failing], stats).await);
            }
            // The transaction itself failed: every turn alone, each with its own outcome.
            Err(None) => {
                for &i in &pending {
                    outcomes[i] = Some(alone(pool, &turns[i], stats).await);
                }
                break;
            }
        }
    }
    outcomes.into_iter().map(|o| o.unwrap_or(Err(StoreError::Conflict))).collect()
}

/// One transaction for the turns at `which`; on failure, which of them failed (None: the transaction itself).
async fn together(
    pool: &SqlitePool,
    turns: &[Turn],
    which: &[usize],
    stats: &Stats,
) -> Result<Vec<Applied>, Option<usize>> {
    {
        let mut tx = pool.begin_write().await.map_err(|_| None)?;
        let mut ids = Vec::with_capacity(which.len());
        for (position, &i) in which.iter().enumerate() {
            match apply_turn_fast(&mut tx, &turns[i]).await {
                Ok(id) => ids.push(id),
                Err(_) => {
                    tx.rollback().await.ok();
                    return Err(Some(position));
                }
            }
        }
        tx.commit().await.map_err(|_| None)?;
        stats.commits.fetch_add(1, Ordering::Relaxed);
        Ok(ids)
    }
}

async fn alone(pool: &SqlitePool, turn: &Turn, stats: &Stats) -> Outcome {
    let mut tx = pool.begin_write().await?;
    let id = apply_turn(&mut tx, turn).await?;
    tx.commit().await?;
    stats.commits.fetch_add(1, Ordering::Relaxed);
    Ok(id)
}

/// The audit row of a change, its old value (`$old`, an SQL expression) read from the pilot's row by the insert.
macro_rules! audit_set_from_row {
    ($old:literal) => {
        concat!(
            "INSERT INTO audit (workspace, pilot_id, actor, action, field, old_value, new_value, at) SELECT $1, $2, $3, 'set', $4, ",
            $old,
            ", $5, $6 FROM pilots WHERE workspace = $1 AND id = $2"
        )
    };
}

/// The statements of the commonest turn, an answer that sets one field of the pilot and moves the conversation on,
/// sent to SQLite's thread as one query: the guard's write, the audit row, the change. Each statement runs only if
/// the one before it wrote its row (`changes()`), so a turn whose guard or pilot is gone writes nothing. One
/// hand-off to the connection's thread instead of three: with a thousand answers at once the single writer is what
/// sets the pace, and its batches of 64 turns took 6-32 ms with three hand-offs a turn, 3-8 ms with one
/// (BENCHMARKS.md, figure 6).
macro_rules! set_in_one_query {
    ($old:literal, $set:literal) => {
        concat!(
            "UPDATE conversations SET flow = $8, at = $9, pilot_id = $10, channel = $11, return_to_confirm = $12, \
             updated_at = $3, scratch = $13 WHERE workspace = $1 AND user_id = $2 AND flow = $4 AND at = $5 \
             AND return_to_confirm = $6 AND pilot_id IS NOT DISTINCT FROM $7; \
             INSERT INTO audit (workspace, pilot_id, actor, action, field, old_value, new_value, at) SELECT $1, $14, $2, 'set', $15, ",
            $old,
            ", $16, $3 FROM pilots WHERE workspace = $1 AND id = $14 AND changes() = 1; UPDATE pilots SET ",
            $set,
            ", updated_at = $3 WHERE workspace = $1 AND id = $14 AND changes() = 1 RETURNING ",
            rows::pilot_columns!()
        )
    };
}

/// [`apply_turn`], with the commonest turn in one query ([`set_in_one_query!`]) when it can be. When that query
/// writes nothing, this turn fails without saying why: the writer runs a failing turn again on its own, through
/// [`apply_turn`], which finds the reason (a conflict, a pilot gone).
async fn apply_turn_fast(tx: &mut sqlx::SqliteConnection, turn: &Turn) -> Outcome {
    let (Guard::At(c), Some(id)) = (turn.guard.as_guard(), turn.pilot) else { return apply_turn(tx, turn).await };
    let Some((new, pilot_id)) = merged_save(&turn.effects, turn.pilot) else { return apply_turn(tx, turn).await };
    let mut others = turn.effects.iter().filter(|e| !matches!(e, Effect::SaveConversation(s) if std::ptr::eq(s, new)));
    let (Some(Effect::Set(change)), None) = (others.next(), others.next()) else { return apply_turn(tx, turn).await };
    // The change's query: the old value's expression, and the change itself (`$17` is the new value).
    let sql = match change {
        Change::Workflow(_) => set_in_one_query!("workflow", "workflow = $17"),
        Change::Owner(_) => set_in_one_query!("owner", "owner = $17"),
        Change::Sponsor(_) => set_in_one_query!("sponsor", "sponsor = $17"),
        // Before any extension, the review date in force is the first one.
        Change::ReviewDate(_) => set_in_one_query!(
            "CAST(review_date AS TEXT)",
            "review_date = $17, next_review_date = CASE WHEN extensions = 0 THEN $17 ELSE next_review_date END"
        ),
        // A new name is checked first; a P&L line's old value is formatted from a read.
        Change::Name(_) | Change::Pnl(_) => return apply_turn(tx, turn).await,
    };
    let q = sqlx::query_as::<_, PilotRow>(sql)
        .bind(turn.ws.as_str())
        .bind(turn.actor.as_str())
        .bind(turn.now)
        .bind(rows::flow_str(c.flow))
        .bind(c.at.as_str())
        .bind(c.return_to_confirm)
        .bind(c.pilot.map(|p| p.0))
        .bind(rows::flow_str(new.flow))
        .bind(new.at.as_str())
        .bind(pilot_id)
        .bind(new.channel.as_str())
        .bind(new.return_to_confirm)
        .bind(scratch_json(new))
        .bind(id.0)
        .bind(change.step().as_str())
        .bind(rows::audit_new_value(change));
    let q = match change {
        Change::Workflow(t) => q.bind(t.as_str()),
        Change::Owner(u) => q.bind(u.as_str()),
        Change::Sponsor(u) => q.bind(u.as_ref().map(UserId::as_str)),
        Change::ReviewDate(d) => q.bind(*d),
        Change::Name(_) | Change::Pnl(_) => return apply_turn(tx, turn).await,
    };
    match q.fetch_optional(&mut *tx).await? {
        Some(row) => Ok(Applied { id: Some(id), pilot: Some(row.into_domain()?), released: None }),
        None => Err(StoreError::Conflict),
    }
}

/// One text column of a turn's pilot (`sql` selects it by workspace and id), read in the turn's transaction.
async fn pilot_text(
    tx: &mut sqlx::SqliteConnection,
    sql: &'static str,
    w: &str,
    id: i64,
) -> Result<String, StoreError> {
    let value: Option<String> = sqlx::query_scalar(sql).bind(w).bind(id).fetch_optional(&mut *tx).await?;
    value.ok_or(StoreError::PilotGone)
}

/// Frees the name `key`, taken, when an abandoned draft holds it ([`DRAFT_ABANDONED_AFTER`]): the draft goes, with
/// the unfinished conversation that was registering it (the foreign key cascades), and the turn's actor is audited
/// as having released it. What was freed, if it was. `except`: the turn's own pilot, never abandoned by its turn.
/// PostgreSQL does the same in `lastmile_release_name` (migrations/postgres/0014_abandoned_drafts.sql).
async fn release_abandoned_name(
    tx: &mut sqlx::SqliteConnection,
    turn: &Turn,
    key: String,
    except: Option<i64>,
) -> Result<Option<Released>, StoreError> {
    let w = turn.ws.as_str();
    let cutoff = turn.now - DRAFT_ABANDONED_AFTER;
    let abandoned: Option<(i64, String, String)> = sqlx::query_as(
        "SELECT id, name, registered_by FROM pilots p WHERE workspace = $1 AND name_key = $2 AND stage = 'draft' AND id IS NOT $3 \
         AND updated_at <= $4 AND NOT EXISTS (SELECT 1 FROM conversations c WHERE c.pilot_id = p.id AND c.updated_at > $4)",
    )
    .bind(w)
    .bind(key)
    .bind(except)
    .bind(cutoff)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((id, name, registrant)) = abandoned else { return Ok(None) };
    sqlx::query("DELETE FROM pilots WHERE workspace = $1 AND id = $2").bind(w).bind(id).execute(&mut *tx).await?;
    sqlx::query(
        "INSERT INTO audit (workspace, pilot_id, actor, action, field, old_value, new_value, at) \
         VALUES ($1, $2, $3, 'abandoned', 'name', $4, NULL, $5)",
    )
    .bind(w)
    .bind(id)
    .bind(turn.actor.as_str())
    .bind(&name)
    .bind(turn.now)
    .execute(&mut *tx)
    .await?;
    Ok(Some(Released { registrant: UserId::new(registrant), name }))
}

/// A turn's statements on SQLite, in the writer's transaction. PostgreSQL runs the same writes in
/// `lastmile_turn` (its latest version is in migrations/postgres/0014_abandoned_drafts.sql): keep the two in step.
async fn apply_turn(tx: &mut sqlx::SqliteConnection, turn: &Turn) -> Outcome {
    let w = turn.ws.as_str();
    let a = turn.actor.as_str();
    let now = turn.now;
    let mut pilot = turn.pilot;
    let channel = turn.channel.as_str();
    let guard = turn.guard.as_guard();
    let effects = turn.effects.as_slice();
    // The pilot as this turn's last write left it, when that write returned it.
    let mut after: Option<PilotRow> = None;
    let mut released = None;
    // A turn that moves an existing conversation on saves it with the guard's own write: one statement.
    let mut merged = None;
    match guard {
        Guard::Any => {}
        Guard::NoConversation => {
            let exists: Option<i32> =
                sqlx::query_scalar("SELECT 1 FROM conversations WHERE workspace = $1 AND user_id = $2")
                    .bind(w)
                    .bind(a)
                    .fetch_optional(&mut *tx)
                    .await?;
            if exists.is_some() {
                return Err(StoreError::Conflict);
            }
        }
        Guard::At(c) if merged_save(effects, pilot).is_some() => {
            let (new, pilot_id) = merged_save(effects, pilot).ok_or(StoreError::Conflict)?;
            let moved = sqlx::query(
                                "UPDATE conversations SET flow = $8, at = $9, pilot_id = $10, channel = $11, return_to_confirm = $12, \
                                 updated_at = $3, scratch = $13 WHERE workspace = $1 AND user_id = $2 AND flow = $4 AND at = $5 \
                                 AND return_to_confirm = $6 AND pilot_id IS NOT DISTINCT FROM $7",
                            )
                            .bind(w).bind(a).bind(now).bind(rows::flow_str(c.flow)).bind(c.at.as_str()).bind(c.return_to_confirm)
                            .bind(c.pilot.map(|p| p.0))
                            .bind(rows::flow_str(new.flow)).bind(new.at.as_str()).bind(pilot_id).bind(new.channel.as_str())
                            .bind(new.return_to_confirm).bind(scratch_json(new))
                            .execute(&mut *tx).await?;
            if moved.rows_affected() != 1 {
                return Err(StoreError::Conflict);
            }
            merged = Some(new);
        }
        Guard::At(c) => {
            // Writing first takes the row's lock, so a concurrent turn of the same user waits, then finds it moved.
            let moved = sqlx::query(
                                "UPDATE conversations SET updated_at = $3 WHERE workspace = $1 AND user_id = $2 AND flow = $4 AND at = $5 \
                                 AND return_to_confirm = $6 AND pilot_id IS NOT DISTINCT FROM $7",
                            )
                            .bind(w).bind(a).bind(now).bind(rows::flow_str(c.flow)).bind(c.at.as_str()).bind(c.return_to_confirm)
                            .bind(c.pilot.map(|p| p.0))
                            .execute(&mut *tx).await?;
            if moved.rows_affected() != 1 {
                return Err(StoreError::Conflict);
            }
        }
    }
    for effect in effects {
        match effect {
            Effect::CreateDraft(name) => {
                // The pilot changes here without being read back: whoever needs it reads it.
                after = None;
                // Checked first so a taken name consumes no id; the unique index still settles races.
                let taken: Option<i64> =
                    sqlx::query_scalar("SELECT id FROM pilots WHERE workspace = $1 AND name_key = $2")
                        .bind(w)
                        .bind(name.key())
                        .fetch_optional(&mut *tx)
                        .await?;
                if taken.is_some() {
                    released =
                        Some(release_abandoned_name(tx, turn, name.key(), None).await?.ok_or(StoreError::NameTaken)?);
                }
                let id: i64 = sqlx::query_scalar(
                                    "INSERT INTO pilots (workspace, name, name_key, stage, registered_by, registered_at, home_channel, updated_at) \
                                     VALUES ($1, $2, $3, 'draft', $4, $5, $6, $5) RETURNING id",
                                )
                                .bind(w).bind(name.as_str()).bind(name.key()).bind(a).bind(now).bind(channel)
                                .fetch_one(&mut *tx)
                                .await
                                .map_err(|e| if is_unique_violation(&e) { StoreError::NameTaken } else { e.into() })?;
                pilot = Some(PilotId(id));
                sqlx::query("INSERT INTO audit (workspace, pilot_id, actor, action, field, old_value, new_value, at) VALUES ($1, $2, $3, 'created', 'name', NULL, $4, $5)")
                                    .bind(w).bind(id).bind(a).bind(name.as_str()).bind(now)
                                    .execute(&mut *tx).await?;
            }
            Effect::Set(change) => {
                let id = pilot.ok_or(StoreError::PilotGone)?.0;
                if let Change::Name(n) = change {
                    let taken: Option<i64> =
                        sqlx::query_scalar("SELECT id FROM pilots WHERE workspace = $1 AND name_key = $2 AND id <> $3")
                            .bind(w)
                            .bind(n.key())
                            .bind(id)
                            .fetch_optional(&mut *tx)
                            .await?;
                    if taken.is_some() {
                        released = Some(
                            release_abandoned_name(tx, turn, n.key(), Some(id)).await?.ok_or(StoreError::NameTaken)?,
                        );
                    }
                }
                // The audit row takes the old value from the pilot's row as it is, before the update:
                // one statement, no read. A P&L line's old value is formatted here, from a read.
                let audit = match change {
                    Change::Name(_) => Some(audit_set_from_row!("name")),
                    Change::Workflow(_) => Some(audit_set_from_row!("workflow")),
                    Change::Owner(_) => Some(audit_set_from_row!("owner")),
                    Change::Sponsor(_) => Some(audit_set_from_row!("sponsor")),
                    Change::ReviewDate(_) => Some(audit_set_from_row!("CAST(review_date AS TEXT)")),
                    Change::Pnl(_) => None,
                };
                let (old, new) = match audit {
                    Some(_) => (None, rows::audit_new_value(change)),
                    None => {
                        let sql =
                            format!("SELECT {} FROM pilots WHERE workspace = $1 AND id = $2", rows::PILOT_COLUMNS);
                        let before: PilotRow = sqlx::query_as(&sql)
                            .bind(w)
                            .bind(id)
                            .fetch_optional(&mut *tx)
                            .await?
                            .ok_or(StoreError::PilotGone)?;
                        rows::audit_values(&before.into_domain()?, change)
                    }
                };
                let audited = match audit {
                                    Some(sql) => sqlx::query(sql).bind(w).bind(id).bind(a).bind(change.step().as_str()).bind(new.as_deref()).bind(now).execute(&mut *tx).await?.rows_affected(),
                                    None => sqlx::query("INSERT INTO audit (workspace, pilot_id, actor, action, field, old_value, new_value, at) VALUES ($1, $2, $3, 'set', $4, $5, $6, $7)")
                                        .bind(w).bind(id).bind(a).bind(change.step().as_str()).bind(old).bind(new.as_deref()).bind(now)
                                        .execute(&mut *tx).await?.rows_affected(),
                                };
                if audited != 1 {
                    return Err(StoreError::PilotGone);
                }
                let q = match change {
                                    Change::Name(n) => sqlx::query_as::<_, PilotRow>(concat!("UPDATE pilots SET name = $3, name_key = $4, updated_at = $5 WHERE workspace = $1 AND id = $2 RETURNING ", rows::pilot_columns!()))
                                        .bind(w).bind(id).bind(n.as_str()).bind(n.key()).bind(now),
                                    Change::Workflow(t) => sqlx::query_as::<_, PilotRow>(concat!("UPDATE pilots SET workflow = $3, updated_at = $4 WHERE workspace = $1 AND id = $2 RETURNING ", rows::pilot_columns!()))
                                        .bind(w).bind(id).bind(t.as_str()).bind(now),
                                    Change::Owner(u) => sqlx::query_as::<_, PilotRow>(concat!("UPDATE pilots SET owner = $3, updated_at = $4 WHERE workspace = $1 AND id = $2 RETURNING ", rows::pilot_columns!()))
                                        .bind(w).bind(id).bind(u.as_str()).bind(now),
                                    Change::Sponsor(u) => sqlx::query_as::<_, PilotRow>(concat!("UPDATE pilots SET sponsor = $3, updated_at = $4 WHERE workspace = $1 AND id = $2 RETURNING ", rows::pilot_columns!()))
                                        .bind(w).bind(id).bind(u.as_ref().map(UserId::as_str)).bind(now),
                                    Change::Pnl(p) => sqlx::query_as::<_, PilotRow>(concat!("UPDATE pilots SET pnl_line = $3, pnl_unit = $4, pnl_baseline = $5, pnl_target = $6, updated_at = $7 WHERE workspace = $1 AND id = $2 RETURNING ", rows::pilot_columns!()))
                                        .bind(w).bind(id).bind(p.line.as_str()).bind(p.unit.as_str()).bind(p.baseline).bind(p.target).bind(now),
                                    // Before any extension, the review date in force is the first one.
                                    Change::ReviewDate(d) => sqlx::query_as::<_, PilotRow>(concat!("UPDATE pilots SET review_date = $3, next_review_date = CASE WHEN extensions = 0 THEN $3 ELSE next_review_date END, updated_at = $4 WHERE workspace = $1 AND id = $2 RETURNING ", rows::pilot_columns!()))
                                        .bind(w).bind(id).bind(*d).bind(now),
                                };
                let row = q
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(|e| if is_unique_violation(&e) { StoreError::NameTaken } else { e.into() })?;
                after = Some(row.ok_or(StoreError::PilotGone)?);
            }
            Effect::SetStage(stage) => {
                let id = pilot.ok_or(StoreError::PilotGone)?.0;
                let old = pilot_text(tx, "SELECT stage FROM pilots WHERE workspace = $1 AND id = $2", w, id).await?;
                let row = sqlx::query_as::<_, PilotRow>(concat!(
                    "UPDATE pilots SET stage = $3, updated_at = $4 WHERE workspace = $1 AND id = $2 RETURNING ",
                    rows::pilot_columns!()
                ))
                .bind(w)
                .bind(id)
                .bind(stage.as_str())
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                after = Some(row.ok_or(StoreError::PilotGone)?);
                sqlx::query("INSERT INTO audit (workspace, pilot_id, actor, action, field, old_value, new_value, at) VALUES ($1, $2, $3, 'stage', 'stage', $4, $5, $6)")
                                    .bind(w).bind(id).bind(a).bind(old).bind(stage.as_str()).bind(now)
                                    .execute(&mut *tx).await?;
            }
            Effect::DeleteDraft => {
                // The pilot changes here without being read back: whoever needs it reads it.
                after = None;
                let id = pilot.ok_or(StoreError::PilotGone)?.0;
                let name: Option<String> = sqlx::query_scalar(
                    "DELETE FROM pilots WHERE workspace = $1 AND id = $2 AND stage = $3 RETURNING name",
                )
                .bind(w)
                .bind(id)
                .bind(Stage::Draft.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                sqlx::query("INSERT INTO audit (workspace, pilot_id, actor, action, field, old_value, new_value, at) VALUES ($1, $2, $3, 'deleted', NULL, $4, NULL, $5)")
                                    .bind(w).bind(id).bind(a).bind(name).bind(now)
                                    .execute(&mut *tx).await?;
                pilot = None;
            }
            Effect::SaveConversation(c) if matches!(guard, Guard::NoConversation) => {
                // A conversation that must be new: a concurrent start of the same user loses here.
                let pilot_id = c.pilot.or(pilot).map(|p| p.0);
                sqlx::query(
                                    "INSERT INTO conversations (workspace, user_id, flow, at, pilot_id, channel, return_to_confirm, updated_at, scratch) \
                                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                                )
                                .bind(w).bind(a).bind(rows::flow_str(c.flow)).bind(c.at.as_str()).bind(pilot_id)
                                .bind(c.channel.as_str()).bind(c.return_to_confirm).bind(now).bind(scratch_json(c))
                                .execute(&mut *tx).await
                                .map_err(|e| if is_unique_violation(&e) { StoreError::Conflict } else { e.into() })?;
            }
            Effect::SaveConversation(c) if merged.is_some_and(|m| std::ptr::eq(m, c)) => {}
            Effect::SaveConversation(c) => {
                let pilot_id = c.pilot.or(pilot).map(|p| p.0);
                sqlx::query(
                                    "INSERT INTO conversations (workspace, user_id, flow, at, pilot_id, channel, return_to_confirm, updated_at, scratch) \
                                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                                     ON CONFLICT (workspace, user_id) DO UPDATE SET flow = $3, at = $4, pilot_id = $5, channel = $6, \
                                     return_to_confirm = $7, updated_at = $8, scratch = $9",
                                )
                                .bind(w).bind(a).bind(rows::flow_str(c.flow)).bind(c.at.as_str()).bind(pilot_id)
                                .bind(c.channel.as_str()).bind(c.return_to_confirm).bind(now).bind(scratch_json(c))
                                .execute(&mut *tx).await?;
            }
            Effect::EndConversation => {
                sqlx::query("DELETE FROM conversations WHERE workspace = $1 AND user_id = $2")
                    .bind(w)
                    .bind(a)
                    .execute(&mut *tx)
                    .await?;
            }
            Effect::AddEvidence(item) => {
                // The pilot changes here without being read back: whoever needs it reads it.
                after = None;
                let id = pilot.ok_or(StoreError::PilotGone)?.0;
                sqlx::query("INSERT INTO evidence (workspace, pilot_id, kind, note, value, period, source, recorded_by, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
                                    .bind(w).bind(id).bind(item.kind.as_str()).bind(item.note.as_str()).bind(item.value)
                                    .bind(item.period.as_deref()).bind(item.source.as_deref()).bind(a).bind(now)
                                    .execute(&mut *tx).await?;
                let update = match item.kind {
                    EvidenceKind::WorkflowLive => {
                        "UPDATE pilots SET evidence_workflow_live = TRUE, updated_at = $3 WHERE workspace = $1 AND id = $2"
                    }
                    EvidenceKind::OwnerRunning => {
                        "UPDATE pilots SET evidence_owner_running = TRUE, updated_at = $3 WHERE workspace = $1 AND id = $2"
                    }
                    EvidenceKind::PnlMoved => {
                        "UPDATE pilots SET pnl_realised = $4, updated_at = $3 WHERE workspace = $1 AND id = $2"
                    }
                };
                let q = sqlx::query(update).bind(w).bind(id).bind(now);
                let q = if item.kind == EvidenceKind::PnlMoved { q.bind(item.value) } else { q };
                q.execute(&mut *tx).await?;
                audit_row!(
                    &mut *tx,
                    w,
                    id,
                    a,
                    "evidence",
                    Some(item.kind.as_str()),
                    None::<&str>,
                    Some(&item.note),
                    now
                )
                .await?;
            }
            Effect::Decide(d) => {
                // The pilot changes here without being read back: whoever needs it reads it.
                after = None;
                let id = pilot.ok_or(StoreError::PilotGone)?.0;
                let old = pilot_text(tx, "SELECT stage FROM pilots WHERE workspace = $1 AND id = $2", w, id).await?;
                let q = match d.kind {
                                    DecisionKind::Scale => sqlx::query("UPDATE pilots SET stage = 'in_production', decision = 'scale', decision_reason = $3, scale_override = $4, updated_at = $5 WHERE workspace = $1 AND id = $2")
                                        .bind(w).bind(id).bind(d.reason.as_str()).bind(d.override_evidence).bind(now),
                                    DecisionKind::Extend => sqlx::query("UPDATE pilots SET decision = 'extend', decision_reason = $3, next_review_date = $4, extensions = extensions + 1, updated_at = $5 WHERE workspace = $1 AND id = $2")
                                        .bind(w).bind(id).bind(d.reason.as_str()).bind(d.new_date).bind(now),
                                    DecisionKind::Kill => sqlx::query("UPDATE pilots SET stage = 'killed', decision = 'kill', decision_reason = $3, kill_category = $4, updated_at = $5 WHERE workspace = $1 AND id = $2")
                                        .bind(w).bind(id).bind(d.reason.as_str()).bind(d.category.map(|c| c.as_str())).bind(now),
                                };
                q.execute(&mut *tx).await?;
                let detail = rows::decision_audit(d);
                audit_row!(&mut *tx, w, id, a, "decision", Some("stage"), Some(&old), Some(&detail), now).await?;
            }
            Effect::SetOwnerStatus { status, reason } => {
                // The pilot changes here without being read back: whoever needs it reads it.
                after = None;
                let id = pilot.ok_or(StoreError::PilotGone)?.0;
                let old =
                    pilot_text(tx, "SELECT owner_status FROM pilots WHERE workspace = $1 AND id = $2", w, id).await?;
                if old == status.as_str() && reason.is_none() {
                    continue;
                }
                sqlx::query("UPDATE pilots SET owner_status = $3, updated_at = $4 WHERE workspace = $1 AND id = $2")
                    .bind(w)
                    .bind(id)
                    .bind(status.as_str())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                let new = rows::owner_status_audit(*status, reason.as_deref());
                audit_row!(&mut *tx, w, id, a, "owner_status", Some("owner_status"), Some(&old), Some(&new), now)
                    .await?;
            }
            Effect::OpenAsk { user, kind } => {
                let id = pilot.ok_or(StoreError::PilotGone)?.0;
                // A new ask of the same kind about the same pilot supersedes the old one.
                sqlx::query("UPDATE asks SET answered_at = $4 WHERE workspace = $1 AND pilot_id = $2 AND kind = $3 AND answered_at IS NULL")
                                    .bind(w).bind(id).bind(kind.name()).bind(now).execute(&mut *tx).await?;
                let payload = serde_json::to_string(kind).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                sqlx::query("INSERT INTO asks (workspace, user_id, kind, pilot_id, payload, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
                                    .bind(w).bind(user.as_str()).bind(kind.name()).bind(id).bind(payload).bind(now)
                                    .execute(&mut *tx).await?;
            }
            Effect::NudgeAnswered => {
                // The pilot changes here without being read back: whoever needs it reads it.
                after = None;
                let id = pilot.ok_or(StoreError::PilotGone)?.0;
                sqlx::query("UPDATE pilots SET unanswered = 0 WHERE workspace = $1 AND id = $2")
                    .bind(w)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            Effect::Snooze { until } => {
                // The pilot changes here without being read back: whoever needs it reads it.
                after = None;
                let id = pilot.ok_or(StoreError::PilotGone)?.0;
                sqlx::query(
                    "UPDATE pilots SET snoozes = snoozes + 1, snoozed_until = $3 WHERE workspace = $1 AND id = $2",
                )
                .bind(w)
                .bind(id)
                .bind(*until)
                .execute(&mut *tx)
                .await?;
                audit_row!(
                    &mut *tx,
                    w,
                    id,
                    a,
                    "snooze",
                    Some("snoozed_until"),
                    None::<&str>,
                    Some(&until.to_rfc3339()),
                    now
                )
                .await?;
            }
            Effect::CloseAsk(ask) => {
                // Answered once: a second answer racing the first finds it closed and is decided again.
                let closed = sqlx::query(
                    "UPDATE asks SET answered_at = $3 WHERE workspace = $1 AND id = $2 AND answered_at IS NULL",
                )
                .bind(w)
                .bind(*ask)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if closed.rows_affected() != 1 {
                    return Err(StoreError::Conflict);
                }
            }
        }
    }
    let after = match (pilot, after) {
        (Some(_), Some(row)) => Some(row.into_domain()?),
        _ => None,
    };
    Ok(Applied { id: pilot, pilot: after, released })
}
