//! Training: a [`Plan`] resolved from `train`'s flags ([`args`]), the one
//! [`run`] every caller uses, and the loops under it.
//!
//! - [`args`]: the flags, presets and their resolution into a [`Plan`];
//! - [`run`]: split, train (fresh or resumed, with checkpoints), score, report;
//! - `full_batch` and `minibatch`: the two loops; `step`: one optimizer
//!   step and the divergence checks; [`shard`]: a batch's gradients sharded
//!   over threads and reduced in a fixed order;
//! - [`schedule`]: steps and learning rates; `state`: position, records,
//!   observers.

pub mod args;
pub mod checkpoint;
pub mod config;
mod full_batch;
mod minibatch;
pub mod run;
pub mod schedule;
pub mod shard;
mod state;
mod step;
#[cfg(test)]
mod tests;

pub use args::{BatchSize, HeldoutEval, Plan, PlanError, Preset, TrainArgs};
pub use config::RunConfig;
pub use run::{run, Checkpointing, Run, RunError, RunOptions, RunReport, RunStart};
pub use schedule::{LrSchedule, Schedule, WARMUP_FRACTION};
pub use state::{Best, Control, Observer, Position, Record, Silent, StepView, TrainState};
pub use step::DIVERGED_LOSS;

use crate::data::Dataset;
use crate::engine::EngineKind;
use crate::model::{Init, Layers, Mlp};
use crate::optim::OptimizerKind;
use crate::rng::{SeededRng, Stream};
use shard::ShardBuffers;
use std::time::Instant;

/// `0.1` as "0.1" but `1e30` as "1e30", not thirty-one digits.
fn short_float(v: f32) -> String {
    if v != 0.0 && (v.abs() >= 1e5 || v.abs() < 1e-4) {
        format!("{v:e}")
    } else {
        v.to_string()
    }
}

/// Everything that decides a training run's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainConfig {
    /// The hidden widths (`784-...-10` around them).
    pub layers: Layers,
    pub init: Init,
    pub optimizer: OptimizerKind,
    pub lr: f32,
    /// How the learning rate changes over the run.
    pub lr_schedule: LrSchedule,
    /// Momentum coefficient (optimizer `momentum` only).
    pub momentum: f32,
    /// Decoupled weight decay (optimizer `adam` only: AdamW).
    pub weight_decay: f32,
    pub schedule: Schedule,
    pub seed: u64,
    pub engine: EngineKind,
    /// Full-batch only: record metrics every this many iterations.
    pub log_every: usize,
    /// Early stopping's patience: end the run once this many records in a
    /// row (epochs, or full-batch records) bring no lower held-out loss, and
    /// return the weights of the record with the lowest (Keras'
    /// `EarlyStopping(patience=N, restore_best_weights=True)`).
    pub early_stop: Option<usize>,
    /// Mini-batch only: the training rows distorted afresh each epoch
    /// (`--augment`); None (and absent from checkpoints) without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub augment: Option<crate::data::augment::Augment>,
}

impl TrainConfig {
    /// The optimizer of this run, before its first step.
    pub fn optimizer(&self) -> crate::optim::Optimizer {
        let mut optimizer =
            crate::optim::Optimizer::new(self.optimizer, self.lr, self.momentum, &self.layers);
        optimizer.weight_decay = self.weight_decay;
        optimizer
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(
        "training diverged at {unit} {at}: {what}; try a smaller learning rate than --lr {}",
        short_float(*lr)
    )]
    Diverged {
        unit: &'static str,
        at: usize,
        /// What was seen: NaN/infinite weights or loss, or a loss far above chance.
        what: String,
        loss: f64,
        lr: f32,
    },
    #[error(
        "the training set has no labels: train needs a labeled file such as Kaggle's train.csv"
    )]
    Unlabeled,
    #[error("the training set is empty")]
    Empty,
    #[error("cannot resume: {0}")]
    Resume(String),
    #[error("--init orthogonal {0}")]
    Init(#[from] crate::linalg::LinalgUnavailable),
}

/// The trained model and how it got there.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// The model after the last step, or with early stopping the weights of
    /// the record with the lowest held-out loss.
    pub model: Mlp,
    pub records: Vec<Record>,
    /// Optimizer steps taken over the whole run.
    pub steps: usize,
    pub seconds: f64,
    /// Of `seconds` (this process's part), the time spent distorting
    /// training rows (`--augment`).
    pub augment_seconds: f64,
    /// The observer stopped training before the last step (Ctrl-C); `model`
    /// is the model at that point.
    pub stopped: bool,
    /// Early stopping ended the run before its last epoch (iteration): the
    /// step of the record it stopped after.
    pub early_stopped_at: Option<usize>,
    /// Early stopping gave back the weights of this record (not the last).
    pub restored_step: Option<usize>,
}

/// Train a fresh model on `train`, evaluating on `heldout` at each record.
pub fn train(
    cfg: &TrainConfig,
    train: &Dataset,
    heldout: Option<&Dataset>,
    observer: &mut dyn Observer,
) -> Result<TrainOutcome, TrainError> {
    train_from(cfg, TrainState::new(cfg)?, train, heldout, observer)
}

/// Carry a run of `cfg` on from `state` (a fresh [`TrainState::new`] or a
/// checkpoint's). Given the same data, the result is bit-identical to an
/// uninterrupted run's, whatever point `state` was saved at.
pub fn train_from(
    cfg: &TrainConfig,
    state: TrainState,
    train: &Dataset,
    heldout: Option<&Dataset>,
    observer: &mut dyn Observer,
) -> Result<TrainOutcome, TrainError> {
    let labels = train.labels.as_deref().ok_or(TrainError::Unlabeled)?;
    if train.is_empty() {
        return Err(TrainError::Empty);
    }
    state
        .check_fits(cfg, train.len())
        .map_err(TrainError::Resume)?;
    let mut st = state;
    let engine = cfg.engine.build();
    let mut stepper = step::Stepper {
        engine: engine.as_ref(),
        heldout,
        shards: ShardBuffers::default(),
        grads: Mlp::zeros(&cfg.layers),
        start: Instant::now(),
        seconds_before: st.seconds,
        lr: cfg.lr,
        augment_seconds: 0.0,
    };
    let stopped = match cfg.schedule {
        Schedule::FullBatch { iterations } => full_batch::run(
            cfg,
            iterations,
            &mut st,
            train,
            labels,
            &mut stepper,
            observer,
        )?,
        Schedule::MiniBatch { epochs, batch_size } => minibatch::run(
            cfg,
            epochs,
            batch_size,
            &mut st,
            train,
            labels,
            &mut stepper,
            observer,
        )?,
    };
    // A run stopped by its observer keeps the model it stopped with.
    let (early_stopped_at, restored_step) = if stopped {
        (None, None)
    } else {
        st.finish_early_stop(cfg)
    };
    Ok(TrainOutcome {
        model: st.model,
        records: st.records,
        steps: st.position.steps,
        seconds: stepper.seconds(),
        augment_seconds: stepper.augment_seconds,
        stopped,
        early_stopped_at,
        restored_step,
    })
}

/// Split `data` into (train, held-out) with a seeded shuffle: the first
/// `train_fraction` of a permutation trains, the rest is held out (the
/// notebook's `data_splitter`, seeded).
pub fn split(data: &Dataset, train_fraction: f64, seed: u64) -> (Dataset, Dataset) {
    let (perm, n_train) = split_order(data.len(), train_fraction, seed);
    (data.gather(&perm[..n_train]), data.gather(&perm[n_train..]))
}

/// [`split`] of rows owned: the same two datasets, made by reordering the
/// rows in place and copying only the smaller part out. The larger part
/// keeps the loaded buffer, so the run touches that much less fresh memory
/// (26 MB of the notebook's 33 MB; a first touch is a page fault).
pub fn split_owned(mut data: Dataset, train_fraction: f64, seed: u64) -> (Dataset, Dataset) {
    let (perm, n_train) = split_order(data.len(), train_fraction, seed);
    let (train_rows, heldout_rows) = perm.split_at(n_train);
    if train_rows.len() >= heldout_rows.len() {
        data.permute(&perm);
        let heldout = data.split_off(n_train);
        (data, heldout)
    } else {
        let order: Vec<usize> = heldout_rows.iter().chain(train_rows).copied().collect();
        data.permute(&order);
        let train = data.split_off(heldout_rows.len());
        (train, data)
    }
}

/// The split's seeded shuffle of `rows` rows, and how many of it train.
fn split_order(rows: usize, train_fraction: f64, seed: u64) -> (Vec<usize>, usize) {
    let perm = SeededRng::new(seed, Stream::Split).permutation(rows);
    let n_train = ((rows as f64) * train_fraction) as usize;
    (perm, n_train)
}
