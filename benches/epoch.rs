//! One mini-batch epoch over 33,600 rows (the default 80% split of Kaggle's
//! 42,000): `train::train` with 1 epoch, batch 32, Adam, 784-10-10, exactly
//! the trainer the binary runs (shuffle, batch copy, sharding, update).
//! Throughput is rows per second. Compare with `scripts/numpy_minibatch.py`.
//!
//! Also the notebook's loop: 10 full-batch gradient-descent iterations on
//! 8,400 rows (throughput counts rows x iterations).

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mnist_blas::engine::EngineKind;
use mnist_blas::model::{Init, Layers};
use mnist_blas::optim::OptimizerKind;
use mnist_blas::train::{self, LrSchedule, Schedule, Silent, TrainConfig};
use std::hint::black_box;
use std::time::Duration;

const EPOCH_ROWS: usize = 33_600;
const NOTEBOOK_ROWS: usize = 8_400;
const NOTEBOOK_ITERATIONS: usize = 10;

fn config(
    engine: EngineKind,
    schedule: Schedule,
    optimizer: OptimizerKind,
    lr: f32,
) -> TrainConfig {
    TrainConfig {
        layers: Layers::one(10),
        weight_decay: 0.0,
        init: Init::He,
        optimizer,
        lr,
        // As the binary: cosine for mini-batch Adam, constant for the notebook.
        lr_schedule: match schedule {
            Schedule::MiniBatch { .. } => LrSchedule::Cosine,
            Schedule::FullBatch { .. } => LrSchedule::Constant,
        },
        momentum: 0.9,
        schedule,
        seed: 0,
        engine,
        log_every: usize::MAX,
        early_stop: None,
        augment: None,
    }
}

fn epoch(c: &mut Criterion) {
    mnist_blas::threads::set_openblas_threads(1);
    let (data, what) = common::labeled_rows(EPOCH_ROWS);
    eprintln!(
        "epoch bench: {what}; rayon threads {}",
        rayon::current_num_threads()
    );

    let mut g = c.benchmark_group("minibatch_epoch");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(EPOCH_ROWS as u64));
    for engine in [EngineKind::Blas, EngineKind::Sparse] {
        let cfg = config(
            engine,
            Schedule::MiniBatch {
                epochs: 1,
                batch_size: 32,
            },
            OptimizerKind::Adam,
            0.003,
        );
        g.bench_function(BenchmarkId::new(engine.name(), "33600x32"), |b| {
            b.iter(|| black_box(train::train(&cfg, &data, None, &mut Silent).unwrap()))
        });
    }
    g.finish();

    let notebook = data.gather(&(0..NOTEBOOK_ROWS).collect::<Vec<_>>());
    let mut g = c.benchmark_group("notebook_iteration");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(
            (NOTEBOOK_ITERATIONS * NOTEBOOK_ROWS) as u64,
        ));
    for engine in [EngineKind::Blas, EngineKind::Sparse] {
        let schedule = Schedule::FullBatch {
            iterations: NOTEBOOK_ITERATIONS,
        };
        let cfg = config(engine, schedule, OptimizerKind::Sgd, 0.1);
        g.bench_function(BenchmarkId::new(engine.name(), "8400x10it"), |b| {
            b.iter(|| black_box(train::train(&cfg, &notebook, None, &mut Silent).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, epoch);
criterion_main!(benches);
