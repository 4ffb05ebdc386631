//! Shared definitions for tests and benches: synthetic batches shaped like
//! MNIST and the tolerances the fast path is held to. One definition, so a
//! bench measures exactly what a test checks.

// Each includer (unit tests, tests/it, benches) uses a part.
#![allow(dead_code)]

use super::data::{Dataset, CLASSES, FEATURES};
use super::rng::{SeededRng, Stream};

/// Tolerances for comparing an engine against the f64 oracle.
pub mod tolerance {
    /// f32 engine vs f64 oracle, relative to the largest magnitude compared
    /// (sums over 784 inputs and hundreds of rows in f32 lose ~1e-6 each).
    pub const F32_VS_F64: f64 = 2e-4;
    /// f64 oracle vs an independent f64 computation (numpy): only summation
    /// order differs.
    pub const F64_VS_F64: f64 = 1e-9;
}

/// `rows` random images: like MNIST, ~80% of pixels are 0 and the rest
/// spread over 1-255; labels uniform 0-9.
pub fn random_batch(rows: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut rng = SeededRng::new(seed, Stream::Sweep);
    let pixels = (0..rows * FEATURES)
        .map(|_| {
            if rng.below(5) == 0 {
                1 + rng.below(255) as u8
            } else {
                0
            }
        })
        .collect();
    let labels = (0..rows).map(|_| rng.below(CLASSES) as u8).collect();
    (pixels, labels)
}

/// A labeled [`Dataset`] of random rows (see [`random_batch`]).
pub fn random_dataset(rows: usize, seed: u64) -> Dataset {
    let (pixels, labels) = random_batch(rows, seed);
    Dataset {
        pixels,
        labels: Some(labels),
        source: "<random>".into(),
    }
}

/// Largest |a - b| over the largest |b| (1 if all of b is 0): a relative
/// error that does not blow up on the many exact-zero gradients.
pub fn max_rel_diff(a: impl IntoIterator<Item = f64>, b: impl IntoIterator<Item = f64>) -> f64 {
    let (mut diff, mut scale) = (0.0f64, 0.0f64);
    for (x, y) in a.into_iter().zip(b) {
        diff = diff.max((x - y).abs());
        scale = scale.max(y.abs());
    }
    diff / if scale > 0.0 { scale } else { 1.0 }
}
