//! The one description of lastmile's commands (names, options, help keys) and the parser for commands typed
//! as text. Chat adapters register the same description with their platform; nothing here does I/O.

use std::collections::BTreeMap;

use crate::prompts::Key;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionKind {
    /// Free text; when typed, it takes every word left over.
    Text,
    /// A pilot by name or id (autocompleted where the platform can).
    Pilot,
    /// One of the scoping steps.
    Step,
    /// One of a fixed set of words.
    Choice(&'static [&'static str]),
    /// One free word.
    Word,
    /// One person (a user picker where the platform has one).
    Person,
}

#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    pub name: &'static str,
    pub kind: OptionKind,
    pub required: bool,
    pub description: Key,
}

#[derive(Debug, Clone, Copy)]
pub struct SubcommandSpec {
    pub name: &'static str,
    pub description: Key,
    pub options: &'static [OptionSpec],
}

#[derive(Debug, Clone, Copy)]
pub struct CommandSpec {
    pub name: &'static str,
    pub description: Key,
    pub subcommands: &'static [SubcommandSpec],
}

const PILOT_OPT: OptionSpec =
    OptionSpec { name: "pilot", kind: OptionKind::Pilot, required: true, description: Key::DescOptPilot };

pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "pilot",
        description: Key::DescPilot,
        subcommands: &[
            SubcommandSpec {
                name: "register",
                description: Key::DescRegister,
                options: &[
                    OptionSpec { name: "name", kind: OptionKind::Text, required: false, description: Key::DescOptName },
                    OptionSpec {
                        name: "workflow",
                        kind: OptionKind::Text,
                        required: false,
                        description: Key::DescOptWorkflow,
                    },
                    OptionSpec {
                        name: "owner",
                        kind: OptionKind::Person,
                        required: false,
                        description: Key::DescOptOwner,
                    },
                    OptionSpec { name: "pnl", kind: OptionKind::Text, required: false, description: Key::DescOptPnl },
                    OptionSpec {
                        name: "sponsor",
                        kind: OptionKind::Person,
                        required: false,
                        description: Key::DescOptSponsor,
                    },
                    OptionSpec {
                        name: "review_date",
                        kind: OptionKind::Text,
                        required: false,
                        description: Key::DescOptReviewDate,
                    },
                ],
            },
            SubcommandSpec { name: "status", description: Key::DescStatus, options: &[PILOT_OPT] },
            SubcommandSpec {
                name: "list",
                description: Key::DescList,
                options: &[OptionSpec {
                    name: "scope",
                    kind: OptionKind::Choice(&["all", "mine"]),
                    required: false,
                    description: Key::DescOptScope,
                }],
            },
            SubcommandSpec {
                name: "edit",
                description: Key::DescEdit,
                options: &[
                    PILOT_OPT,
                    OptionSpec { name: "step", kind: OptionKind::Step, required: true, description: Key::DescOptStep },
                ],
            },
            SubcommandSpec { name: "evidence", description: Key::DescEvidence, options: &[PILOT_OPT] },
            SubcommandSpec {
                name: "review",
                description: Key::DescReview,
                options: &[
                    PILOT_OPT,
                    OptionSpec {
                        name: "decision",
                        kind: OptionKind::Choice(&["scale", "extend", "kill"]),
                        required: true,
                        description: Key::DescOptDecision,
                    },
                ],
            },
            SubcommandSpec { name: "resume", description: Key::DescResume, options: &[] },
            SubcommandSpec { name: "help", description: Key::DescHelp, options: &[] },
        ],
    },
    CommandSpec {
        name: "portfolio",
        description: Key::DescPortfolio,
        subcommands: &[SubcommandSpec { name: "", description: Key::DescPortfolio, options: &[] }],
    },
    CommandSpec {
        name: "lastmile",
        description: Key::DescLastmile,
        subcommands: &[
            SubcommandSpec {
                name: "config",
                description: Key::DescConfig,
                options: &[
                    OptionSpec {
                        name: "setting",
                        kind: OptionKind::Word,
                        required: false,
                        description: Key::DescOptSetting,
                    },
                    OptionSpec {
                        name: "value",
                        kind: OptionKind::Text,
                        required: false,
                        description: Key::DescOptValue,
                    },
                ],
            },
            SubcommandSpec {
                name: "timezone",
                description: Key::DescTimezone,
                options: &[OptionSpec {
                    name: "zone",
                    kind: OptionKind::Word,
                    required: false,
                    description: Key::DescOptZone,
                }],
            },
        ],
    },
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListScope {
    All,
    Mine,
}

/// A command with its options, however it was typed or clicked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `prefill`: answers given with the command (`key: value` when typed), asked for only if missing or refused.
    Register {
        name: Option<String>,
        prefill: Vec<(crate::domain::Step, String)>,
    },
    Status {
        pilot: String,
    },
    List {
        scope: ListScope,
    },
    Edit {
        pilot: String,
        step: String,
    },
    Evidence {
        pilot: String,
    },
    Review {
        pilot: String,
        decision: crate::domain::DecisionKind,
    },
    Resume,
    Help,
    Portfolio,
    Config {
        setting: Option<String>,
        value: Option<String>,
    },
    Timezone {
        zone: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// No such command; `suggestion` is the closest known one.
    Unknown { command: String, suggestion: Option<String> },
    /// A known command with missing or extra options.
    Usage { usage: String },
}

impl SubcommandSpec {
    /// `/pilot edit <pilot> <step>`; a command without subcommands has an empty name (`/portfolio`).
    pub fn usage(&self, command: &str) -> String {
        let mut out = if self.name.is_empty() { format!("/{command}") } else { format!("/{command} {}", self.name) };
        for o in self.options {
            let shown = match o.kind {
                OptionKind::Choice(words) => words.join("|"),
                _ => o.name.to_owned(),
            };
            if o.required {
                out.push_str(&format!(" <{shown}>"));
            } else {
                out.push_str(&format!(" [{shown}]"));
            }
        }
        out
    }
}

fn find_sub(command: &str, sub: &str) -> Option<(&'static CommandSpec, &'static SubcommandSpec)> {
    let spec = COMMANDS.iter().find(|c| c.name == command)?;
    spec.subcommands.iter().find(|s| s.name == sub).map(|s| (spec, s))
}

/// Builds a command from named option values, as a platform delivers them.
pub fn from_options(command: &str, sub: &str, options: &BTreeMap<String, String>) -> Result<Command, ParseError> {
    let (spec, sub_spec) = find_sub(command, sub).ok_or_else(|| unknown(&format!("/{command} {sub}")))?;
    let usage = || ParseError::Usage { usage: sub_spec.usage(spec.name) };
    for o in sub_spec.options {
        if o.required && options.get(o.name).is_none_or(|v| v.trim().is_empty()) {
            return Err(usage());
        }
        if let (OptionKind::Choice(words), Some(v)) = (o.kind, options.get(o.name))
            && !words.contains(&v.to_lowercase().as_str())
        {
            return Err(usage());
        }
    }
    if options.keys().any(|k| !sub_spec.options.iter().any(|o| o.name == k)) {
        return Err(usage());
    }
    let get = |name: &str| options.get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    Ok(match sub_spec.name {
        "register" => Command::Register {
            name: get("name"),
            prefill: crate::domain::Step::ALL
                .iter()
                .filter(|s| **s != crate::domain::Step::Name)
                .filter_map(|s| get(s.as_str()).map(|v| (*s, v)))
                .collect(),
        },
        "status" => Command::Status { pilot: get("pilot").unwrap_or_default() },
        "list" => Command::List {
            scope: if get("scope").is_some_and(|s| s.eq_ignore_ascii_case("mine")) {
                ListScope::Mine
            } else {
                ListScope::All
            },
        },
        "edit" => Command::Edit { pilot: get("pilot").unwrap_or_default(), step: get("step").unwrap_or_default() },
        "evidence" => Command::Evidence { pilot: get("pilot").unwrap_or_default() },
        "review" => Command::Review {
            pilot: get("pilot").unwrap_or_default(),
            decision: get("decision").and_then(|d| crate::domain::DecisionKind::parse(&d)).ok_or_else(usage)?,
        },
        "resume" => Command::Resume,
        "" => Command::Portfolio,
        "config" => Command::Config { setting: get("setting"), value: get("value") },
        "timezone" => Command::Timezone { zone: get("zone") },
        _ => Command::Help,
    })
}

/// Splits on whitespace, keeping "quoted words" together.
fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match quote {
            Some(q) if c == q => {
                out.push(std::mem::take(&mut current));
                quote = None;
            }
            Some(_) => current.push(c),
            None if c == '"' || c == '“' || c == '”' => quote = Some(if c == '“' { '”' } else { c }),
            None if c.is_whitespace() => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            None => current.push(c),
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Parses a command typed as text: `/pilot edit Claims triage workflow`.
pub fn parse(line: &str) -> Result<Command, ParseError> {
    let line = line.trim().trim_start_matches('/');
    let words = tokens(line);
    let Some(command) = words.first() else {
        return Err(unknown("/"));
    };
    let command = command.to_lowercase();
    let Some(spec) = COMMANDS.iter().find(|c| c.name == command) else {
        return Err(unknown(&format!("/{}", words.iter().take(2).cloned().collect::<Vec<_>>().join(" "))));
    };
    if spec.subcommands.iter().any(|s| s.name.is_empty()) {
        return if words.len() == 1 {
            from_options(spec.name, "", &BTreeMap::new())
        } else {
            Err(ParseError::Usage { usage: format!("/{}", spec.name) })
        };
    }
    let Some(sub) = words.get(1) else {
        return Ok(Command::Help);
    };
    let sub = sub.to_lowercase();
    let Some(sub_spec) = spec.subcommands.iter().find(|s| s.name == sub) else {
        return Err(unknown(&format!("/{command} {sub}")));
    };
    if sub_spec.name == "register" {
        return from_options(spec.name, sub_spec.name, &register_options(&words[2..]));
    }
    let mut rest: Vec<String> = words[2..].to_vec();
    let mut options = BTreeMap::new();
    for (i, o) in sub_spec.options.iter().enumerate() {
        if rest.is_empty() {
            break;
        }
        let following = &sub_spec.options[i + 1..];
        // A step may be typed in two words (`review date`).
        let step_words = |words: &[String]| {
            if words.len() >= 3 && crate::domain::Step::parse(&words[words.len() - 2..].join(" ")).is_some() {
                2
            } else {
                1
            }
        };
        let reserved: usize =
            following.iter().map(|f| if f.kind == OptionKind::Step { step_words(&rest) } else { 1 }).sum();
        let take = match o.kind {
            // Text and pilot names may have spaces: leave the words the following options need.
            OptionKind::Text | OptionKind::Pilot => rest.len().saturating_sub(reserved).max(1),
            OptionKind::Step if rest.len() == 2 && crate::domain::Step::parse(&rest.join(" ")).is_some() => 2,
            _ => 1,
        };
        let value: Vec<String> = rest.drain(..take.min(rest.len())).collect();
        options.insert(o.name.to_owned(), value.join(" "));
    }
    if !rest.is_empty() {
        return Err(ParseError::Usage { usage: sub_spec.usage(spec.name) });
    }
    from_options(spec.name, sub_spec.name, &options)
}

/// `/pilot register Claims triage workflow: … owner: @alice pnl: …`: the name, then answers each after its key
/// (`name:`, `workflow:`, `owner:`, `pnl:` or `p&l:`, `sponsor:`, `review:` or `review_date:` or `date:`). A key is
/// a word ending in `:`; a value runs to the next key, so it may hold colons of its own (`Cost: £4m -> £3m`).
fn register_options(words: &[String]) -> BTreeMap<String, String> {
    let key_of = |w: &str| -> Option<&'static str> {
        let stem = w.strip_suffix(':')?.to_lowercase().replace(['-', ' '], "_");
        Some(match stem.as_str() {
            "name" => "name",
            "workflow" => "workflow",
            "owner" => "owner",
            "pnl" | "p&l" | "pnl_line" | "p&l_line" => "pnl",
            "sponsor" => "sponsor",
            "review" | "review_date" | "date" => "review_date",
            _ => return None,
        })
    };
    let mut options: BTreeMap<String, String> = BTreeMap::new();
    let mut current = "name";
    let mut value: Vec<&str> = Vec::new();
    let flush = |key: &str, value: &mut Vec<&str>, options: &mut BTreeMap<String, String>| {
        if !value.is_empty() {
            options.insert(key.to_owned(), value.join(" "));
            value.clear();
        }
    };
    for w in words {
        match key_of(w) {
            Some(key) => {
                flush(current, &mut value, &mut options);
                current = key;
            }
            None => value.push(w),
        }
    }
    flush(current, &mut value, &mut options);
    options
}

fn all_usages() -> Vec<String> {
    COMMANDS
        .iter()
        .flat_map(|c| {
            c.subcommands.iter().map(move |s| {
                if s.name.is_empty() { format!("/{}", c.name) } else { format!("/{} {}", c.name, s.name) }
            })
        })
        .collect()
}

fn unknown(command: &str) -> ParseError {
    let suggestion = closest(command, all_usages().iter().map(String::as_str)).map(str::to_owned);
    ParseError::Unknown { command: command.to_owned(), suggestion }
}

/// The candidate closest to `query`, if it is close enough to be what was meant.
pub fn closest<'a>(query: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let q = query.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&q, &c.to_lowercase()), c))
        .filter(|(score, _)| *score >= 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_command_as_typed() {
        assert_eq!(parse("/pilot register"), Ok(Command::Register { name: None, prefill: vec![] }));
        assert_eq!(
            parse("/pilot register Claims triage assistant"),
            Ok(Command::Register { name: Some("Claims triage assistant".into()), prefill: vec![] })
        );
        assert_eq!(parse("/pilot status  #3"), Ok(Command::Status { pilot: "#3".into() }));
        assert_eq!(parse("/pilot list mine"), Ok(Command::List { scope: ListScope::Mine }));
        assert_eq!(parse("/pilot list"), Ok(Command::List { scope: ListScope::All }));
        assert_eq!(
            parse("/pilot edit Claims triage assistant review_date"),
            Ok(Command::Edit { pilot: "Claims triage assistant".into(), step: "review_date".into() })
        );
        assert_eq!(
            parse("/pilot edit \"Claims triage\" owner"),
            Ok(Command::Edit { pilot: "Claims triage".into(), step: "owner".into() })
        );
        assert_eq!(
            parse("/pilot edit Claims triage review date"),
            Ok(Command::Edit { pilot: "Claims triage".into(), step: "review date".into() })
        );
        assert_eq!(parse("/pilot evidence Claims triage"), Ok(Command::Evidence { pilot: "Claims triage".into() }));
        assert_eq!(
            parse("/pilot review Claims triage KILL"),
            Ok(Command::Review { pilot: "Claims triage".into(), decision: crate::domain::DecisionKind::Kill })
        );
        assert_eq!(
            parse("/pilot review Claims triage"),
            Err(ParseError::Usage { usage: "/pilot review <pilot> <scale|extend|kill>".into() })
        );
        assert_eq!(parse("/portfolio"), Ok(Command::Portfolio));
        assert_eq!(parse("/portfolio now"), Err(ParseError::Usage { usage: "/portfolio".into() }));
        assert_eq!(parse("/lastmile config"), Ok(Command::Config { setting: None, value: None }));
        assert_eq!(
            parse("/lastmile config working_days mon-thu"),
            Ok(Command::Config { setting: Some("working_days".into()), value: Some("mon-thu".into()) })
        );
        assert_eq!(
            parse("/lastmile config admins @a @b"),
            Ok(Command::Config { setting: Some("admins".into()), value: Some("@a @b".into()) })
        );
        assert_eq!(parse("/pilot"), Ok(Command::Help));
        assert_eq!(parse("/PILOT Help"), Ok(Command::Help));
    }

    #[test]
    fn unknown_commands_get_a_suggestion_and_bad_options_the_usage() {
        assert_eq!(
            parse("/pilot regster"),
            Err(ParseError::Unknown { command: "/pilot regster".into(), suggestion: Some("/pilot register".into()) })
        );
        assert_eq!(parse("/frobnicate"), Err(ParseError::Unknown { command: "/frobnicate".into(), suggestion: None }));
        assert_eq!(parse("/pilot status"), Err(ParseError::Usage { usage: "/pilot status <pilot>".into() }));
        assert_eq!(parse("/pilot list some"), Err(ParseError::Usage { usage: "/pilot list [all|mine]".into() }));
        assert_eq!(
            parse("/pilot edit workflow"),
            Err(ParseError::Usage { usage: "/pilot edit <pilot> <step>".into() })
        );
        assert_eq!(parse("/pilot resume now"), Err(ParseError::Usage { usage: "/pilot resume".into() }));
    }

    #[test]
    fn every_description_key_is_distinct() {
        let mut keys: Vec<&str> = Vec::new();
        for c in COMMANDS {
            keys.push(c.description.as_str());
            keys.extend(c.subcommands.iter().filter(|s| !s.name.is_empty()).map(|s| s.description.as_str()));
        }
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n);
    }
}
