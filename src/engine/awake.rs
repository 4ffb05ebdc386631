//! Keeping a pool thread awake through a short serial stretch of a
//! trainer's step, so that it is ready for the parallel work after it.
//!
//! On this VM a rayon thread that found no work slept within tens of
//! microseconds, and waking it was slow: the host counted the wait as
//! stolen time (1.3-2.2 s of a 4.5 s two-thread run of blas 784-512-10),
//! the wake-up call alone took a tenth of the caller's step, and the other
//! core sat waiting for the woken thread's share. Every spin here is
//! bounded ([`STAY_AWAKE`]), so a thread that ends up running one in its
//! caller's place (a pool of one thread, or a caller waiting on a task of
//! its own) loses at most that long, and nothing can deadlock.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// `serial()` on this thread, and beside it `other()` on another pool
/// thread if one takes it, which then spins until `serial` ends; with one
/// thread, `other` runs after `serial`, and does not spin.
pub(crate) fn beside_awake<R: Send>(
    serial: impl FnOnce() -> R + Send,
    other: impl FnOnce() + Send,
) -> R {
    let done = AtomicBool::new(false);
    let (r, ()) = rayon::join(
        || {
            let r = serial();
            done.store(true, Ordering::Release);
            r
        },
        || {
            other();
            let start = Instant::now();
            while !done.load(Ordering::Acquire) && start.elapsed() < STAY_AWAKE {
                std::hint::spin_loop();
            }
        },
    );
    r
}

/// The tasks of one parallel phase, counted as they start and end, so that
/// a thread with no task left to take keeps its core awake while another
/// thread's task runs, rather than sleeping: whichever thread finishes first
/// is then awake for the step's next phase.
pub(crate) struct Running {
    tasks: usize,
    started: AtomicUsize,
    finished: AtomicUsize,
}

impl Running {
    pub(crate) fn new(tasks: usize) -> Running {
        Running {
            tasks,
            started: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
        }
    }

    /// `f()`, then, once every task has started, a spin while the others
    /// run on. They run on other threads (a task starts no other), so a
    /// task never waits for itself.
    pub(crate) fn task<R>(&self, f: impl FnOnce() -> R) -> R {
        self.started.fetch_add(1, Ordering::AcqRel);
        let r = f();
        self.finished.fetch_add(1, Ordering::AcqRel);
        let start = Instant::now();
        while self.started.load(Ordering::Acquire) == self.tasks
            && self.finished.load(Ordering::Acquire) < self.tasks
            && start.elapsed() < STAY_AWAKE
        {
            std::hint::spin_loop();
        }
        r
    }
}

/// How long a thread spins at most.
const STAY_AWAKE: Duration = Duration::from_millis(1);
