//! Group commit. Turns that arrive while a commit is under way are written together in the next transaction,
//! so many users' answers share one fsync (SQLite) or one commit (PostgreSQL). Each turn is still answered only
//! once the transaction that holds it is committed: every acknowledged answer is durable. How a batch is written
//! is `write`'s job.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Mutex, mpsc, oneshot};

use super::write::{self, TurnWrite, Written};
use super::{Pool, StoreError};

/// The most turns one transaction carries: enough to share a commit widely, few enough that a failing turn
/// costs its batch little.
const MAX_BATCH: usize = 64;

type Outcome = Result<Written, StoreError>;

struct Job {
    turn: TurnWrite,
    done: oneshot::Sender<Outcome>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.turn.fmt(f)
    }
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

impl Committer {
    /// Starts the writers: one for SQLite (it has one writer anyway), a fifth of the pool for PostgreSQL: two for
    /// the default pool of ten, so that one batch gathers while the other commits (BENCHMARKS.md, figure 1). They
    /// stop when the last handle is dropped.
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

    pub async fn write(&self, turn: TurnWrite) -> Outcome {
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
        stats.turns.fetch_add(batch.len() as u64, Ordering::Relaxed);
        metrics::histogram!(super::COMMIT_BATCH_SIZE).record(batch.len() as f64);
        let turns: Vec<&TurnWrite> = batch.iter().map(|j| &j.turn).collect();
        let (outcomes, commits) = write::write(&pool, &turns).await;
        stats.commits.fetch_add(commits, Ordering::Relaxed);
        for (job, outcome) in batch.into_iter().zip(outcomes) {
            // The asker may have gone (a cancelled request); its turn is written all the same.
            let _ = job.done.send(outcome);
        }
    }
}
