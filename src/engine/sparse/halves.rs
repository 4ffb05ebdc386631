//! The sparse engine's trainer for batches of up to one shard (256 rows):
//! `w1` cut by pixel into two halves ([`PIXEL_SPLIT`]), each with its own
//! core.
//!
//! A step at batch 32 is too little arithmetic for a thread pool's hand-off:
//! two `rayon::join`s per step (the idle worker waits in `sched_yield`)
//! would cost a large share of it. So the upper half lives on a helper
//! thread of its own ([`helper`]), which spins while steps keep coming.
//! Each half owns its rows of `w1`, their optimizer moments and their
//! gradient, so none of those cache lines ever moves between cores. Step
//! `k` is one *cycle* of the helper:
//!
//! 1. this thread posts the batch and its rule;
//! 2. the helper takes the upper part of each row's first-layer sum and
//!    publishes them a block of [`BLOCK`] rows at a time; meanwhile this
//!    thread applies the previous step's lower update (its `dw1` and update
//!    rule, and the small blocks') and takes the lower parts;
//! 3. this thread adds the two parts (lower + upper, as every path of the
//!    engine does) and runs the rest of the forward and backward passes row
//!    by row, block by block, publishing each block's `dz1`;
//! 4. the helper adds each published block to its `dw1` while this thread
//!    works on the next block, then updates its half of `w1`.
//!
//! So the helper's share of the backward pass runs beside this thread's
//! per-row work instead of after it, and neither thread waits for the
//! other's whole step: the exchanges are blocks of 8 rows. When the train
//! loop says which rows come next ([`ResidentTrainer::upcoming`]), each
//! thread starts loading its part of them during its quiet moments, since
//! a step otherwise meets its rows' cache misses one row at a time.
//!
//! If the helper has not taken a cycle by the time its sums are needed (on
//! a shared machine its core can be away for a while), this thread takes
//! the cycle and does the upper half itself.
//!
//! Each row's first-layer sum is the lower part plus the upper part, each
//! pixel's gradient adds the rows in batch order, and every other sum runs
//! in the one-thread order, whichever thread does what: so one thread and
//! two give the same bits (tests/sparse.rs). The generic path sums a row in
//! one pass, so it agrees with this one to rounding. With one rayon thread
//! (`--threads 1`) there is no helper: this thread runs both halves itself.
//!
//! This file has the trainer, the halves and the hot loops over one half's
//! pixels; `helper.rs` the helper thread and the protocol of a cycle.

use super::kernels::{add_row_gradient, backward_head, forward_from_sums, partial_sum, LossSum};
use super::layout::{add, Chunk, Scratch, Weights, ZERO};
use super::row_set::{RowSet, PREFETCH_AHEAD};
use super::update::{padded_state, store_state, update_block, update_small};
use crate::data::FEATURES;
use crate::engine::SHARD_ROWS;
use crate::engine::{pixel_table, prefetch_lines, BatchStats, ResidentStep, ResidentTrainer};
use crate::model::Mlp;
use crate::optim::{Optimizer, Rule};
use crate::simd::multiversion;
use helper::{Helper, Source, BLOCK};
use std::ops::Range;
use std::sync::Arc;

mod helper;

/// Where this trainer cuts `w1`: pixels below this on one core, the rest on
/// another, each part's sums then added (`z1 = sum(0..336) + sum(336..784)`).
/// The lower part has 37% of the non-zeros on Kaggle's digits: its thread
/// also runs each row's second layer and backward pass, while the other one
/// runs the larger part. The cut was chosen by measuring epochs at cuts
/// around it. Elsewhere a row's sum is one pass: the two parts would cost
/// the full-batch loop a little, for nothing.
pub(super) const PIXEL_SPLIT: usize = 336;

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

    /// Start loading this side's part of row `r` (a hint).
    #[inline(always)]
    fn prefetch(self, rows: &RowSet, r: usize) {
        let (index, value) = self.of(rows, r);
        prefetch_lines(index);
        prefetch_lines(value);
    }

    /// The chunks of `w1t` (and its moments and gradient) this side owns.
    fn chunks(self, chunks: usize) -> Range<usize> {
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

    /// This side's first-layer sums of `batch[range]` into `out`.
    fn sums(&self, rows: &RowSet, batch: &[usize], range: Range<usize>, out: &mut [Chunk]) {
        part_sums(&self.w1t, self.chunks, rows, batch, range, self.side, out);
    }

    /// Add `dw1` of rows `batch` (their `dz1` in `dz1_rows`) to the gradient.
    fn gradient(&mut self, rows: &RowSet, batch: &[usize], dz1_rows: &[Chunk]) {
        first_layer_part(&mut self.g, self.chunks, rows, batch, self.side, dz1_rows);
    }

    /// Apply `rule` with the gradient summed over `n` rows (leaving it
    /// zero); whether the updated weights are finite.
    fn update(&mut self, rule: &Rule, n: usize) -> bool {
        let range = self.side.chunks(self.chunks);
        update_block(
            rule,
            &mut self.w1t[range.clone()],
            &mut self.m[range.clone()],
            &mut self.v[range.clone()],
            &mut self.g[range],
            mean_scale(n),
        )
    }

    /// [`Half::gradient`] then [`Half::update`], for a whole batch.
    fn learn(&mut self, rows: &RowSet, batch: &[usize], dz1_rows: &[Chunk], rule: &Rule) -> bool {
        self.gradient(rows, batch, dz1_rows);
        self.update(rule, batch.len())
    }
}

/// The mean gradient's scale for a step on `n` rows, as the generic path
/// computes it.
fn mean_scale(n: usize) -> f32 {
    1.0 / n as f32
}

pub(super) struct HalvesTrainer {
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
    /// Steps taken (the helper's cycles posted).
    cycle: u64,
    /// The previous step's rows and rule while the lower half's and the
    /// small blocks' update is pending (the upper half's is done in its
    /// cycle).
    pending_batch: Vec<usize>,
    pending_rule: Option<Rule>,
    /// The pending step's `dz1` rows.
    dz1_rows: Vec<Chunk>,
    lower_sums: Vec<Chunk>,
    upper_sums: Vec<Chunk>,
    /// Whether every update applied so far left the weights finite, and
    /// the last upper update done on this thread (reported a step later,
    /// as the helper's are).
    finite: bool,
    upper_finite: bool,
    /// The next step's rows, if known ([`ResidentTrainer::upcoming`]).
    next: Vec<usize>,
}

/// Where the upper half runs.
enum Upper {
    /// On this thread, after the lower half (one rayon thread).
    Here(Half),
    Helper(Helper),
}

impl HalvesTrainer {
    /// `None` if the rows' non-zeros overflow the row set's offsets.
    pub(super) fn new(x: &[u8], y: &[u8], model: &Mlp, opt: &Optimizer) -> Option<HalvesTrainer> {
        let (rows, w, m, v) = padded_state(x, y, model, opt)?;
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
            cycle: 0,
            pending_batch: Vec::new(),
            pending_rule: None,
            dz1_rows: Vec::new(),
            lower_sums: Vec::new(),
            upper_sums: Vec::new(),
            finite: true,
            upper_finite: true,
            next: Vec::new(),
        })
    }

    /// Apply the pending step's lower-half and small-block update, if any.
    fn apply_pending(&mut self) {
        let Some(rule) = self.pending_rule.take() else {
            return;
        };
        let batch = &self.pending_batch[..];
        let lower = self.lower.learn(&self.rows, batch, &self.dz1_rows, &rule);
        let small = update_small(
            &rule,
            &mut self.w,
            &mut self.m,
            &mut self.v,
            &mut self.s,
            mean_scale(batch.len()),
        );
        self.finite &= lower && small;
    }

    /// Step `cycle`'s heads (the rest of each row's forward and backward
    /// pass, from the lower sums in `lower_sums`) and the upper half's part:
    /// beside the helper, block by block, or all on this thread (one rayon
    /// thread, or a cycle taken from the helper). Leaves each row's `dz1` in
    /// `lower_sums`.
    fn heads_and_upper(
        &mut self,
        cycle: u64,
        batch: &[usize],
        rule: &Rule,
        stats: &mut BatchStats,
        loss: &mut LossSum,
    ) {
        let chunks = self.w.chunks;
        let rows = &*self.rows;
        let (w, s, labels) = (&self.w, &mut self.s, &self.labels[..]);
        // The whole batch's heads on this thread, then the upper half's
        // gradient and update.
        let mut whole = |upper: &mut Half, lo: &mut [Chunk], hi: &mut [Chunk]| {
            upper.sums(rows, batch, 0..batch.len(), hi);
            heads(w, s, labels, batch, lo, hi, stats, loss);
            upper.learn(rows, batch, lo, rule)
        };
        match &mut self.upper {
            Upper::Here(upper) => {
                self.finite &= self.upper_finite;
                self.upper_finite = whole(upper, &mut self.lower_sums, &mut self.upper_sums);
            }
            Upper::Helper(helper) => match helper.first_sums(cycle) {
                Source::Taken(mut owned) => {
                    self.finite &= helper.finite();
                    let ok = whole(&mut owned, &mut self.lower_sums, &mut self.upper_sums);
                    helper.finish_taken(cycle, ok);
                }
                Source::Helper => {
                    self.finite &= helper.finite();
                    for (b, block) in batch.chunks(BLOCK).enumerate() {
                        let at = b * BLOCK * chunks..(b * BLOCK + block.len()) * chunks;
                        let end = b * BLOCK + block.len();
                        let lo = &mut self.lower_sums[at];
                        let len = lo.len();
                        {
                            let hi = helper.sums(cycle, b, end);
                            heads(w, s, labels, block, lo, &hi[..len], stats, loss);
                        }
                        helper.publish_dz1(cycle, b, end, lo);
                        // The next step's rows come from memory while this
                        // thread runs the heads; the helper does its side.
                        for &r in self.next.chunks(BLOCK).nth(b).unwrap_or_default() {
                            Side::Lower.prefetch(rows, r);
                        }
                    }
                }
            },
        }
    }
}

impl ResidentTrainer for HalvesTrainer {
    fn step(&mut self, batch: &[usize], rule: &Rule) -> ResidentStep {
        assert!(!batch.is_empty(), "a step needs rows");
        assert!(
            batch.len() <= SHARD_ROWS,
            "the halves trainer takes up to a shard"
        );
        self.cycle += 1;
        let cycle = self.cycle;
        if let Upper::Helper(helper) = &self.upper {
            helper.post(cycle, batch, &self.next, rule);
        }
        self.apply_pending();
        let n = batch.len() * self.w.chunks;
        self.lower_sums.resize(n, ZERO);
        self.upper_sums.resize(n, ZERO);
        self.lower
            .sums(&self.rows, batch, 0..batch.len(), &mut self.lower_sums);
        let mut stats = BatchStats {
            rows: batch.len(),
            ..Default::default()
        };
        let mut loss = LossSum::new();
        self.heads_and_upper(cycle, batch, rule, &mut stats, &mut loss);
        self.next.clear();
        stats.loss_sum = loss.finish();
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

    fn upcoming(&mut self, batch: &[usize]) {
        self.next.clear();
        self.next.extend_from_slice(batch);
    }

    fn write_back(&mut self, model: &mut Mlp, optimizer: &mut Optimizer) -> bool {
        self.apply_pending();
        self.lower.store(&mut self.w, &mut self.m, &mut self.v);
        match &mut self.upper {
            Upper::Here(upper) => {
                self.finite &= self.upper_finite;
                upper.store(&mut self.w, &mut self.m, &mut self.v);
            }
            Upper::Helper(helper) => {
                let owned = helper.finished(self.cycle);
                self.finite &= helper.finite();
                owned.store(&mut self.w, &mut self.m, &mut self.v);
            }
        }
        store_state(&self.w, &self.m, &self.v, model, optimizer);
        self.finite
    }
}

multiversion! {
    /// The first-layer sums over one side's pixels of rows `batch[range]`,
    /// into `out` (`chunks` per row, from the range's first row), in
    /// [`partial_sum`]'s order. Prefetching looks ahead in the whole batch.
    fn part_sums(w1t: &[Chunk], chunks: usize, rows: &RowSet, batch: &[usize], range: Range<usize>, side: Side, out: &mut [Chunk]) {
        let table = pixel_table();
        let first = range.start;
        for j in range {
            // See PREFETCH_AHEAD.
            if let Some(&ahead) = batch.get(j + PREFETCH_AHEAD) {
                side.prefetch(rows, ahead);
            }
            let (index, value) = side.of(rows, batch[j]);
            let at = (j - first) * chunks;
            if chunks == 1 {
                out[at] = partial_sum(w1t, 1, 0, index, value, table);
            } else {
                for c in 0..chunks {
                    out[at + c] = partial_sum(w1t, chunks, c, index, value, table);
                }
            }
        }
    }
}

multiversion! {
    /// Row by row: the two part-sums added (lower + upper), the rest of the
    /// forward pass, and the backward pass down to `dz1`, which replaces the
    /// row's lower part-sum in `lo`. Adds the small blocks' gradients into `s`
    /// and the rows' counts and losses into `stats` and `loss` (so that a
    /// batch taken in blocks sums them as one pass would).
    #[allow(
        clippy::too_many_arguments,
        reason = "the hot loop's state, unbundled on purpose"
    )]
    fn heads(w: &Weights, s: &mut Scratch, labels: &[u8], batch: &[usize], lo: &mut [Chunk], hi: &[Chunk], stats: &mut BatchStats, loss: &mut LossSum) {
        if w.chunks == 1 {
            heads_rows(w, s, 1, labels, batch, lo, hi, stats, loss)
        } else {
            heads_rows(w, s, w.chunks, labels, batch, lo, hi, stats, loss)
        }
    }
}

/// [`heads`]' loop, with `chunks` a constant where it can be.
#[allow(
    clippy::too_many_arguments,
    reason = "the hot loop's state, unbundled on purpose"
)]
#[inline(always)]
fn heads_rows(
    w: &Weights,
    s: &mut Scratch,
    chunks: usize,
    labels: &[u8],
    batch: &[usize],
    lo: &mut [Chunk],
    hi: &[Chunk],
    stats: &mut BatchStats,
    loss: &mut LossSum,
) {
    for (j, &r) in batch.iter().enumerate() {
        let at = j * chunks..(j + 1) * chunks;
        for c in 0..chunks {
            s.a1[c] = add(&lo[at.start + c], &hi[at.start + c]);
        }
        let probs = forward_from_sums(w, s, chunks);
        backward_head(w, s, chunks, probs, labels[r], stats, loss);
        lo[at].copy_from_slice(&s.dz1[..chunks]);
    }
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
    for (j, &r) in batch.iter().enumerate() {
        let (index, value) = side.of(rows, r);
        let dz1 = &dz1_rows[j * chunks..(j + 1) * chunks];
        add_row_gradient(g, chunks, index, value, table, dz1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Init, Layers};
    use crate::optim::OptimizerKind;
    use crate::testutil::random_batch;

    /// Everything a run of steps shows: each step's counts, loss bits and
    /// finiteness, and the model's and moments' bits after a write-back in
    /// the middle and at the end.
    type Outcome = (Vec<(usize, u64, bool)>, Vec<Vec<u32>>, u64);

    fn bits(m: &Mlp) -> Vec<u32> {
        m.params()
            .iter()
            .flat_map(|p| p.iter().map(|v| v.to_bits()))
            .collect()
    }

    fn run(x: &[u8], y: &[u8], threads: usize, leave_odd: bool, hints: bool) -> Outcome {
        let rows = y.len();
        let start = Mlp::init(&Layers::one(10), Init::He, 1).unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut opt = Optimizer::new(OptimizerKind::Adam, 0.01, 0.9, &Layers::one(10));
            let mut trainer = HalvesTrainer::new(x, y, &start, &opt).unwrap();
            match &trainer.upper {
                Upper::Helper(h) => h.hooks().leave_odd_cycles(leave_odd),
                Upper::Here(_) => assert_eq!(threads, 1),
            }
            let (mut steps, mut states) = (Vec::new(), Vec::new());
            let mut model = start.clone();
            // Blocks of 8 rows: whole, partial, a single row.
            let sizes = [32, 9, 1, 32, 17, 8, 32, 32, 3, 32, 16, 32];
            let batch = |step: usize| -> Vec<usize> {
                (0..sizes[step])
                    .map(|i| (step * 37 + i * 13) % rows)
                    .collect()
            };
            for step in 0..sizes.len() {
                if hints && step + 1 < sizes.len() {
                    trainer.upcoming(&batch(step + 1));
                }
                let got = trainer.step(&batch(step), &opt.next_rule());
                steps.push((got.stats.correct, got.stats.loss_sum.to_bits(), got.finite));
                if step == 4 || step == 11 {
                    assert!(trainer.write_back(&mut model, &mut opt));
                    states.extend([bits(&model), bits(&opt.m), bits(&opt.v)]);
                }
            }
            let taken = match &trainer.upper {
                Upper::Helper(h) => h.hooks().taken(),
                Upper::Here(_) => 0,
            };
            (steps, states, taken)
        })
    }

    /// The helper's cycles, cycles this thread takes from it (as when the
    /// helper's core is away), and one thread doing both halves give the
    /// same bits, with or without the next rows announced.
    #[test]
    fn taken_cycles_and_one_thread_give_the_helpers_bits() {
        let (x, y) = random_batch(300, 5);
        let one = run(&x, &y, 1, false, false);
        // With the next rows announced (a prefetch hint: no effect on bits).
        let two = run(&x, &y, 2, false, true);
        let taken = run(&x, &y, 2, true, true);
        // Every odd cycle, and maybe an even one the helper was slow to take.
        assert!(taken.2 >= 6, "{} cycles taken", taken.2);
        assert_eq!(one.0, two.0);
        assert_eq!(one.1, two.1);
        assert_eq!(one.0, taken.0);
        assert_eq!(one.1, taken.1);
        // The run learned something (not the starting weights).
        let start = Mlp::init(&Layers::one(10), Init::He, 1).unwrap();
        assert_ne!(one.1[0], bits(&start));
    }
}
