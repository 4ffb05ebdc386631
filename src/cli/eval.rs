//! `mnist-blas eval`: accuracy, per-class precision/recall/F1, confusion matrix.

use super::progress::{Display, Loading};
use super::{check_exists, check_outputs, scoring_engine, thread_pool};
use crate::data::{self, Dataset, Expect, CLASSES, FEATURES};
use crate::engine::{Engine, EngineKind};
use crate::metrics::{evaluate, ClassReport, Evaluation};
use crate::model::Mlp;
use crate::plot::{self, Misclassified};
use crate::text::{plural, thousands};
use anyhow::{bail, Result};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  \
    mnist-blas eval --data t10k-images-idx3-ubyte.gz\n  \
    mnist-blas eval --model model.npz --data train.csv --json | jq .accuracy\n  \
    mnist-blas eval --data t10k-images-idx3-ubyte.gz --plot confusion.png \\\n      \
        --errors-png errors.png\n  \
    mnist-blas eval --data train.csv --weights-png weights.png   # as `inspect`\n\n\
    Prints the accuracy and mean loss, per-class precision, recall, F1 and\n\
    support, and the confusion matrix (rows: true label, columns: predicted).")]
pub struct EvalArgs {
    /// Model written by `train`: a .npz file, or a run folder (its model.npz).
    #[arg(long, value_name = "PATH", default_value = super::runs::LATEST_MODEL)]
    pub model: PathBuf,
    /// Labeled images: Kaggle train.csv, plain or .gz, or MNIST IDX images
    /// (labels read from the file beside it).
    #[arg(long, value_name = "PATH")]
    pub data: PathBuf,
    /// Arithmetic engine.
    #[arg(long, value_enum, default_value_t = EngineKind::Auto)]
    pub engine: EngineKind,
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Write the confusion matrix as a heat map (PNG).
    #[arg(long, value_name = "PATH")]
    pub plot: Option<PathBuf>,
    /// Write a grid of the most confidently misclassified digits (PNG).
    #[arg(long, value_name = "PATH")]
    pub errors_png: Option<PathBuf>,
    /// How many digits the --errors-png grid shows.
    #[arg(long, value_name = "N", default_value_t = 40,
          value_parser = clap::value_parser!(u64).range(1..=400))]
    pub errors: u64,
    /// Write the hidden units' input weights as 28x28 images (PNG; as `inspect`).
    #[arg(long, value_name = "PATH")]
    pub weights_png: Option<PathBuf>,
    /// End stdout with one JSON line (accuracy, loss, per-class report, confusion).
    #[arg(long)]
    pub json: bool,
    /// Print nothing but errors (and the JSON line with --json).
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
    layers: crate::model::Layers,
    engine: EngineKind,
    seconds: f64,
    /// Pictures written (--plot, --errors-png, --weights-png).
    wrote: Vec<PathBuf>,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let started = Instant::now();
    let args = EvalArgs {
        model: super::runs::model_path(&args.model)?,
        ..args
    };
    check_exists(&args.model, "--model")?;
    check_exists(&args.data, "--data")?;
    let outputs: Vec<(&str, &std::path::Path)> = [
        ("--plot", &args.plot),
        ("--errors-png", &args.errors_png),
        ("--weights-png", &args.weights_png),
    ]
    .into_iter()
    .filter_map(|(flag, p)| p.as_deref().map(|p| (flag, p)))
    .collect();
    check_outputs(&[&args.model, &args.data], &outputs)?;
    let model = Mlp::load_npz(&args.model)?;
    let pool = thread_pool(args.threads)?;
    pool.install(|| {
        let loading = Loading::start(
            Display::detect(args.quiet),
            &args.data.display().to_string(),
        );
        let set = data::load(&args.data, Expect::Labeled)?;
        loading.finish();
        if set.labels.is_none() {
            bail!(
                "{}: has no labels, so there is nothing to score against",
                args.data.display()
            );
        }
        let engine = scoring_engine(args.engine, &model, &set.pixels)?;
        let eval = evaluate(engine.as_ref(), &model, &set);
        let per_class = eval.per_class();
        let wrote = draw(&args, engine.as_ref(), &model, &set, &eval)?;
        if !args.quiet {
            outln!("{}", report_text(&args, &model, &eval, &per_class, &wrote));
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
                layers: model.shape(),
                engine: args.engine,
                seconds: started.elapsed().as_secs_f64(),
                wrote,
            };
            outln!("{}", serde_json::to_string(&s)?);
        }
        Ok(())
    })
}

/// The pictures asked for; the paths written.
fn draw(
    args: &EvalArgs,
    engine: &dyn Engine,
    model: &Mlp,
    set: &Dataset,
    eval: &Evaluation,
) -> Result<Vec<PathBuf>> {
    let mut wrote = Vec::new();
    if let Some(path) = &args.plot {
        let title = format!(
            "{}: accuracy {:.4} on {}",
            file_name(&args.data),
            eval.stats.accuracy(),
            plural(eval.stats.rows, "image")
        );
        plot::confusion_heatmap(path, &eval.confusion, &title)?;
        wrote.push(path.clone());
    }
    if let Some(path) = &args.errors_png {
        let worst = most_confident_errors(engine, model, set, eval, args.errors as usize);
        let wrong = eval.stats.rows - eval.stats.correct;
        let title = format!(
            "{}: the {} most confident of {}",
            file_name(&args.data),
            thousands(worst.len()),
            plural(wrong, "error")
        );
        plot::worst_misclassified(path, &worst, &title)?;
        wrote.push(path.clone());
    }
    if let Some(path) = &args.weights_png {
        let ink = plot::ink_fraction(&set.pixels);
        plot::hidden_weights(path, model, &args.model.display().to_string(), Some(&ink))?;
        wrote.push(path.clone());
    }
    Ok(wrote)
}

/// The screen: the model scored, accuracy, per-class report, confusion
/// matrix, files written (no trailing newline).
fn report_text(
    args: &EvalArgs,
    model: &Mlp,
    eval: &Evaluation,
    per_class: &[ClassReport],
    wrote: &[PathBuf],
) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "model: {} ({})", args.model.display(), model.shape());
    let _ = writeln!(
        out,
        "{}: accuracy {:.4} ({} / {}), loss {:.4}",
        args.data.display(),
        eval.stats.accuracy(),
        thousands(eval.stats.correct),
        thousands(eval.stats.rows),
        eval.stats.mean_loss()
    );
    let _ = writeln!(out, "\nclass  precision  recall     f1  support");
    for c in per_class {
        let _ = writeln!(
            out,
            "{:>5}  {:>9.4}  {:>6.4}  {:>5.4}  {:>7}",
            c.class,
            c.precision,
            c.recall,
            c.f1,
            thousands(c.support)
        );
    }
    let mean =
        |f: fn(&ClassReport) -> f64| per_class.iter().map(f).sum::<f64>() / per_class.len() as f64;
    let _ = writeln!(
        out,
        "macro  {:>9.4}  {:>6.4}  {:>5.4}  {:>7}",
        mean(|c| c.precision),
        mean(|c| c.recall),
        mean(|c| c.f1),
        thousands(eval.stats.rows)
    );
    let _ = writeln!(out, "\nconfusion (rows: true label, columns: predicted)");
    // A space and five digits ("4,132") a column, wider if a count needs it.
    let largest = eval.confusion.iter().flatten().max().copied().unwrap_or(0);
    let w = thousands(largest).len().max(5) + 1;
    let _ = write!(out, "     ");
    for p in 0..CLASSES {
        let _ = write!(out, "{p:>w$}");
    }
    for (t, row) in eval.confusion.iter().enumerate() {
        let _ = write!(out, "\n{t:>5}");
        for &n in row {
            let _ = write!(out, "{:>w$}", thousands(n));
        }
    }
    if !wrote.is_empty() {
        let names: Vec<String> = wrote.iter().map(|p| p.display().to_string()).collect();
        let _ = write!(out, "\n\nwrote {}", names.join(", "));
    }
    out
}

/// The file name alone, for picture titles.
fn file_name(p: &std::path::Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// The `n` misclassified rows to which the model gave the highest
/// probability for its wrong answer (ties: earlier row first).
fn most_confident_errors(
    engine: &dyn Engine,
    model: &Mlp,
    set: &Dataset,
    eval: &Evaluation,
    n: usize,
) -> Vec<Misclassified> {
    let Some(labels) = set.labels.as_deref() else {
        return Vec::new();
    };
    let wrong: Vec<usize> = (0..set.len())
        .filter(|&i| eval.predictions[i] != labels[i])
        .collect();
    if wrong.is_empty() {
        return Vec::new();
    }
    let x: Vec<u8> = wrong.iter().flat_map(|&i| set.row(i)).copied().collect();
    debug_assert_eq!(x.len(), wrong.len() * FEATURES);
    let probs = engine.probabilities(model, &x);
    let mut scored: Vec<(f32, usize, usize)> = wrong
        .iter()
        .enumerate()
        .map(|(k, &i)| (probs[[k, eval.predictions[i] as usize]], k, i))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.2.cmp(&b.2)));
    scored
        .into_iter()
        .take(n)
        .map(|(confidence, _, i)| Misclassified {
            pixels: set.row(i).to_vec(),
            row: i,
            label: labels[i],
            predicted: eval.predictions[i],
            confidence,
        })
        .collect()
}
