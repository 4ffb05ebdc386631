//! `--engine auto`: the engine for a run, chosen from the network's shape
//! and the training rows, never from a timing (so the same command always
//! runs the same arithmetic and gives the same bits).
//!
//! The sparse engine does about 5x fewer multiply-adds in the first layer
//! of MNIST-like rows (80% of pixels exactly 0). Measured on a 2-core
//! AVX-512 machine (docs/performance.md), it is faster than dense products
//! for one hidden layer of any width (up to 256 units by its one-layer
//! trainers, beyond by its first layer cut into pieces of hidden units
//! that run in parallel, kept transposed between steps), and for deeper
//! networks whose first layer is cut into pieces, from 256 units
//! ([`super::sparse::PIECES`]; 784-256-128-10 at batch 128: 0.57 against
//! 0.71 s an epoch). A deeper network with a narrower first layer runs
//! the sparse first layer on half a batch per core, which at 256-128 had
//! been even with dense products (0.76 against 0.73 s), so it keeps those.

use super::EngineKind;
use crate::model::Layers;

/// Least fraction of zero pixels for which the sparse engine is chosen.
pub const SPARSE_MIN_ZEROS: f64 = 0.5;

/// The engine `--engine auto` runs, and why, in a few words.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub kind: EngineKind,
    pub reason: String,
}

impl Choice {
    /// An engine the user named.
    pub fn named(kind: EngineKind) -> Choice {
        Choice {
            kind,
            reason: "--engine".into(),
        }
    }
}

/// `kind` itself, or for `Auto` what [`choose`] picks.
pub fn resolve(kind: EngineKind, layers: &Layers, pixels: &[u8]) -> Choice {
    match kind {
        EngineKind::Auto => choose(layers, pixels),
        named => Choice::named(named),
    }
}

/// As [`resolve`], for training on rows distorted afresh each epoch
/// (`--augment`): the sparse engine's resident trainers hold the rows
/// gathered once, so it would gather every batch anew, and measured so on
/// the Kaggle rows (784-128-10, 2 threads) it took as long as dense
/// products or longer; `auto` picks `blas` for any shape.
pub fn resolve_augmented(kind: EngineKind, layers: &Layers, pixels: &[u8]) -> Choice {
    match resolve(kind, layers, pixels) {
        Choice {
            kind: EngineKind::Sparse,
            reason,
        } if kind == EngineKind::Auto => Choice {
            kind: EngineKind::Blas,
            reason: format!(
                "--augment changes the rows every epoch: dense products (sparse would gather every batch; {reason})"
            ),
        },
        other => other,
    }
}

/// The engine for a network of `layers` run on rows `pixels`.
pub fn choose(layers: &Layers, pixels: &[u8]) -> Choice {
    let zeros = zero_fraction(pixels);
    let h1 = layers.hidden()[0];
    let percent = format!("{:.0}% of pixels are 0", zeros * 100.0);
    let (kind, reason) = if zeros < SPARSE_MIN_ZEROS {
        (EngineKind::Blas, format!("dense rows ({percent})"))
    } else if layers.depth() > 2 && super::sparse::PIECES.count(h1) == 1 {
        (
            EngineKind::Blas,
            format!(
                "{} hidden layers, the first of {h1} units in one piece: dense products ({percent})",
                layers.depth() - 1,
            ),
        )
    } else {
        (EngineKind::Sparse, percent)
    };
    Choice { kind, reason }
}

/// Fraction of the bytes that are 0 (1 for no rows: nothing to compute).
fn zero_fraction(pixels: &[u8]) -> f64 {
    if pixels.is_empty() {
        return 1.0;
    }
    // Counted in chunks whose count fits a u32, which the compiler vectorises.
    let zeros: u64 = pixels
        .chunks(1 << 20)
        .map(|c| c.iter().map(|&p| (p == 0) as u32).sum::<u32>() as u64)
        .sum();
    zeros as f64 / pixels.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_for_mostly_zero_rows_unless_deep_and_narrow() {
        let mostly_zero: Vec<u8> = (0..784 * 4).map(|i| (i % 5 == 0) as u8 * 200).collect();
        let dense = vec![7u8; 784 * 4];
        for layers in [
            "10",
            "128",
            "129",
            "300",
            "2048",
            "256-128",
            "384-256",
            "1024-64-32",
        ] {
            let layers = Layers::parse(layers).unwrap();
            let c = choose(&layers, &mostly_zero);
            assert_eq!(c.kind, EngineKind::Sparse, "{layers}");
            assert_eq!(c.reason, "80% of pixels are 0");
            let c = choose(&layers, &dense);
            assert_eq!(c.kind, EngineKind::Blas, "{layers}");
            assert!(
                c.reason.starts_with("dense rows (0% of pixels"),
                "{}",
                c.reason
            );
        }
        for layers in ["64-32", "128-64", "255-128-64"] {
            let layers = Layers::parse(layers).unwrap();
            let c = choose(&layers, &mostly_zero);
            assert_eq!(c.kind, EngineKind::Blas, "{layers}");
            assert!(
                c.reason.contains("in one piece: dense products"),
                "{}",
                c.reason
            );
        }
    }

    #[test]
    fn augmented_runs_get_dense_products_unless_an_engine_is_named() {
        let mostly_zero: Vec<u8> = (0..784 * 4).map(|i| (i % 5 == 0) as u8 * 200).collect();
        let one = Layers::one(32);
        let c = resolve_augmented(EngineKind::Auto, &one, &mostly_zero);
        assert_eq!(c.kind, EngineKind::Blas);
        assert!(c.reason.starts_with("--augment"), "{}", c.reason);
        let named = resolve_augmented(EngineKind::Sparse, &one, &mostly_zero);
        assert_eq!(named.kind, EngineKind::Sparse);
        let wide = resolve_augmented(EngineKind::Auto, &Layers::one(800), &mostly_zero);
        assert_eq!(wide.kind, EngineKind::Blas);
    }
}
