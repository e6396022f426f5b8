//! `lastmile serve`: Discord and Slack in one process, as a real process against both fakes, with one scheduler
//! that sends each workspace's messages through the platform that workspace lives on.

mod common;
mod fake_discord;
mod fake_slack;

use std::time::Duration;

use chrono::{DateTime, Utc};
use lastmile::domain::WorkspaceId;

const BIN: &str = env!("CARGO_BIN_EXE_lastmile");
const DISCORD_TOKEN: &str = "fake.discord.token";
/// A workspace made in the console: no platform has served it.
const CONSOLE_WS: &str = "console-acme";

/// The nudges Alice was sent in Discord, among `calls`.
fn discord_nudges(calls: &[fake_discord::Call]) -> Vec<fake_discord::Call> {
    let dm = format!("/channels/{}/messages", fake_discord::ALICE.id + 1);
    calls.iter().filter(|c| c.path == dm && c.content().contains("passed its review date")).cloned().collect()
}

/// The nudges Alice was sent in Slack, among `calls`.
fn slack_nudges(calls: &[fake_slack::Call]) -> Vec<fake_slack::Call> {
    let dm = fake_slack::ALICE.dm_channel();
    let nudge = |c: &&fake_slack::Call| {
        c.method == "chat.postMessage" && c.channel() == dm && c.text().contains("passed its review date")
    };
    calls.iter().filter(nudge).cloned().collect()
}

#[tokio::test]
async fn serve_runs_discord_and_slack_with_one_scheduler_that_sends_each_nudge_through_its_own_platform() {
    let discord = fake_discord::Fake::start().await;
    let slack = fake_slack::Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("lastmile.db").display());
    // One pilot due in each workspace: a Discord server, a Slack team, and one made in the console. The process
    // reads the real clock: the review dates are three days ago.
    let now = Utc::now();
    let review = (now - chrono::Duration::days(3)).date_naive();
    let due: DateTime<Utc> = now - chrono::Duration::hours(1);
    let guild = fake_discord::GUILD.to_string();
    let (discord_alice, discord_bob) = (fake_discord::ALICE.id.to_string(), fake_discord::BOB.id.to_string());
    let channel = fake_discord::CHANNEL.to_string();
    let pilots = [
        (guild.as_str(), "Discord triage", discord_alice.as_str(), discord_bob.as_str(), channel.as_str()),
        (fake_slack::TEAM, "Slack triage", fake_slack::ALICE.id, fake_slack::BOB.id, fake_slack::CHANNEL),
        (CONSOLE_WS, "Console triage", "alice", "bob", "general"),
    ];
    for (workspace, name, owner, registered_by, channel) in pilots {
        let p = common::DuePilot { workspace, name, owner, registered_by, channel, review, due };
        common::insert_due_pilot(&url, p).await;
    }
    let log = dir.path().join("stderr.log");
    let mut child = std::process::Command::new(BIN)
        .current_dir(dir.path())
        .args(["--db", &url, "serve"])
        .env_remove("DATABASE_URL")
        .env_remove("SLACK_SIGNING_SECRET")
        .env_remove("LASTMILE_DISCORD_LISTEN")
        .env("DISCORD_TOKEN", DISCORD_TOKEN)
        .env("DISCORD_GUILD_ID", &guild)
        .env("LASTMILE_DISCORD_API_URL", &discord.base)
        .env("SLACK_BOT_TOKEN", fake_slack::BOT_TOKEN)
        .env("SLACK_APP_TOKEN", fake_slack::APP_TOKEN)
        .env("LASTMILE_SLACK_API_URL", &slack.api_url)
        .env("LASTMILE_SCHEDULER_INTERVAL_SECS", "1")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    discord.connected().await;
    slack.connected(1).await;
    // The Slack team is known from the install: its nudge goes out through Slack.
    slack.wait_for("the Slack nudge", |calls| slack_nudges(calls).first().cloned()).await;
    // The Discord server becomes known when it first uses the bot; then its nudge goes out through Discord.
    let (_, help) = discord.interact(discord.slash(fake_discord::BOB, "pilot", "help", &[])).await;
    assert!(help.content().contains("/pilot register"));
    discord.wait_for("the Discord nudge", |calls| discord_nudges(calls).first().cloned()).await;
    // A few more sweeps (one a second, by the real clock): nothing is sent again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (d, s) = (discord_nudges(&discord.calls()), slack_nudges(&slack.calls()));
    assert_eq!(d.len(), 1, "Discord nudges: {d:?}");
    assert_eq!(s.len(), 1, "Slack nudges: {s:?}");
    assert!(d[0].content().contains("Discord triage"), "{}", d[0].content());
    assert!(s[0].text().contains("Slack triage"), "{}", s[0].text());
    // Nothing crossed over, and the console's pilot went nowhere.
    let discord_text: String = discord.calls().iter().map(|c| c.content()).collect();
    let slack_text: String = slack.calls().iter().map(|c| c.text()).collect();
    for (text, other) in [(&discord_text, "Slack triage"), (&slack_text, "Discord triage")] {
        assert!(!text.contains(other), "{other} went to the wrong platform");
    }
    for text in [&discord_text, &slack_text] {
        assert!(!text.contains("Console triage"), "the console's pilot was sent");
    }
    let kill = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = tokio::task::spawn_blocking(move || {
        for _ in 0..600 {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.kill().ok();
        None
    })
    .await
    .unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{stderr}");
    assert!(stderr.contains("connected to Discord as lastmile"), "{stderr}");
    assert!(stderr.contains("connected to Slack (team T01ACME)"), "{stderr}");
    // The console's workspace is named once in a warning, not once a sweep.
    assert_eq!(stderr.matches(CONSOLE_WS).count(), 1, "{stderr}");
    for secret in [DISCORD_TOKEN, fake_slack::BOT_TOKEN, fake_slack::APP_TOKEN] {
        assert!(!stderr.contains(secret), "a token was logged");
    }
    // Each nudge is recorded once, in its own workspace; the console's is still due.
    let store = lastmile::open_store(&url).await.unwrap();
    for (ws, sent) in [(guild.as_str(), 1), (fake_slack::TEAM, 1), (CONSOLE_WS, 0)] {
        let recorded = store.deliveries(&WorkspaceId::new(ws), "nudge").await.unwrap();
        assert_eq!(recorded.len(), sent, "nudges recorded in {ws}");
    }
    store.close().await;
    discord.assert_valid();
    slack.assert_valid();
}

#[test]
fn serve_without_a_platform_says_what_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .current_dir(dir.path())
        .arg("serve")
        .env_remove("DATABASE_URL")
        .env_remove("DISCORD_TOKEN")
        .env_remove("SLACK_BOT_TOKEN")
        .env_remove("SLACK_APP_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no platform is configured"), "{err}");
}
