//! lastmile in Discord: the real serenity client against the fake Discord in `fake_discord/`, which checks every
//! request body against Discord's OpenAPI description. Each test reads as a conversation: interactions in,
//! the bot's REST calls out.

mod common;
mod fake_discord;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::TestDb;
use fake_discord::*;
use lastmile::chat::console::{self, ConsoleOptions};
use lastmile::chat::discord::endpoint::PublicKey;
use lastmile::chat::discord::{self, DiscordOptions, EndpointOptions, Running};
use lastmile::config::{Secret, Shard};
use lastmile::engine::Engine;
use serde_json::json;

const TOKEN: &str = "fake.discord.token";

struct TestBot {
    fake: Fake,
    bot: Option<Running>,
    engine: Engine,
    clock: Arc<Mutex<DateTime<Utc>>>,
    _db: TestDb,
}

impl TestBot {
    /// A fresh database, the fake Discord, and the bot connected to it and ready.
    async fn start() -> TestBot {
        Self::start_with(|_| {}).await
    }

    /// Like `start`, with the database prepared by `seed` (on the engine, as console users) first.
    async fn start_with(seed: impl FnOnce(&mut Vec<String>)) -> TestBot {
        Self::launch(seed, false).await
    }

    /// Like `start_with`, with interactions received over HTTP (`lastmile discord --listen`) instead of the
    /// gateway: the fake signs each one and POSTs it to the bot's endpoint.
    async fn start_http_with(seed: impl FnOnce(&mut Vec<String>)) -> TestBot {
        Self::launch(seed, true).await
    }

    async fn launch(seed: impl FnOnce(&mut Vec<String>), over_http: bool) -> TestBot {
        let db = TestDb::sqlite();
        let engine = common::engine(&db.url).await;
        let mut script = Vec::new();
        seed(&mut script);
        if !script.is_empty() {
            run_script(&engine, BOB, &script.join("\n")).await;
        }
        let fake = Fake::start().await;
        let clock = Arc::new(Mutex::new(common::now()));
        let read = clock.clone();
        let opts = DiscordOptions {
            token: serde_json::from_value::<Secret>(json!(TOKEN)).unwrap(),
            api_url: Some(fake.base.clone()),
            guild_id: Some(GUILD),
            scheduler_interval: Duration::from_millis(50),
            scheduler_lease: Duration::from_secs(300),
            scheduler: true,
            clock: Arc::new(move || *read.lock().unwrap()),
            shard: None,
            endpoint: over_http.then(|| EndpointOptions {
                listen: "127.0.0.1:0".parse().unwrap(),
                public_key: PublicKey::parse(&public_key_hex(&signing_key())).unwrap(),
            }),
            health: lastmile::chat::ops::Health::new(),
        };
        let mut bot = discord::start(engine.clone(), opts).await.expect("the bot starts");
        let name = tokio::time::timeout(WAIT, bot.ready()).await.expect("ready in time").expect("ready");
        assert_eq!(name, "lastmile");
        match bot.endpoint_addr() {
            Some(addr) => fake.use_endpoint(&format!("http://{addr}/interactions"), signing_key()),
            None => fake.connected().await,
        }
        TestBot { fake, bot: Some(bot), engine, clock, _db: db }
    }

    fn set_clock(&self, now: &str) {
        *self.clock.lock().unwrap() = now.parse().unwrap();
    }

    /// Shuts the bot down and checks that nothing it sent broke Discord's rules.
    async fn stop(mut self) {
        if let Some(bot) = self.bot.take() {
            tokio::time::timeout(WAIT, bot.shutdown()).await.expect("shut down in time").expect("clean shutdown");
        }
        self.fake.assert_valid();
        let unknown: Vec<String> =
            self.fake.calls().iter().filter(|c| c.status == 404).map(|c| format!("{} {}", c.method, c.path)).collect();
        assert!(unknown.is_empty(), "calls the fake does not know: {unknown:?}");
    }
}

/// Runs console lines as `who` in the test server's workspace and channel (people are mentioned by id).
async fn run_script(engine: &Engine, who: Who, script: &str) -> String {
    run_script_at(engine, who, script, common::now()).await
}

async fn run_script_at(engine: &Engine, who: Who, script: &str, now: DateTime<Utc>) -> String {
    let opts = ConsoleOptions {
        workspace: GUILD.to_string(),
        user: who.id.to_string(),
        channel: CHANNEL.to_string(),
        now: Some(now),
        bots: vec![HELPER_BOT.id.to_string()],
        interactive: false,
        closed_dms: vec![],
        admins: vec![],
        chart_dir: std::env::temp_dir().join("lastmile-test-charts"),
    };
    let mut out = Vec::new();
    console::run(engine, opts, script.as_bytes(), &mut out).await.unwrap();
    String::from_utf8(out).unwrap()
}

/// A scoped pilot registered by Bob, owned by Dave (who accepted), sponsored by Erin, reviewed on 2027-01-06.
fn scoped(name: &str) -> impl FnOnce(&mut Vec<String>) {
    let name = name.to_owned();
    move |s: &mut Vec<String>| {
        s.extend([
            format!("/pilot register {name}"),
            "Claims intake team (12, Leeds) triages motor claims by hand; the assistant pre-sorts them.".into(),
            format!("@{}", DAVE.id),
            "Claims handling cost: £4.2m -> £3.6m".into(),
            format!("@{}", ERIN.id),
            "default".into(),
            "1".into(),
            format!(":as @{}", DAVE.id),
            "Accept".into(),
            format!(":as @{}", BOB.id),
        ]);
    }
}

fn text_of(call: &Call) -> String {
    call.content()
}

#[tokio::test]
async fn commands_are_registered_from_the_one_description() {
    let t = TestBot::start().await;
    let put = t
        .fake
        .wait_for("the commands", |calls| {
            calls.iter().find(|c| c.method == "PUT" && c.path.ends_with(&format!("/guilds/{GUILD}/commands"))).cloned()
        })
        .await;
    let names: Vec<&str> = put.body.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["pilot", "portfolio", "lastmile"]);
    let subs: Vec<&str> =
        put.body[0]["options"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(subs, ["register", "status", "list", "edit", "evidence", "review", "resume", "help"]);
    t.stop().await;
}

#[tokio::test]
async fn a_registration_through_forms_buttons_and_the_user_menu() {
    registration(TestBot::start().await).await;
}

#[tokio::test]
async fn over_http_a_registration_goes_as_over_the_gateway() {
    registration(TestBot::start_http_with(|_| {}).await).await;
}

async fn registration(t: TestBot) {
    let f = &t.fake;
    // The name comes with the command; the first question offers a form.
    let (_, r) = f.interact(f.slash(BOB, "pilot", "register", &[("name", "Claims triage")])).await;
    assert_eq!(r.body["type"], 4);
    assert!(r.ephemeral());
    assert!(text_of(&r).contains("which end-to-end workflow"), "{}", text_of(&r));
    // "Answer" opens the form: a modal with one paragraph input.
    let (_, modal) = f.interact(f.click(BOB, &r, &r.button("Answer"), false)).await;
    assert_eq!(modal.body["type"], 9);
    let input = &modal.body["data"]["components"][0]["components"][0];
    assert_eq!(input["style"], 2);
    assert_eq!(input["label"], "Workflow");
    // A vague answer comes back with a pointed follow-up and a button that reopens the form, filled in.
    let (_, vague) = f.interact(f.submit(BOB, &modal, "improve efficiency", false)).await;
    assert!(vague.ephemeral());
    assert!(text_of(&vague).contains("is an aim, not a workflow"), "{}", text_of(&vague));
    let (_, again) = f.interact(f.click(BOB, &vague, &vague.button("Answer"), false)).await;
    assert_eq!(again.body["data"]["components"][0]["components"][0]["value"], "improve efficiency");
    let workflow = "Claims intake team (12, Leeds) triages motor claims by hand; the assistant pre-sorts them.";
    let (_, owner_q) = f.interact(f.submit(BOB, &again, workflow, false)).await;
    assert!(text_of(&owner_q).contains("who owns the last mile"), "{}", text_of(&owner_q));
    // The workflow's form sent again (from a window left open) answers nothing else.
    let (token, moved) = f.interact(f.submit(BOB, &again, "Something else entirely", false)).await;
    assert!(text_of(&moved).contains("already answered"), "{}", text_of(&moved));
    assert!(text_of(&f.replies(&token, 2).await[1]).contains("who owns the last mile"));
    // The owner is picked in a user menu; a bot is refused.
    let menu = owner_q.component(5);
    let (_, refused) = f.interact(f.pick_user(BOB, &owner_q, &menu, HELPER_BOT)).await;
    assert!(text_of(&refused).contains("is a bot"), "{}", text_of(&refused));
    let (_, pnl_q) = f.interact(f.pick_user(BOB, &refused, &refused.component(5), DAVE)).await;
    assert!(text_of(&pnl_q).contains("which P&L line"), "{}", text_of(&pnl_q));
    let (_, modal) = f.interact(f.click(BOB, &pnl_q, &pnl_q.button("Answer"), false)).await;
    let (_, sponsor_q) = f.interact(f.submit(BOB, &modal, "Claims handling cost: £4.2m -> £3.6m", false)).await;
    assert!(text_of(&sponsor_q).contains("executive sponsor"), "{}", text_of(&sponsor_q));
    // The sponsor is picked in a user menu too, with no Skip button (a pilot needs one), and it is not the owner.
    assert!(!sponsor_q.components().iter().any(|c| c["label"] == "Skip"), "{}", sponsor_q.message());
    let (_, refused) = f.interact(f.pick_user(BOB, &sponsor_q, &sponsor_q.component(5), DAVE)).await;
    assert!(text_of(&refused).contains("the sponsor must be someone else"), "{}", text_of(&refused));
    let (_, date_q) = f.interact(f.pick_user(BOB, &refused, &refused.component(5), ERIN)).await;
    assert!(text_of(&date_q).contains("first be reviewed"), "{}", text_of(&date_q));
    let (_, modal) = f.interact(f.click(BOB, &date_q, &date_q.button("Answer"), false)).await;
    assert_eq!(modal.body["data"]["components"][0]["components"][0]["style"], 1);
    let (_, confirm) = f.interact(f.submit(BOB, &modal, "default", false)).await;
    // The card to check is an embed, with the choices as buttons.
    let card = &confirm.message()["embeds"][0];
    assert!(card["description"].as_str().unwrap().contains("Claims triage"), "{card}");
    let (token, done) = f.interact(f.click(BOB, &confirm, &confirm.button("Confirm"), false)).await;
    assert!(done.ephemeral());
    assert!(text_of(&done).contains("is scoped"), "{}", text_of(&done));
    // The announcement is public in the channel and pings only the owner.
    let replies = f.replies(&token, 2).await;
    let announcement = &replies[1];
    assert!(!announcement.ephemeral());
    assert!(text_of(announcement).contains("New pilot scoped"), "{}", text_of(announcement));
    assert_eq!(announcement.body["allowed_mentions"]["users"], json!([DAVE.id.to_string()]));
    // The owner is asked by direct message, with buttons.
    let dm = f
        .wait_for("the owner's DM", |calls| {
            calls
                .iter()
                .find(|c| c.method == "POST" && c.path == format!("/channels/{}/messages", DAVE.id + 1))
                .cloned()
        })
        .await;
    assert!(text_of(&dm).contains("Claims triage"), "{}", text_of(&dm));
    let (_, accepted) = f.interact(f.click(DAVE, &dm, &dm.button("Accept"), true)).await;
    assert!(text_of(&accepted).contains("you own the last mile"), "{}", text_of(&accepted));
    let pilot = t.engine.store().all_pilots(None).await.unwrap().pop().unwrap();
    assert_eq!(pilot.owner.as_ref().map(|u| u.as_str().to_owned()), Some(DAVE.id.to_string()));
    assert_eq!(pilot.sponsor.as_ref().map(|u| u.as_str().to_owned()), Some(ERIN.id.to_string()));
    assert_eq!(pilot.workflow.as_deref(), Some(workflow));
    t.stop().await;
}

#[tokio::test]
async fn autocomplete_offers_only_this_servers_pilots() {
    let t = TestBot::start_with(scoped("Claims triage")).await;
    // The same name in another workspace must not show.
    run_script(&t.engine, BOB, "/pilot register Claims elsewhere").await;
    let other = ConsoleOptions {
        workspace: "another".into(),
        user: BOB.id.to_string(),
        channel: CHANNEL.to_string(),
        now: Some(common::now()),
        bots: vec![],
        interactive: false,
        closed_dms: vec![],
        admins: vec![],
        chart_dir: std::env::temp_dir(),
    };
    let mut out = Vec::new();
    console::run(&t.engine, other, scoped_script("Claims abroad").as_bytes(), &mut out).await.unwrap();
    let f = &t.fake;
    let (_, r) = f.interact(f.autocomplete(BOB, "pilot", "status", "pilot", "CLA")).await;
    assert_eq!(r.body["type"], 8);
    let names: Vec<&str> =
        r.body["data"]["choices"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    // Drafts (the unfinished "Claims elsewhere") and other workspaces are left out.
    assert_eq!(names, ["Claims triage"]);
    // Picking it runs the command.
    let (_, status) = f.interact(f.slash(BOB, "pilot", "status", &[("pilot", "Claims triage")])).await;
    assert!(status.message()["embeds"][0]["title"].as_str().unwrap().contains("Claims triage"));
    t.stop().await;
}

/// The scheduler records a nudge (and opens its question) just after handing it over: wait for that.
async fn nudge_recorded(t: &TestBot) {
    let ws = lastmile::domain::WorkspaceId::new(GUILD.to_string());
    let dave = lastmile::domain::UserId::new(DAVE.id.to_string());
    for _ in 0..500 {
        let open = t.engine.store().open_asks(&ws, &dave).await.unwrap();
        if open.iter().any(|a| matches!(a.kind, lastmile::dialogue::AskKind::Nudge { .. })) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the nudge was never recorded");
}

fn dave_dm_path() -> String {
    format!("/channels/{}/messages", DAVE.id + 1)
}

/// The nudge the scheduler sends Dave by direct message.
async fn nudge_dm(f: &Fake) -> Call {
    let path = dave_dm_path();
    f.wait_for("the nudge", |calls| {
        calls.iter().find(|c| c.path == path && text_of(c).contains("passed its review date")).cloned()
    })
    .await
}

/// The post in the pilot's channel that stands in for a direct message Dave does not accept.
async fn fallback_post(f: &Fake) -> Call {
    let path = format!("/channels/{CHANNEL}/messages");
    f.wait_for("the fallback", |calls| {
        calls.iter().find(|c| c.path == path && text_of(c).contains("could not send you")).cloned()
    })
    .await
}

fn scoped_script(name: &str) -> String {
    let mut s = Vec::new();
    scoped(name)(&mut s);
    s.join("\n")
}

#[tokio::test]
async fn a_nudge_from_the_scheduler_arrives_as_a_dm_with_buttons() {
    let t = TestBot::start_with(scoped("Claims triage")).await;
    let f = &t.fake;
    // The day after the review date, without evidence.
    t.set_clock("2027-01-07T10:00:00Z");
    let dm_path = dave_dm_path();
    let nudge = nudge_dm(f).await;
    assert_eq!(nudge.body["allowed_mentions"]["users"], json!([DAVE.id.to_string()]));
    nudge_recorded(&t).await;
    // Snoozing from the DM works without a server.
    let (_, snoozed) = f.interact(f.click(DAVE, &nudge, &nudge.button("Snooze"), true)).await;
    assert!(text_of(&snoozed).contains("snoozed until"), "{}", text_of(&snoozed));
    // Exactly one nudge for this cycle, however often the scheduler runs.
    let runs = t.bot.as_ref().unwrap().scheduler_runs();
    while t.bot.as_ref().unwrap().scheduler_runs() < runs + 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let nudges =
        f.calls().iter().filter(|c| c.path == dm_path && text_of(c).contains("passed its review date")).count();
    assert_eq!(nudges, 1);
    // A week later the snooze is over and Dave is nudged again, in the DM channel opened the first time.
    t.set_clock("2027-01-14T10:30:00Z");
    f.wait_for("the second nudge", |calls| {
        let n = calls.iter().filter(|c| c.path == dm_path && text_of(c).contains("passed its review date")).count();
        (n == 2).then_some(())
    })
    .await;
    let opened = f
        .calls()
        .iter()
        .filter(|c| c.path == "/users/@me/channels" && c.body["recipient_id"] == json!(DAVE.id.to_string()))
        .count();
    assert_eq!(opened, 1, "Dave's DM channel is opened once");
    t.stop().await;
}

#[tokio::test]
async fn a_closed_dm_falls_back_to_a_mention_in_the_channel() {
    let t = TestBot::start_with(scoped("Claims triage")).await;
    let f = &t.fake;
    f.close_dms(DAVE);
    t.set_clock("2027-01-07T10:00:00Z");
    let refused = f
        .wait_for("the refused DM", |calls| {
            calls.iter().find(|c| c.path == format!("/channels/{}/messages", DAVE.id + 1) && c.status == 403).cloned()
        })
        .await;
    assert!(text_of(&refused).contains("passed its review date"));
    let post = fallback_post(f).await;
    assert!(text_of(&post).contains(&DAVE.mention()), "{}", text_of(&post));
    assert_eq!(post.body["allowed_mentions"]["users"], json!([DAVE.id.to_string()]));
    nudge_recorded(&t).await;
    // Its buttons work for the owner in the channel.
    let (_, snoozed) = f.interact(f.click(DAVE, &post, &post.button("Snooze"), false)).await;
    assert!(text_of(&snoozed).contains("snoozed until"), "{}", text_of(&snoozed));
    t.stop().await;
}

#[tokio::test]
async fn a_button_in_a_dm_answers_its_own_question_only() {
    let t = TestBot::start_with(scoped("Claims triage")).await;
    let f = &t.fake;
    t.set_clock("2027-01-07T10:00:00Z");
    let nudge = nudge_dm(f).await;
    nudge_recorded(&t).await;
    // Dave is in the middle of registering another pilot when he clicks "Snooze" in the DM.
    let (_, q) = f.interact(f.slash(DAVE, "pilot", "register", &[("name", "Invoice matching")])).await;
    assert!(text_of(&q).contains("which end-to-end workflow"));
    let (_, snoozed) = f.interact(f.click(DAVE, &nudge, &nudge.button("Snooze"), true)).await;
    assert!(text_of(&snoozed).contains("snoozed until"), "{}", text_of(&snoozed));
    // The registration still waits for its workflow, untouched.
    let draft = t.engine.store().all_pilots(None).await.unwrap().into_iter().find(|p| p.name == "Invoice matching");
    assert_eq!(draft.and_then(|p| p.workflow), None);
    let (_, resumed) = f.interact(f.slash(DAVE, "pilot", "resume", &[])).await;
    let replies = f.replies(resumed.token().unwrap(), 2).await;
    assert!(replies.iter().any(|c| text_of(c).contains("which end-to-end workflow")), "{replies:?}");
    // Someone else clicking the owner's button changes nothing.
    let (_, refused) = f.interact(f.click(ERIN, &nudge, &nudge.button("Add evidence"), false)).await;
    assert!(text_of(&refused).contains(&format!("is for {}", DAVE.mention())), "{}", text_of(&refused));
    t.stop().await;
}

#[tokio::test]
async fn portfolio_defers_then_posts_the_summary_with_its_chart() {
    portfolio(TestBot::start_with(scoped("Claims triage")).await).await;
}

#[tokio::test]
async fn over_http_portfolio_is_deferred_in_the_answer_and_its_chart_follows() {
    portfolio(TestBot::start_http_with(scoped("Claims triage")).await).await;
}

async fn portfolio(t: TestBot) {
    let f = &t.fake;
    // Past the review date: the pilot is overdue, so its owner is named in the summary and notified.
    t.set_clock("2027-01-07T10:00:00Z");
    let (token, deferred) = f.interact(f.slash(ALICE, "portfolio", "", &[])).await;
    assert_eq!(deferred.body["type"], 5);
    assert!(deferred.ephemeral(), "only the one who asked sees the bot thinking");
    let replies = f.replies(&token, 3).await;
    let summary = replies.iter().find(|c| c.method == "POST" && !c.ephemeral()).expect("a public summary");
    assert_eq!(summary.files.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["funnel.png"]);
    assert!(summary.files[0].1 > 1000, "a real PNG");
    let embed = &summary.body["embeds"][0];
    assert_eq!(embed["image"]["url"], "attachment://funnel.png");
    assert!(embed["title"].as_str().unwrap().contains("Portfolio"), "{embed}");
    assert!(embed["description"].as_str().unwrap().contains("Claims triage"), "{embed}");
    // Mentions inside an embed notify nobody: the overdue owner is named in the content too.
    assert_eq!(summary.body["content"], json!(DAVE.mention()));
    assert_eq!(summary.body["allowed_mentions"]["users"], json!([DAVE.id.to_string()]));
    let edit = replies.iter().find(|c| c.method == "PATCH").expect("the deferred message replaced");
    assert!(edit.path.ends_with("/messages/@original"));
    t.stop().await;
}

#[tokio::test]
async fn config_needs_manage_server() {
    let t = TestBot::start().await;
    let f = &t.fake;
    let (_, refused) = f.interact(f.slash(BOB, "lastmile", "config", &[("setting", "digest"), ("value", "off")])).await;
    assert!(refused.ephemeral());
    assert!(
        text_of(&refused).contains("Manage Server") || text_of(&refused).contains("admin"),
        "{}",
        text_of(&refused)
    );
    let ws = lastmile::domain::WorkspaceId::new(GUILD.to_string());
    let before = t.engine.store().settings(&ws).await.unwrap().digest_cron;
    assert_ne!(before, "off");
    let (_, saved) = f.interact(f.slash(ALICE, "lastmile", "config", &[("setting", "digest"), ("value", "off")])).await;
    assert!(text_of(&saved).contains("Saved"), "{}", text_of(&saved));
    assert_eq!(t.engine.store().settings(&ws).await.unwrap().digest_cron, "off");
    t.stop().await;
}

#[tokio::test]
async fn everyone_in_a_pilot_name_pings_nobody() {
    let t = TestBot::start_with(scoped("@everyone @here launch party")).await;
    let f = &t.fake;
    // A public post that quotes the name: the fallback of a nudge to an owner who closed their DMs.
    f.close_dms(DAVE);
    t.set_clock("2027-01-07T10:00:00Z");
    let post = fallback_post(f).await;
    assert!(post.body["content"].as_str().unwrap().contains("@everyone @here launch party"), "{}", post.body);
    assert_eq!(post.body["allowed_mentions"]["parse"], json!([]));
    assert_eq!(post.body["allowed_mentions"]["roles"], json!([]));
    assert_eq!(post.body["allowed_mentions"]["users"], json!([DAVE.id.to_string()]));
    t.stop().await;
}

#[tokio::test]
async fn malformed_and_unknown_interactions_do_not_crash_the_bot() {
    let t = TestBot::start().await;
    let f = &t.fake;
    // Missing fields Discord always sends: serenity drops it.
    f.dispatch("INTERACTION_CREATE", json!({"id": "1", "type": 2, "data": {"name": "pilot"}}));
    f.dispatch("INTERACTION_CREATE", json!(["not", "an", "object"]));
    // A command this bot does not have.
    let (_, unknown) = f.interact(f.slash(BOB, "deploy", "now", &[])).await;
    assert!(text_of(&unknown).contains("I don't know the command"), "{}", text_of(&unknown));
    // A button and a form that lastmile did not make.
    let fake_message = Call {
        method: "POST".into(),
        path: "/x".into(),
        body: json!({"content": "hi", "components": [{"type": 1, "components": [{"type": 2, "style": 1, "label": "x", "custom_id": "evil:1"}]}]}),
        files: vec![],
        status: 200,
        at: std::time::Instant::now(),
    };
    let (_, stale) = f.interact(f.click(BOB, &fake_message, "evil:1", false)).await;
    assert!(text_of(&stale).contains("no longer in use"), "{}", text_of(&stale));
    let (_, stale) = f
        .interact(f.raw(5, json!({"custom_id": "lm:m", "components": [{"type": 1, "components": [{"type": 4, "custom_id": "answer", "value": "x"}]}]}), BOB))
        .await;
    assert!(text_of(&stale).contains("no longer in use"), "{}", text_of(&stale));
    // An answer with nothing pending.
    let (_, nothing) = f
        .interact(f.raw(5, json!({"custom_id": format!("lm:m:{GUILD}:"), "components": [{"type": 1, "components": [{"type": 4, "custom_id": "answer", "value": "hello"}]}]}), BOB))
        .await;
    assert!(text_of(&nothing).contains("Nothing is waiting for an answer"), "{}", text_of(&nothing));
    // Still answering.
    let (_, help) = f.interact(f.slash(BOB, "pilot", "help", &[])).await;
    assert!(text_of(&help).contains("/pilot register"), "{}", text_of(&help));
    t.stop().await;
}

#[tokio::test]
async fn the_bot_still_answers_after_the_gateway_drops() {
    let t = TestBot::start().await;
    let f = &t.fake;
    let before = f.state.identifies.load(std::sync::atomic::Ordering::SeqCst)
        + f.state.resumes.load(std::sync::atomic::Ordering::SeqCst);
    f.drop_gateway();
    f.wait_for("the reconnection", |_| {
        let now = f.state.identifies.load(std::sync::atomic::Ordering::SeqCst)
            + f.state.resumes.load(std::sync::atomic::Ordering::SeqCst);
        (now > before).then_some(())
    })
    .await;
    f.connected().await;
    let (_, help) = f.interact(f.slash(BOB, "pilot", "help", &[])).await;
    assert!(text_of(&help).contains("/pilot register"), "{}", text_of(&help));
    t.stop().await;
}

#[tokio::test]
async fn evidence_and_a_decision_through_buttons_and_forms() {
    let t = TestBot::start_with(scoped("Claims triage")).await;
    let f = &t.fake;
    // The owner records that the workflow is live: a button picks the item, a form takes the answer.
    let (_, pick) = f.interact(f.slash(DAVE, "pilot", "evidence", &[("pilot", "Claims triage")])).await;
    let (_, ask) = f.interact(f.click(DAVE, &pick, &pick.button("Workflow live"), false)).await;
    let (_, modal) = f.interact(f.click(DAVE, &ask, &ask.button("Answer"), false)).await;
    assert_eq!(modal.body["type"], 9);
    let (_, recorded) = f
        .interact(f.submit(
            DAVE,
            &modal,
            "Since 2 Dec the Leeds team (12) works from the pre-sorted queue; see the ops wiki.",
            false,
        ))
        .await;
    assert!(text_of(&recorded).contains("Evidence 1/3"), "{}", text_of(&recorded));
    // The registrant kills it: the category is a button, the reason a form; the decision is public.
    let (_, category) =
        f.interact(f.slash(BOB, "pilot", "review", &[("pilot", "Claims triage"), ("decision", "kill")])).await;
    let (_, reason_q) =
        f.interact(f.click(BOB, &category, &category.button("Stalled in hand-off (absorption failure)"), false)).await;
    let (_, modal) = f.interact(f.click(BOB, &reason_q, &reason_q.button("Answer"), false)).await;
    assert_eq!(modal.body["data"]["components"][0]["components"][0]["label"], "Reason");
    // The decision answers the form in the channel, for everyone.
    let (_, decision) = f.interact(f.submit(BOB, &modal, "Operations never took it over.", false)).await;
    assert!(!decision.ephemeral());
    assert!(text_of(&decision).contains("is stopped"), "{}", text_of(&decision));
    assert!(text_of(&decision).contains("absorption"), "{}", text_of(&decision));
    let pilot = t.engine.store().all_pilots(None).await.unwrap().pop().unwrap();
    assert_eq!(pilot.stage, lastmile::domain::Stage::Killed);
    t.stop().await;
}

#[test]
fn the_fake_refuses_what_discord_would_refuse() {
    let callback = "/interactions/1/tok/callback";
    let ok = json!({"type": 4, "data": {"content": "hi", "flags": 64, "allowed_mentions": {"parse": []}}});
    assert_eq!(check("POST", callback, &ok), Vec::<String>::new());
    let too_long = json!({"type": 4, "data": {"content": "x".repeat(2001), "allowed_mentions": {"parse": []}}});
    assert!(!check("POST", callback, &too_long).is_empty());
    let pings_everyone = json!({"type": 4, "data": {"content": "hi", "allowed_mentions": {"parse": ["everyone"]}}});
    assert!(!check("POST", callback, &pings_everyone).is_empty());
    let no_mentions = json!({"type": 4, "data": {"content": "@everyone"}});
    assert!(!check("POST", callback, &no_mentions).is_empty());
    let long_title = json!({"type": 9, "data": {"custom_id": "m", "title": "t".repeat(46), "components": [
        {"type": 1, "components": [{"type": 4, "custom_id": "a", "style": 1, "label": "l"}]}]}});
    assert!(!check("POST", callback, &long_title).is_empty());
    let empty_modal = json!({"type": 9, "data": {"custom_id": "m", "title": "t", "components": []}});
    assert!(!check("POST", callback, &empty_modal).is_empty());
    let bad_button = json!({"content": "x", "allowed_mentions": {"parse": []}, "components": [
        {"type": 1, "components": [{"type": 2, "style": 1, "label": "x".repeat(81), "custom_id": "c"}]}]});
    assert!(!check("POST", "/channels/1/messages", &bad_button).is_empty());
    assert!(!check("POST", "/no/such/endpoint", &ok).is_empty());
}

const BIN: &str = env!("CARGO_BIN_EXE_lastmile");

#[tokio::test]
async fn the_binary_runs_in_discord_when_a_token_is_set_and_stops_cleanly_on_sigterm() {
    let fake = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    // Plain `lastmile` with a token runs the Discord bot; debug logging must still never show the token.
    let mut child = std::process::Command::new(BIN)
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .env("DISCORD_TOKEN", TOKEN)
        .env("DISCORD_GUILD_ID", GUILD.to_string())
        .env("LASTMILE_DISCORD_API_URL", &fake.base)
        .env("RUST_LOG", "debug")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let put = fake.wait_for("the commands", |calls| calls.iter().find(|c| c.method == "PUT").cloned()).await;
    assert!(put.path.ends_with(&format!("/guilds/{GUILD}/commands")), "{}", put.path);
    fake.connected().await;
    let (_, help) = fake.interact(fake.slash(BOB, "pilot", "help", &[])).await;
    assert!(help.content().contains("/pilot register"));
    let (token, _) = fake.interact(fake.slash(BOB, "pilot", "register", &[("name", "Claims triage")])).await;
    assert!(fake.replies(&token, 1).await[0].content().contains("which end-to-end workflow"));
    let kill = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = tokio::task::spawn_blocking(move || {
        for _ in 0..(WAIT.as_millis() / 50) {
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
    assert!(stderr.contains("shutting down"), "{stderr}");
    assert!(!stderr.contains(TOKEN), "the token was logged");
    // The answer given in Discord is on disk, in the embedded database.
    let store = lastmile::open_store(&format!("sqlite://{}", dir.path().join("lastmile.db").display())).await.unwrap();
    let ws = lastmile::domain::WorkspaceId::new(GUILD.to_string());
    assert_eq!(store.pilot_names(&ws).await.unwrap(), ["Claims triage"]);
    store.close().await;
    fake.assert_valid();
}

#[test]
fn without_a_token_the_discord_command_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .current_dir(dir.path())
        .env_remove("DISCORD_TOKEN")
        .env_remove("DATABASE_URL")
        .arg("discord")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("DISCORD_TOKEN is not set"), "{err}");
}

#[tokio::test]
async fn a_slow_answer_is_deferred_within_three_seconds() {
    slow_answer(TestBot::start().await).await;
}

#[tokio::test]
async fn over_http_a_slow_answer_is_deferred_in_the_response_within_three_seconds() {
    slow_answer(TestBot::start_http_with(|_| {}).await).await;
}

async fn slow_answer(t: TestBot) {
    use sqlx::Connection;
    let f = &t.fake;
    // Another process holds the database's write lock for 2.5 seconds.
    let mut other = sqlx::SqliteConnection::connect(&t._db.url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
        other.close().await.ok();
    });
    let (token, first) = f.interact(f.slash(BOB, "pilot", "register", &[("name", "Claims triage")])).await;
    // Acknowledged in time (the fake would record a violation past 3 s), then answered in place.
    assert_eq!(first.body["type"], 5);
    assert!(first.ephemeral());
    let replies = f.replies(&token, 2).await;
    assert_eq!(replies[1].method, "PATCH");
    assert!(text_of(&replies[1]).contains("which end-to-end workflow"), "{}", text_of(&replies[1]));
    release.await.unwrap();
    t.stop().await;
}

#[tokio::test]
async fn the_sponsor_decides_from_the_escalation_with_a_button() {
    let t = TestBot::start_with(scoped("Claims triage")).await;
    let f = &t.fake;
    t.set_clock("2027-01-07T10:00:00Z");
    nudge_dm(f).await;
    nudge_recorded(&t).await;
    // Three weeks of unanswered reminders later, the sponsor is asked to decide.
    t.set_clock("2027-01-28T10:00:00Z");
    let erin_dm = format!("/channels/{}/messages", ERIN.id + 1);
    let escalation = f
        .wait_for("the escalation", |calls| {
            calls.iter().find(|c| c.path == erin_dm && text_of(c).contains("please decide")).cloned()
        })
        .await;
    // Someone who may not decide is told so by the same checks as the typed command.
    let (_, refused) = f.interact(f.click(DAVE, &escalation, &escalation.button("Kill"), true)).await;
    assert!(text_of(&refused).contains("may decide"), "{}", text_of(&refused));
    let (_, category) = f.interact(f.click(ERIN, &escalation, &escalation.button("Kill"), true)).await;
    assert!(text_of(&category).contains("Which kind of kill"), "{}", text_of(&category));
    let (_, reason) =
        f.interact(f.click(ERIN, &category, &category.button("Not worth scaling (healthy kill)"), true)).await;
    let (_, modal) = f.interact(f.click(ERIN, &reason, &reason.button("Answer"), true)).await;
    let (token, _) = f.interact(f.submit(ERIN, &modal, "The savings never justified the running cost.", true)).await;
    // Decided in a DM, announced in the pilot's channel.
    let announcement = f
        .wait_for("the decision", |calls| {
            calls
                .iter()
                .find(|c| c.path == format!("/channels/{CHANNEL}/messages") && text_of(c).contains("is stopped by"))
                .cloned()
        })
        .await;
    assert!(text_of(&announcement).contains(&ERIN.mention()), "{}", text_of(&announcement));
    f.replies(&token, 1).await;
    let pilot = t.engine.store().all_pilots(None).await.unwrap().pop().unwrap();
    assert_eq!(pilot.stage, lastmile::domain::Stage::Killed);
    t.stop().await;
}

/// Two processes on one token, each on a shard of its own (`LASTMILE_DISCORD_SHARD=0/2` and `1/2`), sharing one
/// database: each interaction reaches one of them and is answered once. (On one shard both would answer, and
/// Discord refuses the second response: the fake records it as a violation.)
#[tokio::test]
async fn two_processes_on_shards_of_their_own_answer_each_interaction_once() {
    let db = TestDb::sqlite();
    let fake = Fake::start().await;
    let mut bots = Vec::new();
    for id in 0..2 {
        let opts = DiscordOptions {
            token: serde_json::from_value::<Secret>(json!(TOKEN)).unwrap(),
            api_url: Some(fake.base.clone()),
            guild_id: Some(GUILD),
            scheduler_interval: Duration::from_secs(3600),
            scheduler_lease: Duration::from_secs(300),
            scheduler: true,
            clock: Arc::new(common::now),
            shard: Some(Shard { id, count: 2 }),
            endpoint: None,
            health: lastmile::chat::ops::Health::new(),
        };
        let mut bot = discord::start(common::engine(&db.url).await, opts).await.expect("the bot starts");
        tokio::time::timeout(WAIT, bot.ready()).await.expect("ready in time").expect("ready");
        bots.push(bot);
    }
    fake.connected_shards(2).await;
    // A server on each shard: Discord sends a server's events to shard (server id >> 22) % 2.
    let on_shard = |s: u64| (0..).map(|k| GUILD + (k << 22)).find(|g| (g >> 22) % 2 == s).unwrap();
    let servers = [on_shard(0), on_shard(1)];
    for (s, server) in servers.iter().enumerate() {
        for u in 0..3 {
            let who = Who { id: 900_000_000_000_200_000 + u, name: "user", admin: false, bot: false };
            let mut register = fake.slash(who, "pilot", "register", &[("name", &format!("Claims triage {s}-{u}"))]);
            register["guild_id"] = json!(server.to_string());
            let (_, response) = fake.interact(register).await;
            assert!(text_of(&response).contains("question 1 of 5"), "{}", text_of(&response));
        }
    }
    // Shutting down waits for the requests under way: a second answer would have arrived by then.
    for bot in bots {
        tokio::time::timeout(WAIT, bot.shutdown()).await.expect("shut down in time").expect("clean shutdown");
    }
    assert_eq!(*fake.state.dispatched.lock().unwrap(), [(0, 3), (1, 3)].into_iter().collect());
    fake.assert_valid();
    let store = common::engine(&db.url).await;
    for server in servers {
        let drafts = store.store().all_pilots(Some(&lastmile::domain::WorkspaceId::new(server.to_string()))).await;
        assert_eq!(drafts.unwrap().len(), 3, "each registration is saved once, in its server's workspace");
    }
}

/// A request to the interactions endpoint that Discord did not sign, or signed for another moment or body.
#[tokio::test]
async fn the_http_endpoint_refuses_what_discord_did_not_sign_and_changes_nothing() {
    let t = TestBot::start_http_with(|_| {}).await;
    let f = &t.fake;
    let url = format!("http://{}/interactions", t.bot.as_ref().unwrap().endpoint_addr().unwrap());
    let key = signing_key();
    let interaction =
        |f: &Fake, name: &str| serde_json::to_vec(&f.slash(BOB, "pilot", "register", &[("name", name)])).unwrap();
    let now: i64 = timestamp_now().parse().unwrap();
    let other_key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let mut refused = Vec::new();
    // A signature that is not one; one by another key; a stale and a future timestamp; a body changed after signing.
    let body = interaction(f, "Forged");
    refused.push(("forged", post_interaction(&url, &"ab".repeat(64), &now.to_string(), body).await));
    let body = interaction(f, "Other key");
    let sig = sign(&other_key, &now.to_string(), &body);
    refused.push(("another key", post_interaction(&url, &sig, &now.to_string(), body).await));
    for (what, at) in [("stale", now - 301), ("future", now + 301)] {
        let body = interaction(f, what);
        let sig = sign(&key, &at.to_string(), &body);
        refused.push((what, post_interaction(&url, &sig, &at.to_string(), body).await));
    }
    let body = interaction(f, "Changed");
    let sig = sign(&key, &now.to_string(), &body);
    let changed = String::from_utf8(body).unwrap().replace("Changed", "Changes").into_bytes();
    refused.push(("changed body", post_interaction(&url, &sig, &now.to_string(), changed).await));
    refused.push(("no headers", post_interaction(&url, "", "", interaction(f, "Unsigned")).await));
    for (what, (status, _)) in &refused {
        assert_eq!(*status, 401, "{what}");
    }
    // A request signed by Discord is answered once; the same request again is a replay.
    let ping = serde_json::to_vec(&json!({"id": "1", "application_id": APP_ID.to_string(), "type": 1,
        "token": "ping-token", "version": 1}))
    .unwrap();
    let ts = timestamp_now();
    let sig = sign(&key, &ts, &ping);
    let (status, pong) = post_interaction(&url, &sig, &ts, ping.clone()).await;
    assert_eq!((status, serde_json::from_slice::<serde_json::Value>(&pong).unwrap()), (200, json!({"type": 1})));
    let body = interaction(f, "Signed");
    let sig = sign(&key, &ts, &body);
    let (status, answer) = post_interaction(&url, &sig, &ts, body.clone()).await;
    assert_eq!(status, 200);
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert!(answer["data"]["content"].as_str().unwrap().contains("which end-to-end workflow"), "{answer}");
    assert_eq!(post_interaction(&url, &sig, &ts, body).await.0, 401, "a replayed request");
    // Nothing refused reached the engine: one registration was started, by the signed request.
    let conversations = t.engine.store().pilot_names(&lastmile::domain::WorkspaceId::new(GUILD.to_string())).await;
    assert_eq!(conversations.unwrap(), ["Signed"]);
    assert_eq!(f.callbacks(), 0, "no response went over REST");
    t.stop().await;
}

/// `/readyz` says what is not ready: a platform not connected yet, a database that does not answer.
#[tokio::test]
async fn readiness_names_what_is_not_ready() {
    let db = TestDb::sqlite();
    let engine = common::engine(&db.url).await;
    let health = lastmile::chat::ops::Health::new();
    health.expect("discord");
    let ops = lastmile::chat::ops::Ops {
        engine: engine.clone(),
        health: health.clone(),
        metrics: lastmile::chat::ops::recorder(),
        clock: Arc::new(common::now),
    };
    let (addr, _server) = lastmile::chat::ops::spawn("127.0.0.1:0".parse().unwrap(), ops).await.unwrap();
    let get = |path: &str| {
        let url = format!("http://{addr}{path}");
        async move {
            let r = reqwest::get(url).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(get("/healthz").await, (200, "ok\n".into()));
    let (status, body) = get("/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("discord: not connected yet"), "{body}");
    health.connected("discord");
    assert_eq!(get("/readyz").await, (200, "ready\n".into()));
    health.disconnected("discord", "gateway shard 0 is Resuming");
    assert!(get("/readyz").await.1.contains("gateway shard 0 is Resuming"));
    health.connected("discord");
    engine.store().close().await;
    let (status, body) = get("/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("database:"), "{body}");
    // Alive all the same.
    assert_eq!(get("/healthz").await.0, 200);
}

/// Prometheus text as `name{labels}` → value.
fn scrape(text: &str) -> std::collections::BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(k, v)| (k.to_owned(), v.parse::<f64>().unwrap_or(f64::NAN))))
        .collect()
}

/// Waits until the file holds a match of `pattern`; returns its first group.
async fn wait_in_file(path: &std::path::Path, pattern: &str) -> String {
    let re = regex::Regex::new(pattern).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(c) = re.captures(&text) {
            return c[1].to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "no {pattern} in:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `lastmile discord --listen` as an operator runs it: JSON logs, and ops endpoints whose `/metrics` count what
/// the test did (interactions by kind, a refusal, the nudge the scheduler sent, the step latencies).
#[tokio::test]
async fn the_binary_over_http_logs_json_and_its_metrics_count_what_happened() {
    let fake = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("lastmile.db").display());
    // A pilot scoped on 2026-10-01, reviewed by default six weeks later: overdue now, so its owner is nudged.
    let engine = common::engine(&db).await;
    let mut script = Vec::new();
    scoped("Claims triage")(&mut script);
    run_script_at(&engine, BOB, &script.join("\n"), "2026-10-01T10:00:00Z".parse().unwrap()).await;
    engine.store().close().await;
    let log = dir.path().join("stderr.log");
    let mut child = std::process::Command::new(BIN)
        .current_dir(dir.path())
        .args(["discord", "--listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0"])
        .env("DATABASE_URL", &db)
        .env("DISCORD_TOKEN", TOKEN)
        .env("DISCORD_GUILD_ID", GUILD.to_string())
        .env("DISCORD_PUBLIC_KEY", public_key_hex(&signing_key()))
        .env("LASTMILE_DISCORD_API_URL", &fake.base)
        .env("LASTMILE_SCHEDULER_INTERVAL_SECS", "1")
        .env("LASTMILE_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let endpoint = wait_in_file(&log, r"interactions on (http://127\.0\.0\.1:\d+/interactions)").await;
    let ops = wait_in_file(&log, r"ops endpoints on (http://127\.0\.0\.1:\d+)").await;
    fake.use_endpoint(&endpoint, signing_key());
    let get = |path: &str| {
        let url = format!("{ops}{path}");
        async move {
            let r = reqwest::get(url).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(get("/healthz").await.0, 200);
    assert_eq!(get("/readyz").await, (200, "ready\n".into()));
    // The scheduler nudges the owner by direct message, and posts the week's digest in the channel.
    let dave = format!("/channels/{}/messages", DAVE.id + 1);
    let channel = format!("/channels/{CHANNEL}/messages");
    fake.wait_for("the nudge", |calls| calls.iter().find(|c| c.method == "POST" && c.path == dave).cloned()).await;
    fake.wait_for("the digest", |calls| calls.iter().find(|c| c.method == "POST" && c.path == channel).cloned()).await;
    // Two commands, a button that opens a form, and the form with a vague answer.
    fake.interact(fake.slash(BOB, "pilot", "help", &[])).await;
    let (_, q) = fake.interact(fake.slash(ALICE, "pilot", "register", &[("name", "Fraud screening")])).await;
    let (_, modal) = fake.interact(fake.click(ALICE, &q, &q.button("Answer"), false)).await;
    let (_, vague) = fake.interact(fake.submit(ALICE, &modal, "improve efficiency", false)).await;
    assert!(vague.content().contains("is an aim, not a workflow"), "{}", vague.content());
    let (_, text) = get("/metrics").await;
    let m = scrape(&text);
    let at = |k: &str| m.get(k).copied().unwrap_or_else(|| panic!("no {k} in:\n{text}"));
    assert_eq!(at(r#"lastmile_interactions_total{platform="discord",kind="command"}"#), 2.0);
    assert_eq!(at(r#"lastmile_interactions_total{platform="discord",kind="button"}"#), 1.0);
    assert_eq!(at(r#"lastmile_interactions_total{platform="discord",kind="form"}"#), 1.0);
    // The engine ran for the two commands and the form (the button only opened the form).
    assert_eq!(at("lastmile_step_seconds_count"), 3.0);
    let refusals: Vec<(&String, &f64)> = m.iter().filter(|(k, _)| k.starts_with("lastmile_refusals_total")).collect();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert!(refusals[0].0.contains("reason=\"vague_") && *refusals[0].1 == 1.0, "{refusals:?}");
    // Every message the scheduler handed to Discord is counted as sent; nothing is due any more.
    let posted = |path: &str| fake.calls().iter().filter(|c| c.method == "POST" && c.path == path).count() as f64;
    assert_eq!(at(r#"lastmile_scheduled_messages_total{kind="nudge",outcome="sent"}"#), posted(&dave));
    assert_eq!(at(r#"lastmile_scheduled_messages_total{kind="digest",outcome="sent"}"#), posted(&channel));
    assert_eq!(posted(&channel), 1.0);
    assert_eq!(at("lastmile_due_backlog"), 0.0);
    assert_eq!(at("lastmile_oldest_due_seconds"), 0.0);
    assert!(at(r#"lastmile_db_connections{state="open"}"#) >= 1.0);
    assert!(at("lastmile_commit_batch_size_count") >= 1.0);
    let kill = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert_eq!(status.code(), Some(0));
    // Logs: one JSON object a line, with the interaction, the workspace and the pilot; never the token.
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(!stderr.contains(TOKEN), "the token was logged");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let spans = |l: &serde_json::Value| l["spans"].as_array().cloned().unwrap_or_default();
    let handled = lines
        .iter()
        .find(|l| {
            spans(l).iter().any(|s| s["name"] == "interaction" && s["id"].is_string())
                && spans(l).iter().any(|s| s["name"] == "request" && s["pilot"].is_number())
        })
        .unwrap_or_else(|| panic!("no request logged with its interaction and pilot:\n{stderr}"));
    assert!(spans(handled).iter().any(|s| s["workspace"].as_str() == Some(GUILD.to_string().as_str())), "{handled}");
    let nudged = lines
        .iter()
        .find(|l| spans(l).iter().any(|s| s["name"] == "due" && s["pilot"].is_number()))
        .unwrap_or_else(|| panic!("no scheduled message logged with its pilot:\n{stderr}"));
    assert!(nudged["message"].as_str().unwrap().contains("sent"), "{nudged}");
    fake.assert_valid();
}

/// `/pilot register` with its options filled in: only what is missing is asked (the owner picked in the command's
/// user option).
#[tokio::test]
async fn a_registration_with_its_options_filled_asks_only_for_what_is_missing() {
    let t = TestBot::start().await;
    let f = &t.fake;
    let workflow = "Claims intake team (12, Leeds) triages motor claims by hand; the assistant pre-sorts them.";
    let mut slash = f.slash(
        BOB,
        "pilot",
        "register",
        &[
            ("name", "Claims triage"),
            ("workflow", workflow),
            ("owner", ""),
            ("pnl", "Claims handling cost: £4.2m -> £3.6m"),
        ],
    );
    // The owner comes as Discord's user option: its value is the user's id.
    let owner = &mut slash["data"]["options"][0]["options"][2];
    owner["type"] = json!(6);
    owner["value"] = json!(DAVE.id.to_string());
    let (_, first) = f.interact(slash).await;
    assert!(text_of(&first).contains("executive sponsor"), "{}", text_of(&first));
    let (_, date_q) = f.interact(f.pick_user(BOB, &first, &first.component(5), ERIN)).await;
    assert!(text_of(&date_q).contains("first be reviewed"), "{}", text_of(&date_q));
    let pilot = t.engine.store().all_pilots(None).await.unwrap().pop().unwrap();
    assert_eq!(pilot.workflow.as_deref(), Some(workflow));
    assert_eq!(pilot.owner.as_ref().map(|u| u.as_str().to_owned()), Some(DAVE.id.to_string()));
    assert_eq!(pilot.pnl.as_ref().map(|p| p.target), Some(3.6e6));
    t.stop().await;
}
