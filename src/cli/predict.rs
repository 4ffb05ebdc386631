//! `mnist-blas predict`: label every row of a file, write a Kaggle submission
//! (and, on request, each image's class probabilities).

use super::{check_exists, check_outputs, scoring_engine, thread_pool};
use crate::data::{self, Expect, CLASSES};
use crate::engine::{argmax, EngineKind};
use crate::metrics::probabilities;
use crate::model::Mlp;
use crate::output::write_atomic;
use anyhow::Result;
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  \
    mnist-blas predict --data test.csv     # runs/latest's model -> submission.csv\n  \
    mnist-blas predict --model runs/first --data test.csv --out submission.csv\n  \
    mnist-blas predict --data t10k-images-idx3-ubyte.gz --out t10k-predictions.csv\n  \
    mnist-blas predict --data test.csv --out probs.csv --probabilities --top-k 3\n  \
    mnist-blas predict --image seven.jpg photos/   # File,Label per picture\n  \
    mnist-blas predict --image photos/ --preview seen/ --top-k 2 --out labels.csv\n\n\
    The submission is Kaggle's format: a header `ImageId,Label`, then one row per \
    image, ImageId counting from 1 in file order. Label is the most probable class \
    (the lower digit on a tie).\n\n\
    --probabilities adds columns p0..p9 after Label: the model's softmax probability \
    of each digit, 6 decimals. --top-k K adds top1,p_top1,...,topK,p_topK: the K most \
    probable digits, most probable first (the lower digit first on a tie), each with \
    its probability; top1 is Label. The two may be combined (p0..p9 come first). \
    Kaggle accepts only the two columns: submit a file written without these flags.\n\n\
    --image takes pictures of single digits (PNG, JPEG, GIF, BMP, WebP; any size, colour \
    or grey, dark ink on light paper or light on dark) and brings each to MNIST's form: \
    cropped to the ink, the longer side scaled to 20 pixels, centred by its centre of \
    mass in 28x28. A directory stands for its image files (by extension: .png .jpg \
    .jpeg .gif .bmp .webp), sorted by name; other entries are skipped and counted. The \
    table is `File,Label` (plus the columns above), one row per picture read. A picture \
    that cannot be read or shows no digit is reported on one line and left out: the \
    others are still predicted and written, and the exit status is 1.")]
pub struct PredictArgs {
    /// Model written by `train`: a .npz file, or a run folder (its model.npz).
    #[arg(long, value_name = "PATH", default_value = super::runs::LATEST_MODEL)]
    pub model: PathBuf,
    /// Images to label: Kaggle test.csv (or train.csv), plain or .gz, or MNIST IDX images.
    #[arg(
        long,
        value_name = "PATH",
        required_unless_present = "image",
        conflicts_with = "image"
    )]
    pub data: Option<PathBuf>,
    /// Pictures of single digits to label, or directories of them (see below).
    #[arg(long, value_name = "PATH", num_args = 1..)]
    pub image: Vec<PathBuf>,
    /// Where to write the labels [default: submission.csv; with --image, standard output].
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// With --image: write the 28x28 each picture became, as the model saw
    /// it, to DIR/NAME.png (NAME: the picture's name without its extension).
    #[arg(long, value_name = "DIR", requires = "image")]
    pub preview: Option<PathBuf>,
    /// Also write columns p0..p9: each digit's probability (not for Kaggle).
    #[arg(long)]
    pub probabilities: bool,
    /// Also write the K most probable digits and their probabilities,
    /// columns top1,p_top1,...,topK,p_topK (1 to 10; not for Kaggle).
    #[arg(long, value_name = "K", value_parser = parse_top_k, allow_negative_numbers = true)]
    pub top_k: Option<usize>,
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

/// `--out` when it is not given, for `--data`.
const SUBMISSION: &str = "submission.csv";

/// `--top-k`: a count of classes, 1 to [`CLASSES`].
fn parse_top_k(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(k) if (1..=CLASSES).contains(&k) => Ok(k),
        _ => Err(format!(
            "expected a whole number from 1 to {CLASSES} (the number of classes)"
        )),
    }
}

pub fn run(args: PredictArgs) -> Result<()> {
    let args = PredictArgs {
        model: super::runs::model_path(&args.model)?,
        ..args
    };
    check_exists(&args.model, "--model")?;
    let Some(data) = args.data.clone() else {
        return super::predict_images::run(&args);
    };
    let out = args.out.clone().unwrap_or_else(|| SUBMISSION.into());
    check_exists(&data, "--data")?;
    check_outputs(&[&args.model, &data], &[("--out", out.as_path())])?;
    let model = Mlp::load_npz(&args.model)?;
    let pool = thread_pool(args.threads)?;
    pool.install(|| {
        let set = data::load(&data, Expect::Unlabeled)?;
        let engine = scoring_engine(args.engine, &model, &set.pixels)?;
        let probs = probabilities(engine.as_ref(), &model, &set);
        let mut unsure = 0;
        write_atomic(&out, |w| {
            let ids = (1..=set.len()).map(|i| i.to_string());
            unsure = write_table(w, "ImageId", ids, &probs, &args)?;
            Ok(())
        })?;
        if !args.quiet {
            outln!(
                "predicted {} of {} with {}; wrote {}",
                crate::text::plural(set.len(), "image"),
                data.display(),
                args.model.display(),
                out.display()
            );
            if unsure == 0 {
                outln!("no prediction below 50% confidence");
            } else {
                outln!(
                    "{} of {} predictions below 50% confidence{}",
                    crate::text::thousands(unsure),
                    crate::text::thousands(set.len()),
                    if args.probabilities {
                        ""
                    } else {
                        "; see --probabilities"
                    }
                );
            }
        }
        Ok(())
    })
}

/// Writes the table: a header (`key`, Label, then the columns `args`
/// asks for), then one row per row of `probs`, its first field from
/// `keys` (written as given: the caller quotes it if it must). Returns how
/// many predictions are below 50% confidence.
pub(super) fn write_table(
    w: &mut impl Write,
    key: &str,
    keys: impl Iterator<Item = String>,
    probs: &ndarray::Array2<f32>,
    args: &PredictArgs,
) -> std::io::Result<usize> {
    let top_k = args.top_k.unwrap_or(0);
    let mut unsure = 0;
    write!(w, "{key},Label")?;
    if args.probabilities {
        for c in 0..CLASSES {
            write!(w, ",p{c}")?;
        }
    }
    for r in 1..=top_k {
        write!(w, ",top{r},p_top{r}")?;
    }
    writeln!(w)?;
    for (row, id) in probs.rows().into_iter().zip(keys) {
        let row = row.as_slice().expect("standard layout");
        let label = argmax(row);
        unsure += (row[label] < 0.5) as usize;
        write!(w, "{id},{label}")?;
        if args.probabilities {
            for p in row {
                write!(w, ",{p:.6}")?;
            }
        }
        for &c in &ranked(row)[..top_k] {
            write!(w, ",{c},{:.6}", row[c])?;
        }
        writeln!(w)?;
    }
    Ok(unsure)
}

/// The classes from most to least probable. Each rank takes the most
/// probable class left, the lower one on a tie, by the same comparison as
/// [`argmax`]: the first is always the row's label.
fn ranked(p: &[f32]) -> [usize; CLASSES] {
    let mut order = [0; CLASSES];
    let mut taken = [false; CLASSES];
    for slot in order.iter_mut() {
        let mut best = None;
        for c in (0..CLASSES).filter(|&c| !taken[c]) {
            if best.is_none_or(|b: usize| p[c] > p[b]) {
                best = Some(c);
            }
        }
        let best = best.expect("a class is left for every rank");
        taken[best] = true;
        *slot = best;
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranked_orders_by_probability_and_breaks_ties_by_the_lower_class() {
        let p = [0.1, 0.3, 0.0, 0.3, 0.05, 0.05, 0.1, 0.0, 0.1, 0.0];
        assert_eq!(ranked(&p), [1, 3, 0, 6, 8, 4, 5, 2, 7, 9]);
        assert_eq!(ranked(&p)[0], argmax(&p));
        // All equal: the classes in order, as argmax picks class 0.
        assert_eq!(ranked(&[0.1; CLASSES]), std::array::from_fn(|c| c));
    }

    #[test]
    fn top_k_takes_1_to_10_only() {
        assert_eq!(parse_top_k("1"), Ok(1));
        assert_eq!(parse_top_k("10"), Ok(10));
        for bad in ["0", "11", "-1", "three", ""] {
            let err = parse_top_k(bad).unwrap_err();
            assert!(err.contains("from 1 to 10"), "{err}");
        }
    }
}
