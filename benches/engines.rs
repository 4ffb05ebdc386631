//! Engines side by side over a ladder of batch sizes: `naive` (f64 loops,
//! the oracle), `blas` (f32 matrix products, the card's engine) and `sparse`
//! (f32 over non-zero pixels). Throughput is samples (rows) per second.
//!
//! Groups:
//! - `forward`: class probabilities of the batch (`Engine::probabilities`);
//! - `forward_backward`: summed gradients of the batch (`Engine::accumulate`),
//!   one thread, one call: the backward pass needs the forward's
//!   activations, so it is timed together with it;
//! - `train_step`: one optimizer step exactly as the trainer takes it
//!   (sharded over rayon, fixed-order reduction, SGD update); plus
//!   `sparse_prepared`, the full-batch trainer's path, where the rows were
//!   converted once before the first step (`Engine::prepare`, untimed);
//! - `depth`: `forward_backward` on one 256-row shard for a ladder of
//!   shapes, one to three hidden layers and a first layer wide enough to
//!   be cut into pieces of hidden units (1024; [`DEPTHS`]).
//!
//! Rows are real MNIST digits (`../shared`, else the repository sample,
//! cycled), so the sparse engine sees real sparsity. OpenBLAS is pinned to
//! one thread, as the binary does. At the end, a table per group puts the
//! engines side by side per rung (ns per row, blas/naive and sparse/blas).

mod common;

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use mnist_blas::engine::{Engine, EngineKind};
use mnist_blas::model::{Init, Layers, Mlp};
use mnist_blas::optim::{Optimizer, OptimizerKind};
use mnist_blas::train::shard::{self, ShardBuffers};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

const LADDER: [usize; 5] = [32, 64, 256, 1024, 8400];
const ENGINES: [EngineKind; 3] = [EngineKind::Naive, EngineKind::Blas, EngineKind::Sparse];
const HIDDEN: usize = 10;
/// The `depth` group's shapes (hidden widths) and its rows (one shard).
const DEPTHS: [&str; 5] = ["10", "256", "1024", "256-128", "256-128-64"];
const DEPTH_ROWS: usize = 256;

fn configure<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    g
}

fn engines(c: &mut Criterion) {
    mnist_blas::threads::set_openblas_threads(1);
    let (data, what) = common::labeled_rows(*LADDER.last().unwrap());
    eprintln!(
        "engines bench: {what}; 784-{HIDDEN}-10; {}",
        mnist_blas::engine::backend_description()
    );
    let model = Mlp::init(&Layers::one(HIDDEN), Init::Uniform, 0).unwrap();

    let mut g = configure(c, "forward");
    for &rows in &LADDER {
        let (x, _) = common::head(&data, rows);
        g.throughput(Throughput::Elements(rows as u64));
        for kind in ENGINES {
            let engine = kind.build();
            g.bench_with_input(BenchmarkId::new(kind.name(), rows), &x, |b, x| {
                b.iter(|| black_box(engine.probabilities(&model, x)))
            });
        }
    }
    g.finish();

    let mut g = configure(c, "forward_backward");
    for &rows in &LADDER {
        let (x, y) = common::head(&data, rows);
        g.throughput(Throughput::Elements(rows as u64));
        for kind in ENGINES {
            let engine = kind.build();
            let mut grads = Mlp::zeros(&Layers::one(HIDDEN));
            g.bench_with_input(BenchmarkId::new(kind.name(), rows), &(x, y), |b, (x, y)| {
                b.iter(|| black_box(engine.accumulate(&model, x, y, &mut grads)))
            });
        }
    }
    g.finish();

    let mut g = configure(c, "train_step");
    for &rows in &LADDER {
        let (x, y) = common::head(&data, rows);
        g.throughput(Throughput::Elements(rows as u64));
        for kind in ENGINES {
            let engine: Box<dyn Engine> = kind.build();
            let mut m = model.clone();
            let mut opt = Optimizer::new(OptimizerKind::Sgd, 0.1, 0.0, &Layers::one(HIDDEN));
            let mut shards = ShardBuffers::default();
            let mut grads = Mlp::zeros(&Layers::one(HIDDEN));
            g.bench_with_input(BenchmarkId::new(kind.name(), rows), &(x, y), |b, (x, y)| {
                b.iter(|| {
                    let stats = shards.mean_gradients(engine.as_ref(), &m, x, y, None, &mut grads);
                    opt.step(&mut m, &grads);
                    black_box(stats)
                })
            });
        }
        let engine = EngineKind::Sparse.build();
        let prepared = shard::prepare(engine.as_ref(), x, &Layers::one(HIDDEN))
            .expect("the sparse engine prepares rows");
        let mut m = model.clone();
        let mut opt = Optimizer::new(OptimizerKind::Sgd, 0.1, 0.0, &Layers::one(HIDDEN));
        let mut shards = ShardBuffers::default();
        let mut grads = Mlp::zeros(&Layers::one(HIDDEN));
        g.bench_with_input(BenchmarkId::new(PREPARED, rows), &(x, y), |b, (x, y)| {
            b.iter(|| {
                let stats =
                    shards.mean_gradients(engine.as_ref(), &m, x, y, Some(&prepared), &mut grads);
                opt.step(&mut m, &grads);
                black_box(stats)
            })
        });
    }
    g.finish();

    let mut g = configure(c, "depth");
    let (x, y) = common::head(&data, DEPTH_ROWS);
    g.throughput(Throughput::Elements(DEPTH_ROWS as u64));
    for shape in DEPTHS {
        let layers = Layers::parse(shape).expect("a valid shape");
        let model = Mlp::init(&layers, Init::He, 0).unwrap();
        for kind in ENGINES {
            let engine = kind.build();
            let mut grads = Mlp::zeros(&layers);
            g.bench_with_input(
                BenchmarkId::new(kind.name(), shape),
                &(x, y),
                |b, (x, y)| b.iter(|| black_box(engine.accumulate(&model, x, y, &mut grads))),
            );
        }
    }
    g.finish();
}

/// The `train_step` entry for prepared sparse rows.
const PREPARED: &str = "sparse_prepared";

criterion_group!(benches, engines);

/// Criterion's mean estimate (ns) of one benchmark from its saved results,
/// if that benchmark ran in this invocation or an earlier one.
fn mean_ns(dir: &Path, group: &str, engine: &str, rung: impl ToString) -> Option<f64> {
    let file = dir
        .join(group)
        .join(engine)
        .join(rung.to_string())
        .join("new/estimates.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(file).ok()?).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

/// After the runs: one table per group, engines side by side per rung, with
/// the ratios the README quotes (from this invocation's numbers).
fn print_summary() {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("criterion");
    let per_row = |ns: Option<f64>, rows: usize| match ns {
        Some(ns) => format!("{:>10.1}", ns / rows as f64),
        None => format!("{:>10}", "-"),
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:>9.1}x", a / b),
        _ => format!("{:>10}", "-"),
    };
    for group in ["forward", "forward_backward", "train_step"] {
        println!("\n{group}: ns per row (mean), and speed-ups");
        println!(
            "{:>6} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "rows", "naive", "blas", "sparse", "blas/naive", "sparse/blas"
        );
        for &rows in &LADDER {
            let [n, b, s] = ENGINES.map(|e| mean_ns(&dir, group, e.name(), rows));
            println!(
                "{rows:>6} {} {} {} {} {}",
                per_row(n, rows),
                per_row(b, rows),
                per_row(s, rows),
                ratio(n, b),
                ratio(b, s)
            );
        }
    }
    println!("\ndepth: forward_backward on {DEPTH_ROWS} rows, ns per row (mean), and speed-ups");
    println!(
        "{:>14} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "784-...-10", "naive", "blas", "sparse", "blas/naive", "sparse/blas"
    );
    for shape in DEPTHS {
        let [n, b, s] = ENGINES.map(|e| mean_ns(&dir, "depth", e.name(), shape));
        println!(
            "{shape:>14} {} {} {} {} {}",
            per_row(n, DEPTH_ROWS),
            per_row(b, DEPTH_ROWS),
            per_row(s, DEPTH_ROWS),
            ratio(n, b),
            ratio(b, s)
        );
    }
    println!("\ntrain_step, sparse with the rows prepared once (full-batch training)");
    println!("{:>6} {:>10} {:>10}", "rows", "prepared", "blas/prep");
    for &rows in &LADDER {
        let p = mean_ns(&dir, "train_step", PREPARED, rows);
        let b = mean_ns(&dir, "train_step", EngineKind::Blas.name(), rows);
        println!("{rows:>6} {} {}", per_row(p, rows), ratio(b, p));
    }
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    print_summary();
}
