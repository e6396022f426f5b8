//! Discord's HTTP interactions endpoint (`lastmile discord --listen ADDR`): Discord POSTs each interaction to the
//! bot's URL instead of sending it over the gateway, so any number of replicas answer behind a load balancer,
//! without shards. Nothing is parsed before the request is proven to come from Discord: the Ed25519 signature of
//! timestamp + raw body must verify with the application's public key, the timestamp must be within five minutes
//! of now, and a signature seen before (a replayed request) is refused. The interaction's first response is the
//! body of the answer; everything after it goes over REST, as on the gateway.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serenity::all::{Http, Interaction};
use serenity::interactions_endpoint::Verifier;

use super::Handler;

/// How far a request's timestamp may be from now, either way.
pub const MAX_SKEW_SECS: i64 = 300;
/// How many signatures are remembered to refuse replays: more than Discord sends one replica in five minutes.
const SEEN_KEPT: usize = 100_000;
/// The largest body read: interactions are small, even with resolved users and messages.
const MAX_BODY: usize = 256 * 1024;

/// The application's public key (Developer Portal, General Information), 64 hex digits.
#[derive(Clone)]
pub struct PublicKey(Verifier);

impl PublicKey {
    pub fn parse(hex: &str) -> Result<Self, String> {
        let hex = hex.trim();
        let bad = || "DISCORD_PUBLIC_KEY must be the application's public key: 64 hexadecimal digits".to_owned();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Verifier::try_new(key).map(PublicKey).map_err(|e| format!("DISCORD_PUBLIC_KEY is not a valid Ed25519 key: {e}"))
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PublicKey")
    }
}

/// Signatures already accepted, oldest first, to refuse a request sent twice.
#[derive(Default)]
struct Seen {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl Seen {
    /// Whether `signature` is new (and now remembered).
    fn first_time(&mut self, signature: &str) -> bool {
        if self.set.contains(signature) {
            return false;
        }
        if self.order.len() >= SEEN_KEPT
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.set.insert(signature.to_owned());
        self.order.push_back(signature.to_owned());
        true
    }
}

#[derive(Clone)]
struct Endpoint {
    handler: Arc<Handler>,
    http: Arc<Http>,
    key: PublicKey,
    seen: Arc<Mutex<Seen>>,
}

/// The routes: `POST /interactions` (the URL to give Discord ends with it) and `POST /`.
pub(super) fn router(handler: Arc<Handler>, http: Arc<Http>, key: PublicKey) -> Router {
    let endpoint = Endpoint { handler, http, key, seen: Arc::default() };
    Router::new()
        .route("/", post(interactions))
        .route("/interactions", post(interactions))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(endpoint)
}

fn unauthorized(why: &'static str) -> Response {
    tracing::warn!(why, "interaction request refused");
    (StatusCode::UNAUTHORIZED, format!("{why}\n")).into_response()
}

/// Whether a request signed at `timestamp` (Unix seconds, as text) may be answered at `now`.
pub fn fresh(timestamp: &str, now: i64) -> bool {
    timestamp.parse::<i64>().is_ok_and(|t| (now - t).abs() <= MAX_SKEW_SECS)
}

async fn interactions(State(ep): State<Endpoint>, headers: HeaderMap, body: Bytes) -> Response {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(signature), Some(timestamp)) = (text("x-signature-ed25519"), text("x-signature-timestamp")) else {
        return unauthorized("missing signature headers");
    };
    if !fresh(timestamp, chrono::Utc::now().timestamp()) {
        return unauthorized("timestamp more than five minutes from now");
    }
    if ep.key.0.verify(signature, timestamp, &body).is_err() {
        return unauthorized("invalid request signature");
    }
    if !ep.seen.lock().unwrap_or_else(PoisonError::into_inner).first_time(&signature.to_ascii_lowercase()) {
        return unauthorized("request already received");
    }
    let interaction: Interaction = match serde_json::from_slice(&body) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "an interaction that does not parse");
            return (StatusCode::BAD_REQUEST, "not an interaction\n").into_response();
        }
    };
    if matches!(interaction, Interaction::Ping(_)) {
        return json(&serde_json::json!({ "type": 1 }));
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    // The work goes on after the response is written (follow-ups, messages elsewhere): it runs on its own.
    let Endpoint { handler, http, .. } = ep;
    tokio::spawn(async move { handler.interaction(&http, interaction, Some(tx)).await });
    match rx.await {
        Ok(response) => json(&response),
        Err(_) => {
            // The handler answers every interaction it takes; one it ignored has no response.
            (StatusCode::BAD_REQUEST, "interaction not handled\n").into_response()
        }
    }
}

fn json(value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot write an interaction response");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_key_is_64_hex_digits_of_a_valid_key() {
        assert!(PublicKey::parse("zz").unwrap_err().contains("64 hexadecimal"));
        assert!(PublicKey::parse(&"g".repeat(64)).unwrap_err().contains("64 hexadecimal"));
        // The Ed25519 base point's encoding is a valid key.
        assert!(PublicKey::parse("5866666666666666666666666666666666666666666666666666666666666666").is_ok());
    }

    #[test]
    fn a_timestamp_is_fresh_within_five_minutes_either_way() {
        assert!(fresh("1000", 1000 + 300));
        assert!(fresh("1300", 1000));
        assert!(!fresh("1000", 1301));
        assert!(!fresh("1301", 1000));
        assert!(!fresh("", 1000));
        assert!(!fresh("1e3", 1000));
    }

    #[test]
    fn a_signature_is_accepted_once() {
        let mut seen = Seen::default();
        assert!(seen.first_time("ab"));
        assert!(!seen.first_time("ab"));
        assert!(seen.first_time("cd"));
    }
}
