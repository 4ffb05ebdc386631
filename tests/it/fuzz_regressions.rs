//! Replays every input kept under `tests/fuzz_regressions/` (seeds, a
//! sample of the fuzzers' corpus, and any input that ever failed) through
//! the same checks the fuzz targets run: no panic, one-line errors naming
//! the file, well-formed datasets, serial and parallel CSV parses agreeing,
//! models read from `.npz` as ndarray-npy reads them.

use mnist_blas::data::fuzz::{
    check_csv_chunkings_agree, check_file_bytes, check_idx_bytes, csv_around,
};
use std::path::Path;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_regressions")
        .join(target);
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            (p.display().to_string(), std::fs::read(&p).unwrap())
        })
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no inputs in {}", dir.display());
    v
}

/// Runs `check` on each input, naming the input that fails.
fn replay(target: &str, check: impl Fn(&[u8]) + std::panic::RefUnwindSafe) {
    for (name, bytes) in inputs(target) {
        if let Err(e) = std::panic::catch_unwind(|| check(&bytes)) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{name}: {msg}");
        }
    }
}

#[test]
fn csv_raw_inputs() {
    replay("csv_raw", check_file_bytes);
}

#[test]
fn csv_body_inputs() {
    replay("csv_body", |b| {
        let (csv, expect) = csv_around(b);
        check_csv_chunkings_agree(&csv, expect);
        check_file_bytes(&csv);
    });
}

#[test]
fn idx_inputs() {
    replay("idx", check_idx_bytes);
}

#[test]
fn npz_inputs() {
    replay("npz", mnist_blas::npz::fuzz::check_npz_bytes);
}

/// The split-at-commas oracle the CSV checks use is not vacuous: on the
/// real sample it reads every row exactly as the parser does, and a bad
/// field makes it name the same line as the parser.
#[test]
fn split_oracle_reads_the_real_sample_like_the_parser() {
    use flate2::read::GzDecoder;
    use mnist_blas::data::csv::parse_csv;
    use mnist_blas::data::fuzz::split_oracle;
    use mnist_blas::data::Expect;
    use std::io::Read;
    let gz = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample/train-sample.csv.gz"),
    )
    .unwrap();
    let mut text = Vec::new();
    GzDecoder::new(&gz[..]).read_to_end(&mut text).unwrap();
    let parsed = parse_csv(&text, Path::new("s.csv"), Expect::Labeled).unwrap();
    let (pixels, labels) = split_oracle(&text, Expect::Labeled)
        .expect("plain CSV")
        .unwrap();
    assert_eq!(parsed.pixels, pixels);
    assert_eq!(parsed.labels.unwrap(), labels);
    // Break the 8th pixel of data line 100 (file line 101).
    let line_start = text
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .nth(99)
        .unwrap()
        .0
        + 1;
    let field = text[line_start..]
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b',')
        .nth(7)
        .unwrap()
        .0;
    text.insert(line_start + field + 1, b'x');
    assert_eq!(split_oracle(&text, Expect::Labeled), Some(Err(101)));
    let e = parse_csv(&text, Path::new("s.csv"), Expect::Labeled).unwrap_err();
    assert!(e.to_string().starts_with("s.csv:101:"), "{e}");
}
