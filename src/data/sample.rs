//! The real-digit sample compiled into the binary, so a first run works with
//! no download and from any directory.

use super::{csv::parse_csv, source::maybe_gunzip, DataError, Dataset, Expect};
use std::path::Path;

/// Header + the first 6,000 rows of Kaggle's train.csv (see data/sample/README.md).
pub const TRAIN_SAMPLE_GZ: &[u8] = include_bytes!("../../data/sample/train-sample.csv.gz");

/// How a user gets the full data set, printed when the sample is used.
pub const HOW_TO_GET_FULL_DATA: &str =
    "note: training on the built-in 6,000-row sample. For the full 42,000 rows, \
download Kaggle's digit-recognizer data (`kaggle competitions download -c digit-recognizer`) \
and put train.csv in data/, or pass --data PATH (Kaggle CSV, plain or .gz, or MNIST IDX files).";

/// Parse the built-in sample.
pub fn train_sample() -> Result<Dataset, DataError> {
    let path = Path::new("<built-in sample>");
    let bytes = maybe_gunzip(TRAIN_SAMPLE_GZ.to_vec(), path)?;
    parse_csv(&bytes, path, Expect::Labeled)
}
