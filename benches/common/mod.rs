//! Inputs shared by the benches: real MNIST rows when `../shared` is there,
//! otherwise the crate's built-in sample or synthetic rows shaped like MNIST,
//! so `cargo bench` always runs. Each bench prints which one it used.

#![allow(dead_code)] // each bench binary uses a different subset

use mnist_blas::data::{self, source, Dataset, Expect, FEATURES};
use mnist_blas::rng;

/// The synthetic rows and tolerances the tests use, from the same file.
#[path = "../../src/testutil.rs"]
pub mod testutil;
use std::path::{Path, PathBuf};
use testutil::random_dataset;

/// Kaggle's full train.csv.gz, if this checkout sits next to `shared/`.
pub const SHARED_TRAIN: &str = "../shared/data/digit-recognizer/train.csv.gz";
/// The real-digit sample kept in the repository.
pub const SAMPLE_TRAIN: &str = "data/sample/train-sample.csv.gz";

fn crate_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The decompressed bytes of a real train.csv: the full file when present,
/// else the repository's sample. Returns (bytes, description).
pub fn train_csv_bytes() -> (Vec<u8>, String) {
    for rel in [SHARED_TRAIN, SAMPLE_TRAIN] {
        let path = crate_path(rel);
        if let Ok(raw) = source::read_bytes(&path) {
            let bytes = source::maybe_gunzip(raw, &path).expect("readable gzip");
            return (bytes, rel.to_string());
        }
    }
    panic!("neither {SHARED_TRAIN} nor {SAMPLE_TRAIN} is readable");
}

/// The header and the first `rows` data lines of `csv` (fewer if it is
/// shorter), as one new buffer.
pub fn first_lines(csv: &[u8], rows: usize) -> Vec<u8> {
    let mut end = 0;
    for (seen, pos) in memchr::memchr_iter(b'\n', csv).enumerate() {
        end = pos + 1;
        if seen == rows {
            break;
        }
    }
    if end == 0 {
        end = csv.len();
    }
    csv[..end].to_vec()
}

/// `rows` labeled real rows (repeating the available ones if there are
/// fewer), or synthetic rows if no real file is readable.
pub fn labeled_rows(rows: usize) -> (Dataset, String) {
    let (bytes, what) = train_csv_bytes();
    let real = data::parse_bytes(&bytes, Path::new(&what), Expect::Labeled).ok();
    match real {
        Some(d) if !d.is_empty() => {
            let idx: Vec<usize> = (0..rows).map(|i| i % d.len()).collect();
            let label = if d.len() >= rows {
                format!("{rows} real rows of {what}")
            } else {
                format!("{rows} rows cycling the {} real rows of {what}", d.len())
            };
            (d.gather(&idx), label)
        }
        _ => (random_dataset(rows, 1), format!("{rows} synthetic rows")),
    }
}

/// Pixels and labels of the first `rows` rows of `d`.
pub fn head(d: &Dataset, rows: usize) -> (&[u8], &[u8]) {
    (
        &d.pixels[..rows * FEATURES],
        &d.labels.as_ref().expect("labeled")[..rows],
    )
}
