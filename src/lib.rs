//! mnist-blas: train small dense networks (784 -> H -> 10) on MNIST-style
//! data, fast (OpenBLAS, rayon) and checked against a plain reference.
//!
//! Where things are:
//! - [`data`]: reading Kaggle CSV and MNIST IDX files into a [`data::Dataset`];
//! - [`model`]: the network [`model::Mlp`], its init and its `.npz` file;
//!   [`npz`]: reading `.npz` files with every size bounded by the file;
//! - [`engine`]: forward/backward arithmetic, `blas` (fast) and `naive` (oracle);
//! - [`train`]: the training loop, optimizers, and batch sharding;
//! - [`metrics`]: accuracy, loss, confusion matrix;
//! - [`sweep`]: hyperparameter sweeps (grid, random search, results, plot);
//! - [`plot`]: PNG pictures (learning curves, confusion, errors, weights);
//! - [`output`]: atomic file writes; [`checkpoint`]: save and resume a run;
//!   [`cli`]: the command line.

pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod engine;
pub mod metrics;
pub mod model;
pub mod npz;
pub mod optim;
pub mod output;
pub(crate) mod plot;
pub mod rng;
pub(crate) mod simd;
pub mod sweep;
/// Test data shared by unit tests, integration tests and benches (which
/// include this file by path).
#[cfg(test)]
mod testutil;
pub mod threads;
pub mod train;

// With `--features blas`, make sure OpenBLAS is linked into every binary
// that uses this library (ndarray only references the cblas symbols).
#[cfg(feature = "blas")]
extern crate blas_src;
