//! The Kaggle CSV reader: what it accepts, what it rejects and how it says
//! so, and that its parallel result is exactly the serial one.

use std::io::Write;
use std::path::{Path, PathBuf};

use mnist_blas::data::csv::{parse_csv, parse_csv_in_chunks, parse_csv_serial, MAX_LINE_BYTES};
use mnist_blas::data::fuzz::assert_same_outcome;
use mnist_blas::data::{self, DataError, Dataset, Expect, FEATURES};

const NAME: &str = "data/train.csv";

fn path() -> &'static Path {
    Path::new(NAME)
}

/// A deterministic pixel value for row `r`, pixel `p`: covers 0, 255 and
/// one-, two- and three-digit values.
fn pixel(r: usize, p: usize) -> u8 {
    match (r * 31 + p * 7) % 11 {
        0..=4 => 0,
        5 => 255,
        6 => 9,
        7 => 10,
        _ => ((r * 13 + p * 17) % 256) as u8,
    }
}

fn header(labeled: bool) -> String {
    let pixels: Vec<String> = (0..FEATURES).map(|p| format!("pixel{p}")).collect();
    let pixels = pixels.join(",");
    if labeled {
        format!("label,{pixels}")
    } else {
        pixels
    }
}

fn row(r: usize, labeled: bool) -> String {
    let pixels: Vec<String> = (0..FEATURES).map(|p| pixel(r, p).to_string()).collect();
    let pixels = pixels.join(",");
    if labeled {
        format!("{},{pixels}", r % 10)
    } else {
        pixels
    }
}

/// A valid CSV of `rows` rows with `\n` line ends and a final newline.
fn csv_text(rows: usize, labeled: bool) -> String {
    let mut text = header(labeled);
    text.push('\n');
    for r in 0..rows {
        text.push_str(&row(r, labeled));
        text.push('\n');
    }
    text
}

/// `text` with 1-based file line `line` replaced by `with`.
fn replace_line(text: &str, line: usize, with: &str) -> String {
    let mut lines: Vec<&str> = text.split('\n').collect();
    lines[line - 1] = with;
    lines.join("\n")
}

/// Row `r` with field `index` (0-based; the label is field 0) set to `value`.
fn row_with_field(r: usize, index: usize, value: &str) -> String {
    let line = row(r, true);
    let mut fields: Vec<&str> = line.split(',').collect();
    fields[index] = value;
    fields.join(",")
}

fn parse(text: &str) -> Result<Dataset, DataError> {
    parse_csv(text.as_bytes(), path(), Expect::Labeled)
}

fn parse_err(text: &str) -> DataError {
    match parse(text) {
        Ok(d) => panic!("expected an error, parsed {} rows", d.len()),
        Err(e) => e,
    }
}

/// Every message is one line naming the file (and the line, when given).
fn assert_message(e: &DataError, line: Option<u64>, needle: &str) {
    let msg = e.to_string();
    println!("{msg}");
    assert!(!msg.contains('\n'), "message is not one line: {msg}");
    let location = match line {
        Some(l) => format!("{NAME}:{l}:"),
        None => format!("{NAME}:"),
    };
    assert!(
        msg.starts_with(&location),
        "{msg:?} does not start with {location:?}"
    );
    assert!(msg.contains(needle), "{msg:?} does not contain {needle:?}");
}

fn assert_same(a: &Dataset, b: &Dataset) {
    assert_eq!(a.len(), b.len());
    assert!(a.pixels == b.pixels, "pixels differ");
    assert_eq!(a.labels, b.labels);
}

// ---------------------------------------------------------------- accepts --

#[test]
fn parses_train_layout_values() {
    let d = parse(&csv_text(25, true)).unwrap();
    assert_eq!(d.len(), 25);
    assert_eq!(d.source, PathBuf::from(NAME));
    let labels = d.labels.as_ref().unwrap();
    for (r, &label) in labels.iter().enumerate() {
        assert_eq!(label, (r % 10) as u8);
        for p in 0..FEATURES {
            assert_eq!(d.row(r)[p], pixel(r, p), "row {r} pixel {p}");
        }
    }
}

#[test]
fn parses_test_layout_without_labels() {
    let d = parse_csv(csv_text(5, false).as_bytes(), path(), Expect::Unlabeled).unwrap();
    assert_eq!(d.len(), 5);
    assert!(d.labels.is_none());
    assert_eq!(d.row(4)[100], pixel(4, 100));
}

#[test]
fn train_layout_where_unlabeled_expected_keeps_labels() {
    let d = parse_csv(csv_text(3, true).as_bytes(), path(), Expect::Unlabeled).unwrap();
    assert_eq!(d.labels, Some(vec![0, 1, 2]));
}

#[test]
fn accepts_crlf_bom_quotes_no_final_newline_and_trailing_blank_lines() {
    let plain = csv_text(12, true);
    let expected = parse(&plain).unwrap();

    let crlf = plain.replace('\n', "\r\n");
    let bom = format!("\u{feff}{plain}");
    let no_final_newline = plain.trim_end().to_string();
    let no_final_newline_crlf = crlf.trim_end().to_string();
    let trailing_blank = format!("{plain}\n\n\r\n\n");
    let quoted_all = plain
        .lines()
        .map(|l| {
            l.split(',')
                .map(|f| format!("\"{f}\""))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let quoted_some = replace_line(&plain, 5, &row(3, true).replacen('0', "\"0\"", 3));
    let everything = format!("\u{feff}{}\r\n\r\n", quoted_all.replace('\n', "\r\n"));

    for (what, text) in [
        ("crlf", crlf),
        ("bom", bom),
        ("no final newline", no_final_newline),
        ("no final newline, crlf", no_final_newline_crlf),
        ("trailing blank lines", trailing_blank),
        ("all fields quoted", quoted_all),
        ("some fields quoted", quoted_some),
        ("bom + crlf + quotes + blank lines", everything),
    ] {
        let d = parse(&text).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_same(&d, &expected);
    }
}

#[test]
fn accepts_leading_zeros() {
    let text = replace_line(
        &csv_text(3, true),
        3,
        &row_with_field(1, 0, "01").replacen(",0,", ",000,", 1),
    );
    let d = parse(&text).unwrap();
    assert_same(&d, &parse(&csv_text(3, true)).unwrap());
}

// ---------------------------------------------------------------- rejects --

#[test]
fn empty_file() {
    for text in ["", "\n", "\r\n\n", "\u{feff}"] {
        let e = parse_err(text);
        assert!(matches!(e, DataError::EmptyFile { .. }), "{text:?}: {e:?}");
        assert_message(&e, None, "empty");
    }
}

#[test]
fn header_only() {
    for text in [
        header(true),
        format!("{}\n", header(true)),
        format!("{}\r\n\r\n", header(true)),
    ] {
        let e = parse_err(&text);
        assert!(matches!(e, DataError::HeaderOnly { .. }), "{e:?}");
        assert_message(&e, None, "no data rows");
    }
}

#[test]
fn unlabeled_layout_where_labeled_expected() {
    let e = parse_err(&csv_text(3, false));
    assert!(matches!(e, DataError::NoLabels { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "data/train.csv: header: this looks like a Kaggle test.csv (784 pixel columns, no label) \
         but a labeled train.csv was expected"
    );
}

#[test]
fn wrong_header() {
    let text = replace_line(&csv_text(2, true), 1, "id,value,other");
    let e = parse_err(&text);
    match &e {
        DataError::BadHeader { found, .. } => assert!(found.contains("3 columns"), "{found}"),
        other => panic!("{other:?}"),
    }
    assert_message(&e, None, "header: expected \"label,pixel0,...,pixel783\"");
}

#[test]
fn header_with_a_column_out_of_order() {
    let bad = header(true).replace("pixel3,pixel4", "pixel4,pixel3");
    let e = parse_err(&replace_line(&csv_text(2, true), 1, &bad));
    match &e {
        DataError::BadHeader {
            expected, found, ..
        } => {
            assert_eq!(expected, "\"pixel3\" as field 5");
            assert_eq!(found, "\"pixel4\"");
        }
        other => panic!("{other:?}"),
    }
    assert_message(
        &e,
        None,
        "header: expected \"pixel3\" as field 5, found \"pixel4\"",
    );
}

#[test]
fn header_one_column_short() {
    let bad = header(true).replace(",pixel783", "");
    let e = parse_err(&replace_line(&csv_text(2, true), 1, &bad));
    assert!(
        matches!(e, DataError::BadHeader { ref found, .. } if found.contains("(784 columns)")),
        "{e:?}"
    );
}

#[test]
fn missing_header() {
    let text = csv_text(3, true);
    let without: String = text.split_once('\n').unwrap().1.to_string();
    let e = parse_err(&without);
    assert!(matches!(e, DataError::MissingHeader { .. }), "{e:?}");
    assert_message(&e, Some(1), "looks like a data row");
}

#[test]
fn wrong_field_count() {
    let text = csv_text(20, true);
    let short = row(5, true).rsplit_once(',').unwrap().0.to_string();
    let long = format!("{},0", row(5, true));
    for (line, bad, found) in [
        (7usize, short, 784usize),
        (16, long, 786),
        (3, String::new(), 0),
    ] {
        let e = parse_err(&replace_line(&text, line, &bad));
        match &e {
            DataError::FieldCount {
                line: l,
                expected,
                found: f,
                ..
            } => {
                assert_eq!((*l, *expected, *f), (line as u64, 785, found));
            }
            other => panic!("{other:?}"),
        }
        assert_message(&e, Some(line as u64), "expected 785 fields");
    }
}

#[test]
fn field_count_beats_bad_value_on_the_same_line() {
    // Both the fast path and the csv-crate path check the count first.
    let bad = format!("{},x", row_with_field(0, 3, "-1"));
    let quoted = format!("\"1\",{bad}");
    for line in [bad, quoted] {
        let e = parse_err(&replace_line(&csv_text(4, true), 3, &line));
        assert!(matches!(e, DataError::FieldCount { line: 3, .. }), "{e:?}");
    }
}

#[test]
fn bad_pixels() {
    let text = csv_text(20, true);
    for (value, shown) in [
        ("256", "\"256\""),
        ("", "\"\""),
        ("x", "\"x\""),
        ("1.5", "\"1.5\""),
        ("-1", "\"-1\""),
        (" 5", "\" 5\""),
        ("1e2", "\"1e2\""),
        ("99999999999999999999", "\"99999999999999999999\""),
        ("\"256\"", "\"256\""),
        ("\"\"", "\"\""),
    ] {
        let e = parse_err(&replace_line(&text, 17, &row_with_field(15, 202, value)));
        match &e {
            DataError::BadPixel {
                line,
                field,
                column,
                found,
                ..
            } => {
                assert_eq!(
                    (*line, *field, column.as_str()),
                    (17, 203, "pixel201"),
                    "{value:?}"
                );
                assert_eq!(found.to_string(), shown);
            }
            other => panic!("{value:?}: {other:?}"),
        }
        assert_eq!(
            e.to_string(),
            format!(
                "data/train.csv:17: field 203 (pixel201): expected an integer 0-255, found {shown}"
            )
        );
    }
}

#[test]
fn bad_pixel_in_first_and_last_column() {
    let text = csv_text(4, true);
    let e = parse_err(&replace_line(&text, 2, &row_with_field(0, 1, "300")));
    assert!(
        matches!(e, DataError::BadPixel { line: 2, field: 2, ref column, .. } if column == "pixel0"),
        "{e:?}"
    );
    let e = parse_err(&replace_line(&text, 5, &row_with_field(3, 784, "2x")));
    assert!(
        matches!(e, DataError::BadPixel { line: 5, field: 785, ref column, .. } if column == "pixel783"),
        "{e:?}"
    );
}

#[test]
fn bad_pixel_in_test_layout_counts_fields_without_label() {
    let text = csv_text(4, false);
    let bad: Vec<String> = row(1, false)
        .split(',')
        .enumerate()
        .map(|(i, f)| {
            if i == 201 {
                "abc".to_string()
            } else {
                f.to_string()
            }
        })
        .collect();
    let e = parse_csv(
        replace_line(&text, 3, &bad.join(",")).as_bytes(),
        path(),
        Expect::Unlabeled,
    )
    .unwrap_err();
    assert!(
        matches!(e, DataError::BadPixel { line: 3, field: 202, ref column, .. } if column == "pixel201"),
        "{e:?}"
    );
}

#[test]
fn bad_labels() {
    let text = csv_text(10, true);
    for value in ["10", "", "a", "-1", "1.0", "255", "\"12\""] {
        let e = parse_err(&replace_line(&text, 9, &row_with_field(7, 0, value)));
        match &e {
            DataError::BadLabel { line, .. } => assert_eq!(*line, 9, "{value:?}"),
            other => panic!("{value:?}: {other:?}"),
        }
        assert_message(
            &e,
            Some(9),
            "field 1 (label): expected a digit label 0-9, found",
        );
    }
}

#[test]
fn found_text_is_cut_short() {
    let junk = "y".repeat(500);
    let e = parse_err(&replace_line(
        &csv_text(3, true),
        2,
        &row_with_field(0, 10, &junk),
    ));
    let msg = e.to_string();
    assert!(msg.len() < 150, "{msg}");
    assert!(
        msg.ends_with(&format!("\"{}\"...", "y".repeat(40))),
        "{msg}"
    );
}

#[test]
fn line_with_millions_of_fields_is_rejected_early() {
    let huge = "0,".repeat(2_000_000);
    let text = replace_line(&csv_text(5, true), 4, &huge);
    let start = std::time::Instant::now();
    let e = parse_err(&text);
    match &e {
        DataError::LineTooLong {
            line, bytes, limit, ..
        } => {
            assert_eq!((*line, *bytes, *limit), (4, 4_000_000, MAX_LINE_BYTES));
        }
        other => panic!("{other:?}"),
    }
    assert_message(&e, Some(4), "4000000 bytes long");
    assert!(start.elapsed().as_secs() < 5, "took {:?}", start.elapsed());
}

#[test]
fn huge_header_is_rejected_early() {
    let e = parse_err(&format!("{}\n1,2\n", "label,".repeat(1_000_000)));
    assert!(matches!(e, DataError::LineTooLong { line: 1, .. }), "{e:?}");
}

#[test]
fn many_empty_lines_report_the_first() {
    // Far more lines than valid rows could fill: must not allocate a row
    // per line, and must still name the first empty line.
    let mut text = csv_text(2, true);
    text.push_str(&"\n".repeat(1_000_000));
    text.push_str(&row(0, true));
    let e = parse_err(&text);
    assert!(
        matches!(
            e,
            DataError::FieldCount {
                line: 4,
                found: 0,
                ..
            }
        ),
        "{e:?}"
    );
    assert_message(&e, Some(4), "found 0 (an empty line)");
}

#[test]
fn binary_garbage() {
    let mut bytes = b"label,pix".to_vec();
    bytes.extend_from_slice(&[0, 1, 2, 0xff, b'\n']);
    let e = parse_csv(&bytes, path(), Expect::Labeled).unwrap_err();
    assert!(matches!(e, DataError::NotText { offset: 9, .. }), "{e:?}");
    assert_message(&e, None, "binary data");

    let e = parse_csv(b"\x89PNG\r\n\x1a\n\0\0", path(), Expect::Labeled).unwrap_err();
    assert!(matches!(e, DataError::NotText { offset: 0, .. }), "{e:?}");
}

#[test]
fn line_numbers_count_from_the_header_with_bom_and_crlf() {
    let text = format!(
        "\u{feff}{}",
        replace_line(&csv_text(9, true), 8, &row_with_field(6, 0, "x"))
    );
    let e = parse_err(&text.replace('\n', "\r\n"));
    assert!(matches!(e, DataError::BadLabel { line: 8, .. }), "{e:?}");
    assert_message(&e, Some(8), "\"x\"");
}

#[test]
fn stray_carriage_return_inside_a_line_is_a_bad_field() {
    let e = parse_err(&replace_line(
        &csv_text(3, true),
        3,
        &row_with_field(1, 5, "1\r2"),
    ));
    assert!(
        matches!(
            e,
            DataError::BadPixel {
                line: 3,
                field: 6,
                ..
            }
        ),
        "{e:?}"
    );
    assert_message(&e, Some(3), "\"1\\r2\"");
}

#[test]
fn unbalanced_quote_is_reported_on_its_line() {
    let e = parse_err(&replace_line(
        &csv_text(3, true),
        3,
        &row_with_field(1, 5, "\"1"),
    ));
    assert!(
        matches!(
            e,
            DataError::FieldCount {
                line: 3,
                found: 6,
                ..
            }
        ),
        "{e:?}"
    );
}

// --------------------------------------------------------------- parallel --

#[test]
fn parallel_equals_serial_on_many_chunks() {
    let text = csv_text(2000, true);
    let serial = parse_csv_serial(text.as_bytes(), path(), Expect::Labeled).unwrap();
    assert_eq!(serial.len(), 2000);
    for chunks in [1, 2, 3, 8, 17, 64, 1999, 2000, 5000] {
        let par = parse_csv_in_chunks(text.as_bytes(), path(), Expect::Labeled, chunks).unwrap();
        assert_same(&par, &serial);
    }
    assert_same(&parse(&text).unwrap(), &serial);
    // Without a final newline and with CRLF, the chunk split must still hold.
    let crlf = text.trim_end().replace('\n', "\r\n");
    let par = parse_csv_in_chunks(crlf.as_bytes(), path(), Expect::Labeled, 13).unwrap();
    assert_same(&par, &serial);
    // Every other line quoted: the csv-crate path, reused line after line.
    let mixed: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| match i % 2 {
            1 => l
                .split(',')
                .map(|f| format!("\"{f}\""))
                .collect::<Vec<_>>()
                .join(","),
            _ => l.to_string(),
        })
        .collect();
    let mixed = mixed.join("\n");
    for chunks in [1, 7] {
        let par = parse_csv_in_chunks(mixed.as_bytes(), path(), Expect::Labeled, chunks).unwrap();
        assert_same(&par, &serial);
    }
}

#[test]
fn parallel_equals_serial_unlabeled() {
    let text = csv_text(700, false);
    let serial = parse_csv_serial(text.as_bytes(), path(), Expect::Unlabeled).unwrap();
    let par = parse_csv_in_chunks(text.as_bytes(), path(), Expect::Unlabeled, 9).unwrap();
    assert_eq!(serial.len(), 700);
    assert_same(&par, &serial);
}

#[test]
fn first_bad_line_in_file_order_wins_across_chunks() {
    let text = csv_text(2000, true);
    let text = replace_line(&text, 1900, &row_with_field(0, 50, "999"));
    let text = replace_line(&text, 1200, "1,2,3");
    let text = replace_line(&text, 301, &row_with_field(0, 0, "x"));
    for chunks in [1, 2, 7, 64, 2000] {
        let e = parse_csv_in_chunks(text.as_bytes(), path(), Expect::Labeled, chunks).unwrap_err();
        assert!(
            matches!(e, DataError::BadLabel { line: 301, .. }),
            "{chunks} chunks: {e:?}"
        );
    }
    let e = parse_csv_serial(text.as_bytes(), path(), Expect::Labeled).unwrap_err();
    assert!(matches!(e, DataError::BadLabel { line: 301, .. }), "{e:?}");
}

#[test]
fn line_numbers_are_right_in_every_chunk() {
    let base = csv_text(500, true);
    for line in [2usize, 3, 250, 333, 500, 501] {
        let text = replace_line(&base, line, &row_with_field(0, 100, "256"));
        for chunks in [1, 4, 9, 100] {
            let e =
                parse_csv_in_chunks(text.as_bytes(), path(), Expect::Labeled, chunks).unwrap_err();
            assert_eq!(e.line(), Some(line as u64), "{chunks} chunks: {e}");
        }
    }
}

// ------------------------------------------------------------ files, gzip --

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[test]
fn gz_round_trip_and_sniffing() {
    let dir = tempfile::tempdir().unwrap();
    let text = csv_text(40, true);
    let expected = parse(&text).unwrap();
    let gz = gzip(text.as_bytes());
    let cases: [(&str, &[u8]); 4] = [
        ("train.csv", text.as_bytes()),
        ("train.csv.gz", &gz),
        ("plain-text-named.gz", text.as_bytes()),
        ("gzip-named.csv", &gz),
    ];
    for (name, bytes) in cases {
        let file = dir.path().join(name);
        std::fs::write(&file, bytes).unwrap();
        let d = data::load(&file, Expect::Labeled).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_same(&d, &expected);
        assert_eq!(d.source, file);
    }
    // Several gzip members (e.g. `cat a.gz b.gz`) are one stream.
    let (head, tail) = text.split_at(text.len() / 2);
    let mut multi = gzip(head.as_bytes());
    multi.extend(gzip(tail.as_bytes()));
    let file = dir.path().join("multi.csv.gz");
    std::fs::write(&file, multi).unwrap();
    assert_same(&data::load(&file, Expect::Labeled).unwrap(), &expected);
}

#[test]
fn truncated_and_fake_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let gz = gzip(csv_text(40, true).as_bytes());
    let truncated = dir.path().join("truncated.csv.gz");
    std::fs::write(&truncated, &gz[..gz.len() / 2]).unwrap();
    let fake = dir.path().join("fake.csv.gz");
    std::fs::write(&fake, b"\x1f\x8bthis is not really gzip data at all").unwrap();
    let bad_crc = dir.path().join("crc.csv.gz");
    let mut flipped = gz.clone();
    let at = flipped.len() - 6;
    flipped[at] ^= 0xff;
    std::fs::write(&bad_crc, flipped).unwrap();
    for file in [truncated, fake, bad_crc] {
        let e = data::load(&file, Expect::Labeled).unwrap_err();
        assert!(matches!(e, DataError::Gzip { .. }), "{e:?}");
        let msg = e.to_string();
        println!("{msg}");
        assert!(
            msg.starts_with(&format!(
                "{}: gzip data is truncated or corrupt",
                file.display()
            )),
            "{msg}"
        );
    }
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nope.csv");
    let e = data::load(&file, Expect::Labeled).unwrap_err();
    assert!(matches!(e, DataError::Io { .. }), "{e:?}");
    assert_eq!(e.path(), file);
    assert!(
        e.to_string()
            .starts_with(&format!("{}: cannot read", file.display())),
        "{e}"
    );
}

#[test]
fn from_parts_checks_shape() {
    let ok = Dataset::from_parts(vec![0; 2 * FEATURES], Some(vec![1, 9]), "x".into()).unwrap();
    assert_eq!(ok.len(), 2);
    for (pixels, labels) in [
        (vec![0; FEATURES + 1], None),
        (vec![0; FEATURES], Some(vec![1, 2])),
        (vec![0; FEATURES], Some(vec![10])),
    ] {
        let e = Dataset::from_parts(pixels, labels, "x".into()).unwrap_err();
        assert!(matches!(e, DataError::Shape { .. }), "{e:?}");
    }
}

// ------------------------------------------------------------- real data --

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn sample_files_load() {
    let train = data::load(
        &repo_file("data/sample/train-sample.csv.gz"),
        Expect::Labeled,
    )
    .unwrap();
    assert_eq!(train.len(), 6000);
    let labels = train.labels.as_ref().unwrap();
    assert!(labels.iter().all(|&l| l < 10));
    assert_eq!(labels[0], 5); // `zcat train.csv.gz | sed -n 2p | cut -d, -f1`
    let sum: u64 = train.row(0).iter().map(|&p| u64::from(p)).sum();
    assert_eq!(sum, 27525); // awk sum of line 2's pixel fields
    let mut counts = [0usize; 10];
    labels.iter().for_each(|&l| counts[usize::from(l)] += 1);
    assert_eq!(counts, [592, 671, 581, 608, 623, 514, 608, 651, 551, 601]);

    let test = data::load(
        &repo_file("data/sample/test-sample.csv.gz"),
        Expect::Unlabeled,
    )
    .unwrap();
    assert_eq!(test.len(), 1000);
    assert!(test.labels.is_none());
    let sum: u64 = test.row(0).iter().map(|&p| u64::from(p)).sum();
    assert_eq!(sum, 11759);

    let e = data::load(
        &repo_file("data/sample/test-sample.csv.gz"),
        Expect::Labeled,
    )
    .unwrap_err();
    assert!(matches!(e, DataError::NoLabels { .. }), "{e:?}");
}

/// The full Kaggle file, when it is there (about 1 s in a debug build).
#[test]
fn full_kaggle_train_csv() {
    let file = repo_file("../shared/data/digit-recognizer/train.csv.gz");
    if !file.exists() {
        println!("note: {} not found, skipping", file.display());
        return;
    }
    let start = std::time::Instant::now();
    let d = data::load(&file, Expect::Labeled).unwrap();
    println!("loaded {} rows in {:?}", d.len(), start.elapsed());
    assert_eq!(d.len(), 42000);
    let labels = d.labels.as_ref().unwrap();
    assert!(labels.iter().all(|&l| l < 10));
    assert_eq!(labels[0], 5); // `zcat train.csv.gz | sed -n 2p | cut -d, -f1`
    assert_eq!(labels[41999], 0);
    let sum: u64 = d.row(41999).iter().map(|&p| u64::from(p)).sum();
    assert_eq!(sum, 43525);
}

// ------------------------------------------------------ streaming blocks --

/// Block sizes for streaming tests: smaller than a header (a line straddles
/// several blocks), about a row, a few rows, and more than the whole text.
const BLOCK_SIZES: [usize; 5] = [16, 997, 1600, 7001, 1 << 20];

/// Writes `bytes` to `name` in `dir` and loads it in `block` byte blocks.
fn load_blocks(dir: &Path, name: &str, bytes: &[u8], block: usize) -> Result<Dataset, DataError> {
    let file = dir.join(name);
    std::fs::write(&file, bytes).unwrap();
    data::load_in_blocks(&file, Expect::Labeled, block)
}

/// Streaming `text` (plain and gzipped) gives exactly what parsing it whole
/// gives: the same rows, or the same error message (the file name aside).
fn assert_stream_matches_whole(what: &str, text: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let file_name = |gz: bool| if gz { "t.csv.gz" } else { "t.csv" };
    for gz in [false, true] {
        let bytes = if gz { gzip(text) } else { text.to_vec() };
        let file = dir.path().join(file_name(gz));
        let whole = parse_csv_serial(text, &file, Expect::Labeled);
        for block in BLOCK_SIZES {
            let streamed = load_blocks(dir.path(), file_name(gz), &bytes, block);
            let whole_way = format!("{what}, gz {gz}: whole");
            let streamed_way = format!("streamed in {block}-byte blocks");
            assert_same_outcome(&whole, &streamed, &whole_way, &streamed_way);
        }
    }
}

#[test]
fn streaming_equals_whole_file_on_valid_variants() {
    let plain = csv_text(9, true);
    let crlf = plain.replace('\n', "\r\n");
    let quoted = replace_line(&plain, 5, &row(3, true).replacen('0', "\"0\"", 3));
    for (what, text) in [
        ("plain", plain.clone()),
        ("crlf", crlf.clone()),
        ("bom", format!("\u{feff}{plain}")),
        ("no final newline", plain.trim_end().to_string()),
        ("no final newline, crlf", crlf.trim_end().to_string()),
        ("trailing blank lines", format!("{plain}\n\n\r\n\n\r")),
        ("some fields quoted", quoted),
        ("unlabeled layout", csv_text(4, false)),
    ] {
        assert_stream_matches_whole(what, text.as_bytes());
    }
}

#[test]
fn streaming_equals_whole_file_on_errors() {
    let base = csv_text(9, true);
    let header_only = format!("{}\n\r\n\n", header(true));
    let blank_inside = replace_line(&base, 6, "");
    let blank_run = format!("{base}\n\n\n{}\n", row(1, true));
    let unbalanced = replace_line(&base, 7, &row_with_field(1, 3, "\"7"));
    let cr_inside = replace_line(&base, 8, &row_with_field(1, 200, "7\r"));
    for (what, text) in [
        ("empty", String::new()),
        ("only line breaks", "\n\r\n\n".to_string()),
        ("header only", header_only),
        ("test layout, labels expected", csv_text(3, false)),
        (
            "missing header",
            base.lines().skip(1).collect::<Vec<_>>().join("\n"),
        ),
        ("blank line inside", blank_inside),
        ("blank lines then a row", blank_run),
        ("unbalanced quote", unbalanced),
        ("stray carriage return", cr_inside),
        ("short last line", format!("{base}1,2,3")),
    ] {
        assert_stream_matches_whole(what, text.as_bytes());
    }
}

#[test]
fn errors_in_later_blocks_name_the_right_line() {
    let dir = tempfile::tempdir().unwrap();
    let base = csv_text(30, true);
    for line in [2, 3, 11, 17, 30, 31] {
        let text = replace_line(&base, line, &row_with_field(0, 100, "256"));
        for block in BLOCK_SIZES {
            let e = load_blocks(dir.path(), "train.csv", text.as_bytes(), block).unwrap_err();
            assert_eq!(e.line(), Some(line as u64), "block {block}: {e}");
            assert!(matches!(e, DataError::BadPixel { field: 101, .. }), "{e:?}");
        }
    }
    // Two bad lines in different blocks: the first in the file is reported.
    let text = replace_line(&base, 25, &row_with_field(0, 5, "x"));
    let text = replace_line(&text, 12, &row_with_field(0, 0, "12"));
    for block in BLOCK_SIZES {
        let e = load_blocks(dir.path(), "train.csv", text.as_bytes(), block).unwrap_err();
        assert!(matches!(e, DataError::BadLabel { line: 12, .. }), "{e:?}");
    }
}

#[test]
fn streaming_rejects_a_long_line_without_holding_it() {
    let dir = tempfile::tempdir().unwrap();
    let huge = "0,".repeat(2_000_000);
    let text = replace_line(&csv_text(5, true), 4, &huge);
    for block in [4096, 1 << 20] {
        let e = load_blocks(dir.path(), "train.csv", text.as_bytes(), block).unwrap_err();
        match &e {
            DataError::LineTooLong { line, bytes, .. } => {
                assert_eq!((*line, *bytes), (4, 4_000_000), "block {block}")
            }
            other => panic!("block {block}: {other:?}"),
        }
    }
    // The same as the last line, without a final newline, and as the header.
    let text = format!("{}{}\r", csv_text(5, true), huge);
    let e = load_blocks(dir.path(), "train.csv", text.as_bytes(), 4096).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::LineTooLong {
                line: 7,
                bytes: 4_000_000,
                ..
            }
        ),
        "{e:?}"
    );
    let text = format!("{}\n{}", "label,".repeat(1_000_000), row(0, true));
    let e = load_blocks(dir.path(), "train.csv", text.as_bytes(), 4096).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::LineTooLong {
                line: 1,
                bytes: 6_000_000,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn streaming_many_empty_lines_report_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = csv_text(2, true);
    text.push_str(&"\n".repeat(1_000_000));
    text.push_str(&row(0, true));
    for block in [4096, 1 << 20] {
        let e = load_blocks(dir.path(), "train.csv", text.as_bytes(), block).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::FieldCount {
                    line: 4,
                    found: 0,
                    ..
                }
            ),
            "block {block}: {e:?}"
        );
    }
}

#[test]
fn streaming_truncated_gzip_mid_stream() {
    let dir = tempfile::tempdir().unwrap();
    let gz = gzip(csv_text(300, true).as_bytes());
    let file = dir.path().join("cut.csv.gz");
    std::fs::write(&file, &gz[..gz.len() * 3 / 4]).unwrap();
    for block in [1000, 1 << 20] {
        let e = data::load_in_blocks(&file, Expect::Labeled, block).unwrap_err();
        assert!(matches!(e, DataError::Gzip { .. }), "block {block}: {e:?}");
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("{}: gzip data is truncated", file.display())),
            "{msg}"
        );
    }
}

#[test]
fn streaming_equals_serial_on_the_real_sample() {
    let file = repo_file("data/sample/train-sample.csv.gz");
    let text = mnist_blas::data::source::read_bytes(&file).unwrap();
    let serial = parse_csv_serial(&text, &file, Expect::Labeled).unwrap();
    assert_eq!(serial.len(), 6000);
    for block in [1000, 64 * 1024, 1 << 20, data::csv::STREAM_BLOCK_BYTES] {
        let streamed = data::load_in_blocks(&file, Expect::Labeled, block).unwrap();
        assert_same(&streamed, &serial);
    }
}

/// A label and 784 pixels, all 0 except `lit` (position, value).
fn zero_row(label: u8, lit: &[(usize, &str)]) -> String {
    let mut fields = vec!["0".to_string(); FEATURES + 1];
    fields[0] = label.to_string();
    for &(p, v) in lit {
        fields[p + 1] = v.to_string();
    }
    fields.join(",")
}

/// The parser takes eight "0," fields at a time; rows that are mostly
/// zeros, with a non-zero (or an odd spelling of zero) at every offset
/// around those blocks, must parse exactly as field-by-field would.
#[test]
fn runs_of_zero_fields_parse_like_single_fields() {
    let positions = [0, 1, 6, 7, 8, 9, 15, 16, 17, 391, 775, 776, 777, 782, 783];
    let mut text = header(true);
    let mut expected: Vec<Vec<u8>> = Vec::new();
    let mut add = |line: String, px: Vec<u8>| {
        text.push('\n');
        text.push_str(&line);
        expected.push(px);
    };
    add(zero_row(3, &[]), vec![0; FEATURES]);
    for &p in &positions {
        for (spelled, value) in [("7", 7u8), ("255", 255), ("00", 0), ("000", 0)] {
            let mut px = vec![0; FEATURES];
            px[p] = value;
            add(zero_row(1, &[(p, spelled)]), px);
        }
    }
    text.push('\n');
    let d = parse(&text).unwrap();
    assert_eq!(d.len(), expected.len());
    for (r, want) in expected.iter().enumerate() {
        assert_eq!(d.row(r), &want[..], "row {r}");
    }
    let serial = parse_csv_serial(text.as_bytes(), path(), Expect::Labeled).unwrap();
    assert_eq!((serial.pixels, serial.labels), (d.pixels, d.labels));
}

/// Faults inside or right after a run of zeros are reported at the right
/// field, and a short or long row of zeros is a field-count error.
#[test]
fn faults_among_zero_runs_name_the_right_field() {
    let text = csv_text(3, true);
    for p in [5, 8, 15, 16, 783] {
        let e = parse_err(&replace_line(&text, 3, &zero_row(2, &[(p, "x")])));
        assert!(
            matches!(&e, DataError::BadPixel { line: 3, field, .. } if *field == p + 2),
            "pixel {p}: {e:?}"
        );
    }
    let short = zero_row(2, &[]);
    let short = &short[..short.len() - 2]; // drop the last ",0"
    let e = parse_err(&replace_line(&text, 2, short));
    assert!(matches!(e, DataError::FieldCount { line: 2, .. }), "{e:?}");
    let long = format!("{},0", zero_row(2, &[]));
    let e = parse_err(&replace_line(&text, 2, &long));
    assert!(matches!(e, DataError::FieldCount { line: 2, .. }), "{e:?}");
    let trailing_comma = format!("{},", zero_row(2, &[]));
    let e = parse_err(&replace_line(&text, 2, &trailing_comma));
    assert!(matches!(e, DataError::FieldCount { line: 2, .. }), "{e:?}");
}
