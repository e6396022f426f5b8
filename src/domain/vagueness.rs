//! Vague answers: which answers to a scoping question are too vague to accept, and what to ask instead.
//! The rules themselves are data (`prompts/vagueness.toml`); this module only applies them.

use regex::Regex;
use serde::{Deserialize, Serialize};

/// The questions of the scoping dialogue, in the order they are asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Name,
    Workflow,
    Owner,
    Pnl,
    Sponsor,
    ReviewDate,
}

impl Step {
    pub const ALL: [Step; 6] = [Step::Name, Step::Workflow, Step::Owner, Step::Pnl, Step::Sponsor, Step::ReviewDate];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Name => "name",
            Step::Workflow => "workflow",
            Step::Owner => "owner",
            Step::Pnl => "pnl",
            Step::Sponsor => "sponsor",
            Step::ReviewDate => "review_date",
        }
    }

    /// Reads a step as a user may type it (`pnl`, `P&L`, `review`, `date`, `3`).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim().to_lowercase().replace(['-', ' '], "_");
        Some(match s.as_str() {
            "name" | "1" => Step::Name,
            "workflow" | "2" => Step::Workflow,
            "owner" | "last_mile_owner" | "3" => Step::Owner,
            "pnl" | "p&l" | "pnl_line" | "p&l_line" | "4" => Step::Pnl,
            "sponsor" | "5" => Step::Sponsor,
            "review_date" | "review" | "date" | "6" => Step::ReviewDate,
            _ => return None,
        })
    }

    pub fn next(self) -> Option<Step> {
        let i = Step::ALL.iter().position(|s| *s == self)?;
        Step::ALL.get(i + 1).copied()
    }

    pub fn previous(self) -> Option<Step> {
        let i = Step::ALL.iter().position(|s| *s == self)?;
        i.checked_sub(1).map(|j| Step::ALL[j])
    }
}

/// Every question rules may be written for: the scoping steps, then the evidence and decision questions.
pub const QUESTIONS: &[&str] = &[
    "name",
    "workflow",
    "owner",
    "pnl",
    "sponsor",
    "review_date",
    "workflow_live",
    "owner_running",
    "pnl_moved",
    "scale_override",
    "extend_reason",
    "kill_reason",
];

/// One rule: an answer to `question` matching `pattern` is vague; `followup` (a template) asks for more.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub question: String,
    pub pattern: Regex,
    pub followup: String,
    /// The answer is kept and the answer to the follow-up is combined with it (it said too little, not nothing).
    pub keep: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Rules(Vec<Rule>);

impl Rules {
    pub fn new(rules: Vec<Rule>) -> Self {
        Self(rules)
    }

    /// The first rule, in file order, that finds this answer to `question` vague.
    pub fn check(&self, question: &str, answer: &str) -> Option<&Rule> {
        self.0.iter().find(|r| r.question == question && r.pattern.is_match(answer))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Rule> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_read_as_typed_and_walk_in_order() {
        assert_eq!(Step::parse("P&L"), Some(Step::Pnl));
        assert_eq!(Step::parse("review date"), Some(Step::ReviewDate));
        assert_eq!(Step::parse("budget"), None);
        assert_eq!(Step::Name.next(), Some(Step::Workflow));
        assert_eq!(Step::ReviewDate.next(), None);
        assert_eq!(Step::Name.previous(), None);
        assert_eq!(Step::Sponsor.previous(), Some(Step::Pnl));
    }

    #[test]
    fn first_matching_rule_of_the_step_wins() {
        let rule = |id: &str, q: &str, p: &str| Rule {
            id: id.into(),
            question: q.into(),
            pattern: Regex::new(p).unwrap(),
            followup: id.into(),
            keep: false,
        };
        let rules = Rules::new(vec![
            rule("tbd", "owner", "(?i)^tbd$"),
            rule("short", "workflow", r"^\S+(\s+\S+)?$"),
            rule("any", "workflow", ".*"),
        ]);
        assert_eq!(rules.check("owner", "TBD").unwrap().id, "tbd");
        assert!(rules.check("owner", "<@alice>").is_none());
        assert_eq!(rules.check("workflow", "claims intake").unwrap().id, "short");
    }
}
