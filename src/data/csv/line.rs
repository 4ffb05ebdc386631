//! One data line into one row: the allocation-free byte fast path for plain
//! `digits,digits,...` lines, and the `csv`-crate fallback for lines with
//! quotes, both checking in the same order so they report the same fault.
//! A fault carries no file or line number; the chunk that met it adds them.

use std::io::Cursor;

use memchr::{memchr, memchr_iter};

use super::{fields, line_too_long, strip_cr, Ctx, Layout, MAX_LINE_BYTES};
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
    match parse_plain(line, layout, px, label, fields::vector_fields()) {
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
/// report, found by [`classify_fault`]. With `vector`, whole blocks of
/// valid fields are read at once ([`fields::blocks`]) wherever they fit,
/// and this loop reads the rest, with the same results.
#[inline]
fn parse_plain(
    line: &[u8],
    layout: Layout,
    px: &mut [u8],
    label: &mut u8,
    vector: bool,
) -> Result<(), Fault> {
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
        if vector {
            (pos, k) = fields::blocks(line, pos, px, k);
            if k == px.len() {
                break;
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sample::TRAIN_SAMPLE_GZ;
    use crate::data::source::maybe_gunzip;
    use crate::data::FEATURES;
    use crate::rng::{SeededRng, Stream};
    use std::path::Path;

    /// The fast path with and without the vector blocks: the same outcome,
    /// and on success the same pixels and label.
    fn assert_paths_agree(line: &[u8], layout: Layout) {
        let (mut a, mut b) = ([0u8; FEATURES], [0u8; FEATURES]);
        let (mut la, mut lb) = (0u8, 0u8);
        let bytes = parse_plain(line, layout, &mut a, &mut la, false);
        let vector = parse_plain(line, layout, &mut b, &mut lb, true);
        let text = String::from_utf8_lossy(line);
        assert_eq!(
            format!("{bytes:?}"),
            format!("{vector:?}"),
            "outcome of {text:?}"
        );
        if bytes.is_ok() {
            assert_eq!(a, b, "pixels of {text:?}");
            assert_eq!(la, lb, "label of {text:?}");
        }
    }

    /// One field, mostly what MNIST holds, sometimes what it must not.
    fn field(rng: &mut SeededRng) -> String {
        const ODD: [&str; 22] = [
            "", " ", "a", "\"", "-1", "+3", "2 5", "0255", "1000", "00000", "256", "260", "300",
            "999", "255", "250", "199", "007", "00", "09", "1.5", "\r",
        ];
        match rng.below(100) {
            0..=59 => "0".to_string(),
            60..=89 => rng.below(256).to_string(),
            90..=95 => format!("{:03}", rng.below(256)),
            _ => ODD[rng.below(ODD.len())].to_string(),
        }
    }

    #[test]
    fn vector_blocks_read_what_the_byte_loop_reads() {
        if !crate::simd::cpu_has_avx2_popcnt() {
            eprintln!("skipped: this CPU has no AVX2");
            return;
        }
        let mut rng = SeededRng::new(14, Stream::Split);
        for layout in [Layout::Train, Layout::Test] {
            for case in 0..3000 {
                // Mostly the right field count, sometimes one off either way.
                let count = match case % 7 {
                    3 => layout.fields() - 1,
                    5 => layout.fields() + 1,
                    _ => layout.fields(),
                };
                let mut parts: Vec<String> = (0..count)
                    .map(|_| {
                        if case % 3 == 0 {
                            rng.below(256).to_string()
                        } else {
                            field(&mut rng)
                        }
                    })
                    .collect();
                if layout.labeled() && case % 4 != 0 {
                    parts[0] = rng.below(10).to_string();
                }
                // Some lines are all valid, so the blocks run to the tail.
                if case % 2 == 0 {
                    for p in parts.iter_mut().skip(1) {
                        if p.parse::<u32>().map_or(true, |v| v > 255 || p.len() > 3) {
                            *p = "0".to_string();
                        }
                    }
                }
                let line = parts.join(",");
                assert_paths_agree(line.as_bytes(), layout);
            }
        }
    }

    #[test]
    fn vector_blocks_read_real_digits_and_every_value() {
        if !crate::simd::cpu_has_avx2_popcnt() {
            eprintln!("skipped: this CPU has no AVX2");
            return;
        }
        let text = maybe_gunzip(TRAIN_SAMPLE_GZ.to_vec(), Path::new("sample")).unwrap();
        let mut checked = 0;
        for line in text
            .split(|&b| b == b'\n')
            .skip(1)
            .filter(|l| !l.is_empty())
            .take(2000)
        {
            let (mut px, mut label) = ([0u8; FEATURES], 0u8);
            parse_plain(line, Layout::Train, &mut px, &mut label, true).expect("a valid row");
            let plain: Vec<u8> = line
                .split(|&b| b == b',')
                .map(|f| std::str::from_utf8(f).unwrap().parse().unwrap())
                .collect();
            assert_eq!(label, plain[0]);
            assert_eq!(&px[..], &plain[1..]);
            // The blocks alone, from the first pixel (after a one-digit
            // label): they read all but the last few dozen fields.
            let mut blocks_px = [0u8; FEATURES];
            let (_, k) = fields::blocks(line, 2, &mut blocks_px, 0);
            assert!(k > FEATURES - 60, "the blocks read {k} fields");
            assert_eq!(&blocks_px[..k], &plain[1..=k]);
            checked += 1;
        }
        assert_eq!(checked, 2000);
        // Every value 0-999 with and without leading zeros, at every offset
        // of a block, between zeros.
        for value in 0..1000u32 {
            for form in [format!("{value}"), format!("{value:03}")] {
                for at in 0..40 {
                    let mut parts = vec!["0".to_string(); FEATURES];
                    parts[at] = form.clone();
                    let line = parts.join(",");
                    assert_paths_agree(line.as_bytes(), Layout::Test);
                    let (mut px, mut label) = ([0u8; FEATURES], 0u8);
                    let read =
                        parse_plain(line.as_bytes(), Layout::Test, &mut px, &mut label, true);
                    assert_eq!(read.is_ok(), value <= 255, "{form} at field {at}");
                    if value <= 255 {
                        assert_eq!(u32::from(px[at]), value, "{form} at field {at}");
                    }
                }
            }
        }
    }
}
