//! The command line: argument definitions and dispatch. Each subcommand's
//! work lives in its own file; `main.rs` only turns errors into exit codes.

/// `println!` that stops quietly when stdout is gone (`mnist-blas train |
/// head -3`): the run carries on and writes its files.
macro_rules! outln {
    () => {
        $crate::cli::console::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::console::line(format_args!($($arg)*))
    };
}

mod augment_preview;
mod console;
mod eval;
mod export;
mod inspect;
mod metrics_log;
mod predict;
mod predict_images;
mod progress;
mod report;
mod runs;
mod serve;
mod signals;
mod sweep;
mod train;

pub use signals::{exit_code as interrupted_exit_code, Interrupted};
pub use sweep::SweepArgs;

use crate::train::TrainArgs;
use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::ffi::OsString;
use std::path::Path;

#[derive(Debug, Parser)]
#[command(
    name = "mnist-blas",
    version,
    about = "Train dense networks (784-h1-...-hk-10) on MNIST-style data, fast, on OpenBLAS",
    long_about = "Train dense networks (784-h1-...-hk-10) on MNIST-style data (Kaggle \
                  digit-recognizer CSV or MNIST IDX files), fast, on OpenBLAS.\n\nWith no subcommand, `train` runs.",
    args_conflicts_with_subcommands = true,
    // Help and examples read at 80 columns, in a wider terminal or piped too.
    max_term_width = 80,
    after_help = "Examples:\n  \
        mnist-blas                    # train on data/train.csv or the built-in sample\n  \
        mnist-blas --preset notebook --data train.csv\n  \
        mnist-blas --data train.csv --layers 256-128 --epochs 15\n  \
        mnist-blas predict --model model.npz --data test.csv --out submission.csv\n  \
        mnist-blas eval --model model.npz --data t10k-images-idx3-ubyte.gz \\\n      \
            --plot confusion.png\n  \
        mnist-blas inspect --model model.npz --out weights.png\n  \
        mnist-blas export --model model.npz --out model.onnx\n  \
        mnist-blas serve --model model.npz  # draw digits at http://127.0.0.1:8080/\n\n\
        Each subcommand has its own --help with examples."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train a model (the default) and write it, its metrics and a summary.
    #[command(after_help = train::EXAMPLES)]
    Train(Box<TrainArgs>),
    /// Predict labels for a CSV/IDX file (a Kaggle submission) or for pictures of digits.
    Predict(predict::PredictArgs),
    /// Score a model on a labeled file: accuracy, per-class report, confusion.
    Eval(eval::EvalArgs),
    /// Show what a model learned: its hidden units' input weights as 28x28 images.
    Inspect(inspect::InspectArgs),
    /// Run a grid or random search of `train` configurations in parallel.
    Sweep(Box<sweep::SweepArgs>),
    /// Write a model as ONNX (for onnxruntime) or safetensors.
    Export(export::ExportArgs),
    /// Draw one image's `--augment` distortions as a grid (docs/img/augment.png).
    #[command(hide = true)]
    AugmentPreview(augment_preview::AugmentPreviewArgs),
    /// Serve a page to draw digits on and a JSON API, over HTTP.
    Serve(serve::ServeArgs),
}

/// Parse the command line and run; the error, if any, is for `main` to print.
pub fn run() -> Result<()> {
    // Before any thread or BLAS call (it may set an environment variable).
    crate::threads::select_openblas_kernel()?;
    crate::threads::stop_openblas_workers();
    let command = crate::train::args::snake_case_aliases(Cli::command());
    let cli = Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit());
    match cli.command {
        None => train::run(cli.train, &train_flags()),
        Some(Command::Train(args)) => train::run(*args, &train_flags()),
        Some(Command::Predict(args)) => predict::run(args),
        Some(Command::Eval(args)) => eval::run(args),
        Some(Command::Inspect(args)) => inspect::run(args),
        Some(Command::Sweep(args)) => sweep::run(*args),
        Some(Command::Export(args)) => export::run(args),
        Some(Command::AugmentPreview(args)) => augment_preview::run(args),
        Some(Command::Serve(args)) => serve::run(args),
    }
}

/// `train`'s flags as typed: the command line without the program name
/// and a leading `train`.
fn train_flags() -> Vec<OsString> {
    let mut flags: Vec<OsString> = std::env::args_os().skip(1).collect();
    if flags.first().is_some_and(|f| f == "train") {
        flags.remove(0);
    }
    flags
}

/// A rayon pool of `threads` threads (0: one per core); see [`crate::threads::pool`].
pub(crate) fn thread_pool(threads: usize) -> Result<rayon::ThreadPool> {
    crate::threads::pool(threads).context("cannot start the thread pool")
}

/// The engine to score `model` on rows `pixels` with: `kind`, or what
/// `auto` picks; for OpenBLAS, after checking its buffers fit.
pub(crate) fn scoring_engine(
    kind: crate::engine::EngineKind,
    model: &crate::model::Mlp,
    pixels: &[u8],
) -> Result<Box<dyn crate::engine::Engine>> {
    let kind = crate::engine::choice::resolve(kind, &model.shape(), pixels).kind;
    if kind == crate::engine::EngineKind::Blas {
        crate::threads::check_blas_memory(rayon::current_num_threads())?;
    }
    Ok(kind.build())
}

/// Before any work starts: no output is an input or another output, and
/// every output can be written (its directory exists and takes files).
pub(crate) fn check_outputs(inputs: &[&Path], outputs: &[(&str, &Path)]) -> Result<()> {
    crate::output::check_distinct(inputs, outputs)?;
    for (_, path) in outputs {
        crate::output::check_destination(path)?;
    }
    Ok(())
}

pub(crate) use crate::train::args::check_exists;
