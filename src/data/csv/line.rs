//! One data line into one row: the allocation-free byte fast path for plain
//! `digits,digits,...` lines, and the `csv`-crate fallback for lines with
//! quotes, both checking in the same order so they report the same fault.
//! A fault carries no file or line number; the chunk that met it adds them.

use std::io::Cursor;

use memchr::{memchr, memchr_iter};

use super::{line_too_long, strip_cr, Ctx, Layout, MAX_LINE_BYTES};
use crate::data::error::Found;
use crate::data::DataError;

/// Reads single lines as CSV records with the `csv` crate, reusing one
/// reader and one record across lines: building a reader per line costs
/// more than parsing the line.
pub(super) struct LineReader<'a> {
    reader: Option<csv::Reader<Cursor<&'a [u8]>>>,
    record: csv::ByteRecord,
}

impl<'a> LineReader<'a> {
    pub(super) fn new() -> LineReader<'a> {
        LineReader {
            reader: None,
            record: csv::ByteRecord::new(),
        }
    }

    /// Reads `line` (which holds no `\n`) as one record; `\r` is an ordinary
    /// byte there, as in the fast path.
    pub(super) fn read(&mut self, line: &'a [u8]) -> &csv::ByteRecord {
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

/// A bad line, before the file name and line number are attached.
#[derive(Debug)]
pub(super) enum Fault {
    TooLong(usize),
    FieldCount(usize),
    /// 0-based field index and the field's content.
    Value(usize, Found),
}

impl Fault {
    pub(super) fn into_error(self, ctx: &Ctx<'_>, line: u64) -> DataError {
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

/// Parses one data line (no `\n`; a final `\r` is dropped) into `px` and,
/// for a labeled layout, `label`. The checks, in order: length, field count,
/// then each field left to right; so the fast and `csv`-crate paths agree on
/// which fault a line with several faults reports.
pub(super) fn parse_line<'a>(
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
