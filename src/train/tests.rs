//! Early stopping: when it stops, which weights it gives back, and that a
//! run resumed from a checkpoint stops at the same record with the same
//! weights.

use super::checkpoint::{self, Checkpoint, RunIdentity};
use super::*;
use crate::testutil::random_dataset;

fn config(schedule: Schedule, engine: EngineKind, early_stop: Option<usize>) -> TrainConfig {
    TrainConfig {
        layers: Layers::one(16),
        init: Init::He,
        optimizer: OptimizerKind::Adam,
        lr: 0.001,
        lr_schedule: LrSchedule::Constant,
        momentum: 0.9,
        weight_decay: 0.0,
        schedule,
        seed: 3,
        engine,
        log_every: 10,
        early_stop,
        augment: None,
    }
}

fn mini_batch(epochs: usize) -> Schedule {
    Schedule::MiniBatch {
        epochs,
        batch_size: 32,
    }
}

/// Every parameter as raw bits.
fn bits(m: &Mlp) -> Vec<u32> {
    m.params()
        .iter()
        .flat_map(|p| p.iter().map(|v| v.to_bits()))
        .collect()
}

/// The in-place split of owned rows gives exactly the copying split's
/// datasets, whichever part is larger and at the edges.
#[test]
fn an_owned_split_equals_the_copying_split() {
    let all = random_dataset(97, 5);
    for fraction in [0.0, 0.01, 0.2, 0.5, 0.8, 0.99, 1.0] {
        let (train, heldout) = split(&all, fraction, 7);
        let (owned_train, owned_heldout) = split_owned(all.clone(), fraction, 7);
        for (a, b) in [(&train, &owned_train), (&heldout, &owned_heldout)] {
            assert_eq!(a.pixels, b.pixels, "split {fraction}");
            assert_eq!(a.labels, b.labels, "split {fraction}");
        }
        assert_eq!(train.len() + heldout.len(), 97);
    }
}

/// Random images, each with a bright stripe in the band of its class,
/// a third of the labels then replaced by noise: the held-out loss falls
/// for some epochs while the stripes are learnt, then rises as the noise
/// is memorised.
fn data() -> (Dataset, Dataset) {
    let mut all = random_dataset(500, 9);
    let mut rng = crate::rng::SeededRng::new(4, crate::rng::Stream::Sweep);
    let band = crate::data::FEATURES / 10;
    let mut labels = Vec::with_capacity(all.len());
    for i in 0..all.len() {
        let class = rng.below(10);
        let stripe = i * crate::data::FEATURES + class * band;
        all.pixels[stripe..stripe + 20].fill(255);
        let noisy = rng.below(3) == 0;
        labels.push(if noisy { rng.below(10) } else { class } as u8);
    }
    all.labels = Some(labels);
    split(&all, 0.8, 1)
}

/// A record at `step` with held-out loss `loss`, after setting the model's
/// first bias to `step` (to tell copies apart).
fn push(st: &mut TrainState, cfg: &TrainConfig, step: usize, loss: Option<f64>) {
    st.model.layers[0].b[0] = step as f32;
    st.records.push(Record {
        step,
        train_loss: 1.0,
        train_accuracy: 0.5,
        heldout_loss: loss,
        heldout_accuracy: loss.map(|_| 0.5),
        seconds: 0.0,
    });
    st.note_record(cfg);
}

#[test]
fn patience_counts_records_without_a_strictly_lower_heldout_loss() {
    let cfg = config(mini_batch(10), EngineKind::Naive, Some(2));
    let mut st = TrainState::new(&cfg).unwrap();
    assert!(!st.early_stop_due(&cfg));
    push(&mut st, &cfg, 1, Some(f64::NAN));
    assert!(st.best.is_none(), "a NaN loss is never the best");
    push(&mut st, &cfg, 2, Some(2.0));
    push(&mut st, &cfg, 3, Some(1.5));
    push(&mut st, &cfg, 4, None);
    assert!(!st.early_stop_due(&cfg), "a record without a held-out loss");
    push(&mut st, &cfg, 5, Some(1.5));
    assert!(
        !st.early_stop_due(&cfg),
        "an equal loss is one record without improvement"
    );
    push(&mut st, &cfg, 6, Some(f64::NAN));
    assert!(st.early_stop_due(&cfg), "two records without improvement");
    let best = st.best.as_ref().unwrap();
    assert_eq!((best.step, best.loss), (3, 1.5));
    assert_eq!(best.model.layers[0].b[0], 3.0, "the weights of record 3");

    st.position.completed = 6;
    assert_eq!(st.finish_early_stop(&cfg), (Some(6), Some(3)));
    assert_eq!(st.model.layers[0].b[0], 3.0, "record 3's weights restored");

    // Patience running out at the last epoch is not an early stop.
    let mut st = TrainState::new(&cfg).unwrap();
    for (step, loss) in [(1, 1.0), (2, 2.0), (3, 2.0)] {
        push(&mut st, &cfg, step, Some(loss));
    }
    st.position.completed = 10;
    assert_eq!(st.finish_early_stop(&cfg), (None, Some(1)));

    // The best record is the last: nothing to restore.
    let mut st = TrainState::new(&cfg).unwrap();
    push(&mut st, &cfg, 1, Some(1.0));
    push(&mut st, &cfg, 2, Some(0.5));
    st.position.completed = 10;
    assert_eq!(st.finish_early_stop(&cfg), (None, None));
    assert_eq!(st.model.layers[0].b[0], 2.0);

    // Without --early-stop nothing is copied and nothing stops.
    let off = config(mini_batch(10), EngineKind::Naive, None);
    let mut st = TrainState::new(&off).unwrap();
    for step in 1..5 {
        push(&mut st, &off, step, Some(step as f64));
    }
    assert!(st.best.is_none() && !st.early_stop_due(&off));
    assert_eq!(st.finish_early_stop(&off), (None, None));
}

/// Mini-batch, through the gathered path (blas) and a resident trainer
/// (sparse): the run stops `patience` epochs after its best, and returns
/// exactly the weights a run of that many epochs ends with.
#[test]
fn stops_after_patience_and_restores_the_best_epoch_bit_for_bit() {
    let (train_set, heldout) = data();
    for engine in [EngineKind::Blas, EngineKind::Sparse] {
        let cfg = config(mini_batch(30), engine, Some(2));
        let out = train(&cfg, &train_set, Some(&heldout), &mut Silent).unwrap();
        let at = out.early_stopped_at.expect("stops before epoch 30");
        let best = out.restored_step.expect("restores an earlier epoch");
        assert!(
            best > 2,
            "{engine:?}: the held-out loss falls for a few epochs first"
        );
        assert_eq!(at, best + 2, "{engine:?}: two epochs without improvement");
        assert_eq!(out.records.len(), at);
        assert_eq!(out.steps, at * 400usize.div_ceil(32));
        assert!(!out.stopped);
        let losses: Vec<f64> = out
            .records
            .iter()
            .map(|r| r.heldout_loss.unwrap())
            .collect();
        let lowest = losses[best - 1];
        assert!(
            losses
                .iter()
                .enumerate()
                .all(|(i, &l)| l > lowest || i == best - 1),
            "{engine:?}: epoch {best} has the strictly lowest held-out loss: {losses:?}"
        );

        let short = config(mini_batch(best), engine, None);
        let plain = train(&short, &train_set, Some(&heldout), &mut Silent).unwrap();
        assert_eq!(
            bits(&out.model),
            bits(&plain.model),
            "{engine:?}: the restored weights are epoch {best}'s"
        );
        assert_eq!((plain.early_stopped_at, plain.restored_step), (None, None));
    }
}

/// Full batch counts records (every `log_every` iterations); record `r`'s
/// held-out loss is of the weights after iteration `r`, i.e. after `r + 1`
/// steps. Through the generic path (blas) and the resident trainer
/// (sparse), which writes its weights back at each record.
#[test]
fn full_batch_counts_records_and_restores_the_weights_they_scored() {
    let (train_set, heldout) = data();
    for engine in [EngineKind::Blas, EngineKind::Sparse] {
        let cfg = config(Schedule::FullBatch { iterations: 300 }, engine, Some(3));
        let out = train(&cfg, &train_set, Some(&heldout), &mut Silent).unwrap();
        let at = out.early_stopped_at.expect("stops before iteration 300");
        let best = out.restored_step.expect("restores an earlier record");
        assert!(
            best > 2 * cfg.log_every,
            "{engine:?}: the held-out loss falls for a few records first"
        );
        assert_eq!(
            at,
            best + 3 * cfg.log_every,
            "{engine:?}: three records later"
        );
        assert_eq!(out.steps, at + 1);
        let short = config(
            Schedule::FullBatch {
                iterations: best + 1,
            },
            engine,
            None,
        );
        let plain = train(&short, &train_set, Some(&heldout), &mut Silent).unwrap();
        assert_eq!(bits(&out.model), bits(&plain.model), "{engine:?}");
    }
}

/// Full batch on the sparse engine's resident trainer, stopped between two
/// records (its weights then written back only because the observer asks),
/// saved and resumed: the same records and bits as the run that was not
/// stopped.
#[test]
fn a_full_batch_run_stopped_between_records_resumes_to_the_same_bits() {
    let (train_set, heldout) = data();
    let cfg = config(
        Schedule::FullBatch { iterations: 40 },
        EngineKind::Sparse,
        None,
    );
    let full = train(&cfg, &train_set, Some(&heldout), &mut Silent).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt.npz");
    let identity = RunIdentity::of(0.8, &train_set);
    for stop_at in [7, 11, 40] {
        let mut stop = StopAt {
            at: stop_at,
            state: None,
        };
        let first = train(&cfg, &train_set, Some(&heldout), &mut stop).unwrap();
        assert_eq!(first.stopped, stop_at < 40);
        let state = stop.state.expect("stopped");
        assert_eq!(state.position.completed, stop_at);
        checkpoint::save(&path, &cfg, None, &identity, &state).unwrap();
        let loaded = Checkpoint::load(&path).unwrap().into_state(&cfg).unwrap();
        assert_eq!(bits(&loaded.model), bits(&state.model));
        let resumed = train_from(&cfg, loaded, &train_set, Some(&heldout), &mut Silent).unwrap();
        assert_eq!(resumed.steps, full.steps, "after step {stop_at}");
        assert_eq!(
            resumed.records,
            full.records_without_seconds(&resumed),
            "after step {stop_at}"
        );
        assert_eq!(
            bits(&resumed.model),
            bits(&full.model),
            "after step {stop_at}"
        );
    }
}

/// Stops training once `at` steps are done, keeping the state there.
struct StopAt {
    at: usize,
    state: Option<TrainState>,
}

impl Observer for StopAt {
    fn after_step(&mut self, view: &mut StepView) -> Control {
        if view.position().steps == self.at {
            self.state = Some(view.state().clone());
            return Control::Stop;
        }
        Control::Continue
    }
}

/// Stopped anywhere (before the best epoch, between it and the stop, at
/// the stop itself), saved, loaded and continued, a run ends as the
/// uninterrupted one: same stop, same restored epoch, same bits.
#[test]
fn a_resumed_run_stops_at_the_same_epoch_with_the_same_weights() {
    let (train_set, heldout) = data();
    let batches = 400usize.div_ceil(32);
    for engine in [EngineKind::Blas, EngineKind::Sparse] {
        let cfg = config(mini_batch(30), engine, Some(3));
        let full = train(&cfg, &train_set, Some(&heldout), &mut Silent).unwrap();
        let at = full.early_stopped_at.expect("stops early");
        let best = full.restored_step.expect("restores");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.ckpt.npz");
        let identity = RunIdentity::of(0.8, &train_set);
        let stops = [
            best * batches - 5,
            best * batches,
            (best + 1) * batches + 3,
            at * batches,
        ];
        for stop_at in stops {
            let mut stop = StopAt {
                at: stop_at,
                state: None,
            };
            let first = train(&cfg, &train_set, Some(&heldout), &mut stop).unwrap();
            assert!(first.stopped);
            assert_eq!((first.early_stopped_at, first.restored_step), (None, None));
            let state = stop.state.expect("stopped");
            checkpoint::save(&path, &cfg, None, &identity, &state).unwrap();
            let ckpt = Checkpoint::load(&path).unwrap();
            ckpt.check_matches(&cfg, &identity).unwrap();
            let loaded = ckpt.into_state(&cfg).unwrap();
            match (&loaded.best, &state.best) {
                (Some(a), Some(b)) => {
                    assert_eq!((a.step, a.loss.to_bits()), (b.step, b.loss.to_bits()));
                    assert_eq!(bits(&a.model), bits(&b.model));
                }
                (a, b) => assert!(a.is_none() && b.is_none(), "{stop_at}: best kept"),
            }
            let resumed =
                train_from(&cfg, loaded, &train_set, Some(&heldout), &mut Silent).unwrap();
            let what = format!("{engine:?} resumed after step {stop_at}");
            assert_eq!(resumed.early_stopped_at, Some(at), "{what}");
            assert_eq!(resumed.restored_step, Some(best), "{what}");
            assert_eq!(resumed.steps, full.steps, "{what}");
            assert_eq!(
                resumed.records,
                full.records_without_seconds(&resumed),
                "{what}"
            );
            assert_eq!(bits(&resumed.model), bits(&full.model), "{what}");
        }
    }
}

impl TrainOutcome {
    /// This run's records with `other`'s timings, to compare the rest.
    fn records_without_seconds(&self, other: &TrainOutcome) -> Vec<Record> {
        self.records
            .iter()
            .zip(&other.records)
            .map(|(r, o)| Record {
                seconds: o.seconds,
                ..r.clone()
            })
            .collect()
    }
}

#[test]
fn a_checkpoint_resumes_only_with_the_same_patience() {
    let (train_set, _) = data();
    let cfg = config(mini_batch(3), EngineKind::Blas, Some(2));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt.npz");
    let identity = RunIdentity::of(0.8, &train_set);
    checkpoint::save(
        &path,
        &cfg,
        None,
        &identity,
        &TrainState::new(&cfg).unwrap(),
    )
    .unwrap();
    let ckpt = Checkpoint::load(&path).unwrap();
    let off = config(mini_batch(3), EngineKind::Blas, None);
    let e = ckpt.check_matches(&off, &identity).unwrap_err().to_string();
    assert!(
        e.contains("--early-stop 2, this run has --early-stop (unset)"),
        "{e}"
    );
}
