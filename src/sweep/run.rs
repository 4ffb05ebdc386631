//! Running configurations in parallel over one loaded data set.
//!
//! `jobs` worker threads each take the next configuration and run it in
//! their own rayon pool of `threads_per_run` threads (1 by default: one run
//! per core, no oversubscription). A run is [`train::run`], the function a
//! lone `mnist-blas train` calls. Sharded gradients are reduced in a fixed
//! order, so the weights do not depend on the thread count: a sweep run
//! equals a lone `train` run.

use super::results::{CurveRow, RunResult, FAILED, OK};
use super::{RunSpec, SweepError};
use crate::data::Dataset;
use crate::model::Mlp;
use crate::train::{self, RunOptions, Silent};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

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

/// Run one configuration on `all` in the current rayon pool: the
/// [`train::run`] a lone `train` with the same flags runs.
pub fn run_one(spec: &RunSpec, all: &Dataset, load_seconds: f64) -> Finished {
    let failed = |reason: String| Finished {
        index: 0,
        result: RunResult::new(spec, "sweep", FAILED, &reason, None),
        curve: Vec::new(),
        model: None,
    };
    let run = match train::run(
        &spec.plan,
        all,
        load_seconds,
        RunOptions::default(),
        &mut Silent,
    ) {
        Ok(run) => run,
        Err(e) => return failed(e.to_string()),
    };
    let r = &run.report;
    let (status, error) = if r.train_loss.is_finite() && r.heldout_loss.is_finite() {
        (OK, "")
    } else {
        (FAILED, "the final loss is not finite")
    };
    Finished {
        index: 0,
        result: RunResult::new(spec, "sweep", status, error, Some(r)),
        curve: run.records,
        model: Some(run.model),
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
                let mut done = catch_unwind(AssertUnwindSafe(|| {
                    pool.install(|| run_one(spec, all, load_seconds))
                }))
                .unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "unknown panic".into());
                    Finished {
                        index: i,
                        result: RunResult::new(
                            spec,
                            "sweep",
                            FAILED,
                            &format!("panicked: {what}"),
                            None,
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
