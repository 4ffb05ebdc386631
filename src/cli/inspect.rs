//! `mnist-blas inspect`: what a model learned. Prints each hidden unit's
//! weight sizes and the digits it votes for and against, and draws its 784
//! input weights as a 28x28 image (the classic picture of a small MLP).

use super::progress::{Display, Loading};
use super::{check_exists, check_outputs};
use crate::data::{self, Expect};
use crate::model::Mlp;
use crate::plot::{hidden_weights, ink_fraction, MAX_UNITS_DRAWN};
use anyhow::Result;
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  \
    mnist-blas inspect                                   # model.npz -> weights.png\n  \
    mnist-blas inspect --model m.npz --out docs/img/weights.png\n  \
    mnist-blas inspect --data train.csv.gz               # grey out pixels (almost) never inked\n\n\
    Each tile is one hidden unit's input weights (a row of w1) as a 28x28 image: red where\n\
    ink raises the unit's activation, blue where it lowers it, full colour at the tile's\n\
    98th percentile of |w|. Under it, `for 7, against 2`: the unit's largest outgoing\n\
    weight (its column of w2) goes to digit 7, its most negative to digit 2. With --data,\n\
    pixels inked in fewer than 1% of the images are drawn grey and left out of the colour\n\
    scale (Adam gives such rarely-seen pixels large weights that would wash out the\n\
    picture). At most 100 units are drawn. stdout gets a table of the same per unit.")]
pub struct InspectArgs {
    /// Model written by `train`.
    #[arg(long, value_name = "PATH", default_value = "model.npz")]
    pub model: PathBuf,
    /// Images (any CSV/IDX file) whose ink decides which pixels are shown in colour.
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    /// Where to write the PNG of the hidden units' input weights.
    #[arg(long, value_name = "PATH", default_value = "weights.png")]
    pub out: PathBuf,
    /// Print nothing but errors.
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn run(args: InspectArgs) -> Result<()> {
    check_exists(&args.model, "--model")?;
    let mut inputs = vec![args.model.as_path()];
    inputs.extend(args.data.as_deref());
    check_outputs(&inputs, &[("--out", args.out.as_path())])?;
    let model = Mlp::load_npz(&args.model)?;
    let h = model.hidden();
    let ink = match &args.data {
        Some(path) => {
            check_exists(path, "--data")?;
            let loading = Loading::start(Display::detect(args.quiet), &path.display().to_string());
            let set = data::load(path, Expect::Unlabeled)?;
            loading.finish();
            Some(ink_fraction(&set.pixels))
        }
        None => None,
    };
    hidden_weights(
        &args.out,
        &model,
        &args.model.display().to_string(),
        ink.as_deref(),
    )?;
    if args.quiet {
        return Ok(());
    }
    outln!(
        "{}: {}, {} parameters",
        args.model.display(),
        model.shape(),
        model.len()
    );
    outln!("\nunit  |w1|     b1       votes for  against  |w2|");
    let votes = model.class_votes();
    for j in 0..h {
        let w = model.first().w.row(j);
        let out = votes.column(j);
        let norm = |v: ndarray::ArrayView1<f32>| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let arg = |better: fn(f32, f32) -> bool| {
            (0..out.len()).fold(0, |b, k| if better(out[k], out[b]) { k } else { b })
        };
        outln!(
            "{j:>4}  {:>6.3}  {:>7.3}  {:>9}  {:>7}  {:>5.3}",
            norm(w),
            model.first().b[j],
            arg(|a, b| a > b),
            arg(|a, b| a < b),
            norm(out)
        );
    }
    if h > MAX_UNITS_DRAWN {
        outln!("(the picture shows the first {MAX_UNITS_DRAWN} of {h} units)");
    }
    outln!("\nwrote {}", args.out.display());
    Ok(())
}
