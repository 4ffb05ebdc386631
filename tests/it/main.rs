//! The integration tests, one binary: each module tests one part through
//! the library or the real `mnist-blas` binary. (The BLAS call counter is
//! its own binary, `tests/blas_calls.rs`: it replaces `cblas_sgemm` for the
//! whole process and counts calls, which tests running beside it in one
//! binary would disturb.)
//!
//! The full-data acceptance checks are ignored by default:
//! `cargo test --release --features blas --test it -- --ignored acceptance`.

// `src/testutil.rs` names the library's modules through `super::`.
use mnist_blas::{data, rng};

#[path = "../../src/testutil.rs"]
mod testutil;
#[path = "../../src/npz/zip_builder.rs"]
mod zip_builder;

mod common;

mod acceptance;
mod augment;
mod bad_input;
mod browser;
mod checkpoint;
mod cli;
mod data_csv;
mod data_idx;
mod determinism;
mod early_stop;
mod engines;
mod experience;
mod export;
mod fuzz_regressions;
mod help;
mod images;
mod inspect_units;
mod lockstep;
mod npz_hostile;
mod numpy_deep;
mod numpy_fixture;
mod onnx;
mod optuna;
mod output;
mod outputs_checked;
mod predict_columns;
mod readme_tour;
mod runs;
mod serve;
mod simd_level;
mod slurm;
mod sparse;
mod split_val;
mod sweep;
mod sweep_safety;
