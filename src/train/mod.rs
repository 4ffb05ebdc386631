//! The training loop: full-batch gradient descent (the notebook) or
//! mini-batch training with per-epoch shuffling, with SGD, momentum or Adam.

pub mod shard;

use crate::optim::{Optimizer, OptimizerKind};

use crate::data::{Dataset, FEATURES};
use crate::engine::{BatchStats, Engine, EngineKind, PreparedRows, ResidentTrainer};
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

/// Cross-entropy of a uniform guess over 10 classes.
const CHANCE_LOSS: f64 = std::f64::consts::LN_10;

/// Mean loss taken as divergence: 13x chance, i.e. the true class gets on
/// average a probability below e^-30. Training that is learning never gets
/// there; `--lr 50` does within a few steps.
pub const DIVERGED_LOSS: f64 = 30.0;

/// `0.1` as "0.1" but `1e30` as "1e30", not thirty-one digits.
fn short_float(v: f32) -> String {
    if v != 0.0 && (v.abs() >= 1e5 || v.abs() < 1e-4) {
        format!("{v:e}")
    } else {
        v.to_string()
    }
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
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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

/// Hooks for progress display, checkpoints and stopping early.
pub trait Observer {
    /// Called after every optimizer step with steps done and total.
    fn on_step(&mut self, _done: usize, _total: usize, _stats: &BatchStats) {}
    fn on_record(&mut self, _record: &Record) {}
    /// Called after every step (and its record, if any) with everything
    /// needed to resume from exactly here; [`Control::Stop`] ends training
    /// now, with [`TrainOutcome::stopped`] set. Checkpoint writers and
    /// Ctrl-C handling live here, so the loop knows nothing of files or
    /// signals.
    fn after_step(&mut self, _state: &mut StepView) -> Control {
        Control::Continue
    }
}

/// What [`Observer::after_step`] sees: the position at once, and the whole
/// state on request. An engine's resident trainer keeps the model and the
/// optimizer's moments in its own layout between steps, and writes them
/// back only when asked (an observer that saves a checkpoint), at each
/// record, and at the end.
pub struct StepView<'a> {
    state: &'a mut TrainState,
    /// Holds the up-to-date model until [`StepView::state`] writes it back.
    resident: Option<&'a mut (dyn ResidentTrainer + 'static)>,
}

impl StepView<'_> {
    pub fn position(&self) -> &Position {
        &self.state.position
    }

    /// Everything needed to resume from exactly here.
    pub fn state(&mut self) -> &TrainState {
        if let Some(r) = self.resident.take() {
            // A non-finite update shows at the trainer's next step.
            r.write_back(&mut self.state.model, &mut self.state.optimizer);
        }
        self.state
    }
}

/// What an [`Observer`] wants after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop,
}

/// Where a run is: enough, with the model and optimizer, to carry on and
/// end bit-identical to a run that never stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    /// Optimizer steps taken over the whole run.
    pub steps: usize,
    /// Mini-batch: epochs finished; full-batch: iterations finished.
    pub completed: usize,
    /// Mini-batch: batches already taken in the unfinished epoch
    /// `completed + 1` (0 at an epoch boundary).
    pub batch_in_epoch: usize,
    /// Mini-batch: the shuffle stream's word position at the start of the
    /// unfinished epoch, i.e. before its permutation is drawn.
    pub shuffle_word_pos: u128,
    /// Mini-batch: training loss/accuracy of the unfinished epoch so far.
    pub seen: BatchStats,
}

/// Everything that changes during training.
#[derive(Debug, Clone)]
pub struct TrainState {
    pub model: Mlp,
    pub optimizer: Optimizer,
    pub position: Position,
    /// Records so far (the metrics file of a resumed run has them all).
    pub records: Vec<Record>,
    /// Training seconds spent before this process took over (resume).
    pub seconds: f64,
}

impl TrainState {
    /// The state before the first step of a run of `cfg`.
    pub fn new(cfg: &TrainConfig) -> TrainState {
        TrainState {
            model: Mlp::init(cfg.hidden, cfg.init, cfg.seed),
            optimizer: Optimizer::new(cfg.optimizer, cfg.lr, cfg.momentum, cfg.hidden),
            position: Position {
                steps: 0,
                completed: 0,
                batch_in_epoch: 0,
                shuffle_word_pos: SeededRng::new(cfg.seed, Stream::Shuffle).word_pos(),
                seen: BatchStats::default(),
            },
            records: Vec::new(),
            seconds: 0.0,
        }
    }

    /// Whether every step of `cfg` is done.
    pub fn is_finished(&self, cfg: &TrainConfig) -> bool {
        let units = match cfg.schedule {
            Schedule::FullBatch { iterations } => iterations,
            Schedule::MiniBatch { epochs, .. } => epochs,
        };
        self.position.completed >= units
    }

    /// Checks that this state can continue a run of `cfg` on `rows` rows
    /// (a checkpoint from another run or data set must not be resumed).
    fn check_fits(&self, cfg: &TrainConfig, rows: usize) -> Result<(), String> {
        let p = &self.position;
        if self.model.hidden() != cfg.hidden {
            return Err(format!(
                "the model has {} hidden units, the run {}",
                self.model.hidden(),
                cfg.hidden
            ));
        }
        if self.optimizer.kind != cfg.optimizer || self.optimizer.t != p.steps as u64 {
            return Err(format!(
                "optimizer {} after {} updates does not match {} after {} steps",
                self.optimizer.kind.name(),
                self.optimizer.t,
                cfg.optimizer.name(),
                p.steps
            ));
        }
        let fits = match cfg.schedule {
            Schedule::FullBatch { iterations } => {
                p.completed <= iterations && p.steps == p.completed && p.batch_in_epoch == 0
            }
            Schedule::MiniBatch { epochs, batch_size } => {
                let batches = rows.div_ceil(batch_size.clamp(1, rows.max(1)));
                p.completed <= epochs
                    && p.batch_in_epoch < batches
                    && p.steps == p.completed * batches + p.batch_in_epoch
            }
        };
        if !fits {
            return Err(format!(
                "position (step {}, {} done, batch {} of the next epoch) is not a point of \
                 this run's schedule on {rows} rows",
                p.steps, p.completed, p.batch_in_epoch
            ));
        }
        Ok(())
    }
}

/// An observer that shows nothing.
pub struct Silent;
impl Observer for Silent {}

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
}

/// The trained model and how it got there.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub model: Mlp,
    pub records: Vec<Record>,
    pub steps: usize,
    pub seconds: f64,
    /// The observer stopped training before the last step (Ctrl-C); `model`
    /// is the model at that point.
    pub stopped: bool,
}

/// Train a fresh model on `train`, evaluating on `heldout` at each record.
pub fn train(
    cfg: &TrainConfig,
    train: &Dataset,
    heldout: Option<&Dataset>,
    observer: &mut dyn Observer,
) -> Result<TrainOutcome, TrainError> {
    train_from(cfg, TrainState::new(cfg), train, heldout, observer)
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
    let mut loop_state = Loop {
        engine: engine.as_ref(),
        heldout,
        shards: ShardBuffers::default(),
        grads: Mlp::zeros(cfg.hidden),
        start: Instant::now(),
        seconds_before: st.seconds,
        lr: cfg.lr,
    };
    let mut stopped = false;
    let steps = match cfg.schedule {
        Schedule::FullBatch { iterations } => {
            let every = cfg.log_every.max(1);
            // The same rows every iteration: convert them once.
            let prepared = shard::prepare(loop_state.engine, &train.pixels);
            while st.position.completed < iterations {
                let it = st.position.completed;
                st.optimizer.lr = cfg.lr_schedule.rate(cfg.lr, it, iterations);
                let stats = loop_state.step(
                    &mut st.model,
                    &mut st.optimizer,
                    (&train.pixels, prepared.as_deref()),
                    labels,
                    "iteration",
                    it,
                )?;
                st.position.steps += 1;
                st.position.completed += 1;
                observer.on_step(it + 1, iterations, &stats);
                if it.is_multiple_of(every) || it + 1 == iterations {
                    // The notebook prints the accuracy of iteration `it`'s forward pass.
                    let r = loop_state.record(it, &stats, &st.model);
                    observer.on_record(&r);
                    st.records.push(r);
                }
                st.seconds = loop_state.seconds();
                let mut view = StepView {
                    state: &mut st,
                    resident: None,
                };
                if observer.after_step(&mut view) == Control::Stop {
                    stopped = st.position.completed < iterations;
                    break;
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
            // The engine's own trainer, if it has one, holds the model from
            // step to step; `st` is brought up to date at each record, for an
            // observer that asks, and at the end.
            let mut resident = loop_state.engine.resident(
                &train.pixels,
                labels,
                batch_size,
                &st.model,
                &st.optimizer,
            );
            // The last step's counts, for the check after the final write-back.
            let mut last = BatchStats::default();
            'epochs: while st.position.completed < epochs {
                let epoch = st.position.completed + 1;
                rng.set_word_pos(st.position.shuffle_word_pos);
                let order = rng.permutation(train.len());
                // Peekable: a resident trainer is told the next step's rows.
                let mut batches_left = order
                    .chunks(batch_size)
                    .skip(st.position.batch_in_epoch)
                    .peekable();
                while let Some(idx) = batches_left.next() {
                    let done = st.position.steps;
                    st.optimizer.lr = cfg.lr_schedule.rate(cfg.lr, done, total);
                    let stats = match resident.as_deref_mut() {
                        Some(r) => {
                            if let Some(next) = batches_left.peek() {
                                r.upcoming(next);
                            }
                            let rule = st.optimizer.next_rule();
                            let step = r.step(idx, &rule);
                            loop_state.check_step(&step.stats, step.finite, "epoch", epoch)?;
                            step.stats
                        }
                        None => {
                            xb.clear();
                            yb.clear();
                            for &i in idx {
                                xb.extend_from_slice(train.row(i));
                                yb.push(labels[i]);
                            }
                            loop_state.step(
                                &mut st.model,
                                &mut st.optimizer,
                                (&xb, None),
                                &yb,
                                "epoch",
                                epoch,
                            )?
                        }
                    };
                    last = stats;
                    st.position.seen.merge(stats);
                    st.position.steps += 1;
                    st.position.batch_in_epoch += 1;
                    observer.on_step(done + 1, total, &stats);
                    if st.position.batch_in_epoch == batches {
                        if let Some(r) = resident.as_deref_mut() {
                            let finite = r.write_back(&mut st.model, &mut st.optimizer);
                            loop_state.check_step(&stats, finite, "epoch", epoch)?;
                        }
                        let seen = std::mem::take(&mut st.position.seen);
                        loop_state.check_loss(&seen, "epoch", epoch)?;
                        let r = loop_state.record(epoch, &seen, &st.model);
                        observer.on_record(&r);
                        st.records.push(r);
                        st.position.completed = epoch;
                        st.position.batch_in_epoch = 0;
                        st.position.shuffle_word_pos = rng.word_pos();
                    }
                    st.seconds = loop_state.seconds();
                    let mut view = StepView {
                        state: &mut st,
                        resident: resident.as_deref_mut(),
                    };
                    if observer.after_step(&mut view) == Control::Stop {
                        stopped = st.position.completed < epochs;
                        break 'epochs;
                    }
                }
            }
            // A run that ends with its last epoch was written back at that
            // epoch's end; one stopped early may still hold an update.
            if let Some(r) = resident.as_deref_mut().filter(|_| stopped) {
                let finite = r.write_back(&mut st.model, &mut st.optimizer);
                let p = &st.position;
                let epoch = p.completed + usize::from(p.batch_in_epoch > 0);
                loop_state.check_step(&last, finite, "epoch", epoch.max(1))?;
            }
            total
        }
    };
    Ok(TrainOutcome {
        model: st.model,
        records: st.records,
        steps,
        seconds: loop_state.seconds(),
        stopped,
    })
}

/// State shared by both schedules.
struct Loop<'a> {
    engine: &'a dyn Engine,
    heldout: Option<&'a Dataset>,
    shards: ShardBuffers,
    grads: Mlp,
    start: Instant,
    /// Training time of the run before this process resumed it.
    seconds_before: f64,
    lr: f32,
}

impl Loop<'_> {
    fn step(
        &mut self,
        model: &mut Mlp,
        opt: &mut Optimizer,
        (x, prepared): (&[u8], Option<&[PreparedRows]>),
        y: &[u8],
        unit: &'static str,
        at: usize,
    ) -> Result<BatchStats, TrainError> {
        let stats = self
            .shards
            .mean_gradients(self.engine, model, x, y, prepared, &mut self.grads);
        opt.step(model, &self.grads);
        self.check_step(&stats, model.is_finite(), unit, at)?;
        Ok(stats)
    }

    /// After an update: stop a run whose weights or loss are no longer
    /// finite, or whose loss has blown up.
    fn check_step(
        &self,
        stats: &BatchStats,
        finite: bool,
        unit: &'static str,
        at: usize,
    ) -> Result<(), TrainError> {
        if !finite || !stats.mean_loss().is_finite() {
            let what = format!(
                "the loss became {} and the weights NaN or infinite",
                stats.mean_loss()
            );
            return Err(self.diverged(unit, at, what, stats.mean_loss()));
        }
        // Single rows can be confidently wrong; a batch of 32 far above
        // chance cannot, in a run that is learning.
        if stats.rows >= 32 {
            self.check_loss(stats, unit, at)?;
        }
        Ok(())
    }

    /// A mean loss above [`DIVERGED_LOSS`] means the run has blown up even if
    /// every number is still finite (the max-subtracted softmax and the
    /// clamped log keep them finite, e.g. at `--lr 50`).
    fn check_loss(
        &self,
        stats: &BatchStats,
        unit: &'static str,
        at: usize,
    ) -> Result<(), TrainError> {
        let loss = stats.mean_loss();
        if loss > DIVERGED_LOSS {
            let what = format!(
                "the mean loss reached {loss:.1}, more than {:.0}x chance level (ln 10 = 2.30)",
                DIVERGED_LOSS / CHANCE_LOSS
            );
            return Err(self.diverged(unit, at, what, loss));
        }
        Ok(())
    }

    fn diverged(&self, unit: &'static str, at: usize, what: String, loss: f64) -> TrainError {
        TrainError::Diverged {
            unit,
            at,
            what,
            loss,
            lr: self.lr,
        }
    }

    /// Seconds of training so far, including before a resume.
    fn seconds(&self) -> f64 {
        self.seconds_before + self.start.elapsed().as_secs_f64()
    }

    fn record(&self, step: usize, seen: &BatchStats, model: &Mlp) -> Record {
        let held: Option<Evaluation> = self
            .heldout
            .filter(|h| !h.is_empty() && h.labels.is_some())
            .map(|h| evaluate(self.engine, model, h));
        Record {
            step,
            train_loss: seen.mean_loss(),
            train_accuracy: seen.accuracy(),
            heldout_loss: held.as_ref().map(|e| e.stats.mean_loss()),
            heldout_accuracy: held.as_ref().map(|e| e.stats.accuracy()),
            seconds: self.seconds(),
        }
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
