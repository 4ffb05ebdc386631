//! The halves trainer's helper thread: it runs the upper half of `w1`
//! ([`Half`]) on a core of its own, and this file is the protocol the two
//! threads follow.
//!
//! Each step is one numbered *cycle*. The caller posts the cycle's batch and
//! rule ([`Helper::post`]); the helper claims the cycle, publishes the upper
//! part of each row's first-layer sum a block of [`BLOCK`] rows at a time,
//! then adds each block of `dz1`s the caller publishes to its gradient, and
//! updates its half ([`run_cycle`]). Every hand-over is a store of a
//! progress counter (cycle and rows done) after the data it covers, and a
//! load of it before the data is read; the blocks of sums and `dz1`s sit
//! behind locks that are never contended.
//!
//! If the helper has not claimed a cycle by the time the caller needs its
//! sums, the caller claims it instead ([`Source::Taken`]) and runs the
//! upper half itself, so a step does not wait for a helper whose core is
//! away. The helper spins between steps while they keep coming ([`SPIN`]),
//! then sleeps until the next post unparks it. The test hooks (`Hooks`, at
//! the end) make the helper leave cycles to its caller on purpose.

use super::{Half, Side};
use crate::engine::sparse::layout::{Chunk, ZERO};
use crate::engine::sparse::row_set::RowSet;
use crate::engine::SHARD_ROWS;
use crate::optim::Rule;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long the helper spins for the next step before it sleeps.
const SPIN: Duration = Duration::from_micros(200);

/// Rows per block exchanged between the two threads.
pub(super) const BLOCK: usize = 8;

/// A step's batch and rule, as posted to the helper, and the next step's
/// rows if known.
#[derive(Default)]
struct Post {
    batch: Vec<usize>,
    next: Vec<usize>,
    rule: Option<Rule>,
}

/// What the two threads share. The progress counters carry a cycle and a
/// row count ([`progress`]), so one store says how far which cycle is.
struct Shared {
    /// The last cycle posted, the last one taken (by either thread), the
    /// last one finished.
    posted: AtomicU64,
    claimed: AtomicU64,
    finished: AtomicU64,
    /// Rows whose upper sums, and rows whose `dz1`, are published.
    sums_ready: AtomicU64,
    dz1_ready: AtomicU64,
    /// Whether every upper update so far left the weights finite.
    finite: AtomicBool,
    /// The helper is (about to be) parked and needs an unpark.
    sleeping: AtomicBool,
    exit: AtomicBool,
    /// Cycle `k`'s post is in `posts[k % 2]`: the helper may still read the
    /// previous one while the next is written.
    posts: [Mutex<Post>; 2],
    /// The upper half, held by whichever thread runs a cycle. Locked by one
    /// thread at a time by the cycle protocol; the lock makes that safe.
    half: Mutex<Half>,
    /// The upper sums and the `dz1`s, a block of rows each. A block is
    /// written before its progress store and read after it, and not written
    /// again until a later cycle: so these locks are never contended.
    sums: Vec<Mutex<Vec<Chunk>>>,
    dz1: Vec<Mutex<Vec<Chunk>>>,
    #[cfg(test)]
    hooks: Hooks,
}

/// A progress counter's value: `rows` done of `cycle`.
fn progress(cycle: u64, rows: usize) -> u64 {
    (cycle << 16) | rows as u64
}
const _: () = assert!(SHARD_ROWS < 1 << 16);

/// Where this thread gets a cycle's upper sums.
pub(super) enum Source<'a> {
    /// From the helper, block by block.
    Helper,
    /// The helper had not taken the cycle: this thread has it.
    Taken(MutexGuard<'a, Half>),
}

/// The helper thread that runs the upper half.
pub(super) struct Helper {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in the other thread's half poisons a lock: pass it on.
    m.lock().expect("the other half panicked")
}

impl Helper {
    /// Start the helper thread, with the upper half and the rows.
    pub(super) fn spawn(half: Half, rows: Arc<RowSet>) -> std::io::Result<Helper> {
        let blocks = || {
            (0..SHARD_ROWS.div_ceil(BLOCK))
                .map(|_| Mutex::new(vec![ZERO; BLOCK * half.chunks]))
                .collect()
        };
        let shared = Arc::new(Shared {
            posted: AtomicU64::new(0),
            claimed: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            sums_ready: AtomicU64::new(0),
            dz1_ready: AtomicU64::new(0),
            finite: AtomicBool::new(true),
            sleeping: AtomicBool::new(false),
            exit: AtomicBool::new(false),
            posts: Default::default(),
            sums: blocks(),
            dz1: blocks(),
            half: Mutex::new(half),
            #[cfg(test)]
            hooks: Hooks::default(),
        });
        let theirs = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name("mnist-blas-upper-half".into())
            .spawn(move || helper_loop(&rows, &theirs))?;
        Ok(Helper {
            shared,
            thread: Some(thread),
        })
    }

    /// Panic if the helper thread has stopped (it panicked: its message is
    /// already on stderr), rather than wait for it forever.
    fn check_alive(&self) {
        if self.thread.as_ref().is_none_or(|t| t.is_finished()) {
            panic!("the upper-half helper thread stopped");
        }
    }

    /// Post cycle `cycle`: its batch and rule, and the next step's rows.
    pub(super) fn post(&self, cycle: u64, batch: &[usize], next: &[usize], rule: &Rule) {
        {
            let mut post = lock(&self.shared.posts[cycle as usize % 2]);
            post.batch.clear();
            post.batch.extend_from_slice(batch);
            post.next.clear();
            post.next.extend_from_slice(next);
            post.rule = Some(*rule);
        }
        self.shared.posted.store(cycle, Ordering::SeqCst);
        if self.shared.sleeping.load(Ordering::SeqCst) {
            if let Some(t) = &self.thread {
                t.thread().unpark();
            }
        }
    }

    /// Wait for cycle `cycle`'s first block of upper sums; or, if the
    /// helper finished the cycle before and has not taken this one, take it.
    pub(super) fn first_sums(&self, cycle: u64) -> Source<'_> {
        let shared = &*self.shared;
        loop {
            if shared.sums_ready.load(Ordering::Acquire) > progress(cycle, 0) {
                return Source::Helper;
            }
            if shared.finished.load(Ordering::Acquire) == cycle - 1
                && shared
                    .claimed
                    .compare_exchange(cycle - 1, cycle, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                #[cfg(test)]
                shared.hooks.taken.fetch_add(1, Ordering::Relaxed);
                return Source::Taken(lock(&shared.half));
            }
            self.check_alive();
            std::hint::spin_loop();
        }
    }

    /// Block `b` of cycle `cycle`'s upper sums, once rows up to `end` are
    /// published.
    pub(super) fn sums(&self, cycle: u64, b: usize, end: usize) -> MutexGuard<'_, Vec<Chunk>> {
        while self.shared.sums_ready.load(Ordering::Acquire) < progress(cycle, end) {
            self.check_alive();
            std::hint::spin_loop();
        }
        lock(&self.shared.sums[b])
    }

    /// Publish block `b` of cycle `cycle`'s `dz1`s (rows up to `end`).
    pub(super) fn publish_dz1(&self, cycle: u64, b: usize, end: usize, dz1: &[Chunk]) {
        lock(&self.shared.dz1[b])[..dz1.len()].copy_from_slice(dz1);
        self.shared
            .dz1_ready
            .store(progress(cycle, end), Ordering::Release);
    }

    /// Whether every upper update finished so far left the weights finite.
    pub(super) fn finite(&self) -> bool {
        self.shared.finite.load(Ordering::Acquire)
    }

    /// Finish cycle `cycle`, which this thread took ([`Source::Taken`]);
    /// `finite` says whether its upper update left the weights finite.
    pub(super) fn finish_taken(&self, cycle: u64, finite: bool) {
        if !finite {
            self.shared.finite.store(false, Ordering::Release);
        }
        self.shared.finished.store(cycle, Ordering::Release);
    }

    /// The upper half, once cycle `cycle` is finished.
    pub(super) fn finished(&self, cycle: u64) -> MutexGuard<'_, Half> {
        while self.shared.finished.load(Ordering::Acquire) < cycle {
            self.check_alive();
            std::hint::spin_loop();
        }
        lock(&self.shared.half)
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        self.shared.exit.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            // A helper that panicked has already said why on stderr.
            let _ = t.join();
        }
    }
}

/// The helper thread: cycle after cycle until told to exit.
fn helper_loop(rows: &RowSet, shared: &Shared) {
    let mut batch = Vec::new();
    let mut next = Vec::new();
    loop {
        // The next cycle nobody has taken: wait for its post, spinning
        // while steps keep coming, then sleeping until unparked.
        let cycle = shared.claimed.load(Ordering::Acquire) + 1;
        let started = Instant::now();
        let mut spins = 0u32;
        while shared.posted.load(Ordering::Acquire) < cycle {
            if shared.exit.load(Ordering::Acquire) {
                return;
            }
            spins = spins.wrapping_add(1);
            // The clock only now and then: reading it is a call.
            if !spins.is_multiple_of(256) || started.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            shared.sleeping.store(true, Ordering::SeqCst);
            if shared.posted.load(Ordering::SeqCst) < cycle && !shared.exit.load(Ordering::SeqCst) {
                thread::park();
            }
            shared.sleeping.store(false, Ordering::SeqCst);
        }
        let claim =
            shared
                .claimed
                .compare_exchange(cycle - 1, cycle, Ordering::AcqRel, Ordering::Acquire);
        if claim.is_err() {
            // This thread's caller took it.
            continue;
        }
        // Tests can have the helper leave the cycle to its caller.
        #[cfg(test)]
        match leave_to_caller(shared, cycle) {
            Some(Left::Taken) => continue,
            Some(Left::Exit) => return,
            None => {}
        }
        let mut half = lock(&shared.half);
        let rule = {
            let post = lock(&shared.posts[cycle as usize % 2]);
            batch.clear();
            batch.extend_from_slice(&post.batch);
            next.clear();
            next.extend_from_slice(&post.next);
            post.rule.expect("a posted cycle has a rule")
        };
        if !run_cycle(rows, shared, &mut half, cycle, &batch, &next, &rule) {
            return;
        }
    }
}

/// The helper's part of cycle `cycle`: the upper sums, published block by
/// block; the gradient, block by block as the `dz1`s arrive; the update.
/// `next` are the next step's rows, if known. `false` if told to exit while
/// waiting.
#[allow(
    clippy::too_many_arguments,
    reason = "a cycle's inputs, each used once"
)]
fn run_cycle(
    rows: &RowSet,
    shared: &Shared,
    half: &mut Half,
    cycle: u64,
    batch: &[usize],
    next: &[usize],
    rule: &Rule,
) -> bool {
    for (b, block) in batch.chunks(BLOCK).enumerate() {
        let start = b * BLOCK;
        let end = start + block.len();
        let mut out = lock(&shared.sums[b]);
        half.sums(rows, batch, start..end, &mut out);
        drop(out);
        shared
            .sums_ready
            .store(progress(cycle, end), Ordering::Release);
    }
    // The next step's rows come from memory while this thread waits for the
    // first `dz1`s.
    for &r in next {
        Side::Upper.prefetch(rows, r);
    }
    for (b, block) in batch.chunks(BLOCK).enumerate() {
        let end = b * BLOCK + block.len();
        while shared.dz1_ready.load(Ordering::Acquire) < progress(cycle, end) {
            if shared.exit.load(Ordering::Acquire) {
                return false;
            }
            std::hint::spin_loop();
        }
        half.gradient(rows, block, &lock(&shared.dz1[b]));
    }
    if !half.update(rule, batch.len()) {
        shared.finite.store(false, Ordering::Release);
    }
    shared.finished.store(cycle, Ordering::Release);
    true
}

/// Test hooks: the helper can be told to leave the odd cycles to its
/// caller (as when its core is away), and the caller counts the cycles it
/// takes.
#[cfg(test)]
#[derive(Default)]
pub(super) struct Hooks {
    leave_odd: AtomicBool,
    taken: AtomicU64,
}

#[cfg(test)]
impl Hooks {
    /// Whether the helper leaves the odd cycles to its caller.
    pub(super) fn leave_odd_cycles(&self, leave: bool) {
        self.leave_odd.store(leave, Ordering::Release);
    }

    /// The cycles the caller has taken.
    pub(super) fn taken(&self) -> u64 {
        self.taken.load(Ordering::Acquire)
    }
}

#[cfg(test)]
impl Helper {
    pub(super) fn hooks(&self) -> &Hooks {
        &self.shared.hooks
    }
}

/// What became of a cycle the helper left to its caller.
#[cfg(test)]
enum Left {
    Taken,
    Exit,
}

/// If told to, the helper gives back its claim on an odd cycle and waits
/// for the caller to take it; `None` otherwise.
#[cfg(test)]
fn leave_to_caller(shared: &Shared, cycle: u64) -> Option<Left> {
    if cycle.is_multiple_of(2) || !shared.hooks.leave_odd.load(Ordering::Acquire) {
        return None;
    }
    shared.claimed.store(cycle - 1, Ordering::Release);
    while shared.claimed.load(Ordering::Acquire) < cycle {
        if shared.exit.load(Ordering::Acquire) {
            return Some(Left::Exit);
        }
        std::hint::spin_loop();
    }
    Some(Left::Taken)
}
