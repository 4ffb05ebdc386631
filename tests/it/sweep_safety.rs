//! A sweep's results survive what happens to it: partial last lines (a
//! crash, a kill) are dropped with a warning and the resumed files are
//! whole, a full disk stops the sweep with one error line and no half-run
//! recorded, data replaced in place is run again, a second sweep on the
//! same results is refused, and SIGTERM stops the sweep with its summary
//! and exit code 143, a re-run finishing the rest.

use crate::common::{bin, run_in, stderr, stdout};
use crate::sweep::{csv_rows, json_lines, ok};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Stdio};

/// Quick runs: one epoch of 64-row batches on the built-in sample.
const QUICK: [&str; 7] = [
    "--epochs",
    "1",
    "--batch-size",
    "64",
    "--optimizer",
    "sgd",
    "--no-plot",
];

fn sweep_args<'a>(lrs: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["sweep"];
    a.extend(QUICK);
    a.extend(["--lr", lrs]);
    a.extend(more);
    a
}

/// The three files of `dir`'s default results agree: every line whole,
/// every key once in the CSV and once in the JSON lines, the same keys in
/// both, curve rows only for recorded runs. Returns the keys.
fn files_agree(dir: &Path) -> HashSet<String> {
    let csv_path = dir.join("sweep-results.csv");
    let text = std::fs::read_to_string(&csv_path).unwrap();
    assert!(text.ends_with('\n'), "{text}");
    let rows = csv_rows(&csv_path);
    let keys: HashSet<String> = rows.iter().map(|r| r["key"].clone()).collect();
    assert_eq!(keys.len(), rows.len(), "a key twice in the CSV: {text}");
    let jsonl = std::fs::read_to_string(dir.join("sweep-results.jsonl")).unwrap();
    assert!(jsonl.ends_with('\n'), "{jsonl}");
    let lines = json_lines(&dir.join("sweep-results.jsonl"));
    assert_eq!(lines.len(), jsonl.lines().count(), "a key twice: {jsonl}");
    let json_keys: HashSet<String> = lines.keys().cloned().collect();
    assert_eq!(json_keys, keys, "the JSON lines and the CSV rows differ");
    let curves = csv_rows(&dir.join("sweep-results-curves.csv"));
    for c in &curves {
        assert!(
            keys.contains(&c["key"]),
            "curve of an unrecorded run: {c:?}"
        );
    }
    keys
}

/// "1 run", "3 runs": how the sweep counts runs.
fn runs(n: usize) -> String {
    format!("{n} run{}", if n == 1 { "" } else { "s" })
}

/// Cut `path` to `len` bytes in place.
fn truncate(path: &Path, len: usize) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len as u64).unwrap();
}

#[test]
fn a_partial_json_line_is_dropped_and_rebuilt_from_its_csv_row() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&run_in(d, &sweep_args("0.05,0.1", &[])));
    let jsonl = d.join("sweep-results.jsonl");
    let text = std::fs::read_to_string(&jsonl).unwrap();
    let last = text.lines().last().unwrap().to_string();
    let whole: Value = serde_json::from_str(&last).unwrap();
    // The last line cut in the middle, its CSV row kept (a JSON line lost
    // after its row: what an older version's crash could leave).
    truncate(&jsonl, text.len() - last.len() / 2);

    let out = run_in(d, &sweep_args("0.05,0.1,0.2", &[]));
    let (o, e) = (ok(&out), stderr(&out));
    assert!(
        e.contains("warning: sweep-results.jsonl: dropped a partial last line (no final newline"),
        "{e}"
    );
    assert!(
        e.contains(
            "warning: sweep-results.jsonl: 1 run of sweep-results.csv had no JSON line; rebuilt from their rows"
        ),
        "{e}"
    );
    assert_eq!(e.lines().count(), 2, "one line per warning: {e}");
    assert!(
        o.contains("2 already in sweep-results.csv (skipped), 1 to run"),
        "{o}"
    );
    let keys = files_agree(d);
    assert_eq!(keys.len(), 3);
    let lines = json_lines(&jsonl);
    let key = whole["key"].as_str().unwrap();
    assert_eq!(lines[key], whole, "the rebuilt line is the line written");
}

#[test]
fn a_partial_csv_row_is_dropped_and_its_run_redone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&run_in(d, &sweep_args("0.05,0.1", &[])));
    let results = d.join("sweep-results.csv");
    let before = csv_rows(&results);
    let text = std::fs::read_to_string(&results).unwrap();
    // The last row cut short: its JSON line and curve row, written before
    // it, now belong to no recorded run.
    truncate(&results, text.len() - 30);
    let cut_key = &before[1]["key"];

    let out = run_in(d, &sweep_args("0.05,0.1", &[]));
    let (o, e) = (ok(&out), stderr(&out));
    assert!(
        e.contains("warning: sweep-results.csv: dropped a partial last line (no final newline"),
        "{e}"
    );
    for file in ["sweep-results.jsonl", "sweep-results-curves.csv"] {
        assert!(
            e.contains(&format!(
                "warning: {file}: dropped 1 line of runs with no row in sweep-results.csv"
            )),
            "{e}"
        );
    }
    assert_eq!(e.lines().count(), 3, "{e}");
    assert!(
        o.contains("1 already in sweep-results.csv (skipped), 1 to run"),
        "{o}"
    );
    assert_eq!(files_agree(d).len(), 2);
    let after = csv_rows(&results);
    let redone = after.iter().find(|r| &r["key"] == cut_key).unwrap();
    assert_eq!(redone["heldout_accuracy"], before[1]["heldout_accuracy"]);
    let curves = csv_rows(&d.join("sweep-results-curves.csv"));
    assert_eq!(curves.iter().filter(|c| &c["key"] == cut_key).count(), 1);
    // Whole files: nothing to repair the next time.
    let again = run_in(d, &sweep_args("0.05,0.1", &[]));
    ok(&again);
    assert_eq!(stderr(&again), "");
}

#[test]
fn a_full_disk_stops_the_sweep_with_one_error_line_and_no_row() {
    for (flag, written_before) in [
        ("--json-lines", None),
        ("--curves", Some("sweep-results.jsonl")),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A full disk, through a link in the test's own folder (a test
        // never writes to /dev by name).
        std::os::unix::fs::symlink("/dev/full", d.join("full")).unwrap();
        let out = run_in(d, &sweep_args("0.05,0.1", &[flag, "full", "--jobs", "1"]));
        assert_eq!(out.status.code(), Some(1), "{flag}: {}", stdout(&out));
        let e = stderr(&out);
        assert_eq!(e.lines().count(), 1, "{flag}: one line: {e}");
        assert!(
            e.starts_with("error: full: cannot append: no space left on device; the sweep stopped"),
            "{flag}: {e}"
        );
        let o = stdout(&out);
        assert!(o.contains("0 runs in this sweep"), "{o}");
        assert!(o.contains("2 runs of this sweep not recorded yet"), "{o}");
        // The run's row is the last write: never made. A file written
        // before the failing one is cut back to its length before the run.
        let results = d.join("sweep-results.csv");
        assert!(!results.exists() || std::fs::read(&results).unwrap().is_empty());
        if let Some(earlier) = written_before {
            assert_eq!(std::fs::read(d.join(earlier)).unwrap(), b"", "{earlier}");
        }
    }
}

#[test]
fn data_replaced_in_place_is_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sample =
        std::fs::File::open(crate::common::repo("data/sample/train-sample.csv.gz")).unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(sample)
        .read_to_string(&mut text)
        .unwrap();
    let data = d.join("data.csv");
    std::fs::write(&data, &text).unwrap();
    let args = sweep_args("0.1", &["--data", "data.csv"]);
    ok(&run_in(d, &args));
    let first = csv_rows(&d.join("sweep-results.csv"));

    // The same path, other rows: the first half of the file.
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&data, lines[..lines.len() / 2].join("\n") + "\n").unwrap();
    let out = ok(&run_in(d, &args));
    assert!(
        out.contains("0 already in sweep-results.csv (skipped), 1 to run"),
        "{out}"
    );
    let rows = csv_rows(&d.join("sweep-results.csv"));
    assert_eq!(rows.len(), 2);
    let new = &rows[1];
    assert_ne!(new["key"], first[0]["key"]);
    let rows_of = |r: &HashMap<String, String>| -> usize {
        r["train_rows"].parse::<usize>().unwrap() + r["heldout_rows"].parse::<usize>().unwrap()
    };
    assert_eq!(rows_of(new), lines.len() / 2 - 1, "trained on the new data");
    // The summary reports the new run only.
    assert!(out.contains("1 run in this sweep: 1 ok"), "{out}");
    let acc: f64 = new["heldout_accuracy"].parse().unwrap();
    let table_row = out
        .lines()
        .find(|l| l.starts_with("1 ") && l.contains(&new["key"]))
        .unwrap_or_else(|| panic!("no row for the new run: {out}"));
    assert!(table_row.contains(&format!("{acc:.4}")), "{table_row}");
    assert!(!out.contains(&first[0]["key"]), "{out}");
}

/// Start a sweep in `dir` with piped output, and return it once it has
/// printed its first line (it holds the lock by then).
fn start(dir: &Path, args: &[&str]) -> (Child, BufReader<std::process::ChildStdout>, String) {
    let mut child = bin()
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    (child, out, first)
}

#[test]
fn a_second_sweep_on_the_same_results_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let long = sweep_args("0.01,0.02,0.03,0.04,0.05,0.06", &["--jobs", "1"]);
    let (mut first, _out, line) = start(d, &long);
    assert!(line.starts_with("sweep: 6 configurations"), "{line}");
    let second = run_in(d, &sweep_args("0.1", &[]));
    assert_eq!(second.status.code(), Some(1));
    assert_eq!(
        stderr(&second),
        format!(
            "error: another sweep (pid {}) is writing sweep-results.csv; wait for it or use other --results\n",
            first.id()
        )
    );
    assert_eq!(stdout(&second), "");
    // Killed outright, the first sweep leaves its lock file but not the
    // lock: the next sweep runs, and removes the file as it ends.
    first.kill().unwrap();
    first.wait().unwrap();
    ok(&run_in(d, &sweep_args("0.1", &[])));
    assert!(!d.join(".sweep-results.csv.lock").exists());
    files_agree(d);
}

#[test]
fn sigterm_stops_the_sweep_with_its_summary_and_a_rerun_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut args = sweep_args("0.01,0.02,0.03,0.04,0.05,0.06", &["--jobs", "1"]);
    args[2] = "2"; // two epochs: a run is stopped between steps
    let (mut child, mut out, _) = start(d, &args);
    let mut printed = String::new();
    // Wait for the first recorded run, then ask the sweep to stop.
    while !printed.starts_with("[1/6]") {
        printed.clear();
        assert!(out.read_line(&mut printed).unwrap() > 0, "ended early");
    }
    // SAFETY: a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143), "{rest}\n{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: interrupted: "), "{err}");
    let recorded = files_agree(d).len();
    assert!((1..6).contains(&recorded), "{recorded}");
    assert!(
        rest.contains(&format!("{} in this sweep: {recorded} ok", runs(recorded))),
        "{rest}"
    );
    assert!(
        rest.contains(&format!(
            "{} of this sweep not recorded yet",
            runs(6 - recorded)
        )),
        "{rest}"
    );

    let again = run_in(d, &args);
    let o = ok(&again);
    assert_eq!(stderr(&again), "", "nothing partial to repair");
    assert!(
        o.contains(&format!(
            "{recorded} already in sweep-results.csv (skipped), {} to run",
            6 - recorded
        )),
        "{o}"
    );
    assert_eq!(files_agree(d).len(), 6);
    let curves = csv_rows(&d.join("sweep-results-curves.csv"));
    assert_eq!(curves.len(), 6 * 2, "two epochs of each run, once");
}
