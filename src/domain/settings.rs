//! A workspace's settings: who may decide, and the cadence of reviews, nudges and digests.

use serde::{Deserialize, Serialize};

use super::UserId;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkspaceSettings {
    /// Workspace admins: they may change these settings (and decide, when `deciders` names them).
    pub admins: Vec<UserId>,
    /// Who may decide at a review: any of `sponsor`, `registrant`, `owner`, `admins`.
    pub deciders: Vec<String>,
    /// A pilot is scoped only with a sponsor (senior ownership is not optional) unless an admin turns this off.
    pub sponsor_required: bool,
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
    /// How often these settings were saved (0: never, the defaults): a change decided on one revision is written
    /// only while it is still the one in force. Kept beside the settings, not in them.
    #[serde(skip)]
    pub revision: i64,
}

impl Default for WorkspaceSettings {
    fn default() -> Self {
        Self {
            admins: Vec::new(),
            deciders: ["sponsor", "registrant", "admins"].map(String::from).to_vec(),
            sponsor_required: true,
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
            revision: 0,
        }
    }
}

impl WorkspaceSettings {
    pub fn is_admin(&self, user: &UserId) -> bool {
        self.admins.contains(user)
    }
}

/// The settings `/lastmile config` can change, in the order it shows them.
pub const SETTING_NAMES: &[&str] = &[
    "review_channel",
    "timezone",
    "quiet_hours",
    "working_days",
    "heads_up_days",
    "grace_days",
    "nudge_every_days",
    "escalate_after",
    "post_after",
    "snooze_days",
    "max_snoozes",
    "extension_limit",
    "digest",
    "admins",
    "deciders",
    "sponsor_required",
];

const DECIDER_ROLES: [&str; 4] = ["sponsor", "registrant", "owner", "admins"];

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    #[error("unknown setting")]
    Unknown,
    #[error("invalid value")]
    Invalid,
}

/// The longest value a setting takes (the longest is a list of admins' mentions).
const MAX_VALUE_CHARS: usize = 1000;
const MAX_CHANNEL_CHARS: usize = 80;
const MAX_ADMINS: usize = 25;

/// A digest is a digest: no two of a schedule's runs in the coming year fall on the same day.
fn at_most_daily(cron: &croner::Cron) -> bool {
    let Some(from) = chrono::NaiveDate::from_ymd_opt(2027, 1, 1).and_then(|d| d.and_hms_opt(0, 0, 0)) else {
        return false;
    };
    let mut days = std::collections::HashSet::new();
    cron.iter_after(from.and_utc()).take(370).all(|t| days.insert(t.date_naive()))
}

fn number(value: &str, range: std::ops::RangeInclusive<u32>) -> Result<u32, SettingError> {
    value.trim().parse().ok().filter(|n| range.contains(n)).ok_or(SettingError::Invalid)
}

/// `mon-fri`, `mon,wed,fri`, `sat-sun`.
fn working_days(value: &str) -> Result<Vec<String>, SettingError> {
    let index = |d: &str| DAYS.iter().position(|x| d.trim().to_lowercase().starts_with(x));
    let mut days = Vec::new();
    for part in value.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (index(a).ok_or(SettingError::Invalid)?, index(b).ok_or(SettingError::Invalid)?);
                if a > b {
                    return Err(SettingError::Invalid);
                }
                days.extend((a..=b).map(|i| DAYS[i].to_owned()));
            }
            None => days.push(DAYS[index(part).ok_or(SettingError::Invalid)?].to_owned()),
        }
    }
    days.sort_by_key(|d| DAYS.iter().position(|x| x == d));
    days.dedup();
    if days.is_empty() { Err(SettingError::Invalid) } else { Ok(days) }
}

impl WorkspaceSettings {
    /// Changes one setting from its text form; nothing changes when the value is invalid.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), SettingError> {
        let v = value.trim();
        if v.chars().count() > MAX_VALUE_CHARS {
            return Err(SettingError::Invalid);
        }
        let none = v.eq_ignore_ascii_case("none") || v.eq_ignore_ascii_case("off");
        match name {
            "review_channel" if none => self.review_channel = None,
            "review_channel" => {
                // A channel: a platform's mention of one (`<#123>`), or its name or id (`#ai-reviews`, `C024BE91L`).
                let id = v.trim_start_matches("<#").trim_end_matches('>').trim_start_matches('#');
                let channel_like = |c: char| c.is_alphanumeric() || "-_.".contains(c);
                if id.is_empty() || id.chars().count() > MAX_CHANNEL_CHARS || !id.chars().all(channel_like) {
                    return Err(SettingError::Invalid);
                }
                self.review_channel = Some(id.to_owned());
            }
            "timezone" => {
                v.parse::<chrono_tz::Tz>().map_err(|_| SettingError::Invalid)?;
                self.timezone = v.to_owned();
            }
            "quiet_hours" if none => (self.quiet_start, self.quiet_end) = (0, 0),
            "quiet_hours" => {
                let (a, b) = v.split_once('-').ok_or(SettingError::Invalid)?;
                (self.quiet_start, self.quiet_end) = (number(a, 0..=23)?, number(b, 0..=23)?);
            }
            "working_days" => self.working_days = working_days(v)?,
            "heads_up_days" => self.heads_up_days = number(v, 0..=30)?,
            "grace_days" => self.grace_days = number(v, 0..=30)?,
            "nudge_every_days" => self.nudge_every_days = number(v, 1..=90)?,
            "escalate_after" => self.escalate_after = number(v, 1..=20)?,
            "post_after" => self.post_after = number(v, 1..=20)?,
            "snooze_days" => self.snooze_days = number(v, 1..=60)?,
            "max_snoozes" => self.max_snoozes = number(v, 0..=10)?,
            "extension_limit" => self.extension_limit = number(v, 0..=20)?,
            "digest" if none => self.digest_cron = "off".into(),
            "digest" => {
                let cron = croner::Cron::new(v).parse().map_err(|_| SettingError::Invalid)?;
                if !at_most_daily(&cron) {
                    return Err(SettingError::Invalid);
                }
                self.digest_cron = v.to_owned();
            }
            "admins" if none => self.admins.clear(),
            "admins" => {
                let users = super::person::mentioned_users(v);
                if users.is_empty() || users.len() > MAX_ADMINS {
                    return Err(SettingError::Invalid);
                }
                self.admins = users;
            }
            "deciders" => {
                let roles: Vec<String> =
                    v.split([',', ' ']).map(|r| r.trim().to_lowercase()).filter(|r| !r.is_empty()).collect();
                if roles.is_empty() || roles.iter().any(|r| !DECIDER_ROLES.contains(&r.as_str())) {
                    return Err(SettingError::Invalid);
                }
                self.deciders =
                    DECIDER_ROLES.iter().filter(|r| roles.iter().any(|x| x == *r)).map(|r| r.to_string()).collect();
            }
            "sponsor_required" => {
                self.sponsor_required = match v.to_lowercase().as_str() {
                    "on" | "yes" | "true" => true,
                    "off" | "no" | "false" => false,
                    _ => return Err(SettingError::Invalid),
                }
            }
            _ => return Err(SettingError::Unknown),
        }
        Ok(())
    }

    /// Every setting as `/lastmile config` shows it (mentions in the neutral form).
    pub fn show(&self) -> Vec<(&'static str, String)> {
        SETTING_NAMES
            .iter()
            .map(|name| {
                let value = match *name {
                    "review_channel" => self.review_channel.as_ref().map_or("none".into(), |c| format!("#{c}")),
                    "timezone" => self.timezone.clone(),
                    "quiet_hours" if self.quiet_start == self.quiet_end => "none".into(),
                    "quiet_hours" => format!("{}-{}", self.quiet_start, self.quiet_end),
                    "working_days" => self.working_days.join(","),
                    "heads_up_days" => self.heads_up_days.to_string(),
                    "grace_days" => self.grace_days.to_string(),
                    "nudge_every_days" => self.nudge_every_days.to_string(),
                    "escalate_after" => self.escalate_after.to_string(),
                    "post_after" => self.post_after.to_string(),
                    "snooze_days" => self.snooze_days.to_string(),
                    "max_snoozes" => self.max_snoozes.to_string(),
                    "extension_limit" => self.extension_limit.to_string(),
                    "digest" => self.digest_cron.clone(),
                    "deciders" => self.deciders.join(","),
                    "sponsor_required" => if self.sponsor_required { "on" } else { "off" }.into(),
                    _ if self.admins.is_empty() => "none".into(),
                    _ => self.admins.iter().map(UserId::mention).collect::<Vec<_>>().join(" "),
                };
                (*name, value)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_refuse() {
        let mut s = WorkspaceSettings::default();
        s.set("working_days", "mon-thu").unwrap();
        assert_eq!(s.working_days, vec!["mon", "tue", "wed", "thu"]);
        s.set("working_days", "sun,mon").unwrap();
        assert_eq!(s.working_days, vec!["mon", "sun"]);
        s.set("timezone", "Europe/London").unwrap();
        s.set("quiet_hours", "20-7").unwrap();
        assert_eq!((s.quiet_start, s.quiet_end), (20, 7));
        s.set("review_channel", "#ai-reviews").unwrap();
        assert_eq!(s.review_channel.as_deref(), Some("ai-reviews"));
        s.set("digest", "0 9 * * MON").unwrap();
        s.set("digest", "30 8 * * *").unwrap();
        s.set("review_channel", "<#810000000000000001>").unwrap();
        s.set("admins", "<@alice> <@bob>").unwrap();
        assert_eq!(s.admins.len(), 2);
        s.set("deciders", "admins, sponsor").unwrap();
        assert_eq!(s.deciders, vec!["sponsor", "admins"]);
        s.set("sponsor_required", "off").unwrap();
        assert!(!s.sponsor_required);
        let before = s.clone();
        for (name, value) in [
            ("timezone", "Mars/Olympus"),
            ("quiet_hours", "25-3"),
            ("working_days", "fri-mon"),
            ("nudge_every_days", "0"),
            ("digest", "every monday"),
            ("admins", "the leads"),
            ("review_channel", ""),
            ("deciders", "everyone"),
            ("deciders", ""),
            ("sponsor_required", "maybe"),
            ("review_channel", &"c".repeat(81)),
            ("review_channel", "#reviews; DROP"),
            ("digest", "0 9,17 * * *"),
            ("digest", "*/5 * * * *"),
            ("admins", &(0..26).map(|i| format!("<@u{i}>")).collect::<Vec<_>>().join(" ")),
            ("timezone", &"x".repeat(2000)),
        ] {
            assert_eq!(s.set(name, value), Err(SettingError::Invalid), "{name} {value}");
        }
        assert_eq!(s.set("colour", "blue"), Err(SettingError::Unknown));
        assert_eq!(s, before, "refused values change nothing");
        assert_eq!(s.show().len(), SETTING_NAMES.len());
    }
}
