//! A fake Discord on 127.0.0.1: the REST endpoints lastmile calls (axum) and a gateway (a WebSocket speaking
//! Discord's opcodes) that the real serenity client connects to. Tests dispatch INTERACTION_CREATE events as
//! Discord would and read the REST calls the bot made.
//!
//! Every request body is validated against Discord's official OpenAPI description (`discord-openapi.json`
//! beside this file, MIT licensed by Discord: see `discord-openapi.LICENSE`; JSON Schema 2020-12) and against the limits the description does
//! not state (2000 characters of content for bots, 1-5 components in a modal, 6000 characters across embeds).
//! A body that fails is answered 400 and recorded: [`Fake::violations`] must stay empty.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

pub const APP_ID: u64 = 700_000_000_000_000_001;
pub const GUILD: u64 = 800_000_000_000_000_001;
pub const CHANNEL: u64 = 810_000_000_000_000_001;
/// Within every wait: the slowest step here is serenity reconnecting (a few seconds of back-off).
pub const WAIT: Duration = Duration::from_secs(30);

/// Someone in the test server.
#[derive(Clone, Copy, Debug)]
pub struct Who {
    pub id: u64,
    pub name: &'static str,
    /// Has Manage Server.
    pub admin: bool,
    pub bot: bool,
}

pub const ALICE: Who = Who { id: 900_000_000_000_000_001, name: "alice", admin: true, bot: false };
pub const BOB: Who = Who { id: 900_000_000_000_000_002, name: "bob", admin: false, bot: false };
pub const DAVE: Who = Who { id: 900_000_000_000_000_004, name: "dave", admin: false, bot: false };
pub const ERIN: Who = Who { id: 900_000_000_000_000_005, name: "erin", admin: false, bot: false };
pub const HELPER_BOT: Who = Who { id: 900_000_000_000_000_099, name: "helperbot", admin: false, bot: true };
pub const LASTMILE: Who = Who { id: APP_ID, name: "lastmile", admin: false, bot: true };

impl Who {
    pub fn mention(&self) -> String {
        format!("<@{}>", self.id)
    }
}

/// One REST call the bot made.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    /// Without `/api/v10`.
    pub path: String,
    /// The JSON body (for multipart: `payload_json`).
    pub body: Value,
    /// Files sent with it: name and size.
    pub files: Vec<(String, usize)>,
    pub status: u16,
    /// When the fake received it.
    pub at: std::time::Instant,
}

impl Call {
    /// The interaction token in a callback, follow-up or response edit path.
    pub fn token(&self) -> Option<&str> {
        let parts: Vec<&str> = self.path.split('/').collect();
        match parts.as_slice() {
            ["", "interactions", _, token, "callback"] => Some(token),
            ["", "webhooks", _, token, ..] => Some(token),
            _ => None,
        }
    }

    pub fn is_callback(&self) -> bool {
        self.path.ends_with("/callback")
    }

    /// The message a call carries: a callback's `data` or the body itself.
    pub fn message(&self) -> &Value {
        if self.is_callback() { &self.body["data"] } else { &self.body }
    }

    pub fn content(&self) -> String {
        let m = self.message();
        let mut text = m["content"].as_str().unwrap_or_default().to_owned();
        for e in m["embeds"].as_array().into_iter().flatten() {
            for k in ["title", "description"] {
                if let Some(t) = e[k].as_str() {
                    text.push('\n');
                    text.push_str(t);
                }
            }
        }
        text
    }

    pub fn ephemeral(&self) -> bool {
        self.message()["flags"].as_u64().is_some_and(|f| f & 64 != 0)
    }

    /// Every component (buttons, menus, text inputs) of the message, flattened.
    pub fn components(&self) -> Vec<Value> {
        let m = self.message();
        m["components"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|row| row["components"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// The custom id of the button labelled `label`.
    pub fn button(&self, label: &str) -> String {
        self.components()
            .iter()
            .find(|c| c["type"] == 2 && c["label"] == label)
            .and_then(|c| c["custom_id"].as_str())
            .unwrap_or_else(|| panic!("no button {label:?} in {}", self.message()))
            .to_owned()
    }

    /// The custom id of the first component of `kind` (2 button, 5 user select).
    pub fn component(&self, kind: u64) -> String {
        self.components()
            .iter()
            .find(|c| c["type"] == kind)
            .and_then(|c| c["custom_id"].as_str())
            .unwrap_or_else(|| panic!("no component of type {kind} in {}", self.message()))
            .to_owned()
    }
}

enum WsCmd {
    Send(String),
    Close,
}

/// A gateway session: its shard count, and where to send its frames.
type Session = (u64, mpsc::UnboundedSender<WsCmd>);

#[derive(Default)]
pub struct State {
    port: AtomicU64,
    calls: Mutex<Vec<Call>>,
    changed: Notify,
    /// The connected gateway sessions, by shard: (shard count, session). Like Discord, an event goes to every
    /// session of the shard its guild maps to (`(guild_id >> 22) % shards`; DMs to shard 0).
    sockets: Mutex<HashMap<u64, Vec<Session>>>,
    /// How many events each shard was sent.
    pub dispatched: Mutex<HashMap<u64, usize>>,
    pub identifies: AtomicUsize,
    pub resumes: AtomicUsize,
    seq: AtomicU64,
    ids: AtomicU64,
    closed_dms: Mutex<HashSet<String>>,
    dm_channels: Mutex<HashMap<String, String>>,
    violations: Mutex<Vec<String>>,
    /// Interactions dispatched: when, and whether they were answered, by token.
    interactions: Mutex<HashMap<String, (std::time::Instant, bool)>>,
    /// Bodies are checked against the OpenAPI description later, by [`Fake::check_recorded`], instead of on
    /// arrival (benchmarks: the check costs more than the bot's work). Discord's interaction rules still apply live.
    deferred: std::sync::atomic::AtomicBool,
    /// Interaction callbacks received so far (kept apart so that waiting for them scans nothing).
    callbacks: AtomicUsize,
    /// Interactions go to the bot's HTTP endpoint (its URL and the application's signing key) instead of the
    /// gateway, when set.
    endpoint: Mutex<Option<(String, ed25519_dalek::SigningKey)>>,
    /// How long each message sent to a channel takes, in microseconds (Discord is not instant).
    message_latency_us: AtomicU64,
}

/// The application's signing key in the tests: its public half is [`PUBLIC_KEY`]'s.
pub fn signing_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[7u8; 32])
}

/// The public key the bot is given, as Discord's Developer Portal shows it (hex).
pub fn public_key_hex(key: &ed25519_dalek::SigningKey) -> String {
    key.verifying_key().to_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// Signs `timestamp + body` as Discord does: the `X-Signature-Ed25519` header's value.
pub fn sign(key: &ed25519_dalek::SigningKey, timestamp: &str, body: &[u8]) -> String {
    use ed25519_dalek::Signer as _;
    let message = [timestamp.as_bytes(), body].concat();
    key.sign(&message).to_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// Now, as Discord writes it in `X-Signature-Timestamp`.
pub fn timestamp_now() -> String {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs().to_string()
}

/// POSTs `body` to an interactions endpoint with these headers; the status and the body of the answer.
pub async fn post_interaction(url: &str, signature: &str, timestamp: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    static CLIENT: LazyLock<reqwest::Client> = LazyLock::new(reqwest::Client::new);
    let response = CLIENT
        .post(url)
        .header("content-type", "application/json")
        .header("x-signature-ed25519", signature)
        .header("x-signature-timestamp", timestamp)
        .body(body)
        .send()
        .await
        .expect("the endpoint answers");
    let status = response.status().as_u16();
    (status, response.bytes().await.expect("a body").to_vec())
}

pub struct Fake {
    pub base: String,
    pub state: Arc<State>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.server.abort();
    }
}

static SPEC: LazyLock<Value> = LazyLock::new(|| {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fake_discord/discord-openapi.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    serde_json::from_str(&text).expect("the OpenAPI description parses")
});

/// Compiled validators, shared by every test in the process (compiling one takes a while).
static VALIDATORS: LazyLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> = LazyLock::new(Default::default);

fn validator(key: &str, schema: &Value) -> Arc<jsonschema::Validator> {
    if let Some(v) = VALIDATORS.lock().unwrap().get(key) {
        return v.clone();
    }
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": SPEC["components"],
        "allOf": [schema],
    });
    let v = Arc::new(jsonschema::draft202012::new(&root).unwrap_or_else(|e| panic!("schema {key}: {e}")));
    VALIDATORS.lock().unwrap().insert(key.to_owned(), v.clone());
    v
}

/// The operation of the description that `path` calls: the template with the most literal text that matches.
fn operation(method: &str, path: &str) -> Option<(String, Value)> {
    let segments: Vec<&str> = path.split('/').collect();
    let mut best: Option<(usize, String, Value)> = None;
    for (template, ops) in SPEC["paths"].as_object()? {
        let t: Vec<&str> = template.split('/').collect();
        if t.len() != segments.len() {
            continue;
        }
        let mut literal = 0;
        let matches = t.iter().zip(&segments).all(|(a, b)| {
            if a.starts_with('{') {
                true
            } else {
                literal += a.len();
                a == b
            }
        });
        if matches
            && let Some(op) = ops.get(method.to_lowercase())
            && best.as_ref().is_none_or(|(l, ..)| literal > *l)
        {
            best = Some((literal, template.clone(), op.clone()));
        }
    }
    best.map(|(_, t, op)| (t, op))
}

/// Serenity sends attachment ids as integers (as Discord's upload docs do); the description says strings.
fn normalise_attachment_ids(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(items)) = map.get_mut("attachments") {
                for item in items {
                    if let Some(id) = item.get_mut("id")
                        && let Some(n) = id.as_u64()
                    {
                        *id = Value::String(n.to_string());
                    }
                }
            }
            for (_, inner) in map.iter_mut() {
                normalise_attachment_ids(inner);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalise_attachment_ids),
        _ => {}
    }
}

/// The rules of Discord that its description does not state.
fn platform_rules(message: &Value, errors: &mut Vec<String>) {
    if let Some(content) = message["content"].as_str()
        && content.chars().count() > 2000
    {
        errors.push(format!("content of {} characters (bots may send 2000)", content.chars().count()));
    }
    let embeds = message["embeds"].as_array().cloned().unwrap_or_default();
    let total: usize = embeds
        .iter()
        .map(|e| {
            ["title", "description"].iter().map(|k| e[*k].as_str().map_or(0, |s| s.chars().count())).sum::<usize>()
                + e["footer"]["text"].as_str().map_or(0, |s| s.chars().count())
                + e["fields"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|f| {
                        f["name"].as_str().map_or(0, |s| s.chars().count())
                            + f["value"].as_str().map_or(0, |s| s.chars().count())
                    })
                    .sum::<usize>()
        })
        .sum();
    if total > 6000 {
        errors.push(format!("{total} characters across embeds (the limit is 6000)"));
    }
    // Never a ping to everyone, here or a role, whatever the text says.
    let mentions = &message["allowed_mentions"];
    if message.get("content").is_some() || message.get("embeds").is_some() {
        if mentions.is_null() {
            errors.push("a message without allowed_mentions (user text could ping @everyone)".into());
        } else if mentions["parse"].as_array().is_some_and(|p| !p.is_empty())
            || mentions["roles"].as_array().is_some_and(|r| !r.is_empty())
        {
            errors.push(format!("allowed_mentions that can ping more than users: {mentions}"));
        }
    }
}

pub fn check(method: &str, path: &str, body: &Value) -> Vec<String> {
    let Some((template, op)) = operation(method, path) else {
        return vec![format!("{method} {path} is not an operation of Discord's API")];
    };
    let mut errors = Vec::new();
    let mut body = body.clone();
    normalise_attachment_ids(&mut body);
    if let Some(schema) = op["requestBody"]["content"]["application/json"]["schema"].as_object() {
        let key = format!("{method} {template}");
        let v = validator(&key, &Value::Object(schema.clone()));
        errors.extend(v.iter_errors(&body).map(|e| format!("{key}: {} at {}", e, e.instance_path)));
    }
    // Which of the callback's or webhook's alternatives this body means to be, checked on its own.
    let specific = if template.ends_with("/callback") {
        match body["type"].as_u64() {
            Some(4 | 5) => Some("CreateMessageInteractionCallbackRequest"),
            Some(6 | 7) => Some("UpdateMessageInteractionCallbackRequest"),
            Some(8) => Some("ApplicationCommandAutocompleteCallbackRequest"),
            Some(9) => Some("ModalInteractionCallbackRequest"),
            other => {
                errors.push(format!("callback type {other:?}"));
                None
            }
        }
    } else if template == "/webhooks/{webhook_id}/{webhook_token}" && method == "POST" {
        Some("IncomingWebhookRequestPartial")
    } else {
        None
    };
    if let Some(name) = specific {
        let v = validator(name, &json!({"$ref": format!("#/components/schemas/{name}")}));
        errors.extend(v.iter_errors(&body).map(|e| format!("{name}: {} at {}", e, e.instance_path)));
    }
    if template.ends_with("/callback") && body["type"] == 9 {
        let n = body["data"]["components"].as_array().map_or(0, Vec::len);
        if !(1..=5).contains(&n) {
            errors.push(format!("a modal with {n} components (1-5 allowed)"));
        }
    }
    if method == "POST" || method == "PATCH" {
        let message = if template.ends_with("/callback") { &body["data"] } else { &body };
        if !message.is_null() && !template.starts_with("/applications") && !template.starts_with("/users") {
            platform_rules(message, &mut errors);
        }
    }
    errors
}

/// `payload_json` and the files of a multipart body.
fn multipart(headers: &HeaderMap, body: &[u8]) -> Option<(Value, Vec<(String, usize)>)> {
    let ctype = headers.get("content-type")?.to_str().ok()?;
    let boundary = ctype.split("boundary=").nth(1)?.trim_matches('"');
    let delimiter = format!("--{boundary}");
    let text = body;
    let mut json_part = None;
    let mut files = Vec::new();
    let mut rest = text;
    while let Some(start) = find(rest, delimiter.as_bytes()) {
        rest = &rest[start + delimiter.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        let Some(end) = find(rest, delimiter.as_bytes()) else { break };
        let part = &rest[..end];
        let split = find(part, b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&part[..split]).to_string();
        let mut content = &part[split + 4..];
        if content.ends_with(b"\r\n") {
            content = &content[..content.len() - 2];
        }
        if head.contains("name=\"payload_json\"") {
            json_part = serde_json::from_slice(content).ok();
        } else if let Some(name) = head.split("filename=\"").nth(1).and_then(|s| s.split('"').next()) {
            files.push((name.to_owned(), content.len()));
        }
    }
    Some((json_part?, files))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Fake {
    pub async fn start() -> Fake {
        let state = Arc::new(State::default());
        state.ids.store(1_000_000_000_000_000_000, Ordering::SeqCst);
        let app = Router::new().route("/ws", get(gateway)).fallback(rest).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().unwrap().port();
        state.port.store(u64::from(port), Ordering::SeqCst);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Fake { base: format!("http://127.0.0.1:{port}"), state, server }
    }

    /// How many interaction callbacks (first responses) the bot has sent.
    pub fn callbacks(&self) -> usize {
        self.state.callbacks.load(Ordering::SeqCst)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().unwrap().clone()
    }

    /// From now on, bodies are recorded and checked against the OpenAPI description only by
    /// [`Fake::check_recorded`] (for benchmarks, where checking on arrival would be most of the measured work).
    pub fn defer_checks(&self) {
        self.state.deferred.store(true, Ordering::SeqCst);
    }

    /// Checks every recorded body against the OpenAPI description; what breaks it joins the violations.
    pub fn check_recorded(&self) {
        let errors: Vec<String> = self
            .calls()
            .iter()
            .filter(|c| c.method != "GET" && c.method != "DELETE")
            .flat_map(|c| check(&c.method, &c.path, &c.body))
            .collect();
        self.state.violations.lock().unwrap().extend(errors);
    }

    pub fn violations(&self) -> Vec<String> {
        self.state.violations.lock().unwrap().clone()
    }

    /// Fails the test if any body the bot sent broke Discord's rules.
    pub fn assert_valid(&self) {
        let v = self.violations();
        assert!(v.is_empty(), "request bodies that Discord would refuse:\n{}", v.join("\n"));
    }

    /// Makes direct messages to this user fail with 50007, as when they closed them.
    pub fn close_dms(&self, who: Who) {
        self.state.closed_dms.lock().unwrap().insert(who.id.to_string());
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

    /// Makes each message sent to a channel take this long, as Discord's API does.
    pub fn set_message_latency(&self, latency: Duration) {
        self.state.message_latency_us.store(latency.as_micros() as u64, Ordering::SeqCst);
    }

    /// From now on, interactions are POSTed, signed with `key`, to the bot's endpoint at `url` (as Discord does
    /// for an application with an Interactions Endpoint URL) instead of being sent over the gateway.
    pub fn use_endpoint(&self, url: &str, key: ed25519_dalek::SigningKey) {
        *self.state.endpoint.lock().unwrap() = Some((url.to_owned(), key));
    }

    /// Sends a gateway dispatch to the connected bot (an interaction goes to its endpoint when it has one).
    pub fn dispatch(&self, event: &str, data: Value) {
        if let Some(token) = data["token"].as_str() {
            self.state.interactions.lock().unwrap().insert(token.to_owned(), (std::time::Instant::now(), false));
        }
        let endpoint = self.state.endpoint.lock().unwrap().clone();
        if let (Some((url, key)), "INTERACTION_CREATE") = (endpoint, event) {
            let state = self.state.clone();
            tokio::spawn(async move { deliver_over_http(state, url, key, data).await });
            return;
        }
        let s = self.state.seq.fetch_add(1, Ordering::SeqCst) + 2;
        let guild = data["guild_id"].as_str().and_then(|g| g.parse::<u64>().ok());
        let frame = json!({"op": 0, "t": event, "s": s, "d": data}).to_string();
        let mut sockets = self.state.sockets.lock().unwrap();
        // A session that ended (the bot shut down, or reconnected) is no longer sent anything.
        sockets.values_mut().for_each(|sessions| sessions.retain(|(_, tx)| !tx.is_closed()));
        let shards =
            sockets.values().flatten().map(|(count, _)| *count).max().expect("the bot is connected to the gateway");
        let shard = guild.map_or(0, |g| (g >> 22) % shards);
        let sessions = sockets.get(&shard).filter(|s| !s.is_empty()).expect("the guild's shard is connected");
        for (_, session) in sessions {
            session.send(WsCmd::Send(frame.clone())).expect("socket open");
        }
        *self.state.dispatched.lock().unwrap().entry(shard).or_default() += 1;
    }

    /// Drops the gateway connection, as Discord does now and then.
    pub fn drop_gateway(&self) {
        for (_, s) in self.state.sockets.lock().unwrap().drain().flat_map(|(_, sessions)| sessions) {
            let _ = s.send(WsCmd::Close);
        }
    }

    pub async fn connected(&self) {
        self.connected_shards(1).await;
    }

    /// Waits until `n` gateway sessions are connected.
    pub async fn connected_shards(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let open = || self.state.sockets.lock().unwrap().values().flatten().filter(|(_, tx)| !tx.is_closed()).count();
        while open() < n {
            assert!(tokio::time::Instant::now() < deadline, "the bot did not reconnect");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn next_id(&self) -> u64 {
        self.state.ids.fetch_add(1, Ordering::SeqCst)
    }

    /// Dispatches an interaction and waits for the bot's response to it; returns the token and the response.
    pub async fn interact(&self, interaction: Value) -> (String, Call) {
        let token = interaction["token"].as_str().unwrap().to_owned();
        self.dispatch("INTERACTION_CREATE", interaction);
        let t = token.clone();
        let call = self
            .wait_for(&format!("the response to {token}"), |calls| {
                calls.iter().find(|c| c.is_callback() && c.token() == Some(t.as_str())).cloned()
            })
            .await;
        (token, call)
    }

    /// Every call made for an interaction (response, follow-ups, edits), once `count` of them arrived.
    pub async fn replies(&self, token: &str, count: usize) -> Vec<Call> {
        self.wait_for(&format!("{count} replies to {token}"), |calls| {
            let mine: Vec<Call> = calls.iter().filter(|c| c.token() == Some(token)).cloned().collect();
            (mine.len() >= count).then_some(mine)
        })
        .await
    }

    fn base_interaction(&self, kind: u8, data: Value, who: Who, in_dm: bool) -> Value {
        let id = self.next_id();
        let mut i = json!({
            "id": id.to_string(),
            "application_id": APP_ID.to_string(),
            "type": kind,
            "token": format!("token-{id}"),
            "version": 1,
            "data": data,
            "locale": "en-GB",
            "entitlements": [],
            "attachment_size_limit": 10_485_760,
            "app_permissions": "0",
        });
        if in_dm {
            let channel = format!("{}", who.id + 1);
            i["channel_id"] = json!(channel);
            i["channel"] = json!({"id": channel, "type": 1});
            i["user"] = user_json(who);
        } else {
            i["channel_id"] = json!(CHANNEL.to_string());
            i["channel"] = json!({"id": CHANNEL.to_string(), "type": 0});
            i["guild_id"] = json!(GUILD.to_string());
            i["guild_locale"] = json!("en-GB");
            i["member"] = member_json(who);
        }
        i
    }

    /// `/command sub option=value…`, or `/command option=value…` when `sub` is empty.
    pub fn slash(&self, who: Who, command: &str, sub: &str, options: &[(&str, &str)]) -> Value {
        let opts: Vec<Value> = options.iter().map(|(n, v)| json!({"name": n, "type": 3, "value": v})).collect();
        let options = if sub.is_empty() { opts } else { vec![json!({"name": sub, "type": 1, "options": opts})] };
        let data = json!({"id": "1", "name": command, "type": 1, "options": options});
        self.base_interaction(2, data, who, false)
    }

    /// Typing into an autocompleted option.
    pub fn autocomplete(&self, who: Who, command: &str, sub: &str, option: &str, typed: &str) -> Value {
        let focused = json!({"name": option, "type": 3, "value": typed, "focused": true});
        let data = json!({"id": "1", "name": command, "type": 1,
            "options": [{"name": sub, "type": 1, "options": [focused]}]});
        self.base_interaction(4, data, who, false)
    }

    /// The message a call sent, as Discord would include it in a component interaction.
    fn message_of(&self, call: &Call, in_dm: bool, who: Who) -> Value {
        let channel = if in_dm { (who.id + 1).to_string() } else { CHANNEL.to_string() };
        message_json(self.next_id(), &channel, call.message())
    }

    /// Clicking the button `custom_id` on the message `on`.
    pub fn click(&self, who: Who, on: &Call, custom_id: &str, in_dm: bool) -> Value {
        let mut i = self.base_interaction(3, json!({"custom_id": custom_id, "component_type": 2}), who, in_dm);
        i["message"] = self.message_of(on, in_dm, who);
        i
    }

    /// Picking `picked` in the user menu `custom_id` on the message `on`.
    pub fn pick_user(&self, who: Who, on: &Call, custom_id: &str, picked: Who) -> Value {
        let id = picked.id.to_string();
        let data = json!({
            "custom_id": custom_id, "component_type": 5, "values": [id],
            "resolved": {
                "users": {id.clone(): user_json(picked)},
                "members": {id: {"roles": [], "joined_at": "2026-01-01T00:00:00.000000+00:00", "deaf": false,
                    "mute": false, "flags": 0, "permissions": "0"}},
            },
        });
        let mut i = self.base_interaction(3, data, who, false);
        i["message"] = self.message_of(on, false, who);
        i
    }

    /// Submitting the modal `modal` (the callback that opened it) with `text` in its input.
    pub fn submit(&self, who: Who, modal: &Call, text: &str, in_dm: bool) -> Value {
        let data = &modal.body["data"];
        let input = data["components"][0]["components"][0]["custom_id"].clone();
        let data = json!({
            "custom_id": data["custom_id"],
            "components": [{"type": 1, "components": [{"type": 4, "custom_id": input, "value": text}]}],
        });
        self.base_interaction(5, data, who, in_dm)
    }

    /// A raw interaction of any shape (for malformed ones).
    pub fn raw(&self, kind: u8, data: Value, who: Who) -> Value {
        self.base_interaction(kind, data, who, false)
    }
}

pub fn user_json(who: Who) -> Value {
    json!({"id": who.id.to_string(), "username": who.name, "discriminator": "0", "global_name": null,
        "avatar": null, "bot": who.bot})
}

fn member_json(who: Who) -> Value {
    // Manage Server is permission bit 5.
    let permissions = if who.admin { "32" } else { "0" };
    json!({"user": user_json(who), "roles": [], "joined_at": "2026-01-01T00:00:00.000000+00:00", "deaf": false,
        "mute": false, "flags": 0, "permissions": permissions, "nick": null, "pending": false})
}

fn message_json(id: u64, channel: &str, body: &Value) -> Value {
    json!({
        "id": id.to_string(),
        "channel_id": channel,
        "author": user_json(LASTMILE),
        "content": body["content"].as_str().unwrap_or_default(),
        "timestamp": "2026-11-25T10:00:00.000000+00:00",
        "edited_timestamp": null,
        "tts": false,
        "mention_everyone": false,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": body["embeds"].as_array().cloned().unwrap_or_default(),
        "components": body["components"].as_array().cloned().unwrap_or_default(),
        "pinned": false,
        "type": 0,
        "flags": body["flags"].as_u64().unwrap_or(0),
    })
}

/// Discord's rules for answering an interaction: one response, within 3 seconds, before any follow-up.
fn interaction_rules(state: &State, method: &str, segments: &[&str]) -> Vec<String> {
    let mut interactions = state.interactions.lock().unwrap();
    match (method, segments) {
        ("POST", ["", "interactions", _, token, "callback"]) => match interactions.get_mut(*token) {
            None => vec![format!("a response to an interaction never dispatched ({token})")],
            Some((_, true)) => vec![format!("a second response to {token} (Discord: 40060 already acknowledged)")],
            Some((at, answered)) => {
                *answered = true;
                let took = at.elapsed();
                if took > Duration::from_secs(3) {
                    vec![format!("{token} answered after {took:?}: Discord invalidates it after 3 s")]
                } else {
                    vec![]
                }
            }
        },
        (_, ["", "webhooks", _, token, ..]) => match interactions.get(*token) {
            Some((_, true)) => vec![],
            _ => vec![format!("{method} on the webhook of {token} before the interaction was answered (10015)")],
        },
        _ => vec![],
    }
}

/// Over HTTP, the bot may send a follow-up while the answer to Discord's request is still on its way to the fake:
/// Discord has the answer by then, so the fake waits (briefly) for it to be recorded before judging the follow-up.
async fn await_http_answer(state: &State, token: &str) {
    if state.endpoint.lock().unwrap().is_none() {
        return;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let changed = state.changed.notified();
        if state.interactions.lock().unwrap().get(token).is_none_or(|(_, answered)| *answered) {
            return;
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            return;
        }
    }
}

/// Delivers an interaction to the bot's HTTP endpoint as Discord does, and records the answer's body as the
/// interaction's response (a callback), checked like one.
async fn deliver_over_http(state: Arc<State>, url: String, key: ed25519_dalek::SigningKey, interaction: Value) {
    let body = serde_json::to_vec(&interaction).unwrap();
    let timestamp = timestamp_now();
    let signature = sign(&key, &timestamp, &body);
    let (status, answer) = post_interaction(&url, &signature, &timestamp, body).await;
    let path = format!(
        "/interactions/{}/{}/callback",
        interaction["id"].as_str().unwrap(),
        interaction["token"].as_str().unwrap()
    );
    let body: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
    let segments: Vec<&str> = path.split('/').collect();
    let mut errors =
        if status == 200 { check("POST", &path, &body) } else { vec![format!("the endpoint answered {status}")] };
    errors.extend(interaction_rules(&state, "POST", &segments));
    state.violations.lock().unwrap().extend(errors);
    state.callbacks.fetch_add(1, Ordering::SeqCst);
    let at = std::time::Instant::now();
    state.calls.lock().unwrap().push(Call { method: "POST".into(), path, body, files: vec![], status, at });
    state.changed.notify_waiters();
}

fn reply(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

async fn rest(
    AxumState(state): AxumState<Arc<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let full = uri.path().to_owned();
    let Some(path) = full.strip_prefix("/api/v10") else {
        return reply(StatusCode::NOT_FOUND, json!({"message": "404: Not Found", "code": 0}));
    };
    let path = path.to_owned();
    let is_multipart =
        headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|c| c.starts_with("multipart/"));
    let (json_body, files) = if is_multipart {
        multipart(&headers, &body).unwrap_or((Value::Null, vec![]))
    } else if body.is_empty() {
        (Value::Null, vec![])
    } else {
        (serde_json::from_slice(&body).unwrap_or(Value::Null), vec![])
    };
    let m = method.as_str().to_owned();
    if let ["", "webhooks", _, token, ..] = path.split('/').collect::<Vec<_>>().as_slice() {
        await_http_answer(&state, token).await;
    }
    let later = state.deferred.load(Ordering::SeqCst);
    let mut errors = if m == "GET" || m == "DELETE" || later { vec![] } else { check(&m, &path, &json_body) };
    if is_multipart && json_body.is_null() {
        errors.push(format!("{m} {path}: a multipart body without payload_json"));
    }
    let port = state.port.load(Ordering::SeqCst);
    let segments: Vec<&str> = path.split('/').collect();
    errors.extend(interaction_rules(&state, &m, &segments));
    let (status, response) = if !errors.is_empty() {
        state.violations.lock().unwrap().extend(errors.iter().cloned());
        (StatusCode::BAD_REQUEST, json!({"message": "Invalid Form Body", "code": 50035, "errors": errors}))
    } else {
        match (m.as_str(), segments.as_slice()) {
            ("GET", ["", "gateway"]) => (StatusCode::OK, json!({"url": format!("ws://127.0.0.1:{port}/ws")})),
            ("GET", ["", "gateway", "bot"]) => (
                StatusCode::OK,
                json!({"url": format!("ws://127.0.0.1:{port}/ws"), "shards": 1,
                    "session_start_limit": {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}}),
            ),
            ("PUT", ["", "applications", _, "commands"])
            | ("PUT", ["", "applications", _, "guilds", _, "commands"]) => {
                let commands: Vec<Value> = json_body
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .enumerate()
                    .map(|(i, mut c)| {
                        c["id"] = json!((APP_ID + 100 + i as u64).to_string());
                        c["application_id"] = json!(APP_ID.to_string());
                        c["version"] = json!("1");
                        c["type"] = json!(1);
                        c["default_member_permissions"] = Value::Null;
                        c
                    })
                    .collect();
                (StatusCode::OK, Value::Array(commands))
            }
            ("POST", ["", "interactions", _, _, "callback"]) => (StatusCode::NO_CONTENT, Value::Null),
            ("GET", ["", "oauth2", "applications", "@me"]) => (
                StatusCode::OK,
                json!({"id": APP_ID.to_string(), "name": "lastmile", "icon": null, "description": "",
                    "bot_public": false, "bot_require_code_grant": false, "verify_key": public_key_hex(&signing_key()),
                    "flags": 0, "bot": user_json(LASTMILE)}),
            ),
            ("POST", ["", "webhooks", _, _]) | ("PATCH", ["", "webhooks", _, _, "messages", _]) => {
                let id = state.ids.fetch_add(1, Ordering::SeqCst);
                (StatusCode::OK, message_json(id, &CHANNEL.to_string(), &json_body))
            }
            ("POST", ["", "users", "@me", "channels"]) => {
                let user = json_body["recipient_id"].as_str().unwrap_or_default().to_owned();
                let channel = user.parse::<u64>().map(|u| u + 1).unwrap_or(1).to_string();
                state.dm_channels.lock().unwrap().insert(channel.clone(), user.clone());
                let recipient = json!({"id": user, "username": "someone", "discriminator": "0", "global_name": null, "avatar": null});
                (StatusCode::OK, json!({"id": channel, "type": 1, "last_message_id": null, "recipients": [recipient]}))
            }
            ("POST", ["", "channels", channel, "messages"]) => {
                let latency = state.message_latency_us.load(Ordering::SeqCst);
                if latency > 0 {
                    tokio::time::sleep(Duration::from_micros(latency)).await;
                }
                let recipient = state.dm_channels.lock().unwrap().get(*channel).cloned();
                if recipient.is_some_and(|u| state.closed_dms.lock().unwrap().contains(&u)) {
                    (StatusCode::FORBIDDEN, json!({"message": "Cannot send messages to this user", "code": 50007}))
                } else {
                    let id = state.ids.fetch_add(1, Ordering::SeqCst);
                    (StatusCode::OK, message_json(id, channel, &json_body))
                }
            }
            _ => (StatusCode::NOT_FOUND, json!({"message": "404: Not Found", "code": 0})),
        }
    };
    let call = Call { method: m, path, body: json_body, files, status: status.as_u16(), at: std::time::Instant::now() };
    if call.is_callback() {
        state.callbacks.fetch_add(1, Ordering::SeqCst);
    }
    state.calls.lock().unwrap().push(call);
    state.changed.notify_waiters();
    if status == StatusCode::NO_CONTENT {
        return status.into_response();
    }
    reply(status, response)
}

async fn gateway(AxumState(state): AxumState<Arc<State>>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| session(state, socket))
}

async fn session(state: Arc<State>, mut socket: WebSocket) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let hello = json!({"op": 10, "d": {"heartbeat_interval": 41_250}}).to_string();
    if socket.send(WsMessage::Text(hello.into())).await.is_err() {
        return;
    }
    let port = state.port.load(Ordering::SeqCst);
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(WsCmd::Send(frame)) => {
                    if socket.send(WsMessage::Text(frame.into())).await.is_err() {
                        return;
                    }
                }
                Some(WsCmd::Close) | None => {
                    // A dropped connection, not a polite close: the client must resume or reconnect.
                    return;
                }
            },
            msg = socket.recv() => {
                let Some(Ok(msg)) = msg else { return };
                let WsMessage::Text(text) = msg else { continue };
                let Ok(frame) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                match frame["op"].as_u64() {
                    Some(1) => {
                        let ack = json!({"op": 11}).to_string();
                        if socket.send(WsMessage::Text(ack.into())).await.is_err() {
                            return;
                        }
                    }
                    Some(2) => {
                        state.identifies.fetch_add(1, Ordering::SeqCst);
                        let shard = &frame["d"]["shard"];
                        let (id, count) = (shard[0].as_u64().unwrap_or(0), shard[1].as_u64().unwrap_or(1));
                        let ready = json!({"op": 0, "t": "READY", "s": 1, "d": {
                            "v": 10,
                            "user": user_json(LASTMILE),
                            "guilds": [],
                            "session_id": format!("fake-session-{id}-{count}"),
                            "shard": [id, count],
                            "resume_gateway_url": format!("ws://127.0.0.1:{port}/ws"),
                            "application": {"id": APP_ID.to_string(), "flags": 0},
                        }}).to_string();
                        if socket.send(WsMessage::Text(ready.into())).await.is_err() {
                            return;
                        }
                        state.sockets.lock().unwrap().entry(id).or_default().push((count, tx.clone()));
                        state.changed.notify_waiters();
                    }
                    Some(6) => {
                        state.resumes.fetch_add(1, Ordering::SeqCst);
                        let s = state.seq.load(Ordering::SeqCst) + 1;
                        let resumed = json!({"op": 0, "t": "RESUMED", "s": s, "d": {}}).to_string();
                        if socket.send(WsMessage::Text(resumed.into())).await.is_err() {
                            return;
                        }
                        // The session id says which shard resumes (see READY).
                        let session = frame["d"]["session_id"].as_str().unwrap_or_default().to_owned();
                        let mut parts = session.rsplit('-').filter_map(|p| p.parse::<u64>().ok());
                        let (count, id) = (parts.next().unwrap_or(1), parts.next().unwrap_or(0));
                        state.sockets.lock().unwrap().entry(id).or_default().push((count, tx.clone()));
                        state.changed.notify_waiters();
                    }
                    _ => {}
                }
            }
        }
    }
}
