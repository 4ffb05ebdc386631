//! Result files: one CSV row and one JSON line per run, and per-epoch curves
//! in a second CSV. A run's lines go to each file in one write on a file
//! opened for appending: the JSON line first, then the curve rows, and the
//! CSV row last, which marks the run done (a re-run skips every key in the
//! results CSV). If a write fails (a full disk), the files already written
//! for that run are cut back to their length before it, so no file keeps a
//! partial line or a line of an unrecorded run; what a crash between the
//! writes leaves, `sweep::repair` drops before the next sweep appends.

use super::{RunSpec, SweepError};
use crate::text::{plural, thousands};
use crate::train::{Record, RunReport};
use serde_json::Value;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Columns before the hyperparameters (`val_data`: the `--val-data` file,
/// empty without one).
pub const LEAD_COLUMNS: [&str; 7] = [
    "key", "status", "error", "command", "data", "val_data", "preset",
];
/// Columns after the hyperparameters: what the run measured. The names are
/// `train --json`'s, plus the best epoch.
pub const METRIC_COLUMNS: [&str; 26] = [
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
    "early_stopped_at",
    "restored_step",
    "threads",
    "engine_used",
    "engine_reason",
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
                "val_data".into(),
                match &spec.plan.val_data {
                    Some(p) => s(&p.display().to_string()),
                    None => Value::Null,
                },
            ),
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
    // No --val-data: null, as in the JSON lines.
    if column == "val_data" && text.is_empty() {
        return Value::Null;
    }
    // The lead columns are always strings (`error` is empty for ok runs).
    if LEAD_COLUMNS.contains(&column) {
        return Value::String(text.to_string());
    }
    if text.is_empty() {
        return Value::Null;
    }
    // `layers` is text even when it looks like a number (`10`).
    if ["model", "metrics", "plot", "layers"].contains(&column) {
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
    match std::fs::metadata(path) {
        Err(_) => return Ok(Vec::new()),
        Ok(m) if !m.is_file() => {
            return Err(SweepError::file(
                path,
                "not a regular file (a sweep reads its results back to resume)",
            ))
        }
        Ok(_) => {}
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

/// The curves CSV, by key (empty if the file does not exist or is not a
/// regular file: `/dev/null` keeps no curves).
pub fn read_curves(path: &Path) -> Result<HashMap<String, Vec<CurvePoint>>, SweepError> {
    let mut out: HashMap<String, Vec<CurvePoint>> = HashMap::new();
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
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
                    "its columns differ from this sweep's (found {}, this sweep writes {}: {}); \
                     give another --results file",
                    plural(found.len(), "column"),
                    thousands(header.len()),
                    header.join(",")
                ),
            ));
        }
        Ok(())
    }

    /// Append one run: its JSON line, its curve rows, then its CSV row. On
    /// an error, the files written so far are cut back (regular files only).
    pub fn append(&self, row: &RunResult, records: &[CurveRow]) -> Result<(), SweepError> {
        let mut appended = Appended::default();
        let result = self.append_all(&mut appended, row, records);
        if result.is_err() {
            appended.roll_back();
        }
        result
    }

    fn append_all(
        &self,
        appended: &mut Appended,
        row: &RunResult,
        records: &[CurveRow],
    ) -> Result<(), SweepError> {
        appended.append(
            &self.json_lines,
            format!("{}\n", row.json_line()).as_bytes(),
        )?;
        if !records.is_empty() {
            let header: Vec<String> = CURVE_COLUMNS.iter().map(|s| s.to_string()).collect();
            let rows = curve_texts(&row.key(), records);
            appended.append(&self.curves, &csv_bytes(&self.curves, &header, &rows)?)?;
        }
        let rows = [row_texts(row)];
        appended.append(
            &self.results,
            &csv_bytes(&self.results, &row.header(), &rows)?,
        )
    }
}

fn curve_texts(key: &str, records: &[CurveRow]) -> Vec<Vec<String>> {
    let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    records
        .iter()
        .map(|r| {
            vec![
                key.to_string(),
                r.step.to_string(),
                r.train_loss.to_string(),
                r.train_accuracy.to_string(),
                opt(r.heldout_loss),
                opt(r.heldout_accuracy),
                format!("{:.6}", r.seconds),
            ]
        })
        .collect()
}

pub(crate) fn row_texts(row: &RunResult) -> Vec<String> {
    row.columns.iter().map(|(_, v)| value_text(v)).collect()
}

/// `rows` as CSV text, the header first if the file is new or empty.
fn csv_bytes(path: &Path, header: &[String], rows: &[Vec<String>]) -> Result<Vec<u8>, SweepError> {
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
    w.into_inner().map_err(|e| SweepError::file(path, e))
}

/// The files one run was appended to, and their lengths before, to undo a
/// run that could not be written whole.
#[derive(Default)]
struct Appended {
    files: Vec<(File, u64)>,
}

impl Appended {
    /// One write of whole lines at the end of `path`. A failed write is cut
    /// back at once; earlier files of the run by [`Appended::roll_back`].
    fn append(&mut self, path: &Path, bytes: &[u8]) -> Result<(), SweepError> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| SweepError::file(path, format!("cannot open for appending: {e}")))?;
        let before = regular_len(&f);
        if let Err(e) = f.write_all(bytes).and_then(|_| f.flush()) {
            if let Some(len) = before {
                let _ = f.set_len(len);
            }
            return Err(SweepError::file(
                path,
                format!("cannot append: {}", crate::output::describe(&e)),
            ));
        }
        if let Some(len) = before {
            self.files.push((f, len));
        }
        Ok(())
    }

    fn roll_back(self) {
        for (f, len) in self.files {
            let _ = f.set_len(len);
        }
    }
}

/// The length of `f` if it is a regular file (devices and pipes are never cut).
fn regular_len(f: &File) -> Option<u64> {
    f.metadata().ok().filter(|m| m.is_file()).map(|m| m.len())
}

/// Append `text` (whole lines) to `path` in one write.
pub(crate) fn append_text(path: &Path, text: &str) -> Result<(), SweepError> {
    Appended::default().append(path, text.as_bytes())
}
