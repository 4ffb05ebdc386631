//! Running configurations in parallel over one loaded data set.
//!
//! `jobs` worker threads each take the next configuration and run it in
//! their own rayon pool of `threads_per_run` threads (1 by default: one run
//! per core, no oversubscription). A run does what `mnist-blas train` does,
//! step for step: seeded split, `train::train`, `metrics::evaluate` on both
//! parts. Sharded gradients are reduced in a fixed order, so the weights
//! do not depend on the thread count: a sweep run equals a lone `train` run.

use super::results::{best_epoch, CurveRow, Measured, RunResult, FAILED, OK};
use super::{RunSpec, SweepError};
use crate::data::Dataset;
use crate::engine::BatchStats;
use crate::metrics::evaluate;
use crate::model::Mlp;
use crate::train::{self, Observer};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// A finished (or failed) run.
#[derive(Debug)]
pub struct Finished {
    /// Index into the slice of specs given to [`run_all`].
    pub index: usize,
    pub result: RunResult,
    pub curve: Vec<CurveRow>,
    /// The trained weights (ok runs).
    pub model: Option<Mlp>,
}

/// Counts the training rows processed, like `train`'s progress display
/// (its `samples` and `samples_per_second`).
struct RowCounter(usize);

impl Observer for RowCounter {
    fn on_step(&mut self, _done: usize, _total: usize, stats: &BatchStats) {
        self.0 += stats.rows;
    }
}

/// Run one configuration on `all` in the current rayon pool.
pub fn run_one(spec: &RunSpec, all: &Dataset, load_seconds: f64, threads: usize) -> Finished {
    let started = Instant::now();
    let r = &spec.resolved;
    let c = &r.config;
    let mut m = Measured::default();
    m.set("threads", threads);
    m.set("matmul_backend", crate::threads::matmul_backend());
    m.set("load_seconds", load_seconds);
    let fail = |m: &mut Measured, reason: String| {
        m.set("seconds", started.elapsed().as_secs_f64());
        Finished {
            index: 0,
            result: RunResult::new(spec, "sweep", FAILED, &reason, m),
            curve: Vec::new(),
            model: None,
        }
    };
    let (train_set, heldout) = train::split(all, r.split, c.seed);
    if train_set.is_empty() {
        let reason = format!(
            "--split {} leaves no training rows out of {}",
            r.split,
            all.len()
        );
        return fail(&mut m, reason);
    }
    let mut counter = RowCounter(0);
    // As `train`: held-out curves unless the run asked for one check at the
    // end (the notebook preset does).
    let scored = r.heldout_eval.during_training(&heldout);
    let outcome = match train::train(c, &train_set, scored, &mut counter) {
        Ok(o) => o,
        Err(e) => return fail(&mut m, e.to_string()),
    };
    // Only now, so a failed row has the same (empty) measurements whether
    // the sweep ran it or `--collect` read it from an emitted command.
    m.set(
        "heldout_eval",
        serde_json::to_value(r.heldout_eval).expect("an enum name"),
    );
    m.set("train_rows", train_set.len());
    m.set("heldout_rows", heldout.len());
    let eval_start = Instant::now();
    let engine = c.engine.build();
    let on_train = evaluate(engine.as_ref(), &outcome.model, &train_set);
    let on_heldout = evaluate(engine.as_ref(), &outcome.model, &heldout);
    let curve: Vec<CurveRow> = outcome.records.clone();
    m.set("steps", outcome.steps);
    m.set("samples", counter.0);
    m.set(
        "samples_per_second",
        counter.0 as f64 / outcome.seconds.max(1e-9),
    );
    m.set("train_accuracy", on_train.stats.accuracy());
    m.set("train_loss", on_train.stats.mean_loss());
    m.set("heldout_accuracy", on_heldout.stats.accuracy());
    m.set("heldout_loss", on_heldout.stats.mean_loss());
    m.set("heldout_correct", on_heldout.stats.correct);
    if let Some((step, acc)) = best_epoch(&curve) {
        m.set("best_epoch", step);
        m.set("best_heldout_accuracy", acc);
    }
    m.set("train_seconds", outcome.seconds);
    m.set("eval_seconds", eval_start.elapsed().as_secs_f64());
    m.set("seconds", started.elapsed().as_secs_f64());
    let loss_ok =
        on_train.stats.mean_loss().is_finite() && on_heldout.stats.mean_loss().is_finite();
    let (status, error) = if loss_ok {
        (OK, String::new())
    } else {
        (FAILED, "the final loss is not finite".to_string())
    };
    Finished {
        index: 0,
        result: RunResult::new(spec, "sweep", status, &error, &m),
        curve,
        model: Some(outcome.model),
    }
}

/// Run `specs` on `jobs` workers, calling `on_done` as each finishes (from
/// the worker's thread, one call at a time). A failed run is reported like
/// any other; an error from `on_done` (results cannot be written) stops the
/// sweep after the runs in progress and is returned.
pub fn run_all(
    specs: &[&RunSpec],
    all: &Dataset,
    load_seconds: f64,
    jobs: usize,
    threads_per_run: usize,
    on_done: &(dyn Fn(Finished) -> Result<(), SweepError> + Sync),
) -> Result<(), SweepError> {
    let jobs = jobs.clamp(1, specs.len().max(1));
    let pools = (0..jobs)
        .map(|_| crate::threads::pool(threads_per_run))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SweepError::Threads(format!("the thread pool: {e}")))?;
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let first_error: Mutex<Option<SweepError>> = Mutex::new(None);
    let report = Mutex::new(());
    std::thread::scope(|scope| {
        for pool in &pools {
            scope.spawn(|| loop {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(spec) = specs.get(i) else { return };
                let threads = pool.current_num_threads();
                let started = Instant::now();
                let mut done = catch_unwind(AssertUnwindSafe(|| {
                    pool.install(|| run_one(spec, all, load_seconds, threads))
                }))
                .unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "unknown panic".into());
                    let mut m = Measured::default();
                    m.set("seconds", started.elapsed().as_secs_f64());
                    Finished {
                        index: i,
                        result: RunResult::new(
                            spec,
                            "sweep",
                            FAILED,
                            &format!("panicked: {what}"),
                            &m,
                        ),
                        curve: Vec::new(),
                        model: None,
                    }
                });
                done.index = i;
                let _one_at_a_time = report.lock().unwrap_or_else(|p| p.into_inner());
                if let Err(e) = on_done(done) {
                    stop.store(true, Ordering::SeqCst);
                    first_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(e);
                }
            });
        }
    });
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
