//! `mnist-blas eval`: accuracy, per-class precision/recall/F1, confusion matrix.

use super::{check_exists, thread_pool};
use crate::data::{self, Expect, CLASSES};
use crate::engine::EngineKind;
use crate::metrics::{evaluate, ClassReport};
use crate::model::Mlp;
use anyhow::{bail, Result};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Example:\n  mnist-blas eval --model model.npz --data ../shared/data/mnist-idx/t10k-images-idx3-ubyte.gz"
)]
pub struct EvalArgs {
    /// Model written by `train`.
    #[arg(long, value_name = "PATH", default_value = "model.npz")]
    pub model: PathBuf,
    /// Labeled images: Kaggle train.csv, plain or .gz, or MNIST IDX images + labels.
    #[arg(long, value_name = "PATH")]
    pub data: PathBuf,
    #[arg(long, value_enum, default_value_t = EngineKind::Blas)]
    pub engine: EngineKind,
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// End stdout with one JSON line (accuracy, loss, per-class report, confusion).
    #[arg(long)]
    pub json: bool,
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(serde::Serialize)]
struct EvalSummary {
    command: &'static str,
    data: PathBuf,
    model: PathBuf,
    rows: usize,
    accuracy: f64,
    loss: f64,
    correct: usize,
    per_class: Vec<ClassReport>,
    confusion: [[usize; CLASSES]; CLASSES],
    hidden: usize,
    engine: EngineKind,
    seconds: f64,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let started = Instant::now();
    check_exists(&args.model, "--model")?;
    check_exists(&args.data, "--data")?;
    let model = Mlp::load_npz(&args.model)?;
    let pool = thread_pool(args.threads)?;
    pool.install(|| {
        let set = data::load(&args.data, Expect::Labeled)?;
        if set.labels.is_none() {
            bail!(
                "{}: has no labels, so there is nothing to score against",
                args.data.display()
            );
        }
        let eval = evaluate(args.engine.build().as_ref(), &model, &set);
        let per_class = eval.per_class();
        if !args.quiet {
            println!(
                "{}: accuracy {:.4} ({} / {}), loss {:.4}",
                args.data.display(),
                eval.stats.accuracy(),
                eval.stats.correct,
                eval.stats.rows,
                eval.stats.mean_loss()
            );
            println!("\nclass  precision  recall     f1  support");
            for c in &per_class {
                println!(
                    "{:>5}  {:>9.4}  {:>6.4}  {:>5.4}  {:>7}",
                    c.class, c.precision, c.recall, c.f1, c.support
                );
            }
            println!("\nconfusion (rows: true label, columns: predicted)");
            print!("     ");
            for p in 0..CLASSES {
                print!("{p:>6}");
            }
            println!();
            for (t, row) in eval.confusion.iter().enumerate() {
                print!("{t:>5}");
                for n in row {
                    print!("{n:>6}");
                }
                println!();
            }
        }
        if args.json {
            let s = EvalSummary {
                command: "eval",
                data: args.data.clone(),
                model: args.model.clone(),
                rows: eval.stats.rows,
                accuracy: eval.stats.accuracy(),
                loss: eval.stats.mean_loss(),
                correct: eval.stats.correct,
                per_class,
                confusion: eval.confusion,
                hidden: model.hidden(),
                engine: args.engine,
                seconds: started.elapsed().as_secs_f64(),
            };
            println!("{}", serde_json::to_string(&s)?);
        }
        Ok(())
    })
}
