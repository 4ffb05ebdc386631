//! Result files: one CSV row and one JSON line per run, and per-epoch curves
//! in a second CSV. Each run's lines are appended with a single write on a
//! file opened for appending, so a crash or Ctrl-C leaves only whole lines,
//! and re-running a sweep skips every key already in the results CSV.

use super::{run_file, RunSpec, SweepError};
use crate::train::{Record, RunReport};
use serde_json::Value;
use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Columns before the hyperparameters.
pub const LEAD_COLUMNS: [&str; 6] = ["key", "status", "error", "command", "data", "preset"];
/// Columns after the hyperparameters: what the run measured. The names are
/// `train --json`'s, plus the best epoch.
pub const METRIC_COLUMNS: [&str; 22] = [
    "heldout_eval",
    "train_rows",
    "heldout_rows",
    "steps",
    "samples",
    "train_accuracy",
    "train_loss",
    "heldout_accuracy",
    "heldout_loss",
    "heldout_correct",
    "best_epoch",
    "best_heldout_accuracy",
    "threads",
    "matmul_backend",
    "load_seconds",
    "train_seconds",
    "eval_seconds",
    "seconds",
    "samples_per_second",
    "model",
    "metrics",
    "plot",
];
pub const CURVE_COLUMNS: [&str; 7] = [
    "key",
    "step",
    "train_loss",
    "train_accuracy",
    "heldout_loss",
    "heldout_accuracy",
    "seconds",
];

pub const OK: &str = "ok";
pub const FAILED: &str = "failed";
pub const PLANNED: &str = "planned";

/// One run: named values in column order (lead, hyperparameters, metrics).
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    pub columns: Vec<(String, Value)>,
}

impl RunResult {
    pub fn new(
        spec: &RunSpec,
        command: &str,
        status: &str,
        error: &str,
        report: Option<&RunReport>,
    ) -> RunResult {
        let s = |v: &str| Value::String(v.to_string());
        let mut columns = vec![
            ("key".to_string(), s(&spec.key)),
            ("status".into(), s(status)),
            ("error".into(), s(error)),
            ("command".into(), s(command)),
            ("data".into(), s(&spec.data())),
            (
                "preset".into(),
                serde_json::to_value(spec.plan.preset).unwrap_or(Value::Null),
            ),
        ];
        columns.extend(spec.params.iter().cloned());
        for name in METRIC_COLUMNS {
            columns.push((name.to_string(), Value::Null));
        }
        let mut row = RunResult { columns };
        if let Some(report) = report {
            row.fill(report);
        }
        row
    }

    /// Set the measurement columns from a run's report.
    pub fn fill(&mut self, report: &RunReport) {
        // Through the JSON text, so f32 values keep their short form.
        let text = serde_json::to_string(report).expect("a report serialises");
        let values: serde_json::Map<String, Value> =
            serde_json::from_str(&text).expect("valid JSON");
        for name in METRIC_COLUMNS {
            if let Some(v) = values.get(name) {
                self.set(name, v.clone());
            }
        }
    }

    pub fn header(&self) -> Vec<String> {
        self.columns.iter().map(|(n, _)| n.clone()).collect()
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.columns.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The value as the CSV writes it.
    pub fn text(&self, name: &str) -> String {
        self.get(name).map(value_text).unwrap_or_default()
    }

    pub fn num(&self, name: &str) -> Option<f64> {
        self.get(name).and_then(Value::as_f64)
    }

    pub fn key(&self) -> String {
        self.text("key")
    }

    pub fn status(&self) -> String {
        self.text("status")
    }

    pub fn is_ok(&self) -> bool {
        self.status() == OK
    }

    /// Replace the value of an existing column (no-op for unknown names).
    pub fn set(&mut self, name: &str, v: Value) {
        if let Some(slot) = self.columns.iter_mut().find(|(n, _)| n == name) {
            slot.1 = v;
        }
    }

    /// The hyperparameter columns (between the lead and the metrics).
    pub fn params(&self) -> impl Iterator<Item = &(String, Value)> {
        self.columns.iter().filter(|(n, _)| {
            !LEAD_COLUMNS.contains(&n.as_str()) && !METRIC_COLUMNS.contains(&n.as_str())
        })
    }

    /// One JSON object, keys in column order.
    pub fn json_line(&self) -> String {
        let fields: Vec<String> = self
            .columns
            .iter()
            .map(|(n, v)| format!("{}:{}", Value::String(n.clone()), v))
            .collect();
        format!("{{{}}}", fields.join(","))
    }
}

/// CSV text of a value: nothing for null, strings bare, numbers shortest.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Back from CSV text: numbers where the column holds numbers.
fn text_value(column: &str, text: &str) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    if LEAD_COLUMNS.contains(&column) || ["model", "metrics", "plot"].contains(&column) {
        return Value::String(text.to_string());
    }
    serde_json::from_str::<serde_json::Number>(text)
        .map(Value::Number)
        .unwrap_or_else(|_| Value::String(text.to_string()))
}

/// One record of a run (a `train --metrics` row): the trainer's own
/// [`Record`], under the name the sweep's curves file uses.
pub type CurveRow = Record;

/// Rows of a results CSV (empty if the file does not exist).
pub fn read_results(path: &Path) -> Result<Vec<RunResult>, SweepError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let mut reader = csv::Reader::from_path(path).map_err(|e| SweepError::file(path, e))?;
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| SweepError::file(path, e))?
        .iter()
        .map(str::to_string)
        .collect();
    if header.first().map(String::as_str) != Some("key") {
        return Err(SweepError::file(
            path,
            "not a sweep results file (its first column is not `key`)",
        ));
    }
    let mut rows = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let rec = rec.map_err(|e| SweepError::file(path, format!("line {}: {e}", i + 2)))?;
        rows.push(RunResult {
            columns: header
                .iter()
                .zip(rec.iter())
                .map(|(n, t)| (n.clone(), text_value(n, t)))
                .collect(),
        });
    }
    Ok(rows)
}

/// A curve point of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct CurvePoint {
    pub step: usize,
    pub train_accuracy: f64,
    pub heldout_accuracy: Option<f64>,
}

/// The curves CSV, by key (empty if the file does not exist).
pub fn read_curves(path: &Path) -> Result<HashMap<String, Vec<CurvePoint>>, SweepError> {
    let mut out: HashMap<String, Vec<CurvePoint>> = HashMap::new();
    if !path.exists() {
        return Ok(out);
    }
    let mut reader = csv::Reader::from_path(path).map_err(|e| SweepError::file(path, e))?;
    for (i, rec) in reader.records().enumerate() {
        let bad = |what: String| SweepError::file(path, format!("line {}: {what}", i + 2));
        let rec = rec.map_err(|e| bad(e.to_string()))?;
        let field = |j: usize| rec.get(j).unwrap_or("");
        let num = |j: usize| field(j).parse::<f64>().ok();
        out.entry(field(0).to_string())
            .or_default()
            .push(CurvePoint {
                step: field(1)
                    .parse()
                    .map_err(|_| bad(format!("step `{}` is not a number", field(1))))?,
                train_accuracy: num(3).unwrap_or(f64::NAN),
                heldout_accuracy: num(5),
            });
    }
    Ok(out)
}

/// Where a sweep's results go.
#[derive(Debug, Clone)]
pub struct ResultPaths {
    pub results: PathBuf,
    pub json_lines: PathBuf,
    pub curves: PathBuf,
}

impl ResultPaths {
    /// `X.csv` -> `X.jsonl`, `X-curves.csv`.
    pub fn beside(results: &Path) -> ResultPaths {
        let stem = results.with_extension("");
        let stem = stem.display();
        ResultPaths {
            results: results.to_path_buf(),
            json_lines: PathBuf::from(format!("{stem}.jsonl")),
            curves: PathBuf::from(format!("{stem}-curves.csv")),
        }
    }

    /// Check that rows with `header` can be appended to the results CSV.
    pub fn check_header(&self, header: &[String]) -> Result<(), SweepError> {
        let path = &self.results;
        if !path.exists() || std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) == 0 {
            return Ok(());
        }
        let mut reader = csv::Reader::from_path(path).map_err(|e| SweepError::file(path, e))?;
        let found: Vec<&str> = reader
            .headers()
            .map_err(|e| SweepError::file(path, e))?
            .iter()
            .collect();
        if found != header {
            return Err(SweepError::file(
                path,
                format!(
                    "its columns differ from this sweep's (found {} columns, this sweep writes {}: {}); \
                     give another --results file",
                    found.len(),
                    header.len(),
                    header.join(",")
                ),
            ));
        }
        Ok(())
    }

    /// Append one run: its CSV row, its JSON line and its curve rows.
    pub fn append(&self, row: &RunResult, records: &[CurveRow]) -> Result<(), SweepError> {
        append_rows(&self.results, &row.header(), &[row_texts(row)])?;
        append_text(&self.json_lines, &format!("{}\n", row.json_line()))?;
        if !records.is_empty() {
            let key = row.key();
            let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
            let rows: Vec<Vec<String>> = records
                .iter()
                .map(|r| {
                    vec![
                        key.clone(),
                        r.step.to_string(),
                        r.train_loss.to_string(),
                        r.train_accuracy.to_string(),
                        opt(r.heldout_loss),
                        opt(r.heldout_accuracy),
                        format!("{:.6}", r.seconds),
                    ]
                })
                .collect();
            let header: Vec<String> = CURVE_COLUMNS.iter().map(|s| s.to_string()).collect();
            append_rows(&self.curves, &header, &rows)?;
        }
        Ok(())
    }
}

fn row_texts(row: &RunResult) -> Vec<String> {
    row.columns.iter().map(|(_, v)| value_text(v)).collect()
}

/// Write `rows` (and the header first if the file is new or empty) with one
/// append: whole lines only, even if another process appends too.
fn append_rows(path: &Path, header: &[String], rows: &[Vec<String>]) -> Result<(), SweepError> {
    let empty = std::fs::metadata(path)
        .map(|m| m.len() == 0)
        .unwrap_or(true);
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    let io = |e: csv::Error| SweepError::file(path, e);
    if empty {
        w.write_record(header).map_err(io)?;
    }
    for r in rows {
        w.write_record(r).map_err(io)?;
    }
    let bytes = w.into_inner().map_err(|e| SweepError::file(path, e))?;
    append_bytes(path, &bytes)
}

fn append_text(path: &Path, text: &str) -> Result<(), SweepError> {
    append_bytes(path, text.as_bytes())
}

fn append_bytes(path: &Path, bytes: &[u8]) -> Result<(), SweepError> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| SweepError::file(path, format!("cannot open for appending: {e}")))?;
    f.write_all(bytes)
        .and_then(|_| f.flush())
        .map_err(|e| SweepError::file(path, format!("cannot append: {e}")))
}

/// The plan file `--emit-commands` leaves in its directory: one `planned`
/// row per configuration, for `--collect` to know every run, even those
/// that failed before writing anything.
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
    .map_err(|e| SweepError::file(&path, e.source))
}

/// One emitted run read back from its files.
pub struct Collected {
    pub row: RunResult,
    pub records: Vec<CurveRow>,
}

/// Read what the emitted commands of `dir` left: for each planned run, its
/// JSON line (ok), its error file (failed), or nothing yet (`None`).
pub fn collect(dir: &Path) -> Result<Vec<(RunResult, Option<Collected>)>, SweepError> {
    let plan_path = dir.join(PLAN_FILE);
    if !plan_path.exists() {
        return Err(SweepError::file(
            &plan_path,
            "no such file: --collect needs the directory given to --emit-commands --out-dir",
        ));
    }
    let plan = read_results(&plan_path)?;
    let mut out = Vec::new();
    for planned in plan {
        let key = planned.key();
        let json_path = run_file(dir, &key, "json");
        let err_path = run_file(dir, &key, "err");
        let json_text = std::fs::read_to_string(&json_path).unwrap_or_default();
        let err_text = std::fs::read_to_string(&err_path).unwrap_or_default();
        let last = json_text
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'));
        let collected = if let Some(line) = last {
            let bad_line = |e: serde_json::Error| {
                SweepError::file(&json_path, format!("not a JSON result line: {e}"))
            };
            let summary: serde_json::Map<String, Value> =
                serde_json::from_str(line).map_err(bad_line)?;
            let report: RunReport = serde_json::from_str(line).map_err(bad_line)?;
            // The run must be the planned one: every hyperparameter it reports agrees.
            for (name, want) in planned.params() {
                if let Some(got) = summary.get(name) {
                    if got != want && !(got.is_null() && want.is_null()) {
                        return Err(SweepError::file(
                            &json_path,
                            format!("{name} is {got}, but the plan says {want} for run {key}"),
                        ));
                    }
                }
            }
            let records = read_metrics_file(&run_file(dir, &key, "metrics.csv"))?;
            let mut row = planned.clone();
            set(&mut row, "status", Value::String(OK.into()));
            row.fill(&report);
            for name in ["model", "metrics", "plot"] {
                if let Some(v) = summary.get(name) {
                    set(&mut row, name, v.clone());
                }
            }
            Some(Collected { row, records })
        } else if !err_text.trim().is_empty() {
            let mut row = planned.clone();
            set(&mut row, "status", Value::String(FAILED.into()));
            let reason = err_text
                .trim()
                .lines()
                .last()
                .unwrap_or("")
                .trim_start_matches("error: ");
            set(&mut row, "error", Value::String(reason.to_string()));
            Some(Collected {
                row,
                records: Vec::new(),
            })
        } else {
            None
        };
        out.push((planned, collected));
    }
    Ok(out)
}

fn set(row: &mut RunResult, name: &str, v: Value) {
    row.set(name, v)
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
