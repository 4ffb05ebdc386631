//! The training loop: full-batch gradient descent (the notebook) or
//! mini-batch training with per-epoch shuffling, with SGD, momentum or Adam.

pub mod optimizer;
pub mod shard;

pub use optimizer::{Optimizer, OptimizerKind};

use crate::data::{Dataset, FEATURES};
use crate::engine::{BatchStats, Engine, EngineKind};
use crate::metrics::{evaluate, Evaluation};
use crate::model::{Init, Mlp};
use crate::rng::{SeededRng, Stream};
use shard::ShardBuffers;
use std::time::Instant;

/// How the data is cut into steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "schedule", rename_all = "kebab-case")]
pub enum Schedule {
    /// Every step sees the whole training set (the notebook).
    FullBatch { iterations: usize },
    /// Shuffled mini-batches, reshuffled every epoch; the last batch of an
    /// epoch may be short.
    MiniBatch { epochs: usize, batch_size: usize },
}

/// Everything that decides a training run's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainConfig {
    pub hidden: usize,
    pub init: Init,
    pub optimizer: OptimizerKind,
    pub lr: f32,
    /// Momentum coefficient (optimizer `momentum` only).
    pub momentum: f32,
    pub schedule: Schedule,
    pub seed: u64,
    pub engine: EngineKind,
    /// Full-batch only: record metrics every this many iterations.
    pub log_every: usize,
}

/// Metrics at one point of training.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Record {
    /// Epoch (mini-batch, from 1) or iteration (full-batch, from 0).
    pub step: usize,
    /// Mean loss and accuracy on the training rows seen since the last record,
    /// computed with the weights before each update (as Keras and the
    /// notebook report them).
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub heldout_loss: Option<f64>,
    pub heldout_accuracy: Option<f64>,
    /// Seconds since training started.
    pub seconds: f64,
}

/// Hooks for progress display.
pub trait Observer {
    /// Called after every optimizer step with steps done and total.
    fn on_step(&mut self, _done: usize, _total: usize, _stats: &BatchStats) {}
    fn on_record(&mut self, _record: &Record) {}
}

/// An observer that shows nothing.
pub struct Silent;
impl Observer for Silent {}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(
        "training diverged at {unit} {at}: the loss became {loss} (weights NaN or infinite); \
         try a smaller learning rate than --lr {lr}"
    )]
    Diverged {
        unit: &'static str,
        at: usize,
        loss: f64,
        lr: f32,
    },
    #[error(
        "the training set has no labels: train needs a labeled file such as Kaggle's train.csv"
    )]
    Unlabeled,
    #[error("the training set is empty")]
    Empty,
}

/// The trained model and how it got there.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub model: Mlp,
    pub records: Vec<Record>,
    pub steps: usize,
    pub seconds: f64,
}

/// Train a fresh model on `train`, evaluating on `heldout` at each record.
pub fn train(
    cfg: &TrainConfig,
    train: &Dataset,
    heldout: Option<&Dataset>,
    observer: &mut dyn Observer,
) -> Result<TrainOutcome, TrainError> {
    let labels = train.labels.as_deref().ok_or(TrainError::Unlabeled)?;
    if train.is_empty() {
        return Err(TrainError::Empty);
    }
    let engine = cfg.engine.build();
    let mut model = Mlp::init(cfg.hidden, cfg.init, cfg.seed);
    let mut opt = Optimizer::new(cfg.optimizer, cfg.lr, cfg.momentum, cfg.hidden);
    let mut loop_state = Loop {
        engine: engine.as_ref(),
        heldout,
        shards: ShardBuffers::default(),
        grads: Mlp::zeros(cfg.hidden),
        records: Vec::new(),
        start: Instant::now(),
        lr: cfg.lr,
    };
    let steps = match cfg.schedule {
        Schedule::FullBatch { iterations } => {
            let every = cfg.log_every.max(1);
            for it in 0..iterations {
                let stats = loop_state.step(
                    &mut model,
                    &mut opt,
                    &train.pixels,
                    labels,
                    "iteration",
                    it,
                )?;
                observer.on_step(it + 1, iterations, &stats);
                if it % every == 0 || it + 1 == iterations {
                    // The notebook prints the accuracy of iteration `it`'s forward pass.
                    let r = loop_state.record(it, &stats, &model);
                    observer.on_record(&r);
                }
            }
            iterations
        }
        Schedule::MiniBatch { epochs, batch_size } => {
            let batch_size = batch_size.clamp(1, train.len());
            let mut rng = SeededRng::new(cfg.seed, Stream::Shuffle);
            let batches = train.len().div_ceil(batch_size);
            let total = epochs * batches;
            let mut xb = Vec::with_capacity(batch_size * FEATURES);
            let mut yb = Vec::with_capacity(batch_size);
            let mut done = 0;
            for epoch in 1..=epochs {
                let order = rng.permutation(train.len());
                let mut seen = BatchStats::default();
                for idx in order.chunks(batch_size) {
                    xb.clear();
                    yb.clear();
                    for &i in idx {
                        xb.extend_from_slice(train.row(i));
                        yb.push(labels[i]);
                    }
                    let stats = loop_state.step(&mut model, &mut opt, &xb, &yb, "epoch", epoch)?;
                    seen.merge(stats);
                    done += 1;
                    observer.on_step(done, total, &stats);
                }
                let r = loop_state.record(epoch, &seen, &model);
                observer.on_record(&r);
            }
            total
        }
    };
    Ok(TrainOutcome {
        model,
        records: loop_state.records,
        steps,
        seconds: loop_state.start.elapsed().as_secs_f64(),
    })
}

/// State shared by both schedules.
struct Loop<'a> {
    engine: &'a dyn Engine,
    heldout: Option<&'a Dataset>,
    shards: ShardBuffers,
    grads: Mlp,
    records: Vec<Record>,
    start: Instant,
    lr: f32,
}

impl Loop<'_> {
    fn step(
        &mut self,
        model: &mut Mlp,
        opt: &mut Optimizer,
        x: &[u8],
        y: &[u8],
        unit: &'static str,
        at: usize,
    ) -> Result<BatchStats, TrainError> {
        let stats = self
            .shards
            .mean_gradients(self.engine, model, x, y, &mut self.grads);
        opt.step(model, &self.grads);
        let loss = stats.mean_loss();
        if !loss.is_finite() || !model.is_finite() {
            return Err(TrainError::Diverged {
                unit,
                at,
                loss,
                lr: self.lr,
            });
        }
        Ok(stats)
    }

    fn record(&mut self, step: usize, seen: &BatchStats, model: &Mlp) -> Record {
        let held: Option<Evaluation> = self
            .heldout
            .filter(|h| !h.is_empty() && h.labels.is_some())
            .map(|h| evaluate(self.engine, model, h));
        let r = Record {
            step,
            train_loss: seen.mean_loss(),
            train_accuracy: seen.accuracy(),
            heldout_loss: held.as_ref().map(|e| e.stats.mean_loss()),
            heldout_accuracy: held.as_ref().map(|e| e.stats.accuracy()),
            seconds: self.start.elapsed().as_secs_f64(),
        };
        self.records.push(r.clone());
        r
    }
}

/// Split `data` into (train, held-out) with a seeded shuffle: the first
/// `train_fraction` of a permutation trains, the rest is held out (the
/// notebook's `data_splitter`, seeded).
pub fn split(data: &Dataset, train_fraction: f64, seed: u64) -> (Dataset, Dataset) {
    let perm = SeededRng::new(seed, Stream::Split).permutation(data.len());
    let n_train = ((data.len() as f64) * train_fraction) as usize;
    (data.gather(&perm[..n_train]), data.gather(&perm[n_train..]))
}
