//! `--split 1` (every row trains, nothing held out) and `--val-data FILE`
//! (the held-out rows from a file of their own): what `train`, the sweep and
//! checkpoints make of them, and the combinations refused.

use crate::common::{last_json, repo, run_in, stderr, stdout};
use mnist_blas::train::checkpoint::RunIdentity;
use mnist_blas::train::RunReport;
use serde_json::Value;
use std::io::Read;
use std::path::Path;
use std::process::Output;

/// The bundled sample's header and data lines (6,000 labeled rows).
fn sample() -> (String, Vec<String>) {
    let file = std::fs::File::open(repo("data/sample/train-sample.csv.gz")).unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .unwrap();
    let mut lines = text.lines().map(str::to_string);
    let header = lines.next().unwrap();
    (header, lines.collect())
}

/// A temp folder with cuts of the sample: `train.csv` (rows 0..2000),
/// `val.csv` (2000..2600) and `val2.csv` (2600..3200).
fn folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (header, rows) = sample();
    for (name, range) in [
        ("train.csv", 0..2000),
        ("val.csv", 2000..2600),
        ("val2.csv", 2600..3200),
    ] {
        let mut text = header.clone();
        for row in &rows[range] {
            text.push('\n');
            text.push_str(row);
        }
        text.push('\n');
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

/// `train` in `dir` with explicit outputs `NAME.npz` and `NAME.csv`.
fn train(dir: &Path, name: &str, args: &[&str]) -> Output {
    let model = format!("{name}.npz");
    let metrics = format!("{name}.csv");
    let mut all = vec![
        "train",
        "--model",
        &model,
        "--metrics",
        &metrics,
        "--threads",
        "2",
        "--json",
    ];
    all.extend_from_slice(args);
    run_in(dir, &all)
}

fn ok(o: &Output) {
    assert!(o.status.success(), "failed: {}", stderr(o));
}

#[test]
fn split_1_trains_on_every_row_and_says_nothing_is_held_out() {
    let dir = tempfile::tempdir().unwrap();
    // No --data: the built-in sample, 6,000 rows.
    let o = train(dir.path(), "m", &["--split", "1", "--epochs", "1"]);
    ok(&o);
    let j = last_json(&o);
    assert_eq!(j["train_rows"], 6000);
    assert_eq!(j["heldout_rows"], 0);
    assert_eq!(j["split"], 1.0);
    for key in [
        "heldout_accuracy",
        "heldout_loss",
        "heldout_correct",
        "heldout_eval",
        "best_epoch",
        "val_data",
    ] {
        assert_eq!(j[key], Value::Null, "{key}");
    }
    assert!(j["train_accuracy"].as_f64().unwrap() > 0.5, "{j}");
    let out = stdout(&o);
    let none =
        "held out: none (--split 1): no held-out accuracy; pass --val-data FILE to score one";
    assert!(
        out.contains(&format!("split: 6,000 train; {none}")),
        "{out}"
    );
    assert!(
        crate::common::unwrapped(&out).contains(&format!("split:      6,000 train; {none}")),
        "{out}"
    );
    assert!(out.contains("no held-out rows"), "{out}");
    // The metrics CSV has no held-out columns filled.
    let metrics = std::fs::read_to_string(dir.path().join("m.csv")).unwrap();
    let row = metrics.lines().nth(1).unwrap();
    assert_eq!(row.split(',').nth(3), Some(""), "{metrics}");
    assert_eq!(row.split(',').nth(4), Some(""), "{metrics}");
    // The typed report reads the line back, as `sweep --collect` does.
    let line = out.lines().last().unwrap();
    let report: RunReport = serde_json::from_str(line).unwrap();
    assert_eq!(report.heldout_accuracy, None);
    assert_eq!(report.train_rows, 6000);
}

#[test]
fn the_notebook_preset_runs_with_split_1_and_closes_without_a_test_set() {
    let dir = tempfile::tempdir().unwrap();
    // The preset's `--heldout-eval end` is a default, not asked for: no refusal.
    let o = train(
        dir.path(),
        "m",
        &["--preset", "notebook", "--split", "1", "--iterations", "5"],
    );
    ok(&o);
    let out = stdout(&o);
    assert!(
        out.contains("Test set: held out: none (--split 1): no held-out accuracy"),
        "{out}"
    );
    assert_eq!(last_json(&o)["heldout_correct"], Value::Null);
}

/// Images and labels as IDX files, from CSV data lines.
fn write_idx(dir: &Path, stem: &str, rows: &[String]) {
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    images.extend_from_slice(&0x0803u32.to_be_bytes());
    images.extend_from_slice(&(rows.len() as u32).to_be_bytes());
    images.extend_from_slice(&28u32.to_be_bytes());
    images.extend_from_slice(&28u32.to_be_bytes());
    labels.extend_from_slice(&0x0801u32.to_be_bytes());
    labels.extend_from_slice(&(rows.len() as u32).to_be_bytes());
    for row in rows {
        let mut fields = row.split(',').map(|v| v.parse::<u8>().unwrap());
        labels.push(fields.next().unwrap());
        images.extend(fields);
    }
    std::fs::write(dir.join(format!("{stem}-images-idx3-ubyte")), images).unwrap();
    std::fs::write(dir.join(format!("{stem}-labels-idx1-ubyte")), labels).unwrap();
}

#[test]
fn val_data_is_held_out_and_scored_as_eval_scores_it() {
    let dir = folder();
    let d = dir.path();
    let flags = ["--data", "train.csv", "--epochs", "2", "--engine", "blas"];
    let with = |name: &str, val: &str| {
        let mut args = flags.to_vec();
        args.extend(["--val-data", val]);
        let o = train(d, name, &args);
        ok(&o);
        o
    };
    let o = with("m", "val.csv");
    let j = last_json(&o);
    // The whole --data file trains; the held-out rows are the file's.
    assert_eq!(j["train_rows"], 2000);
    assert_eq!(j["heldout_rows"], 600);
    assert_eq!(j["split"], 1.0);
    assert_eq!(j["val_data"], "val.csv");
    assert_eq!(j["heldout_eval"], "records");
    assert!(j["best_epoch"].is_u64(), "{j}");
    let out = stdout(&o);
    assert!(
        out.contains("val data: val.csv (600 labeled rows, held out)"),
        "{out}"
    );
    assert!(
        out.contains("split: 2,000 train (all of --data) / 600 held out from val.csv (--val-data)"),
        "{out}"
    );

    // `eval` of the written model on that file: the same figures, exactly.
    let e = run_in(
        d,
        &[
            "eval",
            "--model",
            "m.npz",
            "--data",
            "val.csv",
            "--engine",
            "blas",
            "--threads",
            "2",
            "--json",
            "-q",
        ],
    );
    ok(&e);
    let e = last_json(&e);
    assert_eq!(e["rows"], 600);
    assert_eq!(j["heldout_correct"], e["correct"]);
    assert_eq!(j["heldout_accuracy"], e["accuracy"]);
    assert_eq!(j["heldout_loss"], e["loss"]);

    // The same rows as IDX files (read by the same loader) hold out the same.
    let (_, rows) = sample();
    write_idx(d, "val", &rows[2000..2600]);
    let idx = last_json(&with("idx", "val-images-idx3-ubyte"));
    for key in [
        "heldout_rows",
        "heldout_accuracy",
        "heldout_loss",
        "train_loss",
    ] {
        assert_eq!(idx[key], j[key], "{key}");
    }

    // Training with --val-data is training with --split 1: the same steps.
    let mut args = flags.to_vec();
    args.extend(["--split", "1"]);
    let all = train(d, "all", &args);
    ok(&all);
    let all = last_json(&all);
    assert_eq!(all["train_loss"], j["train_loss"]);
    assert_eq!(all["train_accuracy"], j["train_accuracy"]);
    // And `--split 1` may be given with --val-data (it says the same).
    args.extend(["--val-data", "val.csv"]);
    let both = train(d, "both", &args);
    ok(&both);
    assert_eq!(last_json(&both)["heldout_accuracy"], j["heldout_accuracy"]);
}

/// Runs `train` with `args`, expecting a refusal: one stderr line holding
/// every `expect` piece, exit code 1, no model or metrics written.
fn refused(dir: &Path, args: &[&str], expect: &[&str]) {
    let o = train(dir, "refused", args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    for piece in expect {
        assert!(err.contains(piece), "{args:?}: {piece:?} not in {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    for file in ["refused.npz", "refused.csv", "refused.ckpt.npz"] {
        assert!(!dir.join(file).exists(), "{args:?} wrote {file}");
    }
}

#[test]
fn settings_that_need_held_out_rows_or_contradict_val_data_are_refused() {
    let dir = folder();
    let d = dir.path();
    let (header, rows) = sample();
    // 100 pixel columns instead of 784.
    let narrow: Vec<String> = std::iter::once(&header)
        .chain(&rows[..5])
        .map(|l| l.split(',').take(101).collect::<Vec<_>>().join(","))
        .collect();
    std::fs::write(d.join("narrow.csv"), narrow.join("\n") + "\n").unwrap();
    // Kaggle's test.csv layout: no labels.
    let unlabeled: Vec<String> = std::iter::once(&header)
        .chain(&rows[..5])
        .map(|l| l.split_once(',').unwrap().1.to_string())
        .collect();
    std::fs::write(d.join("unlabeled.csv"), unlabeled.join("\n") + "\n").unwrap();
    std::fs::write(d.join("empty.csv"), format!("{header}\n")).unwrap();

    let range = "between 0 and 1 (above 0; 1 trains on every row)";
    refused(d, &["--split", "0"], &["--split", range, "found 0"]);
    refused(d, &["--split", "1.5"], &["--split", range, "found 1.5"]);
    refused(d, &["--split=-0.5"], &["--split", range, "found -0.5"]);
    refused(
        d,
        &["--early-stop", "3", "--split", "1"],
        &[
            "--early-stop 3",
            "--split 1 holds no rows out",
            "--val-data FILE",
        ],
    );
    for when in ["records", "end"] {
        refused(
            d,
            &["--heldout-eval", when, "--split", "1"],
            &[
                &format!("--heldout-eval {when}"),
                "--split 1",
                "--val-data FILE",
            ],
        );
    }
    refused(
        d,
        &[
            "--data",
            "train.csv",
            "--val-data",
            "val.csv",
            "--split",
            "0.8",
        ],
        &["--split 0.8 and --val-data", "drop --split"],
    );
    refused(
        d,
        &["--data", "train.csv", "--val-data", "missing.csv"],
        &["missing.csv: no such file (--val-data)"],
    );
    refused(
        d,
        &["--data", "train.csv", "--val-data", "narrow.csv"],
        &["narrow.csv"],
    );
    refused(
        d,
        &["--data", "train.csv", "--val-data", "unlabeled.csv"],
        &["unlabeled.csv", "labeled"],
    );
    refused(
        d,
        &["--data", "train.csv", "--val-data", "empty.csv"],
        &["empty.csv", "no data rows"],
    );

    // --val-data is an input: no output may replace it.
    let before = std::fs::read(d.join("val.csv")).unwrap();
    let o = run_in(
        d,
        &[
            "train",
            "--data",
            "train.csv",
            "--val-data",
            "val.csv",
            "--model",
            "model.npz",
            "--metrics",
            "val.csv",
        ],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("val.csv") && err.contains("--metrics"),
        "{err}"
    );
    assert_eq!(std::fs::read(d.join("val.csv")).unwrap(), before);
    assert!(!d.join("model.npz").exists());
}

#[test]
fn a_resumed_run_must_hold_out_the_same_val_data() {
    let dir = folder();
    let d = dir.path();
    let base = [
        "--data",
        "train.csv",
        "--epochs",
        "2",
        "--checkpoint-every",
        "1",
        "--checkpoint",
        "c.npz",
    ];
    let args = |extra: &[&'static str]| -> Vec<&'static str> {
        base.iter().copied().chain(extra.iter().copied()).collect()
    };
    let first = train(d, "m", &args(&["--val-data", "val.csv"]));
    ok(&first);
    assert!(d.join("c.npz").exists());

    // Other rows of the same size: the CRC tells them apart.
    let o = train(
        d,
        "r",
        &args(&["--val-data", "val2.csv", "--resume", "c.npz"]),
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("c.npz")
            && err.contains("--val-data (600 rows")
            && err.contains("same --val-data"),
        "{err}"
    );
    // No held-out file at all.
    let o = train(d, "r", &args(&["--split", "1", "--resume", "c.npz"]));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("this run has no --val-data"), "{err}");
    assert!(!d.join("r.npz").exists());

    // The same file resumes, and scores as the run that wrote it.
    let o = train(
        d,
        "r",
        &args(&["--val-data", "val.csv", "--resume", "c.npz"]),
    );
    ok(&o);
    assert_eq!(
        last_json(&o)["heldout_accuracy"],
        last_json(&first)["heldout_accuracy"]
    );
}

#[test]
fn checkpoint_identities_from_before_val_data_still_read() {
    // A checkpoint's identity as written before --val-data existed.
    let old = r#"{"split":0.8,"rows":4800,"pixels_crc32":1,"labels_crc32":2}"#;
    let identity: RunIdentity = serde_json::from_str(old).unwrap();
    assert_eq!(identity.val_data, None);
    assert_eq!(identity.rows, 4800);
}

/// The results CSV as (header, rows).
fn results(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header = r.headers().unwrap().iter().map(str::to_string).collect();
    let rows = r
        .records()
        .map(|rec| rec.unwrap().iter().map(str::to_string).collect())
        .collect();
    (header, rows)
}

fn column<'a>(header: &[String], row: &'a [String], name: &str) -> &'a str {
    let i = header.iter().position(|h| h == name).unwrap();
    &row[i]
}

#[test]
fn sweeps_run_with_split_1_and_with_val_data() {
    let dir = folder();
    let d = dir.path();
    let sweep = |args: &[&str]| {
        let mut all = vec!["sweep", "--data", "train.csv", "--epochs", "1", "-j", "1"];
        all.extend_from_slice(args);
        run_in(d, &all)
    };

    // --split 1: the runs are ok, with no held-out figures, ranked by train accuracy.
    let o = sweep(&["--lr", "0.004,0.006", "--split", "1", "--results", "a.csv"]);
    ok(&o);
    let out = stdout(&o);
    assert!(
        out.contains("train 0.") && out.contains("no held-out rows"),
        "{out}"
    );
    assert!(out.contains("by train accuracy"), "{out}");
    assert!(d.join("a.png").exists(), "the plot is drawn");
    let (header, rows) = results(&d.join("a.csv"));
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(column(&header, row, "val_data"), "");
        assert_eq!(column(&header, row, "status"), "ok");
        assert_eq!(column(&header, row, "train_rows"), "2000");
        assert_eq!(column(&header, row, "heldout_accuracy"), "");
        assert_eq!(column(&header, row, "heldout_eval"), "");
    }

    // --val-data (after --): every run holds out the file, as `train` would.
    let o = sweep(&[
        "--lr",
        "0.004",
        "--results",
        "b.csv",
        "--",
        "--val-data",
        "val.csv",
    ]);
    ok(&o);
    assert!(
        stdout(&o).contains("val data: val.csv (600 labeled rows, held out)"),
        "{}",
        stdout(&o)
    );
    let (header, rows) = results(&d.join("b.csv"));
    let row = &rows[0];
    assert_eq!(column(&header, row, "val_data"), "val.csv");
    assert_eq!(column(&header, row, "heldout_rows"), "600");
    let t = train(
        d,
        "t",
        &[
            "--data",
            "train.csv",
            "--epochs",
            "1",
            "--lr",
            "0.004",
            "--val-data",
            "val.csv",
        ],
    );
    ok(&t);
    let want = last_json(&t)["heldout_accuracy"].as_f64().unwrap();
    let got: f64 = column(&header, row, "heldout_accuracy").parse().unwrap();
    assert_eq!(got, want);

    // Other rows under the same name, another key: the sweep runs it again.
    std::fs::copy(d.join("val2.csv"), d.join("val.csv")).unwrap();
    let o = sweep(&[
        "--lr",
        "0.004",
        "--results",
        "b.csv",
        "--",
        "--val-data",
        "val.csv",
    ]);
    ok(&o);
    let (_, rows) = results(&d.join("b.csv"));
    assert_eq!(rows.len(), 2);
    assert_ne!(rows[0][0], rows[1][0], "keys differ");

    // --val-data cannot be swept.
    let o = sweep(&["--axis", "val-data=val.csv,val2.csv", "--results", "c.csv"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("--val-data cannot be swept"), "{err}");
}
