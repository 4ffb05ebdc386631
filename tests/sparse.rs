//! The sparse engine against the f64 oracle, on the same terms as the blas
//! engine (tests/engines.rs): probabilities, loss and accuracy counts, and
//! every gradient block, for narrow (H <= 16, one 16-lane chunk) and wide
//! (several chunks, H not a multiple of 16) networks.

use mnist_blas::data::FEATURES;
use mnist_blas::engine::{naive, naive::NaiveEngine, sparse::SparseEngine, Engine};
use mnist_blas::model::{Init, Mlp};
use mnist_blas::testutil::{max_rel_diff, random_batch, tolerance};

fn as_f64(a: &[f32]) -> Vec<f64> {
    a.iter().map(|&v| v as f64).collect()
}

fn compare_with_oracle(x: &[u8], y: &[u8], hidden: usize, init: Init, seed: u64) {
    let m = Mlp::init(hidden, init, seed);
    let fast = SparseEngine.probabilities(&m, x);
    let slow = NaiveEngine.probabilities(&m, x);
    assert_eq!(fast.dim(), slow.dim());
    let d = max_rel_diff(
        fast.iter().map(|&v| v as f64),
        slow.iter().map(|&v| v as f64),
    );
    assert!(d < tolerance::F32_VS_F64, "probabilities differ by {d}");

    let (oracle, ostats) = naive::gradients(&m, x, y);
    let mut g = Mlp::zeros(hidden);
    let stats = SparseEngine.accumulate(&m, x, y, &mut g);
    assert_eq!(stats.rows, ostats.rows);
    assert_eq!(stats.correct, ostats.correct);
    assert!((stats.loss_sum - ostats.loss_sum).abs() / ostats.loss_sum < 1e-5);
    let blocks = [
        (
            "w1",
            as_f64(g.w1.as_slice().unwrap()),
            oracle.w1.iter().copied().collect::<Vec<_>>(),
        ),
        ("b1", as_f64(g.b1.as_slice().unwrap()), oracle.b1.to_vec()),
        (
            "w2",
            as_f64(g.w2.as_slice().unwrap()),
            oracle.w2.iter().copied().collect(),
        ),
        ("b2", as_f64(g.b2.as_slice().unwrap()), oracle.b2.to_vec()),
    ];
    for (name, a, b) in blocks {
        let d = max_rel_diff(a, b);
        assert!(
            d < tolerance::F32_VS_F64,
            "{name}: sparse vs naive differ by {d} (rows {}, hidden {hidden})",
            y.len()
        );
    }
}

#[test]
fn sparse_matches_naive_narrow() {
    for (rows, hidden, init, seed) in [
        (1, 10, Init::Uniform, 3),
        (7, 10, Init::He, 4),
        (32, 16, Init::Uniform, 5),
        (300, 3, Init::He, 6),
    ] {
        let (x, y) = random_batch(rows, seed);
        compare_with_oracle(&x, &y, hidden, init, seed);
    }
}

#[test]
fn sparse_matches_naive_wide() {
    // 17 and 33 hidden units: two and three chunks, the last one partial.
    for (rows, hidden, seed) in [(40, 17, 7), (130, 33, 8)] {
        let (x, y) = random_batch(rows, seed);
        compare_with_oracle(&x, &y, hidden, Init::He, seed);
    }
}

#[test]
fn sparse_handles_blank_and_full_images() {
    // All-zero rows (nothing to gather), all-255 rows (every pixel gathered,
    // the vector gather's every block full) and a row non-zero only in the
    // last pixel (the final, partial 16-byte block).
    let mut x = vec![0u8; 4 * FEATURES];
    x[FEATURES..2 * FEATURES].fill(255);
    x[3 * FEATURES - 1] = 7;
    for (i, p) in x[3 * FEATURES..].iter_mut().enumerate() {
        *p = (i % 3 == 0) as u8 * (i % 251) as u8;
    }
    let y = [0, 9, 4, 5];
    compare_with_oracle(&x, &y, 10, Init::Uniform, 9);
    compare_with_oracle(&x, &y, 20, Init::He, 10);
}

#[test]
fn sparse_accumulate_adds_to_what_is_there() {
    let (x, y) = random_batch(8, 11);
    let m = Mlp::init(10, Init::He, 11);
    let mut once = Mlp::zeros(10);
    SparseEngine.accumulate(&m, &x, &y, &mut once);
    let mut twice = Mlp::zeros(10);
    SparseEngine.accumulate(&m, &x, &y, &mut twice);
    SparseEngine.accumulate(&m, &x, &y, &mut twice);
    once.scale(2.0);
    for (a, b) in twice.params().iter().zip(once.params()) {
        let d = max_rel_diff(as_f64(a), as_f64(b));
        assert!(d < 1e-6, "{d}");
    }
}

#[test]
fn sparse_forgets_the_previous_model_and_width() {
    // The workspace is reused between calls: a second model (and a second
    // width) must not see anything of the first.
    let (x, y) = random_batch(20, 12);
    compare_with_oracle(&x, &y, 33, Init::He, 12);
    compare_with_oracle(&x, &y, 10, Init::Uniform, 13);
    compare_with_oracle(&x, &y, 10, Init::He, 14);
}
