//! The sparse engine: each image as its non-zero pixels only.
//!
//! About 80% of an MNIST image's pixels are exactly 0, and a zero pixel adds
//! nothing to `z1 = w1 x` nor to `dw1 += dz1 x^T`. So each row is first
//! reduced to (index, value) pairs of its non-zero pixels, and both
//! first-layer products loop over those pairs only: about 5x fewer
//! multiply-adds than the dense products, with no packing or conversion of
//! the whole row.
//!
//! Layout: `w1` is used transposed (`784 x Hp`, `Hp` = H rounded up to 16
//! lanes, padding zero), so one non-zero pixel touches one contiguous run of
//! `Hp` weights: a broadcast, a multiply and an add per 16 hidden units. The
//! second layer (H -> 10) is kept in 16-lane form too (10 classes padded to
//! 16). The hot loops are compiled for AVX-512, AVX2 and the baseline (see
//! [`crate::simd`]), with the same results on each.
//!
//! Arithmetic is f32 like [`super::blas`]; tests hold both to the f64
//! oracle. Rows are processed one after another in a fixed order, so a shard
//! always gives the same bits.
//!
//! The files, one job each, in the order a reader might take them:
//!
//! - `layout.rs`: the padded layouts (16-lane chunks, `w1` transposed), the
//!   model and gradients in them, and the block transposes in and out;
//! - `gather.rs`: one row's non-zero pixels, by the AVX-512 VBMI2 compress
//!   instructions or a branch-free scalar loop;
//! - `row_set.rs`: many rows' non-zeros gathered once, for the trainers
//!   that pass over them many times;
//! - `kernels.rs`: the per-row arithmetic (the first layer over the
//!   non-zeros, softmax, loss, backward pass), shared by every path;
//! - `head_block.rs`: the same head for sixteen rows at once, one per
//!   lane, for up to 16 hidden units (full-batch training's prepared rows);
//! - `workspace.rs`: the generic [`Engine`] calls' per-thread copy of the
//!   model and their loops over raw rows;
//! - `prepared.rs`: full-batch training's shards converted once
//!   ([`SparseRows`]), with `dw1` summed pixel by pixel;
//! - `update.rs`: the resident trainers' state in the padded layouts and
//!   the optimizer's update on it;
//! - `resident.rs`: the resident trainer for batches over one shard;
//! - `halves.rs`: the resident trainer for batches of up to one shard, `w1`
//!   cut by pixel across two cores; `halves/helper.rs` is its helper
//!   thread and the protocol the two threads follow;
//! - `deep.rs`: models with two hidden layers or more, or one of more than
//!   256 units; a wide first layer is cut into pieces of hidden units. It is
//!   computed over the non-zeros as above, the layers above it by the blas
//!   engine's dense products ([`crate::engine::blas`]); no prepared rows;
//! - `deep_resident.rs`: the resident trainer for those models, for
//!   batches of one shard, with the first layer kept transposed.

use super::{BatchStats, Engine, EngineKind, Pieces, PreparedRows, ResidentTrainer};
use crate::data::{CLASSES, FEATURES};
use crate::model::{Gradients, Layers, Mlp};
use crate::optim::Optimizer;
use ndarray::Array2;
use prepared::accumulate_prepared_rows;
use workspace::{accumulate_rows, probabilities_rows, with_model};

mod deep;
mod deep_resident;
mod gather;
mod halves;
mod head_block;
mod kernels;
mod layout;
mod prepared;
mod resident;
mod row_set;
mod update;
mod workspace;

pub use prepared::SparseRows;

/// Whether a model of `layers` dense layers whose first hidden layer has
/// `hidden` units goes through `deep.rs` (any model of two hidden layers or
/// more, and one of more than [`ONE_LAYER_MAX`] hidden units) rather than
/// the one-hidden-layer paths.
fn takes_deep_path(layers: usize, hidden: usize) -> bool {
    layers != 2 || hidden > ONE_LAYER_MAX
}

/// The widest hidden layer the one-hidden-layer paths take: their loops run
/// over every hidden unit per non-zero pixel, with the weights in L2 only
/// while they are this narrow (784-384-10 took 2.5 s an epoch, against
/// 0.8 s for dense products).
const ONE_LAYER_MAX: usize = 256;

/// How the deep path cuts the first layer into pieces: from 256 units, so
/// that a batch of one shard keeps both cores busy on its first layer
/// (784-256-128-10: each piece's 128 columns of `w1t` take 400 KiB) and
/// stays resident ([`deep_resident`]).
pub const PIECES: Pieces = Pieces { two_from: 256 };

/// The engine over non-zero pixels (see the module documentation).
pub struct SparseEngine;

impl Engine for SparseEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Sparse
    }

    fn accumulate(&self, m: &Mlp, x: &[u8], y: &[u8], g: &mut Gradients) -> BatchStats {
        debug_assert_eq!(x.len(), y.len() * FEATURES);
        if takes_deep_path(m.layers.len(), m.hidden()) {
            return deep::accumulate(m, x, y, g);
        }
        with_model(m, |ws| {
            ws.s.clear_gradients();
            let stats = accumulate_rows(ws, x, y);
            ws.s.add_gradients_to(g);
            stats
        })
    }

    fn prepare(&self, x: &[u8], layers: &Layers) -> Option<PreparedRows> {
        if takes_deep_path(layers.depth(), layers.hidden()[0]) {
            return None;
        }
        SparseRows::new(x).map(PreparedRows::Sparse)
    }

    fn accumulate_prepared(
        &self,
        m: &Mlp,
        rows: &PreparedRows,
        y: &[u8],
        g: &mut Gradients,
    ) -> BatchStats {
        let PreparedRows::Sparse(s) = rows;
        assert_eq!(
            s.rows(),
            y.len(),
            "prepared rows and labels differ in length"
        );
        with_model(m, |ws| {
            ws.s.clear_small_gradients();
            let stats = accumulate_prepared_rows(&ws.w, &mut ws.s, s, y);
            ws.s.add_gradients_to(g);
            stats
        })
    }

    fn resident(
        &self,
        x: &[u8],
        y: &[u8],
        batch_size: usize,
        model: &Mlp,
        optimizer: &Optimizer,
    ) -> Option<Box<dyn ResidentTrainer>> {
        if takes_deep_path(model.layers.len(), model.hidden()) {
            // Batches of one shard: the first layer stays transposed.
            if self.shard_rows(batch_size, &model.shape()) < batch_size {
                return None;
            }
            let trainer = deep_resident::DeepTrainer::new(x, y, model, optimizer)?;
            return Some(Box::new(trainer));
        }
        // One shard per batch: the two halves of `w1` on two threads of
        // their own. More: shards on the rayon pool.
        if batch_size <= crate::engine::SHARD_ROWS {
            let trainer = halves::HalvesTrainer::new(x, y, model, optimizer)?;
            Some(Box::new(trainer))
        } else {
            let trainer = resident::SparseTrainer::new(x, y, model, optimizer)?;
            Some(Box::new(trainer))
        }
    }

    /// Whole batches for the deep path's first layer in pieces, whose
    /// steps are cut into pieces of hidden units instead.
    fn shard_rows(&self, rows: usize, layers: &Layers) -> usize {
        let h1 = layers.hidden()[0];
        match takes_deep_path(layers.depth(), h1) {
            true => PIECES.shard_rows(rows, h1),
            false => crate::engine::shard_rows(rows),
        }
    }

    fn probabilities(&self, m: &Mlp, x: &[u8]) -> Array2<f32> {
        if takes_deep_path(m.layers.len(), m.hidden()) {
            return deep::probabilities(m, x);
        }
        let rows = x.len() / FEATURES;
        let mut out = Array2::zeros((rows, CLASSES));
        with_model(m, |ws| {
            probabilities_rows(ws, x, out.as_slice_mut().expect("standard layout"))
        });
        out
    }
}
