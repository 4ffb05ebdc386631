//! `MNIST_BLAS_SIMD`: a way to run the AVX2 and baseline paths on a machine
//! that has more, with the same numbers (our loops do the same IEEE
//! operations at every width), and one clear line for a value it cannot use.

use crate::common::*;
use std::path::Path;
use std::process::Output;

fn train_with(dir: &Path, simd: Option<&str>, model: &str) -> Output {
    let mut cmd = bin();
    cmd.current_dir(dir).args([
        "--engine",
        "sparse",
        "--epochs",
        "2",
        "--hidden",
        "32",
        "-q",
        "--json",
        "--model",
        model,
        "--metrics",
        "m.csv",
    ]);
    match simd {
        Some(level) => cmd.env("MNIST_BLAS_SIMD", level),
        None => cmd.env_remove("MNIST_BLAS_SIMD"),
    };
    cmd.output().unwrap()
}

#[test]
fn every_simd_level_gives_the_same_bits_and_a_bad_value_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = train_with(d, None, "native.npz");
    assert!(o.status.success(), "{}", stderr(&o));
    let native = model_bits(&d.join("native.npz"));
    // The sparse engine's loops at each level this CPU has (baseline always).
    for level in ["avx2", "avx512", "baseline"] {
        let o = train_with(d, Some(level), "forced.npz");
        if !o.status.success() {
            // A level above this CPU's is refused by name, and only that.
            let err = stderr(&o);
            assert!(
                level != "baseline" && err.contains("this CPU has at most"),
                "{level}: {err}"
            );
            continue;
        }
        let forced = model_bits(&d.join("forced.npz"));
        assert!(
            forced == native,
            "MNIST_BLAS_SIMD={level} changed the weights"
        );
    }
    let o = train_with(d, Some("avx9"), "bad.npz");
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(
        err.trim(),
        "error: MNIST_BLAS_SIMD=avx9: expected avx512, avx2 or baseline"
    );
    assert!(!d.join("bad.npz").exists());
}

/// `--init orthogonal` runs LAPACK's QR: the blas build trains with it, the
/// pure-Rust build refuses it in one line before reading any data.
#[test]
fn orthogonal_init_needs_the_blas_build() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--init",
        "orthogonal",
        "--layers",
        "16-8",
        "--epochs",
        "1",
        "-q",
        "--model",
        "o.npz",
        "--metrics",
        "o.csv",
    ];
    let o = run_in(dir.path(), &args);
    if cfg!(feature = "blas") {
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(dir.path().join("o.npz").exists());
    } else {
        assert_eq!(o.status.code(), Some(1));
        assert_eq!(
            stderr(&o).trim(),
            "error: --init orthogonal needs LAPACK, which this build lacks: build with \
             --features blas (cargo run --release --features blas)"
        );
        assert!(!dir.path().join("o.npz").exists());
    }
}
