//! Running configurations in parallel over one loaded data set.
//!
//! `jobs` worker threads each take the next configuration and run it in
//! their own rayon pool of `threads_per_run` threads (1 by default: one run
//! per core, no oversubscription). A run is [`train::run`], the function a
//! lone `mnist-blas train` calls. Sharded gradients are reduced in a fixed
//! order, so the weights do not depend on the thread count: a sweep run
//! equals a lone `train` run.
//!
//! Stopping: when `stop` is raised (a signal) or a result cannot be
//! written, no further run starts, and the runs in progress stop after
//! their current step. A run stopped before its last step is dropped, not
//! recorded: a re-run of the sweep runs it again from the start.

use super::results::{CurveRow, RunResult, FAILED, OK};
use super::{RunSpec, SweepError};
use crate::data::Dataset;
use crate::model::Mlp;
use crate::train::{self, Control, Observer, RunOptions, StepView};
use std::borrow::Cow;
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

/// How [`run_all`] ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Runs handed to `on_done`.
    pub finished: usize,
    /// Runs stopped before their last step, or finished after a write
    /// error: not handed to `on_done`, not recorded.
    pub unrecorded: usize,
    /// Whether `stop` was raised: some runs may not have started.
    pub stopped: bool,
}

/// Asks training to stop after the current step once either flag is up.
struct StopWhen<'a> {
    flags: [&'a AtomicBool; 2],
    /// Epochs (mini-batch) or iterations (full-batch) of the whole run.
    units: usize,
    /// Stopped before the last unit: the run is not complete.
    cut: bool,
}

impl Observer for StopWhen<'_> {
    fn after_step(&mut self, state: &mut StepView) -> Control {
        if self.flags.iter().any(|f| f.load(Ordering::SeqCst)) {
            self.cut = state.position().completed < self.units;
            return Control::Stop;
        }
        Control::Continue
    }
}

/// The rows every run of a sweep reads, loaded once: `--data`'s, and
/// `--val-data`'s when the configurations hold out a file.
#[derive(Debug, Clone, Copy)]
pub struct SweepData<'a> {
    pub all: &'a Dataset,
    pub val: Option<&'a Dataset>,
}

/// Run one configuration on `data` in the current rayon pool: the
/// [`train::run`] a lone `train` with the same flags runs. `None` if a flag
/// of `stop` stopped it before its last step.
pub fn run_one(
    spec: &RunSpec,
    data: SweepData,
    load_seconds: f64,
    stop: [&AtomicBool; 2],
) -> Option<Finished> {
    let units = spec.plan.config.schedule.units();
    let mut observer = StopWhen {
        flags: stop,
        units,
        cut: false,
    };
    let options = RunOptions {
        // Only a configuration with --val-data holds its rows out.
        val: spec.plan.val_data.as_ref().and(data.val).map(Cow::Borrowed),
        ..RunOptions::default()
    };
    let outcome = train::run(
        &spec.plan,
        Cow::Borrowed(data.all),
        load_seconds,
        options,
        &mut observer,
    );
    if observer.cut {
        return None;
    }
    let run = match outcome {
        Ok(run) => run,
        Err(e) => return Some(failed(spec, 0, &e.to_string())),
    };
    let r = &run.report;
    // No held-out loss (no held-out rows) is not a failure.
    let finite = r.train_loss.is_finite() && r.heldout_loss.is_none_or(f64::is_finite);
    let (status, error) = if finite {
        (OK, "")
    } else {
        (FAILED, "the final loss is not finite")
    };
    Some(Finished {
        index: 0,
        result: RunResult::new(spec, "sweep", status, error, Some(r)),
        curve: run.records,
        model: Some(run.model),
    })
}

fn failed(spec: &RunSpec, index: usize, reason: &str) -> Finished {
    Finished {
        index,
        result: RunResult::new(spec, "sweep", FAILED, reason, None),
        curve: Vec::new(),
        model: None,
    }
}

/// The shared state of the workers of one [`run_all`].
struct Workers<'a> {
    specs: &'a [&'a RunSpec],
    data: SweepData<'a>,
    load_seconds: f64,
    stop: &'a AtomicBool,
    /// Raised when `on_done` fails: results can no longer be written.
    halt: AtomicBool,
    next: AtomicUsize,
    outcome: Mutex<Outcome>,
    first_error: Mutex<Option<SweepError>>,
    on_done: &'a (dyn Fn(Finished) -> Result<(), SweepError> + Sync),
}

impl Workers<'_> {
    /// One worker: take the next spec until none is left or a flag is up.
    fn work(&self, pool: &rayon::ThreadPool) {
        let flags = [self.stop, &self.halt];
        while !flags.iter().any(|f| f.load(Ordering::SeqCst)) {
            let i = self.next.fetch_add(1, Ordering::SeqCst);
            let Some(spec) = self.specs.get(i) else {
                return;
            };
            let done = catch_unwind(AssertUnwindSafe(|| {
                pool.install(|| run_one(spec, self.data, self.load_seconds, flags))
            }))
            .unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                Some(failed(spec, i, &format!("panicked: {what}")))
            });
            self.report(i, done);
        }
    }

    /// Hand a finished run to `on_done`, one at a time; after a write
    /// error, later runs are dropped.
    fn report(&self, index: usize, done: Option<Finished>) {
        let mut outcome = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
        let Some(mut done) = done.filter(|_| !self.halt.load(Ordering::SeqCst)) else {
            outcome.unrecorded += 1;
            return;
        };
        done.index = index;
        match (self.on_done)(done) {
            Ok(()) => outcome.finished += 1,
            Err(e) => {
                self.halt.store(true, Ordering::SeqCst);
                self.first_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(e);
            }
        }
    }
}

/// Run `specs` on `jobs` workers, calling `on_done` as each finishes (from
/// the worker's thread, one call at a time). A failed run is reported like
/// any other. When `stop` is raised, no further run starts and the runs in
/// progress stop after their step, unrecorded. An error from `on_done`
/// (results cannot be written) stops the sweep the same way and is returned.
pub fn run_all(
    specs: &[&RunSpec],
    data: SweepData,
    load_seconds: f64,
    (jobs, threads_per_run): (usize, usize),
    stop: &AtomicBool,
    on_done: &(dyn Fn(Finished) -> Result<(), SweepError> + Sync),
) -> Result<Outcome, SweepError> {
    let jobs = jobs.clamp(1, specs.len().max(1));
    let pools = (0..jobs)
        .map(|_| crate::threads::pool(threads_per_run))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SweepError::Threads(format!("the thread pool: {e}")))?;
    let workers = Workers {
        specs,
        data,
        load_seconds,
        stop,
        halt: AtomicBool::new(false),
        next: AtomicUsize::new(0),
        outcome: Mutex::new(Outcome::default()),
        first_error: Mutex::new(None),
        on_done,
    };
    std::thread::scope(|scope| {
        for pool in &pools {
            let workers = &workers;
            scope.spawn(move || workers.work(pool));
        }
    });
    if let Some(e) = workers
        .first_error
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
    {
        return Err(e);
    }
    let mut outcome = workers
        .outcome
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    outcome.stopped = stop.load(Ordering::SeqCst);
    Ok(outcome)
}
