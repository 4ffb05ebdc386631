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

fn compare_engines(rows: usize, hidden: usize, init: Init, seed: u64) {
    let (x, y) = random_batch(rows, seed);
    let m = Mlp::init(&Layers::one(hidden), init, seed).unwrap();

    let fast = BlasEngine.probabilities(&m, &x);
    let slow = NaiveEngine.probabilities(&m, &x);
    let d = max_rel_diff(
        fast.iter().map(|&v| v as f64),
        slow.iter().map(|&v| v as f64),
    );
    assert!(d < tolerance::F32_VS_F64, "probabilities differ by {d}");

    let (oracle, ostats) = naive::gradients(&m, &x, &y);
    let mut g = Mlp::zeros(&Layers::one(hidden));
    let stats = BlasEngine.accumulate(&m, &x, &y, &mut g);
    assert_eq!(stats.rows, ostats.rows);
    assert_eq!(stats.correct, ostats.correct);
    assert!((stats.loss_sum - ostats.loss_sum).abs() / ostats.loss_sum < 1e-5);
    let pairs = [
        (
            "w1",
            g.layers[0].w.iter().map(|&v| v as f64).collect::<Vec<_>>(),
            oracle.layers[0].w.iter().copied().collect::<Vec<_>>(),
        ),
        (
            "b1",
            g.layers[0].b.iter().map(|&v| v as f64).collect(),
            oracle.layers[0].b.to_vec(),
        ),
        (
            "w2",
            g.layers[1].w.iter().map(|&v| v as f64).collect(),
            oracle.layers[1].w.iter().copied().collect(),
        ),
        (
            "b2",
            g.layers[1].b.iter().map(|&v| v as f64).collect(),
            oracle.layers[1].b.to_vec(),
        ),
    ];
    for (name, a, b) in pairs {
        let d = max_rel_diff(a, b);
        assert!(
            d < tolerance::F32_VS_F64,
            "{name}: blas vs naive differ by {d} (rows {rows}, hidden {hidden})"
        );
    }
}

#[test]
fn blas_matches_naive_on_small_batches() {
    compare_engines(1, 10, Init::Uniform, 3);
    compare_engines(7, 10, Init::He, 4);
    compare_engines(32, 10, Init::Uniform, 5);
}

#[test]
fn blas_matches_naive_on_wide_and_large_batches() {
    compare_engines(300, 33, Init::He, 6);
    compare_engines(513, 10, Init::Uniform, 7);
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
