//! The reference engine: the network written out as loops, in f64.
//!
//! Nothing here is clever: each formula is the textbook one, so that a reader
//! can check it against the maths and tests can check the fast engine
//! against it. Forward:
//!
//! ```text
//! z1 = w1 x + b1      a1 = relu(z1)
//! z2 = w2 a1 + b2     p  = softmax(z2)   (max subtracted first)
//! loss = -ln p[y]
//! ```
//!
//! Backward (per row, summed over rows):
//!
//! ```text
//! dz2 = p - onehot(y)         dw2 += dz2 a1^T     db2 += dz2
//! dz1 = (w2^T dz2) * [z1 > 0] dw1 += dz1 x^T      db1 += dz1
//! ```

// The naive engine indexes on purpose: `w1[[j, i]] * x[i]` reads like the
// formula it implements, which is the point of the oracle.
#![allow(clippy::needless_range_loop)]

use super::{BatchStats, Engine, EngineKind};
use crate::data::{CLASSES, FEATURES};
use crate::model::{Gradients, Mlp};
use ndarray::{Array1, Array2};

pub struct NaiveEngine;

/// Activations of one row.
#[derive(Debug, Clone)]
pub struct RowForward {
    pub x: Vec<f64>,
    pub z1: Vec<f64>,
    pub a1: Vec<f64>,
    pub probs: Vec<f64>,
}

/// Gradients in f64, shaped like the model.
#[derive(Debug, Clone)]
pub struct GradientsF64 {
    pub w1: Array2<f64>,
    pub b1: Array1<f64>,
    pub w2: Array2<f64>,
    pub b2: Array1<f64>,
}

/// The forward pass of one row of pixels.
pub fn forward_row(m: &Mlp, pixels: &[u8]) -> RowForward {
    let h = m.hidden();
    let x: Vec<f64> = pixels.iter().map(|&p| p as f64 / 255.0).collect();
    let mut z1 = vec![0.0; h];
    for j in 0..h {
        let mut s = m.b1[j] as f64;
        for i in 0..FEATURES {
            s += m.w1[[j, i]] as f64 * x[i];
        }
        z1[j] = s;
    }
    let a1: Vec<f64> = z1.iter().map(|&z| z.max(0.0)).collect();
    let mut z2 = [0.0; CLASSES];
    for k in 0..CLASSES {
        let mut s = m.b2[k] as f64;
        for j in 0..h {
            s += m.w2[[k, j]] as f64 * a1[j];
        }
        z2[k] = s;
    }
    let probs = softmax(&z2);
    RowForward { x, z1, a1, probs }
}

/// Softmax with the maximum subtracted, so large logits cannot overflow.
pub fn softmax(z: &[f64]) -> Vec<f64> {
    let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|&v| (v - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|&v| v / sum).collect()
}

/// Index of the largest value (the first one on ties, like numpy's argmax).
pub fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Summed gradients, loss and accuracy counts over rows `x` with labels `y`.
pub fn gradients(m: &Mlp, x: &[u8], y: &[u8]) -> (GradientsF64, BatchStats) {
    let h = m.hidden();
    let mut g = GradientsF64 {
        w1: Array2::zeros((h, FEATURES)),
        b1: Array1::zeros(h),
        w2: Array2::zeros((CLASSES, h)),
        b2: Array1::zeros(CLASSES),
    };
    let mut stats = BatchStats::default();
    for (row, &label) in x.chunks_exact(FEATURES).zip(y) {
        let f = forward_row(m, row);
        let label = label as usize;
        // ln p[y] from the probabilities would lose everything once p[y]
        // underflows; a clamp keeps the loss finite and honest enough.
        stats.loss_sum += -f.probs[label].max(f64::MIN_POSITIVE).ln();
        stats.correct += (argmax(&f.probs) == label) as usize;
        stats.rows += 1;

        let mut dz2 = f.probs.clone();
        dz2[label] -= 1.0;
        for k in 0..CLASSES {
            g.b2[k] += dz2[k];
            for j in 0..h {
                g.w2[[k, j]] += dz2[k] * f.a1[j];
            }
        }
        for j in 0..h {
            if f.z1[j] <= 0.0 {
                continue; // ReLU passes no gradient here
            }
            let mut dz1 = 0.0;
            for k in 0..CLASSES {
                dz1 += m.w2[[k, j]] as f64 * dz2[k];
            }
            g.b1[j] += dz1;
            for i in 0..FEATURES {
                g.w1[[j, i]] += dz1 * f.x[i];
            }
        }
    }
    (g, stats)
}

impl Engine for NaiveEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Naive
    }

    fn accumulate(&self, m: &Mlp, x: &[u8], y: &[u8], grads: &mut Gradients) -> BatchStats {
        let (g, stats) = gradients(m, x, y);
        let pairs = [
            (grads.w1.as_slice_mut(), g.w1.as_slice()),
            (grads.b1.as_slice_mut(), g.b1.as_slice()),
            (grads.w2.as_slice_mut(), g.w2.as_slice()),
            (grads.b2.as_slice_mut(), g.b2.as_slice()),
        ];
        for (dst, src) in pairs {
            let (dst, src) = (dst.expect("standard layout"), src.expect("standard layout"));
            dst.iter_mut().zip(src).for_each(|(d, s)| *d += *s as f32);
        }
        stats
    }

    fn probabilities(&self, m: &Mlp, x: &[u8]) -> Array2<f32> {
        let rows = x.len() / FEATURES;
        let mut out = Array2::zeros((rows, CLASSES));
        for (r, row) in x.chunks_exact(FEATURES).enumerate() {
            for (k, p) in forward_row(m, row).probs.into_iter().enumerate() {
                out[[r, k]] = p as f32;
            }
        }
        out
    }
}
