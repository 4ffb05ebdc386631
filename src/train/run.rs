//! One training run, start to end, for every caller: `train`, each sweep
//! run, and anything later that trains (serve, export). Given a [`Plan`]
//! and the loaded rows it splits them (seeded; or with `--val-data` trains
//! on all of them and holds out that file's rows), trains (fresh or from a
//! checkpoint, writing checkpoints as asked), scores both parts and returns
//! the model with a typed [`RunReport`]. A run may have no held-out rows
//! (`--split 1`): its held-out figures are then `None` (null in JSON). `train --json` and the sweep's
//! result rows are that report serialised.

use super::args::{HeldoutEval, Plan, Preset};
use super::{
    Observer, Record, Schedule, StepView, TrainConfig, TrainError, TrainOutcome, TrainState,
};
use crate::data::{DataError, Dataset, Expect};
use crate::engine::choice::{self, Choice};
use crate::engine::{BatchStats, EngineKind};
use crate::metrics::evaluate;
use crate::model::Init;
use crate::model::{Layers, Mlp};
use crate::optim::OptimizerKind;
use crate::output::WriteError;
use crate::train::checkpoint::{Checkpoint, CheckpointError, Checkpointer, RunIdentity};
use crate::train::config::RunConfig;
use crate::train::{Control, LrSchedule};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// What a run measured and how it was set up: every hyperparameter, the
/// sizes, the accuracies and losses on both parts, the timings and what ran
/// the products. Field names are the `--json` keys and the sweep's columns.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunReport {
    pub data: String,
    /// `--val-data`: the file the held-out rows came from (None: they were
    /// cut from `data` by `split`, or there are none).
    #[serde(default)]
    pub val_data: Option<String>,
    pub preset: Preset,
    pub train_rows: usize,
    /// 0 with `--split 1` and no `--val-data`.
    pub heldout_rows: usize,
    /// Hidden widths as `--layers` spells them (`256-128`).
    pub layers: Layers,
    pub init: Init,
    pub optimizer: OptimizerKind,
    pub lr: f32,
    pub lr_schedule: LrSchedule,
    pub momentum: f32,
    pub weight_decay: f32,
    /// `full-batch` or `mini-batch`.
    pub schedule: String,
    pub iterations: Option<usize>,
    pub epochs: Option<usize>,
    pub batch_size: Option<usize>,
    pub seed: u64,
    pub threads: usize,
    pub split: f64,
    /// The engine asked for (`auto` unless named).
    pub engine: EngineKind,
    /// The engine that ran, and why (`--engine` when named).
    pub engine_used: EngineKind,
    pub engine_reason: String,
    /// What the `blas` engine's matrix products run on: "OpenBLAS 0.3.21"
    /// or "pure-Rust matrixmultiply" (a build without `--features blas`).
    pub matmul_backend: String,
    /// When the held-out rows were scored: `records` or `end` (None: there
    /// were none).
    pub heldout_eval: Option<HeldoutEval>,
    /// `--early-stop`'s patience, in records (epochs for mini-batch).
    pub early_stop: Option<usize>,
    /// `--augment`'s distortions (None: off, and no key in `--json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub augment: Option<String>,
    pub steps: usize,
    pub train_accuracy: f64,
    pub train_loss: f64,
    /// The held-out figures; None when no rows were held out.
    pub heldout_accuracy: Option<f64>,
    pub heldout_loss: Option<f64>,
    pub heldout_correct: Option<usize>,
    /// The record with the best held-out accuracy (the first on ties), if
    /// the held-out rows were scored during training.
    pub best_epoch: Option<usize>,
    pub best_heldout_accuracy: Option<f64>,
    /// The record step after which early stopping ended training (None: it
    /// ran to its last epoch or iteration).
    pub early_stopped_at: Option<usize>,
    /// The record whose weights early stopping gave back (None: the model
    /// is the last step's). The final accuracies and losses are this model's.
    pub restored_step: Option<usize>,
    pub load_seconds: f64,
    /// Training time in this process.
    pub train_seconds: f64,
    /// Training time of the part of the run before `--resume` (0 when the
    /// run did not resume).
    pub earlier_train_seconds: f64,
    pub eval_seconds: f64,
    /// Of `train_seconds`, the time spent distorting training rows (None:
    /// no `--augment`, and no key in `--json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub augment_seconds: Option<f64>,
    /// Load, train and evaluate.
    pub seconds: f64,
    /// Training rows processed (rows per step, summed over the steps).
    pub samples: usize,
    /// `samples` / `train_seconds` (held-out checks included in the time),
    /// both of this process.
    pub samples_per_second: f64,
}

/// A finished run: the model, its records and its report.
#[derive(Debug, Clone)]
pub struct Run {
    pub model: Mlp,
    /// One per epoch (mini-batch) or logged iteration (full-batch), the
    /// resumed part of a run included.
    pub records: Vec<Record>,
    pub report: RunReport,
}

/// What the run knows once the rows are split, before the first step.
#[derive(Debug, Clone)]
pub struct RunStart {
    pub train_rows: usize,
    pub heldout_rows: usize,
    /// Resuming: the checkpoint's path, units completed and steps taken.
    pub resumed: Option<(PathBuf, usize, usize)>,
    /// The engine that runs, and why.
    pub engine: Choice,
}

/// Checkpoints to write during the run.
pub struct Checkpointing<'a> {
    pub path: PathBuf,
    /// Every this many epochs (mini-batch) or iterations (full-batch).
    pub every: Option<usize>,
    /// Raised by a signal: write a checkpoint after the current step, stop.
    pub stop: &'a AtomicBool,
}

/// How a run starts, what it saves on the way, and its `--val-data` rows.
#[derive(Default)]
pub struct RunOptions<'a> {
    /// Continue from this checkpoint (checked against the plan and the
    /// training rows first).
    pub resume: Option<Checkpoint>,
    pub checkpoints: Option<Checkpointing<'a>>,
    /// The held-out rows, when the plan has `--val-data` (read with
    /// [`load_val_data`]); without it the split cuts them from the data.
    pub val: Option<Cow<'a, Dataset>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("--split {split} leaves no training rows out of {rows}")]
    NoTrainingRows { split: f64, rows: usize },
    #[error(
        "--split {split} leaves no held-out rows out of {rows}, but --early-stop watches them; \
         pass --val-data FILE or a smaller --split"
    )]
    NoHeldoutRows { split: f64, rows: usize },
    /// `--val-data` could not be read (the message names the file).
    #[error(transparent)]
    ValData(DataError),
    #[error("{}: no rows to hold out (--val-data needs at least one labeled row)", .0.display())]
    EmptyValData(PathBuf),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Resources(#[from] crate::threads::ThreadsError),
    #[error("writing a checkpoint: {0}")]
    CheckpointWrite(WriteError),
    /// Stopped by a signal after writing a checkpoint at `path`.
    #[error("interrupted {at}; wrote {}", path.display())]
    Interrupted { at: String, path: PathBuf },
}

/// Counts the rows trained on, for the report's throughput.
struct Counting<'a> {
    inner: &'a mut dyn Observer,
    samples: usize,
}

impl Observer for Counting<'_> {
    fn on_start(&mut self, start: &RunStart) {
        self.inner.on_start(start);
    }
    fn on_step(&mut self, done: usize, total: usize, stats: &BatchStats) {
        self.samples += stats.rows;
        self.inner.on_step(done, total, stats);
    }
    fn on_record(&mut self, record: &Record) {
        self.inner.on_record(record);
    }
    fn after_step(&mut self, state: &mut StepView) -> Control {
        self.inner.after_step(state)
    }
}

/// Reads `--val-data`: labeled rows (CSV or IDX, by the reader `--data`
/// uses, so every row has the same 784 pixels), at least one. Errors name
/// the file.
pub fn load_val_data(path: &Path) -> Result<Dataset, RunError> {
    let val = crate::data::load(path, Expect::Labeled).map_err(RunError::ValData)?;
    if val.is_empty() {
        return Err(RunError::EmptyValData(path.to_path_buf()));
    }
    Ok(val)
}

/// Run `plan` on `all` (loaded in `load_seconds`) in the current rayon pool.
/// Given the rows owned, the run frees them once they are split (a lone
/// `train`); borrowed, it leaves them for the next run (a sweep). With
/// `--val-data` (`options.val`), `plan.split` is 1: every row of `all`
/// trains, in the order the split's seeded shuffle gives them (as
/// `--split 1` without it), and `options.val` is held out.
pub fn run(
    plan: &Plan,
    all: Cow<'_, Dataset>,
    load_seconds: f64,
    options: RunOptions,
    observer: &mut dyn Observer,
) -> Result<Run, RunError> {
    let started = Instant::now();
    let RunOptions {
        resume,
        checkpoints,
        val,
    } = options;
    debug_assert_eq!(plan.val_data.is_some(), val.is_some());
    let rows = all.len();
    let (train_set, cut) = match all {
        Cow::Owned(all) => super::split_owned(all, plan.split, plan.config.seed),
        Cow::Borrowed(all) => super::split(all, plan.split, plan.config.seed),
    };
    if train_set.is_empty() {
        return Err(RunError::NoTrainingRows {
            split: plan.split,
            rows,
        });
    }
    let from_file = val.is_some();
    let heldout = val.unwrap_or(Cow::Owned(cut));
    if heldout.is_empty() && plan.config.early_stop.is_some() {
        return Err(RunError::NoHeldoutRows {
            split: plan.split,
            rows,
        });
    }
    let engine = match plan.config.augment {
        None => choice::resolve,
        Some(_) => choice::resolve_augmented,
    }(plan.config.engine, &plan.config.layers, &train_set.pixels);
    // The run (and its checkpoints) from here on name the engine that runs.
    let resolved = TrainConfig {
        engine: engine.kind,
        ..plan.config.clone()
    };
    let cfg = &resolved;
    if cfg.engine == EngineKind::Blas {
        crate::threads::check_blas_memory(rayon::current_num_threads())?;
    }
    // A fingerprint of the training rows, only for a run that checkpoints
    // or resumes (a sweep run does neither: it need not hash its rows).
    let identity = (resume.is_some() || checkpoints.is_some()).then(|| {
        RunIdentity::of(plan.split, &train_set).with_val_data(from_file.then_some(&*heldout))
    });
    let (state, resumed) = match resume {
        None => (TrainState::new(cfg)?, None),
        Some(ckpt) => {
            ckpt.check_matches(cfg, identity.as_ref().expect("computed when resuming"))?;
            let resumed = (ckpt.path.clone(), ckpt.completed(), ckpt.steps());
            (ckpt.into_state(cfg)?, Some(resumed))
        }
    };
    let earlier_seconds = state.seconds;
    let mut counting = Counting {
        inner: observer,
        samples: 0,
    };
    counting.on_start(&RunStart {
        train_rows: train_set.len(),
        heldout_rows: heldout.len(),
        resumed,
        engine: engine.clone(),
    });
    let scored = plan.heldout_eval.during_training(&heldout);
    let outcome = match &checkpoints {
        None => super::train_from(cfg, state, &train_set, scored, &mut counting)?,
        Some(c) => {
            let mut writer = Checkpointer::new(
                &mut counting,
                c.path.clone(),
                c.every,
                cfg,
                identity.expect("computed when checkpointing"),
                c.stop,
            );
            writer.settings = Some(RunConfig {
                checkpoint_every: c.every.map(|n| n as u64),
                ..RunConfig::of(plan)
            });
            let outcome = super::train_from(cfg, state, &train_set, scored, &mut writer)?;
            check_checkpoints(cfg, c, writer, outcome.stopped, train_set.len())?;
            outcome
        }
    };
    let samples = counting.samples;
    let parts = Parts {
        train: &train_set,
        heldout: &heldout,
    };
    let report = report(
        plan,
        &engine,
        parts,
        &outcome,
        samples,
        Timing {
            load_seconds,
            started,
            earlier_seconds,
        },
    );
    Ok(Run {
        model: outcome.model,
        records: outcome.records,
        report,
    })
}

/// After training with checkpoints: a write that failed, or a stop by a
/// signal (after its checkpoint was written), ends the run with an error.
fn check_checkpoints(
    cfg: &TrainConfig,
    c: &Checkpointing,
    mut writer: Checkpointer,
    stopped: bool,
    rows: usize,
) -> Result<(), RunError> {
    if let Some(e) = writer.error.take() {
        return Err(RunError::CheckpointWrite(e));
    }
    if writer.interrupted && stopped {
        let at = writer
            .written
            .as_ref()
            .map(|p| describe_position(cfg, p.completed, p.batch_in_epoch, rows))
            .unwrap_or_default();
        return Err(RunError::Interrupted {
            at,
            path: c.path.clone(),
        });
    }
    Ok(())
}

/// The two parts of the split.
#[derive(Clone, Copy)]
struct Parts<'a> {
    train: &'a Dataset,
    heldout: &'a Dataset,
}

/// When the run's parts happened.
struct Timing {
    load_seconds: f64,
    started: Instant,
    /// Training seconds before a resume.
    earlier_seconds: f64,
}

/// Score the trained model on both parts and fill in the report.
fn report(
    plan: &Plan,
    engine_used: &Choice,
    parts: Parts,
    outcome: &TrainOutcome,
    samples: usize,
    timing: Timing,
) -> RunReport {
    let Timing {
        load_seconds,
        started,
        earlier_seconds,
    } = timing;
    let cfg = &plan.config;
    let eval_start = Instant::now();
    let engine = engine_used.kind.build();
    let on_train = evaluate(engine.as_ref(), &outcome.model, parts.train);
    let on_heldout = (!parts.heldout.is_empty())
        .then(|| evaluate(engine.as_ref(), &outcome.model, parts.heldout).stats);
    let eval_seconds = eval_start.elapsed().as_secs_f64();
    let best = best_record(&outcome.records);
    let (schedule, iterations, epochs, batch_size) = match cfg.schedule {
        Schedule::FullBatch { iterations } => ("full-batch", Some(iterations), None, None),
        Schedule::MiniBatch { epochs, batch_size } => {
            ("mini-batch", None, Some(epochs), Some(batch_size))
        }
    };
    RunReport {
        data: plan.source.describe(),
        val_data: plan.val_data.as_ref().map(|p| p.display().to_string()),
        preset: plan.preset,
        train_rows: parts.train.len(),
        heldout_rows: parts.heldout.len(),
        layers: cfg.layers.clone(),
        init: cfg.init,
        optimizer: cfg.optimizer,
        lr: cfg.lr,
        lr_schedule: cfg.lr_schedule,
        momentum: cfg.momentum,
        weight_decay: cfg.weight_decay,
        schedule: schedule.to_string(),
        iterations,
        epochs,
        batch_size,
        seed: cfg.seed,
        threads: rayon::current_num_threads(),
        split: plan.split,
        engine: cfg.engine,
        engine_used: engine_used.kind,
        engine_reason: engine_used.reason.clone(),
        matmul_backend: crate::threads::matmul_backend(),
        heldout_eval: on_heldout.as_ref().map(|_| plan.heldout_eval),
        early_stop: cfg.early_stop,
        augment: cfg.augment.map(|a| a.to_string()),
        steps: outcome.steps,
        train_accuracy: on_train.stats.accuracy(),
        train_loss: on_train.stats.mean_loss(),
        heldout_accuracy: on_heldout.as_ref().map(|h| h.accuracy()),
        heldout_loss: on_heldout.as_ref().map(|h| h.mean_loss()),
        heldout_correct: on_heldout.as_ref().map(|h| h.correct),
        best_epoch: best.map(|b| b.0),
        best_heldout_accuracy: best.map(|b| b.1),
        early_stopped_at: outcome.early_stopped_at,
        restored_step: outcome.restored_step,
        load_seconds,
        train_seconds: outcome.seconds - earlier_seconds,
        earlier_train_seconds: earlier_seconds,
        eval_seconds,
        augment_seconds: cfg.augment.map(|_| outcome.augment_seconds),
        seconds: load_seconds + started.elapsed().as_secs_f64(),
        samples,
        samples_per_second: samples as f64 / (outcome.seconds - earlier_seconds).max(1e-9),
    }
}

/// The record with the best held-out accuracy (the first, on ties):
/// `(step, accuracy)`.
pub fn best_record(records: &[Record]) -> Option<(usize, f64)> {
    records
        .iter()
        .filter_map(|r| r.heldout_accuracy.map(|a| (r.step, a)))
        .fold(None, |best, (step, a)| match best {
            Some((_, b)) if b >= a => best,
            _ => Some((step, a)),
        })
}

/// "at epoch 3 (batch 57 of 150)" or "after iteration 41 of 500".
fn describe_position(cfg: &TrainConfig, completed: usize, batch: usize, rows: usize) -> String {
    match cfg.schedule {
        Schedule::FullBatch { iterations } => {
            format!("after iteration {completed} of {iterations}")
        }
        Schedule::MiniBatch { epochs, batch_size } => {
            let batches = rows.div_ceil(batch_size.clamp(1, rows.max(1)));
            if batch == 0 {
                format!("after epoch {completed} of {epochs}")
            } else {
                format!(
                    "at epoch {} of {epochs} (batch {batch} of {batches})",
                    completed + 1
                )
            }
        }
    }
}
