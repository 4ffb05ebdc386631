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
//! [`super::simd`]), with the same results on each.
//!
//! Arithmetic is f32 like [`super::blas`]; tests hold both to the f64
//! oracle. Rows are processed one after another in a fixed order, so a shard
//! always gives the same bits.

use super::simd::multiversion;
use super::{argmax, pixel_table, BatchStats, Engine, EngineKind};
use crate::data::{CLASSES, FEATURES};
use crate::model::{Gradients, Mlp};
use ndarray::Array2;
use std::cell::RefCell;

pub struct SparseEngine;

/// Lanes of one chunk of hidden units (one AVX-512 register of f32).
const LANES: usize = 16;
type Chunk = [f32; LANES];

/// Per-thread copies of the model in the padded layouts, gradients in the
/// same layouts, and one row's scratch. Reused across calls: a training loop
/// allocates nothing after its first step.
#[derive(Default)]
struct Workspace {
    hidden: usize,
    /// Chunks per hidden vector: `Hp / 16`.
    chunks: usize,
    /// `w1` transposed: pixel `i`'s weights are chunks `i*chunks..(i+1)*chunks`.
    w1t: Vec<Chunk>,
    b1: Vec<Chunk>,
    /// `w2` transposed: hidden unit `j`'s weights to the 10 classes, padded.
    w2t: Vec<Chunk>,
    /// `w2` as is: class `k`'s weights from the hidden units, `chunks` each.
    w2: Vec<Chunk>,
    b2: Chunk,
    g_w1t: Vec<Chunk>,
    g_b1: Vec<Chunk>,
    g_w2t: Vec<Chunk>,
    g_b2: Chunk,
    /// The current row's non-zero pixels.
    nz: NonZeros,
    /// The current row's hidden activations and their gradient.
    a1: Vec<Chunk>,
    dz1: Vec<Chunk>,
}

impl Workspace {
    /// Copy `m` into the padded layouts.
    fn load_model(&mut self, m: &Mlp) {
        let h = m.hidden();
        let chunks = h.div_ceil(LANES);
        if self.hidden != h {
            *self = Workspace {
                hidden: h,
                chunks,
                w1t: vec![[0.0; LANES]; FEATURES * chunks],
                b1: vec![[0.0; LANES]; chunks],
                w2t: vec![[0.0; LANES]; h],
                w2: vec![[0.0; LANES]; CLASSES * chunks],
                b2: [0.0; LANES],
                g_w1t: vec![[0.0; LANES]; FEATURES * chunks],
                g_b1: vec![[0.0; LANES]; chunks],
                g_w2t: vec![[0.0; LANES]; h],
                g_b2: [0.0; LANES],
                nz: NonZeros::default(),
                a1: vec![[0.0; LANES]; chunks],
                dz1: vec![[0.0; LANES]; chunks],
            };
        }
        let w1 = m.w1.as_slice().expect("standard layout");
        for (j, row) in w1.chunks_exact(FEATURES).enumerate() {
            let (c, lane) = (j / LANES, j % LANES);
            for (i, &w) in row.iter().enumerate() {
                self.w1t[i * chunks + c][lane] = w;
            }
        }
        for (j, &b) in m.b1.iter().enumerate() {
            self.b1[j / LANES][j % LANES] = b;
        }
        for k in 0..CLASSES {
            for j in 0..h {
                let w = m.w2[[k, j]];
                self.w2t[j][k] = w;
                self.w2[k * chunks + j / LANES][j % LANES] = w;
            }
            self.b2[k] = m.b2[k];
        }
    }

    fn clear_gradients(&mut self) {
        for g in [&mut self.g_w1t, &mut self.g_b1, &mut self.g_w2t] {
            g.fill([0.0; LANES]);
        }
        self.g_b2 = [0.0; LANES];
    }

    /// Add the padded gradients into `g` (the model's layout).
    fn add_gradients_to(&self, g: &mut Gradients) {
        let chunks = self.chunks;
        let w1 = g.w1.as_slice_mut().expect("standard layout");
        for (j, row) in w1.chunks_exact_mut(FEATURES).enumerate() {
            let (c, lane) = (j / LANES, j % LANES);
            for (i, w) in row.iter_mut().enumerate() {
                *w += self.g_w1t[i * chunks + c][lane];
            }
        }
        for (j, b) in g.b1.iter_mut().enumerate() {
            *b += self.g_b1[j / LANES][j % LANES];
        }
        for k in 0..CLASSES {
            for j in 0..self.hidden {
                g.w2[[k, j]] += self.g_w2t[j][k];
            }
            g.b2[k] += self.g_b2[k];
        }
    }
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
    std::array::from_fn(|l| a[l] + b[l])
}

/// Room for one row's non-zero pixels, plus slack for the vector gather,
/// which stores whole 32-lane blocks past the last non-zero.
const NZ_CAP: usize = FEATURES + 64;

/// One row's non-zero pixels: `index[..len]` and `value[..len]` (pixel /
/// 255, converted once here rather than in each of the two products).
struct NonZeros {
    index: Box<[u16; NZ_CAP]>,
    value: Box<[f32; NZ_CAP]>,
    len: usize,
}

impl Default for NonZeros {
    fn default() -> Self {
        NonZeros {
            index: Box::new([0; NZ_CAP]),
            value: Box::new([0.0; NZ_CAP]),
            len: 0,
        }
    }
}

impl NonZeros {
    /// Collect the non-zero pixels of `row` (784 bytes), in index order.
    #[inline(always)]
    fn gather(&mut self, row: &[u8]) {
        assert_eq!(row.len(), FEATURES);
        #[cfg(target_arch = "x86_64")]
        if has_vbmi2() {
            // SAFETY: the features were detected; `row` is 784 bytes and the
            // buffers hold NZ_CAP >= 784 + 32 entries (checked inside).
            self.len = unsafe { gather_vbmi2(row, &mut self.index, &mut self.value) };
            return;
        }
        self.len = gather_scalar(row, &mut self.index, &mut self.value);
    }
}

/// Branch-free scalar gather: writes every pixel, advances only past
/// non-zero ones (a data-dependent branch per pixel would mispredict often).
fn gather_scalar(row: &[u8], index: &mut [u16; NZ_CAP], value: &mut [f32; NZ_CAP]) -> usize {
    let table = pixel_table();
    let mut n = 0;
    for (i, &p) in row.iter().enumerate() {
        index[n] = i as u16;
        value[n] = table[p as usize];
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
fn gather_vbmi2(row: &[u8], index: &mut [u16; NZ_CAP], value: &mut [f32; NZ_CAP]) -> usize {
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
        // Bytes to f32 as pixel * (1/255) in f64, rounded once to f32: equal
        // to the correctly rounded f32 division for every byte (the unit
        // test checks all 256) and much cheaper than a vector division.
        let halves = [
            _mm256_castsi256_si128(val),
            _mm256_extracti128_si256::<1>(val),
        ];
        for (h, half) in halves.into_iter().enumerate() {
            for (q, bytes) in [half, _mm_srli_si128::<8>(half)].into_iter().enumerate() {
                let wide = _mm512_cvtepi32_pd(_mm256_cvtepu8_epi32(bytes));
                let scaled = _mm512_cvtpd_ps(_mm512_mul_pd(wide, inv255));
                // SAFETY: within the n + 32 entries checked above.
                unsafe { _mm256_storeu_ps(value.as_mut_ptr().add(n + 16 * h + 8 * q), scaled) };
            }
        }
        n += nonzero.count_ones() as usize;
        start += BLOCK;
    }
    n
}

/// Forward pass of one row whose non-zeros are in `ws.nz`: fills `ws.a1`
/// and returns the 10 class probabilities (padding lanes 0).
#[inline(always)]
fn forward_row(ws: &mut Workspace, chunks: usize) -> Chunk {
    let n = ws.nz.len;
    let (index, value) = (&ws.nz.index[..n], &ws.nz.value[..n]);
    let w1t = &ws.w1t[..FEATURES * chunks];
    for c in 0..chunks {
        // Four partial sums break the add-latency chain; their order is fixed.
        let mut acc = [[0.0f32; LANES]; 4];
        for (idx, val) in index.chunks_exact(4).zip(value.chunks_exact(4)) {
            for q in 0..4 {
                axpy(&mut acc[q], val[q], &w1t[idx[q] as usize * chunks + c]);
            }
        }
        let tail = n / 4 * 4;
        for (&i, &v) in index[tail..].iter().zip(&value[tail..]) {
            axpy(&mut acc[0], v, &w1t[i as usize * chunks + c]);
        }
        let z = add(
            &add(&add(&acc[0], &acc[1]), &add(&acc[2], &acc[3])),
            &ws.b1[c],
        );
        ws.a1[c] = z.map(|v| v.max(0.0));
    }
    let mut z2 = ws.b2;
    for j in 0..ws.hidden {
        let a = ws.a1[j / LANES][j % LANES];
        axpy(&mut z2, a, &ws.w2t[j]);
    }
    softmax_classes(&mut z2);
    z2
}

/// Softmax over the first 10 lanes (maximum subtracted first, as in the
/// other engines); padding lanes become 0.
#[inline(always)]
fn softmax_classes(z: &mut Chunk) {
    let max = z[..CLASSES]
        .iter()
        .cloned()
        .fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in z[..CLASSES].iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    z[..CLASSES].iter_mut().for_each(|v| *v *= inv);
    z[CLASSES..].fill(0.0);
}

/// Forward and backward of one row, adding its gradients into the
/// workspace. `chunks` is passed in (always `ws.chunks`) so that callers can
/// give the constant 1 and let the compiler drop the chunk loops and index
/// multiplications for the common H <= 16.
#[inline(always)]
fn accumulate_row(
    ws: &mut Workspace,
    chunks: usize,
    row: &[u8],
    label: u8,
    stats: &mut BatchStats,
) {
    ws.nz.gather(row);
    let mut dz2 = forward_row(ws, chunks);
    let label = label as usize;
    stats.loss_sum -= (dz2[label].max(f32::MIN_POSITIVE) as f64).ln();
    stats.correct += (argmax(&dz2[..CLASSES]) == label) as usize;
    dz2[label] -= 1.0;

    // Second layer: dw2 += dz2 a1^T, db2 += dz2.
    ws.g_b2 = add(&ws.g_b2, &dz2);
    for j in 0..ws.hidden {
        let a = ws.a1[j / LANES][j % LANES];
        axpy(&mut ws.g_w2t[j], a, &dz2);
    }
    // dz1 = (w2^T dz2) gated by the ReLU (a1 > 0 exactly where z1 > 0).
    for c in 0..chunks {
        let mut d = [0.0f32; LANES];
        for (k, &dk) in dz2[..CLASSES].iter().enumerate() {
            axpy(&mut d, dk, &ws.w2[k * chunks + c]);
        }
        let a = &ws.a1[c];
        let dz1 = std::array::from_fn(|l| if a[l] > 0.0 { d[l] } else { 0.0 });
        ws.g_b1[c] = add(&ws.g_b1[c], &dz1);
        ws.dz1[c] = dz1;
    }
    // First layer: dw1 += dz1 x^T, over the non-zero pixels only. Borrow the
    // fields separately, so the compiler knows the stores into g_w1t cannot
    // move the other buffers and keeps their addresses in registers. (This
    // loop is bound by its stores; deferring it to a block of rows, so the
    // forward passes and these updates do not take turns in the L1 cache,
    // measured no faster and was dropped.)
    let Workspace { g_w1t, dz1, nz, .. } = ws;
    let (g_w1t, dz1) = (&mut g_w1t[..FEATURES * chunks], &dz1[..chunks]);
    for (&i, &v) in nz.index[..nz.len].iter().zip(&nz.value[..nz.len]) {
        let base = i as usize * chunks;
        for c in 0..chunks {
            axpy(&mut g_w1t[base + c], v, &dz1[c]);
        }
    }
}

multiversion! {
    /// Forward and backward over every row of `x`, adding summed gradients
    /// into the workspace's padded gradient buffers.
    fn accumulate_rows(ws: &mut Workspace, x: &[u8], y: &[u8]) -> BatchStats {
        let mut stats = BatchStats { rows: y.len(), ..Default::default() };
        // Plain loops, not closures: a closure handed to an iterator adapter
        // may be compiled outside this function, without its vector features.
        let chunks = ws.chunks;
        for (row, &label) in x.chunks_exact(FEATURES).zip(y) {
            if chunks == 1 {
                accumulate_row(ws, 1, row, label, &mut stats);
            } else {
                accumulate_row(ws, chunks, row, label, &mut stats);
            }
        }
        stats
    }
}

multiversion! {
    /// Class probabilities of every row of `x` into `out` (`rows x 10`).
    fn probabilities_rows(ws: &mut Workspace, x: &[u8], out: &mut [f32]) {
        let chunks = ws.chunks;
        for (row, o) in x.chunks_exact(FEATURES).zip(out.chunks_exact_mut(CLASSES)) {
            ws.nz.gather(row);
            let p = if chunks == 1 { forward_row(ws, 1) } else { forward_row(ws, chunks) };
            o.copy_from_slice(&p[..CLASSES]);
        }
    }
}

impl Engine for SparseEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Sparse
    }

    fn accumulate(&self, m: &Mlp, x: &[u8], y: &[u8], g: &mut Gradients) -> BatchStats {
        debug_assert_eq!(x.len(), y.len() * FEATURES);
        WORKSPACE.with(|ws| {
            let ws = &mut *ws.borrow_mut();
            ws.load_model(m);
            ws.clear_gradients();
            let stats = accumulate_rows(ws, x, y);
            ws.add_gradients_to(g);
            stats
        })
    }

    fn probabilities(&self, m: &Mlp, x: &[u8]) -> Array2<f32> {
        let rows = x.len() / FEATURES;
        let mut out = Array2::zeros((rows, CLASSES));
        WORKSPACE.with(|ws| {
            let ws = &mut *ws.borrow_mut();
            ws.load_model(m);
            probabilities_rows(ws, x, out.as_slice_mut().expect("standard layout"));
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::random_batch;

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

    /// Both gathers (whichever this CPU can run) give the same pairs, in
    /// index order, as the obvious filter.
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
            let (mut index, mut value) = (Box::new([0; NZ_CAP]), Box::new([0.0; NZ_CAP]));
            let n = gather_scalar(row, &mut index, &mut value);
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            let got: Vec<(u16, u32)> = index[..n].iter().copied().zip(bits(&value[..n])).collect();
            assert_eq!(got, expected);
            let mut nz = NonZeros::default();
            nz.gather(row);
            let got: Vec<(u16, u32)> = nz.index[..nz.len]
                .iter()
                .copied()
                .zip(bits(&nz.value[..nz.len]))
                .collect();
            assert_eq!(got, expected);
        }
    }
}
