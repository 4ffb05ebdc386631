//! Models with more than one hidden layer, or a wide one: the sparse first
//! layer, and the layers above it as the dense engine's products.
//!
//! Rows go in blocks of at most [`SHARD_ROWS`]. For each block:
//!
//! - the rows' non-zero pixels are gathered once, by row ([`RowSet`]) and
//!   then by pixel ([`Columns`]);
//! - forward, `z1 = b1 + sum over non-zeros of value * w1[:, i]` row by
//!   row, with `w1` transposed and padded (`w1t`, as [`super::layout`]
//!   keeps it) so each non-zero reads one contiguous run of weights; then
//!   the ReLU, into `a1`;
//! - [`Above`] (shared with [`crate::engine::blas`]) runs layers `2..L`, the
//!   softmax and loss, and the backward products down to `dz1`, through
//!   OpenBLAS in the blas build;
//! - `db1` is `dz1`'s column sums ([`Above::add_b1_gradient`]), and `dw1`
//!   is summed pixel by pixel over the non-zeros only: pixel `i`'s column
//!   is the sum of `value * dz1[row]` over the rows that have it lit, one
//!   contiguous run of `h1` sums; sixteen such columns at a time are added
//!   into the model-layout gradient by 16 x 16 block transposes.
//!
//! The first layer's hidden units are cut into pieces
//! ([`super::PIECES`]: one below 256 units), each with its
//! own `w1t`, small enough to stay in L2 while every row of the block
//! passes over it; the pieces of both first-layer steps run in parallel.
//!
//! Each thread keeps its workspace between calls, so training allocates
//! nothing once the first block is seen; a piece's `w1t` is rebuilt only
//! when its weights' bits change (a full-batch step hands each thread the
//! same weights for many shards). Every sum runs in a fixed order (pixels
//! ascending within a row, rows ascending within a pixel), whatever the
//! pieces, so a block always gives the same bits, on any thread and at any
//! vector width; the first layer's sums are ordered differently from the
//! blas engine's, so the two agree to f32 rounding, not bit for bit.

use super::gather::NonZeros;
use super::layout::{
    add_columns_transposed, lanes, lanes_mut, slot, transpose_in, Chunk, LANES, PIXEL_SLOTS, ZERO,
};
use super::prepared::Columns;
use super::row_set::RowSet;
use crate::data::FEATURES;
use crate::engine::blas::Above;
use crate::engine::{cut_at, with_scratch, BatchStats, SHARD_ROWS};
use crate::model::{Gradients, Mlp};
use crate::simd::multiversion;
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;
use std::cell::RefCell;

/// One thread's state for these models, reused from call to call.
#[derive(Default)]
struct Workspace {
    /// The first layer, piece by piece.
    pieces: Vec<Piece>,
    /// The layers above the first.
    above: Above,
    /// The block's non-zeros by row and by pixel.
    by_row: RowSet<f32>,
    columns: Columns,
    /// One row's non-zeros, as they are gathered.
    nz: NonZeros,
}

/// One piece of the first layer's hidden units.
#[derive(Default)]
pub(super) struct Piece {
    /// The piece's first hidden unit, its width `h`, and `Hp / 16` chunks.
    pub(super) start: usize,
    pub(super) hidden: usize,
    pub(super) chunks: usize,
    /// The piece of `w1` transposed, padded: pixel `i`'s weights are
    /// chunks `i * chunks..(i + 1) * chunks` ([`PIXEL_SLOTS`] rows, the
    /// last unused).
    pub(super) w1t: Vec<Chunk>,
    pub(super) b1: Vec<Chunk>,
    /// One row's first-layer sums.
    pub(super) z: Vec<Chunk>,
    /// The block's `dz1` for this piece, padded (`rows x chunks`): the rows
    /// aligned to cache lines, which `dz1` as [`Above`] leaves it need not be.
    pub(super) dz1: Vec<Chunk>,
    /// Sixteen pixels' columns of the block's `dw1` (`16 x chunks`).
    pub(super) cols: Vec<Chunk>,
}

impl Piece {
    pub(super) fn new(start: usize, hidden: usize) -> Piece {
        let chunks = hidden.div_ceil(LANES);
        Piece {
            start,
            hidden,
            chunks,
            w1t: vec![ZERO; PIXEL_SLOTS * chunks],
            b1: vec![ZERO; chunks],
            z: vec![ZERO; chunks],
            cols: vec![ZERO; LANES * chunks],
            ..Piece::default()
        }
    }

    /// Make `w1` (this piece's rows of the model's `w1`) and `b1` the
    /// weights in `w1t` and `b1`.
    pub(super) fn load(&mut self, w1: &[f32], b1: &[f32]) {
        if !self.holds(w1) {
            transpose_in(w1, self.hidden, &mut self.w1t);
        }
        self.set_bias(b1);
    }

    /// This piece's `b1` (its `h` biases) into its padded chunks.
    pub(super) fn set_bias(&mut self, b1: &[f32]) {
        for (j, &b) in b1.iter().enumerate() {
            self.b1[j / LANES][j % LANES] = b;
        }
    }
}

impl Piece {
    /// Whether `w1t` holds `w1`'s bits already. Compared in `w1`'s order,
    /// leaving at the first difference: after an update, the first weight.
    /// (A copy of the weights to compare against cost a tenth of a step.)
    fn holds(&self, w1: &[f32]) -> bool {
        let (hp, t) = (self.chunks * LANES, lanes(&self.w1t));
        w1.chunks_exact(FEATURES).enumerate().all(|(j, row)| {
            let column = t[j..].iter().step_by(hp);
            row.iter()
                .zip(column)
                .all(|(v, t)| v.to_bits() == t.to_bits())
        })
    }
}

impl Workspace {
    /// Make the first layer of `m` the one the pieces hold.
    fn load(&mut self, m: &Mlp) {
        let first = &m.layers[0];
        let bounds = super::PIECES.bounds(first.outputs());
        let same = self.pieces.len() == bounds.len()
            && self
                .pieces
                .iter()
                .zip(&bounds)
                .all(|(p, b)| p.start == b.start && p.hidden == b.len());
        if !same {
            self.pieces = bounds
                .iter()
                .map(|b| Piece::new(b.start, b.len()))
                .collect();
        }
        let w1 = first.w.as_slice().expect("standard layout");
        let b1 = first.b.as_slice().expect("contiguous bias");
        self.pieces.par_iter_mut().for_each(|p| {
            let units = p.start..p.start + p.hidden;
            p.load(
                &w1[units.start * FEATURES..units.end * FEATURES],
                &b1[units],
            );
        });
    }

    /// `a1 = relu(z1)` for the rows in `by_row`, into [`Above`], piece by
    /// piece in parallel.
    fn forward_first(&mut self) {
        let a1 = self.above.a1_mut().view_mut();
        let by_row = &self.by_row;
        let a1 = column_pieces(a1, self.pieces.iter());
        self.pieces
            .par_iter_mut()
            .zip(a1)
            .for_each(|(p, a1)| forward_rows(&p.w1t, &p.b1, by_row, &mut p.z, p.hidden, a1));
    }

    /// Forward and backward over one block of rows, adding the summed
    /// gradients into `g`.
    fn accumulate_block(&mut self, m: &Mlp, x: &[u8], y: &[u8], g: &mut Gradients) -> BatchStats {
        self.by_row.regather(x, &mut self.nz);
        self.columns.sort(&self.by_row);
        self.above.prepare(y.len(), m);
        self.forward_first();
        self.above.forward(m);
        let stats = self.above.backward(m, y, g);
        let g1 = &mut g.layers[0];
        self.above.add_b1_gradient(&mut g1.b);
        let dz1 = self.above.dz1().view();
        let columns = &self.columns;
        let w = g1.w.as_slice_mut().expect("standard layout");
        let starts = self.pieces.iter().map(|p| p.start * FEATURES);
        let w_pieces = cut_at(w, starts, |w, at| w.split_at_mut(at));
        self.pieces.par_iter_mut().zip(w_pieces).for_each(|(p, w)| {
            let dz1 = dz1.slice(ndarray::s![.., p.start..p.start + p.hidden]);
            w1_gradient(dz1, p.chunks, columns, &mut p.dz1, &mut p.cols, w);
        });
        stats
    }
}

/// `a1`'s columns cut as the pieces cut the hidden units.
pub(super) fn column_pieces<'a, 'p>(
    a1: ArrayViewMut2<'a, f32>,
    pieces: impl DoubleEndedIterator<Item = &'p Piece>,
) -> Vec<ArrayViewMut2<'a, f32>> {
    cut_at(a1, pieces.map(|p| p.start), |a, at| a.split_at(Axis(1), at))
}

thread_local! {
    /// This thread's workspaces, one per call in progress on it (see
    /// [`with_scratch`]).
    static WORKSPACES: RefCell<Vec<Workspace>> = const { RefCell::new(Vec::new()) };
}

/// [`crate::engine::Engine::accumulate`] for these models.
pub(super) fn accumulate(m: &Mlp, x: &[u8], y: &[u8], g: &mut Gradients) -> BatchStats {
    with_scratch(&WORKSPACES, |ws| {
        ws.load(m);
        let mut stats = BatchStats::default();
        for (xb, yb) in x.chunks(SHARD_ROWS * FEATURES).zip(y.chunks(SHARD_ROWS)) {
            stats.merge(ws.accumulate_block(m, xb, yb, g));
        }
        stats
    })
}

/// [`crate::engine::Engine::probabilities`] for these models.
pub(super) fn probabilities(m: &Mlp, x: &[u8]) -> Array2<f32> {
    let rows = x.len() / FEATURES;
    let classes = m.layers.last().expect("a layer").outputs();
    let mut out = Array2::zeros((rows, classes));
    with_scratch(&WORKSPACES, |ws| {
        ws.load(m);
        let blocks = x.chunks(SHARD_ROWS * FEATURES);
        for (xb, mut ob) in blocks.zip(out.axis_chunks_iter_mut(Axis(0), SHARD_ROWS)) {
            ws.by_row.regather(xb, &mut ws.nz);
            ws.above.prepare(ob.nrows(), m);
            ws.forward_first();
            ws.above.forward(m);
            ob.assign(ws.above.probabilities());
        }
    });
    out
}

multiversion! {
    /// `a1 = relu(z1)` of every row of a block for one piece of the hidden
    /// units (`a1` is `rows x h`).
    pub(super) fn forward_rows(w1t: &[Chunk], b1: &[Chunk], rows: &RowSet<f32>, z: &mut [Chunk], h: usize, a1: ArrayViewMut2<f32>) {
        forward_rows_inline(w1t, b1, rows, z, h, a1);
    }
}

/// [`forward_rows`]' body, compiled into each caller.
#[inline(always)]
fn forward_rows_inline(
    w1t: &[Chunk],
    b1: &[Chunk],
    rows: &RowSet<f32>,
    z: &mut [Chunk],
    h: usize,
    mut a1: ArrayViewMut2<f32>,
) {
    let (w1t, b1, z) = (lanes(w1t), lanes(b1), lanes_mut(z));
    for (r, mut out) in a1.rows_mut().into_iter().enumerate() {
        let out = out.as_slice_mut().expect("rows of a1 are contiguous");
        let (index, value, _) = rows.row(r);
        first_layer_row(w1t, b1, (index, value), z, &mut out[..h]);
    }
}

/// One row's `relu(b1 + sum of value * w1t[index])` into `out` (`h1`
/// values), the sums kept in `z` (`Hp` lanes, in L1). Each lane's sum runs
/// over the non-zeros in pixel order, then adds the bias.
///
/// Every loop here runs along a flat run of lanes, which the compiler turns
/// into whole-register operations. (Written over 16-lane chunks, the loops
/// were vectorised across the chunks or across the non-zeros instead,
/// loading lane by lane with gathers.) Four non-zeros go into one pass over
/// the sums, added one after another, so each sum is loaded and stored once
/// per four.
#[inline(always)]
fn first_layer_row(
    w1t: &[f32],
    b1: &[f32],
    (index, value): (&[u16], &[f32]),
    z: &mut [f32],
    out: &mut [f32],
) {
    let hp = b1.len();
    let w1t = &w1t[..PIXEL_SLOTS * hp];
    let z = &mut z[..hp];
    z.fill(0.0);
    let quads = index.chunks_exact(4).zip(value.chunks_exact(4));
    for (i, v) in quads {
        let (w0, w1) = (weights(w1t, hp, i[0]), weights(w1t, hp, i[1]));
        let (w2, w3) = (weights(w1t, hp, i[2]), weights(w1t, hp, i[3]));
        let lanes = z.iter_mut().zip(w0).zip(w1).zip(w2).zip(w3);
        for ((((s, &x0), &x1), &x2), &x3) in lanes {
            *s = (((*s + v[0] * x0) + v[1] * x1) + v[2] * x2) + v[3] * x3;
        }
    }
    let tail = index.len() / 4 * 4;
    for (&i, &v) in index[tail..].iter().zip(&value[tail..]) {
        for (s, &x) in z.iter_mut().zip(weights(w1t, hp, i)) {
            *s += v * x;
        }
    }
    for ((o, &s), &b) in out.iter_mut().zip(z.iter()).zip(b1) {
        *o = (s + b).max(0.0);
    }
}

/// Pixel `i`'s row of `w1t` (`hp` lanes).
#[inline(always)]
fn weights(w1t: &[f32], hp: usize, i: u16) -> &[f32] {
    let at = slot(i) * hp;
    &w1t[at..at + hp]
}

multiversion! {
    /// `dw1 += ` the block's first-layer weight gradient for one piece of
    /// the hidden units, `w` being its rows of `dw1` (`h x 784`) and `dz1`
    /// its columns of the block's `dz1` (`rows x h`). `dz1` is first copied
    /// into aligned, padded rows; then sixteen pixels at a time, each
    /// pixel's column is summed over the rows that have it lit, into
    /// `cols` (`16 x chunks`, in L1), and the sixteen columns are added
    /// into `w` by 16 x 16 block transposes.
    fn w1_gradient(dz1: ArrayView2<f32>, chunks: usize, columns: &Columns, dz1_rows: &mut Vec<Chunk>, cols: &mut [Chunk], w: &mut [f32]) {
        w1_gradient_inline(dz1, chunks, columns, dz1_rows, cols, w);
    }
}

/// [`w1_gradient`]'s body, compiled into each caller.
#[inline(always)]
fn w1_gradient_inline(
    dz1: ArrayView2<f32>,
    chunks: usize,
    columns: &Columns,
    dz1_rows: &mut Vec<Chunk>,
    cols: &mut [Chunk],
    w: &mut [f32],
) {
    let h = dz1.ncols();
    let add = &mut |cols: &mut [Chunk], i0: usize| add_columns_transposed(cols, i0, h, w);
    w1_gradient_columns(dz1, chunks, columns, dz1_rows, cols, add);
}

/// The block's first-layer weight gradient for one piece, sixteen pixels'
/// columns at a time: `each(cols, i0)` receives pixels `i0..i0 + 16`'s
/// columns (`16 x chunks`, padded lanes zero). `dz1` (`rows x h`) is first
/// copied into aligned, padded rows (`dz1_rows`).
#[inline(always)]
pub(super) fn w1_gradient_columns(
    dz1: ArrayView2<f32>,
    chunks: usize,
    columns: &Columns,
    dz1_rows: &mut Vec<Chunk>,
    cols: &mut [Chunk],
    each: &mut dyn FnMut(&mut [Chunk], usize),
) {
    let (rows, h) = dz1.dim();
    dz1_rows.resize(rows * chunks, ZERO);
    let hp = chunks * LANES;
    let padded = lanes_mut(&mut dz1_rows[..rows * chunks]);
    for (from, to) in dz1.rows().into_iter().zip(padded.chunks_exact_mut(hp)) {
        to[..h].copy_from_slice(from.as_slice().expect("rows of dz1 are contiguous"));
    }
    let dz1 = lanes(&dz1_rows[..rows * chunks]);
    let cols = &mut cols[..LANES * chunks];
    for i0 in (0..FEATURES).step_by(LANES) {
        for (p, column) in lanes_mut(cols).chunks_exact_mut(hp).enumerate() {
            pixel_gradient(dz1, hp, columns.column(i0 + p), column);
        }
        each(cols, i0);
    }
}

/// One pixel's column of `dw1`: `out` = the sum over its `(row, value)`
/// entries, rows ascending, of `value * dz1[row]` (`hp` lanes each). As in
/// [`first_layer_row`], flat runs of lanes and four entries per pass.
#[inline(always)]
fn pixel_gradient(dz1: &[f32], hp: usize, (rows, values): (&[u16], &[f32]), out: &mut [f32]) {
    let out = &mut out[..hp];
    out.fill(0.0);
    let quads = rows.chunks_exact(4).zip(values.chunks_exact(4));
    for (r, v) in quads {
        let (d0, d1) = (row_of(dz1, hp, r[0]), row_of(dz1, hp, r[1]));
        let (d2, d3) = (row_of(dz1, hp, r[2]), row_of(dz1, hp, r[3]));
        let lanes = out.iter_mut().zip(d0).zip(d1).zip(d2).zip(d3);
        for ((((s, &x0), &x1), &x2), &x3) in lanes {
            *s = (((*s + v[0] * x0) + v[1] * x1) + v[2] * x2) + v[3] * x3;
        }
    }
    let tail = rows.len() / 4 * 4;
    for (&r, &v) in rows[tail..].iter().zip(&values[tail..]) {
        for (s, &x) in out.iter_mut().zip(row_of(dz1, hp, r)) {
            *s += v * x;
        }
    }
}

/// Row `r` of `dz1` (`hp` lanes).
#[inline(always)]
fn row_of(dz1: &[f32], hp: usize, r: u16) -> &[f32] {
    let at = r as usize * hp;
    &dz1[at..at + hp]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Init, Layers};
    use crate::testutil::random_batch;

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|v| v.to_bits()).collect()
    }

    /// The first layer's forward sums and weight gradient, compiled for the
    /// widest vectors this CPU has and for the baseline, give the same
    /// bits, as the module promises: widths of one chunk, several, and one
    /// with a partial last chunk.
    #[test]
    fn the_first_layer_gives_the_same_bits_at_every_level() {
        for (h, seed) in [(16, 1), (40, 2), (200, 3)] {
            let layers = Layers::new(vec![h, 12]).unwrap();
            let m = Mlp::init(&layers, Init::He, seed).unwrap();
            let (x, _) = random_batch(90, seed);
            let rows = x.len() / FEATURES;
            let mut ws = Workspace::default();
            ws.load(&m);
            ws.by_row.regather(&x, &mut ws.nz);
            ws.columns.sort(&ws.by_row);
            let p = &mut ws.pieces[0];
            assert_eq!(p.hidden, h);
            let chunks = p.chunks;

            let mut best = Array2::zeros((rows, h));
            forward_rows(&p.w1t, &p.b1, &ws.by_row, &mut p.z, h, best.view_mut());
            let mut plain = Array2::zeros((rows, h));
            forward_rows_inline(&p.w1t, &p.b1, &ws.by_row, &mut p.z, h, plain.view_mut());
            assert!(best.iter().any(|&v| v > 0.0));
            let (best, plain) = (
                best.into_raw_vec_and_offset().0,
                plain.into_raw_vec_and_offset().0,
            );
            assert_eq!(bits(&best), bits(&plain), "forward, H={h}");

            let dz1 = Array2::from_shape_fn((rows, h), |(r, j)| {
                (((r * h + j) * 7919) % 101) as f32 * 0.013 - 0.6
            });
            let mut best = vec![0.5; h * FEATURES];
            let (d, c) = (&mut p.dz1, &mut p.cols);
            w1_gradient(dz1.view(), chunks, &ws.columns, d, c, &mut best);
            let mut plain = vec![0.5; h * FEATURES];
            w1_gradient_inline(dz1.view(), chunks, &ws.columns, d, c, &mut plain);
            assert!(best.iter().any(|&v| v != 0.5));
            assert_eq!(bits(&best), bits(&plain), "dw1, H={h}");
        }
    }
}
