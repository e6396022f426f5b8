//! A fake Slack on 127.0.0.1: the Web API (`/api/<method>`, axum) and Socket Mode (a WebSocket) that the real
//! slack-morphism client connects to. Tests send envelopes as Slack would (slash commands, button clicks, modal
//! submissions) and read the Web API calls the bot made.
//!
//! It records every request; a method it does not know is answered `unknown_method` and fails the test. Each
//! envelope must be acknowledged once, within 3 seconds. A trigger id opens one modal, within 3 seconds. Every
//! message and view is checked against the Block Kit limits and the shapes of the blocks lastmile uses, and no
//! text may hold `<!…>` (a ping of many): [`Fake::violations`] must stay empty.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State as AxumState};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

pub const TEAM: &str = "T01ACME";
pub const OTHER_TEAM: &str = "T99OTHER";
pub const CHANNEL: &str = "C01GENERAL";
pub const APP_ID: &str = "A01LASTMILE";
pub const BOT_TOKEN: &str = "xoxb-1111-2222-fakebottoken";
pub const APP_TOKEN: &str = "xapp-1-A01LASTMILE-3333-fakeapptoken";
pub const WAIT: Duration = Duration::from_secs(20);

/// Someone in the test workspace.
#[derive(Clone, Copy, Debug)]
pub struct Who {
    pub id: &'static str,
    pub name: &'static str,
}

pub const ALICE: Who = Who { id: "U01ALICE", name: "alice" };
pub const BOB: Who = Who { id: "U02BOB", name: "bob" };
pub const DAVE: Who = Who { id: "U04DAVE", name: "dave" };
pub const ERIN: Who = Who { id: "U05ERIN", name: "erin" };
pub const LASTMILE: Who = Who { id: "U00LASTMILE", name: "lastmile" };
pub const HELPER_BOT: Who = Who { id: "U09HELPER", name: "helperbot" };
/// Workspace admins, as `users.info` says.
pub const ADMINS: &[&str] = &[ALICE.id];
pub const BOTS: &[&str] = &[HELPER_BOT.id, LASTMILE.id];

impl Who {
    pub fn mention(&self) -> String {
        format!("<@{}>", self.id)
    }

    pub fn dm_channel(&self) -> String {
        format!("D{}", &self.id[1..])
    }
}

/// One Web API call (or a post to a `response_url`: method `response_url`).
#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    pub body: Value,
    /// The bearer token it carried.
    pub token: Option<String>,
    /// What the fake answered.
    pub answer: Value,
}

impl Call {
    /// Every text of the message or view, joined, as Slack shows it (`&lt;` read as `<`): what a user reads.
    pub fn text(&self) -> String {
        self.raw_text().replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    }

    /// Every text of the message or view, joined, as sent (mrkdwn escapes kept).
    pub fn raw_text(&self) -> String {
        let mut out = Vec::new();
        collect_text(&self.body, &mut out);
        out.join("\n")
    }

    pub fn channel(&self) -> &str {
        self.body["channel"].as_str().unwrap_or_default()
    }

    /// The action id of the button labelled `label`.
    pub fn button(&self, label: &str) -> String {
        find_element(&self.body, &|e| e["type"] == "button" && e["text"]["text"] == label)
            .and_then(|e| e["action_id"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("no button {label:?} in {:#}", self.body))
    }

    /// The button labelled `label` (its action id and value).
    pub fn button_value(&self, label: &str) -> Option<String> {
        find_element(&self.body, &|e| e["type"] == "button" && e["text"]["text"] == label)
            .and_then(|e| e["value"].as_str().map(str::to_owned))
    }
}

fn collect_text(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("text", Value::String(s)) => out.push(s.clone()),
                    ("private_metadata" | "action_id" | "callback_id" | "block_id" | "value", _) => {}
                    _ => collect_text(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_text(v, out)),
        _ => {}
    }
}

fn find_element<'a>(v: &'a Value, pred: &dyn Fn(&Value) -> bool) -> Option<&'a Value> {
    if pred(v) {
        return Some(v);
    }
    match v {
        Value::Object(m) => m.values().find_map(|v| find_element(v, pred)),
        Value::Array(a) => a.iter().find_map(|v| find_element(v, pred)),
        _ => None,
    }
}

#[derive(Default)]
struct State {
    port: AtomicU64,
    calls: Mutex<Vec<Call>>,
    violations: Mutex<Vec<String>>,
    changed: Notify,
    /// Open Socket Mode connections.
    sockets: Mutex<Vec<mpsc::UnboundedSender<Option<String>>>>,
    connects: AtomicUsize,
    /// Envelope id → when it was sent.
    sent: Mutex<HashMap<String, Instant>>,
    /// Envelope id → its acknowledgement.
    acks: Mutex<HashMap<String, Value>>,
    /// Trigger id → when it was issued, and whether it was used.
    triggers: Mutex<HashMap<String, (Instant, bool)>>,
    closed_dms: Mutex<HashSet<String>>,
    ids: AtomicU64,
}

pub struct Fake {
    pub api_url: String,
    state: Arc<State>,
}

impl Fake {
    pub async fn start() -> Fake {
        let state = Arc::new(State::default());
        let app = Router::new()
            .route("/ws", get(socket))
            .route("/api/{method}", any(api))
            .route("/response/{id}", post(response_url))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().unwrap().port();
        state.port.store(u64::from(port), Ordering::SeqCst);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Fake { api_url: format!("http://127.0.0.1:{port}/api/"), state }
    }

    fn next(&self) -> u64 {
        self.state.ids.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().unwrap().clone()
    }

    pub fn calls_to(&self, method: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.method == method).collect()
    }

    pub fn violations(&self) -> Vec<String> {
        self.state.violations.lock().unwrap().clone()
    }

    /// Fails the test if the bot broke a rule of Slack's or called a method the fake does not know.
    pub fn assert_valid(&self) {
        let v = self.violations();
        assert!(v.is_empty(), "what Slack would refuse:\n{}", v.join("\n"));
    }

    /// Makes `conversations.open` with this user fail (`cannot_dm_bot`), as for a user who cannot be messaged.
    pub fn close_dms(&self, who: Who) {
        self.state.closed_dms.lock().unwrap().insert(who.id.to_owned());
    }

    /// How many Socket Mode connections the bot opened so far.
    pub fn connects(&self) -> usize {
        self.state.connects.load(Ordering::SeqCst)
    }

    /// Waits until the bot has opened `n` Socket Mode connections in all, and one is open.
    pub async fn connected(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let open = self.state.sockets.lock().unwrap().iter().filter(|s| !s.is_closed()).count();
            if self.connects() >= n && open > 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the bot did not connect (connections: {})",
                self.connects()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Closes every Socket Mode connection, as when the network drops.
    pub fn drop_sockets(&self) {
        for s in self.state.sockets.lock().unwrap().drain(..) {
            let _ = s.send(None);
        }
    }

    /// Waits until `pick` finds something in the calls made so far.
    pub async fn wait_for<T>(&self, what: &str, mut pick: impl FnMut(&[Call]) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let changed = self.state.changed.notified();
            if let Some(t) = pick(&self.state.calls.lock().unwrap()) {
                return t;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!("timed out waiting for {what}; calls so far:\n{:#?}", self.calls());
            }
        }
    }

    /// Waits for the `n`-th call (counting from 1) to `method` that `pick` accepts.
    pub async fn nth(&self, method: &str, n: usize, pick: impl Fn(&Call) -> bool) -> Call {
        self.wait_for(&format!("call {n} to {method}"), |calls| {
            calls.iter().filter(|c| c.method == method && pick(c)).nth(n - 1).cloned()
        })
        .await
    }

    /// Sends an envelope on one open connection; waits for its acknowledgement and returns its payload.
    pub async fn envelope(&self, kind: &str, payload: Value) -> Value {
        let id = format!("env-{}", self.next());
        let frame = json!({
            "envelope_id": id,
            "type": kind,
            "accepts_response_payload": kind != "events_api",
            "payload": payload,
        })
        .to_string();
        self.state.sent.lock().unwrap().insert(id.clone(), Instant::now());
        {
            let sockets = self.state.sockets.lock().unwrap();
            let socket = sockets.iter().find(|s| !s.is_closed()).expect("the bot is connected over Socket Mode");
            socket.send(Some(frame)).expect("socket open");
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let changed = self.state.changed.notified();
            if let Some(ack) = self.state.acks.lock().unwrap().get(&id) {
                return ack.get("payload").cloned().unwrap_or(Value::Null);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!("envelope {id} was never acknowledged");
            }
        }
    }

    fn trigger(&self) -> String {
        let t = format!("trigger-{}", self.next());
        self.state.triggers.lock().unwrap().insert(t.clone(), (Instant::now(), false));
        t
    }

    fn response_url(&self) -> String {
        format!("http://127.0.0.1:{}/response/{}", self.state.port.load(Ordering::SeqCst), self.next())
    }

    /// `who` types `/command text` in the general channel; returns the acknowledgement's payload and the
    /// command's response URL.
    pub async fn command(&self, who: Who, command: &str, text: &str) -> (Value, String) {
        self.command_in(TEAM, who, command, text).await
    }

    pub async fn command_in(&self, team: &str, who: Who, command: &str, text: &str) -> (Value, String) {
        let url = self.response_url();
        let payload = json!({
            "team_id": team,
            "team_domain": "acme",
            "channel_id": CHANNEL,
            "channel_name": "general",
            "user_id": who.id,
            "command": command,
            "text": text,
            "response_url": url,
            "trigger_id": self.trigger(),
            "api_app_id": APP_ID,
        });
        (self.envelope("slash_commands", payload).await, url)
    }

    /// The answers sent to a response URL so far.
    pub fn responses(&self, url: &str) -> Vec<Call> {
        let id = url.rsplit('/').next().unwrap_or_default().to_owned();
        self.calls().into_iter().filter(|c| c.method == "response_url" && c.body["_id"] == id.as_str()).collect()
    }

    /// Waits for the `n`-th answer to a response URL.
    pub async fn response(&self, url: &str, n: usize) -> Call {
        let id = url.rsplit('/').next().unwrap_or_default().to_owned();
        self.nth("response_url", n, |c| c.body["_id"] == id.as_str()).await
    }

    /// `who` submits the modal `view` (as the bot last sent it) with `value` in its input: text, or a user
    /// picked (`Pick::User`), or nothing. Returns the acknowledgement's payload.
    pub async fn submit(&self, who: Who, view: &Value, value: Pick<'_>) -> Value {
        self.submit_in(TEAM, who, view, value).await
    }

    pub async fn submit_in(&self, team: &str, who: Who, view: &Value, value: Pick<'_>) -> Value {
        let element = view["blocks"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["type"] == "input"))
            .map(|b| b["element"].clone())
            .unwrap_or(Value::Null);
        let mut state = json!({ "type": element["type"].clone() });
        match value {
            Pick::Text(t) => state["value"] = json!(t),
            Pick::User(u) => state["selected_user"] = json!(u.id),
            Pick::Nothing => {}
        }
        let mut stateful = view.clone();
        stateful["id"] = json!(view_id(view));
        stateful["team_id"] = json!(team);
        stateful["hash"] = json!("hash");
        stateful["state"] = json!({ "values": { "answer": { "answer": state } } });
        let payload = json!({
            "type": "view_submission",
            "team": { "id": team },
            "user": { "id": who.id, "team_id": team },
            "api_app_id": APP_ID,
            "trigger_id": self.trigger(),
            "view": stateful,
        });
        self.envelope("interactive", payload).await
    }

    /// `who` clicks the button `action_id` of a message (in `channel`; a DM channel for a direct message).
    /// Returns the response URL of the click.
    pub async fn click(&self, who: Who, channel: &str, action_id: &str, value: Option<&str>) -> String {
        let url = self.response_url();
        let mut action = json!({ "type": "button", "action_id": action_id, "block_id": "b1", "action_ts": "1.2" });
        if let Some(v) = value {
            action["value"] = json!(v);
        }
        let payload = json!({
            "type": "block_actions",
            "team": { "id": TEAM },
            "user": { "id": who.id, "team_id": TEAM },
            "api_app_id": APP_ID,
            "container": { "type": "message", "message_ts": "1.1", "channel_id": channel, "is_ephemeral": false },
            "trigger_id": self.trigger(),
            "channel": { "id": channel },
            "response_url": url,
            "actions": [action],
        });
        self.envelope("interactive", payload).await;
        url
    }

    /// `who` clicks the button `action_id` inside the modal `view`.
    pub async fn click_in_view(&self, who: Who, view: &Value, action_id: &str) {
        let payload = json!({
            "type": "block_actions",
            "team": { "id": TEAM },
            "user": { "id": who.id, "team_id": TEAM },
            "api_app_id": APP_ID,
            "container": { "type": "view", "view_id": view_id(view) },
            "trigger_id": self.trigger(),
            "view": view,
            "actions": [{ "type": "button", "action_id": action_id, "block_id": "b1", "action_ts": "1.2" }],
        });
        self.envelope("interactive", payload).await;
    }
}

/// What a modal submission holds.
pub enum Pick<'a> {
    Text(&'a str),
    User(Who),
    Nothing,
}

/// The fake's id for a view: its callback id stands for it (each modal of a conversation gets its own).
fn view_id(view: &Value) -> String {
    view["id"].as_str().map(str::to_owned).unwrap_or_else(|| "V01MODAL".to_owned())
}

fn token(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
}

fn body_json(headers: &HeaderMap, query: Option<&str>, body: &[u8]) -> Value {
    let is_form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let pairs = |s: &str| -> Value {
        let mut m = serde_json::Map::new();
        for pair in s.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            m.insert(k.to_owned(), json!(v));
        }
        Value::Object(m)
    };
    if is_form {
        return pairs(&String::from_utf8_lossy(body));
    }
    if body.is_empty() {
        return pairs(query.unwrap_or_default());
    }
    serde_json::from_slice(body).unwrap_or_else(|_| json!({ "_raw": String::from_utf8_lossy(body) }))
}

async fn api(
    AxumState(state): AxumState<Arc<State>>,
    Path(method): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = body_json(&headers, query.as_deref(), &body);
    let token = token(&headers);
    let mut violations = Vec::new();
    let expected = if method == "apps.connections.open" { APP_TOKEN } else { BOT_TOKEN };
    if token.as_deref() != Some(expected) {
        violations.push(format!("{method}: called without the right token"));
    }
    let port = state.port.load(Ordering::SeqCst);
    let answer = match method.as_str() {
        "auth.test" => json!({
            "ok": true, "url": "https://acme.slack.com/", "team": "Acme", "user": "lastmile",
            "team_id": TEAM, "user_id": LASTMILE.id, "bot_id": "B01LASTMILE",
        }),
        "apps.connections.open" => json!({ "ok": true, "url": format!("ws://127.0.0.1:{port}/ws") }),
        "chat.postMessage" => {
            violations.extend(check_message(&method, &body));
            json!({ "ok": true, "channel": body["channel"], "ts": "1700000000.000100",
                    "message": { "ts": "1700000000.000100", "text": body["text"] } })
        }
        "chat.postEphemeral" => {
            violations.extend(check_message(&method, &body));
            json!({ "ok": true, "message_ts": "1700000000.000200" })
        }
        "users.info" => {
            let id = body["user"].as_str().unwrap_or_default();
            json!({ "ok": true, "user": {
                "id": id, "team_id": TEAM, "name": id.to_lowercase(),
                "is_admin": ADMINS.contains(&id), "is_owner": false, "is_bot": BOTS.contains(&id),
            } })
        }
        "conversations.open" => {
            let users: Vec<String> = match &body["users"] {
                Value::Array(a) => a.iter().filter_map(|u| u.as_str().map(str::to_owned)).collect(),
                Value::String(s) => s.split(',').map(str::to_owned).collect(),
                _ => vec![],
            };
            let closed = state.closed_dms.lock().unwrap();
            match users.as_slice() {
                [one] if closed.contains(one) => json!({ "ok": false, "error": "cannot_dm_bot" }),
                [one] => json!({ "ok": true, "channel": { "id": format!("D{}", &one[1..]) } }),
                _ => {
                    violations.push(format!("conversations.open: users {:?}", body["users"]));
                    json!({ "ok": false, "error": "invalid_arguments" })
                }
            }
        }
        "views.open" => {
            let trigger = body["trigger_id"].as_str().unwrap_or_default().to_owned();
            let mut triggers = state.triggers.lock().unwrap();
            match triggers.get_mut(&trigger) {
                Some((at, used)) if !*used && at.elapsed() < Duration::from_secs(3) => {
                    *used = true;
                    violations.extend(check_view(&body["view"]));
                    stateful(&body["view"], 1 + state.ids.fetch_add(1, Ordering::SeqCst))
                }
                Some((_, true)) => {
                    violations.push(format!("views.open: trigger {trigger} used twice"));
                    json!({ "ok": false, "error": "invalid_trigger_id" })
                }
                Some(_) => {
                    violations.push(format!("views.open: trigger {trigger} used after 3 s"));
                    json!({ "ok": false, "error": "expired_trigger_id" })
                }
                None => {
                    violations.push(format!("views.open: unknown trigger {trigger:?}"));
                    json!({ "ok": false, "error": "invalid_trigger_id" })
                }
            }
        }
        "views.update" => {
            violations.extend(check_view(&body["view"]));
            let mut v = stateful(&body["view"], 0);
            v["view"]["id"] = body["view_id"].clone();
            v
        }
        _ => {
            violations.push(format!("unknown method {method}"));
            json!({ "ok": false, "error": "unknown_method" })
        }
    };
    state.violations.lock().unwrap().extend(violations);
    state.calls.lock().unwrap().push(Call { method, body, token, answer: answer.clone() });
    state.changed.notify_waiters();
    axum::Json(answer).into_response()
}

fn stateful(view: &Value, n: u64) -> Value {
    let mut v = view.clone();
    v["id"] = json!(format!("V{n:08}"));
    v["team_id"] = json!(TEAM);
    v["hash"] = json!("hash");
    json!({ "ok": true, "view": v })
}

async fn response_url(
    AxumState(state): AxumState<Arc<State>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut body = body_json(&headers, None, &body);
    let violations = check_message("response_url", &body);
    body["_id"] = json!(id);
    state.violations.lock().unwrap().extend(violations);
    state.calls.lock().unwrap().push(Call {
        method: "response_url".into(),
        body,
        token: token(&headers),
        answer: json!({"ok": true}),
    });
    state.changed.notify_waiters();
    axum::Json(json!({"ok": true})).into_response()
}

async fn socket(AxumState(state): AxumState<Arc<State>>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| serve_socket(state, socket))
}

async fn serve_socket(state: Arc<State>, mut socket: WebSocket) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Option<String>>();
    state.connects.fetch_add(1, Ordering::SeqCst);
    let hello = json!({
        "type": "hello",
        "num_connections": 1,
        "connection_info": { "app_id": APP_ID },
        "debug_info": { "host": "fake-slack", "approximate_connection_time": 3600 },
    });
    if socket.send(WsMessage::Text(hello.to_string().into())).await.is_err() {
        return;
    }
    state.sockets.lock().unwrap().push(tx);
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(Some(frame)) => {
                    if socket.send(WsMessage::Text(frame.into())).await.is_err() {
                        return;
                    }
                }
                // Dropped: the connection ends without a goodbye, as when the network fails.
                _ => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Text(text))) => on_ack(&state, &text),
                Some(Ok(_)) => {}
                _ => return,
            },
        }
    }
}

fn on_ack(state: &State, text: &str) {
    let Ok(ack) = serde_json::from_str::<Value>(text) else {
        state.violations.lock().unwrap().push(format!("a frame that is not JSON: {text}"));
        return;
    };
    let id = ack["envelope_id"].as_str().unwrap_or_default().to_owned();
    let mut violations = Vec::new();
    match state.sent.lock().unwrap().get(&id) {
        None => violations.push(format!("an acknowledgement of an unknown envelope: {text}")),
        Some(at) if at.elapsed() > Duration::from_secs(3) => {
            violations.push(format!("envelope {id} acknowledged after {:?}", at.elapsed()))
        }
        Some(_) => {}
    }
    if let Some(payload) = ack.get("payload") {
        if payload.get("response_action") == Some(&json!("update")) {
            violations.extend(check_view(&payload["view"]));
        }
        if payload.get("blocks").is_some() || payload.get("text").is_some() {
            violations.extend(check_message("ack", payload));
        }
        let mut texts = Vec::new();
        collect_text(payload, &mut texts);
        if payload.get("errors").is_some() {
            collect_text(&payload["errors"], &mut texts);
            texts.extend(
                payload["errors"].as_object().into_iter().flatten().filter_map(|(_, v)| v.as_str().map(str::to_owned)),
            );
        }
        violations.extend(pings(&texts.join("\n")).into_iter().map(|p| format!("ack: pings many: {p}")));
    }
    let mut acks = state.acks.lock().unwrap();
    if acks.contains_key(&id) {
        violations.push(format!("envelope {id} acknowledged twice"));
    }
    acks.insert(id, ack);
    drop(acks);
    state.violations.lock().unwrap().extend(violations);
    state.changed.notify_waiters();
}

/// `<!channel>`, `<!here>`, `<!everyone>`, `<!subteam^…>` and the like.
fn pings(text: &str) -> Vec<String> {
    text.match_indices("<!").map(|(i, _)| text[i..].chars().take(20).collect()).collect()
}

fn len(v: &Value) -> usize {
    v.as_str().map_or(0, |s| s.chars().count())
}

fn check_text_object(what: &str, t: &Value, max: usize, plain_only: bool, out: &mut Vec<String>) {
    let kind = t["type"].as_str().unwrap_or_default();
    if kind != "plain_text" && (plain_only || kind != "mrkdwn") {
        out.push(format!("{what}: text object of type {kind:?}"));
    }
    let n = len(&t["text"]);
    if n == 0 || n > max {
        out.push(format!("{what}: text of {n} characters (1..={max})"));
    }
}

fn check_element(what: &str, e: &Value, in_input: bool, out: &mut Vec<String>) {
    let kind = e["type"].as_str().unwrap_or_default();
    let id = len(&e["action_id"]);
    if id == 0 || id > 255 {
        out.push(format!("{what}: action_id of {id} characters"));
    }
    match (kind, in_input) {
        ("button", false) => {
            check_text_object(&format!("{what} button"), &e["text"], 75, true, out);
            if len(&e["value"]) > 2000 {
                out.push(format!("{what}: button value over 2000"));
            }
        }
        ("users_select", _) => {
            if !e["placeholder"].is_null() {
                check_text_object(&format!("{what} placeholder"), &e["placeholder"], 150, true, out);
            }
        }
        ("plain_text_input", true) => {
            let max = e["max_length"].as_u64().unwrap_or(3000);
            if max == 0 || max > 3000 {
                out.push(format!("{what}: max_length {max}"));
            }
            if len(&e["initial_value"]) as u64 > max {
                out.push(format!("{what}: initial_value longer than max_length"));
            }
        }
        _ => out.push(format!("{what}: element {kind:?} not used by lastmile here")),
    }
}

fn check_blocks(what: &str, blocks: &Value, max_blocks: usize, in_view: bool, out: &mut Vec<String>) {
    let Some(blocks) = blocks.as_array() else {
        out.push(format!("{what}: blocks is not a list"));
        return;
    };
    if blocks.is_empty() || blocks.len() > max_blocks {
        out.push(format!("{what}: {} blocks (1..={max_blocks})", blocks.len()));
    }
    let mut total = 0;
    for (i, b) in blocks.iter().enumerate() {
        let w = format!("{what} block {i}");
        if len(&b["block_id"]) > 255 {
            out.push(format!("{w}: block_id over 255"));
        }
        match b["type"].as_str().unwrap_or_default() {
            "section" => {
                check_text_object(&w, &b["text"], 3000, false, out);
                total += len(&b["text"]["text"]);
            }
            "header" => check_text_object(&w, &b["text"], 150, true, out),
            "context" | "divider" => {}
            "actions" => {
                let els = b["elements"].as_array().cloned().unwrap_or_default();
                if els.is_empty() || els.len() > 25 {
                    out.push(format!("{w}: {} elements in actions", els.len()));
                }
                els.iter().for_each(|e| check_element(&w, e, false, out));
            }
            "input" if in_view => {
                check_text_object(&format!("{w} label"), &b["label"], 2000, true, out);
                check_element(&w, &b["element"], true, out);
            }
            other => out.push(format!("{w}: block type {other:?} not used by lastmile here")),
        }
    }
    if total > 12_000 {
        out.push(format!("{what}: {total} characters of text in blocks (msg_blocks_too_long)"));
    }
}

/// A message body: blocks within the limits and no ping of many anywhere.
fn check_message(what: &str, body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if body["blocks"].is_null() {
        if len(&body["text"]) == 0 {
            out.push(format!("{what}: neither text nor blocks"));
        }
    } else {
        check_blocks(what, &body["blocks"], 50, false, &mut out);
    }
    if len(&body["text"]) > 40_000 {
        out.push(format!("{what}: text over 40,000"));
    }
    if body["link_names"] == json!(true) || body["parse"] == json!("full") {
        out.push(format!("{what}: link_names or parse=full would turn typed @channel into a ping"));
    }
    let mut texts = Vec::new();
    collect_text(body, &mut texts);
    out.extend(pings(&texts.join("\n")).into_iter().map(|p| format!("{what}: pings many: {p}")));
    out
}

fn check_view(view: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if view["type"] != "modal" {
        out.push(format!("view of type {:?}", view["type"]));
    }
    check_text_object("view title", &view["title"], 24, true, &mut out);
    for k in ["submit", "close"] {
        if !view[k].is_null() {
            check_text_object(&format!("view {k}"), &view[k], 24, true, &mut out);
        }
    }
    if len(&view["callback_id"]) > 255 || len(&view["private_metadata"]) > 3000 {
        out.push("view: callback_id or private_metadata too long".into());
    }
    check_blocks("view", &view["blocks"], 100, true, &mut out);
    let inputs = view["blocks"].as_array().map_or(0, |b| b.iter().filter(|b| b["type"] == "input").count());
    if inputs > 0 && view["submit"].is_null() {
        out.push("view: input blocks without a submit button".into());
    }
    let mut texts = Vec::new();
    collect_text(view, &mut texts);
    out.extend(pings(&texts.join("\n")).into_iter().map(|p| format!("view: pings many: {p}")));
    out
}
