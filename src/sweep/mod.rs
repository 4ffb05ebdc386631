//! Hyperparameter sweeps: many `train` runs over one loaded data set.
//!
//! - [`grid`]: which configurations (full grid or random search);
//! - [`resolve`] (here): each configuration's flags parsed by the `train`
//!   parser and resolved, so a sweep run *is* the `train` run with those
//!   flags; [`plan`]: its resume key, once the data is loaded (the key
//!   covers the data's content); the `mnist-blas train` command line for it;
//! - [`run`]: configurations in parallel, one single-threaded run per core,
//!   stopped between steps by a signal;
//! - [`results`]: the results CSV, JSON lines and curves CSV (one run's
//!   lines appended together, the CSV row last; resumable by key);
//! - `repair`: before a sweep appends, partial last lines and lines of
//!   runs cut short are dropped, missing JSON lines rebuilt;
//! - `lock`: one sweep at a time on a results file;
//! - [`collect`]: the results of emitted runs (`--emit`), for `--collect`;
//! - [`slurm`]: `--emit slurm`'s job array script;
//! - [`summary`]: the top table and the mean ± std over seeds;
//! - [`plot`]: the PNG (accuracy against each swept flag, learning curves).

pub mod collect;
pub mod grid;
pub(crate) mod lock;
pub mod plot;
pub(crate) mod repair;
pub mod results;
pub mod run;
pub mod slurm;
pub mod summary;

use crate::data::{DataSource, Dataset};
use crate::train::args::{clap_error_line, parse_flags};
use crate::train::Plan;
use grid::Flags;
use serde_json::Value;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("--{flag}: {problem}")]
    Axis { flag: String, problem: String },
    #[error("configuration `{flags}`: {problem}")]
    Config { flags: String, problem: String },
    #[error("{}: {problem}", path.display())]
    File { path: PathBuf, problem: String },
    #[error(
        "the configurations do not all read the same data ({0} and {1}); --data cannot be swept"
    )]
    MixedData(String, String),
    #[error(
        "the configurations do not all hold out the same --val-data ({0} and {1}); --val-data cannot be swept"
    )]
    MixedValData(String, String),
    #[error("cannot start {0}")]
    Threads(String),
    #[error("--emit slurm: {0}")]
    Slurm(String),
    #[error(
        "another sweep{} is writing {}; wait for it or use other --results",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        results.display()
    )]
    Locked { results: PathBuf, pid: Option<u32> },
}

impl SweepError {
    pub(crate) fn file(path: &Path, problem: impl std::fmt::Display) -> SweepError {
        SweepError::File {
            path: path.to_path_buf(),
            problem: problem.to_string(),
        }
    }
}

/// One configuration, parsed and resolved; [`plan`] gives it its key.
#[derive(Debug, Clone)]
pub struct Config {
    pub flags: Flags,
    pub extra: Vec<String>,
    pub plan: Plan,
    pub params: Vec<(String, Value)>,
}

/// One configuration, ready to run or to print as a command.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// Stable id of the run: a hash of what decides its result (see [`run_key`]).
    pub key: String,
    /// The `train` flags of this run (without dashes), in the order given.
    pub flags: Flags,
    /// Flags passed after `--`, verbatim.
    pub extra: Vec<String>,
    pub plan: Plan,
    /// The hyperparameters as result columns: every field of the resolved
    /// `TrainConfig`, by name, in name order.
    pub params: Vec<(String, Value)>,
}

impl RunSpec {
    /// `train` arguments: `--flag=value`, then the extra flags.
    pub fn train_args(&self) -> Vec<String> {
        flags_to_args(&self.flags, &self.extra)
    }

    pub fn data(&self) -> String {
        self.plan.source.describe()
    }

    /// The swept flags as `lr=0.1 seed=2`, for progress lines.
    pub fn label(&self, swept: &[String]) -> String {
        self.flags
            .iter()
            .filter(|(f, _)| swept.contains(f))
            .map(|(f, v)| format!("{f}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn flags_to_args(flags: &Flags, extra: &[String]) -> Vec<String> {
    flags
        .iter()
        // `--lr=VALUE`: a value may start with `-` and must not read as a flag.
        .map(|(f, v)| format!("--{f}={v}"))
        .chain(extra.iter().cloned())
        .collect()
}

/// Parse and resolve every configuration (`fixed` flags, then the swept
/// ones, then `extra`) with the `train` parser; drop repeated configurations
/// (same hyperparameters). Fails on the first configuration `train` would
/// refuse, or on configurations that read different data or `--val-data`.
pub fn resolve(
    fixed: &Flags,
    configs: Vec<Flags>,
    extra: &[String],
) -> Result<Vec<Config>, SweepError> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut data: Option<String> = None;
    let mut val: Option<String> = None;
    for swept in configs {
        let flags: Flags = fixed.iter().cloned().chain(swept).collect();
        let args = flags_to_args(&flags, extra);
        let bad = |problem: String| SweepError::Config {
            flags: args.join(" "),
            problem,
        };
        let parsed = parse_flags(&args).map_err(|e| bad(clap_error_line(&e)))?;
        let resolved = parsed.resolve().map_err(|e| bad(format!("{e:#}")))?;
        let d = resolved.source.describe();
        match &data {
            Some(first) if *first != d => return Err(SweepError::MixedData(first.clone(), d)),
            _ => data = Some(d),
        }
        let v = val_text(&resolved);
        match &val {
            Some(first) if *first != v => return Err(SweepError::MixedValData(first.clone(), v)),
            _ => val = Some(v),
        }
        let params = config_params(&resolved);
        if seen.insert(params_text(&params)) {
            out.push(Config {
                flags,
                extra: extra.to_vec(),
                plan: resolved,
                params,
            });
        }
    }
    // `augment` is a column only when set (so sweeps without it keep their
    // keys and header); once any configuration sets it, every row has it.
    if out
        .iter()
        .any(|c| c.params.iter().any(|(n, _)| n == "augment"))
    {
        for c in &mut out {
            if !c.params.iter().any(|(n, _)| n == "augment") {
                c.params
                    .push(("augment".into(), Value::String("off".into())));
                c.params.sort_by(|a, b| a.0.cmp(&b.0));
            }
        }
    }
    Ok(out)
}

/// `--val-data` as configurations are compared: its path, or "none".
fn val_text(plan: &Plan) -> String {
    match &plan.val_data {
        Some(p) => p.display().to_string(),
        None => "none".into(),
    }
}

/// What a run key records of the data besides its path: the rows as
/// loaded, so that a file replaced in place gives new keys (and new runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataFingerprint {
    pub rows: usize,
    pub pixels_crc32: u32,
    pub labels_crc32: u32,
}

impl DataFingerprint {
    pub fn of(all: &Dataset) -> DataFingerprint {
        DataFingerprint {
            rows: all.len(),
            pixels_crc32: crc32fast::hash(&all.pixels),
            labels_crc32: crc32fast::hash(all.labels.as_deref().unwrap_or(&[])),
        }
    }
}

/// The runs of `configs` on the data `data` fingerprints (and the
/// `--val-data` rows `val` fingerprints), each with its key.
pub fn plan(
    configs: Vec<Config>,
    data: &DataFingerprint,
    val: Option<&DataFingerprint>,
) -> Vec<RunSpec> {
    configs
        .into_iter()
        .map(|c| RunSpec {
            key: run_key(&c.plan, data, val, &c.params),
            flags: c.flags,
            extra: c.extra,
            plan: c.plan,
            params: c.params,
        })
        .collect()
}

/// The resolved configuration as `(name, value)` columns: `TrainConfig`'s
/// fields as `train` serializes them (nested objects such as the schedule
/// flattened), plus `split`; every schedule column present (null if unused)
/// so that full-batch and mini-batch rows share one header.
pub fn config_params(r: &Plan) -> Vec<(String, Value)> {
    // Through the JSON text, so f32 values keep their short form (0.1, not
    // 0.10000000149011612 as `to_value` would widen them).
    let text = serde_json::to_string(&r.config).expect("TrainConfig serializes");
    let Value::Object(map) = serde_json::from_str(&text).expect("valid JSON") else {
        unreachable!("TrainConfig is a struct")
    };
    let mut out: Vec<(String, Value)> = Vec::new();
    for (name, value) in map {
        match value {
            Value::Object(inner) => out.extend(inner),
            v => out.push((name, v)),
        }
    }
    out.push(("split".into(), serde_json::json!(r.split)));
    for name in ["iterations", "epochs", "batch_size"] {
        if !out.iter().any(|(n, _)| n == name) {
            out.push((name.into(), Value::Null));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn params_text(params: &[(String, Value)]) -> String {
    params
        .iter()
        .map(|(name, value)| format!("{name}={value};"))
        .collect()
}

/// 16 hex digits of FNV-1a over the data (its path and the fingerprint of
/// its rows) and the hyperparameters: equal keys mean equal runs (the
/// preset and thread count only fill in or speed up). With `--val-data`
/// the key covers its path and rows too. Results written
/// before keys covered the data's content simply match no key: their runs
/// run again.
pub fn run_key(
    r: &Plan,
    data: &DataFingerprint,
    val: Option<&DataFingerprint>,
    params: &[(String, Value)],
) -> String {
    // Without --val-data the text (so the key) is what it always was.
    let val = match (&r.val_data, val) {
        (Some(path), Some(v)) => format!(
            "val_data={};val_rows={};val_pixels_crc32={:08x};val_labels_crc32={:08x};",
            path.display(),
            v.rows,
            v.pixels_crc32,
            v.labels_crc32
        ),
        _ => String::new(),
    };
    let text = format!(
        "data={};rows={};pixels_crc32={:08x};labels_crc32={:08x};{val}{}",
        r.source.describe(),
        data.rows,
        data.pixels_crc32,
        data.labels_crc32,
        params_text(params)
    );
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The data every configuration reads (they all read the same, see [`resolve`]).
pub fn data_source(configs: &[Config]) -> Option<&DataSource> {
    configs.first().map(|c| &c.plan.source)
}

/// The `--val-data` file every configuration holds out, if any (they all
/// hold out the same, see [`resolve`]).
pub fn val_data(configs: &[Config]) -> Option<&Path> {
    configs.first().and_then(|c| c.plan.val_data.as_deref())
}

/// Quote for a POSIX shell when needed.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Files one emitted command writes, all in `dir` and named by the run key.
pub fn run_file(dir: &Path, key: &str, ext: &str) -> PathBuf {
    dir.join(format!("run-{key}.{ext}"))
}

/// The `train` command line of one run for `--emit-commands`: every flag of
/// the configuration, one JSON result line to `DIR/run-KEY.json`, errors to
/// `DIR/run-KEY.err`, model and per-epoch metrics beside them.
pub fn command_line(bin: &str, spec: &RunSpec, dir: &Path, threads: usize) -> String {
    let mut words = vec![shell_quote(bin), "train".to_string()];
    words.extend(spec.train_args().iter().map(|a| shell_quote(a)));
    let file = |ext: &str| shell_quote(&run_file(dir, &spec.key, ext).display().to_string());
    words.extend([
        "--threads".to_string(),
        threads.to_string(),
        "--json".into(),
        "-q".into(),
        "--model".into(),
        file("npz"),
        "--metrics".into(),
        file("metrics.csv"),
        ">".into(),
        file("json"),
        "2>".into(),
        file("err"),
    ]);
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sweep parses its configurations as `train` does, the `--json`
    /// keys' snake_case spellings included.
    #[test]
    fn configurations_take_train_flags_in_either_spelling() {
        let fixed: Flags = vec![("epochs".into(), "2".into())];
        let configs = vec![vec![("batch-size".into(), "64".into())]];
        let extra = ["--lr_schedule=constant".to_string()];
        let got = resolve(&fixed, configs, &extra).unwrap();
        let c = &got[0].plan.config;
        assert_eq!(c.lr_schedule, crate::train::LrSchedule::Constant);
        assert_eq!(
            c.schedule,
            crate::train::Schedule::MiniBatch {
                epochs: 2,
                batch_size: 64
            }
        );
        let bad = resolve(&fixed, vec![vec![]], &["--lr_schedul=x".to_string()]);
        assert!(bad.is_err());
    }
}
