//! The portfolio summary and the digest: within Discord's limits however large the portfolio, only overdue
//! owners notified, and one digest per period even with two processes.

mod common;

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use common::TestDb;
use lastmile::domain::{ChannelId, UserId, WorkspaceId};
use lastmile::engine::{Destination, Reply};
use lastmile::schedule::{DeliveryError, Outbox, Scheduler};

#[derive(Default)]
struct Recorder(Mutex<Vec<Reply>>);

impl Outbox for Recorder {
    async fn deliver(&self, _at: DateTime<Utc>, _workspace: &WorkspaceId, reply: &Reply) -> Result<(), DeliveryError> {
        self.0.lock().unwrap().push(reply.clone());
        Ok(())
    }
}

/// `n` scoped pilots in workspace `acme`, owned by `owner-<i % 7>`, review on 2027-01-06, with P&L lines that
/// differ, registered on 2026-11-25.
async fn seed(url: &str, n: usize) {
    lastmile::open_store(url).await.unwrap().close().await;
    let rows: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "('acme', 'Pilot {i}', 'pilot {i}', 'scoped', 'bob', '2026-11-25T10:00:00+00:00', 'general', 'w', \
                 'owner-{}', 'Line {}', 'GBP', 100.0, 80.0, '2027-01-06', '2027-01-06', 'pending', '2026-11-25T10:00:00+00:00')",
                i % 7,
                i % 40
            )
        })
        .collect();
    let sql = format!(
        "INSERT INTO pilots (workspace, name, name_key, stage, registered_by, registered_at, home_channel, workflow, owner, \
         pnl_line, pnl_unit, pnl_baseline, pnl_target, review_date, next_review_date, owner_status, updated_at) VALUES {}",
        rows.join(", ")
    );
    common::execute(url, &sql).await;
}

#[tokio::test]
async fn a_large_portfolio_fits_a_message_and_pings_only_overdue_owners() {
    let db = TestDb::sqlite();
    seed(&db.url, 300).await;
    let engine = common::engine(&db.url).await;
    let ws = WorkspaceId::new("acme");
    let after_review: DateTime<Utc> = "2027-01-20T10:00:00Z".parse().unwrap();
    let post = engine.portfolio_post(&ws, ChannelId::new("general"), after_review).await.unwrap();
    assert!(post.text.chars().count() <= 2000, "{} characters", post.text.chars().count());
    assert!(post.text.contains("Scoped 300"), "{}", post.text);
    assert!(post.text.contains("more"), "long lists end with 'and N more': {}", post.text);
    let mut owners: Vec<String> = post.ping.iter().map(|u| u.as_str().to_owned()).collect();
    owners.sort();
    assert_eq!(owners, (0..7).map(|i| format!("owner-{i}")).collect::<Vec<_>>());
    let png = post.attachment.expect("the funnel chart");
    assert!(png.bytes.starts_with(b"\x89PNG"));
    // Before the review date nothing is overdue: nobody is pinged.
    let before: DateTime<Utc> = "2026-12-01T10:00:00Z".parse().unwrap();
    let post = engine.portfolio_post(&ws, ChannelId::new("general"), before).await.unwrap();
    assert!(post.ping.is_empty());
    assert!(!post.text.contains("Overdue"));
    let _ = UserId::new("x");
    engine.store().close().await;
}

async fn one_digest_per_period_with_two_processes(url: &str) {
    seed(url, 3).await;
    let (a, b) = (common::engine(url).await, common::engine(url).await);
    let (ra, rb) = (Recorder::default(), Recorder::default());
    let (a, b) = (Scheduler::new(a, "a"), Scheduler::new(b, "b"));
    // Monday 30 November 2026, 09:05 UTC: the default digest (Mondays 09:00) is due.
    let now: DateTime<Utc> = "2026-11-30T09:05:00Z".parse().unwrap();
    let (x, y) = tokio::join!(a.run_digests(now, &ra, None), b.run_digests(now, &rb, None));
    assert_eq!(x.unwrap() + y.unwrap(), 1);
    let posts: Vec<Reply> = ra.0.lock().unwrap().iter().chain(rb.0.lock().unwrap().iter()).cloned().collect();
    assert_eq!(posts.len(), 1);
    assert!(matches!(&posts[0].to, Destination::Channel(c) if c.as_str() == "general"));
    // Later the same week: nothing; the next Monday: one more; after two weeks down: one catch-up, not two.
    assert_eq!(a.run_digests("2026-12-03T12:00:00Z".parse().unwrap(), &ra, None).await.unwrap(), 0);
    assert_eq!(a.run_digests("2026-12-07T09:00:00Z".parse().unwrap(), &ra, None).await.unwrap(), 1);
    assert_eq!(a.run_digests("2026-12-22T10:00:00Z".parse().unwrap(), &ra, None).await.unwrap(), 1);
    assert_eq!(b.run_digests("2026-12-22T10:00:00Z".parse().unwrap(), &rb, None).await.unwrap(), 0);
    a.engine().store().close().await;
    b.engine().store().close().await;
}

#[tokio::test]
async fn one_digest_per_period_sqlite() {
    one_digest_per_period_with_two_processes(&TestDb::sqlite().url).await;
}

#[tokio::test]
async fn one_digest_per_period_postgres() {
    let Some(db) = TestDb::postgres("one_digest_per_period_postgres").await else { return };
    one_digest_per_period_with_two_processes(&db.url).await;
    db.cleanup().await;
}

/// Pilots in every combination the summary tells apart: stages, kill categories, acceptance, evidence (with P&L
/// figures that moved towards the target, away from it, or not at all), extensions and due dates.
async fn seed_varied(url: &str) {
    lastmile::open_store(url).await.unwrap().close().await;
    let stages = ["draft", "scoped", "scoped", "in_production", "killed"];
    let kills = ["NULL", "'not_worth_scaling'", "'stalled_in_handoff'"];
    let realised = ["NULL", "90.0", "100.0", "120.0"];
    let mut rows = Vec::new();
    let mut i = 0;
    for stage in stages {
        for kill in kills {
            for r in realised {
                for (live, running) in [("FALSE", "FALSE"), ("TRUE", "FALSE"), ("TRUE", "TRUE")] {
                    let (ext, due) = if i % 3 == 0 { (1, "2027-03-01") } else { (0, "2027-01-06") };
                    let accepted = if i % 2 == 0 { "accepted" } else { "pending" };
                    let (base, target, line) =
                        if i % 4 == 0 { (200.0, 300.0, "Upsell revenue") } else { (100.0, 80.0, "Claims cost") };
                    let r = if r == "NULL" {
                        r.to_owned()
                    } else if i % 4 == 0 {
                        format!("{}", 200.0 + (r.parse::<f64>().unwrap() - 100.0))
                    } else {
                        r.to_owned()
                    };
                    rows.push(format!(
                        "('acme', 'Pilot {i}', 'pilot {i}', '{stage}', 'bob', '2026-11-25T10:00:00+00:00', 'general', 'w', 'owner-{}', \
                         '{line}', 'GBP', {base}, {target}, '2027-01-06', '{due}', '{accepted}', {kill}, {live}, {running}, {r}, {ext}, \
                         '2026-11-25T10:00:00+00:00')",
                        i % 5
                    ));
                    i += 1;
                }
            }
        }
    }
    let sql = format!(
        "INSERT INTO pilots (workspace, name, name_key, stage, registered_by, registered_at, home_channel, workflow, owner, \
         pnl_line, pnl_unit, pnl_baseline, pnl_target, review_date, next_review_date, owner_status, kill_category, \
         evidence_workflow_live, evidence_owner_running, pnl_realised, extensions, updated_at) VALUES {}",
        rows.join(", ")
    );
    common::execute(url, &sql).await;
    // The evidence count is the domain's, written with each change of a pilot: rows made by hand get it the same way.
    let store = lastmile::open_store(url).await.unwrap();
    let pilots = store.all_pilots(None).await.unwrap();
    store.close().await;
    let counts: Vec<String> = pilots.iter().map(|p| format!("WHEN {} THEN {}", p.id.0, p.evidence_count())).collect();
    common::execute(url, &format!("UPDATE pilots SET evidence_count = CASE id {} END", counts.join(" "))).await;
}

async fn the_database_portfolio_equals_the_domain_one(url: &str) {
    seed_varied(url).await;
    let engine = common::engine(url).await;
    let ws = WorkspaceId::new("acme");
    for today in ["2026-12-01", "2027-02-01", "2027-04-01"] {
        let today: chrono::NaiveDate = today.parse().unwrap();
        let pilots = engine.store().all_pilots(Some(&ws)).await.unwrap();
        let expected = lastmile::domain::portfolio::portfolio(&pilots, today);
        let actual = engine.store().portfolio(&ws, today, 10_000).await.unwrap();
        assert_eq!(actual.funnel, expected.funnel, "{today}");
        assert_eq!(
            (actual.healthy_kills, actual.absorption_failures),
            (expected.healthy_kills, expected.absorption_failures)
        );
        assert_eq!(
            (actual.overdue_total, actual.risks_total, actual.bets_total),
            (expected.overdue_total, expected.risks_total, expected.bets_total),
            "{today}"
        );
        let names = |v: Vec<String>| {
            let mut v = v;
            v.sort();
            v
        };
        assert_eq!(
            names(actual.overdue.iter().map(|o| o.name.clone()).collect()),
            names(expected.overdue.iter().map(|o| o.name.clone()).collect())
        );
        assert_eq!(
            names(actual.risks.iter().map(|r| r.name.clone()).collect()),
            names(expected.risks.iter().map(|r| r.name.clone()).collect())
        );
        assert_eq!(
            names(actual.bets.iter().map(|b| b.name.clone()).collect()),
            names(expected.bets.iter().map(|b| b.name.clone()).collect())
        );
        let key = |m: &lastmile::domain::portfolio::PnlMovement| {
            (
                m.line.to_lowercase(),
                m.unit.clone(),
                m.pilots,
                m.measured,
                (m.targeted * 100.0).round() as i64,
                m.realised.map(|r| (r * 100.0).round() as i64),
                format!("{:?}", m.direction),
                m.first_pilot.clone(),
                m.last_pilot.clone(),
            )
        };
        let mut a: Vec<_> = actual.pnl.iter().map(key).collect();
        let mut e: Vec<_> = expected.pnl.iter().map(key).collect();
        a.sort();
        e.sort();
        assert_eq!(a, e, "{today}");
        if today == "2027-02-01".parse().unwrap() {
            // The sample has something in every list on this day.
            assert!(expected.funnel.registered > 100 && expected.risks_total > 0 && expected.bets_total > 0);
        }
    }
    engine.store().close().await;
}

#[tokio::test]
async fn the_database_portfolio_equals_the_domain_one_sqlite() {
    the_database_portfolio_equals_the_domain_one(&TestDb::sqlite().url).await;
}

#[tokio::test]
async fn the_database_portfolio_equals_the_domain_one_postgres() {
    let Some(db) = TestDb::postgres("the_database_portfolio_equals_the_domain_one_postgres").await else { return };
    the_database_portfolio_equals_the_domain_one(&db.url).await;
    db.cleanup().await;
}

/// A mixed portfolio, as the people who decide read it: a cost to cut that rose (away from its target), a revenue
/// to grow (towards it), two pilots naming the same cost line (counted once), a pilot in production and one killed.
/// The text and the chart are compared with `tests/golden/` (`UPDATE_GOLDEN=1` rewrites them; read the diff).
#[tokio::test]
async fn a_mixed_portfolio_reads_true_golden_text_and_chart() {
    let db = TestDb::sqlite();
    lastmile::open_store(&db.url).await.unwrap().close().await;
    let pilot = |name: &str, stage: &str, line: &str, base: f64, target: f64, realised: &str, kill: &str| {
        format!(
            "('acme', '{name}', '{}', '{stage}', 'bob', '2026-11-25T10:00:00+00:00', 'general', 'w', 'owner-{}', \
             '{line}', 'GBP', {base}, {target}, '2027-01-06', '2027-01-06', 'accepted', {kill}, {realised}, \
             '2026-11-25T10:00:00+00:00')",
            name.to_lowercase(),
            name.len()
        )
    };
    let rows = [
        pilot("Claims triage", "scoped", "Claims handling cost", 4.2e6, 3.6e6, "4.4e6", "NULL"),
        pilot("Fraud screening", "scoped", "claims handling cost", 4.2e6, 3.9e6, "NULL", "NULL"),
        pilot("Upsell assistant", "in_production", "Upsell revenue", 1e6, 1.5e6, "1.2e6", "NULL"),
        pilot("Invoice matcher", "killed", "Cost per invoice", 4.5, 2.0, "NULL", "'not_worth_scaling'"),
    ];
    common::execute(
        &db.url,
        &format!(
            "INSERT INTO pilots (workspace, name, name_key, stage, registered_by, registered_at, home_channel, workflow, \
             owner, pnl_line, pnl_unit, pnl_baseline, pnl_target, review_date, next_review_date, owner_status, \
             kill_category, pnl_realised, updated_at) VALUES {}",
            rows.join(", ")
        ),
    )
    .await;
    let engine = common::engine(&db.url).await;
    let post = engine
        .portfolio_post(&WorkspaceId::new("acme"), ChannelId::new("general"), "2026-12-01T10:00:00Z".parse().unwrap())
        .await
        .unwrap();
    let png = post.attachment.expect("the funnel chart").bytes;
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(golden.join("portfolio_mixed.txt"), &post.text).unwrap();
        std::fs::write(golden.join("portfolio_mixed.png"), &png).unwrap();
    }
    let expected = std::fs::read_to_string(golden.join("portfolio_mixed.txt")).unwrap();
    assert_eq!(post.text, expected, "the portfolio text changed (UPDATE_GOLDEN=1 rewrites it)");
    assert!(png == std::fs::read(golden.join("portfolio_mixed.png")).unwrap(), "the chart changed");
    // What the golden text must say, whatever its wording.
    assert!(expected.contains("realised +£200,000 away from the target (−33% of the target)"), "{expected}");
    assert!(expected.contains("Shared by 2 pilots (Claims triage, Fraud screening): counted once"), "{expected}");
    assert!(expected.contains("+£200,000 towards it (40% of the target)"), "{expected}");
    assert!(expected.contains("production rate 50%"), "{expected}");
    assert!(!expected.contains("1 healthy kills"), "{expected}");
    engine.store().close().await;
}
