//! mnist-blas: train small dense networks (784 -> H -> 10) on MNIST-style
//! data, fast (OpenBLAS, rayon) and checked against a plain reference.
//!
//! The layers, each naming only those below it:
//!
//! ```text
//! cli                     the command line: flags, printing, progress
//!  |-> sweep              many runs: plans, parallel workers, result files
//!  |-> serve              the draw-a-digit page and JSON API (-> model, engine, data)
//!  |-> train              a Plan from flags, the one `run`, the loops, checkpoints
//!       |-> engine        forward/backward: blas (fast), naive (oracle), sparse
//!       |-> optim         SGD, momentum, Adam: the update rules
//!       |-> model         the network Mlp, its init and its .npz file
//!       |-> metrics       accuracy, loss, confusion matrix
//!            |-> data     Kaggle CSV and MNIST IDX into a Dataset
//! leaves: rng, output (safe writes), npz (bounded reads), threads, simd, plot,
//!         text (counts in human output)
//! ```
//!
//! - [`data`]: reading Kaggle CSV and MNIST IDX files into a [`data::Dataset`];
//! - [`model`]: the network [`model::Mlp`], its init and its `.npz` file;
//!   [`npz`]: reading `.npz` files with every size bounded by the file;
//! - [`engine`]: forward/backward arithmetic behind one trait;
//!   [`optim`]: the update rules engines and trainer share;
//! - [`train`]: [`train::run`] and what it is made of, [`train::checkpoint`];
//! - [`sweep`]: hyperparameter sweeps (grid, random search, results, plot);
//! - [`serve`]: the draw-a-digit page and its JSON API over HTTP;
//! - [`output`]: every file written safely; [`threads`]: the rayon pool and
//!   OpenBLAS's threads; [`cli`]: the command line (the binary's only caller).

pub mod cli;
pub mod data;
pub mod engine;
pub mod linalg;
pub mod metrics;
pub mod model;
pub mod npz;
pub mod optim;
pub mod output;
pub(crate) mod plot;
pub mod rng;
pub mod serve;
pub(crate) mod simd;
pub mod sweep;
/// Test data shared by unit tests, integration tests and benches (which
/// include this file by path).
#[cfg(test)]
mod testutil;
pub(crate) mod text;
pub mod threads;
pub mod train;

// With `--features blas`, make sure OpenBLAS is linked into every binary
// that uses this library (ndarray only references the cblas symbols).
#[cfg(feature = "blas")]
extern crate blas_src;
