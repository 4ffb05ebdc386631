//! `mnist-blas augment-preview` (hidden): one image of a file and the
//! distortions `--augment` gives it in successive epochs, as a grid
//! (docs/img/augment.png).

use super::{check_exists, check_outputs};
use crate::data::augment::Augment;
use crate::data::{self, Expect, FEATURES};
use anyhow::{bail, Result};
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  mnist-blas augment-preview --data train.csv --row 7 --out augment.png
  mnist-blas augment-preview --data train.csv --row 7 \\
      --augment shift=2,rotate=10,elastic=34/4 --out elastic.png

Each picture shows the row and the distortions `train --augment SPEC --seed N`
gives the training row with that index in epochs 1, 2, ...")]
pub struct AugmentPreviewArgs {
    /// Images (CSV or IDX).
    #[arg(long, value_name = "PATH")]
    pub data: PathBuf,
    /// The image's row in the file (from 0).
    #[arg(long, default_value_t = 0)]
    pub row: usize,
    /// The distortions, as `train --augment` takes them [default: the recipe's].
    #[arg(long, value_name = "SPEC", default_value = "recipe")]
    pub augment: Augment,
    /// The seed, as `train --seed`.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Distorted copies drawn (epochs 1..=N).
    #[arg(long, default_value_t = 23)]
    pub count: usize,
    /// The picture.
    #[arg(long, value_name = "PATH", default_value = "augment.png")]
    pub out: PathBuf,
}

pub fn run(args: AugmentPreviewArgs) -> Result<()> {
    check_exists(&args.data, "--data")?;
    check_outputs(&[args.data.as_path()], &[("--out", args.out.as_path())])?;
    let set = data::load(&args.data, Expect::Unlabeled)?;
    if args.row >= set.len() {
        bail!(
            "--row {}: {} has {} rows (from 0)",
            args.row,
            args.data.display(),
            set.len()
        );
    }
    let img = set.row(args.row);
    let mut cells = vec![(img.to_vec(), "original".to_string())];
    for epoch in 1..=args.count {
        let mut out = vec![0u8; FEATURES];
        args.augment
            .draw(args.seed, epoch, args.row)
            .apply(img, &mut out);
        cells.push((out, format!("epoch {epoch}")));
    }
    let title = format!(
        "--augment {} (row {} of {}, seed {})",
        args.augment,
        args.row,
        args.data.file_name().unwrap_or_default().to_string_lossy(),
        args.seed
    );
    crate::plot::digit_grid(&args.out, &cells, &title)?;
    outln!("{}", args.out.display());
    Ok(())
}
