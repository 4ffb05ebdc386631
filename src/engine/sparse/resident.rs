//! The sparse engine's mini-batch trainer: everything stays in the engine's
//! layout from one step to the next.
//!
//! Through the generic [`Engine`](super::Engine) interface a step at batch
//! 32 converted the weights into the padded layout and the gradients back
//! out, zeroed and scaled model-sized buffers, and re-gathered each row's
//! non-zero pixels: as much time as the arithmetic itself. Here:
//!
//! - the training rows are gathered once, as a [`RowSet`];
//! - the weights and the optimizer's moments live in the padded layout
//!   ([`Weights`]), and the update rule runs there, on the same per-weight
//!   functions as [`Optimizer::step`](crate::train::Optimizer::step);
//! - a batch is cut into shards exactly as the generic path cuts it
//!   ([`SHARD_ROWS`]), each shard's gradients go to its own [`Scratch`] (on
//!   the rayon pool when there are several), and the update adds them up in
//!   shard order, then clears them.
//!
//! So a step gives the generic path's bits exactly (a test checks it), on
//! any thread count.
//!
//! Tried and dropped: cutting a 32-row batch into two 16-row shards for the
//! two cores, with the update split across them too. Slower than one core
//! (20.6 against 16.4 ms per epoch): two hand-offs per step of a few
//! microseconds, and the weights' cache lines moving between the cores.

use super::{
    accumulate_nonzeros, add, axpy, backward_head, forward_from_sums, multiversion, partial_sum,
    pixel_table, prefetch_lines, Chunk, LossSum, PixelValue, RowSet, Scratch, Weights, LANES,
    PIXEL_SPLIT, ZERO,
};
use crate::data::FEATURES;
use crate::engine::{BatchStats, ResidentStep, ResidentTrainer};
use crate::model::Mlp;
use crate::train::optimizer::{adam, momentum, sgd};
use crate::train::shard::SHARD_ROWS;
use crate::train::{Optimizer, Rule};
use rayon::prelude::*;

/// How many rows ahead [`shard_pass`] prefetches.
const PREFETCH_AHEAD: usize = 2;

/// One shard's gradients and statistics.
struct Shard {
    scratch: Scratch,
    stats: BatchStats,
}

pub(crate) struct SparseTrainer {
    rows: RowSet,
    labels: Vec<u8>,
    w: Weights,
    /// The optimizer's moments in the same layout (velocity / Adam's `m`,
    /// and Adam's `v`); zero in the padding, where the gradient is zero.
    m: Weights,
    v: Weights,
    shards: Vec<Shard>,
}

impl SparseTrainer {
    /// `None` if the rows' non-zeros overflow the row set's offsets.
    pub(crate) fn new(x: &[u8], y: &[u8], model: &Mlp, opt: &Optimizer) -> Option<SparseTrainer> {
        assert_eq!(
            x.len(),
            y.len() * FEATURES,
            "rows and labels differ in length"
        );
        let h = model.hidden();
        let rows = RowSet::gather_parallel(x)?;
        let mut w = Weights::zeros(h);
        w.load(model);
        // An optimizer without a moment keeps it empty (hidden 0).
        let moment = |saved: &Mlp| {
            let mut padded = Weights::zeros(h);
            if saved.hidden() == h {
                padded.load(saved);
            }
            padded
        };
        Some(SparseTrainer {
            rows,
            labels: y.to_vec(),
            m: moment(&opt.m),
            v: moment(&opt.v),
            w,
            shards: Vec::new(),
        })
    }
}

impl ResidentTrainer for SparseTrainer {
    fn step(&mut self, batch: &[usize], rule: &Rule) -> ResidentStep {
        let SparseTrainer {
            rows,
            labels,
            w,
            m,
            v,
            shards,
        } = self;
        let n = batch.len().div_ceil(SHARD_ROWS);
        while shards.len() < n {
            shards.push(Shard {
                scratch: Scratch::new(w.hidden),
                stats: BatchStats::default(),
            });
        }
        if n == 1 {
            return step_in_halves(rule, rows, labels, w, m, v, &mut shards[0].scratch, batch);
        }
        let shards = &mut shards[..n];
        let weights = &*w;
        let pass = |(k, shard): (usize, &mut Shard)| {
            let mine = &batch[k * SHARD_ROWS..((k + 1) * SHARD_ROWS).min(batch.len())];
            // The update left the sums zero.
            shard.stats = shard_pass(weights, &mut shard.scratch, rows, labels, mine);
        };
        shards.par_iter_mut().enumerate().for_each(pass);
        let mut stats = BatchStats::default();
        for s in shards.iter() {
            stats.merge(s.stats);
        }
        let finite = update(rule, w, m, v, shards, 1.0 / batch.len() as f32);
        ResidentStep { stats, finite }
    }

    fn write_back(&self, model: &mut Mlp, optimizer: &mut Optimizer) {
        self.w.store(model);
        for (padded, moment) in [(&self.m, &mut optimizer.m), (&self.v, &mut optimizer.v)] {
            if moment.hidden() == self.w.hidden {
                padded.store(moment);
            }
        }
    }
}

/// One step on a one-shard batch, its first-layer work cut by pixel
/// ([`PIXEL_SPLIT`]) into two halves that run side by side on the pool:
///
/// 1. each half's part of every row's first-layer sum;
/// 2. on this thread, row by row: the two parts added, then the rest of the
///    forward pass and the backward pass down to `dz1`;
/// 3. each half's `dw1` and the update of its half of `w1`;
/// 4. the update of the small blocks.
///
/// Each half of `w1`, its gradient and its moments stay with one core, so
/// all the cores exchange per step is the rows' two part-sums and `dz1`s.
/// The arithmetic is [`shard_pass`]'s, in the same order for every sum, so
/// the bits are the same as one thread's and as the generic path's.
#[allow(
    clippy::too_many_arguments,
    reason = "the trainer's fields, borrowed apart"
)]
fn step_in_halves(
    rule: &Rule,
    rows: &RowSet,
    labels: &[u8],
    w: &mut Weights,
    m: &mut Weights,
    v: &mut Weights,
    s: &mut Scratch,
    batch: &[usize],
) -> ResidentStep {
    let chunks = w.chunks;
    let n = batch.len() * chunks;
    // Part-sums of the two halves, then each row's dz1 (reusing `lo`).
    let mut lo = std::mem::take(&mut s.dz1_rows);
    let mut hi = std::mem::take(&mut s.hi_rows);
    lo.resize(n, ZERO);
    hi.resize(n, ZERO);
    {
        let w1t = &w.w1t[..];
        rayon::join(
            || part_sums(w1t, chunks, rows, batch, Half::Lower, &mut lo),
            || part_sums(w1t, chunks, rows, batch, Half::Upper, &mut hi),
        );
    }
    let stats = heads(w, s, labels, batch, &mut lo, &hi);
    let dz1_rows = &lo[..];
    let scale = 1.0 / batch.len() as f32;
    let cut = PIXEL_SPLIT * chunks;
    let real = FEATURES * chunks;
    let (w_lo, w_hi) = w.w1t[..real].split_at_mut(cut);
    let (m_lo, m_hi) = m.w1t[..real].split_at_mut(cut);
    let (v_lo, v_hi) = v.w1t[..real].split_at_mut(cut);
    let (g_lo, g_hi) = s.g_w1t[..real].split_at_mut(cut);
    let (finite_lo, finite_hi) = rayon::join(
        || {
            first_layer_part(g_lo, chunks, rows, batch, Half::Lower, dz1_rows);
            update_block(rule, w_lo, m_lo, v_lo, g_lo, scale)
        },
        || {
            first_layer_part(g_hi, chunks, rows, batch, Half::Upper, dz1_rows);
            update_block(rule, w_hi, m_hi, v_hi, g_hi, scale)
        },
    );
    let finite_small = update_small(rule, w, m, v, s, scale);
    s.dz1_rows = lo;
    s.hi_rows = hi;
    ResidentStep {
        stats,
        finite: finite_lo && finite_hi && finite_small,
    }
}

/// Which of a row's non-zero pixels: below [`PIXEL_SPLIT`] or from it on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Half {
    Lower,
    Upper,
}

impl Half {
    /// This half of a row's pixels and values, and the first pixel of the half.
    #[inline(always)]
    fn of(self, rows: &RowSet, r: usize) -> (&[u16], &[u8], usize) {
        let (index, value, split) = rows.row(r);
        match self {
            Half::Lower => (&index[..split], &value[..split], 0),
            Half::Upper => (&index[split..], &value[split..], PIXEL_SPLIT),
        }
    }
}

multiversion! {
    /// Every row's first-layer sum over one half of its pixels, into `out`
    /// (`chunks` per row), in [`partial_sum`]'s order.
    fn part_sums(w1t: &[Chunk], chunks: usize, rows: &RowSet, batch: &[usize], half: Half, out: &mut [Chunk]) {
        let table = pixel_table();
        for (j, &r) in batch.iter().enumerate() {
            if let Some(&ahead) = batch.get(j + PREFETCH_AHEAD) {
                let (index, value, _) = half.of(rows, ahead);
                prefetch_lines(index);
                prefetch_lines(value);
            }
            let (index, value, _) = half.of(rows, r);
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
    /// Row by row: the two part-sums added (lower + upper, as
    /// [`forward_row`](super::forward_row) adds them), the rest of the
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
    /// `dw1 += dz1 x^T` over one half of the pixels, rows in batch order (so
    /// each pixel's sum runs in the order [`shard_pass`] adds it). `g` is the
    /// half's part of `g_w1t`.
    fn first_layer_part(g: &mut [Chunk], chunks: usize, rows: &RowSet, batch: &[usize], half: Half, dz1_rows: &[Chunk]) {
        if chunks == 1 {
            first_layer_rows(g, 1, rows, batch, half, dz1_rows);
        } else {
            first_layer_rows(g, chunks, rows, batch, half, dz1_rows);
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
    half: Half,
    dz1_rows: &[Chunk],
) {
    let table = pixel_table();
    for (j, &r) in batch.iter().enumerate() {
        let (index, value, first) = half.of(rows, r);
        let dz1 = &dz1_rows[j * chunks..(j + 1) * chunks];
        for (&i, &v) in index.iter().zip(value) {
            let base = (i as usize).wrapping_sub(first) * chunks;
            let v = v.scaled(table);
            for c in 0..chunks {
                axpy(&mut g[base + c], v, &dz1[c]);
            }
        }
    }
}

multiversion! {
    /// Forward and backward over the rows numbered `batch`, adding their
    /// summed gradients into `s`.
    fn shard_pass(w: &Weights, s: &mut Scratch, rows: &RowSet, labels: &[u8], batch: &[usize]) -> BatchStats {
        let mut stats = BatchStats { rows: batch.len(), ..Default::default() };
        let mut loss = LossSum::new();
        let chunks = w.chunks;
        let table = pixel_table();
        for (j, &r) in batch.iter().enumerate() {
            // The rows are scattered over a set bigger than the L2 cache: ask
            // for a row two ahead, so its misses overlap this row's work.
            if let Some(&ahead) = batch.get(j + PREFETCH_AHEAD) {
                rows.prefetch(ahead);
            }
            let row = rows.row(r);
            if chunks == 1 {
                accumulate_nonzeros(w, s, 1, row, table, labels[r], &mut stats, &mut loss);
            } else {
                accumulate_nonzeros(w, s, chunks, row, table, labels[r], &mut stats, &mut loss);
            }
        }
        stats.loss_sum = loss.finish();
        stats
    }
}

/// Apply `rule` with the mean gradient (the shards' sums added in shard
/// order, times `scale`) to every weight, clearing the sums for the next
/// step; whether all updated weights are finite.
fn update(
    rule: &Rule,
    w: &mut Weights,
    m: &mut Weights,
    v: &mut Weights,
    shards: &mut [Shard],
    scale: f32,
) -> bool {
    let (first, rest) = shards.split_first_mut().expect("a batch has a shard");
    let g = &mut first.scratch;
    for other in rest {
        fold_into(&mut g.g_w1t, &mut other.scratch.g_w1t);
        fold_into(&mut g.g_b1, &mut other.scratch.g_b1);
        fold_into(&mut g.g_w2t, &mut other.scratch.g_w2t);
        fold_into(
            std::slice::from_mut(&mut g.g_b2),
            std::slice::from_mut(&mut other.scratch.g_b2),
        );
    }
    let real = FEATURES * w.chunks;
    let finite_w1 = update_block(
        rule,
        &mut w.w1t[..real],
        &mut m.w1t,
        &mut v.w1t,
        &mut g.g_w1t,
        scale,
    );
    finite_w1 && update_small(rule, w, m, v, g, scale)
}

/// [`update`] of the blocks other than `w1`, then `w2`'s mirror.
fn update_small(
    rule: &Rule,
    w: &mut Weights,
    m: &mut Weights,
    v: &mut Weights,
    g: &mut Scratch,
    scale: f32,
) -> bool {
    let finite = [
        update_block(rule, &mut w.b1, &mut m.b1, &mut v.b1, &mut g.g_b1, scale),
        update_block(
            rule,
            &mut w.w2t,
            &mut m.w2t,
            &mut v.w2t,
            &mut g.g_w2t,
            scale,
        ),
        update_block(
            rule,
            std::slice::from_mut(&mut w.b2),
            std::slice::from_mut(&mut m.b2),
            std::slice::from_mut(&mut v.b2),
            std::slice::from_mut(&mut g.g_b2),
            scale,
        ),
    ];
    w.mirror_w2();
    finite.iter().all(|&f| f)
}

/// `into += from`, chunk by chunk, leaving `from` zero.
fn fold_into(into: &mut [Chunk], from: &mut [Chunk]) {
    for (a, b) in into.iter_mut().zip(from.iter_mut()) {
        *a = add(a, b);
        *b = ZERO;
    }
}

multiversion! {
    /// [`update`] on one block of chunks, with `g` the block's summed
    /// gradient (cleared here).
    ///
    /// The mean is `(0 + g) * scale`, exactly the generic path's: it adds
    /// each shard's sum to a zeroed buffer, so it computes `(0 + s0) + s1 ...`
    /// where this computes `0 + ((s0 + s1) + ...)` (see [`fold_into`]).
    /// The two differ only when `s0` is -0, and then only in the sign of a
    /// zero partial sum, which the final `0 +` erases.
    fn update_block(rule: &Rule, w: &mut [Chunk], m: &mut [Chunk], v: &mut [Chunk], g: &mut [Chunk], scale: f32) -> bool {
        let len = w.len();
        let (m, v, g) = (&mut m[..len], &mut v[..len], &mut g[..len]);
        // `w * 0` is NaN exactly where `w` is infinite or NaN.
        let mut poison = ZERO;
        // One loop per rule, so that no loop has a branch inside.
        match *rule {
            Rule::Sgd { lr } => {
                for i in 0..len {
                    let g = mean_gradient(&mut g[i], scale);
                    for l in 0..LANES {
                        sgd(lr, &mut w[i][l], g[l]);
                        poison[l] += w[i][l] * 0.0;
                    }
                }
            }
            Rule::Momentum { lr, mu } => {
                for i in 0..len {
                    let g = mean_gradient(&mut g[i], scale);
                    for l in 0..LANES {
                        momentum(lr, mu, &mut w[i][l], &mut m[i][l], g[l]);
                        poison[l] += w[i][l] * 0.0;
                    }
                }
            }
            Rule::Adam(ref k) => {
                for i in 0..len {
                    let g = mean_gradient(&mut g[i], scale);
                    for l in 0..LANES {
                        adam(k, &mut w[i][l], &mut m[i][l], &mut v[i][l], g[l]);
                        poison[l] += w[i][l] * 0.0;
                    }
                }
            }
        }
        poison.iter().all(|p| *p == 0.0)
    }
}

/// `(0 + sum) * scale`, leaving `sum` zero for the next step.
#[inline(always)]
fn mean_gradient(sum: &mut Chunk, scale: f32) -> Chunk {
    let mut g = add(&ZERO, sum);
    *sum = ZERO;
    for l in 0..LANES {
        g[l] *= scale;
    }
    g
}
