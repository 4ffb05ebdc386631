//! Mini-batch training: the rows reshuffled every epoch (a seeded stream
//! whose position is part of the state, so a resumed run draws the same
//! permutations), one optimizer step per batch, a record per epoch. An
//! engine with a resident trainer keeps the model in its own layout between
//! steps; otherwise each batch is gathered and sharded here.

use super::step::Stepper;
use super::{Control, Observer, StepView, TrainConfig, TrainError, TrainState};
use crate::data::{Dataset, FEATURES};
use crate::engine::BatchStats;
use crate::engine::ResidentTrainer;
use crate::rng::{SeededRng, Stream};
use std::time::Instant;

/// Carry `st` on to `epochs` epochs of `batch_size`-row steps, or until
/// early stopping ends it; whether the observer stopped it.
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    cfg: &TrainConfig,
    epochs: usize,
    batch_size: usize,
    st: &mut TrainState,
    train: &Dataset,
    labels: &[u8],
    stepper: &mut Stepper,
    observer: &mut dyn Observer,
) -> Result<bool, TrainError> {
    let mut stopped = false;
    let batch_size = batch_size.clamp(1, train.len());
    let mut rng = SeededRng::new(cfg.seed, Stream::Shuffle);
    let batches = train.len().div_ceil(batch_size);
    let total = epochs * batches;
    let mut xb = Vec::with_capacity(batch_size * FEATURES);
    let mut yb = Vec::with_capacity(batch_size);
    // The engine's own trainer, if it has one, holds the model from
    // step to step; `st` is brought up to date at each record, for an
    // observer that asks, and at the end.
    // With augmentation the rows change every epoch: no engine keeps them.
    let mut resident = match cfg.augment {
        Some(_) => None,
        None => {
            stepper
                .engine
                .resident(&train.pixels, labels, batch_size, &st.model, &st.optimizer)
        }
    };
    // This epoch's distorted training rows (`--augment`).
    let mut distorted: Vec<u8> = Vec::new();
    // The last step's counts, for the check after the final write-back.
    let mut last = BatchStats::default();
    // A run resumed from a checkpoint written as early stopping ended it
    // takes no further step.
    'epochs: while st.position.completed < epochs && !st.early_stop_due(cfg) {
        let epoch = st.position.completed + 1;
        rng.set_word_pos(st.position.shuffle_word_pos);
        let order = rng.permutation(train.len());
        if let Some(a) = &cfg.augment {
            let t = Instant::now();
            distorted.resize(train.pixels.len(), 0);
            a.apply_rows(cfg.seed, epoch, &train.pixels, &mut distorted);
            stepper.augment_seconds += t.elapsed().as_secs_f64();
        }
        let pixels = match cfg.augment {
            Some(_) => &distorted[..],
            None => &train.pixels[..],
        };
        // Peekable: a resident trainer is told the next step's rows.
        let mut batches_left = order
            .chunks(batch_size)
            .skip(st.position.batch_in_epoch)
            .peekable();
        while let Some(idx) = batches_left.next() {
            let done = st.position.steps;
            st.optimizer.lr = cfg.lr_schedule.rate(cfg.lr, done, total);
            let next = batches_left.peek().copied();
            let rows = Batch { idx, next, epoch };
            let stats = match resident.as_deref_mut() {
                Some(r) => resident_step(r, &rows, st, stepper)?,
                None => gathered_step(&rows, st, pixels, labels, (&mut xb, &mut yb), stepper)?,
            };
            last = stats;
            st.position.seen.merge(stats);
            st.position.steps += 1;
            st.position.batch_in_epoch += 1;
            observer.on_step(done + 1, total, &stats);
            if st.position.batch_in_epoch == batches {
                end_epoch(
                    resident.as_deref_mut(),
                    &stats,
                    epoch,
                    st,
                    stepper,
                    observer,
                )?;
                st.note_record(cfg);
                st.position.shuffle_word_pos = rng.word_pos();
            }
            st.seconds = stepper.seconds();
            let mut view = StepView {
                state: &mut *st,
                resident: resident.as_deref_mut(),
            };
            if observer.after_step(&mut view) == Control::Stop {
                stopped = st.position.completed < epochs;
                break 'epochs;
            }
            // Early stopping decides at epoch ends, after the observer
            // (a checkpoint written here resumes to the same end).
            if st.position.batch_in_epoch == 0 && st.early_stop_due(cfg) {
                break 'epochs;
            }
        }
    }
    // A run that ends with its last epoch was written back at that
    // epoch's end; one stopped early may still hold an update.
    if let Some(r) = resident.as_deref_mut().filter(|_| stopped) {
        let p = &st.position;
        let epoch = p.completed + usize::from(p.batch_in_epoch > 0);
        stepper.write_back(r, st, &last, "epoch", epoch.max(1))?;
    }
    Ok(stopped)
}

/// The rows of one step, the next step's (a hint), and the epoch.
struct Batch<'a> {
    idx: &'a [usize],
    next: Option<&'a [usize]>,
    epoch: usize,
}

/// A step on the engine's resident trainer.
fn resident_step(
    r: &mut dyn ResidentTrainer,
    rows: &Batch,
    st: &mut TrainState,
    stepper: &Stepper,
) -> Result<BatchStats, TrainError> {
    if let Some(next) = rows.next {
        r.upcoming(next);
    }
    let rule = st.optimizer.next_rule();
    let step = r.step(rows.idx, &rule);
    stepper.check_step(&step.stats, step.finite, "epoch", rows.epoch)?;
    Ok(step.stats)
}

/// A step on the batch's rows gathered into `xb`/`yb` and sharded.
fn gathered_step(
    rows: &Batch,
    st: &mut TrainState,
    pixels: &[u8],
    labels: &[u8],
    (xb, yb): (&mut Vec<u8>, &mut Vec<u8>),
    stepper: &mut Stepper,
) -> Result<BatchStats, TrainError> {
    xb.clear();
    yb.clear();
    for &i in rows.idx {
        xb.extend_from_slice(&pixels[i * FEATURES..(i + 1) * FEATURES]);
        yb.push(labels[i]);
    }
    stepper.step(
        &mut st.model,
        &mut st.optimizer,
        (xb, None),
        yb,
        "epoch",
        rows.epoch,
    )
}

/// The last step of an epoch is done: bring the model up to date, check
/// the epoch's loss, record it, and move the position to the next epoch.
fn end_epoch(
    resident: Option<&mut (dyn ResidentTrainer + 'static)>,
    last: &BatchStats,
    epoch: usize,
    st: &mut TrainState,
    stepper: &Stepper,
    observer: &mut dyn Observer,
) -> Result<(), TrainError> {
    if let Some(r) = resident {
        stepper.write_back(r, st, last, "epoch", epoch)?;
    }
    let seen = std::mem::take(&mut st.position.seen);
    stepper.check_loss(&seen, "epoch", epoch)?;
    let r = stepper.record(epoch, &seen, &st.model);
    observer.on_record(&r);
    st.records.push(r);
    st.position.completed = epoch;
    st.position.batch_in_epoch = 0;
    Ok(())
}
