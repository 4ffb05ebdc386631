//! `mnist-blas predict`: label every row of a file, write a Kaggle submission.

use super::{check_exists, check_outputs, scoring_engine, thread_pool};
use crate::data::{self, Expect};
use crate::engine::EngineKind;
use crate::metrics::evaluate;
use crate::model::Mlp;
use crate::output::write_atomic;
use anyhow::Result;
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  \
    mnist-blas predict --data test.csv.gz                  # model.npz -> submission.csv\n  \
    mnist-blas predict --model m.npz --data test.csv --out sub.csv\n  \
    mnist-blas predict --data t10k-images-idx3-ubyte.gz --out t10k-predictions.csv\n\n\
    The submission is Kaggle's format: a header `ImageId,Label`, then one row per image,\n\
    ImageId counting from 1 in file order.")]
pub struct PredictArgs {
    /// Model written by `train`.
    #[arg(long, value_name = "PATH", default_value = "model.npz")]
    pub model: PathBuf,
    /// Images to label: Kaggle test.csv (or train.csv), plain or .gz, or MNIST IDX images.
    #[arg(long, value_name = "PATH")]
    pub data: PathBuf,
    /// Submission to write: `ImageId,Label`, ImageId from 1.
    #[arg(long, value_name = "PATH", default_value = "submission.csv")]
    pub out: PathBuf,
    /// Arithmetic engine.
    #[arg(long, value_enum, default_value_t = EngineKind::Auto)]
    pub engine: EngineKind,
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Print nothing but errors.
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn run(args: PredictArgs) -> Result<()> {
    check_exists(&args.model, "--model")?;
    check_exists(&args.data, "--data")?;
    check_outputs(&[&args.model, &args.data], &[("--out", args.out.as_path())])?;
    let model = Mlp::load_npz(&args.model)?;
    let pool = thread_pool(args.threads)?;
    pool.install(|| {
        let set = data::load(&args.data, Expect::Unlabeled)?;
        let engine = scoring_engine(args.engine, &model, &set.pixels)?;
        let eval = evaluate(engine.as_ref(), &model, &set);
        write_atomic(&args.out, |w| {
            writeln!(w, "ImageId,Label")?;
            for (i, p) in eval.predictions.iter().enumerate() {
                writeln!(w, "{},{}", i + 1, p)?;
            }
            Ok(())
        })?;
        if !args.quiet {
            outln!(
                "predicted {} images of {} with {}; wrote {}",
                set.len(),
                args.data.display(),
                args.model.display(),
                args.out.display()
            );
        }
        Ok(())
    })
}
