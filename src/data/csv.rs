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

use std::io::Cursor;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use memchr::{memchr, memchr_iter};
use rayon::prelude::*;

use super::error::Found;
use super::source::DataReader;
use super::{DataError, Dataset, Expect, FEATURES};

/// Longest line accepted before any splitting into fields. A valid data row
/// is at most ~4.7 KB even with every field quoted (`"255",` x 785), and the
/// header ~9 KB quoted; anything far longer is not this kind of file, and is
/// rejected before a record of millions of fields is built.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Chunks per rayon thread: a few per thread evens out chunks that finish at
/// different speeds without making the per-chunk overhead matter.
const CHUNKS_PER_THREAD: usize = 4;

/// How many lines a chunk parses between looks at whether an earlier chunk
/// already failed (then its own result cannot be the one reported).
const CANCEL_CHECK_LINES: usize = 256;

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

#[derive(Debug, Clone, Copy)]
enum Mode {
    Serial,
    Parallel(usize),
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

/// Parses `lines` (whole data lines, the first being file line
/// `first_line`) and appends their rows to `pixels` and, for a labeled
/// layout, `labels`. Returns how many lines there were. On error the
/// buffers may hold a partial block; the caller discards them.
fn parse_lines_into(
    lines: &[u8],
    first_line: u64,
    ctx: &Ctx<'_>,
    mode: Mode,
    pixels: &mut Vec<u8>,
    labels: &mut Vec<u8>,
) -> Result<usize, DataError> {
    let pieces = match mode {
        Mode::Serial => 1,
        Mode::Parallel(n) => n,
    };
    let chunks = split_chunks(lines, first_line, pieces, mode);
    let rows: usize = chunks.iter().map(|c| c.rows).sum();
    if !rows_plausible(rows, lines.len(), ctx.layout) {
        // Many short (e.g. empty) lines: some line must be bad. Find it
        // without allocating output for rows that cannot all be valid.
        scan_for_first_error(&chunks, ctx)?;
    }
    let label_rows = if ctx.layout.labeled() { rows } else { 0 };
    let (pixel_start, label_start) = (pixels.len(), labels.len());
    grow_zeroed(pixels, rows * FEATURES);
    grow_zeroed(labels, label_rows);
    let jobs = make_jobs(
        &chunks,
        &mut pixels[pixel_start..],
        &mut labels[label_start..],
        ctx.layout,
    );
    run_jobs(jobs, ctx, mode)?;
    Ok(rows)
}

/// Appends `extra` zero bytes. A fresh buffer comes zeroed from the
/// allocator (no pass over it, as for a whole file parsed at once); a
/// reserved one is zeroed on the pool, so the first touch of its pages (a
/// page fault each) is shared out too.
fn grow_zeroed(buf: &mut Vec<u8>, extra: usize) {
    if buf.capacity() == 0 {
        *buf = vec![0; extra];
    } else if extra >= 1 << 20 {
        buf.par_extend(rayon::iter::repeat_n(0u8, extra));
    } else {
        buf.resize(buf.len() + extra, 0);
    }
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

// ---------------------------------------------------------------- header --

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

/// Reads single lines as CSV records with the `csv` crate, reusing one
/// reader and one record across lines: building a reader per line costs
/// more than parsing the line.
struct LineReader<'a> {
    reader: Option<csv::Reader<Cursor<&'a [u8]>>>,
    record: csv::ByteRecord,
}

impl<'a> LineReader<'a> {
    fn new() -> LineReader<'a> {
        LineReader {
            reader: None,
            record: csv::ByteRecord::new(),
        }
    }

    /// Reads `line` (which holds no `\n`) as one record; `\r` is an ordinary
    /// byte there, as in the fast path.
    fn read(&mut self, line: &'a [u8]) -> &csv::ByteRecord {
        let reader = self.reader.get_or_insert_with(|| {
            csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .terminator(csv::Terminator::Any(b'\n'))
                .from_reader(Cursor::new(&[][..]))
        });
        *reader.get_mut() = Cursor::new(line);
        // Seeking to the start resets the reader's state (end of input,
        // buffer, line count) for the new line. Reading from memory cannot
        // fail with I/O errors and a flexible byte-record reader has no
        // others; an empty line reads as no record. In every such case an
        // empty record is the honest result.
        let ok = reader.seek(csv::Position::new()).is_ok()
            && matches!(reader.read_byte_record(&mut self.record), Ok(true));
        if !ok {
            self.record.clear();
        }
        &self.record
    }
}

// ---------------------------------------------------------------- chunks --

/// A run of whole lines and the rows it will produce (one per line).
struct Chunk<'a> {
    bytes: &'a [u8],
    /// 1-based file line of the chunk's first line.
    first_line: u64,
    rows: usize,
}

/// Cuts `body` (whole data lines, the first on file line `first_line`) into
/// about `pieces` chunks at line boundaries and counts each chunk's lines
/// (in parallel if `mode` is).
fn split_chunks(body: &[u8], first_line: u64, pieces: usize, mode: Mode) -> Vec<Chunk<'_>> {
    let slices = split_at_lines(body, pieces);
    let rows: Vec<usize> = match mode {
        Mode::Serial => slices.iter().map(|s| count_lines(s)).collect(),
        Mode::Parallel(_) => slices.par_iter().map(|s| count_lines(s)).collect(),
    };
    let mut first_line = first_line;
    let mut chunks = Vec::with_capacity(slices.len());
    for (bytes, rows) in slices.into_iter().zip(rows) {
        chunks.push(Chunk {
            bytes,
            first_line,
            rows,
        });
        first_line += rows as u64;
    }
    chunks
}

/// Splits into pieces of about `len / pieces` bytes, each ending just after
/// a `\n` (the last at the end of `body`).
fn split_at_lines(body: &[u8], pieces: usize) -> Vec<&[u8]> {
    let target = body.len().div_ceil(pieces.max(1)).max(1);
    let mut out = Vec::with_capacity(pieces);
    let mut start = 0;
    while start < body.len() {
        let want = start + target;
        let end = if want >= body.len() {
            body.len()
        } else {
            memchr(b'\n', &body[want..]).map_or(body.len(), |i| want + i + 1)
        };
        out.push(&body[start..end]);
        start = end;
    }
    out
}

/// Lines in a non-empty chunk: every `\n` ends one, plus an unterminated last.
fn count_lines(chunk: &[u8]) -> usize {
    let unterminated = chunk.last().is_some_and(|&b| b != b'\n');
    memchr_iter(b'\n', chunk).count() + usize::from(unterminated)
}

/// Whether `rows` lines could all be valid in `body_len` bytes: a valid line
/// holds `fields` non-empty fields, so at least `2 * fields - 1` bytes plus
/// its line break. Guards the output allocation against files of newlines.
fn rows_plausible(rows: usize, body_len: usize, layout: Layout) -> bool {
    let min_line = 2 * layout.fields() as u128;
    rows as u128 * min_line <= body_len as u128 + 1
}

/// Iterates the lines of a chunk, without their `\n` (a `\r` is kept).
struct Lines<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let (line, rest) = match memchr(b'\n', self.rest) {
            Some(i) => (&self.rest[..i], &self.rest[i + 1..]),
            None => (self.rest, &[][..]),
        };
        self.rest = rest;
        Some(line)
    }
}

/// Parses every line of every chunk into a one-row scratch buffer and
/// returns the first error; used only when the input cannot be all valid.
fn scan_for_first_error(chunks: &[Chunk<'_>], ctx: &Ctx<'_>) -> Result<(), DataError> {
    let mut px = [0u8; FEATURES];
    let mut label = 0u8;
    let mut quoted = LineReader::new();
    for chunk in chunks {
        let lines = Lines { rest: chunk.bytes };
        for (line_no, line) in (chunk.first_line..).zip(lines) {
            parse_line(line, ctx.layout, &mut px, &mut label, &mut quoted)
                .map_err(|f| f.into_error(ctx, line_no))?;
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ jobs --

/// What every job needs to turn a fault into an error.
struct Ctx<'a> {
    path: &'a Path,
    layout: Layout,
}

/// One chunk and the output slices it fills.
struct Job<'c, 'o> {
    index: usize,
    chunk: &'c Chunk<'c>,
    pixels: &'o mut [u8],
    /// Empty for an unlabeled layout.
    labels: &'o mut [u8],
}

/// Hands each chunk its own disjoint part of the output buffers.
fn make_jobs<'c, 'o>(
    chunks: &'c [Chunk<'c>],
    mut pixels: &'o mut [u8],
    mut labels: &'o mut [u8],
    layout: Layout,
) -> Vec<Job<'c, 'o>> {
    let mut jobs = Vec::with_capacity(chunks.len());
    for (index, chunk) in chunks.iter().enumerate() {
        let (px, px_rest) = std::mem::take(&mut pixels).split_at_mut(chunk.rows * FEATURES);
        let label_rows = if layout.labeled() { chunk.rows } else { 0 };
        let (lb, lb_rest) = std::mem::take(&mut labels).split_at_mut(label_rows);
        pixels = px_rest;
        labels = lb_rest;
        jobs.push(Job {
            index,
            chunk,
            pixels: px,
            labels: lb,
        });
    }
    jobs
}

/// How a job ended. `Cancelled` means an earlier chunk failed, so this
/// chunk's outcome does not matter.
enum Outcome {
    Done,
    Failed(Box<DataError>),
    Cancelled,
}

/// Runs the jobs and returns the error of the earliest failing chunk.
fn run_jobs(jobs: Vec<Job<'_, '_>>, ctx: &Ctx<'_>, mode: Mode) -> Result<(), DataError> {
    let first_failed = AtomicUsize::new(usize::MAX);
    let outcomes: Vec<Outcome> = match mode {
        Mode::Serial => jobs
            .into_iter()
            .map(|j| run_job(j, ctx, &first_failed))
            .collect(),
        Mode::Parallel(_) => jobs
            .into_par_iter()
            .map(|j| run_job(j, ctx, &first_failed))
            .collect(),
    };
    // A chunk is only cancelled after an earlier one failed, so the first
    // outcome in file order that is not Done is a real failure.
    for outcome in outcomes {
        match outcome {
            Outcome::Done => {}
            Outcome::Failed(e) => return Err(*e),
            Outcome::Cancelled => break,
        }
    }
    Ok(())
}

fn run_job(job: Job<'_, '_>, ctx: &Ctx<'_>, first_failed: &AtomicUsize) -> Outcome {
    let mut quoted = LineReader::new();
    let mut scratch_label = 0u8;
    let mut labels = job.labels.iter_mut();
    let lines = Lines {
        rest: job.chunk.bytes,
    };
    let rows = job.pixels.chunks_exact_mut(FEATURES);
    for (i, (line, px)) in lines.zip(rows).enumerate() {
        if i % CANCEL_CHECK_LINES == 0 && first_failed.load(Ordering::Relaxed) < job.index {
            return Outcome::Cancelled;
        }
        let label = labels.next().unwrap_or(&mut scratch_label);
        if let Err(fault) = parse_line(line, ctx.layout, px, label, &mut quoted) {
            first_failed.fetch_min(job.index, Ordering::Relaxed);
            let line_no = job.chunk.first_line + i as u64;
            return Outcome::Failed(Box::new(fault.into_error(ctx, line_no)));
        }
    }
    Outcome::Done
}

// ----------------------------------------------------------------- lines --

/// A bad line, before the file name and line number are attached.
#[derive(Debug)]
enum Fault {
    TooLong(usize),
    FieldCount(usize),
    /// 0-based field index and the field's content.
    Value(usize, Found),
}

impl Fault {
    fn into_error(self, ctx: &Ctx<'_>, line: u64) -> DataError {
        let path = ctx.path.to_path_buf();
        match self {
            Fault::TooLong(bytes) => line_too_long(ctx.path, line, bytes),
            Fault::FieldCount(found) => DataError::FieldCount {
                path,
                line,
                expected: ctx.layout.fields(),
                found,
            },
            Fault::Value(0, found) if ctx.layout.labeled() => {
                DataError::BadLabel { path, line, found }
            }
            Fault::Value(index, found) => DataError::BadPixel {
                path,
                line,
                field: index + 1,
                column: ctx.layout.column_name(index),
                found,
            },
        }
    }
}

fn line_too_long(path: &Path, line: u64, bytes: usize) -> DataError {
    DataError::LineTooLong {
        path: path.to_path_buf(),
        line,
        bytes,
        limit: MAX_LINE_BYTES,
    }
}

/// Parses one data line (no `\n`; a final `\r` is dropped) into `px` and,
/// for a labeled layout, `label`. The checks, in order: length, field count,
/// then each field left to right; so the fast and `csv`-crate paths agree on
/// which fault a line with several faults reports.
fn parse_line<'a>(
    line: &'a [u8],
    layout: Layout,
    px: &mut [u8],
    label: &mut u8,
    quoted: &mut LineReader<'a>,
) -> Result<(), Fault> {
    let line = strip_cr(line);
    if line.len() > MAX_LINE_BYTES {
        return Err(Fault::TooLong(line.len()));
    }
    if line.is_empty() {
        return Err(Fault::FieldCount(0));
    }
    match parse_plain(line, layout, px, label) {
        Ok(()) => Ok(()),
        Err(_) if memchr(b'"', line).is_some() => parse_quoted(line, layout, px, label, quoted),
        Err(fault) => Err(fault),
    }
}

/// Largest value of 0-based field `index`: the label is a digit.
fn max_value(layout: Layout, index: usize) -> u32 {
    if index == 0 && layout.labeled() {
        9
    } else {
        255
    }
}

/// The fast path: plain `digits,digits,...` with no allocation. Any
/// surprise (a quote included) ends it with the fault a full parse would
/// report, found by [`classify_fault`].
#[inline]
fn parse_plain(line: &[u8], layout: Layout, px: &mut [u8], label: &mut u8) -> Result<(), Fault> {
    let mut pos = 0;
    if layout.labeled() {
        let (value, end) = scan_uint(line, pos);
        if end == pos || value > 9 || line.get(end) != Some(&b',') {
            return Err(classify_fault(line, layout, 0, pos));
        }
        *label = value as u8;
        pos = end + 1;
    }
    let first = usize::from(layout.labeled());
    let last = px.len().saturating_sub(1);
    let mut k = 0;
    while k < px.len() {
        // Four in five MNIST pixels are 0: take eight "0," fields at once
        // when they are there (never the last field, which has no comma).
        if k + ZERO_RUN_FIELDS <= last && line.get(pos..pos + ZERO_RUN.len()) == Some(ZERO_RUN) {
            px[k..k + ZERO_RUN_FIELDS].fill(0);
            k += ZERO_RUN_FIELDS;
            pos += ZERO_RUN.len();
            continue;
        }
        let (value, end) = scan_uint(line, pos);
        let separated = if k == last {
            end == line.len()
        } else {
            line.get(end) == Some(&b',')
        };
        if end == pos || value > 255 || !separated {
            return Err(classify_fault(line, layout, first + k, pos));
        }
        px[k] = value as u8;
        pos = end + 1;
        k += 1;
    }
    Ok(())
}

/// Eight zero fields, each with its comma: compared as one 16-byte block.
const ZERO_RUN: &[u8] = b"0,0,0,0,0,0,0,0,";
const ZERO_RUN_FIELDS: usize = 8;

/// Reads ASCII digits from `pos`: (value, end). The value saturates at 1000,
/// beyond any valid field, so long digit runs cannot overflow.
#[inline(always)]
fn scan_uint(line: &[u8], mut pos: usize) -> (u32, usize) {
    let mut value = 0u32;
    while let Some(&b) = line.get(pos) {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            break;
        }
        value = (value * 10 + u32::from(digit)).min(1000);
        pos += 1;
    }
    (value, pos)
}

/// The fast path stopped at field `index` starting at byte `start`: report
/// a wrong field count if the line has one, else that field's value.
#[cold]
fn classify_fault(line: &[u8], layout: Layout, index: usize, start: usize) -> Fault {
    let fields = memchr_iter(b',', line).count() + 1;
    if fields != layout.fields() {
        return Fault::FieldCount(fields);
    }
    let rest = &line[start..];
    let field = &rest[..memchr(b',', rest).unwrap_or(rest.len())];
    Fault::Value(index, Found::new(field))
}

/// The slow path for lines with quotes: the `csv` crate splits the fields,
/// then the same count and value checks as the fast path apply.
#[cold]
fn parse_quoted<'a>(
    line: &'a [u8],
    layout: Layout,
    px: &mut [u8],
    label: &mut u8,
    quoted: &mut LineReader<'a>,
) -> Result<(), Fault> {
    let record = quoted.read(line);
    if record.len() != layout.fields() {
        return Err(Fault::FieldCount(record.len()));
    }
    let first = usize::from(layout.labeled());
    for (index, field) in record.iter().enumerate() {
        let value = parse_value(field, max_value(layout, index))
            .ok_or_else(|| Fault::Value(index, Found::new(field)))?;
        match index.checked_sub(first).and_then(|p| px.get_mut(p)) {
            Some(slot) => *slot = value,
            None => *label = value,
        }
    }
    Ok(())
}

/// A whole field as an integer `0..=max`: non-empty, ASCII digits only.
fn parse_value(field: &[u8], max: u32) -> Option<u8> {
    let (value, end) = scan_uint(field, 0);
    (end == field.len() && end > 0 && value <= max).then_some(value as u8)
}

// ------------------------------------------------------------- streaming --

/// Bytes read per block when streaming a file: large enough that each block
/// splits into plenty of rayon chunks (~4,400 Kaggle rows), small next to
/// the ~77 MB of a decompressed `train.csv`.
pub const STREAM_BLOCK_BYTES: usize = 8 << 20;

/// Smallest block accepted, so a BOM always fits in the first one.
pub(crate) const MIN_BLOCK_BYTES: usize = 16;

/// Parses a Kaggle CSV read from `input` in blocks of `block_bytes`, keeping
/// only one block of text (plus the line it cut) in memory at a time.
/// `first` is what the caller already read (at least one block unless
/// `ended`; it sniffed the content from it), `ended` whether that was all.
///
/// Each block is cut after its last complete line; those lines are parsed
/// with the in-memory parallel parser, the cut line is carried into the next
/// block. Results and errors are those of [`parse_csv`] on the whole text,
/// line numbers included, with two deliberate differences for absurd files,
/// so memory stays bounded: a run of more than [`MAX_LINE_BYTES`] of only
/// line breaks (`\n`, `\r`) is reported as bad lines even when nothing but
/// more line breaks follows (the whole-file parser would ignore it as
/// trailing), and the gzip stream's errors are met where they occur, so a
/// bad line before a corrupt stretch is reported first.
pub fn parse_csv_stream(
    input: &mut DataReader,
    mut first: Vec<u8>,
    mut ended: bool,
    path: &Path,
    expect: Expect,
    block_bytes: usize,
) -> Result<Dataset, DataError> {
    let block_bytes = block_bytes.max(MIN_BLOCK_BYTES);
    // -- header: read until line 1 is complete and something follows it.
    let bom = if first.starts_with(UTF8_BOM) {
        UTF8_BOM.len()
    } else {
        0
    };
    let header_end = loop {
        if ended {
            // The whole file is in memory: nothing to stream.
            return parse_csv(&first, path, expect);
        }
        let text = &first[bom..];
        match memchr(b'\n', text) {
            Some(i) if last_content(text).is_some() || text.len() > MAX_LINE_BYTES => {
                break bom + i + 1;
            }
            None if text.len() > MAX_LINE_BYTES + 1 => {
                check_text(text, bom, path)?;
                let bytes = long_line_len(input, text, block_bytes)?;
                return Err(line_too_long(path, 1, bytes));
            }
            _ => ended = input.read_block(&mut first, block_bytes)?,
        }
    };
    let layout = parse_header(strip_cr(&first[bom..header_end - 1]), bom, path)?;
    let ctx = Ctx { path, layout };
    let pending_no_labels = layout == Layout::Test && expect == Expect::Labeled;
    let (mut pixels, mut labels) = reserve_output(input.size_hint(), layout);
    let mut buf = first;
    buf.drain(..header_end);
    let mut next_line: u64 = 2;
    let mode = Mode::Parallel(rayon::current_num_threads().max(1) * CHUNKS_PER_THREAD);
    loop {
        if pending_no_labels && last_content(&buf).is_some() {
            return Err(DataError::NoLabels {
                path: path.to_path_buf(),
            });
        }
        let parse_end = if ended {
            trim_trailing_newlines(&buf).len()
        } else {
            complete_lines_end(&buf)
        };
        if parse_end > 0 {
            let lines = &buf[..parse_end];
            next_line +=
                parse_lines_into(lines, next_line, &ctx, mode, &mut pixels, &mut labels)? as u64;
        }
        if ended {
            break;
        }
        buf.drain(..parse_end);
        check_carry(input, &buf, next_line, &ctx, mode, block_bytes)?;
        ended = input.read_block(&mut buf, block_bytes)?;
    }
    if pixels.is_empty() {
        // Any non-blank byte after the header would have made a row or an
        // error (or NoLabels, which is checked first).
        return Err(DataError::HeaderOnly {
            path: path.to_path_buf(),
        });
    }
    // Untouched reserved pages cost no memory, but give them back anyway;
    // shrinking a large allocation does not copy it.
    pixels.shrink_to_fit();
    labels.shrink_to_fit();
    Ok(Dataset {
        pixels,
        labels: layout.labeled().then_some(labels),
        source: path.to_path_buf(),
    })
}

/// Output buffers with room for as many rows as `text_bytes` of text could
/// hold (a valid line is at least `2 * fields` bytes), so they never
/// regrow: doubling a 33 MB buffer would briefly need 100 MB. Reserved but
/// unwritten memory is not resident, so overestimating is free. The hint
/// may be wrong; then the buffers simply grow.
fn reserve_output(text_bytes: usize, layout: Layout) -> (Vec<u8>, Vec<u8>) {
    let rows = text_bytes / (2 * layout.fields()) + 1;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    // A hint, not a demand: a lying gzip trailer must not abort.
    let _ = pixels.try_reserve_exact(rows.saturating_mul(FEATURES));
    if layout.labeled() {
        let _ = labels.try_reserve_exact(rows);
    }
    (pixels, labels)
}

/// Position of the last byte that is not a line break.
fn last_content(text: &[u8]) -> Option<usize> {
    text.iter().rposition(|&b| b != b'\n' && b != b'\r')
}

/// Where the lines that are safe to parse before more input end: after the
/// line holding the last non-blank byte if that line is complete, else at
/// that line's start. Blank lines after it stay unparsed: if the file ends
/// with them they are ignored, as trailing blank lines are.
fn complete_lines_end(buf: &[u8]) -> usize {
    let Some(last) = last_content(buf) else {
        return 0;
    };
    match memchr(b'\n', &buf[last..]) {
        Some(i) => last + i + 1,
        None => memchr::memrchr(b'\n', &buf[..last]).map_or(0, |i| i + 1),
    }
}

/// Keeps the carried text (one unfinished line, or blank lines) bounded:
/// an unfinished line longer than any row is an error now, its length
/// counted without keeping it; a long run of blank lines is parsed now
/// (its first line is the error).
fn check_carry(
    input: &mut DataReader,
    buf: &[u8],
    next_line: u64,
    ctx: &Ctx<'_>,
    mode: Mode,
    block_bytes: usize,
) -> Result<(), DataError> {
    if buf.len() <= MAX_LINE_BYTES + 1 {
        return Ok(());
    }
    if last_content(buf).is_none() {
        if let Some(i) = memchr::memrchr(b'\n', buf) {
            let (mut px, mut lb) = (Vec::new(), Vec::new());
            parse_lines_into(&buf[..=i], next_line, ctx, mode, &mut px, &mut lb)?;
        }
    }
    let start = memchr::memrchr(b'\n', buf).map_or(0, |i| i + 1);
    let line_no = next_line + memchr_iter(b'\n', &buf[..start]).count() as u64;
    let bytes = long_line_len(input, &buf[start..], block_bytes)?;
    Err(line_too_long(ctx.path, line_no, bytes))
}

/// The length of a too-long line of which `seen` is the start (no `\n`
/// yet): reads on to its end, keeping no more than a block, and drops the
/// `\r` before `\n` (all of them at the end of the file), as the parser
/// does.
fn long_line_len(
    input: &mut DataReader,
    seen: &[u8],
    block_bytes: usize,
) -> Result<usize, DataError> {
    let mut len = seen.len();
    let mut cr = trailing_cr(seen, 0);
    let mut block = Vec::with_capacity(block_bytes);
    loop {
        block.clear();
        let ended = input.read_block(&mut block, block_bytes)?;
        if let Some(i) = memchr(b'\n', &block) {
            len += i;
            cr = trailing_cr(&block[..i], cr);
            return Ok(len - cr.min(1));
        }
        len += block.len();
        cr = trailing_cr(&block, cr);
        if ended {
            return Ok(len - cr);
        }
    }
}

/// How many `\r` end the text so far, given `bytes` follow text that ended
/// with `before` of them.
fn trailing_cr(bytes: &[u8], before: usize) -> usize {
    let run = bytes.iter().rev().take_while(|&&b| b == b'\r').count();
    if run == bytes.len() {
        before + run
    } else {
        run
    }
}
