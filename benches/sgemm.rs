//! The ceiling: what the linear-algebra backend itself does, on a square
//! product and on the notebook's two big products, with nothing of ours
//! around it. Throughput "elements" here are floating-point operations
//! (2*M*N*K per product), so Melem/s reads as MFLOP/s.
//!
//! `notebook_forward` is `X (8400x784) . W1^T (784x10)` and
//! `notebook_dw1` is `dZ1^T (10x8400) . X (8400x784)`: one full-batch
//! notebook iteration is one of each (plus tiny second-layer products).
//! Run with both thread counts of OpenBLAS (1 and the core count).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mnist_blas::blas_threads::set_openblas_threads;
use ndarray::linalg::general_mat_mul;
use ndarray::Array2;
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
        let mut c2 = Array2::<f32>::zeros((2048, 2048));
        g.throughput(Throughput::Elements(2 * 2048 * 2048 * 2048));
        g.bench_function(BenchmarkId::new("square_2048", format!("{t}t")), |b| {
            b.iter(|| general_mat_mul(1.0, &big_a, &big_b, 0.0, black_box(&mut c2)))
        });
    }
    g.finish();
}

criterion_group!(benches, sgemm);
criterion_main!(benches);
