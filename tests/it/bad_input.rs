//! Every bad input through the real binary: one clear stderr line naming the
//! file (and line, record or array), exit code 1, no panic, no backtrace,
//! and no output file created. Valid variants (CRLF, BOM, quoted fields, no
//! final newline) load.
//!
//! `cargo test --test bad_input -- --nocapture` prints the table of cases,
//! messages and exit codes.

use crate::common::{bin, tree, tree_but_empty_runs};
use ndarray::{Array2, Array3};
use ndarray_npy::NpzWriter;
use std::io::Write;
use std::path::Path;
use std::process::Output;

const FEATURES: usize = 784;

fn train_header() -> String {
    let pixels: Vec<String> = (0..FEATURES).map(|i| format!("pixel{i}")).collect();
    format!("label,{}", pixels.join(","))
}

fn test_header() -> String {
    let pixels: Vec<String> = (0..FEATURES).map(|i| format!("pixel{i}")).collect();
    pixels.join(",")
}

/// Pixel fields of a plausible row `i` (a diagonal stroke), as strings.
fn pixel_fields(i: usize) -> Vec<String> {
    (0..FEATURES)
        .map(|p| {
            if (p + i).is_multiple_of(29) {
                "200".to_string()
            } else {
                "0".to_string()
            }
        })
        .collect()
}

fn train_row(i: usize) -> String {
    format!("{},{}", i % 10, pixel_fields(i).join(","))
}

fn test_row(i: usize) -> String {
    pixel_fields(i).join(",")
}

/// A valid Kaggle train.csv of `rows` rows ("\n" line ends, final newline).
fn train_csv(rows: usize) -> String {
    let mut s = train_header();
    for i in 0..rows {
        s.push('\n');
        s.push_str(&train_row(i));
    }
    s.push('\n');
    s
}

fn test_csv(rows: usize) -> String {
    let mut s = test_header();
    for i in 0..rows {
        s.push('\n');
        s.push_str(&test_row(i));
    }
    s.push('\n');
    s
}

/// A train.csv whose data line `line` (1-based file line, >= 2) is replaced.
fn train_csv_with_line(rows: usize, line: usize, content: &str) -> String {
    let text = train_csv(rows);
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[line - 1] = content.to_string();
    lines.join("\n") + "\n"
}

/// Line `i` with pixel `p` (0-based) set to `value`.
fn row_with_pixel(i: usize, p: usize, value: &str) -> String {
    let mut f = pixel_fields(i);
    f[p] = value.to_string();
    format!("{},{}", i % 10, f.join(","))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn idx_images(count: u32, images: usize) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 3];
    v.extend(count.to_be_bytes());
    v.extend(28u32.to_be_bytes());
    v.extend(28u32.to_be_bytes());
    v.extend(std::iter::repeat_n(7u8, images * FEATURES));
    v
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 1];
    v.extend((labels.len() as u32).to_be_bytes());
    v.extend_from_slice(labels);
    v
}

/// Writes an `.npz` with the given arrays (any element type or rank).
fn npz(path: &Path, fill: impl FnOnce(&mut NpzWriter<std::fs::File>)) {
    let mut w = NpzWriter::new(std::fs::File::create(path).unwrap());
    fill(&mut w);
    w.finish().unwrap();
}

fn good_model_arrays(w: &mut NpzWriter<std::fs::File>, h: usize) {
    w.add_array("w1", &Array2::<f32>::zeros((h, FEATURES)))
        .unwrap();
    w.add_array("b1", &Array2::<f32>::zeros((h, 1))).unwrap();
    w.add_array("w2", &Array2::<f32>::zeros((10, h))).unwrap();
    w.add_array("b2", &Array2::<f32>::zeros((10, 1))).unwrap();
}

/// One bad-input case: files to create, the command, what the one error
/// line must contain.
struct Case {
    name: &'static str,
    files: Vec<(&'static str, Vec<u8>)>,
    args: Vec<String>,
    /// Substrings the message must contain (the file name is one).
    expect: Vec<&'static str>,
    /// Exit code: 1 for bad input; 2 for clap's usage errors.
    code: i32,
}

fn case(
    name: &'static str,
    files: Vec<(&'static str, Vec<u8>)>,
    args: &[&str],
    expect: &[&'static str],
) -> Case {
    Case {
        name,
        files,
        args: args.iter().map(|s| s.to_string()).collect(),
        expect: expect.to_vec(),
        code: 1,
    }
}

/// `train --data FILE` on a bad data file.
fn train_on(
    name: &'static str,
    file: &'static str,
    bytes: Vec<u8>,
    expect: &[&'static str],
) -> Case {
    case(
        name,
        vec![(file, bytes)],
        &["train", "--data", file, "--epochs", "1", "--quiet"],
        expect,
    )
}

/// Files every case may use (created only where a case lists them).
fn run_case(c: &Case) -> (String, i32) {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in &c.files {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let before = tree(dir.path());
    let o: Output = bin()
        .current_dir(dir.path())
        .args(&c.args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("binary runs");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let code = o.status.code().unwrap_or(-1);
    let first = err.lines().next().unwrap_or("").to_string();
    assert_eq!(code, c.code, "{}: exit code; stderr: {err}", c.name);
    assert!(
        !err.contains("panicked") && !err.contains("backtrace") && !err.contains("RUST_BACKTRACE"),
        "{}: panic: {err}",
        c.name
    );
    if c.code == 1 {
        assert_eq!(err.lines().count(), 1, "{}: one line: {err}", c.name);
    }
    assert!(first.starts_with("error: "), "{}: {first}", c.name);
    for want in &c.expect {
        assert!(first.contains(want), "{}: lacks {want:?}: {first}", c.name);
    }
    // `train` may leave the `runs` folder it made, empty: no run folder.
    assert_eq!(
        tree_but_empty_runs(dir.path()),
        before,
        "{}: files were created, changed or removed",
        c.name
    );
    (first, code)
}

fn run_table(cases: &[Case]) {
    let mut rows = Vec::new();
    for c in cases {
        let (msg, code) = run_case(c);
        rows.push(format!(
            "| {} | `{}` | {} |",
            c.name,
            msg.replace('|', "\\|"),
            code
        ));
    }
    eprintln!(
        "| case | message | exit |\n|---|---|---|\n{}",
        rows.join("\n")
    );
}

#[test]
fn bad_data_files_get_one_clear_line() {
    let header_only = train_header() + "\n";
    let mut wrong_header = train_header();
    wrong_header = wrong_header.replace("pixel5,", "pixel_5,");
    wrong_header.push('\n');
    wrong_header.push_str(&train_row(0));
    let valid = train_csv(20);
    let gz = gzip(valid.as_bytes());
    let truncated_gz = gz[..gz.len() / 2].to_vec();
    let mut fake_gz = vec![0x1f, 0x8b];
    fake_gz.extend_from_slice(b"this was never compressed\n");
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 0x80)
        .collect();
    let huge_line = format!("{}\n{}\n", train_header(), "1,".repeat(3_000_000));
    let cases = vec![
        train_on("empty file", "train.csv", vec![], &["train.csv", "empty"]),
        train_on(
            "header only",
            "train.csv",
            header_only.into_bytes(),
            &["train.csv", "header but no data rows"],
        ),
        train_on(
            "missing header",
            "train.csv",
            format!("{}\n{}\n", train_row(0), train_row(1)).into_bytes(),
            &["train.csv:1", "header"],
        ),
        train_on(
            "wrong header",
            "train.csv",
            wrong_header.into_bytes(),
            &["train.csv", "header", "pixel5", "pixel_5"],
        ),
        train_on(
            "wrong field count",
            "train.csv",
            train_csv_with_line(5, 4, "3,0,0,0").into_bytes(),
            &["train.csv:4", "expected 785 fields", "found 4"],
        ),
        train_on(
            "non-numeric pixel",
            "train.csv",
            train_csv_with_line(5, 3, &row_with_pixel(1, 200, "abc")).into_bytes(),
            &["train.csv:3", "pixel200", "0-255", "\"abc\""],
        ),
        train_on(
            "fractional pixel",
            "train.csv",
            train_csv_with_line(5, 3, &row_with_pixel(1, 7, "1.5")).into_bytes(),
            &["train.csv:3", "pixel7", "\"1.5\""],
        ),
        train_on(
            "negative pixel",
            "train.csv",
            train_csv_with_line(5, 2, &row_with_pixel(0, 0, "-1")).into_bytes(),
            &["train.csv:2", "pixel0", "\"-1\""],
        ),
        train_on(
            "pixel > 255",
            "train.csv",
            train_csv_with_line(5, 6, &row_with_pixel(4, 783, "256")).into_bytes(),
            &["train.csv:6", "pixel783", "\"256\""],
        ),
        train_on(
            "label 10",
            "train.csv",
            train_csv_with_line(5, 3, &format!("10,{}", test_row(1))).into_bytes(),
            &["train.csv:3", "label", "0-9", "\"10\""],
        ),
        train_on(
            "label -1",
            "train.csv",
            train_csv_with_line(5, 3, &format!("-1,{}", test_row(1))).into_bytes(),
            &["train.csv:3", "label", "\"-1\""],
        ),
        train_on(
            "empty label",
            "train.csv",
            train_csv_with_line(5, 5, &format!(",{}", test_row(3))).into_bytes(),
            &["train.csv:5", "label", "\"\""],
        ),
        train_on(
            "truncated .gz",
            "train.csv.gz",
            truncated_gz,
            &["train.csv.gz", "truncated"],
        ),
        train_on(
            "fake .gz (gzip magic, not gzip)",
            "train.csv.gz",
            fake_gz,
            &["train.csv.gz", "gzip"],
        ),
        train_on(
            "binary garbage",
            "train.csv",
            garbage,
            &["train.csv", "binary data"],
        ),
        train_on(
            "a line of 3 million fields",
            "train.csv",
            huge_line.into_bytes(),
            &["train.csv:2", "bytes long"],
        ),
        train_on(
            "test.csv given to train",
            "test.csv",
            test_csv(5).into_bytes(),
            &[
                "test.csv",
                "looks like a Kaggle test.csv",
                "train.csv was expected",
            ],
        ),
        case(
            "test.csv given to eval",
            vec![("test.csv", test_csv(5).into_bytes()), ("m.npz", vec![])],
            &["eval", "--model", "model.npz", "--data", "test.csv"],
            &["model.npz"],
        ),
        train_on(
            "IDX images, truncated",
            "train-images-idx3-ubyte",
            idx_images(3, 2),
            &["train-images-idx3-ubyte", "truncated", "3 images"],
        ),
        train_on(
            "IDX bad magic",
            "train-images-idx3-ubyte",
            {
                let mut v = idx_images(1, 1);
                v[3] = 9;
                v
            },
            &["train-images-idx3-ubyte", "magic number is 0x00000809"],
        ),
        train_on(
            "IDX labels file given as images",
            "train-labels-idx1-ubyte",
            idx_labels(&[1, 2]),
            &["train-labels-idx1-ubyte", "labels file", "images file"],
        ),
        train_on(
            "IDX images without labels beside",
            "train-images-idx3-ubyte",
            idx_images(2, 2),
            &["train-images-idx3-ubyte", "no labels file"],
        ),
        case(
            "IDX label 12",
            vec![
                ("train-images-idx3-ubyte", idx_images(2, 2)),
                ("train-labels-idx1-ubyte", idx_labels(&[3, 12])),
            ],
            &["train", "--data", "train-images-idx3-ubyte", "--quiet"],
            &["train-labels-idx1-ubyte", "byte 9", "12", "0-9"],
        ),
        case(
            "IDX count mismatch",
            vec![
                ("train-images-idx3-ubyte", idx_images(2, 2)),
                ("train-labels-idx1-ubyte", idx_labels(&[3, 4, 5])),
            ],
            &["train", "--data", "train-images-idx3-ubyte", "--quiet"],
            &["train-images-idx3-ubyte", "2 images", "3 labels"],
        ),
        train_on("no such file", "other.csv", vec![], &["other.csv"]),
    ];
    // "no such file": point at a file that does not exist.
    let mut cases = cases;
    let last = cases.last_mut().unwrap();
    last.args[2] = "missing.csv".into();
    last.expect = vec!["missing.csv", "no such file"];
    // "test.csv given to eval": a valid model, so the data is what fails.
    let eval = cases
        .iter_mut()
        .find(|c| c.name == "test.csv given to eval")
        .unwrap();
    eval.files[1].0 = "model.npz";
    eval.expect = vec!["test.csv", "looks like a Kaggle test.csv"];
    let model_bytes = {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.npz");
        npz(&p, |w| good_model_arrays(w, 4));
        std::fs::read(&p).unwrap()
    };
    eval.files[1].1 = model_bytes;
    run_table(&cases);
}

#[test]
fn bad_model_files_get_one_clear_line_and_no_submission() {
    let dir = tempfile::tempdir().unwrap();
    let make = |f: &dyn Fn(&mut NpzWriter<std::fs::File>)| -> Vec<u8> {
        let p = dir.path().join("m.npz");
        npz(&p, |w| f(w));
        std::fs::read(&p).unwrap()
    };
    let h = 4;
    let wrong_shape = make(&|w| {
        w.add_array("w1", &Array2::<f32>::zeros((h, FEATURES)))
            .unwrap();
        w.add_array("b1", &Array2::<f32>::zeros((h, 1))).unwrap();
        w.add_array("w2", &Array2::<f32>::zeros((10, h + 1)))
            .unwrap();
        w.add_array("b2", &Array2::<f32>::zeros((10, 1))).unwrap();
    });
    let w1_784 = make(&|w| {
        w.add_array("w1", &Array2::<f32>::zeros((h, 783))).unwrap();
    });
    let int64 = make(&|w| {
        w.add_array("w1", &Array2::<i64>::zeros((h, FEATURES)))
            .unwrap();
    });
    let three_d = make(&|w| {
        w.add_array("w1", &Array3::<f32>::zeros((h, 28, 28)))
            .unwrap();
    });
    let nan = make(&|w| {
        let mut w1 = Array2::<f32>::zeros((h, FEATURES));
        w1[[2, 100]] = f32::NAN;
        w.add_array("w1", &w1).unwrap();
        w.add_array("b1", &Array2::<f32>::zeros((h, 1))).unwrap();
        w.add_array("w2", &Array2::<f32>::zeros((10, h))).unwrap();
        w.add_array("b2", &Array2::<f32>::zeros((10, 1))).unwrap();
    });
    let missing = make(&|w| {
        w.add_array("w1", &Array2::<f32>::zeros((h, FEATURES)))
            .unwrap();
        w.add_array("b1", &Array2::<f32>::zeros((h, 1))).unwrap();
    });
    let truncated = {
        let good = make(&|w| good_model_arrays(w, h));
        good[..good.len() / 2].to_vec()
    };
    let data = test_csv(3).into_bytes();
    let predict = |name: &'static str, model: Vec<u8>, expect: &[&'static str]| {
        case(
            name,
            vec![("model.npz", model), ("test.csv", data.clone())],
            &["predict", "--model", "model.npz", "--data", "test.csv"],
            expect,
        )
    };
    let cases = vec![
        predict(
            "model: w2 of the wrong shape",
            wrong_shape,
            &["model.npz", "'w2'", "(10, 4)", "(10, 5)"],
        ),
        predict(
            "model: w1 not 784 wide",
            w1_784,
            &["model.npz", "'w1'", "(H, 784)", "(4, 783)"],
        ),
        predict(
            "model: int64 w1",
            int64,
            &[
                "model.npz",
                "'w1'",
                "float32 or float64",
                "int64 of shape [4, 784]",
            ],
        ),
        predict(
            "model: 3-D w1",
            three_d,
            &[
                "model.npz",
                "'w1'",
                "2-D",
                "float32 of shape [4, 28, 28] (3-D)",
            ],
        ),
        predict("model: NaN weight", nan, &["model.npz", "NaN"]),
        predict(
            "model: array missing",
            missing,
            &["model.npz", "'w2' is missing"],
        ),
        predict(
            "model: truncated file",
            truncated,
            &["model.npz", "not a valid .npz"],
        ),
        predict(
            "model: not an npz",
            b"PK\x03\x04 nope".to_vec(),
            &["model.npz", "not a valid .npz"],
        ),
    ];
    run_table(&cases);
}

/// Absurd settings are refused before anything is loaded or written.
#[test]
fn absurd_settings_are_refused_with_a_message() {
    let train = |name: &'static str, args: &[&str], expect: &[&'static str]| {
        let mut all = vec!["train", "--epochs", "1", "--quiet"];
        all.extend_from_slice(args);
        case(name, vec![], &all, expect)
    };
    let threads = (4 * std::thread::available_parallelism().map_or(1, |n| n.get()) + 1).to_string();
    let threads: &'static str = Box::leak(threads.into_boxed_str());
    let mut cases = vec![
        train("--hidden 0", &["--hidden", "0"], &["--hidden", "0"]),
        train(
            "--batch-size 0",
            &["--batch-size", "0"],
            &["--batch-size", "at least 1"],
        ),
        train(
            "--split 0",
            &["--split", "0"],
            &["--split", "between 0 and 1"],
        ),
        train("--split 1.5", &["--split", "1.5"], &["--split", "1.5"]),
        train("--split NaN", &["--split", "NaN"], &["--split", "NaN"]),
        train(
            "--threads 4x cores + 1",
            &["--threads", threads],
            &["--threads", "not sensible", "cores"],
        ),
        train(
            "--threads 100000",
            &["--threads", "100000"],
            &["--threads 100000", "not sensible"],
        ),
        case(
            "--epochs 0",
            vec![],
            &["train", "--epochs", "0", "--quiet"],
            &["--epochs 0", "at least 1"],
        ),
        case(
            "--iterations 0",
            vec![],
            &[
                "train",
                "--batch-size",
                "full",
                "--iterations",
                "0",
                "--quiet",
            ],
            &["--iterations 0", "at least 1"],
        ),
        train("--lr -1", &["--lr=-1"], &["--lr", "positive", "-1"]),
        train("--lr NaN", &["--lr", "NaN"], &["--lr", "positive", "NaN"]),
        train("--lr 0", &["--lr", "0"], &["--lr", "positive"]),
        train(
            "--momentum 1.5",
            &["--momentum", "1.5"],
            &["--momentum", "1.5"],
        ),
        train(
            "--checkpoint-every 0",
            &["--checkpoint-every", "0"],
            &["--checkpoint-every", "at least 1"],
        ),
        train(
            "--resume missing file",
            &["--resume", "nope.ckpt.npz"],
            &["nope.ckpt.npz", "no such file"],
        ),
        case(
            "--resume a model file",
            vec![("model.npz", {
                let dir = tempfile::tempdir().unwrap();
                let p = dir.path().join("m.npz");
                npz(&p, |w| good_model_arrays(w, 10));
                std::fs::read(&p).unwrap()
            })],
            &["train", "--epochs", "1", "--quiet", "--resume", "model.npz"],
            &["model.npz", "not a checkpoint"],
        ),
        case(
            "--resume garbage",
            vec![("x.ckpt.npz", b"garbage".to_vec())],
            &[
                "train",
                "--epochs",
                "1",
                "--quiet",
                "--resume",
                "x.ckpt.npz",
            ],
            &["x.ckpt.npz", "not a valid checkpoint"],
        ),
    ];
    // clap's own usage errors: exit 2, then a "try --help" line.
    for c in cases.iter_mut().take(2) {
        c.code = 2;
    }
    run_table(&cases);
}

/// Divergence: exit 1, one line naming the step and suggesting a smaller
/// rate; an existing model file is left as it was.
#[test]
fn divergence_stops_with_one_line_and_keeps_the_old_model() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("train.csv"), train_csv(40)).unwrap();
    std::fs::write(dir.path().join("model.npz"), b"previous").unwrap();
    let o = bin()
        .current_dir(dir.path())
        .args([
            "train",
            "--data",
            "train.csv",
            "--optimizer",
            "sgd",
            "--lr",
            "1e30",
            "--lr-schedule",
            "constant",
            "--epochs",
            "3",
            "--quiet",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("diverged at epoch") && err.contains("smaller learning rate"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("model.npz")).unwrap(),
        b"previous"
    );
    assert!(!dir.path().join("metrics.csv").exists());
    eprintln!("| divergence (--lr 1e30) | `{}` | 1 |", err.trim_end());
}

/// CRLF, a UTF-8 BOM, quoted fields and no final newline all load.
#[test]
fn valid_variants_load() {
    let crlf = train_csv(20).replace('\n', "\r\n");
    let bom = format!("\u{feff}{}", train_csv(20));
    let quoted = {
        let text = train_csv(20);
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        for l in lines.iter_mut() {
            *l = l
                .split(',')
                .map(|f| format!("\"{f}\""))
                .collect::<Vec<_>>()
                .join(",");
        }
        lines.join("\n")
    };
    let no_final_newline = train_csv(20).trim_end().to_string();
    let gz = gzip(train_csv(20).as_bytes());
    let variants: Vec<(&str, &str, Vec<u8>)> = vec![
        ("CRLF", "train.csv", crlf.into_bytes()),
        ("BOM", "train.csv", bom.into_bytes()),
        (
            "quoted fields, no final newline",
            "train.csv",
            quoted.into_bytes(),
        ),
        (
            "no final newline",
            "train.csv",
            no_final_newline.into_bytes(),
        ),
        ("gzip", "train.csv.gz", gz),
    ];
    for (name, file, bytes) in variants {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(file), bytes).unwrap();
        let o = bin()
            .current_dir(dir.path())
            .args([
                "train",
                "--data",
                file,
                "--epochs",
                "1",
                "--json",
                "--quiet",
                "--model",
                "model.npz",
                "--metrics",
                "metrics.csv",
            ])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let out = String::from_utf8_lossy(&o.stdout);
        let j: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        assert_eq!(
            j["train_rows"].as_u64().unwrap() + j["heldout_rows"].as_u64().unwrap(),
            20,
            "{name}"
        );
        assert!(dir.path().join("model.npz").exists(), "{name}");
    }
}
