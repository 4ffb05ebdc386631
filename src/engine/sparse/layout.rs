//! The padded layouts the sparse engine computes in, and the moves between
//! them and the model's own layout.
//!
//! Hidden units go in chunks of 16 lanes ([`Chunk`]: one AVX-512 register,
//! aligned to a cache line), the last chunk padded with zeros. `w1` is kept
//! transposed, one row of chunks per pixel, so a non-zero pixel touches one
//! contiguous run of weights; the second layer (H -> 10) is kept in 16-lane
//! form too, the 10 classes padded to 16. [`Weights`] is the model in these
//! layouts and [`Scratch`] one thread's gradients in them; the 16 x 16
//! block transposes carry `w1` in and its gradient out. Padding stays zero,
//! so it never changes a result.
//!
//! Here too the two operations on chunks ([`axpy`], [`add`]) that all the
//! arithmetic is made of: a multiply then an add, never fused, so every
//! vector width gives the same bits.

use super::gather::NonZeros;
use crate::data::{CLASSES, FEATURES};
use crate::model::{Dense, Gradients, Mlp};
use crate::simd::multiversion;

/// Lanes of one chunk of hidden units (one AVX-512 register of f32).
pub(super) const LANES: usize = 16;

/// One chunk of lanes, aligned to a cache line: a 64-byte load or store of
/// one then never straddles two lines (a `Vec<[f32; 16]>` is only 4-byte
/// aligned, and most of its chunks did).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C, align(64))]
pub(super) struct Chunk(pub(super) [f32; LANES]);

pub(super) const ZERO: Chunk = Chunk([0.0; LANES]);

const _: () = assert!(std::mem::size_of::<Chunk>() == LANES * std::mem::size_of::<f32>());

/// The lanes of `chunks`, one after another, as plain floats: for loops
/// that run along whole rows of chunks, which the compiler vectorises best
/// as one flat run.
#[inline(always)]
pub(super) fn lanes(chunks: &[Chunk]) -> &[f32] {
    // SAFETY: a Chunk is `repr(C)` over `[f32; 16]` and exactly that size
    // (asserted above), so `n` chunks are `16 n` consecutive, initialised,
    // suitably aligned f32s, borrowed for as long as the chunks.
    unsafe { std::slice::from_raw_parts(chunks.as_ptr().cast(), chunks.len() * LANES) }
}

/// [`lanes`], mutable.
#[inline(always)]
pub(super) fn lanes_mut(chunks: &mut [Chunk]) -> &mut [f32] {
    // SAFETY: as for `lanes`; the borrow is exclusive.
    unsafe { std::slice::from_raw_parts_mut(chunks.as_mut_ptr().cast(), chunks.len() * LANES) }
}

/// Pixel rows allocated in `w1t` and `g_w1t`: 784 rounded up to a power of
/// two. The hot loops index them with `pixel & (PIXEL_SLOTS - 1)`, which the
/// compiler can see is in bounds, so they carry no bounds checks; rows past
/// 784 stay zero and are never read.
pub(super) const PIXEL_SLOTS: usize = 1024;
const _: () = assert!(PIXEL_SLOTS.is_power_of_two() && PIXEL_SLOTS >= FEATURES);

const _: () = assert!(FEATURES.is_multiple_of(LANES));

/// Pixel `i`'s row in `w1t` / `g_w1t` (the identity for every real pixel).
#[inline(always)]
pub(super) fn slot(i: u16) -> usize {
    i as usize & (PIXEL_SLOTS - 1)
}

/// Chunks in a table read at byte offsets ([`chunk_at`]): as many as a
/// `u16` offset can reach, and one more, so a chunk read at any offset
/// stays inside the table.
pub(super) const OFFSET_TABLE: usize = (u16::MAX as usize + 1) / CHUNK_BYTES + 1;

/// Bytes in a chunk: a byte offset of chunk `i` in a table is `i * 64`.
pub(super) const CHUNK_BYTES: usize = std::mem::size_of::<Chunk>();

/// The byte offset of chunk `i` in a table of one chunk per row (`i` below
/// 1024).
pub(super) fn chunk_offset(i: usize) -> u16 {
    u16::try_from(i * CHUNK_BYTES).expect("a chunk within a u16 offset")
}

/// The chunk `offset` bytes into `table` (an offset from [`chunk_offset`]).
///
/// The hot loops of full-batch training read weights and gradients this
/// way: the offset goes straight into the load's address, where an index
/// costs a mask (for the bounds) and a shift (for the 64-byte stride) per
/// non-zero pixel, a third of the first layer's instructions.
#[inline(always)]
pub(super) fn chunk_at(table: &[Chunk; OFFSET_TABLE], offset: u16) -> Chunk {
    // SAFETY: the table is `OFFSET_TABLE * 64` = 65,600 bytes and `offset`
    // at most 65,535, so the 64 bytes read lie inside it; any bytes are a
    // valid `Chunk` (sixteen f32s), and `read_unaligned` needs no alignment.
    unsafe {
        table
            .as_ptr()
            .cast::<u8>()
            .add(usize::from(offset))
            .cast::<Chunk>()
            .read_unaligned()
    }
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

/// `acc += v * w`, lane by lane (a multiply then an add: no fused rounding).
#[inline(always)]
pub(super) fn axpy(acc: &mut Chunk, v: f32, w: &Chunk) {
    // Whole-chunk loads and stores, so the compiler sees one vector operation
    // rather than sixteen scalar read-modify-writes.
    let (mut a, w) = (*acc, *w);
    for l in 0..LANES {
        a[l] += v * w[l];
    }
    *acc = a;
}

/// `a + b`, lane by lane.
#[inline(always)]
pub(super) fn add(a: &Chunk, b: &Chunk) -> Chunk {
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

/// The model in the padded layouts.
#[derive(Default)]
pub(super) struct Weights {
    pub(super) hidden: usize,
    /// Chunks per hidden vector: `Hp / 16`.
    pub(super) chunks: usize,
    /// `w1` transposed: pixel `i`'s weights are chunks `i*chunks..(i+1)*chunks`
    /// (and at least [`OFFSET_TABLE`] chunks, so with one chunk per pixel it
    /// is read at byte offsets, [`chunk_at`]).
    pub(super) w1t: Vec<Chunk>,
    pub(super) b1: Vec<Chunk>,
    /// `w2` transposed: hidden unit `j`'s weights to the 10 classes, padded.
    pub(super) w2t: Vec<Chunk>,
    /// `w2` as is: class `k`'s weights from the hidden units, `chunks` each.
    /// Derived from `w2t` ([`Weights::mirror_w2`]).
    pub(super) w2: Vec<Chunk>,
    pub(super) b2: Chunk,
}

impl Weights {
    /// Zeros for a network with `h` hidden units.
    pub(super) fn zeros(h: usize) -> Weights {
        let chunks = h.div_ceil(LANES);
        Weights {
            hidden: h,
            chunks,
            w1t: vec![ZERO; (PIXEL_SLOTS * chunks).max(OFFSET_TABLE)],
            b1: vec![ZERO; chunks],
            w2t: vec![ZERO; h],
            w2: vec![ZERO; CLASSES * chunks],
            b2: ZERO,
        }
    }

    /// Copy `m` (of this shape) into the padded layouts.
    pub(super) fn load(&mut self, m: &Mlp) {
        let h = self.hidden;
        let [l1, l2] = two_layers(m);
        assert_eq!(l1.outputs(), h, "model and layout differ in hidden units");
        transpose_in(l1.w.as_slice().expect("standard layout"), h, &mut self.w1t);
        for (j, &b) in l1.b.iter().enumerate() {
            self.b1[j / LANES][j % LANES] = b;
        }
        for k in 0..CLASSES {
            for j in 0..h {
                self.w2t[j][k] = l2.w[[k, j]];
            }
            self.b2[k] = l2.b[k];
        }
        self.mirror_w2();
    }

    /// `m` = these weights, exactly ([`Weights::load`]'s inverse).
    pub(super) fn store(&self, m: &mut Mlp) {
        let h = self.hidden;
        let [l1, l2] = two_layers_mut(m);
        assert_eq!(l1.outputs(), h, "model and layout differ in hidden units");
        let w1 = l1.w.as_slice_mut().expect("standard layout");
        transpose_out(&self.w1t, h, w1, Combine::Copy);
        for (j, b) in l1.b.iter_mut().enumerate() {
            *b = self.b1[j / LANES][j % LANES];
        }
        for k in 0..CLASSES {
            for j in 0..h {
                l2.w[[k, j]] = self.w2t[j][k];
            }
            l2.b[k] = self.b2[k];
        }
    }

    /// Rebuild the class-major copy `w2` from `w2t`.
    pub(super) fn mirror_w2(&mut self) {
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
pub(super) struct Scratch {
    pub(super) g_w1t: Vec<Chunk>,
    pub(super) g_b1: Vec<Chunk>,
    pub(super) g_w2t: Vec<Chunk>,
    pub(super) g_b2: Chunk,
    /// The current row's non-zero pixels.
    pub(super) nz: NonZeros,
    /// The current row's hidden activations and their gradient.
    pub(super) a1: Vec<Chunk>,
    pub(super) dz1: Vec<Chunk>,
    /// Every row's `dz1`, for the prepared path's per-pixel `dw1` (with one
    /// chunk per row, [`OFFSET_TABLE`] chunks, read at byte offsets).
    pub(super) dz1_rows: Vec<Chunk>,
}

impl Scratch {
    pub(super) fn new(h: usize) -> Scratch {
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

    pub(super) fn clear_gradients(&mut self) {
        let real = FEATURES * self.g_b1.len();
        self.g_w1t[..real].fill(ZERO);
        self.clear_small_gradients();
    }

    /// All but `g_w1t`, which the prepared path overwrites whole.
    pub(super) fn clear_small_gradients(&mut self) {
        self.g_b1.fill(ZERO);
        self.g_w2t.fill(ZERO);
        self.g_b2 = ZERO;
    }

    /// Add the padded gradients into `g` (the model's layout).
    pub(super) fn add_gradients_to(&self, g: &mut Gradients) {
        let h = g.hidden();
        let [l1, l2] = two_layers_mut(g);
        add_transposed(
            &self.g_w1t,
            h,
            l1.w.as_slice_mut().expect("standard layout"),
        );
        for (j, b) in l1.b.iter_mut().enumerate() {
            *b += self.g_b1[j / LANES][j % LANES];
        }
        for k in 0..CLASSES {
            for j in 0..h {
                l2.w[[k, j]] += self.g_w2t[j][k];
            }
            l2.b[k] += self.g_b2[k];
        }
    }
}

multiversion! {
/// `w1` (`h x 784`, the model's layout) into `w1t` (784 chunk rows of `h`
/// lanes, padding 0), one 16 x 16 block at a time. Runs once per step (per
/// shard in full-batch training), where an element-by-element strided copy
/// was a noticeable part of a small-batch step.
pub(super) fn transpose_in(w1: &[f32], h: usize, w1t: &mut [Chunk]) {
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

/// `w1` (`h x 784`) = `w1t` (padded, `784 x Hp`), exactly: [`transpose_in`]'s
/// inverse.
pub(super) fn copy_out(w1t: &[Chunk], h: usize, w1: &mut [f32]) {
    transpose_out(w1t, h, w1, Combine::Copy);
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
        let columns = &w1t[i0 * chunks..(i0 + LANES) * chunks];
        columns_out(columns, i0, h, w1, combine);
    }
}
}

/// Sixteen pixels' rows of a padded transposed layout (`columns`, `16 x
/// chunks`: pixels `i0..i0 + 16`) into their sixteen columns of `w1`
/// (`h x 784`), added or copied, one 16 x 16 block at a time.
#[inline(always)]
fn columns_out(columns: &[Chunk], i0: usize, h: usize, w1: &mut [f32], combine: Combine) {
    let chunks = h.div_ceil(LANES);
    for c in 0..chunks {
        let mut block = [ZERO; LANES];
        for (p, row) in block.iter_mut().enumerate() {
            *row = columns[p * chunks + c];
        }
        transpose16(&mut block);
        let n = LANES.min(h - c * LANES);
        let at = c * LANES * FEATURES + i0;
        if combine == Combine::Add {
            add_rows(&block, n, &mut w1[at..at + (n - 1) * FEATURES + LANES]);
        } else {
            for (l, column) in block.iter().enumerate().take(n) {
                w1[at + l * FEATURES..at + l * FEATURES + LANES].copy_from_slice(&column.0);
            }
        }
    }
}

/// `w[l * 784..][..16] += block[l]` for the first `n` rows of `block`: a
/// transposed block added into sixteen pixels of `n` rows of `w1`. With
/// AVX-512, one vector add per row; otherwise lane by lane. (Left to the
/// compiler, this loop was vectorised across the rows instead, with a
/// gather and a scatter per lane.)
#[inline(always)]
fn add_rows(block: &[Chunk; LANES], n: usize, w: &mut [f32]) {
    assert!(n >= 1 && w.len() >= (n - 1) * FEATURES + LANES);
    #[cfg(target_arch = "x86_64")]
    if crate::simd::level() == crate::simd::Level::Avx512 {
        // SAFETY: AVX-512F was detected; the lengths were checked above.
        unsafe { add_rows_avx512(block, n, w) };
        return;
    }
    for (l, column) in block.iter().enumerate().take(n) {
        for (x, &g) in w[l * FEATURES..l * FEATURES + LANES]
            .iter_mut()
            .zip(column.iter())
        {
            *x += g;
        }
    }
}

/// [`add_rows`] with AVX-512: the same adds, one register per row.
///
/// # Safety
///
/// `w` holds at least `(n - 1) * 784 + 16` floats and `n <= 16`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn add_rows_avx512(block: &[Chunk; LANES], n: usize, w: &mut [f32]) {
    use std::arch::x86_64::*;
    for (l, column) in block.iter().enumerate().take(n) {
        // SAFETY: row l's 16 floats lie within `w` (the caller's bound);
        // every Chunk is 64-byte aligned.
        unsafe {
            let at = w.as_mut_ptr().add(l * FEATURES);
            let sum = _mm512_add_ps(_mm512_loadu_ps(at), _mm512_load_ps(column.0.as_ptr()));
            _mm512_storeu_ps(at, sum);
        }
    }
}

/// `w1 +=` sixteen pixels' gradient columns (see [`columns_out`]).
#[inline(always)]
pub(super) fn add_columns_transposed(columns: &[Chunk], i0: usize, h: usize, w1: &mut [f32]) {
    columns_out(columns, i0, h, w1, Combine::Add);
}

/// Transposes a 16 x 16 block in place: with AVX-512 or AVX2, in
/// registers; otherwise element by element. Data movement only, so all give
/// the same bits.
#[inline]
pub(super) fn transpose16(block: &mut [Chunk; LANES]) {
    #[cfg(target_arch = "x86_64")]
    match crate::simd::level() {
        // SAFETY: AVX-512F was detected.
        crate::simd::Level::Avx512 => return unsafe { transpose16_avx512(block) },
        // SAFETY: AVX2 was detected.
        crate::simd::Level::Avx2 => return unsafe { transpose16_avx2(block) },
        crate::simd::Level::Baseline => {}
    }
    transpose16_scalar(block);
}

/// [`transpose16`] element by element.
fn transpose16_scalar(block: &mut [Chunk; LANES]) {
    #[allow(clippy::needless_range_loop, reason = "a swap across the diagonal")]
    for a in 0..LANES {
        for b in a + 1..LANES {
            let t = block[a][b];
            block[a][b] = block[b][a];
            block[b][a] = t;
        }
    }
}

/// [`transpose16`] as four 8 x 8 transposes of 256-bit rows (each the
/// classic unpack, shuffle and 128-bit permute), the two off-diagonal
/// quarters swapping places.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn transpose16_avx2(block: &mut [Chunk; LANES]) {
    use std::arch::x86_64::*;
    #[target_feature(enable = "avx2")]
    fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
        let t: [__m256; 8] = std::array::from_fn(|i| {
            let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
            if i % 2 == 0 {
                _mm256_unpacklo_ps(a, b)
            } else {
                _mm256_unpackhi_ps(a, b)
            }
        });
        // u[4h + k]: element k (and k + 4) of rows 4h..4h + 4.
        let u = [
            _mm256_shuffle_ps::<0x44>(t[0], t[2]),
            _mm256_shuffle_ps::<0xee>(t[0], t[2]),
            _mm256_shuffle_ps::<0x44>(t[1], t[3]),
            _mm256_shuffle_ps::<0xee>(t[1], t[3]),
            _mm256_shuffle_ps::<0x44>(t[4], t[6]),
            _mm256_shuffle_ps::<0xee>(t[4], t[6]),
            _mm256_shuffle_ps::<0x44>(t[5], t[7]),
            _mm256_shuffle_ps::<0xee>(t[5], t[7]),
        ];
        std::array::from_fn(|k| {
            if k < 4 {
                _mm256_permute2f128_ps::<0x20>(u[k], u[4 + k])
            } else {
                _mm256_permute2f128_ps::<0x31>(u[k - 4], u[k])
            }
        })
    }
    // SAFETY: every Chunk is 64 bytes and 64-byte aligned, so both 32-byte
    // halves of each are aligned loads and stores within `block`.
    let half = |row: &Chunk, h: usize| unsafe { _mm256_load_ps(row.0.as_ptr().add(8 * h)) };
    let quarter =
        |rows: usize, h: usize| transpose8(std::array::from_fn(|i| half(&block[rows + i], h)));
    // Quarters by (rows, lanes): [0..8, 0..8], [0..8, 8..16], [8..16, 0..8], [8..16, 8..16].
    let (a, b, c, d) = (quarter(0, 0), quarter(0, 1), quarter(8, 0), quarter(8, 1));
    for i in 0..8 {
        let put = |row: &mut Chunk, h: usize, v: __m256| {
            // SAFETY: as above.
            unsafe { _mm256_store_ps(row.0.as_mut_ptr().add(8 * h), v) }
        };
        put(&mut block[i], 0, a[i]);
        put(&mut block[i], 1, c[i]);
        put(&mut block[8 + i], 0, b[i]);
        put(&mut block[8 + i], 1, d[i]);
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

/// The two layers of a one-hidden-layer model, the only shape these
/// layouts hold (deeper models take `super::deep`'s path).
pub(super) fn two_layers(m: &Mlp) -> [&Dense; 2] {
    match &m.layers[..] {
        [l1, l2] => [l1, l2],
        _ => panic!(
            "the padded layouts hold one hidden layer, the model has {}",
            m.layers.len() - 1
        ),
    }
}

/// [`two_layers`], mutable.
pub(super) fn two_layers_mut(m: &mut Mlp) -> [&mut Dense; 2] {
    let hidden = m.layers.len() - 1;
    match &mut m.layers[..] {
        [l1, l2] => [l1, l2],
        _ => panic!("the padded layouts hold one hidden layer, the model has {hidden}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every transpose this CPU can run, against the definition.
    #[test]
    fn transpose16_transposes() {
        type Transpose = fn(&mut [Chunk; LANES]);
        let mut versions: Vec<(&str, Transpose)> =
            vec![("dispatched", transpose16), ("scalar", transpose16_scalar)];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 was detected.
                versions.push(("avx2", |b| unsafe { transpose16_avx2(b) }));
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: AVX-512F was detected.
                versions.push(("avx512", |b| unsafe { transpose16_avx512(b) }));
            }
        }
        for (name, transpose) in versions {
            let mut block = [ZERO; LANES];
            for (i, row) in block.iter_mut().enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = (i * 100 + j) as f32;
                }
            }
            transpose(&mut block);
            for (i, row) in block.iter().enumerate() {
                for (j, &v) in row.iter().enumerate() {
                    assert_eq!(v, (j * 100 + i) as f32, "{name} [{i}][{j}]");
                }
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
}
