//! Kaggle digit-recognizer CSV: `label,pixel0,...,pixel783` (train) or
//! `pixel0,...,pixel783` (test), one image per line, integers 0-255.
//!
//! The whole (decompressed) file is in memory, so parsing is split across
//! rayon threads: the body is cut into chunks at line boundaries, each
//! chunk's row count is known up front (one row per line; anything else is
//! an error), so every chunk writes straight into its own slice of the output
//! buffers and no rows are copied afterwards. The first bad line in *file*
//! order is reported, whichever chunk happened to fail first in wall time.
//!
//! Lines without a `"` take a hand-written byte fast path (no allocation, no
//! per-field work beyond the digits). A line the fast path rejects that
//! contains a quote is re-parsed with the `csv` crate, so quoted fields
//! (`"0"`) behave exactly as a CSV library says; all other lines give the
//! same answer either way, because for unquoted text both see the same
//! comma-separated fields.
//!
//! Every field is an integer, so a quoted field can never legally hold a
//! newline: lines are split at every `\n`, and an unbalanced quote is
//! reported on the line where it appears.
//!
//! One concern per file: this one holds the public entry points, the column
//! [`Layout`] and everything decided by the header; `chunks` splits the
//! body and fills the output in parallel; `line` parses one data line, and
//! `fields` reads whole blocks of its fields at once with AVX2;
//! `stream` feeds a file through the same parser block by block.

mod chunks;
mod fields;
mod line;
mod stream;

pub(crate) use stream::MIN_BLOCK_BYTES;
pub use stream::{parse_csv_stream, STREAM_BLOCK_BYTES};

use std::path::Path;

use memchr::memchr;

use super::error::Found;
use super::{DataError, Dataset, Expect, FEATURES};
use chunks::{parse_lines_into, Mode};
use line::LineReader;

/// Longest line accepted before any splitting into fields. A valid data row
/// is at most ~4.7 KB even with every field quoted (`"255",` x 785), and the
/// header ~9 KB quoted; anything far longer is not this kind of file, and is
/// rejected before a record of millions of fields is built.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Chunks per rayon thread: a few per thread evens out chunks that finish at
/// different speeds without making the per-chunk overhead matter.
const CHUNKS_PER_THREAD: usize = 4;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// The column layout named by the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `label,pixel0,...,pixel783` (Kaggle `train.csv`).
    Train,
    /// `pixel0,...,pixel783` (Kaggle `test.csv`).
    Test,
}

impl Layout {
    /// Fields on every line of this layout.
    pub fn fields(self) -> usize {
        match self {
            Layout::Train => FEATURES + 1,
            Layout::Test => FEATURES,
        }
    }

    pub fn labeled(self) -> bool {
        self == Layout::Train
    }

    /// Header name of 0-based field `index`, e.g. `pixel201`.
    pub fn column_name(self, index: usize) -> String {
        match (self, index) {
            (Layout::Train, 0) => "label".to_string(),
            (Layout::Train, i) => format!("pixel{}", i - 1),
            (Layout::Test, i) => format!("pixel{i}"),
        }
    }

    /// The header line this layout expects (without its line break).
    pub fn header(self) -> String {
        let names: Vec<String> = (0..self.fields()).map(|i| self.column_name(i)).collect();
        names.join(",")
    }
}

/// Parses a Kaggle CSV held in memory, in parallel on the current rayon pool.
/// `path` is only used in messages and as [`Dataset::source`].
pub fn parse_csv(bytes: &[u8], path: &Path, expect: Expect) -> Result<Dataset, DataError> {
    let chunks = rayon::current_num_threads().max(1) * CHUNKS_PER_THREAD;
    parse_csv_in_chunks(bytes, path, expect, chunks)
}

/// Same result as [`parse_csv`], on the calling thread only (one chunk, no
/// rayon): the baseline for benchmarks, and a reference for tests.
pub fn parse_csv_serial(bytes: &[u8], path: &Path, expect: Expect) -> Result<Dataset, DataError> {
    parse_with(bytes, path, expect, Mode::Serial)
}

/// [`parse_csv`] with an explicit number of chunks (at least 1), so tests
/// can force many chunks on a small input and check errors cross chunk
/// boundaries in file order.
pub fn parse_csv_in_chunks(
    bytes: &[u8],
    path: &Path,
    expect: Expect,
    chunks: usize,
) -> Result<Dataset, DataError> {
    parse_with(bytes, path, expect, Mode::Parallel(chunks.max(1)))
}

fn parse_with(bytes: &[u8], path: &Path, expect: Expect, mode: Mode) -> Result<Dataset, DataError> {
    let (layout, body) = read_header(bytes, path, expect)?;
    let ctx = Ctx { path, layout };
    let (pixels, labels) = parse_body(body, &ctx, mode)?;
    Ok(Dataset {
        pixels,
        labels: layout.labeled().then_some(labels),
        source: path.to_path_buf(),
    })
}

/// Checks everything decided before the first data row: empty file,
/// header, no rows, layout against `expect`. Returns the layout and the
/// lines after the header (never empty, trailing blank lines removed).
fn read_header<'a>(
    bytes: &'a [u8],
    path: &Path,
    expect: Expect,
) -> Result<(Layout, &'a [u8]), DataError> {
    let (bom, text) = match bytes.strip_prefix(UTF8_BOM) {
        Some(rest) => (UTF8_BOM.len(), rest),
        None => (0, bytes),
    };
    let path_buf = || path.to_path_buf();
    let text = trim_trailing_newlines(text);
    if text.is_empty() {
        return Err(DataError::EmptyFile { path: path_buf() });
    }
    let (header, body) = split_first_line(text);
    let layout = parse_header(header, bom, path)?;
    if body.is_empty() {
        return Err(DataError::HeaderOnly { path: path_buf() });
    }
    if layout == Layout::Test && expect == Expect::Labeled {
        return Err(DataError::NoLabels { path: path_buf() });
    }
    Ok((layout, body))
}

/// Parses the data lines into (pixels, labels); labels is empty for an
/// unlabeled layout.
fn parse_body(body: &[u8], ctx: &Ctx<'_>, mode: Mode) -> Result<(Vec<u8>, Vec<u8>), DataError> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    parse_lines_into(body, 2, ctx, mode, &mut pixels, &mut labels)?; // the header is line 1
    Ok((pixels, labels))
}

/// Trailing blank lines (and the final line break) are common and harmless.
fn trim_trailing_newlines(text: &[u8]) -> &[u8] {
    let end = text
        .iter()
        .rposition(|&b| b != b'\n' && b != b'\r')
        .map_or(0, |p| p + 1);
    &text[..end]
}

/// Splits at the first `\n`: (first line without its line break, rest).
fn split_first_line(text: &[u8]) -> (&[u8], &[u8]) {
    match memchr(b'\n', text) {
        Some(i) => (strip_cr(&text[..i]), &text[i + 1..]),
        None => (strip_cr(text), &[]),
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// What the header may be, for messages.
const HEADER_CHOICES: &str = "\"label,pixel0,...,pixel783\" (train, 785 columns) or \
                              \"pixel0,...,pixel783\" (test, 784 columns)";

/// Decides the layout from line 1, or says precisely what is wrong with it.
/// `offset` is where the line starts in the file (after a BOM), for
/// binary-data messages.
fn parse_header(line: &[u8], offset: usize, path: &Path) -> Result<Layout, DataError> {
    check_text(line, offset, path)?;
    if line.len() > MAX_LINE_BYTES {
        return Err(line_too_long(path, 1, line.len()));
    }
    let mut reader = LineReader::new();
    let record = reader.read(line);
    if record
        .get(0)
        .is_some_and(|f| !f.is_empty() && f.iter().all(u8::is_ascii_digit))
    {
        return Err(DataError::MissingHeader {
            path: path.to_path_buf(),
            found: Found::new(line),
        });
    }
    let layout = match (record.len(), record.get(0)) {
        (n, Some(b"label")) if n == Layout::Train.fields() => Layout::Train,
        (n, Some(b"pixel0")) if n == Layout::Test.fields() => Layout::Test,
        (n, _) => {
            return Err(DataError::BadHeader {
                path: path.to_path_buf(),
                expected: HEADER_CHOICES.to_string(),
                found: format!("{} ({n} columns)", Found::new(line)),
            })
        }
    };
    check_column_names(record, layout, path)?;
    Ok(layout)
}

/// Every column after the first must be `pixel0`, `pixel1`, ... in order; a
/// shuffled header would silently scramble every image.
fn check_column_names(
    record: &csv::ByteRecord,
    layout: Layout,
    path: &Path,
) -> Result<(), DataError> {
    let mut want = Vec::with_capacity(16);
    for (index, field) in record.iter().enumerate().skip(1) {
        let name = layout.column_name(index);
        want.clear();
        want.extend_from_slice(name.as_bytes());
        if field != want.as_slice() {
            return Err(DataError::BadHeader {
                path: path.to_path_buf(),
                expected: format!("\"{name}\" as field {}", index + 1),
                found: Found::new(field).to_string(),
            });
        }
    }
    Ok(())
}

/// Rejects NUL bytes and invalid UTF-8 in line 1: such a file is binary
/// (an image, a zip, an IDX file...), and "bad header" would mislead.
fn check_text(line: &[u8], offset: usize, path: &Path) -> Result<(), DataError> {
    let prefix = &line[..line.len().min(MAX_LINE_BYTES)];
    let bad_at = match (memchr(0, prefix), std::str::from_utf8(prefix)) {
        (Some(nul), _) => Some(nul),
        // error_len() == None: a character cut by `prefix`, not bad data.
        (None, Err(e)) if e.error_len().is_some() => Some(e.valid_up_to()),
        _ => None,
    };
    match bad_at {
        Some(at) => Err(DataError::NotText {
            path: path.to_path_buf(),
            offset: offset + at,
        }),
        None => Ok(()),
    }
}

/// What every job needs to turn a fault into an error.
struct Ctx<'a> {
    path: &'a Path,
    layout: Layout,
}

fn line_too_long(path: &Path, line: u64, bytes: usize) -> DataError {
    DataError::LineTooLong {
        path: path.to_path_buf(),
        line,
        bytes,
        limit: MAX_LINE_BYTES,
    }
}
