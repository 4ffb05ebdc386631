//! The per-row arithmetic every path of the sparse engine shares: the first
//! layer's sum over a row's non-zero pixels, the rest of the forward pass
//! (bias, ReLU, second layer, softmax), the loss, the backward pass down to
//! `dz1`, and the first layer's gradient over the non-zeros.
//!
//! Everything here is `#[inline(always)]`: the callers' loops are compiled
//! for AVX-512, AVX2 and the baseline ([`crate::simd`]), and these inline
//! into each version. The arithmetic is plain f32 (multiplies and adds never
//! fused, every sum in a fixed order, a vector `exp` of its own), so every
//! version gives the same bits; the tests here check that for the head.

use super::gather::PixelValue;
use super::layout::{add, axpy, slot, Chunk, Scratch, Weights, LANES, PIXEL_SLOTS, ZERO};
use crate::data::CLASSES;
use crate::engine::{argmax, BatchStats};

/// `sum over (index, value) of value * w1t[index]`, for lane chunk `c`.
#[inline(always)]
pub(super) fn partial_sum<V: PixelValue>(
    w1t: &[Chunk],
    chunks: usize,
    c: usize,
    index: &[u16],
    value: &[V],
    table: &[f32; 256],
) -> Chunk {
    let w1t = &w1t[..PIXEL_SLOTS * chunks];
    sum_over(index, value, table, |i| w1t[slot(i) * chunks + c])
}

/// `sum over (at, value) of value * weight(at)`: the first layer's sum
/// over a row's non-zeros, whatever `at` names (a pixel, or a byte offset
/// into the weights). Four partial sums break the add-latency chain; their
/// order is fixed, so every caller gets the same bits from the same row.
#[inline(always)]
pub(super) fn sum_over<V: PixelValue>(
    at: &[u16],
    value: &[V],
    table: &[f32; 256],
    weight: impl Fn(u16) -> Chunk,
) -> Chunk {
    let n = at.len();
    let value = &value[..n];
    let mut acc = [ZERO; 4];
    for (idx, val) in at.chunks_exact(4).zip(value.chunks_exact(4)) {
        for q in 0..4 {
            axpy(&mut acc[q], val[q].scaled(table), &weight(idx[q]));
        }
    }
    let tail = n / 4 * 4;
    for (&i, &v) in at[tail..].iter().zip(&value[tail..]) {
        axpy(&mut acc[0], v.scaled(table), &weight(i));
    }
    add(&add(&acc[0], &acc[1]), &add(&acc[2], &acc[3]))
}

/// Forward pass of one row given as its non-zero pixels (`index`,
/// `value`): fills `s.a1` and returns the 10 class probabilities (padding
/// lanes 0).
#[inline(always)]
pub(super) fn forward_row<V: PixelValue>(
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
pub(super) fn forward_from_sums(w: &Weights, s: &mut Scratch, chunks: usize) -> Chunk {
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
    let inv = 1.0 / class_sum(&e[..CLASSES]);
    for (l, v) in z.iter_mut().enumerate() {
        *v = if l < CLASSES { e[l] * inv } else { 0.0 };
    }
}

/// What [`class_sum`] adds: one row's `f32` lanes, or sixteen rows'
/// chunks lane by lane (`head_block.rs`). A trait method, not a closure:
/// inlined into a multiversioned caller, it keeps the caller's vector
/// features.
pub(super) trait Plus: Copy {
    fn plus(self, other: Self) -> Self;
}

impl Plus for f32 {
    #[inline(always)]
    fn plus(self, other: f32) -> f32 {
        self + other
    }
}

impl Plus for Chunk {
    #[inline(always)]
    fn plus(self, other: Chunk) -> Chunk {
        add(&self, &other)
    }
}

/// The softmax's sum of the ten classes' exponentials `e`, in the one
/// fixed order both heads use (a tree, for a shorter dependency chain).
#[inline(always)]
pub(super) fn class_sum<T: Plus>(e: &[T]) -> T {
    let e = &e[..CLASSES];
    let pairs = [
        e[0].plus(e[1]),
        e[2].plus(e[3]),
        e[4].plus(e[5]),
        e[6].plus(e[7]),
        e[8].plus(e[9]),
    ];
    (pairs[0].plus(pairs[1]))
        .plus(pairs[2].plus(pairs[3]))
        .plus(pairs[4])
}

/// `e^x` lane by lane, for `x <= 0` (logits minus their maximum), within
/// 2 ulps of the C library's `expf` (a test checks the range): Cody-Waite
/// range reduction `x = n ln 2 + r`, a degree-6 polynomial for `e^r` (the
/// coefficients of Cephes' `expf`), and `2^n` built in the exponent bits.
/// Plain f32 arithmetic, so every vector width computes the same bits.
/// Below -87.3 (where `expf` leaves the normal range) the result is that of
/// -87.3; NaN stays NaN.
#[inline(always)]
pub(super) fn exp_chunk(x: Chunk) -> Chunk {
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
pub(super) struct LossSum {
    sum: f64,
    product: f64,
}

impl LossSum {
    pub(super) fn new() -> Self {
        LossSum {
            sum: 0.0,
            product: 1.0,
        }
    }

    #[inline(always)]
    pub(super) fn add(&mut self, p: f32) {
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

    pub(super) fn finish(self) -> f64 {
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
pub(super) fn backward_head(
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
pub(super) fn accumulate_nonzeros<V: PixelValue>(
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
pub(super) fn add_row_gradient<V: PixelValue>(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Init, Layers, Mlp};
    use crate::simd::multiversion;

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

    const ROWS: usize = 16;

    fn row_head(
        w: &Weights,
        s: &mut Scratch,
        z: &[Chunk; ROWS],
        labels: &[u8],
    ) -> (Vec<Chunk>, Vec<Chunk>, BatchStats) {
        let (mut stats, mut loss) = (BatchStats::default(), LossSum::new());
        let (mut probs, mut dz1) = (Vec::new(), Vec::new());
        for (i, &label) in labels.iter().enumerate() {
            s.a1[0] = z[i];
            let p = forward_from_sums(w, s, 1);
            probs.push(p);
            backward_head(w, s, 1, p, label, &mut stats, &mut loss);
            dz1.push(s.dz1[0]);
        }
        stats.loss_sum = loss.finish();
        (probs, dz1, stats)
    }

    multiversion! {
        fn row_head_best(w: &Weights, s: &mut Scratch, z: &[Chunk; ROWS], labels: &[u8]) -> (Vec<Chunk>, Vec<Chunk>, BatchStats) {
            row_head(w, s, z, labels)
        }
    }

    type Head =
        fn(&Weights, &mut Scratch, &[Chunk; ROWS], &[u8]) -> (Vec<Chunk>, Vec<Chunk>, BatchStats);

    /// The per-row head (second layer, softmax, loss, arg-max, backward),
    /// compiled for the widest vectors this CPU has and for the baseline:
    /// both must agree bit for bit, as the module promises.
    #[test]
    fn the_row_head_gives_the_same_bits_at_every_level() {
        for (hidden, seed) in [(10, 1), (16, 3), (3, 4)] {
            let m = Mlp::init(&Layers::one(hidden), Init::He, seed).unwrap();
            let mut z = [ZERO; ROWS];
            for (i, zi) in z.iter_mut().enumerate() {
                for l in 0..hidden {
                    zi[l] = ((i * 7 + l * 3 + seed as usize) % 11) as f32 * 0.37 - 1.5;
                }
            }
            let labels: Vec<u8> = (0..ROWS).map(|i| ((i * 3 + 1) % 10) as u8).collect();
            let run = |head: Head| {
                let mut w = Weights::zeros(hidden);
                w.load(&m);
                let mut s = Scratch::new(hidden);
                s.clear_gradients();
                let (probs, dz1, stats) = head(&w, &mut s, &z, &labels);
                (
                    probs,
                    dz1,
                    stats.correct,
                    stats.loss_sum.to_bits(),
                    s.g_b1.clone(),
                    s.g_w2t.clone(),
                    s.g_b2,
                )
            };
            let baseline = run(row_head);
            assert!(f64::from_bits(baseline.3) > 0.0);
            assert_eq!(run(row_head_best), baseline, "H={hidden}");
        }
    }
}
