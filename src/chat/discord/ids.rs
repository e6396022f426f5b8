//! The custom ids of lastmile's buttons, menus and modals. Each carries the workspace, because a click in a
//! direct message has no server to tell it, and the question it answers (empty when it answers a question by
//! direct message), so that a stale button cannot answer a later question. Discord allows 100 characters.

/// What a component or modal does when used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub workspace: String,
    /// The conversation question it answers (the engine's name for it), or empty.
    pub question: String,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Opens the form for a text answer.
    Answer { multiline: bool, max_chars: usize, label: String },
    /// A submitted form: its text is the answer.
    Submit,
    /// The n-th (0-based) choice of the message.
    Choice { index: usize },
    /// A person picked in a user menu.
    Person,
    /// Skips an optional person: `word` is the answer that skips.
    Skip { word: String },
    /// Runs a command, as if typed (a shortcut).
    Run { command: String },
}

/// Discord's limit on a custom id.
pub const MAX_ID: usize = 100;
const PREFIX: &str = "lm";

impl Action {
    pub fn new(workspace: &str, question: Option<&str>, kind: Kind) -> Self {
        Action { workspace: workspace.to_owned(), question: question.unwrap_or_default().to_owned(), kind }
    }

    /// The question, if the component was made for one.
    pub fn answers(&self) -> Option<String> {
        (!self.question.is_empty()).then(|| self.question.clone())
    }

    /// The custom id, cut to fit (only a label or a word is cut, never the workspace, question or a number).
    pub fn encode(&self) -> String {
        let Action { workspace, question, kind } = self;
        let id = match kind {
            Kind::Answer { multiline, max_chars, label } => {
                format!("{PREFIX}:a:{workspace}:{question}:{}{max_chars}:{label}", if *multiline { 'm' } else { 's' })
            }
            Kind::Submit => format!("{PREFIX}:m:{workspace}:{question}"),
            Kind::Choice { index } => format!("{PREFIX}:c:{workspace}:{question}:{index}"),
            Kind::Person => format!("{PREFIX}:p:{workspace}:{question}"),
            Kind::Skip { word } => format!("{PREFIX}:s:{workspace}:{question}:{word}"),
            Kind::Run { command } => format!("{PREFIX}:r:{workspace}:{question}:{command}"),
        };
        cut(&id, MAX_ID)
    }

    /// Reads a custom id; anything not made by [`Action::encode`] is None.
    pub fn decode(id: &str) -> Option<Action> {
        let mut parts = id.splitn(5, ':');
        if parts.next()? != PREFIX {
            return None;
        }
        let kind = parts.next()?;
        let workspace = parts.next().filter(|w| !w.is_empty())?.to_owned();
        let question = parts.next()?.to_owned();
        let rest = parts.next();
        let kind = match (kind, rest) {
            ("a", Some(rest)) => {
                let (spec, label) = rest.split_once(':')?;
                let multiline = match spec.chars().next()? {
                    'm' => true,
                    's' => false,
                    _ => return None,
                };
                let max_chars = spec[1..].parse().ok().filter(|n| *n > 0)?;
                Kind::Answer { multiline, max_chars, label: label.to_owned() }
            }
            ("m", None) => Kind::Submit,
            ("c", Some(n)) => Kind::Choice { index: n.parse().ok().filter(|i| *i < 25)? },
            ("p", None) => Kind::Person,
            ("s", Some(word)) if !word.is_empty() => Kind::Skip { word: word.to_owned() },
            ("r", Some(command)) if command.starts_with('/') => Kind::Run { command: command.to_owned() },
            _ => return None,
        };
        Some(Action { workspace, question, kind })
    }
}

/// `text` cut to `max` characters, ending with "…" when cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_fit() {
        let ws = "123456789012345678";
        let kinds = [
            Kind::Answer { multiline: true, max_chars: 1000, label: "Workflow: the one".into() },
            Kind::Submit,
            Kind::Choice { index: 2 },
            Kind::Person,
            Kind::Skip { word: "skip".into() },
            Kind::Run { command: "/pilot review #12 kill".into() },
        ];
        for kind in kinds {
            for question in [None, Some("evidence_owner_running")] {
                let a = Action::new(ws, question, kind.clone());
                assert_eq!(Action::decode(&a.encode()), Some(a.clone()));
                assert_eq!(a.answers().as_deref(), question);
            }
        }
        let long = Action::new(
            ws,
            Some("evidence_owner_running"),
            Kind::Answer { multiline: false, max_chars: 80, label: "x".repeat(200) },
        );
        let id = long.encode();
        assert_eq!(id.chars().count(), MAX_ID);
        let back = Action::decode(&id).unwrap();
        assert_eq!(back.question, "evidence_owner_running");
        assert!(matches!(back.kind, Kind::Answer { max_chars: 80, .. }));
    }

    #[test]
    fn foreign_or_broken_ids_are_refused() {
        for id in [
            "",
            "lm",
            "lm:c",
            "lm:c::q:1",
            "lm:c:1:q:x",
            "lm:c:1:q:25",
            "lm:c:1:q:18446744073709551615",
            "lm:a:1:q:q5:x",
            "lm:a:1:q:m0:x",
            "other:c:1:q:0",
            "lm:z:1:q",
            "lm:m:1",
            "lm:r:1::pilot review",
        ] {
            assert_eq!(Action::decode(id), None, "{id}");
        }
    }
}
