//! `lastmile export`: every pilot as flat JSON or CSV rows. The field names are a public interface
//! (BI tools read them): add fields, never rename or remove one.

use std::io::Write;

use chrono::NaiveDate;
use serde::Serialize;

use crate::domain::lifecycle::{flags, outcome};
use crate::domain::{EvidenceKind, Pilot};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Csv,
}

/// One exported pilot. Dates are ISO 8601; numbers are numbers in JSON (empty in CSV when unset).
#[derive(Debug, Serialize)]
pub struct ExportRow {
    pub id: i64,
    pub workspace: String,
    pub name: String,
    pub stage: &'static str,
    pub registered_by: String,
    pub registered_at: String,
    pub workflow: Option<String>,
    pub owner: Option<String>,
    pub sponsor: Option<String>,
    pub pnl_line: Option<String>,
    pub pnl_unit: Option<String>,
    pub pnl_baseline: Option<f64>,
    pub pnl_target: Option<f64>,
    pub review_date: Option<String>,
    pub owner_status: &'static str,
    pub evidence_workflow_live: bool,
    pub evidence_owner_running: bool,
    pub evidence_pnl_moved: bool,
    pub pnl_realised: Option<f64>,
    pub decision: Option<&'static str>,
    pub decision_reason: Option<String>,
    pub outcome: &'static str,
    pub flags: Vec<&'static str>,
    pub extensions: u32,
    pub nudges_sent: u32,
    pub next_review_date: Option<String>,
    /// The reasons behind the outcome, when it is an absorption risk (`;`-joined in CSV). Added fields go last.
    pub risk_reasons: Vec<&'static str>,
    /// Why the owner declined, while they stand declined.
    pub owner_decline_reason: Option<String>,
}

impl ExportRow {
    /// The row for a pilot; its outcome and flags as of `today`.
    pub fn new(p: &Pilot, today: NaiveDate) -> Self {
        Self {
            id: p.id.0,
            workspace: p.workspace.0.clone(),
            name: p.name.clone(),
            stage: p.stage.as_str(),
            registered_by: p.registered_by.0.clone(),
            registered_at: p.registered_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            workflow: p.workflow.clone(),
            owner: p.owner.as_ref().map(|u| u.0.clone()),
            sponsor: p.sponsor.as_ref().map(|u| u.0.clone()),
            pnl_line: p.pnl.as_ref().map(|t| t.line.clone()),
            pnl_unit: p.pnl.as_ref().map(|t| t.unit.clone()),
            pnl_baseline: p.pnl.as_ref().map(|t| t.baseline),
            pnl_target: p.pnl.as_ref().map(|t| t.target),
            review_date: p.review_date.map(|d| d.to_string()),
            owner_status: p.owner_status.as_str(),
            evidence_workflow_live: p.has_evidence(EvidenceKind::WorkflowLive),
            evidence_owner_running: p.has_evidence(EvidenceKind::OwnerRunning),
            evidence_pnl_moved: p.has_evidence(EvidenceKind::PnlMoved),
            pnl_realised: p.evidence.pnl_realised,
            decision: p.decision.map(|d| d.as_str()),
            decision_reason: p.decision_reason.clone().filter(|r| !r.is_empty()),
            outcome: outcome(p, today).0.as_str(),
            flags: flags(p, today).into_iter().map(|f| f.as_str()).collect(),
            extensions: p.extensions,
            nudges_sent: p.nudges_sent,
            next_review_date: p.due_date().map(|d| d.to_string()),
            risk_reasons: outcome(p, today).1.into_iter().map(|r| r.as_str()).collect(),
            owner_decline_reason: p.owner_decline_reason.clone(),
        }
    }
}

/// The exported field names, in order.
pub const EXPORT_FIELDS: &[&str] = &[
    "id",
    "workspace",
    "name",
    "stage",
    "registered_by",
    "registered_at",
    "workflow",
    "owner",
    "sponsor",
    "pnl_line",
    "pnl_unit",
    "pnl_baseline",
    "pnl_target",
    "review_date",
    "owner_status",
    "evidence_workflow_live",
    "evidence_owner_running",
    "evidence_pnl_moved",
    "pnl_realised",
    "decision",
    "decision_reason",
    "outcome",
    "flags",
    "extensions",
    "nudges_sent",
    "next_review_date",
    "risk_reasons",
    "owner_decline_reason",
];

/// A JSON value as one CSV cell: lists are `;`-joined, missing values empty.
fn cell(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(";"),
        other => other.to_string(),
    }
}

pub fn write<W: Write>(pilots: &[Pilot], today: NaiveDate, format: Format, mut out: W) -> anyhow::Result<()> {
    let rows: Vec<ExportRow> = pilots.iter().map(|p| ExportRow::new(p, today)).collect();
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &rows)?;
            writeln!(out)?;
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record(EXPORT_FIELDS)?;
            for row in &rows {
                let value = serde_json::to_value(row)?;
                w.write_record(EXPORT_FIELDS.iter().map(|f| cell(&value[*f])))?;
            }
            w.flush()?;
        }
    }
    Ok(())
}
