//! Proof that the `blas` build really hands the hot path's matrix products
//! to OpenBLAS. ndarray silently falls back to its own matmul when an
//! operand's layout is not BLAS-compatible, so we count: this test binary
//! defines `cblas_sgemm` itself, which the linker prefers over OpenBLAS's for
//! ndarray's calls, counts each call and forwards it to the real one.

#![cfg(feature = "blas")]

use mnist_blas::engine::SHARD_ROWS;
use mnist_blas::engine::{blas::BlasEngine, Engine};
use mnist_blas::model::{Init, Layers, Mlp};
use mnist_blas::optim::{Optimizer, OptimizerKind};
use mnist_blas::{data, rng};

#[path = "../src/testutil.rs"]
mod testutil;
use mnist_blas::train::shard::ShardBuffers;
use std::os::raw::c_int;
use std::sync::atomic::{AtomicUsize, Ordering};
use testutil::random_batch;

static SGEMM_CALLS: AtomicUsize = AtomicUsize::new(0);

type Sgemm = unsafe extern "C" fn(
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    f32,
    *const f32,
    c_int,
    *const f32,
    c_int,
    f32,
    *mut f32,
    c_int,
);

/// Counting stand-in for OpenBLAS's `cblas_sgemm`.
///
/// # Safety
/// Same contract as `cblas_sgemm`; arguments are forwarded unchanged.
#[no_mangle]
pub unsafe extern "C" fn cblas_sgemm(
    layout: c_int,
    transa: c_int,
    transb: c_int,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: f32,
    a: *const f32,
    lda: c_int,
    b: *const f32,
    ldb: c_int,
    beta: f32,
    c: *mut f32,
    ldc: c_int,
) {
    SGEMM_CALLS.fetch_add(1, Ordering::SeqCst);
    let real = libc::dlsym(libc::RTLD_NEXT, c"cblas_sgemm".as_ptr());
    assert!(
        !real.is_null(),
        "the real cblas_sgemm (OpenBLAS) is not loaded"
    );
    let real: Sgemm = std::mem::transmute(real);
    real(
        layout, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
    )
}

fn calls_during(f: impl FnOnce()) -> usize {
    let before = SGEMM_CALLS.load(Ordering::SeqCst);
    f();
    SGEMM_CALLS.load(Ordering::SeqCst) - before
}

// One test function: the counter is global, and tests in one binary run in
// parallel.
#[test]
fn every_hot_path_product_goes_to_cblas_sgemm() {
    // Calling into OpenBLAS directly also keeps the linker from dropping it
    // (with --as-needed) now that this binary defines cblas_sgemm itself.
    println!("{}", mnist_blas::threads::openblas_config());
    let m = Mlp::init(&Layers::one(10), Init::He, 1).unwrap();
    let engine = BlasEngine;

    // Forward: z1 = x w1^T, z2 = a1 w2^T, per block of SHARD_ROWS rows
    // (300 rows: two blocks).
    for rows in [1, 32, 300] {
        let (x, _) = random_batch(rows, 2);
        assert_eq!(
            calls_during(|| drop(engine.probabilities(&m, &x))),
            2 * rows.div_ceil(SHARD_ROWS),
            "forward, {rows} rows"
        );
    }

    // Forward + backward: also dw2 = dz2^T a1, da1 = dz2 w2, dw1 = dz1^T x.
    for rows in [1, 64, SHARD_ROWS] {
        let (x, y) = random_batch(rows, 3);
        let mut g = Mlp::zeros(&Layers::one(10));
        assert_eq!(
            calls_during(|| {
                engine.accumulate(&m, &x, &y, &mut g);
            }),
            5,
            "step, {rows} rows"
        );
    }

    // A sharded full batch: five products per shard, none lost to a fallback.
    let rows = 4 * SHARD_ROWS + 10;
    let (x, y) = random_batch(rows, 4);
    let mut g = Mlp::zeros(&Layers::one(10));
    let mut shards = ShardBuffers::default();
    let n = calls_during(|| {
        shards.mean_gradients(&engine, &m, &x, &y, None, &mut g);
    });
    assert_eq!(n, 5 * rows.div_ceil(SHARD_ROWS));

    // A wider hidden layer takes the same path.
    let wide = Mlp::init(&Layers::one(100), Init::He, 5).unwrap();
    let (x, y) = random_batch(50, 6);
    let mut g = Mlp::zeros(&Layers::one(100));
    assert_eq!(
        calls_during(|| {
            engine.accumulate(&wide, &x, &y, &mut g);
        }),
        5
    );

    // Deeper networks: every layer's products too. With L dense layers a
    // block of rows takes L forward products (zl = a(l-1) wl^T) and 2L - 1
    // backward ones (dwl and da(l-1) for l = L..2, then dw1), each counted
    // here only if it reached cblas_sgemm: one that fell back to ndarray's
    // own matmul would leave the count short. (ndarray keeps products whose
    // sides are all 7 or less for itself, by design; every product here has
    // a side of 8 or more.)
    for spec in ["16-8", "20-12-8"] {
        let layers = Layers::parse(spec).unwrap();
        let depth = layers.depth();
        let m = Mlp::init(&layers, Init::He, 7).unwrap();
        for rows in [1, 32, 300] {
            let (x, _) = random_batch(rows, 8);
            assert_eq!(
                calls_during(|| drop(engine.probabilities(&m, &x))),
                depth * rows.div_ceil(SHARD_ROWS),
                "forward, layers {layers}, {rows} rows"
            );
        }
        // 64 rows take dw1 directly, SHARD_ROWS rows as its transpose.
        for rows in [1, 64, SHARD_ROWS] {
            let (x, y) = random_batch(rows, 9);
            let mut g = Mlp::zeros(&layers);
            assert_eq!(
                calls_during(|| {
                    engine.accumulate(&m, &x, &y, &mut g);
                }),
                depth + (2 * depth - 1),
                "step, layers {layers}, {rows} rows"
            );
        }
        let rows = 2 * SHARD_ROWS + 10;
        let (x, y) = random_batch(rows, 10);
        let mut g = Mlp::zeros(&layers);
        let mut shards = ShardBuffers::default();
        let n = calls_during(|| {
            shards.mean_gradients(&engine, &m, &x, &y, None, &mut g);
        });
        assert_eq!(
            n,
            (3 * depth - 1) * rows.div_ceil(SHARD_ROWS),
            "sharded full batch, layers {layers}"
        );
    }

    // A wide first layer is cut into pieces of hidden units, each piece's
    // products a product of its own, on column and row slices of the
    // arrays (strided views that ndarray could have kept for itself): one
    // call per piece forward (`z1`'s columns) and backward (`dw1`'s rows),
    // with the second layer's three as before.
    for (hidden, pieces) in [(384, 2), (1024, 4)] {
        assert_eq!(mnist_blas::engine::BLAS_PIECES.count(hidden), pieces);
        let layers = Layers::one(hidden);
        let m = Mlp::init(&layers, Init::He, 11).unwrap();
        for rows in [1, 128, SHARD_ROWS] {
            let (x, y) = random_batch(rows, 12);
            assert_eq!(
                calls_during(|| drop(engine.probabilities(&m, &x))),
                pieces + 1,
                "forward, {hidden} hidden units, {rows} rows"
            );
            let mut g = Mlp::zeros(&layers);
            assert_eq!(
                calls_during(|| {
                    engine.accumulate(&m, &x, &y, &mut g);
                }),
                2 * pieces + 3,
                "step, {hidden} hidden units, {rows} rows"
            );
        }
    }

    // The resident trainer (batches of one shard, the first layer in
    // pieces) makes the same products, and a step told the next step's rows
    // also takes their first layer's pieces, which that step then skips.
    for (hidden, pieces) in [(512, 2), (1024, 4)] {
        let layers = Layers::one(hidden);
        let m = Mlp::init(&layers, Init::He, 13).unwrap();
        let (x, y) = random_batch(300, 14);
        let mut opt = Optimizer::new(OptimizerKind::Adam, 1e-3, 0.9, &layers);
        let mut trainer = engine
            .resident(&x, &y, 100, &m, &opt)
            .expect("a resident trainer");
        let rule = opt.next_rule();
        let batch = |k: usize| (k * 100..(k + 1) * 100).collect::<Vec<usize>>();
        trainer.upcoming(&batch(1));
        for (k, products) in [(0, 3 * pieces + 3), (1, pieces + 3), (2, 2 * pieces + 3)] {
            assert_eq!(
                calls_during(|| assert!(trainer.step(&batch(k), &rule).finite)),
                products,
                "resident step {k}, {hidden} hidden units"
            );
        }
    }
}
