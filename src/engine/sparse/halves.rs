//! The sparse engine's trainer for batches of up to one shard (256 rows):
//! `w1` cut by pixel into two halves ([`PIXEL_SPLIT`]), each with its own
//! core.
//!
//! A step at batch 32 is a few microseconds of arithmetic, too short for a
//! thread pool's hand-off: two `rayon::join`s per step (the idle worker
//! waits in `sched_yield`) cost about a microsecond each. So the upper half
//! lives on a helper thread of its own, which spins while steps keep coming,
//! and the two threads meet once per step:
//!
//! - each half owns its rows of `w1`, their optimizer moments and their
//!   gradient, so none of those cache lines ever moves between cores;
//! - a step's update is applied at the start of the next step (pipelined):
//!   each half first adds the previous batch's `dw1` and updates its rows,
//!   then takes its part of this batch's first-layer sums; the only data
//!   exchanged are the upper part-sums and the previous batch's `dz1`s;
//! - this thread then adds the two parts (lower + upper, as every path of
//!   the engine does), runs the rest of the forward and backward passes row
//!   by row, and updates the small blocks.
//!
//! Each row's first-layer sum is the lower part plus the upper part, with or
//! without the helper, and every other sum runs in the one-thread order: so
//! one thread and two give the same bits (tests/sparse.rs). The generic path
//! sums a row in one pass, so it agrees with this one to rounding. With one
//! rayon thread (`--threads 1`) there is no helper: this thread runs both
//! halves itself.

use super::resident::{update_block, update_small};
use super::{
    add, axpy, backward_head, forward_from_sums, multiversion, partial_sum, pixel_table,
    prefetch_lines, slot, Chunk, LossSum, PixelValue, RowSet, Scratch, Weights, PIXEL_SPLIT,
    PREFETCH_AHEAD, ZERO,
};
use crate::data::FEATURES;
use crate::engine::{BatchStats, ResidentStep, ResidentTrainer};
use crate::model::Mlp;
use crate::train::{Optimizer, Rule};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long the helper spins for the next step before it sleeps.
const SPIN: Duration = Duration::from_micros(200);

/// Which of a row's non-zero pixels: below [`PIXEL_SPLIT`] or from it on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Lower,
    Upper,
}

impl Side {
    /// This side's part of a row's pixels and values.
    #[inline(always)]
    fn of(self, rows: &RowSet, r: usize) -> (&[u16], &[u8]) {
        let (index, value, split) = rows.row(r);
        match self {
            Side::Lower => (&index[..split], &value[..split]),
            Side::Upper => (&index[split..], &value[split..]),
        }
    }

    /// The chunks of `w1t` (and its moments and gradient) this side owns.
    fn chunks(self, chunks: usize) -> std::ops::Range<usize> {
        match self {
            Side::Lower => 0..PIXEL_SPLIT * chunks,
            Side::Upper => PIXEL_SPLIT * chunks..FEATURES * chunks,
        }
    }
}

/// One side's rows of `w1` (in full-size arrays indexed by pixel, of which
/// it touches only its own rows), their moments and gradient.
struct Half {
    side: Side,
    chunks: usize,
    w1t: Vec<Chunk>,
    m: Vec<Chunk>,
    v: Vec<Chunk>,
    g: Vec<Chunk>,
}

/// The previous step, whose update is still to apply: its rows and rule.
type Pending<'a> = Option<(&'a [usize], &'a Rule)>;

/// The mean gradient's scale for a step on `rows` rows, as the generic path
/// computes it.
fn mean_scale(rows: &[usize]) -> f32 {
    1.0 / rows.len() as f32
}

impl Half {
    fn new(side: Side, w: &Weights, m: &Weights, v: &Weights) -> Half {
        let own = |a: &Weights| {
            let mut out = vec![ZERO; a.w1t.len()];
            let range = side.chunks(a.chunks);
            out[range.clone()].copy_from_slice(&a.w1t[range]);
            out
        };
        Half {
            side,
            chunks: w.chunks,
            w1t: own(w),
            m: own(m),
            v: own(v),
            g: vec![ZERO; w.w1t.len()],
        }
    }

    /// Copy this side's rows into `w`, `m` and `v`.
    fn store(&self, w: &mut Weights, m: &mut Weights, v: &mut Weights) {
        let range = self.side.chunks(self.chunks);
        for (to, from) in [(w, &self.w1t), (m, &self.m), (v, &self.v)] {
            to.w1t[range.clone()].copy_from_slice(&from[range.clone()]);
        }
    }

    /// The previous step's `dw1` (rows `pending.batch`, their `dz1` in
    /// `dz1_rows`) and update of this side's rows, then this side's part of
    /// the first-layer sums of `batch` into `sums`. Whether the updated
    /// weights are finite.
    fn work(
        &mut self,
        rows: &RowSet,
        pending: Pending,
        dz1_rows: &[Chunk],
        batch: &[usize],
        sums: &mut [Chunk],
    ) -> bool {
        let mut finite = true;
        if let Some((previous, rule)) = pending {
            first_layer_part(
                &mut self.g,
                self.chunks,
                rows,
                previous,
                self.side,
                dz1_rows,
            );
            let range = self.side.chunks(self.chunks);
            finite = update_block(
                rule,
                &mut self.w1t[range.clone()],
                &mut self.m[range.clone()],
                &mut self.v[range.clone()],
                &mut self.g[range],
                mean_scale(previous),
            );
        }
        part_sums(&self.w1t, self.chunks, rows, batch, self.side, sums);
        finite
    }
}

pub(crate) struct HalvesTrainer {
    rows: Arc<RowSet>,
    labels: Vec<u8>,
    /// The small blocks (`b1`, `w2`, `b2`) and their moments; `w1t` here is
    /// only filled on the way out ([`ResidentTrainer::write_back`]).
    w: Weights,
    m: Weights,
    v: Weights,
    /// The small blocks' gradients and the per-row scratch.
    s: Scratch,
    lower: Half,
    upper: Upper,
    /// The previous step's rows and rule while its update is pending.
    pending_batch: Vec<usize>,
    pending_rule: Option<Rule>,
    /// The pending step's `dz1` rows.
    dz1_rows: Vec<Chunk>,
    lower_sums: Vec<Chunk>,
    upper_sums: Vec<Chunk>,
    /// Whether every update applied so far left the weights finite.
    finite: bool,
}

/// Where the upper half runs.
enum Upper {
    /// On this thread, after the lower half (one rayon thread).
    Here(Half),
    Helper(Helper),
}

impl HalvesTrainer {
    /// `None` if the rows' non-zeros overflow the row set's offsets.
    pub(crate) fn new(x: &[u8], y: &[u8], model: &Mlp, opt: &Optimizer) -> Option<HalvesTrainer> {
        let (rows, w, m, v) = super::resident::padded_state(x, y, model, opt)?;
        let rows = Arc::new(rows);
        let lower = Half::new(Side::Lower, &w, &m, &v);
        let upper = Half::new(Side::Upper, &w, &m, &v);
        // A second core only if the run was given a second thread; and if
        // the thread cannot be made, this one does both halves.
        let upper = if rayon::current_num_threads() >= 2 {
            match Helper::spawn(upper, Arc::clone(&rows)) {
                Ok(helper) => Upper::Helper(helper),
                Err(_) => Upper::Here(Half::new(Side::Upper, &w, &m, &v)),
            }
        } else {
            Upper::Here(upper)
        };
        let h = w.hidden;
        Some(HalvesTrainer {
            rows,
            labels: y.to_vec(),
            w,
            m,
            v,
            s: Scratch::new(h),
            lower,
            upper,
            pending_batch: Vec::new(),
            pending_rule: None,
            dz1_rows: Vec::new(),
            lower_sums: Vec::new(),
            upper_sums: Vec::new(),
            finite: true,
        })
    }

    /// Apply the pending update (if any) and take both sides' part-sums of
    /// `batch`.
    fn advance(&mut self, batch: &[usize]) {
        let n = batch.len() * self.w.chunks;
        self.lower_sums.resize(n, ZERO);
        self.upper_sums.resize(n, ZERO);
        let pending = self
            .pending_rule
            .as_ref()
            .map(|r| (&self.pending_batch[..], r));
        let rows = &*self.rows;
        let (dz1, lower) = (&self.dz1_rows, &mut self.lower);
        let finite = match &mut self.upper {
            Upper::Here(upper) => {
                let lo = lower.work(rows, pending, dz1, batch, &mut self.lower_sums);
                let hi = upper.work(rows, pending, dz1, batch, &mut self.upper_sums);
                lo && hi
            }
            Upper::Helper(helper) => {
                let seq = helper.post(pending, dz1, batch);
                let lo = lower.work(rows, pending, dz1, batch, &mut self.lower_sums);
                let hi = helper.collect(seq, rows, &mut self.upper_sums);
                lo && hi
            }
        };
        let small = pending.is_none_or(|(previous, rule)| {
            update_small(
                rule,
                &mut self.w,
                &mut self.m,
                &mut self.v,
                &mut self.s,
                mean_scale(previous),
            )
        });
        self.finite &= finite && small;
        self.pending_rule = None;
    }
}

impl ResidentTrainer for HalvesTrainer {
    fn step(&mut self, batch: &[usize], rule: &Rule) -> ResidentStep {
        assert!(!batch.is_empty(), "a step needs rows");
        self.advance(batch);
        let stats = heads(
            &self.w,
            &mut self.s,
            &self.labels,
            batch,
            &mut self.lower_sums,
            &self.upper_sums,
        );
        // `heads` left each row's dz1 in `lower_sums`.
        std::mem::swap(&mut self.dz1_rows, &mut self.lower_sums);
        self.pending_batch.clear();
        self.pending_batch.extend_from_slice(batch);
        self.pending_rule = Some(*rule);
        ResidentStep {
            stats,
            finite: self.finite,
        }
    }

    fn write_back(&mut self, model: &mut Mlp, optimizer: &mut Optimizer) -> bool {
        if self.pending_rule.is_some() {
            self.advance(&[]);
        }
        self.lower.store(&mut self.w, &mut self.m, &mut self.v);
        match &mut self.upper {
            Upper::Here(upper) => upper.store(&mut self.w, &mut self.m, &mut self.v),
            Upper::Helper(helper) => {
                helper
                    .lock()
                    .half
                    .store(&mut self.w, &mut self.m, &mut self.v)
            }
        }
        super::resident::store_state(&self.w, &self.m, &self.v, model, optimizer);
        self.finite
    }
}

/// A step's work for the upper half, and the half itself. Whoever takes
/// the step (`taken`) does it while holding the lock: the helper normally,
/// this thread if the helper has not started by the time its own half is
/// done (on a shared machine the helper's core can be away for a while).
struct Slot {
    /// The step these inputs belong to.
    seq: u64,
    taken: bool,
    /// The pending step's rule and rows (see [`Pending`]).
    pending_rule: Option<Rule>,
    pending_batch: Vec<usize>,
    dz1_rows: Vec<Chunk>,
    batch: Vec<usize>,
    sums: Vec<Chunk>,
    finite: bool,
    half: Half,
}

impl Slot {
    /// Do the posted step's upper-half work.
    fn run(&mut self, rows: &RowSet) {
        self.taken = true;
        self.sums.resize(self.batch.len() * self.half.chunks, ZERO);
        let view = self
            .pending_rule
            .as_ref()
            .map(|rule| (&self.pending_batch[..], rule));
        self.finite = self
            .half
            .work(rows, view, &self.dz1_rows, &self.batch, &mut self.sums);
    }
}

struct Shared {
    /// The last step posted, and the last one done (by either thread).
    posted: AtomicU64,
    done: AtomicU64,
    /// The helper is (about to be) parked and needs an unpark.
    sleeping: AtomicBool,
    exit: AtomicBool,
    slot: Mutex<Slot>,
}

/// The helper thread that runs the upper half.
struct Helper {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    seq: u64,
}

impl Helper {
    fn spawn(half: Half, rows: Arc<RowSet>) -> std::io::Result<Helper> {
        let shared = Arc::new(Shared {
            posted: AtomicU64::new(0),
            done: AtomicU64::new(0),
            sleeping: AtomicBool::new(false),
            exit: AtomicBool::new(false),
            slot: Mutex::new(Slot {
                seq: 0,
                taken: true,
                pending_rule: None,
                pending_batch: Vec::new(),
                dz1_rows: Vec::new(),
                batch: Vec::new(),
                sums: Vec::new(),
                finite: true,
                half,
            }),
        });
        let theirs = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name("mnist-blas-upper-half".into())
            .spawn(move || helper_loop(&rows, &theirs))?;
        Ok(Helper {
            shared,
            thread: Some(thread),
            seq: 0,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        // A panic in the other thread's half poisons the lock: pass it on.
        self.shared.slot.lock().expect("the upper half panicked")
    }

    /// Post a step's upper-half work; its number, for [`Helper::collect`].
    fn post(&mut self, pending: Pending, dz1_rows: &[Chunk], batch: &[usize]) -> u64 {
        self.seq += 1;
        {
            let mut slot = self.lock();
            slot.seq = self.seq;
            slot.taken = false;
            slot.pending_batch.clear();
            slot.pending_rule = pending.map(|(previous, rule)| {
                slot.pending_batch.extend_from_slice(previous);
                *rule
            });
            slot.dz1_rows.clear();
            slot.dz1_rows.extend_from_slice(dz1_rows);
            slot.batch.clear();
            slot.batch.extend_from_slice(batch);
        }
        self.shared.posted.store(self.seq, Ordering::SeqCst);
        if self.shared.sleeping.load(Ordering::SeqCst) {
            if let Some(t) = &self.thread {
                t.thread().unpark();
            }
        }
        self.seq
    }

    /// The upper part-sums of step `seq`, done by the helper or, if it has
    /// not taken the step yet, here; whether the updated weights are finite.
    fn collect(&self, seq: u64, rows: &RowSet, sums: &mut [Chunk]) -> bool {
        loop {
            if self.shared.done.load(Ordering::Acquire) == seq {
                let slot = self.lock();
                sums.copy_from_slice(&slot.sums[..sums.len()]);
                return slot.finite;
            }
            if let Ok(mut slot) = self.shared.slot.try_lock() {
                if !slot.taken {
                    slot.run(rows);
                    self.shared.done.store(seq, Ordering::Release);
                    sums.copy_from_slice(&slot.sums[..sums.len()]);
                    return slot.finite;
                }
            }
            if self.thread.as_ref().is_none_or(|t| t.is_finished()) {
                panic!("the upper-half helper thread stopped");
            }
            std::hint::spin_loop();
        }
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

fn helper_loop(rows: &RowSet, shared: &Shared) {
    let mut seen = 0u64;
    loop {
        // Wait for the next step: spin while steps keep coming, then sleep
        // until unparked.
        let started = Instant::now();
        let mut spins = 0u32;
        while shared.posted.load(Ordering::Acquire) == seen {
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
            if shared.posted.load(Ordering::SeqCst) == seen && !shared.exit.load(Ordering::SeqCst) {
                thread::park();
            }
            shared.sleeping.store(false, Ordering::SeqCst);
        }
        seen = shared.posted.load(Ordering::Acquire);
        let mut slot = shared.slot.lock().expect("the main thread panicked");
        if slot.seq == seen && !slot.taken {
            slot.run(rows);
            drop(slot);
            shared.done.store(seen, Ordering::Release);
        }
    }
}

multiversion! {
    /// Every row's first-layer sum over one side's pixels, into `out`
    /// (`chunks` per row), in [`partial_sum`]'s order.
    fn part_sums(w1t: &[Chunk], chunks: usize, rows: &RowSet, batch: &[usize], side: Side, out: &mut [Chunk]) {
        let table = pixel_table();
        for (j, &r) in batch.iter().enumerate() {
            // See PREFETCH_AHEAD.
            if let Some(&ahead) = batch.get(j + PREFETCH_AHEAD) {
                let (index, value) = side.of(rows, ahead);
                prefetch_lines(index);
                prefetch_lines(value);
            }
            let (index, value) = side.of(rows, r);
            if chunks == 1 {
                out[j] = partial_sum(w1t, 1, 0, index, value, table);
            } else {
                for c in 0..chunks {
                    out[j * chunks + c] = partial_sum(w1t, chunks, c, index, value, table);
                }
            }
        }
    }
}

multiversion! {
    /// Row by row: the two part-sums added (lower + upper), the rest of the
    /// forward pass, and the backward pass down to `dz1`, which replaces the
    /// row's lower part-sum in `lo`. Adds the small blocks' gradients into `s`.
    fn heads(w: &Weights, s: &mut Scratch, labels: &[u8], batch: &[usize], lo: &mut [Chunk], hi: &[Chunk]) -> BatchStats {
        if w.chunks == 1 {
            heads_rows(w, s, 1, labels, batch, lo, hi)
        } else {
            heads_rows(w, s, w.chunks, labels, batch, lo, hi)
        }
    }
}

/// [`heads`]' loop, with `chunks` a constant where it can be.
#[inline(always)]
fn heads_rows(
    w: &Weights,
    s: &mut Scratch,
    chunks: usize,
    labels: &[u8],
    batch: &[usize],
    lo: &mut [Chunk],
    hi: &[Chunk],
) -> BatchStats {
    let mut stats = BatchStats {
        rows: batch.len(),
        ..Default::default()
    };
    let mut loss = LossSum::new();
    for (j, &r) in batch.iter().enumerate() {
        let at = j * chunks..(j + 1) * chunks;
        for c in 0..chunks {
            s.a1[c] = add(&lo[at.start + c], &hi[at.start + c]);
        }
        let probs = forward_from_sums(w, s, chunks);
        backward_head(w, s, chunks, probs, labels[r], &mut stats, &mut loss);
        lo[at].copy_from_slice(&s.dz1[..chunks]);
    }
    stats.loss_sum = loss.finish();
    stats
}

multiversion! {
    /// `dw1 += dz1 x^T` over one side's pixels, rows in batch order (each
    /// pixel's sum in the order the one-pass path adds it).
    fn first_layer_part(g: &mut [Chunk], chunks: usize, rows: &RowSet, batch: &[usize], side: Side, dz1_rows: &[Chunk]) {
        if chunks == 1 {
            first_layer_rows(g, 1, rows, batch, side, dz1_rows);
        } else {
            first_layer_rows(g, chunks, rows, batch, side, dz1_rows);
        }
    }
}

/// [`first_layer_part`]'s loop, with `chunks` a constant where it can be.
#[inline(always)]
fn first_layer_rows(
    g: &mut [Chunk],
    chunks: usize,
    rows: &RowSet,
    batch: &[usize],
    side: Side,
    dz1_rows: &[Chunk],
) {
    let table = pixel_table();
    let g = &mut g[..super::PIXEL_SLOTS * chunks];
    for (j, &r) in batch.iter().enumerate() {
        let (index, value) = side.of(rows, r);
        let dz1 = &dz1_rows[j * chunks..(j + 1) * chunks];
        for (&i, &v) in index.iter().zip(value) {
            let base = slot(i) * chunks;
            let v = v.scaled(table);
            for c in 0..chunks {
                axpy(&mut g[base + c], v, &dz1[c]);
            }
        }
    }
}
