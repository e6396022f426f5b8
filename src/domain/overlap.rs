//! Duplicate and overlapping pilots: a new pilot that names the same P&L line as an open one (case, punctuation and
//! spacing aside; the unit is not part of a line's name) or a very similar workflow is probably the same pilot, or
//! one that would count the same movement twice.

use super::{PilotId, UserId};

/// An open pilot (scoped or in production), as the comparison needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenPilot {
    pub id: PilotId,
    pub name: String,
    pub owner: Option<UserId>,
    pub workflow: Option<String>,
    pub pnl_line: Option<String>,
}

/// What the new pilot shares with an open one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shared {
    PnlLine,
    Workflow,
}

/// A line or workflow as compared: lower case, letters and digits, single spaces.
pub fn normalise(text: &str) -> String {
    let kept: String =
        text.chars().map(|c| if c.is_alphanumeric() { c.to_lowercase().next().unwrap_or(c) } else { ' ' }).collect();
    kept.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// How alike two workflows read (0 to 1): the overlap of their letter pairs, whatever the word order.
fn likeness(a: &str, b: &str) -> f64 {
    strsim::sorensen_dice(&normalise(a), &normalise(b))
}

/// Workflows at least this alike are "very similar".
pub const WORKFLOW_LIKENESS: f64 = 0.8;

/// The first open pilot (other than `itself`, and not one the user already called separate) that names the same
/// P&L line as `line`, or whose workflow is very like `workflow`.
pub fn find<'a>(
    open: &'a [OpenPilot],
    itself: Option<PilotId>,
    separate: &[PilotId],
    line: Option<&str>,
    workflow: Option<&str>,
) -> Option<(&'a OpenPilot, Shared)> {
    let others = || open.iter().filter(|p| Some(p.id) != itself && !separate.contains(&p.id));
    if let Some(line) = line.map(normalise).filter(|l| !l.is_empty()) {
        let same = others().find(|p| p.pnl_line.as_deref().is_some_and(|l| normalise(l) == line));
        if let Some(p) = same {
            return Some((p, Shared::PnlLine));
        }
    }
    let workflow = workflow?;
    others()
        .filter(|p| p.workflow.as_deref().is_some_and(|w| likeness(w, workflow) >= WORKFLOW_LIKENESS))
        .max_by(|a, b| {
            let (x, y) = (
                likeness(a.workflow.as_deref().unwrap_or(""), workflow),
                likeness(b.workflow.as_deref().unwrap_or(""), workflow),
            );
            x.total_cmp(&y)
        })
        .map(|p| (p, Shared::Workflow))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(id: i64, line: &str, workflow: &str) -> OpenPilot {
        OpenPilot {
            id: PilotId(id),
            name: format!("Pilot {id}"),
            owner: None,
            workflow: Some(workflow.into()),
            pnl_line: Some(line.into()),
        }
    }

    #[test]
    fn the_same_line_in_other_spelling_or_a_very_similar_workflow_is_found() {
        let pilots = [
            open(1, "Claims handling cost", "The claims team triages motor claims by hand"),
            open(2, "Upsell revenue", "Agents offer add-ons on renewal calls"),
        ];
        let found = find(&pilots, None, &[], Some("claims-handling  COST."), None).unwrap();
        assert_eq!((found.0.id, found.1), (PilotId(1), Shared::PnlLine));
        let found =
            find(&pilots, None, &[], Some("Fraud losses"), Some("the claims team triages motor claims by hand."))
                .unwrap();
        assert_eq!((found.0.id, found.1), (PilotId(1), Shared::Workflow));
        // Not itself, not one already called separate, and not a merely related workflow.
        assert!(find(&pilots, Some(PilotId(1)), &[], Some("Claims handling cost"), None).is_none());
        assert!(find(&pilots, None, &[PilotId(1)], Some("Claims handling cost"), None).is_none());
        assert!(
            find(&pilots, None, &[], Some("Fraud losses"), Some("Underwriters re-key broker submissions")).is_none()
        );
    }
}
