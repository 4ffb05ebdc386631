//! Every output path is checked before any work starts: an output that is
//! an input, two outputs that are one file, or an output that cannot be
//! written is refused in one line, and nothing is read, trained or touched.

use crate::common::{repo, run_in, stderr, tree};
use std::path::Path;

/// A small labeled CSV and an existing model in a fresh folder.
fn folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let sample = repo("data/sample/train-sample.csv.gz");
    std::fs::copy(sample, dir.path().join("d.csv.gz")).unwrap();
    let o = run_in(
        dir.path(),
        &[
            "--data", "d.csv.gz", "--epochs", "1", "-q", "--model", "m.npz",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    dir
}

/// Runs `args` in `dir`, expects exit 1 and one line containing `want`,
/// and that every file in `dir` (the earlier run's folder included) is
/// unchanged and no run folder was made.
fn refused(dir: &Path, args: &[&str], want: &str) {
    let before = tree(dir);
    let o = run_in(dir, args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    assert!(err.contains(want), "{args:?}: {err}");
    assert!(tree(dir) == before, "{args:?} changed the folder");
}

#[test]
fn an_output_that_is_an_input_is_refused_and_the_input_survives() {
    let dir = folder();
    let d = dir.path();
    refused(
        d,
        &["--data", "d.csv.gz", "--metrics", "d.csv.gz"],
        "--metrics d.csv.gz: is the input",
    );
    refused(
        d,
        &["--data", "./d.csv.gz", "--model", "d.csv.gz"],
        "is the input",
    );
    refused(
        d,
        &[
            "--data",
            "d.csv.gz",
            "--model",
            "x.npz",
            "--metrics",
            "x.npz",
        ],
        "the same file",
    );
    refused(
        d,
        &[
            "predict", "--model", "m.npz", "--data", "d.csv.gz", "--out", "d.csv.gz",
        ],
        "is the input",
    );
    refused(
        d,
        &[
            "predict", "--model", "m.npz", "--data", "d.csv.gz", "--out", "m.npz",
        ],
        "is the input",
    );
    refused(
        d,
        &["inspect", "--model", "m.npz", "--out", "m.npz"],
        "is the input",
    );
    refused(
        d,
        &[
            "eval", "--model", "m.npz", "--data", "d.csv.gz", "--plot", "d.csv.gz",
        ],
        "is the input",
    );
    // A hard link to the input is the input too.
    std::fs::hard_link(d.join("d.csv.gz"), d.join("link.csv.gz")).unwrap();
    refused(
        d,
        &["--data", "d.csv.gz", "--metrics", "link.csv.gz"],
        "is the input",
    );
}

#[test]
fn unwritable_outputs_are_refused_before_training() {
    let dir = folder();
    let d = dir.path();
    let started = std::time::Instant::now();
    // 400 epochs would take minutes: the refusal must come first.
    refused(
        d,
        &[
            "--data",
            "d.csv.gz",
            "--epochs",
            "400",
            "--model",
            "nope/x.npz",
        ],
        "nope/x.npz: cannot write: directory nope does not exist",
    );
    assert!(started.elapsed().as_secs() < 30);
    // An unwritable metrics file: the existing model is not replaced.
    refused(
        d,
        &[
            "--data",
            "d.csv.gz",
            "--epochs",
            "400",
            "--model",
            "m.npz",
            "--metrics",
            "no/m.csv",
        ],
        "no/m.csv: cannot write",
    );
    refused(
        d,
        &["--data", "d.csv.gz", "--plot", "gone/c.png"],
        "gone/c.png: cannot write",
    );
}
