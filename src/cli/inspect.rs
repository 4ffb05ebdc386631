//! `mnist-blas inspect`: what a model learned. Prints every layer's shape
//! and spectrum (singular values through LAPACK: the largest, and how many
//! directions the layer really uses), then the largest first-layer units
//! (by |w_in|*|w_out|, see [`crate::plot::units_by_size`]) with their
//! weight sizes and the digits they vote for and against, and draws the
//! largest 64 units' 784 input weights as 28x28 images (the classic picture
//! of a small MLP).

use super::progress::{Display, Loading};
use super::{check_exists, check_outputs};
use crate::data::{self, Expect};
use crate::linalg;
use crate::model::Mlp;
use crate::plot::{
    hidden_weights, ink_fraction, units_by_size, units_shown, MAX_UNITS_DRAWN, UNIT_ORDER,
};
use anyhow::Result;
use std::path::PathBuf;

/// First-layer units listed in the table unless --units or --all-units.
const UNITS_LISTED: usize = 20;

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  mnist-blas inspect                 # the latest run's model -> weights.png
  mnist-blas inspect --model runs/first --data train.csv --units 50
  mnist-blas inspect --model runs/first --all-units > units.txt

Units are ranked by |w_in|*|w_out|: the norm of a unit's input weights (its
row of w1) times that of its output weights (its column of w2). A ReLU
unit's effect on the next layer is bounded by both, and moving a factor from
one side to the other changes nothing, so the product is the unit's size.
The picture draws the 64 largest units (all, if fewer), largest first; the
table lists the 20 largest (--units N for N, --all-units for every unit).

Each tile is one unit's input weights as a 28x28 image: red where ink
raises the unit's activation, blue where it lowers it, full colour at the
tile's 98th percentile of |w|. Under it, `for 7, against 2`: the digit its
largest outgoing vote goes to, and the digit of its most negative one. With
--data, pixels inked in fewer than 1% of the images are drawn grey and left
out of the colour scale (Adam gives such rarely-seen pixels large weights
that would wash out the picture). stdout also gets a table of every layer:
shape, Frobenius norm, largest singular value, effective and stable rank
(how many directions the layer really uses). In deeper networks a unit's
votes go through the later layers' product, ReLUs left out.")]
pub struct InspectArgs {
    /// Model written by `train`: a .npz file, or a run folder (its model.npz).
    #[arg(long, value_name = "PATH", default_value = super::runs::LATEST_MODEL)]
    pub model: PathBuf,
    /// Images (CSV or IDX) whose ink picks the pixels in colour.
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    /// The picture of the largest units.
    #[arg(long, value_name = "PATH", default_value = "weights.png")]
    pub out: PathBuf,
    /// List the N largest units in the table [default: 20].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub units: Option<u64>,
    /// List every unit in the table.
    #[arg(long, conflicts_with = "units")]
    pub all_units: bool,
    /// Print nothing but errors.
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn run(args: InspectArgs) -> Result<()> {
    let args = InspectArgs {
        model: super::runs::model_path(&args.model)?,
        ..args
    };
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
        "{}: {}, {}",
        args.model.display(),
        model.shape(),
        crate::text::plural(model.len(), "parameter")
    );
    outln!("{}", layer_table(&model));
    let listed = match (args.all_units, args.units) {
        (true, _) => h,
        (false, Some(n)) => (n as usize).min(h),
        (false, None) => UNITS_LISTED.min(h),
    };
    let votes = model.class_votes();
    outln!("\nfirst-layer units, {UNIT_ORDER}:");
    outln!(
        "{:>4}  {:>4}  {:>7}  {:>7}  {:>7}  {:>7}  {:>3}  {:>7}",
        "rank",
        "unit",
        "|w_in|",
        "|w_out|",
        "score",
        "b1",
        "for",
        "against"
    );
    for (rank, u) in units_by_size(&model).iter().take(listed).enumerate() {
        let j = u.unit;
        let out = votes.column(j);
        let arg = |better: fn(f32, f32) -> bool| {
            (0..out.len()).fold(0, |b, k| if better(out[k], out[b]) { k } else { b })
        };
        outln!(
            "{:>4}  {j:>4}  {:>7.3}  {:>7.3}  {:>7.3}  {:>7.3}  {:>3}  {:>7}",
            rank + 1,
            u.w_in,
            u.w_out,
            u.score(),
            model.first().b[j],
            arg(|a, b| a > b),
            arg(|a, b| a < b),
        );
    }
    if listed < h {
        outln!(
            "(the table lists {listed} of {}; --units N or --all-units for more)",
            crate::text::plural(h, "unit")
        );
    }
    outln!(
        "\nwrote {}: input weights of {}, {UNIT_ORDER}",
        args.out.display(),
        units_shown(h.min(MAX_UNITS_DRAWN), h)
    );
    Ok(())
}

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
            crate::text::thousands(rows * (cols + 1))
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
