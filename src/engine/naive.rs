//! The reference engine: the network written out as loops, in f64.
//!
//! Nothing here is clever: each formula is the textbook one, so that a reader
//! can check it against the maths and tests can check the fast engines
//! against it. Forward, for layers `l = 1..L` with `a0 = x`:
//!
//! ```text
//! zl = wl a(l-1) + bl     al = relu(zl)      (l < L)
//! p  = softmax(zL)        (max subtracted first)
//! loss = -ln p[y]
//! ```
//!
//! Backward (per row, summed over rows), from `dzL = p - onehot(y)` down:
//!
//! ```text
//! dwl += dzl a(l-1)^T     dbl += dzl
//! dz(l-1) = (wl^T dzl) * [z(l-1) > 0]
//! ```

// The naive engine indexes on purpose: `w[[j, i]] * a[i]` reads like the
// formula it implements, which is the point of the oracle.
#![allow(clippy::needless_range_loop)]

use super::{BatchStats, Engine, EngineKind};
use crate::data::FEATURES;
use crate::model::{Gradients, Mlp};
use ndarray::{Array1, Array2};

pub struct NaiveEngine;

/// Activations of one row.
#[derive(Debug, Clone)]
pub struct RowForward {
    /// `a0 = x, a1, ..., a(L-1)`: each layer's input.
    pub inputs: Vec<Vec<f64>>,
    /// `z1 .. z(L-1)`: the hidden layers' pre-activations.
    pub z: Vec<Vec<f64>>,
    pub probs: Vec<f64>,
}

/// One layer's gradient in f64.
#[derive(Debug, Clone)]
pub struct DenseF64 {
    pub w: Array2<f64>,
    pub b: Array1<f64>,
}

/// Gradients in f64, shaped like the model.
#[derive(Debug, Clone)]
pub struct GradientsF64 {
    pub layers: Vec<DenseF64>,
}

/// `w a + b` for one layer.
fn affine(w: &Array2<f32>, b: &Array1<f32>, a: &[f64]) -> Vec<f64> {
    let (outputs, inputs) = w.dim();
    let mut z = vec![0.0; outputs];
    for j in 0..outputs {
        let mut s = b[j] as f64;
        for i in 0..inputs {
            s += w[[j, i]] as f64 * a[i];
        }
        z[j] = s;
    }
    z
}

/// The forward pass of one row of pixels.
pub fn forward_row(m: &Mlp, pixels: &[u8]) -> RowForward {
    let x: Vec<f64> = pixels.iter().map(|&p| p as f64 / 255.0).collect();
    let mut inputs = vec![x];
    let mut z = Vec::new();
    let last = m.layers.len() - 1;
    for layer in &m.layers[..last] {
        let zl = affine(&layer.w, &layer.b, inputs.last().expect("a0 at least"));
        inputs.push(zl.iter().map(|&v| v.max(0.0)).collect());
        z.push(zl);
    }
    let logits = affine(&m.layers[last].w, &m.layers[last].b, &inputs[last]);
    RowForward {
        inputs,
        z,
        probs: softmax(&logits),
    }
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
    let mut g = GradientsF64 {
        layers: m
            .layers
            .iter()
            .map(|l| DenseF64 {
                w: Array2::zeros(l.w.dim()),
                b: Array1::zeros(l.b.len()),
            })
            .collect(),
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

        let mut dz = f.probs.clone();
        dz[label] -= 1.0;
        for l in (0..m.layers.len()).rev() {
            let a = &f.inputs[l];
            let gl = &mut g.layers[l];
            for k in 0..dz.len() {
                gl.b[k] += dz[k];
                for j in 0..a.len() {
                    gl.w[[k, j]] += dz[k] * a[j];
                }
            }
            if l == 0 {
                break;
            }
            // dz of the layer below: w^T dz, gated by its ReLU.
            let w = &m.layers[l].w;
            let mut below = vec![0.0; a.len()];
            for j in 0..a.len() {
                if f.z[l - 1][j] <= 0.0 {
                    continue; // ReLU passes no gradient here
                }
                for k in 0..dz.len() {
                    below[j] += w[[k, j]] as f64 * dz[k];
                }
            }
            dz = below;
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
        let sources = g
            .layers
            .iter()
            .flat_map(|l| [l.w.as_slice(), l.b.as_slice()]);
        for (dst, src) in grads.params_mut().into_iter().zip(sources) {
            let src = src.expect("standard layout");
            dst.iter_mut().zip(src).for_each(|(d, s)| *d += *s as f32);
        }
        stats
    }

    fn probabilities(&self, m: &Mlp, x: &[u8]) -> Array2<f32> {
        let rows = x.len() / FEATURES;
        let mut out = Array2::zeros((rows, m.layers.last().expect("a layer").outputs()));
        for (r, row) in x.chunks_exact(FEATURES).enumerate() {
            for (k, p) in forward_row(m, row).probs.into_iter().enumerate() {
                out[[r, k]] = p as f32;
            }
        }
        out
    }
}
