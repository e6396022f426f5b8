//! The store through the engine, on SQLite and on PostgreSQL: workspaces are sealed from each other, names are
//! unique per workspace ignoring case, every change is audited, and refused answers change nothing.

mod common;

use common::TestDb;
use lastmile::domain::pilot::PilotQuery;
use lastmile::domain::{ChannelId, PilotId, Stage, UserId, WorkspaceId};
use lastmile::engine::{Destination, Engine, Input, Reply, Request};

fn req(ws: &str, user: &str, input: Input) -> Request {
    Request {
        workspace: WorkspaceId::new(ws),
        user: UserId::new(user),
        channel: ChannelId::new("general"),
        now: common::now(),
        input,
        bots: vec![],
        admin: false,
        answers: None,
        platform: None,
    }
}

async fn say(engine: &Engine, ws: &str, user: &str, line: &str) -> Vec<Reply> {
    let input = if line.starts_with('/') { Input::CommandLine(line.into()) } else { Input::Text(line.into()) };
    engine.handle(req(ws, user, input)).await
}

async fn register(engine: &Engine, ws: &str, user: &str, name: &str) {
    for line in [
        &format!("/pilot register {name}") as &str,
        "Claims intake team triages motor claims by hand; the model pre-sorts them.",
        "<@alice>",
        "Claims handling cost: £4.2m -> £3.6m",
        "<@carol>",
        "2027-03-31",
        "Confirm",
    ] {
        let replies = say(engine, ws, user, line).await;
        // The pilots these tests register share a workflow and a P&L line: they are separate pilots.
        if text(&replies).contains("Is it the same pilot?") {
            say(engine, ws, user, "A separate pilot").await;
        }
    }
}

fn text(replies: &[Reply]) -> String {
    replies.iter().map(|r| r.text.as_str()).collect::<Vec<_>>().join("\n")
}

async fn workspaces_are_sealed(url: &str) {
    let engine = common::engine(url).await;
    register(&engine, "acme", "bob", "Claims triage").await;
    let store = engine.store();
    let acme = WorkspaceId::new("acme");
    let other = WorkspaceId::new("globex");
    assert_eq!(store.all_pilots(Some(&acme)).await.unwrap().len(), 1);
    assert!(store.all_pilots(Some(&other)).await.unwrap().is_empty());
    assert!(store.pilot(&other, PilotId(1)).await.unwrap().is_none());

    // Another workspace can neither see nor edit the pilot, by name or by id, and may reuse the name.
    for line in ["/pilot status Claims triage", "/pilot status #1", "/pilot edit #1 owner"] {
        let out = text(&say(&engine, "globex", "bob", line).await);
        assert!(out.contains("No pilot called"), "{line}: {out}");
    }
    assert!(text(&say(&engine, "globex", "bob", "/pilot list").await).contains("No pilots"));
    register(&engine, "globex", "bob", "CLAIMS TRIAGE").await;
    let g = store.all_pilots(Some(&other)).await.unwrap();
    assert_eq!((g.len(), g[0].name.as_str(), g[0].stage), (1, "CLAIMS TRIAGE", Stage::Scoped));
    assert_eq!(store.all_pilots(None).await.unwrap().len(), 2);
    engine.store().close().await;
}

async fn names_are_unique_ignoring_case_and_a_refusal_changes_nothing(url: &str) {
    let engine = common::engine(url).await;
    register(&engine, "acme", "bob", "Claims triage").await;
    let store = engine.store();
    let ws = WorkspaceId::new("acme");
    let before = store.all_pilots(Some(&ws)).await.unwrap();
    let audit_before = store.audit(&ws, None).await.unwrap().len();

    let out = text(&say(&engine, "acme", "carol", "/pilot register  claims TRIAGE ").await);
    assert!(out.contains("already exists"), "{out}");
    // Carol is still asked for a name; nothing else was written.
    let conv = store.conversation(&ws, &UserId::new("carol")).await.unwrap().unwrap();
    assert_eq!(conv.pilot, None);
    assert_eq!(store.all_pilots(Some(&ws)).await.unwrap(), before);
    assert_eq!(store.audit(&ws, None).await.unwrap().len(), audit_before);

    // Renaming into a taken name is refused the same way.
    say(&engine, "acme", "carol", "Fraud scoring").await;
    let out = text(&say(&engine, "acme", "carol", "back").await);
    assert!(out.contains("Fraud scoring"), "{out}");
    let out = text(&say(&engine, "acme", "carol", "CLAIMS triage").await);
    assert!(out.contains("already exists"), "{out}");
    let fraud = store.find_pilot(&ws, &PilotQuery::parse("fraud scoring")).await.unwrap().unwrap();
    assert_eq!(fraud.name, "Fraud scoring");

    // Empty, over-long and control-character answers are refused and change nothing.
    let snapshot =
        (store.all_pilots(Some(&ws)).await.unwrap(), store.conversation(&ws, &UserId::new("carol")).await.unwrap());
    for bad in ["   ", &"x".repeat(1001), "Claims\u{0}intake"] {
        let out = text(&say(&engine, "acme", "carol", bad).await);
        assert!(out.contains("empty") || out.contains("limit is 1000") || out.contains("control characters"), "{out}");
        let now =
            (store.all_pilots(Some(&ws)).await.unwrap(), store.conversation(&ws, &UserId::new("carol")).await.unwrap());
        assert_eq!(now, snapshot);
    }
    engine.store().close().await;
}

async fn every_change_is_audited(url: &str) {
    let engine = common::engine(url).await;
    register(&engine, "acme", "bob", "Claims triage").await;
    say(&engine, "acme", "alice", "/pilot edit Claims triage owner").await;
    say(&engine, "acme", "alice", "<@dave>").await;
    say(&engine, "acme", "bob", "/pilot edit Claims triage review_date").await;
    say(&engine, "acme", "bob", "2027-04-30").await;
    say(&engine, "acme", "bob", "/pilot edit Claims triage pnl").await;
    say(&engine, "acme", "bob", "Claims handling cost: £4.2m -> £3.5m").await;
    let store = engine.store();
    let ws = WorkspaceId::new("acme");
    let audit = store.audit(&ws, Some(PilotId(1))).await.unwrap();
    let lines: Vec<(String, String, Option<String>, Option<String>, Option<String>)> = audit
        .iter()
        .map(|a| (a.actor.clone(), a.action.clone(), a.field.clone(), a.old_value.clone(), a.new_value.clone()))
        .collect();
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(lines[0], ("bob".into(), "created".into(), s("name"), None, s("Claims triage")));
    assert_eq!(
        lines[1],
        (
            "bob".into(),
            "set".into(),
            s("workflow"),
            None,
            s("Claims intake team triages motor claims by hand; the model pre-sorts them.")
        )
    );
    assert_eq!(lines[2], ("bob".into(), "set".into(), s("owner"), None, s("alice")));
    assert_eq!(lines[3].2, s("pnl"));
    assert_eq!(lines[4], ("bob".into(), "set".into(), s("sponsor"), None, s("carol")));
    assert_eq!(lines[5], ("bob".into(), "set".into(), s("review_date"), None, s("2027-03-31")));
    assert_eq!(lines[6], ("bob".into(), "stage".into(), s("stage"), s("draft"), s("scoped")));
    assert_eq!(lines[7], ("alice".into(), "set".into(), s("owner"), s("alice"), s("dave")));
    assert_eq!(lines[8], ("bob".into(), "set".into(), s("review_date"), s("2027-03-31"), s("2027-04-30")));
    assert_eq!((&lines[9].1, &lines[9].2), (&"set".to_owned(), &s("pnl")));
    assert_eq!(lines[9].3, lines[3].4, "the old P&L line is the one registered");
    // The P&L values are JSON; each database writes its numbers its own way (3500000.0 or 3500000).
    let pnl = |v: &Option<String>| serde_json::from_str::<serde_json::Value>(v.as_deref().unwrap_or("null")).unwrap();
    let (old, new) = (pnl(&lines[9].3), pnl(&lines[9].4));
    assert_eq!((old["baseline"].as_f64(), old["target"].as_f64()), (Some(4_200_000.0), Some(3_600_000.0)), "{old}");
    assert_eq!(
        (new["line"].as_str(), new["target"].as_f64()),
        (Some("Claims handling cost"), Some(3_500_000.0)),
        "{new}"
    );
    assert_eq!(lines.len(), 10);
    assert!(audit.iter().all(|a| a.at == common::now()));
    engine.store().close().await;
}

/// A double click (two requests of one user at once) acts once; the second is answered from the new state.
async fn concurrent_requests_of_one_user_act_once(url: &str) {
    let engine = common::engine(url).await;
    let (a, b) = tokio::join!(
        say(&engine, "acme", "bob", "/pilot register Claims triage"),
        say(&engine, "acme", "bob", "/pilot register Fraud scoring")
    );
    let both = format!("{}\n{}", text(&a), text(&b));
    assert!(both.contains("You are already registering"), "{both}");
    let ws = WorkspaceId::new("acme");
    assert_eq!(engine.store().all_pilots(Some(&ws)).await.unwrap().len(), 1);

    for line in [
        "Claims intake team triages motor claims by hand; the model pre-sorts them.",
        "<@alice>",
        "Claims handling cost: £4.2m -> £3.6m",
        "<@carol>",
        "2027-03-31",
    ] {
        say(&engine, "acme", "bob", line).await;
    }
    let (a, b) = tokio::join!(say(&engine, "acme", "bob", "Confirm"), say(&engine, "acme", "bob", "Confirm"));
    let announcements =
        a.iter().chain(&b).filter(|r| matches!(r.to, lastmile::engine::Destination::Channel(_))).count();
    assert_eq!(announcements, 1, "{}\n{}", text(&a), text(&b));
    assert!(format!("{}{}", text(&a), text(&b)).contains("Nothing is waiting for an answer from you"));
    let stages = engine.store().audit(&ws, None).await.unwrap().into_iter().filter(|e| e.action == "stage").count();
    assert_eq!(stages, 1);
    engine.store().close().await;
}

/// Whether a registration was refused its name: held by a rival's registration under way (or, had the rival
/// already finished, by their pilot).
fn name_refused(reply: &str) -> bool {
    reply.contains("has not finished") || reply.contains("already exists")
}

/// Many users answering at once share commits; a turn that fails in a shared commit (here, names taken by a
/// rival in the same moment) costs the others nothing: every answer of every user is saved, once.
async fn many_users_at_once_share_commits_and_lose_nothing(url: &str) {
    let engine = common::engine(url).await;
    let users = 40;
    let tasks: Vec<_> = (0..users)
        .map(|u| {
            let engine = engine.clone();
            tokio::spawn(async move {
                // Users 0-4 all want the same name; the others each their own.
                let name = if u < 5 { "Shared claims triage".to_owned() } else { format!("Claims triage {u}") };
                let user = format!("user{u}");
                let first = text(&say(&engine, "acme", &user, &format!("/pilot register {name}")).await);
                if name_refused(&first) {
                    // Refused: the registration still waits for a name.
                    say(&engine, "acme", &user, &format!("Claims triage {u}")).await;
                }
                register_rest(&engine, &user, u).await;
                first
            })
        })
        .collect();
    let mut refused = 0;
    for t in tasks {
        if name_refused(&t.await.unwrap()) {
            refused += 1;
        }
    }
    assert_eq!(refused, 4, "one of the five rivals gets the name");
    let ws = WorkspaceId::new("acme");
    let pilots = engine.store().all_pilots(Some(&ws)).await.unwrap();
    assert_eq!(pilots.len(), users);
    assert_eq!(pilots.iter().filter(|p| p.name == "Shared claims triage").count(), 1);
    for p in &pilots {
        let u: usize = p.registered_by.as_str().trim_start_matches("user").parse().unwrap();
        assert_eq!(p.stage, Stage::Scoped, "{}", p.name);
        assert_eq!(
            p.workflow.as_deref(),
            Some(format!("Claims intake team {u} triages motor claims by hand; the model pre-sorts them.").as_str())
        );
        assert_eq!(p.owner, Some(UserId::new("alice")));
        assert_eq!(p.review_date.map(|d| d.to_string()).as_deref(), Some("2027-03-31"));
    }
    // Each saved change is audited once: for every pilot its name, five answers and the stage.
    let audit = engine.store().audit(&ws, None).await.unwrap();
    assert_eq!(audit.len(), pilots.len() * 7, "{audit:#?}");
    // Answers that shared a commit are audited as answers written alone are: by their user, with the value.
    for p in &pilots {
        let trail: Vec<_> = audit.iter().filter(|a| a.pilot_id == Some(p.id.0)).collect();
        let fields: Vec<_> = trail.iter().map(|a| a.field.as_deref().unwrap_or("")).collect();
        assert_eq!(fields, ["name", "workflow", "owner", "pnl", "sponsor", "review_date", "stage"], "{}", p.name);
        assert!(trail.iter().all(|a| a.actor == p.registered_by.as_str()), "{trail:#?}");
        let set = |field: &str| trail.iter().find(|a| a.field.as_deref() == Some(field)).unwrap();
        assert_eq!(
            (set("workflow").old_value.as_deref(), set("workflow").new_value.as_deref()),
            (None, p.workflow.as_deref())
        );
        assert_eq!((set("owner").old_value.as_deref(), set("owner").new_value.as_deref()), (None, Some("alice")));
        assert_eq!(set("review_date").new_value.as_deref(), Some("2027-03-31"));
    }
    let (turns, commits) = engine.store().commit_stats();
    assert!(commits < turns, "{turns} turns in {commits} commits: none shared");
    engine.store().close().await;
}

async fn register_rest(engine: &Engine, user: &str, u: usize) {
    for line in [
        &format!("Claims intake team {u} triages motor claims by hand; the model pre-sorts them.") as &str,
        "<@alice>",
        "Claims handling cost: £4.2m -> £3.6m",
        "<@carol>",
        "2027-03-31",
        "Confirm",
    ] {
        let replies = say(engine, "acme", user, line).await;
        if text(&replies).contains("Is it the same pilot?") {
            say(engine, "acme", user, "A separate pilot").await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_users_at_once_share_commits_and_lose_nothing_sqlite() {
    many_users_at_once_share_commits_and_lose_nothing(&TestDb::sqlite().url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_users_at_once_share_commits_and_lose_nothing_postgres() {
    let Some(db) = TestDb::postgres("many_users_at_once_share_commits_and_lose_nothing_postgres").await else {
        return;
    };
    many_users_at_once_share_commits_and_lose_nothing(&db.url).await;
    db.cleanup().await;
}

#[tokio::test]
async fn a_name_with_everyone_and_a_role_is_kept_and_pings_only_the_owner() {
    let db = TestDb::sqlite();
    let engine = common::engine(&db.url).await;
    let mut last = Vec::new();
    for line in [
        "/pilot register @everyone <@&42> launch @here",
        "Claims intake team triages motor claims by hand; the model pre-sorts them.",
        "<@alice>",
        "Claims handling cost: £4.2m -> £3.6m",
        "<@carol>",
        "2027-03-31",
        "Confirm",
    ] {
        last = say(&engine, "acme", "bob", line).await;
    }
    let announcement = last.iter().find(|r| matches!(r.to, lastmile::engine::Destination::Channel(_))).unwrap();
    assert!(announcement.text.contains("**@everyone <@&42> launch @here**"), "{}", announcement.text);
    assert_eq!(announcement.ping, vec![UserId::new("alice")]);
    assert!(last.iter().all(|r| r.ping.iter().all(|p| p.as_str() == "alice")));
    engine.store().close().await;
}

/// The write of one answer, as the engine works it out: the workflow set on the pilot as read, the conversation
/// moved on from where it was.
fn workflow_answer(
    ws: &WorkspaceId,
    user: &UserId,
    pilot: &lastmile::domain::Pilot,
    conv: &lastmile::dialogue::Conversation,
    workflow: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> lastmile::store::TurnWrite {
    use lastmile::dialogue::At;
    use lastmile::domain::{Change, Command, Step};
    use lastmile::store::{ConversationGuard, ConversationWrite, PilotRef, PilotUpdate, TurnWrite};
    let actor = lastmile::domain::rules::Actor { user, platform_admin: false };
    let settings = lastmile::domain::WorkspaceSettings::default();
    let cmd = Command::Set(Change::Workflow(workflow.to_owned()));
    let changes = lastmile::domain::rules::apply(pilot, &cmd, &actor, &settings, now).unwrap();
    let mut write = TurnWrite::new(ws.clone(), user.clone(), now, ConversationGuard::At(conv.clone()));
    let next = lastmile::dialogue::Conversation { at: At::Ask(Step::Owner), ..conv.clone() };
    write.conversation = ConversationWrite::Save { conversation: Box::new(next), created: false };
    write.audit = changes.audit.into_iter().map(|a| (PilotRef::Id(pilot.id), a)).collect();
    write.update = Some(PilotUpdate { before: pilot.clone(), after: changes.pilot });
    write
}

/// The same answer sent ten times at once (a user clicking again and again): the turns share the writers' batches,
/// exactly one is written, and every other one is told that the conversation moved, so that it is decided again.
async fn one_answer_sent_ten_times_is_written_once(url: &str) {
    use lastmile::dialogue::At;
    use lastmile::domain::Step;
    let engine = common::engine(url).await;
    say(&engine, "acme", "bob", "/pilot register Claims triage").await;
    let ws = WorkspaceId::new("acme");
    let bob = UserId::new("bob");
    let conv = engine.store().conversation(&ws, &bob).await.unwrap().expect("a registration waits for its workflow");
    assert_eq!(conv.at, At::Ask(Step::Workflow));
    let pilot = engine.store().pilot(&ws, conv.pilot.unwrap()).await.unwrap().unwrap();
    let now = chrono::Utc::now();
    let workflow = "Claims intake team triages motor claims by hand; the model pre-sorts them.";
    let tries: Vec<_> = (0..10)
        .map(|_| {
            let engine = engine.clone();
            let write = workflow_answer(&ws, &bob, &pilot, &conv, workflow, now);
            tokio::spawn(async move { engine.store().write(write).await })
        })
        .collect();
    let mut written = 0;
    for t in tries {
        match t.await.unwrap() {
            Ok(_) => written += 1,
            Err(lastmile::store::StoreError::Conflict) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(written, 1, "exactly one of the ten is written");
    let after = engine.store().pilot(&ws, pilot.id).await.unwrap().unwrap();
    assert_eq!((after.workflow.as_deref(), after.version), (Some(workflow), pilot.version + 1));
    let audit = engine.store().audit(&ws, None).await.unwrap();
    assert_eq!(audit.iter().filter(|a| a.field.as_deref() == Some("workflow")).count(), 1, "{audit:#?}");
    let moved = engine.store().conversation(&ws, &bob).await.unwrap().unwrap();
    assert_eq!(moved.at, At::Ask(Step::Owner));
    engine.store().close().await;
}

/// Turns written together in one batch: one computed from a pilot that has changed since is refused and leaves
/// nothing behind; one the database itself refuses (a name another pilot took, past the engine's check) leaves
/// nothing either; the turns around them are written all the same.
async fn a_refused_turn_in_a_batch_leaves_nothing_and_spares_the_others(url: &str) {
    use lastmile::domain::{Change, Command, PilotName};
    use lastmile::store::{ConversationGuard, PilotRef, PilotUpdate, StoreError, TurnWrite};
    let engine = common::engine(url).await;
    let ws = WorkspaceId::new("acme");
    for (user, name) in [("bob", "Claims triage"), ("carol", "Fraud scoring"), ("dave", "Invoice matcher")] {
        register(&engine, "acme", user, name).await;
    }
    let store = engine.store();
    let pilots = store.all_pilots(Some(&ws)).await.unwrap();
    let audit_before = store.audit(&ws, None).await.unwrap().len();
    let now = common::now();
    let set = |user: &str, pilot: &lastmile::domain::Pilot, change: Change| {
        let (user, settings) = (UserId::new(user), lastmile::domain::WorkspaceSettings::default());
        let actor = lastmile::domain::rules::Actor { user: &user, platform_admin: true };
        let changes = lastmile::domain::rules::apply(pilot, &Command::Set(change), &actor, &settings, now).unwrap();
        let mut write = TurnWrite::new(ws.clone(), user.clone(), now, ConversationGuard::Any);
        write.audit = changes.audit.into_iter().map(|a| (PilotRef::Id(pilot.id), a)).collect();
        write.update = Some(PilotUpdate { before: pilot.clone(), after: changes.pilot });
        write
    };
    let stale = lastmile::domain::Pilot { version: pilots[1].version - 1, ..pilots[1].clone() };
    let writes = vec![
        set("bob", &pilots[0], Change::Workflow("first turn".into())),
        set("carol", &stale, Change::Workflow("computed from an old version".into())),
        set("dave", &pilots[2], Change::Name(PilotName::parse("claims TRIAGE").unwrap())),
        set("erin", &pilots[1], Change::Sponsor(Some(UserId::new("erin")))),
    ];
    let outcomes = futures_join(writes.into_iter().map(|w| {
        let engine = engine.clone();
        async move { engine.store().write(w).await }
    }))
    .await;
    assert!(outcomes[0].is_ok(), "{:?}", outcomes[0]);
    assert!(matches!(outcomes[1], Err(StoreError::Conflict)), "{:?}", outcomes[1]);
    assert!(matches!(outcomes[2], Err(StoreError::NameTaken)), "{:?}", outcomes[2]);
    assert!(outcomes[3].is_ok(), "{:?}", outcomes[3]);
    let after = store.all_pilots(Some(&ws)).await.unwrap();
    assert_eq!(after[0].workflow.as_deref(), Some("first turn"));
    assert_eq!(
        (after[1].workflow.clone(), after[1].sponsor.clone()),
        (pilots[1].workflow.clone(), Some(UserId::new("erin")))
    );
    assert_eq!(after[2], pilots[2], "the refused rename changed nothing");
    let audit = store.audit(&ws, None).await.unwrap();
    let new: Vec<_> =
        audit[audit_before..].iter().map(|a| (a.actor.clone(), a.field.clone().unwrap_or_default())).collect();
    assert_eq!(
        new,
        [("bob".into(), "workflow".into()), ("erin".into(), "sponsor".into())],
        "only written turns are audited"
    );
    store.close().await;
}

/// Permissions are checked against the settings in force when a change is committed: a decision worked out on
/// settings that an admin saved again before it was written is not written, and decided again it is refused.
async fn a_turn_decided_on_settings_saved_since_is_not_written(url: &str) {
    use lastmile::domain::rules::{self, Actor, Refusal};
    use lastmile::domain::{Command, Decision, DecisionKind, KillCategory};
    use lastmile::store::{ConversationGuard, PilotRef, PilotUpdate, StoreError, TurnWrite};
    let engine = common::engine(url).await;
    register(&engine, "acme", "bob", "Claims triage").await;
    let (store, ws, bob, now) = (engine.store(), WorkspaceId::new("acme"), UserId::new("bob"), common::now());
    let pilot = store.all_pilots(Some(&ws)).await.unwrap().remove(0);
    let settings = store.settings(&ws).await.unwrap();
    let kill = Command::Decide(Decision {
        kind: DecisionKind::Kill,
        reason: "Not worth it.".into(),
        category: Some(KillCategory::NotWorthScaling),
        new_date: None,
        override_evidence: false,
    });
    let actor = Actor { user: &bob, platform_admin: false };
    let changes = rules::apply(&pilot, &kill, &actor, &settings, now).expect("the registrant decides by default");
    let mut write = TurnWrite::new(ws.clone(), bob.clone(), now, ConversationGuard::Any);
    write.settings_revision = Some(settings.revision);
    write.audit = changes.audit.into_iter().map(|a| (PilotRef::Id(pilot.id), a)).collect();
    write.update = Some(PilotUpdate { before: pilot.clone(), after: changes.pilot });
    // Meanwhile an admin narrows who decides.
    let mut narrowed = settings.clone();
    narrowed.set("deciders", "sponsor").unwrap();
    store.save_settings(&ws, &narrowed, now).await.unwrap();
    assert!(matches!(store.write(write).await, Err(StoreError::Conflict)));
    assert_eq!(store.pilot(&ws, pilot.id).await.unwrap().unwrap(), pilot, "nothing was written");
    let in_force = store.settings(&ws).await.unwrap();
    assert_eq!(in_force.revision, settings.revision + 1);
    assert!(matches!(rules::apply(&pilot, &kill, &actor, &in_force, now), Err(Refusal::NotDecider { .. })));
    store.close().await;
}

#[tokio::test]
async fn a_turn_decided_on_settings_saved_since_is_not_written_sqlite() {
    a_turn_decided_on_settings_saved_since_is_not_written(&TestDb::sqlite().url).await;
}

#[tokio::test]
async fn a_turn_decided_on_settings_saved_since_is_not_written_postgres() {
    if let Some(db) = TestDb::postgres("a_turn_decided_on_settings_saved_since_postgres").await {
        a_turn_decided_on_settings_saved_since_is_not_written(&db.url).await;
        db.cleanup().await;
    }
}

/// Runs the futures at once (so that the store's writers take them in one batch) and returns their outputs in order.
async fn futures_join<F: std::future::Future + Send + 'static>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_refused_turn_in_a_batch_leaves_nothing_and_spares_the_others_sqlite() {
    a_refused_turn_in_a_batch_leaves_nothing_and_spares_the_others(&TestDb::sqlite().url).await;
}

#[tokio::test]
async fn a_refused_turn_in_a_batch_leaves_nothing_and_spares_the_others_postgres() {
    if let Some(db) = TestDb::postgres("a_refused_turn_in_a_batch_postgres").await {
        a_refused_turn_in_a_batch_leaves_nothing_and_spares_the_others(&db.url).await;
        db.cleanup().await;
    }
}

#[tokio::test]
async fn one_answer_sent_ten_times_is_written_once_sqlite() {
    one_answer_sent_ten_times_is_written_once(&TestDb::sqlite().url).await;
}

#[tokio::test]
async fn one_answer_sent_ten_times_is_written_once_postgres() {
    let Some(db) = TestDb::postgres("one_answer_sent_ten_times_is_written_once_postgres").await else {
        return;
    };
    one_answer_sent_ten_times_is_written_once(&db.url).await;
    db.cleanup().await;
}

#[tokio::test]
async fn concurrent_requests_of_one_user_act_once_sqlite() {
    concurrent_requests_of_one_user_act_once(&TestDb::sqlite().url).await;
}

#[tokio::test]
async fn concurrent_requests_of_one_user_act_once_postgres() {
    let Some(db) = TestDb::postgres("concurrent_requests_of_one_user_act_once_postgres").await else {
        return;
    };
    concurrent_requests_of_one_user_act_once(&db.url).await;
    db.cleanup().await;
}

#[tokio::test]
async fn workspaces_are_sealed_sqlite() {
    workspaces_are_sealed(&TestDb::sqlite().url).await;
}

#[tokio::test]
async fn names_unique_and_refusals_change_nothing_sqlite() {
    names_are_unique_ignoring_case_and_a_refusal_changes_nothing(&TestDb::sqlite().url).await;
}

/// A registration left untouched holds its name for a week after its last answer, then gives it back: renaming
/// a pilot to it (as registering it, in 13_abandoned_draft.txt) removes the abandoned draft and the conversation
/// that was registering it, and the audit says who released it.
async fn an_abandoned_draft_gives_its_name_back(url: &str) {
    let engine = common::engine(url).await;
    let store = engine.store();
    let ws = WorkspaceId::new("acme");
    let at = |days: i64| common::now() + chrono::Duration::days(days);
    let say_at = |user: &'static str, line: &'static str, days: i64| {
        let input = if line.starts_with('/') { Input::CommandLine(line.into()) } else { Input::Text(line.into()) };
        engine.handle(Request { now: at(days), ..req("acme", user, input) })
    };
    say_at("alice", "/pilot register Fraud scoring", 0).await;
    say_at("alice", "Card payments team (8, Cardiff) reviews flagged transactions by hand; the model ranks them.", 1)
        .await;
    let abandoned = store.find_pilot(&ws, &PilotQuery::parse("Fraud scoring")).await.unwrap().unwrap();

    // Carol's registration is renamed to the held name a day too early: refused, and nothing changes.
    say_at("carol", "/pilot register Fraud model", 7).await;
    say_at("carol", "back", 7).await;
    let audit_before = store.audit(&ws, None).await.unwrap().len();
    let out = text(&say_at("carol", "FRAUD scoring", 7).await);
    assert!(out.contains("<@alice> started registering **FRAUD scoring** and has not finished"), "{out}");
    assert!(out.contains("from 2026-12-03 10:00 UTC"), "{out}");
    assert_eq!(store.find_pilot(&ws, &PilotQuery::parse("Fraud scoring")).await.unwrap().unwrap(), abandoned);
    assert_eq!(store.audit(&ws, None).await.unwrap().len(), audit_before);

    // A week after Alice's last answer, the same answer takes the name over, and Alice is told.
    let replies = say_at("carol", "FRAUD scoring", 8).await;
    assert!(text(&replies).contains("question 1 of 5"), "{}", text(&replies));
    let told: Vec<&str> =
        replies.iter().filter(|r| r.to == Destination::Dm(UserId::new("alice"))).map(|r| r.text.as_str()).collect();
    assert_eq!(told.len(), 1, "{}", text(&replies));
    assert!(told[0].starts_with("Your registration of **Fraud scoring** had no answer for a week"), "{}", told[0]);
    let taken = store.find_pilot(&ws, &PilotQuery::parse("fraud scoring")).await.unwrap().unwrap();
    assert_eq!((taken.name.as_str(), taken.registered_by.as_str()), ("FRAUD scoring", "carol"));
    assert_eq!(store.pilot(&ws, abandoned.id).await.unwrap(), None);
    assert_eq!(store.conversation(&ws, &UserId::new("alice")).await.unwrap(), None);
    let audit = store.audit(&ws, Some(abandoned.id)).await.unwrap();
    let last = audit.last().unwrap();
    assert_eq!(
        (last.actor.as_str(), last.action.as_str(), last.field.as_deref(), last.old_value.as_deref(), last.at),
        ("carol", "abandoned", Some("name"), Some("Fraud scoring"), at(8))
    );
    let out = text(&say_at("alice", "<@frank>", 9).await);
    assert!(out.contains("Nothing is waiting for an answer from you"), "{out}");
    engine.store().close().await;
}

#[tokio::test]
async fn an_abandoned_draft_gives_its_name_back_sqlite() {
    an_abandoned_draft_gives_its_name_back(&TestDb::sqlite().url).await;
}

#[tokio::test]
async fn an_abandoned_draft_gives_its_name_back_postgres() {
    let Some(db) = TestDb::postgres("an_abandoned_draft_gives_its_name_back_postgres").await else {
        return;
    };
    an_abandoned_draft_gives_its_name_back(&db.url).await;
    db.cleanup().await;
}

#[tokio::test]
async fn every_change_is_audited_sqlite() {
    every_change_is_audited(&TestDb::sqlite().url).await;
}

#[tokio::test]
async fn workspaces_are_sealed_postgres() {
    let Some(db) = TestDb::postgres("workspaces_are_sealed_postgres").await else {
        return;
    };
    workspaces_are_sealed(&db.url).await;
    db.cleanup().await;
}

#[tokio::test]
async fn names_unique_and_refusals_change_nothing_postgres() {
    let Some(db) = TestDb::postgres("names_unique_and_refusals_change_nothing_postgres").await else {
        return;
    };
    names_are_unique_ignoring_case_and_a_refusal_changes_nothing(&db.url).await;
    db.cleanup().await;
}

#[tokio::test]
async fn every_change_is_audited_postgres() {
    let Some(db) = TestDb::postgres("every_change_is_audited_postgres").await else {
        return;
    };
    every_change_is_audited(&db.url).await;
    db.cleanup().await;
}

#[tokio::test]
async fn a_bad_database_url_is_a_clear_error_without_the_password() {
    let err = lastmile::open_store("mysql://root:hunter2@localhost/x").await.unwrap_err();
    let shown = format!("{err:#}");
    assert!(shown.contains("unsupported database URL"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
    let err = lastmile::open_store("postgres://u:hunter2@127.0.0.1:1/x").await.unwrap_err();
    assert!(!format!("{err:#}").contains("hunter2"));
}

/// One pilot is found through an index on both its workspace and its id, even in a new database whose tables
/// PostgreSQL has no statistics of yet: before, the planner could read every pilot of the workspace through an
/// index on the workspace alone (hundreds of buffers a lookup in the benchmark).
#[tokio::test]
async fn a_pilot_is_looked_up_by_workspace_and_id_in_a_new_postgres_database() {
    use sqlx::Connection;
    let Some(db) = TestDb::postgres("a_pilot_is_looked_up_by_workspace_and_id").await else {
        return;
    };
    let engine = common::engine(&db.url).await;
    // A workspace's first few hundred pilots, written faster than autovacuum analyses the table.
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query(
        "INSERT INTO pilots (workspace, name, name_key, stage, registered_by, registered_at, home_channel, updated_at) \
         SELECT 'acme', 'Pilot ' || i, 'pilot ' || i, 'draft', 'bob', now(), 'general', now() FROM generate_series(1, 500) i",
    )
    .execute(&mut c)
    .await
    .unwrap();
    let analysed: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'pilots'")
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert_eq!(analysed, None, "the table must have no statistics for this test to mean anything");
    sqlx::query(
        "PREPARE one(TEXT, BIGINT) AS UPDATE pilots SET next_action_at = NULL WHERE workspace = $1 AND id = $2",
    )
    .execute(&mut c)
    .await
    .unwrap();
    for mode in ["force_custom_plan", "force_generic_plan"] {
        sqlx::query(&format!("SET plan_cache_mode = {mode}")).execute(&mut c).await.unwrap();
        let plan: Vec<String> = sqlx::query_scalar("EXPLAIN EXECUTE one('acme', 5)").fetch_all(&mut c).await.unwrap();
        let plan = plan.join("\n");
        assert!(plan.contains("Index Cond: ((workspace = ") && plan.contains("(id = "), "{mode}:\n{plan}");
        assert!(!plan.contains("Filter"), "{mode}: a lookup that filters rows it read:\n{plan}");
    }
    c.close().await.ok();
    engine.store().close().await;
    db.cleanup().await;
}
