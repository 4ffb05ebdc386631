//! What a run is at any moment ([`TrainState`], [`Position`]), what it
//! records ([`Record`]), and the hooks an observer gets ([`Observer`]).

use super::{Schedule, TrainConfig};
use crate::engine::{BatchStats, ResidentTrainer};
use crate::model::Mlp;
use crate::optim::Optimizer;
use crate::rng::{SeededRng, Stream};

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
    /// Called once the rows are split, before the first step (by [`run`](super::run)).
    fn on_start(&mut self, _start: &super::RunStart) {}
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
    pub(super) state: &'a mut TrainState,
    /// Holds the up-to-date model until [`StepView::state`] writes it back.
    pub(super) resident: Option<&'a mut (dyn ResidentTrainer + 'static)>,
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
    /// Early stopping only: the record with the lowest held-out loss so far.
    pub best: Option<Best>,
}

/// Early stopping's best record: its step, its held-out loss and the
/// weights that loss was measured on.
#[derive(Debug, Clone, PartialEq)]
pub struct Best {
    pub step: usize,
    pub loss: f64,
    pub model: Mlp,
}

impl TrainState {
    /// The state before the first step of a run of `cfg`.
    pub fn new(cfg: &TrainConfig) -> Result<TrainState, super::TrainError> {
        let optimizer = cfg.optimizer();
        Ok(TrainState {
            model: Mlp::init(&cfg.layers, cfg.init, cfg.seed)?,
            optimizer,
            position: Position {
                steps: 0,
                completed: 0,
                batch_in_epoch: 0,
                shuffle_word_pos: SeededRng::new(cfg.seed, Stream::Shuffle).word_pos(),
                seen: BatchStats::default(),
            },
            records: Vec::new(),
            seconds: 0.0,
            best: None,
        })
    }

    /// Early stopping, after a record is pushed: keeps a copy of the model
    /// if the record's held-out loss is strictly the lowest so far (a NaN
    /// loss never is). The model must be up to date (a resident trainer's
    /// written back, as it is at every record).
    pub(super) fn note_record(&mut self, cfg: &TrainConfig) {
        if cfg.early_stop.is_none() {
            return;
        }
        let Some((step, Some(loss))) = self.records.last().map(|r| (r.step, r.heldout_loss)) else {
            return;
        };
        let better = match &self.best {
            None => !loss.is_nan(),
            Some(b) => loss < b.loss,
        };
        if better {
            self.best = Some(Best {
                step,
                loss,
                model: self.model.clone(),
            });
        }
    }

    /// Records with a held-out loss since the best one (all of them if
    /// none was best yet).
    fn records_since_best(&self) -> usize {
        let after = self.best.as_ref().map(|b| b.step);
        self.records
            .iter()
            .filter(|r| r.heldout_loss.is_some() && after.is_none_or(|s| r.step > s))
            .count()
    }

    /// Whether early stopping ends the run here: `--early-stop N` records
    /// in a row without a lower held-out loss. Derived from the records and
    /// the best, so a resumed run decides as the uninterrupted one did.
    pub(super) fn early_stop_due(&self, cfg: &TrainConfig) -> bool {
        cfg.early_stop
            .is_some_and(|patience| self.records_since_best() >= patience)
    }

    /// At the end of a run that was not stopped by its observer: the step
    /// of the record early stopping ended it after (if before the last
    /// unit), and the step of the best record if its weights replace the
    /// model (if it is not the last record, whose weights the model is).
    pub(super) fn finish_early_stop(
        &mut self,
        cfg: &TrainConfig,
    ) -> (Option<usize>, Option<usize>) {
        let last = self.records.last().map(|r| r.step);
        let early = (self.early_stop_due(cfg) && !self.is_finished(cfg))
            .then_some(last)
            .flatten();
        let restored = match self.best.take() {
            Some(best) if Some(best.step) != last => {
                self.model = best.model;
                Some(best.step)
            }
            kept => {
                self.best = kept;
                None
            }
        };
        (early, restored)
    }

    /// Whether every step of `cfg` is done.
    pub fn is_finished(&self, cfg: &TrainConfig) -> bool {
        let units = cfg.schedule.units();
        self.position.completed >= units
    }

    /// Checks that this state can continue a run of `cfg` on `rows` rows
    /// (a checkpoint from another run or data set must not be resumed).
    pub(super) fn check_fits(&self, cfg: &TrainConfig, rows: usize) -> Result<(), String> {
        let p = &self.position;
        if self.model.shape() != cfg.layers {
            return Err(format!(
                "the model is {}, the run {}",
                self.model.shape(),
                cfg.layers
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
