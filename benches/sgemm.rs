//! The ceiling: what the linear-algebra backend itself does, on a square
//! product and on the notebook's two big products, with nothing of ours
//! around it. Throughput "elements" here are floating-point operations
//! (2*M*N*K per product), so Melem/s reads as MFLOP/s.
//!
//! `notebook_forward` is `X (8400x784) . W1^T (784x10)` and
//! `notebook_dw1` is `dZ1^T (10x8400) . X (8400x784)`: one full-batch
//! notebook iteration is one of each (plus tiny second-layer products).
//! `notebook_dw1_transposed` is the same product as `X^T . dZ1` (a 784x10
//! result), the orientation the dense engine uses. Run with both thread
//! counts of OpenBLAS (1 and the core count).
//!
//! `notebook_sharded` is the best way we know to run those two products on
//! this machine: cut into the trainer's 256-row shards, one OpenBLAS call per
//! product and shard, the shards spread over rayon threads (OpenBLAS itself
//! on one thread), the f32 rows ready in memory. It is the "sgemm rate on
//! these shapes" the dense fit is measured against.
//! `notebook_sharded_cached` makes the same calls on rows that stay in
//! cache: the products alone, with no memory traffic for the rows.
//!
//! `dense_fit` is the dense engine's real full-batch loop, `train::train`
//! on 8,400 rows for 10 iterations (u8 rows converted per shard, softmax,
//! second layer, reduction, update: everything the binary does), counted
//! with the same FLOPs as the two big products. Its rate over
//! `notebook_sharded/2t` and `square_2048/2t` are the ratios the
//! performance issue asks for, measured in one run.

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mnist_blas::data::FEATURES;
use mnist_blas::engine::EngineKind;
use mnist_blas::engine::SHARD_ROWS;
use mnist_blas::model::{Init, Layers};
use mnist_blas::optim::OptimizerKind;
use mnist_blas::threads::set_openblas_threads;
use mnist_blas::train::{self, LrSchedule, Schedule, Silent, TrainConfig};
use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array2, Axis};
use rayon::prelude::*;
use std::hint::black_box;
use std::time::Duration;

fn filled(rows: usize, cols: usize, seed: u32) -> Array2<f32> {
    // Cheap deterministic values in [-0.5, 0.5); the values do not matter.
    Array2::from_shape_fn((rows, cols), |(i, j)| {
        let h = (i as u32).wrapping_mul(2654435761) ^ (j as u32).wrapping_mul(40503) ^ seed;
        (h % 1000) as f32 / 1000.0 - 0.5
    })
}

fn sgemm(c: &mut Criterion) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    eprintln!("sgemm bench: {}", mnist_blas::engine::backend_description());
    let x = filled(8400, 784, 1);
    let w1 = filled(10, 784, 2);
    let dz1 = filled(10, 8400, 3);
    let big_a = filled(2048, 2048, 4);
    let big_b = filled(2048, 2048, 5);

    let mut g = c.benchmark_group("sgemm_flops");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    let mut threads = vec![1];
    if cores > 1 {
        threads.push(cores);
    }
    for &t in &threads {
        set_openblas_threads(t);
        let mut z1 = Array2::<f32>::zeros((8400, 10));
        g.throughput(Throughput::Elements(2 * 8400 * 784 * 10));
        g.bench_function(BenchmarkId::new("notebook_forward", format!("{t}t")), |b| {
            b.iter(|| general_mat_mul(1.0, &x, &w1.t(), 0.0, black_box(&mut z1)))
        });
        // The same product with the roles swapped: Z1^T = W1 . X^T.
        let mut z1t = Array2::<f32>::zeros((10, 8400));
        g.bench_function(
            BenchmarkId::new("notebook_forward_transposed", format!("{t}t")),
            |b| b.iter(|| general_mat_mul(1.0, &w1, &x.t(), 0.0, black_box(&mut z1t))),
        );
        let mut dw1 = Array2::<f32>::zeros((10, 784));
        g.bench_function(BenchmarkId::new("notebook_dw1", format!("{t}t")), |b| {
            b.iter(|| general_mat_mul(1.0, &dz1, &x, 0.0, black_box(&mut dw1)))
        });
        let mut dw1t = Array2::<f32>::zeros((784, 10));
        g.bench_function(
            BenchmarkId::new("notebook_dw1_transposed", format!("{t}t")),
            |b| b.iter(|| general_mat_mul(1.0, &x.t(), &dz1.t(), 0.0, black_box(&mut dw1t))),
        );
        let mut c2 = Array2::<f32>::zeros((2048, 2048));
        g.throughput(Throughput::Elements(2 * 2048 * 2048 * 2048));
        g.bench_function(BenchmarkId::new("square_2048", format!("{t}t")), |b| {
            b.iter(|| general_mat_mul(1.0, &big_a, &big_b, 0.0, black_box(&mut c2)))
        });
    }

    // The two products shard by shard, as the dense engine runs them.
    set_openblas_threads(1);
    let dz1_rows = dz1.t().as_standard_layout().into_owned(); // 8400 x 10
    g.throughput(Throughput::Elements(2 * 2 * 8400 * 784 * 10));
    for &t in &threads {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .expect("a rayon pool");
        let shards: Vec<_> = x
            .axis_chunks_iter(Axis(0), SHARD_ROWS)
            .zip(dz1_rows.axis_chunks_iter(Axis(0), SHARD_ROWS))
            .collect();
        let mut out: Vec<(Array2<f32>, Array2<f32>)> = shards
            .iter()
            .map(|(xs, _)| (Array2::zeros((xs.nrows(), 10)), Array2::zeros((784, 10))))
            .collect();
        // `cached`: every shard reads the first shard's rows, which stay in
        // each core's cache: the products' rate with the rows' memory
        // traffic taken away, an upper bound for any engine that calls
        // OpenBLAS this way.
        let hot = x.slice(s![..SHARD_ROWS, ..]);
        for (name, cached) in [
            ("notebook_sharded", false),
            ("notebook_sharded_cached", true),
        ] {
            g.bench_function(BenchmarkId::new(name, format!("{t}t")), |b| {
                b.iter(|| {
                    pool.install(|| {
                        shards
                            .par_iter()
                            .zip(&mut out)
                            .for_each(|((xs, dz), (z, dw))| {
                                let xs = if cached {
                                    hot.slice(s![..xs.nrows(), ..])
                                } else {
                                    xs.view()
                                };
                                general_mat_mul(1.0, &xs, &w1.t(), 0.0, z);
                                general_mat_mul(1.0, &xs.t(), dz, 0.0, dw);
                            })
                    });
                    black_box(&out);
                })
            });
        }
    }

    // The dense engine's whole full-batch loop, on the rayon threads the
    // binary uses (all cores).
    let (data, what) = common::labeled_rows(NOTEBOOK_ROWS);
    eprintln!("dense_fit: {what}");
    assert_eq!(data.pixels.len(), NOTEBOOK_ROWS * FEATURES);
    let cfg = TrainConfig {
        layers: Layers::one(10),
        weight_decay: 0.0,
        init: Init::Uniform,
        optimizer: OptimizerKind::Sgd,
        lr: 0.1,
        lr_schedule: LrSchedule::Constant,
        momentum: 0.9,
        schedule: Schedule::FullBatch {
            iterations: FIT_ITERATIONS,
        },
        seed: 0,
        engine: EngineKind::Blas,
        log_every: usize::MAX,
        early_stop: None,
        augment: None,
    };
    g.throughput(Throughput::Elements(
        (2 * 2 * NOTEBOOK_ROWS * 784 * 10 * FIT_ITERATIONS) as u64,
    ));
    g.bench_function(
        BenchmarkId::new("dense_fit", format!("{}t", rayon::current_num_threads())),
        |b| b.iter(|| black_box(train::train(&cfg, &data, None, &mut Silent).unwrap())),
    );
    g.finish();
}

const NOTEBOOK_ROWS: usize = 8_400;
const FIT_ITERATIONS: usize = 10;

criterion_group!(benches, sgemm);
criterion_main!(benches);
