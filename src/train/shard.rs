//! One batch's gradients, sharded across rayon threads and reduced in a
//! fixed order.
//!
//! A batch is cut into shards of [`crate::engine::SHARD_ROWS`] rows, or into two halves
//! when it has at most that many, so that a batch of 128 keeps two cores
//! busy too ([`Engine::shard_rows`]; an engine may instead split a wide
//! layer's products across the cores inside one shard). The cut depends
//! only on the batch size and the shape, never on the thread count; each
//! shard's gradient is computed into its own buffer, and the buffers are
//! summed in shard order.
//! So `--threads 1` and `--threads 8` add the same numbers in the same order
//! and give bit-identical weights: only who computes which shard changes.

use crate::data::FEATURES;
use crate::engine::{BatchStats, Engine, PreparedRows};
use crate::model::{Gradients, Layers, Mlp};
use crate::optim::PIECE;
use rayon::prelude::*;

/// Reusable per-shard gradient buffers.
#[derive(Debug, Default)]
pub struct ShardBuffers {
    shards: Vec<Gradients>,
    /// Each shard's loss/accuracy counts, kept so a step allocates nothing.
    stats: Vec<BatchStats>,
}

impl ShardBuffers {
    /// Mean gradients of the loss over rows `x` (labels `y`) into `out`, and
    /// the batch's loss/accuracy counts. `prepared`, if given, is
    /// [`prepare`]'s result for the same `x` and engine: the engine then
    /// computes from it (same bits, less work).
    pub fn mean_gradients(
        &mut self,
        engine: &dyn Engine,
        model: &Mlp,
        x: &[u8],
        y: &[u8],
        prepared: Option<&[PreparedRows]>,
        out: &mut Gradients,
    ) -> BatchStats {
        let rows = y.len();
        debug_assert_eq!(x.len(), rows * FEATURES);
        let per_shard = engine.shard_rows(rows, &model.shape());
        let n = rows.div_ceil(per_shard);
        let mut stats = BatchStats::default();
        if let Some(p) = prepared {
            assert_eq!(p.len(), n, "prepared shards do not match the batch");
        }
        let shard = |i: usize, xs: &[u8], ys: &[u8], g: &mut Gradients| match prepared {
            Some(p) => engine.accumulate_prepared(model, &p[i], ys, g),
            None => engine.accumulate(model, xs, ys, g),
        };
        let inv = 1.0 / rows as f32;
        if n <= 1 {
            out.fill(0.0);
            stats = shard(0, x, y, out);
            reduce(out, &[], inv);
        } else {
            if self.shards.len() < n || !self.shards[0].same_shape(model) {
                let shape = model.shape();
                self.shards = (0..n).map(|_| Mlp::zeros(&shape)).collect();
                self.stats = vec![BatchStats::default(); n];
            }
            self.shards[..n]
                .par_iter_mut()
                .zip(&mut self.stats[..n])
                .zip(x.par_chunks(per_shard * FEATURES))
                .zip(y.par_chunks(per_shard))
                .enumerate()
                .for_each(|(i, (((g, s), xs), ys))| {
                    g.fill(0.0);
                    *s = shard(i, xs, ys, g);
                });
            for s in &self.stats[..n] {
                stats.merge(*s);
            }
            reduce(out, &self.shards[..n], inv);
        }
        stats
    }
}

/// The fixed-order reduction: `out = (0 + shards[0] + shards[1] + ...) *
/// inv`, each element's sum in shard order; with no shards, `out *= inv`.
/// The arithmetic is per element, so pieces of [`PIECE`] elements go to
/// rayon's threads in any order with the same bits.
fn reduce(out: &mut Gradients, shards: &[Gradients], inv: f32) {
    let sources: Vec<Vec<&[f32]>> = shards.iter().map(|s| s.params()).collect();
    for (j, block) in out.params_mut().into_iter().enumerate() {
        block
            .par_chunks_mut(PIECE)
            .enumerate()
            .for_each(|(c, piece)| {
                let at = c * PIECE;
                let pieces: Vec<&[f32]> = sources.iter().map(|s| &s[j][at..]).collect();
                crate::simd::sum_scaled(piece, &pieces, inv);
            });
    }
}

/// The engine's prepared form of each shard of `x` (cut as
/// [`ShardBuffers::mean_gradients`] cuts it), computed in parallel; `None`
/// if the engine prepares nothing. Worth it when one batch is used for many
/// steps: full-batch training.
pub fn prepare(engine: &dyn Engine, x: &[u8], layers: &Layers) -> Option<Vec<PreparedRows>> {
    let shards: Vec<Option<PreparedRows>> = x
        .par_chunks(engine.shard_rows(x.len() / FEATURES, layers) * FEATURES)
        .map(|xs| engine.prepare(xs, layers))
        .collect();
    shards.into_iter().collect()
}
