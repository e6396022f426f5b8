//! The custom ids of lastmile's buttons, menus and modals. Each carries the workspace, because a click in a
//! direct message has no server to tell it; Discord allows 100 characters.

/// What a component or modal does when used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Opens the form for a text answer.
    Answer { workspace: String, multiline: bool, max_chars: usize, label: String },
    /// A submitted form: its text is the answer.
    Submit { workspace: String },
    /// The n-th (0-based) choice of the message.
    Choice { workspace: String, index: usize },
    /// A person picked in a user menu.
    Person { workspace: String },
    /// Skips an optional person: `word` is the answer that skips.
    Skip { workspace: String, word: String },
}

/// Discord's limit on a custom id.
pub const MAX_ID: usize = 100;
const PREFIX: &str = "lm";

impl Action {
    pub fn workspace(&self) -> &str {
        match self {
            Action::Answer { workspace, .. }
            | Action::Submit { workspace }
            | Action::Choice { workspace, .. }
            | Action::Person { workspace }
            | Action::Skip { workspace, .. } => workspace,
        }
    }

    /// The custom id, cut to fit (only a label or a word is cut, never the workspace or a number).
    pub fn encode(&self) -> String {
        let id = match self {
            Action::Answer { workspace, multiline, max_chars, label } => {
                format!("{PREFIX}:a:{workspace}:{}{max_chars}:{label}", if *multiline { 'm' } else { 's' })
            }
            Action::Submit { workspace } => format!("{PREFIX}:m:{workspace}"),
            Action::Choice { workspace, index } => format!("{PREFIX}:c:{workspace}:{index}"),
            Action::Person { workspace } => format!("{PREFIX}:p:{workspace}"),
            Action::Skip { workspace, word } => format!("{PREFIX}:s:{workspace}:{word}"),
        };
        super::render::cut(&id, MAX_ID)
    }

    /// Reads a custom id; anything not made by [`Action::encode`] is None.
    pub fn decode(id: &str) -> Option<Action> {
        let mut parts = id.splitn(4, ':');
        if parts.next()? != PREFIX {
            return None;
        }
        let kind = parts.next()?;
        let workspace = parts.next().filter(|w| !w.is_empty())?.to_owned();
        let rest = parts.next();
        match (kind, rest) {
            ("a", Some(rest)) => {
                let (spec, label) = rest.split_once(':')?;
                let multiline = match spec.chars().next()? {
                    'm' => true,
                    's' => false,
                    _ => return None,
                };
                let max_chars = spec[1..].parse().ok().filter(|n| *n > 0)?;
                Some(Action::Answer { workspace, multiline, max_chars, label: label.to_owned() })
            }
            ("m", None) => Some(Action::Submit { workspace }),
            ("c", Some(n)) => Some(Action::Choice { workspace, index: n.parse().ok()? }),
            ("p", None) => Some(Action::Person { workspace }),
            ("s", Some(word)) if !word.is_empty() => Some(Action::Skip { workspace, word: word.to_owned() }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_fit() {
        let ws = "123456789012345678".to_owned();
        let actions = [
            Action::Answer {
                workspace: ws.clone(),
                multiline: true,
                max_chars: 1000,
                label: "Workflow: the one".into(),
            },
            Action::Submit { workspace: ws.clone() },
            Action::Choice { workspace: ws.clone(), index: 2 },
            Action::Person { workspace: ws.clone() },
            Action::Skip { workspace: ws.clone(), word: "skip".into() },
        ];
        for a in actions {
            assert_eq!(Action::decode(&a.encode()), Some(a.clone()));
        }
        let long = Action::Answer { workspace: ws, multiline: false, max_chars: 80, label: "x".repeat(200) };
        let id = long.encode();
        assert_eq!(id.chars().count(), MAX_ID);
        assert!(matches!(Action::decode(&id), Some(Action::Answer { max_chars: 80, .. })));
    }

    #[test]
    fn foreign_or_broken_ids_are_refused() {
        for id in ["", "lm", "lm:c", "lm:c::1", "lm:c:1:x", "lm:a:1:q5:x", "lm:a:1:m0:x", "other:c:1:0", "lm:z:1"] {
            assert_eq!(Action::decode(id), None, "{id}");
        }
    }
}
