//! `lastmile copy` as a user runs it: a database built by the transcript scenarios is copied (SQLite to PostgreSQL
//! and back) and the scenarios continue on each copy exactly as on the original, replies and export alike; a
//! target with other rows is refused and left as it was; an interrupted copy finishes when run again.
//! Tests that need PostgreSQL have "postgres" in their name and are skipped when LASTMILE_TEST_POSTGRES_URL is unset.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::TestDb;

const BIN: &str = env!("CARGO_BIN_EXE_lastmile");

/// Runs the `lastmile` binary with `args`, in an empty folder (no configuration file, no default database).
fn lastmile(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(BIN)
        .args(args)
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .env_remove("DISCORD_TOKEN")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `lastmile copy --from --to`, which must succeed; its per-table lines.
fn copy(from: &str, to: &str) -> String {
    let out = lastmile(&["copy", "--from", from, "--to", to]);
    assert!(out.status.success(), "copy {from} -> {to} failed: {}", stderr(&out));
    stdout(&out)
}

/// The pilots as `lastmile export --format json` shows them, at a fixed instant.
fn export(url: &str) -> String {
    let out = lastmile(&["export", "--db", url, "--format", "json", "--now", "2027-06-01T00:00:00Z"]);
    assert!(out.status.success(), "export of {url} failed: {}", stderr(&out));
    stdout(&out)
}

/// The lines typed into a transcript, in order.
fn inputs(transcript: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(transcript).unwrap();
    text.lines().filter_map(|l| l.strip_prefix("> ")).map(str::to_owned).collect()
}

fn transcripts() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    files
}

fn lines(input: &[String]) -> String {
    input.iter().map(|l| format!("{l}\n")).collect()
}

/// Every transcript scenario, stopped halfway on SQLite, copied to PostgreSQL and from there to a new SQLite
/// file, then continued on all three: the bot answers the same on each, and exports the same pilots.
#[tokio::test]
async fn transcripts_continue_on_a_postgres_copy_as_on_sqlite() {
    for file in transcripts() {
        let Some(pg) = TestDb::postgres("transcripts_continue_on_a_postgres_copy_as_on_sqlite").await else { return };
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let input = inputs(&file);
        // Halfway, but not on a restart (which is not a line the console reads).
        let mut half = input.len() / 2;
        while input.get(half).is_some_and(|l| l == ":restart") {
            half += 1;
        }
        let original = TestDb::sqlite();
        let (_, opts) = common::continue_console(&original.url, common::options("bob"), &lines(&input[..half])).await;
        copy(&original.url, &pg.url);
        let back = TestDb::sqlite();
        copy(&pg.url, &back.url);

        let rest = lines(&input[half..]);
        let (on_sqlite, _) = common::continue_console(&original.url, opts.clone(), &rest).await;
        let (on_postgres, _) = common::continue_console(&pg.url, opts.clone(), &rest).await;
        let (on_sqlite_again, _) = common::continue_console(&back.url, opts, &rest).await;
        assert_eq!(on_postgres, on_sqlite, "{name}: the bot continued differently on the PostgreSQL copy");
        assert_eq!(on_sqlite_again, on_sqlite, "{name}: the bot continued differently on the copy back to SQLite");
        let exported = export(&original.url);
        assert!(exported.starts_with('['), "{name}: {exported}");
        assert_eq!(export(&pg.url), exported, "{name}: export differs on the PostgreSQL copy");
        assert_eq!(export(&back.url), exported, "{name}: export differs on the copy back to SQLite");
        pg.cleanup().await;
    }
}

/// A pilot past its review date with reminders sent, the owner halfway through recording evidence, someone else
/// halfway through registering a pilot, and a registration cancelled (its id is not given again).
const BEFORE_THE_MOVE: &str = "\
:as @dana
/lastmile config digest off
:as @bob
/pilot register Claims triage
Claims intake team (12, Leeds) triages motor claims by hand; the assistant pre-sorts them.
@alice
Claims handling cost: £4.2m -> £3.6m
@carol
2026-12-10
Confirm
:as @alice
Accept
:as @erin
/pilot register Fraud triage
Claims fraud analysts (6, Cardiff) review flagged claims one by one; the model will score and batch them.
:as @frank
/pilot register Scrapped idea
cancel
:as @alice
:advance 16d
Add evidence
1
";

/// The same people carry on, on the database they were moved to.
const AFTER_THE_MOVE: &str = "\
Since 1 December the Leeds intake team works the new triage queue for every motor claim; runbook: wiki/triage
:advance 7d
:as @erin
/pilot resume
@heidi
Fraud losses: £2m -> £1.5m
@carol
12w
Confirm
/pilot register Invoice matching
:as @alice
/pilot list
";

/// The move of a running bot to PostgreSQL: open dialogues resume at the question they were at, the reminders
/// already sent are not sent again and the next one comes when due, and new rows get new ids.
#[tokio::test]
async fn a_bot_moved_to_postgres_continues_where_it_stopped() {
    let Some(pg) = TestDb::postgres("a_bot_moved_to_postgres_continues_where_it_stopped").await else { return };
    let original = TestDb::sqlite();
    let (before, opts) = common::continue_console(&original.url, common::options("bob"), BEFORE_THE_MOVE).await;
    assert!(before.contains("This is reminder 1."), "{before}");
    assert!(before.contains("Is the redesigned workflow in use?"), "{before}");
    let report = copy(&original.url, &pg.url);
    for table in ["pilots", "conversations", "asks", "deliveries", "audit", "evidence", "workspace_settings"] {
        let line = report.lines().find(|l| l.starts_with(&format!("{table} "))).unwrap_or_else(|| panic!("{report}"));
        assert!(line.ends_with("ok (copied)"), "{line}");
    }
    assert!(report.lines().any(|l| l.starts_with("conversations ") && l.contains(" 2 rows")), "{report}");

    let (on_postgres, _) = common::continue_console(&pg.url, opts.clone(), AFTER_THE_MOVE).await;
    let (on_sqlite, _) = common::continue_console(&original.url, opts, AFTER_THE_MOVE).await;
    assert_eq!(on_postgres, on_sqlite);
    assert!(on_postgres.contains("Recorded for **Claims triage**: Workflow live."), "{on_postgres}");
    assert!(on_postgres.contains("This is reminder 2."), "{on_postgres}");
    assert!(!on_postgres.contains("This is reminder 1.") && !on_postgres.contains("Heads-up"), "{on_postgres}");
    assert!(on_postgres.contains("Picking up **Fraud triage** where you left it (Last-mile owner)."), "{on_postgres}");
    assert!(on_postgres.contains("**Invoice matching** — question 1 of 5"), "{on_postgres}");
    assert!(on_postgres.contains("#2 **Fraud triage**"), "{on_postgres}");
    let exported = export(&pg.url);
    assert_eq!(exported, export(&original.url));
    // Pilot 3 was cancelled before the move: the next pilot is 4, as it would have been on SQLite.
    let pilots: serde_json::Value = serde_json::from_str(&exported).unwrap();
    let ids: Vec<(i64, &str)> =
        pilots.as_array().unwrap().iter().map(|p| (p["id"].as_i64().unwrap(), p["name"].as_str().unwrap())).collect();
    assert_eq!(ids, [(1, "Claims triage"), (2, "Fraud triage"), (4, "Invoice matching")]);
    pg.cleanup().await;
}

/// A pilot registered on the source, and a different one on the target.
async fn two_different_databases(source: &str, target: &str) {
    common::run_console(source, "bob", "/pilot register Claims triage\n").await;
    common::run_console(target, "bob", "/pilot register Something else\n").await;
}

async fn a_target_with_other_rows_is_refused_and_left_unchanged(target: &TestDb) {
    let source = TestDb::sqlite();
    two_different_databases(&source.url, &target.url).await;
    let before = export(&target.url);
    let out = lastmile(&["copy", "--from", &source.url, "--to", &target.url]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("already has 1 rows in table audit that are not the source's"), "{err}");
    assert!(err.contains("nothing was written"), "{err}");
    assert_eq!(export(&target.url), before);
    assert!(before.contains("Something else") && !before.contains("Claims triage"), "{before}");
}

#[tokio::test]
async fn a_target_with_other_rows_is_refused() {
    a_target_with_other_rows_is_refused_and_left_unchanged(&TestDb::sqlite()).await;
}

#[tokio::test]
async fn a_postgres_target_with_other_rows_is_refused() {
    let Some(pg) = TestDb::postgres("a_postgres_target_with_other_rows_is_refused").await else { return };
    a_target_with_other_rows_is_refused_and_left_unchanged(&pg).await;
    pg.cleanup().await;
}

/// Each table is copied in one transaction, so an interrupted copy leaves whole tables and empty ones: here the
/// tables after the first few are emptied, as such an interruption leaves them. Run again, the copy keeps the
/// tables that are there and equal to the source's, copies the rest, and the bot continues on the target.
/// A table that is there but not equal to the source's (one row gone) is refused.
async fn an_interrupted_copy_finishes_when_run_again(target: &TestDb) {
    let source = TestDb::sqlite();
    let (_, opts) = common::continue_console(&source.url, common::options("bob"), BEFORE_THE_MOVE).await;
    let first = copy(&source.url, &target.url);
    let tables: Vec<&str> = first.lines().map(|l| l.split_whitespace().next().unwrap()).collect();
    assert_eq!(tables.len(), 10, "{first}");
    let (done, undone) = tables.split_at(4);
    for table in undone {
        common::execute(&target.url, &format!("DELETE FROM {table}")).await;
    }
    let second = copy(&source.url, &target.url);
    for (a, b) in first.lines().zip(second.lines()) {
        let table = a.split_whitespace().next().unwrap();
        // An empty table has nothing to keep: it is copied (0 rows) either way.
        if done.contains(&table) && !a.contains(" 0 rows") {
            assert_eq!(b, a.replace("(copied)", "(already there)"));
        } else {
            assert_eq!(b, a, "copied again, the same rows and checksum");
        }
    }
    assert_eq!(export(&target.url), export(&source.url));
    let (on_target, _) = common::continue_console(&target.url, opts.clone(), AFTER_THE_MOVE).await;
    let (on_source, _) = common::continue_console(&source.url, opts, AFTER_THE_MOVE).await;
    assert_eq!(on_target, on_source);

    // One row less in one table is not what an interruption leaves: refused, nothing written.
    let target_before = export(&target.url);
    common::execute(&target.url, "DELETE FROM audit WHERE id = 3").await;
    let out = lastmile(&["copy", "--from", &source.url, "--to", &target.url]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("in table audit that are not the source's"), "{}", stderr(&out));
    assert_eq!(export(&target.url), target_before);
}

#[tokio::test]
async fn an_interrupted_copy_to_sqlite_finishes_when_run_again() {
    an_interrupted_copy_finishes_when_run_again(&TestDb::sqlite()).await;
}

#[tokio::test]
async fn an_interrupted_copy_to_postgres_finishes_when_run_again() {
    let Some(pg) = TestDb::postgres("an_interrupted_copy_to_postgres_finishes_when_run_again").await else { return };
    an_interrupted_copy_finishes_when_run_again(&pg).await;
    pg.cleanup().await;
}

/// A source behind this build's migrations, or the same database twice, is refused before anything is written.
#[tokio::test]
async fn copy_refuses_a_source_it_cannot_copy_whole() {
    let source = TestDb::sqlite();
    common::run_console(&source.url, "bob", "/pilot register Claims triage\n").await;
    let out = lastmile(&["copy", "--from", &source.url, "--to", &source.url]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--from and --to name the same database"), "{}", stderr(&out));

    // Behind by its newest migration.
    common::execute(
        &source.url,
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT MAX(version) FROM _sqlx_migrations)",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let target = format!("sqlite://{}", dir.path().join("target.db").display());
    let out = lastmile(&["copy", "--from", &source.url, "--to", &target]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not migrated to this version of lastmile"), "{}", stderr(&out));
    assert!(!dir.path().join("target.db").exists(), "a refused copy created its target");
}

/// Passwords in database URLs are never printed.
#[test]
fn copy_prints_no_password() {
    let out = lastmile(&["copy", "--from", "postgres://lastmile:s3cret@127.0.0.1:1/none", "--to", "sqlite://x.db"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("postgres://lastmile:[redacted]@127.0.0.1:1/none"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}
