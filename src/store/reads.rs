//! Batched reads of what answering needs. Every dialogue step starts by reading the workspace's settings, the
//! user's conversation and its pilot. The requests that arrive while a read is under way are read together in
//! the next query, one row per request: under load, many users' steps share one round trip (PostgreSQL) or one
//! hand-off to a connection's thread (SQLite) instead of paying one each. A lone request is read at once.
//!
//! A read is queued only after the request's earlier writes were committed, so it sees them; batching changes
//! when a read runs, never what it can see.

use std::sync::{Arc, LazyLock};

use sqlx::{FromRow, Row};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::rows::{self, ConversationRow, PilotRow};
use super::{Pool, StoreError, parse_settings};
use crate::dialogue::Conversation;
use crate::domain::{Pilot, UserId, WorkspaceId, WorkspaceSettings};

/// What answering in a conversation needs: the workspace's settings, the user's conversation, and the pilot it
/// is about (None when it has none or it is gone).
pub type AnswerContext = (WorkspaceSettings, Option<(Conversation, Option<Pilot>)>);

/// The most requests one query reads.
const MAX_BATCH: usize = 64;

struct Job {
    ws: WorkspaceId,
    user: UserId,
    done: oneshot::Sender<Result<AnswerContext, StoreError>>,
}

/// The queue in front of the reader tasks.
#[derive(Clone, Debug)]
pub(super) struct Reader {
    queue: mpsc::Sender<Job>,
}

impl Reader {
    /// Starts the readers: two, so that one batch is read while the next one gathers. They stop when the last
    /// handle is dropped.
    pub fn start(pool: &Pool) -> Self {
        let (queue, jobs) = mpsc::channel(4 * MAX_BATCH);
        let jobs = Arc::new(Mutex::new(jobs));
        for _ in 0..2 {
            let (pool, jobs) = (pool.clone(), jobs.clone());
            // A reader that panics is replaced: the requests of its batch get an error, the queue goes on.
            tokio::spawn(async move {
                loop {
                    match tokio::spawn(reader(pool.clone(), jobs.clone())).await {
                        Err(e) if e.is_panic() => tracing::error!("a store reader panicked; starting another"),
                        _ => return,
                    }
                }
            });
        }
        Self { queue }
    }

    pub async fn answer_context(&self, ws: &WorkspaceId, user: &UserId) -> Result<AnswerContext, StoreError> {
        let (done, outcome) = oneshot::channel();
        let job = Job { ws: ws.clone(), user: user.clone(), done };
        self.queue.send(job).await.map_err(|_| sqlx::Error::PoolClosed)?;
        outcome.await.map_err(|_| sqlx::Error::PoolClosed)?
    }
}

/// Takes what is queued (up to [`MAX_BATCH`] requests, without waiting for more), reads it, answers each one.
async fn reader(pool: Pool, jobs: Arc<Mutex<mpsc::Receiver<Job>>>) {
    loop {
        let Some(mut batch) = super::commit::next_batch(&jobs, MAX_BATCH).await else { return };
        let keys: Vec<(&str, &str)> = batch.iter().map(|j| (j.ws.as_str(), j.user.as_str())).collect();
        match read(&pool, &keys).await {
            Ok(found) => {
                for (job, row) in batch.into_iter().zip(found) {
                    let _ = job.done.send(row.into_domain(&job.ws));
                }
            }
            // The whole query failed: each request is read alone, so that each gets its own error.
            Err(_) if batch.len() > 1 => {
                for job in batch {
                    let one = read(&pool, &[(job.ws.as_str(), job.user.as_str())]).await;
                    let outcome = one.and_then(|mut rows| rows.pop().ok_or(StoreError::Corrupt("no row".into())));
                    let _ = job.done.send(outcome.and_then(|row| row.into_domain(&job.ws)));
                }
            }
            Err(e) => {
                if let Some(job) = batch.pop() {
                    let _ = job.done.send(Err(e));
                }
            }
        }
    }
}

/// One request's row, as read.
struct Found {
    settings: Option<String>,
    revision: Option<i64>,
    conversation: Option<ConversationRow>,
    pilot: Option<PilotRow>,
}

impl Found {
    fn into_domain(self, ws: &WorkspaceId) -> Result<AnswerContext, StoreError> {
        let settings = parse_settings(ws, self.settings.zip(self.revision))?;
        let Some(conversation) = self.conversation else { return Ok((settings, None)) };
        Ok((settings, Some((conversation.into_domain()?, self.pilot.map(PilotRow::into_domain).transpose()?))))
    }
}

/// The columns read for each request.
static COLUMNS: LazyLock<String> = LazyLock::new(|| {
    let pilot = rows::PILOT_COLUMNS.split(", ").map(|c| format!("p.{}", c.trim())).collect::<Vec<_>>();
    format!(
        "s.settings AS workspace_settings, s.revision AS settings_revision, c.flow, c.at, c.pilot_id, c.channel, c.return_to_confirm, c.scratch, {}",
        pilot.join(", ")
    )
});

/// Each key's rows, looked up by their primary keys: `LIMIT 1` keeps each lookup a lookup (the planner may not
/// turn it into a join that scans a whole table, as it did on PostgreSQL for tables it had no statistics of).
const LOOKUPS: &str = "LEFT JOIN LATERAL (SELECT settings, revision FROM workspace_settings WHERE workspace = k.ws LIMIT 1) s ON TRUE \
     LEFT JOIN LATERAL (SELECT * FROM conversations WHERE workspace = k.ws AND user_id = k.usr LIMIT 1) c ON TRUE \
     LEFT JOIN LATERAL (SELECT * FROM pilots WHERE workspace = k.ws AND id = c.pilot_id LIMIT 1) p ON TRUE";

/// PostgreSQL: the keys as two arrays, unnested with their position.
static POSTGRES: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT k.i, {} FROM unnest($1::TEXT[], $2::TEXT[]) WITH ORDINALITY AS k(ws, usr, i) {LOOKUPS}", *COLUMNS)
});

/// SQLite: the keys as a JSON array of pairs (`json_each` numbers them from 0). SQLite joins by nested loops, each
/// row of `k` looking its rows up by their primary keys.
static SQLITE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT k.i, {} FROM (SELECT key + 1 AS i, json_extract(value, '$[0]') AS ws, json_extract(value, '$[1]') AS usr \
         FROM json_each($1)) k \
         LEFT JOIN workspace_settings s ON s.workspace = k.ws \
         LEFT JOIN conversations c ON c.workspace = k.ws AND c.user_id = k.usr \
         LEFT JOIN pilots p ON p.workspace = k.ws AND p.id = c.pilot_id",
        *COLUMNS
    )
});

/// Reads the keys' rows in one query; one [`Found`] per key, in order.
async fn read(pool: &Pool, keys: &[(&str, &str)]) -> Result<Vec<Found>, StoreError> {
    let mut found: Vec<Option<Found>> = keys.iter().map(|_| None).collect();
    macro_rules! collect {
        ($rows:expr) => {
            for row in $rows {
                let i: i64 = row.try_get("i")?;
                let slot = usize::try_from(i - 1).ok().and_then(|i| found.get_mut(i));
                let slot = slot.ok_or_else(|| StoreError::Corrupt(format!("read position {i}")))?;
                let flow: Option<String> = row.try_get("flow")?;
                let conversation = flow.is_some().then(|| ConversationRow::from_row(&row)).transpose()?;
                let id: Option<i64> = row.try_get("id")?;
                let pilot = id.is_some().then(|| PilotRow::from_row(&row)).transpose()?;
                let (settings, revision) = (row.try_get("workspace_settings")?, row.try_get("settings_revision")?);
                *slot = Some(Found { settings, revision, conversation, pilot });
            }
        };
    }
    match pool {
        Pool::Postgres(p) => {
            let (ws, users): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
            collect!(sqlx::query(&POSTGRES).bind(ws).bind(users).fetch_all(p).await?);
        }
        Pool::Sqlite(p) => {
            let json = serde_json::to_string(keys).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            collect!(sqlx::query(&SQLITE).bind(json).fetch_all(p).await?);
        }
    }
    found.into_iter().map(|f| f.ok_or_else(|| StoreError::Corrupt("a read request got no row".into()))).collect()
}
