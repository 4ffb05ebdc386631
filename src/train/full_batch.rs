//! Full-batch gradient descent, the notebook's loop: every step sees the
//! whole training set; metrics are recorded every `log_every` iterations.

use super::shard;
use super::step::Stepper;
use super::{Control, Observer, StepView, TrainConfig, TrainError, TrainState};
use crate::data::Dataset;
use crate::engine::BatchStats;

/// Carry `st` on to `iterations` iterations, or until early stopping ends
/// it; whether the observer stopped the run.
pub(super) fn run(
    cfg: &TrainConfig,
    iterations: usize,
    st: &mut TrainState,
    train: &Dataset,
    labels: &[u8],
    stepper: &mut Stepper,
    observer: &mut dyn Observer,
) -> Result<bool, TrainError> {
    let mut stopped = false;
    let every = cfg.log_every.max(1);
    // The engine's own trainer, if it has one, holds the model from step
    // to step (a batch of every row, in order); `st` is brought up to date
    // at each record, for an observer that asks, and at the end.
    let mut resident =
        stepper
            .engine
            .resident(&train.pixels, labels, train.len(), &st.model, &st.optimizer);
    let all: Vec<usize> = (0..train.len()).collect();
    // Otherwise the same rows every iteration: convert them once.
    let prepared = match resident {
        Some(_) => None,
        None => shard::prepare(stepper.engine, &train.pixels, &st.model.shape()),
    };
    // Whether `st.model` lags the resident trainer's, and the last step's
    // counts, for the check after the final write-back.
    let mut behind = false;
    let mut last = BatchStats::default();
    // A run resumed from a checkpoint written as early stopping ended it
    // takes no further step.
    while st.position.completed < iterations && !st.early_stop_due(cfg) {
        let it = st.position.completed;
        st.optimizer.lr = cfg.lr_schedule.rate(cfg.lr, it, iterations);
        let stats = match resident.as_deref_mut() {
            Some(r) => {
                let rule = st.optimizer.next_rule();
                let step = r.step(&all, &rule);
                stepper.check_step(&step.stats, step.finite, "iteration", it)?;
                behind = true;
                step.stats
            }
            None => stepper.step(
                &mut st.model,
                &mut st.optimizer,
                (&train.pixels, prepared.as_deref()),
                labels,
                "iteration",
                it,
            )?,
        };
        last = stats;
        st.position.steps += 1;
        st.position.completed += 1;
        observer.on_step(it + 1, iterations, &stats);
        let recorded = it.is_multiple_of(every) || it + 1 == iterations;
        if recorded {
            if let Some(r) = resident.as_deref_mut().filter(|_| behind) {
                stepper.write_back(r, st, &stats, "iteration", it)?;
                behind = false;
            }
            // The notebook prints the accuracy of iteration `it`'s forward
            // pass; the held-out rows are scored with the updated weights.
            let r = stepper.record(it, &stats, &st.model);
            observer.on_record(&r);
            st.records.push(r);
            st.note_record(cfg);
        }
        st.seconds = stepper.seconds();
        let mut view = StepView {
            state: &mut *st,
            resident: resident.as_deref_mut().filter(|_| behind),
        };
        let control = observer.after_step(&mut view);
        // An observer that asked for the state had it written back.
        behind &= view.resident.is_some();
        if control == Control::Stop {
            stopped = st.position.completed < iterations;
            break;
        }
        // Early stopping decides at records, after the observer (a
        // checkpoint written here resumes to the same end).
        if recorded && st.early_stop_due(cfg) {
            break;
        }
    }
    if let Some(r) = resident.as_deref_mut().filter(|_| behind) {
        let at = st.position.completed.max(1) - 1;
        stepper.write_back(r, st, &last, "iteration", at)?;
    }
    Ok(stopped)
}
