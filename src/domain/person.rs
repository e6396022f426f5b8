//! People named in answers. Adapters write a mention of a user as `<@id>` and of a role as `<@&id>`
//! (Discord's and Slack's own form); the domain reads only that neutral form.

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// A platform user id (a Discord snowflake, a Slack member id, a console name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub String);

impl UserId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The neutral mention of this user, rendered by each adapter.
    pub fn mention(&self) -> String {
        format!("<@{}>", self.0)
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Exactly one human, named by mention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonRef(pub UserId);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PersonError {
    #[error("no person mentioned")]
    NoMention,
    #[error("{0} people mentioned")]
    Several(usize),
    #[error("a role was mentioned")]
    Role,
    #[error("@everyone or @here was mentioned")]
    Everyone,
    #[error("{0} is a bot")]
    Bot(UserId),
}

static USER_MENTION: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"<@!?([^<>@&\s]+)>").unwrap());
static ROLE_MENTION: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"<@&[^<>\s]+>").unwrap());
static EVERYONE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)@(everyone|here)\b").unwrap());

impl PersonRef {
    /// Reads one person from an answer. `is_bot` says which mentioned users are bots (the adapter knows).
    pub fn parse(text: &str, is_bot: impl Fn(&UserId) -> bool) -> Result<Self, PersonError> {
        if EVERYONE.is_match(text) {
            return Err(PersonError::Everyone);
        }
        if ROLE_MENTION.is_match(text) {
            return Err(PersonError::Role);
        }
        let mut users: Vec<UserId> = Vec::new();
        for cap in USER_MENTION.captures_iter(text) {
            let id = UserId::new(&cap[1]);
            if !users.contains(&id) {
                users.push(id);
            }
        }
        match users.len() {
            0 => Err(PersonError::NoMention),
            1 => {
                let user = users.remove(0);
                if is_bot(&user) { Err(PersonError::Bot(user)) } else { Ok(Self(user)) }
            }
            n => Err(PersonError::Several(n)),
        }
    }
}

/// The user ids mentioned in a text, in order, without repeats.
pub fn mentioned_users(text: &str) -> Vec<UserId> {
    let mut users = Vec::new();
    for cap in USER_MENTION.captures_iter(text) {
        let id = UserId::new(&cap[1]);
        if !users.contains(&id) {
            users.push(id);
        }
    }
    users
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_bots(_: &UserId) -> bool {
        false
    }

    #[test]
    fn one_mention_with_a_note_is_a_person() {
        let p = PersonRef::parse("<@alice>, head of claims operations", no_bots).unwrap();
        assert_eq!(p.0, UserId::new("alice"));
        assert_eq!(PersonRef::parse("<@!123> ", no_bots).unwrap().0, UserId::new("123"));
        assert_eq!(PersonRef::parse("<@bob> (<@bob> again)", no_bots).unwrap().0, UserId::new("bob"));
    }

    #[test]
    fn refuses_groups_roles_bots_and_nobody() {
        assert_eq!(PersonRef::parse("the team", no_bots), Err(PersonError::NoMention));
        assert_eq!(PersonRef::parse("<@a> and <@b>", no_bots), Err(PersonError::Several(2)));
        assert_eq!(PersonRef::parse("<@&42>", no_bots), Err(PersonError::Role));
        assert_eq!(PersonRef::parse("@everyone", no_bots), Err(PersonError::Everyone));
        assert_eq!(PersonRef::parse("<@a> @here", no_bots), Err(PersonError::Everyone));
        let bots = |u: &UserId| u.as_str() == "lastmile";
        assert_eq!(PersonRef::parse("<@lastmile>", bots), Err(PersonError::Bot(UserId::new("lastmile"))));
    }
}
