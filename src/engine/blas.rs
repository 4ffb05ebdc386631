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
use ndarray::{Array1, Array2, Axis};
use std::cell::RefCell;

pub struct BlasEngine;

/// Per-thread scratch, resized only when the shard shape changes.
#[derive(Default)]
struct Workspace {
    x: Array2<f32>,
    a1: Array2<f32>,
    z2: Array2<f32>,
    da1: Array2<f32>,
    /// `dw1` of one block, transposed (`784 x hidden`): see
    /// [`accumulate_block`] for why the product is taken in this orientation.
    dw1_t: Array2<f32>,
    /// Column sums of one block (a bias gradient).
    sums: Vec<f32>,
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
        if self.dw1_t.ncols() != hidden {
            self.dw1_t = Array2::zeros((FEATURES, hidden));
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
///
/// Page by page, with the page [`PREFETCH_PAGES`] ahead hinted into cache
/// first: the hardware prefetcher stops at each 4 KiB page, and the loads of
/// the rows' bytes were most of this loop's time. About 3% of a dense
/// notebook run (fit 1.29-1.34 s against 1.35-1.39 s, alternating; 1 or 4
/// pages ahead measured between the two).
fn to_f32(pixels: &[u8], out: &mut Array2<f32>) {
    let out = out.as_slice_mut().expect("standard layout");
    let ahead = PREFETCH_PAGES * PAGE;
    for (i, (p, o)) in pixels.chunks(PAGE).zip(out.chunks_mut(PAGE)).enumerate() {
        let next = (i * PAGE + ahead).min(pixels.len());
        super::prefetch_lines(&pixels[next..(next + PAGE).min(pixels.len())]);
        crate::simd::pixels_to_f32(p, o);
    }
}

/// The page size the conversion steps by.
const PAGE: usize = 4096;
/// How far ahead [`to_f32`] prefetches, in pages.
const PREFETCH_PAGES: usize = 2;

/// Forward pass into the workspace: `ws.a1 = relu(x w1^T + b1)`,
/// `ws.z2 = softmax(a1 w2^T + b2)` (probabilities, row by row).
fn forward(m: &Mlp, pixels: &[u8], ws: &mut Workspace) {
    let rows = pixels.len() / FEATURES;
    ws.prepare(rows, m.hidden());
    to_f32(pixels, &mut ws.x);

    // Seed the output with the bias and let gemm add the product (beta = 1).
    seed_rows(&mut ws.a1, &m.b1);
    general_mat_mul(1.0, &ws.x, &m.w1.t(), 1.0, &mut ws.a1);
    for v in slice_mut(&mut ws.a1) {
        *v = v.max(0.0);
    }

    seed_rows(&mut ws.z2, &m.b2);
    general_mat_mul(1.0, &ws.a1, &m.w2.t(), 1.0, &mut ws.z2);
    for row in slice_mut(&mut ws.z2).chunks_exact_mut(CLASSES) {
        softmax_in_place(row);
    }
}

// The small element-wise steps below work on plain slices of the
// workspace's standard-layout arrays: ndarray's general `Zip` and
// `sum_axis` ran them element by element, with a branch each (about 8% of
// a dense notebook run between them, against about 4% as slice loops).

fn slice_mut(a: &mut Array2<f32>) -> &mut [f32] {
    a.as_slice_mut()
        .expect("workspace arrays are standard layout")
}

fn slice(a: &Array2<f32>) -> &[f32] {
    a.as_slice().expect("workspace arrays are standard layout")
}

/// Every row of `out` set to `bias`.
fn seed_rows(out: &mut Array2<f32>, bias: &Array1<f32>) {
    let bias = bias.as_slice().expect("contiguous bias");
    for row in slice_mut(out).chunks_exact_mut(bias.len()) {
        row.copy_from_slice(bias);
    }
}

/// `sums += ` the column sums of `rows` (row-major, `sums.len()` columns),
/// the rows added in order. Summed in `scratch` first and then added, as
/// `sums += &rows.sum_axis(Axis(0))` did, so the bits are the same as that.
fn add_column_sums(rows: &Array2<f32>, sums: &mut Array1<f32>, scratch: &mut Vec<f32>) {
    let width = sums.len();
    scratch.clear();
    scratch.resize(width, 0.0);
    for row in slice(rows).chunks_exact(width) {
        for (s, &v) in scratch.iter_mut().zip(row) {
            *s += v;
        }
    }
    let sums = sums.as_slice_mut().expect("contiguous bias gradient");
    for (s, &v) in sums.iter_mut().zip(scratch.iter()) {
        *s += v;
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
const ROW_BLOCK: usize = crate::engine::SHARD_ROWS;

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
        add_column_sums(dz2, &mut g.b2, &mut ws.sums);

        // da1 = dz2 w2, then the ReLU gate: a1 > 0 exactly where z1 > 0.
        general_mat_mul(1.0, dz2, &m.w2, 0.0, &mut ws.da1);
        for (d, &a) in slice_mut(&mut ws.da1).iter_mut().zip(slice(&ws.a1)) {
            *d = if a <= 0.0 { 0.0 } else { *d };
        }

        // dw1 += dz1^T x. From DW1_TRANSPOSED_ROWS rows up it is taken as
        // its transpose x^T dz1 (a 784 x hidden result) and added back
        // transposed: OpenBLAS runs that orientation about a quarter faster
        // on these shapes (55 against 75 us for 256 rows, 26 against 35 for
        // 128, H = 10, one thread), as its packing and kernel favour the long
        // side as the result's rows. Below it, the transposed add (a few us)
        // costs more than it saves: 32 rows take 6.1 us directly and 6.4
        // transposed, and mini-batch epochs ran 6% slower.
        if ws.x.nrows() >= DW1_TRANSPOSED_ROWS {
            general_mat_mul(1.0, &ws.x.t(), &ws.da1, 0.0, &mut ws.dw1_t);
            add_transposed(&ws.dw1_t, &mut g.w1);
        } else {
            general_mat_mul(1.0, &ws.da1.t(), &ws.x, 1.0, &mut g.w1);
        }
        add_column_sums(&ws.da1, &mut g.b1, &mut ws.sums);
        stats
    })
}

/// The block size from which [`accumulate_block`] takes `dw1` transposed.
const DW1_TRANSPOSED_ROWS: usize = 128;

/// `out += t^T`, for `t` of shape `(cols, rows)` and `out` of `(rows, cols)`,
/// both standard layout.
fn add_transposed(t: &Array2<f32>, out: &mut Array2<f32>) {
    let (rows, cols) = out.dim();
    debug_assert_eq!(t.dim(), (cols, rows));
    let out = slice_mut(out);
    for (k, t_row) in slice(t).chunks_exact(rows).enumerate() {
        for (r, &v) in t_row.iter().enumerate() {
            out[r * cols + k] += v;
        }
    }
}
