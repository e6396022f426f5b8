//! Replicas under faults: two real `lastmile` processes, answering Discord's interactions over HTTP, share one
//! PostgreSQL database and its schedule. 2,000 pilots come due at once; one process is killed with SIGKILL in the
//! middle of the sweep and started again. Every due message must reach Discord (the fake), and a message may go
//! twice only when a process died between sending and recording it, and then only once the lease ran out.

mod common;
mod fake_discord;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TestDb;
use fake_discord::*;

const BIN: &str = env!("CARGO_BIN_EXE_lastmile");
const TOKEN: &str = "fake.discord.token";
const PILOTS: u64 = 2_000;
/// The first pilot owner's id; owner `i` gets its direct messages in channel `OWNER + i + 1`.
const OWNER: u64 = 900_000_000_000_100_000;
/// The lease the processes run with (`scheduler_lease_secs`).
const LEASE_SECS: u64 = 3;

fn start(db: &str, fake: &Fake, log: &std::path::Path) -> Child {
    Command::new(BIN)
        .args(["discord", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", db)
        .env("DISCORD_TOKEN", TOKEN)
        .env("DISCORD_GUILD_ID", GUILD.to_string())
        .env("DISCORD_PUBLIC_KEY", public_key_hex(&signing_key()))
        .env("LASTMILE_DISCORD_API_URL", &fake.base)
        .env("LASTMILE_SCHEDULER_INTERVAL_SECS", "1")
        .env("LASTMILE_SCHEDULER_LEASE_SECS", LEASE_SECS.to_string())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Direct messages received so far, by channel, each with when it arrived.
fn messages(fake: &Fake) -> HashMap<String, Vec<Instant>> {
    let mut by_channel: HashMap<String, Vec<Instant>> = HashMap::new();
    for c in fake.calls() {
        if c.method == "POST" && c.status == 200 && c.path.starts_with("/channels/") && c.path != digest_channel() {
            by_channel.entry(c.path.clone()).or_default().push(c.at);
        }
    }
    by_channel
}

/// The pilots' channel, where the weekly digest goes.
fn digest_channel() -> String {
    format!("/channels/{CHANNEL}/messages")
}

#[tokio::test]
async fn two_replicas_on_postgres_deliver_every_due_message_when_one_is_killed_mid_sweep() {
    let Some(db) = TestDb::postgres("two_replicas_on_postgres").await else { return };
    lastmile::open_store(&db.url).await.unwrap().close().await;
    // 2,000 scoped pilots with accepted owners, each past its review date: each owner is nudged once.
    common::execute(
        &db.url,
        &format!(
            "INSERT INTO pilots (workspace, name, name_key, stage, registered_by, registered_at, home_channel, workflow, \
             owner, sponsor, pnl_line, pnl_unit, pnl_baseline, pnl_target, review_date, next_review_date, owner_status, \
             next_action_at, updated_at) \
             SELECT '{GUILD}', 'Pilot ' || i, 'pilot ' || i, 'scoped', '{bob}', '2026-10-01T10:00:00+00:00'::timestamptz, \
             '{CHANNEL}', 'Claims intake team triages claims by hand', ({OWNER} + i)::text, '{erin}', 'Line ' || i, 'GBP', \
             100.0, 80.0, '2026-11-02'::date, '2026-11-02'::date, 'accepted', '2026-11-02T08:00:00+00:00'::timestamptz, \
             '2026-10-01T10:00:00+00:00'::timestamptz FROM generate_series(0, {last}) AS s(i)",
            bob = BOB.id,
            erin = ERIN.id,
            last = PILOTS - 1
        ),
    )
    .await;
    let started = Instant::now();
    let fake = Fake::start().await;
    // Checked once at the end: checking 4,000 bodies on arrival would be most of the work.
    fake.defer_checks();
    fake.set_message_latency(Duration::from_millis(3));
    let dir = tempfile::tempdir().unwrap();
    let logs = [dir.path().join("a.log"), dir.path().join("b.log"), dir.path().join("a2.log")];
    let mut a = start(&db.url, &fake, &logs[0]);
    let mut b = start(&db.url, &fake, &logs[1]);
    // In the middle of the sweep, A is killed without a chance to finish anything.
    fake.wait_for("a quarter of the nudges", |calls| {
        (calls.iter().filter(|c| c.method == "POST" && c.path.starts_with("/channels/")).count() >= 500).then_some(())
    })
    .await;
    a.kill().unwrap();
    a.wait().unwrap();
    let at_kill = messages(&fake).values().map(Vec::len).sum::<usize>();
    let mut a2 = start(&db.url, &fake, &logs[2]);
    // Everything is delivered: what A had claimed waits for its lease, then B or the new A sends it.
    let deadline = Instant::now() + Duration::from_secs(240);
    let delivered = loop {
        let m = messages(&fake);
        if m.len() as u64 >= PILOTS || Instant::now() > deadline {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // A little longer, so that a message sent twice late would be seen.
    tokio::time::sleep(Duration::from_secs(LEASE_SECS + 2)).await;
    let delivered_after = messages(&fake);
    for child in [&mut b, &mut a2] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let total: usize = delivered_after.values().map(Vec::len).sum();
    let duplicates: Vec<(&String, &Vec<Instant>)> = delivered_after.iter().filter(|(_, v)| v.len() > 1).collect();
    println!(
        "replicas under faults: {PILOTS} pilots due; {} reached Discord ({total} messages, {} of them before the \
         SIGKILL); {} sent twice (lease {LEASE_SECS} s); {:.1} s",
        delivered_after.len(),
        at_kill,
        duplicates.len(),
        started.elapsed().as_secs_f64()
    );
    let stderr: Vec<String> = logs.iter().map(|l| std::fs::read_to_string(l).unwrap_or_default()).collect();
    // The direct messages went to the owners, and to no one else.
    for channel in delivered_after.keys() {
        let id: u64 = channel.trim_start_matches("/channels/").trim_end_matches("/messages").parse().unwrap();
        assert!((OWNER + 1..=OWNER + PILOTS).contains(&id), "a message to {channel}");
    }
    assert_eq!(delivered.len() as u64, PILOTS, "not every owner was nudged; logs:\n{}", stderr.join("\n"));
    // The week's digest is due too: three processes, one digest.
    let digests = fake.calls().iter().filter(|c| c.method == "POST" && c.path == digest_channel()).count();
    assert_eq!(digests, 1, "the digest was posted {digests} times");
    // A process sends one message at a time and records it before the next: killed, it leaves at most one sent
    // and unrecorded, which goes again once its lease ran out.
    assert!(duplicates.len() <= 1, "sent twice: {duplicates:?}");
    for (channel, times) in &duplicates {
        assert_eq!(times.len(), 2, "{channel}");
        let gap = times[1].duration_since(times[0]);
        assert!(gap >= Duration::from_secs(LEASE_SECS) - Duration::from_millis(500), "{channel} again after {gap:?}");
    }
    // The bodies sent are of three shapes (a DM channel, a nudge, the digest): a sample of each is checked
    // against Discord's OpenAPI description (all 4,000 would take a minute in a debug build).
    let calls = fake.calls();
    let mut checked = 0;
    for shape in ["/users/@me/channels", "/messages"] {
        for c in calls.iter().filter(|c| c.method == "POST" && c.path.ends_with(shape)).step_by(200) {
            let errors = check(&c.method, &c.path, &c.body);
            assert!(errors.is_empty(), "{} {}: {errors:?}", c.method, c.path);
            checked += 1;
        }
    }
    assert!(checked >= 20);
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    db.cleanup().await;
}
