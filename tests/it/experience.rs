//! What a user sees: the summary screen, `--json` for scripts, `--quiet`,
//! clean output when piped, and the pictures (`train --plot`, `eval --plot`,
//! `eval --errors-png`, `eval --weights-png`, `inspect`).

use crate::common::{after_sample_warning, last_json, repo, run_folder, run_in, text, unwrapped};
use std::path::Path;

/// Width and height of a PNG file, after checking its signature and that
/// its first chunk is the header.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.len() > 33,
        "{}: only {} bytes",
        path.display(),
        bytes.len()
    );
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{}: not a PNG",
        path.display()
    );
    assert_eq!(
        &bytes[12..16],
        b"IHDR",
        "{}: no header chunk",
        path.display()
    );
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

/// No escape sequences, carriage returns or other control characters but
/// newlines: what a CI log or a pipe must receive.
fn assert_plain(what: &str, s: &str) {
    if let Some((i, c)) = s.char_indices().find(|&(_, c)| c.is_control() && c != '\n') {
        panic!("{what} has control character {c:?} at byte {i}: {s:?}");
    }
}

#[test]
fn piped_train_prints_plain_lines_a_summary_and_json_and_draws_curves() {
    let dir = tempfile::tempdir().unwrap();
    let o = run_in(
        dir.path(),
        &["--epochs", "2", "--json", "--plot", "curves.png"],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let err = text(&o.stderr);
    // stdout and stderr are pipes here: no bar, no colour, no `\r` redraws.
    assert_plain("stdout", &out);
    assert_plain("stderr", &err);
    assert!(!out.contains('\u{1b}') && !err.contains('\u{1b}'));
    assert!(!out.contains('\r') && !err.contains('\r'));

    // The run's own folder first, then the per-epoch log and the summary
    // screen, whose long values go on continuation lines: no line wider
    // than 80 columns.
    let folder = run_folder(&o);
    let f = folder.display();
    assert!(out.starts_with(&format!("run folder: {f}\n")), "{out}");
    let wrote = format!("wrote:      {f}/model.npz, {f}/metrics.csv, curves.png");
    assert!(
        unwrapped(&out).contains(&wrote),
        "summary lacks `{wrote}`:\n{out}"
    );
    assert!(out.contains("epoch    1: train accuracy"), "{out}");
    assert!(out.contains("epoch    2: train accuracy"), "{out}");
    let (_, summary) = out.split_once("-- summary").expect("a summary");
    for line in summary.lines().take_while(|l| !l.starts_with('{')) {
        assert!(line.chars().count() <= 80, "wider than 80 columns: {line}");
    }
    let engine_line = summary
        .lines()
        .position(|l| l.starts_with("engine:"))
        .expect("an engine line");
    assert!(
        summary
            .lines()
            .nth(engine_line + 1)
            .unwrap()
            .starts_with("            "),
        "the engine's long value continues under it:\n{out}"
    );
    let out = unwrapped(&out);
    for key in [
        "-- summary",
        "data:       built-in sample (6,000 rows)",
        "split:      4,800 train / 1,200 held out (--split 0.8, seed 0)",
        "model:      784-10-10 (7,960 parameters), init he",
        "engine:     sparse (f32 over each image's non-zero pixels; auto: 81% of pixels are 0), batches sharded over ",
        "blas:       OpenBLAS",
        "settings:   adam lr 0.005 (cosine schedule), batch 32, 2 epochs = 300 steps",
        "time:       load ",
        "throughput: ",
        "final:      train accuracy ",
    ] {
        assert!(out.contains(key), "summary lacks `{key}`:\n{out}");
    }
    let linked = cfg!(feature = "blas");
    assert_eq!(out.contains("OpenBLAS not linked"), !linked, "{out}");

    let j = last_json(&o);
    assert_eq!(j["command"], "train");
    assert_eq!(j["epochs"], 2);
    assert_eq!(j["steps"], 300);
    // Two passes over the 4,800 training rows.
    assert_eq!(j["samples"], 9600);
    assert!(j["samples_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(j["plot"], "curves.png");
    assert_eq!(j["model"], format!("{f}/model.npz"));
    assert!(dir.path().join(&folder).join("model.npz").exists());
    let acc = j["heldout_accuracy"].as_f64().unwrap();
    assert!(acc > 0.8 && acc <= 1.0, "{acc}");
    // The summary screen shows the same numbers as the JSON.
    assert!(
        out.contains(&format!("held-out accuracy {acc:.4}")),
        "{acc} not in:\n{out}"
    );

    assert_eq!(png_size(&dir.path().join("curves.png")), (1200, 500));
}

#[test]
fn quiet_json_prints_exactly_one_json_line() {
    let dir = tempfile::tempdir().unwrap();
    let o = run_in(dir.path(), &["--epochs", "1", "--quiet", "--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert_eq!(out.lines().count(), 1, "{out}");
    // The one line on stderr says that no data was given.
    assert_eq!(after_sample_warning(&o), "");
    let j = last_json(&o);
    assert_eq!(j["train_rows"], 4800);
    assert!(j["heldout_accuracy"].as_f64().unwrap() > 0.5);

    let o = run_in(dir.path(), &["--epochs", "1", "--quiet"]);
    assert!(o.status.success());
    assert!(o.stdout.is_empty(), "{}", text(&o.stdout));
    assert_eq!(after_sample_warning(&o), "");

    // Given its data, a quiet run prints nothing at all.
    let data = repo("data/sample/train-sample.csv.gz");
    let o = run_in(
        dir.path(),
        &["--epochs", "1", "--quiet", "--data", data.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(o.stdout.is_empty() && o.stderr.is_empty());
}

#[test]
fn eval_and_inspect_draw_their_pictures() {
    let dir = tempfile::tempdir().unwrap();
    let o = run_in(
        dir.path(),
        &["--epochs", "2", "--quiet", "--model", "m.npz"],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample/train-sample.csv.gz");
    let o = run_in(
        dir.path(),
        &[
            "eval",
            "--model",
            "m.npz",
            "--data",
            data.to_str().unwrap(),
            "--plot",
            "confusion.png",
            "--errors-png",
            "errors.png",
            "--errors",
            "12",
            "--weights-png",
            "w.png",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert_plain("eval stdout", &out);
    assert!(out.contains("macro "), "{out}");
    assert!(
        out.contains("wrote confusion.png, errors.png, w.png"),
        "{out}"
    );
    let j = last_json(&o);
    assert_eq!(j["wrote"].as_array().unwrap().len(), 3, "{j}");
    let per_class = j["per_class"].as_array().unwrap();
    assert_eq!(per_class.len(), 10);
    let support: u64 = per_class
        .iter()
        .map(|c| c["support"].as_u64().unwrap())
        .sum();
    assert_eq!(support, 6000);

    assert_eq!(png_size(&dir.path().join("confusion.png")), (750, 736));
    // 12 digits: 8 per row, 2 rows.
    assert_eq!(png_size(&dir.path().join("errors.png")), (884, 322));
    assert_eq!(png_size(&dir.path().join("w.png")), (820, 442));

    let o = run_in(
        dir.path(),
        &[
            "inspect",
            "--model",
            "m.npz",
            "--data",
            data.to_str().unwrap(),
            "--out",
            "weights.png",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("784-10-10, 7,960 parameters"), "{out}");
    // One row per hidden unit in the unit table (after the layer table).
    let units = out
        .split_once("\nrank  unit ")
        .map(|(_, t)| t)
        .unwrap_or_else(|| panic!("no unit table: {out}"));
    assert_eq!(
        units
            .lines()
            .filter(|l| l.split_whitespace().count() == 8
                && l.split_whitespace()
                    .next()
                    .unwrap()
                    .parse::<usize>()
                    .is_ok())
            .count(),
        10,
        "{out}"
    );
    // `inspect --data` and `eval --weights-png` on the same data draw the same picture.
    assert_eq!(
        std::fs::read(dir.path().join("weights.png")).unwrap(),
        std::fs::read(dir.path().join("w.png")).unwrap()
    );
    assert_eq!(png_size(&dir.path().join("weights.png")), (820, 442));

    // Without --data nothing is greyed out: a different picture, same size.
    let o = run_in(dir.path(), &["inspect", "--model", "m.npz", "--quiet"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(o.stdout.is_empty());
    assert_eq!(png_size(&dir.path().join("weights.png")), (820, 442));
    assert_ne!(
        std::fs::read(dir.path().join("weights.png")).unwrap(),
        std::fs::read(dir.path().join("w.png")).unwrap()
    );
}

#[test]
fn a_picture_in_a_missing_directory_fails_before_training_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let o = run_in(
        dir.path(),
        &["--epochs", "1", "--plot", "no/such/dir/curves.png"],
    );
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no/such/dir/curves.png"), "{err}");
    assert!(!text(&o.stdout).contains("epoch    1"), "trained anyway");
    assert!(!dir.path().join("model.npz").exists());
}
