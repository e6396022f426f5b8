//! Writing turns: each turn's changes exactly as the engine worked them out from the domain's rules, nothing decided
//! here. A batch of turns is written table by table, one statement per table and kind of write whatever the
//! batch's size, in one transaction: first the checks (each turn's conversation and pilot must still be as the
//! turn saw them; PostgreSQL locks what it checks), then the writes of the turns that passed.
//!
//! The rows of a statement travel as one JSON array, read by `jsonb_to_recordset` (PostgreSQL) or `json_each`
//! (SQLite): the one place where the dialects differ. Turns of one batch never touch the same conversation, pilot
//! or name (the batch is cut where one would), so no turn depends on another's writes.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{FromRow, Postgres, Sqlite};

use super::{Pool, StoreError};
use crate::dialogue::Conversation;
use crate::domain::rules::NameHolder;
use crate::domain::{
    AuditRecord, ChannelId, EvidenceKind, EvidenceRecord, Pilot, PilotId, PilotName, Stage, UserId, WorkspaceId,
};

/// The pilot a record belongs to: one that exists, or the one the turn creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PilotRef {
    Id(PilotId),
    Created,
}

/// What the user's conversation must still be for the turn to be written.
#[derive(Debug, Clone, PartialEq)]
pub enum ConversationGuard {
    /// Write whatever it is.
    Any,
    /// The user must have none (a command that starts one).
    Absent,
    /// It must still be exactly this one (an answer to it).
    At(Conversation),
}

/// What becomes of the user's conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum ConversationWrite {
    /// Left as it is (an answer to it still counts as its last answer).
    Keep,
    /// Saved; `created`: its pilot is the one the turn creates.
    Save {
        conversation: Box<Conversation>,
        created: bool,
    },
    End,
}

/// A new draft pilot, registered by the turn's actor in `channel`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDraft {
    pub name: PilotName,
    pub channel: ChannelId,
}

/// A pilot to write as `after`, if it is still as `before` was read (same version). Only what differs is written.
#[derive(Debug, Clone, PartialEq)]
pub struct PilotUpdate {
    pub before: Pilot,
    pub after: Pilot,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AskWrite {
    /// Answered: it must still be open.
    Close(i64),
    /// A new question by direct message; an open one of the same kind about the same pilot is answered by it.
    Open { pilot: PilotRef, user: UserId, kind: &'static str, payload: String },
}

/// Everything one turn writes, in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnWrite {
    pub ws: WorkspaceId,
    pub actor: UserId,
    pub now: DateTime<Utc>,
    pub guard: ConversationGuard,
    /// The revision of the workspace's settings the turn's rules were decided on, when they depended on them: the
    /// turn is written only while it is still the one in force (0: the defaults, never saved).
    pub settings_revision: Option<i64>,
    pub conversation: ConversationWrite,
    /// An abandoned registration whose name this turn takes: removed if it is still as it was read.
    pub release: Option<NameHolder>,
    pub create: Option<NewDraft>,
    pub update: Option<PilotUpdate>,
    /// A draft removed (a cancelled registration): its id and the version read.
    pub delete: Option<(PilotId, i64)>,
    pub audit: Vec<(PilotRef, AuditRecord)>,
    pub evidence: Vec<(PilotRef, EvidenceRecord)>,
    /// Evidence records that stop counting (voided by a changed answer): each open record of the kind.
    pub voided: Vec<(PilotId, EvidenceKind)>,
    pub asks: Vec<AskWrite>,
}

impl TurnWrite {
    pub fn new(ws: WorkspaceId, actor: UserId, now: DateTime<Utc>, guard: ConversationGuard) -> Self {
        Self {
            ws,
            actor,
            now,
            guard,
            settings_revision: None,
            conversation: ConversationWrite::Keep,
            release: None,
            create: None,
            update: None,
            delete: None,
            audit: Vec::new(),
            evidence: Vec::new(),
            voided: Vec::new(),
            asks: Vec::new(),
        }
    }

    /// Whether the turn writes anything at all.
    fn writes(&self) -> bool {
        !matches!((&self.guard, &self.conversation), (ConversationGuard::Any, ConversationWrite::Keep))
            || self.release.is_some()
            || self.create.is_some()
            || self.update.is_some()
            || self.delete.is_some()
            || !self.audit.is_empty()
            || !self.evidence.is_empty()
            || !self.voided.is_empty()
            || !self.asks.is_empty()
    }

    /// What no other turn of the same batch may touch: the user's conversation, the pilots, the names.
    fn keys(&self) -> Vec<String> {
        let mut keys = vec![format!("c:{}:{}", self.ws.as_str(), self.actor.as_str())];
        let pilots =
            [self.update.as_ref().map(|u| u.before.id), self.delete.map(|d| d.0), self.release.as_ref().map(|r| r.id)];
        keys.extend(pilots.into_iter().flatten().map(|id| format!("p:{}", id.0)));
        let names = [
            self.create.as_ref().map(|c| c.name.key()),
            self.update
                .as_ref()
                .filter(|u| u.before.name != u.after.name)
                .map(|u| crate::domain::pilot::name_key(&u.after.name)),
        ];
        keys.extend(names.into_iter().flatten().map(|k| format!("n:{}:{k}", self.ws.as_str())));
        keys
    }
}

/// What a written turn left behind.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// The pilot the turn created, as written.
    pub created: Option<Pilot>,
}

type Outcome = Result<Written, StoreError>;

/// A turn's pilot changes as one row: the turn's position and the columns it sets.
type ChangedRow = (usize, Map<String, Value>);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
}

/// A timestamp as both dialects take it from JSON (SQLite compares them as text: the form sqlx binds).
fn ts(t: DateTime<Utc>) -> Value {
    Value::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, false))
}

fn date(d: Option<NaiveDate>) -> Value {
    d.map_or(Value::Null, |d| Value::String(d.format("%F").to_string()))
}

/// The rows of a statement, read from its JSON parameter: `cols` are names with their PostgreSQL types.
fn source(d: Dialect, cols: &[(&str, &str)]) -> String {
    match d {
        Dialect::Postgres => {
            let typed: Vec<String> = cols.iter().map(|(n, t)| format!("{n} {t}")).collect();
            format!("jsonb_to_recordset($1::jsonb) AS k({})", typed.join(", "))
        }
        Dialect::Sqlite => {
            let read: Vec<String> = cols.iter().map(|(n, _)| format!("json_extract(value, '$.{n}') AS {n}")).collect();
            format!("(SELECT {} FROM json_each($1)) AS k", read.join(", "))
        }
    }
}

/// `FOR UPDATE OF x` where the dialect has it (SQLite's writer holds the whole database).
fn lock(d: Dialect, table: &str) -> String {
    match d {
        Dialect::Postgres => format!(" FOR UPDATE OF {table}"),
        Dialect::Sqlite => String::new(),
    }
}

/// A transaction in either dialect.
enum Tx {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

impl Tx {
    async fn begin(pool: &Pool) -> Result<Tx, sqlx::Error> {
        Ok(match pool {
            // SQLite takes its write lock up front: a read that later writes could otherwise fail as locked.
            Pool::Sqlite(p) => Tx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
            Pool::Postgres(p) => Tx::Postgres(p.begin().await?),
        })
    }

    fn dialect(&self) -> Dialect {
        match self {
            Tx::Sqlite(_) => Dialect::Sqlite,
            Tx::Postgres(_) => Dialect::Postgres,
        }
    }

    async fn rows<T>(&mut self, sql: &str, rows: Vec<Value>) -> Result<Vec<T>, sqlx::Error>
    where
        T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin,
    {
        let json = Value::Array(rows).to_string();
        match self {
            Tx::Sqlite(tx) => sqlx::query_as(sql).bind(json).fetch_all(&mut **tx).await,
            Tx::Postgres(tx) => sqlx::query_as(sql).bind(json).fetch_all(&mut **tx).await,
        }
    }

    async fn exec(&mut self, sql: &str, rows: Vec<Value>) -> Result<u64, sqlx::Error> {
        let json = Value::Array(rows).to_string();
        Ok(match self {
            Tx::Sqlite(tx) => sqlx::query(sql).bind(json).execute(&mut **tx).await?.rows_affected(),
            Tx::Postgres(tx) => sqlx::query(sql).bind(json).execute(&mut **tx).await?.rows_affected(),
        })
    }

    async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await,
            Tx::Postgres(tx) => tx.commit().await,
        }
    }

    async fn rollback(self) {
        let _ = match self {
            Tx::Sqlite(tx) => tx.rollback().await,
            Tx::Postgres(tx) => tx.rollback().await,
        };
    }
}

#[derive(FromRow)]
struct ConversationCheck {
    i: i64,
    flow: String,
    at: String,
    return_to_confirm: bool,
    pilot_id: Option<i64>,
}

#[derive(FromRow)]
struct RevisionCheck {
    ws: String,
    revision: i64,
}

#[derive(FromRow)]
struct VersionCheck {
    i: i64,
    version: i64,
}

#[derive(FromRow)]
struct ReleaseCheck {
    i: i64,
    version: i64,
    last_conversation: Option<DateTime<Utc>>,
}

#[derive(FromRow)]
struct Id {
    id: i64,
}

#[derive(FromRow)]
struct CreatedRow {
    id: i64,
    workspace: String,
    name_key: String,
}

#[derive(FromRow)]
struct ConversationKey {
    workspace: String,
    user_id: String,
}

/// Writes `turns`; one outcome per turn, in order, and how many transactions committed.
pub(super) async fn write(pool: &Pool, turns: &[&TurnWrite]) -> (Vec<Outcome>, u64) {
    let mut outcomes: Vec<Option<Outcome>> = turns.iter().map(|_| None).collect();
    let mut commits = 0;
    // Turns that write nothing are done at once.
    let mut pending: Vec<usize> = Vec::new();
    for (i, t) in turns.iter().enumerate() {
        if t.writes() {
            pending.push(i);
        } else {
            outcomes[i] = Some(Ok(Written { created: None }));
        }
    }
    for group in groups(turns, &pending) {
        commits += write_group(pool, turns, &group, &mut outcomes).await;
    }
    (outcomes.into_iter().map(|o| o.unwrap_or(Err(StoreError::Conflict))).collect(), commits)
}

/// Cuts the turns, in order, into groups in which no two touch the same conversation, pilot or name.
fn groups(turns: &[&TurnWrite], which: &[usize]) -> Vec<Vec<usize>> {
    let mut groups = Vec::new();
    let mut group = Vec::new();
    let mut seen = HashSet::new();
    for &i in which {
        let keys = turns[i].keys();
        if keys.iter().any(|k| seen.contains(k)) {
            groups.push(std::mem::take(&mut group));
            seen.clear();
        }
        seen.extend(keys);
        group.push(i);
    }
    if !group.is_empty() {
        groups.push(group);
    }
    groups
}

/// Writes one group in one transaction. A turn whose checks fail gets its reason and the others go on; when the
/// database refuses the transaction itself, each turn is written alone, so that each gets its own outcome.
async fn write_group(pool: &Pool, turns: &[&TurnWrite], group: &[usize], outcomes: &mut [Option<Outcome>]) -> u64 {
    let mut left: Vec<usize> = group.to_vec();
    let mut commits = 0;
    // Each round either commits or sets aside at least one turn.
    while !left.is_empty() {
        match try_group(pool, turns, &left).await {
            Ok(Tried::Written(written)) => {
                commits += 1;
                for (i, w) in written {
                    outcomes[i] = Some(w);
                }
                return commits;
            }
            Ok(Tried::Failed(failed)) => {
                for (i, e) in failed {
                    outcomes[i] = Some(Err(e));
                    left.retain(|&j| j != i);
                }
            }
            Err(e) if left.len() == 1 => {
                outcomes[left[0]] = Some(Err(classify(e)));
                return commits;
            }
            Err(e) => {
                tracing::warn!("a batch of {} turns failed ({e}); writing each on its own", left.len());
                for &i in &left {
                    commits += Box::pin(write_group(pool, turns, &[i], outcomes)).await;
                }
                return commits;
            }
        }
    }
    commits
}

/// What the database says, as the engine needs to hear it.
fn classify(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::NameTaken,
        _ => StoreError::Database(e),
    }
}

enum Tried {
    /// Committed: each turn's outcome (checks that failed included).
    Written(Vec<(usize, Outcome)>),
    /// Rolled back: these turns failed a write and are set aside; the others are to be written again.
    Failed(Vec<(usize, StoreError)>),
}

async fn try_group(pool: &Pool, turns: &[&TurnWrite], which: &[usize]) -> Result<Tried, sqlx::Error> {
    let mut tx = Tx::begin(pool).await?;
    match checked_writes(&mut tx, turns, which).await {
        Ok(Tried::Written(written)) => {
            tx.commit().await?;
            Ok(Tried::Written(written))
        }
        Ok(failed) => {
            tx.rollback().await;
            Ok(failed)
        }
        Err(e) => {
            tx.rollback().await;
            Err(e)
        }
    }
}

/// The checks, then the writes of the turns that passed them.
async fn checked_writes(tx: &mut Tx, turns: &[&TurnWrite], which: &[usize]) -> Result<Tried, sqlx::Error> {
    let d = tx.dialect();
    let mut failed: HashMap<usize, StoreError> = HashMap::new();

    // The conversations the turns were computed from.
    let guarded: Vec<usize> =
        which.iter().copied().filter(|&i| !matches!(turns[i].guard, ConversationGuard::Any)).collect();
    if !guarded.is_empty() {
        let sql = format!(
            "SELECT k.i, c.flow, c.at, c.return_to_confirm, c.pilot_id FROM {} \
             JOIN conversations c ON c.workspace = k.ws AND c.user_id = k.usr ORDER BY c.workspace, c.user_id{}",
            source(d, &[("i", "BIGINT"), ("ws", "TEXT"), ("usr", "TEXT")]),
            lock(d, "c")
        );
        let rows = guarded.iter().map(|&i| json!({"i": i, "ws": turns[i].ws.as_str(), "usr": turns[i].actor.as_str()}));
        let found: HashMap<usize, ConversationCheck> = tx
            .rows::<ConversationCheck>(&sql, rows.collect())
            .await?
            .into_iter()
            .map(|c| (usize::try_from(c.i).unwrap_or(usize::MAX), c))
            .collect();
        for &i in &guarded {
            let holds = match (&turns[i].guard, found.get(&i)) {
                (ConversationGuard::Absent, found) => found.is_none(),
                (ConversationGuard::At(c), Some(f)) => {
                    f.flow == c.flow.as_str()
                        && f.at == c.at.as_str()
                        && f.return_to_confirm == c.return_to_confirm
                        && f.pilot_id == c.pilot.map(|p| p.0)
                }
                (ConversationGuard::At(_), None) => false,
                (ConversationGuard::Any, _) => true,
            };
            if !holds {
                failed.insert(i, StoreError::Conflict);
            }
        }
    }

    // The settings a turn was decided on must still be in force (an admin saving them waits for this commit on
    // PostgreSQL, which shares the rows it checks; SQLite's writer holds the whole database).
    let revisions: Vec<(usize, i64)> =
        which.iter().filter_map(|&i| turns[i].settings_revision.map(|r| (i, r))).collect();
    if !revisions.is_empty() {
        let sql = format!(
            "SELECT s.workspace AS ws, s.revision FROM workspace_settings s WHERE s.workspace IN (SELECT ws FROM {}) \
             ORDER BY s.workspace{}",
            source(d, &[("ws", "TEXT")]),
            match d {
                Dialect::Postgres => " FOR SHARE OF s",
                Dialect::Sqlite => "",
            }
        );
        let rows = revisions.iter().map(|(i, _)| json!({"ws": turns[*i].ws.as_str()})).collect();
        let found: HashMap<String, i64> =
            tx.rows::<RevisionCheck>(&sql, rows).await?.into_iter().map(|r| (r.ws, r.revision)).collect();
        for (i, revision) in revisions {
            if found.get(turns[i].ws.as_str()).copied().unwrap_or(0) != revision {
                failed.entry(i).or_insert(StoreError::Conflict);
            }
        }
    }

    // The pilots written or removed must still be at the version read.
    let mut versions: Vec<(usize, PilotId, i64)> = Vec::new();
    for &i in which {
        if let Some(u) = &turns[i].update {
            versions.push((i, u.before.id, u.before.version));
        }
        if let Some((id, version)) = turns[i].delete {
            versions.push((i, id, version));
        }
    }
    if !versions.is_empty() {
        let sql = format!(
            "SELECT k.i, p.version FROM {} JOIN pilots p ON p.workspace = k.ws AND p.id = k.id ORDER BY p.id{}",
            source(d, &[("i", "BIGINT"), ("ws", "TEXT"), ("id", "BIGINT")]),
            lock(d, "p")
        );
        let rows = versions
            .iter()
            .enumerate()
            .map(|(n, (i, id, _))| json!({"i": n, "ws": turns[*i].ws.as_str(), "id": id.0}))
            .collect();
        let found: HashMap<usize, i64> = tx
            .rows::<VersionCheck>(&sql, rows)
            .await?
            .into_iter()
            .map(|v| (usize::try_from(v.i).unwrap_or(usize::MAX), v.version))
            .collect();
        for (n, (i, _, version)) in versions.iter().enumerate() {
            match found.get(&n) {
                None => {
                    failed.entry(*i).or_insert(StoreError::PilotGone);
                }
                Some(v) if v != version => {
                    failed.entry(*i).or_insert(StoreError::Conflict);
                }
                Some(_) => {}
            }
        }
    }

    // An abandoned registration is removed only if it still is: unchanged, and nobody answered in it since.
    let releases: Vec<(usize, &NameHolder)> =
        which.iter().filter_map(|&i| turns[i].release.as_ref().map(|r| (i, r))).collect();
    if !releases.is_empty() {
        let sql = format!(
            "SELECT k.i, p.version, (SELECT MAX(c.updated_at) FROM conversations c WHERE c.pilot_id = p.id) \
             AS last_conversation FROM {} JOIN pilots p ON p.workspace = k.ws AND p.id = k.id ORDER BY p.id{}",
            source(d, &[("i", "BIGINT"), ("ws", "TEXT"), ("id", "BIGINT")]),
            lock(d, "p")
        );
        let rows = releases.iter().map(|(i, r)| json!({"i": i, "ws": turns[*i].ws.as_str(), "id": r.id.0})).collect();
        let found: HashMap<usize, ReleaseCheck> = tx
            .rows::<ReleaseCheck>(&sql, rows)
            .await?
            .into_iter()
            .map(|r| (usize::try_from(r.i).unwrap_or(usize::MAX), r))
            .collect();
        for (i, holder) in &releases {
            let still = found.get(i).is_some_and(|r| {
                r.version == holder.version && r.last_conversation.is_none_or(|c| c <= holder.last_answer)
            });
            if !still {
                failed.entry(*i).or_insert(StoreError::Conflict);
            }
        }
    }

    // A question is answered once.
    let closes: Vec<(usize, i64)> = which
        .iter()
        .flat_map(|&i| {
            turns[i].asks.iter().filter_map(move |a| match a {
                AskWrite::Close(id) => Some((i, *id)),
                AskWrite::Open { .. } => None,
            })
        })
        .collect();
    if !closes.is_empty() {
        let sql = format!(
            "SELECT a.id FROM {} JOIN asks a ON a.workspace = k.ws AND a.id = k.id WHERE a.answered_at IS NULL \
             ORDER BY a.id{}",
            source(d, &[("ws", "TEXT"), ("id", "BIGINT")]),
            lock(d, "a")
        );
        let rows = closes.iter().map(|(i, id)| json!({"ws": turns[*i].ws.as_str(), "id": id})).collect();
        let open: HashSet<i64> = tx.rows::<Id>(&sql, rows).await?.into_iter().map(|r| r.id).collect();
        for (i, id) in &closes {
            if !open.contains(id) {
                failed.entry(*i).or_insert(StoreError::Conflict);
            }
        }
    }

    let ok: Vec<usize> = which.iter().copied().filter(|i| !failed.contains_key(i)).collect();
    let mut retry: Vec<(usize, StoreError)> = Vec::new();

    // Removed pilots first (their names may be taken next).
    let removed: Vec<Value> = ok
        .iter()
        .flat_map(|&i| [turns[i].release.as_ref().map(|r| r.id), turns[i].delete.map(|d| d.0)])
        .flatten()
        .map(|id| json!({"id": id.0}))
        .collect();
    if !removed.is_empty() {
        let sql = format!("DELETE FROM pilots WHERE id IN (SELECT id FROM {})", source(d, &[("id", "BIGINT")]));
        tx.exec(&sql, removed).await?;
    }

    // New drafts. A name taken meanwhile (the turn checked it before) leaves the turn out.
    let mut created: HashMap<usize, Pilot> = HashMap::new();
    let creating: Vec<usize> = ok.iter().copied().filter(|&i| turns[i].create.is_some()).collect();
    if !creating.is_empty() {
        let sql = format!(
            "INSERT INTO pilots (workspace, name, name_key, stage, registered_by, registered_at, home_channel, \
             updated_at, version) SELECT k.ws, k.name, k.name_key, k.stage, k.actor, k.now, k.channel, k.now, 1 \
             FROM {} WHERE TRUE ON CONFLICT (workspace, name_key) DO NOTHING RETURNING id, workspace, name_key",
            source(
                d,
                &[
                    ("ws", "TEXT"),
                    ("name", "TEXT"),
                    ("name_key", "TEXT"),
                    ("stage", "TEXT"),
                    ("actor", "TEXT"),
                    ("now", "TIMESTAMPTZ"),
                    ("channel", "TEXT"),
                ]
            )
        );
        let rows = creating
            .iter()
            .filter_map(|&i| {
                let t = turns[i];
                let c = t.create.as_ref()?;
                Some(json!({
                    "ws": t.ws.as_str(), "name": c.name.as_str(), "name_key": c.name.key(),
                    "stage": Stage::Draft.as_str(), "actor": t.actor.as_str(), "now": ts(t.now),
                    "channel": c.channel.as_str(),
                }))
            })
            .collect();
        let ids: HashMap<(String, String), i64> =
            tx.rows::<CreatedRow>(&sql, rows).await?.into_iter().map(|r| ((r.workspace, r.name_key), r.id)).collect();
        for &i in &creating {
            let t = turns[i];
            let Some(c) = &t.create else { continue };
            match ids.get(&(t.ws.as_str().to_owned(), c.name.key())) {
                Some(id) => {
                    created.insert(i, new_draft(t, c, PilotId(*id)));
                }
                None => retry.push((i, StoreError::NameTaken)),
            }
        }
    }
    if !retry.is_empty() {
        return Ok(Tried::Failed(retry));
    }
    let pilot_of = |i: usize, r: PilotRef| -> Option<i64> {
        match r {
            PilotRef::Id(id) => Some(id.0),
            PilotRef::Created => created.get(&i).map(|p| p.id.0),
        }
    };

    // Conversations: new ones (must be new), saved ones, answered ones (touched), ended ones.
    let conversation_cols: &[(&str, &str)] = &[
        ("ws", "TEXT"),
        ("usr", "TEXT"),
        ("flow", "TEXT"),
        ("at", "TEXT"),
        ("pilot", "BIGINT"),
        ("channel", "TEXT"),
        ("rtc", "BOOLEAN"),
        ("now", "TIMESTAMPTZ"),
        ("scratch", "TEXT"),
    ];
    let conversation_row = |i: usize, c: &Conversation, created: bool| {
        let t = turns[i];
        let pilot = if created { pilot_of(i, PilotRef::Created) } else { c.pilot.map(|p| p.0) };
        json!({
            "ws": t.ws.as_str(), "usr": t.actor.as_str(), "flow": c.flow.as_str(), "at": c.at.as_str(),
            "pilot": pilot, "channel": c.channel.as_str(), "rtc": c.return_to_confirm, "now": ts(t.now),
            "scratch": serde_json::to_string(&c.scratch).unwrap_or_else(|_| "{}".into()),
        })
    };
    let insert_conversation = format!(
        "INSERT INTO conversations (workspace, user_id, flow, at, pilot_id, channel, return_to_confirm, updated_at, \
         scratch) SELECT k.ws, k.usr, k.flow, k.at, k.pilot, k.channel, k.rtc, k.now, k.scratch FROM {} WHERE TRUE \
         ON CONFLICT (workspace, user_id) DO",
        source(d, conversation_cols)
    );
    let (mut inserts, mut saves, mut touches, mut ends) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for &i in &ok {
        let t = turns[i];
        match (&t.guard, &t.conversation) {
            (ConversationGuard::Absent, ConversationWrite::Save { conversation, created }) => {
                inserts.push((i, conversation_row(i, conversation, *created)))
            }
            (_, ConversationWrite::Save { conversation, created }) => {
                saves.push(conversation_row(i, conversation, *created))
            }
            (ConversationGuard::At(_), ConversationWrite::Keep) => {
                touches.push(json!({"ws": t.ws.as_str(), "usr": t.actor.as_str(), "now": ts(t.now)}))
            }
            (_, ConversationWrite::Keep) => {}
            (_, ConversationWrite::End) => ends.push(json!({"ws": t.ws.as_str(), "usr": t.actor.as_str()})),
        }
    }
    if !inserts.is_empty() {
        // A start racing another start of the same user (another process) loses here.
        let sql = format!("{insert_conversation} NOTHING RETURNING workspace, user_id");
        let keys: Vec<(usize, (String, String))> = inserts
            .iter()
            .map(|(i, _)| (*i, (turns[*i].ws.as_str().to_owned(), turns[*i].actor.as_str().to_owned())))
            .collect();
        let rows = inserts.into_iter().map(|(_, r)| r).collect();
        let written: HashSet<(String, String)> =
            tx.rows::<ConversationKey>(&sql, rows).await?.into_iter().map(|k| (k.workspace, k.user_id)).collect();
        for (i, key) in keys {
            if !written.contains(&key) {
                retry.push((i, StoreError::Conflict));
            }
        }
        if !retry.is_empty() {
            return Ok(Tried::Failed(retry));
        }
    }
    if !saves.is_empty() {
        let sql = format!(
            "{insert_conversation} UPDATE SET flow = excluded.flow, at = excluded.at, pilot_id = excluded.pilot_id, \
             channel = excluded.channel, return_to_confirm = excluded.return_to_confirm, \
             updated_at = excluded.updated_at, scratch = excluded.scratch"
        );
        tx.exec(&sql, saves).await?;
    }
    if !touches.is_empty() {
        let sql = format!(
            "UPDATE conversations SET updated_at = k.now FROM {} \
             WHERE conversations.workspace = k.ws AND conversations.user_id = k.usr",
            source(d, &[("ws", "TEXT"), ("usr", "TEXT"), ("now", "TIMESTAMPTZ")])
        );
        tx.exec(&sql, touches).await?;
    }
    if !ends.is_empty() {
        let sql = format!(
            "DELETE FROM conversations WHERE (workspace, user_id) IN (SELECT ws, usr FROM {})",
            source(d, &[("ws", "TEXT"), ("usr", "TEXT")])
        );
        tx.exec(&sql, ends).await?;
    }

    // Pilots: what changed, grouped by which columns changed (one statement per set of columns).
    // The turns' changed values, keyed by which columns changed.
    let mut by_columns: HashMap<Vec<&'static str>, Vec<ChangedRow>> = HashMap::new();
    for &i in &ok {
        let Some(u) = &turns[i].update else { continue };
        let (before, after) = (values(&u.before), values(&u.after));
        let mut row = Map::new();
        let mut changed = Vec::new();
        for (((name, _), old), new) in COLUMNS.into_iter().zip(before).zip(after) {
            if old != new {
                changed.push(name);
                row.insert(name.to_owned(), new);
            }
        }
        if changed.is_empty() {
            continue;
        }
        row.insert("ws".into(), turns[i].ws.as_str().into());
        row.insert("id".into(), u.before.id.0.into());
        row.insert("version".into(), u.before.version.into());
        by_columns.entry(changed).or_default().push((i, row));
    }
    let types: HashMap<&str, &str> = COLUMNS.into_iter().collect();
    let mut sets: Vec<_> = by_columns.into_iter().collect();
    sets.sort_by(|a, b| a.0.cmp(&b.0));
    for (changed, rows) in sets {
        let mut cols: Vec<(&str, &str)> = vec![("ws", "TEXT"), ("id", "BIGINT"), ("version", "BIGINT")];
        cols.extend(changed.iter().map(|c| (*c, types.get(c).copied().unwrap_or("TEXT"))));
        let assignments: Vec<String> = changed.iter().map(|c| format!("{c} = k.{c}")).collect();
        let sql = format!(
            "UPDATE pilots SET {}, version = k.version + 1 FROM {} \
             WHERE pilots.workspace = k.ws AND pilots.id = k.id AND pilots.version = k.version RETURNING pilots.id",
            assignments.join(", "),
            source(d, &cols)
        );
        let expected: Vec<(usize, i64)> = rows.iter().map(|(i, r)| (*i, r["id"].as_i64().unwrap_or(0))).collect();
        let written: HashSet<i64> = tx
            .rows::<Id>(&sql, rows.into_iter().map(|(_, r)| Value::Object(r)).collect())
            .await?
            .into_iter()
            .map(|r| r.id)
            .collect();
        for (i, id) in expected {
            if !written.contains(&id) {
                retry.push((i, StoreError::Conflict));
            }
        }
    }
    if !retry.is_empty() {
        return Ok(Tried::Failed(retry));
    }

    // The records: audit lines, evidence, voided evidence, questions by direct message.
    let mut audit = Vec::new();
    let mut evidence = Vec::new();
    let mut voided = Vec::new();
    let (mut closes, mut opens) = (Vec::new(), Vec::new());
    for &i in &ok {
        let t = turns[i];
        if let Some(r) = &t.release {
            let line = crate::domain::rules::released_audit(r);
            audit.push(audit_row(t, Some(r.id.0), &line));
        }
        for (r, line) in &t.audit {
            audit.push(audit_row(t, pilot_of(i, *r), line));
        }
        for (r, e) in &t.evidence {
            evidence.push(json!({
                "ws": t.ws.as_str(), "pilot": pilot_of(i, *r), "kind": e.kind.as_str(), "note": e.note,
                "value": e.value, "period": e.period, "source": e.source, "actor": t.actor.as_str(),
                "now": ts(t.now), "proves": e.proves,
            }));
        }
        for (id, kind) in &t.voided {
            voided.push(json!({"ws": t.ws.as_str(), "pilot": id.0, "kind": kind.as_str(), "now": ts(t.now)}));
        }
        for a in &t.asks {
            match a {
                AskWrite::Close(id) => closes.push(json!({"ws": t.ws.as_str(), "id": id, "now": ts(t.now)})),
                AskWrite::Open { pilot, user, kind, payload } => opens.push(json!({
                    "ws": t.ws.as_str(), "pilot": pilot_of(i, *pilot), "usr": user.as_str(), "kind": kind,
                    "payload": payload, "now": ts(t.now),
                })),
            }
        }
    }
    if !audit.is_empty() {
        let sql = format!(
            "INSERT INTO audit (workspace, pilot_id, actor, action, field, old_value, new_value, at) \
             SELECT k.ws, k.pilot, k.actor, k.action, k.field, k.old, k.new, k.now FROM {}",
            source(
                d,
                &[
                    ("ws", "TEXT"),
                    ("pilot", "BIGINT"),
                    ("actor", "TEXT"),
                    ("action", "TEXT"),
                    ("field", "TEXT"),
                    ("old", "TEXT"),
                    ("new", "TEXT"),
                    ("now", "TIMESTAMPTZ"),
                ]
            )
        );
        tx.exec(&sql, audit).await?;
    }
    if !voided.is_empty() {
        let sql = format!(
            "UPDATE evidence SET voided_at = k.now FROM {} WHERE evidence.workspace = k.ws \
             AND evidence.pilot_id = k.pilot AND evidence.kind = k.kind AND evidence.voided_at IS NULL",
            source(d, &[("ws", "TEXT"), ("pilot", "BIGINT"), ("kind", "TEXT"), ("now", "TIMESTAMPTZ")])
        );
        tx.exec(&sql, voided).await?;
    }
    if !evidence.is_empty() {
        let sql = format!(
            "INSERT INTO evidence (workspace, pilot_id, kind, note, value, period, source, recorded_by, recorded_at, \
             proves) SELECT k.ws, k.pilot, k.kind, k.note, k.value, k.period, k.source, k.actor, k.now, k.proves \
             FROM {}",
            source(
                d,
                &[
                    ("ws", "TEXT"),
                    ("pilot", "BIGINT"),
                    ("kind", "TEXT"),
                    ("note", "TEXT"),
                    ("value", "DOUBLE PRECISION"),
                    ("period", "TEXT"),
                    ("source", "TEXT"),
                    ("actor", "TEXT"),
                    ("now", "TIMESTAMPTZ"),
                    ("proves", "TEXT"),
                ]
            )
        );
        tx.exec(&sql, evidence).await?;
    }
    if !closes.is_empty() {
        let sql = format!(
            "UPDATE asks SET answered_at = k.now FROM {} WHERE asks.workspace = k.ws AND asks.id = k.id",
            source(d, &[("ws", "TEXT"), ("id", "BIGINT"), ("now", "TIMESTAMPTZ")])
        );
        tx.exec(&sql, closes).await?;
    }
    if !opens.is_empty() {
        // A new question supersedes the open one of its kind about the same pilot.
        let supersede = format!(
            "UPDATE asks SET answered_at = k.now FROM {} WHERE asks.workspace = k.ws AND asks.pilot_id = k.pilot \
             AND asks.kind = k.kind AND asks.answered_at IS NULL",
            source(d, &[("ws", "TEXT"), ("pilot", "BIGINT"), ("kind", "TEXT"), ("now", "TIMESTAMPTZ")])
        );
        tx.exec(&supersede, opens.clone()).await?;
        let sql = format!(
            "INSERT INTO asks (workspace, user_id, kind, pilot_id, payload, created_at) \
             SELECT k.ws, k.usr, k.kind, k.pilot, k.payload, k.now FROM {}",
            source(
                d,
                &[
                    ("ws", "TEXT"),
                    ("usr", "TEXT"),
                    ("kind", "TEXT"),
                    ("pilot", "BIGINT"),
                    ("payload", "TEXT"),
                    ("now", "TIMESTAMPTZ"),
                ]
            )
        );
        tx.exec(&sql, opens).await?;
    }

    let mut written: Vec<(usize, Outcome)> = failed.into_iter().map(|(i, e)| (i, Err(e))).collect();
    written.extend(ok.into_iter().map(|i| (i, Ok(Written { created: created.remove(&i) }))));
    Ok(Tried::Written(written))
}

fn audit_row(t: &TurnWrite, pilot: Option<i64>, line: &AuditRecord) -> Value {
    json!({
        "ws": t.ws.as_str(), "pilot": pilot, "actor": t.actor.as_str(), "action": line.action, "field": line.field,
        "old": line.old, "new": line.new, "now": ts(t.now),
    })
}

/// The draft a turn created, as the database now has it.
fn new_draft(t: &TurnWrite, c: &NewDraft, id: PilotId) -> Pilot {
    Pilot::draft(id, t.ws.clone(), c.name.as_str(), t.actor.clone(), t.now, c.channel.clone())
}

/// A pilot's writable columns, with their PostgreSQL types. The id, workspace, registrant and the schedule's claim are
/// never rewritten.
const COLUMNS: [(&str, &str); 37] = [
    ("name", "TEXT"),
    ("name_key", "TEXT"),
    ("stage", "TEXT"),
    ("home_channel", "TEXT"),
    ("workflow", "TEXT"),
    ("owner", "TEXT"),
    ("sponsor", "TEXT"),
    ("pnl_line", "TEXT"),
    ("pnl_unit", "TEXT"),
    ("pnl_baseline", "DOUBLE PRECISION"),
    ("pnl_target", "DOUBLE PRECISION"),
    ("review_date", "DATE"),
    ("owner_status", "TEXT"),
    ("next_review_date", "DATE"),
    ("decision", "TEXT"),
    ("decision_reason", "TEXT"),
    ("owner_decline_reason", "TEXT"),
    ("kill_category", "TEXT"),
    ("scale_override", "BOOLEAN"),
    ("evidence_due", "DATE"),
    ("extensions", "INTEGER"),
    ("evidence_workflow_live", "BOOLEAN"),
    ("evidence_owner_running", "BOOLEAN"),
    ("pnl_realised", "DOUBLE PRECISION"),
    ("evidence_count", "INTEGER"),
    ("nudges_sent", "INTEGER"),
    ("cycle", "DATE"),
    ("heads_up_sent", "BOOLEAN"),
    ("cycle_nudges", "INTEGER"),
    ("unanswered", "INTEGER"),
    ("last_nudge_at", "TIMESTAMPTZ"),
    ("escalated", "BOOLEAN"),
    ("posted", "BOOLEAN"),
    ("snoozes", "INTEGER"),
    ("snoozed_until", "TIMESTAMPTZ"),
    ("next_action_at", "TIMESTAMPTZ"),
    ("updated_at", "TIMESTAMPTZ"),
];

/// A pilot's values for [`COLUMNS`], in order, as JSON.
fn values(p: &Pilot) -> [Value; 37] {
    let pnl = p.pnl.as_ref();
    let n = |v: u32| Value::from(v);
    let s = &p.schedule;
    [
        p.name.clone().into(),
        crate::domain::pilot::name_key(&p.name).into(),
        p.stage.as_str().into(),
        p.home_channel.as_str().into(),
        p.workflow.clone().into(),
        p.owner.as_ref().map(|u| u.as_str().to_owned()).into(),
        p.sponsor.as_ref().map(|u| u.as_str().to_owned()).into(),
        pnl.map(|t| t.line.clone()).into(),
        pnl.map(|t| t.unit.clone()).into(),
        pnl.map(|t| t.baseline).into(),
        pnl.map(|t| t.target).into(),
        date(p.review_date),
        p.owner_status.as_str().into(),
        date(p.next_review_date),
        p.decision.map(|d| d.as_str()).into(),
        p.decision_reason.clone().into(),
        p.owner_decline_reason.clone().into(),
        p.kill_category.map(|k| k.as_str()).into(),
        p.scale_override.into(),
        date(p.evidence_due),
        n(p.extensions),
        p.evidence.workflow_live.into(),
        p.evidence.owner_running.into(),
        p.evidence.pnl_realised.into(),
        Value::from(p.evidence_count()),
        n(p.nudges_sent),
        date(s.cycle),
        s.heads_up_sent.into(),
        n(s.cycle_nudges),
        n(s.unanswered),
        s.last_nudge_at.map_or(Value::Null, ts),
        s.escalated.into(),
        s.posted.into(),
        n(s.snoozes),
        s.snoozed_until.map_or(Value::Null, ts),
        p.next_action_at.map_or(Value::Null, ts),
        ts(p.updated_at),
    ]
}
