//! `mnist-blas inspect`: what a model learned. Prints every layer's shape
//! and spectrum (singular values through LAPACK: the largest, and how many
//! directions the layer really uses), then each first-layer unit's weight
//! sizes and the digits it votes for and against, and draws its 784 input
//! weights as a 28x28 image (the classic picture of a small MLP).

use super::progress::{Display, Loading};
use super::{check_exists, check_outputs};
use crate::data::{self, Expect};
use crate::linalg;
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
    picture). At most 100 units are drawn. stdout gets a table of every layer (shape,\n\
    Frobenius norm, largest singular value, effective and stable rank: how many directions\n\
    the layer really uses) and the first 20 units' sizes and votes. In deeper networks a\n\
    unit's votes go through the later layers' product, ReLUs left out.")]
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
    outln!("{}", layer_table(&model));
    let shown = h.min(UNITS_LISTED);
    let votes = model.class_votes();
    outln!("\nunit  |w1|     b1       votes for  against  |votes|");
    for j in 0..shown {
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
    if h > shown {
        outln!(
            "(the first {shown} of {h} units; the picture shows the first {})",
            h.min(MAX_UNITS_DRAWN)
        );
    }
    outln!("\nwrote {}", args.out.display());
    Ok(())
}

/// First-layer units listed in the table (the picture shows more).
const UNITS_LISTED: usize = 20;

/// One line per layer: shape, parameters, Frobenius norm, and from its
/// singular values the largest, the effective rank (exp of the entropy of
/// the normalised values, Roy & Vetterli 2007) and the stable rank
/// (`|W|_F^2 / sigma_max^2`). Without LAPACK, one line says so instead.
fn layer_table(model: &Mlp) -> String {
    use std::fmt::Write;
    let mut out =
        String::from("\nlayer  shape         params   |W|_F    sigma_max  eff. rank  stable rank");
    let mut missing = None;
    for (i, layer) in model.layers.iter().enumerate() {
        let (rows, cols) = layer.w.dim();
        let frobenius = layer
            .w
            .iter()
            .map(|&v| (v as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let shape = format!("{rows} x {cols}");
        let _ = write!(
            out,
            "\n{:>5}  {shape:<12}  {:>7}  {frobenius:>7.3}",
            i + 1,
            rows * (cols + 1)
        );
        match linalg::singular_values(&layer.w) {
            Ok(s) => {
                let _ = write!(
                    out,
                    "  {:>9.3}  {:>9.1}  {:>11.1}",
                    s.first().copied().unwrap_or(0.0),
                    linalg::effective_rank(&s),
                    linalg::stable_rank(&s)
                );
            }
            Err(e) => missing = Some(e),
        }
    }
    if let Some(e) = missing {
        let _ = write!(out, "\n(singular values: {e})");
    }
    out
}
