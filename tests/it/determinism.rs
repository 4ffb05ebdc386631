//! Same seed, any thread count: bit-identical weights.

use crate::testutil::random_dataset;
use mnist_blas::engine::EngineKind;
use mnist_blas::engine::SHARD_ROWS;
use mnist_blas::model::{Init, Layers, Mlp};
use mnist_blas::optim::OptimizerKind;
use mnist_blas::train::{self, Schedule, Silent, TrainConfig};

fn train_with_threads(cfg: &TrainConfig, threads: usize) -> Mlp {
    let data = random_dataset(3 * SHARD_ROWS + 77, 42);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| train::train(cfg, &data, None, &mut Silent).unwrap().model)
}

fn config(schedule: Schedule, optimizer: OptimizerKind, engine: EngineKind) -> TrainConfig {
    TrainConfig {
        layers: Layers::one(10),
        weight_decay: 0.0,
        init: Init::Uniform,
        optimizer,
        lr: 0.05,
        lr_schedule: mnist_blas::train::LrSchedule::Cosine,
        momentum: 0.9,
        schedule,
        seed: 7,
        engine,
        log_every: 1,
        early_stop: None,
        augment: None,
    }
}

fn assert_bit_identical(a: &Mlp, b: &Mlp) {
    for (pa, pb) in a.params().iter().zip(b.params()) {
        for (x, y) in pa.iter().zip(pb) {
            assert_eq!(x.to_bits(), y.to_bits(), "weights differ: {x} vs {y}");
        }
    }
}

#[test]
fn full_batch_is_bit_identical_on_1_2_and_3_threads() {
    // 845 rows: four shards, so the reduction really combines several.
    for (engine, optimizer) in [
        (EngineKind::Blas, OptimizerKind::Sgd),
        (EngineKind::Sparse, OptimizerKind::Adam),
    ] {
        let cfg = config(Schedule::FullBatch { iterations: 4 }, optimizer, engine);
        let one = train_with_threads(&cfg, 1);
        assert_bit_identical(&one, &train_with_threads(&cfg, 2));
        assert_bit_identical(&one, &train_with_threads(&cfg, 3));
        let untrained = Mlp::init(&Layers::one(10), Init::Uniform, 7).unwrap();
        assert_ne!(one, untrained, "{engine}: training changed nothing");
    }
}

#[test]
fn mini_batch_adam_is_bit_identical_on_1_and_2_threads() {
    let cfg = config(
        Schedule::MiniBatch {
            epochs: 2,
            batch_size: 2 * SHARD_ROWS + 3,
        },
        OptimizerKind::Adam,
        EngineKind::Blas,
    );
    assert_bit_identical(&train_with_threads(&cfg, 1), &train_with_threads(&cfg, 2));
}

#[test]
fn naive_engine_is_bit_identical_too() {
    let cfg = config(
        Schedule::FullBatch { iterations: 1 },
        OptimizerKind::Momentum,
        EngineKind::Naive,
    );
    assert_bit_identical(&train_with_threads(&cfg, 1), &train_with_threads(&cfg, 2));
}

#[test]
fn a_different_seed_gives_different_weights() {
    let mut cfg = config(
        Schedule::FullBatch { iterations: 2 },
        OptimizerKind::Sgd,
        EngineKind::Blas,
    );
    let a = train_with_threads(&cfg, 2);
    cfg.seed = 8;
    assert_ne!(a, train_with_threads(&cfg, 2));
}

/// Two hidden layers (784-16-8-10): every layer's shard gradients are
/// summed in shard order whatever the thread count. Mini-batches of 300
/// rows are two shards each (256 + 44); the full batch of 845 is four.
#[test]
fn two_hidden_layers_are_bit_identical_on_1_and_2_threads() {
    let layers = Layers::parse("16-8").unwrap();
    for schedule in [
        Schedule::MiniBatch {
            epochs: 2,
            batch_size: 300,
        },
        Schedule::FullBatch { iterations: 3 },
    ] {
        let mut cfg = config(schedule, OptimizerKind::Adam, EngineKind::Blas);
        cfg.layers = layers.clone();
        cfg.init = Init::He;
        let one = train_with_threads(&cfg, 1);
        assert_eq!(one.shape(), layers);
        assert_bit_identical(&one, &train_with_threads(&cfg, 2));
        let untrained = Mlp::init(&layers, Init::He, cfg.seed).unwrap();
        for (l, (a, b)) in one.layers.iter().zip(&untrained.layers).enumerate() {
            assert_ne!(a.w, b.w, "{schedule:?}: training left w{} as it was", l + 1);
        }
    }
}

/// A first hidden layer of 1,024 units, and the sparse engine's 784-256-64-10:
/// the engines cut the first layer's products into pieces of hidden units
/// that run in parallel (a batch of 128 is one shard), and a full batch of 845 rows is four shards whose pieces all
/// share two threads. Same bits on 1 and 2 threads, and no workspace is
/// taken twice when a thread waiting for its pieces runs another shard.
#[test]
fn a_wide_first_layer_is_bit_identical_on_1_and_2_threads() {
    let shapes = [(EngineKind::Blas, "1024"), (EngineKind::Sparse, "1024")];
    // The sparse engine cuts a deeper network's first layer from 256 units.
    let shapes = shapes.into_iter().chain([(EngineKind::Sparse, "256-64")]);
    for (engine, layers) in shapes {
        for schedule in [
            Schedule::MiniBatch {
                epochs: 1,
                batch_size: 128,
            },
            Schedule::FullBatch { iterations: 2 },
        ] {
            let mut cfg = config(schedule, OptimizerKind::Adam, engine);
            cfg.layers = Layers::parse(layers).unwrap();
            cfg.lr = 0.001;
            cfg.init = Init::He;
            let one = train_with_threads(&cfg, 1);
            assert_bit_identical(&one, &train_with_threads(&cfg, 2));
            let untrained = Mlp::init(&cfg.layers, Init::He, cfg.seed).unwrap();
            assert_ne!(
                one.layers[0].w, untrained.layers[0].w,
                "{engine} {layers} {schedule:?}"
            );
        }
    }
}
