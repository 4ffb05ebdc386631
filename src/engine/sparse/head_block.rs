//! The head of sixteen rows at once, for models of up to 16 hidden units
//! (the notebook's 784-10-10): everything of a row's forward and backward
//! passes after its first-layer sums, with one row per lane.
//!
//! Row by row ([`super::kernels`]), the head is chains of dependent adds:
//! the ten terms of each class's logit, the softmax's maximum and sum, the
//! ten terms of `w2^T dz2`. With one row per lane, sixteen rows' chains run
//! side by side. Each lane does exactly the row-by-row operations in the
//! same order, so the bits are the same (tests/it/sparse.rs compares the
//! full-batch path, which uses this, with the raw rows, which do not). The
//! sums over rows (`db2`, `dw2`, `db1`) and the loss still go row by row,
//! in row order, on rows transposed back.

use super::kernels::{class_sum, exp_chunk, LossSum};
use super::layout::{add, axpy, transpose16, Chunk, Scratch, Weights, LANES, ZERO};
use crate::data::CLASSES;
use crate::engine::{argmax, BatchStats};

/// Rows per block: one per lane.
pub(super) const BLOCK: usize = LANES;

/// Called first in a loop (over the block's rows, or over classes) whose
/// body is whole-chunk operations: an empty barrier the compiler cannot see
/// into, so it vectorises the body along the chunk's lanes. Without it, it
/// vectorised such loops across their iterations instead, with a scatter
/// store per lane.
#[inline(always)]
fn one_row_at_a_time() {
    std::hint::black_box(());
}

/// `v` in every lane.
#[inline(always)]
fn splat(v: f32) -> Chunk {
    Chunk([v; LANES])
}

/// `dw2` class by class (`g_w2[k][j]`), as [`head_block`] adds it up: the
/// scratch's `g_w2t` (unit by unit) transposed, padding zero.
pub(super) fn class_major(g_w2t: &[Chunk]) -> [Chunk; LANES] {
    let mut g = [ZERO; LANES];
    g[..g_w2t.len()].copy_from_slice(g_w2t);
    transpose16(&mut g);
    g
}

/// [`class_major`]'s inverse, into the scratch's `g_w2t`.
pub(super) fn unit_major(mut g: [Chunk; LANES], g_w2t: &mut [Chunk]) {
    transpose16(&mut g);
    g_w2t.copy_from_slice(&g[..g_w2t.len()]);
}

/// [`super::kernels::forward_from_sums`] then
/// [`super::kernels::backward_head`] for the sixteen rows whose first-layer
/// sums (without the bias) are `z`, labelled `labels`, for a model of one
/// chunk of hidden units: the gradients of the second layer and of `b1`
/// added into `s` and `g_w2` row by row, and each row's `dz1` into
/// `dz1_rows`. `g_w2` is `dw2` class by class ([`class_major`]), so each
/// row adds ten whole chunks to it, `g_w2[k][j] += dz2[k] a1[j]`, the
/// products and order of `backward_head`'s `g_w2t[j][k] += a1[j] dz2[k]`.
#[allow(
    clippy::too_many_arguments,
    reason = "the block's state, unbundled as in kernels.rs"
)]
#[inline(always)]
pub(super) fn head_block(
    w: &Weights,
    s: &mut Scratch,
    g_w2: &mut [Chunk; LANES],
    z: &[Chunk; BLOCK],
    labels: &[u8],
    stats: &mut BatchStats,
    loss: &mut LossSum,
    dz1_rows: &mut [Chunk],
) {
    debug_assert_eq!(w.chunks, 1);
    let (h, b1) = (w.hidden, w.b1[0]);
    // a1, row by row (for dw2) and unit by unit (`a1t[j]`, for the products).
    let mut a1 = *z;
    for row in a1.iter_mut() {
        one_row_at_a_time();
        let mut a = add(row, &b1);
        for v in a.iter_mut() {
            *v = v.max(0.0);
        }
        *row = a;
    }
    let mut a1t = a1;
    transpose16(&mut a1t);

    // Logits class by class: b2 + a1[0] w2t[0] + a1[1] w2t[1] + ...
    let mut zt = [ZERO; CLASSES];
    for (k, z) in zt.iter_mut().enumerate() {
        *z = splat(w.b2[k]);
    }
    // (`axpy` throughout: whole-chunk loads and stores, so the compiler
    // keeps to one row per lane rather than vectorising across units with
    // scatter stores. A product `w * a` is the row's `a * w`, bit for bit.)
    for (a, w2t) in a1t[..h].iter().zip(&w.w2t[..h]) {
        for (z, &wk) in zt.iter_mut().zip(&w2t[..CLASSES]) {
            axpy(z, wk, a);
        }
    }

    // Softmax, as `kernels::softmax_classes` computes it per row.
    let mut max = splat(f32::NEG_INFINITY);
    for z in &zt {
        for l in 0..LANES {
            max[l] = if z[l] > max[l] { z[l] } else { max[l] };
        }
    }
    let mut e = [ZERO; CLASSES];
    for (e, z) in e.iter_mut().zip(&zt) {
        let mut shifted = *z;
        for l in 0..LANES {
            shifted[l] -= max[l];
        }
        *e = exp_chunk(shifted);
    }
    // Whole chunks at a time: written lane by lane across the classes, the
    // compiler made this loop scatter stores.
    let sum = class_sum(&e);
    let mut inv = ZERO;
    for l in 0..LANES {
        inv[l] = 1.0 / sum[l];
    }
    let mut pt = [ZERO; LANES];
    for (p, e) in pt.iter_mut().zip(&e) {
        for l in 0..LANES {
            p[l] = e[l] * inv[l];
        }
    }
    let mut probs = pt;
    transpose16(&mut probs);

    // Row by row: the loss and the count, dz2 = p - onehot, and db2, dw2.
    for (r, (&label, &a1)) in labels[..BLOCK].iter().zip(&a1).enumerate() {
        one_row_at_a_time();
        let label = label as usize;
        let mut dz2 = probs[r];
        loss.add(dz2[label]);
        stats.correct += (argmax(&dz2[..CLASSES]) == label) as usize;
        dz2[label] -= 1.0;
        s.g_b2 = add(&s.g_b2, &dz2);
        for (g, &d) in g_w2[..CLASSES].iter_mut().zip(&dz2[..CLASSES]) {
            one_row_at_a_time();
            axpy(g, d, &a1);
        }
        pt[label][r] -= 1.0;
    }

    // dz1 = (w2^T dz2) gated by the ReLU, unit by unit; padding units 0.
    let mut dz1 = [ZERO; LANES];
    for (j, (d, a)) in dz1[..h].iter_mut().zip(&a1t).enumerate() {
        let mut acc = ZERO;
        for (dz2, w2) in pt[..CLASSES].iter().zip(&w.w2) {
            axpy(&mut acc, w2[j], dz2);
        }
        for l in 0..LANES {
            if a[l] <= 0.0 {
                acc[l] = 0.0;
            }
        }
        *d = acc;
    }
    transpose16(&mut dz1);
    for (out, d) in dz1_rows[..BLOCK].iter_mut().zip(&dz1) {
        s.g_b1[0] = add(&s.g_b1[0], d);
        *out = *d;
    }
}
