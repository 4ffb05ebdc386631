//! The fast engine: each layer is one f32 matrix product on the whole shard.
//!
//! Rows are samples (`x` is `rows x 784`), so the products are
//! `z1 = x w1^T`, `z2 = a1 w2^T`, `dw2 = dz2^T a1`, `da1 = dz2 w2`,
//! `dw1 = dz1^T x`. Every operand is a plain or transposed view of a
//! contiguous array, which is what ndarray needs to hand the product to
//! `cblas_sgemm` (tests/blas_calls.rs proves it does).
//!
//! Buffers live in a per-thread workspace, so a training loop allocates
//! nothing after its first step.

use super::{argmax, BatchStats, Engine, EngineKind};
use crate::data::{CLASSES, FEATURES};
use crate::model::{Gradients, Mlp};
use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, Axis};
use std::cell::RefCell;

pub struct BlasEngine;

/// Per-thread scratch, resized only when the shard shape changes.
#[derive(Default)]
struct Workspace {
    x: Array2<f32>,
    a1: Array2<f32>,
    z2: Array2<f32>,
    da1: Array2<f32>,
}

impl Workspace {
    fn prepare(&mut self, rows: usize, hidden: usize) {
        if self.x.nrows() != rows {
            self.x = Array2::zeros((rows, FEATURES));
            self.z2 = Array2::zeros((rows, CLASSES));
        }
        if self.a1.dim() != (rows, hidden) {
            self.a1 = Array2::zeros((rows, hidden));
            self.da1 = Array2::zeros((rows, hidden));
        }
    }
}

thread_local! {
    static WORKSPACE: RefCell<Workspace> = RefCell::new(Workspace::default());
}

/// `pixels / 255` as f32, into `out` (same number of elements).
///
/// A plain division rather than [`super::pixel_table`]'s look-up: the same
/// correctly rounded value, but a division vectorises and a table gather does
/// not (the look-up was a quarter of a notebook run's time).
fn to_f32(pixels: &[u8], out: &mut Array2<f32>) {
    let out = out.as_slice_mut().expect("standard layout");
    super::simd::pixels_to_f32(pixels, out);
}

/// Forward pass into the workspace: `ws.a1 = relu(x w1^T + b1)`,
/// `ws.z2 = softmax(a1 w2^T + b2)` (probabilities, row by row).
fn forward(m: &Mlp, pixels: &[u8], ws: &mut Workspace) {
    let rows = pixels.len() / FEATURES;
    ws.prepare(rows, m.hidden());
    to_f32(pixels, &mut ws.x);

    // Seed the output with the bias and let gemm add the product (beta = 1).
    ws.a1
        .rows_mut()
        .into_iter()
        .for_each(|mut r| r.assign(&m.b1));
    general_mat_mul(1.0, &ws.x, &m.w1.t(), 1.0, &mut ws.a1);
    ws.a1.mapv_inplace(|v| v.max(0.0));

    ws.z2
        .rows_mut()
        .into_iter()
        .for_each(|mut r| r.assign(&m.b2));
    general_mat_mul(1.0, &ws.a1, &m.w2.t(), 1.0, &mut ws.z2);
    for mut row in ws.z2.rows_mut() {
        let row = row.as_slice_mut().expect("standard layout");
        softmax_in_place(row);
    }
}

/// Softmax with the maximum subtracted first, so no logit can overflow `exp`.
fn softmax_in_place(z: &mut [f32]) {
    let max = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in z.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    z.iter_mut().for_each(|v| *v *= inv);
}

impl Engine for BlasEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Blas
    }

    fn accumulate(&self, m: &Mlp, x: &[u8], y: &[u8], g: &mut Gradients) -> BatchStats {
        let mut stats = BatchStats::default();
        for (xb, yb) in x.chunks(ROW_BLOCK * FEATURES).zip(y.chunks(ROW_BLOCK)) {
            stats.merge(accumulate_block(m, xb, yb, g));
        }
        stats
    }

    fn probabilities(&self, m: &Mlp, x: &[u8]) -> Array2<f32> {
        let rows = x.len() / FEATURES;
        let mut out = Array2::zeros((rows, CLASSES));
        WORKSPACE.with(|ws| {
            let ws = &mut *ws.borrow_mut();
            let blocks = x.chunks(ROW_BLOCK * FEATURES);
            for (xb, mut ob) in blocks.zip(out.axis_chunks_iter_mut(Axis(0), ROW_BLOCK)) {
                forward(m, xb, ws);
                ob.assign(&ws.z2);
            }
        });
        out
    }
}

/// Rows per set of matrix products. A call with more rows is cut into
/// blocks of this size, so the f32 copy of the rows (784 KiB) stays in L2
/// between the forward and backward products however many rows a caller
/// passes (one 8,400-row block would be 26 MB, and ran at half speed). Equal
/// to the trainer's shard size, so training steps are one block each.
const ROW_BLOCK: usize = crate::train::shard::SHARD_ROWS;

/// [`Engine::accumulate`] on at most [`ROW_BLOCK`] rows.
fn accumulate_block(m: &Mlp, x: &[u8], y: &[u8], g: &mut Gradients) -> BatchStats {
    WORKSPACE.with(|ws| {
        let ws = &mut *ws.borrow_mut();
        forward(m, x, ws);

        // Loss, accuracy, then dz2 = p - onehot(y), in place over p.
        let mut stats = BatchStats {
            rows: y.len(),
            ..Default::default()
        };
        for (mut row, &label) in ws.z2.rows_mut().into_iter().zip(y) {
            let p = row.as_slice_mut().expect("standard layout");
            let label = label as usize;
            stats.loss_sum -= (p[label].max(f32::MIN_POSITIVE) as f64).ln();
            stats.correct += (argmax(p) == label) as usize;
            p[label] -= 1.0;
        }
        let dz2 = &ws.z2;

        general_mat_mul(1.0, &dz2.t(), &ws.a1, 1.0, &mut g.w2);
        g.b2 += &dz2.sum_axis(Axis(0));

        // da1 = dz2 w2, then the ReLU gate: a1 > 0 exactly where z1 > 0.
        general_mat_mul(1.0, dz2, &m.w2, 0.0, &mut ws.da1);
        ndarray::Zip::from(&mut ws.da1)
            .and(&ws.a1)
            .for_each(|d, &a| {
                if a <= 0.0 {
                    *d = 0.0
                }
            });
        general_mat_mul(1.0, &ws.da1.t(), &ws.x, 1.0, &mut g.w1);
        g.b1 += &ws.da1.sum_axis(Axis(0));
        stats
    })
}
