//! A run's settings as a file: `config.toml` in each run folder, what
//! `--print-config` prints, what `--config FILE` starts from and what a
//! checkpoint carries so that `--resume CKPT` alone continues.
//!
//! The keys are `train`'s flag names with `_` for `-` (the `--json` keys
//! too, and every flag also answers to that spelling: `--batch_size=128`).
//! Values are the resolved ones, presets and depth defaults applied, so a
//! config replays the same run even if a default changes later. A config
//! is applied as flags placed before the command line's own, so the command
//! line wins; see [`RunConfig::to_flags`].

use super::args::Plan;
use super::Schedule;
use crate::data::DataSource;
use crate::optim::OptimizerKind;
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The resolved settings of a run, keyed by flag name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Absent: `data/train.csv` if it exists, else the built-in sample.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_data: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optimizer: Option<String>,
    /// f64 holding the shortest decimal of the f32 (0.005, not 0.004999...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr_schedule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub momentum: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epochs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u64>,
    /// A number of rows, or "full".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<toml::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_every: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heldout_eval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub early_stop: Option<u64>,
    /// `--augment`'s distortions, every key spelled out, or `off`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub augment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_every: Option<u64>,
}

/// A config file that cannot be used, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct ConfigError {
    pub path: PathBuf,
    pub problem: String,
}

/// Keys that exclude each other: a command line giving one of a group drops
/// the config's whole group, so `--hidden 64` over a config with `layers`,
/// or `--iterations 100` over one with `epochs`, means what it says
/// (`--split 1` over a `--val-data` run: no held-out rows at all).
const GROUPS: &[&[&str]] = &[
    &["hidden", "layers"],
    &["epochs", "iterations"],
    // Both choose the held-out rows.
    &["split", "val_data"],
];

/// Keys whose resolved value followed the optimizer (its default learning
/// rate, momentum only for `momentum`, decay only for `adam`): a command
/// line naming another optimizer drops them unless it gives them too.
const FOLLOW_OPTIMIZER: &[&str] = &["lr", "momentum", "weight_decay"];

/// The shortest decimal that reads back as `v`, as an f64.
fn decimal(v: f32) -> f64 {
    v.to_string().parse().expect("a float's decimal parses")
}

impl RunConfig {
    /// The settings `plan` resolved to.
    pub fn of(plan: &Plan) -> RunConfig {
        let c = &plan.config;
        let (epochs, iterations, batch_size, log_every) = match c.schedule {
            Schedule::FullBatch { iterations } => (
                None,
                Some(iterations as u64),
                toml::Value::String("full".into()),
                Some(c.log_every as u64),
            ),
            Schedule::MiniBatch { epochs, batch_size } => (
                Some(epochs as u64),
                None,
                toml::Value::Integer(batch_size as i64),
                None,
            ),
        };
        RunConfig {
            data: match &plan.source {
                DataSource::File(p) => Some(p.clone()),
                DataSource::BuiltinSample => None,
            },
            val_data: plan.val_data.clone(),
            preset: Some(name(&plan.preset)),
            layers: Some(c.layers.flag()),
            hidden: None,
            init: Some(name(&c.init)),
            optimizer: Some(name(&c.optimizer)),
            lr: Some(decimal(c.lr)),
            lr_schedule: Some(name(&c.lr_schedule)),
            momentum: (c.optimizer == OptimizerKind::Momentum).then(|| decimal(c.momentum)),
            weight_decay: (c.optimizer == OptimizerKind::Adam).then(|| decimal(c.weight_decay)),
            epochs,
            iterations,
            batch_size: Some(batch_size),
            log_every,
            seed: Some(c.seed),
            threads: Some(plan.threads as u64),
            // `--val-data` means `--split 1`; `--split 1` alone holds no
            // rows out, so there is no held-out evaluation to choose.
            split: plan.val_data.is_none().then_some(plan.split),
            engine: Some(name(&c.engine)),
            heldout_eval: (plan.split < 1.0 || plan.val_data.is_some())
                .then(|| name(&plan.heldout_eval)),
            early_stop: c.early_stop.map(|n| n as u64),
            // Written when on, and when off under a preset that turns it on.
            augment: match c.augment {
                Some(a) => Some(a.to_string()),
                None => (plan.preset == super::Preset::Mlp99).then(|| "off".into()),
            },
            checkpoint_every: None,
        }
    }

    /// As TOML, with a header saying what it is and how to use it.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).expect("a flat table serialises");
        let data = if self.data.is_none() {
            "# data: none given, so data/train.csv if it exists, else the built-in sample\n"
        } else {
            ""
        };
        format!(
            "# mnist-blas train settings: `mnist-blas train --config FILE` replays them;\n\
             # flags given with it override. Keys are the flag names (`_` or `-`).\n{data}{body}"
        )
    }

    /// Read a config file written by [`RunConfig::to_toml`] or by hand.
    pub fn load(path: &Path) -> Result<RunConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            problem: format!("cannot read: {}", crate::output::describe(&e)),
        })?;
        RunConfig::parse(&text).map_err(|problem| ConfigError {
            path: path.to_path_buf(),
            problem,
        })
    }

    /// Parse TOML text; the error is TOML's own (line, column, what).
    pub fn parse(text: &str) -> Result<RunConfig, String> {
        // Keys may be spelled as flags (`batch-size`) too.
        let table: toml::Table = toml::from_str(text).map_err(|e| one_line(&e.to_string()))?;
        let table: toml::Table = table
            .into_iter()
            .map(|(k, v)| (k.replace('-', "_"), v))
            .collect();
        RunConfig::deserialize(toml::Value::Table(table)).map_err(|e| one_line(&e.to_string()))
    }

    /// Keys set, in file order (the struct's).
    fn entries(&self) -> Vec<(String, toml::Value)> {
        match toml::Value::try_from(self).expect("serialises") {
            toml::Value::Table(t) => t.into_iter().collect(),
            _ => unreachable!("a struct is a table"),
        }
    }

    /// The flags this config stands for, minus those the command line
    /// `given` (flag names without dashes, `_` or `-`) overrides, or that
    /// a given flag makes meaningless (see [`GROUPS`]).
    pub fn to_flags(&self, given: &[String]) -> Vec<OsString> {
        let given: Vec<String> = given.iter().map(|g| g.replace('-', "_")).collect();
        let gave = |k: &str| given.iter().any(|g| g == k);
        let dropped = |k: &str| {
            gave(k)
                || GROUPS
                    .iter()
                    .any(|group| group.contains(&k) && group.iter().any(|m| gave(m)))
                || (FOLLOW_OPTIMIZER.contains(&k) && gave("optimizer"))
                // `--split 1` holds nothing out: nothing to evaluate.
                || (k == "heldout_eval" && gave("split"))
        };
        let mut flags = Vec::new();
        for (key, value) in self.entries() {
            if dropped(&key) {
                continue;
            }
            let value = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                other => other.to_string(),
            };
            let mut flag = OsString::from(format!("--{}=", key.replace('_', "-")));
            flag.push(value);
            flags.push(flag);
        }
        flags
    }
}

/// A `ValueEnum`'s name as its flag takes it (`adam`, `cosine`).
fn name<T: clap::ValueEnum>(v: &T) -> String {
    v.to_possible_value()
        .expect("no skipped variants")
        .get_name()
        .to_string()
}

/// TOML's multi-line messages (a snippet with a caret) on one line.
fn one_line(s: &str) -> String {
    let lines: Vec<&str> = s
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('|') && !l.chars().all(|c| c == '^'))
        .collect();
    lines.join(": ").replace(": :", ":")
}

/// Flag names (without dashes) present in `args`, for [`RunConfig::to_flags`].
pub fn flags_given(args: &[OsString]) -> Vec<String> {
    args.iter()
        .filter_map(|a| a.to_str())
        .filter_map(|a| a.strip_prefix("--"))
        .map(|a| a.split('=').next().unwrap_or(a).to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_round_trip_and_the_command_line_wins() {
        let cfg = RunConfig::parse(
            "layers = \"256-128\"\nlr = 0.004\nbatch-size = 128\nepochs = 15\noptimizer = \"adam\"\nweight_decay = 0.1\n",
        )
        .unwrap();
        assert_eq!(cfg.layers.as_deref(), Some("256-128"));
        assert_eq!(cfg.batch_size, Some(toml::Value::Integer(128)));
        let flags = |given: &[&str]| -> Vec<String> {
            let given: Vec<String> = given.iter().map(|s| s.to_string()).collect();
            cfg.to_flags(&given)
                .into_iter()
                .map(|f| f.into_string().unwrap())
                .collect()
        };
        assert_eq!(
            flags(&[]),
            [
                "--layers=256-128",
                "--optimizer=adam",
                "--lr=0.004",
                "--weight-decay=0.1",
                "--epochs=15",
                "--batch-size=128"
            ]
        );
        // A flag given drops its key, its group, and what followed the optimizer.
        assert_eq!(
            flags(&["hidden", "iterations", "optimizer"]),
            ["--batch-size=128"]
        );
        assert!(!flags(&["lr"]).iter().any(|f| f.starts_with("--lr=")));
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_named() {
        let e = RunConfig::parse("lr = 0.1\nbatchsize = 3\n").unwrap_err();
        assert!(e.contains("batchsize"), "{e}");
        let e = RunConfig::parse("lr = \"fast\"\n").unwrap_err();
        assert!(e.contains("lr") || e.contains("float"), "{e}");
        let e = RunConfig::parse("lr = \n").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn decimals_stay_short() {
        assert_eq!(decimal(0.005), 0.005);
        assert_eq!(decimal(0.1).to_string(), "0.1");
    }
}
