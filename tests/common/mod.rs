//! Test helpers: a fresh database per test (SQLite file, or a new PostgreSQL database), an engine on it,
//! and a console session driven by a transcript.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use chrono::{DateTime, Utc};
use lastmile::chat::console::{self, ConsoleOptions};
use lastmile::engine::{Engine, EngineSettings};
use lastmile::prompts::Prompts;
use sqlx::Connection;

pub const NOW: &str = "2026-11-25T10:00:00Z";

pub fn now() -> DateTime<Utc> {
    NOW.parse().unwrap()
}

/// A database that exists for one test.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestDb {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path: PathBuf = dir.path().join("lastmile.db");
        Self { url: format!("sqlite://{}", path.display()), _dir: Some(dir), pg: None }
    }

    /// A new, empty PostgreSQL database, or None (and a note on stdout) when `LASTMILE_TEST_POSTGRES_URL` is unset.
    pub async fn postgres(test: &str) -> Option<Self> {
        let Ok(admin) = std::env::var("LASTMILE_TEST_POSTGRES_URL") else {
            println!("{test}: skipped: LASTMILE_TEST_POSTGRES_URL is not set");
            return None;
        };
        let name = format!(
            "lastmile_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            Utc::now().timestamp_subsec_nanos()
        );
        let mut conn = sqlx::PgConnection::connect(&admin).await.expect("connect to LASTMILE_TEST_POSTGRES_URL");
        sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut conn).await.unwrap();
        conn.close().await.ok();
        let (base, _) = admin.rsplit_once('/').expect("URL with a database path");
        println!("{test}: running on PostgreSQL database {name}");
        Some(Self { url: format!("{base}/{name}"), _dir: None, pg: Some((admin, name)) })
    }

    /// Removes a PostgreSQL database (SQLite files go with their temporary folder).
    pub async fn cleanup(self) {
        if let Some((admin, name)) = &self.pg
            && let Ok(mut conn) = sqlx::PgConnection::connect(admin).await
        {
            sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&mut conn).await.ok();
        }
    }
}

pub async fn engine(url: &str) -> Engine {
    let store = lastmile::open_store(url).await.unwrap();
    Engine::new(store, Arc::new(Prompts::embedded().unwrap()), EngineSettings::default())
}

pub fn options(user: &str) -> ConsoleOptions {
    ConsoleOptions {
        workspace: "acme".into(),
        user: user.into(),
        channel: "general".into(),
        now: Some(now()),
        bots: vec!["lastmile".into(), "deploybot".into()],
        interactive: false,
        closed_dms: vec![],
        admins: vec!["dana".into()],
        chart_dir: std::env::temp_dir().join("lastmile-test-charts"),
    }
}

/// Feeds input lines to a console session as `user`, returning what it printed. A `:restart` line closes the
/// engine and opens a new one on the same database, as a restarted bot would.
pub async fn run_console(url: &str, user: &str, input: &str) -> String {
    continue_console(url, options(user), input).await.0
}

/// Feeds input lines to a console session that starts as `opts` say (who speaks, where, the clock), as
/// [`run_console`] does; returns what it printed and the options it ended with, to continue from there.
pub async fn continue_console(url: &str, mut opts: ConsoleOptions, input: &str) -> (String, ConsoleOptions) {
    let mut out = Vec::new();
    for (i, part) in input.split("\n:restart\n").enumerate() {
        if i > 0 {
            out.extend_from_slice(b"> :restart\n");
        }
        let engine = engine(url).await;
        // The speaking user and channel carry over a restart, as they would for a person.
        opts = console::run(&engine, opts, part.as_bytes(), &mut out).await.unwrap();
        engine.store().close().await;
    }
    (String::from_utf8(out).unwrap(), opts)
}

/// Runs one SQL statement on a test database (for seeding many rows at once).
pub async fn execute(url: &str, sql: &str) {
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(sql).execute(&mut c).await.unwrap();
        c.close().await.ok();
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(sql).execute(&mut c).await.unwrap();
        c.close().await.ok();
    }
}

/// A scoped pilot to insert whose owner accepted and whose first nudge is due.
pub struct DuePilot<'a> {
    pub workspace: &'a str,
    pub name: &'a str,
    pub owner: &'a str,
    pub registered_by: &'a str,
    pub channel: &'a str,
    /// The review date; the nudge is due the next day.
    pub review: chrono::NaiveDate,
    /// When the scheduler is to look at it.
    pub due: DateTime<Utc>,
}

/// Inserts `p` directly (migrating the database first), as a registration would have left it.
pub async fn insert_due_pilot(url: &str, p: DuePilot<'_>) {
    lastmile::open_store(url).await.unwrap().close().await;
    let registered = (p.due - chrono::Duration::days(30)).to_rfc3339();
    let sql = format!(
        "INSERT INTO pilots (workspace, name, name_key, stage, registered_by, registered_at, home_channel, workflow, owner, \
         pnl_line, pnl_unit, pnl_baseline, pnl_target, review_date, next_review_date, owner_status, next_action_at, updated_at) \
         VALUES ('{ws}', '{name}', '{key}', 'scoped', '{by}', '{registered}', '{channel}', 'Intake triage by hand', '{owner}', \
         'Claims cost', 'GBP', 100.0, 80.0, '{review}', '{review}', 'accepted', '{due}', '{registered}')",
        ws = p.workspace,
        name = p.name,
        key = p.name.to_lowercase(),
        by = p.registered_by,
        channel = p.channel,
        owner = p.owner,
        review = p.review,
        due = p.due.to_rfc3339(),
    );
    execute(url, &sql).await;
}
