//! `mnist-blas train`: load, split, train, evaluate, write model + metrics.

use super::progress::{Display, Loading, TrainProgress};
use super::report::summary_screen;
use super::{check_exists, resume, thread_pool};
use crate::data::{self, DataSource, Dataset};
use crate::engine::EngineKind;
use crate::metrics::evaluate;
use crate::model::Init;
use crate::optim::OptimizerKind;
use crate::output::write_atomic;
use crate::plot;
use crate::train::{self, LrSchedule, Record, Schedule, TrainConfig};
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

/// The examples under `mnist-blas train --help`.
pub const EXAMPLES: &str = "Examples:
  mnist-blas train                                   # data/train.csv, or the built-in sample
  mnist-blas train --data train.csv.gz --plot curves.png
  mnist-blas train --preset notebook --data train.csv.gz   # the Kaggle notebook's job, fixed
  mnist-blas train --hidden 128 --epochs 20 --lr 0.002 --seed 3
  mnist-blas train --optimizer sgd --batch-size full --iterations 500 --lr 0.1
  mnist-blas train --quiet --json | jq .heldout_accuracy

Output: a log line per epoch (per 25 iterations for full batch) on stdout, a progress bar
on stderr when it is a terminal, and a summary screen at the end (data, model, engine and
OpenBLAS, settings, time split, throughput, final accuracies, files written). Piped or in
CI there is no bar: plain lines only. `train` is the default subcommand: `mnist-blas
--epochs 3` is `mnist-blas train --epochs 3`.";

/// Settings bundles; every flag given explicitly overrides the preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Our best settings for 784-10-10: He init, Adam, mini-batches, 80/20 split.
    Default,
    /// The Kaggle notebook's job: 20% train / 80% held out, uniform init,
    /// full-batch gradient descent, lr 0.1, 500 iterations, accuracy every 25.
    Notebook,
}

/// When `train` scores the held-out rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
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
    /// Hidden units H of the 784-H-10 network [default: 10].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub hidden: Option<u64>,
    /// Weight initialisation [default: he; notebook: uniform].
    #[arg(long, value_enum)]
    pub init: Option<Init>,
    /// Update rule [default: adam; notebook: sgd].
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerKind>,
    /// Learning rate [default: 0.005 for adam, 0.1 otherwise].
    #[arg(long)]
    pub lr: Option<f32>,
    /// Learning-rate schedule [default: cosine; notebook: constant].
    #[arg(long, value_enum)]
    pub lr_schedule: Option<LrSchedule>,
    /// Momentum coefficient for `--optimizer momentum`.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f32,
    /// Passes over the training set (mini-batch training) [default: 10].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Gradient steps for full-batch training [default: 500].
    #[arg(long)]
    pub iterations: Option<usize>,
    /// Rows per step, or `full` for full-batch gradient descent [default: 32; notebook: full].
    #[arg(long, value_name = "N|full")]
    pub batch_size: Option<BatchSize>,
    /// Seed of the split, the initial weights and the shuffles.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (0: one per core). Results do not depend on it.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Fraction of the rows that trains; the rest is held out [default: 0.8; notebook: 0.2].
    #[arg(long)]
    pub split: Option<f64>,
    /// Arithmetic engine.
    #[arg(long, value_enum, default_value_t = EngineKind::Blas)]
    pub engine: EngineKind,
    /// Full-batch: record metrics every N iterations [default: 25].
    #[arg(long, value_name = "N")]
    pub log_every: Option<usize>,
    /// When to score the held-out rows: at every record, or once at the end
    /// [default: records; notebook: end].
    #[arg(long, value_enum, value_name = "WHEN")]
    pub heldout_eval: Option<HeldoutEval>,
    /// Where to write the trained model (.npz, the notebook's names and shapes).
    #[arg(long, value_name = "PATH", default_value = "model.npz")]
    pub model: PathBuf,
    /// Where to write the per-epoch (per-record) metrics CSV.
    #[arg(long, value_name = "PATH", default_value = "metrics.csv")]
    pub metrics: PathBuf,
    /// Also draw the learning curves (loss and accuracy, train vs held out) as a PNG.
    #[arg(long, value_name = "PATH")]
    pub plot: Option<PathBuf>,
    /// End stdout with one JSON line: accuracies, timings, every hyperparameter.
    #[arg(long)]
    pub json: bool,
    /// Print nothing but errors (and the JSON line with --json).
    #[arg(long, short)]
    pub quiet: bool,
    /// Write a checkpoint (weights, optimizer state, position) every N epochs
    /// (mini-batch) or iterations (full-batch). Ctrl-C always writes one.
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<usize>,
    /// Checkpoint file [default: beside --model, e.g. model.ckpt.npz; with
    /// --resume, the file resumed from].
    #[arg(long, value_name = "PATH")]
    pub checkpoint: Option<PathBuf>,
    /// Continue the run saved in CHECKPOINT; give the flags of the run that
    /// wrote it. Ends bit-identical to a run never stopped.
    #[arg(long, value_name = "CHECKPOINT")]
    pub resume: Option<PathBuf>,
}

/// A training run with every setting decided.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub config: TrainConfig,
    pub split: f64,
    pub threads: usize,
    pub source: DataSource,
    pub preset: Preset,
    pub heldout_eval: HeldoutEval,
}

impl TrainArgs {
    /// Apply the preset, fill defaults, refuse impossible combinations.
    pub fn resolve(&self) -> Result<Resolved> {
        let notebook = self.preset == Preset::Notebook;
        let optimizer = self.optimizer.unwrap_or(if notebook {
            OptimizerKind::Sgd
        } else {
            OptimizerKind::Adam
        });
        let lr = self.lr.unwrap_or(match optimizer {
            OptimizerKind::Adam => 0.005,
            _ => 0.1,
        });
        if !(lr.is_finite() && lr > 0.0) {
            bail!("--lr must be a positive number, found {lr}");
        }
        let batch = self.batch_size.unwrap_or(if notebook {
            BatchSize::Full
        } else {
            BatchSize::Rows(32)
        });
        let schedule = match batch {
            BatchSize::Full => {
                if self.epochs.is_some() && self.iterations.is_some() {
                    bail!("full-batch training counts --iterations; give --iterations or --epochs, not both");
                }
                Schedule::FullBatch {
                    iterations: self.iterations.or(self.epochs).unwrap_or(500),
                }
            }
            BatchSize::Rows(batch_size) => {
                if self.iterations.is_some() {
                    bail!("--iterations applies to full-batch training (--batch-size full); mini-batch training counts --epochs");
                }
                Schedule::MiniBatch {
                    epochs: self.epochs.unwrap_or(10),
                    batch_size,
                }
            }
        };
        let split = self.split.unwrap_or(if notebook { 0.2 } else { 0.8 });
        if !(split > 0.0 && split < 1.0) {
            bail!("--split is the training fraction and must be strictly between 0 and 1, found {split}");
        }
        if !(0.0..1.0).contains(&self.momentum) {
            bail!("--momentum must be in [0, 1), found {}", self.momentum);
        }
        if self.threads > 1024 || self.threads > 4 * num_cpus() {
            bail!(
                "--threads {} is not sensible: this machine has {} cores (use at most {}, or 0 \
                 for one per core; results do not depend on it)",
                self.threads,
                num_cpus(),
                (4 * num_cpus()).min(1024)
            );
        }
        match schedule {
            Schedule::FullBatch { iterations: 0 } => {
                bail!("--iterations 0 would train nothing; give at least 1")
            }
            Schedule::MiniBatch { epochs: 0, .. } => {
                bail!("--epochs 0 would train nothing; give at least 1")
            }
            _ => {}
        }
        if self.checkpoint_every == Some(0) {
            bail!("--checkpoint-every must be at least 1 (epochs, or iterations with --batch-size full)");
        }
        if let Some(path) = &self.resume {
            check_exists(path, "--resume")?;
        }
        let source = match &self.data {
            Some(p) => {
                check_exists(p, "--data")?;
                DataSource::File(p.clone())
            }
            None if Path::new("data/train.csv").exists() => {
                DataSource::File("data/train.csv".into())
            }
            None => DataSource::BuiltinSample,
        };
        Ok(Resolved {
            config: TrainConfig {
                hidden: self.hidden.unwrap_or(10) as usize,
                init: self
                    .init
                    .unwrap_or(if notebook { Init::Uniform } else { Init::He }),
                optimizer,
                lr,
                lr_schedule: self.lr_schedule.unwrap_or(if notebook {
                    LrSchedule::Constant
                } else {
                    LrSchedule::Cosine
                }),
                momentum: self.momentum,
                schedule,
                seed: self.seed,
                engine: self.engine,
                log_every: self.log_every.unwrap_or(25).max(1),
            },
            split,
            threads: self.threads,
            source,
            preset: self.preset,
            heldout_eval: self.heldout_eval.unwrap_or(if notebook {
                HeldoutEval::End
            } else {
                HeldoutEval::Records
            }),
        })
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The JSON summary line of a training run.
#[derive(Debug, serde::Serialize)]
pub struct TrainSummary {
    pub command: &'static str,
    pub data: String,
    pub preset: Preset,
    pub train_rows: usize,
    pub heldout_rows: usize,
    pub hidden: usize,
    pub init: Init,
    pub optimizer: OptimizerKind,
    pub lr: f32,
    pub lr_schedule: LrSchedule,
    pub momentum: f32,
    pub schedule: &'static str,
    pub iterations: Option<usize>,
    pub epochs: Option<usize>,
    pub batch_size: Option<usize>,
    pub seed: u64,
    pub threads: usize,
    pub split: f64,
    pub engine: EngineKind,
    /// What the `blas` engine's matrix products run on: "OpenBLAS 0.3.21"
    /// or "pure-Rust matrixmultiply" (a build without `--features blas`).
    pub matmul_backend: String,
    /// When the held-out rows were scored: `records` or `end`.
    pub heldout_eval: HeldoutEval,
    pub steps: usize,
    pub train_accuracy: f64,
    pub train_loss: f64,
    pub heldout_accuracy: f64,
    pub heldout_loss: f64,
    pub heldout_correct: usize,
    pub load_seconds: f64,
    pub train_seconds: f64,
    pub eval_seconds: f64,
    pub seconds: f64,
    pub model: Option<PathBuf>,
    pub metrics: Option<PathBuf>,
    /// The learning-curves PNG (--plot), if drawn.
    pub plot: Option<PathBuf>,
    /// Training rows processed (rows per step, summed over the steps).
    pub samples: usize,
    /// `samples` / `train_seconds` (held-out checks included in the time).
    pub samples_per_second: f64,
}

pub fn run(args: TrainArgs) -> Result<()> {
    let started = Instant::now();
    let r = args.resolve()?;
    if let Some(path) = &args.plot {
        plot::check_destination(path)?;
    }
    let pool = thread_pool(r.threads)?;
    let threads = pool.current_num_threads();
    pool.install(|| {
        let say = |s: String| {
            if !args.quiet {
                println!("{s}");
            }
        };
        let display = Display::detect(args.quiet);
        let loading = Loading::start(display, &r.source.describe());
        let all = r.source.load()?;
        loading.finish();
        let load_seconds = started.elapsed().as_secs_f64();
        say(format!(
            "data: {} ({} labeled rows, loaded in {load_seconds:.2} s)",
            r.source.describe(),
            all.len()
        ));
        if let DataSource::BuiltinSample = r.source {
            say(data::sample::HOW_TO_GET_FULL_DATA.to_string());
        }
        let (train_set, heldout) = train::split(&all, r.split, r.config.seed);
        drop(all);
        if train_set.is_empty() {
            bail!("--split {} leaves no training rows out of {}", r.split, train_set.len() + heldout.len());
        }
        let c = &r.config;
        say(format!(
            "split: {} train / {} held out (--split {}, seed {})",
            train_set.len(),
            heldout.len(),
            r.split,
            c.seed
        ));
        let schedule = match c.schedule {
            Schedule::FullBatch { iterations } => format!("full batch, {iterations} iterations"),
            Schedule::MiniBatch { epochs, batch_size } => {
                format!("batch {batch_size}, {epochs} epochs")
            }
        };
        say(format!(
            "model: 784-{}-10, init {:?}; optimizer {} lr {} ({}); {schedule}; engine {} on {}; {threads} thread(s)",
            c.hidden,
            c.init,
            c.optimizer.name(),
            c.lr,
            c.lr_schedule.name(),
            c.engine,
            match c.engine {
                // The full OpenBLAS build line is in the summary at the end.
                EngineKind::Blas => crate::threads::matmul_backend(),
                EngineKind::Sparse => "f32 loops over non-zero pixels".into(),
                EngineKind::Naive => "f64 loops".into(),
            },
        ));

        let full_batch = matches!(c.schedule, Schedule::FullBatch { .. });
        let units = match c.schedule {
            Schedule::FullBatch { iterations } => iterations,
            Schedule::MiniBatch { epochs, .. } => epochs,
        };
        let mut progress = TrainProgress::new(display, full_batch, units);
        let outcome = resume::train_with_checkpoints(
            &args,
            c,
            r.split,
            &train_set,
            r.heldout_eval.during_training(&heldout),
            &mut progress,
            &say,
        )?;
        progress.finish();

        let eval_start = Instant::now();
        let engine = c.engine.build();
        let on_train = evaluate(engine.as_ref(), &outcome.model, &train_set);
        let on_heldout = evaluate(engine.as_ref(), &outcome.model, &heldout);
        let eval_seconds = eval_start.elapsed().as_secs_f64();

        outcome.model.save_npz(&args.model)?;
        write_metrics(&args.metrics, &outcome.records)?;
        let mut written = vec![args.model.as_path(), args.metrics.as_path()];
        if let Some(path) = &args.plot {
            let title = format!(
                "784-{}-10, {} {}, {}: held-out accuracy {:.4}",
                c.hidden,
                c.optimizer.name(),
                c.lr,
                r.source.describe(),
                on_heldout.stats.accuracy()
            );
            let unit = if full_batch { "iteration" } else { "epoch" };
            plot::learning_curves(path, &outcome.records, unit, &title)?;
            written.push(path.as_path());
        }

        if r.preset == Preset::Notebook || full_batch {
            if let Some(last) = outcome.records.last() {
                say(format!("End of training: {} accuracy", last.train_accuracy));
            }
            say(format!(
                "Test set: {} accurate results on a {} images set ({:.2}%) after {} iterations",
                on_heldout.stats.correct,
                heldout.len(),
                on_heldout.stats.accuracy() * 100.0,
                outcome.steps
            ));
        }
        {
            let (iterations, epochs, batch_size) = match c.schedule {
                Schedule::FullBatch { iterations } => (Some(iterations), None, None),
                Schedule::MiniBatch { epochs, batch_size } => (None, Some(epochs), Some(batch_size)),
            };
            let summary = TrainSummary {
                command: "train",
                data: r.source.describe(),
                preset: r.preset,
                train_rows: train_set.len(),
                heldout_rows: heldout.len(),
                hidden: c.hidden,
                init: c.init,
                optimizer: c.optimizer,
                lr: c.lr,
                lr_schedule: c.lr_schedule,
                momentum: c.momentum,
                schedule: if full_batch { "full-batch" } else { "mini-batch" },
                iterations,
                epochs,
                batch_size,
                seed: c.seed,
                threads,
                split: r.split,
                engine: c.engine,
                matmul_backend: crate::threads::matmul_backend(),
                heldout_eval: r.heldout_eval,
                steps: outcome.steps,
                train_accuracy: on_train.stats.accuracy(),
                train_loss: on_train.stats.mean_loss(),
                heldout_accuracy: on_heldout.stats.accuracy(),
                heldout_loss: on_heldout.stats.mean_loss(),
                heldout_correct: on_heldout.stats.correct,
                load_seconds,
                train_seconds: outcome.seconds,
                eval_seconds,
                seconds: started.elapsed().as_secs_f64(),
                model: Some(args.model.clone()),
                metrics: Some(args.metrics.clone()),
                plot: args.plot.clone(),
                samples: progress.samples(),
                samples_per_second: progress.samples() as f64 / outcome.seconds.max(1e-9),
            };
            say(summary_screen(&summary, train_set.len() + heldout.len(), &written));
            if args.json {
                println!("{}", serde_json::to_string(&summary)?);
            }
        }
        Ok(())
    })
}

/// The per-record metrics CSV, written atomically.
fn write_metrics(path: &Path, records: &[Record]) -> Result<()> {
    write_atomic(path, |w| {
        writeln!(
            w,
            "step,train_loss,train_accuracy,heldout_loss,heldout_accuracy,seconds"
        )?;
        let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        for r in records {
            writeln!(
                w,
                "{},{},{},{},{},{:.6}",
                r.step,
                r.train_loss,
                r.train_accuracy,
                opt(r.heldout_loss),
                opt(r.heldout_accuracy),
                r.seconds
            )?;
        }
        Ok(())
    })
    .with_context(|| "writing the metrics file")
}
