//! The data path: files on disk -> [`Dataset`] (pixels stored once as `u8`).
//!
//! Readers: Kaggle digit-recognizer CSV (`csv`), original MNIST IDX (`idx`),
//! each plain or gzipped (`source`). Every error names the file and, where it
//! has one, the line. Pictures of single digits (PNG, JPEG, ...) become the
//! 28x28 the model sees in `image`.

pub mod augment;
pub mod csv;
pub mod error;
#[doc(hidden)]
pub mod fuzz;
pub mod idx;
pub mod image;
pub mod sample;
pub mod source;

pub use error::DataError;

use std::path::{Path, PathBuf};

/// Pixels per image (28 x 28).
pub const FEATURES: usize = 784;
/// Number of classes (digits 0-9).
pub const CLASSES: usize = 10;

/// A set of images, stored once, compactly: one row of [`FEATURES`] `u8` per
/// sample, rows contiguous, so any run of rows is a plain slice.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// `rows * FEATURES` bytes, row-major.
    pub pixels: Vec<u8>,
    /// One label 0-9 per row; `None` for unlabeled data (Kaggle `test.csv`).
    pub labels: Option<Vec<u8>>,
    /// Where the data came from, for messages.
    pub source: PathBuf,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.pixels.len() / FEATURES
    }

    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }

    /// Pixels of row `i`.
    pub fn row(&self, i: usize) -> &[u8] {
        &self.pixels[i * FEATURES..(i + 1) * FEATURES]
    }

    /// Pixels of rows `start..end`, as one contiguous slice.
    pub fn rows(&self, start: usize, end: usize) -> &[u8] {
        &self.pixels[start * FEATURES..end * FEATURES]
    }

    /// A new dataset holding `indices` rows, in that order (used for splits).
    pub fn gather(&self, indices: &[usize]) -> Dataset {
        let mut pixels = Vec::with_capacity(indices.len() * FEATURES);
        for &i in indices {
            pixels.extend_from_slice(self.row(i));
        }
        let labels = self
            .labels
            .as_ref()
            .map(|l| indices.iter().map(|&i| l[i]).collect());
        Dataset {
            pixels,
            labels,
            source: self.source.clone(),
        }
    }

    /// Reorders the rows in place so that row `k` is the old row
    /// `order[k]` (`order` a permutation of the rows): each row is moved
    /// once, following the permutation's cycles, and no second buffer is
    /// touched.
    pub fn permute(&mut self, order: &[usize]) {
        assert_eq!(order.len(), self.len(), "one position per row");
        let mut placed = vec![false; order.len()];
        let mut first = [0u8; FEATURES];
        for start in 0..order.len() {
            if placed[start] {
                continue;
            }
            first.copy_from_slice(self.row(start));
            let mut to = start;
            loop {
                placed[to] = true;
                let from = order[to];
                let out = to * FEATURES..(to + 1) * FEATURES;
                if from == start {
                    self.pixels[out].copy_from_slice(&first);
                    break;
                }
                assert!(!placed[from], "order is not a permutation");
                self.pixels
                    .copy_within(from * FEATURES..(from + 1) * FEATURES, out.start);
                to = from;
            }
        }
        if let Some(labels) = &mut self.labels {
            *labels = order.iter().map(|&i| labels[i]).collect();
        }
    }

    /// Rows `at..` as a new dataset, leaving rows `..at` here (their buffer
    /// shrunk to fit, which gives the rest back without copying).
    pub fn split_off(&mut self, at: usize) -> Dataset {
        let tail = Dataset {
            pixels: self.pixels.split_off(at * FEATURES),
            labels: self.labels.as_mut().map(|l| l.split_off(at)),
            source: self.source.clone(),
        };
        self.pixels.shrink_to_fit();
        tail
    }

    /// Builds a dataset from raw parts (synthetic data in tests, other
    /// readers), checking what every reader guarantees: whole rows, one label
    /// per row, labels 0-9. `source` names the data in messages.
    pub fn from_parts(
        pixels: Vec<u8>,
        labels: Option<Vec<u8>>,
        source: PathBuf,
    ) -> Result<Dataset, DataError> {
        if !pixels.len().is_multiple_of(FEATURES) {
            let detail = format!(
                "{} pixel bytes is not a whole number of {FEATURES}-pixel rows",
                pixels.len()
            );
            return Err(DataError::Shape {
                path: source,
                detail,
            });
        }
        if let Some(labels) = &labels {
            let rows = pixels.len() / FEATURES;
            if labels.len() != rows {
                let detail = format!("{rows} rows but {} labels", labels.len());
                return Err(DataError::Shape {
                    path: source,
                    detail,
                });
            }
            if let Some(bad) = labels.iter().find(|&&l| usize::from(l) >= CLASSES) {
                let detail = format!("label {bad} is not a digit 0-9");
                return Err(DataError::Shape {
                    path: source,
                    detail,
                });
            }
        }
        Ok(Dataset {
            pixels,
            labels,
            source,
        })
    }
}

/// Which kind of file the caller expects; the CSV reader checks the header
/// against it and says which layout it found when they disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Every row has a label (Kaggle `train.csv`, IDX images + labels).
    Labeled,
    /// Rows have no label (Kaggle `test.csv`); a labeled file is accepted too
    /// (its labels are kept), so `predict` can run on a train file.
    Unlabeled,
}

/// Load a dataset from `path`, choosing the reader by content.
///
/// `path` may be a Kaggle CSV (plain or `.gz`) or an MNIST IDX images file
/// (plain or `.gz`, e.g. `train-images-idx3-ubyte.gz`); for IDX the labels
/// file beside it (`*-labels-idx1-ubyte[.gz]`) is read when it exists.
///
/// A CSV is read and parsed in blocks, so the decompressed text (77 MB for
/// Kaggle's `train.csv`, more than twice the pixels) is never held whole;
/// an IDX file is binary and read whole.
pub fn load(path: &Path, expect: Expect) -> Result<Dataset, DataError> {
    load_in_blocks(path, expect, csv::STREAM_BLOCK_BYTES)
}

/// [`load`] reading `block_bytes` at a time, so tests can make lines
/// straddle blocks with a tiny block size.
#[doc(hidden)]
pub fn load_in_blocks(
    path: &Path,
    expect: Expect,
    block_bytes: usize,
) -> Result<Dataset, DataError> {
    read_in_blocks(
        &mut source::DataReader::open(path)?,
        path,
        expect,
        block_bytes,
    )
}

/// [`load_in_blocks`] from an opened reader; `path` names it in messages
/// and, for IDX, is where the labels are looked for.
#[doc(hidden)]
pub fn read_in_blocks(
    input: &mut source::DataReader,
    path: &Path,
    expect: Expect,
    block_bytes: usize,
) -> Result<Dataset, DataError> {
    let mut first = Vec::new();
    // The first bytes of the (decompressed) content decide the reader.
    let ended = input.read_block(&mut first, block_bytes.max(csv::MIN_BLOCK_BYTES))?;
    if first.is_empty() {
        Err(DataError::EmptyFile {
            path: path.to_path_buf(),
        })
    } else if idx::is_idx(&first) {
        input.read_rest(&mut first)?;
        idx::load_idx(&first, path, expect)
    } else {
        csv::parse_csv_stream(input, first, ended, path, expect, block_bytes)
    }
}

/// [`load`] for content already in memory (and already gunzipped). `path`
/// names it in messages; for IDX it is also where the labels are looked for.
pub fn parse_bytes(bytes: &[u8], path: &Path, expect: Expect) -> Result<Dataset, DataError> {
    if bytes.is_empty() {
        Err(DataError::EmptyFile {
            path: path.to_path_buf(),
        })
    } else if idx::is_idx(bytes) {
        idx::load_idx(bytes, path, expect)
    } else {
        csv::parse_csv(bytes, path, expect)
    }
}

/// Where the training data comes from.
#[derive(Debug, Clone)]
pub enum DataSource {
    File(PathBuf),
    /// The sample of real digits compiled into the binary.
    BuiltinSample,
}

impl DataSource {
    pub fn describe(&self) -> String {
        match self {
            DataSource::File(p) => p.display().to_string(),
            DataSource::BuiltinSample => "built-in sample".to_string(),
        }
    }

    pub fn load(&self) -> Result<Dataset, DataError> {
        Ok(match self {
            DataSource::File(p) => load(p, Expect::Labeled)?,
            DataSource::BuiltinSample => sample::train_sample()?,
        })
    }
}
