//! The sparse engine's resident trainer for batches of more than one shard
//! (over 256 rows). (Batches of up to 256 rows, the usual 32 among them,
//! train in [`super::halves`].)
//!
//! Through the generic [`Engine`](super::Engine) interface a step converts
//! the weights into the padded layout and the gradients back out, zeroes
//! and scales model-sized buffers, and re-gathers each row's non-zero
//! pixels: at small batches, a cost of the same order as the arithmetic.
//! Here:
//!
//! - the training rows are gathered once, as a [`RowSet`];
//! - the weights and the optimizer's moments live in the padded layout
//!   ([`Weights`]), and the update rule runs there ([`super::update`]);
//! - a batch is cut into shards exactly as the generic path cuts it
//!   ([`crate::engine::shard_rows`]), each shard's gradients go to its own [`Scratch`] on
//!   the rayon pool, and the update adds them up in shard order, then
//!   clears them.
//!
//! So a step gives the generic path's bits exactly (a test checks it), on
//! any thread count.
//!
//! A step over every row in order is full-batch training (the notebook's
//! job), which passes over the same shards hundreds of times: at the first
//! such step each shard is converted once into [`SparseRows`], and such
//! steps then run the prepared pass, as the generic path does with the
//! shards [`crate::train`] prepares for it.
//!
//! Tried and dropped for small batches: cutting a 32-row batch into two
//! 16-row shards for the two cores, with the update split across them too.
//! Slower than one core: two hand-offs per step, and the weights' cache
//! lines moving between the cores. Cutting `w1` by pixel instead keeps each
//! half's lines on one core ([`super::halves`]).

use super::kernels::{accumulate_nonzeros, LossSum};
use super::layout::{add, Chunk, Scratch, Weights, ZERO};
use super::prepared::{accumulate_prepared_rows, SparseRows};
use super::row_set::{RowSet, PREFETCH_AHEAD};
use super::update::{padded_state, store_state, update_block, update_small};
use crate::data::FEATURES;
use crate::engine::awake::Running;
use crate::engine::{pixel_table, BatchStats, ResidentStep, ResidentTrainer};
use crate::model::Mlp;
use crate::optim::{Optimizer, Rule};
use crate::simd::multiversion;
use rayon::prelude::*;

/// One shard's gradients and statistics.
struct Shard {
    scratch: Scratch,
    stats: BatchStats,
}

/// The resident trainer for batches of more than one shard.
pub(super) struct SparseTrainer {
    rows: RowSet,
    labels: Vec<u8>,
    w: Weights,
    /// The optimizer's moments in the same layout (velocity / Adam's `m`,
    /// and Adam's `v`); zero in the padding, where the gradient is zero.
    m: Weights,
    v: Weights,
    shards: Vec<Shard>,
    /// The whole training set in shards, converted for the prepared pass
    /// (empty until the first step over every row in order).
    full: Vec<SparseRows>,
}

impl SparseTrainer {
    /// `None` if the rows' non-zeros overflow the row set's offsets.
    pub(super) fn new(x: &[u8], y: &[u8], model: &Mlp, opt: &Optimizer) -> Option<SparseTrainer> {
        let (rows, w, m, v) = padded_state(x, y, model, opt)?;
        Some(SparseTrainer {
            rows,
            labels: y.to_vec(),
            w,
            m,
            v,
            shards: Vec::new(),
            full: Vec::new(),
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
            full,
        } = self;
        let per_shard = crate::engine::shard_rows(batch.len());
        let n = batch.len().div_ceil(per_shard);
        let whole = batch.len() == rows.len() && batch.iter().enumerate().all(|(i, &r)| i == r);
        if whole && full.is_empty() {
            *full = (0..n)
                .into_par_iter()
                .map(|k| {
                    SparseRows::select(rows, k * per_shard..((k + 1) * per_shard).min(batch.len()))
                })
                .collect();
        }
        let full = &full[..if whole { n } else { 0 }];
        while shards.len() < n {
            shards.push(Shard {
                scratch: Scratch::new(w.hidden),
                stats: BatchStats::default(),
            });
        }
        let shards = &mut shards[..n];
        let weights = &*w;
        let pass = |(k, shard): (usize, &mut Shard)| {
            let span = k * per_shard..((k + 1) * per_shard).min(batch.len());
            // The update left the sums zero.
            shard.stats = match full.get(k) {
                Some(prepared) => {
                    accumulate_prepared_rows(weights, &mut shard.scratch, prepared, &labels[span])
                }
                None => shard_pass(weights, &mut shard.scratch, rows, labels, &batch[span]),
            };
        };
        // A thread out of shards keeps its core awake for the update. One
        // shard per task: left to itself, rayon hands each thread runs of
        // several shards, and a thread with none left waited on the other's
        // last run (8% of the notebook's pass on two threads; a shard per
        // task, 3%).
        let running = Running::new(n);
        shards
            .par_iter_mut()
            .with_max_len(1)
            .enumerate()
            .for_each(|job| running.task(|| pass(job)));
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

/// Pixels in each piece of `w1` that [`update`] folds and updates as one
/// task on the pool: eight pieces, so two threads share them evenly.
const UPDATE_PIXELS: usize = FEATURES / 8;

/// Apply `rule` with the mean gradient (the shards' sums added in shard
/// order, times `scale`) to every weight, clearing the sums for the next
/// step; whether all updated weights are finite.
///
/// `w1`'s block, most of the work, goes in pieces of pixels on the pool:
/// each piece adds up its part of every shard's sums, in shard order, and
/// updates its weights. Every weight's sum and update is the same
/// arithmetic in the same order as in one piece, so the bits do not depend
/// on the pieces or the threads.
fn update(
    rule: &Rule,
    w: &mut Weights,
    m: &mut Weights,
    v: &mut Weights,
    shards: &mut [Shard],
    scale: f32,
) -> bool {
    let real = FEATURES * w.chunks;
    let piece = UPDATE_PIXELS * w.chunks;
    // Each piece's part of every shard's sums, in shard order.
    let mut parts: Vec<Vec<&mut [Chunk]>> = (0..real.div_ceil(piece))
        .map(|_| Vec::with_capacity(shards.len()))
        .collect();
    for shard in shards.iter_mut() {
        let sums = shard.scratch.g_w1t[..real].chunks_mut(piece);
        for (part, sums) in parts.iter_mut().zip(sums) {
            part.push(sums);
        }
    }
    let running = Running::new(parts.len());
    let finite_w1 = w.w1t[..real]
        .par_chunks_mut(piece)
        .zip(m.w1t[..real].par_chunks_mut(piece))
        .zip(v.w1t[..real].par_chunks_mut(piece))
        .zip(parts.par_iter_mut())
        .map(|(((w, m), v), sums)| {
            running.task(|| {
                let (first, rest) = sums.split_first_mut().expect("a batch has a shard");
                for other in rest {
                    fold_into(first, other);
                }
                update_block(rule, w, m, v, first, scale)
            })
        })
        .reduce(|| true, |a, b| a & b);
    let (first, rest) = shards.split_first_mut().expect("a batch has a shard");
    let g = &mut first.scratch;
    for other in rest {
        fold_into(&mut g.g_b1, &mut other.scratch.g_b1);
        fold_into(&mut g.g_w2t, &mut other.scratch.g_w2t);
        fold_into(
            std::slice::from_mut(&mut g.g_b2),
            std::slice::from_mut(&mut other.scratch.g_b2),
        );
    }
    finite_w1 && update_small(rule, w, m, v, g, scale)
}

multiversion! {
    /// `into += from`, chunk by chunk, leaving `from` zero.
    fn fold_into(into: &mut [Chunk], from: &mut [Chunk]) {
        for (a, b) in into.iter_mut().zip(from.iter_mut()) {
            *a = add(a, b);
            *b = ZERO;
        }
    }
}
