//! Full-batch training's prepared rows: a shard's rows converted once for
//! the hundreds of passes over it ([`SparseRows`]), and the pass over them.
//!
//! The forward passes read each row's non-zeros; the first layer's weight
//! gradient reads the same non-zeros grouped by pixel, so each pixel's
//! column of `dw1` is one running sum kept in a register. Both run over the
//! rows in order, so a pass gives the bits of the generic path on the raw
//! rows.

use super::gather::PixelValue;
use super::head_block::{class_major, head_block, unit_major, BLOCK};
use super::kernels::{backward_head, forward_from_sums, sum_over, LossSum};
use super::layout::{
    axpy, chunk_at, chunk_offset, slot, Chunk, Scratch, Weights, CHUNK_BYTES, OFFSET_TABLE,
    PIXEL_SLOTS, ZERO,
};
use super::row_set::RowSet;
use crate::data::FEATURES;
use crate::engine::{pixel_table, BatchStats};
use crate::simd::multiversion;
use std::ops::Range;

/// Rows converted once for many passes (full-batch training): each row's
/// non-zero pixels (for the forward pass), and the same non-zeros grouped
/// by pixel (for the first layer's weight gradient). At most [`MAX_ROWS`]
/// rows.
///
/// Pixels and rows are kept as byte offsets (`64 i` for pixel or row `i`):
/// with up to 16 hidden units, the offset of a pixel's weights in `w1t` and
/// of a row's `dz1` in its table ([`chunk_at`]). Values are the pixel
/// bytes, scaled by the pixel table where they are used: 3 bytes a non-zero
/// in each order instead of 6, since every pass streams all of a step's
/// shards through the caches.
///
/// Grouped by pixel, `dw1`'s column for pixel `i` is one running sum over
/// the rows that have `i` lit, kept in a register and stored once, instead
/// of a load, add and store per non-zero as on the raw rows. The sum still
/// runs over the rows in order, so the result is bit-identical to
/// [`super::SparseEngine`]'s `accumulate` on the raw rows (a test checks it).
pub struct SparseRows {
    /// Each row's non-zeros, for the forward passes: row `r`'s pixels (as
    /// offsets) are `at[start[r]..start[r + 1]]`, ascending, and their
    /// values the same range of `value`.
    start: Vec<u32>,
    at: Vec<u16>,
    value: Vec<u8>,
    /// The non-zeros grouped by pixel, rows ascending, in groups of four
    /// pixels `group_pixels[g]`: while all four have entries left, one entry
    /// of each, side by side (`quad_row[k][j]` is the k-th row of the
    /// group's pixel `j`, for `k` in `group_start[g]..group_start[g + 1]`),
    /// so the per-pixel sums read one stream instead of eight; then each
    /// pixel's remaining entries, `tail_row[tail_start[t]..tail_start[t +
    /// 1]]` for `t = 4g + j`. The pixels are grouped in order of their
    /// number of entries, so a group's four have about as many and the
    /// tails, one running sum each, are short. Rows here are offsets too,
    /// pixels (`group_pixels`) plain numbers.
    group_pixels: Vec<[u16; 4]>,
    group_start: Vec<u32>,
    quad_row: Vec<[u16; 4]>,
    quad_value: Vec<[u8; 4]>,
    tail_start: Vec<u32>,
    tail_row: Vec<u16>,
    tail_value: Vec<u8>,
}

/// Most rows a [`SparseRows`] holds: as many as a `u16` byte offset can
/// name (a shard has at most 256).
pub(super) const MAX_ROWS: usize = OFFSET_TABLE - 1;

impl SparseRows {
    /// `None` if `x` has more than [`MAX_ROWS`] rows (the caller then passes
    /// the rows raw; shards are far smaller).
    pub(super) fn new(x: &[u8]) -> Option<SparseRows> {
        let rows = x.len() / FEATURES;
        if rows > MAX_ROWS {
            return None;
        }
        Some(SparseRows::of(&RowSet::<u8>::gather(x)))
    }

    /// Rows `range` of a row set gathered already (a resident trainer's
    /// shard of a full batch): the same as [`SparseRows::new`] on those
    /// rows' pixels. At most [`MAX_ROWS`] rows.
    pub(super) fn select(from: &RowSet<u8>, range: Range<usize>) -> SparseRows {
        assert!(range.len() <= MAX_ROWS, "rows are u16 offsets");
        let mut by_row = RowSet::<u8>::default();
        by_row.select(from, &range.collect::<Vec<_>>());
        SparseRows::of(&by_row)
    }

    fn of(by_row: &RowSet<u8>) -> SparseRows {
        let rows = by_row.len();
        assert!(rows <= MAX_ROWS, "rows are u16 offsets");
        let columns = Columns::of(by_row);
        let mut start = Vec::with_capacity(rows + 1);
        start.push(0u32);
        let (mut at, mut value) = (Vec::new(), Vec::new());
        for r in 0..rows {
            let (index, values, _) = by_row.row(r);
            at.extend(index.iter().map(|&i| chunk_offset(i.into())));
            value.extend_from_slice(values);
            start.push(at.len() as u32);
        }
        let mut prepared = SparseRows {
            start,
            at,
            value,
            group_pixels: Vec::with_capacity(FEATURES / 4),
            group_start: Vec::with_capacity(FEATURES / 4 + 1),
            quad_row: Vec::new(),
            quad_value: Vec::new(),
            tail_start: Vec::with_capacity(FEATURES + 1),
            tail_row: Vec::new(),
            tail_value: Vec::new(),
        };
        prepared.interleave(&columns);
        prepared
    }

    /// Fill the groups of four pixels from `columns` (see the fields).
    fn interleave(&mut self, columns: &Columns<u8>) {
        // Most entries first; a stable sort, so ties keep pixel order.
        let mut by_count: Vec<u16> = (0..FEATURES as u16).collect();
        by_count.sort_by_key(|&i| std::cmp::Reverse(columns.span(i as usize).len()));
        self.tail_start.push(0u32);
        for pixels in by_count.chunks_exact(4) {
            let pixels: [u16; 4] = pixels.try_into().expect("four pixels");
            self.group_pixels.push(pixels);
            self.group_start.push(self.quad_row.len() as u32);
            let cols = pixels.map(|i| columns.span(i as usize));
            let common = cols.iter().map(|c| c.len()).min().unwrap_or(0);
            for k in 0..common {
                self.quad_row.push(std::array::from_fn(|j| {
                    chunk_offset(columns.row[cols[j].start + k].into())
                }));
                self.quad_value
                    .push(std::array::from_fn(|j| columns.value[cols[j].start + k]));
            }
            for c in &cols {
                let tail = &columns.row[c.start + common..c.end];
                self.tail_row
                    .extend(tail.iter().map(|&r| chunk_offset(r.into())));
                self.tail_value
                    .extend_from_slice(&columns.value[c.start + common..c.end]);
                self.tail_start.push(self.tail_row.len() as u32);
            }
        }
        self.group_start.push(self.quad_row.len() as u32);
    }

    pub(crate) fn rows(&self) -> usize {
        self.start.len() - 1
    }

    /// Row `r`'s pixels (as offsets) and their values.
    #[inline(always)]
    fn row(&self, r: usize) -> (&[u16], &[u8]) {
        let span = self.start[r] as usize..self.start[r + 1] as usize;
        (&self.at[span.clone()], &self.value[span])
    }
}

/// A row set's non-zeros sorted by pixel: pixel `i`'s rows, ascending, are
/// `row[span(i)]`, and their values `value[span(i)]` (as the row set holds
/// them: bytes for [`SparseRows`], f32 for the deep path).
#[derive(Default)]
pub(super) struct Columns<V = f32> {
    start: Vec<u32>,
    row: Vec<u16>,
    value: Vec<V>,
    /// Where each pixel's next entry goes, while sorting.
    next: Vec<u32>,
}

impl<V: PixelValue> Columns<V> {
    fn of(by_row: &RowSet<V>) -> Columns<V> {
        let mut columns = Columns::default();
        columns.sort(by_row);
        columns
    }

    /// Replace these columns with `by_row`'s non-zeros (at most 65,536
    /// rows), reusing the buffers. A counting sort by pixel; walking the
    /// rows in order keeps each pixel's rows ascending.
    pub(super) fn sort(&mut self, by_row: &RowSet<V>) {
        let rows = by_row.len();
        assert!(rows <= u16::MAX as usize + 1, "row numbers are u16");
        let per_pixel = &mut self.next;
        per_pixel.clear();
        per_pixel.resize(FEATURES, 0);
        for r in 0..rows {
            for &i in by_row.row(r).0 {
                per_pixel[i as usize] += 1;
            }
        }
        self.start.clear();
        self.start.push(0u32);
        for &n in per_pixel.iter() {
            self.start.push(self.start.last().unwrap() + n);
        }
        let total = self.start[FEATURES] as usize;
        // From here on, each pixel's next free place.
        per_pixel.copy_from_slice(&self.start[..FEATURES]);
        let next = per_pixel;
        self.row.resize(total, 0);
        self.value.resize(total, V::default());
        for r in 0..rows {
            let (index, values, _) = by_row.row(r);
            for (&i, &v) in index.iter().zip(values) {
                let at = &mut next[i as usize];
                self.row[*at as usize] = r as u16;
                self.value[*at as usize] = v;
                *at += 1;
            }
        }
    }

    /// Pixel `i`'s entries.
    fn span(&self, i: usize) -> Range<usize> {
        self.start[i] as usize..self.start[i + 1] as usize
    }

    /// Pixel `i`'s rows, ascending, and their values.
    #[inline(always)]
    pub(super) fn column(&self, i: usize) -> (&[u16], &[V]) {
        let span = self.span(i);
        (&self.row[span.clone()], &self.value[span])
    }
}

/// Every row's `dz1`, as the gradient pass reads it: chunk `c` of the row
/// at offset `at`.
trait Dz1Rows {
    fn at(&self, at: u16, c: usize) -> Chunk;
}

/// `chunks` chunks per row, one row after another.
struct Strided<'a> {
    rows: &'a [Chunk],
    chunks: usize,
}

impl Dz1Rows for Strided<'_> {
    #[inline(always)]
    fn at(&self, at: u16, c: usize) -> Chunk {
        self.rows[usize::from(at) / CHUNK_BYTES * self.chunks + c]
    }
}

/// One chunk per row (up to 16 hidden units), read at byte offsets.
struct OneChunk<'a>(&'a [Chunk; OFFSET_TABLE]);

impl Dz1Rows for OneChunk<'_> {
    #[inline(always)]
    fn at(&self, at: u16, _c: usize) -> Chunk {
        chunk_at(self.0, at)
    }
}

/// `dw1` from the per-pixel groups: for each pixel, the sum over its rows of
/// `value * dz1[row]`, in row order. Four pixels at a time, so four
/// independent sums hide the adds' latency; each sum's own order is
/// unchanged.
#[inline(always)]
fn first_layer_gradient(
    g_w1t: &mut [Chunk],
    dz1: &impl Dz1Rows,
    s: &SparseRows,
    chunks: usize,
    table: &[f32; 256],
) {
    let g_w1t = &mut g_w1t[..FEATURES * chunks];
    for (g, pixels) in s.group_pixels.iter().enumerate() {
        let quads = s.group_start[g] as usize..s.group_start[g + 1] as usize;
        let (rows, values) = (&s.quad_row[quads.clone()], &s.quad_value[quads]);
        for c in 0..chunks {
            // Four named sums rather than an array: indexed by a variable,
            // an array would live on the stack, one store per multiply-add.
            let (mut a0, mut a1, mut a2, mut a3) = (ZERO, ZERO, ZERO, ZERO);
            for (r, v) in rows.iter().zip(values) {
                axpy(&mut a0, v[0].scaled(table), &dz1.at(r[0], c));
                axpy(&mut a1, v[1].scaled(table), &dz1.at(r[1], c));
                axpy(&mut a2, v[2].scaled(table), &dz1.at(r[2], c));
                axpy(&mut a3, v[3].scaled(table), &dz1.at(r[3], c));
            }
            for (j, acc) in [a0, a1, a2, a3].into_iter().enumerate() {
                let t = 4 * g + j;
                let tail = s.tail_start[t] as usize..s.tail_start[t + 1] as usize;
                let sum = column_sum(
                    acc,
                    &s.tail_row[tail.clone()],
                    &s.tail_value[tail],
                    dz1,
                    c,
                    table,
                );
                // Every entry is written here, so the buffer needs no
                // clearing first; and a running sum that starts at +0 never
                // becomes -0, so the sum is exactly `0 + sum`, what the
                // row-by-row path adds up.
                g_w1t[pixels[j] as usize * chunks + c] = sum;
            }
        }
    }
}

/// `acc + sum of value * dz1[row]` over one column's pairs, in order.
#[inline(always)]
fn column_sum(
    mut acc: Chunk,
    rows: &[u16],
    values: &[u8],
    dz1: &impl Dz1Rows,
    c: usize,
    table: &[f32; 256],
) -> Chunk {
    for (&r, &v) in rows.iter().zip(values) {
        axpy(&mut acc, v.scaled(table), &dz1.at(r, c));
    }
    acc
}

multiversion! {
    /// [`super::workspace::accumulate_rows`] over prepared rows: forward
    /// passes and the per-row part of the backward pass row by row (keeping
    /// every row's `dz1`), then `dw1` pixel by pixel.
    pub(super) fn accumulate_prepared_rows(w: &Weights, s: &mut Scratch, rows: &SparseRows, y: &[u8]) -> BatchStats {
        let mut stats = BatchStats { rows: y.len(), ..Default::default() };
        let chunks = w.chunks;
        let mut dz1_rows = std::mem::take(&mut s.dz1_rows);
        if chunks == 1 {
            // A whole table, kept from pass to pass: the rows' entries are
            // written before they are read, the rest never read.
            if dz1_rows.len() < OFFSET_TABLE {
                dz1_rows.resize(OFFSET_TABLE, ZERO);
            }
        } else {
            dz1_rows.clear();
            dz1_rows.resize(rows.rows() * chunks, ZERO);
        }
        let mut loss = LossSum::new();
        let table = pixel_table();
        let w1t = &w.w1t[..];
        if chunks == 1 {
            let w1t: &[Chunk; OFFSET_TABLE] = w1t[..OFFSET_TABLE].try_into().expect("a whole table");
            // Sixteen rows' heads at a time, the rest row by row.
            let blocked = y.len() / BLOCK * BLOCK;
            let mut g_w2 = class_major(&s.g_w2t);
            for r0 in (0..blocked).step_by(BLOCK) {
                let mut z = [ZERO; BLOCK];
                for (r, z) in (r0..r0 + BLOCK).zip(z.iter_mut()) {
                    let (at, value) = rows.row(r);
                    *z = sum_over(at, value, table, |o| chunk_at(w1t, o));
                }
                let (labels, dz1) = (&y[r0..r0 + BLOCK], &mut dz1_rows[r0..r0 + BLOCK]);
                head_block(w, s, &mut g_w2, &z, labels, &mut stats, &mut loss, dz1);
            }
            unit_major(g_w2, &mut s.g_w2t);
            for (r, &label) in y.iter().enumerate().skip(blocked) {
                let (at, value) = rows.row(r);
                s.a1[0] = sum_over(at, value, table, |o| chunk_at(w1t, o));
                let probs = forward_from_sums(w, s, 1);
                backward_head(w, s, 1, probs, label, &mut stats, &mut loss);
                dz1_rows[r] = s.dz1[0];
            }
            let dz1 = OneChunk(dz1_rows[..OFFSET_TABLE].try_into().expect("a whole table"));
            first_layer_gradient(&mut s.g_w1t, &dz1, rows, 1, table);
        } else {
            let w1t = &w1t[..PIXEL_SLOTS * chunks];
            for (r, &label) in y.iter().enumerate() {
                let (at, value) = rows.row(r);
                for c in 0..chunks {
                    let pixel = |o: u16| slot(o / CHUNK_BYTES as u16);
                    s.a1[c] = sum_over(at, value, table, |o| w1t[pixel(o) * chunks + c]);
                }
                let probs = forward_from_sums(w, s, chunks);
                backward_head(w, s, chunks, probs, label, &mut stats, &mut loss);
                dz1_rows[r * chunks..(r + 1) * chunks].copy_from_slice(&s.dz1[..chunks]);
            }
            let dz1 = Strided { rows: &dz1_rows, chunks };
            first_layer_gradient(&mut s.g_w1t, &dz1, rows, chunks, table);
        }
        s.dz1_rows = dz1_rows;
        stats.loss_sum = loss.finish();
        stats
    }
}
