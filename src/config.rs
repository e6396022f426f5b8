//! Configuration: built-in defaults < `lastmile.toml` < `LASTMILE_*` environment variables (and
//! `DATABASE_URL`, `DISCORD_TOKEN`, `SLACK_BOT_TOKEN`, ...) < command-line flags. Secrets never print.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::engine::EngineSettings;

/// A secret value: shown as `[redacted]` in every `Debug` and `Display`.
#[derive(Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `sqlite://lastmile.db` (created when missing) or `postgres://user@host/db`.
    pub database_url: String,
    /// A folder with `messages.toml` and `vagueness.toml` replacing the built-in prompts.
    pub prompts_dir: Option<PathBuf>,
    /// How far ahead a first review may be set, in days.
    pub review_horizon_days: u32,
    /// The first review date proposed by default, in weeks.
    pub default_review_weeks: u32,
    /// How many pilots `/pilot list` shows before "and N more".
    pub list_limit: u32,
    pub console: ConsoleConfig,
    /// The Discord bot token (`DISCORD_TOKEN`). Never logged.
    pub discord_token: Option<Secret>,
    /// Register the slash commands in this server only (`DISCORD_GUILD_ID`); globally when unset.
    pub discord_guild_id: Option<u64>,
    /// Send Discord REST calls through this base URL (`LASTMILE_DISCORD_API_URL`): a shared rate-limiting proxy.
    pub discord_api_url: Option<String>,
    /// This process's gateway shard, `id/count` (`LASTMILE_DISCORD_SHARD=0/2`): to run several processes on one
    /// token, give each its own shard, so that each interaction reaches one of them. One shard when unset.
    pub discord_shard: Option<Shard>,
    /// Receive Discord's interactions over HTTP on this address instead of the gateway (`LASTMILE_DISCORD_LISTEN`,
    /// `lastmile discord --listen`).
    pub discord_listen: Option<SocketAddr>,
    /// The application's public key that signs those requests (`DISCORD_PUBLIC_KEY`).
    pub discord_public_key: Option<String>,
    /// The Slack bot token, `xoxb-...` (`SLACK_BOT_TOKEN`). Never logged.
    pub slack_bot_token: Option<Secret>,
    /// The Slack app-level token for Socket Mode, `xapp-...` (`SLACK_APP_TOKEN`). Never logged.
    pub slack_app_token: Option<Secret>,
    /// The Slack app's signing secret, which signs requests in HTTP mode (`SLACK_SIGNING_SECRET`). Never logged.
    pub slack_signing_secret: Option<Secret>,
    /// Send Slack Web API calls (and so Socket Mode's `apps.connections.open`) to this base URL instead of
    /// `https://slack.com/api/` (`LASTMILE_SLACK_API_URL`); only then is plain `http` allowed.
    pub slack_api_url: Option<String>,
    /// How often the bot looks for due nudges and digests, in seconds.
    pub scheduler_interval_secs: u64,
    /// How long a process holds the pilots it claimed to send their messages, in seconds: a process that dies
    /// between sending a message and recording it has it sent again once, this long after (the lease window).
    pub scheduler_lease_secs: u64,
    /// Serve `/healthz`, `/readyz` and `/metrics` on this address (`--ops-listen`, `LASTMILE_OPS_LISTEN`).
    pub ops_listen: Option<SocketAddr>,
    /// `text` or `json` (one object a line), for logs on stderr (`LASTMILE_LOG_FORMAT`).
    pub log_format: LogFormat,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    pub workspace: String,
    pub user: String,
    pub channel: String,
    /// Console names that are bots (refused as owners and sponsors).
    pub bots: Vec<String>,
    /// Console names that are workspace admins (may change `/lastmile config`).
    pub admins: Vec<String>,
    /// Where the console writes charts.
    pub chart_dir: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: "sqlite://lastmile.db".into(),
            prompts_dir: None,
            review_horizon_days: 365,
            default_review_weeks: 6,
            list_limit: 25,
            console: ConsoleConfig {
                workspace: "default".into(),
                user: "you".into(),
                channel: "general".into(),
                bots: vec!["lastmile".into()],
                admins: vec!["you".into()],
                chart_dir: std::env::temp_dir().join("lastmile-charts"),
            },
            discord_token: None,
            discord_guild_id: None,
            discord_api_url: None,
            discord_shard: None,
            discord_listen: None,
            discord_public_key: None,
            slack_bot_token: None,
            slack_app_token: None,
            slack_signing_secret: None,
            slack_api_url: None,
            scheduler_interval_secs: 60,
            scheduler_lease_secs: 300,
            ops_listen: None,
            log_format: LogFormat::Text,
        }
    }
}

impl Config {
    /// Reads `file` (when it exists), then the environment, over the defaults.
    pub fn load(file: &Path) -> Result<Self, Box<figment::Error>> {
        Self::figment(file).extract().map_err(Box::new)
    }

    fn figment(file: &Path) -> Figment {
        Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(file))
            .merge(
                Env::prefixed("LASTMILE_")
                    .filter(|k| !k.as_str().to_ascii_lowercase().starts_with("test_"))
                    .split("__"),
            )
            .merge(
                Env::raw()
                    .only(&[
                        "DATABASE_URL",
                        "DISCORD_TOKEN",
                        "DISCORD_GUILD_ID",
                        "DISCORD_PUBLIC_KEY",
                        "SLACK_BOT_TOKEN",
                        "SLACK_APP_TOKEN",
                        "SLACK_SIGNING_SECRET",
                    ])
                    .map(|k| k.as_str().to_ascii_lowercase().into()),
            )
    }

    pub fn engine_settings(&self) -> EngineSettings {
        EngineSettings {
            review_horizon_days: self.review_horizon_days,
            default_review_weeks: self.default_review_weeks,
            list_limit: i64::from(self.list_limit.max(1)),
        }
    }
}

/// One Discord gateway shard of several: Discord sends a server's events to shard `(server id >> 22) % count`,
/// and direct messages to shard 0. Written `id/count`, like `1/3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Shard {
    pub id: u32,
    pub count: u32,
}

impl TryFrom<String> for Shard {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let bad = || format!("a shard is written id/count, like 0/2 (ids start at 0, below the count), not {s:?}");
        let (id, count) = s.trim().split_once('/').ok_or_else(bad)?;
        let (id, count) =
            (id.trim().parse::<u32>().map_err(|_| bad())?, count.trim().parse::<u32>().map_err(|_| bad())?);
        if count == 0 || id >= count {
            return Err(bad());
        }
        Ok(Shard { id, count })
    }
}

impl From<Shard> for String {
    fn from(s: Shard) -> String {
        format!("{}/{}", s.id, s.count)
    }
}

/// A database URL with any password replaced, safe to log.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:[redacted]{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_passwords_never_print() {
        let c = Config {
            discord_token: Some(Secret("abc.def".into())),
            slack_bot_token: Some(Secret("xoxb-1-2-bot".into())),
            slack_app_token: Some(Secret("xapp-1-A1-app".into())),
            slack_signing_secret: Some(Secret("8f742231b10e8888abcd99yyyzzz85a5".into())),
            ..Config::default()
        };
        let shown = format!("{c:?}");
        for secret in ["abc.def", "xoxb-1-2-bot", "xapp-1-A1-app", "8f742231b10e8888abcd99yyyzzz85a5"] {
            assert!(!shown.contains(secret), "{secret} printed");
        }
        assert_eq!(redact_url("postgres://bob:hunter2@db:5432/x"), "postgres://bob:[redacted]@db:5432/x");
        assert_eq!(redact_url("sqlite://lastmile.db"), "sqlite://lastmile.db");
    }

    #[test]
    fn file_then_environment_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("lastmile.toml", "review_horizon_days = 200\n[console]\nworkspace = \"acme\"\n")?;
            jail.set_env("LASTMILE_REVIEW_HORIZON_DAYS", "100");
            jail.set_env("DATABASE_URL", "postgres://u:p@h/db");
            jail.set_env("DISCORD_TOKEN", "tok");
            jail.set_env("DISCORD_GUILD_ID", "123");
            jail.set_env("LASTMILE_DISCORD_API_URL", "http://127.0.0.1:9/");
            jail.set_env("LASTMILE_DISCORD_SHARD", "1/3");
            jail.set_env("LASTMILE_LOG_FORMAT", "json");
            jail.set_env("LASTMILE_OPS_LISTEN", "127.0.0.1:9090");
            jail.set_env("DISCORD_PUBLIC_KEY", "ab12");
            jail.set_env("SLACK_BOT_TOKEN", "xoxb-b");
            jail.set_env("SLACK_APP_TOKEN", "xapp-a");
            jail.set_env("SLACK_SIGNING_SECRET", "s3");
            jail.set_env("LASTMILE_SLACK_API_URL", "http://127.0.0.1:9/api/");
            let c = Config::load(Path::new("lastmile.toml")).map_err(|e| e.to_string())?;
            assert_eq!(c.review_horizon_days, 100);
            assert_eq!(c.console.workspace, "acme");
            assert_eq!(c.console.user, "you");
            assert_eq!(c.database_url, "postgres://u:p@h/db");
            assert_eq!(c.discord_token.as_ref().map(Secret::expose), Some("tok"));
            assert_eq!(c.discord_guild_id, Some(123));
            assert_eq!(c.discord_api_url.as_deref(), Some("http://127.0.0.1:9/"));
            assert_eq!(c.discord_shard, Some(Shard { id: 1, count: 3 }));
            assert_eq!(c.log_format, LogFormat::Json);
            assert_eq!(c.ops_listen, Some("127.0.0.1:9090".parse().unwrap()));
            assert_eq!(c.discord_public_key.as_deref(), Some("ab12"));
            assert_eq!(c.slack_bot_token.as_ref().map(Secret::expose), Some("xoxb-b"));
            assert_eq!(c.slack_app_token.as_ref().map(Secret::expose), Some("xapp-a"));
            assert_eq!(c.slack_signing_secret.as_ref().map(Secret::expose), Some("s3"));
            assert_eq!(c.slack_api_url.as_deref(), Some("http://127.0.0.1:9/api/"));
            Ok(())
        });
    }

    #[test]
    fn a_shard_is_id_slash_count_with_the_id_below_the_count() {
        assert_eq!(Shard::try_from(" 0 / 2 ".to_owned()), Ok(Shard { id: 0, count: 2 }));
        for bad in ["2/2", "0/0", "1", "a/2", "-1/2", "0/2/3"] {
            let err = Shard::try_from(bad.to_owned()).unwrap_err();
            assert!(err.contains("like 0/2") && err.contains(bad), "{bad}: {err}");
        }
        figment::Jail::expect_with(|jail| {
            jail.set_env("LASTMILE_DISCORD_SHARD", "3/2");
            let err = Config::load(Path::new("none.toml")).unwrap_err().to_string();
            assert!(err.contains("like 0/2"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn the_example_file_is_valid() {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/lastmile.example.toml");
        figment::Jail::expect_with(|_| {
            Config::load(Path::new(example)).map_err(|e| e.to_string())?;
            Ok(())
        });
    }
}
