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

use super::{
    argmax, pixel_table, prefetch_lines, BatchStats, Engine, EngineKind, PreparedRows,
    ResidentTrainer,
};
use crate::data::{CLASSES, FEATURES};
use crate::model::{Gradients, Mlp};
use crate::optim::Optimizer;
use crate::simd::multiversion;
use ndarray::Array2;
use std::cell::RefCell;

mod halves;
mod resident;

pub struct SparseEngine;

/// Lanes of one chunk of hidden units (one AVX-512 register of f32).
const LANES: usize = 16;
/// One chunk of lanes, aligned to a cache line: a 64-byte load or store of
/// one then never straddles two lines (a `Vec<[f32; 16]>` is only 4-byte
/// aligned, and most of its chunks did).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C, align(64))]
struct Chunk([f32; LANES]);

const ZERO: Chunk = Chunk([0.0; LANES]);

/// Pixel rows allocated in `w1t` and `g_w1t`: 784 rounded up to a power of
/// two. The hot loops index them with `pixel & (PIXEL_SLOTS - 1)`, which the
/// compiler can see is in bounds, so they carry no bounds checks; rows past
/// 784 stay zero and are never read.
const PIXEL_SLOTS: usize = 1024;
const _: () = assert!(PIXEL_SLOTS.is_power_of_two() && PIXEL_SLOTS >= FEATURES);

/// Where the mini-batch trainer for small batches ([`halves`]) cuts `w1`:
/// pixels below this on one core, the rest on another, each part's sums
/// then added (`z1 = sum(0..336) + sum(336..784)`). The lower part has 37%
/// of the non-zeros on Kaggle's digits: its thread also runs each row's
/// second layer and backward pass, while the other one runs the larger
/// part. 320 and 336 measured best (7.2-7.4 ms an epoch against 7.6 for
/// 384, and 7.5-7.9 for 288). Elsewhere a row's sum is one pass: the two
/// parts cost the full-batch loop 3-6% (measured, and not paid there).
pub(crate) const PIXEL_SPLIT: usize = 336;

/// How many of a row's (ascending) non-zero pixels lie below [`PIXEL_SPLIT`].
#[inline(always)]
fn split_point(index: &[u16]) -> usize {
    index.partition_point(|&i| (i as usize) < PIXEL_SPLIT)
}

/// Pixel `i`'s row in `w1t` / `g_w1t` (the identity for every real pixel).
#[inline(always)]
fn slot(i: u16) -> usize {
    i as usize & (PIXEL_SLOTS - 1)
}

impl std::ops::Deref for Chunk {
    type Target = [f32; LANES];
    #[inline(always)]
    fn deref(&self) -> &[f32; LANES] {
        &self.0
    }
}

impl std::ops::DerefMut for Chunk {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut [f32; LANES] {
        &mut self.0
    }
}

/// The model in the padded layouts.
#[derive(Default)]
struct Weights {
    hidden: usize,
    /// Chunks per hidden vector: `Hp / 16`.
    chunks: usize,
    /// `w1` transposed: pixel `i`'s weights are chunks `i*chunks..(i+1)*chunks`.
    w1t: Vec<Chunk>,
    b1: Vec<Chunk>,
    /// `w2` transposed: hidden unit `j`'s weights to the 10 classes, padded.
    w2t: Vec<Chunk>,
    /// `w2` as is: class `k`'s weights from the hidden units, `chunks` each.
    /// Derived from `w2t` ([`Weights::mirror_w2`]).
    w2: Vec<Chunk>,
    b2: Chunk,
}

impl Weights {
    /// Zeros for a network with `h` hidden units.
    fn zeros(h: usize) -> Weights {
        let chunks = h.div_ceil(LANES);
        Weights {
            hidden: h,
            chunks,
            w1t: vec![ZERO; PIXEL_SLOTS * chunks],
            b1: vec![ZERO; chunks],
            w2t: vec![ZERO; h],
            w2: vec![ZERO; CLASSES * chunks],
            b2: ZERO,
        }
    }

    /// Copy `m` (of this shape) into the padded layouts.
    fn load(&mut self, m: &Mlp) {
        let h = self.hidden;
        assert_eq!(m.hidden(), h, "model and layout differ in hidden units");
        transpose_in(m.w1.as_slice().expect("standard layout"), h, &mut self.w1t);
        for (j, &b) in m.b1.iter().enumerate() {
            self.b1[j / LANES][j % LANES] = b;
        }
        for k in 0..CLASSES {
            for j in 0..h {
                self.w2t[j][k] = m.w2[[k, j]];
            }
            self.b2[k] = m.b2[k];
        }
        self.mirror_w2();
    }

    /// `m` = these weights, exactly ([`Weights::load`]'s inverse).
    fn store(&self, m: &mut Mlp) {
        let h = self.hidden;
        assert_eq!(m.hidden(), h, "model and layout differ in hidden units");
        let w1 = m.w1.as_slice_mut().expect("standard layout");
        transpose_out(&self.w1t, h, w1, Combine::Copy);
        for (j, b) in m.b1.iter_mut().enumerate() {
            *b = self.b1[j / LANES][j % LANES];
        }
        for k in 0..CLASSES {
            for j in 0..h {
                m.w2[[k, j]] = self.w2t[j][k];
            }
            m.b2[k] = self.b2[k];
        }
    }

    /// Rebuild the class-major copy `w2` from `w2t`.
    fn mirror_w2(&mut self) {
        let chunks = self.chunks;
        for k in 0..CLASSES {
            for j in 0..self.hidden {
                self.w2[k * chunks + j / LANES][j % LANES] = self.w2t[j][k];
            }
        }
    }
}

/// One thread's gradients in the padded layouts, and one row's scratch.
#[derive(Default)]
struct Scratch {
    g_w1t: Vec<Chunk>,
    g_b1: Vec<Chunk>,
    g_w2t: Vec<Chunk>,
    g_b2: Chunk,
    /// The current row's non-zero pixels.
    nz: NonZeros,
    /// The current row's hidden activations and their gradient.
    a1: Vec<Chunk>,
    dz1: Vec<Chunk>,
    /// Every row's `dz1`, for the prepared path's per-pixel `dw1`.
    dz1_rows: Vec<Chunk>,
}

impl Scratch {
    fn new(h: usize) -> Scratch {
        let chunks = h.div_ceil(LANES);
        Scratch {
            g_w1t: vec![ZERO; PIXEL_SLOTS * chunks],
            g_b1: vec![ZERO; chunks],
            g_w2t: vec![ZERO; h],
            g_b2: ZERO,
            nz: NonZeros::default(),
            a1: vec![ZERO; chunks],
            dz1: vec![ZERO; chunks],
            dz1_rows: Vec::new(),
        }
    }

    fn clear_gradients(&mut self) {
        let real = FEATURES * self.g_b1.len();
        self.g_w1t[..real].fill(ZERO);
        self.clear_small_gradients();
    }

    /// All but `g_w1t`, which the prepared path overwrites whole.
    fn clear_small_gradients(&mut self) {
        self.g_b1.fill(ZERO);
        self.g_w2t.fill(ZERO);
        self.g_b2 = ZERO;
    }

    /// Add the padded gradients into `g` (the model's layout).
    fn add_gradients_to(&self, g: &mut Gradients) {
        let h = g.hidden();
        add_transposed(
            &self.g_w1t,
            h,
            g.w1.as_slice_mut().expect("standard layout"),
        );
        for (j, b) in g.b1.iter_mut().enumerate() {
            *b += self.g_b1[j / LANES][j % LANES];
        }
        for k in 0..CLASSES {
            for j in 0..h {
                g.w2[[k, j]] += self.g_w2t[j][k];
            }
            g.b2[k] += self.g_b2[k];
        }
    }
}

/// A thread's copy of the model in the padded layouts and its scratch, for
/// the engine's calls from the generic trainer. Reused across calls: a
/// training loop allocates nothing after its first step.
#[derive(Default)]
struct Workspace {
    w: Weights,
    s: Scratch,
    /// The model the padded copies were made from: a full-batch step hands
    /// each thread the same weights for a dozen shards, so the copy is
    /// redone only when the weights really changed.
    loaded: Option<Mlp>,
}

impl Workspace {
    /// Copy `m` into the padded layouts (unless it is the model already there).
    fn load_model(&mut self, m: &Mlp) {
        let h = m.hidden();
        if self.w.hidden != h || self.w.w1t.is_empty() {
            *self = Workspace {
                w: Weights::zeros(h),
                s: Scratch::new(h),
                loaded: None,
            };
        }
        if self.loaded.as_ref().is_some_and(|l| same_bits(l, m)) {
            return;
        }
        self.w.load(m);
        match &mut self.loaded {
            Some(l) => l.clone_from(m),
            None => self.loaded = Some(m.clone()),
        }
    }
}

const _: () = assert!(FEATURES.is_multiple_of(LANES));

multiversion! {
/// `w1` (`h x 784`, the model's layout) into `w1t` (784 chunk rows of `h`
/// lanes, padding 0), one 16 x 16 block at a time. Runs once per step (per
/// shard in full-batch training): an element-by-element strided copy cost
/// a fifth of a small-batch step.
fn transpose_in(w1: &[f32], h: usize, w1t: &mut [Chunk]) {
    let chunks = h.div_ceil(LANES);
    for i0 in (0..FEATURES).step_by(LANES) {
        for c in 0..chunks {
            let mut block = [ZERO; LANES];
            for (l, row) in block.iter_mut().enumerate().take(h - c * LANES) {
                let j = c * LANES + l;
                row.0.copy_from_slice(&w1[j * FEATURES + i0..j * FEATURES + i0 + LANES]);
            }
            transpose16(&mut block);
            // By reference: `into_iter` would first copy the whole block.
            for (p, column) in block.iter().enumerate() {
                w1t[(i0 + p) * chunks + c] = *column;
            }
        }
    }
}
}

/// How [`transpose_out`] combines with what is already there.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Combine {
    Add,
    Copy,
}

/// `w1 +=` the transpose of `g_w1t`: the gradients back into the model's layout.
fn add_transposed(g_w1t: &[Chunk], h: usize, w1: &mut [f32]) {
    transpose_out(g_w1t, h, w1, Combine::Add);
}

multiversion! {
/// [`transpose_in`]'s inverse: `w1t` (padded, `784 x Hp`) into `w1`
/// (`h x 784`), added or copied.
fn transpose_out(w1t: &[Chunk], h: usize, w1: &mut [f32], combine: Combine) {
    let chunks = h.div_ceil(LANES);
    for i0 in (0..FEATURES).step_by(LANES) {
        for c in 0..chunks {
            let mut block = [ZERO; LANES];
            for (p, row) in block.iter_mut().enumerate() {
                *row = w1t[(i0 + p) * chunks + c];
            }
            transpose16(&mut block);
            for (l, column) in block.iter().enumerate().take(h - c * LANES) {
                let j = c * LANES + l;
                let row = &mut w1[j * FEATURES + i0..j * FEATURES + i0 + LANES];
                if combine == Combine::Add {
                    for (w, &g) in row.iter_mut().zip(column.iter()) {
                        *w += g;
                    }
                } else {
                    row.copy_from_slice(&column.0);
                }
            }
        }
    }
}
}

/// Transposes a 16 x 16 block in place: with AVX-512, in registers (64
/// shuffles); otherwise element by element. Data movement only, so both give
/// the same bits.
#[inline]
fn transpose16(block: &mut [Chunk; LANES]) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::level() == crate::simd::Level::Avx512 {
        // SAFETY: AVX-512F was detected.
        unsafe { transpose16_avx512(block) };
        return;
    }
    #[allow(clippy::needless_range_loop, reason = "a swap across the diagonal")]
    for a in 0..LANES {
        for b in a + 1..LANES {
            let t = block[a][b];
            block[a][b] = block[b][a];
            block[b][a] = t;
        }
    }
}

/// The classic three-stage AVX-512 transpose: interleave pairs of rows
/// (32-bit), then pairs of pairs (64-bit), then 128-bit quarters twice.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn transpose16_avx512(block: &mut [Chunk; LANES]) {
    use std::arch::x86_64::*;
    // SAFETY: every Chunk is 64 bytes and 64-byte aligned, so the aligned
    // loads and stores stay within `block`.
    let mut r = [_mm512_setzero_ps(); 16];
    for (r, row) in r.iter_mut().zip(block.iter()) {
        // SAFETY: as above.
        *r = unsafe { _mm512_load_ps(row.0.as_ptr()) };
    }
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    let pd = _mm512_castps_pd;
    let ps = _mm512_castpd_ps;
    let mut u = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        let (a, b, c, d) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
        u[4 * g] = ps(_mm512_unpacklo_pd(pd(a), pd(c)));
        u[4 * g + 1] = ps(_mm512_unpackhi_pd(pd(a), pd(c)));
        u[4 * g + 2] = ps(_mm512_unpacklo_pd(pd(b), pd(d)));
        u[4 * g + 3] = ps(_mm512_unpackhi_pd(pd(b), pd(d)));
    }
    // u[4g + k] holds element k (+4, +8, +12) of rows 4g..4g+4.
    let mut v = [_mm512_setzero_ps(); 16];
    for k in 0..4 {
        v[k] = _mm512_shuffle_f32x4::<0x88>(u[k], u[4 + k]);
        v[4 + k] = _mm512_shuffle_f32x4::<0xdd>(u[k], u[4 + k]);
        v[8 + k] = _mm512_shuffle_f32x4::<0x88>(u[8 + k], u[12 + k]);
        v[12 + k] = _mm512_shuffle_f32x4::<0xdd>(u[8 + k], u[12 + k]);
    }
    let mut out = [_mm512_setzero_ps(); 16];
    for k in 0..8 {
        out[k] = _mm512_shuffle_f32x4::<0x88>(v[k], v[8 + k]);
        out[8 + k] = _mm512_shuffle_f32x4::<0xdd>(v[k], v[8 + k]);
    }
    for (i, o) in out.into_iter().enumerate() {
        // SAFETY: as for the loads.
        unsafe { _mm512_store_ps(block[i].0.as_mut_ptr(), o) };
    }
}

/// Bit-for-bit equality of two models' weights (`==` would take -0 for +0).
fn same_bits(a: &Mlp, b: &Mlp) -> bool {
    // XORs folded over blocks (which vectorises), leaving at the first
    // block that differs: after an update that is the first block.
    a.params().iter().zip(b.params()).all(|(x, y)| {
        x.len() == y.len()
            && x.chunks(64).zip(y.chunks(64)).all(|(x, y)| {
                let diff = x
                    .iter()
                    .zip(y)
                    .fold(0, |d, (p, q)| d | (p.to_bits() ^ q.to_bits()));
                diff == 0
            })
    })
}

thread_local! {
    static WORKSPACE: RefCell<Workspace> = RefCell::new(Workspace::default());
}

/// `acc += v * w`, lane by lane (a multiply then an add: no fused rounding).
#[inline(always)]
fn axpy(acc: &mut Chunk, v: f32, w: &Chunk) {
    // Whole-chunk loads and stores, so the compiler sees one vector operation
    // rather than sixteen scalar read-modify-writes.
    let (mut a, w) = (*acc, *w);
    for l in 0..LANES {
        a[l] += v * w[l];
    }
    *acc = a;
}

#[inline(always)]
fn add(a: &Chunk, b: &Chunk) -> Chunk {
    // Loops rather than `array::from_fn` or `map` throughout the hot code:
    // their closures may be compiled outside the multiversioned caller,
    // without its vector features (seen in profiles as calls to
    // `core::array::try_from_fn`).
    let mut out = *a;
    for l in 0..LANES {
        out[l] += b[l];
    }
    out
}

/// Room for one row's non-zero pixels, plus slack for the vector gather,
/// which stores whole 32-lane blocks past the last non-zero.
const NZ_CAP: usize = FEATURES + 64;

/// One row's non-zero pixels: `index[..len]` and either `value[..len]`
/// (pixel / 255, converted once here rather than in each of the two
/// products; [`NonZeros::gather`]) or `bytes[..len]` (the pixels as they
/// are; [`NonZeros::gather_bytes`]). The buffers are sized on first use, so
/// `default()` costs nothing and the scratch can be moved out of a
/// [`Workspace`] and back freely.
#[derive(Default)]
pub(crate) struct NonZeros {
    index: Vec<u16>,
    value: Vec<f32>,
    bytes: Vec<u8>,
    len: usize,
}

impl NonZeros {
    /// Collect the non-zero pixels of `row` (784 bytes), in index order,
    /// with their values scaled.
    #[inline(always)]
    fn gather(&mut self, row: &[u8]) {
        self.fill::<true>(row);
    }

    /// [`NonZeros::gather`] with the pixel bytes instead of scaled values.
    #[inline(always)]
    fn gather_bytes(&mut self, row: &[u8]) {
        self.fill::<false>(row);
    }

    #[inline(always)]
    fn fill<const SCALE: bool>(&mut self, row: &[u8]) {
        assert_eq!(row.len(), FEATURES);
        if self.index.len() != NZ_CAP {
            self.index = vec![0; NZ_CAP];
            self.value = vec![0.0; NZ_CAP];
            self.bytes = vec![0; NZ_CAP];
        }
        let index: &mut [u16; NZ_CAP] = (&mut self.index[..]).try_into().expect("sized above");
        let value: &mut [f32; NZ_CAP] = (&mut self.value[..]).try_into().expect("sized above");
        let bytes: &mut [u8; NZ_CAP] = (&mut self.bytes[..]).try_into().expect("sized above");
        #[cfg(target_arch = "x86_64")]
        if has_vbmi2() {
            // SAFETY: the features were detected; `row` is 784 bytes and the
            // buffers hold NZ_CAP >= 784 + 32 entries (checked inside).
            self.len = unsafe { gather_vbmi2::<SCALE>(row, index, value, bytes) };
            return;
        }
        self.len = gather_scalar::<SCALE>(row, index, value, bytes);
    }
}

/// Rows as their non-zero pixels, one after another (compressed sparse
/// rows): row `r`'s pixels are `index[start[r]..start[r + 1]]` and their
/// values the same range of `value`, in pixel order; the first `split[r]`
/// of them are below [`PIXEL_SPLIT`]. Values are pixel bytes for the whole
/// training set (a quarter of the memory, so more of it stays in cache) and
/// scaled f32 for a full-batch shard, read hundreds of times.
#[derive(Default)]
pub(crate) struct RowSet<V = u8> {
    start: Vec<u32>,
    index: Vec<u16>,
    value: Vec<V>,
    split: Vec<u16>,
}

impl<V: PixelValue> RowSet<V> {
    /// Rows `x` (`rows x 784` bytes), gathered in order by one thread.
    fn gather(x: &[u8]) -> RowSet<V> {
        let mut nz = NonZeros::default();
        let rows = x.len() / FEATURES;
        let mut set = RowSet {
            start: Vec::with_capacity(rows + 1),
            // MNIST digits light about a fifth of their pixels.
            index: Vec::with_capacity(x.len() / 4),
            value: Vec::with_capacity(x.len() / 4),
            split: Vec::with_capacity(rows),
        };
        set.start.push(0);
        for row in x.chunks_exact(FEATURES) {
            V::gather(&mut nz, row);
            set.index.extend_from_slice(&nz.index[..nz.len]);
            set.value.extend_from_slice(V::gathered(&nz));
            set.start.push(set.index.len() as u32);
            set.split.push(split_point(&nz.index[..nz.len]) as u16);
        }
        set
    }

    /// [`RowSet::gather`] on the rayon pool: the same result. Rows are
    /// counted first, so each block of rows gathers straight into its own
    /// part of the final arrays (one copy of the data, and the pages of the
    /// arrays first touched by the threads that fill them). `None` if the
    /// non-zeros overflow a `u32` offset.
    fn gather_parallel(x: &[u8]) -> Option<RowSet<V>> {
        use rayon::prelude::*;
        const BLOCK_ROWS: usize = 512;
        let counts: Vec<u32> = x
            .par_chunks(FEATURES)
            .map(|row| row.iter().map(|&p| (p != 0) as u32).sum())
            .collect();
        let mut start = Vec::with_capacity(counts.len() + 1);
        start.push(0u32);
        let mut total = 0u32;
        for &n in &counts {
            total = total.checked_add(n)?;
            start.push(total);
        }
        let mut index = vec![0u16; total as usize];
        let mut value = vec![V::default(); total as usize];
        let mut split = vec![0u16; counts.len()];
        // Each block's share of the arrays, cut in order.
        let mut parts = Vec::with_capacity(counts.len().div_ceil(BLOCK_ROWS));
        let (mut index_left, mut value_left) = (&mut index[..], &mut value[..]);
        let blocks = x
            .chunks(BLOCK_ROWS * FEATURES)
            .zip(split.chunks_mut(BLOCK_ROWS));
        for (b, (rows, split)) in blocks.enumerate() {
            let first = b * BLOCK_ROWS;
            let len = (start[first + rows.len() / FEATURES] - start[first]) as usize;
            let (i, i_rest) = std::mem::take(&mut index_left).split_at_mut(len);
            let (v, v_rest) = std::mem::take(&mut value_left).split_at_mut(len);
            (index_left, value_left) = (i_rest, v_rest);
            parts.push((rows, i, v, split));
        }
        parts
            .into_par_iter()
            .for_each(|(rows, index, value, split)| {
                let mut nz = NonZeros::default();
                let mut at = 0;
                for (row, split) in rows.chunks_exact(FEATURES).zip(split) {
                    V::gather(&mut nz, row);
                    index[at..at + nz.len].copy_from_slice(&nz.index[..nz.len]);
                    value[at..at + nz.len].copy_from_slice(V::gathered(&nz));
                    *split = split_point(&nz.index[..nz.len]) as u16;
                    at += nz.len;
                }
                assert_eq!(at, index.len(), "the count and the gather agree");
            });
        Some(RowSet {
            start,
            index,
            value,
            split,
        })
    }

    fn len(&self) -> usize {
        self.start.len().saturating_sub(1)
    }

    /// Start loading row `r` into the cache (a hint: no effect on results).
    #[inline(always)]
    fn prefetch(&self, r: usize) {
        let (index, value, _) = self.row(r);
        prefetch_lines(index);
        prefetch_lines(value);
    }

    /// Row `r`'s non-zero pixels, their values, and how many of them lie
    /// below [`PIXEL_SPLIT`].
    #[inline(always)]
    fn row(&self, r: usize) -> (&[u16], &[V], usize) {
        let span = self.start[r] as usize..self.start[r + 1] as usize;
        (
            &self.index[span.clone()],
            &self.value[span],
            self.split[r] as usize,
        )
    }
}

/// How many rows ahead the resident trainers prefetch a batch's rows:
/// scattered over a set bigger than the L2 cache, they would otherwise miss
/// one after another (25% slower epochs without; 1 or 4 measured the same).
const PREFETCH_AHEAD: usize = 2;

/// Branch-free scalar gather: writes every pixel, advances only past
/// non-zero ones (a data-dependent branch per pixel would mispredict often).
/// Values go to `value` scaled if `SCALE`, else to `bytes` as they are.
fn gather_scalar<const SCALE: bool>(
    row: &[u8],
    index: &mut [u16; NZ_CAP],
    value: &mut [f32; NZ_CAP],
    bytes: &mut [u8; NZ_CAP],
) -> usize {
    let table = pixel_table();
    let mut n = 0;
    for (i, &p) in row.iter().enumerate() {
        index[n] = i as u16;
        if SCALE {
            value[n] = table[p as usize];
        } else {
            bytes[n] = p;
        }
        n += (p != 0) as usize;
    }
    n
}

#[cfg(target_arch = "x86_64")]
fn has_vbmi2() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512vbmi2")
    })
}

/// AVX-512 gather, 32 pixels at a time: a mask of the non-zero bytes, then
/// the VBMI2 compress instructions pack their indices and values to the
/// front of a register, which is stored whole (the slack absorbs the rest).
/// Same output as [`gather_scalar`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi2,popcnt")]
fn gather_vbmi2<const SCALE: bool>(
    row: &[u8],
    index: &mut [u16; NZ_CAP],
    value: &mut [f32; NZ_CAP],
    bytes: &mut [u8; NZ_CAP],
) -> usize {
    use std::arch::x86_64::*;
    const BLOCK: usize = 32;
    let lanes: [u16; BLOCK] = std::array::from_fn(|i| i as u16);
    // SAFETY: `lanes` is 64 bytes.
    let lanes = unsafe { _mm512_loadu_si512(lanes.as_ptr().cast()) };
    let inv255 = _mm512_set1_pd(1.0 / 255.0);
    let mut n = 0;
    let mut start = 0;
    while start < FEATURES {
        let take = BLOCK.min(FEATURES - start);
        // SAFETY: both loads read only `row[start..start + take]`.
        let pixels = unsafe {
            let at = row.as_ptr().add(start);
            if take == BLOCK {
                _mm256_loadu_si256(at.cast())
            } else {
                _mm256_maskz_loadu_epi8((1u32 << take) - 1, at.cast())
            }
        };
        let nonzero = _mm256_test_epi8_mask(pixels, pixels);
        let idx = _mm512_add_epi16(lanes, _mm512_set1_epi16(start as i16));
        let idx = _mm512_maskz_compress_epi16(nonzero, idx);
        let val = _mm256_maskz_compress_epi8(nonzero, pixels);
        assert!(n + BLOCK <= NZ_CAP);
        // SAFETY: n + 32 <= NZ_CAP entries, checked just above.
        unsafe { _mm512_storeu_si512(index.as_mut_ptr().add(n).cast(), idx) };
        if SCALE {
            // Bytes to f32 as pixel * (1/255) in f64, rounded once to f32:
            // equal to the correctly rounded f32 division for every byte (the
            // unit test checks all 256) and much cheaper than a vector
            // division.
            let halves = [
                _mm256_castsi256_si128(val),
                _mm256_extracti128_si256::<1>(val),
            ];
            for (h, half) in halves.into_iter().enumerate() {
                for (q, eight) in [half, _mm_srli_si128::<8>(half)].into_iter().enumerate() {
                    let wide = _mm512_cvtepi32_pd(_mm256_cvtepu8_epi32(eight));
                    let scaled = _mm512_cvtpd_ps(_mm512_mul_pd(wide, inv255));
                    // SAFETY: within the n + 32 entries checked above.
                    unsafe { _mm256_storeu_ps(value.as_mut_ptr().add(n + 16 * h + 8 * q), scaled) };
                }
            }
        } else {
            // SAFETY: within the n + 32 entries checked above.
            unsafe { _mm256_storeu_si256(bytes.as_mut_ptr().add(n).cast(), val) };
        }
        n += nonzero.count_ones() as usize;
        start += BLOCK;
    }
    n
}

/// A non-zero pixel's value as a row stores it: already scaled to f32
/// (one row's scratch, [`NonZeros`]), or the raw byte (the [`RowSet`]s kept
/// for many passes, a quarter of the size), scaled through the
/// correctly rounded table [`pixel_table`] (the same f32 either way).
pub(crate) trait PixelValue: Copy + Default + Send + Sync {
    fn scaled(self, table: &[f32; 256]) -> f32;
    /// Gather `row`'s non-zero pixels into `nz`, values in this form.
    fn gather(nz: &mut NonZeros, row: &[u8]);
    /// The values [`PixelValue::gather`] left in `nz`.
    fn gathered(nz: &NonZeros) -> &[Self];
}

impl PixelValue for f32 {
    #[inline(always)]
    fn scaled(self, _: &[f32; 256]) -> f32 {
        self
    }
    #[inline(always)]
    fn gather(nz: &mut NonZeros, row: &[u8]) {
        nz.gather(row);
    }
    fn gathered(nz: &NonZeros) -> &[f32] {
        &nz.value[..nz.len]
    }
}

impl PixelValue for u8 {
    #[inline(always)]
    fn scaled(self, table: &[f32; 256]) -> f32 {
        table[self as usize]
    }
    #[inline(always)]
    fn gather(nz: &mut NonZeros, row: &[u8]) {
        // The bytes as they are: no scaling to do, and a quarter of the
        // stores (the gathering was half the trainer's one-off preparation).
        nz.gather_bytes(row);
    }
    fn gathered(nz: &NonZeros) -> &[u8] {
        &nz.bytes[..nz.len]
    }
}

/// `sum over (index, value) of value * w1t[index]`, for lane chunk `c`.
/// Four partial sums break the add-latency chain; their order is fixed.
#[inline(always)]
fn partial_sum<V: PixelValue>(
    w1t: &[Chunk],
    chunks: usize,
    c: usize,
    index: &[u16],
    value: &[V],
    table: &[f32; 256],
) -> Chunk {
    let n = index.len();
    let value = &value[..n];
    let w1t = &w1t[..PIXEL_SLOTS * chunks];
    let mut acc = [ZERO; 4];
    for (idx, val) in index.chunks_exact(4).zip(value.chunks_exact(4)) {
        for q in 0..4 {
            axpy(
                &mut acc[q],
                val[q].scaled(table),
                &w1t[slot(idx[q]) * chunks + c],
            );
        }
    }
    let tail = n / 4 * 4;
    for (&i, &v) in index[tail..].iter().zip(&value[tail..]) {
        axpy(&mut acc[0], v.scaled(table), &w1t[slot(i) * chunks + c]);
    }
    add(&add(&acc[0], &acc[1]), &add(&acc[2], &acc[3]))
}

/// Forward pass of one row given as its non-zero pixels (`index`,
/// `value`): fills `s.a1` and returns the 10 class probabilities (padding
/// lanes 0).
#[inline(always)]
fn forward_row<V: PixelValue>(
    w: &Weights,
    s: &mut Scratch,
    chunks: usize,
    index: &[u16],
    value: &[V],
    table: &[f32; 256],
) -> Chunk {
    let w1t = &w.w1t[..];
    for c in 0..chunks {
        s.a1[c] = partial_sum(w1t, chunks, c, index, value, table);
    }
    forward_from_sums(w, s, chunks)
}

/// The rest of the forward pass, from the first layer's sums (without the
/// bias) in `s.a1`: bias, ReLU, second layer, softmax.
#[inline(always)]
fn forward_from_sums(w: &Weights, s: &mut Scratch, chunks: usize) -> Chunk {
    for c in 0..chunks {
        let mut a1 = add(&s.a1[c], &w.b1[c]);
        for v in a1.iter_mut() {
            *v = v.max(0.0);
        }
        s.a1[c] = a1;
    }
    let mut z2 = w.b2;
    for j in 0..w.hidden {
        let a = s.a1[j / LANES][j % LANES];
        axpy(&mut z2, a, &w.w2t[j]);
    }
    softmax_classes(&mut z2);
    z2
}

/// Softmax over the first 10 lanes (maximum subtracted first, as in the
/// other engines); padding lanes become 0. The exponentials are computed
/// for all 16 lanes at once by [`exp_chunk`]: ten calls to the C library's
/// `expf` per row cost more than the rest of the row's second layer.
#[inline(always)]
fn softmax_classes(z: &mut Chunk) {
    // A compare and select, not `f32::max`: in a test harness compiled for
    // AVX-512, a vectorised `f32::max` reduction of this kind was seen to
    // return wrong maxima. Same result for every non-NaN input, and a NaN
    // is skipped either way.
    let mut max = f32::NEG_INFINITY;
    for &v in &z[..CLASSES] {
        max = if v > max { v } else { max };
    }
    let mut shifted = *z;
    for v in shifted.iter_mut() {
        *v -= max;
    }
    let e = exp_chunk(shifted);
    // A fixed order of additions (a tree, for a shorter dependency chain).
    let pairs = [
        e[0] + e[1],
        e[2] + e[3],
        e[4] + e[5],
        e[6] + e[7],
        e[8] + e[9],
    ];
    let sum = ((pairs[0] + pairs[1]) + (pairs[2] + pairs[3])) + pairs[4];
    let inv = 1.0 / sum;
    for (l, v) in z.iter_mut().enumerate() {
        *v = if l < CLASSES { e[l] * inv } else { 0.0 };
    }
}

/// `e^x` lane by lane, for `x <= 0` (logits minus their maximum), within
/// 2 ulps of the C library's `expf` (a test checks the range): Cody-Waite range reduction `x = n ln 2 +
/// r`, a degree-6 polynomial for `e^r` (the coefficients of Cephes'
/// `expf`), and `2^n` built in the exponent bits. Plain f32 arithmetic,
/// so every vector width computes the same bits. Below -87.3 (where `expf`
/// leaves the normal range) the result is that of -87.3; NaN stays NaN.
#[inline(always)]
fn exp_chunk(x: Chunk) -> Chunk {
    const LOWEST: f32 = -87.3;
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // 1.5 * 2^23: adding it rounds to an integer (to nearest even), which
    // then sits in the low mantissa bits.
    const SHIFT: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const P: [f32; 6] = [
        1.987_569_1e-4,
        1.398_2e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5, // Cephes: 5.0000001201e-1, which is 0.5 in f32
    ];
    let mut out = ZERO;
    for l in 0..LANES {
        let x = if x[l] < LOWEST { LOWEST } else { x[l] };
        let t = x * LOG2E + SHIFT;
        let n = t - SHIFT;
        let r = (x - n * LN2_HI) - n * LN2_LO;
        let mut p = P[0];
        for &c in &P[1..] {
            p = p * r + c;
        }
        let y = p * (r * r) + r + 1.0;
        // n is in [-126, 0] here: the low bits of t's mantissa hold it.
        let n = (t.to_bits() as i32).wrapping_sub(SHIFT.to_bits() as i32);
        let scale = f32::from_bits((n.wrapping_add(127) as u32) << 23);
        out[l] = y * scale;
    }
    out
}

/// The summed cross-entropy `-ln p` of many rows, with one logarithm per
/// few hundred rows instead of one per row: the probabilities are
/// multiplied up in f64 and the product's logarithm is taken only before it
/// could underflow (each `p` is at least `f32::MIN_POSITIVE`, ~1e-38).
/// The order of operations is fixed, so the result is reproducible; it
/// differs from a sum of logarithms in the last bits only.
struct LossSum {
    sum: f64,
    product: f64,
}

impl LossSum {
    fn new() -> Self {
        LossSum {
            sum: 0.0,
            product: 1.0,
        }
    }

    #[inline(always)]
    fn add(&mut self, p: f32) {
        // A compare, not `f32::max`, which would turn a NaN into the floor.
        let p = if p < f32::MIN_POSITIVE {
            f32::MIN_POSITIVE
        } else {
            p
        };
        self.product *= p as f64;
        if self.product < 1e-250 {
            self.sum -= self.product.ln();
            self.product = 1.0;
        }
    }

    fn finish(self) -> f64 {
        // A NaN probability makes a NaN product, so a diverged run shows a
        // NaN loss.
        self.sum - self.product.ln()
    }
}

/// Everything of one row's backward pass except the first layer's weight
/// gradient: counts the loss, adds the second layer's and `b1`'s gradients
/// into the workspace and leaves `dz1` (the gradient at the hidden units'
/// inputs) in `s.dz1`. `probs` is the row's [`forward_row`] result.
#[inline(always)]
fn backward_head(
    w: &Weights,
    s: &mut Scratch,
    chunks: usize,
    probs: Chunk,
    label: u8,
    stats: &mut BatchStats,
    loss: &mut LossSum,
) {
    let mut dz2 = probs;
    let label = label as usize;
    loss.add(dz2[label]);
    stats.correct += (argmax(&dz2[..CLASSES]) == label) as usize;
    dz2[label] -= 1.0;

    // Second layer: dw2 += dz2 a1^T, db2 += dz2.
    s.g_b2 = add(&s.g_b2, &dz2);
    for j in 0..w.hidden {
        let a = s.a1[j / LANES][j % LANES];
        axpy(&mut s.g_w2t[j], a, &dz2);
    }
    // dz1 = (w2^T dz2) gated by the ReLU (a1 > 0 exactly where z1 > 0).
    for c in 0..chunks {
        let mut d = ZERO;
        for (k, &dk) in dz2[..CLASSES].iter().enumerate() {
            axpy(&mut d, dk, &w.w2[k * chunks + c]);
        }
        let a = &s.a1[c];
        let mut dz1 = d;
        for l in 0..LANES {
            if a[l] <= 0.0 {
                dz1[l] = 0.0;
            }
        }
        s.g_b1[c] = add(&s.g_b1[c], &dz1);
        s.dz1[c] = dz1;
    }
}

/// Forward and backward of one row given as its non-zero pixels, adding its
/// gradients into `s`. `chunks` is passed in (always `w.chunks`) so that
/// callers can give the constant 1 and let the compiler drop the chunk
/// loops and index multiplications for the common H <= 16.
#[allow(
    clippy::too_many_arguments,
    reason = "the hot loop's state, unbundled on purpose"
)]
#[inline(always)]
fn accumulate_nonzeros<V: PixelValue>(
    w: &Weights,
    s: &mut Scratch,
    chunks: usize,
    (index, value): (&[u16], &[V]),
    table: &[f32; 256],
    label: u8,
    stats: &mut BatchStats,
    loss: &mut LossSum,
) {
    let probs = forward_row(w, s, chunks, index, value, table);
    backward_head(w, s, chunks, probs, label, stats, loss);
    // (Deferring the first layer's gradient to a block of rows, so the
    // forward passes and these updates do not take turns in the L1 cache,
    // measured no faster and was dropped.)
    let Scratch { g_w1t, dz1, .. } = s;
    add_row_gradient(g_w1t, chunks, index, value, table, dz1);
}

/// First layer: `dw1 += dz1 x^T` for one row, over its non-zero pixels
/// only, into the padded gradient `g_w1t`. The gradient and `dz1` come as
/// separate slices, so the compiler knows the stores into `g_w1t` cannot
/// move `dz1` and keeps its address in a register. (The loop is bound by
/// its stores.)
#[inline(always)]
fn add_row_gradient<V: PixelValue>(
    g_w1t: &mut [Chunk],
    chunks: usize,
    index: &[u16],
    value: &[V],
    table: &[f32; 256],
    dz1: &[Chunk],
) {
    let (g_w1t, dz1) = (&mut g_w1t[..PIXEL_SLOTS * chunks], &dz1[..chunks]);
    for (&i, &v) in index.iter().zip(value) {
        let base = slot(i) * chunks;
        let v = v.scaled(table);
        for c in 0..chunks {
            axpy(&mut g_w1t[base + c], v, &dz1[c]);
        }
    }
}

/// [`accumulate_nonzeros`] of one raw row (784 bytes).
#[inline(always)]
fn accumulate_row(
    ws: &mut Workspace,
    chunks: usize,
    row: &[u8],
    label: u8,
    stats: &mut BatchStats,
    loss: &mut LossSum,
) {
    let mut nz = std::mem::take(&mut ws.s.nz);
    nz.gather(row);
    let (index, value) = (&nz.index[..nz.len], &nz.value[..nz.len]);
    let row = (index, value);
    let table = pixel_table();
    accumulate_nonzeros(&ws.w, &mut ws.s, chunks, row, table, label, stats, loss);
    ws.s.nz = nz;
}

multiversion! {
    /// Forward and backward over every row of `x`, adding summed gradients
    /// into the workspace's padded gradient buffers.
    fn accumulate_rows(ws: &mut Workspace, x: &[u8], y: &[u8]) -> BatchStats {
        let mut stats = BatchStats { rows: y.len(), ..Default::default() };
        // Plain loops, not closures: a closure handed to an iterator adapter
        // may be compiled outside this function, without its vector features.
        let chunks = ws.w.chunks;
        let mut loss = LossSum::new();
        for (row, &label) in x.chunks_exact(FEATURES).zip(y) {
            if chunks == 1 {
                accumulate_row(ws, 1, row, label, &mut stats, &mut loss);
            } else {
                accumulate_row(ws, chunks, row, label, &mut stats, &mut loss);
            }
        }
        stats.loss_sum = loss.finish();
        stats
    }
}

/// Rows converted once for many passes (full-batch training): each row's
/// non-zero pixels (for the forward pass), and the same non-zeros grouped
/// by pixel (for the first layer's weight gradient).
///
/// Grouped by pixel, `dw1`'s column for pixel `i` is one running sum over
/// the rows that have `i` lit, kept in a register and stored once, instead
/// of a load, add and store per non-zero as in [`accumulate_row`]. The sum
/// still runs over the rows in order, so the result is bit-identical to
/// [`SparseEngine::accumulate`] on the raw rows (a test checks it).
pub struct SparseRows {
    /// Each row's non-zeros, for the forward passes.
    by_row: RowSet<f32>,
    /// The non-zeros grouped by pixel, rows ascending, in groups of four
    /// pixels `4g..4g + 4`: while all four have entries left, one entry of
    /// each, side by side (`quad_row[k][j]` is pixel `4g + j`'s k-th row, for
    /// `k` in `group_start[g]..group_start[g + 1]`), so the per-pixel sums
    /// read one stream instead of eight; then each pixel's remaining
    /// entries, `tail_row[tail_start[i]..tail_start[i + 1]]` for pixel `i`.
    group_start: Vec<u32>,
    quad_row: Vec<[u16; 4]>,
    quad_value: Vec<[f32; 4]>,
    tail_start: Vec<u32>,
    tail_row: Vec<u16>,
    tail_value: Vec<f32>,
}

impl SparseRows {
    /// `None` if `x` has more rows than a `u16` row number can name (the
    /// caller then passes the rows raw; shards are far smaller).
    pub fn new(x: &[u8]) -> Option<SparseRows> {
        let rows = x.len() / FEATURES;
        if rows > u16::MAX as usize + 1 {
            return None;
        }
        let by_row = RowSet::gather(x);
        let (row_start, index, value) = (&by_row.start, &by_row.index, &by_row.value);
        let mut per_pixel = vec![0u32; FEATURES];
        for &i in index {
            per_pixel[i as usize] += 1;
        }
        // Counting sort by pixel; walking the rows in order keeps each
        // pixel's rows ascending.
        let mut col_start = Vec::with_capacity(FEATURES + 1);
        col_start.push(0u32);
        for &n in &per_pixel {
            col_start.push(col_start.last().unwrap() + n);
        }
        let mut next: Vec<u32> = col_start[..FEATURES].to_vec();
        let (mut col_row, mut col_value) = (vec![0u16; index.len()], vec![0f32; index.len()]);
        for r in 0..rows {
            let span = row_start[r] as usize..row_start[r + 1] as usize;
            for (&i, &v) in index[span.clone()].iter().zip(&value[span]) {
                let at = &mut next[i as usize];
                col_row[*at as usize] = r as u16;
                col_value[*at as usize] = v;
                *at += 1;
            }
        }
        // Interleave each group of four pixels' columns.
        let column = |i: usize| col_start[i] as usize..col_start[i + 1] as usize;
        let mut group_start = Vec::with_capacity(FEATURES / 4 + 1);
        let (mut quad_row, mut quad_value) = (Vec::new(), Vec::new());
        let mut tail_start = Vec::with_capacity(FEATURES + 1);
        let (mut tail_row, mut tail_value) = (Vec::new(), Vec::new());
        tail_start.push(0u32);
        for g in 0..FEATURES / 4 {
            group_start.push(quad_row.len() as u32);
            let cols = [
                column(4 * g),
                column(4 * g + 1),
                column(4 * g + 2),
                column(4 * g + 3),
            ];
            let common = cols.iter().map(|c| c.len()).min().unwrap_or(0);
            for k in 0..common {
                quad_row.push(std::array::from_fn(|j| col_row[cols[j].start + k]));
                quad_value.push(std::array::from_fn(|j| col_value[cols[j].start + k]));
            }
            for c in &cols {
                tail_row.extend_from_slice(&col_row[c.start + common..c.end]);
                tail_value.extend_from_slice(&col_value[c.start + common..c.end]);
                tail_start.push(tail_row.len() as u32);
            }
        }
        group_start.push(quad_row.len() as u32);
        Some(SparseRows {
            by_row,
            group_start,
            quad_row,
            quad_value,
            tail_start,
            tail_row,
            tail_value,
        })
    }

    pub fn rows(&self) -> usize {
        self.by_row.len()
    }
}

/// `dw1` from the per-pixel groups: for each pixel, the sum over its rows of
/// `value * dz1[row]`, in row order. Four pixels at a time, so four
/// independent sums hide the adds' latency; each sum's own order is
/// unchanged.
#[inline(always)]
fn first_layer_gradient(g_w1t: &mut [Chunk], dz1_rows: &[Chunk], s: &SparseRows, chunks: usize) {
    let g_w1t = &mut g_w1t[..FEATURES * chunks];
    for g in 0..FEATURES / 4 {
        let quads = s.group_start[g] as usize..s.group_start[g + 1] as usize;
        let (rows, values) = (&s.quad_row[quads.clone()], &s.quad_value[quads]);
        for c in 0..chunks {
            // Four named sums rather than an array: indexed by a variable,
            // an array would live on the stack, one store per multiply-add.
            let (mut a0, mut a1, mut a2, mut a3) = (ZERO, ZERO, ZERO, ZERO);
            for (r, v) in rows.iter().zip(values) {
                axpy(&mut a0, v[0], &dz1_rows[r[0] as usize * chunks + c]);
                axpy(&mut a1, v[1], &dz1_rows[r[1] as usize * chunks + c]);
                axpy(&mut a2, v[2], &dz1_rows[r[2] as usize * chunks + c]);
                axpy(&mut a3, v[3], &dz1_rows[r[3] as usize * chunks + c]);
            }
            for (j, acc) in [a0, a1, a2, a3].into_iter().enumerate() {
                let p = 4 * g + j;
                let tail = s.tail_start[p] as usize..s.tail_start[p + 1] as usize;
                let sum = column_sum(
                    acc,
                    &s.tail_row[tail.clone()],
                    &s.tail_value[tail],
                    dz1_rows,
                    chunks,
                    c,
                );
                // Every entry is written here, so the buffer needs no
                // clearing first; and a running sum that starts at +0 never
                // becomes -0, so the sum is exactly `0 + sum`, what the
                // row-by-row path adds up.
                g_w1t[p * chunks + c] = sum;
            }
        }
    }
}

/// `acc + sum of value * dz1[row]` over one column's pairs, in order.
#[inline(always)]
fn column_sum(
    mut acc: Chunk,
    rows: &[u16],
    values: &[f32],
    dz1_rows: &[Chunk],
    chunks: usize,
    c: usize,
) -> Chunk {
    for (&r, &v) in rows.iter().zip(values) {
        axpy(&mut acc, v, &dz1_rows[r as usize * chunks + c]);
    }
    acc
}

multiversion! {
    /// [`accumulate_rows`] over prepared rows: forward passes and the
    /// per-row part of the backward pass row by row (keeping every row's
    /// `dz1`), then `dw1` pixel by pixel.
    fn accumulate_prepared_rows(ws: &mut Workspace, rows: &SparseRows, y: &[u8]) -> BatchStats {
        let mut stats = BatchStats { rows: y.len(), ..Default::default() };
        let chunks = ws.w.chunks;
        let mut dz1_rows = std::mem::take(&mut ws.s.dz1_rows);
        dz1_rows.clear();
        dz1_rows.resize(rows.rows() * chunks, ZERO);
        let mut loss = LossSum::new();
        let table = pixel_table();
        for (r, &label) in y.iter().enumerate() {
            let (index, value, _) = rows.by_row.row(r);
            let Workspace { w, s, .. } = &mut *ws;
            if chunks == 1 {
                let probs = forward_row(w, s, 1, index, value, table);
                backward_head(w, s, 1, probs, label, &mut stats, &mut loss);
                dz1_rows[r] = s.dz1[0];
            } else {
                let probs = forward_row(w, s, chunks, index, value, table);
                backward_head(w, s, chunks, probs, label, &mut stats, &mut loss);
                dz1_rows[r * chunks..(r + 1) * chunks].copy_from_slice(&s.dz1[..chunks]);
            }
        }
        if chunks == 1 {
            first_layer_gradient(&mut ws.s.g_w1t, &dz1_rows, rows, 1);
        } else {
            first_layer_gradient(&mut ws.s.g_w1t, &dz1_rows, rows, chunks);
        }
        ws.s.dz1_rows = dz1_rows;
        stats.loss_sum = loss.finish();
        stats
    }
}

multiversion! {
    /// Class probabilities of every row of `x` into `out` (`rows x 10`).
    fn probabilities_rows(ws: &mut Workspace, x: &[u8], out: &mut [f32]) {
        let table = pixel_table();
        let chunks = ws.w.chunks;
        let mut nz = std::mem::take(&mut ws.s.nz);
        for (row, o) in x.chunks_exact(FEATURES).zip(out.chunks_exact_mut(CLASSES)) {
            nz.gather(row);
            let (index, value) = (&nz.index[..nz.len], &nz.value[..nz.len]);
            let p = if chunks == 1 {
                forward_row(&ws.w, &mut ws.s, 1, index, value, table)
            } else {
                forward_row(&ws.w, &mut ws.s, chunks, index, value, table)
            };
            o.copy_from_slice(&p[..CLASSES]);
        }
        ws.s.nz = nz;
    }
}

/// Run `f` on this thread's [`Workspace`] with `m` loaded into it.
fn with_model<R>(m: &Mlp, f: impl FnOnce(&mut Workspace) -> R) -> R {
    WORKSPACE.with(|ws| {
        let ws = &mut *ws.borrow_mut();
        ws.load_model(m);
        f(ws)
    })
}

impl Engine for SparseEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Sparse
    }

    fn accumulate(&self, m: &Mlp, x: &[u8], y: &[u8], g: &mut Gradients) -> BatchStats {
        debug_assert_eq!(x.len(), y.len() * FEATURES);
        with_model(m, |ws| {
            ws.s.clear_gradients();
            let stats = accumulate_rows(ws, x, y);
            ws.s.add_gradients_to(g);
            stats
        })
    }

    fn prepare(&self, x: &[u8]) -> Option<PreparedRows> {
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
            let stats = accumulate_prepared_rows(ws, s, y);
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

    fn probabilities(&self, m: &Mlp, x: &[u8]) -> Array2<f32> {
        let rows = x.len() / FEATURES;
        let mut out = Array2::zeros((rows, CLASSES));
        with_model(m, |ws| {
            probabilities_rows(ws, x, out.as_slice_mut().expect("standard layout"))
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::random_batch;

    /// The product-of-probabilities loss against the plain sum of logs,
    /// including probabilities small enough that an unfolded product would
    /// underflow to 0 within a few rows, and the f32 clamp at the bottom.
    #[test]
    fn loss_sum_matches_a_sum_of_logs() {
        let ps: Vec<f32> = (0..1000)
            .map(|i| match i % 4 {
                0 => 0.93,
                1 => 1e-30,
                2 => (i as f32 / 1000.0).max(1e-3),
                _ => 0.0,
            })
            .collect();
        let mut sum = LossSum::new();
        let mut plain = 0.0f64;
        for &p in &ps {
            sum.add(p);
            plain -= (p.max(f32::MIN_POSITIVE) as f64).ln();
        }
        let got = sum.finish();
        assert!(((got - plain) / plain).abs() < 1e-12, "{got} vs {plain}");
        let mut nan = LossSum::new();
        nan.add(0.5);
        nan.add(f32::NAN);
        assert!(nan.finish().is_nan(), "a NaN probability must show");
    }

    /// The AVX-512 transpose (when this CPU has it) against the definition.
    #[test]
    fn transpose16_transposes() {
        let mut block = [ZERO; LANES];
        for (i, row) in block.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = (i * 100 + j) as f32;
            }
        }
        transpose16(&mut block);
        for (i, row) in block.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                assert_eq!(v, (j * 100 + i) as f32, "[{i}][{j}]");
            }
        }
    }

    /// `w1` through the padded layout and back, at one, two and three
    /// chunks of hidden units.
    #[test]
    fn transposes_round_trip() {
        for h in [10, 16, 20, 40] {
            let w1: Vec<f32> = (0..h * FEATURES).map(|i| i as f32 * 0.5 - 7.0).collect();
            let chunks = h.div_ceil(LANES);
            let mut w1t = vec![ZERO; FEATURES * chunks];
            transpose_in(&w1, h, &mut w1t);
            for j in 0..h {
                for i in [0, 1, 17, 783] {
                    assert_eq!(w1t[i * chunks + j / LANES][j % LANES], w1[j * FEATURES + i]);
                }
            }
            for i in 0..FEATURES {
                for l in h..chunks * LANES {
                    assert_eq!(w1t[i * chunks + l / LANES][l % LANES], 0.0, "padding");
                }
            }
            let mut back = vec![1.0; h * FEATURES];
            add_transposed(&w1t, h, &mut back);
            for (b, w) in back.iter().zip(&w1) {
                assert_eq!(*b, w + 1.0);
            }
        }
    }

    /// The vector exponential against the C library's, over the whole range
    /// a softmax feeds it (and exactly 1 at 0, so the largest class's term
    /// is exact).
    #[test]
    fn exp_chunk_is_within_two_ulps_of_expf() {
        assert_eq!(exp_chunk(ZERO)[0], 1.0);
        let mut worst = 0u32;
        let mut x = 0.0f32;
        while x > -87.3 {
            let chunk = Chunk(std::array::from_fn(|l| x - l as f32 * 1e-3));
            for (l, got) in exp_chunk(chunk).into_iter().enumerate() {
                if chunk[l] < -87.3 {
                    continue;
                }
                let want = chunk[l].exp();
                worst = worst.max(got.to_bits().abs_diff(want.to_bits()));
            }
            x -= 0.0137;
        }
        assert!(worst <= 2, "{worst} ulps");
        assert!(exp_chunk(Chunk([f32::NAN; LANES]))[0].is_nan());
        let floor = exp_chunk(Chunk([-1000.0; LANES]))[0];
        assert!(floor > 0.0 && floor < 1.3e-38, "{floor}");
    }

    /// Every byte value, in every position of a 32-pixel block, converts to
    /// exactly `p / 255` (the vector gather multiplies in f64 instead).
    #[test]
    fn gather_converts_every_byte_exactly() {
        for offset in [0, 5, 31] {
            let mut row = [0u8; FEATURES];
            for p in 1..=255u8 {
                row.fill(0);
                row[offset] = p;
                row[offset + 64] = p;
                let mut nz = NonZeros::default();
                nz.gather(&row);
                assert_eq!(nz.len, 2);
                for v in &nz.value[..2] {
                    assert_eq!(v.to_bits(), (p as f32 / 255.0).to_bits(), "pixel {p}");
                }
            }
        }
    }

    /// The parallel row set (counted, then gathered by blocks into place)
    /// equals the one-thread gather, across block edges and with blank
    /// rows, on pools of 1 and 2 threads.
    #[test]
    fn parallel_row_set_equals_the_serial_one() {
        let (mut x, _) = random_batch(4500, 8);
        x[FEATURES * 511..FEATURES * 513].fill(0);
        x[FEATURES * 2047..FEATURES * 2049].fill(0);
        x[FEATURES * 4499..].fill(0);
        let serial = RowSet::<u8>::gather(&x);
        assert_eq!(serial.len(), 4500);
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let parallel = pool.install(|| RowSet::<u8>::gather_parallel(&x)).unwrap();
            assert_eq!(parallel.start, serial.start);
            assert_eq!(parallel.index, serial.index);
            assert_eq!(parallel.value, serial.value);
            assert_eq!(parallel.split, serial.split);
        }
        assert!(serial.row(2048).0.is_empty() && serial.row(4499).0.is_empty());
        assert!(!serial.row(2049).0.is_empty());
    }

    /// Both gathers (whichever this CPU can run) give the same pairs, in
    /// index order, as the obvious filter: scaled values and bytes.
    #[test]
    fn gathers_agree_with_a_plain_filter() {
        let (mut x, _) = random_batch(50, 3);
        x[..FEATURES].fill(0);
        x[FEATURES..2 * FEATURES].fill(200);
        x[3 * FEATURES - 1] = 1;
        for row in x.chunks_exact(FEATURES) {
            // Values compared as bits: both must be exactly pixel / 255.
            let expected: Vec<(u16, u32)> = row
                .iter()
                .enumerate()
                .filter(|(_, &p)| p != 0)
                .map(|(i, &p)| (i as u16, (p as f32 / 255.0).to_bits()))
                .collect();
            let expected_bytes: Vec<(u16, u8)> = row
                .iter()
                .enumerate()
                .filter(|(_, &p)| p != 0)
                .map(|(i, &p)| (i as u16, p))
                .collect();
            let (mut index, mut value) = (Box::new([0; NZ_CAP]), Box::new([0.0; NZ_CAP]));
            let mut bytes = Box::new([0; NZ_CAP]);
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            let n = gather_scalar::<true>(row, &mut index, &mut value, &mut bytes);
            let got: Vec<(u16, u32)> = index[..n].iter().copied().zip(bits(&value[..n])).collect();
            assert_eq!(got, expected);
            let n = gather_scalar::<false>(row, &mut index, &mut value, &mut bytes);
            let got: Vec<(u16, u8)> = index[..n]
                .iter()
                .copied()
                .zip(bytes[..n].iter().copied())
                .collect();
            assert_eq!(got, expected_bytes);
            // The vector gather where the CPU has it.
            let mut nz = NonZeros::default();
            nz.gather(row);
            let got: Vec<(u16, u32)> = nz.index[..nz.len]
                .iter()
                .copied()
                .zip(bits(&nz.value[..nz.len]))
                .collect();
            assert_eq!(got, expected);
            nz.gather_bytes(row);
            let got: Vec<(u16, u8)> = nz.index[..nz.len]
                .iter()
                .copied()
                .zip(nz.bytes[..nz.len].iter().copied())
                .collect();
            assert_eq!(got, expected_bytes);
        }
    }
}

#[cfg(test)]
mod level_tests {
    //! The per-row head (second layer, softmax, loss, arg-max, backward),
    //! compiled for the widest vectors this CPU has and for the baseline:
    //! both must agree bit for bit, as the module promises.
    use super::*;
    use crate::model::Init;

    const ROWS: usize = 16;

    fn row_head(
        ws: &mut Workspace,
        z: &[Chunk; ROWS],
        labels: &[u8],
    ) -> (Vec<Chunk>, Vec<Chunk>, BatchStats) {
        let (mut stats, mut loss) = (BatchStats::default(), LossSum::new());
        let (mut probs, mut dz1) = (Vec::new(), Vec::new());
        for (i, &label) in labels.iter().enumerate() {
            ws.s.a1[0] = z[i];
            let p = forward_from_sums(&ws.w, &mut ws.s, 1);
            probs.push(p);
            backward_head(&ws.w, &mut ws.s, 1, p, label, &mut stats, &mut loss);
            dz1.push(ws.s.dz1[0]);
        }
        stats.loss_sum = loss.finish();
        (probs, dz1, stats)
    }

    multiversion! {
        fn row_head_best(ws: &mut Workspace, z: &[Chunk; ROWS], labels: &[u8]) -> (Vec<Chunk>, Vec<Chunk>, BatchStats) {
            row_head(ws, z, labels)
        }
    }

    type Head = fn(&mut Workspace, &[Chunk; ROWS], &[u8]) -> (Vec<Chunk>, Vec<Chunk>, BatchStats);

    #[test]
    fn the_row_head_gives_the_same_bits_at_every_level() {
        for (hidden, seed) in [(10, 1), (16, 3), (3, 4)] {
            let m = Mlp::init(hidden, Init::He, seed);
            let mut z = [ZERO; ROWS];
            for (i, zi) in z.iter_mut().enumerate() {
                for l in 0..hidden {
                    zi[l] = ((i * 7 + l * 3 + seed as usize) % 11) as f32 * 0.37 - 1.5;
                }
            }
            let labels: Vec<u8> = (0..ROWS).map(|i| ((i * 3 + 1) % 10) as u8).collect();
            let run = |head: Head| {
                let mut ws = Workspace::default();
                ws.load_model(&m);
                ws.s.clear_gradients();
                let (probs, dz1, stats) = head(&mut ws, &z, &labels);
                (
                    probs,
                    dz1,
                    stats.correct,
                    stats.loss_sum.to_bits(),
                    ws.s.g_b1.clone(),
                    ws.s.g_w2t.clone(),
                    ws.s.g_b2,
                )
            };
            let baseline = run(row_head);
            assert!(f64::from_bits(baseline.3) > 0.0);
            assert_eq!(run(row_head_best), baseline, "H={hidden}");
        }
    }
}
