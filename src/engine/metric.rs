//! The names of what the bot measures, recorded through the `metrics` facade (a no-op until a recorder is
//! installed: `chat::ops` installs the Prometheus one). One place for the names, so that the adapters, the
//! scheduler and the engine count under the same ones.

/// Interactions handled, by `platform` (console, discord) and `kind` (command, text, button, menu, form,
/// autocomplete).
pub const INTERACTIONS: &str = "lastmile_interactions_total";
/// Seconds the engine took to answer one request (a dialogue step, a command).
pub const STEP_SECONDS: &str = "lastmile_step_seconds";
/// Refusals shown to users, by `reason` (a vague answer, a rule at commit, a bad format…).
pub const REFUSALS: &str = "lastmile_refusals_total";
/// Scheduled messages, by `kind` (heads_up, nudge, digest) and `outcome` (sent; failed; fallback: a closed DM
/// replaced by a mention in the pilot's channel).
pub const SCHEDULED: &str = "lastmile_scheduled_messages_total";
/// Pilots due for the scheduler now, and how long the oldest has waited.
pub const DUE_BACKLOG: &str = "lastmile_due_backlog";
pub const OLDEST_DUE_SECONDS: &str = "lastmile_oldest_due_seconds";
/// Database connections, by `state` (open, idle, in_use).
pub const DB_CONNECTIONS: &str = "lastmile_db_connections";
/// Pilots claimed by one scheduler batch.
pub const SWEEP_BATCH_SIZE: &str = "lastmile_sweep_batch_size";

/// Counts one refusal shown to a user.
pub fn refused(reason: impl Into<metrics::SharedString>) {
    metrics::counter!(REFUSALS, "reason" => reason.into()).increment(1);
}

/// Counts one interaction of an adapter.
pub fn interaction(platform: &'static str, kind: &'static str) {
    metrics::counter!(INTERACTIONS, "platform" => platform, "kind" => kind).increment(1);
}

/// Counts one scheduled message's outcome.
pub fn scheduled(kind: &'static str, outcome: &'static str) {
    metrics::counter!(SCHEDULED, "kind" => kind, "outcome" => outcome).increment(1);
}

/// Registers every metric's help text (shown as `# HELP` lines).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(INTERACTIONS, "Interactions handled, by platform and kind.");
    describe_histogram!(STEP_SECONDS, metrics::Unit::Seconds, "Time the engine took to answer one request.");
    describe_counter!(REFUSALS, "Refusals shown to users, by reason.");
    describe_counter!(SCHEDULED, "Scheduled messages by kind and outcome (sent, failed, fallback).");
    describe_gauge!(DUE_BACKLOG, "Pilots whose scheduled message is due now.");
    describe_gauge!(OLDEST_DUE_SECONDS, metrics::Unit::Seconds, "How long the oldest due pilot has waited.");
    describe_gauge!(DB_CONNECTIONS, "Database pool connections, by state.");
    describe_histogram!(SWEEP_BATCH_SIZE, "Pilots claimed by one scheduler batch.");
    describe_histogram!(crate::store::COMMIT_BATCH_SIZE, "Users' turns written by one database commit.");
}
