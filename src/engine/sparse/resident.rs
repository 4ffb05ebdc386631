//! The sparse engine's mini-batch trainer for batches of more than one
//! shard (over 256 rows), and the pieces both resident trainers share: the
//! padded state and the update rule on it. (Batches of up to 256 rows, the
//! usual 32 among them, train in [`super::halves`].)
//!
//! Through the generic [`Engine`](super::Engine) interface a step converted
//! the weights into the padded layout and the gradients back out, zeroed
//! and scaled model-sized buffers, and re-gathered each row's non-zero
//! pixels: at batch 32, as much time as the arithmetic itself. Here:
//!
//! - the training rows are gathered once, as a [`RowSet`];
//! - the weights and the optimizer's moments live in the padded layout
//!   ([`Weights`]), and the update rule runs there, on the same per-weight
//!   functions as [`Optimizer::step`](crate::optim::Optimizer::step);
//! - a batch is cut into shards exactly as the generic path cuts it
//!   ([`SHARD_ROWS`]), each shard's gradients go to its own [`Scratch`] on
//!   the rayon pool, and the update adds them up in shard order, then
//!   clears them.
//!
//! So a step gives the generic path's bits exactly (a test checks it), on
//! any thread count.
//!
//! Tried and dropped for small batches: cutting a 32-row batch into two
//! 16-row shards for the two cores, with the update split across them too.
//! Slower than one core (20.6 against 16.4 ms per epoch): two hand-offs per
//! step, and the weights' cache lines moving between the cores. Cutting `w1`
//! by pixel instead keeps each half's lines on one core ([`super::halves`]).

use super::{
    accumulate_nonzeros, add, multiversion, pixel_table, Chunk, LossSum, RowSet, Scratch, Weights,
    LANES, PREFETCH_AHEAD, ZERO,
};
use crate::data::FEATURES;
use crate::engine::SHARD_ROWS;
use crate::engine::{BatchStats, ResidentStep, ResidentTrainer};
use crate::model::Mlp;
use crate::optim::{adam, momentum, sgd};
use crate::optim::{Optimizer, Rule};
use rayon::prelude::*;

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
        let (rows, w, m, v) = padded_state(x, y, model, opt)?;
        Some(SparseTrainer {
            rows,
            labels: y.to_vec(),
            w,
            m,
            v,
            shards: Vec::new(),
        })
    }
}

/// The rows as a [`RowSet`], and the model and the optimizer's moments in
/// the padded layout. `None` if the rows' non-zeros overflow the row set.
pub(super) fn padded_state(
    x: &[u8],
    y: &[u8],
    model: &Mlp,
    opt: &Optimizer,
) -> Option<(RowSet, Weights, Weights, Weights)> {
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
    Some((rows, w, moment(&opt.m), moment(&opt.v)))
}

/// [`padded_state`]'s inverse: the model and moments back, exactly.
pub(super) fn store_state(
    w: &Weights,
    m: &Weights,
    v: &Weights,
    model: &mut Mlp,
    opt: &mut Optimizer,
) {
    w.store(model);
    for (padded, moment) in [(m, &mut opt.m), (v, &mut opt.v)] {
        if moment.hidden() == w.hidden {
            padded.store(moment);
        }
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

    fn write_back(&mut self, model: &mut Mlp, optimizer: &mut Optimizer) -> bool {
        store_state(&self.w, &self.m, &self.v, model, optimizer);
        // Each step reported its own update.
        true
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
            // See PREFETCH_AHEAD.
            if let Some(&ahead) = batch.get(j + PREFETCH_AHEAD) {
                rows.prefetch(ahead);
            }
            let (index, value, _) = rows.row(r);
            let row = (index, value);
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
pub(super) fn update_small(
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
    pub(super) fn update_block(rule: &Rule, w: &mut [Chunk], m: &mut [Chunk], v: &mut [Chunk], g: &mut [Chunk], scale: f32) -> bool {
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
