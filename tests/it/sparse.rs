//! The sparse engine against the f64 oracle, on the same terms as the blas
//! engine (tests/engines.rs): probabilities, loss and accuracy counts, and
//! every gradient block, for narrow (H <= 16, one 16-lane chunk) and wide
//! (several chunks, H not a multiple of 16) networks, and for deep ones
//! (two and three hidden layers: the sparse first layer under the dense
//! products).

use crate::common::{bits, pool};
use crate::lockstep::{assert_same_step, steps_match_the_generic_path_exactly, Hints, Lockstep};
use crate::testutil::{max_rel_diff, random_batch, tolerance};
use mnist_blas::data::FEATURES;
use mnist_blas::engine::{naive, naive::NaiveEngine, sparse::SparseEngine, Engine, EngineKind};
use mnist_blas::model::{Init, Layers, Mlp};

fn as_f64(a: &[f32]) -> Vec<f64> {
    a.iter().map(|&v| v as f64).collect()
}

fn compare_with_oracle(x: &[u8], y: &[u8], hidden: usize, init: Init, seed: u64) {
    compare_layers_with_oracle(x, y, &Layers::one(hidden), init, seed);
}

/// Probabilities, loss and accuracy counts, and every layer's weight and
/// bias gradients of the sparse engine against the f64 oracle, for a model
/// of hidden widths `layers`.
fn compare_layers_with_oracle(x: &[u8], y: &[u8], layers: &Layers, init: Init, seed: u64) {
    let m = Mlp::init(layers, init, seed).unwrap();
    let fast = SparseEngine.probabilities(&m, x);
    let slow = NaiveEngine.probabilities(&m, x);
    assert_eq!(fast.dim(), slow.dim());
    let d = max_rel_diff(
        fast.iter().map(|&v| v as f64),
        slow.iter().map(|&v| v as f64),
    );
    assert!(
        d < tolerance::F32_VS_F64,
        "{layers}: probabilities differ by {d}"
    );
    // The oracle's own forward pass, row by row, for the same probabilities.
    for (r, row) in x.chunks_exact(FEATURES).enumerate().step_by(37) {
        let want = naive::forward_row(&m, row).probs;
        let got = fast.row(r).iter().map(|&v| v as f64).collect::<Vec<_>>();
        let d = max_rel_diff(got, want);
        assert!(
            d < tolerance::F32_VS_F64,
            "{layers}: row {r} differs by {d}"
        );
    }

    let (oracle, ostats) = naive::gradients(&m, x, y);
    let mut g = Mlp::zeros(layers);
    let stats = SparseEngine.accumulate(&m, x, y, &mut g);
    assert_eq!(stats.rows, ostats.rows);
    assert_eq!(stats.correct, ostats.correct, "{layers}");
    assert!(
        (stats.loss_sum - ostats.loss_sum).abs() / ostats.loss_sum < 1e-5,
        "{layers}: loss {} vs {}",
        stats.loss_sum,
        ostats.loss_sum
    );
    assert_eq!(g.layers.len(), oracle.layers.len());
    for (l, (got, want)) in g.layers.iter().zip(&oracle.layers).enumerate() {
        let blocks = [
            (
                "w",
                as_f64(got.w.as_slice().unwrap()),
                want.w.iter().copied().collect::<Vec<_>>(),
            ),
            ("b", as_f64(got.b.as_slice().unwrap()), want.b.to_vec()),
        ];
        for (name, a, b) in blocks {
            assert!(b.iter().any(|&v| v != 0.0), "{name}{}: all zero", l + 1);
            let d = max_rel_diff(a, b);
            assert!(
                d < tolerance::F32_VS_F64,
                "{name}{}: sparse vs naive differ by {d} (rows {}, layers {layers})",
                l + 1,
                y.len()
            );
        }
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
    let m = Mlp::init(&Layers::one(10), Init::He, 11).unwrap();
    let mut once = Mlp::zeros(&Layers::one(10));
    SparseEngine.accumulate(&m, &x, &y, &mut once);
    let mut twice = Mlp::zeros(&Layers::one(10));
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

/// Prepared rows (non-zeros by row and by pixel, computed once for
/// full-batch training) are a cache, not an approximation: the gradients and
/// counts must equal those from the raw rows bit for bit, narrow and wide,
/// for more rows than a shard and for up to a shard (whose narrow gradient
/// pass reads `dz1` from an array of exactly a shard's rows).
#[test]
fn prepared_rows_give_the_same_bits_as_raw_rows() {
    use mnist_blas::engine::SHARD_ROWS;
    let (mut x, mut y) = random_batch(300, 21);
    // Blank rows and a full row, among ordinary ones.
    x[..FEATURES].fill(0);
    x[5 * FEATURES..6 * FEATURES].fill(255);
    x[7 * FEATURES..8 * FEATURES].fill(0);
    y[5] = 3;
    for rows in [300, SHARD_ROWS, 37] {
        let (x, y) = (&x[..rows * FEATURES], &y[..rows]);
        for hidden in [10, 16, 20, 40] {
            let m = Mlp::init(&Layers::one(hidden), Init::He, hidden as u64).unwrap();
            let prepared = SparseEngine
                .prepare(x, &m.shape())
                .expect("sparse prepares rows");
            assert_eq!(prepared.rows(), rows);
            let mut raw = Mlp::zeros(&Layers::one(hidden));
            let a = SparseEngine.accumulate(&m, x, y, &mut raw);
            let mut from_prepared = Mlp::zeros(&Layers::one(hidden));
            let b = SparseEngine.accumulate_prepared(&m, &prepared, y, &mut from_prepared);
            let at = format!("{rows} rows, H={hidden}");
            assert_eq!(bits(&raw), bits(&from_prepared), "{at}");
            assert_eq!((a.correct, a.rows), (b.correct, b.rows), "{at}");
            assert_eq!(a.loss_sum.to_bits(), b.loss_sum.to_bits(), "{at}");
        }
    }
}

/// A whole sharded batch, as full-batch training runs it: prepared shards
/// and raw rows give bit-identical mean gradients.
#[test]
fn prepared_shards_give_the_same_bits_as_raw_shards() {
    use mnist_blas::engine::SHARD_ROWS;
    use mnist_blas::train::shard::{prepare, ShardBuffers};
    let rows = 3 * SHARD_ROWS + 45;
    let (x, y) = random_batch(rows, 22);
    let m = Mlp::init(&Layers::one(10), Init::Uniform, 22).unwrap();
    let shards = prepare(&SparseEngine, &x, &m.shape()).expect("sparse prepares shards");
    assert_eq!(shards.len(), 4);
    let mut raw = Mlp::zeros(&Layers::one(10));
    let a = ShardBuffers::default().mean_gradients(&SparseEngine, &m, &x, &y, None, &mut raw);
    let mut fast = Mlp::zeros(&Layers::one(10));
    let b =
        ShardBuffers::default().mean_gradients(&SparseEngine, &m, &x, &y, Some(&shards), &mut fast);
    assert_eq!(bits(&raw), bits(&fast));
    assert_eq!(a, b);
    assert!(raw.params().iter().any(|p| p.iter().any(|&v| v != 0.0)));
}

/// The engine keeps padded copies of the last model it saw; a model that
/// differs in a single weight must not be served the stale copy.
#[test]
fn a_one_weight_change_is_seen() {
    let (x, y) = random_batch(40, 23);
    let m = Mlp::init(&Layers::one(10), Init::He, 23).unwrap();
    let mut changed = m.clone();
    changed.layers[0].w[[3, 400]] += 0.25;
    let run = |model: &Mlp| {
        let mut g = Mlp::zeros(&model.shape());
        SparseEngine.accumulate(model, &x, &y, &mut g);
        bits(&g)
    };
    let after_m = {
        run(&m);
        run(&changed)
    };
    // A different width forces a fresh copy.
    run(&Mlp::init(&Layers::one(12), Init::He, 1).unwrap());
    let fresh = run(&changed);
    assert_eq!(after_m, fresh);
    assert_ne!(run(&m), fresh);
}

/// The sparse engine's resident mini-batch trainers against the generic
/// path (the engine's `accumulate` through `ShardBuffers`, then
/// `Optimizer::step` on the model), step by step, for each update rule,
/// narrow and wide networks, and pools of 1 and 2 threads:
///
/// - for batches over 256 rows (shards on the pool): the same statistics
///   and, after the steps, the same weights and moments, bit for bit;
/// - for batches of up to 256 (`w1` in two pixel halves, the upper one on a
///   helper thread when the pool has two threads): each row's first-layer
///   sum is taken in two parts, so the generic path agrees to rounding
///   (`F32_VS_F64`-sized, over a few steps), and 1 thread and 2 agree bit
///   for bit.
#[test]
fn resident_steps_match_the_generic_path() {
    use mnist_blas::optim::OptimizerKind;

    let rows = 700;
    let (x, y) = random_batch(rows, 17);
    let bits = |m: &Mlp| -> Vec<u32> {
        m.params()
            .iter()
            .flat_map(|p| p.iter().map(|v| v.to_bits()))
            .collect()
    };
    let values = |m: &Mlp| -> Vec<f64> {
        m.params()
            .iter()
            .flat_map(|p| p.iter().map(|&v| v as f64))
            .collect()
    };
    let mut halves_bits = std::collections::HashMap::new();
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        for (hidden, kind) in [
            (10, OptimizerKind::Adam),
            (10, OptimizerKind::Sgd),
            (10, OptimizerKind::Momentum),
            (20, OptimizerKind::Adam),
        ] {
            for (batch_size, batches) in [
                (32, &[32, 32, 1, 17, 32, 32][..]),
                (600, &[300, 32, 600, 256][..]),
            ] {
                let exact = batch_size > 256;
                pool.install(|| {
                    let start = Mlp::init(&Layers::one(hidden), Init::He, 3).unwrap();
                    let mut both = Lockstep::new(EngineKind::Sparse, (&x, &y), batch_size, &start, kind, 9);
                    let mut losses = Vec::new();
                    for (step, &batch) in batches.iter().enumerate() {
                        let (want, got) = both.step((&x, &y), (batch, batches.get(step + 1).copied()), step, Hints::True);
                        let at = format!(
                            "threads {threads}, batches of {batch_size}, H={hidden}, {kind:?}, step {step}"
                        );
                        assert_eq!(got.stats.rows, want.rows, "{at}");
                        assert!(got.finite, "{at}");
                        if exact {
                            assert_eq!(got.stats.correct, want.correct, "{at}");
                            assert_eq!(
                                got.stats.loss_sum.to_bits(),
                                want.loss_sum.to_bits(),
                                "{at}"
                            );
                        } else {
                            let d = (got.stats.loss_sum - want.loss_sum).abs() / want.loss_sum;
                            assert!(d < 1e-5, "{at}: loss sums differ by {d}");
                        }
                        losses.push(got.stats.loss_sum.to_bits());
                    }
                    let ((model, opt), generic) = both.finish();
                    let at = format!("threads {threads}, batches of {batch_size}, H={hidden}, {kind:?}");
                    assert_ne!(bits(&model), bits(&start), "{at}: training moved the weights");
                    assert_eq!(opt.t, generic.1.t, "{at}");
                    if exact {
                        assert_eq!(bits(&model), bits(&generic.0), "{at}: weights");
                        assert_eq!(bits(&opt.m), bits(&generic.1.m), "{at}: first moment");
                        assert_eq!(bits(&opt.v), bits(&generic.1.v), "{at}: second moment");
                    } else {
                        let d = max_rel_diff(values(&model), values(&generic.0));
                        assert!(d < tolerance::F32_VS_F64, "{at}: weights differ by {d}");
                        let run = (bits(&model), bits(&opt.m), bits(&opt.v), losses);
                        let key = format!("{hidden} {kind:?}");
                        match halves_bits.get(&key) {
                            None => {
                                halves_bits.insert(key, run);
                            }
                            Some(one_thread) => {
                                assert!(*one_thread == run, "{at}: 1 and 2 threads differ")
                            }
                        }
                    }
                });
            }
        }
    }
    assert_eq!(halves_bits.len(), 4);
}

/// Full-batch training on the resident trainer: a step over every row in
/// order runs the prepared pass over shards converted at the first such
/// step (a cache: a step on other rows between two of them changes
/// nothing), and gives the generic path's bits, on 1 and 2 threads.
#[test]
fn resident_steps_over_every_row_match_the_generic_path_exactly() {
    use mnist_blas::optim::OptimizerKind;

    let rows = 700;
    let (x, y) = random_batch(rows, 29);
    for threads in [1, 2] {
        for (hidden, kind) in [
            (10, OptimizerKind::Sgd),
            (10, OptimizerKind::Adam),
            (20, OptimizerKind::Momentum),
        ] {
            let at = format!("threads {threads}, H={hidden}, {kind:?}");
            pool(threads).install(|| {
                let start = Mlp::init(&Layers::one(hidden), Init::He, 6).unwrap();
                let mut both = Lockstep::new(EngineKind::Sparse, (&x, &y), rows, &start, kind, 2);
                for step in 0..5 {
                    let (want, got) = if step == 2 {
                        both.step((&x, &y), (300, None), step, Hints::True)
                    } else {
                        both.step_on_every_row((&x, &y), step)
                    };
                    assert_same_step(&want, &got, &format!("{at}, step {step}"));
                }
                both.finish_exactly(&start, &at);
            });
        }
    }
}

/// The deep path's resident trainer (batches of one shard; the first layer
/// kept transposed, each piece updated as its gradient is summed) against
/// the generic path, exactly: a one-layer model cut into two pieces, a deep
/// one of two pieces, and deep ones of one piece (at batches under 128 rows,
/// one shard too).
#[test]
fn deep_resident_steps_match_the_generic_path_exactly() {
    steps_match_the_generic_path_exactly(
        EngineKind::Sparse,
        &[
            ("600", 128, &[128, 128, 17, 128][..]),
            ("530-24", 128, &[128, 55, 128][..]),
            ("256-128", 128, &[128, 60, 128][..]),
            ("32-16", 64, &[64, 64, 9, 64][..]),
        ],
    );
}

/// A run that blows up stops with `Diverged` on the sparse engine's
/// resident trainers too, though they apply an update as late as the next
/// step: NaN weights (SGD at 1e30) and a finite but exploded loss.
#[test]
fn resident_trainers_report_divergence() {
    use mnist_blas::engine::EngineKind;
    use mnist_blas::optim::OptimizerKind;
    use mnist_blas::train::{self, LrSchedule, Schedule, TrainConfig, TrainError};
    let data = crate::testutil::random_dataset(400, 6);
    for batch_size in [32, 300] {
        for (optimizer, lr) in [(OptimizerKind::Sgd, 1e30), (OptimizerKind::Adam, 50.0)] {
            let cfg = TrainConfig {
                layers: Layers::one(10),
                weight_decay: 0.0,
                init: Init::He,
                optimizer,
                lr,
                lr_schedule: LrSchedule::Constant,
                momentum: 0.9,
                schedule: Schedule::MiniBatch {
                    epochs: 3,
                    batch_size,
                },
                seed: 1,
                engine: EngineKind::Sparse,
                log_every: 1,
                early_stop: None,
                augment: None,
            };
            let got = train::train(&cfg, &data, None, &mut train::Silent);
            assert!(
                matches!(got, Err(TrainError::Diverged { .. })),
                "batch {batch_size}, {optimizer:?} at lr {lr}: {:?}",
                got.map(|o| o.steps)
            );
        }
    }
}

/// Deep models (two and three hidden layers): the first layer over the
/// non-zeros, the rest as dense products. Against the oracle at one row,
/// a few, one full block of 256 and two blocks (300), widths that fill
/// 16-lane chunks exactly and that do not.
#[test]
fn deep_sparse_matches_naive() {
    for (rows, layers, init, seed) in [
        (1, "32-16", Init::He, 31),
        (9, "24-16-12", Init::Uniform, 32),
        (256, "32-16", Init::Uniform, 33),
        (300, "24-16-12", Init::He, 34),
        (70, "200-20", Init::He, 35),
        // First layers cut into pieces of hidden units: one layer of 600
        // (pieces of 288 and 312, the last chunk partial), and 530-20.
        (130, "600", Init::He, 44),
        (40, "530-20", Init::Uniform, 45),
    ] {
        let (x, y) = random_batch(rows, seed);
        let layers = Layers::parse(layers).unwrap();
        compare_layers_with_oracle(&x, &y, &layers, init, seed);
    }
}

/// Blank rows (no non-zeros), a full row and a last-pixel-only row in a
/// deep model, and the workspace reused across widths and depths: each
/// call sees only its own model.
#[test]
fn deep_sparse_handles_blank_full_rows_and_changing_shapes() {
    let (mut x, y) = random_batch(40, 36);
    x[..FEATURES].fill(0);
    x[3 * FEATURES..4 * FEATURES].fill(255);
    x[5 * FEATURES..6 * FEATURES].fill(0);
    x[6 * FEATURES - 1] = 9;
    for (layers, init, seed) in [
        ("24-16-12", Init::He, 37),
        ("32-16", Init::Uniform, 38),
        ("10", Init::He, 39),
        ("32-16", Init::He, 40),
        ("33-16", Init::He, 41),
    ] {
        let layers = Layers::parse(layers).unwrap();
        compare_layers_with_oracle(&x, &y, &layers, init, seed);
    }
}

/// `accumulate` adds to what is there: twice from zero is exactly twice
/// once (a sum added to itself doubles exactly), for two and three hidden
/// layers.
#[test]
fn deep_sparse_accumulate_adds_exactly() {
    let (x, y) = random_batch(60, 42);
    for layers in ["32-16", "24-16-12"] {
        let layers = Layers::parse(layers).unwrap();
        let m = Mlp::init(&layers, Init::He, 42).unwrap();
        let mut once = Mlp::zeros(&layers);
        let a = SparseEngine.accumulate(&m, &x, &y, &mut once);
        let mut twice = Mlp::zeros(&layers);
        let b = SparseEngine.accumulate(&m, &x, &y, &mut twice);
        SparseEngine.accumulate(&m, &x, &y, &mut twice);
        assert_eq!(a, b, "{layers}: the same rows, the same counts");
        once.scale(2.0);
        assert_eq!(bits(&twice), bits(&once), "{layers}");
    }
}

/// The deep path keeps a transposed copy of the last `w1` it saw, piece by
/// piece; a model that differs in one first-layer weight must not be
/// served the stale copy, in the first piece or in a later one.
#[test]
fn deep_sparse_sees_a_one_weight_change() {
    for (layers, unit) in [("32-16", 3), ("600", 3), ("600", 500)] {
        sees_a_one_weight_change(layers, unit);
    }
}

fn sees_a_one_weight_change(layers: &str, unit: usize) {
    let (x, y) = random_batch(40, 43);
    let layers = Layers::parse(layers).unwrap();
    let m = Mlp::init(&layers, Init::He, 43).unwrap();
    let mut changed = m.clone();
    // A pixel lit in some row, so the change reaches the gradients.
    let lit = (0..FEATURES).find(|&i| x[i] != 0).unwrap();
    changed.layers[0].w[[unit, lit]] += 0.25;
    let run = |model: &Mlp| {
        let mut g = Mlp::zeros(&model.shape());
        SparseEngine.accumulate(model, &x, &y, &mut g);
        (bits(&g), SparseEngine.probabilities(model, &x))
    };
    let after_m = {
        run(&m);
        run(&changed)
    };
    // Another width forces a fresh copy.
    run(&Mlp::init(&Layers::parse("24-16").unwrap(), Init::He, 1).unwrap());
    let fresh = run(&changed);
    assert_eq!(after_m.0, fresh.0);
    assert_eq!(after_m.1, fresh.1);
    assert_ne!(run(&m).0, fresh.0);
}

/// Mini-batch training of a deep model on the sparse engine gives the same
/// bits on 1 and 2 threads: batches of one shard (64) and of two (300),
/// the second split across the threads.
#[test]
fn deep_sparse_training_is_bit_identical_on_1_and_2_threads() {
    use mnist_blas::engine::EngineKind;
    use mnist_blas::optim::OptimizerKind;
    use mnist_blas::train::{self, LrSchedule, Schedule, Silent, TrainConfig};
    let data = crate::testutil::random_dataset(700, 44);
    let layers = Layers::parse("32-16").unwrap();
    for batch_size in [64, 300] {
        let cfg = TrainConfig {
            layers: layers.clone(),
            weight_decay: 0.0,
            init: Init::He,
            optimizer: OptimizerKind::Adam,
            lr: 0.01,
            lr_schedule: LrSchedule::Constant,
            momentum: 0.9,
            schedule: Schedule::MiniBatch {
                epochs: 1,
                batch_size,
            },
            seed: 5,
            engine: EngineKind::Sparse,
            log_every: 1,
            early_stop: None,
            augment: None,
        };
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| train::train(&cfg, &data, None, &mut Silent).unwrap())
        };
        let (one, two) = (run(1), run(2));
        assert_eq!(
            one.steps,
            700usize.div_ceil(batch_size),
            "batch {batch_size}"
        );
        assert_eq!(bits(&one.model), bits(&two.model), "batch {batch_size}");
        let start = Mlp::init(&layers, Init::He, 5).unwrap();
        assert_ne!(
            bits(&one.model),
            bits(&start),
            "batch {batch_size}: nothing trained"
        );
    }
}
