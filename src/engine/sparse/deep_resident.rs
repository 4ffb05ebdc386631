//! The resident trainer for the models `deep.rs` serves, for batches that
//! are one shard: the first layer stays transposed (`784 x Hp`, piece by
//! piece) from step to step, with its moments in the same layout, and each
//! piece's update follows its gradient in the same parallel task, sixteen
//! pixels at a time while their gradient is in L1. So `w1`'s gradient is
//! never stored whole, and nothing is transposed between steps; the layers
//! above stay in the model's layout and take [`crate::optim`]'s update.
//!
//! Every sum and update is the generic path's (`deep.rs` through
//! `ShardBuffers` and [`Optimizer::step`]) in the same order, so the
//! weights and moments are the same bits (tests/it/sparse.rs holds them
//! to it), on any thread count.

use super::deep::{column_pieces, forward_rows, w1_gradient_columns, Piece};
use super::layout::{copy_out, transpose_in, Chunk, PIXEL_SLOTS, ZERO};
use super::prepared::Columns;
use super::row_set::RowSet;
use super::update::update_block;
use crate::data::FEATURES;
use crate::engine::awake::{beside_awake, Running};
use crate::engine::blas::Above;
use crate::engine::{ResidentStep, ResidentTrainer};
use crate::model::{Gradients, Mlp};
use crate::optim::{apply_rule_to_sums, Optimizer, Rule};
use crate::simd::multiversion;
use ndarray::ArrayView2;
use rayon::prelude::*;

/// One piece of the first layer, and its moments in the same layout.
struct Resident {
    piece: Piece,
    m: Vec<Chunk>,
    v: Vec<Chunk>,
}

pub(super) struct DeepTrainer {
    /// Every training row's non-zeros, and the labels.
    rows: RowSet,
    labels: Vec<u8>,
    /// The model and the moments, the first layer's weights excepted
    /// (they are in `pieces`; these copies are stale until a write-back).
    model: Mlp,
    m: Mlp,
    v: Mlp,
    pieces: Vec<Resident>,
    above: Above,
    /// One step's rows by row and by pixel, labels, and gradients of the
    /// layers above the first and of `b1`.
    by_row: RowSet<f32>,
    columns: Columns,
    y: Vec<u8>,
    g: Gradients,
}

impl DeepTrainer {
    /// `None` if the rows' non-zeros overflow the row set.
    pub(super) fn new(x: &[u8], y: &[u8], model: &Mlp, opt: &Optimizer) -> Option<DeepTrainer> {
        assert_eq!(
            x.len(),
            y.len() * FEATURES,
            "rows and labels differ in length"
        );
        let shape = model.shape();
        // A rule without moments keeps none; zeros stand in here.
        let moment = |saved: &Mlp| match saved.layers.is_empty() {
            true => Mlp::zeros(&shape),
            false => saved.clone(),
        };
        let (m, v) = (moment(&opt.m), moment(&opt.v));
        let (w1, m1, v1) = (first_weights(model), first_weights(&m), first_weights(&v));
        let pieces = super::PIECES
            .bounds(model.hidden())
            .into_par_iter()
            .map(|b| {
                let mut piece = Piece::new(b.start, b.len());
                let rows = b.start * FEATURES..b.end * FEATURES;
                piece.load(
                    &w1[rows.clone()],
                    &model.layers[0].b.as_slice().unwrap()[b.clone()],
                );
                let transposed = |a: &[f32]| {
                    let mut t = vec![ZERO; PIXEL_SLOTS * piece.chunks];
                    transpose_in(&a[rows.clone()], b.len(), &mut t);
                    t
                };
                let (m, v) = (transposed(m1), transposed(v1));
                Resident { piece, m, v }
            })
            .collect();
        Some(DeepTrainer {
            rows: RowSet::gather_parallel(x)?,
            labels: y.to_vec(),
            model: model.clone(),
            m,
            v,
            pieces,
            above: Above::default(),
            by_row: RowSet::default(),
            columns: Columns::default(),
            y: Vec::new(),
            g: Mlp::zeros(&shape),
        })
    }
}

/// The first layer's weights of `m`, flat.
fn first_weights(m: &Mlp) -> &[f32] {
    m.layers[0].w.as_slice().expect("standard layout")
}

impl ResidentTrainer for DeepTrainer {
    fn step(&mut self, batch: &[usize], rule: &Rule) -> ResidentStep {
        let DeepTrainer {
            rows,
            labels,
            model,
            m,
            v,
            pieces,
            above,
            by_row,
            columns,
            y,
            g,
        } = self;
        by_row.select(rows, batch);
        y.clear();
        y.extend(batch.iter().map(|&r| labels[r]));

        // Forward: the first layer piece by piece, then the layers above.
        above.prepare(batch.len(), model);
        let a1 = column_pieces(above.a1_mut().view_mut(), pieces.iter().map(|r| &r.piece));
        let running = Running::new(pieces.len());
        pieces.par_iter_mut().zip(a1).for_each(|(r, a1)| {
            let p = &mut r.piece;
            running.task(|| forward_rows(&p.w1t, &p.b1, by_row, &mut p.z, p.hidden, a1));
        });
        // The layers above, and the rows sorted by pixel for the first
        // layer's gradient, side by side.
        rayon::join(|| columns.sort(by_row), || above.forward(model));

        // Backward: the layers above and b1 into `g`, and their update (as
        // `Optimizer::step` updates them, from means scaled as the generic
        // path scales them), a pool thread kept awake beside it
        // (`engine::awake`); then each piece of w1's gradient and update
        // together. The pieces take the new biases for the next step.
        let inv = 1.0 / batch.len() as f32;
        let (stats, above_finite) = beside_awake(
            || {
                for layer in &mut g.layers[1..] {
                    layer.w.fill(0.0);
                    layer.b.fill(0.0);
                }
                g.layers[0].b.fill(0.0);
                let stats = above.backward(model, y, g);
                above.add_b1_gradient(&mut g.layers[0].b);
                let mut finite = true;
                let blocks = model
                    .params_mut()
                    .into_iter()
                    .zip(m.params_mut())
                    .zip(v.params_mut())
                    .zip(g.params_mut());
                for (((w, mk), vk), gk) in blocks.skip(1) {
                    finite &= apply_rule_to_sums(rule, (w, mk, vk, gk), inv);
                }
                let b1 = model.layers[0].b.as_slice().expect("contiguous bias");
                for r in pieces.iter_mut() {
                    let p = &mut r.piece;
                    p.set_bias(&b1[p.start..p.start + p.hidden]);
                }
                (stats, finite)
            },
            || {},
        );
        let dz1 = above.dz1().view();
        let columns = &*columns;
        let running = Running::new(pieces.len());
        let first = pieces
            .par_iter_mut()
            .map(|r| {
                let dz1 = dz1.slice(ndarray::s![
                    ..,
                    r.piece.start..r.piece.start + r.piece.hidden
                ]);
                running.task(|| w1_update(dz1, columns, rule, inv, r))
            })
            .reduce(|| true, |a, b| a & b);
        let finite = first & above_finite;
        ResidentStep { stats, finite }
    }

    fn write_back(&mut self, model: &mut Mlp, optimizer: &mut Optimizer) -> bool {
        let h = self.model.hidden();
        let out = |w1t: &dyn Fn(&Resident) -> &[Chunk], into: &mut Mlp| {
            let w1 = into.layers[0].w.as_slice_mut().expect("standard layout");
            for r in &self.pieces {
                let p = &r.piece;
                copy_out(
                    w1t(r),
                    p.hidden,
                    &mut w1[p.start * FEATURES..(p.start + p.hidden) * FEATURES],
                );
            }
        };
        out(&|r| &r.piece.w1t, &mut self.model);
        out(&|r| &r.m, &mut self.m);
        out(&|r| &r.v, &mut self.v);
        debug_assert_eq!(self.model.hidden(), h);
        *model = self.model.clone();
        for (saved, here) in [(&mut optimizer.m, &self.m), (&mut optimizer.v, &self.v)] {
            if !saved.layers.is_empty() {
                *saved = here.clone();
            }
        }
        // Each step reported its own update.
        true
    }
}

multiversion! {
    /// One piece's first-layer gradient for the block, sixteen pixels at a
    /// time, each group's update applied at once (`update_block`: the
    /// mean `(0 + sum) * inv`, as the generic path's zeroed buffer and
    /// scaling give it); whether the piece's weights stay finite.
    fn w1_update(dz1: ArrayView2<f32>, columns: &Columns, rule: &Rule, inv: f32, r: &mut Resident) -> bool {
        let Resident { piece, m, v } = r;
        let chunks = piece.chunks;
        let w1t = &mut piece.w1t;
        let mut finite = true;
        let update = &mut |cols: &mut [Chunk], i0: usize| {
            let at = i0 * chunks..(i0 + 16) * chunks;
            let (w, m, v) = (&mut w1t[at.clone()], &mut m[at.clone()], &mut v[at]);
            finite &= update_block(rule, w, m, v, cols, inv);
        };
        w1_gradient_columns(dz1, chunks, columns, &mut piece.dz1, &mut piece.cols, update);
        finite
    }
}
