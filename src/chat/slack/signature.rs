//! Slack's request signing, for HTTP mode: a request is answered only when `X-Slack-Signature` is
//! `v0=` + hex(HMAC-SHA256(signing secret, `v0:{X-Slack-Request-Timestamp}:{raw body}`)), compared in constant time,
//! its timestamp is within five minutes of now, and the same signature was not accepted before (a replay).
//! Nothing of the request is parsed before that. Time is a parameter: `now` is passed in.

use std::collections::{HashSet, VecDeque};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Secret;

/// How far a request's timestamp may be from now, either way (Slack: five minutes).
pub const MAX_SKEW_SECS: i64 = 300;
/// Signatures remembered to refuse replays: more than one replica is sent in five minutes.
const SEEN_KEPT: usize = 100_000;

/// Why a request was refused (logged; the answer is a bare 401 either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MissingHeaders,
    Stale,
    BadSignature,
    Replayed,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::MissingHeaders => "missing signature headers",
            Refusal::Stale => "timestamp more than five minutes from now",
            Refusal::BadSignature => "invalid request signature",
            Refusal::Replayed => "request already received",
        }
    }
}

/// Checks requests against the app's signing secret, and remembers the signatures it accepted.
pub struct Verifier {
    secret: Secret,
    seen: HashSet<String>,
    order: VecDeque<String>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("secret", &self.secret).finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(secret: Secret) -> Self {
        Self { secret, seen: HashSet::new(), order: VecDeque::new() }
    }

    /// Whether a request with these headers and this raw body may be answered at `now` (Unix seconds). An
    /// accepted signature is refused the next time.
    pub fn check(
        &mut self,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<(), Refusal> {
        let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
            return Err(Refusal::MissingHeaders);
        };
        if !fresh(timestamp, now) {
            return Err(Refusal::Stale);
        }
        let given = signature.strip_prefix("v0=").and_then(unhex).ok_or(Refusal::BadSignature)?;
        let mut mac =
            Hmac::<Sha256>::new_from_slice(self.secret.expose().as_bytes()).map_err(|_| Refusal::BadSignature)?;
        mac.update(b"v0:");
        mac.update(timestamp.as_bytes());
        mac.update(b":");
        mac.update(body);
        // `verify_slice` compares in constant time.
        mac.verify_slice(&given).map_err(|_| Refusal::BadSignature)?;
        let key = signature.to_ascii_lowercase();
        if !self.seen.insert(key.clone()) {
            return Err(Refusal::Replayed);
        }
        self.order.push_back(key);
        if self.order.len() > SEEN_KEPT
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        Ok(())
    }
}

/// Whether a request signed at `timestamp` (Unix seconds, as text) may be answered at `now`.
pub fn fresh(timestamp: &str, now: i64) -> bool {
    timestamp.parse::<i64>().is_ok_and(|t| (now - t).abs() <= MAX_SKEW_SECS)
}

/// The signature's bytes: 64 hex digits.
fn unhex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok()).collect()
}

/// The signature Slack would send for `body` at `timestamp` (for tests and tools that sign as Slack does).
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!("v0={}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slack's documented example: this secret, timestamp and body give this signature.
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TIMESTAMP: &str = "1531420618";
    const BODY: &[u8] = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn verifier() -> Verifier {
        Verifier::new(serde_json::from_value(serde_json::json!(SECRET)).unwrap())
    }

    #[test]
    fn slacks_documented_example_verifies_once() {
        assert_eq!(sign(SECRET, TIMESTAMP, BODY), SIGNATURE);
        let mut v = verifier();
        let now = TIMESTAMP.parse::<i64>().unwrap() + 10;
        assert_eq!(v.check(Some(TIMESTAMP), Some(SIGNATURE), BODY, now), Ok(()));
        assert_eq!(v.check(Some(TIMESTAMP), Some(SIGNATURE), BODY, now), Err(Refusal::Replayed));
    }

    #[test]
    fn forged_altered_stale_or_unsigned_requests_are_refused() {
        let mut v = verifier();
        let now = TIMESTAMP.parse::<i64>().unwrap();
        let forged = sign("another secret", TIMESTAMP, BODY);
        assert_eq!(v.check(Some(TIMESTAMP), Some(&forged), BODY, now), Err(Refusal::BadSignature));
        let altered = [BODY, b"&text=kill"].concat();
        assert_eq!(v.check(Some(TIMESTAMP), Some(SIGNATURE), &altered, now), Err(Refusal::BadSignature));
        assert_eq!(v.check(Some("1531420619"), Some(SIGNATURE), BODY, now), Err(Refusal::BadSignature));
        assert_eq!(v.check(Some(TIMESTAMP), Some(SIGNATURE), BODY, now + 301), Err(Refusal::Stale));
        assert_eq!(v.check(Some(TIMESTAMP), Some(SIGNATURE), BODY, now - 301), Err(Refusal::Stale));
        assert_eq!(v.check(None, Some(SIGNATURE), BODY, now), Err(Refusal::MissingHeaders));
        assert_eq!(v.check(Some(TIMESTAMP), None, BODY, now), Err(Refusal::MissingHeaders));
        for bad in ["a2114d57", "v1=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503", "v0=zz"] {
            assert_eq!(v.check(Some(TIMESTAMP), Some(bad), BODY, now), Err(Refusal::BadSignature), "{bad}");
        }
        // None of the refusals counted as seen: the genuine request is still accepted once.
        assert_eq!(v.check(Some(TIMESTAMP), Some(SIGNATURE), BODY, now), Ok(()));
    }

    #[test]
    fn a_timestamp_is_fresh_within_five_minutes_either_way() {
        assert!(fresh("1000", 1300));
        assert!(fresh("1300", 1000));
        assert!(!fresh("1000", 1301));
        assert!(!fresh("", 1000));
        assert!(!fresh("1e3", 1000));
    }
}
