//! The fast engine: each layer is one f32 matrix product on the whole shard.
//!
//! Rows are samples (`x` is `rows x 784`), so the products of layer `l`
//! are `zl = a(l-1) wl^T` forward and `dwl = dzl^T a(l-1)`,
//! `da(l-1) = dzl wl` backward (`a0 = x`). Every operand is a plain or transposed view of a
//! contiguous array, which is what ndarray needs to hand the product to
//! `cblas_sgemm` (tests/blas_calls.rs proves it does).
//!
//! Buffers live in a per-thread workspace, so a training loop allocates
//! nothing after its first step.
//!
//! Everything above the first layer's product is [`Above`], which the
//! sparse engine shares for models of two hidden layers or more (it
//! computes the first layer its own way).

mod resident;

use super::BLAS_PIECES;
use super::{argmax, cut_at, with_scratch, BatchStats, Engine, EngineKind, ResidentTrainer};
use crate::data::FEATURES;
use crate::model::{Gradients, Layers, Mlp};
use crate::optim::Optimizer;
use ndarray::linalg::general_mat_mul;
use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;
use std::cell::RefCell;

pub struct BlasEngine;

/// Per-thread scratch, resized only when the shard or model shape changes.
#[derive(Default)]
struct Workspace {
    x: Array2<f32>,
    /// Everything above the first layer's product.
    above: Above,
    /// `dw1` of one block, transposed (`784 x h1`): see
    /// [`accumulate_block`] for why the product is taken in this orientation.
    dw1_t: Array2<f32>,
}

impl Workspace {
    fn prepare(&mut self, rows: usize, m: &Mlp) {
        if self.x.nrows() != rows {
            self.x = Array2::zeros((rows, FEATURES));
        }
        self.above.prepare(rows, m);
        if BLAS_PIECES.count(m.hidden()) == 1 && self.dw1_t.ncols() != m.hidden() {
            self.dw1_t = Array2::zeros((FEATURES, m.hidden()));
        }
    }
}

/// Multiply-adds from which [`Above::backward`] runs a layer's two
/// products as two tasks (784-256-128-10 at batch 128: 4.2 million each);
/// below, a task's hand-off costs more than it saves.
const PARALLEL_PRODUCT: usize = 1 << 20;

/// The dense part of a pass that is the same whatever computes the first
/// layer: the forward products of layers `2..L` and the softmax, the loss,
/// and the backward products down to `dz1`. This engine fills `a1` by one
/// more product; the sparse engine's deep path fills it from each row's
/// non-zero pixels and shares the rest.
///
/// One block of rows at a time (`rows x width` arrays, reused from block to
/// block); the caller computes the first layer's own gradient from
/// [`Above::dz1`].
#[derive(Default)]
pub(crate) struct Above {
    /// Each hidden layer's output `a1 .. a(L-1)` (`rows x width`).
    acts: Vec<Array2<f32>>,
    /// The last layer's logits, then probabilities, then `dzL` (`rows x 10`).
    out: Array2<f32>,
    /// `da` of each hidden layer, gated into its `dz` in place.
    deltas: Vec<Array2<f32>>,
    /// Column sums of one block (a bias gradient).
    sums: Vec<f32>,
}

impl Above {
    /// Size the arrays for `rows` rows of model `m`.
    pub(crate) fn prepare(&mut self, rows: usize, m: &Mlp) {
        let last = m.layers.len() - 1;
        let widths = m.layers[..last].iter().map(|l| l.outputs());
        if self.acts.len() != last
            || self
                .acts
                .iter()
                .zip(widths.clone())
                .any(|(a, w)| a.dim() != (rows, w))
        {
            self.acts = widths.clone().map(|w| Array2::zeros((rows, w))).collect();
            self.deltas = widths.map(|w| Array2::zeros((rows, w))).collect();
        }
        let classes = m.layers[last].outputs();
        if self.out.dim() != (rows, classes) {
            self.out = Array2::zeros((rows, classes));
        }
    }

    /// `a1 = relu(z1)` (`rows x h1`, standard layout), for the caller to
    /// fill before [`Above::forward`].
    pub(crate) fn a1_mut(&mut self) -> &mut Array2<f32> {
        &mut self.acts[0]
    }

    /// From `a1` up: `acts[l] = relu(a(l-1) wl^T + bl)` for the hidden
    /// layers above the first, then the class probabilities
    /// `softmax(a(L-1) wL^T + bL)`, row by row.
    pub(crate) fn forward(&mut self, m: &Mlp) {
        let last = m.layers.len() - 1;
        for (l, layer) in m.layers[..last].iter().enumerate().skip(1) {
            let (done, rest) = self.acts.split_at_mut(l);
            let a = &mut rest[0];
            // Seed the output with the bias and let gemm add the product (beta = 1).
            seed_rows(a, &layer.b);
            general_mat_mul(1.0, &done[l - 1], &layer.w.t(), 1.0, a);
            relu(a);
        }

        let layer = &m.layers[last];
        seed_rows(&mut self.out, &layer.b);
        general_mat_mul(1.0, &self.acts[last - 1], &layer.w.t(), 1.0, &mut self.out);
        let classes = layer.outputs();
        for row in slice_mut(&mut self.out).chunks_exact_mut(classes) {
            softmax_in_place(row);
        }
    }

    /// The class probabilities [`Above::forward`] left (`rows x 10`).
    pub(crate) fn probabilities(&self) -> &Array2<f32> {
        &self.out
    }

    /// After [`Above::forward`]: the loss and accuracy counts against
    /// labels `y`, the gradients of layers `2..L` added into `g`, and `dz1`
    /// (the gradient at the first layer's outputs, ReLU applied) left for
    /// [`Above::dz1`].
    pub(crate) fn backward(&mut self, m: &Mlp, y: &[u8], g: &mut Gradients) -> BatchStats {
        // Loss, accuracy, then dzL = p - onehot(y), in place over p.
        let mut stats = BatchStats {
            rows: y.len(),
            ..Default::default()
        };
        for (mut row, &label) in self.out.rows_mut().into_iter().zip(y) {
            let p = row.as_slice_mut().expect("standard layout");
            let label = label as usize;
            stats.loss_sum -= (p[label].max(f32::MIN_POSITIVE) as f64).ln();
            stats.correct += (argmax(p) == label) as usize;
            p[label] -= 1.0;
        }

        // From the last layer down: dwl += dzl^T a(l-1), dbl += column sums
        // of dzl, and for l > 1 the next dz = (dzl wl) gated by the ReLU
        // (a > 0 exactly where z > 0). The weight gradient and the next dz
        // are independent products: two tasks, each computed as on its own.
        let last = m.layers.len() - 1;
        for l in (1..=last).rev() {
            let (below, from) = self.deltas.split_at_mut(l);
            let dz = if l == last { &self.out } else { &from[0] };
            let input = &self.acts[l - 1];
            let (gl, sums) = (&mut g.layers[l], &mut self.sums);
            let da = &mut below[l - 1];
            let mut weight_gradient = move || {
                general_mat_mul(1.0, &dz.t(), input, 1.0, &mut gl.w);
                add_column_sums(dz, &mut gl.b, sums);
            };
            let mut next_dz = move || {
                general_mat_mul(1.0, dz, &m.layers[l].w, 0.0, da);
                for (d, &a) in slice_mut(da).iter_mut().zip(slice(input)) {
                    *d = if a <= 0.0 { 0.0 } else { *d };
                }
            };
            if dz.len() * input.ncols() >= PARALLEL_PRODUCT {
                rayon::join(weight_gradient, next_dz);
            } else {
                weight_gradient();
                next_dz();
            }
        }
        stats
    }

    /// `dz1`, and `a1` to overwrite (with the next rows' first layer: `dz1`
    /// no longer needs it), after [`Above::backward`].
    pub(crate) fn dz1_and_a1_mut(&mut self) -> (&Array2<f32>, &mut Array2<f32>) {
        (&self.deltas[0], &mut self.acts[0])
    }

    /// `dz1` (`rows x h1`), after [`Above::backward`].
    pub(crate) fn dz1(&self) -> &Array2<f32> {
        &self.deltas[0]
    }

    /// `db1 += ` the column sums of `dz1`, after [`Above::backward`].
    pub(crate) fn add_b1_gradient(&mut self, db1: &mut Array1<f32>) {
        add_column_sums(&self.deltas[0], db1, &mut self.sums);
    }
}

thread_local! {
    /// This thread's workspaces, one per call in progress on it (see
    /// [`with_scratch`]: a thread waiting for its hidden pieces may run
    /// another shard meanwhile).
    static WORKSPACES: RefCell<Vec<Workspace>> = const { RefCell::new(Vec::new()) };
}

fn with_workspace<R>(f: impl FnOnce(&mut Workspace) -> R) -> R {
    with_scratch(&WORKSPACES, f)
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

/// Forward pass into the workspace: `a1 = relu(x w1^T + b1)`, then
/// [`Above::forward`] (the probabilities in `ws.above`).
fn forward(m: &Mlp, pixels: &[u8], ws: &mut Workspace) {
    let rows = pixels.len() / FEATURES;
    ws.prepare(rows, m);
    to_f32(pixels, &mut ws.x);
    first_layer(m, &ws.x, ws.above.a1_mut());
    ws.above.forward(m);
}

/// `a1 = relu(x w1^T + b1)` for rows `x` (`rows x 784`, converted), the
/// hidden units in pieces ([`BLAS_PIECES`]) on the pool.
fn first_layer(m: &Mlp, x: &Array2<f32>, a1: &mut Array2<f32>) {
    let layer = &m.layers[0];
    // Seed the output with the bias and let gemm add the product (beta = 1).
    seed_rows(a1, &layer.b);
    by_hidden_pieces(
        (a1.view_mut(), Axis(1)),
        (layer.w.view(), Axis(0)),
        &|a: ArrayViewMut2<f32>, w: ArrayView2<f32>| first_layer_piece(x, w, a),
    );
}

/// One piece of the first layer's hidden units: `a = relu(a + x w^T)`,
/// with `a` (`rows x units`, a run of `a1`'s columns) seeded with the
/// piece's biases.
fn first_layer_piece(x: &Array2<f32>, w: ArrayView2<f32>, mut a: ArrayViewMut2<f32>) {
    general_mat_mul(1.0, x, &w.t(), 1.0, &mut a);
    for mut row in a.rows_mut() {
        let row = row.as_slice_mut().expect("a run of a standard array's row");
        for v in row {
            *v = v.max(0.0);
        }
    }
}

/// `f(out piece, input piece)` on matching pieces of the first layer's
/// hidden units ([`BLAS_PIECES`]): `out` cut along `out_axis` and `input`
/// along `input_axis`, the pieces in parallel.
fn by_hidden_pieces<F>(
    (out, out_axis): (ArrayViewMut2<f32>, Axis),
    (input, input_axis): (ArrayView2<f32>, Axis),
    f: &F,
) where
    F: Fn(ArrayViewMut2<f32>, ArrayView2<f32>) + Sync,
{
    let bounds = BLAS_PIECES.bounds(out.len_of(out_axis));
    let starts = || bounds.iter().map(|b| b.start);
    let outs = cut_at(out, starts(), |a, at| a.split_at(out_axis, at));
    let inputs = cut_at(input, starts(), |a, at| a.split_at(input_axis, at));
    outs.into_par_iter().zip(inputs).for_each(|(o, i)| f(o, i));
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

/// `max(v, 0)` in place.
fn relu(a: &mut Array2<f32>) {
    for v in slice_mut(a) {
        *v = v.max(0.0);
    }
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

    /// Whole batches for a wide first layer, whose products are cut into
    /// pieces of hidden units instead.
    fn shard_rows(&self, rows: usize, layers: &Layers) -> usize {
        BLAS_PIECES.shard_rows(rows, layers.hidden()[0])
    }

    /// For batches of one shard whose first layer is cut into pieces: see
    /// [`resident`].
    fn resident(
        &self,
        x: &[u8],
        y: &[u8],
        batch_size: usize,
        model: &Mlp,
        optimizer: &Optimizer,
    ) -> Option<Box<dyn ResidentTrainer>> {
        let h1 = model.hidden();
        if BLAS_PIECES.count(h1) == 1 || self.shard_rows(batch_size, &model.shape()) < batch_size {
            return None;
        }
        Some(Box::new(resident::BlasTrainer::new(x, y, model, optimizer)))
    }

    fn probabilities(&self, m: &Mlp, x: &[u8]) -> Array2<f32> {
        let rows = x.len() / FEATURES;
        let mut out = Array2::zeros((rows, m.layers.last().expect("a layer").outputs()));
        with_workspace(|ws| {
            let blocks = x.chunks(ROW_BLOCK * FEATURES);
            for (xb, mut ob) in blocks.zip(out.axis_chunks_iter_mut(Axis(0), ROW_BLOCK)) {
                forward(m, xb, ws);
                ob.assign(ws.above.probabilities());
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
    with_workspace(|ws| {
        forward(m, x, ws);
        let stats = ws.above.backward(m, y, g);

        // dw1 += dz1^T x. From DW1_TRANSPOSED_ROWS rows up it is taken as
        // its transpose x^T dz1 (a 784 x h1 result) and added back
        // transposed: OpenBLAS runs that orientation about a quarter faster
        // on these shapes (55 against 75 us for 256 rows, 26 against 35 for
        // 128, H = 10, one thread), as its packing and kernel favour the long
        // side as the result's rows. Below it, the transposed add (a few us)
        // costs more than it saves: 32 rows take 6.1 us directly and 6.4
        // transposed, and mini-batch epochs ran 6% slower.
        let dz1 = ws.above.dz1();
        let g1 = &mut g.layers[0];
        let x = &ws.x;
        if BLAS_PIECES.count(m.hidden()) > 1 {
            by_hidden_pieces(
                (g1.w.view_mut(), Axis(0)),
                (dz1.view(), Axis(1)),
                &|mut dw: ArrayViewMut2<f32>, dz: ArrayView2<f32>| {
                    general_mat_mul(1.0, &dz.t(), x, 1.0, &mut dw)
                },
            );
        } else if x.nrows() >= DW1_TRANSPOSED_ROWS {
            general_mat_mul(1.0, &x.t(), dz1, 0.0, &mut ws.dw1_t);
            add_transposed(&ws.dw1_t, &mut g1.w);
        } else {
            general_mat_mul(1.0, &dz1.t(), x, 1.0, &mut g1.w);
        }
        ws.above.add_b1_gradient(&mut g1.b);
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
