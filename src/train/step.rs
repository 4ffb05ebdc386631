//! One optimizer step through the sharded gradients, and the checks that
//! stop a run that has diverged.

use super::shard::ShardBuffers;
use super::{Record, TrainError, TrainState};
use crate::data::Dataset;
use crate::engine::{BatchStats, Engine, PreparedRows, ResidentTrainer};
use crate::metrics::{evaluate, Evaluation};
use crate::model::Mlp;
use crate::optim::Optimizer;
use std::time::Instant;

/// Cross-entropy of a uniform guess over 10 classes.
const CHANCE_LOSS: f64 = std::f64::consts::LN_10;

/// Mean loss taken as divergence: 13x chance, i.e. the true class gets on
/// average a probability below e^-30. Training that is learning never gets
/// there; `--lr 50` does within a few steps.
pub const DIVERGED_LOSS: f64 = 30.0;

/// One optimizer step and the checks after it, shared by both schedules.
pub(super) struct Stepper<'a> {
    pub(super) engine: &'a dyn Engine,
    pub(super) heldout: Option<&'a Dataset>,
    pub(super) shards: ShardBuffers,
    pub(super) grads: Mlp,
    pub(super) start: Instant,
    /// Training time of the run before this process resumed it.
    pub(super) seconds_before: f64,
    pub(super) lr: f32,
    /// Time spent distorting training rows (`--augment`) in this process.
    pub(super) augment_seconds: f64,
}

impl Stepper<'_> {
    pub(super) fn step(
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
        let finite = opt.step(model, &self.grads);
        self.check_step(&stats, finite, unit, at)?;
        Ok(stats)
    }

    /// Bring `st` up to date from an engine's resident trainer, and check
    /// the update it held (whose step counted `stats`) as [`Self::step`]
    /// checks one.
    pub(super) fn write_back(
        &self,
        r: &mut dyn ResidentTrainer,
        st: &mut TrainState,
        stats: &BatchStats,
        unit: &'static str,
        at: usize,
    ) -> Result<(), TrainError> {
        let finite = r.write_back(&mut st.model, &mut st.optimizer);
        self.check_step(stats, finite, unit, at)
    }

    /// After an update: stop a run whose weights or loss are no longer
    /// finite, or whose loss has blown up.
    pub(super) fn check_step(
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
    pub(super) fn check_loss(
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
    pub(super) fn seconds(&self) -> f64 {
        self.seconds_before + self.start.elapsed().as_secs_f64()
    }

    pub(super) fn record(&self, step: usize, seen: &BatchStats, model: &Mlp) -> Record {
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
