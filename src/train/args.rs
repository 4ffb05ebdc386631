//! `train`'s flags (clap) and their resolution into a [`Plan`]: presets
//! applied, defaults filled, impossible combinations refused. The sweep
//! parses each configuration through the same [`TrainArgs`], so a sweep run
//! is the `train` run with those flags.

use crate::data::augment::Augment;
use crate::data::{DataSource, Dataset};
use crate::engine::EngineKind;
use crate::model::{Init, Layers};
use crate::optim::OptimizerKind;
use crate::train::{LrSchedule, Schedule, TrainConfig};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A setting `train` refuses, as one line naming the flag.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

macro_rules! refuse {
    ($($arg:tt)*) => {
        return Err(PlanError(format!($($arg)*)))
    };
}

/// Refuses a path given by the user that does not exist. Any other reason
/// it cannot be read (a symlink loop, no permission) is left to the reader,
/// which names it.
pub(crate) fn check_exists(path: &Path, flag: &str) -> Result<(), PlanError> {
    if let Err(e) = std::fs::metadata(path) {
        if e.kind() == std::io::ErrorKind::NotFound {
            refuse!("{}: no such file ({flag})", path.display());
        }
    }
    Ok(())
}

/// Settings bundles; every flag given explicitly overrides the preset.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Our best settings for 784-10-10: He init, Adam, mini-batches, 80/20 split.
    Default,
    /// The Kaggle notebook's job: 20% train / 80% held out, uniform init,
    /// full-batch gradient descent, lr 0.1, 500 iterations, accuracy every 25.
    Notebook,
    /// Our best plain MLP in about 5 minutes on 2 cores (docs/augment.md):
    /// a wide 784-H-10 network trained on distorted digits (`--augment`).
    Mlp99,
}

/// The `mlp99` preset's settings (found by the sweep in docs/augment.md);
/// the rest are the default preset's (Adam, He init, cosine schedule).
struct Mlp99 {
    hidden: &'static [usize],
    lr: f32,
    weight_decay: f32,
    batch_size: usize,
    epochs: usize,
}

impl Mlp99 {
    fn layers(&self) -> Layers {
        Layers::new(self.hidden.to_vec()).expect("the preset's widths are valid")
    }
}

const MLP99: Mlp99 = Mlp99 {
    hidden: &[800],
    lr: 0.002,
    weight_decay: 0.0,
    batch_size: 128,
    epochs: 60,
};

/// When `train` scores the held-out rows.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum HeldoutEval {
    /// At every record: a held-out curve in the metrics CSV, the plot and
    /// the progress line.
    Records,
    /// Once, after training, as the notebook does: it prints training
    /// accuracy as it goes. Saves a pass over the held-out rows per record.
    End,
}

impl HeldoutEval {
    /// The held-out rows the training loop should score as it goes, if any.
    pub fn during_training(self, heldout: &Dataset) -> Option<&Dataset> {
        (self == HeldoutEval::Records).then_some(heldout)
    }
}

/// `full` or a number of rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSize {
    Full,
    Rows(usize),
}

impl FromStr for BatchSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("full") {
            return Ok(BatchSize::Full);
        }
        match s.parse::<usize>() {
            Ok(0) => Err("must be at least 1 (or `full`)".into()),
            Ok(n) => Ok(BatchSize::Rows(n)),
            Err(_) => Err(format!("expected a number of rows or `full`, found `{s}`")),
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Training data: Kaggle train.csv (plain or .gz) or MNIST IDX images
    /// (labels read from the file beside it). Default: data/train.csv if it
    /// exists, else the real-digit sample built into the binary.
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    /// Settings bundle; explicit flags override it.
    #[arg(long, value_enum, default_value_t = Preset::Default)]
    pub preset: Preset,
    /// Hidden units H of a one-hidden-layer 784-H-10 network [default: 10].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=crate::model::MAX_HIDDEN as u64))]
    pub hidden: Option<u64>,
    /// Hidden widths joined by '-': `256-128` is the network 784-256-128-10
    /// [default: 10, the notebook's 784-10-10].
    #[arg(long, value_name = "H1-H2-...", conflicts_with = "hidden")]
    pub layers: Option<Layers>,
    /// Weight initialisation [default: he; notebook: uniform].
    #[arg(long, value_enum)]
    pub init: Option<Init>,
    /// Update rule [default: adam; notebook: sgd].
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerKind>,
    /// Learning rate [default: 0.005 for adam (0.004 with two or more hidden
    /// layers), 0.1 otherwise].
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f32>,
    /// Learning-rate schedule [default: cosine; notebook: constant].
    #[arg(long, value_enum)]
    pub lr_schedule: Option<LrSchedule>,
    /// Momentum coefficient for `--optimizer momentum` [default: 0.9].
    #[arg(long, allow_negative_numbers = true)]
    pub momentum: Option<f32>,
    /// Decoupled weight decay for `--optimizer adam` (AdamW, as PyTorch's):
    /// each step multiplies every parameter by 1 - lr * DECAY first
    /// [default: 0; 0.1 for adam with two or more hidden layers].
    #[arg(long, value_name = "DECAY", allow_negative_numbers = true)]
    pub weight_decay: Option<f32>,
    /// Passes over the training set (mini-batch training) [default: 10].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Gradient steps for full-batch training [default: 500].
    #[arg(long)]
    pub iterations: Option<usize>,
    /// Rows per step, or `full` for full-batch gradient descent [default: 32;
    /// 128 with two or more hidden layers; notebook: full].
    #[arg(long, value_name = "N|full")]
    pub batch_size: Option<BatchSize>,
    /// Seed of the split, the initial weights and the shuffles.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (0: one per core). Results do not depend on it.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Fraction of the rows that trains; the rest is held out [default: 0.8;
    /// notebook: 0.2; 1: every row trains, none is held out].
    #[arg(long, allow_negative_numbers = true)]
    pub split: Option<f64>,
    /// Held-out rows from their own labeled file (CSV or IDX, as --data),
    /// as Keras' validation_data; the whole --data file then trains.
    #[arg(long, value_name = "PATH")]
    pub val_data: Option<PathBuf>,
    /// Arithmetic engine.
    #[arg(long, value_enum, default_value_t = EngineKind::Auto)]
    pub engine: EngineKind,
    /// Full-batch: record metrics every N iterations [default: 25].
    #[arg(long, value_name = "N")]
    pub log_every: Option<usize>,
    /// When to score the held-out rows: at every record, or once at the end
    /// [default: records; notebook: end].
    #[arg(long, value_enum, value_name = "WHEN")]
    pub heldout_eval: Option<HeldoutEval>,
    /// Stop once N epochs (full batch: N records) in a row bring no lower
    /// held-out loss, and keep the weights of the epoch (record) with the
    /// lowest, as Keras' EarlyStopping(patience=N, restore_best_weights=True).
    #[arg(long, value_name = "N")]
    pub early_stop: Option<usize>,
    /// Distort the training rows afresh every epoch (held-out rows never):
    /// alone, the mlp99 recipe's distortions; or `off`; or e.g.
    /// `shift=2,rotate=12,scale=0.1,shear=10,elastic=34/4` (pixels, degrees,
    /// fraction, degrees, Simard's alpha/sigma; `;` also separates)
    /// [default: off; mlp99: the recipe's].
    #[arg(long, value_name = "SPEC", num_args = 0..=1, default_missing_value = "recipe")]
    pub augment: Option<String>,
    /// Folder that holds the run folders [default: runs]. Each run writes
    /// into its own folder DIR/NAME and points DIR/latest at it when done.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// The run folder's name [default: the start time, 2026-11-30_17-05-09].
    /// An existing run folder is never reused (except by --resume).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Write the trained model here instead of the run folder's model.npz
    /// (.npz, the notebook's names and shapes). With --metrics too and no
    /// --out-dir or --name, no run folder is made.
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Write the metrics CSV (a row per epoch or logged iteration, flushed
    /// as each one ends) here instead of the run folder's metrics.csv.
    #[arg(long, value_name = "PATH")]
    pub metrics: Option<PathBuf>,
    /// Also draw the learning curves (loss and accuracy, train vs held out)
    /// as a PNG: to PATH, or to curves.png in the run folder.
    #[arg(long, value_name = "PATH", num_args = 0..=1)]
    pub plot: Option<Option<PathBuf>>,
    /// Start from the settings in FILE (a run folder's config.toml, or
    /// TOML keyed by flag names); flags given beside it override them.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the resolved settings as a config file (TOML) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// End stdout with one JSON line: accuracies, timings, every hyperparameter.
    #[arg(long)]
    pub json: bool,
    /// Print one JSON line per epoch (per logged iteration for full batch)
    /// on stdout as it ends, flushed, instead of the log lines and summary.
    #[arg(long)]
    pub json_epochs: bool,
    /// Print nothing but errors (and the JSON line with --json).
    #[arg(long, short)]
    pub quiet: bool,
    /// Write a checkpoint (weights, optimizer state, position) every N epochs
    /// (mini-batch) or iterations (full-batch). Ctrl-C always writes one.
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<usize>,
    /// Checkpoint file [default: checkpoint.npz in the run folder (without
    /// one: beside --model, e.g. m.ckpt.npz); with --resume, the file
    /// resumed from].
    #[arg(long, value_name = "PATH")]
    pub checkpoint: Option<PathBuf>,
    /// Continue the run saved in CHECKPOINT, with the settings it carries
    /// (and in its run folder, if it is in one). Ends bit-identical to a
    /// run never stopped.
    #[arg(long, value_name = "CHECKPOINT")]
    pub resume: Option<PathBuf>,
}

/// `train`'s flags alone, for what parses them from a list rather than the
/// command line: a sweep's configurations, a config file's (or a
/// checkpoint's) settings placed before the command line's flags.
#[derive(Debug, clap::Parser)]
#[command(no_binary_name = true, name = "train")]
struct TrainOnly {
    #[command(flatten)]
    args: TrainArgs,
}

/// Parse `flags` (no program name) exactly as `train` would, snake_case
/// spellings included.
pub fn parse_flags<I, T>(flags: I) -> Result<TrainArgs, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::{CommandFactory, FromArgMatches};
    let matches = snake_case_aliases(TrainOnly::command()).try_get_matches_from(flags)?;
    TrainOnly::from_arg_matches(&matches).map(|t| t.args)
}

/// Every `--long-flag` also answers to `--long_flag`, the spelling of the
/// `--json` keys and config files (W&B's `${args}` passes `--batch_size=102`);
/// for `command` and its subcommands.
pub fn snake_case_aliases(command: clap::Command) -> clap::Command {
    let names: Vec<String> = command
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    let mut command = command.mut_args(|arg| match arg.get_long() {
        Some(long) if long.contains('-') => {
            let alias = long.replace('-', "_");
            arg.alias(alias)
        }
        _ => arg,
    });
    for name in names {
        command = command.mut_subcommand(name, snake_case_aliases);
    }
    command
}

/// clap's error without usage and help hints, on one line.
pub fn clap_error_line(e: &clap::Error) -> String {
    e.render()
        .to_string()
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.trim().trim_start_matches("error: "))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A training run with every setting decided: what `train` runs and what
/// each sweep configuration resolves to.
#[derive(Debug, Clone)]
pub struct Plan {
    pub config: TrainConfig,
    /// The training fraction of `source`: 1 with `val_data` (or `--split 1`).
    pub split: f64,
    /// `--val-data`: the held-out rows' own file.
    pub val_data: Option<PathBuf>,
    pub threads: usize,
    pub source: DataSource,
    pub preset: Preset,
    pub heldout_eval: HeldoutEval,
    /// Settings given that have no effect on this run, one line each, for
    /// the command to print as warnings.
    pub warnings: Vec<String>,
}

impl TrainArgs {
    /// Apply the preset, fill defaults, refuse impossible combinations.
    pub fn resolve(&self) -> Result<Plan, PlanError> {
        let notebook = self.preset == Preset::Notebook;
        let mlp99 = self.preset == Preset::Mlp99;
        let layers = match &self.layers {
            Some(layers) => layers.clone(),
            None if mlp99 && self.hidden.is_none() => MLP99.layers(),
            None => Layers::one(self.hidden.unwrap_or(10) as usize),
        };
        // Deeper networks overfit 33,600 rows at the one-layer defaults: a
        // sweep (docs/performance.md, "Deeper networks") chose batch 128,
        // lr 0.004 and AdamW decay 0.1 for them.
        let deep = layers.depth() > 2;
        let optimizer = self.optimizer.unwrap_or(if notebook {
            OptimizerKind::Sgd
        } else {
            OptimizerKind::Adam
        });
        let adam = optimizer == OptimizerKind::Adam;
        let lr = self.lr.unwrap_or(match optimizer {
            OptimizerKind::Adam if mlp99 => MLP99.lr,
            OptimizerKind::Adam if deep => 0.004,
            OptimizerKind::Adam => 0.005,
            _ => 0.1,
        });
        let weight_decay = self.weight_decay.unwrap_or(if mlp99 && adam {
            MLP99.weight_decay
        } else if deep && adam {
            0.1
        } else {
            0.0
        });
        if !(lr.is_finite() && lr > 0.0) {
            refuse!("--lr must be a positive number, found {lr}");
        }
        let schedule = self.schedule(deep)?;
        // Parsed here, not by clap, for a one-line refusal.
        let augment = match &self.augment {
            Some(spec) => Some(
                spec.parse::<Augment>()
                    .map_err(|e| PlanError(e.to_string()))?,
            ),
            None => mlp99.then_some(Augment::RECIPE),
        }
        .filter(|a| !a.is_off());
        if let (Some(a), Schedule::FullBatch { .. }) = (&augment, schedule) {
            refuse!(
                "--augment {a} distorts the rows afresh each epoch: it needs mini-batch training, not --batch-size full"
            );
        }
        let split = self.split()?;
        let momentum = self.momentum.unwrap_or(0.9);
        if !(0.0..1.0).contains(&momentum) {
            refuse!("--momentum must be in [0, 1), found {momentum}");
        }
        if !(weight_decay.is_finite() && weight_decay >= 0.0) {
            refuse!("--weight-decay must be a number >= 0, found {weight_decay}");
        }
        if weight_decay > 0.0 && !adam {
            refuse!(
                "--weight-decay is AdamW's decoupled decay: use it with --optimizer adam (this run has {})",
                optimizer.name()
            );
        }
        let init = self
            .init
            .unwrap_or(if notebook { Init::Uniform } else { Init::He });
        if init == Init::Orthogonal {
            crate::linalg::check_available()
                .map_err(|e| PlanError(format!("--init orthogonal {e}")))?;
        }
        crate::threads::count(self.threads, "--threads").map_err(|e| PlanError(e.to_string()))?;
        if self.checkpoint_every == Some(0) {
            refuse!("--checkpoint-every must be at least 1 (epochs, or iterations with --batch-size full)");
        }
        if let Some(path) = &self.resume {
            check_exists(path, "--resume")?;
        }
        let source = self.source()?;
        let heldout_eval = self.heldout_eval.unwrap_or(if notebook {
            HeldoutEval::End
        } else {
            HeldoutEval::Records
        });
        self.check_early_stop(heldout_eval)?;
        self.check_heldout(split)?;
        let mut warnings = Vec::new();
        if self.momentum.is_some() && optimizer != OptimizerKind::Momentum {
            warnings.push(format!(
                "--momentum has no effect with --optimizer {} (only --optimizer momentum uses it)",
                optimizer.name()
            ));
        }
        if self.log_every.is_some() && !matches!(schedule, Schedule::FullBatch { .. }) {
            warnings.push(
                "--log-every has no effect on mini-batch training (it records every epoch)".into(),
            );
        }
        Ok(Plan {
            config: TrainConfig {
                layers,
                init,
                optimizer,
                lr,
                lr_schedule: self.lr_schedule.unwrap_or(if notebook {
                    LrSchedule::Constant
                } else {
                    LrSchedule::Cosine
                }),
                momentum,
                weight_decay,
                schedule,
                seed: self.seed,
                engine: self.engine,
                log_every: self.log_every.unwrap_or(25).max(1),
                early_stop: self.early_stop,
                augment,
            },
            split,
            val_data: self.val_data.clone(),
            threads: self.threads,
            source,
            preset: self.preset,
            heldout_eval,
            warnings,
        })
    }

    /// `--early-stop N` needs N >= 1 and the held-out loss at every record.
    fn check_early_stop(&self, heldout_eval: HeldoutEval) -> Result<(), PlanError> {
        match self.early_stop {
            Some(0) => refuse!(
                "--early-stop 0 would stop before any epoch could improve; give a patience of at least 1"
            ),
            Some(n) if heldout_eval == HeldoutEval::End => refuse!(
                "--early-stop {n} watches the held-out loss at every record, but --heldout-eval end{} scores it only after training; add --heldout-eval records",
                if self.heldout_eval.is_none() {
                    " (the notebook preset's)"
                } else {
                    ""
                }
            ),
            _ => Ok(()),
        }
    }

    /// The training fraction: `--split`, in (0, 1]; with `--val-data` the
    /// whole `--data` file trains (1), and any other `--split` is refused.
    fn split(&self) -> Result<f64, PlanError> {
        let notebook = self.preset == Preset::Notebook;
        let split = match (self.split, &self.val_data) {
            (Some(s), Some(_)) if s != 1.0 => refuse!(
                "--split {s} and --val-data both choose the held-out rows: with --val-data the \
                 whole --data file trains; drop --split"
            ),
            (_, Some(_)) => 1.0,
            (Some(s), None) => s,
            (None, None) if notebook => 0.2,
            (None, None) => 0.8,
        };
        if !(split > 0.0 && split <= 1.0) {
            refuse!(
                "--split is the training fraction and must be between 0 and 1 (above 0; 1 \
                 trains on every row), found {split}"
            );
        }
        if let Some(p) = &self.val_data {
            check_exists(p, "--val-data")?;
        }
        Ok(split)
    }

    /// Without held-out rows (`--split 1`, no `--val-data`), refuses the
    /// flags that need them.
    fn check_heldout(&self, split: f64) -> Result<(), PlanError> {
        if split < 1.0 || self.val_data.is_some() {
            return Ok(());
        }
        let fix = "pass --val-data FILE or a --split below 1";
        if let Some(n) = self.early_stop {
            refuse!("--early-stop {n} watches the held-out loss, but --split 1 holds no rows out; {fix}");
        }
        if let Some(when) = self.heldout_eval {
            let when = match when {
                HeldoutEval::Records => "records",
                HeldoutEval::End => "end",
            };
            refuse!("--heldout-eval {when} scores the held-out rows, but --split 1 holds no rows out; {fix}");
        }
        Ok(())
    }

    /// Full-batch iterations or mini-batch epochs, from the batch size.
    fn schedule(&self, deep: bool) -> Result<Schedule, PlanError> {
        let batch = self.batch_size.unwrap_or(match self.preset {
            Preset::Notebook => BatchSize::Full,
            Preset::Mlp99 => BatchSize::Rows(MLP99.batch_size),
            Preset::Default if deep => BatchSize::Rows(128),
            Preset::Default => BatchSize::Rows(32),
        });
        let schedule = match batch {
            BatchSize::Full => {
                if self.epochs.is_some() && self.iterations.is_some() {
                    refuse!("full-batch training counts --iterations; give --iterations or --epochs, not both");
                }
                Schedule::FullBatch {
                    iterations: self.iterations.or(self.epochs).unwrap_or(500),
                }
            }
            BatchSize::Rows(batch_size) => {
                if self.iterations.is_some() {
                    refuse!("--iterations applies to full-batch training (--batch-size full); mini-batch training counts --epochs");
                }
                Schedule::MiniBatch {
                    epochs: self.epochs.unwrap_or(match self.preset {
                        Preset::Mlp99 => MLP99.epochs,
                        _ => 10,
                    }),
                    batch_size,
                }
            }
        };
        match schedule {
            Schedule::FullBatch { iterations: 0 } => {
                refuse!("--iterations 0 would train nothing; give at least 1")
            }
            Schedule::MiniBatch { epochs: 0, .. } => {
                refuse!("--epochs 0 would train nothing; give at least 1")
            }
            _ => {}
        }
        Ok(schedule)
    }

    /// `--data`, else `data/train.csv` if it exists, else the built-in sample.
    fn source(&self) -> Result<DataSource, PlanError> {
        Ok(match &self.data {
            Some(p) => {
                check_exists(p, "--data")?;
                DataSource::File(p.clone())
            }
            None if Path::new("data/train.csv").exists() => {
                DataSource::File("data/train.csv".into())
            }
            None => DataSource::BuiltinSample,
        })
    }
}
