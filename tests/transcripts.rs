//! Transcript tests: each `tests/transcripts/*.txt` is a conversation. Lines starting with `> ` are typed into
//! the console (as @bob in workspace `acme`, channel #general, at 2026-11-25T10:00Z, unless `:as`/`:in` say
//! otherwise); every other line is what the bot must answer; `#` lines are comments. A `:restart` line restarts
//! the bot on the same database. Run with `UPDATE_TRANSCRIPTS=1` to rewrite the files from the actual answers,
//! then read the diff before committing it.

mod common;

use std::path::{Path, PathBuf};

struct Block {
    comments: Vec<String>,
    input: String,
}

fn parse(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut comments = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            comments.push(line.to_owned());
        } else if let Some(input) = line.strip_prefix("> ") {
            blocks.push(Block { comments: std::mem::take(&mut comments), input: input.to_owned() });
        }
    }
    blocks
}

/// Rebuilds a transcript file from its blocks and the console's actual output.
fn rebuild(blocks: &[Block], output: &str) -> String {
    let mut answers: Vec<Vec<&str>> = Vec::new();
    for line in output.lines() {
        if line.starts_with("> ") {
            answers.push(Vec::new());
        } else if let Some(last) = answers.last_mut() {
            last.push(line);
        }
    }
    let mut out = String::new();
    for (i, b) in blocks.iter().enumerate() {
        for c in &b.comments {
            out.push_str(c);
            out.push('\n');
        }
        out.push_str("> ");
        out.push_str(&b.input);
        out.push('\n');
        for a in answers.get(i).map(Vec::as_slice).unwrap_or_default() {
            out.push_str(a);
            out.push('\n');
        }
    }
    out
}

fn transcripts() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no transcripts found");
    files
}

async fn check_all(dialect: &str, mut fresh_db: impl AsyncFnMut() -> Option<common::TestDb>) {
    let mut failures = Vec::new();
    for file in transcripts() {
        let Some(db) = fresh_db().await else { return };
        let expected = std::fs::read_to_string(&file).unwrap();
        let blocks = parse(&expected);
        let input: String = blocks.iter().map(|b| format!("{}\n", b.input)).collect();
        let output = common::run_console(&db.url, "bob", &input).await;
        // Charts are written to a temporary folder: the transcript shows it as $CHARTS.
        let charts = common::options("bob").chart_dir.display().to_string();
        let output = output.replace(&charts, "$CHARTS");
        let actual = rebuild(&blocks, &output);
        db.cleanup().await;
        if actual != expected {
            if std::env::var_os("UPDATE_TRANSCRIPTS").is_some() && dialect == "sqlite" {
                std::fs::write(&file, &actual).unwrap();
            } else {
                failures.push(format!("{} ({dialect}):\n{}", file.display(), diff(&expected, &actual)));
            }
        }
    }
    assert!(failures.is_empty(), "transcripts differ:\n{}", failures.join("\n"));
}

/// The first differing lines, with a little context.
fn diff(expected: &str, actual: &str) -> String {
    let e: Vec<&str> = expected.lines().collect();
    let a: Vec<&str> = actual.lines().collect();
    let first = e.iter().zip(&a).position(|(x, y)| x != y).unwrap_or(e.len().min(a.len()));
    let from = first.saturating_sub(3);
    let mut out = format!("first difference at line {}\n", first + 1);
    for l in &e[from..(first + 4).min(e.len())] {
        out.push_str(&format!("  expected | {l}\n"));
    }
    for l in &a[from..(first + 4).min(a.len())] {
        out.push_str(&format!("  actual   | {l}\n"));
    }
    out
}

#[tokio::test]
async fn transcripts_on_sqlite() {
    check_all("sqlite", async || Some(common::TestDb::sqlite())).await;
}

#[tokio::test]
async fn transcripts_on_postgres() {
    check_all("postgres", async || common::TestDb::postgres("transcripts_on_postgres").await).await;
}
