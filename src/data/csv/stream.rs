//! The streaming reader: a file too large to hold whole is read block by
//! block, each block's complete lines parsed with the in-memory parallel
//! parser and the line a block cut carried into the next, so only about two
//! blocks of text are in memory at a time (the next is read, or gunzipped,
//! on a thread of its own while the last one parses). Everything here is
//! about keeping that bound (and the results of the whole-file parser) on
//! absurd input.

use std::path::Path;

use memchr::{memchr, memchr_iter};

use super::chunks::{parse_lines_into, Mode};
use super::{
    check_text, line_too_long, parse_csv, parse_header, strip_cr, trim_trailing_newlines, Ctx,
    Layout, CHUNKS_PER_THREAD, MAX_LINE_BYTES, UTF8_BOM,
};
use crate::data::source::DataReader;
use crate::data::{DataError, Dataset, Expect, FEATURES};

/// Bytes read per block when streaming a file: large enough that each block
/// splits into plenty of rayon chunks (~4,400 Kaggle rows), small next to
/// the ~77 MB of a decompressed `train.csv`.
pub const STREAM_BLOCK_BYTES: usize = 8 << 20;

/// Smallest block accepted, so a BOM always fits in the first one.
pub(crate) const MIN_BLOCK_BYTES: usize = 16;

/// Parses a Kaggle CSV read from `input` in blocks of `block_bytes`, keeping
/// only two blocks of text (plus the line one cut) in memory at a time: the
/// one parsing and the next, read meanwhile.
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
    let bom = if first.starts_with(UTF8_BOM) {
        UTF8_BOM.len()
    } else {
        0
    };
    let Some(header_end) = read_line_one(input, &mut first, &mut ended, bom, path, block_bytes)?
    else {
        // The whole file is in memory: nothing to stream.
        return parse_csv(&first, path, expect);
    };
    let layout = parse_header(strip_cr(&first[bom..header_end - 1]), bom, path)?;
    let ctx = Ctx { path, layout };
    let pending_no_labels = layout == Layout::Test && expect == Expect::Labeled;
    let (mut pixels, mut labels) = reserve_output(input.size_hint(), layout);
    let mut buf = first;
    buf.drain(..header_end);
    let mut next_line: u64 = 2;
    // The block being read while `buf`'s lines parse.
    let mut next = Vec::new();
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
        if !ended && buf.len() - parse_end <= MAX_LINE_BYTES + 1 {
            // The carry is short (`check_carry` has nothing to say): read
            // the next block behind it while these lines parse.
            next.clear();
            next.extend_from_slice(&buf[parse_end..]);
            let (parsed, read) = std::thread::scope(|s| {
                let reader = std::thread::Builder::new()
                    .spawn_scoped(s, || input.read_block(&mut next, block_bytes));
                let parsed = match parse_end {
                    0 => Ok(0),
                    _ => parse_lines_into(
                        &buf[..parse_end],
                        next_line,
                        &ctx,
                        mode,
                        &mut pixels,
                        &mut labels,
                    ),
                };
                let read = reader.ok().map(|reader| {
                    reader
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                });
                (parsed, read)
            });
            // A bad line comes before whatever the read met further on.
            next_line += parsed? as u64;
            ended = match read {
                Some(read) => read?,
                // No thread to be had: read now.
                None => input.read_block(&mut next, block_bytes)?,
            };
            std::mem::swap(&mut buf, &mut next);
            continue;
        }
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

/// Reads on into `first` until line 1 is complete and something follows
/// it, and returns where line 1 ends (just after its `\n`); `None` once
/// the input has `ended` first, when the whole file is in `first`. A line 1
/// still unfinished past [`MAX_LINE_BYTES`] is reported here (after the
/// binary-data check), its length counted without keeping it.
fn read_line_one(
    input: &mut DataReader,
    first: &mut Vec<u8>,
    ended: &mut bool,
    bom: usize,
    path: &Path,
    block_bytes: usize,
) -> Result<Option<usize>, DataError> {
    loop {
        if *ended {
            return Ok(None);
        }
        let text = &first[bom..];
        match memchr(b'\n', text) {
            Some(i) if last_content(text).is_some() || text.len() > MAX_LINE_BYTES => {
                return Ok(Some(bom + i + 1));
            }
            None if text.len() > MAX_LINE_BYTES + 1 => {
                check_text(text, bom, path)?;
                let bytes = long_line_len(input, text, block_bytes)?;
                return Err(line_too_long(path, 1, bytes));
            }
            _ => *ended = input.read_block(first, block_bytes)?,
        }
    }
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
