//! The parallel half of parsing a body of data lines: cut it into chunks at
//! line boundaries, count each chunk's lines (one row per line), give each
//! chunk its own slice of the output buffers, and parse the chunks on the
//! rayon pool. Because every chunk knows its rows up front, no row is
//! copied afterwards; because chunks finish in any order, the error kept is
//! the one of the earliest failing chunk, so the first bad line in *file*
//! order is reported.

use std::sync::atomic::{AtomicUsize, Ordering};

use memchr::{memchr, memchr_iter};
use rayon::prelude::*;

use super::line::{parse_line, LineReader};
use super::{Ctx, Layout};
use crate::data::{DataError, FEATURES};

/// How many lines a chunk parses between looks at whether an earlier chunk
/// already failed (then its own result cannot be the one reported).
const CANCEL_CHECK_LINES: usize = 256;

/// Whether chunks run on the calling thread or on the rayon pool (and into
/// about how many chunks the body is cut).
#[derive(Debug, Clone, Copy)]
pub(super) enum Mode {
    Serial,
    Parallel(usize),
}

/// Parses `lines` (whole data lines, the first being file line
/// `first_line`) and appends their rows to `pixels` and, for a labeled
/// layout, `labels`. Returns how many lines there were. On error the
/// buffers may hold a partial block; the caller discards them.
pub(super) fn parse_lines_into(
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
