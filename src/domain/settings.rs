//! A workspace's settings: who may decide, and the cadence of reviews, nudges and digests.

use serde::{Deserialize, Serialize};

use super::UserId;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkspaceSettings {
    /// Workspace admins: they may decide on any pilot and change these settings.
    pub admins: Vec<UserId>,
    /// Extensions beyond this many need the sponsor's confirmation.
    pub extension_limit: u32,
    /// Where escalations and digests are posted (a channel id); none: the pilot's home channel.
    pub review_channel: Option<String>,
    /// IANA time zone for quiet hours, working days and the digest (`Europe/London`).
    pub timezone: String,
    /// Nothing is sent from `quiet_start` until `quiet_end` (hours, 0-23, local time).
    pub quiet_start: u32,
    pub quiet_end: u32,
    /// Days on which messages are sent (`mon` ... `sun`).
    pub working_days: Vec<String>,
    /// A heads-up to the owner this many days before a review date.
    pub heads_up_days: u32,
    /// Days after the review date before the first nudge.
    pub grace_days: u32,
    /// Days between nudges.
    pub nudge_every_days: u32,
    /// Unanswered nudges before the sponsor (or registrant) is asked to step in.
    pub escalate_after: u32,
    /// Unanswered nudges before the review channel is told.
    pub post_after: u32,
    pub snooze_days: u32,
    pub max_snoozes: u32,
    /// When the portfolio digest is posted (cron, in the workspace time zone).
    pub digest_cron: String,
}

impl Default for WorkspaceSettings {
    fn default() -> Self {
        Self {
            admins: Vec::new(),
            extension_limit: 2,
            review_channel: None,
            timezone: "UTC".into(),
            quiet_start: 19,
            quiet_end: 8,
            working_days: ["mon", "tue", "wed", "thu", "fri"].map(String::from).to_vec(),
            heads_up_days: 3,
            grace_days: 1,
            nudge_every_days: 7,
            escalate_after: 2,
            post_after: 3,
            snooze_days: 7,
            max_snoozes: 2,
            digest_cron: "0 9 * * MON".into(),
        }
    }
}

impl WorkspaceSettings {
    pub fn is_admin(&self, user: &UserId) -> bool {
        self.admins.contains(user)
    }
}
