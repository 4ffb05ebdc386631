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

/// Learning-rate schedule over the whole run.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// The same rate at every step (the notebook).
    Constant,
    /// Linear warm-up over the first 10% of steps, then cosine decay to 0.
    /// With only 10 hidden units, full-size Adam steps at the start can kill
    /// ReLU units for good (seed 3 lost 3 of 10 and ended at 91.5%); the
    /// warm-up keeps them alive, the decay lets the weights settle.
    Cosine,
}

/// Fraction of the steps spent warming up under [`LrSchedule::Cosine`].
pub const WARMUP_FRACTION: f64 = 0.1;

impl LrSchedule {
    /// The rate for step `step` (0-based) of `total`.
    pub fn rate(self, lr: f32, step: usize, total: usize) -> f32 {
        match self {
            LrSchedule::Constant => lr,
            LrSchedule::Cosine => {
                let total = total.max(1);
                let t = step as f64 / total as f64;
                let warm_steps = (WARMUP_FRACTION * total as f64).ceil().max(1.0);
                let warm = ((step + 1) as f64 / warm_steps).min(1.0);
                (warm * lr as f64 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())) as f32
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            LrSchedule::Constant => "constant",
            LrSchedule::Cosine => "cosine",
        }
    }
}

/// Everything that decides a training run's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainConfig {
    pub hidden: usize,
    pub init: Init,
    pub optimizer: OptimizerKind,
    pub lr: f32,
    /// How the learning rate changes over the run.
    pub lr_schedule: LrSchedule,
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
                opt.lr = cfg.lr_schedule.rate(cfg.lr, it, iterations);
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
                    opt.lr = cfg.lr_schedule.rate(cfg.lr, done, total);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_warms_up_peaks_and_decays_to_zero() {
        let s = LrSchedule::Cosine;
        let total = 1000;
        assert!((s.rate(1.0, 0, total) - 0.01).abs() < 1e-3, "starts small");
        let peak = (0..total)
            .map(|i| s.rate(1.0, i, total))
            .fold(0.0f32, f32::max);
        assert!(peak > 0.95 && peak <= 1.0, "{peak}");
        assert!(
            s.rate(1.0, 50, total) < s.rate(1.0, 99, total),
            "rises during warm-up"
        );
        assert!(
            s.rate(1.0, 500, total) > s.rate(1.0, 900, total),
            "decays after"
        );
        assert!(s.rate(1.0, total - 1, total) < 1e-4, "ends near zero");
        assert_eq!(LrSchedule::Constant.rate(0.1, 7, 10), 0.1);
    }
}
