//! `--emit` and `--collect`: the plan file the emitted commands' directory
//! keeps, and the results those commands leave beside it.

use super::results::{read_results, row_texts, CurveRow, RunResult, FAILED, OK, PLANNED};
use super::{run_file, RunSpec, SweepError};
use crate::train::RunReport;
use serde_json::Value;
use std::path::Path;

/// The plan file `--emit` leaves in its directory: one `planned`
/// row per configuration, for `--collect` to know every run, even those
/// that failed before writing anything. Its keys are the sweep's keys (the
/// data's fingerprint included), so `--collect` matches runs by key.
pub const PLAN_FILE: &str = "sweep-plan.csv";

pub fn write_plan(dir: &Path, specs: &[RunSpec]) -> Result<(), SweepError> {
    let path = dir.join(PLAN_FILE);
    let rows: Vec<RunResult> = specs
        .iter()
        .map(|s| RunResult::new(s, "train", PLANNED, "", None))
        .collect();
    crate::output::write_atomic(&path, |w| {
        let mut c = csv::Writer::from_writer(w);
        if let Some(first) = rows.first() {
            c.write_record(first.header())?;
        }
        for r in &rows {
            c.write_record(row_texts(r))?;
        }
        c.flush()
    })
    .map_err(|e| SweepError::file(&path, e.reason()))
}

/// How `train`'s error line starts when a signal stopped the run after
/// writing its checkpoint (`train::RunError::Interrupted`).
const INTERRUPTED: &str = "interrupted ";

/// One emitted run read back from its files.
pub struct Collected {
    pub row: RunResult,
    pub records: Vec<CurveRow>,
}

/// Read what the emitted commands of `dir` left: for each planned run, its
/// JSON line (ok), its error file (failed), or nothing yet (`None`; a run
/// stopped by a signal, which left a checkpoint to resume, is not finished
/// either).
pub fn collect(dir: &Path) -> Result<Vec<(RunResult, Option<Collected>)>, SweepError> {
    let plan_path = dir.join(PLAN_FILE);
    if !plan_path.exists() {
        return Err(SweepError::file(
            &plan_path,
            "no such file: --collect needs the directory given to --emit --out-dir",
        ));
    }
    read_results(&plan_path)?
        .into_iter()
        .map(|planned| {
            let got = collect_one(dir, &planned)?;
            Ok((planned, got))
        })
        .collect()
}

/// The result of one planned run, if its command has finished.
fn collect_one(dir: &Path, planned: &RunResult) -> Result<Option<Collected>, SweepError> {
    let key = planned.key();
    let json_path = run_file(dir, &key, "json");
    let json_text = std::fs::read_to_string(&json_path).unwrap_or_default();
    let last = json_text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'));
    if let Some(line) = last {
        let row = from_json_line(planned, line, &json_path)?;
        let records = read_metrics_file(&run_file(dir, &key, "metrics.csv"))?;
        return Ok(Some(Collected { row, records }));
    }
    let err_text = std::fs::read_to_string(run_file(dir, &key, "err")).unwrap_or_default();
    let reason = err_text
        .trim()
        .lines()
        .last()
        .unwrap_or("")
        .trim_start_matches("error: ");
    if reason.is_empty() || reason.starts_with(INTERRUPTED) {
        return Ok(None);
    }
    let mut row = planned.clone();
    row.set("status", Value::String(FAILED.into()));
    row.set("error", Value::String(reason.to_string()));
    Ok(Some(Collected {
        row,
        records: Vec::new(),
    }))
}

/// The planned row filled from a `train --json` line, which must report
/// the planned hyperparameters.
fn from_json_line(planned: &RunResult, line: &str, path: &Path) -> Result<RunResult, SweepError> {
    let bad_line =
        |e: serde_json::Error| SweepError::file(path, format!("not a JSON result line: {e}"));
    let summary: serde_json::Map<String, Value> = serde_json::from_str(line).map_err(bad_line)?;
    let report: RunReport = serde_json::from_str(line).map_err(bad_line)?;
    for (name, want) in planned.params() {
        if let Some(got) = summary.get(name) {
            if got != want && !(got.is_null() && want.is_null()) {
                return Err(SweepError::file(
                    path,
                    format!(
                        "{name} is {got}, but the plan says {want} for run {}",
                        planned.key()
                    ),
                ));
            }
        }
    }
    let mut row = planned.clone();
    row.set("status", Value::String(OK.into()));
    row.fill(&report);
    for name in ["model", "metrics", "plot"] {
        if let Some(v) = summary.get(name) {
            row.set(name, v.clone());
        }
    }
    Ok(row)
}

/// A `train --metrics` file back into records.
fn read_metrics_file(path: &Path) -> Result<Vec<CurveRow>, SweepError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let mut reader = csv::Reader::from_path(path).map_err(|e| SweepError::file(path, e))?;
    let mut out = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let bad = || SweepError::file(path, format!("line {}: not a metrics row", i + 2));
        let rec = rec.map_err(|_| bad())?;
        let num = |j: usize| rec.get(j).and_then(|t| t.parse::<f64>().ok());
        out.push(CurveRow {
            step: rec.get(0).and_then(|t| t.parse().ok()).ok_or_else(bad)?,
            train_loss: num(1).ok_or_else(bad)?,
            train_accuracy: num(2).ok_or_else(bad)?,
            heldout_loss: num(3),
            heldout_accuracy: num(4),
            seconds: num(5).unwrap_or(0.0),
        });
    }
    Ok(out)
}
