//! lastmile in Slack: the real slack-morphism client, in Socket Mode, against the fake Slack in `fake_slack/`,
//! which checks every message and modal against Block Kit's limits. Each test reads as a conversation: envelopes
//! in (commands, clicks, submissions), the bot's Web API calls and acknowledgements out.

mod common;
mod fake_slack;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::TestDb;
use fake_slack::*;
use lastmile::chat::slack::{self, Running, SlackOptions};
use lastmile::config::Secret;
use lastmile::engine::Engine;
use serde_json::{Value, json};

struct TestBot {
    fake: Fake,
    bot: Option<Running>,
    engine: Engine,
    clock: Arc<Mutex<DateTime<Utc>>>,
    _db: TestDb,
}

fn secret(s: &str) -> Secret {
    serde_json::from_value(json!(s)).unwrap()
}

impl TestBot {
    async fn start() -> TestBot {
        let db = TestDb::sqlite();
        let engine = common::engine(&db.url).await;
        let fake = Fake::start().await;
        let clock = Arc::new(Mutex::new(common::now()));
        let read = clock.clone();
        let opts = SlackOptions {
            bot_token: secret(BOT_TOKEN),
            app_token: secret(APP_TOKEN),
            api_url: Some(fake.api_url.clone()),
            socket_connections: 1,
            reconnect_backoff_secs: 1,
            scheduler_interval: Duration::from_millis(50),
            scheduler_lease: Duration::from_secs(300),
            scheduler: true,
            clock: Arc::new(move || *read.lock().unwrap()),
            health: lastmile::chat::ops::Health::new(),
        };
        let bot = slack::start(engine.clone(), opts).await.expect("the bot starts");
        assert_eq!(bot.install().team, TEAM);
        fake.connected(1).await;
        TestBot { fake, bot: Some(bot), engine, clock, _db: db }
    }

    /// Shuts the bot down and checks that nothing it sent broke Slack's rules.
    async fn stop(mut self) {
        if let Some(bot) = self.bot.take() {
            tokio::time::timeout(WAIT, bot.shutdown()).await.expect("shut down in time").expect("clean shutdown");
        }
        self.fake.assert_valid();
    }

    /// The pilot as `/pilot status` shows it to Bob, through the console on the same database.
    async fn status(&self, pilot: &str) -> String {
        let opts = lastmile::chat::console::ConsoleOptions {
            workspace: TEAM.into(),
            user: BOB.id.into(),
            channel: CHANNEL.into(),
            now: Some(*self.clock.lock().unwrap()),
            bots: vec![],
            interactive: false,
            closed_dms: vec![],
            admins: vec![],
            chart_dir: std::env::temp_dir().join("lastmile-test-charts"),
        };
        let mut out = Vec::new();
        let script = format!("/pilot status {pilot}");
        lastmile::chat::console::run(&self.engine, opts, script.as_bytes(), &mut out).await.unwrap();
        String::from_utf8(out).unwrap()
    }
}

/// The view the bot shows after `ack` (a submission answered with `update`), under the same view id as `prev`.
fn updated(prev: &Value, ack: &Value) -> Value {
    assert_eq!(ack["response_action"], "update", "expected the next question, got {ack:#}");
    let mut v = ack["view"].clone();
    v["id"] = prev["id"].clone();
    v
}

fn view_text(view: &Value) -> String {
    Call { method: String::new(), body: view.clone(), token: None, answer: Value::Null }.text()
}

fn view_raw_text(view: &Value) -> String {
    Call { method: String::new(), body: view.clone(), token: None, answer: Value::Null }.raw_text()
}

fn input_of(view: &Value) -> Value {
    view["blocks"].as_array().unwrap().iter().find(|b| b["type"] == "input").cloned().expect("an input block")
}

/// Bob registers `name` through the modal, up to the summary with its buttons; returns that view.
async fn register_up_to_summary(f: &Fake, name: &str) -> Value {
    let (ack, _) = f.command(BOB, "/pilot", &format!("register {name}")).await;
    assert!(ack.get("text").is_none() && ack.get("blocks").is_none(), "a command is acknowledged bare: {ack}");
    let open = f.nth("views.open", 1, |_| true).await;
    let modal = open.answer["view"].clone();
    let workflow = "Claims intake team (12, Leeds) triages motor claims by hand; the assistant pre-sorts them.";
    let owner = updated(&modal, &f.submit(BOB, &modal, Pick::Text(workflow)).await);
    let pnl = updated(&owner, &f.submit(BOB, &owner, Pick::User(DAVE)).await);
    let sponsor = updated(&pnl, &f.submit(BOB, &pnl, Pick::Text("Claims handling cost: £4.2m -> £3.6m")).await);
    let date = updated(&sponsor, &f.submit(BOB, &sponsor, Pick::User(ERIN)).await);
    updated(&date, &f.submit(BOB, &date, Pick::Text("default")).await)
}

#[tokio::test]
async fn a_registration_through_the_modal_with_a_vague_answer_corrected_in_place() {
    let t = TestBot::start().await;
    let f = &t.fake;
    let (ack, _) = f.command(BOB, "/pilot", "register Claims triage").await;
    assert!(ack.get("text").is_none(), "{ack}");
    // The first question opens a modal, with the command's trigger id, at once.
    let open = f.nth("views.open", 1, |_| true).await;
    assert!(open.body["trigger_id"].as_str().unwrap().starts_with("trigger-"));
    let modal = open.answer["view"].clone();
    assert!(view_text(&modal).contains("which end-to-end workflow"), "{}", view_text(&modal));
    assert_eq!(input_of(&modal)["element"]["type"], "plain_text_input");
    // A vague answer is a field error on the same modal: the view is not replaced, so the typed text stays.
    let refused = f.submit(BOB, &modal, Pick::Text("improve efficiency")).await;
    assert_eq!(refused["response_action"], "errors", "{refused:#}");
    let error = refused["errors"]["answer"].as_str().unwrap();
    assert!(error.contains("is an aim, not a workflow"), "{error}");
    assert!(!t.status("Claims triage").await.contains("improve efficiency"), "the vague answer was saved");
    // Corrected in place: the modal moves on to the owner, picked from a user menu.
    let workflow = "Claims intake team (12, Leeds) triages motor claims by hand; the assistant pre-sorts them.";
    let owner = updated(&modal, &f.submit(BOB, &modal, Pick::Text(workflow)).await);
    assert!(view_text(&owner).contains("who owns the last mile"), "{}", view_text(&owner));
    assert_eq!(input_of(&owner)["element"]["type"], "users_select");
    // A bot is refused as the owner, on the field.
    let bot = f.submit(BOB, &owner, Pick::User(HELPER_BOT)).await;
    assert_eq!(bot["response_action"], "errors", "{bot:#}");
    assert!(bot["errors"]["answer"].as_str().unwrap().contains("is a bot"), "{bot:#}");
    let pnl = updated(&owner, &f.submit(BOB, &owner, Pick::User(DAVE)).await);
    assert!(view_text(&pnl).contains("which P&L line"), "{}", view_text(&pnl));
    assert!(t.status("Claims triage").await.contains(DAVE.id), "the owner is saved as the step is answered");
    // A submission of an earlier question's modal (from a second window) answers nothing else.
    let moved = f.submit(BOB, &owner, Pick::User(ERIN)).await;
    assert_eq!(moved["response_action"], "update");
    assert!(view_text(&moved["view"]).contains("already answered"), "{}", view_text(&moved["view"]));
    assert!(!t.status("Claims triage").await.contains(ERIN.id));
    let sponsor = updated(&pnl, &f.submit(BOB, &pnl, Pick::Text("Claims handling cost: £4.2m -> £3.6m")).await);
    assert!(view_text(&sponsor).contains("executive sponsor"), "{}", view_text(&sponsor));
    assert_eq!(input_of(&sponsor)["element"]["type"], "users_select");
    let date = updated(&sponsor, &f.submit(BOB, &sponsor, Pick::User(ERIN)).await);
    let summary = updated(&date, &f.submit(BOB, &date, Pick::Text("default")).await);
    assert!(view_text(&summary).contains("Please check the scoping"), "{}", view_text(&summary));
    let confirm = Call { method: String::new(), body: summary.clone(), token: None, answer: Value::Null };
    f.click_in_view(BOB, &summary, &confirm.button("Confirm")).await;
    // The modal says it is done; the channel hears of the new pilot; Dave is asked by direct message.
    let done = f.nth("views.update", 1, |_| true).await;
    assert!(done.text().contains("is scoped"), "{}", done.text());
    assert!(done.body["view"].get("submit").is_none());
    let post = f.nth("chat.postMessage", 1, |c| c.channel() == CHANNEL).await;
    assert!(post.text().contains("New pilot scoped"), "{}", post.text());
    assert!(post.text().contains(&DAVE.mention()), "{}", post.text());
    let open_dm = f.nth("conversations.open", 1, |_| true).await;
    assert_eq!(open_dm.body["users"], json!([DAVE.id]));
    let dm = f.nth("chat.postMessage", 1, |c| c.channel() == DAVE.dm_channel()).await;
    assert!(dm.text().contains("Do you accept?"), "{}", dm.text());
    t.stop().await;
}

#[tokio::test]
async fn the_owner_accepts_from_a_direct_message_button() {
    let t = TestBot::start().await;
    let f = &t.fake;
    let summary = register_up_to_summary(f, "Claims triage").await;
    let confirm = Call { method: String::new(), body: summary.clone(), token: None, answer: Value::Null };
    f.click_in_view(BOB, &summary, &confirm.button("Confirm")).await;
    let dm = f.nth("chat.postMessage", 1, |c| c.channel() == DAVE.dm_channel()).await;
    // Dave clicks Accept in his direct message: his answer is ephemeral, Bob hears of it by direct message.
    let url = f.click(DAVE, &DAVE.dm_channel(), &dm.button("Accept"), dm.button_value("Accept").as_deref()).await;
    let thanks = f.response(&url, 1).await;
    assert!(thanks.text().contains("you own the last mile"), "{}", thanks.text());
    let to_bob = f.nth("chat.postMessage", 1, |c| c.channel() == BOB.dm_channel()).await;
    assert!(to_bob.text().contains("accepted ownership"), "{}", to_bob.text());
    assert!(t.status("Claims triage").await.contains("accepted"), "{}", t.status("Claims triage").await);
    // The same button again is a question no longer open: it changes nothing and says so.
    let again = f.click(DAVE, &DAVE.dm_channel(), &dm.button("Accept"), None).await;
    let closed = f.response(&again, 1).await;
    assert!(!closed.text().contains("you own the last mile"), "{}", closed.text());
    t.stop().await;
}

#[tokio::test]
async fn a_direct_message_that_cannot_be_delivered_falls_back_to_a_mention_in_the_channel() {
    let t = TestBot::start().await;
    let f = &t.fake;
    f.close_dms(DAVE);
    let summary = register_up_to_summary(f, "Claims triage").await;
    let confirm = Call { method: String::new(), body: summary.clone(), token: None, answer: Value::Null };
    f.click_in_view(BOB, &summary, &confirm.button("Confirm")).await;
    let fallback =
        f.nth("chat.postMessage", 1, |c| c.channel() == CHANNEL && !c.text().contains("New pilot scoped")).await;
    assert!(fallback.text().contains(&DAVE.mention()), "{}", fallback.text());
    assert!(f.calls_to("chat.postMessage").iter().all(|c| c.channel() != DAVE.dm_channel()));
    t.stop().await;
}

#[tokio::test]
async fn a_pilot_named_with_channel_pings_pings_no_one() {
    let t = TestBot::start().await;
    let f = &t.fake;
    let name = "<!channel> @here <!everyone> <!subteam^S01LEADS> launch";
    let summary = register_up_to_summary(f, name).await;
    assert!(!view_raw_text(&summary).contains("<!"), "{}", view_raw_text(&summary));
    let confirm = Call { method: String::new(), body: summary.clone(), token: None, answer: Value::Null };
    f.click_in_view(BOB, &summary, &confirm.button("Confirm")).await;
    let post = f.nth("chat.postMessage", 1, |c| c.channel() == CHANNEL).await;
    let text = post.raw_text();
    assert!(text.contains("&lt;!channel&gt;") && text.contains("&lt;!subteam^S01LEADS&gt;"), "{text}");
    assert!(!text.contains("<!"), "{text}");
    // The fake refuses any `<!…>` in any message or view the bot sent.
    t.stop().await;
}

#[tokio::test]
async fn an_unknown_subcommand_gets_did_you_mean_and_changes_nothing() {
    let t = TestBot::start().await;
    let f = &t.fake;
    let (_, url) = f.command(BOB, "/pilot", "regster Claims triage").await;
    let reply = f.response(&url, 1).await;
    assert!(reply.text().contains("/pilot register"), "{}", reply.text());
    assert!(f.calls_to("views.open").is_empty());
    assert!(f.calls_to("chat.postMessage").is_empty());
    t.stop().await;
}

#[tokio::test]
async fn stale_or_foreign_buttons_change_nothing_and_say_so() {
    let t = TestBot::start().await;
    let f = &t.fake;
    // Not a lastmile button at all.
    let url = f.click(BOB, CHANNEL, "something-else", None).await;
    assert!(f.response(&url, 1).await.text().contains("no longer in use"));
    // A lastmile button made for another Slack team.
    let url = f.click(BOB, CHANNEL, &format!("lm:c:{OTHER_TEAM}:confirm:0"), None).await;
    assert!(f.response(&url, 1).await.text().contains("no longer in use"));
    // A button of a question already answered: the conversation stays where it is.
    let (_, _) = f.command(BOB, "/pilot", "register Claims triage").await;
    let modal = f.nth("views.open", 1, |_| true).await.answer["view"].clone();
    let workflow = "Claims intake team (12, Leeds) triages motor claims by hand; the assistant pre-sorts them.";
    updated(&modal, &f.submit(BOB, &modal, Pick::Text(workflow)).await);
    // It says so, and shows the question the conversation is at (in a modal, as the click can open one).
    f.click(BOB, CHANNEL, &format!("lm:c:{TEAM}:workflow:0"), None).await;
    let said = f.nth("views.open", 2, |_| true).await;
    assert!(said.text().contains("already answered"), "{}", said.text());
    assert!(said.text().contains("who owns the last mile"), "{}", said.text());
    assert!(t.status("Claims triage").await.contains("Claims intake team"));
    // A command from another team is refused in its acknowledgement, with nothing called.
    let before = f.calls().len();
    let (ack, _) = f.command_in(OTHER_TEAM, BOB, "/pilot", "register Other").await;
    assert!(ack["text"].as_str().unwrap().contains("another Slack workspace"), "{ack}");
    assert_eq!(f.calls().len(), before);
    t.stop().await;
}

#[tokio::test]
async fn a_dropped_socket_mode_connection_reconnects() {
    let t = TestBot::start().await;
    let f = &t.fake;
    let opened = f.calls_to("apps.connections.open").len();
    f.drop_sockets();
    f.connected(2).await;
    assert!(f.calls_to("apps.connections.open").len() > opened);
    let (_, url) = f.command(BOB, "/pilot", "list").await;
    let reply = f.response(&url, 1).await;
    assert!(!reply.text().is_empty());
    t.stop().await;
}

const BIN: &str = env!("CARGO_BIN_EXE_lastmile");

fn lastmile_slack(dir: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(BIN);
    c.current_dir(dir)
        .args(["--db", &format!("sqlite://{}", dir.join("lastmile.db").display()), "slack"])
        .env_remove("DATABASE_URL")
        .env_remove("DISCORD_TOKEN")
        .env_remove("SLACK_BOT_TOKEN")
        .env_remove("SLACK_APP_TOKEN")
        .env_remove("SLACK_SIGNING_SECRET")
        .env_remove("LASTMILE_SLACK_API_URL");
    c
}

#[test]
fn lastmile_slack_names_the_missing_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = lastmile_slack(dir.path()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("SLACK_BOT_TOKEN is not set"), "{err}");
    let out = lastmile_slack(dir.path()).env("SLACK_BOT_TOKEN", BOT_TOKEN).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("SLACK_APP_TOKEN is not set"), "{err}");
    assert!(!err.contains(BOT_TOKEN), "{err}");
}

#[tokio::test]
async fn the_tokens_are_never_logged_even_at_trace_level() {
    let f = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = lastmile_slack(dir.path())
        .env("SLACK_BOT_TOKEN", BOT_TOKEN)
        .env("SLACK_APP_TOKEN", APP_TOKEN)
        .env("LASTMILE_SLACK_API_URL", &f.api_url)
        .env("RUST_LOG", "trace")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    f.connected(1).await;
    let (_, url) = f.command(BOB, "/pilot", "list").await;
    f.response(&url, 1).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("connected to Slack"), "{logged}");
    // The log is not empty of Slack's traffic: it would show a token if one leaked.
    assert!(logged.contains("apps.connections.open"), "{}", &logged[..logged.len().min(3000)]);
    for secret in [BOT_TOKEN, APP_TOKEN, "fakebottoken", "fakeapptoken"] {
        assert!(!logged.contains(secret), "{secret} was logged");
    }
    f.assert_valid();
}

#[tokio::test]
async fn settings_are_for_slack_workspace_admins() {
    let t = TestBot::start().await;
    let f = &t.fake;
    let (_, url) = f.command(BOB, "/lastmile", "config working_days mon-thu").await;
    let refused = f.response(&url, 1).await;
    assert!(refused.text().contains("Only a workspace admin"), "{}", refused.text());
    let (_, url) = f.command(ALICE, "/lastmile", "config working_days mon-thu").await;
    let saved = f.response(&url, 1).await;
    assert!(!saved.text().contains("Only a workspace admin"), "{}", saved.text());
    let (_, url) = f.command(BOB, "/lastmile", "config").await;
    assert!(f.response(&url, 1).await.text().contains("Only a workspace admin"));
    let (_, url) = f.command(ALICE, "/lastmile", "config").await;
    let shown = f.response(&url, 1).await.text();
    assert!(shown.contains("`working_days`: mon,tue,wed,thu"), "{shown}");
    t.stop().await;
}

#[tokio::test]
async fn a_nudge_is_sent_once_however_often_the_scheduler_runs() {
    let t = TestBot::start().await;
    let f = &t.fake;
    // Alice owns a pilot whose review was yesterday; its first nudge is due this morning.
    let review: chrono::NaiveDate = "2026-12-02".parse().unwrap();
    let due: DateTime<Utc> = "2026-12-03T08:00:00Z".parse().unwrap();
    let pilot = common::DuePilot {
        workspace: TEAM,
        name: "Claims triage",
        owner: ALICE.id,
        registered_by: BOB.id,
        channel: CHANNEL,
        review,
        due,
    };
    common::insert_due_pilot(&t._db.url, pilot).await;
    *t.clock.lock().unwrap() = due + chrono::Duration::hours(1);
    let is_nudge = |c: &Call| c.channel() == ALICE.dm_channel() && c.text().contains("passed its review date");
    let nudge = f.nth("chat.postMessage", 1, is_nudge).await;
    assert!(nudge.text().contains("Claims triage"), "{}", nudge.text());
    // Three more sweeps at the same time, then three an hour later: nothing more is due.
    let bot = t.bot.as_ref().unwrap();
    for later in [1, 2] {
        let runs = bot.scheduler_runs();
        let swept = async {
            while bot.scheduler_runs() < runs + 3 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(WAIT, swept).await.expect("the scheduler keeps running");
        *t.clock.lock().unwrap() = due + chrono::Duration::hours(later);
    }
    let nudges = f.calls_to("chat.postMessage").iter().filter(|c| is_nudge(c)).count();
    assert_eq!(nudges, 1, "the nudge was sent again");
    t.stop().await;
}
