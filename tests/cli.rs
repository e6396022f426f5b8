//! The `lastmile` binary as a user runs it: a piped transcript, export, a kill mid-dialogue, configuration errors.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_lastmile");

fn lastmile(dir: &std::path::Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir).env_remove("DATABASE_URL").env_remove("DISCORD_TOKEN").env("RUST_LOG", "warn");
    c
}

fn run_with_input(mut cmd: Command, input: &str) -> (i32, String, String) {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

const REGISTRATION: &str = "\
/pilot register Claims triage assistant
claims intake
The claims intake team (12 people, Leeds) triages motor claims by hand; the assistant pre-sorts them.
@alice
Claims handling cost: £4.2m -> £3.6m
@carol
2027-03-31
Confirm
";

/// The export carries the reasons behind an outcome and the owner's decline reason; `/pilot list` shows the owner
/// as declined.
#[test]
fn export_carries_risk_reasons_and_the_decline_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = lastmile(dir.path());
    cmd.args(["console", "--as", "@bob", "--workspace", "acme", "--now", "2026-11-25T10:00:00Z"]);
    let input =
        format!("{REGISTRATION}:as @alice\nDecline: I am moving to underwriting in January\n:as @bob\n/pilot list\n");
    let (code, out, err) = run_with_input(cmd, &input);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("owner @alice (declined)"), "{out}");
    // After the review date, with no evidence: an absorption risk, for every reason at once.
    let out =
        lastmile(dir.path()).args(["export", "--format", "csv", "--now", "2027-04-02T10:00:00Z"]).output().unwrap();
    let csv = String::from_utf8(out.stdout).unwrap();
    let mut rows = csv::Reader::from_reader(csv.as_bytes());
    let header = rows.headers().unwrap().clone();
    let row = rows.records().next().unwrap().unwrap();
    let field = |name: &str| row.get(header.iter().position(|h| h == name).unwrap()).unwrap().to_owned();
    assert_eq!(field("outcome"), "absorption_risk");
    assert_eq!(field("risk_reasons"), "no_accepted_owner;no_live_workflow;owner_not_running;no_pnl_movement");
    assert_eq!(field("owner_decline_reason"), "I am moving to underwriting in January");
}

#[test]
fn a_piped_transcript_registers_a_pilot_and_export_shows_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = lastmile(dir.path());
    cmd.args(["console", "--as", "@bob", "--workspace", "acme", "--now", "2026-11-25T10:00:00Z"]);
    let (code, out, err) = run_with_input(cmd, REGISTRATION);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("[ephemeral @bob] Which team runs claims intake today"), "{out}");
    assert!(out.contains("[#general] New pilot scoped: **Claims triage assistant**"), "{out}");
    assert!(dir.path().join("lastmile.db").exists(), "the default database is created in the working directory");

    let out = lastmile(dir.path()).args(["export", "--format", "json"]).output().unwrap();
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json,
        serde_json::json!([{
            "id": 1, "workspace": "acme", "name": "Claims triage assistant", "stage": "scoped",
            "registered_by": "bob", "registered_at": "2026-11-25T10:00:00Z",
            "workflow": "The claims intake team (12 people, Leeds) triages motor claims by hand; the assistant pre-sorts them.",
            "owner": "alice", "sponsor": "carol", "pnl_line": "Claims handling cost", "pnl_unit": "GBP",
            "pnl_baseline": 4200000.0, "pnl_target": 3600000.0, "review_date": "2027-03-31",
            "owner_status": "pending", "evidence_workflow_live": false, "evidence_owner_running": false,
            "evidence_pnl_moved": false, "pnl_realised": null, "decision": null, "decision_reason": null,
            "outcome": "open", "flags": ["owner_not_accepted"], "extensions": 0, "nudges_sent": 0,
            "next_review_date": "2027-03-31", "risk_reasons": [], "owner_decline_reason": null
        }])
    );

    let out = lastmile(dir.path()).args(["export", "--format", "csv", "--workspace", "acme"]).output().unwrap();
    let csv = String::from_utf8(out.stdout).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some(
            "id,workspace,name,stage,registered_by,registered_at,workflow,owner,sponsor,pnl_line,pnl_unit,pnl_baseline,\
             pnl_target,review_date,owner_status,evidence_workflow_live,evidence_owner_running,evidence_pnl_moved,\
             pnl_realised,decision,decision_reason,outcome,flags,extensions,nudges_sent,next_review_date,risk_reasons,owner_decline_reason"
        )
    );
    assert!(lines.next().unwrap().starts_with("1,acme,Claims triage assistant,scoped,bob,2026-11-25T10:00:00Z,"));
    let out = lastmile(dir.path()).args(["export", "--format", "csv", "--workspace", "other"]).output().unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1, "an empty export still has its header");
}

#[test]
fn export_shows_decisions_outcomes_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = lastmile(dir.path());
    cmd.args(["console", "--as", "@bob", "--workspace", "acme", "--now", "2026-11-25T10:00:00Z"]);
    let script = format!(
        "{REGISTRATION}/pilot review Claims triage assistant scale\nThe CFO mandated it for the year-end close.\n\
         :as @alice\nDecline: not my team\n"
    );
    let (code, out, err) = run_with_input(cmd, &script);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("goes into production"), "{out}");
    let out =
        lastmile(dir.path()).args(["export", "--format", "csv", "--now", "2027-06-01T00:00:00Z"]).output().unwrap();
    let csv = String::from_utf8(out.stdout).unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let row = reader.records().next().unwrap().unwrap();
    let get = |name: &str| row.get(headers.iter().position(|h| h == name).unwrap()).unwrap().to_owned();
    assert_eq!(get("stage"), "in_production");
    assert_eq!(get("decision"), "scale");
    assert_eq!(get("decision_reason"), "The CFO mandated it for the year-end close.");
    assert_eq!(get("outcome"), "in_production");
    assert_eq!(get("owner_status"), "declined");
    assert_eq!(get("flags"), "owner_not_accepted;scaled_without_evidence");
    assert_eq!(get("evidence_pnl_moved"), "false");
    assert_eq!(get("pnl_realised"), "");
}

/// Reads the child's stdout until a line containing `needle` appears (or fails after a timeout).
fn read_until(reader: &mut impl BufRead, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = String::new();
    while Instant::now() < deadline {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        seen.push_str(&line);
        if line.contains(needle) {
            return seen;
        }
    }
    panic!("did not see {needle:?}; output so far:\n{seen}");
}

#[test]
fn killing_the_bot_mid_dialogue_resumes_at_the_same_question() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = lastmile(dir.path())
        .args(["console", "--as", "@bob", "--workspace", "acme"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdin.write_all(b"/pilot register Fraud triage\n").unwrap();
    stdin.flush().unwrap();
    read_until(&mut stdout, "which end-to-end workflow");
    stdin
        .write_all(b"Claims fraud analysts (6, Cardiff) review flagged claims one by one; the model scores them.\n")
        .unwrap();
    stdin.flush().unwrap();
    read_until(&mut stdout, "who owns the last mile");
    // The acknowledged answer must already be on disk: kill without any chance to clean up.
    child.kill().unwrap();
    child.wait().unwrap();

    let mut cmd = lastmile(dir.path());
    cmd.args(["console", "--as", "@bob", "--workspace", "acme"]);
    let (code, out, _) = run_with_input(cmd, "/pilot resume\n@heidi\n");
    assert_eq!(code, 0);
    assert!(out.contains("Picking up **Fraud triage** where you left it (Last-mile owner)."), "{out}");
    assert!(out.contains("Question 3 of 5: which P&L line must **Fraud triage** move"), "{out}");
}

#[test]
fn plain_lastmile_opens_the_console_and_help_lists_the_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = run_with_input(lastmile(dir.path()), "/pilot help\n:as @zoe\n:wat\n");
    assert_eq!(code, 0);
    assert!(out.contains("[ephemeral @you] lastmile keeps every AI pilot on a path to production"), "{out}");
    assert!(out.contains("`/pilot edit <pilot> <step>`"), "{out}");
    assert!(out.contains("[console] Now speaking as @zoe."), "{out}");
    assert!(out.contains("[console] Unknown console control `:wat`."), "{out}");

    let out = lastmile(dir.path()).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for sub in ["console", "export", "migrate", "backup", "copy"] {
        assert!(help.contains(sub), "{help}");
    }
}

#[test]
fn broken_prompts_stop_the_start_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("my-prompts");
    std::fs::create_dir(&prompts).unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts");
    let messages = std::fs::read_to_string(src.join("messages.toml")).unwrap();
    std::fs::write(
        prompts.join("messages.toml"),
        messages.replace("{{ pilot }}** — question 1", "{{ pilto }}** — question 1"),
    )
    .unwrap();
    std::fs::copy(src.join("vagueness.toml"), prompts.join("vagueness.toml")).unwrap();
    let mut cmd = lastmile(dir.path());
    cmd.env("LASTMILE_PROMPTS_DIR", &prompts).arg("console");
    let (code, _, err) = run_with_input(cmd, "/pilot help\n");
    assert_ne!(code, 0);
    assert!(err.contains("messages.toml: key `ask.workflow`: unknown placeholder `pilto`"), "{err}");

    // A template that parses but cannot render (an unknown filter) stops the start too, instead of showing users
    // `[register.done]`.
    std::fs::write(
        prompts.join("messages.toml"),
        messages.replace("{{ pilot }}** is scoped", "{{ pilot | shout }}** is scoped"),
    )
    .unwrap();
    let mut cmd = lastmile(dir.path());
    cmd.env("LASTMILE_PROMPTS_DIR", &prompts).arg("console");
    let (code, _, err) = run_with_input(cmd, "/pilot help\n");
    assert_ne!(code, 0);
    assert!(err.contains("messages.toml: key `register.done`: template cannot render"), "{err}");

    // A reworded copy is used as is.
    std::fs::write(prompts.join("messages.toml"), messages.replace("Commands:", "Befehle:")).unwrap();
    let mut cmd = lastmile(dir.path());
    cmd.env("LASTMILE_PROMPTS_DIR", &prompts).arg("console");
    let (code, out, _) = run_with_input(cmd, "/pilot help\n");
    assert_eq!(code, 0);
    assert!(out.contains("Befehle:"), "{out}");
}

#[test]
fn a_bad_config_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lastmile.toml"), "review_horizon_dayz = 10\n").unwrap();
    let (code, _, err) = run_with_input(lastmile(dir.path()), "");
    assert_ne!(code, 0);
    assert!(err.contains("invalid configuration") && err.contains("review_horizon_dayz"), "{err}");
}

#[test]
fn the_demo_shows_the_whole_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let out = lastmile(dir.path()).arg("demo").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    for expected in [
        "Which team runs claims intake today",
        "Usage and adoption are not value",
        "[dm @alice]",
        "Evidence 3/3: Proof of Production",
        "goes into production",
        "Not worth scaling (healthy kill)",
        "This is reminder 2",
        "[dm @carol] **Invoice matcher** passed its review date",
        "[#ai-reviews] ⚠ **Invoice matcher** is an absorption risk",
        "Stalled in hand-off (absorption failure)",
        "1 healthy kill (not worth scaling: stopped early, which is portfolio discipline), 1 absorption failure (stalled",
        "production rate 33%",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let chart = text.lines().find_map(|l| l.trim().strip_prefix("(chart written to ")).expect("a chart path");
    let bytes = std::fs::read(chart.trim_end_matches(')')).unwrap();
    assert!(bytes.starts_with(b"\x89PNG"));
}

/// Starts two `lastmile migrate` processes on `url` at once; both must succeed.
fn two_migrate_at_once(dir: &std::path::Path, url: &str, attempt: usize) {
    let start = |_| {
        let mut c = lastmile(dir);
        c.env("DATABASE_URL", url).arg("migrate").stdout(Stdio::piped()).stderr(Stdio::piped());
        c.spawn().unwrap()
    };
    let children: Vec<_> = (0..2).map(start).collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "attempt {attempt}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Two processes started together on a new database file both start: the second to migrate finds the migrations
/// the first applied, instead of failing on them (ten tries, each on a new file).
#[test]
fn two_processes_starting_together_on_a_new_database_both_start() {
    for attempt in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("shared.db").display());
        two_migrate_at_once(dir.path(), &url, attempt);
    }
}

/// The same on PostgreSQL (five tries, each on a new database).
#[tokio::test]
async fn two_processes_starting_together_on_a_new_postgres_database_both_start() {
    for attempt in 0..5 {
        let Some(db) = common::TestDb::postgres("two_processes_starting_together_on_postgres").await else { return };
        let dir = tempfile::tempdir().unwrap();
        let url = db.url.clone();
        let path = dir.path().to_owned();
        tokio::task::spawn_blocking(move || two_migrate_at_once(&path, &url, attempt)).await.unwrap();
        db.cleanup().await;
    }
}

/// `export` reads a database it may not write (here opened read-only by its URL, as a file without write
/// permission would be): nothing is migrated or written; and it creates no database where there is none.
#[test]
fn export_reads_a_read_only_database_and_creates_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = lastmile(dir.path());
    cmd.args(["console", "--as", "@bob", "--workspace", "acme", "--now", "2026-11-25T10:00:00Z"]);
    let (code, _, err) = run_with_input(cmd, REGISTRATION);
    assert_eq!(code, 0, "{err}");
    let db = dir.path().join("lastmile.db");
    let before = std::fs::read(&db).unwrap();
    let url = format!("sqlite://{}?mode=ro", db.display());
    let out = lastmile(dir.path()).args(["export", "--db", &url, "--format", "csv"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(csv.lines().nth(1).is_some_and(|l| l.contains("Claims triage assistant")), "{csv}");
    assert_eq!(std::fs::read(&db).unwrap(), before, "the database file is unchanged");
    // Where there is no database, export says so and leaves none behind.
    let missing = dir.path().join("missing.db");
    let url = format!("sqlite://{}", missing.display());
    let out = lastmile(dir.path()).args(["export", "--db", &url, "--format", "json"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read database"), "{out:?}");
    assert!(!missing.exists(), "export created a database");
}

/// `lastmile backup` writes one consistent snapshot while another connection is in the middle of writing: the
/// copy exports exactly what the database held before that write, which commits afterwards.
#[tokio::test]
async fn backup_copies_a_database_in_use_as_it_was() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = lastmile(dir.path());
    cmd.args(["console", "--as", "@bob", "--workspace", "acme", "--now", "2026-11-25T10:00:00Z"]);
    let (code, _, err) = run_with_input(cmd, &format!("{REGISTRATION}/pilot register Fraud triage\n"));
    assert_eq!(code, 0, "{err}");
    let export = |url: &str| {
        let out = lastmile(dir.path()).args(["export", "--db", url, "--format", "json"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let original = format!("sqlite://{}", dir.path().join("lastmile.db").display());
    let before = export(&original);
    assert!(before.contains("Claims triage assistant") && before.contains("Fraud triage"), "{before}");

    // Another process writing: its transaction holds the write lock while the backup runs.
    let mut writer = sqlx::SqliteConnection::connect(&original).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut writer).await.unwrap();
    sqlx::query("UPDATE pilots SET name = 'Renamed mid-backup' WHERE id = 1").execute(&mut writer).await.unwrap();
    let out = lastmile(dir.path()).args(["backup", "--db", &original, "copy.db"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    sqlx::query("COMMIT").execute(&mut writer).await.unwrap();
    writer.close().await.unwrap();

    let copy = format!("sqlite://{}", dir.path().join("copy.db").display());
    assert_eq!(export(&copy), before);
    assert!(export(&original).contains("Renamed mid-backup"), "the write after the snapshot is in the original");
}

/// A backup never overwrites a file, and PostgreSQL is backed up with its own tools: both are refused, and
/// nothing is written.
#[test]
fn backup_refuses_an_existing_file_and_a_postgres_database() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = lastmile(dir.path());
    cmd.args(["console", "--as", "@bob", "--workspace", "acme", "--now", "2026-11-25T10:00:00Z"]);
    let (code, _, err) = run_with_input(cmd, REGISTRATION);
    assert_eq!(code, 0, "{err}");
    let existing = dir.path().join("yesterday.db");
    std::fs::write(&existing, "yesterday's backup").unwrap();
    let out = lastmile(dir.path()).args(["backup", "yesterday.db"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("yesterday.db already exists") && err.contains("overwrites none"), "{err}");
    assert_eq!(std::fs::read_to_string(&existing).unwrap(), "yesterday's backup");

    let out = lastmile(dir.path())
        .args(["backup", "--db", "postgres://lastmile:s3cret@db.example/lastmile", "pg.db"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pg_dump"), "{err}");
    assert!(err.contains("postgres://lastmile:[redacted]@db.example/lastmile") && !err.contains("s3cret"), "{err}");
    assert!(!dir.path().join("pg.db").exists());

    // No database there: said so, and neither it nor the backup is created.
    let out = lastmile(dir.path()).args(["backup", "--db", "sqlite://missing.db", "missing-copy.db"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot back up sqlite://missing.db"), "{out:?}");
    assert!(!dir.path().join("missing.db").exists() && !dir.path().join("missing-copy.db").exists());
}
