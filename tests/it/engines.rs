//! The fast engine against the oracle, and the oracle against calculus.

use crate::testutil::{max_rel_diff, random_batch, tolerance};
use mnist_blas::data::FEATURES;
use mnist_blas::engine::{
    blas::BlasEngine, naive, naive::NaiveEngine, sparse::SparseEngine, Engine,
};
use mnist_blas::model::{Init, Layers, Mlp};

fn flat(m: &Mlp) -> Vec<f64> {
    m.params()
        .iter()
        .flat_map(|p| p.iter().map(|&v| v as f64))
        .collect()
}

/// Mean loss of the oracle, for finite differences.
fn loss(m: &Mlp, x: &[u8], y: &[u8]) -> f64 {
    naive::gradients(m, x, y).1.mean_loss()
}

#[test]
fn naive_gradients_match_finite_differences() {
    let (x, y) = random_batch(16, 1);
    let m = Mlp::init(&Layers::one(7), Init::He, 2).unwrap();
    let (g, stats) = naive::gradients(&m, &x, &y);
    let n = stats.rows as f64;
    // Probe a spread of coordinates in every parameter block, skipping
    // hidden units whose pre-activation sits near the ReLU kink for some row
    // (there the loss is not differentiable and a difference quotient lies).
    let near_kink: Vec<bool> = (0..7)
        .map(|j| {
            x.chunks(FEATURES)
                .any(|row| naive::forward_row(&m, row).z[0][j].abs() < 1e-2)
        })
        .collect();
    let mut checked = 0;
    for block in 0..4 {
        let len = m.params()[block].len();
        for k in (0..len).step_by((len / 9).max(1)) {
            let unit = match block {
                0 => k / FEATURES,
                1 => k,
                _ => usize::MAX,
            };
            if unit != usize::MAX && near_kink[unit] {
                continue;
            }
            let analytic = match block {
                0 => g.layers[0].w.as_slice().unwrap()[k],
                1 => g.layers[0].b[k],
                2 => g.layers[1].w.as_slice().unwrap()[k],
                _ => g.layers[1].b[k],
            } / n;
            let h = 1e-3f32;
            let (mut plus, mut minus) = (m.clone(), m.clone());
            plus.params_mut()[block][k] += h;
            minus.params_mut()[block][k] -= h;
            // Divide by the step actually stored in f32, not the nominal one.
            let step = plus.params()[block][k] as f64 - minus.params()[block][k] as f64;
            let numeric = (loss(&plus, &x, &y) - loss(&minus, &x, &y)) / step;
            let err = (analytic - numeric).abs() / analytic.abs().max(1e-4);
            assert!(
                err < 1e-4,
                "block {block} index {k}: analytic {analytic} numeric {numeric}"
            );
            checked += 1;
        }
    }
    assert!(checked > 25, "only {checked} coordinates checked");
}

/// Networks of one, two and three hidden layers.
const DEPTHS: [&str; 3] = ["12", "16-8", "20-12-6"];

/// The ReLU pattern of every hidden unit on every row: which units pass
/// their input on.
fn relu_pattern(m: &Mlp, x: &[u8]) -> Vec<bool> {
    x.chunks(FEATURES)
        .flat_map(|row| {
            naive::forward_row(m, row)
                .z
                .into_iter()
                .flatten()
                .map(|z| z > 0.0)
        })
        .collect()
}

/// The oracle's gradients against central differences of its loss, in f64,
/// on a spread of coordinates of every weight and bias block of every layer.
///
/// A difference quotient lies where the step crosses a ReLU kink, so a
/// coordinate is checked only when the ReLU pattern of every hidden unit on
/// every row is the same at both ends of the step as at its centre. That
/// makes the test exact rather than lucky: with the pattern fixed, every
/// pre-activation is an affine function of the one parameter moved, so the
/// same signs at both ends mean the same signs all along the step, and the
/// loss is smooth there.
fn check_finite_differences(layers: &Layers, seed: u64) {
    let (x, y) = random_batch(8, seed);
    let m = Mlp::init(layers, Init::He, seed).unwrap();
    let (g, stats) = naive::gradients(&m, &x, &y);
    assert_eq!(g.layers.len(), layers.depth());
    let n = stats.rows as f64;
    let pattern = relu_pattern(&m, &x);
    let (mut checked, mut skipped) = (0, 0);
    for block in 0..2 * layers.depth() {
        let (l, is_bias) = (block / 2, block % 2 == 1);
        let len = m.params()[block].len();
        let mut checked_here = 0;
        for k in (0..len).step_by((len / 9).max(1)) {
            let h = 1e-3f32;
            let (mut plus, mut minus) = (m.clone(), m.clone());
            plus.params_mut()[block][k] += h;
            minus.params_mut()[block][k] -= h;
            if relu_pattern(&plus, &x) != pattern || relu_pattern(&minus, &x) != pattern {
                skipped += 1;
                continue;
            }
            let analytic = if is_bias {
                g.layers[l].b[k]
            } else {
                g.layers[l].w.as_slice().unwrap()[k]
            } / n;
            // Divide by the step actually stored in f32, not the nominal one.
            let step = plus.params()[block][k] as f64 - minus.params()[block][k] as f64;
            let numeric = (loss(&plus, &x, &y) - loss(&minus, &x, &y)) / step;
            let err = (analytic - numeric).abs() / analytic.abs().max(1e-4);
            assert!(
                err < 1e-4,
                "layers {layers}, {}{} index {k}: analytic {analytic} numeric {numeric}",
                if is_bias { "b" } else { "w" },
                l + 1
            );
            checked_here += 1;
        }
        assert!(
            checked_here >= len.min(5),
            "layers {layers}, block {block}: only {checked_here} of {len} checked"
        );
        checked += checked_here;
    }
    assert!(
        skipped * 10 <= checked,
        "layers {layers}: {skipped} coordinates skipped at kinks, {checked} checked"
    );
}

#[test]
fn naive_gradients_match_finite_differences_at_every_depth() {
    for (i, spec) in DEPTHS.iter().enumerate() {
        check_finite_differences(&Layers::parse(spec).unwrap(), 30 + i as u64);
    }
}

/// The blas engine against the oracle on one model: probabilities, every
/// layer's gradients, loss and accuracy counts.
///
/// Tolerances: probabilities and gradients within
/// [`tolerance::F32_VS_F64`] (2e-4) of the oracle, relative to the largest
/// magnitude compared; the summed loss within 1e-5 relative; the counts of
/// rows and correct predictions exactly. The same bounds hold at any depth:
/// each layer adds one f32 product whose rounding (~1e-6 relative over a few
/// hundred terms) is far below them.
fn compare_engines(rows: usize, layers: &Layers, init: Init, seed: u64) {
    let (x, y) = random_batch(rows, seed);
    let m = Mlp::init(layers, init, seed).unwrap();

    let fast = BlasEngine.probabilities(&m, &x);
    let slow = NaiveEngine.probabilities(&m, &x);
    assert_eq!(fast.dim(), (rows, 10));
    let d = max_rel_diff(
        fast.iter().map(|&v| v as f64),
        slow.iter().map(|&v| v as f64),
    );
    assert!(
        d < tolerance::F32_VS_F64,
        "probabilities differ by {d} (rows {rows}, layers {layers})"
    );

    let (oracle, ostats) = naive::gradients(&m, &x, &y);
    assert_eq!(oracle.layers.len(), layers.depth());
    let mut g = Mlp::zeros(layers);
    let stats = BlasEngine.accumulate(&m, &x, &y, &mut g);
    assert_eq!(stats.rows, ostats.rows);
    assert_eq!(stats.correct, ostats.correct, "layers {layers}");
    assert!(
        (stats.loss_sum - ostats.loss_sum).abs() / ostats.loss_sum < 1e-5,
        "loss {} vs {} (layers {layers})",
        stats.loss_sum,
        ostats.loss_sum
    );
    for (l, (ours, theirs)) in g.layers.iter().zip(&oracle.layers).enumerate() {
        let pairs = [
            (
                "w",
                ours.w.iter().map(|&v| v as f64).collect::<Vec<_>>(),
                theirs.w.iter().copied().collect::<Vec<_>>(),
            ),
            (
                "b",
                ours.b.iter().map(|&v| v as f64).collect(),
                theirs.b.to_vec(),
            ),
        ];
        for (name, a, b) in pairs {
            assert_eq!(a.len(), b.len());
            let d = max_rel_diff(a, b);
            assert!(
                d < tolerance::F32_VS_F64,
                "{name}{}: blas vs naive differ by {d} (rows {rows}, layers {layers})",
                l + 1
            );
        }
    }
}

#[test]
fn blas_matches_naive_on_small_batches() {
    compare_engines(1, &Layers::one(10), Init::Uniform, 3);
    compare_engines(7, &Layers::one(10), Init::He, 4);
    compare_engines(32, &Layers::one(10), Init::Uniform, 5);
}

#[test]
fn blas_matches_naive_on_wide_and_large_batches() {
    compare_engines(300, &Layers::one(33), Init::He, 6);
    compare_engines(513, &Layers::one(10), Init::Uniform, 7);
}

/// One, two and three hidden layers: 1 row, a few, and 300 (two blocks of
/// the engine's 256 rows, so the second block's products start from what
/// the first added).
#[test]
fn blas_matches_naive_at_every_depth() {
    for (i, spec) in DEPTHS.iter().enumerate() {
        let layers = Layers::parse(spec).unwrap();
        let seed = 20 + 3 * i as u64;
        compare_engines(1, &layers, Init::He, seed);
        compare_engines(7, &layers, Init::Uniform, seed + 1);
        compare_engines(300, &layers, Init::He, seed + 2);
    }
}

#[test]
fn accumulate_adds_to_what_is_there() {
    // The trainer relies on `accumulate` adding, not overwriting.
    let (x, y) = random_batch(8, 9);
    let m = Mlp::init(&Layers::one(10), Init::He, 9).unwrap();
    for engine in [&BlasEngine as &dyn Engine, &NaiveEngine] {
        let mut once = Mlp::zeros(&Layers::one(10));
        engine.accumulate(&m, &x, &y, &mut once);
        let mut twice = Mlp::zeros(&Layers::one(10));
        engine.accumulate(&m, &x, &y, &mut twice);
        engine.accumulate(&m, &x, &y, &mut twice);
        once.scale(2.0);
        let d = max_rel_diff(flat(&twice), flat(&once));
        assert!(d < 1e-6, "{d}");
    }
}

#[test]
fn softmax_survives_huge_logits() {
    // The notebook's softmax without max-subtraction overflows here.
    let mut m = Mlp::init(&Layers::one(10), Init::Uniform, 0).unwrap();
    m.layers[1].w.fill(0.0);
    m.layers[1].b.fill(0.0);
    m.layers[1].b[3] = 1000.0;
    m.layers[1].b[4] = 999.0;
    let (x, _) = random_batch(2, 0);
    for engine in [&BlasEngine as &dyn Engine, &NaiveEngine, &SparseEngine] {
        let p = engine.probabilities(&m, &x);
        assert!(p.iter().all(|v| v.is_finite()));
        assert!((p[[0, 3]] - 0.7310586).abs() < 1e-5, "{}", p[[0, 3]]);
    }
}
