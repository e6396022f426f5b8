//! The benchmarks: throughput, latency, scale, memory and the Discord path, each beside a baseline measured in
//! the same run on the same database, printed as a table and written to BENCHMARKS.md (the notes after the table
//! are kept). `--quick` uses tiny sizes (CI smoke test).
//!
//! cargo bench --bench lastmile -- --out BENCHMARKS.md   # the full table (release build)
//! cargo test --bench lastmile -- --quick                # a smoke test (debug build)

#[path = "../tests/fake_discord/mod.rs"]
mod fake_discord;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use lastmile::domain::{ChannelId, UserId, WorkspaceId};
use lastmile::engine::{Engine, EngineSettings, Input, Request};
use lastmile::prompts::Prompts;
use lastmile::store::{Pool, Store};
use sqlx::Connection;

struct Sizes {
    concurrent_users: usize,
    /// Registrations each concurrent user completes, one after another, in figure 1.
    registrations_each: usize,
    open_dialogues: usize,
    sweep: Vec<usize>,
    due: usize,
    portfolio: usize,
    memory_dialogues: usize,
    startup: usize,
    raw_inserts: usize,
    interactions: usize,
}

impl Sizes {
    fn full() -> Self {
        Self {
            concurrent_users: 100,
            registrations_each: 5,
            open_dialogues: 1_000,
            sweep: vec![10_000, 100_000, 1_000_000],
            due: 1_000,
            portfolio: 100_000,
            memory_dialogues: 10_000,
            startup: 1_000_000,
            raw_inserts: 10_000,
            interactions: 1_000,
        }
    }
    fn quick() -> Self {
        Self {
            concurrent_users: 10,
            registrations_each: 1,
            open_dialogues: 50,
            sweep: vec![1_000, 5_000],
            due: 100,
            portfolio: 2_000,
            memory_dialogues: 200,
            startup: 5_000,
            raw_inserts: 200,
            interactions: 50,
        }
    }
}

/// One row of the table: a figure, its baseline, and the target it is held to.
struct Row {
    figure: String,
    value: String,
    baseline: String,
    ratio: String,
    target: String,
    met: Option<bool>,
}

fn now() -> DateTime<Utc> {
    "2026-11-25T10:00:00Z".parse().unwrap()
}

const ANSWERS: [&str; 7] = [
    "The claims intake team (12 people, Leeds) triages new motor claims by hand; the assistant pre-sorts them.",
    "<@alice>",
    "Claims handling cost: £4.2m -> £3.6m",
    "<@carol>",
    "2027-03-31",
    "Confirm",
    "",
];

async fn engine(url: &str) -> anyhow::Result<Engine> {
    let store = lastmile::open_store(url).await?;
    Ok(Engine::new(store, Arc::new(Prompts::embedded()?), EngineSettings::default()))
}

fn request(ws: &str, user: &str, input: Input) -> Request {
    Request {
        workspace: WorkspaceId::new(ws),
        user: UserId::new(user),
        channel: ChannelId::new("general"),
        now: now(),
        input,
        bots: vec![],
        admin: false,
        answers: None,
        platform: None,
    }
}

/// A fresh database: an SQLite file in `dir`, or a new PostgreSQL database.
async fn fresh(kind: &str, dir: &Path, name: &str) -> anyhow::Result<Option<String>> {
    if kind == "sqlite" {
        return Ok(Some(format!("sqlite://{}", dir.join(format!("{name}.db")).display())));
    }
    let Ok(admin) = std::env::var("LASTMILE_TEST_POSTGRES_URL") else { return Ok(None) };
    let db = format!("lastmile_bench_{}_{name}", std::process::id());
    let mut c = sqlx::PgConnection::connect(&admin).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{db}\"")).execute(&mut c).await?;
    sqlx::query(&format!("CREATE DATABASE \"{db}\"")).execute(&mut c).await?;
    let (base, _) = admin.rsplit_once('/').context("LASTMILE_TEST_POSTGRES_URL needs a database path")?;
    Ok(Some(format!("{base}/{db}")))
}

/// Waits for the writes earlier figures left behind: a PostgreSQL checkpoint, then the kernel's write-back.
async fn settle() {
    if let Ok(admin) = std::env::var("LASTMILE_TEST_POSTGRES_URL")
        && let Ok(mut c) = sqlx::PgConnection::connect(&admin).await
    {
        sqlx::query("CHECKPOINT").execute(&mut c).await.ok();
    }
    std::process::Command::new("sync").status().ok();
}

async fn drop_pg(url: &str) {
    if let (Ok(admin), Some((_, db))) = (std::env::var("LASTMILE_TEST_POSTGRES_URL"), url.rsplit_once('/'))
        && url.starts_with("postgres")
        && let Ok(mut c) = sqlx::PgConnection::connect(&admin).await
    {
        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)")).execute(&mut c).await.ok();
    }
}

/// Raw commits per second: single-row INSERTs, each its own transaction, from `tasks` concurrent tasks.
async fn raw_commits(store: &Store, total: usize, tasks: usize) -> anyhow::Result<f64> {
    let create = "CREATE TABLE IF NOT EXISTS bench_raw (id BIGINT PRIMARY KEY, v TEXT NOT NULL)";
    match store.pool() {
        Pool::Sqlite(p) => {
            sqlx::query(create).execute(p).await?;
            sqlx::query("DELETE FROM bench_raw").execute(p).await?;
        }
        Pool::Postgres(p) => {
            sqlx::query(create).execute(p).await?;
            sqlx::query("DELETE FROM bench_raw").execute(p).await?;
        }
    }
    let start = Instant::now();
    let per = total / tasks.max(1);
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..per {
                let id = (t * per + i) as i64;
                let sql = "INSERT INTO bench_raw (id, v) VALUES ($1, $2)";
                match store.pool() {
                    Pool::Sqlite(p) => sqlx::query(sql).bind(id).bind("x").execute(p).await.map(|_| ()),
                    Pool::Postgres(p) => sqlx::query(sql).bind(id).bind("x").execute(p).await.map(|_| ()),
                }?;
            }
            Ok::<_, sqlx::Error>(())
        }));
    }
    for h in handles {
        h.await??;
    }
    Ok((per * tasks) as f64 / start.elapsed().as_secs_f64())
}

/// The machine's busy and total CPU time so far (Linux `/proc/stat`, in ticks): how busy a figure kept the
/// machine, database included. None where there is no such file.
fn busy_cpu() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> =
        stat.lines().next()?.split_whitespace().skip(1).take(8).filter_map(|t| t.parse().ok()).collect();
    let total: u64 = ticks.iter().sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some((total - idle, total))
}

/// CPU time used so far by this process and by PostgreSQL's processes (Linux `/proc`, in clock ticks of 10 ms):
/// where a figure's machine time went. A server's processes that end in between are missed, so it is read while
/// the pool's connections stay open.
fn split_cpu() -> (u64, u64) {
    // Fields 14 and 15 of `stat` (after the parenthesised name): user and system time.
    let ticks = |stat: &str| -> u64 {
        let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or("").split_whitespace().collect();
        fields.iter().skip(11).take(2).filter_map(|t| t.parse::<u64>().ok()).sum()
    };
    let me = std::fs::read_to_string("/proc/self/stat").map(|s| ticks(&s)).unwrap_or(0);
    let server = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| stat.contains("(postgres)"))
        .map(|stat| ticks(&stat))
        .sum();
    (me, server)
}

/// Microseconds of CPU per operation, of this process and of PostgreSQL, between two readings of [`split_cpu`].
/// `server`: whether the figure's database is PostgreSQL (else its processes' time is not the figure's).
fn cpu_per(before: (u64, u64), after: (u64, u64), operations: f64, server: bool) -> String {
    let us = |ticks: u64| ticks_us(ticks, operations as usize);
    match server {
        false => format!("{:.0} µs", us(after.0 - before.0)),
        true => format!("{:.0} + {:.0} µs", us(after.0 - before.0), us(after.1 - before.1)),
    }
}

/// How busy the machine was (0-1) between two readings of [`busy_cpu`].
fn busy_between(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> String {
    match before.zip(after) {
        Some(((b0, t0), (b1, t1))) if t1 > t0 => format!("{:.0}%", 100.0 * (b1 - b0) as f64 / (t1 - t0) as f64),
        _ => "?".into(),
    }
}

/// Figure 1: complete registrations through the engine, `users` at once, each user registering `each` pilots
/// one after another; returns dialogue steps and registrations per second.
async fn dialogue_throughput(engine: &Engine, users: usize, each: usize) -> anyhow::Result<(f64, f64)> {
    let start = Instant::now();
    let mut handles = Vec::new();
    for u in 0..users {
        let engine = engine.clone();
        handles.push(tokio::spawn(async move {
            let user = format!("user{u}");
            for r in 0..each {
                let line = format!("/pilot register Throughput pilot {u}-{r}");
                engine.handle(request("bench", &user, Input::CommandLine(line))).await;
                for answer in ANSWERS.iter().take(6) {
                    engine.handle(request("bench", &user, Input::Text((*answer).to_owned()))).await;
                }
            }
        }));
    }
    for h in handles {
        h.await?;
    }
    let secs = start.elapsed().as_secs_f64();
    // Every registration must have gone through to the end: a step answered with an error is not a step.
    let pilots = engine.store().all_pilots(Some(&WorkspaceId::new("bench"))).await?;
    let scoped = pilots.iter().filter(|p| p.stage == lastmile::domain::Stage::Scoped).count();
    anyhow::ensure!(scoped == users * each, "{scoped} of {} registrations were confirmed", users * each);
    let registrations = (users * each) as f64;
    Ok((registrations * 7.0 / secs, registrations / secs))
}

/// Figure 2: latency of single dialogue steps while `open` dialogues are open.
async fn step_latency(engine: &Engine, open: usize) -> anyhow::Result<Vec<Duration>> {
    for u in 0..open {
        let user = format!("open{u}");
        engine
            .handle(request("latency", &user, Input::CommandLine(format!("/pilot register Latency pilot {u}"))))
            .await;
    }
    let mut samples = Vec::with_capacity(open * 2);
    for step in 0..2 {
        for u in 0..open {
            let user = format!("open{u}");
            let t = Instant::now();
            engine.handle(request("latency", &user, Input::Text(ANSWERS[step].to_owned()))).await;
            samples.push(t.elapsed());
        }
    }
    samples.sort();
    Ok(samples)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Seeds `n` scoped pilots in workspace `ws`, `due` of them with a nudge due, the others due in months.
async fn seed(url: &str, ws: &str, n: usize, due: usize) -> anyhow::Result<()> {
    lastmile::open_store(url).await?.close().await; // created and migrated
    let columns = "workspace, name, name_key, stage, registered_by, registered_at, home_channel, workflow, owner, pnl_line, \
                   pnl_unit, pnl_baseline, pnl_target, review_date, next_review_date, owner_status, next_action_at, updated_at";
    let values = |i: &str, concat: &str| {
        format!(
            "'{ws}', 'Pilot '{concat}{i}, 'pilot '{concat}{i}, 'scoped', 'bob', '2026-11-25T10:00:00+00:00', 'general', 'w', \
             'owner' {concat} ({i} % 500), 'Line ' {concat} ({i} % 50), 'GBP', 100.0, 80.0, '2027-01-06', '2027-01-06', 'accepted', \
             CASE WHEN {i} < {due} THEN '2027-01-07T08:00:00+00:00' ELSE '2027-06-07T08:00:00+00:00' END, '2026-11-25T10:00:00+00:00'"
        )
    };
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await?;
        let sql = format!(
            "INSERT INTO pilots ({columns}) SELECT {} FROM generate_series(0, {}) AS s(i)",
            values("i", "||")
                .replace("'2027-01-07T08:00:00+00:00'", "'2027-01-07T08:00:00+00:00'::timestamptz")
                .replace("'2027-06-07T08:00:00+00:00' END", "'2027-06-07T08:00:00+00:00'::timestamptz END")
                .replace("'2026-11-25T10:00:00+00:00'", "'2026-11-25T10:00:00+00:00'::timestamptz")
                .replace("'2027-01-06'", "'2027-01-06'::date"),
            n - 1
        );
        sqlx::query(&sql).execute(&mut c).await?;
        sqlx::query("ANALYZE pilots").execute(&mut c).await?;
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await?;
        let sql = format!(
            "WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {}) \
             INSERT INTO pilots ({columns}) SELECT {} FROM s",
            n - 1,
            values("i", "||")
        );
        sqlx::query(&sql).execute(&mut c).await?;
        sqlx::query("ANALYZE").execute(&mut c).await?;
    }
    Ok(())
}

/// Figure 3: find and claim the due pilots; returns the time and the query plan.
async fn sweep(url: &str, n: usize, due: usize) -> anyhow::Result<(Duration, String)> {
    seed(url, "sweep", n, due).await?;
    let store = lastmile::open_store(url).await?;
    let at: DateTime<Utc> = "2027-01-07T09:00:00Z".parse()?;
    let ws = WorkspaceId::new("sweep");
    // The median of five sweeps, each after the previous one's five-minute leases ran out (so the same
    // `due` pilots are due again): one sample on a shared machine is mostly its neighbours' load.
    let mut samples = Vec::new();
    for k in 0..5 {
        let now = at + chrono::Duration::minutes(6 * k);
        let t = Instant::now();
        let claimed = store.claim_due(now, now + chrono::Duration::minutes(5), "bench", due as i64, Some(&ws)).await?;
        samples.push(t.elapsed());
        anyhow::ensure!(claimed.len() == due, "claimed {} of {due}", claimed.len());
    }
    let took = median(samples);
    let plan = store.explain_claim_due().await?;
    store.close().await;
    Ok((took, plan))
}

/// Figure 4: the portfolio post of one workspace (summary, chart), and the chart alone.
async fn portfolio(url: &str, n: usize) -> anyhow::Result<(Duration, Duration)> {
    seed(url, "portfolio", n, n / 10).await?;
    let engine = engine(url).await?;
    let ws = WorkspaceId::new("portfolio");
    let at: DateTime<Utc> = "2027-02-01T10:00:00Z".parse()?;
    engine.portfolio_post(&ws, ChannelId::new("general"), at).await?; // warm the pool and the font
    // The median of five summaries: one sample on a shared machine is mostly its neighbours' load.
    let mut samples = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let post = engine.portfolio_post(&ws, ChannelId::new("general"), at).await?;
        samples.push(t.elapsed());
        anyhow::ensure!(post.attachment.is_some(), "no chart");
    }
    let whole = median(samples);
    let steps: Vec<(String, u64)> = (0..8).map(|i| (format!("Step {i}"), (n / (i + 1)) as u64)).collect();
    let t = Instant::now();
    lastmile::render::chart::funnel_png("Funnel", &steps)?;
    let chart = t.elapsed();
    let t = Instant::now();
    engine.store().all_pilots(Some(&ws)).await?;
    eprintln!("  (loading {n} pilots alone: {})", ms(t.elapsed()));
    engine.store().close().await;
    Ok((whole, chart))
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn lastmile_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lastmile"))
}

/// Figure 5: peak RSS of the console bot: idle, and after `dialogues` users each opened a registration.
fn memory(dir: &Path, dialogues: usize) -> anyhow::Result<(u64, u64)> {
    let run = |script: String, db: &str| -> anyhow::Result<u64> {
        let mut child = Command::new(lastmile_bin())
            .args(["--db", db, "console", "--now", "2026-11-25T10:00:00Z"])
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("run the lastmile binary (build it first: cargo build --release)")?;
        let pid = child.id();
        let mut stdin = child.stdin.take().context("stdin")?;
        // Written from another thread: the bot's answers fill its stdout pipe while it reads the script.
        let writer = std::thread::spawn(move || -> std::io::Result<std::process::ChildStdin> {
            stdin.write_all(script.as_bytes())?;
            stdin.write_all(b"/pilot help\n")?;
            stdin.flush()?;
            Ok(stdin)
        });
        // Wait for the last answer, read the peak while the process still lives, then let it end.
        let mut out = BufReader::new(child.stdout.take().context("stdout")?);
        let mut line = String::new();
        while out.read_line(&mut line)? > 0 {
            if line.contains("lastmile keeps every AI pilot") {
                break;
            }
            line.clear();
        }
        let peak = peak_rss_kib(pid).unwrap_or(0);
        drop(writer.join().map_err(|_| anyhow::anyhow!("script writer panicked"))??);
        std::io::copy(&mut out, &mut std::io::sink())?;
        child.wait()?;
        Ok(peak)
    };
    let idle = run(String::new(), &dir.join("memory-idle.db").display().to_string())?;
    let mut script = String::new();
    for u in 0..dialogues {
        script.push_str(&format!(":as @user{u}\n/pilot register Memory pilot {u}\n"));
    }
    let busy = run(script, &dir.join("memory-busy.db").display().to_string())?;
    Ok((idle, busy))
}

/// Figure 7: launch to first answer on an existing database (migrations applied).
fn startup(db: &Path) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let out = Command::new(lastmile_bin())
        .args(["--db", &db.display().to_string(), "console"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().map(|mut s| s.write_all(b"/pilot list\n"));
            c.wait_with_output()
        })?;
    anyhow::ensure!(out.status.success(), "the bot failed to start");
    Ok(t.elapsed())
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned()))
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<u64>().unwrap_or(0)))
        .unwrap_or(0);
    format!("{cpu}, {cores} cores, {:.0} GiB", mem as f64 / 1024.0 / 1024.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let out_file = args.iter().position(|a| a == "--out").and_then(|i| args.get(i + 1)).cloned();
    // `--only 1,4`: just these figures, for profiling one of them; `--db postgres`: just that database's rows.
    let only: Option<Vec<u32>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect());
    let want = |n: u32| only.as_ref().is_none_or(|o| o.contains(&n));
    let db = args.iter().position(|a| a == "--db").and_then(|i| args.get(i + 1)).cloned();
    anyhow::ensure!(
        (only.is_none() && db.is_none()) || out_file.is_none(),
        "--only and --db print a partial table: they cannot be --out"
    );
    let sizes = if quick { Sizes::quick() } else { Sizes::full() };
    let dir = tempfile_dir()?;
    let mut rows: Vec<Row> = Vec::new();
    let mut plans: Vec<(String, String)> = Vec::new();
    let started = Instant::now();

    for kind in ["sqlite", "postgres"].into_iter().filter(|k| db.as_deref().is_none_or(|d| d == *k)) {
        if kind == "postgres" && std::env::var("LASTMILE_TEST_POSTGRES_URL").is_err() {
            println!("{kind}: skipped (set LASTMILE_TEST_POSTGRES_URL to measure PostgreSQL)");
            continue;
        }
        // 1. Dialogue throughput, beside raw commits.
        if let Some(url) = fresh(kind, &dir, "throughput").await?.filter(|_| want(1) || want(2)) {
            eprintln!("[{:>4.0}s] {kind}: dialogue throughput and latency", started.elapsed().as_secs_f64());
            let e = engine(&url).await?;
            if want(1) {
                let (cpu, split) = (busy_cpu(), split_cpu());
                let raw =
                    raw_commits(e.store(), sizes.raw_inserts, sizes.concurrent_users.min(sizes.raw_inserts)).await?;
                let (cpu_raw, split_raw) = (
                    busy_between(cpu, busy_cpu()),
                    cpu_per(split, split_cpu(), sizes.raw_inserts as f64, kind == "postgres"),
                );
                let (turns_before, commits_before) = e.store().commit_stats();
                let (cpu, split) = (busy_cpu(), split_cpu());
                let (steps, regs) = dialogue_throughput(&e, sizes.concurrent_users, sizes.registrations_each).await?;
                let cpu_steps = busy_between(cpu, busy_cpu());
                let split_steps = cpu_per(
                    split,
                    split_cpu(),
                    (sizes.concurrent_users * sizes.registrations_each * 7) as f64,
                    kind == "postgres",
                );
                let (turns, commits) = e.store().commit_stats();
                let shared = (turns - turns_before) as f64 / (commits - commits_before).max(1) as f64;
                rows.push(Row {
                    figure: format!(
                        "1. dialogue steps/s, {} users at once ({kind}; {regs:.1} registrations/s; {shared:.1} turns per commit; CPU time per operation: this process, + PostgreSQL's)",
                        sizes.concurrent_users
                    ),
                    value: format!("{steps:.0} steps/s (CPU {cpu_steps} busy; {split_steps} per step)"),
                    baseline: format!("{raw:.0} raw commits/s (CPU {cpu_raw} busy; {split_raw} per commit)"),
                    ratio: format!("{:.2}", steps / raw),
                    target: ">= 0.5".into(),
                    met: Some(steps / raw >= 0.5),
                });
            }
            if want(2) {
                // 2. Step latency with many dialogues open, beside a raw commit's latency.
                let samples = step_latency(&e, sizes.open_dialogues).await?;
                let raw_one = Duration::from_secs_f64(1.0 / raw_commits(e.store(), 200, 1).await?);
                let p99 = percentile(&samples, 0.99);
                rows.push(Row {
                    figure: format!(
                        "2. step latency, {} dialogues open ({kind}): p50 {}, max {}",
                        sizes.open_dialogues,
                        ms(percentile(&samples, 0.5)),
                        ms(*samples.last().unwrap_or(&Duration::ZERO))
                    ),
                    value: format!("p99 {}", ms(p99)),
                    baseline: format!("raw commit {}", ms(raw_one)),
                    ratio: format!("{:.1}", p99.as_secs_f64() / raw_one.as_secs_f64()),
                    target: if kind == "sqlite" { "p99 < 20 ms".into() } else { "(SQLite only)".into() },
                    met: (kind == "sqlite").then_some(p99 < Duration::from_millis(20)),
                });
            }
            e.store().close().await;
            drop_pg(&url).await;
        }

        // 3. Reminder sweep at growing scale.
        let mut base = None;
        for &n in sizes.sweep.iter().filter(|_| want(3)) {
            let Some(url) = fresh(kind, &dir, &format!("sweep{n}")).await? else { continue };
            eprintln!("[{:>4.0}s] {kind}: sweep among {n}", started.elapsed().as_secs_f64());
            let (took, plan) = sweep(&url, n, sizes.due).await?;
            drop_pg(&url).await;
            let b = *base.get_or_insert(took);
            let last = n == *sizes.sweep.last().unwrap_or(&n);
            rows.push(Row {
                figure: format!("3. find and claim {} due nudges among {n} pilots ({kind}; median of 5)", sizes.due),
                value: ms(took),
                baseline: format!("{} at {}", ms(b), sizes.sweep[0]),
                ratio: format!("{:.2}", took.as_secs_f64() / b.as_secs_f64()),
                target: if last { "ratio <= 2, < 50 ms".into() } else { String::new() },
                met: last.then_some(took.as_secs_f64() / b.as_secs_f64() <= 2.0 && took < Duration::from_millis(50)),
            });
            if last {
                plans.push((kind.to_owned(), plan));
            }
        }
    }

    // The sweeps leave PostgreSQL with a million rows' worth of WAL to checkpoint, and the kernel with dirty pages
    // to write back: both would run during the next figures and be measured as theirs. Let them finish first.
    settle().await;
    eprintln!("[{:>4.0}s] portfolio, memory, start-up", started.elapsed().as_secs_f64());
    // 4. Portfolio summary of one large workspace (SQLite).
    if let Some(url) = fresh("sqlite", &dir, "portfolio").await?.filter(|_| want(4)) {
        let (whole, chart) = portfolio(&url, sizes.portfolio).await?;
        rows.push(Row {
            figure: format!("4. portfolio summary with chart, {} pilots (sqlite; median of 5)", sizes.portfolio),
            value: ms(whole),
            baseline: format!("chart alone {}", ms(chart)),
            ratio: format!("{:.1}", whole.as_secs_f64() / chart.as_secs_f64()),
            target: "< 100 ms; chart < 50 ms".into(),
            met: Some(whole < Duration::from_millis(100) && chart < Duration::from_millis(50)),
        });
    }

    // 5. Memory of the console bot.
    let mem = if want(5) { memory(&dir, sizes.memory_dialogues) } else { Err(anyhow::anyhow!("not asked for")) };
    match mem {
        Ok((idle, busy)) => rows.push(Row {
            figure: format!("5. peak RSS of the console bot, with {} open dialogues", sizes.memory_dialogues),
            value: format!("{:.1} MB", busy as f64 / 1024.0),
            baseline: format!("idle {:.1} MB", idle as f64 / 1024.0),
            ratio: format!("{:.2}", busy as f64 / idle.max(1) as f64),
            target: "idle < 40 MB; busy < 150 MB".into(),
            met: Some(idle < 40 * 1024 && busy < 150 * 1024),
        }),
        Err(e) => println!("5. memory: not measured: {e:#}"),
    }

    // 6. The Discord path: dialogue steps through serenity and the fake Discord, beside a bare "pong".
    eprintln!("[{:>4.0}s] Discord path", started.elapsed().as_secs_f64());
    let discord =
        if want(6) { discord_path(&dir, sizes.interactions).await } else { Err(anyhow::anyhow!("not asked for")) };
    match discord {
        Ok(DiscordPath { steps, pongs: pong, alone, cpu: [step_cpu, pong_cpu, alone_cpu] }) => {
            rows.push(Row {
                figure: format!(
                    "6. interactions/s through serenity and the fake Discord, {} at once (a dialogue step, sqlite; median of {ROUNDS} rounds; CPU of this process, the fake Discord included)",
                    sizes.interactions
                ),
                value: format!("{steps:.0} steps/s (CPU {step_cpu:.0} µs per step)"),
                baseline: format!("{pong:.0} pongs/s (CPU {pong_cpu:.0} µs per pong)"),
                ratio: format!("{:.2}", steps / pong),
                target: ">= 0.7".into(),
                met: Some(steps / pong >= 0.7),
            });
            rows.push(Row {
                figure: format!(
                    "6. the same step through the engine alone, {} at once (no Discord: what the engine and store allow; median of {ROUNDS} rounds)",
                    sizes.interactions
                ),
                value: format!("{alone:.0} steps/s (CPU {alone_cpu:.0} µs per step)"),
                baseline: format!("{steps:.0} through Discord"),
                ratio: format!("{:.2}", steps / alone),
                target: String::new(),
                met: None,
            });
        }
        Err(e) => println!("6. Discord path: not measured: {e:#}"),
    }

    // 7. Start-up on an existing large database, beside an empty one.
    if !want(7) {
        println!("{}", render(&rows, &plans, quick, started.elapsed()));
        std::fs::remove_dir_all(&dir).ok();
        return Ok(());
    }
    let big = dir.join("startup.db");
    let big_url = format!("sqlite://{}", big.display());
    seed_via_store(&big_url, sizes.startup).await?;
    let empty = dir.join("startup-empty.db");
    seed_via_store(&format!("sqlite://{}", empty.display()), 0).await?;
    match (startup(&empty), startup(&big)) {
        (Ok(small), Ok(large)) => rows.push(Row {
            figure: format!("7. launch to first answer, {} pilots (sqlite, migrated)", sizes.startup),
            value: ms(large),
            baseline: format!("empty database {}", ms(small)),
            ratio: format!("{:.2}", large.as_secs_f64() / small.as_secs_f64()),
            target: "< 1 s".into(),
            met: Some(large < Duration::from_secs(1)),
        }),
        (a, b) => println!("7. start-up: not measured: {:?} {:?}", a.err(), b.err()),
    }

    let table = render(&rows, &plans, quick, started.elapsed());
    println!("{table}");
    if let Some(path) = out_file {
        // The notes written under the table (what was changed, what is left) stay.
        let notes = std::fs::read_to_string(&path)
            .ok()
            .and_then(|old| old.find("\n## ").map(|i| old[i..].to_owned()))
            .unwrap_or_default();
        std::fs::write(&path, format!("{table}{notes}")).with_context(|| format!("write {path}"))?;
        println!("(written to {path})");
    }
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

const WARM_UP: usize = 20;

/// Answers every interaction with "pong": the cost of serenity and the fake alone.
struct Pong;

#[serenity::async_trait]
impl serenity::all::EventHandler for Pong {
    async fn interaction_create(&self, ctx: serenity::all::Context, interaction: serenity::all::Interaction) {
        use serenity::all::{CreateAllowedMentions, CreateInteractionResponse, CreateInteractionResponseMessage};
        if let serenity::all::Interaction::Modal(m) = interaction {
            let msg = CreateInteractionResponseMessage::new()
                .content("pong")
                .ephemeral(true)
                .allowed_mentions(CreateAllowedMentions::new());
            if let Err(e) = m.create_response(&ctx.http, CreateInteractionResponse::Message(msg)).await {
                eprintln!("pong failed: {e}");
            }
        }
    }
}

fn discord_options(fake: &fake_discord::Fake) -> lastmile::chat::discord::DiscordOptions {
    lastmile::chat::discord::DiscordOptions {
        token: serde_json::from_value(serde_json::json!("bench.token")).expect("a token"),
        api_url: Some(fake.base.clone()),
        guild_id: Some(fake_discord::GUILD),
        scheduler_interval: Duration::from_secs(3600),
        scheduler_lease: Duration::from_secs(300),
        scheduler: true,
        clock: Arc::new(now),
        shard: None,
        endpoint: None,
        health: lastmile::chat::ops::Health::new(),
    }
}

/// Users `from..from + n` each submit the form of their open registration's first question, all at once;
/// returns answers/s.
async fn submit_all(fake: &fake_discord::Fake, from: usize, n: usize) -> anyhow::Result<f64> {
    let before = fake.callbacks();
    let t = Instant::now();
    for i in from..from + n {
        let who = fake_discord::Who { id: 900_000_000_000_100_000 + i as u64, name: "user", admin: false, bot: false };
        let data = serde_json::json!({
            "custom_id": format!("lm:m:{}:workflow", fake_discord::GUILD),
            "components": [{"type": 1, "components": [{"type": 4, "custom_id": "answer", "value": ANSWERS[0]}]}],
        });
        fake.dispatch("INTERACTION_CREATE", fake.raw(5, data, who));
    }
    fake.wait_for(&format!("{n} responses"), |_| (fake.callbacks() >= before + n).then_some(())).await;
    let took = t.elapsed();
    anyhow::ensure!(fake.violations().is_empty(), "invalid bodies: {:?}", fake.violations());
    Ok(n as f64 / took.as_secs_f64())
}

/// Rounds of figure 6: pong and dialogue rounds alternate, and the median of each is kept, so that a burst of
/// load from elsewhere on this shared machine falls on both sides alike.
const ROUNDS: usize = 3;

/// The middle sample (figures on a shared machine are medians of a few runs).
fn median<T: PartialOrd + Copy>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

/// Figure 6: dialogue steps answered through the real serenity client and the fake Discord, beside a client
/// whose handler only says "pong", each on its own fake, in the same run, in alternating rounds.
async fn discord_path(dir: &Path, n: usize) -> anyhow::Result<DiscordPath> {
    // The pong client.
    let pong_fake = fake_discord::Fake::start().await;
    let http = lastmile::chat::discord::http(&discord_options(&pong_fake));
    let mut client = serenity::all::ClientBuilder::new_with_http(http, serenity::all::GatewayIntents::empty())
        .event_handler(Pong)
        .await?;
    let shards = client.shard_manager.clone();
    let task = tokio::spawn(async move { client.start().await });
    pong_fake.connected().await;

    // lastmile, with a registration waiting for its workflow for every user of every round.
    let users = WARM_UP + ROUNDS * n;
    let url = format!("sqlite://{}", dir.join("discord.db").display());
    let e = engine(&url).await?;
    for i in 0..users {
        let user = (900_000_000_000_100_000 + i as u64).to_string();
        let cmd = format!("/pilot register Discord pilot {i}");
        e.handle(request(&fake_discord::GUILD.to_string(), &user, Input::CommandLine(cmd))).await;
    }
    // The same answers straight to the engine, from other users of the same workspace: what the engine and the
    // store allow without Discord in the way.
    let alone = {
        let mut rounds = Vec::new();
        let mut cpu_ticks = 0u64;
        for round in 0..ROUNDS {
            let users: Vec<String> =
                (0..n).map(|i| (900_000_000_000_900_000 + (round * n + i) as u64).to_string()).collect();
            for (i, user) in users.iter().enumerate() {
                let cmd = format!("/pilot register Engine pilot {round}-{i}");
                e.handle(request(&fake_discord::GUILD.to_string(), user, Input::CommandLine(cmd))).await;
            }
            let t = Instant::now();
            let c0 = split_cpu().0;
            let steps: Vec<_> = users
                .into_iter()
                .map(|user| {
                    let e = e.clone();
                    let req = request(&fake_discord::GUILD.to_string(), &user, Input::Text(ANSWERS[0].to_owned()));
                    tokio::spawn(async move { e.handle(req).await })
                })
                .collect();
            let mut moved = 0;
            for step in steps {
                moved += usize::from(step.await?.iter().any(|r| r.text.contains("who owns the last mile")));
            }
            rounds.push(n as f64 / t.elapsed().as_secs_f64());
            cpu_ticks += split_cpu().0 - c0;
            anyhow::ensure!(moved == n, "only {moved} of {n} steps moved on");
        }
        (median(rounds), ticks_us(cpu_ticks, ROUNDS * n))
    };
    let fake = fake_discord::Fake::start().await;
    let mut bot = lastmile::chat::discord::start(e, discord_options(&fake)).await?;
    bot.ready().await?;
    fake.connected().await;

    // A first round warms up both sides (connections, the fakes' compiled schemas) and is not counted.
    submit_all(&pong_fake, 0, WARM_UP).await?;
    submit_all(&fake, 0, WARM_UP).await?;
    // The fakes check each body against Discord's OpenAPI description after the rounds, not during them:
    // checking a body with components costs more than the bot's whole step, and would be measured as the bot's.
    pong_fake.defer_checks();
    fake.defer_checks();
    let (mut pongs, mut steps) = (Vec::new(), Vec::new());
    let (mut pong_ticks, mut step_ticks) = (0, 0);
    for round in 0..ROUNDS {
        let from = WARM_UP + round * n;
        let c0 = split_cpu().0;
        pongs.push(submit_all(&pong_fake, from, n).await?);
        let c1 = split_cpu().0;
        steps.push(submit_all(&fake, from, n).await?);
        pong_ticks += c1 - c0;
        step_ticks += split_cpu().0 - c1;
    }
    let answered =
        fake.calls().iter().filter(|c| c.is_callback() && c.content().contains("who owns the last mile")).count();
    anyhow::ensure!(answered == users, "only {answered} of {users} steps moved on");
    for f in [&fake, &pong_fake] {
        f.check_recorded();
        anyhow::ensure!(f.violations().is_empty(), "invalid bodies: {:?}", f.violations());
    }
    bot.shutdown().await?;
    shards.shutdown_all().await;
    task.await??;
    let cpu = |ticks| ticks_us(ticks, ROUNDS * n);
    Ok(DiscordPath {
        steps: median(steps),
        pongs: median(pongs),
        alone: alone.0,
        cpu: [cpu(step_ticks), cpu(pong_ticks), alone.1],
    })
}

/// Figure 6's measures: answers per second through Discord, pongs per second, steps per second through the engine
/// alone, and the microseconds of this process's CPU each took (the fakes run in this process too).
struct DiscordPath {
    steps: f64,
    pongs: f64,
    alone: f64,
    cpu: [f64; 3],
}

/// Microseconds per operation of `ticks` clock ticks of CPU (a hundredth of a second each) over `operations`.
fn ticks_us(ticks: u64, operations: usize) -> f64 {
    ticks as f64 * 10_000.0 / operations.max(1) as f64
}

/// An existing, migrated database with `n` pilots.
async fn seed_via_store(url: &str, n: usize) -> anyhow::Result<()> {
    lastmile::open_store(url).await?.close().await;
    if n > 0 {
        seed(url, "startup", n, 0).await?;
    }
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("lastmile-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn render(rows: &[Row], plans: &[(String, String)], quick: bool, took: Duration) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "# Benchmarks\n\nMachine: {}. Date: {}. Command: `{}`. Run time: {:.0} s.\n\n",
        machine(),
        Utc::now().format("%Y-%m-%d"),
        if quick {
            "cargo test --bench lastmile -- --quick"
        } else {
            "cargo bench --bench lastmile -- --out BENCHMARKS.md"
        },
        took.as_secs_f64()
    ));
    s.push_str(
        "| figure | value | baseline (same run) | ratio | target | met |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    for r in rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "-",
        };
        s.push_str(&format!("| {} | {} | {} | {} | {} | {met} |\n", r.figure, r.value, r.baseline, r.ratio, r.target));
    }
    for (kind, plan) in plans {
        s.push_str(&format!("\nQuery plan of the sweep's claim ({kind}):\n\n```text\n{}\n```\n", plan.trim()));
    }
    s
}
