//! The delivery guarantees of the review schedule, with an injected clock, on SQLite and PostgreSQL:
//! each due nudge is sent exactly once by two processes sharing a database, also when sending is slow; a sender
//! whose claim ran out sends and records nothing; a crash between claim and send re-sends once after the lease; a
//! week of downtime means one catch-up nudge; a decided pilot or one with 3/3 evidence is never nudged again.

mod common;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use common::TestDb;
use lastmile::domain::{ChannelId, UserId, WorkspaceId};
use lastmile::engine::{Destination, Engine, Input, Reply, Request};
use lastmile::schedule::{DeliveryError, LEASE, Outbox, RunOutcome, Scheduler};

/// Records what the scheduler hands over; `fail` makes every delivery fail (a process that dies mid-send).
#[derive(Default)]
struct Recorder {
    sent: Mutex<Vec<Reply>>,
    fail: bool,
}

impl Outbox for Recorder {
    async fn deliver(&self, _at: DateTime<Utc>, _workspace: &WorkspaceId, reply: &Reply) -> Result<(), DeliveryError> {
        if self.fail {
            return Err(DeliveryError::Failed("process died".into()));
        }
        self.sent.lock().unwrap().push(reply.clone());
        Ok(())
    }
}

impl Recorder {
    fn nudges(&self) -> Vec<String> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter(|r| {
                matches!(r.to, Destination::Dm(_)) && r.text.contains("passed its review date") && !r.choices.is_empty()
            })
            .map(|r| r.text.split("**").nth(1).unwrap_or_default().to_owned())
            .collect()
    }
}

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// One run of a scheduler named `worker`, with the clock stopped at `now`.
async fn run<O: Outbox>(engine: &Engine, worker: &str, now: DateTime<Utc>, outbox: &O) -> RunOutcome {
    Scheduler::new(engine.clone(), worker).run_due(&move || now, outbox, None).await.unwrap()
}

/// Inserts `n` scoped pilots of workspace `w` whose review was on 2027-01-06 (a Wednesday), owned by @alice,
/// with their first nudge due (Thursday 2027-01-07 08:00 UTC).
async fn seed(url: &str, w: &str, n: usize) {
    let store = lastmile::open_store(url).await.unwrap();
    let url = url.to_owned();
    store.close().await;
    let rows: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "('{w}', 'Pilot {i}', 'pilot {i}', 'scoped', 'bob', '2026-11-25T10:00:00+00:00', 'general', 'Intake triage by hand', \
                 'alice', 'Claims cost', 'GBP', 100.0, 80.0, '2027-01-06', '2027-01-06', 'accepted', \
                 '2027-01-07T08:00:00+00:00', '2026-11-25T10:00:00+00:00')"
            )
        })
        .collect();
    let head = "INSERT INTO pilots (workspace, name, name_key, stage, registered_by, registered_at, home_channel, workflow, owner, \
                pnl_line, pnl_unit, pnl_baseline, pnl_target, review_date, next_review_date, owner_status, next_action_at, updated_at) VALUES ";
    for chunk in rows.chunks(500) {
        let sql = format!("{head}{}", chunk.join(", "));
        common::execute(&url, &sql).await;
    }
}

async fn say(engine: &Engine, user: &str, line: &str, now: DateTime<Utc>) -> Vec<Reply> {
    let input = if line.starts_with('/') { Input::CommandLine(line.into()) } else { Input::Text(line.into()) };
    engine
        .handle(Request {
            workspace: WorkspaceId::new("acme"),
            user: UserId::new(user),
            channel: ChannelId::new("general"),
            now,
            input,
            bots: vec![],
            admin: false,
            answers: None,
            platform: None,
        })
        .await
}

async fn two_processes_send_each_due_nudge_exactly_once(url: &str, n: usize) {
    seed(url, "acme", n).await;
    let (a, b) = (common::engine(url).await, common::engine(url).await);
    let (ra, rb) = (Recorder::default(), Recorder::default());
    let now = t("2027-01-07T09:00:00Z");
    tokio::join!(run(&a, "process-a", now, &ra), run(&b, "process-b", now, &rb));
    let mut all: Vec<String> = ra.nudges().into_iter().chain(rb.nudges()).collect();
    assert_eq!(all.len(), n, "a: {}, b: {}", ra.nudges().len(), rb.nudges().len());
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "some pilot was nudged twice");
    let recorded = a.store().deliveries(&WorkspaceId::new("acme"), "nudge").await.unwrap();
    assert_eq!(recorded.len(), n);
    // Both processes worked (the claims interleaved) unless the batch was too small to share.
    println!("process a sent {}, process b sent {}", ra.nudges().len(), rb.nudges().len());
    // Run again at the same time: nothing is due.
    assert_eq!(run(&a, "process-a", now, &ra).await, RunOutcome::NothingDue);
    a.store().close().await;
    b.store().close().await;
}

async fn a_crash_between_claim_and_send_resends_once_after_the_lease(url: &str) {
    seed(url, "acme", 3).await;
    let engine = common::engine(url).await;
    let now = t("2027-01-07T09:00:00Z");
    // A process claims the due pilots and dies before it sends anything.
    let dying = Recorder { fail: true, ..Recorder::default() };
    assert_eq!(run(&engine, "dying", now, &dying).await, RunOutcome::NothingDue);
    let other = Recorder::default();
    // Its claims hold for the lease: nobody else sends meanwhile.
    let during = now + LEASE - Duration::seconds(1);
    assert_eq!(run(&engine, "survivor", during, &other).await, RunOutcome::NothingDue);
    assert!(other.nudges().is_empty());
    // After the lease, each is sent once.
    let after = now + LEASE + Duration::seconds(1);
    assert_eq!(run(&engine, "survivor", after, &other).await, RunOutcome::Sent(3));
    assert_eq!(run(&engine, "survivor", after + Duration::minutes(10), &other).await, RunOutcome::NothingDue);
    let mut names = other.nudges();
    names.sort();
    assert_eq!(names, vec!["Pilot 0", "Pilot 1", "Pilot 2"]);
    engine.store().close().await;
}

async fn a_week_of_downtime_means_one_catch_up_nudge(url: &str) {
    seed(url, "acme", 1).await;
    let engine = common::engine(url).await;
    let r = Recorder::default();
    // First nudge on time.
    assert_eq!(run(&engine, "bot", t("2027-01-07T08:00:00Z"), &r).await, RunOutcome::Sent(1));
    // The bot is down from the 8th until the 25th: two intervals (14th, 21st) were missed.
    let back = t("2027-01-25T11:00:00Z");
    assert_eq!(run(&engine, "bot", back, &r).await, RunOutcome::Sent(1));
    assert_eq!(run(&engine, "bot", back + Duration::hours(1), &r).await, RunOutcome::NothingDue);
    assert_eq!(r.nudges().len(), 2);
    // The next one counts from the catch-up, a week later.
    assert_eq!(run(&engine, "bot", t("2027-02-01T10:59:00Z"), &r).await, RunOutcome::NothingDue);
    assert_eq!(run(&engine, "bot", t("2027-02-01T11:00:00Z"), &r).await, RunOutcome::Sent(1));
    engine.store().close().await;
}

async fn decided_or_proven_pilots_are_never_nudged_again(url: &str) {
    seed(url, "acme", 2).await;
    let engine = common::engine(url).await;
    let r = Recorder::default();
    let first = t("2027-01-07T08:00:00Z");
    assert_eq!(run(&engine, "bot", first, &r).await, RunOutcome::Sent(2));
    // Pilot 0 is killed by its registrant; pilot 1's owner records 3/3 evidence.
    let later = t("2027-01-08T10:00:00Z");
    for line in ["/pilot review Pilot 0 kill", "1", "Not worth scaling: the saving is too small to matter."] {
        say(&engine, "bob", line, later).await;
    }
    for (line, user) in [
        ("/pilot evidence Pilot 1", "alice"),
        ("1", "alice"),
        ("Since 7 January the intake team works the new queue for every claim; runbook: wiki/triage", "alice"),
        ("/pilot evidence Pilot 1", "alice"),
        ("2", "alice"),
        ("I run the queue every day since 7 January and own its weekly accuracy review.", "alice"),
        ("/pilot evidence Pilot 1", "alice"),
        ("3", "alice"),
        ("£90; Jan 2027; finance ledger", "alice"),
    ] {
        say(&engine, user, line, later).await;
    }
    let card = say(&engine, "bob", "/pilot status Pilot 1", later).await;
    assert!(card[0].text.contains("Evidence 3/3"), "{}", card[0].text);
    for days in [7, 14, 30, 90] {
        assert_eq!(run(&engine, "bot", first + Duration::days(days), &r).await, RunOutcome::NothingDue);
    }
    assert_eq!(r.nudges().len(), 2);
    engine.store().close().await;
}

/// An outbox that takes `pause` of real time per message (a platform rate-limiting the bot), recording what it
/// was handed and by whom.
struct Slow {
    pause: std::time::Duration,
    sent: Arc<Mutex<Vec<(String, String)>>>,
    worker: &'static str,
}

impl Outbox for Slow {
    async fn deliver(&self, _at: DateTime<Utc>, _ws: &WorkspaceId, reply: &Reply) -> Result<(), DeliveryError> {
        tokio::time::sleep(self.pause).await;
        let pilot = reply.text.split("**").nth(1).unwrap_or_default().to_owned();
        self.sent.lock().unwrap().push((pilot, self.worker.to_owned()));
        Ok(())
    }
}

/// Two schedulers share a database while sending is slow: each takes its claims with a lease counted from when it
/// takes them, renews a claim before each send, and records only while it holds it. A sweep takes longer than
/// the lease, so the second process takes over what the first has not reached yet, and no message goes out twice.
async fn a_slow_outbox_and_two_schedulers_send_nothing_twice(url: &str) {
    let n = 12;
    seed(url, "acme", n).await;
    let (a, b) = (common::engine(url).await, common::engine(url).await);
    // The clock runs in real time from just after the first nudges came due.
    let start = std::time::Instant::now();
    let base = t("2027-01-07T09:00:00Z");
    let clock = move || base + Duration::from_std(start.elapsed()).unwrap();
    let lease = Duration::milliseconds(400);
    let sent = Arc::new(Mutex::new(Vec::new()));
    let pause = std::time::Duration::from_millis(100);
    let (oa, ob) = (Slow { pause, sent: sent.clone(), worker: "a" }, Slow { pause, sent: sent.clone(), worker: "b" });
    let (sa, sb) = (Scheduler::new(a.clone(), "a").with_lease(lease), Scheduler::new(b.clone(), "b").with_lease(lease));
    let first = async {
        sa.run_due(&clock, &oa, None).await.unwrap();
    };
    let second = async {
        // The second process sweeps every 50 ms, as a busy bot's scheduler would.
        for _ in 0..40 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            sb.run_due(&clock, &ob, None).await.unwrap();
        }
    };
    tokio::join!(first, second);
    let sent = sent.lock().unwrap().clone();
    let by = |w: &str| sent.iter().filter(|(_, by)| by == w).count();
    println!("slow outbox: process a sent {}, process b sent {}", by("a"), by("b"));
    let mut pilots: Vec<&String> = sent.iter().map(|(p, _)| p).collect();
    pilots.sort();
    let total = pilots.len();
    pilots.dedup();
    assert_eq!(pilots.len(), total, "a nudge went out twice: {sent:?}");
    assert_eq!(total, n, "every due nudge went out: {sent:?}");
    assert!(by("a") > 0 && by("b") > 0, "the second process took over what the first had not reached: {sent:?}");
    assert_eq!(a.store().deliveries(&WorkspaceId::new("acme"), "nudge").await.unwrap().len(), n);
    a.store().close().await;
    b.store().close().await;
}

/// An outbox whose sends take longer than the lease (the clock jumps while it sends).
struct Stalling {
    clock: Arc<AtomicI64>,
    sent: Mutex<Vec<String>>,
}

impl Outbox for Stalling {
    async fn deliver(&self, _at: DateTime<Utc>, _ws: &WorkspaceId, reply: &Reply) -> Result<(), DeliveryError> {
        self.clock.fetch_add((LEASE + Duration::seconds(1)).num_seconds(), Ordering::SeqCst);
        self.sent.lock().unwrap().push(reply.text.split("**").nth(1).unwrap_or_default().to_owned());
        Ok(())
    }
}

/// A sender whose lease runs out while it sends records nothing, and sends nothing more under claims that ran out;
/// the next process sends each message once and records it.
async fn a_sender_whose_lease_runs_out_records_nothing(url: &str) {
    seed(url, "acme", 2).await;
    let engine = common::engine(url).await;
    let base = t("2027-01-07T09:00:00Z");
    let offset = Arc::new(AtomicI64::new(0));
    let read = offset.clone();
    let clock = move || base + Duration::seconds(read.load(Ordering::SeqCst));
    let slow = Stalling { clock: offset.clone(), sent: Mutex::new(Vec::new()) };
    let outcome = Scheduler::new(engine.clone(), "slow").run_due(&clock, &slow, None).await.unwrap();
    assert_eq!(outcome, RunOutcome::NothingDue, "nothing was recorded");
    assert_eq!(slow.sent.lock().unwrap().len(), 1, "the second claim had run out: not sent");
    let ws = WorkspaceId::new("acme");
    assert!(engine.store().deliveries(&ws, "nudge").await.unwrap().is_empty());
    // Another process, later: each pilot is nudged once more and recorded (the one sent unrecorded is the
    // documented duplicate within a lease).
    let r = Recorder::default();
    assert_eq!(run(&engine, "next", clock(), &r).await, RunOutcome::Sent(2));
    assert_eq!(engine.store().deliveries(&ws, "nudge").await.unwrap().len(), 2);
    assert_eq!(run(&engine, "next", clock() + Duration::minutes(1), &r).await, RunOutcome::NothingDue);
    engine.store().close().await;
}

#[tokio::test]
async fn a_slow_outbox_and_two_schedulers_send_nothing_twice_sqlite() {
    a_slow_outbox_and_two_schedulers_send_nothing_twice(&TestDb::sqlite().url).await;
}

#[tokio::test]
async fn a_slow_outbox_and_two_schedulers_send_nothing_twice_postgres() {
    let Some(db) = TestDb::postgres("a_slow_outbox_and_two_schedulers_postgres").await else { return };
    a_slow_outbox_and_two_schedulers_send_nothing_twice(&db.url).await;
    db.cleanup().await;
}

#[tokio::test]
async fn a_sender_whose_lease_runs_out_records_nothing_sqlite() {
    a_sender_whose_lease_runs_out_records_nothing(&TestDb::sqlite().url).await;
}

#[tokio::test]
async fn a_sender_whose_lease_runs_out_records_nothing_postgres() {
    let Some(db) = TestDb::postgres("a_sender_whose_lease_runs_out_postgres").await else { return };
    a_sender_whose_lease_runs_out_records_nothing(&db.url).await;
    db.cleanup().await;
}

#[tokio::test]
async fn exactly_once_with_two_processes_sqlite() {
    two_processes_send_each_due_nudge_exactly_once(&TestDb::sqlite().url, 10_000).await;
}

#[tokio::test]
async fn exactly_once_with_two_processes_postgres() {
    let Some(db) = TestDb::postgres("exactly_once_with_two_processes_postgres").await else { return };
    two_processes_send_each_due_nudge_exactly_once(&db.url, 10_000).await;
    db.cleanup().await;
}

#[tokio::test]
async fn crash_resends_once_after_the_lease_sqlite() {
    a_crash_between_claim_and_send_resends_once_after_the_lease(&TestDb::sqlite().url).await;
}

#[tokio::test]
async fn crash_resends_once_after_the_lease_postgres() {
    let Some(db) = TestDb::postgres("crash_resends_once_after_the_lease_postgres").await else { return };
    a_crash_between_claim_and_send_resends_once_after_the_lease(&db.url).await;
    db.cleanup().await;
}

#[tokio::test]
async fn downtime_catch_up_is_one_nudge_sqlite() {
    a_week_of_downtime_means_one_catch_up_nudge(&TestDb::sqlite().url).await;
}

#[tokio::test]
async fn downtime_catch_up_is_one_nudge_postgres() {
    let Some(db) = TestDb::postgres("downtime_catch_up_is_one_nudge_postgres").await else { return };
    a_week_of_downtime_means_one_catch_up_nudge(&db.url).await;
    db.cleanup().await;
}

#[tokio::test]
async fn decided_or_proven_never_nudged_sqlite() {
    decided_or_proven_pilots_are_never_nudged_again(&TestDb::sqlite().url).await;
}

#[tokio::test]
async fn decided_or_proven_never_nudged_postgres() {
    let Some(db) = TestDb::postgres("decided_or_proven_never_nudged_postgres").await else { return };
    decided_or_proven_pilots_are_never_nudged_again(&db.url).await;
    db.cleanup().await;
}
