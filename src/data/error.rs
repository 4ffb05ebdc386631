//! Every way a data file can be wrong, each as one line that names the file
//! and, where it has one, the line (CSV) or byte offset / record (IDX).
//!
//! Messages are meant to be read by someone holding the wrong file: they say
//! what was expected and what was found, with any quoted file content cut to
//! [`FOUND_MAX_CHARS`] characters so a garbage line cannot flood a terminal.

use std::fmt;
use std::path::{Path, PathBuf};

/// Longest piece of file content quoted back in a message.
pub const FOUND_MAX_CHARS: usize = 40;

/// A data file that could not be read, decoded or understood.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{}: cannot read: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The content starts with the gzip magic but does not decompress.
    #[error("{}: gzip data is truncated or corrupt: {detail}", .path.display())]
    Gzip { path: PathBuf, detail: String },

    /// Zero bytes (after decompression), or only line breaks.
    #[error("{}: the file is empty", .path.display())]
    EmptyFile { path: PathBuf },

    /// A valid header (CSV) or IDX header, but not a single sample after it.
    #[error("{}: has a header but no data rows", .path.display())]
    HeaderOnly { path: PathBuf },

    /// Bytes that cannot be CSV text (NUL or invalid UTF-8 in the header).
    #[error(
        "{}: byte {offset}: binary data; expected a Kaggle CSV (text) or an MNIST IDX file",
        .path.display()
    )]
    NotText { path: PathBuf, offset: usize },

    /// The first line is data, not the Kaggle header.
    #[error(
        "{}:1: header: line 1 looks like a data row ({found}), but the file must start with \
         the header \"label,pixel0,...,pixel783\" (train) or \"pixel0,...,pixel783\" (test)",
        .path.display()
    )]
    MissingHeader { path: PathBuf, found: Found },

    /// The header is not one of the two Kaggle layouts.
    #[error("{}: header: expected {expected}, found {found}", .path.display())]
    BadHeader {
        path: PathBuf,
        /// What should be there, e.g. `"pixel3" as field 5`.
        expected: String,
        /// What is there, quoted and cut short, e.g. `"pixel4"`.
        found: String,
    },

    /// A Kaggle `test.csv` layout where labels are needed (for training).
    #[error(
        "{}: header: this looks like a Kaggle test.csv (784 pixel columns, no label) but a \
         labeled train.csv was expected",
        .path.display()
    )]
    NoLabels { path: PathBuf },

    /// A data line with the wrong number of comma-separated fields.
    #[error(
        "{}:{line}: expected {expected} fields ({}), found {}",
        .path.display(),
        layout_words(*.expected),
        count_words(*.found)
    )]
    FieldCount {
        path: PathBuf,
        line: u64,
        expected: usize,
        found: usize,
    },

    /// A line far longer than any valid row; rejected before it is split so
    /// a corrupt file cannot make us build a record of millions of fields.
    #[error(
        "{}:{line}: line is {bytes} bytes long, more than any row of 0-255 integers can be \
         (limit {limit}); is this the right file?",
        .path.display()
    )]
    LineTooLong {
        path: PathBuf,
        line: u64,
        bytes: usize,
        limit: usize,
    },

    /// A pixel field that is not an integer 0-255 (empty, negative,
    /// fractional, not a number, too large).
    #[error(
        "{}:{line}: field {field} ({column}): expected an integer 0-255, found {found}",
        .path.display()
    )]
    BadPixel {
        path: PathBuf,
        line: u64,
        /// 1-based field number on the line (the label, if any, is field 1).
        field: usize,
        /// Column name from the header layout, e.g. `pixel201`.
        column: String,
        found: Found,
    },

    /// A label field that is not a digit 0-9.
    #[error(
        "{}:{line}: field 1 (label): expected a digit label 0-9, found {found}",
        .path.display()
    )]
    BadLabel {
        path: PathBuf,
        line: u64,
        found: Found,
    },

    /// An IDX file (starts with two zero bytes) with the wrong magic number.
    #[error(
        "{}: not an MNIST IDX {what} file: magic number is 0x{found:08x}, expected 0x{expected:08x}",
        .path.display()
    )]
    IdxBadMagic {
        path: PathBuf,
        what: &'static str,
        found: u32,
        expected: u32,
    },

    /// An IDX labels file passed where the images file belongs.
    #[error(
        "{}: this is an MNIST IDX labels file; pass the images file \
         (*-images-idx3-ubyte[.gz]) instead, its labels are read from beside it",
        .path.display()
    )]
    IdxLabelsGiven { path: PathBuf },

    /// IDX images that are not 28x28.
    #[error(
        "{}: images are {rows}x{cols}; only 28x28 (784 pixels) is supported",
        .path.display()
    )]
    IdxBadDims { path: PathBuf, rows: u32, cols: u32 },

    /// An IDX file too short to hold its own header.
    #[error(
        "{}: truncated: an IDX {what} file starts with a {expected}-byte header, but the file \
         is only {found} bytes",
        .path.display()
    )]
    IdxShortHeader {
        path: PathBuf,
        what: &'static str,
        expected: u64,
        found: u64,
    },

    /// An IDX file shorter than its header promises.
    #[error(
        "{}: truncated: the header promises {count} {what}, so the file should be {expected} \
         bytes, but it is {found} bytes",
        .path.display()
    )]
    IdxTruncated {
        path: PathBuf,
        what: &'static str,
        count: u64,
        expected: u64,
        found: u64,
    },

    /// An IDX file longer than its header promises.
    #[error(
        "{}: {found} bytes, but the header promises {count} {what} = {expected} bytes; \
         extra data at the end",
        .path.display()
    )]
    IdxTrailingBytes {
        path: PathBuf,
        what: &'static str,
        count: u64,
        expected: u64,
        found: u64,
    },

    /// An IDX label byte outside 0-9.
    #[error(
        "{}: byte {offset} (label {index}): {found} is not a digit label 0-9",
        .path.display()
    )]
    IdxBadLabel {
        path: PathBuf,
        /// Byte offset of the label in the (decompressed) file.
        offset: u64,
        /// 0-based record index.
        index: u64,
        found: u8,
    },

    /// The images and labels files disagree on the number of samples.
    #[error(
        "{}: {images_count} images, but {} has {labels_count} labels",
        .images.display(),
        .labels.display()
    )]
    IdxCountMismatch {
        images: PathBuf,
        labels: PathBuf,
        images_count: u64,
        labels_count: u64,
    },

    /// Labeled data was expected but no IDX labels file sits beside the images.
    #[error(
        "{}: no labels file beside it (looked for {}), but labeled data was expected",
        .path.display(),
        join_paths(.tried)
    )]
    IdxMissingLabels { path: PathBuf, tried: Vec<PathBuf> },

    /// Parts handed to `Dataset::from_parts` that do not fit together.
    #[error("{}: {detail}", .path.display())]
    Shape { path: PathBuf, detail: String },
}

impl DataError {
    /// The file the error is about (for IDX count mismatches, the images).
    pub fn path(&self) -> &Path {
        match self {
            DataError::Io { path, .. }
            | DataError::Gzip { path, .. }
            | DataError::EmptyFile { path }
            | DataError::HeaderOnly { path }
            | DataError::NotText { path, .. }
            | DataError::MissingHeader { path, .. }
            | DataError::BadHeader { path, .. }
            | DataError::NoLabels { path }
            | DataError::FieldCount { path, .. }
            | DataError::LineTooLong { path, .. }
            | DataError::BadPixel { path, .. }
            | DataError::BadLabel { path, .. }
            | DataError::IdxBadMagic { path, .. }
            | DataError::IdxLabelsGiven { path }
            | DataError::IdxBadDims { path, .. }
            | DataError::IdxShortHeader { path, .. }
            | DataError::IdxTruncated { path, .. }
            | DataError::IdxTrailingBytes { path, .. }
            | DataError::IdxBadLabel { path, .. }
            | DataError::IdxMissingLabels { path, .. }
            | DataError::Shape { path, .. } => path,
            DataError::IdxCountMismatch { images, .. } => images,
        }
    }

    /// The 1-based CSV line the error is on, when it is about one line.
    pub fn line(&self) -> Option<u64> {
        match self {
            DataError::FieldCount { line, .. }
            | DataError::LineTooLong { line, .. }
            | DataError::BadPixel { line, .. }
            | DataError::BadLabel { line, .. } => Some(*line),
            DataError::MissingHeader { .. } => Some(1),
            _ => None,
        }
    }
}

/// A piece of file content quoted in a message: decoded lossily and cut to
/// [`FOUND_MAX_CHARS`] characters, so it is always safe and short to print.
/// Displays quoted and escaped, e.g. `"256"` or `"1.5"`.
#[derive(Clone, PartialEq, Eq)]
pub struct Found {
    text: String,
    truncated: bool,
}

impl Found {
    /// Quotes `bytes`, keeping at most [`FOUND_MAX_CHARS`] characters.
    pub fn new(bytes: &[u8]) -> Found {
        // Decode only a bounded prefix: 4 bytes per char is the UTF-8 maximum.
        let prefix = &bytes[..bytes.len().min(FOUND_MAX_CHARS * 4 + 4)];
        let lossy = String::from_utf8_lossy(prefix);
        let text: String = lossy.chars().take(FOUND_MAX_CHARS).collect();
        let truncated = text.len() < lossy.len() || prefix.len() < bytes.len();
        Found { text, truncated }
    }

    /// The kept text (without quotes or the truncation mark).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether the original was longer than what is kept.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)?;
        if self.truncated {
            f.write_str("...")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl PartialEq<&str> for Found {
    fn eq(&self, other: &&str) -> bool {
        !self.truncated && self.text == *other
    }
}

/// Describes a row layout by its field count, for field-count messages.
fn layout_words(expected: usize) -> &'static str {
    if expected == super::FEATURES + 1 {
        "label + 784 pixels, as in the header"
    } else {
        "784 pixels, as in the header"
    }
}

/// "0 (an empty line)" reads better than a bare 0.
fn count_words(found: usize) -> String {
    if found == 0 {
        "0 (an empty line)".to_string()
    } else {
        found.to_string()
    }
}

fn join_paths(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}
