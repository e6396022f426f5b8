//! Property tests: nothing a user types can panic the bot, ping a group, or change a pilot without the
//! conversation moving on. Arbitrary text goes to every parser and to every question of the dialogue.

mod common;

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering};

use chrono::NaiveDate;
use lastmile::chat::console::{mentions_in, mentions_out};
use lastmile::domain::{Answer, PersonRef, PilotName, PnlTarget, Quantity, ReviewWindow, UserId, WorkspaceId};
use lastmile::domain::{ChannelId, Pilot};
use lastmile::engine::{Engine, Input, Request};
use proptest::prelude::*;

/// Arbitrary text, plus the words and shapes the dialogue treats specially.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "\\PC{0,60}",
        2 => any::<String>(),
        1 => "[ -~]{0,1200}",
        1 => prop::sample::select(vec![
            "back", "cancel", "keep", "skip", "default", "1", "2", "3", "7", "0", "-1", "Confirm", "Edit a step",
            "<@x>", "<@&r>", "@everyone", "@here", "<@a> <@b>", "£4m -> £3m", "x: 1 -> 1", "x: 1e308m -> 2",
            "x: 99999999999999999999999999999999999999m -> 1m", "in 9999 years", "next someday", "2027-02-29",
            "\u{202e}evil", "'; DROP TABLE pilots; --", "\u{0}", "\t\n",
        ]).prop_map(str::to_owned),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn parsers_never_panic_and_keep_their_promises(text in any_text()) {
        let _ = lastmile::commands::parse(&text);
        let _ = lastmile::commands::parse(&format!("/pilot {text}"));
        let _ = Quantity::parse(&text);
        let _ = mentions_out(&mentions_in(&text));
        if let Ok(t) = PnlTarget::parse(&text) {
            prop_assert!(t.baseline != t.target && t.baseline.is_finite() && t.target.is_finite());
            prop_assert!(t.line.chars().any(char::is_alphabetic) && !t.unit.is_empty());
        }
        let today = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
        let window = ReviewWindow::new(today, 365);
        if let Ok(d) = window.parse(&text) {
            prop_assert!(d > window.today && d <= window.latest);
        }
        if let Ok(p) = PersonRef::parse(&text, |_| false) {
            prop_assert!(!p.0.as_str().is_empty());
        }
        if let Ok(n) = PilotName::parse(&text) {
            let len = n.as_str().chars().count();
            prop_assert!((3..=80).contains(&len));
        }
        if let Ok(a) = Answer::parse(&text) {
            prop_assert!(!a.as_str().is_empty() && a.as_str().chars().count() <= 1000);
        }
    }
}

static RT: LazyLock<tokio::runtime::Runtime> =
    LazyLock::new(|| tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap());
static DB: LazyLock<common::TestDb> = LazyLock::new(common::TestDb::sqlite);
static ENGINE: LazyLock<Engine> = LazyLock::new(|| RT.block_on(common::engine(&DB.url)));
static USERS: AtomicU32 = AtomicU32::new(0);

/// The valid answers that bring a registration to each position, in order.
const SCRIPT: &[&str] = &[
    "Workflow redesign of claims intake: the intake team triages by hand; the model pre-sorts.",
    "<@alice>",
    "Claims handling cost: £4.2m -> £3.6m",
    "<@carol>",
    "2027-03-31",
    "2",
];

fn workspace_of(user: &UserId) -> WorkspaceId {
    WorkspaceId::new(format!("prop-{}", user.as_str().trim_start_matches('u')))
}

async fn send(user: &UserId, input: Input) -> Vec<lastmile::engine::Reply> {
    send_in(&workspace_of(user), user, input).await
}

async fn send_in(ws: &WorkspaceId, user: &UserId, input: Input) -> Vec<lastmile::engine::Reply> {
    ENGINE
        .handle(Request {
            // A workspace each: the scripted pilots share a workflow and a P&L line, and are not duplicates.
            workspace: ws.clone(),
            user: user.clone(),
            channel: ChannelId::new("general"),
            now: common::now(),
            input,
            bots: vec![UserId::new("x")],
            admin: false,
            answers: None,
            platform: None,
        })
        .await
}

async fn snapshot(user: &UserId) -> (Option<String>, Option<Pilot>) {
    snapshot_in(&workspace_of(user), user).await
}

async fn snapshot_in(ws: &WorkspaceId, user: &UserId) -> (Option<String>, Option<Pilot>) {
    let ws = ws.clone();
    let store = ENGINE.store();
    let conv = store.conversation(&ws, user).await.unwrap();
    let pilot = match conv.as_ref().and_then(|c| c.pilot) {
        Some(id) => store.pilot(&ws, id).await.unwrap(),
        None => None,
    };
    (conv.map(|c| format!("{:?}/{}", c.at, c.return_to_confirm)), pilot)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn any_answer_at_any_question_is_handled_safely(text in any_text(), position in 0usize..=SCRIPT.len() + 1) {
        LazyLock::force(&ENGINE);
        RT.block_on(async {
            let n = USERS.fetch_add(1, Ordering::SeqCst);
            let user = UserId::new(format!("u{n}"));
            // Position 0 waits for a name; 1 is the workflow ... 6 the confirmation; 7 picks a step to edit.
            send(&user, Input::CommandLine("/pilot register".into())).await;
            if position > 0 {
                send(&user, Input::Text(format!("Pilot number {n}"))).await;
            }
            for answer in SCRIPT.iter().take(position.saturating_sub(1)) {
                send(&user, Input::Text((*answer).into())).await;
            }
            let before = snapshot(&user).await;
            let replies = send(&user, Input::Text(text.clone())).await;
            let after = snapshot(&user).await;

            assert!(!replies.is_empty(), "no reply to {text:?}");
            for r in &replies {
                assert!(!r.text.contains("something went wrong"), "internal error on {text:?} at {position}");
                for p in &r.ping {
                    assert!(after.1.as_ref().and_then(|p| p.owner.as_ref()) == Some(p) || before.1.as_ref().and_then(|p| p.owner.as_ref()) == Some(p),
                        "reply pings {p} who is not the owner");
                }
            }
            if after.0 == before.0 && after.0.is_some() {
                assert_eq!(after.1, before.1, "{text:?} at {position} changed the pilot without moving on");
            }
        });
    }
}

/// The positions of the evidence and review conversations, and the owner's answer to a direct message.
const LIFECYCLE_POSITIONS: &[&[&str]] = &[
    &["/pilot evidence {p}"],
    &["/pilot evidence {p}", "1"],
    &["/pilot evidence {p}", "3"],
    &["/pilot review {p} kill"],
    &["/pilot review {p} kill", "2"],
    &["/pilot review {p} extend"],
    &["/pilot review {p} extend", "2027-03-31"],
    &["/pilot review {p} scale"],
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_answer_in_the_lifecycle_is_handled_safely(
        text in any_text(),
        position in 0usize..=LIFECYCLE_POSITIONS.len(),
    ) {
        LazyLock::force(&ENGINE);
        RT.block_on(async {
            let n = USERS.fetch_add(1, Ordering::SeqCst);
            let user = UserId::new(format!("u{n}"));
            let name = format!("Lifecycle pilot {n}");
            send(&user, Input::CommandLine(format!("/pilot register {name}"))).await;
            for answer in SCRIPT.iter().take(SCRIPT.len() - 1) {
                send(&user, Input::Text((*answer).into())).await;
            }
            send(&user, Input::Text("1".into())).await; // confirm: scoped; @alice is asked to accept
            // The last position is @alice's answer to her direct message; the others are the registrant's.
            let speaker = if position == LIFECYCLE_POSITIONS.len() { UserId::new("alice") } else { user.clone() };
            if let Some(steps) = LIFECYCLE_POSITIONS.get(position) {
                for step in *steps {
                    let line = step.replace("{p}", &name);
                    let input = if line.starts_with('/') { Input::CommandLine(line) } else { Input::Text(line) };
                    send(&user, input).await;
                }
            }
            let ws = workspace_of(&user);
            let pilot_before = ENGINE.store().find_pilot(&ws, &lastmile::domain::pilot::PilotQuery::parse(&name)).await.unwrap().unwrap();
            let conv_before = snapshot_in(&ws, &speaker).await.0;
            let replies = send_in(&ws, &speaker, Input::Text(text.clone())).await;
            let pilot_after = ENGINE.store().find_pilot(&ws, &lastmile::domain::pilot::PilotQuery::parse(&name)).await.unwrap().unwrap();
            let conv_after = snapshot_in(&ws, &speaker).await.0;
            assert!(!replies.is_empty(), "no reply to {text:?}");
            for r in &replies {
                assert!(!r.text.contains("something went wrong"), "internal error on {text:?} at {position}");
                assert!(r.ping.iter().all(|p| ["alice", "carol", user.as_str()].contains(&p.as_str())), "{:?}", r.ping);
            }
            if conv_after == conv_before && conv_after.is_some() {
                assert_eq!(pilot_after, pilot_before, "{text:?} at {position} changed the pilot without moving on");
            }
        });
    }
}

/// A figure as people write it: with k or m, thousands separators, or plain.
fn written(value: u32, style: u8) -> (String, f64) {
    let v = f64::from(value);
    match style % 3 {
        0 => (format!("{}", value), v),
        1 => (format!("{}k", value), v * 1e3),
        _ => (format!("{}.{}m", value / 10, value % 10), f64::from(value / 10) * 1e6 + f64::from(value % 10) * 1e5),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Any well-formed P&L line built from the grammar of lines, units, figures and connectors reads as the same
    /// line, unit and figures.
    #[test]
    fn a_well_formed_pnl_line_parses_to_its_figures(
        line in prop::sample::select(vec!["Claims handling cost", "Upsell revenue", "Cost per claim", "Fraud losses",
            "Average handling time", "Churn rate", "Contact centre spend"]),
        unit in prop::sample::select(vec![("£", "GBP", true), ("$", "USD", true), ("€", "EUR", true),
            ("GBP", "GBP", false), ("USD", "USD", false), ("EUR", "EUR", false), ("euros", "EUR", false),
            ("pounds", "GBP", false), ("%", "%", false), ("days", "days", false)]),
        base in 1u32..5000, target in 1u32..5000, bstyle in 0u8..3, tstyle in 0u8..3,
        form in 0u8..7,
        connector in prop::sample::select(vec![" -> ", " → ", " to ", " – ", " — ", "->"]),
    ) {
        let (b, bv) = written(base, bstyle);
        let (t, tv) = written(target, tstyle);
        prop_assume!(bv != tv);
        let (symbol, code, prefix) = unit;
        // The figure with its unit attached, as a symbol before or a word after.
        let with = |n: &str| if prefix { format!("{symbol}{n}") } else if symbol == "%" { format!("{n}%") } else { format!("{n} {symbol}") };
        let lower = line.to_lowercase();
        let text = match form {
            0 => format!("{line}: {}{connector}{}", with(&b), with(&t)),
            1 => format!("{line} from {} to {}", with(&b), with(&t)),
            2 => format!("{line} ({symbol}): {b}{connector}{t}"),
            3 => format!("{line}, {symbol}, baseline {b}, target {t}"),
            4 => format!("{} {lower} from {} to {}", if tv < bv { "reduce" } else { "increase" }, with(&b), with(&t)),
            5 => format!("{line}: baseline {}, target {}", with(&b), with(&t)),
            _ => format!("{line} in {symbol}: {b}{connector}{t}"),
        };
        // `(£)` and `in £` are not how a unit is named: only words, codes and % in brackets.
        prop_assume!(!(prefix && (form == 2 || form == 3 || form == 6)));
        prop_assume!(!(symbol == "%" && form == 6));
        let parsed = PnlTarget::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(parsed.line.as_str(), line, "{}", text);
        prop_assert_eq!(parsed.unit.as_str(), code, "{}", text);
        prop_assert!((parsed.baseline - bv).abs() < 1e-6 && (parsed.target - tv).abs() < 1e-6, "{text}: {parsed:?}");
    }
}

/// Every example of a P&L line the bot itself prints (in backticks, in `prompts/`) parses.
#[test]
fn every_pnl_example_the_bot_prints_parses() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/prompts");
    let mut examples = Vec::new();
    for file in ["messages.toml", "vagueness.toml"] {
        let text = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
        for (i, quoted) in text.split('`').enumerate() {
            // Odd pieces are inside backticks; a P&L example has an arrow and figures.
            if i % 2 == 1
                && (quoted.contains("->") || quoted.contains('→'))
                && quoted.chars().any(|c| c.is_ascii_digit())
            {
                examples.push(quoted.to_owned());
            }
        }
    }
    assert!(examples.len() >= 3, "{examples:?}");
    for example in examples {
        // An example of figures alone reads as the figures; one with a line reads whole.
        let draft = lastmile::domain::PnlDraft::read(&example, &[])
            .unwrap_or_else(|e| panic!("the bot's own example `{example}` does not parse: {e}"));
        assert!(draft.baseline.is_some() && draft.target.is_some(), "`{example}`: {draft:?}");
        if draft.line.is_some() {
            assert!(PnlTarget::parse(&example).is_ok(), "the bot's own example `{example}` does not parse");
        }
    }
}
