//! Full-batch gradient descent, the notebook's loop: every step sees the
//! whole training set; metrics are recorded every `log_every` iterations.

use super::shard;
use super::step::Stepper;
use super::{Control, Observer, StepView, TrainConfig, TrainError, TrainState};
use crate::data::Dataset;

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
    // The same rows every iteration: convert them once.
    let prepared = shard::prepare(stepper.engine, &train.pixels, &st.model.shape());
    // A run resumed from a checkpoint written as early stopping ended it
    // takes no further step.
    while st.position.completed < iterations && !st.early_stop_due(cfg) {
        let it = st.position.completed;
        st.optimizer.lr = cfg.lr_schedule.rate(cfg.lr, it, iterations);
        let stats = stepper.step(
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
        let recorded = it.is_multiple_of(every) || it + 1 == iterations;
        if recorded {
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
            resident: None,
        };
        if observer.after_step(&mut view) == Control::Stop {
            stopped = st.position.completed < iterations;
            break;
        }
        // Early stopping decides at records, after the observer (a
        // checkpoint written here resumes to the same end).
        if recorded && st.early_stop_due(cfg) {
            break;
        }
    }
    Ok(stopped)
}
