//! Chat adapters (console, Discord, Slack): each translates its platform's events into engine requests and replies back. None decides.

pub mod console;
pub mod discord;
mod inflight;
pub mod ops;
pub mod serve;
pub mod slack;

/// Logs are JSON lines: a status line for people is then one more JSON log line instead of free text.
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Says that logs are JSON lines (from `LASTMILE_LOG_FORMAT=json`).
pub fn set_json_logs(on: bool) {
    JSON_LOGS.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// A status line for the person who started the bot (connected, shutting down), on stderr.
pub fn status(line: &str) {
    if JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
        tracing::info!(target: "lastmile", "{line}");
    } else {
        eprintln!("{line}");
    }
}
