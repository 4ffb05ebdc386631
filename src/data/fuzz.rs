//! What the readers promise for *any* bytes, as checks that panic when a
//! promise is broken: the fuzz targets in `fuzz/` call these, and
//! `tests/fuzz_regressions.rs` replays every input the fuzzer ever found
//! through them. One definition, so a regression test checks exactly what
//! the fuzzer checked.
//!
//! The promises: never a panic; an error is one line that starts with the
//! file name and is short; a success is a well-formed [`Dataset`]; the
//! parallel CSV reader gives the same answer as the serial one, whatever
//! the chunking (same rows, or the same first error), and so does the
//! block-by-block file reader, whatever the block size.

use std::path::Path;

use super::{csv, idx, source, DataError, Dataset, Expect, CLASSES, FEATURES};

/// The name inputs are given in messages.
pub const FUZZ_PATH: &str = "fuzz-input";

/// Longest error message accepted: file name, line, expected, found (cut to
/// 40 characters) and some words. A longer one means content leaked into it.
const MAX_MESSAGE_CHARS: usize = 600;

/// Whole-file input: gunzip if gzip, then load as CSV or IDX both ways
/// (labeled and unlabeled), and compare the CSV reader's parallel and
/// serial answers.
pub fn check_file_bytes(bytes: &[u8]) {
    let path = Path::new(FUZZ_PATH);
    let raw = bytes;
    let bytes = match source::maybe_gunzip(bytes.to_vec(), path) {
        Ok(b) => b,
        Err(e) => {
            check_error(&e);
            // Streamed, the corrupt gzip may be met after a bad line, but
            // it must not load.
            for expect in [Expect::Labeled, Expect::Unlabeled] {
                for block in STREAM_BLOCKS {
                    let mut input = source::DataReader::from_bytes(raw.to_vec(), path);
                    match super::read_in_blocks(&mut input, path, expect, block) {
                        Ok(_) => panic!("corrupt gzip loaded with {block}-byte blocks"),
                        Err(e) => check_error(&e),
                    }
                }
            }
            return;
        }
    };
    for expect in [Expect::Labeled, Expect::Unlabeled] {
        // With no labels file beside `fuzz-input`, IDX + Labeled is an error.
        let whole = super::parse_bytes(&bytes, path, expect);
        match &whole {
            Ok(d) => check_dataset(d, expect),
            Err(e) => check_error(e),
        }
        for block in STREAM_BLOCKS {
            let mut input = source::DataReader::from_bytes(raw.to_vec(), path);
            let streamed = super::read_in_blocks(&mut input, path, expect, block);
            assert_same_outcome(
                &whole,
                &streamed,
                "whole-file",
                &format!("{block}-byte blocks"),
            );
        }
        if !idx::is_idx(&bytes) {
            check_csv_chunkings_agree(&bytes, expect);
        }
    }
}

/// IDX input: the bytes as an images file and as a labels file.
pub fn check_idx_bytes(bytes: &[u8]) {
    let path = Path::new(FUZZ_PATH);
    match idx::parse_images(bytes, path) {
        Ok(pixels) => assert_eq!(pixels.len() % FEATURES, 0, "partial image"),
        Err(e) => check_error(&e),
    }
    match idx::parse_labels(bytes, path) {
        Ok(labels) => assert!(labels.iter().all(|&l| usize::from(l) < CLASSES)),
        Err(e) => check_error(&e),
    }
}

/// Block sizes the streaming reader is checked with: lines straddle blocks.
const STREAM_BLOCKS: [usize; 2] = [16, 1000];

/// Two ways of reading the same input agree: the same rows, or the same
/// error message. `a` is read the `reference` way, `b` the `how` way.
pub fn assert_same_outcome(
    a: &Result<Dataset, DataError>,
    b: &Result<Dataset, DataError>,
    reference: &str,
    how: &str,
) {
    match (a, b) {
        (Ok(a), Ok(b)) => assert!(
            a.pixels == b.pixels && a.labels == b.labels,
            "{reference} and {how} reads differ"
        ),
        (Err(a), Err(b)) => assert_eq!(
            a.to_string(),
            b.to_string(),
            "{reference} and {how} reads report different errors"
        ),
        (a, b) => panic!(
            "{reference} read gave {:?} but {how} gave {:?}",
            a.as_ref().map(|d| d.len()),
            b.as_ref().map(|d| d.len())
        ),
    }
}

/// Pixels and labels, as [`split_oracle`] reads them.
pub type SplitRows = (Vec<u8>, Vec<u8>);

/// An independent reading of plain input (no quotes, no `\r`, no BOM, `\n`
/// line ends): split each data line at commas and read each field as ASCII
/// digits. `Some(Ok(rows))` when every line is valid (pixels and labels),
/// `Some(Err(line))` with the first invalid line's number, `None` when the
/// input is outside what this simple reading covers (the real parser's
/// other paths are checked against each other instead). The fast parser
/// takes shortcuts (eight zero fields at a time); this takes none.
pub fn split_oracle(bytes: &[u8], expect: Expect) -> Option<Result<SplitRows, u64>> {
    if bytes.iter().any(|&b| b == b'"' || b == b'\r') || bytes.starts_with(b"\xEF\xBB\xBF") {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.split('\n');
    let header = lines.next()?;
    // Only the exact header: header faults are the parser's own business.
    let labeled = expect == Expect::Labeled;
    let layout = if labeled {
        csv::Layout::Train
    } else {
        csv::Layout::Test
    };
    if header != layout.header() {
        return None;
    }
    let mut rows: Vec<&str> = lines.collect();
    while rows.last().is_some_and(|l| l.is_empty()) {
        rows.pop();
    }
    if rows.iter().any(|l| l.len() > csv::MAX_LINE_BYTES) {
        // Refused for its length before its fields are read.
        return None;
    }
    if rows.is_empty() {
        return None;
    }
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for (i, line) in rows.iter().enumerate() {
        let number = i as u64 + 2;
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != FEATURES + usize::from(labeled) {
            return Some(Err(number));
        }
        for (k, field) in fields.iter().enumerate() {
            let max = if labeled && k == 0 { 9 } else { 255 };
            if field.is_empty() || !field.bytes().all(|b| b.is_ascii_digit()) {
                return Some(Err(number));
            }
            let value = field
                .bytes()
                .fold(0u32, |v, b| (v * 10 + u32::from(b - b'0')).min(1000));
            if value > max {
                return Some(Err(number));
            }
            if labeled && k == 0 {
                labels.push(value as u8);
            } else {
                pixels.push(value as u8);
            }
        }
    }
    Some(Ok((pixels, labels)))
}

/// The parser's answer agrees with [`split_oracle`]'s, where that applies:
/// the same rows, or an error on the same line.
fn check_against_oracle(bytes: &[u8], expect: Expect, parsed: &Result<Dataset, DataError>) {
    let Some(oracle) = split_oracle(bytes, expect) else {
        return;
    };
    match (oracle, parsed) {
        (Ok((pixels, labels)), Ok(d)) => {
            assert!(
                d.pixels == pixels,
                "parsed pixels differ from a plain split"
            );
            assert_eq!(
                d.labels.clone().unwrap_or_default(),
                labels,
                "labels differ"
            );
        }
        (Err(line), Err(e)) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("{FUZZ_PATH}:{line}:")),
                "the first bad line is {line}, the parser said {msg:?}"
            );
        }
        (Ok(_), Err(e)) => panic!("a plain split reads every line, the parser said {e}"),
        (Err(line), Ok(_)) => panic!("line {line} is invalid, the parser accepted it"),
    }
}

/// The serial reader and the parallel one with several chunk counts agree.
pub fn check_csv_chunkings_agree(bytes: &[u8], expect: Expect) {
    let path = Path::new(FUZZ_PATH);
    let serial = csv::parse_csv_serial(bytes, path, expect);
    match &serial {
        Ok(d) => check_dataset(d, expect),
        Err(e) => check_error(e),
    }
    check_against_oracle(bytes, expect, &serial);
    for chunks in [2, 7] {
        let parallel = csv::parse_csv_in_chunks(bytes, path, expect, chunks);
        assert_same_outcome(&serial, &parallel, "serial", &format!("{chunks}-chunk"));
    }
}

/// A loaded dataset is what every reader guarantees.
pub fn check_dataset(d: &Dataset, expect: Expect) {
    assert!(!d.is_empty(), "a dataset with no rows loaded without error");
    assert_eq!(d.pixels.len() % FEATURES, 0, "partial row");
    if expect == Expect::Labeled {
        assert!(d.labels.is_some(), "labeled data expected, none loaded");
    }
    if let Some(labels) = &d.labels {
        assert_eq!(labels.len(), d.len(), "one label per row");
        assert!(
            labels.iter().all(|&l| usize::from(l) < CLASSES),
            "label > 9"
        );
    }
}

/// An error is one short line naming the file.
pub fn check_error(e: &DataError) {
    let msg = e.to_string();
    assert!(
        !msg.contains('\n') && !msg.contains('\r'),
        "multi-line: {msg:?}"
    );
    assert!(
        msg.starts_with(FUZZ_PATH),
        "does not name the file: {msg:?}"
    );
    assert!(
        msg.chars().count() <= MAX_MESSAGE_CHARS,
        "{} characters: {msg:?}",
        msg.chars().count()
    );
}

/// Builds a Kaggle CSV around fuzzed bytes so the fuzzer reaches the row
/// parser: byte 0 picks the layout (bit 0: train or test), line endings
/// (bit 1: CRLF), a BOM (bit 2) and a final newline (bit 3); each following
/// `\n`-separated piece becomes a data line, padded with `,0` fields up to
/// the layout's field count (commas counted naively, so quotes still shift
/// the real count).
pub fn csv_around(fuzzed: &[u8]) -> (Vec<u8>, Expect) {
    let Some((&flags, rest)) = fuzzed.split_first() else {
        return (Vec::new(), Expect::Unlabeled);
    };
    let train = flags & 1 == 0;
    let eol: &[u8] = if flags & 2 != 0 { b"\r\n" } else { b"\n" };
    let mut out = Vec::new();
    if flags & 4 != 0 {
        out.extend_from_slice(b"\xEF\xBB\xBF");
    }
    let layout = if train {
        csv::Layout::Train
    } else {
        csv::Layout::Test
    };
    let fields = layout.fields();
    out.extend_from_slice(layout.header().as_bytes());
    for piece in rest.split(|&b| b == b'\n') {
        out.extend_from_slice(eol);
        out.extend_from_slice(piece);
        let commas = piece.iter().filter(|&&b| b == b',').count();
        for _ in commas + 1..fields {
            out.extend_from_slice(b",0");
        }
    }
    if flags & 8 != 0 {
        out.extend_from_slice(eol);
    }
    let expect = if train {
        Expect::Labeled
    } else {
        Expect::Unlabeled
    };
    (out, expect)
}
