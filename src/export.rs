//! `lastmile export`: every pilot as flat JSON or CSV rows. The field names are a public interface
//! (BI tools read them): add fields, never rename or remove one.

use std::io::Write;

use serde::Serialize;

use crate::domain::Pilot;

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
}

impl From<&Pilot> for ExportRow {
    fn from(p: &Pilot) -> Self {
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
        }
    }
}

pub fn write<W: Write>(pilots: &[Pilot], format: Format, out: W) -> anyhow::Result<()> {
    let rows: Vec<ExportRow> = pilots.iter().map(ExportRow::from).collect();
    match format {
        Format::Json => {
            let mut out = out;
            serde_json::to_writer_pretty(&mut out, &rows)?;
            writeln!(out)?;
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(out);
            if rows.is_empty() {
                // Headers even for an empty export, so readers always see the schema.
                w.write_record(EXPORT_FIELDS)?;
            }
            for row in &rows {
                w.serialize(row)?;
            }
            w.flush()?;
        }
    }
    Ok(())
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
];
